//! The lock (`ROOT/run/dkms-hook.lock`): two runs at once serialize, the waiter says once which
//! process it waits for, and gives up after `lock_timeout` with exit 2.

mod common;
mod ops;

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
    assert_eq!(std::fs::read_to_string(t.path("run/dkms-hook.lock")).unwrap().trim(), pid.to_string());

    // The second run (a hook, with the quick fake) must wait for the first to finish.
    let second = t.run(&["install"], "usr/src/hello-1.0/dkms.conf\n");
    let second_done = Instant::now();
    let (code, first_out) = first.wait(Duration::from_secs(60));
    assert_eq!(code, Some(0), "{first_out}");
    second.assert_code(0);
    let waiting = second.expect_line(&["==> Waiting for process", &pid.to_string(), "dkms-hook", "run/dkms-hook.lock"]);
    assert!(waiting.contains("giving up after 600 s"), "{waiting}");
    assert_eq!(second.count_lines("Waiting for"), 1, "the waiter says it once\n{second}");
    // By the time the second run read the system, the first had installed everything.
    assert!(second.installs().is_empty(), "the second run must see the first one's work\n{second}");
    assert_eq!(slow_calls(&t, "finished").len(), 2, "both of the first run's builds completed");
    assert!(second_done.elapsed() < Duration::from_secs(5), "the first run ended long after the second");
    t.run(&["status"], "").assert_code(0);
}

#[test]
fn the_waiter_gives_up_after_lock_timeout() {
    let t = TestRoot::with_two_kernels();
    t.module_pkg("hello-dkms", "hello-1.0", &dkms_conf("hello", "1.0"));
    config(&t, "lock_timeout = 1\n");
    let _held = hold_lock(&t);
    let started = Instant::now();
    let run = t.run(&["sync"], "");
    run.assert_code(2);
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(run.calls.is_empty(), "nothing may run without the lock\n{run}");
    let me = std::process::id().to_string();
    run.expect_line(&["==> Waiting for process", &me]);
    let line = run.expect_line(&["error: gave up after 1 s waiting for process", &me, "lock_timeout"]);
    assert!(line.contains(&t.path("run/dkms-hook.lock").display().to_string()), "{line}");
}

#[test]
fn a_lock_left_by_a_dead_run_does_not_block() {
    let t = TestRoot::with_two_kernels();
    t.module_pkg("hello-dkms", "hello-1.0", &dkms_conf("hello", "1.0"));
    std::fs::create_dir_all(t.path("run")).unwrap();
    std::fs::write(t.path("run/dkms-hook.lock"), "999999\n").unwrap();
    let run = t.run(&["sync"], "");
    run.assert_code(0);
    assert!(run.line(&["Waiting"]).is_none(), "{run}");
}
