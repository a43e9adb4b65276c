//! The pre-transaction guard on fixture roots with the recording fake dkms: the incoming packages
//! are offered as in a `pacman -Syu` (a sync database and pacman's cache), the guard test-builds
//! what the install hook will build after the transaction, stops the transaction (exit 1) when a
//! critical module fails and changes nothing then, warns about the others, and leaves its builds
//! to the install hook of the same transaction, which installs them without building again. The
//! real tier (`real_guard.rs`) runs the same with the real pacman and dkms.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;

use common::*;

/// What a guard run that changes nothing still writes: the lock, its log, and its record of
/// what the transaction brings (for the remove hook).
fn is_a_record_of_the_run(path: &str) -> bool {
    ["var/lib/dkms-hook/lock", "var/log/dkms-hook", "var/lib/dkms-hook/coming.json"].iter().any(|r| path.contains(r))
}

fn config(t: &TestRoot, text: &str) {
    fs::write(t.path("etc/dkms-hook.toml"), text).unwrap();
}

#[test]
fn builds_for_an_incoming_kernel_are_installed_after_the_transaction_without_building_again() {
    let t = installed_system();
    offer_kernel_upgrade(&t);
    let times = t.scratch().join("build-times");
    let env = [("FAKE_DKMS_TIMES", times.to_str().unwrap())];

    let guard = t.run_env(&["guard"], kernel_upgrade_targets(K1, K_NEW), &env);
    guard.assert_code(0);
    assert_eq!(builds(&guard), pairs(&[("hello/1.0", K_NEW), ("xpad/2.0", K_NEW)]), "{guard}");
    guard.expect_line(&["Test-building DKMS modules before the transaction: 2 builds"]);
    guard.expect_line(&[&format!("hello/1.0 for {K_NEW}"), "builds"]);
    guard.expect_line(&["DKMS guard: 2 of 2 test builds work", "the install hook installs these builds"]);
    // Built against the incoming package's headers, nothing of the new kernel on the system.
    for call in guard.dkms() {
        assert!(call.value("--kernelsourcedir").unwrap().contains(PREBUILT), "{call:?}");
        assert!(call.value("--dkmstree").unwrap().contains(PREBUILT), "{call:?}");
    }
    assert!(!t.path(&format!("usr/lib/modules/{K_NEW}")).exists());
    assert!(!t.path("var/lib/dkms/hello/1.0").join(K_NEW).exists());
    let started = fs::read_to_string(&times).unwrap().lines().filter(|l| l.starts_with("start")).count();
    assert_eq!(started, 2);

    upgrade_kernel(&t);
    fs::write(&times, "").unwrap();
    let post = t.run_env(&["install"], format!("usr/lib/modules/{K_NEW}/vmlinuz\n{}", headers_target(K_NEW)), &env);
    post.assert_code(0);
    for m in ["hello/1.0", "xpad/2.0"] {
        post.expect_line(&[&format!("{m} for {K_NEW}"), "installed (built before the transaction)"]);
    }
    assert_eq!(fs::read_to_string(&times).unwrap(), "", "the install hook built again:\n{post}");
    assert!(builds(&post).is_empty(), "{post}");
    assert_eq!(t.installed_for("hello", K_NEW).as_deref(), Some("1.0"));
    assert!(t.ko_installed("xpad", K_NEW));
    assert!(!t.path(PREBUILT).exists(), "the guard's builds outlived their use");
}

#[test]
fn a_critical_module_that_fails_for_the_incoming_kernel_stops_the_transaction_and_changes_nothing() {
    let t = installed_system();
    offer_kernel_upgrade(&t);
    config(&t, "critical = [\"hel*\"]\n");
    let before = t.snapshot();
    let fail = format!("hello/1.0/{K_NEW}=10");

    let guard = t.run_env(&["guard"], kernel_upgrade_targets(K1, K_NEW), &[("FAKE_DKMS_FAIL", &fail)]);
    guard.assert_code(1);
    guard.expect_line(&[&format!("error: hello/1.0 is critical and does not build for kernel {K_NEW}")]);
    guard.expect_line(&["error: expected ';' before '}' token"]);
    guard.expect_line(&["pacman -Syu --ignore linux,linux-headers"]);
    // The whole build log is in dkms-hook's log, which outlives the guard's builds.
    let log = guard.expect_line(&["log:", "guard.log"]);
    let log = fs::read_to_string(log.split("log: ").nth(1).unwrap().trim()).unwrap();
    assert!(log.contains("make[30]: filler line 30") && log.contains("error: expected ';'"), "{log}");
    guard.expect_line(&["DKMS_HOOK_GUARD=off pacman -Syu"]);
    // xpad built fine; nothing of either build stays, nothing else changed.
    guard.expect_line(&[&format!("xpad/2.0 for {K_NEW}"), "builds"]);
    let changed: Vec<String> =
        snapshot_diff(&before, &t.snapshot()).into_iter().filter(|p| !is_a_record_of_the_run(p)).collect();
    assert!(changed.is_empty(), "the guard changed {changed:?}\n{guard}");
}

#[test]
fn a_module_that_is_not_critical_gets_a_warning_and_the_transaction_goes_on() {
    let t = installed_system();
    offer_kernel_upgrade(&t);
    config(&t, "critical = [\"zfs\"]\n");
    let fail = format!("hello/1.0/{K_NEW}=10");

    let guard = t.run_env(&["guard"], kernel_upgrade_targets(K1, K_NEW), &[("FAKE_DKMS_FAIL", &fail)]);
    guard.assert_code(0);
    guard.expect_line(&[&format!("warning: hello/1.0 for {K_NEW} does not build"), "not critical"]);
    guard.expect_line(&["DKMS guard: 1 of 2 test builds works"]);

    // After the transaction: xpad comes from the guard's build, hello fails as the guard said.
    upgrade_kernel(&t);
    let post = t.run_env(&["install"], headers_target(K_NEW), &[("FAKE_DKMS_FAIL", &fail)]);
    post.assert_code(1);
    post.expect_line(&[&format!("xpad/2.0 for {K_NEW}"), "installed (built before the transaction)"]);
    post.expect_line(&[&format!("hello/1.0 for {K_NEW}"), "failed"]);
}

#[test]
fn a_critical_module_whose_own_upgrade_fails_stops_the_transaction() {
    let t = installed_system();
    config(&t, "critical = [\"hello\"]\n");
    t.offer("hello-dkms", "1.1-1", &borrowed(&module_entries("hello-1.1", &dkms_conf("hello", "1.1"))));
    let before = t.snapshot();
    let fail = format!("hello/1.1/{K1}=10");

    let guard = t.run_env(&["guard"], "usr/src/hello-1.1/dkms.conf\n", &[("FAKE_DKMS_FAIL", &fail)]);
    guard.assert_code(1);
    assert_eq!(builds(&guard), pairs(&[("hello/1.1", K1)]), "{guard}");
    // The sources came from the incoming package, not from the system.
    assert!(guard.dkms()[0].value("--sourcetree").unwrap().contains(PREBUILT), "{guard}");
    guard.expect_line(&[&format!("error: hello/1.1 is critical and does not build for kernel {K1}")]);
    guard.expect_line(&["pacman -Syu --ignore hello-dkms"]);
    let changed: Vec<String> =
        snapshot_diff(&before, &t.snapshot()).into_iter().filter(|p| !is_a_record_of_the_run(p)).collect();
    assert!(changed.is_empty(), "the guard changed {changed:?}\n{guard}");
    assert_eq!(t.installed_for("hello", K1).as_deref(), Some("1.0"));
}

#[test]
fn a_kernel_that_leaves_in_the_same_transaction_is_not_built_for() {
    let t = installed_system();
    offer_kernel_upgrade(&t);
    t.offer("hello-dkms", "1.1-1", &borrowed(&module_entries("hello-1.1", &dkms_conf("hello", "1.1"))));

    let stdin = format!("{}usr/src/hello-1.1/dkms.conf\n", kernel_upgrade_targets(K1, K_NEW));
    let guard = t.run(&["guard"], stdin);
    guard.assert_code(0);
    // linux leaves K1 behind: hello 1.1 and xpad are built for K_NEW only, hello 1.0 not at all.
    assert_eq!(builds(&guard), pairs(&[("hello/1.1", K_NEW), ("xpad/2.0", K_NEW)]), "{guard}");
}

#[test]
fn an_unchanged_release_and_a_kernel_image_alone_build_nothing() {
    let t = installed_system();
    // A package release with the same sources: the install hook will build nothing, nor does the
    // guard. A kernel image without headers brings nothing to build against.
    t.offer("hello-dkms", "1.0-2", &borrowed(&module_entries("hello-1.0", &dkms_conf("hello", "1.0"))));
    let guard = t.run(&["guard"], format!("usr/src/hello-1.0/dkms.conf\nusr/lib/modules/{K1}/vmlinuz\n"));
    guard.assert_code(0);
    assert!(guard.dkms().is_empty(), "{guard}");
    guard.expect_line(&["DKMS guard: the transaction brings nothing to build"]);
}

#[test]
fn the_bypass_variable_and_the_configuration_turn_the_guard_off() {
    let t = installed_system();
    offer_kernel_upgrade(&t);
    config(&t, "critical = [\"hello\"]\n");
    let fail = format!("hello/1.0/{K_NEW}=10");
    let off = t.run_env(
        &["guard"],
        kernel_upgrade_targets(K1, K_NEW),
        &[("FAKE_DKMS_FAIL", &fail), ("DKMS_HOOK_GUARD", "off")],
    );
    off.assert_code(0);
    off.expect_line(&["DKMS guard off (DKMS_HOOK_GUARD=off)"]);
    assert!(off.dkms().is_empty(), "{off}");

    config(&t, "critical = [\"hello\"]\nguard = false\n");
    let off = t.run_env(&["guard"], kernel_upgrade_targets(K1, K_NEW), &[("FAKE_DKMS_FAIL", &fail)]);
    off.assert_code(0);
    off.expect_line(&["DKMS guard off (guard = false in the configuration)"]);
    assert!(off.dkms().is_empty(), "{off}");
}

#[test]
fn a_package_that_cannot_be_reached_is_named_and_the_transaction_goes_on() {
    let t = installed_system();
    config(&t, "critical = [\"*\"]\n");
    // Nothing offered: pacman's cache has no package with these headers.
    let guard = t.run(&["guard"], kernel_upgrade_targets(K1, K_NEW));
    guard.assert_code(0);
    guard.expect_line(&[&format!(
        "warning: cannot check usr/lib/modules/{K_NEW}/build/include/ before the transaction"
    )]);
    guard.expect_line(&["DKMS guard: nothing checked before the transaction"]);
    assert!(guard.dkms().is_empty(), "{guard}");
}

#[test]
fn builds_from_other_sources_than_those_installed_are_not_used() {
    let t = installed_system();
    t.offer("hello-dkms", "1.1-1", &borrowed(&module_entries("hello-1.1", &dkms_conf("hello", "1.1"))));
    let guard = t.run(&["guard"], "usr/src/hello-1.1/dkms.conf\n");
    guard.assert_code(0);
    assert_eq!(builds(&guard), pairs(&[("hello/1.1", K1)]), "{guard}");

    // What pacman installs is not what the guard built from (another Makefile): built again.
    t.remove_package("hello-dkms");
    t.module_pkg_version("hello-dkms", "1.1-1", "hello-1.1", &dkms_conf("hello", "1.1"));
    fs::write(t.path("usr/src/hello-1.1/Makefile"), "obj-m += other.o\n").unwrap();
    let post = t.run(&["install"], "usr/src/hello-1.1/dkms.conf\n");
    post.assert_code(0);
    assert_eq!(builds(&post), pairs(&[("hello/1.1", K1)]), "{post}");
    assert!(!post.stdout.contains("built before the transaction"), "{post}");
    assert_eq!(t.installed_for("hello", K1).as_deref(), Some("1.1"));
    assert!(!t.path(PREBUILT).exists());
}

#[test]
fn a_guard_that_cannot_check_stops_the_transaction_only_for_critical_modules() {
    let t = installed_system();
    offer_kernel_upgrade(&t);
    let root = t.root().to_str().unwrap().to_owned();
    let missing = t.scratch().join("no-such-dkms");
    let args = ["--root", &root, "--dkms", missing.to_str().unwrap(), "guard"];
    // Nothing critical: nothing the guard would stop the transaction for.
    let run = t.run_raw(&args, kernel_upgrade_targets(K1, K_NEW), &[]);
    run.assert_code(0);
    run.expect_line(&["warning: the DKMS guard cannot check this transaction", "dkms not found", "it goes on"]);

    config(&t, "critical = [\"hello\"]\n");
    let run = t.run_raw(&args, kernel_upgrade_targets(K1, K_NEW), &[]);
    run.assert_code(2);
    assert!(run.stderr.contains("the DKMS guard cannot check this transaction, so pacman stops it"), "{run}");
    assert!(run.stderr.contains("DKMS_HOOK_GUARD=off") && run.stderr.contains("dkms not found"), "{run}");

    // A configuration it cannot read stops it too, and the bypass still works.
    config(&t, "critical = [\"hello\"\n");
    let run = t.run(&["guard"], kernel_upgrade_targets(K1, K_NEW));
    run.assert_code(2);
    assert!(run.stderr.contains("so pacman stops it") && run.stderr.contains("dkms-hook.toml"), "{run}");
    let run = t.run_env(&["guard"], kernel_upgrade_targets(K1, K_NEW), &[("DKMS_HOOK_GUARD", "off")]);
    run.assert_code(0);
    run.expect_line(&["DKMS guard off (DKMS_HOOK_GUARD=off)"]);
    assert!(!t.path(PREBUILT).exists());
}

/// The fake dkms signing as dkms does, making its key when there is none.
const SIGN: [(&str, &str); 1] = [("FAKE_DKMS_SIGN", "1")];

/// A kernel with headers and no signing key yet (no module was ever built); the guard has run
/// for the first module, hello-dkms 1.0-1, and pacman has installed it.
fn first_module_after_the_guard() -> TestRoot {
    let t = TestRoot::new();
    t.kernel("linux", K1).headers("linux-headers", K1);
    t.offer("hello-dkms", "1.0-1", &borrowed(&module_entries("hello-1.0", &dkms_conf("hello", "1.0"))));
    t.run_env(&["guard"], "usr/src/hello-1.0/dkms.conf\n", &SIGN).assert_code(0);
    assert!(!t.path("var/lib/dkms/mok.key").exists(), "the guard wrote into the dkms tree");
    t.module_pkg("hello-dkms", "hello-1.0", &dkms_conf("hello", "1.0"));
    t
}

#[test]
fn the_key_dkms_made_for_the_guards_builds_becomes_the_roots_own() {
    let t = first_module_after_the_guard();
    let certificate = fs::read_to_string(t.path(&format!("{PREBUILT}/mok.pub"))).unwrap();
    let post = t.run_env(&["install"], "usr/src/hello-1.0/dkms.conf\n", &SIGN);
    post.assert_code(0);
    post.expect_line(&[&format!("hello/1.0 for {K1}"), "installed (built before the transaction)"]);
    assert_eq!(fs::read_to_string(t.path("var/lib/dkms/mok.pub")).unwrap(), certificate);
    let mode = fs::metadata(t.path("var/lib/dkms/mok.key")).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    assert!(!t.path(PREBUILT).exists());
}

#[test]
fn builds_signed_with_another_key_than_the_roots_are_not_used() {
    let t = first_module_after_the_guard();
    // Between the hooks, the root got a key of its own (made by hand, or by another tool).
    fs::write(t.path("var/lib/dkms/mok.key"), "the admin's key\n").unwrap();
    fs::write(t.path("var/lib/dkms/mok.pub"), "the admin's certificate\n").unwrap();
    let post = t.run_env(&["install"], "usr/src/hello-1.0/dkms.conf\n", &SIGN);
    post.assert_code(0);
    assert!(!post.stdout.contains("built before the transaction"), "{post}");
    assert_eq!(fs::read_to_string(t.path("var/lib/dkms/mok.pub")).unwrap(), "the admin's certificate\n");
}

#[test]
fn a_kernel_package_rebuilt_for_the_same_kver_stays() {
    let t = installed_system();
    // linux 1.0-2: the same kver (no headers upgrade), and a module upgrade in the same transaction.
    let image = format!("usr/lib/modules/{K1}/vmlinuz");
    t.offer("linux", "1.0-2", &[(&image, "fake vmlinuz, rebuilt\n")]);
    t.offer("hello-dkms", "1.1-1", &borrowed(&module_entries("hello-1.1", &dkms_conf("hello", "1.1"))));
    let guard = t.run(&["guard"], "usr/src/hello-1.1/dkms.conf\n");
    guard.assert_code(0);
    assert_eq!(builds(&guard), pairs(&[("hello/1.1", K1)]), "{guard}");
}

#[test]
fn a_kernel_that_comes_without_headers_stops_the_transaction_for_a_critical_module() {
    let t = installed_system();
    // `pacman -U linux-…` (a downgrade, or `pacman -S linux` alone): the kernel, not its headers.
    let kernel = format!("usr/lib/modules/{K_NEW}/vmlinuz");
    t.offer("linux", "2.0-1", &[(&kernel, "fake vmlinuz\n")]);
    let targets = format!("{kernel}\nusr/lib/modules/{K1}/modules.order\n");
    config(&t, "critical = [\"hello\"]\n");
    let before = t.snapshot();

    let guard = t.run(&["guard"], &targets);
    guard.assert_code(1);
    guard.expect_line(&[&format!(
        "error: kernel {K_NEW} (linux) comes without its headers: hello is critical and cannot be built for it"
    )]);
    guard.expect_line(&["warning: kernel", "comes without its headers: xpad will not be built for it"]);
    guard.expect_line(&["-> install linux-headers as well: pacman -S linux-headers"]);
    assert!(guard.dkms().is_empty(), "nothing is built\n{guard}");
    let changed: Vec<String> =
        snapshot_diff(&before, &t.snapshot()).into_iter().filter(|p| !is_a_record_of_the_run(p)).collect();
    assert!(changed.is_empty(), "the guard changed {changed:?}\n{guard}");

    // Nothing critical: a warning for each module, and the transaction goes on.
    config(&t, "");
    let guard = t.run(&["guard"], &targets);
    guard.assert_code(0);
    guard.expect_line(&["warning: kernel", "comes without its headers: hello, xpad will not be built for it"]);
    assert!(guard.dkms().is_empty(), "{guard}");
}

#[test]
fn headers_for_a_kernel_that_is_not_installed_and_not_coming_are_not_built_for() {
    let t = installed_system();
    // `pacman -S linux-headers` on a system whose kernel is older: headers of a kver no kernel has.
    t.offer("linux-headers", "2.0-1", &borrowed(&headers_entries(K_NEW)));
    config(&t, "critical = [\"hello\"]\n");
    let guard = t.run(&["guard"], format!("usr/lib/modules/{K_NEW}/build/include/\n"));
    guard.assert_code(0);
    assert!(builds(&guard).is_empty(), "{guard}");
    assert!(!guard.stdout.contains("error:"), "{guard}");
    assert!(!t.path(PREBUILT).join("index.json").exists(), "{guard}");
}

/// The file name `offer` gives a package in pacman's cache.
fn cached(t: &TestRoot, name: &str, version: &str) -> std::path::PathBuf {
    t.path(&format!("var/cache/pacman/pkg/{name}-{version}-x86_64.pkg.tar.zst"))
}

#[test]
fn the_incoming_package_is_found_in_every_cache_of_pacmans_configuration() {
    let t = installed_system();
    t.offer("hello-dkms", "1.1-1", &borrowed(&module_entries("hello-1.1", &dkms_conf("hello", "1.1"))));
    // pacman reads every CacheDir of [options], also from included files, and finds a package
    // in any of them: here in a cache named only in an included file.
    fs::create_dir_all(t.path("etc/pacman.d/caches")).unwrap();
    fs::write(
        t.path("etc/pacman.conf"),
        "[options]\nCacheDir = /var/cache/first\nInclude = /etc/pacman.d/caches/*.conf\n[test]\nServer = file:///srv\n",
    )
    .unwrap();
    fs::write(t.path("etc/pacman.d/caches/10-second.conf"), "CacheDir = /var/cache/second\n").unwrap();
    fs::create_dir_all(t.path("var/cache/second")).unwrap();
    let file = cached(&t, "hello-dkms", "1.1-1");
    fs::rename(&file, t.path("var/cache/second").join(file.file_name().unwrap())).unwrap();

    let guard = t.run(&["guard"], "usr/src/hello-1.1/dkms.conf\n");
    guard.assert_code(0);
    assert_eq!(builds(&guard), pairs(&[("hello/1.1", K1)]), "{guard}");
    assert!(guard.dkms()[0].value("--sourcetree").unwrap().contains(PREBUILT), "{guard}");
}

#[test]
fn a_cached_file_that_is_not_the_databases_package_is_not_built_from() {
    let t = installed_system();
    config(&t, "critical = [\"hello\"]\n");
    let sources = module_entries("hello-1.1", &dkms_conf("hello", "1.1"));
    t.offer("hello-dkms", "1.1-1", &borrowed(&sources));
    let stale = fs::read(cached(&t, "hello-dkms", "1.1-1")).unwrap();
    // The repository rebuilt the package under the same name and version: the database has the
    // new file's checksum, the cache still the old file.
    let mut rebuilt = sources.clone();
    rebuilt.push(("usr/src/hello-1.1/fix.patch".to_owned(), "the fix\n".to_owned()));
    t.offer("hello-dkms", "1.1-1", &borrowed(&rebuilt));
    fs::write(cached(&t, "hello-dkms", "1.1-1"), stale).unwrap();

    let guard = t.run(&["guard"], "usr/src/hello-1.1/dkms.conf\n");
    guard.assert_code(0);
    assert!(guard.dkms().is_empty(), "the guard built from the stale file:\n{guard}");
    guard.expect_line(&["warning: cannot check usr/src/hello-1.1/dkms.conf before the transaction"]);
}

/// The package file `offer` built, moved from pacman's cache to `to` (a path in the scratch
/// directory or the root): what `pacman -U` is given, not what pacman has in its cache.
fn move_offered(t: &TestRoot, name: &str, version: &str, to: &std::path::Path) -> std::path::PathBuf {
    fs::create_dir_all(to.parent().unwrap()).unwrap();
    fs::rename(cached(t, name, version), to).unwrap();
    to.to_path_buf()
}

#[test]
fn upgrade_targets_are_found_relative_to_pacmans_directory_and_as_downloads() {
    let t = installed_system();
    let root = t.root().to_str().unwrap().to_owned();
    t.offer("hello-dkms", "1.1-1", &borrowed(&module_entries("hello-1.1", &dkms_conf("hello", "1.1"))));
    t.offer("xpad-dkms", "2.1-1", &borrowed(&module_entries("xpad-2.1", &dkms_conf("xpad", "2.1"))));
    // hello: a file in pacman's working directory, named relative to it; xpad: a URL, which
    // pacman has downloaded into its cache (where `offer` left it).
    let home = t.path("home/user");
    move_offered(&t, "hello-dkms", "1.1-1", &home.join("hello-dkms-1.1-1-x86_64.pkg.tar.zst"));
    // pacman's default cache is the host's, not the root's: `pacman --root` is given the root's.
    let cache = t.path("var/cache/pacman/pkg");
    let pacman = [
        "--root",
        &root,
        "--cachedir",
        cache.to_str().unwrap(),
        "-U",
        "hello-dkms-1.1-1-x86_64.pkg.tar.zst",
        "https://example.org/x/xpad-dkms-2.1-1-x86_64.pkg.tar.zst",
    ];
    let guard =
        t.run_under_pacman(&pacman, &home, &["guard"], "usr/src/hello-1.1/dkms.conf\nusr/src/xpad-2.1/dkms.conf\n");
    guard.assert_code(0);
    assert_eq!(builds(&guard), pairs(&[("hello/1.1", K1), ("xpad/2.1", K1)]), "{guard}");

    // A file outside the root is out of reach of a hook pacman runs chrooted into the root.
    let outside = t.scratch().join("hello-dkms-1.1-1-x86_64.pkg.tar.zst");
    fs::rename(home.join("hello-dkms-1.1-1-x86_64.pkg.tar.zst"), &outside).unwrap();
    let pacman = ["--root", &root, "-U", outside.to_str().unwrap()];
    let guard = t.run_under_pacman(&pacman, &home, &["guard"], "usr/src/hello-1.1/dkms.conf\n");
    guard.assert_code(0);
    assert!(guard.dkms().is_empty(), "{guard}");
    guard.expect_line(&["warning: cannot check usr/src/hello-1.1/dkms.conf before the transaction"]);
}

#[test]
fn the_sysroot_the_configuration_and_the_cachedir_of_the_command_line_lead_to_the_cache() {
    let t = installed_system();
    t.offer("hello-dkms", "1.1-1", &borrowed(&module_entries("hello-1.1", &dkms_conf("hello", "1.1"))));
    t.offer("xpad-dkms", "2.1-1", &borrowed(&module_entries("xpad-2.1", &dkms_conf("xpad", "2.1"))));
    // `pacman --sysroot S --root /root --config /root/etc/other.conf --cachedir /root/var/cache/cli`:
    // every path below S, the configuration's caches used after the command line's.
    let sysroot = t.scratch().to_str().unwrap().to_owned();
    fs::write(
        t.path("etc/other.conf"),
        "[options]\nCacheDir = /root/var/cache/configured\n[test]\nServer = file:///srv\n",
    )
    .unwrap();
    let conf_dir = t.path("var/cache/configured");
    move_offered(&t, "hello-dkms", "1.1-1", &conf_dir.join("hello-dkms-1.1-1-x86_64.pkg.tar.zst"));
    let cli_dir = t.path("var/cache/cli");
    move_offered(&t, "xpad-dkms", "2.1-1", &cli_dir.join("xpad-dkms-2.1-1-x86_64.pkg.tar.zst"));
    let pacman = [
        "--sysroot",
        &sysroot,
        "--root",
        "/root",
        "--config",
        "/root/etc/other.conf",
        "--cachedir",
        "/root/var/cache/cli",
        "-Syu",
    ];
    let guard = t.run_under_pacman(
        &pacman,
        t.scratch(),
        &["guard"],
        "usr/src/hello-1.1/dkms.conf\nusr/src/xpad-2.1/dkms.conf\n",
    );
    guard.assert_code(0);
    assert_eq!(builds(&guard), pairs(&[("hello/1.1", K1), ("xpad/2.1", K1)]), "{guard}");
}
