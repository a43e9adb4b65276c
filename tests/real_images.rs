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
    real_dracut_images_follow_the_modules => b3_real_dracut_images_follow_the_modules_dkms_3_0,
        b3_real_dracut_images_follow_the_modules_dkms_3_2;
}

/// The real dracut 059 (Debian's dracut-core and cpio, packaged as Arch's `dracut`).
const DRACUT: Pkg = Pkg::Debian("dracut", "059-4", &["dracut-core", "cpio"]);

/// The DKMS module files in a boot image, as the real dracut's `lsinitrd` lists them.
fn lsinitrd(root: &Root, image: &str) -> Vec<String> {
    let listed = root.chroot(&["lsinitrd", image]);
    assert!(listed.status.success(), "lsinitrd {image} failed:\n{}", listed.output);
    listed.output.lines().filter(|l| l.contains("/updates/dkms/")).map(str::to_owned).collect()
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

/// The real dracut, which has no pacman hook of its own for DKMS: configured to put hello in every
/// image (`add_drivers`, gzip, as dracut's own default here), it regenerates the image of each
/// kernel whose modules dkms-hook changed, in the transaction and after `sync`, with dracut's own
/// command for one kernel; `lsinitrd` and `status` (reading the gzip image back) find the module
/// version that is installed.
fn real_dracut_images_follow_the_modules(dkms: Dkms) {
    let Some(root) = Root::new(dkms) else { return };
    root.install_kernels(&[LINUX]);
    root.install(&[DRACUT]).assert_hooks_ok();
    fs::create_dir_all(root.path("etc/dracut.conf.d")).unwrap();
    // No host-only image (the root is not the machine), only the kernel-modules dracut module
    // (the others want udev and systemd), hello in every image.
    let conf = "hostonly=\"no\"\ndracutmodules=\" kernel-modules \"\nadd_drivers+=\" hello \"\ncompress=\"gzip\"\n";
    fs::write(root.path("etc/dracut.conf.d/90-dkms-hook-test.conf"), conf).unwrap();
    fs::write(root.path("etc/dkms-hook.toml"), "guard = false\n").unwrap();
    let image = "/boot/initramfs-linux.img";
    let module = format!("usr/lib/modules/{}/updates/dkms/hello.ko", LINUX.kver);

    let t = root.install(&[HELLO_1_0.pkg()]);
    t.assert_hooks_ok();
    let line = format!(
        "==> Regenerating the boot image of kernel {}: dracut --force --kver {} {image}",
        LINUX.kver, LINUX.kver
    );
    assert_eq!(t.output.lines().filter(|l| l.contains(&line)).count(), 1, "{}", t.output);
    let listed = lsinitrd(&root, image);
    assert!(listed.iter().any(|l| l.ends_with(&module)), "{listed:#?}");
    let status = root.chroot(&["dkms-hook", "status"]);
    assert!(status.status.success(), "{}", status.output);

    // A failed upgrade keeps 1.0; the image still holds 1.0, and is in step.
    let t = root.upgrade(&[HELLO_1_1_BROKEN.pkg()]);
    t.assert_line(&["hello/1.1 for", LINUX.kver, "failed", "kept hello/1.0"]);
    // Fixed, then sync: the image is made again, once, and holds 1.1.
    fix_hello(&root);
    let sync = root.chroot(&["dkms-hook", "sync"]);
    assert!(sync.status.success(), "sync failed:\n{}", sync.output);
    assert_eq!(sync.output.lines().filter(|l| l.contains(&line)).count(), 1, "{}", sync.output);
    root.assert_modules(&[(HELLO_1_1, &[LINUX])]);
    assert!(lsinitrd(&root, image).iter().any(|l| l.ends_with(&module)));
    let inside = root.chroot(&["sh", "-c", &format!("cd /tmp && rm -rf img && mkdir img && cd img && zcat {image} | cpio -id --quiet {module} && modinfo -F version {module}")]);
    assert_eq!(inside.output.trim(), "1.1", "the image does not hold hello 1.1:\n{}", inside.output);
    let status = root.chroot(&["dkms-hook", "status"]);
    assert!(status.status.success(), "{}", status.output);
    assert!(!status.output.contains("boot image"), "{}", status.output);
    // The module loads in the kernel.
    let boots = root.assert_modules_load();
    assert!(boots[0].loaded("hello"), "{}", boots[0].summary());

    // With regeneration off, an upgrade leaves the image behind: status reads the gzip image back
    // and says so, with dracut's command.
    fs::write(root.path("etc/dkms-hook.toml"), "guard = false\ninitramfs = \"off\"\n").unwrap();
    let t = root.upgrade(&[HELLO_1_2.pkg()]);
    t.assert_lacks("Regenerating");
    root.assert_modules(&[(HELLO_1_2, &[LINUX])]);
    let status = root.chroot(&["dkms-hook", "status"]);
    assert!(!status.status.success(), "{}", status.output);
    let fix = format!("it holds version 1.1: regenerate it: dracut --force --kver {} {image}", LINUX.kver);
    assert!(status.output.lines().any(|l| l.contains(image) && l.contains(&fix)), "{}", status.output);
}
