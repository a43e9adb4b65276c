//! Boot images on fixture roots with the recording fake dkms: the generator is the one the pacman
//! database has installed, the images to regenerate are exactly those of the kernels whose modules
//! changed, once each; nothing without a generator or with `initramfs = "off"`. A fixture root
//! cannot run a generator (nothing to chroot into): that failure is reported with the command to
//! run. The real tier (`real_images.rs`) runs a stand-in generator in real roots.

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

/// A cpio+zstd image at `R/boot/initramfs-linux.img` holding `files` (relative path, contents).
fn write_image(t: &TestRoot, files: &[(&str, &str)]) {
    let stage = t.scratch().join("image");
    for (path, contents) in files {
        fs::create_dir_all(stage.join(path).parent().unwrap()).unwrap();
        fs::write(stage.join(path), contents).unwrap();
    }
    fs::create_dir_all(t.path("boot")).unwrap();
    let image = t.path("boot/initramfs-linux.img");
    let mut args = vec!["--format".to_owned(), "newc".into(), "--zstd".into(), "-cf".into()];
    args.push(image.to_str().unwrap().to_owned());
    args.extend(["-C".to_owned(), stage.to_str().unwrap().to_owned()]);
    args.extend(files.iter().map(|(p, _)| (*p).to_owned()));
    let ok = std::process::Command::new("bsdtar").args(&args).status().unwrap().success();
    assert!(ok, "bsdtar {args:?}");
}

#[test]
fn status_reads_the_image_back_and_names_an_old_build_with_the_fix() {
    let t = TestRoot::new();
    t.kernel("linux", K1).headers("linux-headers", K1);
    t.module_pkg("hello-dkms", "hello-1.0", &dkms_conf("hello", "1.0"));
    t.package("mkinitcpio", "40-1", &[("usr/bin/mkinitcpio", "#!/bin/sh\n")]);
    fs::write(t.path("etc/dkms-hook.toml"), "initramfs = \"off\"\n").unwrap();
    t.run(&["sync"], "").assert_code(0);
    let ko = format!("usr/lib/modules/{K1}/updates/dkms/hello.ko");
    let installed = fs::read_to_string(t.path(&ko)).unwrap();

    write_image(&t, &[(&ko, &installed)]);
    let status = t.run(&["status"], "");
    status.assert_code(0);
    assert!(!status.stdout.contains("boot image"), "{status}");

    write_image(&t, &[(&ko, "\0version=0.9\0an older build\n")]);
    let status = t.run(&["status"], "");
    status.assert_code(1);
    status.expect_line(&[
        &format!("the boot image /boot/initramfs-linux.img of kernel {K1} is out of step with the installed hello/1.0"),
        &format!("it holds version 0.9: regenerate it: mkinitcpio -k {K1} -g /boot/initramfs-linux.img"),
    ]);
    let (_, json, _) = ops_status_json(&t);
    let kinds: Vec<&str> =
        json["out_of_place"].as_array().unwrap().iter().map(|o| o["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["stale_boot_image"]);
}

/// `status --json`, parsed.
fn ops_status_json(t: &TestRoot) -> (Option<i32>, serde_json::Value, String) {
    let run = t.run(&["status", "--json"], "");
    let json = serde_json::from_str(&run.stdout).unwrap_or_else(|e| panic!("{e}: {run}"));
    (run.code, json, run.stdout)
}
