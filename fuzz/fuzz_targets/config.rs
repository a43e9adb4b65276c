//! The configuration file parser on arbitrary text, checked against an independent reading of
//! the documented format (dkms-hook.toml(5)): a file parses exactly when it is TOML whose keys
//! are all documented, each value has its documented type and range, every glob pattern is
//! valid and `log_dir` is absolute; an accepted file yields exactly its values; a rejected one is
//! named in the error.
#![no_main]

use std::path::Path;

use dkms_hook::config::{FileConfig, FILE_KEYS};
use libfuzzer_sys::fuzz_target;
use toml::Value;

/// Whether `value` is what the documented `key` takes.
fn valid(key: &str, value: &Value) -> bool {
    match key {
        "jobs" | "keep_logs" | "job_timeout" | "lock_timeout" => value.as_integer().is_some_and(|n| n >= 0),
        "dkms" | "depmod" => value.is_str(),
        "log_dir" => value.as_str().is_some_and(|s| s.starts_with('/')),
        "guard" => value.is_bool(),
        "exclude_kernels" | "exclude_modules" | "critical" => value.as_array().is_some_and(|items| {
            items.iter().all(|p| p.as_str().is_some_and(|p| glob::Pattern::new(p).is_ok()))
        }),
        _ => false,
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let parsed = FileConfig::parse(text, Path::new("/etc/dkms-hook.toml"));
    let table = text.parse::<toml::Table>();
    let expected = table.as_ref().is_ok_and(|t| t.iter().all(|(k, v)| FILE_KEYS.contains(&k.as_str()) && valid(k, v)));
    match parsed {
        Ok(config) => {
            assert!(expected, "accepted {text:?}");
            let t = table.unwrap();
            let int = |k: &str| t.get(k).and_then(Value::as_integer).map(|n| n as u64);
            assert_eq!(config.jobs.map(|n| n as u64), int("jobs"));
            assert_eq!(config.keep_logs.map(|n| n as u64), int("keep_logs"));
            assert_eq!(config.job_timeout, int("job_timeout"));
            assert_eq!(config.lock_timeout, int("lock_timeout"));
            let string = |k: &str| t.get(k).and_then(Value::as_str).map(str::to_owned);
            assert_eq!(config.dkms.map(|p| p.display().to_string()), string("dkms"));
            assert_eq!(config.log_dir.map(|p| p.display().to_string()), string("log_dir"));
        }
        Err(e) => {
            assert!(!expected, "rejected valid {text:?}: {e}");
            assert!(e.to_string().contains("/etc/dkms-hook.toml"), "error without the file: {e}");
        }
    }
});
