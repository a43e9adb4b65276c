//! The dkms.conf reader's output parser on arbitrary bytes: never panics, and a name, version or
//! dependency it accepts is a valid name.
#![no_main]

use dkms_hook::inventory::dkms_conf::parse_output;
use dkms_hook::targets::is_valid_name;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(conf) = parse_output(data) {
        assert!(is_valid_name(&conf.name), "accepted name {:?}", conf.name);
        assert!(is_valid_name(&conf.version), "accepted version {:?}", conf.version);
        for dep in &conf.build_depends {
            assert!(is_valid_name(dep), "accepted dependency {dep:?}");
        }
    }
});
