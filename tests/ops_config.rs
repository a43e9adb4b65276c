//! `/etc/dkms-hook.toml`: a bad file stops every command with exit 2 and a message naming the
//! file, the line and the key, before anything runs; good keys take effect.

mod common;
mod ops;

use common::*;
use ops::*;

fn world() -> TestRoot {
    let t = TestRoot::with_two_kernels();
    t.module_pkg("hello-dkms", "hello-1.0", &dkms_conf("hello", "1.0"));
    t
}

/// Runs every command on `t` and asserts each refuses with exit 2, one error line holding
/// `needles`, and nothing run.
#[track_caller]
fn refused_everywhere(t: &TestRoot, needles: &[&str]) {
    let file = t.path("etc/dkms-hook.toml").display().to_string();
    for args in [&["install"][..], &["remove"], &["sync"], &["status"], &["status", "--json"], &["sync", "--dry-run"]] {
        let run = t.run(args, "usr/src/hello-1.0/dkms.conf\n");
        run.assert_code(2);
        assert!(run.calls.is_empty(), "nothing may run\n{run}");
        let line = run.expect_line(&["error: invalid configuration", &file]);
        for n in needles {
            assert!(line.contains(n), "{line:?} should say {n:?}\n{run}");
        }
        assert!(run.stdout.is_empty(), "no report before the error\n{run}");
    }
}

#[test]
fn an_unknown_key_names_file_line_and_key() {
    let t = world();
    config(&t, "jobs = 2\n\n# a comment\nlog-dir = \"/var/log/x\"\n");
    refused_everywhere(&t, &["line 4", "key `log-dir`", "unknown key `log-dir`", "expected one of", "`log_dir`"]);
}

#[test]
fn a_wrong_type_names_file_line_and_key() {
    let t = world();
    config(&t, "jobs = 2\nkeep_logs = \"lots\"\n");
    refused_everywhere(&t, &["line 2", "key `keep_logs`", "invalid type: string \"lots\""]);
    config(&t, "exclude_kernels = \"*-rt-*\"\n");
    refused_everywhere(&t, &["line 1", "key `exclude_kernels`", "invalid type", "expected a sequence"]);
    config(&t, "job_timeout = -5\n");
    refused_everywhere(&t, &["line 1", "key `job_timeout`", "invalid value"]);
}

#[test]
fn a_bad_pattern_or_path_names_its_key() {
    let t = world();
    config(&t, "jobs = 1\nexclude_modules = [\"ok\", \"[broken\"]\n");
    refused_everywhere(&t, &["line 2", "key `exclude_modules`", "invalid glob pattern \"[broken\""]);
    config(&t, "log_dir = \"var/log\"\n");
    refused_everywhere(&t, &["line 1", "key `log_dir`", "not an absolute path"]);
}

#[test]
fn a_syntax_error_names_the_line() {
    let t = world();
    config(&t, "jobs = 2\nkeep_logs = = 3\n");
    refused_everywhere(&t, &["line 2"]);
}

#[test]
fn a_missing_file_means_defaults_and_every_key_is_accepted() {
    let t = world();
    t.run(&["status"], "").assert_code(1);
    let logs = t.scratch().join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    config(
        &t,
        &format!(
            "jobs = 1\ndkms = \"{}\"\ndepmod = \"{}\"\nexclude_kernels = []\nexclude_modules = []\n\
             log_dir = \"/var/log/custom\"\nkeep_logs = 10\njob_timeout = 600\nlock_timeout = 5\n",
            t.fake_dkms().display(),
            t.fake_depmod().display()
        ),
    );
    // dkms and depmod come from the file when the command line does not name them.
    let run = t.run_raw(&["--root", t.root().to_str().unwrap(), "sync"], "", &[]);
    run.assert_code(0);
    assert_eq!(sorted(run.installs()), [job("hello", "1.0", K1), job("hello", "1.0", K2)], "{run}");
    assert_eq!(run.depmod().len(), 2, "{run}");
    assert_eq!(
        logs_in(&t.path("var/log/custom")),
        [format!("hello_1.0_{K1}.install.log"), format!("hello_1.0_{K2}.install.log")]
    );
}

#[test]
fn the_command_line_wins_over_the_file() {
    let t = world();
    config(&t, "dkms = \"/nonexistent/dkms\"\njobs = 1\n");
    // --dkms (added by the test environment) over `dkms`, -j over `jobs`.
    let run = t.run(&["-j", "2", "sync"], "");
    run.assert_code(0);
    assert_eq!(run.installs().len(), 2, "{run}");
}
