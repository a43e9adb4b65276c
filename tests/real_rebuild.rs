//! A kernel rebuilt under the same kver (`linux` and `linux-headers` with a new pkgrel, the same
//! `usr/lib/modules/<kver>`), through real pacman, dkms and headers: build first here too. A module
//! that no longer compiles against the rebuilt headers keeps its working build; byte-identical
//! headers rebuild nothing. Each scenario ends with the boot check.
//!
//! Needs root and scripts/setup; skipped with a message otherwise, but fails in CI (`CI=true`).
//! `cargo test --test real_rebuild -- --nocapture` shows every transaction's output.

#[macro_use]
mod real;

use real::*;

/// Both kernels of the scenarios.
const BOTH: &[Kernel] = &[LINUX, LINUX_CLOUD];

for_each_dkms! {
    rebuilt_headers_break_a_module => k01_rebuilt_headers_break_a_module_dkms_3_0,
        k01_rebuilt_headers_break_a_module_dkms_3_2;
    identical_headers => k02_identical_headers_dkms_3_0, k02_identical_headers_dkms_3_2;
}

/// The `updates/dkms` module files of kernel K with their sizes and modification times.
fn module_files_of(root: &Root, k: Kernel) -> std::collections::BTreeMap<String, String> {
    root.snapshot(&[&format!("usr/lib/modules/{}/updates", k.kver)])
}

/// hello and oldapi installed for both kernels.
fn with_modules(dkms: Dkms) -> Option<Root> {
    let root = Root::new(dkms)?;
    root.install_kernels(BOTH);
    root.install(&[HELLO_1_0.pkg(), OLDAPI.pkg()]).assert_hooks_ok();
    root.assert_modules(&[(HELLO_1_0, BOTH), (OLDAPI, BOTH)]);
    Some(root)
}

/// `linux` rebuilt with a changed interface that oldapi does not build against: hello is rebuilt
/// for it, oldapi's working build stays installed there (one line says so), and both kernels boot
/// and load both modules.
fn rebuilt_headers_break_a_module(dkms: Dkms) {
    let Some(root) = with_modules(dkms) else { return };
    let oldapi_ko = format!("usr/lib/modules/{}/updates/dkms/oldapi.ko", LINUX.kver);
    let before = root.snapshot(&[&oldapi_ko]);

    let t = root.install(&[LINUX_REL2.pkg(), Pkg::RebuiltHeaders(LINUX_REL2, Some(CHANGED_API))]);
    assert_eq!(root.version_of("linux-headers").as_deref(), Some(LINUX_REL2.version));
    let line = t.assert_line(&["oldapi/1.0 for", LINUX.kver, "failed"]);
    assert!(
        t.output.lines().nth(line).unwrap().contains("kept the build from before the upgrade"),
        "the failed rebuild does not say the working build stays:\n{}",
        t.output
    );
    t.assert_line(&["hello/1.0 for", LINUX.kver, "replacing the build from before"]);
    assert!(t.line_of(&["oldapi/1.0 from", LINUX.kver]).is_none(), "oldapi was removed first:\n{}", t.output);

    root.assert_modules(&[(HELLO_1_0, BOTH), (OLDAPI, BOTH)]);
    assert_eq!(root.snapshot(&[&oldapi_ko]), before, "oldapi's working build was touched");
    assert_eq!(root.modinfo(&oldapi_ko, "version"), "1.0");
    let status = root.chroot(&["dkms", "status"]);
    assert!(
        status.output.lines().any(|l| l.starts_with("oldapi") && l.contains(LINUX.kver) && l.contains("installed")),
        "dkms status does not show oldapi installed for {}:\n{}",
        LINUX.kver,
        status.output
    );
    for boot in root.assert_modules_load() {
        assert!(boot.loaded("hello") && boot.loaded("oldapi"), "{}", boot.summary());
    }
}

/// `linux` rebuilt with byte-identical headers: nothing is rebuilt or removed, each module of that
/// kernel is reported unchanged, and the kernels boot and load them.
fn identical_headers(dkms: Dkms) {
    let Some(root) = with_modules(dkms) else { return };
    let before = module_files_of(&root, LINUX);

    let t = root.install(&[LINUX_REL2.pkg(), Pkg::RebuiltHeaders(LINUX_REL2, None)]);
    t.assert_hooks_ok();
    assert_eq!(root.version_of("linux").as_deref(), Some(LINUX_REL2.version));
    for m in ["hello/1.0 for", "oldapi/1.0 for"] {
        t.assert_line(&[m, LINUX.kver, "unchanged"]);
    }
    assert!(t.line_of(&["from", LINUX.kver, "removed"]).is_none(), "a module was removed:\n{}", t.output);
    assert_eq!(module_files_of(&root, LINUX), before, "the installed modules were touched");
    root.assert_modules(&[(HELLO_1_0, BOTH), (OLDAPI, BOTH)]);
    let status = root.chroot(&["dkms", "status"]);
    for m in ["hello", "oldapi"] {
        assert!(
            status.output.lines().any(|l| l.starts_with(m) && l.contains(LINUX.kver) && l.contains("installed")),
            "dkms status does not show {m} installed for {}:\n{}",
            LINUX.kver,
            status.output
        );
        let ko = format!("usr/lib/modules/{}/updates/dkms/{m}.ko", LINUX.kver);
        assert_eq!(root.modinfo(&ko, "version"), "1.0");
    }
    for boot in root.assert_modules_load() {
        assert!(boot.loaded("hello") && boot.loaded("oldapi"), "{}", boot.summary());
    }
}
