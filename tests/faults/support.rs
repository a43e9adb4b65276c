//! Helpers shared by the reliability tests (bad input, safety, faults, concurrency), on top of
//! the common test environment: message and snapshot assertions, running the binary as an
//! unprivileged user, mounts that are undone on drop, and a small seeded PRNG. Set-up that needs
//! root follows the common skip rule (`common::skip`).

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::{snapshot_diff, Entry, Run, TestRoot};

/// dkms-hook's own files below the root (lock, state, private build trees, logs): they may
/// change in any run; everything else only as a test allows.
pub const OWN_FILES: [&str; 3] = ["var/lib/dkms-hook", "var/log/dkms-hook", "var/log"];

/// The one output line holding all `needles`; panics (showing the run) unless there is
/// exactly one.
#[track_caller]
pub fn one_line(output: &str, needles: &[&str], run: &Run) -> String {
    let lines: Vec<&str> = output.lines().filter(|l| needles.iter().all(|n| l.contains(n))).collect();
    assert_eq!(lines.len(), 1, "expected exactly one line holding all of {needles:?}\n{run}");
    lines[0].to_owned()
}

/// A fatal or job error line: starts with `error:` and holds all `needles` (the what-to-do).
#[track_caller]
pub fn assert_error_line(line: &str, needles: &[&str]) {
    assert!(line.starts_with("error:"), "not an error line: {line}");
    for n in needles {
        assert!(line.contains(n), "{line:?} should say {n:?}");
    }
}

fn is_own(path: &Path) -> bool {
    let p = path.to_string_lossy();
    OWN_FILES.iter().any(|own| {
        if own.ends_with('/') {
            p.starts_with(own)
        } else {
            p == *own || p.starts_with(&format!("{own}/"))
        }
    })
}

/// Asserts that nothing changed but dkms-hook's own files.
#[track_caller]
pub fn assert_same(before: &BTreeMap<PathBuf, Entry>, after: &BTreeMap<PathBuf, Entry>, run: &Run) {
    assert_changed_only(before, after, &[], run);
}

/// Asserts that only paths below one of `allowed` (prefixes relative to the root) or
/// dkms-hook's own files changed.
#[track_caller]
pub fn assert_changed_only(
    before: &BTreeMap<PathBuf, Entry>,
    after: &BTreeMap<PathBuf, Entry>,
    allowed: &[&str],
    run: &Run,
) {
    let bad: Vec<String> = snapshot_diff(before, after)
        .into_iter()
        .filter(|d| {
            let path = Path::new(d.split_once(' ').unwrap().1);
            !is_own(path) && !allowed.iter().any(|a| path.to_string_lossy().starts_with(a))
        })
        .collect();
    assert!(bad.is_empty(), "the run changed what it must not:\n  {}\n{run}", bad.join("\n  "));
}

/// Makes the fixture root readable and searchable by other users (the temp dir is 0700).
pub fn open_to_others(t: &TestRoot) {
    fs::set_permissions(t.scratch(), fs::Permissions::from_mode(0o755)).unwrap();
}

/// An executable script `name` in the scratch directory.
pub fn script(t: &TestRoot, name: &str, text: &str) -> PathBuf {
    let path = t.scratch().join(name);
    fs::write(&path, text).unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
    path
}

/// `dkms-hook --root R --dkms DKMS --depmod DEPMOD ARGS…` (the fakes' environment set).
pub fn run_tools(t: &TestRoot, dkms: &Path, depmod: &Path, args: &[&str], stdin: &[u8], env: &[(&str, &str)]) -> Run {
    let mut argv: Vec<String> = vec![
        "--root".into(),
        t.root().display().to_string(),
        "--dkms".into(),
        dkms.display().to_string(),
        "--depmod".into(),
        depmod.display().to_string(),
    ];
    argv.extend(args.iter().map(|s| s.to_string()));
    t.run_raw(&argv, stdin, env)
}

/// The dkms-hook binary under test.
pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_dkms-hook")
}

/// `dkms-hook --root R --dkms FAKE --depmod FAKE ARGS…` as user `nobody`.
pub fn run_as_nobody(t: &TestRoot, args: &[&str], stdin: &[u8]) -> Run {
    let mut argv: Vec<String> = vec![
        "--root".into(),
        t.root().display().to_string(),
        "--dkms".into(),
        t.fake_dkms().display().to_string(),
        "--depmod".into(),
        t.fake_depmod().display().to_string(),
    ];
    argv.extend(args.iter().map(|s| s.to_string()));
    let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
    run_bin_as_nobody(&argv, stdin, &[("FAKE_ROOT", t.root().to_str().unwrap())])
}

/// `dkms-hook ARGS…` exactly as given, as user `nobody` (uid/gid 65534, no groups).
pub fn run_bin_as_nobody(args: &[&str], stdin: &[u8], env: &[(&str, &str)]) -> Run {
    assert!(nix::unistd::geteuid().is_root(), "running as nobody needs root: check `skip::root_missing()` first");
    let mut cmd = Command::new("setpriv");
    cmd.args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"]).arg(bin()).args(args);
    spawn_and_wait(cmd, args, stdin, env, Duration::from_secs(60))
}

/// Runs `cmd` with a clean copy of the environment, `stdin` written, output captured; kills it
/// and panics after `limit`.
pub fn spawn_and_wait(mut cmd: Command, args: &[&str], stdin: &[u8], env: &[(&str, &str)], limit: Duration) -> Run {
    for (key, _) in std::env::vars_os() {
        let key = key.to_string_lossy().into_owned();
        if key.starts_with("DKMS_HOOK") || key.starts_with("FAKE_") || key == "RUST_LOG" {
            cmd.env_remove(key);
        }
    }
    cmd.env("NO_COLOR", "1").current_dir("/").stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("could not start the binary");
    let input = stdin.to_vec();
    let mut child_stdin = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || {
        let _ = child_stdin.write_all(&input);
    });
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let out = std::thread::spawn(move || {
        let mut b = Vec::new();
        let _ = out.read_to_end(&mut b);
        b
    });
    let err = std::thread::spawn(move || {
        let mut b = Vec::new();
        let _ = err.read_to_end(&mut b);
        b
    });
    let started = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("dkms-hook {args:?} did not finish in {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    writer.join().unwrap();
    Run {
        args: args.iter().map(|s| s.to_string()).collect(),
        code: status.code(),
        stdout: String::from_utf8_lossy(&out.join().unwrap()).into_owned(),
        stderr: String::from_utf8_lossy(&err.join().unwrap()).into_owned(),
        calls: Vec::new(),
    }
}

/// A mount over a fixture directory, undone when dropped.
pub struct Mount {
    path: PathBuf,
}

impl Mount {
    fn run(args: &[&str], path: &Path) -> bool {
        Command::new("mount").args(args).arg(path).status().is_ok_and(|s| s.success())
    }

    /// `path` bind-mounted read-only onto itself.
    #[track_caller]
    pub fn read_only_bind(path: &Path) -> Mount {
        let p = path.to_str().unwrap();
        if !(Self::run(&["--bind", p], path) && Self::run(&["-o", "remount,ro,bind"], path)) {
            let _ = Command::new("umount").arg(path).status();
            panic!("cannot bind-mount {p} read-only (this test needs root and mount)");
        }
        Mount { path: path.to_owned() }
    }

    /// A tmpfs of `size` (e.g. `64k`) over `path`, holding a copy of what was there.
    #[track_caller]
    pub fn tmpfs(path: &Path, size: &str) -> Mount {
        let saved = path.with_extension("saved");
        fs::rename(path, &saved).unwrap();
        fs::create_dir(path).unwrap();
        if !Self::run(&["-t", "tmpfs", "-o", &format!("size={size},mode=0755"), "tmpfs"], path) {
            panic!("cannot mount a tmpfs on {} (this test needs root and mount)", path.display());
        }
        let copied = Command::new("cp").arg("-a").arg(format!("{}/.", saved.display())).arg(path).status().unwrap();
        assert!(copied.success(), "could not copy {} into the tmpfs", saved.display());
        fs::remove_dir_all(&saved).unwrap();
        Mount { path: path.to_owned() }
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let ok = Command::new("umount").arg(&self.path).status().is_ok_and(|s| s.success());
        if !ok {
            let _ = Command::new("umount").arg("-l").arg(&self.path).status();
        }
    }
}

/// Pids of processes whose command line mentions `needle`.
pub fn processes_mentioning(needle: &str) -> Vec<i32> {
    let mut pids = Vec::new();
    for entry in fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else { continue };
        if pid == std::process::id() as i32 {
            continue;
        }
        if let Ok(cmdline) = fs::read(entry.path().join("cmdline")) {
            if String::from_utf8_lossy(&cmdline).contains(needle) {
                pids.push(pid);
            }
        }
    }
    pids
}

/// Asserts that no process started from `script` is still running (killing any, by pid, so a
/// failing test leaves none behind).
#[track_caller]
pub fn assert_no_process_left(script: &Path) {
    let needle = script.to_string_lossy().into_owned();
    let mut left = processes_mentioning(&needle);
    let deadline = Instant::now() + Duration::from_secs(3);
    while !left.is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
        left = processes_mentioning(&needle);
    }
    for &pid in &left {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
    }
    assert!(left.is_empty(), "processes of {needle} still running after the run: {left:?}");
}

/// A tiny deterministic PRNG (SplitMix64): the same seed gives the same trial.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (`n` > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    /// True with probability `num/den`.
    pub fn chance(&mut self, num: u64, den: u64) -> bool {
        self.below(den) < num
    }

    /// One of `items`.
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
}
