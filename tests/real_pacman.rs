//! The real-transaction tier: real pacman 7.1 installs, upgrades and removes real packages through
//! the project's `hooks/*.hook`, which run the dkms-hook binary cargo built for this test, which runs
//! the real dkms against real Debian kernel headers, all inside throwaway overlay roots of the whole
//! machine (see `tests/real/mod.rs`). Each scenario runs once with Debian's dkms 3.0.10 and once with
//! dkms 3.2.2, and checks the files on disk (every `.ko` and its vermagic, the dkms tree,
//! modules.dep) and what pacman printed; where it leaves modules installed, each kernel then boots
//! and loads them (the boot check, `tests/real/boot.rs`).
//!
//! Needs root and scripts/setup; skipped with a message otherwise, but fails in CI (`CI=true`).
//! `cargo test --test real_pacman -- --nocapture` shows every transaction's output and timing.

#[macro_use]
mod real;

use real::*;

/// Both kernels of most scenarios.
const BOTH: &[Kernel] = &[LINUX, LINUX_CLOUD];

for_each_dkms! {
    install_module => s01_install_module_dkms_3_0, s01_install_module_dkms_3_2;
    install_headers => s02_install_headers_dkms_3_0, s02_install_headers_dkms_3_2;
    upgrade_module => s03_upgrade_module_dkms_3_0, s03_upgrade_module_dkms_3_2;
    upgrade_kernel => s04_upgrade_kernel_dkms_3_0, s04_upgrade_kernel_dkms_3_2;
    remove => s05_remove_dkms_3_0, s05_remove_dkms_3_2;
    failing_module => s06_failing_module_dkms_3_0, s06_failing_module_dkms_3_2;
    build_depends => s07_build_depends_dkms_3_0, s07_build_depends_dkms_3_2;
    build_exclusive => s08_build_exclusive_dkms_3_0, s08_build_exclusive_dkms_3_2;
    wrong_kernel => s09_wrong_kernel_dkms_3_0, s09_wrong_kernel_dkms_3_2;
    upgrade_kernel_and_module => s10_upgrade_kernel_and_module_dkms_3_0,
        s10_upgrade_kernel_and_module_dkms_3_2;
    upgrade_to_a_version_that_fails => s11_upgrade_to_a_version_that_fails_dkms_3_0,
        s11_upgrade_to_a_version_that_fails_dkms_3_2;
    release_that_fails => s12_release_that_fails_dkms_3_0, s12_release_that_fails_dkms_3_2;
    release_with_identical_sources => s13_release_with_identical_sources_dkms_3_0,
        s13_release_with_identical_sources_dkms_3_2;
}

/// hello's installed modules: for each kernel, its `version` and `pkgrel` (modinfo) and vermagic.
fn installed_hello(root: &Root) -> Vec<(String, String, String)> {
    BOTH.iter()
        .map(|k| {
            let ko = format!("usr/lib/modules/{}/updates/dkms/hello.ko", k.kver);
            (root.modinfo(&ko, "version"), root.modinfo(&ko, "pkgrel"), root.modinfo(&ko, "vermagic"))
        })
        .collect()
}

/// `dkms status` in the root says hello `version` is installed for both kernels.
fn dkms_status_says_installed(root: &Root, version: &str) {
    let status = root.chroot(&["dkms", "status"]);
    for k in BOTH {
        let line =
            status.text().lines().find(|l| l.starts_with(&format!("hello/{version}, {}", k.kver))).map(str::to_owned);
        assert!(line.as_deref().is_some_and(|l| l.ends_with("installed")), "dkms status:\n{}", status.text());
    }
}

/// Nothing of an earlier version: the dkms tree has only `version`, and dkms-hook keeps no
/// sources.
fn only_version_left(root: &Root, version: &str) {
    let versions: Vec<String> =
        list(&root.path("var/lib/dkms/hello")).into_iter().filter(|n| !n.starts_with("kernel-")).collect();
    assert_eq!(versions, [version], "hello versions in the dkms tree");
    assert!(!root.path("var/lib/dkms-hook/kept").exists(), "dkms-hook still keeps sources");
}

/// The boot check booted exactly KERNELS (in kver order).
fn assert_booted(boots: &[Boot], kernels: &[Kernel]) {
    let booted: Vec<&str> = boots.iter().map(|b| b.kernel()).collect();
    let expected: Vec<&str> = kernels.iter().map(|k| k.kver).collect();
    assert_eq!(booted, expected, "the kernels with modules to load");
}

/// Installing modules with two kernels present builds and installs each for both, and both kernels
/// boot and load them: hello, and Debian's v4l2loopback and acpi-call as an Arch user would package
/// them. v4l2loopback's dkms.conf excludes kernels without media drivers (BUILD_EXCLUSIVE): it is
/// skipped for the cloud kernel and not loaded there; for the amd64 kernel it loads on top of the
/// in-tree `videodev` that depmod resolved, and creates `/dev/video0`.
fn install_module(dkms: Dkms) {
    let Some(root) = Root::new(dkms) else { return };
    root.install_kernels(BOTH);
    root.assert_modules(&[]);

    let t = root.install(&[HELLO_1_0.pkg(), V4L2LOOPBACK.pkg(), ACPI_CALL.pkg()]);
    t.assert_contains("Install DKMS modules").assert_hooks_ok();
    for k in BOTH {
        t.assert_line(&["hello/1.0", k.kver]);
        t.assert_line(&["acpi-call/1.2.2", k.kver]);
    }
    t.assert_line(&["v4l2loopback/0.12.7", LINUX.kver]);
    root.assert_modules(&[(HELLO_1_0, BOTH), (V4L2LOOPBACK, &[LINUX]), (ACPI_CALL, BOTH)]);
    for k in BOTH {
        let ko = format!("usr/lib/modules/{}/updates/dkms/hello.ko", k.kver);
        assert_eq!(root.modinfo(&ko, "version"), "1.0");
    }

    let boots = root.assert_modules_load();
    assert_booted(&boots, BOTH);
    let (amd64, cloud) = (&boots[0], &boots[1]);
    for ko in ["hello", "v4l2loopback", "acpi_call", "videodev"] {
        assert!(amd64.loaded(ko), "{ko} is not loaded in {}:\n{}", LINUX.kver, amd64.summary());
    }
    assert_eq!(amd64.version_of("hello"), Some("1.0"));
    assert!(
        amd64.devices.contains(&"/dev/video0".to_owned()),
        "v4l2loopback made no /dev/video0:\n{}",
        amd64.summary()
    );
    assert!(!amd64.log_of("v4l2loopback").is_empty(), "no kernel log line of v4l2loopback:\n{}", amd64.summary());
    for ko in ["hello", "acpi_call"] {
        assert!(cloud.loaded(ko), "{ko} is not loaded in {}:\n{}", LINUX_CLOUD.kver, cloud.summary());
    }
    assert!(
        cloud.plan.absent.iter().any(|(ko, why)| ko == "v4l2loopback" && why.ends_with("skipped")),
        "status does not say v4l2loopback is skipped for {}: {:?}",
        LINUX_CLOUD.kver,
        cloud.plan.absent
    );
    assert!(!cloud.loaded("v4l2loopback") && !cloud.loaded("videodev"), "{}", cloud.summary());
}

/// Installing a new kernel, then its headers, builds every module for it (one of them with hyphens
/// in its name and version).
fn install_headers(dkms: Dkms) {
    let Some(root) = Root::new(dkms) else { return };
    root.install_kernels(&[LINUX]);
    root.install(&[HELLO_1_0.pkg(), XPAD.pkg()]).assert_hooks_ok();
    root.assert_modules(&[(HELLO_1_0, &[LINUX]), (XPAD, &[LINUX])]);

    // The kernel alone: nothing can be built for it yet (whether that is reported as a failure is
    // dkms-hook's policy, not checked here).
    root.install(&[LINUX_CLOUD.pkg()]);
    root.assert_modules(&[(HELLO_1_0, &[LINUX]), (XPAD, &[LINUX])]);

    let t = root.install(&[LINUX_CLOUD.headers()]);
    t.assert_hooks_ok();
    t.assert_line(&["hello/1.0", LINUX_CLOUD.kver]);
    t.assert_line(&["xpad-neo-x/0.9-r12-g3a1b", LINUX_CLOUD.kver]);
    root.assert_modules(&[(HELLO_1_0, BOTH), (XPAD, BOTH)]);
    for boot in root.assert_modules_load() {
        assert!(boot.loaded("hello") && boot.loaded("xpadneox"), "{}", boot.summary());
    }
}

/// A new module version (new directory) replaces the old one everywhere; a pkgrel bump (same
/// directory) rebuilds it.
fn upgrade_module(dkms: Dkms) {
    let Some(root) = Root::new(dkms) else { return };
    root.install_kernels(BOTH);
    root.install(&[HELLO_1_0.pkg()]).assert_hooks_ok();
    root.assert_modules(&[(HELLO_1_0, BOTH)]);

    root.install(&[HELLO_1_1.pkg()]).assert_hooks_ok();
    root.assert_modules(&[(HELLO_1_1, BOTH)]);
    assert!(!root.path("var/lib/dkms/hello/1.0").exists(), "hello/1.0 is still in the dkms tree");
    for k in BOTH {
        let ko = format!("usr/lib/modules/{}/updates/dkms/hello.ko", k.kver);
        assert_eq!(root.modinfo(&ko, "version"), "1.1");
        assert_eq!(root.modinfo(&ko, "pkgrel"), "1");
    }

    root.install(&[HELLO_1_1_REL2.pkg()]).assert_hooks_ok();
    root.assert_modules(&[(HELLO_1_1_REL2, BOTH)]);
    for k in BOTH {
        let ko = format!("usr/lib/modules/{}/updates/dkms/hello.ko", k.kver);
        assert_eq!(root.modinfo(&ko, "pkgrel"), "2", "{ko} was not rebuilt from the new package release");
    }
    for boot in root.assert_modules_load() {
        assert_eq!(boot.version_of("hello"), Some("1.1"), "{}", boot.summary());
    }
}

/// A kernel upgrade to a new kver builds the modules for it and leaves nothing of ours behind
/// under the old kver.
fn upgrade_kernel(dkms: Dkms) {
    let Some(root) = Root::new(dkms) else { return };
    root.install_kernels(BOTH);
    root.install(&[HELLO_1_0.pkg()]).assert_hooks_ok();

    root.install(&[LINUX_NEXT.pkg(), LINUX_NEXT.headers()]).assert_hooks_ok();
    root.assert_modules(&[(HELLO_1_0, &[LINUX_NEXT, LINUX_CLOUD])]);
    root.assert_kernel_dir_clean(LINUX.kver);
    assert_booted(&root.assert_modules_load(), &[LINUX_CLOUD, LINUX_NEXT]);
}

/// Removing a module package removes it everywhere; removing a kernel removes its modules; removing
/// only headers keeps the modules installed for that kernel.
fn remove(dkms: Dkms) {
    let Some(root) = Root::new(dkms) else { return };
    root.install_kernels(BOTH);
    root.install(&[HELLO_1_0.pkg(), XPAD.pkg()]).assert_hooks_ok();
    root.assert_modules(&[(HELLO_1_0, BOTH), (XPAD, BOTH)]);

    root.remove(&[XPAD.package]).assert_contains("Remove the DKMS modules of what leaves").assert_hooks_ok();
    root.assert_modules(&[(HELLO_1_0, BOTH)]);
    assert!(!root.path("var/lib/dkms/xpad-neo-x").exists(), "xpad-neo-x is still in the dkms tree");

    root.remove(&[&LINUX_CLOUD.headers_name()]).assert_hooks_ok();
    root.assert_modules(&[(HELLO_1_0, BOTH)]);

    root.remove(&[LINUX.name, &LINUX.headers_name()]).assert_hooks_ok();
    root.assert_modules(&[(HELLO_1_0, &[LINUX_CLOUD])]);
    root.assert_kernel_dir_clean(LINUX.kver);

    root.remove(&[HELLO_1_0.package]).assert_hooks_ok();
    root.assert_modules(&[]);
    assert!(!root.path("var/lib/dkms/hello").exists(), "hello is still in the dkms tree");
}

/// A module that does not compile: the others are installed, pacman shows the compiler's error and
/// the hook's failure, and the transaction completes.
fn failing_module(dkms: Dkms) {
    let Some(root) = Root::new(dkms) else { return };
    root.install_kernels(BOTH);

    let t = root.install(&[HELLO_1_0.pkg(), BROKEN.pkg()]);
    t.assert_contains(HOOK_FAILED);
    assert!(
        t.line_of(&["broken.c", "error:"]).is_some(),
        "pacman's output does not show the compiler's error:\n{}",
        t.output
    );
    root.assert_modules(&[(HELLO_1_0, BOTH), (BROKEN, &[])]);
    assert!(root.has_package(BROKEN.package), "the transaction did not install {}", BROKEN.package);
    for boot in root.assert_modules_load() {
        assert!(boot.loaded("hello") && boot.plan.absent.iter().any(|(ko, _)| ko == "broken"), "{}", boot.summary());
    }
}

/// A module and its BUILD_DEPENDS in one transaction: both built, the dependency first (alpha-user's
/// Makefile fails unless zeta-base is already built for the kernel).
fn build_depends(dkms: Dkms) {
    let Some(root) = Root::new(dkms) else { return };
    root.install_kernels(BOTH);

    let t = root.install(&[ALPHA.pkg(), ZETA.pkg()]);
    t.assert_hooks_ok();
    root.assert_modules(&[(ALPHA, BOTH), (ZETA, BOTH)]);
    for k in BOTH {
        let dependency = t.assert_line(&["zeta-base/1.0", k.kver]);
        let dependent = t.assert_line(&["alpha-user/1.0", k.kver]);
        assert!(dependency < dependent, "alpha-user reported before zeta-base for {}", k.kver);
    }
    assert_booted(&root.assert_modules_load(), BOTH);
}

/// BUILD_EXCLUSIVE_KERNEL: built for the matching kernel, reported as skipped for the other, and
/// that is not a failure.
fn build_exclusive(dkms: Dkms) {
    let Some(root) = Root::new(dkms) else { return };
    root.install_kernels(BOTH);

    let t = root.install(&[CLOUDONLY.pkg()]);
    t.assert_hooks_ok();
    let skipped = t.output.lines().any(|l| {
        let l = l.to_lowercase();
        l.contains("cloudonly") && l.contains(LINUX.kver) && l.contains("skip")
    });
    assert!(skipped, "pacman's output does not report cloudonly skipped for {}:\n{}", LINUX.kver, t.output);
    root.assert_modules(&[(CLOUDONLY, &[LINUX_CLOUD])]);
    // Only the cloud kernel has a module to load.
    let boots = root.assert_modules_load();
    assert_booted(&boots, &[LINUX_CLOUD]);
    assert!(boots[0].loaded("cloudonly"), "{}", boots[0].summary());
}

/// A Makefile that builds for one fixed kernel (a `uname -r` Makefile): the build for the other
/// kernel has the wrong vermagic, which is reported as a failure and not left installed.
fn wrong_kernel(dkms: Dkms) {
    let Some(root) = Root::new(dkms) else { return };
    root.install_kernels(BOTH);

    let t = root.install(&[UNAMEMOD.pkg()]);
    t.assert_contains(HOOK_FAILED).assert_contains("vermagic");
    let files = root.module_files();
    let expected = format!("{}/updates/dkms/unamemod.ko", LINUX.kver);
    assert_eq!(files.keys().collect::<Vec<_>>(), [&expected], "module files (vermagic) {files:?}");
    assert_eq!(files[&expected], LINUX.kver);
    let installed: Vec<_> = root.dkms_tree().installed.into_iter().collect();
    assert_eq!(installed, [(("unamemod".into(), LINUX.kver.into()), "1.0".into())], "dkms tree: installed");
    // The build that is right by chance loads; nothing is loaded for the cloud kernel.
    let boots = root.assert_modules_load();
    assert_booted(&boots, &[LINUX]);
    assert!(boots[0].loaded("unamemod"), "{}", boots[0].summary());
}

/// One transaction upgrading a kernel (new kver) and a module (new version) together.
fn upgrade_kernel_and_module(dkms: Dkms) {
    let Some(root) = Root::new(dkms) else { return };
    root.install_kernels(BOTH);
    root.install(&[HELLO_1_0.pkg()]).assert_hooks_ok();

    root.install(&[LINUX_NEXT.pkg(), LINUX_NEXT.headers(), HELLO_1_1.pkg()]).assert_hooks_ok();
    root.assert_modules(&[(HELLO_1_1, &[LINUX_NEXT, LINUX_CLOUD])]);
    assert!(!root.path("var/lib/dkms/hello/1.0").exists(), "hello/1.0 is still in the dkms tree");
    root.assert_kernel_dir_clean(LINUX.kver);
    let boots = root.assert_modules_load();
    assert_booted(&boots, &[LINUX_CLOUD, LINUX_NEXT]);
    for boot in boots {
        assert_eq!(boot.version_of("hello"), Some("1.1"), "{}", boot.summary());
    }
}

/// Upgrading a module installed for two kernels to a version that does not compile keeps the old
/// one installed and working for both; the next good version replaces it everywhere; removing the
/// package leaves nothing.
fn upgrade_to_a_version_that_fails(dkms: Dkms) {
    let Some(root) = Root::new(dkms) else { return };
    root.install_kernels(BOTH);
    root.install(&[HELLO_1_0.pkg()]).assert_hooks_ok();
    let before = installed_hello(&root);

    let t = root.upgrade(&[HELLO_1_1_BROKEN.pkg()]);
    t.assert_contains(HOOK_FAILED);
    for k in BOTH {
        // The guard said so before the transaction; the install hook kept 1.0 after it.
        let warned = t.assert_line(&["warning: hello/1.1 for", k.kver, "does not build"]);
        let kept =
            t.assert_line(&["hello/1.1 for", k.kver, "failed", "kept hello/1.0 (the version that was installed)"]);
        assert!(warned < kept, "{}", t.output);
    }
    assert!(t.line_of(&["hello.c", "error:"]).is_some(), "no compiler error shown:\n{}", t.output);
    assert_eq!(installed_hello(&root), before, "the installed modules changed");
    for (k, (version, _, vermagic)) in BOTH.iter().zip(&before) {
        assert_eq!((version.as_str(), vermagic.split(' ').next().unwrap()), ("1.0", k.kver));
    }
    dkms_status_says_installed(&root, "1.0");
    let status = root.chroot(&["dkms-hook", "status"]);
    for k in BOTH {
        assert!(
            status.text().contains(&format!("hello/1.1 for {}: kept: hello/1.0 is still installed", k.kver)),
            "{}",
            status.text()
        );
    }
    // Both kernels still load 1.0, the version status says is serving.
    let boots = root.assert_modules_load();
    assert_booted(&boots, BOTH);
    for boot in boots {
        assert_eq!(boot.plan.load[0].state, "kept", "{:?}", boot.plan);
        assert_eq!(boot.version_of("hello"), Some("1.0"), "{}", boot.summary());
    }

    root.upgrade(&[HELLO_1_2.pkg()]).assert_hooks_ok();
    root.assert_modules(&[(HELLO_1_2, BOTH)]);
    only_version_left(&root, "1.2");
    for (version, _, _) in installed_hello(&root) {
        assert_eq!(version, "1.2");
    }

    root.remove(&[HELLO_1_2.package]).assert_hooks_ok();
    root.assert_modules(&[]);
    assert!(!root.path("var/lib/dkms/hello").exists(), "hello is still in the dkms tree");
    assert!(!root.path("var/lib/dkms-hook/kept").exists());
}

/// A package release of the same version (same directory) whose changed sources do not compile:
/// the build from the previous release stays installed; the next release rebuilds.
fn release_that_fails(dkms: Dkms) {
    let Some(root) = Root::new(dkms) else { return };
    root.install_kernels(BOTH);
    root.install(&[HELLO_1_0.pkg()]).assert_hooks_ok();
    let before = installed_hello(&root);

    let t = root.upgrade(&[HELLO_1_0_REL2_BROKEN.pkg()]);
    t.assert_contains(HOOK_FAILED);
    for k in BOTH {
        t.assert_line(&["warning: hello/1.0 for", k.kver, "does not build"]);
        t.assert_line(&["hello/1.0 for", k.kver, "failed", "kept the build from before the upgrade"]);
    }
    assert_eq!(installed_hello(&root), before, "the installed modules changed");
    assert_eq!(before[0].1, "1", "built from release 1");
    dkms_status_says_installed(&root, "1.0");
    assert_booted(&root.assert_modules_load(), BOTH);

    root.upgrade(&[HELLO_1_0_REL3.pkg()]).assert_hooks_ok();
    root.assert_modules(&[(HELLO_1_0_REL3, BOTH)]);
    for (version, pkgrel, _) in installed_hello(&root) {
        assert_eq!((version.as_str(), pkgrel.as_str()), ("1.0", "3"));
    }
    only_version_left(&root, "1.0");

    root.remove(&[HELLO_1_0_REL3.package]).assert_hooks_ok();
    root.assert_modules(&[]);
    assert!(!root.path("var/lib/dkms/hello").exists(), "hello is still in the dkms tree");
}

/// A package release with byte-identical sources runs no dkms: the installed module files are
/// the same files; one with changed sources rebuilds.
fn release_with_identical_sources(dkms: Dkms) {
    use std::os::unix::fs::MetadataExt;
    let Some(root) = Root::new(dkms) else { return };
    root.install_kernels(BOTH);
    root.install(&[HELLO_SAME_REL1.pkg()]).assert_hooks_ok();
    let identity = |root: &Root| -> Vec<(u64, i64, i64)> {
        BOTH.iter()
            .map(|k| {
                let m =
                    std::fs::metadata(root.path(&format!("usr/lib/modules/{}/updates/dkms/hello.ko", k.kver))).unwrap();
                (m.ino(), m.mtime(), m.mtime_nsec())
            })
            .collect()
    };
    let before = identity(&root);

    let t = root.upgrade(&[HELLO_SAME_REL2.pkg()]);
    t.assert_hooks_ok();
    for k in BOTH {
        t.assert_line(&["hello/1.0 for", k.kver, "unchanged"]);
    }
    t.assert_contains("Nothing to build: the DKMS module sources are unchanged").assert_lacks("depmod");
    assert_eq!(identity(&root), before, "the installed module files were replaced");
    root.assert_modules(&[(HELLO_SAME_REL2, BOTH)]);
    only_version_left(&root, "1.0");

    // Changed sources (release 3 carries its release number): rebuilt.
    let changed = Module { version: "1.0-3", source: "hello", ..HELLO_SAME_REL1 };
    let t = root.upgrade(&[changed.pkg()]);
    t.assert_hooks_ok();
    for k in BOTH {
        t.assert_line(&["hello/1.0 for", k.kver, "rebuilt in", "replacing the build from before"]);
    }
    assert_ne!(identity(&root), before);
    for (_, pkgrel, _) in installed_hello(&root) {
        assert_eq!(pkgrel, "3");
    }
    only_version_left(&root, "1.0");
    assert_booted(&root.assert_modules_load(), BOTH);
}
