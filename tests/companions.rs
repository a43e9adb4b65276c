//! Locked companions on fixture roots with the recording fake dkms: a module package that depends
//! on its companion at one exact version (nvidia-dkms on `nvidia-utils=VERSION`) and comes with a
//! new version of the companion makes its test build critical, whatever `critical` says; a kernel
//! upgrade alone, a module upgrade that leaves the companion where it is, and `unlocked` keep the
//! ordinary rule. Let through, a kept old module is reported, after the transaction and by `status`,
//! as not working with the new companion. The real tier (`real_companions.rs`) runs the same with
//! the real pacman and dkms.

mod common;

use std::fs;

use common::*;

fn config(t: &TestRoot, text: &str) {
    fs::write(t.path("etc/dkms-hook.toml"), text).unwrap();
}

/// `linux` at K1 with headers; nvidia-dkms 580-1 (locked to nvidia-utils 580-1, which
/// lib32-nvidia-utils is locked to too) installed for it; nothing critical.
fn nvidia_system() -> TestRoot {
    let t = TestRoot::new();
    t.kernel("linux", K1).headers("linux-headers", K1);
    t.module_pkg_version("nvidia-dkms", "580-1", "nvidia-580", &dkms_conf("nvidia", "580"));
    t.depends("nvidia-dkms", &["dkms", "nvidia-utils=580-1"]);
    t.package("nvidia-utils", "580-1", &[("usr/lib/libnvidia-glcore.so.580", "580\n")]);
    t.package("lib32-nvidia-utils", "580-1", &[("usr/lib32/libnvidia-glcore.so.580", "580\n")]);
    t.depends("lib32-nvidia-utils", &["nvidia-utils=580-1"]);
    t.run(&["install"], "usr/src/nvidia-580/dkms.conf\n").assert_code(0);
    assert_eq!(t.installed_for("nvidia", K1).as_deref(), Some("580"));
    config(&t, "critical = []\n");
    t
}

/// Offers nvidia-dkms `version`-1 locked to nvidia-utils `companion`, as `pacman -Syu` has it.
fn offer_nvidia(t: &TestRoot, version: &str, companion: &str) {
    let entries = module_entries(&format!("nvidia-{version}"), &dkms_conf("nvidia", version));
    let lock = format!("nvidia-utils={companion}");
    t.offer_depending("nvidia-dkms", &format!("{version}-1"), &borrowed(&entries), &["dkms", &lock]);
}

#[test]
fn a_locked_module_whose_companion_moves_with_it_stops_the_transaction_when_it_fails() {
    let t = nvidia_system();
    offer_nvidia(&t, "590", "590-1");
    t.offer("nvidia-utils", "590-1", &[]);
    let fail = format!("nvidia/590/{K1}=10");

    let guard = t.run_env(&["guard"], "usr/src/nvidia-590/dkms.conf\n", &[("FAKE_DKMS_FAIL", &fail)]);
    guard.assert_code(1);
    guard.expect_line(&[&format!("error: nvidia/590 is locked to nvidia-utils and does not build for kernel {K1}")]);
    guard.expect_line(&[
        "nvidia-dkms comes with nvidia-utils 580-1 -> 590-1",
        "the installed nvidia would not work with it after the transaction",
    ]);
    guard.expect_line(&["pacman -Syu --ignore lib32-nvidia-utils,nvidia-dkms,nvidia-utils"]);
    // Not critical by configuration: the way to let it through is the lock's opt-out, not `critical`.
    let drop = guard.expect_line(&["-> fix the module", "unlocked = [\"nvidia\"]"]);
    assert!(!drop.contains("`critical`"), "{drop}");
    assert_eq!(t.installed_for("nvidia", K1).as_deref(), Some("580"));

    // Opted out: the ordinary rule, a warning.
    config(&t, "critical = []\nunlocked = [\"nvidia\"]\n");
    let guard = t.run_env(&["guard"], "usr/src/nvidia-590/dkms.conf\n", &[("FAKE_DKMS_FAIL", &fail)]);
    guard.assert_code(0);
    guard.expect_line(&[&format!("warning: nvidia/590 for {K1} does not build"), "not critical"]);
}

#[test]
fn a_locked_module_upgraded_alone_keeps_the_ordinary_rule() {
    let t = nvidia_system();
    // A new module release for the companion already installed: nothing moves with it.
    offer_nvidia(&t, "580.1", "580-1");
    let fail = format!("nvidia/580.1/{K1}=10");
    let guard = t.run_env(&["guard"], "usr/src/nvidia-580.1/dkms.conf\n", &[("FAKE_DKMS_FAIL", &fail)]);
    guard.assert_code(0);
    guard.expect_line(&[&format!("warning: nvidia/580.1 for {K1} does not build"), "not critical"]);
    assert!(!guard.stdout.contains("locked"), "{guard}");
}

#[test]
fn a_kernel_upgrade_alone_keeps_the_ordinary_rule_for_a_locked_module() {
    let t = nvidia_system();
    let kernel = format!("usr/lib/modules/{K_NEW}/vmlinuz");
    t.offer("linux", "2.0-1", &[(&kernel, "fake vmlinuz\n")]);
    t.offer("linux-headers", "2.0-1", &borrowed(&headers_entries(K_NEW)));
    let fail = format!("nvidia/580/{K_NEW}=10");
    let guard = t.run_env(&["guard"], kernel_upgrade_targets(K1, K_NEW), &[("FAKE_DKMS_FAIL", &fail)]);
    guard.assert_code(0);
    guard.expect_line(&[&format!("warning: nvidia/580 for {K_NEW} does not build"), "not critical"]);
}

#[test]
fn after_the_transaction_a_kept_locked_module_is_not_called_safe() {
    let t = nvidia_system();
    offer_nvidia(&t, "590", "590-1");
    t.offer("nvidia-utils", "590-1", &[]);
    // The guard is off: pacman goes on. Before: nvidia 580's sources are kept for dkms.
    t.run(&["remove", "--no-depmod"], "usr/src/nvidia-580/dkms.conf\n").assert_code(0);
    t.remove_package("nvidia-dkms").remove_package("nvidia-utils");
    t.module_pkg_version("nvidia-dkms", "590-1", "nvidia-590", &dkms_conf("nvidia", "590"));
    t.depends("nvidia-dkms", &["dkms", "nvidia-utils=590-1"]);
    t.package("nvidia-utils", "590-1", &[("usr/lib/libnvidia-glcore.so.590", "590\n")]);
    let fail = format!("nvidia/590/{K1}=10");

    let post = t.run_env(&["install"], "usr/src/nvidia-590/dkms.conf\n", &[("FAKE_DKMS_FAIL", &fail)]);
    post.assert_code(1);
    post.expect_line(&[&format!("nvidia/590 for {K1}"), "failed", "kept nvidia/580"]);
    post.expect_line(&[
        "warning: the kept nvidia/580 will not work with nvidia-utils 590-1 (nvidia-dkms is locked to it)",
    ]);
    assert_eq!(t.installed_for("nvidia", K1).as_deref(), Some("580"));

    let status = t.run(&["status"], "");
    status.assert_code(1);
    status.expect_line(&[&format!("nvidia/590 for {K1}"), "nvidia/580 will not work with nvidia-utils 590-1"]);

    // Opted out: nothing more is said.
    config(&t, "unlocked = [\"nvidia\"]\n");
    let status = t.run(&["status"], "");
    assert!(!status.stdout.contains("will not work"), "{status}");
}
