//! A kernel rebuilt under the same kver (a `linux`/`linux-headers` pkgrel bump: pacman upgrades
//! `usr/lib/modules/K/modules.order` and `build/include/` in place). Build first here too: the
//! upgrade hook removes nothing and records what the headers were; the install hook rebuilds each
//! installed module privately and swaps it in only when that works, keeps the working build when
//! it fails, and builds nothing when the new headers are byte-identical. Driven through the binary
//! on fixture roots with the recording fake dkms.

mod common;

use std::fs;

use common::*;

fn hello(t: &TestRoot) {
    t.module_pkg("hello-dkms", "hello-1.0", &dkms_conf("hello", "1.0"));
}

/// The targets pacman gives both hooks for kernel `kver` and its headers upgraded in place.
fn in_place(kver: &str) -> String {
    format!("usr/lib/modules/{kver}/build/include/\nusr/lib/modules/{kver}/modules.order\n")
}

/// The fake build's module file for `kver`, as installed.
fn installed_ko(t: &TestRoot, kver: &str) -> Vec<u8> {
    fs::read(t.path(&format!("usr/lib/modules/{kver}/updates/dkms/hello.ko"))).unwrap()
}

/// hello installed for both kernels, then the upgrade hook of a transaction that rebuilds K1
/// under the same kver: nothing is removed.
fn installed_then_upgrade_hook(t: &TestRoot) {
    hello(t);
    t.run(&["install"], "usr/src/hello-1.0/dkms.conf\n").assert_code(0);
    let pre = t.run(&["remove", "--no-depmod"], in_place(K1));
    pre.assert_code(0);
    assert!(pre.calls.is_empty(), "the upgrade hook must not touch the installed modules\n{pre}");
    assert_eq!(t.installed_for("hello", K1).as_deref(), Some("1.0"), "{pre}");
    assert!(t.ko_installed("hello", K1), "{pre}");
}

/// What pacman does between the hooks: the headers of K1 change (a rebuilt kernel).
fn rebuild_headers(t: &TestRoot) {
    let h = t.path(&format!("usr/lib/modules/{K1}/build/include/generated/utsrelease.h"));
    let mut text = fs::read_to_string(&h).unwrap();
    text.push_str("/* rebuilt */\n");
    fs::write(&h, text).unwrap();
}

#[test]
fn rebuilt_headers_whose_rebuild_fails_keep_the_working_build() {
    let t = TestRoot::with_two_kernels();
    installed_then_upgrade_hook(&t);
    let before = installed_ko(&t, K1);
    rebuild_headers(&t);

    let fail = format!("hello/1.0/{K1}=10");
    let post = t.run_env(&["install"], in_place(K1), &[("FAKE_DKMS_FAIL", &fail)]);
    post.assert_code(1);
    let line = post.expect_line(&["hello/1.0 for", K1, "failed"]);
    assert!(line.contains("kept the build from before the upgrade"), "{line}\n{post}");
    assert_eq!(post.count_lines("hello/1.0 for"), 1, "only K1's module is rebuilt\n{post}");
    assert!(post.first_call(&["remove", "uninstall"], "hello", K1).is_none(), "the working build was removed\n{post}");
    assert_eq!(installed_ko(&t, K1), before);
    assert_eq!(t.installed_for("hello", K1).as_deref(), Some("1.0"));
    assert_eq!(t.installed_for("hello", K2).as_deref(), Some("1.0"));
}

#[test]
fn rebuilt_headers_are_built_against_first_then_swapped_in() {
    let t = TestRoot::with_two_kernels();
    installed_then_upgrade_hook(&t);
    rebuild_headers(&t);

    let post = t.run(&["install"], in_place(K1));
    post.assert_code(0);
    post.expect_line(&["hello/1.0 for", K1, "replacing the build from before"]);
    let build = post.first_call(&["build"], "hello", K1).expect("a private build");
    let remove = post.first_call(&["remove"], "hello", K1).expect("the old build removed");
    let install = post.first_call(&["install"], "hello", K1).expect("installed");
    assert!(build < remove && remove < install, "{post}");
    assert!(post.first_call(&["build", "install", "remove"], "hello", K2).is_none(), "{post}");
    assert_eq!(t.installed_for("hello", K1).as_deref(), Some("1.0"));
    assert!(!t.path(&format!("var/lib/dkms-hook/headers/{K1}")).exists(), "the record outlives the transaction");
}

#[test]
fn byte_identical_headers_build_nothing() {
    let t = TestRoot::with_two_kernels();
    installed_then_upgrade_hook(&t);
    let before = installed_ko(&t, K1);

    let post = t.run(&["install"], in_place(K1));
    post.assert_code(0);
    assert!(post.calls.is_empty(), "no dkms and no depmod for identical headers\n{post}");
    post.expect_line(&["hello/1.0 for", K1, "unchanged"]);
    assert_eq!(installed_ko(&t, K1), before);
    assert_eq!(t.installed_for("hello", K1).as_deref(), Some("1.0"));
}

/// Headers the upgrade hook did not see replaced (newly installed: no record of what they were):
/// the installed builds are trusted, nothing is built or removed.
#[test]
fn headers_without_a_record_leave_the_installed_builds_alone() {
    let t = TestRoot::with_two_kernels();
    hello(&t);
    t.run(&["install"], "usr/src/hello-1.0/dkms.conf\n").assert_code(0);
    let post = t.run(&["install"], in_place(K1));
    post.assert_code(0);
    assert!(post.calls.is_empty(), "{post}");
}
