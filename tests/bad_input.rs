//! The bad-input catalogue: every way the input to dkms-hook can be wrong — stdin, dkms.conf,
//! the pacman database, the kernels on disk, the tools, the config file, the user, the root —
//! each a test asserting one clear message (what, where, what to do), the exit status, and that
//! nothing else under the fixture root changed (a snapshot of every path, file content and
//! symlink target before and after).
//!
//! Cases that need root-only set-up (a read-only bind mount, a small tmpfs, running as `nobody`)
//! follow the common skip rule: they fail under CI when not run as root.

mod common;
#[path = "faults/support.rs"]
mod support;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

use common::*;
use support::*;

/// Two kernels with headers and `hello/1.0` installed for both: a system in order.
fn world() -> TestRoot {
    let t = TestRoot::with_two_kernels();
    t.module_pkg("hello-dkms", "hello-1.0", &dkms_conf("hello", "1.0"));
    t.dkms_installed("hello", "1.0", K1).dkms_installed("hello", "1.0", K2);
    t
}

/// `world()` plus a module-source package `foo-dkms` owning `usr/src/DIR` with `conf`.
fn world_with(dir: &str, conf: &str) -> TestRoot {
    let t = world();
    t.module_pkg("foo-dkms", dir, conf);
    t
}

/// A dkms.conf line set: `PACKAGE_NAME`/`PACKAGE_VERSION` as given (raw bash), the rest usual.
fn conf_raw(name: &str, version: &str) -> String {
    format!("PACKAGE_NAME={name}\nPACKAGE_VERSION={version}\nBUILT_MODULE_NAME[0]=foo\nAUTOINSTALL=yes\n")
}

/// Runs `install` with `stdin` and asserts: exit `code`, no dkms or depmod call, the one line
/// holding all of `needles`, and the root unchanged. Returns that line.
#[track_caller]
fn refused(t: &TestRoot, args: &[&str], stdin: &[u8], code: i32, needles: &[&str]) -> String {
    let before = t.snapshot();
    let run = t.run(args, stdin);
    run.assert_code(code);
    assert!(run.calls.is_empty(), "nothing may run\n{run}");
    let line = one_line(&run.output(), needles, &run);
    assert_same(&before, &t.snapshot(), &run);
    line
}

// ---------------------------------------------------------------------------------------------
// stdin

#[test]
fn stdin_empty() {
    let t = world();
    refused(&t, &["-v", "install"], b"", 0, &["nothing to do"]);
}

#[test]
fn stdin_blank_lines() {
    let t = world();
    refused(&t, &["-v", "install"], b"\n\n   \n\t\n\r\n", 0, &["nothing to do"]);
}

#[test]
fn stdin_garbage() {
    let t = world();
    refused(&t, &["-v", "install"], b"hello\n#!/bin/sh\nrm -rf /\n*\nusr/src/*/dkms.conf\n", 0, &["nothing to do"]);
}

#[test]
fn stdin_non_utf8() {
    let t = world();
    refused(&t, &["-v", "install"], b"usr/src/hello-1.0\xff/dkms.conf\n\xfe\xfe\n", 0, &["nothing to do"]);
}

#[test]
fn stdin_one_mib_line() {
    let t = world();
    let mut input = b"usr/src/".to_vec();
    input.extend(std::iter::repeat_n(b'a', 1 << 20));
    input.extend(b"/dkms.conf\n");
    refused(&t, &["-v", "install"], &input, 0, &["nothing to do"]);
}

#[test]
fn stdin_dot_dot_paths() {
    let t = world();
    let input = b"usr/src/../../etc/dkms.conf\nusr/src/hello-1.0/../../../etc/dkms.conf\n\
                  usr/lib/modules/../../../etc/modules.order\nusr/lib/modules/6.1.0-47-amd64/../../x/modules.order\n";
    refused(&t, &["-v", "remove"], input, 0, &["nothing to do"]);
    refused(&t, &["-v", "install"], input, 0, &["nothing to do"]);
}

// ---------------------------------------------------------------------------------------------
// dkms.conf

#[test]
fn dkms_conf_missing() {
    let t = world_with("foo-1.0", &dkms_conf("foo", "1.0"));
    fs::remove_file(t.path("usr/src/foo-1.0/dkms.conf")).unwrap();
    // A target pacman matched but did not extract (NoExtract): nothing to build from, which
    // `-v` says, naming the file (and not talking of removal in an install).
    let line = refused(&t, &["-v", "install"], b"usr/src/foo-1.0/dkms.conf\n", 0, &["foo-1.0"]);
    assert!(line.contains("dkms.conf") && !line.contains("remove"), "{line}");
}

#[test]
fn module_directory_without_dkms_conf_is_not_a_module() {
    // A package ships usr/src/bare-1.0/ with sources but no dkms.conf: not a DKMS module. A new
    // kernel gets the real modules and not a word about it.
    let t = TestRoot::with_two_kernels();
    t.module_pkg("hello-dkms", "hello-1.0", &dkms_conf("hello", "1.0"));
    t.dkms_installed("hello", "1.0", K1);
    t.package("bare-src", "1.0-1", &[("usr/src/bare-1.0/", ""), ("usr/src/bare-1.0/Makefile", "obj-m += bare.o\n")]);
    let before = t.snapshot();
    let run = t.run(&["install"], format!("usr/lib/modules/{K2}/build/include/\n"));
    run.assert_code(0);
    assert_eq!(run.installs(), vec![job("hello", "1.0", K2)], "{run}");
    assert!(!run.output().contains("bare"), "{run}");
    assert_changed_only(
        &before,
        &t.snapshot(),
        &["var/lib/dkms/hello", &format!("usr/lib/modules/{K2}/updates")],
        &run,
    );
}

#[test]
fn dkms_conf_unreadable() {
    if !skip::can_run("root-only set-up (running as nobody, mounts)", skip::root_missing()) {
        return;
    }
    // Read as an unprivileged user (root can read any file): `--dry-run` on a root the user may
    // read, a dkms.conf with mode 000.
    let t = world_with("foo-1.0", &dkms_conf("foo", "1.0"));
    open_to_others(&t);
    fs::set_permissions(t.path("usr/src/foo-1.0/dkms.conf"), fs::Permissions::from_mode(0o000)).unwrap();
    let before = t.snapshot();
    let run = run_as_nobody(&t, &["--dry-run", "install"], b"usr/src/foo-1.0/dkms.conf\n");
    run.assert_code(1);
    let line = one_line(&run.output(), &["foo-1.0/dkms.conf", "Permission denied"], &run);
    assert_error_line(&line, &[]);
    assert_same(&before, &t.snapshot(), &run);
}

#[test]
fn dkms_conf_empty() {
    let t = world_with("foo-1.0", "");
    let line =
        refused(&t, &["install"], b"usr/src/foo-1.0/dkms.conf\n", 1, &["foo-1.0/dkms.conf", "PACKAGE_NAME is empty"]);
    assert_error_line(&line, &["fix"]);
}

#[test]
fn dkms_conf_syntax_error() {
    let t = world_with("foo-1.0", "PACKAGE_NAME=foo\nPACKAGE_VERSION=1.0\nfi\nMAKE[0]=make\n");
    let line = refused(&t, &["install"], b"usr/src/foo-1.0/dkms.conf\n", 1, &["foo-1.0/dkms.conf", "syntax error"]);
    assert_error_line(&line, &["line 3", "fix"]);
}

#[test]
fn dkms_conf_syntax_error_before_the_values() {
    let t = world_with("foo-1.0", "if then fi\nPACKAGE_NAME=foo\nPACKAGE_VERSION=1.0\n");
    let line = refused(&t, &["install"], b"usr/src/foo-1.0/dkms.conf\n", 1, &["foo-1.0/dkms.conf", "syntax error"]);
    assert_error_line(&line, &["line 1", "fix"]);
}

#[test]
fn dkms_conf_exits_early() {
    let t = world_with("foo-1.0", "exit 3\nPACKAGE_NAME=foo\nPACKAGE_VERSION=1.0\n");
    let line = refused(&t, &["install"], b"usr/src/foo-1.0/dkms.conf\n", 1, &["foo-1.0/dkms.conf", "exit"]);
    assert_error_line(&line, &["fix"]);
}

#[test]
fn dkms_conf_loops_forever() {
    let t = world_with("foo-1.0", "PACKAGE_NAME=foo\nPACKAGE_VERSION=1.0\nwhile :; do :; done\n");
    let started = Instant::now();
    let line = refused(&t, &["install"], b"usr/src/foo-1.0/dkms.conf\n", 1, &["foo-1.0/dkms.conf", "longer than"]);
    assert_error_line(&line, &["fix"]);
    assert!(started.elapsed() < Duration::from_secs(25), "took {:?}", started.elapsed());
}

#[test]
fn dkms_conf_prints_to_stdout_and_stderr() {
    // Output of dkms.conf is dropped: it can neither fake values nor break the report.
    let conf = "echo PACKAGE_NAME=evil; printf 'PACKAGE_NAME=evil\\0PACKAGE_VERSION=6.6.6\\0'\n\
                echo 'warning from dkms.conf' >&2\nPACKAGE_NAME=foo\nPACKAGE_VERSION=1.0\n";
    let t = world_with("foo-1.0", conf);
    let before = t.snapshot();
    let run = t.run(&["install"], "usr/src/foo-1.0/dkms.conf\n");
    run.assert_code(0);
    assert_eq!(sorted(run.installs()), vec![job("foo", "1.0", K1), job("foo", "1.0", K2)], "{run}");
    assert!(!run.output().contains("evil") && !run.output().contains("warning from"), "{run}");
    assert_changed_only(&before, &t.snapshot(), &["var/lib/dkms/foo", "usr/lib/modules/"], &run);
}

#[test]
fn dkms_conf_name_does_not_match_its_directory() {
    let t = world_with("foo-1.0", &conf_raw("bar", "1.0"));
    let line = refused(&t, &["install"], b"usr/src/foo-1.0/dkms.conf\n", 1, &["foo-1.0/dkms.conf", "bar/1.0"]);
    assert_error_line(&line, &["bar-1.0", "fix"]);
}

#[test]
fn dkms_conf_version_does_not_match_its_directory() {
    let t = world_with("foo-1.0", &conf_raw("foo", "2.0"));
    let line = refused(&t, &["install"], b"usr/src/foo-1.0/dkms.conf\n", 1, &["foo-1.0/dkms.conf", "foo/2.0"]);
    assert_error_line(&line, &["foo-2.0", "fix"]);
}

#[test]
fn dkms_conf_empty_name() {
    let t = world_with("foo-1.0", &conf_raw("\"\"", "1.0"));
    let line =
        refused(&t, &["install"], b"usr/src/foo-1.0/dkms.conf\n", 1, &["foo-1.0/dkms.conf", "PACKAGE_NAME is empty"]);
    assert_error_line(&line, &["fix"]);
}

#[test]
fn dkms_conf_empty_version() {
    let t = world_with("foo-1.0", &conf_raw("foo", ""));
    let line = refused(
        &t,
        &["install"],
        b"usr/src/foo-1.0/dkms.conf\n",
        1,
        &["foo-1.0/dkms.conf", "PACKAGE_VERSION is empty"],
    );
    assert_error_line(&line, &["fix"]);
}

#[test]
fn dkms_conf_name_is_a_path() {
    let t = world_with("foo-1.0", &conf_raw("../../etc", "1.0"));
    let line = refused(
        &t,
        &["install"],
        b"usr/src/foo-1.0/dkms.conf\n",
        1,
        &["foo-1.0/dkms.conf", "\"../../etc\"", "not a valid name"],
    );
    assert_error_line(&line, &["fix"]);
}

#[test]
fn dkms_conf_version_is_a_path() {
    let t = world_with("foo-1.0", &conf_raw("foo", "/etc/passwd"));
    let line = refused(
        &t,
        &["install"],
        b"usr/src/foo-1.0/dkms.conf\n",
        1,
        &["foo-1.0/dkms.conf", "PACKAGE_VERSION", "not a valid name"],
    );
    assert_error_line(&line, &["fix"]);
}

#[test]
fn dkms_conf_name_is_an_option() {
    let t = world_with("foo-1.0", &conf_raw("--all", "1.0"));
    let line = refused(
        &t,
        &["install"],
        b"usr/src/foo-1.0/dkms.conf\n",
        1,
        &["foo-1.0/dkms.conf", "\"--all\"", "not a valid name"],
    );
    assert_error_line(&line, &["fix"]);
}

#[test]
fn dkms_conf_name_with_spaces() {
    let t = world_with("foo-1.0", &conf_raw("'foo bar'", "1.0"));
    let line = refused(
        &t,
        &["install"],
        b"usr/src/foo-1.0/dkms.conf\n",
        1,
        &["foo-1.0/dkms.conf", "\"foo bar\"", "not a valid name"],
    );
    assert_error_line(&line, &["fix"]);
}

#[test]
fn dkms_conf_build_depends_is_a_path() {
    let conf = format!("{}BUILD_DEPENDS=(hello ../../x)\n", conf_raw("foo", "1.0"));
    let t = world_with("foo-1.0", &conf);
    let line = refused(
        &t,
        &["install"],
        b"usr/src/foo-1.0/dkms.conf\n",
        1,
        &["foo-1.0/dkms.conf", "BUILD_DEPENDS", "not a valid name"],
    );
    assert_error_line(&line, &["fix"]);
}

#[test]
fn bad_dkms_conf_does_not_stop_the_other_modules() {
    // A new kernel: hello builds, the broken foo is one error.
    let t = TestRoot::with_two_kernels();
    t.module_pkg("hello-dkms", "hello-1.0", &dkms_conf("hello", "1.0"));
    t.module_pkg("foo-dkms", "foo-1.0", "PACKAGE_NAME=foo\n");
    let before = t.snapshot();
    let run = t.run(&["install"], format!("usr/lib/modules/{K1}/modules.order\n"));
    run.assert_code(1);
    assert_eq!(run.installs(), vec![job("hello", "1.0", K1)], "{run}");
    let line = one_line(&run.output(), &["foo-1.0/dkms.conf", "PACKAGE_VERSION is empty"], &run);
    assert_error_line(&line, &["fix"]);
    assert_changed_only(
        &before,
        &t.snapshot(),
        &["var/lib/dkms/hello", &format!("usr/lib/modules/{K1}/updates")],
        &run,
    );
}

#[test]
fn two_packages_ship_the_same_module_in_different_versions() {
    // foo-dkms and foo-git-dkms both install module foo; a new kernel must not get both
    // (the second install would replace the first, or fail, depending on dkms).
    let t = world();
    t.module_pkg("foo-dkms", "foo-1.0", &dkms_conf("foo", "1.0"));
    t.module_pkg("foo-git-dkms", "foo-2.0.r5", &dkms_conf("foo", "2.0.r5"));
    t.kernel("linux-zen", "6.7.0-zen1-1").headers("linux-zen-headers", "6.7.0-zen1-1");
    let before = t.snapshot();
    let run = t.run(&["install"], "usr/lib/modules/6.7.0-zen1-1/modules.order\n");
    run.assert_code(1);
    assert!(
        !run.installs().iter().any(|(m, _, _)| m == "foo"),
        "neither version of foo may be installed while two packages ship it\n{run}"
    );
    let line = one_line(&run.output(), &["foo-dkms", "foo-git-dkms"], &run);
    assert_error_line(&line, &["foo/1.0", "foo/2.0.r5"]);
    assert_changed_only(&before, &t.snapshot(), &["var/lib/dkms/hello", "usr/lib/modules/6.7.0-zen1-1/updates"], &run);
}

// ---------------------------------------------------------------------------------------------
// kernels

#[test]
fn headers_without_a_kernel_package() {
    let t = world();
    t.headers("linux-zen-headers", "6.7.0-zen1-1");
    let line = refused(&t, &["-v", "install"], b"usr/lib/modules/6.7.0-zen1-1/build/include/\n", 0, &["6.7.0-zen1-1"]);
    assert!(line.contains("not an installed kernel"), "{line}");
}

#[test]
fn kernel_package_without_headers() {
    let t = world();
    t.kernel("linux-zen", "6.7.0-zen1-1");
    let line = refused(&t, &["install"], b"usr/lib/modules/6.7.0-zen1-1/modules.order\n", 0, &["6.7.0-zen1-1"]);
    assert!(
        line.starts_with("warning:") && line.contains("no headers") && line.contains("install linux-zen-headers"),
        "{line}"
    );
}

#[test]
fn kernel_version_that_is_a_symlink() {
    // usr/lib/modules/6.1-link -> 6.1.0-47-amd64: not a kernel of its own, never built for.
    let t = TestRoot::with_two_kernels();
    t.module_pkg("hello-dkms", "hello-1.0", &dkms_conf("hello", "1.0"));
    std::os::unix::fs::symlink(K1, t.path("usr/lib/modules/6.1-link")).unwrap();
    let before = t.snapshot();
    let run = t.run(&["-v", "install"], "usr/src/hello-1.0/dkms.conf\nusr/lib/modules/6.1-link/modules.order\n");
    run.assert_code(0);
    assert_eq!(sorted(run.installs()), vec![job("hello", "1.0", K1), job("hello", "1.0", K2)], "{run}");
    let line = one_line(&run.output(), &["6.1-link"], &run);
    assert!(line.contains("not an installed kernel"), "{line}");
    assert_changed_only(&before, &t.snapshot(), &["var/lib/dkms/hello", "usr/lib/modules/"], &run);
    assert_eq!(fs::read_link(t.path("usr/lib/modules/6.1-link")).unwrap(), std::path::Path::new(K1));
}

// ---------------------------------------------------------------------------------------------
// the tools

#[test]
fn dkms_missing() {
    let t = world_with("foo-1.0", &dkms_conf("foo", "1.0"));
    let missing = t.scratch().join("no-such-dkms");
    let before = t.snapshot();
    let run = run_tools(&t, &missing, &t.fake_depmod(), &["install"], b"usr/src/foo-1.0/dkms.conf\n", &[]);
    run.assert_code(2);
    let line = one_line(&run.output(), &["no-such-dkms", "does not exist"], &run);
    assert_error_line(&line, &["install the dkms package"]);
    assert_same(&before, &t.snapshot(), &run);
}

#[test]
fn dkms_not_executable() {
    let t = world_with("foo-1.0", &dkms_conf("foo", "1.0"));
    let dkms = t.scratch().join("dkms-noexec");
    fs::write(&dkms, "#!/bin/sh\nexit 0\n").unwrap();
    fs::set_permissions(&dkms, fs::Permissions::from_mode(0o644)).unwrap();
    let before = t.snapshot();
    let run = run_tools(&t, &dkms, &t.fake_depmod(), &["install"], b"usr/src/foo-1.0/dkms.conf\n", &[]);
    run.assert_code(2);
    let line = one_line(&run.output(), &["dkms-noexec", "not an executable"], &run);
    assert_error_line(&line, &["--dkms"]);
    assert_same(&before, &t.snapshot(), &run);
}

#[test]
fn dkms_hangs() {
    // A dkms that never returns is stopped after `job_timeout` seconds and is a failed job.
    let t = world_with("foo-1.0", &dkms_conf("foo", "1.0"));
    let dkms = script(&t, "hanging-dkms", "#!/bin/sh\nexec sleep 3600\n");
    fs::write(t.path("etc/dkms-hook.toml"), "job_timeout = 2\n").unwrap();
    let before = t.snapshot();
    let started = Instant::now();
    let run = run_tools(&t, &dkms, &t.fake_depmod(), &["install"], b"usr/src/foo-1.0/dkms.conf\n", &[]);
    let took = started.elapsed();
    run.assert_code(1);
    assert!(took < Duration::from_secs(20), "the job timeout did not stop dkms: {took:?}\n{run}");
    assert!(run.count_lines("job timeout") >= 1, "{run}");
    one_line(&run.output(), &["foo/1.0", K1, "job timeout"], &run);
    assert_changed_only(&before, &t.snapshot(), &OWN_FILES, &run);
    assert_no_process_left(&dkms);
}

#[test]
fn depmod_fails() {
    let t = world_with("foo-1.0", &dkms_conf("foo", "1.0"));
    let before = t.snapshot();
    let run = t.run_env(&["install"], "usr/src/foo-1.0/dkms.conf\n", &[("FAKE_DEPMOD_FAIL", K2)]);
    run.assert_code(1);
    assert_eq!(sorted(run.installs()), vec![job("foo", "1.0", K1), job("foo", "1.0", K2)], "{run}");
    let line = one_line(&run.output(), &["depmod", K2, "failed"], &run);
    assert_error_line(&line, &[&format!("depmod {K2}")]);
    assert_changed_only(&before, &t.snapshot(), &["var/lib/dkms/foo", "usr/lib/modules/"], &run);
}

#[test]
fn depmod_missing() {
    let t = world_with("foo-1.0", &dkms_conf("foo", "1.0"));
    let missing = t.scratch().join("no-such-depmod");
    let before = t.snapshot();
    let run = run_tools(&t, &t.fake_dkms(), &missing, &["install"], b"usr/src/foo-1.0/dkms.conf\n", &[]);
    run.assert_code(2);
    let line = one_line(&run.output(), &["no-such-depmod", "does not exist"], &run);
    assert_error_line(&line, &["kmod"]);
    assert!(run.calls.is_empty(), "{run}");
    assert_same(&before, &t.snapshot(), &run);
}

// ---------------------------------------------------------------------------------------------
// the user and the root

#[test]
fn not_root() {
    if !skip::can_run("root-only set-up (running as nobody, mounts)", skip::root_missing()) {
        return;
    }
    // `nobody` acting on the real system: refused before anything runs. The tools are scripts
    // that would leave a mark if run.
    let marks = tempfile::Builder::new().prefix("dkms-hook-not-root.").tempdir().unwrap();
    fs::set_permissions(marks.path(), fs::Permissions::from_mode(0o1777)).unwrap();
    let tool = marks.path().join("tool");
    fs::write(&tool, format!("#!/bin/sh\ntouch {}/ran\n", marks.path().display())).unwrap();
    fs::set_permissions(&tool, fs::Permissions::from_mode(0o755)).unwrap();
    let tool = tool.to_str().unwrap();
    for args in [
        &["--dkms", tool, "--depmod", tool, "install"][..],
        &["--dkms", tool, "--depmod", tool, "remove"][..],
        &["--dkms", tool, "--depmod", tool, "remove", "--no-depmod"][..],
    ] {
        let run = run_bin_as_nobody(
            args,
            b"usr/src/hello-1.0/dkms.conf\nusr/lib/modules/6.1.0-47-amd64/modules.order\n",
            &[],
        );
        assert_eq!(run.code, Some(2), "{run}");
        let line = one_line(&run.output(), &["root"], &run);
        assert_error_line(&line, &["run it as root"]);
        assert!(!marks.path().join("ran").exists(), "a tool ran as nobody\n{run}");
    }
}

#[test]
fn pacman_database_missing() {
    let t = world_with("foo-1.0", &dkms_conf("foo", "1.0"));
    fs::remove_file(t.path("var/lib/pacman/local/ALPM_DB_VERSION")).unwrap();
    let line = refused(&t, &["install"], b"usr/src/foo-1.0/dkms.conf\n", 2, &["ALPM_DB_VERSION"]);
    assert_error_line(&line, &["no pacman database", "var/lib/pacman", "--dbpath"]);
}

#[test]
fn pacman_database_unreadable() {
    if !skip::can_run("root-only set-up (running as nobody, mounts)", skip::root_missing()) {
        return;
    }
    let t = world_with("foo-1.0", &dkms_conf("foo", "1.0"));
    open_to_others(&t);
    fs::set_permissions(t.path("var/lib/pacman/local"), fs::Permissions::from_mode(0o700)).unwrap();
    let before = t.snapshot();
    let run = run_as_nobody(&t, &["--dry-run", "install"], b"usr/src/foo-1.0/dkms.conf\n");
    run.assert_code(2);
    let line = one_line(&run.output(), &["var/lib/pacman"], &run);
    assert_error_line(&line, &[]);
    assert!(line.contains("ermission denied") || line.contains("cannot read"), "{line}");
    assert_same(&before, &t.snapshot(), &run);
}

#[test]
fn pacman_database_with_a_broken_desc() {
    // The kernel package's `desc` is garbage. dkms-hook needs only the entry's name and file
    // list, as libalpm does for `pacman -Qo`: the kernel is still a kernel.
    let t = world_with("foo-1.0", &dkms_conf("foo", "1.0"));
    fs::write(t.path("var/lib/pacman/local/linux-1.0-1/desc"), "%NAME%\n\n%VERSION\ngarbage\x00\n").unwrap();
    let before = t.snapshot();
    let run = t.run(&["install"], "usr/src/foo-1.0/dkms.conf\n");
    run.assert_code(0);
    assert_eq!(sorted(run.installs()), vec![job("foo", "1.0", K1), job("foo", "1.0", K2)], "{run}");
    assert_changed_only(&before, &t.snapshot(), &["var/lib/dkms/foo", "usr/lib/modules/"], &run);
}

#[test]
fn pacman_database_entry_without_a_file_list() {
    // linux-1.0-1/files is gone: libalpm cannot tell what the kernel package owns. Its kernel
    // is not built for, and the damage is named once, with the way to check the database.
    let t = world_with("foo-1.0", &dkms_conf("foo", "1.0"));
    fs::remove_file(t.path("var/lib/pacman/local/linux-1.0-1/files")).unwrap();
    let before = t.snapshot();
    let run = t.run(&["install"], "usr/src/foo-1.0/dkms.conf\n");
    run.assert_code(0);
    assert_eq!(run.installs(), vec![job("foo", "1.0", K2)], "{run}");
    let line = one_line(&run.output(), &["linux-1.0-1/files"], &run);
    assert!(line.to_lowercase().contains("warn") && line.contains("damaged") && line.contains("pacman -Dk"), "{line}");
    assert_changed_only(&before, &t.snapshot(), &["var/lib/dkms/foo", &format!("usr/lib/modules/{K2}/")], &run);
}

#[test]
fn pacman_database_of_an_unknown_version() {
    let t = world_with("foo-1.0", &dkms_conf("foo", "1.0"));
    fs::write(t.path("var/lib/pacman/local/ALPM_DB_VERSION"), "7\n").unwrap();
    let line = refused(&t, &["install"], b"usr/src/foo-1.0/dkms.conf\n", 2, &["var/lib/pacman"]);
    assert_error_line(&line, &[]);
}

#[test]
fn root_that_does_not_exist() {
    let t = world();
    let nowhere = t.scratch().join("nowhere");
    let run = t.run_raw(&["--root", nowhere.to_str().unwrap(), "install"], "usr/src/hello-1.0/dkms.conf\n", &[]);
    run.assert_code(2);
    let line = one_line(&run.output(), &["nowhere", "does not exist"], &run);
    assert_error_line(&line, &["--root"]);
    assert!(!nowhere.exists());
}

#[test]
fn root_that_is_a_file() {
    let t = world();
    let file = t.scratch().join("a-file");
    fs::write(&file, "x").unwrap();
    let run = t.run_raw(&["--root", file.to_str().unwrap(), "install"], "usr/src/hello-1.0/dkms.conf\n", &[]);
    run.assert_code(2);
    let line = one_line(&run.output(), &["a-file"], &run);
    assert_error_line(&line, &["--root"]);
    assert_eq!(fs::read(&file).unwrap(), b"x");
}

#[test]
fn root_that_is_empty() {
    let t = world();
    let empty = t.scratch().join("empty");
    fs::create_dir(&empty).unwrap();
    let run = t.run_raw(&["--root", empty.to_str().unwrap(), "install"], "usr/src/hello-1.0/dkms.conf\n", &[]);
    run.assert_code(2);
    let line = one_line(&run.output(), &["no pacman database"], &run);
    assert_error_line(&line, &["--root"]);
    assert_eq!(fs::read_dir(&empty).unwrap().count(), 0, "nothing may be created in an empty root");
}

#[test]
fn dbpath_that_does_not_exist() {
    let t = world_with("foo-1.0", &dkms_conf("foo", "1.0"));
    let db = t.scratch().join("no-db");
    let line =
        refused(&t, &["--dbpath", db.to_str().unwrap(), "install"], b"usr/src/foo-1.0/dkms.conf\n", 2, &["no-db"]);
    assert_error_line(&line, &["--dbpath"]);
}

// ---------------------------------------------------------------------------------------------
// the config file

#[test]
fn config_unknown_key() {
    let t = world_with("foo-1.0", &dkms_conf("foo", "1.0"));
    fs::write(t.path("etc/dkms-hook.toml"), "# tuned\njbos = 4\n").unwrap();
    let line = refused(&t, &["install"], b"usr/src/foo-1.0/dkms.conf\n", 2, &["dkms-hook.toml"]);
    assert_error_line(&line, &["jbos", "line 2"]);
}

#[test]
fn config_wrong_type() {
    let t = world_with("foo-1.0", &dkms_conf("foo", "1.0"));
    fs::write(t.path("etc/dkms-hook.toml"), "dkms = 3\n").unwrap();
    let line = refused(&t, &["install"], b"usr/src/foo-1.0/dkms.conf\n", 2, &["dkms-hook.toml"]);
    assert_error_line(&line, &["dkms", "line 1"]);
}

#[test]
fn config_not_toml() {
    let t = world_with("foo-1.0", &dkms_conf("foo", "1.0"));
    fs::write(t.path("etc/dkms-hook.toml"), "jobs = [ this is not toml\n").unwrap();
    let line = refused(&t, &["install"], b"usr/src/foo-1.0/dkms.conf\n", 2, &["dkms-hook.toml"]);
    assert_error_line(&line, &["line 1"]);
}

#[test]
fn config_not_utf8() {
    let t = world_with("foo-1.0", &dkms_conf("foo", "1.0"));
    fs::write(t.path("etc/dkms-hook.toml"), b"jobs = 2\n# \xff\xfe\n").unwrap();
    let line = refused(&t, &["install"], b"usr/src/foo-1.0/dkms.conf\n", 2, &["dkms-hook.toml"]);
    assert_error_line(&line, &[]);
}

#[test]
fn config_that_is_a_directory() {
    let t = world_with("foo-1.0", &dkms_conf("foo", "1.0"));
    fs::create_dir(t.path("etc/dkms-hook.toml")).unwrap();
    let line = refused(&t, &["install"], b"usr/src/foo-1.0/dkms.conf\n", 2, &["dkms-hook.toml"]);
    assert_error_line(&line, &[]);
}

#[test]
fn config_given_but_missing() {
    // A default config path may be absent; one named with --config must exist.
    let t = world_with("foo-1.0", &dkms_conf("foo", "1.0"));
    let missing = t.scratch().join("typo.toml");
    let line = refused(
        &t,
        &["--config", missing.to_str().unwrap(), "install"],
        b"usr/src/foo-1.0/dkms.conf\n",
        2,
        &["typo.toml"],
    );
    assert_error_line(&line, &[]);
}

#[test]
fn config_values_out_of_range() {
    // Configuration keys with values of the right type but no meaning.
    for (text, key) in [
        ("jobs = -1\n", "jobs"),
        ("job_timeout = \"forever\"\n", "job_timeout"),
        ("exclude_kernels = \"6.1*\"\n", "exclude_kernels"),
        ("exclude_modules = [\"[unclosed\"]\n", "exclude_modules"),
        ("keep_logs = -5\n", "keep_logs"),
        ("log_dir = \"relative/logs\"\n", "log_dir"),
    ] {
        let t = world_with("foo-1.0", &dkms_conf("foo", "1.0"));
        fs::write(t.path("etc/dkms-hook.toml"), text).unwrap();
        let line = refused(&t, &["install"], b"usr/src/foo-1.0/dkms.conf\n", 2, &["dkms-hook.toml"]);
        assert_error_line(&line, &[key]);
    }
}

// ---------------------------------------------------------------------------------------------
// the dkms tree's file system

#[test]
fn dkms_tree_read_only() {
    if !skip::can_run("root-only set-up (running as nobody, mounts)", skip::root_missing()) {
        return;
    }
    let t = world_with("foo-1.0", &dkms_conf("foo", "1.0"));
    let _mount = Mount::read_only_bind(&t.path("var/lib/dkms"));
    let before = t.snapshot();
    let run = t.run(&["install"], "usr/src/foo-1.0/dkms.conf\n");
    assert_ne!(run.code, Some(0), "{run}");
    let line = one_line(&run.output().to_lowercase(), &["read-only", "var/lib/dkms"], &run);
    assert!(line.starts_with("error:"), "{line}");
    assert!(!t.ko_installed("foo", K1) && !t.ko_installed("foo", K2), "{run}");
    assert_changed_only(&before, &t.snapshot(), &OWN_FILES, &run);
}

#[test]
fn dkms_tree_full() {
    if !skip::can_run("root-only set-up (running as nobody, mounts)", skip::root_missing()) {
        return;
    }
    let t = world_with("foo-1.0", &dkms_conf("foo", "1.0"));
    let mount = Mount::tmpfs(&t.path("var/lib/dkms"), "64k");
    // Fill it: what fits of the old tree's contents is gone from view, so start empty and full.
    let filler = t.path("var/lib/dkms/filler");
    let _ = fs::write(&filler, vec![0u8; 64 * 1024]);
    let before = t.snapshot();
    let run = t.run(&["install"], "usr/src/foo-1.0/dkms.conf\n");
    assert_ne!(run.code, Some(0), "a build into a full dkms tree cannot succeed\n{run}");
    let out = run.output();
    assert!(out.contains("No space left on device") || out.to_lowercase().contains("no space"), "{run}");
    assert!(!t.ko_installed("foo", K1) || !t.ko_installed("foo", K2), "{run}");
    let _ = before;
    drop(mount);
}

// ---------------------------------------------------------------------------------------------
// usage

#[test]
fn unknown_subcommand() {
    let t = world();
    let run = t.run(&["frobnicate"], "");
    run.assert_code(2);
    assert!(run.calls.is_empty(), "{run}");
    one_line(&run.output(), &["frobnicate"], &run);
}

#[test]
fn sync_with_a_broken_dkms_conf() {
    // `sync` reports a broken source like install does, and repairs the rest.
    let t = TestRoot::with_two_kernels();
    t.module_pkg("hello-dkms", "hello-1.0", &dkms_conf("hello", "1.0"));
    t.module_pkg("foo-dkms", "foo-1.0", &conf_raw("foo", "\"\""));
    let run = t.run(&["sync"], "");
    run.assert_code(1);
    assert_eq!(sorted(run.installs()), vec![job("hello", "1.0", K1), job("hello", "1.0", K2)], "{run}");
    let line = one_line(&run.output(), &["foo-1.0/dkms.conf", "PACKAGE_VERSION is empty"], &run);
    assert_error_line(&line, &["fix"]);
}
