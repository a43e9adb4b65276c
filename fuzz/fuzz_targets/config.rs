//! The configuration file parser on arbitrary text: never panics, and an error names the file.
#![no_main]

use std::path::Path;

use dkms_hook::config::FileConfig;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Err(e) = FileConfig::parse(text, Path::new("/etc/dkms-hook.toml")) {
        let msg = e.to_string();
        assert!(msg.contains("/etc/dkms-hook.toml"), "error without the file: {msg}");
    }
});
