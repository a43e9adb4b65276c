//! The remove hooks (`dkms-hook remove`, PreTransaction, and the upgrade hook's
//! `remove --no-depmod`), alone and followed by the install hook as pacman runs them around a
//! transaction: module removal, module upgrade, pkgrel rebuild, kernel removal and upgrade,
//! headers-only removal.

mod common;

use common::*;

fn hello(t: &TestRoot) {
    t.module_pkg("hello-dkms", "hello-1.0", &dkms_conf("hello", "1.0"));
}

/// Asserts that nothing of `module` is left in the dkms tree nor installed for any of `kernels`.
#[track_caller]
fn assert_gone(t: &TestRoot, run: &Run, module: &str, kernels: &[&str]) {
    assert!(
        t.path(&format!("var/lib/dkms/{module}")).symlink_metadata().is_err(),
        "{module} is still in the dkms tree\n{run}"
    );
    for k in kernels {
        assert!(!t.ko_installed(module, k), "{module}.ko is still installed for {k}\n{run}");
    }
}

#[test]
fn module_removal_removes_every_build_and_unregisters() {
    const ZEN: &str = "6.11.9-zen1-1-zen";
    const OLD: &str = "6.0.0-12-amd64";
    let t = TestRoot::with_two_kernels();
    t.kernel("linux-zen", ZEN).headers("linux-zen-headers", ZEN);
    t.leftover_kernel_dir(OLD);
    hello(&t);
    t.dkms_installed("hello", "1.0", K1).dkms_installed("hello", "1.0", K2);
    // Built, not installed, for linux-zen; and a stale build for a kernel that is long gone.
    t.dkms_built("hello", "1.0", ZEN).dkms_built("hello", "1.0", OLD);

    let run = t.run(&["remove"], "usr/src/hello-1.0/dkms.conf\n");

    run.assert_code(0);
    assert_relocated(&t, &run);
    let removed: Vec<Job> = sorted(run.removes());
    for k in [K1, K2] {
        assert_eq!(removed.iter().filter(|j| **j == job("hello", "1.0", k)).count(), 1, "remove from {k} once\n{run}");
        let line = run.expect_line(&["hello/1.0", k]);
        assert!(line.contains("removed"), "{line}\n{run}");
    }
    assert_gone(&t, &run, "hello", &[K1, K2, ZEN, OLD]);
    // Unregistering (if done as its own call) comes after the per-kernel removals.
    if let Some(unreg) = run.calls.iter().position(|c| c.action() == Some("remove") && c.has("--all")) {
        let last_remove = run.calls.iter().rposition(|c| c.action() == Some("remove") && !c.has("--all")).unwrap_or(0);
        assert!(last_remove < unreg, "{run}");
    }
    let mut depmod = run.depmod_kernels();
    depmod.sort();
    depmod.dedup();
    assert_eq!(depmod.len(), run.depmod().len(), "depmod at most once per kernel\n{run}");
    for k in [K1, K2] {
        assert!(depmod.contains(&k.to_owned()), "depmod {k} after its module left\n{run}");
    }
    assert!(!depmod.contains(&OLD.to_owned()), "{OLD} is not a kernel\n{run}");
}

#[test]
fn module_removal_unregisters_a_module_that_never_built() {
    // Its only build failed: dkms knows hello/1.0 (source link, build/make.log) for no kernel.
    let t = TestRoot::new();
    t.kernel("linux", K1).headers("linux-headers", K1);
    hello(&t);
    t.dkms_failed_build("hello", "1.0", K1);
    assert!(t.is_registered("hello", "1.0"));

    let run = t.run(&["remove"], "usr/src/hello-1.0/dkms.conf\n");

    run.assert_code(0);
    assert_eq!(run.unregisters(), vec![("hello".to_owned(), "1.0".to_owned())], "{run}");
    assert_gone(&t, &run, "hello", &[K1]);
}

#[test]
fn module_removal_when_the_source_is_already_gone() {
    // The dkms tree's M/V/source link still names the module when dkms.conf cannot be read.
    let t = TestRoot::new();
    t.kernel("linux", K1).headers("linux-headers", K1);
    hello(&t);
    t.dkms_installed("hello", "1.0", K1);
    std::fs::remove_dir_all(t.path("usr/src/hello-1.0")).unwrap();

    let run = t.run(&["remove"], "usr/src/hello-1.0/dkms.conf\n");

    run.assert_code(0);
    assert!(run.removes().contains(&job("hello", "1.0", K1)) || !run.unregisters().is_empty(), "{run}");
    assert_gone(&t, &run, "hello", &[K1]);
}

#[test]
fn hyphenated_module_removal() {
    let t = TestRoot::new();
    t.kernel("linux", K1).headers("linux-headers", K1);
    let conf = "PACKAGE_NAME=xpad-neo-x\nPACKAGE_VERSION=0.9-r12-g3a1b\nBUILT_MODULE_NAME[0]=hid-xpadneo\n";
    t.module_pkg("xpad-neo-x-dkms-git", "xpad-neo-x-0.9-r12-g3a1b", conf);
    t.dkms_installed("xpad-neo-x", "0.9-r12-g3a1b", K1);

    let run = t.run(&["remove"], "usr/src/xpad-neo-x-0.9-r12-g3a1b/dkms.conf\n");

    run.assert_code(0);
    assert_eq!(run.removes(), vec![job("xpad-neo-x", "0.9-r12-g3a1b", K1)], "{run}");
    for call in run.dkms() {
        assert_eq!(call.value("-m"), Some("xpad-neo-x"), "{call}");
        assert_eq!(call.value("-v"), Some("0.9-r12-g3a1b"), "{call}");
    }
    assert_gone(&t, &run, "xpad-neo-x", &[K1]);
    assert!(!t.ko_installed("hid-xpadneo", K1), "{run}");
}

#[test]
fn module_upgrade_removes_the_old_version_and_builds_the_new() {
    let t = TestRoot::with_two_kernels();
    hello(&t);
    t.dkms_installed("hello", "1.0", K1).dkms_installed("hello", "1.0", K2);

    // hello-dkms 1.0 -> 1.1 moves usr/src/hello-1.0 to usr/src/hello-1.1: the old path is a
    // Remove (71-dkms-remove.hook, before), the new one an Install (70-dkms-install.hook, after).
    let pre = t.run(&["remove"], "usr/src/hello-1.0/dkms.conf\n");
    pre.assert_code(0);
    assert_eq!(sorted(pre.removes()), vec![job("hello", "1.0", K1), job("hello", "1.0", K2)], "{pre}");
    assert!(!t.is_registered("hello", "1.0"), "1.0 must leave the dkms tree\n{pre}");
    assert!(!t.ko_installed("hello", K1) && !t.ko_installed("hello", K2), "{pre}");

    t.remove_package("hello-dkms");
    t.module_pkg_version("hello-dkms", "1.1-1", "hello-1.1", &dkms_conf("hello", "1.1"));

    let post = t.run(&["install"], "usr/src/hello-1.1/dkms.conf\n");
    post.assert_code(0);
    assert_eq!(sorted(post.installs()), vec![job("hello", "1.1", K1), job("hello", "1.1", K2)], "{post}");
    assert!(post.removes().is_empty(), "{post}");
    for k in [K1, K2] {
        assert_eq!(t.installed_for("hello", k).as_deref(), Some("1.1"), "{post}");
        assert!(t.ko_installed("hello", k), "{post}");
    }
    assert!(!t.path("var/lib/dkms/hello/1.0").exists(), "{post}");
    let mut depmod = post.depmod_kernels();
    depmod.sort();
    assert_eq!(depmod, vec![K1.to_owned(), K2.to_owned()], "{post}");
}

/// hello-dkms 1.0-1 -> 1.0-2: same path, an Upgrade: 70-dkms-upgrade.hook before (the module
/// stays: nothing is removed, its sources are kept for dkms), 70-dkms-install.hook after (the
/// new sources are built privately and swapped in; tests/upgrade.rs has the other cases).
#[test]
fn pkgrel_rebuild_keeps_the_module_then_swaps_in_the_rebuild() {
    let t = TestRoot::with_two_kernels();
    hello(&t);
    t.dkms_installed("hello", "1.0", K1).dkms_installed("hello", "1.0", K2);

    let pre = t.run(&["remove", "--no-depmod"], "usr/src/hello-1.0/dkms.conf\n");
    pre.assert_code(0);
    assert!(pre.dkms().is_empty(), "nothing is removed before the transaction\n{pre}");
    assert!(pre.depmod().is_empty(), "--no-depmod must not run depmod\n{pre}");
    assert!(t.ko_installed("hello", K1) && t.ko_installed("hello", K2), "{pre}");

    t.remove_package("hello-dkms");
    t.module_pkg_version("hello-dkms", "1.0-2", "hello-1.0", &dkms_conf("hello", "1.0"));
    std::fs::write(t.path("usr/src/hello-1.0/Makefile"), "obj-m += fake.o\n# 1.0-2\n").unwrap();

    let post = t.run(&["install"], "usr/src/hello-1.0/dkms.conf\n");
    post.assert_code(0);
    assert_eq!(sorted(post.installs()), vec![job("hello", "1.0", K1), job("hello", "1.0", K2)], "{post}");
    for k in [K1, K2] {
        assert!(t.ko_installed("hello", k), "{post}");
        assert!(t.is_built("hello", "1.0", k), "{post}");
        // Built privately first, then the old build removed, then installed.
        let build = post.first_call(&["build"], "hello", k).expect("a private build");
        let remove = post.first_call(&["remove"], "hello", k).expect("the old build removed");
        let install = post.first_call(&["install"], "hello", k).expect("installed");
        assert!(build < remove && remove < install, "{post}");
    }
    let mut depmod = post.depmod_kernels();
    depmod.sort();
    assert_eq!(depmod, vec![K1.to_owned(), K2.to_owned()], "{post}");
}

#[test]
fn kernel_removal_removes_its_modules_without_depmod() {
    let t = TestRoot::with_two_kernels();
    hello(&t);
    t.module_pkg("world-dkms", "world-2.0", &dkms_conf("world", "2.0"));
    t.dkms_installed("hello", "1.0", K1).dkms_installed("hello", "1.0", K2);
    t.dkms_installed("world", "2.0", K2);

    // pacman -R linux-lts linux-lts-headers.
    let run = t.run(&["remove"], format!("usr/lib/modules/{K2}/build/include/\nusr/lib/modules/{K2}/modules.order\n"));

    run.assert_code(0);
    assert_relocated(&t, &run);
    assert_eq!(sorted(run.removes()), vec![job("hello", "1.0", K2), job("world", "2.0", K2)], "{run}");
    assert!(run.unregisters().is_empty(), "a leaving kernel does not unregister modules\n{run}");
    assert!(run.depmod().is_empty(), "no depmod for a kernel being removed\n{run}");
    assert!(run.expect_line(&["hello/1.0", K2]).contains("removed"), "{run}");
    // The other kernel keeps its module.
    assert_eq!(t.installed_for("hello", K1).as_deref(), Some("1.0"), "{run}");
    assert!(t.ko_installed("hello", K1));
    assert!(!t.ko_installed("hello", K2) && !t.ko_installed("world", K2), "{run}");

    // Nothing of ours keeps the kernel's module directory alive once pacman removed its files.
    t.remove_package("linux-lts-headers").remove_package("linux-lts");
    assert!(!t.path(&format!("usr/lib/modules/{K2}")).exists(), "left behind under usr/lib/modules/{K2}\n{run}");
}

#[test]
fn module_and_kernel_removed_together_depmod_only_for_the_staying_kernel() {
    let t = TestRoot::with_two_kernels();
    hello(&t);
    t.dkms_installed("hello", "1.0", K1).dkms_installed("hello", "1.0", K2);

    // pacman -R hello-dkms linux-lts linux-lts-headers.
    let run = t.run(
        &["remove"],
        format!(
            "usr/lib/modules/{K2}/build/include/\nusr/lib/modules/{K2}/modules.order\nusr/src/hello-1.0/dkms.conf\n"
        ),
    );

    run.assert_code(0);
    assert_eq!(
        run.removes().iter().filter(|j| **j == job("hello", "1.0", K1)).count(),
        1,
        "hello removed from {K1} once\n{run}"
    );
    assert_gone(&t, &run, "hello", &[K1, K2]);
    assert_eq!(run.depmod_kernels(), vec![K1.to_owned()], "depmod for {K1} only, never for the leaving {K2}\n{run}");
}

#[test]
fn kernel_upgrade_moves_modules_to_the_new_kernel() {
    const NEW: &str = "6.1.0-48-amd64";
    let t = TestRoot::new();
    t.kernel("linux", K1).headers("linux-headers", K1);
    hello(&t);
    t.dkms_installed("hello", "1.0", K1);

    // linux and linux-headers upgrade to a new kver: the old paths are Removes, the new Installs.
    let pre = t.run(&["remove"], format!("usr/lib/modules/{K1}/build/include/\nusr/lib/modules/{K1}/modules.order\n"));
    pre.assert_code(0);
    assert_eq!(pre.removes(), vec![job("hello", "1.0", K1)], "{pre}");
    assert!(pre.depmod().is_empty(), "{pre}");

    t.remove_package("linux-headers").remove_package("linux");
    t.kernel("linux", NEW).headers("linux-headers", NEW);

    let post =
        t.run(&["install"], format!("usr/lib/modules/{NEW}/build/include/\nusr/lib/modules/{NEW}/modules.order\n"));
    post.assert_code(0);
    assert_eq!(post.installs(), vec![job("hello", "1.0", NEW)], "{post}");
    assert!(t.ko_installed("hello", NEW), "{post}");
    assert_eq!(post.depmod_kernels(), vec![NEW.to_owned()], "{post}");
    assert!(!t.path(&format!("usr/lib/modules/{K1}")).exists(), "{post}");
}

#[test]
fn headers_only_removal_keeps_installed_modules() {
    let t = TestRoot::with_two_kernels();
    hello(&t);
    t.dkms_installed("hello", "1.0", K1).dkms_installed("hello", "1.0", K2);

    // pacman -R linux-headers: the kernel stays, its modules still load.
    let run = t.run(&["remove"], format!("usr/lib/modules/{K1}/build/include/\n"));

    run.assert_code(0);
    assert!(run.removes().is_empty() && run.unregisters().is_empty(), "{run}");
    assert!(run.output().contains("kept"), "the output must say the modules are kept\n{run}");
    for k in [K1, K2] {
        assert_eq!(t.installed_for("hello", k).as_deref(), Some("1.0"), "{run}");
        assert!(t.ko_installed("hello", k), "{run}");
    }
}
