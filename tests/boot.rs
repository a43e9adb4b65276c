//! Boot images on fixture roots with the recording fake dkms: the generator is the one the pacman
//! database has installed, the images to regenerate are exactly those of the kernels whose modules
//! changed, once each; nothing without a generator or with `initramfs = "off"`. A fixture root
//! cannot run a generator (nothing to chroot into): that failure is reported with the command to
//! run. The real tier (`real_boot.rs`) runs a stand-in generator in real roots.

mod common;

use std::fs;

use common::*;

/// `linux` at K1 with headers, `linux-lts` at K2 without; hello's package installed, not built.
fn system() -> TestRoot {
    let t = TestRoot::new();
    t.kernel("linux", K1).headers("linux-headers", K1);
    t.kernel("linux-lts", K2);
    t.module_pkg("hello-dkms", "hello-1.0", &dkms_conf("hello", "1.0"));
    t
}

#[test]
fn sync_regenerates_the_image_of_each_kernel_whose_modules_changed_once() {
    let t = system();
    t.package("dracut", "108-1", &[("usr/bin/dracut", "#!/bin/sh\n")]);
    let sync = t.run(&["sync"], "");
    assert!(t.ko_installed("hello", K1), "{sync}");
    let line =
        format!("==> Regenerating the boot image of kernel {K1}: dracut --force --kver {K1} /boot/initramfs-linux.img");
    assert_eq!(sync.count_lines(&line), 1, "{sync}");
    assert_eq!(sync.count_lines("Regenerating"), 1, "{sync}");
    // Nothing in a fixture root can run it: said, with the command, and the run fails.
    sync.expect_line(&[&format!("error: the boot image of kernel {K1} is not regenerated"), "dracut --force --kver"]);
    sync.assert_code(1);

    // Nothing changed since: nothing to regenerate.
    let again = t.run(&["sync"], "");
    again.assert_code(0);
    assert_eq!(again.count_lines("Regenerating"), 0, "{again}");
}

#[test]
fn nothing_without_a_generator_or_when_off() {
    let t = system();
    let sync = t.run(&["sync"], "");
    sync.assert_code(0);
    assert!(t.ko_installed("hello", K1));
    assert!(!sync.output().contains("boot image"), "{sync}");

    let t = system();
    t.package("booster", "0.12-1", &[("usr/bin/booster", "#!/bin/sh\n")]);
    fs::write(t.path("etc/dkms-hook.toml"), "initramfs = \"off\"\n").unwrap();
    let sync = t.run(&["sync"], "");
    sync.assert_code(0);
    assert!(t.ko_installed("hello", K1));
    assert!(!sync.output().contains("boot image"), "{sync}");
}
