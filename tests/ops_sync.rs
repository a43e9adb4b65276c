//! `dkms-hook sync`: from each kind of drift back to the desired state (every packaged module
//! installed for every kernel with headers, nothing left over), a second sync doing nothing, and
//! `sync --dry-run` changing nothing.

mod common;
mod ops;

use common::*;
use ops::*;

fn hello(t: &TestRoot) {
    t.module_pkg("hello-dkms", "hello-1.0", &dkms_conf("hello", "1.0"));
}

/// Every path below `dir`.
fn walkdir(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten() {
        let p = e.unwrap().path();
        out.push(p.clone());
        if p.is_dir() {
            out.extend(walkdir(&p));
        }
    }
    out
}

/// Asserts `status` says all is well and a second sync runs nothing.
#[track_caller]
fn assert_in_order(t: &TestRoot) {
    let status = t.run(&["status"], "");
    status.assert_code(0);
    let again = t.run(&["sync"], "");
    again.assert_code(0);
    assert!(again.calls.is_empty(), "a second sync must run nothing\n{again}");
    again.expect_line(&["==> Nothing to do"]);
}

#[test]
fn missing_modules_are_built_for_every_kernel_with_headers() {
    let t = TestRoot::with_two_kernels();
    hello(&t);
    t.module_pkg("world-dkms", "world-2.0", &dkms_conf("world", "2.0"));
    t.dkms_installed("world", "2.0", K1);

    let run = t.run(&["sync"], "");
    run.assert_code(0);
    assert_relocated(&t, &run);
    assert_eq!(
        sorted(run.installs()),
        [job("hello", "1.0", K1), job("hello", "1.0", K2), job("world", "2.0", K2)],
        "only what is missing is planned\n{run}"
    );
    let mut depmod = run.depmod_kernels();
    depmod.sort();
    assert_eq!(depmod, [K1, K2]);
    run.expect_line(&["==> Synchronizing DKMS modules: 3 jobs"]);
    for k in [K1, K2] {
        assert!(t.ko_installed("hello", k) && t.ko_installed("world", k));
    }
    assert_in_order(&t);
}

#[test]
fn a_module_built_but_not_installed_is_installed() {
    let t = TestRoot::with_two_kernels();
    hello(&t);
    t.dkms_installed("hello", "1.0", K1).dkms_built("hello", "1.0", K2);
    let run = t.run(&["sync"], "");
    run.assert_code(0);
    assert_eq!(run.installs(), [job("hello", "1.0", K2)]);
    assert_eq!(run.depmod_kernels(), [K2]);
    assert_in_order(&t);
}

#[test]
fn builds_for_a_kernel_that_is_gone_are_removed_without_depmod() {
    let t = TestRoot::with_two_kernels();
    hello(&t);
    t.dkms_installed("hello", "1.0", K1).dkms_installed("hello", "1.0", K2);
    t.remove_package("linux-lts-headers").remove_package("linux-lts");

    let run = t.run(&["sync"], "");
    run.assert_code(0);
    assert_eq!(run.removes(), [job("hello", "1.0", K2)]);
    assert!(run.installs().is_empty() && run.depmod().is_empty(), "{run}");
    assert!(!t.is_built("hello", "1.0", K2) && t.is_built("hello", "1.0", K1));
    let kdir = t.path(&format!("usr/lib/modules/{K2}"));
    assert!(!kdir.exists(), "nothing of the old kernel may be left: {:?}\n{run}", walkdir(&kdir));
    assert_in_order(&t);
}

#[test]
fn an_upgrade_behind_dkms_hooks_back_is_completed() {
    // hello 1.0 -> 1.1 without the hooks: 1.0 is still built everywhere, its source is gone.
    let t = TestRoot::with_two_kernels();
    hello(&t);
    t.dkms_installed("hello", "1.0", K1).dkms_installed("hello", "1.0", K2);
    t.remove_package("hello-dkms");
    t.module_pkg_version("hello-dkms", "1.1-1", "hello-1.1", &dkms_conf("hello", "1.1"));

    // `-j 1`: with parallel jobs the runner (1c95a08) reserves the first install job to run
    // alone while dkms has no signing key, even when that job waits for others (here: the
    // removal of 1.0), and then ends without running or reporting anything.
    let run = t.run(&["-j", "1", "sync"], "");
    run.assert_code(0);
    assert_eq!(sorted(run.removes()), [job("hello", "1.0", K1), job("hello", "1.0", K2)], "{run}");
    assert_eq!(sorted(run.installs()), [job("hello", "1.1", K1), job("hello", "1.1", K2)], "{run}");
    // The old version leaves a kernel before the new one is installed for it.
    for k in [K1, K2] {
        let removed = run.calls.iter().position(|c| c.action() == Some("remove") && c.kernel() == Some(k)).unwrap();
        let installed = run.calls.iter().position(|c| c.action() == Some("install") && c.kernel() == Some(k)).unwrap();
        assert!(removed < installed, "{run}");
    }
    assert!(!t.is_registered("hello", "1.0"), "{run}");
    for k in [K1, K2] {
        assert_eq!(t.installed_for("hello", k).as_deref(), Some("1.1"));
    }
    assert_in_order(&t);
}

#[test]
fn a_registration_whose_package_is_gone_is_removed_and_unregistered() {
    let t = TestRoot::with_two_kernels();
    t.module_pkg("gone-dkms", "gone-2.0", &dkms_conf("gone", "2.0"));
    t.dkms_installed("gone", "2.0", K1).dkms_built("gone", "2.0", K2);
    t.remove_package("gone-dkms");

    let run = t.run(&["sync"], "");
    run.assert_code(0);
    assert_eq!(sorted(run.removes()), [job("gone", "2.0", K1), job("gone", "2.0", K2)]);
    assert!(!t.is_registered("gone", "2.0") && !t.ko_installed("gone", K1), "{run}");
    let mut depmod = run.depmod_kernels();
    depmod.sort();
    assert_eq!(depmod, [K1, K2]);
    assert_in_order(&t);
}

#[test]
fn a_failed_build_is_retried() {
    let t = TestRoot::with_two_kernels();
    hello(&t);
    let fail = format!("hello/1.0/{K2}=10");
    let run = t.run_env(&["install"], "usr/src/hello-1.0/dkms.conf\n", &[("FAKE_DKMS_FAIL", &fail)]);
    run.assert_code(1);
    t.run(&["status"], "").assert_code(1).expect_line(&["hello/1.0", K2, "failed"]);

    let run = t.run(&["sync"], "");
    run.assert_code(0);
    assert_eq!(run.installs(), [job("hello", "1.0", K2)]);
    assert_in_order(&t);
}

#[test]
fn a_skipped_pair_is_not_retried_and_counts_as_fine() {
    let t = TestRoot::with_two_kernels();
    hello(&t);
    let skip = format!("hello/1.0/{K2}=77");
    let run = t.run_env(&["sync"], "", &[("FAKE_DKMS_FAIL", &skip)]);
    run.assert_code(0);
    t.run(&["status"], "").assert_code(0).expect_line(&["hello/1.0", K2, "skipped"]);
    assert_in_order(&t);
}

#[test]
fn excluded_pairs_are_not_built_and_need_nothing() {
    let t = TestRoot::with_two_kernels();
    hello(&t);
    t.module_pkg("nvstub-dkms", "nvstub-1", &dkms_conf("nvstub", "1"));
    config(&t, &format!("exclude_kernels = [\"{K2}\"]\nexclude_modules = [\"nv*\"]\n"));
    let run = t.run(&["sync"], "");
    run.assert_code(0);
    assert_eq!(run.installs(), [job("hello", "1.0", K1)]);
    t.run(&["status"], "").assert_code(0).expect_line(&["hello/1.0", K2, "excluded"]);
    assert_in_order(&t);
}

#[test]
fn excludes_apply_to_the_install_hook_too() {
    let t = TestRoot::with_two_kernels();
    hello(&t);
    config(&t, "exclude_modules = [\"hello/1.*\"]\n");
    let run = t.run(&["-v", "install"], "usr/src/hello-1.0/dkms.conf\n");
    run.assert_code(0);
    assert!(run.installs().is_empty() && run.depmod().is_empty(), "{run}");
    run.expect_line(&["hello/1.0 for", K1, "excluded by the configuration"]);
}

#[test]
fn dry_run_prints_the_plan_and_changes_nothing() {
    let t = TestRoot::with_two_kernels();
    hello(&t);
    t.module_pkg("gone-dkms", "gone-2.0", &dkms_conf("gone", "2.0"));
    t.dkms_installed("gone", "2.0", K1).dkms_installed("hello", "1.0", K2);
    t.remove_package("gone-dkms");
    let before = t.snapshot();

    let run = t.run(&["sync", "--dry-run"], "");
    run.assert_code(0);
    assert!(run.calls.is_empty(), "a dry run runs nothing\n{run}");
    run.expect_line(&["==> Plan (dry run): 3 jobs"]);
    run.expect_line(&[&format!("  -> remove gone/2.0 from {K1}")]);
    run.expect_line(&["  -> unregister gone/2.0"]);
    run.expect_line(&[&format!("  -> install hello/1.0 for {K1}")]);
    run.expect_line(&[&format!("  -> depmod {K1}")]);
    assert_eq!(before, t.snapshot(), "sync --dry-run changed the root (not even a lock file may appear)");

    t.run(&["sync"], "").assert_code(0);
    assert_in_order(&t);
}
