//! Which transaction the guard's builds belong to, on fixture roots with the recording fake dkms
//! (the real tier: `real_transactions.rs`):
//!
//! - one transaction, one hand-over: a long-lived front end (here the test process, the parent of
//!   every run) runs many transactions; libalpm's lock file `DBPATH/db.lck`, made anew for each,
//!   tells them apart. The guard's builds go only to the install hook run under the same lock.
//! - the toolchain in the same transaction: a transaction that brings another compiler, C library
//!   or binutils makes the guard's builds worthless as a judgement and as builds: it warns, stops
//!   nothing, and the install hook builds again.

mod common;

use std::fs;
use std::time::Duration;

use common::*;

/// What the install hook says of a build the guard made.
const HANDED_OVER: &str = "installed (built before the transaction)";

fn config(t: &TestRoot, text: &str) {
    fs::write(t.path("etc/dkms-hook.toml"), text).unwrap();
}

/// libalpm's lock in the root's database, as `alpm_trans_init` makes it: a new file each time.
fn take_lock(t: &TestRoot) {
    // Lock files are told apart by inode and modification time: make sure the time moves on
    // (file systems stamp files with a clock of a few milliseconds).
    std::thread::sleep(Duration::from_millis(20));
    fs::OpenOptions::new().write(true).create_new(true).open(t.path("var/lib/pacman/db.lck")).unwrap();
}

/// What `alpm_trans_release` does.
fn release_lock(t: &TestRoot) {
    fs::remove_file(t.path("var/lib/pacman/db.lck")).unwrap();
}

/// The kernel upgrade's guard under the current lock: both modules built and kept.
fn guard_builds(t: &TestRoot) {
    let guard = t.run(&["guard"], kernel_upgrade_targets(K1, K_NEW));
    guard.assert_code(0);
    assert_eq!(builds(&guard), pairs(&[("hello/1.0", K_NEW), ("xpad/2.0", K_NEW)]), "{guard}");
    guard.expect_line(&["DKMS guard: 2 of 2 test builds work", "the install hook installs these builds"]);
    assert!(t.path(PREBUILT).join("index.json").exists());
}

/// The install hook after the kernel upgrade.
fn install_after_upgrade(t: &TestRoot) -> Run {
    let post = t.run(&["install"], format!("usr/lib/modules/{K_NEW}/vmlinuz\n{}", headers_target(K_NEW)));
    post.assert_code(0);
    post
}

/// The install hook built both modules itself (`dkms install` builds what is not built).
fn built_again(post: &Run) {
    for m in ["hello/1.0", "xpad/2.0"] {
        post.expect_line(&[&format!("{m} for {K_NEW}: installed in")]);
    }
    let installs: Vec<String> = post.installs().iter().map(|j| format!("{j:?}")).collect();
    assert_eq!(installs.len(), 2, "{post}");
}

#[test]
fn the_install_hook_under_the_same_lock_takes_the_guards_builds() {
    let t = installed_system();
    offer_kernel_upgrade(&t);
    take_lock(&t);
    guard_builds(&t);
    upgrade_kernel(&t);
    let post = install_after_upgrade(&t);
    for m in ["hello/1.0", "xpad/2.0"] {
        post.expect_line(&[&format!("{m} for {K_NEW}"), HANDED_OVER]);
    }
    assert!(builds(&post).is_empty(), "{post}");
    release_lock(&t);
    assert!(!t.path(PREBUILT).exists());
}

#[test]
fn a_later_transaction_of_the_same_front_end_never_takes_an_aborted_ones_builds() {
    let t = installed_system();
    offer_kernel_upgrade(&t);
    // The first transaction: the guard builds, then a later hook aborts it; libalpm releases
    // its lock. The same front end (this process) starts a second one with the guard off.
    take_lock(&t);
    guard_builds(&t);
    release_lock(&t);
    take_lock(&t);
    config(&t, "guard = false\n");
    upgrade_kernel(&t);
    let post = install_after_upgrade(&t);
    assert!(!post.stdout.contains(HANDED_OVER), "the second transaction took the first's builds:\n{post}");
    built_again(&post);
    assert_eq!(t.installed_for("hello", K_NEW).as_deref(), Some("1.0"));
    assert!(t.ko_installed("xpad", K_NEW));
    assert!(!t.path(PREBUILT).exists(), "the first transaction's builds outlived the second");
}

#[test]
fn a_run_without_a_lock_never_takes_the_builds_of_a_transaction_with_one() {
    let t = installed_system();
    offer_kernel_upgrade(&t);
    take_lock(&t);
    guard_builds(&t);
    // pacman is gone (the transaction was aborted); the install hook is run by hand.
    release_lock(&t);
    upgrade_kernel(&t);
    let post = install_after_upgrade(&t);
    assert!(!post.stdout.contains(HANDED_OVER), "{post}");
    built_again(&post);
    assert!(!t.path(PREBUILT).exists());
}

#[test]
fn a_stale_record_of_another_transaction_is_dropped_by_the_next_run() {
    let t = installed_system();
    offer_kernel_upgrade(&t);
    take_lock(&t);
    guard_builds(&t);
    release_lock(&t);
    // The next transaction reinstalls hello-dkms only: its first dkms-hook run drops the record.
    take_lock(&t);
    let post = t.run(&["install"], "usr/src/hello-1.0/dkms.conf\n");
    post.assert_code(0);
    assert!(!post.stdout.contains(HANDED_OVER), "{post}");
    assert!(!t.path(PREBUILT).exists(), "the aborted transaction's builds are still there");
}

/// `installed_system` with gcc 14.1.1-1 installed, hello critical, and a kernel upgrade offered.
fn system_with_gcc() -> TestRoot {
    let t = installed_system();
    t.package("gcc", "14.1.1-1", &[("usr/share/doc/gcc/README", "the compiler\n")]);
    offer_kernel_upgrade(&t);
    config(&t, "critical = [\"hel*\"]\n");
    t
}

/// gcc 14.2.1-1, as `pacman -Syu` has it downloaded.
fn offer_gcc(t: &TestRoot) {
    t.offer("gcc", "14.2.1-1", &[("usr/share/doc/gcc/README", "the new compiler\n")]);
}

/// What pacman does after the PreTransaction hooks of the kernel and gcc upgrade.
fn upgrade_kernel_and_gcc(t: &TestRoot) {
    upgrade_kernel(t);
    t.remove_package("gcc").package("gcc", "14.2.1-1", &[("usr/share/doc/gcc/README", "")]);
}

#[test]
fn a_new_compiler_with_the_kernel_stops_nothing_and_the_install_hook_builds_again() {
    let t = system_with_gcc();
    offer_gcc(&t);
    let fail = format!("hello/1.0/{K_NEW}=10");
    let guard = t.run_env(&["guard"], kernel_upgrade_targets(K1, K_NEW), &[("FAKE_DKMS_FAIL", &fail)]);
    // hello is critical and fails, but with the old compiler: that says nothing.
    guard.assert_code(0);
    let warning = guard.expect_line(&["warning: the transaction also changes the toolchain (gcc 14.1.1-1 → 14.2.1-1)"]);
    assert!(warning.contains("cannot judge") && warning.contains("builds every module again"), "{guard}");
    assert_eq!(guard.stdout.matches("changes the toolchain").count(), 1, "{guard}");
    guard.expect_line(&[&format!("hello/1.0 for {K_NEW} does not build with the old toolchain")]);
    assert!(!guard.stdout.contains("is critical"), "{guard}");
    guard.expect_line(&["DKMS guard: 1 of 2 test builds works; the install hook builds again"]);
    assert!(!t.path(PREBUILT).exists(), "the guard kept builds made with the old compiler");

    upgrade_kernel_and_gcc(&t);
    let post = install_after_upgrade(&t);
    assert!(!post.stdout.contains(HANDED_OVER), "{post}");
    post.expect_line(&[&format!("xpad/2.0 for {K_NEW}: installed in")]);
    assert!(t.ko_installed("xpad", K_NEW));
}

#[test]
fn a_compiler_pacman_ignores_is_no_change() {
    let t = system_with_gcc();
    offer_gcc(&t);
    let conf = fs::read_to_string(t.path("etc/pacman.conf")).unwrap_or_default();
    fs::create_dir_all(t.path("etc")).unwrap();
    // (The repository the offered packages are in is named, as pacman would need it.)
    fs::write(t.path("etc/pacman.conf"), format!("[options]\nIgnorePkg = gcc\n{conf}\n[test]\n")).unwrap();
    let fail = format!("hello/1.0/{K_NEW}=10");
    let guard = t.run_env(&["guard"], kernel_upgrade_targets(K1, K_NEW), &[("FAKE_DKMS_FAIL", &fail)]);
    assert!(!guard.stdout.contains("toolchain"), "{guard}");
    guard.assert_code(1);
    guard.expect_line(&[&format!("error: hello/1.0 is critical and does not build for kernel {K_NEW}")]);
}

#[test]
fn without_a_compiler_in_the_transaction_the_guard_judges_and_hands_over() {
    let t = system_with_gcc();
    let guard = t.run(&["guard"], kernel_upgrade_targets(K1, K_NEW));
    guard.assert_code(0);
    assert!(!guard.stdout.contains("toolchain"), "{guard}");
    let index = fs::read_to_string(t.path(PREBUILT).join("index.json")).unwrap();
    assert!(index.contains("\"gcc\": \"14.1.1-1\""), "the record lacks the toolchain:\n{index}");
    upgrade_kernel(&t);
    let post = install_after_upgrade(&t);
    post.expect_line(&[&format!("hello/1.0 for {K_NEW}"), HANDED_OVER]);
}

#[test]
fn builds_made_with_another_compiler_than_the_one_installed_after_the_transaction_are_refused() {
    let t = system_with_gcc();
    // The guard cannot see the gcc package (a file outside the root, say): it judges and hands over.
    let guard = t.run(&["guard"], kernel_upgrade_targets(K1, K_NEW));
    guard.assert_code(0);
    guard.expect_line(&["the install hook installs these builds"]);
    upgrade_kernel_and_gcc(&t);
    let post = install_after_upgrade(&t);
    post.expect_line(&["built again: the toolchain changed in the transaction (gcc 14.1.1-1 → 14.2.1-1)"]);
    assert_eq!(post.stdout.matches("toolchain changed").count(), 1, "{post}");
    assert!(!post.stdout.contains(HANDED_OVER), "{post}");
    built_again(&post);
    assert!(!t.path(PREBUILT).exists());
}

/// `linux` at K1 with hello installed, `clang` 18.1-1 installed, a kernel upgrade offered whose
/// headers are those of a kernel built with clang or not, and clang 19.1-1 offered.
fn system_with_clang_offered(kernel_built_with_clang: bool) -> TestRoot {
    let t = TestRoot::new();
    t.kernel("linux", K1).headers("linux-headers", K1);
    t.module_pkg("hello-dkms", "hello-1.0", &dkms_conf("hello", "1.0"));
    t.run(&["install"], "usr/src/hello-1.0/dkms.conf\n").assert_code(0);
    t.package("clang", "18.1-1", &[("usr/share/doc/clang/README", "")]);
    config(&t, "critical = [\"hello\"]\n");
    let kernel = format!("usr/lib/modules/{K_NEW}/vmlinuz");
    t.offer("linux", "2.0-1", &[(&kernel, "fake vmlinuz\n")]);
    let mut headers = headers_entries(K_NEW);
    let cc = if kernel_built_with_clang { "CONFIG_CC_IS_CLANG=y\n" } else { "CONFIG_CC_IS_GCC=y\n" };
    headers.push((format!("usr/lib/modules/{K_NEW}/build/.config"), cc.to_owned()));
    t.offer("linux-headers", "2.0-1", &borrowed(&headers));
    t.offer("clang", "19.1-1", &[("usr/share/doc/clang/README", "new\n")]);
    t
}

#[test]
fn clang_counts_for_a_kernel_built_with_it_only() {
    let fail = format!("hello/1.0/{K_NEW}=10");
    let t = system_with_clang_offered(true);
    let guard = t.run_env(&["guard"], kernel_upgrade_targets(K1, K_NEW), &[("FAKE_DKMS_FAIL", &fail)]);
    guard.assert_code(0);
    guard.expect_line(&["warning: the transaction also changes the toolchain (clang 18.1-1 → 19.1-1)"]);

    let t = system_with_clang_offered(false);
    let guard = t.run_env(&["guard"], kernel_upgrade_targets(K1, K_NEW), &[("FAKE_DKMS_FAIL", &fail)]);
    assert!(!guard.stdout.contains("toolchain"), "{guard}");
    guard.assert_code(1);
}

#[test]
fn a_cached_compiler_that_is_not_the_databases_version_is_no_change() {
    let t = system_with_gcc();
    offer_gcc(&t);
    // The file the database names holds another gcc (a stale or foreign file): pacman would not
    // install it as it is, and it says nothing about the transaction.
    let stage = t.scratch().join("foreign-gcc");
    fs::create_dir_all(&stage).unwrap();
    fs::write(stage.join(".PKGINFO"), "pkgname = gcc\npkgbase = gcc\npkgver = 15.0.0-1\narch = x86_64\nsize = 0\n")
        .unwrap();
    let cached = t.path("var/cache/pacman/pkg/gcc-14.2.1-1-x86_64.pkg.tar.zst");
    let ok = std::process::Command::new("bsdtar")
        .args(["--zstd", "-cf"])
        .arg(&cached)
        .arg("-C")
        .arg(&stage)
        .arg(".PKGINFO")
        .status()
        .unwrap()
        .success();
    assert!(ok, "bsdtar failed");
    let fail = format!("hello/1.0/{K_NEW}=10");
    let guard = t.run_env(&["guard"], kernel_upgrade_targets(K1, K_NEW), &[("FAKE_DKMS_FAIL", &fail)]);
    assert!(!guard.stdout.contains("toolchain"), "{guard}");
    guard.assert_code(1);
}
