//! The command line as pacman and people drive it: garbage on stdin, `--dry-run`, where global
//! options may go, `--dbpath`, `-v`, and exit status 2 with one `error:` line for usage, config and
//! environment errors.

mod common;

use common::*;

fn hello(t: &TestRoot) {
    t.module_pkg("hello-dkms", "hello-1.0", &dkms_conf("hello", "1.0"));
}

/// Asserts exit status 2, no fake was run, and exactly one `error: ` line.
#[track_caller]
fn assert_fatal(run: &Run) {
    run.assert_code(2);
    assert!(run.calls.is_empty(), "nothing may run after a fatal error\n{run}");
    let errors = run.output().lines().filter(|l| l.starts_with("error:")).count();
    assert_eq!(errors, 1, "one `error: …` message\n{run}");
    assert!(!run.stderr.contains("panicked"), "{run}");
}

#[test]
fn garbage_on_stdin_is_ignored() {
    let t = TestRoot::with_two_kernels();
    hello(&t);
    t.dkms_installed("hello", "1.0", K1).dkms_installed("hello", "1.0", K2);
    let mut garbage: Vec<u8> = Vec::new();
    for line in [
        "",
        "   ",
        "\t",
        "hello",
        "dkms.conf",
        "usr/src/dkms.conf",
        "usr/src//dkms.conf",
        "usr/src/hello-1.0/",
        "usr/src/hello-1.0/Makefile",
        "usr/src/hello-1.0/dkms.conf.orig",
        "usr/src/../dkms.conf",
        "usr/src/../../etc/dkms.conf",
        "usr/src/hello-1.0/../../../etc/dkms.conf",
        "usr/src/../src/hello-1.0/dkms.conf",
        "usr/lib/modules/",
        "usr/lib/modules//modules.order",
        "usr/lib/modules/../../../etc/modules.order",
        "usr/lib/modules/../modules/6.1.0-47-amd64/modules.order",
        "usr/lib/modules/6.1.0-47-amd64/../../../../etc/passwd",
        "usr/lib/modules/6.6.30-1-lts/build/include/../../../../../../etc/",
        "var/lib/pacman/local/ALPM_DB_VERSION",
        "etc/passwd",
    ] {
        garbage.extend_from_slice(line.as_bytes());
        garbage.push(b'\n');
    }
    garbage.extend_from_slice(b"usr/src/hello-1.0\xff/dkms.conf\n");
    garbage.extend_from_slice(b"usr/src/\xc3\x28/dkms.conf\n");
    garbage.extend_from_slice(b"usr/lib/modules/\xff\xfe/modules.order\n");
    garbage.extend_from_slice(b"usr/src/hello-1.0\0/dkms.conf\n");
    garbage.extend_from_slice(b"\xff\xff\xff\xff\n");
    garbage.extend_from_slice(format!("usr/src/{}/dkms.conf\n", "x".repeat(20_000)).as_bytes());
    garbage.extend_from_slice(b"\n\n\n");

    for args in [&["install"][..], &["remove"][..], &["remove", "--no-depmod"][..]] {
        let before = t.snapshot();
        let run = t.run(args, &garbage);
        run.assert_code(0);
        assert!(run.calls.is_empty(), "garbage must run nothing\n{run}");
        assert!(!run.stderr.contains("panicked"), "{run}");
        assert_unchanged(&t, &before, &run);
    }
}

#[test]
fn targets_naming_no_module_source_are_ignored() {
    // Well-formed paths that no package owns and that are not on disk: not module sources.
    let t = TestRoot::with_two_kernels();
    hello(&t);
    t.dkms_installed("hello", "1.0", K1);
    for args in [&["install"][..], &["remove"][..]] {
        let run = t.run(args, "usr/src/*/dkms.conf\nusr/src/nosuch-1.0/dkms.conf\n");
        run.assert_code(0);
        assert!(run.calls.is_empty(), "{run}");
    }
}

#[test]
fn empty_stdin_does_nothing() {
    let t = TestRoot::with_two_kernels();
    hello(&t);
    for args in [&["install"][..], &["remove"][..]] {
        let run = t.run(args, "");
        run.assert_code(0);
        assert!(run.calls.is_empty(), "{run}");
    }
}

#[test]
fn dry_run_install_prints_the_plan_and_runs_nothing() {
    let t = TestRoot::with_two_kernels();
    hello(&t);
    let before = t.snapshot();

    let run = t.run(&["--dry-run", "install"], "usr/src/hello-1.0/dkms.conf\n");

    run.assert_code(0);
    assert!(run.calls.is_empty(), "--dry-run must not run dkms or depmod\n{run}");
    assert_unchanged(&t, &before, &run);
    for k in [K1, K2] {
        run.expect_line(&["install hello/1.0 for", k]);
        run.expect_line(&["depmod", k]);
    }
}

#[test]
fn dry_run_remove_prints_the_plan_and_runs_nothing() {
    let t = TestRoot::with_two_kernels();
    hello(&t);
    t.dkms_installed("hello", "1.0", K1).dkms_installed("hello", "1.0", K2);
    let before = t.snapshot();

    // --dry-run after the subcommand, as a global option may be.
    let run = t.run(&["remove", "--dry-run"], "usr/src/hello-1.0/dkms.conf\n");

    run.assert_code(0);
    assert!(run.calls.is_empty(), "--dry-run must not run dkms or depmod\n{run}");
    assert_unchanged(&t, &before, &run);
    for k in [K1, K2] {
        run.expect_line(&["remove hello/1.0 from", k]);
    }
    run.expect_line(&["unregister hello/1.0"]);
}

#[test]
fn global_options_may_follow_the_subcommand() {
    let t = TestRoot::with_two_kernels();
    hello(&t);
    let root = t.root().display().to_string();
    let dkms = t.fake_dkms().display().to_string();
    let depmod = t.fake_depmod().display().to_string();

    let run = t.run_raw(
        &["install", "--root", &root, "--dkms", &dkms, "--depmod", &depmod],
        "usr/src/hello-1.0/dkms.conf\n",
        &[],
    );

    run.assert_code(0);
    assert_eq!(sorted(run.installs()), vec![job("hello", "1.0", K1), job("hello", "1.0", K2)], "{run}");
    assert_relocated(&t, &run);
}

#[test]
fn dbpath_points_at_the_pacman_database() {
    let t = TestRoot::with_two_kernels();
    hello(&t);
    let db = t.scratch().join("elsewhere-db");
    std::fs::rename(t.path("var/lib/pacman"), &db).unwrap();

    let run = t.run(&["--dbpath", db.to_str().unwrap(), "install"], "usr/src/hello-1.0/dkms.conf\n");

    run.assert_code(0);
    assert_eq!(sorted(run.installs()), vec![job("hello", "1.0", K1), job("hello", "1.0", K2)], "{run}");
}

#[test]
fn missing_pacman_database_is_an_environment_error() {
    let t = TestRoot::with_two_kernels();
    hello(&t);
    std::fs::remove_dir_all(t.path("var/lib/pacman")).unwrap();

    let run = t.run(&["install"], "usr/src/hello-1.0/dkms.conf\n");

    assert_fatal(&run);
}

#[test]
fn pacman_database_of_another_version_is_an_environment_error() {
    let t = TestRoot::with_two_kernels();
    hello(&t);
    std::fs::write(t.path("var/lib/pacman/local/ALPM_DB_VERSION"), "7\n").unwrap();

    let run = t.run(&["install"], "usr/src/hello-1.0/dkms.conf\n");

    assert_fatal(&run);
}

#[test]
fn missing_dkms_is_an_environment_error() {
    let t = TestRoot::with_two_kernels();
    hello(&t);
    let root = t.root().display().to_string();
    let missing = t.scratch().join("no-such-dkms").display().to_string();
    let depmod = t.fake_depmod().display().to_string();

    let run = t.run_raw(
        &["--root", &root, "--dkms", &missing, "--depmod", &depmod, "install"],
        "usr/src/hello-1.0/dkms.conf\n",
        &[],
    );

    assert_fatal(&run);
    assert!(!t.ko_installed("hello", K1));
}

#[test]
fn malformed_config_is_a_config_error() {
    let t = TestRoot::with_two_kernels();
    hello(&t);
    let config = t.scratch().join("bad.toml");
    std::fs::write(&config, "dkms = [ this is not toml\n").unwrap();

    let run = t.run(&["--config", config.to_str().unwrap(), "install"], "usr/src/hello-1.0/dkms.conf\n");

    assert_fatal(&run);
}

#[test]
fn usage_errors_exit_2() {
    let t = TestRoot::with_two_kernels();
    for args in [&[][..], &["frobnicate"][..], &["install", "--no-such-option"][..]] {
        let run = t.run(args, "");
        run.assert_code(2);
        assert!(run.calls.is_empty(), "{run}");
        assert!(!run.stderr.contains("panicked"), "{run}");
    }
}

#[test]
fn verbose_shows_dkms_output() {
    let t = TestRoot::with_two_kernels();
    hello(&t);

    let run = t.run(&["-v", "install"], "usr/src/hello-1.0/dkms.conf\n");

    run.assert_code(0);
    // What the fake dkms prints while "building".
    run.expect_line(&["Building module hello-1.0 for kernel", K1]);
}

#[test]
fn quiet_still_runs_the_jobs_and_reports_failures() {
    let t = TestRoot::with_two_kernels();
    hello(&t);

    let run = t.run_env(
        &["-q", "install"],
        "usr/src/hello-1.0/dkms.conf\n",
        &[("FAKE_DKMS_FAIL", &format!("hello/1.0/{K2}=10"))],
    );

    run.assert_code(1);
    assert_eq!(run.installs().len(), 2, "{run}");
    assert!(t.ko_installed("hello", K1));
    run.expect_line(&["hello/1.0", K2, "failed"]);
}
