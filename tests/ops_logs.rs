//! Job logs: every job's full dkms output in `log_dir`, one file per module/version/kernel and
//! operation, failures pointing to theirs, and pruning to `keep_logs`, oldest first.

mod common;
mod ops;

use std::fs;
use std::time::{Duration, SystemTime};

use common::*;
use ops::*;

#[test]
fn every_job_writes_its_log_and_a_failure_points_to_it() {
    let t = TestRoot::with_two_kernels();
    t.module_pkg("hello-dkms", "hello-1.0", &dkms_conf("hello", "1.0"));
    let fail = format!("hello/1.0/{K2}=10");
    let run = t.run_env(&["install"], "usr/src/hello-1.0/dkms.conf\n", &[("FAKE_DKMS_FAIL", &fail)]);
    run.assert_code(1);

    let failed = log_path(&t, &format!("hello_1.0_{K2}.install.log"));
    let ok = log_path(&t, &format!("hello_1.0_{K1}.install.log"));
    run.expect_line(&[&format!("     log: {}", failed.display())]);
    assert_eq!(run.count_lines("     log: "), 1, "only failures point to their log\n{run}");
    let text = fs::read_to_string(&failed).unwrap();
    for want in [
        &format!("dkms-hook: install hello/1.0 for {K2}")[..],
        "outcome: failed: dkms exit 10, the module build (make) failed",
        "--- dkms output ---",
        "Error! Bad return status for module build",
        // dkms's make.log, in full (the report shows only its last lines).
        "make[1]: filler line 1\n",
        "error: expected ';' before '}' token",
    ] {
        assert!(text.contains(want), "{} lacks {want:?}:\n{text}", failed.display());
    }
    let text = fs::read_to_string(&ok).unwrap();
    assert!(
        text.contains("outcome: succeeded") && text.contains(&format!("Installing hello-1.0 for kernel {K1}")),
        "{text}"
    );

    // A removal writes its own log beside the install's.
    let run = t.run(&["remove"], "usr/src/hello-1.0/dkms.conf\n");
    run.assert_code(0);
    let names = logs_in(&t.path("var/log/dkms-hook"));
    assert!(names.contains(&format!("hello_1.0_{K1}.remove.log")), "{names:?}");
    assert!(names.contains(&format!("hello_1.0_{K1}.install.log")), "{names:?}");
}

#[test]
fn logs_are_pruned_to_keep_logs_oldest_first() {
    let t = TestRoot::with_two_kernels();
    t.module_pkg("hello-dkms", "hello-1.0", &dkms_conf("hello", "1.0"));
    config(&t, "keep_logs = 3\nlog_dir = \"/var/log/custom\"\n");
    let dir = t.path("var/log/custom");
    fs::create_dir_all(&dir).unwrap();
    let now = SystemTime::now();
    for (name, age) in [("a_1_k.install.log", 300), ("b_1_k.remove.log", 200), ("c_1.unregister.log", 100)] {
        let path = dir.join(name);
        fs::write(&path, "dkms-hook: an earlier job\n").unwrap();
        fs::File::options().write(true).open(&path).unwrap().set_modified(now - Duration::from_secs(age)).unwrap();
    }
    fs::write(dir.join("README"), "not a log: never pruned").unwrap();

    t.run(&["sync"], "").assert_code(0);
    assert_eq!(
        logs_in(&dir),
        [
            "README".to_owned(),
            "c_1.unregister.log".to_owned(),
            format!("hello_1.0_{K1}.install.log"),
            format!("hello_1.0_{K2}.install.log"),
        ]
    );
}

/// `log_dir` may be shared with other programs (even `/var/log`): only dkms-hook's own logs are
/// ever pruned or overwritten, whatever the other files are called and however old they are.
#[test]
fn other_files_in_the_log_directory_survive_every_run() {
    let t = TestRoot::with_two_kernels();
    t.module_pkg("hello-dkms", "hello-1.0", &dkms_conf("hello", "1.0"));
    config(&t, "keep_logs = 1\nlog_dir = \"/var/log\"\n");
    let dir = t.path("var/log");
    fs::create_dir_all(&dir).unwrap();
    let old = SystemTime::now() - Duration::from_secs(3600);
    let foreign = [
        ("pacman.log".to_owned(), "[ALPM] transaction started\n"),
        ("Xorg.0.log".to_owned(), "X.Org X Server\n"),
        ("other.install.log".to_owned(), "another tool's install log\n"),
        // Named exactly like the log dkms-hook would write next.
        (format!("hello_1.0_{K1}.install.log"), "not dkms-hook's\n"),
    ];
    for (name, text) in &foreign {
        let path = dir.join(name);
        fs::write(&path, text).unwrap();
        fs::File::options().write(true).open(&path).unwrap().set_modified(old).unwrap();
    }
    for _ in 0..2 {
        t.run(&["remove"], "usr/src/hello-1.0/dkms.conf\n").assert_code(0);
        t.run(&["install"], "usr/src/hello-1.0/dkms.conf\n").assert_code(0);
    }
    for (name, text) in &foreign {
        assert_eq!(fs::read_to_string(dir.join(name)).unwrap(), *text, "{name} was changed or removed");
    }
}

#[test]
fn keep_logs_zero_writes_none() {
    let t = TestRoot::with_two_kernels();
    t.module_pkg("hello-dkms", "hello-1.0", &dkms_conf("hello", "1.0"));
    config(&t, "keep_logs = 0\n");
    let fail = format!("hello/1.0/{K2}=10");
    let run = t.run_env(&["sync"], "", &[("FAKE_DKMS_FAIL", &fail)]);
    run.assert_code(1);
    assert!(!t.path("var/log/dkms-hook").exists(), "{run}");
    assert!(run.line(&["     log: "]).is_none(), "{run}");
    // status still knows why the pair failed, without a log to point to.
    let status = t.run(&["status"], "");
    status.expect_line(&["hello/1.0", K2, "failed: dkms exit 10"]);
}
