//! Reads a kernel module's `vermagic` (from its `.modinfo` strings), decompressing
//! `.ko.zst`/`.ko.xz`/`.ko.gz` with the system's tools.

use std::path::{Path, PathBuf};

use super::output::{excerpt, TAIL_LINES};
use crate::domain::Outcome;

/// The vermagic string of a module file, e.g. `6.12.1-arch1-1 SMP preempt mod_unload`.
pub fn read(path: &Path) -> Result<String, String> {
    find(&module_bytes(path)?).ok_or_else(|| "no vermagic in the module".to_owned())
}

pub use crate::inventory::signing::module_bytes;

/// Finds `vermagic=…` terminated by NUL in a module's bytes.
pub fn find(bytes: &[u8]) -> Option<String> {
    const KEY: &[u8] = b"vermagic=";
    let start = bytes.windows(KEY.len()).position(|w| w == KEY)? + KEY.len();
    let len = bytes[start..].iter().position(|&b| b == 0).unwrap_or(bytes.len() - start);
    Some(String::from_utf8_lossy(&bytes[start..start + len]).trim().to_owned())
}

/// Every built module must carry `vermagic=KERNEL …`: a module built for another kernel is
/// [`Outcome::WrongVermagic`]; one whose vermagic cannot be read at all is damaged (a failure
/// that shows `output`'s last lines and what was wrong).
pub fn judge_vermagic(modules: &[PathBuf], kernel: &str, output: &str) -> Result<(), Outcome> {
    for module in modules {
        match read(module) {
            Ok(magic) if magic.split_whitespace().next() == Some(kernel) => {}
            Ok(magic) => return Err(Outcome::WrongVermagic { module: module.clone(), vermagic: magic }),
            Err(e) => {
                let mut tail = excerpt(output, TAIL_LINES);
                tail.push(format!("{}: {e}", module.display()));
                return Err(Outcome::Failed {
                    code: Some(0),
                    meaning: "dkms reported success, but a built module is damaged (a full disk?)",
                    log: None,
                    tail,
                });
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_vermagic_between_other_modinfo_strings() {
        let bytes =
            b"\x7fELF....license=GPL\0vermagic=6.1.0-47-amd64 SMP preempt mod_unload modversions \0name=hello\0";
        assert_eq!(find(bytes).as_deref(), Some("6.1.0-47-amd64 SMP preempt mod_unload modversions"));
        assert_eq!(find(b"no magic here"), None);
        assert_eq!(find(b"vermagic=unterminated").as_deref(), Some("unterminated"));
    }
}
