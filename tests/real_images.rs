//! Boot images follow the modules, in real overlay roots with real pacman and dkms: a stand-in
//! mkinitcpio (`tests/real/boot/mkinitcpio`: it records its arguments and writes a cpio+zstd image
//! of the kernel's DKMS modules) installed as a package under mkinitcpio's file names, with a
//! preset for `linux`, and a stand-in of mkinitcpio's own pacman hook (`mkinitcpio -P` when DKMS
//! sources change). In a transaction, that hook rebuilds the image once and dkms-hook does not;
//! `dkms-hook sync` after a fixed module regenerates that kernel's image once, with
//! `mkinitcpio -p linux`, and the image holds the new module; with `initramfs = "off"` nothing is
//! regenerated, and `status`, reading the image back, says it holds the old build and how to fix
//! it. Each scenario runs with dkms 3.0.10 and 3.2.2.
//!
//! Needs root and scripts/setup; skipped with a message otherwise, but fails in CI (`CI=true`).

#[macro_use]
mod real;

use std::fs;
use std::process::Command;

use real::*;

for_each_dkms! {
    sync_regenerates_the_image_of_the_fixed_kernel_once => b1_sync_regenerates_the_image_of_the_fixed_kernel_once_dkms_3_0,
        b1_sync_regenerates_the_image_of_the_fixed_kernel_once_dkms_3_2;
    initramfs_off_regenerates_nothing => b2_initramfs_off_regenerates_nothing_dkms_3_0,
        b2_initramfs_off_regenerates_nothing_dkms_3_2;
}

/// The stand-in's record of its calls, in the root.
const CALLS: &str = "var/log/mkinitcpio-calls";

fn calls(root: &Root) -> Vec<String> {
    fs::read_to_string(root.path(CALLS)).map(|t| t.lines().map(str::to_owned).collect()).unwrap_or_default()
}

/// `linux` with headers and the stand-in mkinitcpio; hello 1.0 installed, then its upgrade to a
/// 1.1 that does not compile let through (`guard = false`, and `extra` in the configuration):
/// 1.0 is kept. In each transaction mkinitcpio's hook rebuilds the image once, and dkms-hook
/// does not.
fn kept_after_a_failed_upgrade(dkms: Dkms, extra: &str) -> Option<Root> {
    let root = Root::new(dkms)?;
    root.install_kernels(&[LINUX]);
    root.install(&[Pkg::Tree("mkinitcpio", "40-1", "boot/mkinitcpio")]);
    fs::write(root.path("etc/dkms-hook.toml"), format!("guard = false\n{extra}")).unwrap();
    let t = root.install(&[HELLO_1_0.pkg()]);
    t.assert_hooks_ok();
    // mkinitcpio's own hook made the image, holding hello 1.0; dkms-hook did not make it again.
    assert_eq!(calls(&root), ["-P", "-p linux"], "{}", t.output);
    fs::remove_file(root.path(CALLS)).unwrap();
    let t2 = root.upgrade(&[HELLO_1_1_BROKEN.pkg()]);
    t2.assert_line(&["hello/1.1 for", LINUX.kver, "failed", "kept hello/1.0"]);
    for t in [&t, &t2] {
        t.assert_lacks("Regenerating the boot image");
    }
    assert_eq!(calls(&root), ["-P", "-p linux"], "not once by mkinitcpio's hook alone:\n{}", t2.output);
    fs::remove_file(root.path(CALLS)).unwrap();
    Some(root)
}

/// The fix: hello 1.1's sources made to compile (as a fixed header would).
fn fix_hello(root: &Root) {
    let good = fs::read_to_string(format!("{REPO}/tests/real/modules/hello/hello.c")).unwrap();
    let good = good.replace("@MODVER@", "1.1").replace("@PKGREL@", "1");
    fs::write(root.path("usr/src/hello-1.1/hello.c"), good).unwrap();
}

fn sync_regenerates_the_image_of_the_fixed_kernel_once(dkms: Dkms) {
    let Some(root) = kept_after_a_failed_upgrade(dkms, "") else { return };
    fix_hello(&root);
    let sync = root.chroot(&["dkms-hook", "sync"]);
    assert!(sync.status.success(), "sync failed:\n{}", sync.output);
    let line = format!("==> Regenerating the boot image of kernel {}: mkinitcpio -p linux", LINUX.kver);
    assert_eq!(sync.output.lines().filter(|l| l.contains(&line)).count(), 1, "{}", sync.output);
    assert_eq!(calls(&root), ["-p linux"]);
    assert!(!sync.output.contains("still holds"), "{}", sync.output);
    root.assert_modules(&[(HELLO_1_1, &[LINUX])]);
    // The image holds the new module.
    let image = root.path("boot/initramfs-linux.img");
    let listed = Command::new("bsdtar").arg("-tf").arg(&image).output().unwrap();
    let listed = String::from_utf8_lossy(&listed.stdout);
    assert!(listed.contains(&format!("usr/lib/modules/{}/updates/dkms/hello.ko", LINUX.kver)), "{listed}");

    // Nothing changed: nothing regenerated.
    let again = root.chroot(&["dkms-hook", "sync"]);
    assert!(again.status.success(), "{}", again.output);
    assert_eq!(calls(&root), ["-p linux"], "{}", again.output);
    // status reads the image back: in step.
    let status = root.chroot(&["dkms-hook", "status"]);
    assert!(status.status.success(), "{}", status.output);
    assert!(!status.output.contains("boot image"), "{}", status.output);
}

fn initramfs_off_regenerates_nothing(dkms: Dkms) {
    let Some(root) = kept_after_a_failed_upgrade(dkms, "initramfs = \"off\"\n") else { return };
    fix_hello(&root);
    let sync = root.chroot(&["dkms-hook", "sync"]);
    assert!(sync.status.success(), "sync failed:\n{}", sync.output);
    root.assert_modules(&[(HELLO_1_1, &[LINUX])]);
    assert!(!sync.output.contains("Regenerating"), "{}", sync.output);
    assert_eq!(calls(&root), Vec::<String>::new());
    // The image still holds hello 1.0: status says so, with the fix.
    let status = root.chroot(&["dkms-hook", "status"]);
    assert!(!status.status.success(), "{}", status.output);
    let line = "the boot image /boot/initramfs-linux.img of kernel";
    let found =
        status.output.lines().find(|l| l.contains(line) && l.contains("out of step with the installed hello/1.1"));
    let found = found.unwrap_or_else(|| panic!("status does not tell:\n{}", status.output));
    assert!(found.contains("it holds version 1.0: regenerate it: mkinitcpio -p linux"), "{found}");
}
