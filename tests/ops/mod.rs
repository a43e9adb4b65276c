//! Helpers for the operations tests (`tests/ops_*.rs`: status, sync, config, lock, logs,
//! signals), on top of the shared test environment in `tests/common`: a configuration file, a
//! slow fake dkms, runs of the binary in the background, `status --json`, and holding the lock
//! from the test itself.

#![allow(dead_code)]

use std::fs;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::{Run, TestRoot};

/// Writes `R/etc/dkms-hook.toml`.
pub fn config(t: &TestRoot, text: &str) {
    fs::write(t.path("etc/dkms-hook.toml"), text).unwrap();
}

/// `R/var/log/dkms-hook/NAME` (the default log directory).
pub fn log_path(t: &TestRoot, name: &str) -> PathBuf {
    t.path("var/log/dkms-hook").join(name)
}

/// The `*.log` files in `dir`, sorted.
pub fn logs_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .map(|rd| rd.map(|e| e.unwrap().file_name().into_string().unwrap()).collect())
        .unwrap_or_default();
    names.sort();
    names
}

/// Runs `status --json` and parses it; returns the exit code too.
pub fn status_json(t: &TestRoot) -> (Option<i32>, serde_json::Value, Run) {
    let run = t.run(&["status", "--json"], "");
    let json = serde_json::from_str(&run.stdout).unwrap_or_else(|e| panic!("status --json is not JSON: {e}\n{run}"));
    (run.code, json, run)
}

/// The state of each pair in a `status --json` document, as `(module/version, kernel, state)`.
pub fn pair_states(json: &serde_json::Value) -> Vec<(String, String, String)> {
    json["modules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                format!("{}/{}", p["module"].as_str().unwrap(), p["version"].as_str().unwrap()),
                p["kernel"].as_str().unwrap().to_owned(),
                p["state"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

/// `(module/version, kernel, state)` as owned strings.
pub fn pair(id: &str, kernel: &str, state: &str) -> (String, String, String) {
    (id.to_owned(), kernel.to_owned(), state.to_owned())
}

/// A fake dkms that, for `install` and `build`, first creates `SCRATCH/started` (appending a
/// line per call) and sleeps `seconds`, then does what the recording fake does.
pub fn slow_dkms(t: &TestRoot, seconds: u32) -> PathBuf {
    let path = t.scratch().join("slow-dkms");
    let started = t.scratch().join("started");
    let finished = t.scratch().join("finished");
    let text = format!(
        "#!/bin/bash\n\
         case \" $* \" in\n\
         *' install '*|*' build '*)\n\
             echo \"$$ $*\" >>'{started}'\n\
             sleep {seconds}\n\
             echo \"$$\" >>'{finished}' ;;\n\
         esac\n\
         exec '{fake}' \"$@\"\n",
        started = started.display(),
        finished = finished.display(),
        fake = t.fake_dkms().display(),
    );
    fs::write(&path, text).unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
    path
}

/// Lines the slow fake wrote to `SCRATCH/started` / `SCRATCH/finished`.
pub fn slow_calls(t: &TestRoot, which: &str) -> Vec<String> {
    fs::read_to_string(t.scratch().join(which)).map(|s| s.lines().map(str::to_owned).collect()).unwrap_or_default()
}

/// `--root R --dkms DKMS --depmod FAKE ARGS…`.
pub fn argv(t: &TestRoot, dkms: &Path, args: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = vec![
        "--root".into(),
        t.root().display().to_string(),
        "--dkms".into(),
        dkms.display().to_string(),
        "--depmod".into(),
        t.fake_depmod().display().to_string(),
    ];
    v.extend(args.iter().map(|s| s.to_string()));
    v
}

/// A run of the binary in the background.
pub struct Background {
    pub child: Child,
    out: PathBuf,
    err: PathBuf,
}

/// Starts `dkms-hook ARGV…` in the background, with the fakes' environment, output to files.
pub fn spawn(t: &TestRoot, argv: &[String], name: &str) -> Background {
    spawn_from(t, argv, Stdio::null(), name)
}

/// Like [`spawn`], with `stdin` (a hook's targets) on its standard input.
pub fn spawn_with_stdin(t: &TestRoot, argv: &[String], stdin: &str, name: &str) -> Background {
    let path = t.scratch().join(format!("{name}.stdin"));
    fs::write(&path, stdin).unwrap();
    spawn_from(t, argv, fs::File::open(&path).unwrap().into(), name)
}

fn spawn_from(t: &TestRoot, argv: &[String], stdin: Stdio, name: &str) -> Background {
    let out = t.scratch().join(format!("{name}.stdout"));
    let err = t.scratch().join(format!("{name}.stderr"));
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_dkms-hook"));
    cmd.args(argv)
        .current_dir(t.scratch())
        .stdin(stdin)
        .stdout(fs::File::create(&out).unwrap())
        .stderr(fs::File::create(&err).unwrap())
        .env_remove("RUST_LOG")
        .env("NO_COLOR", "1")
        .env("FAKE_ROOT", t.root())
        .env("FAKE_CALLS_LOG", t.scratch().join(format!("{name}.calls")));
    Background { child: cmd.spawn().expect("start dkms-hook (did you `. scripts/env`?)"), out, err }
}

impl Background {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits up to `limit` for the exit; returns the code (`None`: killed by a signal) and the
    /// output (stdout then stderr). Panics, killing it, if it does not end in time.
    pub fn wait(mut self, limit: Duration) -> (Option<i32>, String) {
        let started = Instant::now();
        let status = loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                break s;
            }
            if started.elapsed() > limit {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!("dkms-hook did not finish within {limit:?}:\n{}", self.output());
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        (status.code(), self.output())
    }

    /// What it printed so far.
    pub fn output(&self) -> String {
        let mut text = String::new();
        for path in [&self.out, &self.err] {
            let _ = fs::File::open(path).and_then(|mut f| f.read_to_string(&mut text));
        }
        text
    }
}

/// Polls `cond` every 20 ms for up to `limit`; panics with `what` if it never holds.
#[track_caller]
pub fn wait_for(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
    let started = Instant::now();
    while !cond() {
        assert!(started.elapsed() < limit, "timed out after {limit:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}
