//! Upgrading a module that stays packaged never leaves a kernel without the module that worked:
//! before the transaction nothing of it is removed (its sources are kept for dkms); after it, the
//! new version is built privately for each kernel and swapped in only when that works. A failed
//! build keeps the old version installed (state `kept`), `sync` retries, and once the new version
//! is in nothing of the old one is left. A package release with byte-identical sources builds
//! nothing. Driven through the binary on fixture roots with the recording fake dkms; a package
//! upgraded to a new directory is recognised through the sync database and pacman's cache, as in
//! a `pacman -Syu`.

mod common;
mod ops;

use std::fs;
use std::path::Path;

use common::*;

fn hello(t: &TestRoot, version: &str, pkgver: &str) {
    t.module_pkg_version("hello-dkms", pkgver, &format!("hello-{version}"), &dkms_conf("hello", version));
}

/// What pacman does between the hooks: the old package goes, the new one comes (`makefile`:
/// the new release's Makefile, to tell releases apart).
fn upgrade_package(t: &TestRoot, version: &str, pkgver: &str, makefile: &str) {
    t.remove_package("hello-dkms");
    hello(t, version, pkgver);
    fs::write(t.path(&format!("usr/src/hello-{version}/Makefile")), makefile).unwrap();
}

/// The kept copies of sources dkms-hook holds.
fn kept_copies(t: &TestRoot) -> Vec<String> {
    ops::logs_in(&t.path("var/lib/dkms-hook/kept"))
}

/// Where dkms's `source` link of `module/version` points.
fn source_link(t: &TestRoot, module: &str, version: &str) -> String {
    fs::read_link(t.path(&format!("var/lib/dkms/{module}/{version}/source"))).unwrap().display().to_string()
}

/// The fake build's module file for `kver`, as installed.
fn installed_ko(t: &TestRoot, kver: &str) -> Vec<u8> {
    fs::read(t.path(&format!("usr/lib/modules/{kver}/updates/dkms/hello.ko"))).unwrap()
}

/// `status --json`'s entries for `module/version`, as (kernel, state, serving).
fn pair_states(t: &TestRoot, id: &str) -> Vec<(String, String, Option<String>)> {
    let (_, json, _) = ops::status_json(t);
    json["modules"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| format!("{}/{}", p["module"].as_str().unwrap(), p["version"].as_str().unwrap()) == id)
        .map(|p| {
            (
                p["kernel"].as_str().unwrap().to_owned(),
                p["state"].as_str().unwrap().to_owned(),
                p["serving"].as_str().map(str::to_owned),
            )
        })
        .collect()
}

#[test]
fn a_release_with_identical_sources_builds_nothing() {
    let t = TestRoot::with_two_kernels();
    hello(&t, "1.0", "1.0-1");
    t.run(&["install"], "usr/src/hello-1.0/dkms.conf\n").assert_code(0);
    let before = [installed_ko(&t, K1), installed_ko(&t, K2)];

    let pre = t.run(&["remove", "--no-depmod"], "usr/src/hello-1.0/dkms.conf\n");
    pre.assert_code(0);
    assert!(pre.calls.is_empty(), "{pre}");
    pre.expect_line(&["hello/1.0", "kept installed until its upgrade is built"]);
    assert!(source_link(&t, "hello", "1.0").contains("var/lib/dkms-hook/kept/"), "{pre}");

    // 1.0-2: a packaging fix, the module's sources byte for byte the same.
    t.remove_package("hello-dkms");
    hello(&t, "1.0", "1.0-2");
    let post = t.run(&["install"], "usr/src/hello-1.0/dkms.conf\n");
    post.assert_code(0);
    assert!(post.calls.is_empty(), "no dkms and no depmod for unchanged sources\n{post}");
    for k in [K1, K2] {
        post.expect_line(&["hello/1.0 for", k, "unchanged"]);
    }
    post.expect_line(&["==> Nothing to build: the DKMS module sources are unchanged"]);
    post.expect_line(&["==> DKMS modules: 2 unchanged"]);
    assert_eq!([installed_ko(&t, K1), installed_ko(&t, K2)], before);
    assert_eq!(source_link(&t, "hello", "1.0"), t.path("usr/src/hello-1.0").display().to_string());
    assert!(kept_copies(&t).is_empty(), "{:?}", kept_copies(&t));
    t.run(&["status"], "").assert_code(0);
}

#[test]
fn a_release_with_changed_sources_that_fail_keeps_the_build_that_worked() {
    let t = TestRoot::with_two_kernels();
    hello(&t, "1.0", "1.0-1");
    t.run(&["install"], "usr/src/hello-1.0/dkms.conf\n").assert_code(0);
    let old = installed_ko(&t, K2);

    t.run(&["remove", "--no-depmod"], "usr/src/hello-1.0/dkms.conf\n").assert_code(0);
    upgrade_package(&t, "1.0", "1.0-2", "obj-m += fake.o\n# 1.0-2\n");
    let fail = format!("hello/1.0/{K2}=10");
    let post = t.run_env(&["install"], "usr/src/hello-1.0/dkms.conf\n", &[("FAKE_DKMS_FAIL", &fail)]);
    post.assert_code(1);
    post.expect_line(&["hello/1.0 for", K1, "rebuilt in", "replacing the build from before"]);
    let line = post.expect_line(&["hello/1.0 for", K2, "failed"]);
    assert!(line.contains("dkms exit 10") && line.contains("kept the build from before the upgrade"), "{line}");
    post.expect_line(&["error: expected ';'"]);
    // K2 still has the module that worked, installed and known to dkms.
    assert_eq!(installed_ko(&t, K2), old);
    assert_eq!(t.installed_for("hello", K2).as_deref(), Some("1.0"));
    assert_eq!(
        pair_states(&t, "hello/1.0"),
        [(K1.into(), "installed".into(), None), (K2.into(), "kept".into(), Some("1.0".into()))]
    );
    // Its sources are kept for dkms until the rebuild is in.
    assert_eq!(kept_copies(&t).len(), 1);

    let sync = t.run(&["sync"], "");
    sync.assert_code(0);
    sync.expect_line(&["hello/1.0 for", K2, "rebuilt in", "replacing the build from before"]);
    let build = sync.first_call(&["build"], "hello", K2).expect("a private build");
    let remove = sync.first_call(&["remove"], "hello", K2).expect("the old build removed");
    let install = sync.first_call(&["install"], "hello", K2).expect("installed");
    assert!(build < remove && remove < install, "{sync}");
    assert!(kept_copies(&t).is_empty(), "{:?}", kept_copies(&t));
    t.run(&["status"], "").assert_code(0);
    assert_eq!(t.run(&["sync"], "").calls, vec![], "a second sync has nothing to do");
}

#[test]
fn a_new_version_that_fails_keeps_the_old_one_then_replaces_it_everywhere() {
    let t = TestRoot::with_two_kernels();
    hello(&t, "1.0", "1.0-1");
    t.run(&["install"], "usr/src/hello-1.0/dkms.conf\n").assert_code(0);
    let old = installed_ko(&t, K2);

    // pacman -Syu brings hello-dkms 1.1-1: the remove hook gets the directory that leaves
    // (Remove) and the one that comes (Install), as pacman matches them; no package file needed.
    let pre = t.run(&["remove"], "usr/src/hello-1.0/dkms.conf\nusr/src/hello-1.1/dkms.conf\n");
    pre.assert_code(0);
    assert!(pre.calls.is_empty(), "the upgraded module is not removed before the transaction\n{pre}");
    upgrade_package(&t, "1.1", "1.1-1", "obj-m += fake.o\n# 1.1\n");
    assert!(!t.path("usr/src/hello-1.0").exists());

    let fail = format!("hello/1.1/{K2}=10");
    let post = t.run_env(&["install"], "usr/src/hello-1.1/dkms.conf\n", &[("FAKE_DKMS_FAIL", &fail)]);
    post.assert_code(1);
    post.expect_line(&["hello/1.1 for", K1, "replacing hello/1.0"]);
    let line = post.expect_line(&["hello/1.1 for", K2, "failed"]);
    assert!(line.contains("kept hello/1.0 (the version that was installed)"), "{line}");
    post.expect_line(&["hello/1.0", "still installed for", K2]);
    // 1.1's private build moved into the dkms tree whole, registration and all: no `dkms add`.
    assert!(post.dkms().iter().all(|c| c.action() != Some("add")), "{post}");
    assert_eq!(source_link(&t, "hello", "1.1"), t.path("usr/src/hello-1.1").display().to_string());
    // dkms removed 1.0 from K1 although its sources are gone: it read the kept copy.
    assert_eq!(t.installed_for("hello", K1).as_deref(), Some("1.1"));
    assert_eq!(t.installed_for("hello", K2).as_deref(), Some("1.0"));
    assert_eq!(installed_ko(&t, K2), old);
    assert!(!t.is_built("hello", "1.0", K1), "{post}");
    assert_eq!(
        pair_states(&t, "hello/1.1"),
        [(K1.into(), "installed".into(), None), (K2.into(), "kept".into(), Some("1.0".into()))]
    );
    let (code, json, _) = ops::status_json(&t);
    assert_eq!(code, Some(1));
    assert!(json["out_of_place"].as_array().unwrap().is_empty(), "{json}");

    // Fixed: sync swaps 1.1 in on K2, and nothing of 1.0 is left anywhere.
    let sync = t.run(&["sync"], "");
    sync.assert_code(0);
    sync.expect_line(&["hello/1.1 for", K2, "replacing hello/1.0"]);
    assert_eq!(t.installed_for("hello", K2).as_deref(), Some("1.1"));
    assert!(!t.is_registered("hello", "1.0"), "{sync}");
    assert!(kept_copies(&t).is_empty(), "{:?}", kept_copies(&t));
    let state = fs::read_to_string(t.path("var/lib/dkms-hook/state.json")).unwrap();
    assert!(!state.contains("\"1.0\""), "{state}");
    t.run(&["status"], "").assert_code(0);
}

#[test]
fn a_first_install_passes_through_the_remove_hook_silently() {
    // `pacman -S hello-dkms`: the remove hook's Install trigger matches the directory that comes;
    // nothing leaves, so nothing is done and nothing is said.
    let t = TestRoot::with_two_kernels();
    let pre = t.run(&["remove"], "usr/src/hello-1.0/dkms.conf\n");
    pre.assert_code(0);
    assert!(pre.calls.is_empty(), "{pre}");
    assert_eq!(pre.stdout, "", "{pre}");
}

#[test]
fn a_package_the_transaction_does_not_upgrade_is_removed_before_it() {
    let t = TestRoot::with_two_kernels();
    hello(&t, "1.0", "1.0-1");
    t.run(&["install"], "usr/src/hello-1.0/dkms.conf\n").assert_code(0);
    // Nothing of hello comes in the transaction (no directory of it among the targets): it leaves,
    // whatever the sync database and the cache hold.
    t.offer_upgrade("hello-dkms", "1.1-1");
    let pre = t.run(&["remove"], "usr/src/hello-1.0/dkms.conf\n");
    pre.assert_code(0);
    assert_eq!(sorted(pre.removes()), vec![job("hello", "1.0", K1), job("hello", "1.0", K2)], "{pre}");
    assert!(!t.is_registered("hello", "1.0"));
    assert!(kept_copies(&t).is_empty());
}

#[test]
fn removing_the_package_while_an_old_version_is_kept_leaves_nothing() {
    let t = TestRoot::with_two_kernels();
    hello(&t, "1.0", "1.0-1");
    t.run(&["install"], "usr/src/hello-1.0/dkms.conf\n").assert_code(0);
    t.run(&["remove"], "usr/src/hello-1.0/dkms.conf\nusr/src/hello-1.1/dkms.conf\n").assert_code(0);
    upgrade_package(&t, "1.1", "1.1-1", "obj-m += fake.o\n# 1.1\n");
    let fail = format!("hello/1.1/{K2}=10");
    t.run_env(&["install"], "usr/src/hello-1.1/dkms.conf\n", &[("FAKE_DKMS_FAIL", &fail)]).assert_code(1);
    assert_eq!(t.installed_for("hello", K2).as_deref(), Some("1.0"));

    // pacman -R hello-dkms: the remove hook takes both versions away.
    let rm = t.run(&["remove"], "usr/src/hello-1.1/dkms.conf\n");
    rm.assert_code(0);
    t.remove_package("hello-dkms");
    assert!(!t.path("var/lib/dkms/hello").exists(), "{rm}");
    for k in [K1, K2] {
        assert!(!t.ko_installed("hello", k), "{rm}");
    }
    assert!(kept_copies(&t).is_empty(), "{:?}", kept_copies(&t));
    let state = fs::read_to_string(t.path("var/lib/dkms-hook/state.json")).unwrap();
    assert!(!state.contains("hello"), "{state}");
    t.run(&["status"], "").assert_code(0);
}

#[test]
fn a_new_version_excluded_for_a_kernel_takes_the_old_one_away_there() {
    let t = TestRoot::with_two_kernels();
    hello(&t, "1.0", "1.0-1");
    t.run(&["install"], "usr/src/hello-1.0/dkms.conf\n").assert_code(0);
    t.run(&["remove", "--no-depmod"], "usr/src/hello-1.0/dkms.conf\n").assert_code(0);
    upgrade_package(&t, "1.0", "1.0-2", "obj-m += fake.o\n# 1.0-2\n");
    let excluded = format!("hello/1.0/{K2}=77");
    let post = t.run_env(&["install"], "usr/src/hello-1.0/dkms.conf\n", &[("FAKE_DKMS_FAIL", &excluded)]);
    post.assert_code(0);
    post.expect_line(&["hello/1.0 for", K2, "skipped"]);
    assert!(!t.ko_installed("hello", K2), "{post}");
    assert!(t.ko_installed("hello", K1), "{post}");
    assert!(Path::new(&t.path("var/lib/dkms-hook")).is_dir());
    assert!(kept_copies(&t).is_empty(), "{:?}", kept_copies(&t));
}
