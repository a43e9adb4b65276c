//! Locked companions in real pacman 7.1 transactions (`pacman -Syu` from a local repository, all
//! four hooks, the real dkms and real kernel headers, in throwaway overlay roots; see
//! `tests/real/mod.rs`). A stand-in `nvidia-dkms` depends on `nvidia-utils=VERSION`, as Arch's does;
//! its new release does not compile. Upgraded together with its companion, the guard stops the
//! upgrade although nothing is critical; upgraded alone, the ordinary rule holds (a warning, and
//! the build-first swap keeps the old module). Let through with the guard off, the kept old module
//! is reported, after the transaction and by `status`, as not working with the new companion. Each
//! scenario runs with dkms 3.0.10 and 3.2.2.
//!
//! Needs root and scripts/setup; skipped with a message otherwise, but fails in CI (`CI=true`).

#[macro_use]
mod real;

use std::fs;

use real::*;

for_each_dkms! {
    locked_module_stops_the_upgrade_of_its_companion => c1_locked_module_stops_the_upgrade_of_its_companion_dkms_3_0,
        c1_locked_module_stops_the_upgrade_of_its_companion_dkms_3_2;
    locked_module_upgraded_alone_keeps_the_ordinary_rule => c2_locked_module_upgraded_alone_keeps_the_ordinary_rule_dkms_3_0,
        c2_locked_module_upgraded_alone_keeps_the_ordinary_rule_dkms_3_2;
}

/// The installed driver, locked to nvidia-utils 580-1.
const NVIDIA_580: Module =
    Module { package: "nvidia-dkms", version: "580-1", source: "nvidia", name: "nvidia", modver: "580", ko: "nvidia" };
/// Its next release, locked to nvidia-utils 590-1, which does not compile.
const NVIDIA_590_BROKEN: Module = Module { version: "590-1", source: "nvidia-broken", modver: "590", ..NVIDIA_580 };
/// A release for the companion already installed (580-1), which does not compile.
const NVIDIA_581_BROKEN: Module = Module { version: "581-1", source: "nvidia-broken", modver: "581", ..NVIDIA_580 };

/// What an aborted transaction must leave exactly as it was.
const KEPT: &[&str] = &["usr/lib/modules", "usr/src", "var/lib/dkms", "var/lib/pacman/local"];

/// `linux` with headers, nvidia-dkms 580-1 and nvidia-utils 580-1 installed, nothing critical.
fn nvidia_system(dkms: Dkms) -> Option<Root> {
    let root = Root::new(dkms)?;
    root.install_kernels(&[LINUX]);
    root.install(&[Pkg::Depending(NVIDIA_580, "nvidia-utils=580-1"), Pkg::Stub("nvidia-utils", "580-1")])
        .assert_hooks_ok();
    root.assert_modules(&[(NVIDIA_580, &[LINUX])]);
    fs::write(root.path("etc/dkms-hook.toml"), "critical = []\n").unwrap();
    Some(root)
}

/// nvidia-dkms 590 with nvidia-utils 590: the new module does not build, and the old one would not
/// work with the new userspace. pacman aborts before any package is touched, naming the companion
/// in the ways forward; with the guard off, the install hook keeps 580 and says it will not work.
fn locked_module_stops_the_upgrade_of_its_companion(dkms: Dkms) {
    let Some(root) = nvidia_system(dkms) else { return };
    root.serve(&[Pkg::Depending(NVIDIA_590_BROKEN, "nvidia-utils=590-1"), Pkg::Stub("nvidia-utils", "590-1")]);
    let before = root.snapshot(KEPT);

    let t = root.pacman(&["-Syu"]);
    assert_ne!(t.code, Some(0), "pacman did not abort:\n{}", t.output);
    t.assert_contains("failed to run transaction hooks");
    t.assert_line(&["error: nvidia/590 is locked to nvidia-utils and does not build for kernel", LINUX.kver]);
    t.assert_line(&["nvidia.c", "error:"]);
    t.assert_line(&["nvidia-dkms comes with nvidia-utils 580-1 -> 590-1"]);
    t.assert_line(&["pacman -Syu --ignore nvidia-dkms,nvidia-utils"]);
    assert_eq!(root.version_of("nvidia-utils").as_deref(), Some("580-1"));
    assert_eq!(root.snapshot(KEPT), before, "the aborted transaction changed the system");
    root.assert_modules(&[(NVIDIA_580, &[LINUX])]);

    // Let through: the build-first swap keeps 580, and the report does not call that safe.
    let t = root.pacman_env(&[("DKMS_HOOK_GUARD", "off")], &["-Syu"]);
    assert_eq!(t.code, Some(0), "pacman -Syu failed:\n{}", t.output);
    t.assert_line(&["nvidia/590 for", LINUX.kver, "failed", "kept nvidia/580"]);
    t.assert_line(&[
        "warning: the kept nvidia/580 will not work with nvidia-utils 590-1 (nvidia-dkms is locked to it)",
    ]);
    let status = root.chroot(&["dkms-hook", "status"]);
    assert!(!status.status.success(), "status says all is well:\n{}", status.output);
    let line = status.output.lines().find(|l| l.contains("nvidia/580 will not work with nvidia-utils 590-1"));
    assert!(line.is_some(), "status does not tell:\n{}", status.output);
}

/// nvidia-dkms 581 for the nvidia-utils already installed: nothing moves with it, so the ordinary
/// rule holds: a warning, the upgrade goes on, and the build-first swap keeps 580.
fn locked_module_upgraded_alone_keeps_the_ordinary_rule(dkms: Dkms) {
    let Some(root) = nvidia_system(dkms) else { return };
    root.serve(&[Pkg::Depending(NVIDIA_581_BROKEN, "nvidia-utils=580-1")]);

    let t = root.pacman(&["-Syu"]);
    assert_eq!(t.code, Some(0), "pacman -Syu failed:\n{}", t.output);
    t.assert_line(&["warning: nvidia/581 for", LINUX.kver, "does not build", "not critical"]);
    t.assert_lacks("locked to");
    t.assert_line(&["nvidia/581 for", LINUX.kver, "failed", "kept nvidia/580"]);
    assert_eq!(root.version_of("nvidia-dkms").as_deref(), Some(NVIDIA_581_BROKEN.version));
    assert_eq!(root.modinfo(&format!("usr/lib/modules/{}/updates/dkms/nvidia.ko", LINUX.kver), "version"), "580");
    // The kept 580 goes with the nvidia-utils installed: nothing more to say.
    t.assert_lacks("will not work with");
    let status = root.chroot(&["dkms-hook", "status"]);
    assert!(!status.output.contains("will not work with"), "{}", status.output);
}
