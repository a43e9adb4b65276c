//! `dkms-hook lint` agrees with reality on real-world packages: Debian's v4l2loopback-dkms and
//! acpi-call-dkms, packaged Arch-style (`tests/real/packages.rs`), are linted inside an overlay root
//! with two Debian kernels (`lint --build`, as a packager would run it), then installed through real
//! pacman and dkms-hook's hooks, and each kernel boots and loads them (the boot check,
//! `tests/real/boot.rs`). No finding may say something the real build contradicts: no
//! `builds-for-running-kernel` (acpi-call's Makefile has `KVER ?= $(shell uname -r)`, which kbuild
//! never uses: the modules load in kernels that are not the running one), no build finding, and
//! `lint --build`'s outcome per kernel is what the hooks did (built and loaded, or skipped and not
//! loaded).
//!
//! Needs root and scripts/setup like the rest of the real tier; skipped with a message otherwise,
//! but fails in CI (`CI=true`).

mod real;

use std::collections::BTreeMap;

use real::*;

/// The findings lint may report on these packages, each true of them and contradicted by no
/// build: both dkms.conf files set CLEAN, which dkms 3.1.8 and later never run.
const TRUE_FINDINGS: &[&str] = &["deprecated-dkms-conf-option"];

#[test]
fn lint_on_real_world_packages_reports_nothing_the_real_build_contradicts() {
    let Some(root) = Root::new(Dkms::V3_0) else { return };
    let kernels = [LINUX, LINUX_CLOUD];
    root.install_kernels(&kernels);
    let running = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
    assert!(kernels.iter().all(|k| k.kver != running.trim()), "the test needs kernels that are not running");

    // lint --build on each package, from inside the root, as a packager would run it.
    let mut linted: BTreeMap<(String, String), String> = BTreeMap::new();
    for m in REAL_WORLD {
        let file = m.pkg().file();
        let inside = format!("/var/cache/pacman/pkg/{}", file.file_name().unwrap().to_str().unwrap());
        std::fs::copy(&file, root.path(&inside)).unwrap();
        let ran = root.chroot(&["sh", "-c", &format!("dkms-hook lint --build --json {inside} 2>/dev/null")]);
        let json: serde_json::Value =
            serde_json::from_str(&ran.output).unwrap_or_else(|e| panic!("lint --json ({e}):\n{}", ran.output));
        println!("lint {}: {json:#}", m.package);
        assert_eq!(ran.status.code(), Some(0), "lint found an error in {}: {json:#}", m.package);
        let findings = json["packages"][0]["findings"].as_array().unwrap();
        for f in findings {
            let tag = f["tag"].as_str().unwrap();
            assert!(
                TRUE_FINDINGS.contains(&tag),
                "lint reports {tag} for {}, which its real build contradicts: {}",
                m.package,
                f["message"]
            );
        }
        assert!(
            ran.output.contains("sets CLEAN") || findings.is_empty(),
            "an unexpected deprecated option in {}: {json:#}",
            m.package
        );
        for b in json["packages"][0]["builds"].as_array().unwrap() {
            let text = |key: &str| b[key].as_str().unwrap().to_owned();
            linted.insert((text("module"), text("kernel")), text("result"));
        }
    }
    let expected: BTreeMap<(String, String), String> = [
        ("acpi-call", LINUX, "built"),
        ("acpi-call", LINUX_CLOUD, "built"),
        ("v4l2loopback", LINUX, "built"),
        ("v4l2loopback", LINUX_CLOUD, "skipped"),
    ]
    .iter()
    .map(|(m, k, r)| ((m.to_string(), k.kver.to_owned()), r.to_string()))
    .collect();
    assert_eq!(linted, expected, "lint --build's outcome per (module, kernel)");

    // The real thing: pacman, the hooks, dkms; then each kernel boots and loads what lint built.
    let pkgs: Vec<Pkg> = REAL_WORLD.iter().map(|m| m.pkg()).collect();
    root.install(&pkgs).assert_hooks_ok();
    root.assert_modules(&[(V4L2LOOPBACK, &[LINUX]), (ACPI_CALL, &kernels)]);
    let boots = root.assert_modules_load();
    for ((module, kver), result) in &linted {
        let boot = boots.iter().find(|b| b.kernel() == kver).unwrap_or_else(|| panic!("{kver} did not boot"));
        let ko = REAL_WORLD.iter().find(|m| m.name == module).unwrap().ko;
        assert_eq!(
            boot.loaded(ko),
            result == "built",
            "{module} for {kver}: lint --build says {result}:\n{}",
            boot.summary()
        );
    }
}
