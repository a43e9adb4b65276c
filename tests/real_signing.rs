//! Signing on a system that looks booted to dkms (`tests/real/booted.rs`): real pacman 7.1 runs
//! inside the overlay root as `/`, in a PID namespace whose PID 1 shares its mounts, so dkms ≥ 3.3
//! sees no chroot and signs as on a booted Arch system — and dkms-hook's builds in its private
//! mount namespaces must come out the same. Each scenario runs with dkms 3.0.10 and 3.2.2, which
//! sign regardless of chroots and of `try_sign_modules`; `DKMS_HOOK_DKMS_OTHER=/path/to/dkms`
//! runs the 3.2 scenarios with another dkms (3.4 by hand), where `try_sign_modules` counts.
//!
//! Needs root and scripts/setup; skipped with a message otherwise, but fails in CI (`CI=true`).

#[macro_use]
mod real;

use std::fs;

use real::*;

for_each_dkms! {
    two_kernels_signed_by_the_roots_key => s1_two_kernels_signed_by_the_roots_key_dkms_3_0,
        s1_two_kernels_signed_by_the_roots_key_dkms_3_2;
    guarded_kernel_upgrade_signed_by_the_roots_key => s2_guarded_kernel_upgrade_signed_by_the_roots_key_dkms_3_0,
        s2_guarded_kernel_upgrade_signed_by_the_roots_key_dkms_3_2;
    signing_off_by_policy => s3_signing_off_by_policy_dkms_3_0, s3_signing_off_by_policy_dkms_3_2;
    module_upgrade_stays_signed => s4_module_upgrade_stays_signed_dkms_3_0, s4_module_upgrade_stays_signed_dkms_3_2;
    compressed_kernel_modules_compressed_alike => s5_compressed_kernel_modules_compressed_alike_dkms_3_0,
        s5_compressed_kernel_modules_compressed_alike_dkms_3_2;
}

fn ko(kernel: Kernel) -> String {
    format!("usr/lib/modules/{}/updates/dkms/hello.ko", kernel.kver)
}

/// A booted root with `kernels` (and their headers) and hello 1.0 installed.
fn booted_with(dkms: Dkms, kernels: &[Kernel], framework: Option<&str>) -> Option<Root> {
    let root = Root::new(dkms)?;
    if let Some(text) = framework {
        fs::create_dir_all(root.path("etc/dkms")).unwrap();
        fs::write(root.path("etc/dkms/framework.conf"), text).unwrap();
    }
    let pkgs: Vec<Pkg> = kernels.iter().flat_map(|k| [k.pkg(), k.headers()]).collect();
    root.booted_install(&pkgs).assert_hooks_ok();
    root.booted_install(&[HELLO_1_0.pkg()]).assert_hooks_ok();
    Some(root)
}

/// (a) A module installed for two kernels is signed by the root's key for both.
fn two_kernels_signed_by_the_roots_key(dkms: Dkms) {
    let Some(root) = booted_with(dkms, &[LINUX, LINUX_CLOUD], None) else { return };
    let subject = root.dkms_certificate_subject();
    for k in [LINUX, LINUX_CLOUD] {
        assert_eq!(root.modinfo(&ko(k), "signer"), subject, "hello.ko for {}", k.kver);
    }
}

/// (b) A guarded kernel upgrade (new kver): the guard builds in its private mount namespace, the
/// install hook installs that build, and it is signed by the root's key as a direct install.
fn guarded_kernel_upgrade_signed_by_the_roots_key(dkms: Dkms) {
    let Some(root) = booted_with(dkms, &[LINUX], None) else { return };
    let subject = root.dkms_certificate_subject();
    root.serve(&[LINUX_NEXT.pkg(), LINUX_NEXT.headers()]);
    let t = root.booted_pacman(&["-Syu"]);
    assert_eq!(t.code, Some(0), "{}", t.output);
    t.assert_hooks_ok();
    t.assert_line(&["hello/1.0 for", LINUX_NEXT.kver, "installed (built before the transaction)"]);
    assert_eq!(root.modinfo(&ko(LINUX_NEXT), "signer"), subject);
}

/// (c) `try_sign_modules="false"`: dkms ≥ 3.3 signs nothing; 3.0 and 3.2 do not know the
/// variable and sign anyway. Nothing complains either way.
fn signing_off_by_policy(dkms: Dkms) {
    let Some(root) = booted_with(dkms, &[LINUX], Some("try_sign_modules=\"false\"\n")) else { return };
    let signer = root.modinfo(&ko(LINUX), "signer");
    let version = root.dkms_version();
    match version < (3, 3) {
        true => assert!(!signer.is_empty(), "dkms {version:?} signs regardless of the policy"),
        false => assert_eq!(signer, "", "dkms {version:?} signed against try_sign_modules=\"false\""),
    }
    let status = root.chroot(&["dkms-hook", "status"]);
    assert!(status.status.success(), "status complains:\n{}", status.output);
}

/// (d) A module upgrade through the build-first swap (hello 1.0 to 1.1, built privately before
/// the installed version is removed) stays signed by the root's key.
fn module_upgrade_stays_signed(dkms: Dkms) {
    let Some(root) = booted_with(dkms, &[LINUX], None) else { return };
    let subject = root.dkms_certificate_subject();
    let t = root.booted_install(&[HELLO_1_1.pkg()]);
    t.assert_hooks_ok();
    assert_eq!(root.modinfo(&ko(LINUX), "version"), "1.1");
    assert_eq!(root.modinfo(&ko(LINUX), "signer"), subject);
}

/// kmod's depmod hook, as Arch has it: `modules.dep` exists for every installed kernel when the
/// install hook runs.
const KMOD: Pkg = Pkg::Tree("kmod", "30-1", "standins/kmod");

/// The names in `usr/lib/modules/<kver>/updates/dkms/`.
fn installed_files(root: &Root, kernel: Kernel) -> Vec<String> {
    real::list(&root.path(&format!("usr/lib/modules/{}/updates/dkms", kernel.kver)))
}

/// (e) Kernels whose own modules are `.ko.zst`, as Arch's are: a direct `dkms install` compresses
/// hello the same way (dkms 3.0 reads `.zst` in `modules.dep`, 3.2 and later find `*.ko.zst` in the
/// kernel's module directory), and so must every build dkms-hook makes — the fresh install, the
/// guard's build for the next kernel (made in a namespace where the kernel is not installed yet)
/// and the build-first swap — each signed by the root's key; and the kernel loads it.
fn compressed_kernel_modules_compressed_alike(dkms: Dkms) {
    let Some(root) = Root::new(dkms) else { return };
    root.booted_install(&[KMOD]).assert_hooks_ok();
    root.booted_install(&[LINUX_ZST.pkg(), LINUX_ZST.headers()]).assert_hooks_ok();
    let dep = fs::read_to_string(root.path(&format!("usr/lib/modules/{}/modules.dep", LINUX.kver))).unwrap();
    assert!(dep.contains(".ko.zst:"), "depmod saw no compressed module:\n{dep}");
    root.booted_install(&[HELLO_1_0.pkg()]).assert_hooks_ok();
    // dkms made its key for the first module it signed.
    let subject = root.dkms_certificate_subject();
    let compressed = |kernel: Kernel, version: &str, what: &str| {
        assert_eq!(installed_files(&root, kernel), ["hello.ko.zst"], "{what}: as a direct install on {}", kernel.kver);
        let ko = format!("usr/lib/modules/{}/updates/dkms/hello.ko.zst", kernel.kver);
        assert_eq!(root.modinfo(&ko, "version"), version, "{what}");
        assert_eq!(root.modinfo(&ko, "signer"), subject, "{what}: signed by the root's key");
    };
    compressed(LINUX_ZST, "1.0", "the fresh install");

    root.serve(&[LINUX_NEXT_ZST.pkg(), LINUX_NEXT_ZST.headers()]);
    let t = root.booted_pacman(&["-Syu"]);
    assert_eq!(t.code, Some(0), "{}", t.output);
    t.assert_hooks_ok();
    t.assert_line(&["hello/1.0 for", LINUX_NEXT.kver, "installed (built before the transaction)"]);
    compressed(LINUX_NEXT_ZST, "1.0", "the guard's build");

    root.booted_install(&[HELLO_1_1.pkg()]).assert_hooks_ok();
    compressed(LINUX_NEXT_ZST, "1.1", "the build-first swap");
    // The kernel loads it (the boot check's image holds the modules decompressed, as kmod's
    // modprobe hands them to the kernel).
    let boots = root.assert_modules_load();
    assert_eq!(boots.iter().map(|b| b.kernel()).collect::<Vec<_>>(), [LINUX_NEXT.kver]);
}
