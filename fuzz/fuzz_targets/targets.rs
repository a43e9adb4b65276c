//! `Targets::parse` on arbitrary stdin: never panics, and whatever it accepts is safe to use as
//! a path component and an argument.
#![no_main]

use dkms_hook::targets::{is_clean_component, is_valid_name, Targets};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let targets = Targets::parse(data);
    for dir in &targets.module_dirs {
        assert!(is_valid_name(dir) && is_clean_component(dir), "accepted module dir {dir:?}");
    }
    for kver in targets.kernels.keys() {
        assert!(is_valid_name(kver) && is_clean_component(kver), "accepted kernel {kver:?}");
    }
    // Every non-blank line is either recognised or kept as ignored.
    let lines = data.split(|&b| b == b'\n').filter(|l| !l.iter().all(u8::is_ascii_whitespace)).count();
    assert!(targets.ignored.len() <= lines);
});
