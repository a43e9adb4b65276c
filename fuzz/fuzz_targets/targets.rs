//! `Targets::parse` on arbitrary stdin, checked against an independent reading of what a hook's
//! stdin may name: every non-blank line is either recognised (and then names exactly the module
//! directory or kernel it spells) or kept as ignored, and every recognised name uses only the
//! bytes dkms names may use.
#![no_main]

use dkms_hook::targets::Targets;
use libfuzzer_sys::fuzz_target;

mod oracle;
use oracle::plain;

/// A path component that cannot escape or smuggle anything: not empty, `.` or `..`, no leading
/// `-`, no control character or backslash, at most 255 bytes.
fn clean(part: &str) -> bool {
    !part.is_empty()
        && part.len() <= 255
        && part != "."
        && part != ".."
        && !part.starts_with('-')
        && !part.chars().any(|c| c.is_control() || c == '\\')
}

/// What one line names, read independently: a module directory, or a kernel and whether the
/// path is under its `build/`.
enum Named<'a> {
    Module(&'a str),
    Kernel(&'a str, bool),
    Nothing,
}

fn read(line: &str) -> Named<'_> {
    let path = line.trim_end_matches('/');
    let parts: Vec<&str> = path.split('/').collect();
    if !parts.iter().all(|p| clean(p)) {
        return Named::Nothing;
    }
    match parts.as_slice() {
        ["usr", "src", dir, "dkms.conf"] if plain(dir) => Named::Module(dir),
        ["usr", "lib", "modules", kver, first, ..] if plain(kver) => Named::Kernel(kver, *first == "build"),
        _ => Named::Nothing,
    }
}

fuzz_target!(|data: &[u8]| {
    let targets = Targets::parse(data);
    for name in targets.module_dirs.iter().chain(targets.kernels.keys()) {
        assert!(plain(name), "accepted name {name:?}");
    }
    let mut ignored = 0;
    for line in data.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let Ok(text) = std::str::from_utf8(line) else {
            ignored += 1;
            continue;
        };
        match read(text) {
            Named::Module(dir) => assert!(targets.module_dirs.contains(dir), "{text:?} not recognised"),
            Named::Kernel(kver, headers) => {
                let change = targets.kernels.get(kver).unwrap_or_else(|| panic!("{text:?} not recognised"));
                assert!(if headers { change.headers } else { change.image }, "{text:?} recorded as {change:?}");
            }
            Named::Nothing => {
                assert!(targets.ignored.iter().any(|l| l == text), "{text:?} neither recognised nor ignored");
                ignored += 1;
            }
        }
    }
    assert_eq!(targets.ignored.len(), ignored, "ignored lines: {:?}", targets.ignored);
});
