//! SIGINT, SIGTERM and SIGHUP (pacman treats a hangup like an interrupt): no new job starts, the
//! running dkms (its whole process group) is terminated, the run reports and exits 130/143/129,
//! and `sync` then ends in the desired state. Waiting for dkms blocks instead of polling, and a
//! signal wakes it at once.

mod common;
mod ops;

use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use common::*;
use ops::*;

fn interrupted_mid_build(signal: Signal, code: i32) {
    let t = TestRoot::with_two_kernels();
    t.module_pkg("hello-dkms", "hello-1.0", &dkms_conf("hello", "1.0"));
    t.module_pkg("world-dkms", "world-2.0", &dkms_conf("world", "2.0"));
    let slow = slow_dkms(&t, 60);

    let run = spawn(&t, &argv(&t, &slow, &["-j", "1", "sync"]), "interrupted");
    wait_for("the first build to start", Duration::from_secs(20), || !slow_calls(&t, "started").is_empty());
    let sent = Instant::now();
    kill(Pid::from_raw(run.pid() as i32), signal).unwrap();
    let (exit, out) = run.wait(Duration::from_secs(30));
    assert_eq!(exit, Some(code), "{out}");
    assert!(sent.elapsed() < Duration::from_secs(15), "stopping took {:?}\n{out}", sent.elapsed());
    assert!(out.contains(&format!("==> Stopped by {signal}")), "{out}");
    assert!(out.contains("run `dkms-hook sync` to finish"), "{out}");
    assert_eq!(slow_calls(&t, "started").len(), 1, "no job may start after the signal\n{out}");
    assert!(slow_calls(&t, "finished").is_empty(), "the running dkms must be terminated\n{out}");
    // Its process group is gone too (the `sleep` it was waiting for).
    let first = slow_calls(&t, "started")[0].split(' ').next().unwrap().parse::<i32>().unwrap();
    wait_for("dkms's process group to end", Duration::from_secs(10), || live_members(first).is_empty());
    assert_eq!(t.run(&["status"], "").code, Some(1));

    let repair = t.run(&["sync"], "");
    repair.assert_code(0);
    assert_eq!(repair.installs().len(), 4, "{repair}");
    let status = t.run(&["status"], "");
    status.assert_code(0);
}

/// PIDs of processes in process group `pgid` that are not zombies (zombies may wait a while for
/// a container's init to reap them).
fn live_members(pgid: i32) -> Vec<i32> {
    let mut live = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else { continue };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { continue };
        // pid (comm) state ppid pgrp …: comm may hold spaces, so split after the last ')'.
        let Some((_, rest)) = stat.rsplit_once(')') else { continue };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        if fields.len() > 2 && fields[2] == pgid.to_string() && fields[0] != "Z" {
            live.push(pid);
        }
    }
    live
}

#[test]
fn sigterm_mid_build_exits_143_and_sync_repairs() {
    interrupted_mid_build(Signal::SIGTERM, 143);
}

#[test]
fn sigint_mid_build_exits_130_and_sync_repairs() {
    interrupted_mid_build(Signal::SIGINT, 130);
}

#[test]
fn sighup_mid_build_exits_129_and_sync_repairs() {
    interrupted_mid_build(Signal::SIGHUP, 129);
}

#[test]
fn a_signal_while_waiting_for_the_lock_changes_nothing() {
    let t = TestRoot::with_two_kernels();
    t.module_pkg("hello-dkms", "hello-1.0", &dkms_conf("hello", "1.0"));
    let _held = t.hold_lock();
    let run = spawn(&t, &argv(&t, &t.fake_dkms(), &["sync"]), "waiter");
    wait_for("the run to wait for the lock", Duration::from_secs(20), || run.output().contains("Waiting for process"));
    kill(Pid::from_raw(run.pid() as i32), Signal::SIGTERM).unwrap();
    let (exit, out) = run.wait(Duration::from_secs(10));
    assert_eq!(exit, Some(143), "{out}");
    assert!(out.contains("nothing was done"), "{out}");
    assert!(!t.is_registered("hello", "1.0"));
}

/// Voluntary context switches of every thread of process `pid` so far.
fn context_switches(pid: u32) -> u64 {
    let mut total = 0;
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap().flatten() {
        let status = std::fs::read_to_string(task.path().join("status")).unwrap_or_default();
        let n = status.lines().find_map(|l| l.strip_prefix("voluntary_ctxt_switches:")).map(str::trim);
        total += n.and_then(|n| n.parse::<u64>().ok()).unwrap_or(0);
    }
    total
}

/// Waiting for a running dkms blocks until it exits, a signal arrives or a deadline passes: it
/// does not wake up every few milliseconds to look (which costs CPU on every job of every run).
#[test]
fn waiting_for_dkms_does_not_poll() {
    let t = TestRoot::with_two_kernels();
    t.module_pkg("hello-dkms", "hello-1.0", &dkms_conf("hello", "1.0"));
    let slow = slow_dkms(&t, 3);
    let run = spawn(&t, &argv(&t, &slow, &["-j", "1", "sync"]), "waiting");
    wait_for("the build to start", Duration::from_secs(20), || !slow_calls(&t, "started").is_empty());
    let before = context_switches(run.pid());
    std::thread::sleep(Duration::from_secs(1));
    let woke = context_switches(run.pid()) - before;
    let sent = Instant::now();
    kill(Pid::from_raw(run.pid() as i32), Signal::SIGTERM).unwrap();
    let (exit, out) = run.wait(Duration::from_secs(10));
    assert_eq!(exit, Some(143), "{out}");
    // A stop request wakes the wait at once.
    assert!(sent.elapsed() < Duration::from_secs(2), "stopping took {:?}", sent.elapsed());
    assert!(woke < 20, "dkms-hook woke {woke} times in one second while dkms ran");
}
