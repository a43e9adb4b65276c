//! The boot check itself (`tests/real/boot.rs`, `ovr_boot_check` in `scripts/lib/overlay-root.sh`):
//! it can fail. A module built against one kernel's headers and copied into another kernel's
//! directory is refused by that kernel when it boots (Debian's kernels have CONFIG_MODVERSIONS: "disagrees
//! about version of symbol module_layout"), and the check reports it: the helper's exit status, the
//! failed modprobe, the kernel log line, the file that is not dkms's build.
//!
//! Needs root and scripts/setup like the rest of the real tier; skipped with a message otherwise,
//! but fails in CI (`CI=true`).

mod real;

use real::*;

#[test]
fn a_module_built_for_another_kernel_is_refused_and_reported() {
    let Some(root) = Root::new(Dkms::V3_0) else { return };
    root.install_kernels(&[LINUX, LINUX_CLOUD]);
    root.install(&[HELLO_1_0.pkg()]).assert_hooks_ok();
    root.assert_modules(&[(HELLO_1_0, &[LINUX, LINUX_CLOUD])]);

    // The cloud kernel's hello.ko where the amd64 kernel's was (modules.dep still names the path).
    let ko = |k: Kernel| root.path(&format!("usr/lib/modules/{}/updates/dkms/hello.ko", k.kver));
    std::fs::copy(ko(LINUX_CLOUD), ko(LINUX)).unwrap();
    assert_eq!(
        root.modinfo(&format!("usr/lib/modules/{}/updates/dkms/hello.ko", LINUX.kver), "vermagic").split(' ').next(),
        Some(LINUX_CLOUD.kver)
    );

    let plan = root.boot_plans().into_iter().find(|p| p.kernel == LINUX.kver).expect("no boot plan for linux");
    let boot = root.boot(plan);
    println!("{}", boot.summary());
    assert_eq!(boot.booted, LINUX.kver, "{}", boot.output);
    assert_eq!(boot.status, Some(1), "the helper does not report the failed load:\n{}", boot.output);
    match boot.modprobe.get("hello") {
        Some(Err(error)) => assert!(error.contains("invalid module format"), "{error}"),
        other => panic!("modprobe hello: {other:?}\n{}", boot.output),
    }
    assert!(!boot.loaded("hello"), "{}", boot.summary());
    let problems = boot.problems();
    for expected in
        ["modprobe hello failed", "disagrees about version of symbol module_layout", "hello is not in /proc/modules"]
    {
        assert!(problems.iter().any(|p| p.contains(expected)), "no problem says {expected:?}: {problems:#?}");
    }

    // The same check passes for the kernel the module was built for.
    let plan = root.boot_plans().into_iter().find(|p| p.kernel == LINUX_CLOUD.kver).unwrap();
    let boot = root.boot(plan);
    assert_eq!(boot.problems(), Vec::<String>::new(), "{}", boot.summary());
    assert!(boot.loaded("hello") && boot.status == Some(0), "{}", boot.summary());
}
