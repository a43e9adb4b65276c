//! The paths pacman writes on a hook's stdin, turned into typed targets.
//!
//! pacman (`NeedsTargets`) writes the matched package paths one per line, without a leading `/`.
//! Two shapes matter: `usr/src/<dir>/dkms.conf` names a module source, and
//! `usr/lib/modules/<kver>/…` names a kernel, either its headers (`build/…`) or the kernel
//! itself (`modules.order`, `vmlinuz`, anything else). Everything else — blank lines, garbage,
//! non-UTF-8 bytes, paths with `..` or other components that could escape — is kept aside as
//! ignored, never an error: a hook must not fail because pacman matched a path we do not need.
//! This module is pure: bytes in, data out.

use std::collections::{BTreeMap, BTreeSet};

/// What a transaction changes, as far as DKMS is concerned.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Targets {
    /// Directory names under `usr/src` whose `dkms.conf` is among the targets.
    pub module_dirs: BTreeSet<String>,
    /// Kernel versions under `usr/lib/modules` among the targets, with what part of them changed.
    pub kernels: BTreeMap<String, KernelChange>,
    /// Lines that name nothing dkms-hook acts on, kept for `--verbose` and debugging.
    pub ignored: Vec<String>,
}

/// Which part of a kernel's module directory a transaction touches.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct KernelChange {
    /// A path under `build/` (the headers package: `build/include/`).
    pub headers: bool,
    /// Any other path (the kernel package: `modules.order`, `vmlinuz`, `pkgbase`, `kernel/…`).
    pub image: bool,
    /// `vmlinuz` itself (the guard matches it as the kernel coming).
    pub vmlinuz: bool,
    /// `modules.order` itself (the guard matches it as the kernel leaving).
    pub order: bool,
}

impl Targets {
    /// Parses a hook's whole stdin.
    pub fn parse(input: &[u8]) -> Targets {
        let mut targets = Targets::default();
        for line in input.split(|&b| b == b'\n') {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            match std::str::from_utf8(line) {
                Ok(text) => targets.add(text),
                Err(_) => targets.ignored.push(String::from_utf8_lossy(line).into_owned()),
            }
        }
        targets
    }

    /// Adds one path, or records it as ignored.
    fn add(&mut self, line: &str) {
        match classify(line) {
            Some(Target::ModuleSource(dir)) => {
                self.module_dirs.insert(dir.to_owned());
            }
            Some(Target::Kernel { kver, headers, file }) => {
                let change = self.kernels.entry(kver.to_owned()).or_default();
                if headers {
                    change.headers = true;
                } else {
                    change.image = true;
                    change.vmlinuz |= file == "vmlinuz";
                    change.order |= file == "modules.order";
                }
            }
            None => self.ignored.push(line.to_owned()),
        }
    }

    /// True when no line named anything to act on.
    pub fn is_empty(&self) -> bool {
        self.module_dirs.is_empty() && self.kernels.is_empty()
    }
}

/// One recognised target line.
#[derive(Debug, PartialEq, Eq)]
enum Target<'a> {
    ModuleSource(&'a str),
    /// `file`: the file directly in the kernel's directory (`vmlinuz`), or empty.
    Kernel {
        kver: &'a str,
        headers: bool,
        file: &'a str,
    },
}

/// Recognises one line; `None` for anything that is not a clean relative path we act on.
fn classify(line: &str) -> Option<Target<'_>> {
    let path = line.trim_end_matches('/');
    let parts: Vec<&str> = path.split('/').collect();
    if parts.iter().any(|p| !is_clean_component(p)) {
        return None;
    }
    // A module directory is `NAME-VERSION` and a kernel version a plain name: anything else
    // (globs, spaces, quotes) can be neither, whatever the line claims.
    match parts.as_slice() {
        ["usr", "src", dir, "dkms.conf"] if is_valid_name(dir) => Some(Target::ModuleSource(dir)),
        ["usr", "lib", "modules", kver, rest @ ..] if !rest.is_empty() && is_valid_name(kver) => {
            Some(Target::Kernel { kver, headers: rest[0] == "build", file: if rest.len() == 1 { rest[0] } else { "" } })
        }
        _ => None,
    }
}

/// A name dkms-hook passes to dkms or joins to a path: a module name or version from dkms.conf or
/// the dkms tree, or a kernel version. Stricter than [`is_clean_component`]: only the characters
/// real module names, versions and kernel versions use (`A-Z a-z 0-9 . _ + ~ : @ -`), starting
/// with a letter, digit or `_`. dkms is a bash script that builds commands and paths from these,
/// so nothing a shell treats specially (spaces, quotes, `$`, `;`, `` ` ``, globs) may get through.
pub fn is_valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    let Some(first) = chars.next() else { return false };
    name.len() <= 255
        && (first.is_ascii_alphanumeric() || first == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '+' | '~' | ':' | '@' | '-'))
}

/// A path component that cannot escape its parent or smuggle anything into an argument.
pub fn is_clean_component(part: &str) -> bool {
    !part.is_empty()
        && part.len() <= 255
        && part != "."
        && part != ".."
        && !part.starts_with('-')
        && part.chars().all(|c| !c.is_control() && c != '\\')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kernel(headers: bool, image: bool) -> KernelChange {
        KernelChange { headers, image, ..KernelChange::default() }
    }

    #[test]
    fn recognises_module_sources_and_kernel_parts() {
        let t = Targets::parse(
            b"usr/lib/modules/6.12.1-arch1-1/build/include/\n\
              usr/lib/modules/6.12.1-arch1-1/modules.order\n\
              usr/lib/modules/6.6.30-1-lts/build/include/\n\
              usr/src/hello-1.0/dkms.conf\n\
              usr/src/xpad-neo-x-0.9-r12-g3a1b/dkms.conf\n",
        );
        assert_eq!(
            t.module_dirs.iter().map(String::as_str).collect::<Vec<_>>(),
            ["hello-1.0", "xpad-neo-x-0.9-r12-g3a1b"]
        );
        assert_eq!(t.kernels["6.12.1-arch1-1"], KernelChange { order: true, ..kernel(true, true) });
        assert_eq!(t.kernels["6.6.30-1-lts"], kernel(true, false));
        assert!(t.ignored.is_empty());
    }

    #[test]
    fn other_kernel_paths_count_as_the_kernel_image() {
        for line in
            ["usr/lib/modules/6.1-x/vmlinuz", "usr/lib/modules/6.1-x/pkgbase", "usr/lib/modules/6.1-x/kernel/a.ko.zst"]
        {
            let t = Targets::parse(line.as_bytes());
            let vmlinuz = line.ends_with("/vmlinuz");
            assert_eq!(t.kernels["6.1-x"], KernelChange { vmlinuz, ..kernel(false, true) }, "{line}");
        }
    }

    #[test]
    fn ignores_everything_else_without_failing() {
        let cases: &[&[u8]] = &[
            b"",
            b"\n\n   \n",
            b"garbage",
            b"usr/src/dkms.conf",
            b"usr/src/a/b/dkms.conf",
            b"usr/src/../dkms.conf",
            b"usr/src/../../etc/dkms.conf",
            b"usr/lib/modules/../build/include/",
            b"usr/lib/modules/6.1/../../x/modules.order",
            b"usr/lib/modules/",
            b"usr/lib/modules/6.1",
            b"/usr/src/hello-1.0/dkms.conf",
            b"usr//src/hello-1.0/dkms.conf",
            b"usr/src/-rf/dkms.conf",
            b"usr/src/\xff\xfe/dkms.conf",
            b"usr/src/a\x1b[31m/dkms.conf",
            b"usr/src/*/dkms.conf",
            b"usr/src/a b-1/dkms.conf",
            b"usr/src/$(reboot)-1/dkms.conf",
            b"usr/lib/modules/*/modules.order",
            b"usr/lib/modules/6.1 x/build/include/",
        ];
        for input in cases {
            let t = Targets::parse(input);
            assert!(t.is_empty(), "{:?} gave {t:?}", String::from_utf8_lossy(input));
        }
    }

    #[test]
    fn non_utf8_line_does_not_hide_the_others() {
        let t = Targets::parse(b"usr/src/\xff/dkms.conf\nusr/src/ok-1/dkms.conf\r\n");
        assert_eq!(t.module_dirs.len(), 1);
        assert!(t.module_dirs.contains("ok-1"));
        assert_eq!(t.ignored.len(), 1);
    }

    #[test]
    fn valid_names() {
        let good =
            ["hello", "xpad-neo-x", "0.9-r12-g3a1b", "6.12.1-arch1-1", "1.0+git2024~rc1", "535.104.05", "_x", "1:2@x"];
        for ok in good {
            assert!(is_valid_name(ok), "{ok}");
        }
        let long = "a".repeat(256);
        let bad = ["", ".", "..", "../../etc", "-rf", ".hidden", "a b", "a;b", "a$(id)", "a`id`", "a/b", "a*", "a\nb"];
        for bad in bad.into_iter().chain(["a\"b", "é", &long]) {
            assert!(!is_valid_name(bad), "{bad:?}");
        }
    }

    #[test]
    fn a_very_long_line_is_ignored() {
        let mut input = b"usr/src/".to_vec();
        input.extend(std::iter::repeat_n(b'a', 1 << 20));
        input.extend(b"\nusr/src/b-1/dkms.conf\n");
        let t = Targets::parse(&input);
        // No directory name is longer than NAME_MAX (255); parsing stays total and keeps the rest.
        assert_eq!(t.module_dirs.len(), 1);
        assert!(t.module_dirs.contains("b-1"));
        let long = format!("usr/src/{}/dkms.conf", "a".repeat(300));
        assert!(Targets::parse(long.as_bytes()).is_empty());
    }
}
