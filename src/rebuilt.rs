//! Kernels rebuilt under the same kver (a `linux`/`linux-headers` pkgrel bump): before such a
//! transaction replaces a kernel's headers in place, the upgrade hook records the digest of its
//! `build/` tree in `ROOT/var/lib/dkms-hook/headers/KVER`; after it, the install hook compares the
//! new tree with it. Byte-identical headers need nothing rebuilt (the installed builds are
//! reported `unchanged`); changed ones get each installed module rebuilt privately first and
//! swapped in only when that works. Without a record (the headers were newly installed, not
//! upgraded in place) the installed builds are trusted as they are.
//!
//! A record left by a transaction that stopped after the upgrade hook names the headers that are
//! still in place, so a later comparison with it is still right. The install hook drops the
//! records of the kernels it handled; `sync` rebuilds what a record says was built against other
//! headers (an install hook that did not finish), and drops them all.

use std::path::PathBuf;

use anyhow::Result;

use crate::domain::Layout;

/// Where the records live: `ROOT/var/lib/dkms-hook/headers`.
fn dir(layout: &Layout) -> PathBuf {
    layout.own_dir().join("headers")
}

/// The record of kernel `kver`; `None` for a kver that is not a plain file name.
fn path(layout: &Layout, kver: &str) -> Option<PathBuf> {
    let plain = !kver.is_empty() && kver != "." && kver != ".." && !kver.contains('/');
    plain.then(|| dir(layout).join(kver))
}

/// Records `digest` as the digest of kernel `kver`'s headers before the transaction.
pub fn record(layout: &Layout, kver: &str, digest: &str) -> Result<()> {
    let path = path(layout, kver).ok_or_else(|| anyhow::anyhow!("not a kernel version: {kver:?}"))?;
    crate::atomic::write(&path, format!("{digest}\n").as_bytes())
}

/// The digest recorded for kernel `kver`'s headers before the transaction, if there is one.
pub fn recorded(layout: &Layout, kver: &str) -> Option<String> {
    let text = std::fs::read_to_string(path(layout, kver)?).ok()?;
    let digest = text.trim();
    (digest.len() == 64 && digest.bytes().all(|b| b.is_ascii_hexdigit())).then(|| digest.to_owned())
}

/// Drops the record of kernel `kver` (there may be none).
pub fn forget(layout: &Layout, kver: &str) {
    if let Some(path) = path(layout, kver) {
        if let Err(e) = std::fs::remove_file(&path) {
            if e.kind() != std::io::ErrorKind::NotFound {
                log::warn!("failed to remove {}: {e}", path.display());
            }
        }
        // The directory goes with its last record (it stays while it holds any).
        let _ = std::fs::remove_dir(dir(layout));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_refuse_odd_names() {
        let tmp = tempfile::tempdir().unwrap();
        let layout = Layout::new(tmp.path(), None);
        let digest = "ab".repeat(32);
        assert_eq!(recorded(&layout, "6.1.0-47-amd64"), None);
        record(&layout, "6.1.0-47-amd64", &digest).unwrap();
        assert_eq!(recorded(&layout, "6.1.0-47-amd64"), Some(digest.clone()));
        forget(&layout, "6.1.0-47-amd64");
        assert_eq!(recorded(&layout, "6.1.0-47-amd64"), None);
        assert!(!dir(&layout).exists(), "the directory outlived its last record");
        forget(&layout, "6.1.0-47-amd64");
        assert!(record(&layout, "../x", &digest).is_err());
        assert_eq!(recorded(&layout, ".."), None);
        std::fs::create_dir_all(dir(&layout)).unwrap();
        std::fs::write(dir(&layout).join("bad"), "not a digest\n").unwrap();
        assert_eq!(recorded(&layout, "bad"), None);
    }
}
