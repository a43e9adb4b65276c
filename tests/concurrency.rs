//! Concurrency: two or three dkms-hook runs started at once on the same root serialize on the
//! root's lock (`ROOT/var/lib/dkms-hook/lock`): no dkms call of one run happens while another run
//! holds the lock, a waiting run says which process it waits for, and the end state is the one
//! the packages imply, whatever the order. 50 trials; then the lock's timeout and the runs that
//! take no lock.

mod common;
#[path = "faults/support.rs"]
mod support;

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::*;
use support::*;

const TIMED_DKMS: &str = include_str!("faults/timed-dkms");
const TRIALS: u64 = 50;

/// The modules: `delta` is installed already; the runs install the others.
const MODULES: [(&str, &str); 4] = [("alpha", "1.0"), ("beta-x", "2.0-r1"), ("gamma", "0.3"), ("delta", "1.0")];

fn root() -> TestRoot {
    let t = TestRoot::with_two_kernels();
    for (m, v) in MODULES {
        t.module_pkg(&format!("{m}-dkms"), &format!("{m}-{v}"), &dkms_conf(m, v));
    }
    t.dkms_installed("delta", "1.0", K1).dkms_installed("delta", "1.0", K2);
    t
}

/// One finished run.
struct Finished {
    pid: u32,
    code: Option<i32>,
    output: String,
}

/// Starts every `(args, stdin)` at once (released together after all are spawned) and waits.
fn run_at_once(t: &TestRoot, dkms: &Path, log: &Path, runs: &[(&[&str], String)]) -> Vec<Finished> {
    let mut children = Vec::new();
    for (args, _) in runs {
        let mut cmd = Command::new(bin());
        cmd.arg("--root")
            .arg(t.root())
            .arg("--dkms")
            .arg(dkms)
            .arg("--depmod")
            .arg(t.fake_depmod())
            .args(*args)
            .env("NO_COLOR", "1")
            .env("FAKE_ROOT", t.root())
            .env("TIMED_LOG", log)
            .env("TIMED_NEXT", t.fake_dkms())
            .env_remove("RUST_LOG")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        children.push(cmd.spawn().expect("could not start dkms-hook"));
    }
    // They all wait for stdin: writing it is the start signal, as close together as we can.
    for (child, (_, stdin)) in children.iter_mut().zip(runs) {
        let mut input = child.stdin.take().unwrap();
        let _ = input.write_all(stdin.as_bytes());
    }
    children
        .into_iter()
        .map(|child| {
            let pid = child.id();
            let out = child.wait_with_output().unwrap();
            Finished {
                pid,
                code: out.status.code(),
                output: format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)),
            }
        })
        .collect()
}

/// The dkms calls of each run as (first start, last end), from the timing log.
fn spans(log: &Path) -> BTreeMap<u32, (f64, f64, usize)> {
    let mut spans: BTreeMap<u32, (f64, f64, usize)> = BTreeMap::new();
    for line in fs::read_to_string(log).unwrap_or_default().lines() {
        let mut parts = line.split_whitespace();
        let (Some(pid), Some(what), Some(ts)) = (parts.next(), parts.next(), parts.next()) else { continue };
        let pid: u32 = pid.parse().unwrap();
        let ts: f64 = ts.parse().unwrap();
        let span = spans.entry(pid).or_insert((f64::MAX, f64::MIN, 0));
        if what == "start" {
            span.0 = span.0.min(ts);
            span.2 += 1;
        } else {
            span.1 = span.1.max(ts);
        }
    }
    spans
}

/// One trial; returns whether some run had to wait, or what went wrong.
fn trial(seed: u64) -> Result<bool, String> {
    let mut rng = Rng::new(seed);
    let t = root();
    let dkms = script(&t, "timed-dkms", TIMED_DKMS);
    let log = t.scratch().join("timed.log");
    let module = |m: &str| {
        let (m, v) = MODULES.iter().find(|(n, _)| *n == m).unwrap();
        format!("usr/src/{m}-{v}/dkms.conf\n")
    };
    let mut runs: Vec<(&[&str], String)> =
        vec![(&["install"], module("alpha")), (&["install"], module("beta-x")), (&["sync"], String::new())];
    // Two or three runs, in a random order of starting.
    let n = if seed.is_multiple_of(2) { 2 } else { 3 };
    for i in (1..runs.len()).rev() {
        runs.swap(i, rng.below(i as u64 + 1) as usize);
    }
    runs.truncate(n);
    let finished = run_at_once(&t, &dkms, &log, &runs);
    let mut report =
        format!("seed {seed}: {:?}\n", runs.iter().map(|(a, s)| format!("{a:?} {}", s.trim())).collect::<Vec<_>>());
    for f in &finished {
        report.push_str(&format!("--- pid {} exit {:?}:\n{}", f.pid, f.code, f.output));
    }
    report.push_str(&format!("--- calls:\n{}", fs::read_to_string(&log).unwrap_or_default()));
    if finished.iter().any(|f| f.code != Some(0)) {
        return Err(format!("{report}a run failed"));
    }
    // Serialized: the runs' call spans do not overlap.
    let spans = spans(&log);
    let list: Vec<(&u32, &(f64, f64, usize))> = spans.iter().collect();
    for (i, (pa, a)) in list.iter().enumerate() {
        for (pb, b) in &list[i + 1..] {
            if a.0 < b.1 && b.0 < a.1 {
                return Err(format!("{report}the dkms calls of runs {pa} and {pb} overlap: {a:?} {b:?}"));
            }
        }
    }
    // A waiting run names the process it waits for: one of the others.
    let mut waited = false;
    for f in &finished {
        if let Some(line) = f.output.lines().find(|l| l.contains("Waiting for")) {
            waited = true;
            let named = finished.iter().any(|o| o.pid != f.pid && line.contains(&format!("process {}", o.pid)));
            if !named || !line.contains("var/lib/dkms-hook/lock") {
                return Err(format!("{report}the waiting message does not name the holder: {line}"));
            }
        }
    }
    // Whatever the order, every module ends up installed for both kernels once the runs that
    // install it are done; a sync installs all of them.
    let has_sync = runs.iter().any(|(a, _)| a[0] == "sync");
    for (m, v) in MODULES {
        let wanted = m == "delta"
            || has_sync
            || runs.iter().any(|(a, s)| a[0] == "install" && s.contains(&format!("usr/src/{m}-{v}/")));
        for k in [K1, K2] {
            let installed = t.installed_for(m, k).as_deref() == Some(v) && t.ko_installed(m, k);
            if installed != wanted {
                return Err(format!("{report}{m}/{v} for {k}: installed {installed}, wanted {wanted}"));
            }
        }
    }
    // And a sync afterwards has nothing left to do.
    let before = fs::read_to_string(&log).unwrap_or_default().lines().count();
    let sync = run_at_once(&t, &dkms, &log, &[(&["sync"], String::new())]);
    let after = fs::read_to_string(&log).unwrap_or_default().lines().count();
    if sync[0].code != Some(0) {
        return Err(format!("{report}--- sync:\n{}", sync[0].output));
    }
    if has_sync && after != before {
        return Err(format!("{report}a second sync ran dkms again"));
    }
    Ok(waited)
}

#[test]
fn two_and_three_runs_at_once_serialize_on_the_lock() {
    let started = Instant::now();
    let next = Mutex::new(0u64);
    let results: Mutex<Vec<(u64, Result<bool, String>)>> = Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..2 {
            scope.spawn(|| loop {
                let seed = {
                    let mut n = next.lock().unwrap();
                    *n += 1;
                    *n - 1
                };
                if seed >= TRIALS {
                    break;
                }
                let r = trial(0xc0c0 + seed);
                results.lock().unwrap().push((seed, r));
            });
        }
    });
    let results = results.into_inner().unwrap();
    let waited = results.iter().filter(|(_, r)| matches!(r, Ok(true))).count();
    let failed: Vec<&(u64, Result<bool, String>)> = results.iter().filter(|(_, r)| r.is_err()).collect();
    eprintln!(
        "{TRIALS} concurrency trials in {:?}: {waited} had a run wait for the lock, {} failed",
        started.elapsed(),
        failed.len()
    );
    if let Some((_, Err(e))) = failed.first() {
        let why: Vec<String> = failed
            .iter()
            .filter_map(|(seed, r)| {
                r.as_ref().err().map(|e| format!("  trial {seed}: {}", e.lines().last().unwrap_or("")))
            })
            .collect();
        panic!("{} of {TRIALS} trials failed:\n{}\nthe first in full:\n{e}", failed.len(), why.join("\n"));
    }
    assert!(waited >= (TRIALS / 2) as usize, "runs started at once should mostly contend: only {waited} waited");
}

#[test]
fn a_run_gives_up_after_the_lock_timeout() {
    let t = root();
    fs::write(t.path("etc/dkms-hook.toml"), "lock_timeout = 1\n").unwrap();
    let held = t.hold_lock();
    let before = t.snapshot();
    let started = Instant::now();
    let run = t.run(&["install"], "usr/src/alpha-1.0/dkms.conf\n");
    let took = started.elapsed();
    drop(held);
    run.assert_code(2);
    assert!(took < Duration::from_secs(3), "{took:?}\n{run}");
    assert!(run.calls.is_empty(), "{run}");
    let line = one_line(&run.output(), &["error:", "var/lib/dkms-hook/lock"], &run);
    assert_error_line(&line, &["lock_timeout", "gave up after 1 s"]);
    assert_same(&before, &t.snapshot(), &run);
}

#[test]
fn status_and_dry_run_take_no_lock() {
    let t = root();
    let held = t.hold_lock();
    let started = Instant::now();
    let status = t.run(&["status"], "");
    let dry = t.run(&["--dry-run", "install"], "usr/src/alpha-1.0/dkms.conf\n");
    let took = started.elapsed();
    drop(held);
    assert!(took < Duration::from_secs(3), "status or --dry-run waited for the lock: {took:?}\n{status}\n{dry}");
    assert!(status.code.is_some_and(|c| c <= 1), "{status}");
    dry.assert_code(0);
}
