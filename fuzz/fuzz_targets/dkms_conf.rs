//! The dkms.conf reader's output parser on arbitrary bytes, checked against an independent
//! reading of the reader's format (NUL-separated `KEY=value` records, the last one of a key
//! counting): an accepted name and version are exactly those records' values, an accepted
//! dependency list is the BUILD_DEPENDS value split at whitespace, and every accepted name uses
//! only the bytes dkms names may use.
#![no_main]

use dkms_hook::inventory::dkms_conf::parse_output;
use libfuzzer_sys::fuzz_target;

mod oracle;
use oracle::plain;

/// The last value of `key` among the records, if any.
fn last<'a>(data: &'a [u8], key: &str) -> Option<&'a [u8]> {
    let prefix = format!("{key}=");
    data.split(|&b| b == 0).filter_map(|r| r.strip_prefix(prefix.as_bytes())).last()
}

fuzz_target!(|data: &[u8]| {
    let Ok(conf) = parse_output(data) else { return };
    assert!(plain(&conf.name), "accepted name {:?}", conf.name);
    assert!(plain(&conf.version), "accepted version {:?}", conf.version);
    assert_eq!(last(data, "PACKAGE_NAME"), Some(conf.name.as_bytes()));
    assert_eq!(last(data, "PACKAGE_VERSION"), Some(conf.version.as_bytes()));
    let depends = last(data, "BUILD_DEPENDS").map(|v| String::from_utf8_lossy(v).into_owned()).unwrap_or_default();
    assert_eq!(conf.build_depends, depends.split_whitespace().collect::<Vec<_>>());
    for dep in &conf.build_depends {
        assert!(plain(dep), "accepted dependency {dep:?}");
    }
});
