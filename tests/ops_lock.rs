//! The lock (`ROOT/var/lib/dkms-hook/lock`): two runs at once serialize, the waiter says once
//! which process it waits for and gives up after `lock_timeout` with exit 2, and no dkms a run
//! started outlives its hold on the lock, even when the run itself is killed with SIGKILL.
//! Holders are deterministic: the test holds the lock itself, or waits until a run's dkms has
//! started (which it does only with the lock held).

mod common;
mod ops;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

use common::*;
use ops::*;

#[test]
fn a_second_run_waits_for_the_first_and_names_it() {
    let t = TestRoot::with_two_kernels();
    t.module_pkg("hello-dkms", "hello-1.0", &dkms_conf("hello", "1.0"));
    let slow = slow_dkms(&t, 2);

    let first = spawn(&t, &argv(&t, &slow, &["-j", "1", "sync"]), "first");
    wait_for("the first run to start building", Duration::from_secs(20), || !slow_calls(&t, "started").is_empty());
    let pid = first.pid();
    assert_eq!(fs::read_to_string(t.lock_path()).unwrap().trim(), pid.to_string());

    // The second run (a hook, with the quick fake) must wait for the first to finish.
    let second = t.run(&["install"], "usr/src/hello-1.0/dkms.conf\n");
    let second_done = Instant::now();
    let (code, first_out) = first.wait(Duration::from_secs(60));
    assert_eq!(code, Some(0), "{first_out}");
    second.assert_code(0);
    let lock = t.lock_path().display().to_string();
    let waiting = second.expect_line(&["==> Waiting for process", &pid.to_string(), "dkms-hook", &lock]);
    assert!(waiting.contains("giving up after 600 s"), "{waiting}");
    assert_eq!(second.count_lines("Waiting for"), 1, "the waiter says it once\n{second}");
    // By the time the second run read the system, the first had installed everything.
    assert!(second.installs().is_empty(), "the second run must see the first one's work\n{second}");
    assert_eq!(slow_calls(&t, "finished").len(), 2, "both of the first run's builds completed");
    assert!(second_done.elapsed() < Duration::from_secs(5), "the first run ended long after the second");
    t.run(&["status"], "").assert_code(0);
}

#[test]
fn a_waiting_run_proceeds_once_the_holder_releases_the_lock() {
    let t = TestRoot::with_two_kernels();
    t.module_pkg("hello-dkms", "hello-1.0", &dkms_conf("hello", "1.0"));
    let held = t.hold_lock();
    let fake = t.fake_dkms();
    let run = spawn_with_stdin(&t, &argv(&t, &fake, &["install"]), "usr/src/hello-1.0/dkms.conf\n", "waiter");
    wait_for("the run to say it waits", Duration::from_secs(20), || run.output().contains("Waiting for"));
    assert!(!t.ko_installed("hello", K1), "it built while the lock was held:\n{}", run.output());
    drop(held);
    let (code, out) = run.wait(Duration::from_secs(30));
    assert_eq!(code, Some(0), "{out}");
    assert!(t.ko_installed("hello", K1) && t.ko_installed("hello", K2), "{out}");
}

#[test]
fn the_waiter_gives_up_after_lock_timeout() {
    let t = TestRoot::with_two_kernels();
    t.module_pkg("hello-dkms", "hello-1.0", &dkms_conf("hello", "1.0"));
    config(&t, "lock_timeout = 1\n");
    let _held = t.hold_lock();
    let started = Instant::now();
    let run = t.run(&["sync"], "");
    run.assert_code(2);
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(run.calls.is_empty(), "nothing may run without the lock\n{run}");
    let me = std::process::id().to_string();
    run.expect_line(&["==> Waiting for process", &me]);
    let line = run.expect_line(&["error: gave up after 1 s waiting for process", &me, "lock_timeout"]);
    assert!(line.contains(&t.lock_path().display().to_string()), "{line}");
}

#[test]
fn a_lock_left_by_a_dead_run_does_not_block() {
    let t = TestRoot::with_two_kernels();
    t.module_pkg("hello-dkms", "hello-1.0", &dkms_conf("hello", "1.0"));
    fs::create_dir_all(t.lock_path().parent().unwrap()).unwrap();
    fs::write(t.lock_path(), "999999\n").unwrap();
    let run = t.run(&["sync"], "");
    run.assert_code(0);
    assert!(run.line(&["Waiting"]).is_none(), "{run}");
}

/// dkms-hook killed with SIGKILL while its dkms builds: the next run must not start any dkms
/// until that build is over, because the build may still write to the dkms tree.
#[test]
fn no_dkms_of_a_killed_run_overlaps_the_next_run() {
    let t = TestRoot::with_two_kernels();
    t.module_pkg("hello-dkms", "hello-1.0", &dkms_conf("hello", "1.0"));
    let slow = slow_dkms(&t, 3);
    let first = spawn(&t, &argv(&t, &slow, &["-j", "1", "sync"]), "first");
    wait_for("the first run's dkms to start", Duration::from_secs(20), || !slow_calls(&t, "started").is_empty());
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(first.pid() as i32), nix::sys::signal::Signal::SIGKILL).unwrap();
    let (code, _) = first.wait(Duration::from_secs(10));
    assert_eq!(code, None, "the first run was killed by a signal");
    assert!(slow_calls(&t, "finished").is_empty(), "the kill must land while the first build runs");

    // The second run's dkms records whether the first run's build was over when it started.
    let overlap = t.scratch().join("overlap");
    let finished = t.scratch().join("finished");
    let checking = t.scratch().join("checking-dkms");
    fs::write(
        &checking,
        format!(
            "#!/bin/bash\n[ -e '{finished}' ] || echo \"$*\" >>'{overlap}'\nexec '{fake}' \"$@\"\n",
            finished = finished.display(),
            overlap = overlap.display(),
            fake = t.fake_dkms().display()
        ),
    )
    .unwrap();
    fs::set_permissions(&checking, fs::Permissions::from_mode(0o755)).unwrap();
    let second = spawn(&t, &argv(&t, &checking, &["sync"]), "second");
    let (code, out) = second.wait(Duration::from_secs(60));
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("Waiting for"), "the second run must wait for the first run's dkms:\n{out}");
    assert!(
        !overlap.exists(),
        "the second run called dkms while the killed run's build was still running: {}",
        fs::read_to_string(&overlap).unwrap_or_default()
    );
    assert!(t.ko_installed("hello", K1) && t.ko_installed("hello", K2), "{out}");
}
