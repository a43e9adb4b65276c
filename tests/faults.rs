//! Fault injection: whatever goes wrong during a transaction — dkms fails, crashes or hangs at
//! any call, or dkms-hook itself is killed with SIGKILL at any moment — `dkms-hook sync`
//! afterwards brings the dkms tree and `usr/lib/modules` to exactly the state the installed
//! packages imply: every module installed once for every kernel, nothing stale, nothing foreign
//! touched.
//!
//! Each trial is drawn from a seed: one of three transactions of at least 12 jobs over 6
//! modules and 2 kernels (both kernels new; three modules upgraded; a kernel upgraded), and one
//! fault. The desired state is built independently, by running the fake dkms directly on a
//! fresh root, and compared path by path (contents and link targets) with the trial's.
//! A failure prints its seed; `DKMS_HOOK_FAULT_SEED=N cargo test --test faults` replays one
//! trial, `DKMS_HOOK_FAULT_TRIALS=N` changes how many run.
//!
//! A few trials use the real dkms 3.0.10 against real Debian kernel headers and kill dkms-hook
//! in the middle of a real build.

mod common;
#[path = "faults/support.rs"]
mod support;

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use common::*;
use support::*;

const FLAKY_DKMS: &str = include_str!("faults/flaky-dkms");

/// Random trials with the fake dkms (CI runs this many).
const TRIALS: u64 = 100;
/// Trials with the real dkms.
const REAL_TRIALS: u64 = 3;

/// The six modules, at the version their packages have after the transaction.
const MODULES: [(&str, &str); 6] =
    [("alpha", "1.0"), ("beta-x", "2.1-r3"), ("gamma", "0.9"), ("delta", "1.0"), ("eps-ilon", "3"), ("zeta", "1.0.1")];
/// The modules the upgrade scenario upgrades, from this version.
const UPGRADED: [&str; 3] = ["alpha", "beta-x", "gamma"];
const OLD_VERSION: &str = "0.1";
/// The kernel that replaces K2 in the kernel upgrade.
const K3: &str = "6.6.31-1-lts";
/// The job timeout the trials run with, so a hanging dkms is stopped.
const JOB_TIMEOUT_S: u64 = 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scenario {
    /// Both kernels and their headers arrive: 6 × 2 installs.
    NewKernels,
    /// Three modules go from 0.1 to their new version, with nothing in the remove hook's targets
    /// to say they come back (the packages leave; the new versions come later): 3 × (2 removes +
    /// unregister), 3 × 2 installs.
    ModuleUpgrade,
    /// The same upgrade in one transaction (`pacman -Syu`): the remove hook's targets hold the new
    /// directories too (Install), so nothing is removed before; 3 × 2 private builds swapped in
    /// after, each replaced version retired.
    ModuleUpgradeKept,
    /// Three modules get a package release with changed sources (same directory): kept before,
    /// 3 × 2 rebuilds swapped in after.
    PkgrelRebuild,
    /// linux-lts moves from K2 to K3: 6 removes, 6 installs.
    KernelUpgrade,
    /// The same with the guard first, as pacman runs it (K3's image and headers coming, K2's
    /// `modules.order` leaving): 6 test builds for K3 only, which the install hook installs; a
    /// fault in them is a warning (nothing is critical) and the install hook builds that pair
    /// itself. A guard killed stops the transaction, as pacman does: nothing changes.
    GuardedKernelUpgrade,
    /// linux-lts rebuilt under the same kver K2 (its headers changed in place): the upgrade hook
    /// keeps every module, the install hook rebuilds the 6 of K2 privately and swaps each in only
    /// when it works.
    KernelRebuilt,
}

const SCENARIOS: [Scenario; 7] = [
    Scenario::NewKernels,
    Scenario::ModuleUpgrade,
    Scenario::ModuleUpgradeKept,
    Scenario::PkgrelRebuild,
    Scenario::KernelUpgrade,
    Scenario::GuardedKernelUpgrade,
    Scenario::KernelRebuilt,
];

#[derive(Debug, Clone, PartialEq, Eq)]
enum Fault {
    /// dkms call number `at` (1-based, over the whole transaction) misbehaves.
    Dkms { at: u64, kind: &'static str },
    /// dkms-hook is killed with SIGKILL while dkms call number `at` (1-based, over the whole
    /// transaction) runs: the call waits until the kill has landed, then goes on.
    Kill { at: u64 },
}

/// One hook run of a transaction, and what pacman does to the packages after it.
struct Phase {
    args: &'static [&'static str],
    stdin: String,
    then: fn(&TestRoot),
}

/// A module's package name.
fn pkg(module: &str) -> String {
    format!("{module}-dkms")
}

fn add_module(t: &TestRoot, module: &str, version: &str) {
    t.module_pkg(&pkg(module), &format!("{module}-{version}"), &dkms_conf(module, version));
}

/// A file of the user's that no operation may touch.
fn add_foreign(t: &TestRoot) {
    let path = t.path(&format!("usr/lib/modules/{K1}/updates/user.ko"));
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, "the user's own module\n").unwrap();
}

/// The root before the transaction, and the transaction's hook runs. The root is a copy of a
/// template made once per scenario (setting up a dkms tree through the fake dkms is slow).
fn setup(scenario: Scenario) -> (TestRoot, Vec<Phase>) {
    static TEMPLATES: OnceLock<Mutex<BTreeMap<String, TestRoot>>> = OnceLock::new();
    let templates = TEMPLATES.get_or_init(Default::default);
    let mut templates = templates.lock().unwrap();
    let template = templates.entry(format!("{scenario:?}")).or_insert_with(|| {
        let t = TestRoot::new();
        build(scenario, &t);
        t
    });
    let t = TestRoot::new();
    fs::remove_dir_all(t.root()).unwrap();
    let ok = Command::new("cp").arg("-a").arg(template.root()).arg(t.root()).status().unwrap();
    assert!(ok.success(), "could not copy the template root");
    relink(t.root(), template.root(), t.root());
    (t, phases(scenario))
}

/// Points absolute symlinks below `dir` that lead into `from` into `to` instead.
fn relink(dir: &Path, from: &Path, to: &Path) {
    for entry in fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        let meta = fs::symlink_metadata(&path).unwrap();
        if meta.file_type().is_symlink() {
            let target = fs::read_link(&path).unwrap();
            if let Ok(rest) = target.strip_prefix(from) {
                fs::remove_file(&path).unwrap();
                std::os::unix::fs::symlink(to.join(rest), &path).unwrap();
            }
        } else if meta.is_dir() {
            relink(&path, from, to);
        }
    }
}

/// The system before the scenario's transaction, in `t`.
fn build(scenario: Scenario, t: &TestRoot) {
    fs::write(t.path("etc/dkms-hook.toml"), format!("job_timeout = {JOB_TIMEOUT_S}\n")).unwrap();
    add_foreign(t);
    t.kernel("linux", K1).headers("linux-headers", K1);
    t.kernel("linux-lts", K2).headers("linux-lts-headers", K2);
    for (m, v) in MODULES {
        match scenario {
            Scenario::NewKernels => add_module(t, m, v),
            Scenario::ModuleUpgrade | Scenario::ModuleUpgradeKept => {
                let upgraded = UPGRADED.contains(&m);
                let v = if upgraded { OLD_VERSION } else { v };
                add_module(t, m, v);
                t.dkms_installed(m, v, K1).dkms_installed(m, v, K2);
            }
            Scenario::PkgrelRebuild
            | Scenario::KernelUpgrade
            | Scenario::GuardedKernelUpgrade
            | Scenario::KernelRebuilt => {
                add_module(t, m, v);
                t.dkms_installed(m, v, K1).dkms_installed(m, v, K2);
            }
        }
    }
    if scenario == Scenario::GuardedKernelUpgrade {
        // What pacman -Syu has downloaded when the guard runs.
        let kernel = format!("usr/lib/modules/{K3}/vmlinuz");
        t.offer("linux-lts", "2.0-1", &[(&kernel, "fake vmlinuz\n")]);
        t.offer("linux-lts-headers", "2.0-1", &borrowed(&headers_entries(K3)));
    }
}

/// The targets naming the upgraded modules' sources at their final versions.
fn upgraded_sources() -> String {
    MODULES.iter().filter(|(m, _)| UPGRADED.contains(m)).map(|(m, v)| format!("usr/src/{m}-{v}/dkms.conf\n")).collect()
}

/// The scenario's hook runs, each with what pacman does after it.
fn phases(scenario: Scenario) -> Vec<Phase> {
    let targets = |k: &str| format!("usr/lib/modules/{k}/build/include/\nusr/lib/modules/{k}/modules.order\n");
    match scenario {
        // Both kernels (and headers) arrive in one transaction.
        Scenario::NewKernels => {
            vec![Phase { args: &["install"], stdin: format!("{}{}", targets(K1), targets(K2)), then: |_| {} }]
        }
        Scenario::ModuleUpgrade | Scenario::ModuleUpgradeKept => {
            let old: String = UPGRADED.iter().map(|m| format!("usr/src/{m}-{OLD_VERSION}/dkms.conf\n")).collect();
            let new = upgraded_sources();
            // The old dkms.conf is a Remove target of 71-dkms-remove.hook, the new one an Install
            // target of the guard, which records it: with it, the old versions stay until the new
            // ones are built; without it (the packages leave, and others bring the modules in a
            // later transaction) they are removed first.
            let mut phases = match scenario {
                Scenario::ModuleUpgradeKept => vec![Phase { args: &["guard"], stdin: new.clone(), then: |_| {} }],
                _ => Vec::new(),
            };
            phases.extend([
                Phase {
                    args: &["remove"],
                    stdin: old,
                    then: |t| {
                        for (m, v) in MODULES.iter().filter(|(m, _)| UPGRADED.contains(m)) {
                            t.remove_package(&pkg(m));
                            add_module(t, m, v);
                        }
                    },
                },
                Phase { args: &["install"], stdin: new, then: |_| {} },
            ]);
            phases
        }
        // Same directories: 70-dkms-upgrade.hook before, 70-dkms-install.hook after.
        Scenario::PkgrelRebuild => {
            let dirs = upgraded_sources();
            vec![
                Phase {
                    args: &["remove", "--no-depmod"],
                    stdin: dirs.clone(),
                    then: |t| {
                        for (m, v) in MODULES.iter().filter(|(m, _)| UPGRADED.contains(m)) {
                            t.remove_package(&pkg(m));
                            let dir = format!("{m}-{v}");
                            t.module_pkg_version(&pkg(m), "1.0-2", &dir, &dkms_conf(m, v));
                            fs::write(t.path(&format!("usr/src/{dir}/Makefile")), "obj-m += fake.o\n# 1.0-2\n")
                                .unwrap();
                        }
                    },
                },
                Phase { args: &["install"], stdin: dirs, then: |_| {} },
            ]
        }
        // Same kver: 70-dkms-upgrade.hook before, the headers change, 70-dkms-install.hook after.
        Scenario::KernelRebuilt => vec![
            Phase { args: &["remove", "--no-depmod"], stdin: targets(K2), then: rebuild_headers },
            Phase { args: &["install"], stdin: targets(K2), then: |_| {} },
        ],
        Scenario::KernelUpgrade | Scenario::GuardedKernelUpgrade => {
            let guard = Phase { args: &["guard"], stdin: kernel_upgrade_targets(K2, K3), then: |_| {} };
            let mut phases = match scenario {
                Scenario::GuardedKernelUpgrade => vec![guard],
                _ => Vec::new(),
            };
            phases.extend(kernel_upgrade_phases());
            phases
        }
    }
}

/// linux-lts from K2 to K3: the remove hook, pacman, the install hook.
fn kernel_upgrade_phases() -> Vec<Phase> {
    let targets = |k: &str| format!("usr/lib/modules/{k}/build/include/\nusr/lib/modules/{k}/modules.order\n");
    vec![
        Phase {
            args: &["remove"],
            stdin: format!("{}usr/lib/modules/{K2}/vmlinuz\n", targets(K2)),
            then: |t| {
                t.remove_package("linux-lts-headers").remove_package("linux-lts");
                t.kernel("linux-lts", K3).headers("linux-lts-headers", K3);
            },
        },
        Phase { args: &["install"], stdin: targets(K3), then: |_| {} },
    ]
}

/// What pacman does to K2's headers when it rebuilds linux-lts under the same kver.
fn rebuild_headers(t: &TestRoot) {
    let h = t.path(&format!("usr/lib/modules/{K2}/build/include/generated/utsrelease.h"));
    let mut text = fs::read_to_string(&h).unwrap();
    text.push_str("/* rebuilt */\n");
    fs::write(&h, text).unwrap();
}

/// The kernels installed after the transaction.
fn final_kernels(scenario: Scenario) -> [&'static str; 2] {
    match scenario {
        Scenario::KernelUpgrade | Scenario::GuardedKernelUpgrade => [K1, K3],
        _ => [K1, K2],
    }
}

/// The desired state, built without dkms-hook: the final packages on a fresh root and the fake
/// dkms run directly for every (module, kernel).
fn reference(scenario: Scenario) -> BTreeMap<String, String> {
    let t = TestRoot::new();
    add_foreign(&t);
    let [ka, kb] = final_kernels(scenario);
    t.kernel("linux", ka).headers("linux-headers", ka);
    t.kernel("linux-lts", kb).headers("linux-lts-headers", kb);
    if scenario == Scenario::KernelRebuilt {
        rebuild_headers(&t);
    }
    for (m, v) in MODULES {
        add_module(&t, m, v);
        t.dkms_installed(m, v, ka).dkms_installed(m, v, kb);
    }
    state(&t, scenario)
}

/// The dkms tree and the module directories, normalised: path → what is there (`dir`,
/// `file <content>`, `link <target>` with the root replaced by `ROOT`). A module directory of a
/// kernel that is gone counts when it holds anything (an empty one is what pacman leaves when a
/// file was in it during the removal).
fn state(t: &TestRoot, scenario: Scenario) -> BTreeMap<String, String> {
    let root = t.root().to_string_lossy().into_owned();
    let kernels = final_kernels(scenario);
    let mut out = BTreeMap::new();
    for (path, entry) in t.snapshot() {
        let p = path.to_string_lossy().into_owned();
        if !(p.starts_with("var/lib/dkms") && !p.starts_with("var/lib/dkms-hook") || p.starts_with("usr/lib/modules")) {
            continue;
        }
        let what = match entry {
            Entry::Dir => "dir".to_owned(),
            Entry::File(bytes) => format!("file {}", String::from_utf8_lossy(&bytes)),
            Entry::Link(target) => format!("link {}", target.to_string_lossy().replace(&root, "ROOT")),
        };
        out.insert(p, what);
    }
    let gone: Vec<String> = out
        .keys()
        .filter(|p| {
            let kver = p.strip_prefix("usr/lib/modules/").unwrap_or("");
            !kver.is_empty() && !kver.contains('/') && !kernels.contains(&kver)
        })
        .filter(|p| !out.keys().any(|q| q.starts_with(&format!("{p}/"))))
        .cloned()
        .collect();
    // `dkms add` creates an empty `M/V/build` scratch directory that a build through dkms
    // removes again; after a build in a private tree it stays. Empty, it is harmless.
    let scratch: Vec<String> = out
        .iter()
        .filter(|(p, what)| {
            *what == "dir" && p.ends_with("/build") && p.starts_with("var/lib/dkms/") && p.matches('/').count() == 5
        })
        .map(|(p, _)| p.clone())
        .filter(|p| !out.keys().any(|q| q.starts_with(&format!("{p}/"))))
        .collect();
    for p in gone.into_iter().chain(scratch) {
        out.remove(&p);
    }
    out
}

/// dkms-hook's own leftovers that must not outlive a sync: private build trees, temp files
/// (the state file and the lock stay).
fn own_leftovers(t: &TestRoot) -> Vec<String> {
    let kept = ["var/lib/dkms-hook/state.json", "var/lib/dkms-hook/lock", "var/lib/dkms-hook/build"];
    t.snapshot()
        .into_keys()
        .map(|p| p.to_string_lossy().into_owned())
        .filter(|p| p.starts_with("var/lib/dkms-hook/") && !kept.contains(&p.as_str()))
        .collect()
}

fn state_diff(want: &BTreeMap<String, String>, got: &BTreeMap<String, String>) -> Vec<String> {
    let mut out = Vec::new();
    for (p, w) in want {
        match got.get(p) {
            None => out.push(format!("missing {p} ({})", w.lines().next().unwrap_or(""))),
            Some(g) if g != w => out.push(format!("differs {p}: want {w:?}, got {g:?}")),
            _ => {}
        }
    }
    for (p, g) in got {
        if !want.contains_key(p) {
            out.push(format!("extra {p} ({})", g.lines().next().unwrap_or("")));
        }
    }
    out
}

/// The wrapper script and the directory its counters live in.
struct Flaky {
    script: PathBuf,
    dir: PathBuf,
    /// The trial's root: every dkms call names it in its arguments.
    root: PathBuf,
}

impl Flaky {
    fn new(t: &TestRoot) -> Flaky {
        let dir = t.scratch().join("faults");
        fs::create_dir_all(&dir).unwrap();
        Flaky { script: script(t, "flaky-dkms", FLAKY_DKMS), dir, root: t.root().to_owned() }
    }

    fn calls(&self) -> u64 {
        fs::read_dir(&self.dir)
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with("call."))
            .count() as u64
    }

    fn fired(&self) -> Option<String> {
        fs::read_to_string(self.dir.join("fired")).ok()
    }

    /// A `pause` call is waiting for [`Flaky::release`].
    fn paused(&self) -> bool {
        self.dir.join("paused").exists()
    }

    /// Lets a `pause` call go on.
    fn release(&self) {
        fs::write(self.dir.join("released"), "").unwrap();
    }

    /// Waits until no dkms call is running any more (calls left behind by a killed dkms-hook).
    fn wait_idle(&self) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let running: Vec<String> = fs::read_dir(&self.dir)
                .unwrap()
                .flatten()
                .filter_map(|e| e.file_name().to_string_lossy().strip_prefix("active.").map(str::to_owned))
                .filter(|pid| {
                    fs::read(format!("/proc/{pid}/cmdline"))
                        .is_ok_and(|c| String::from_utf8_lossy(&c).contains(&*self.root.to_string_lossy()))
                        && fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| !s.contains(") Z "))
                })
                .collect();
            if running.is_empty() {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!("dkms calls {running:?} still running 30 s after dkms-hook was killed"));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

/// The outcome of one hook run.
struct Outcome {
    code: Option<i32>,
    output: String,
}

/// Runs dkms-hook with the flaky dkms; with `kill`, SIGKILLs it while the paused dkms call runs
/// (the call goes on once the kill has landed).
fn run_hook(
    t: &TestRoot,
    flaky: &Flaky,
    next: &Path,
    fault: Option<(u64, &str)>,
    args: &[&str],
    stdin: &str,
    kill: bool,
) -> Outcome {
    let mut cmd = Command::new(bin());
    cmd.arg("--root")
        .arg(t.root())
        .arg("--dkms")
        .arg(&flaky.script)
        .arg("--depmod")
        .arg(t.fake_depmod())
        .args(args)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("LD_LIBRARY_PATH", std::env::var_os("LD_LIBRARY_PATH").unwrap_or_default())
        .env("NO_COLOR", "1")
        .env("FAKE_ROOT", t.root())
        .env("FAULT_DIR", &flaky.dir)
        .env("FAULT_NEXT", next)
        .env("FAULT_AT", fault.map_or(0, |f| f.0).to_string())
        .env("FAULT_KIND", fault.map_or("", |f| f.1))
        .current_dir(t.scratch())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("could not start dkms-hook");
    {
        use std::io::Write;
        let mut input = child.stdin.take().unwrap();
        let _ = input.write_all(stdin.as_bytes());
    }
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        use std::io::Read;
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        let mut e = String::new();
        let _ = err.read_to_string(&mut e);
        s + &e
    });
    let started = Instant::now();
    let code = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status.code();
        }
        if kill && flaky.paused() {
            let _ = child.kill();
            let code = child.wait().unwrap().code();
            flaky.release();
            break code;
        }
        if started.elapsed() > Duration::from_secs(60) {
            let _ = child.kill();
            let _ = child.wait();
            return Outcome { code: None, output: "dkms-hook did not finish in 60 s".to_owned() };
        }
        std::thread::sleep(Duration::from_millis(1));
    };
    // A killed dkms-hook leaves its dkms children holding the pipes: read what is there once
    // they are gone.
    if kill {
        let _ = flaky.wait_idle();
    }
    Outcome { code, output: reader.join().unwrap_or_default() }
}

/// What a clean run of a scenario looks like: how many dkms calls it makes.
fn calibration(scenario: Scenario) -> u64 {
    static CALLS: OnceLock<Mutex<BTreeMap<String, u64>>> = OnceLock::new();
    let key = format!("{scenario:?}");
    let cache = CALLS.get_or_init(Default::default);
    if let Some(&n) = cache.lock().unwrap().get(&key) {
        return n;
    }
    let (t, phases) = setup(scenario);
    let flaky = Flaky::new(&t);
    for (i, phase) in phases.iter().enumerate() {
        let run = run_hook(&t, &flaky, &t.fake_dkms(), None, phase.args, &phase.stdin, false);
        assert_eq!(run.code, Some(0), "{scenario:?}: a clean {:?} failed:\n{}", phase.args, run.output);
        // Where the modules stay packaged, nothing of them is touched before the transaction:
        // their sources are kept instead.
        // (After the guard, for the upgrade it records.)
        let last_before = match scenario {
            Scenario::ModuleUpgradeKept => i == 1,
            Scenario::PkgrelRebuild | Scenario::KernelRebuilt => i == 0,
            _ => false,
        };
        if last_before {
            assert_eq!(flaky.calls(), 0, "{scenario:?}: dkms ran before the transaction:\n{}", run.output);
            let sources_change = scenario != Scenario::KernelRebuilt;
            assert!(
                !sources_change || t.path("var/lib/dkms-hook/kept").is_dir(),
                "{scenario:?}: no sources kept:\n{}",
                run.output
            );
        }
        (phase.then)(&t);
    }
    let n = flaky.calls();
    let diff = state_diff(&reference_of(scenario), &state(&t, scenario));
    assert!(
        diff.is_empty(),
        "{scenario:?}: a clean transaction does not reach the desired state:\n  {}",
        diff.join("\n  ")
    );
    cache.lock().unwrap().insert(key, n);
    n
}

fn reference_of(scenario: Scenario) -> BTreeMap<String, String> {
    static REFS: OnceLock<Mutex<BTreeMap<String, BTreeMap<String, String>>>> = OnceLock::new();
    let cache = REFS.get_or_init(Default::default);
    let key = format!("{scenario:?}");
    if let Some(r) = cache.lock().unwrap().get(&key) {
        return r.clone();
    }
    let r = reference(scenario);
    cache.lock().unwrap().insert(key, r.clone());
    r
}

/// Draws a trial from `seed`.
fn draw(seed: u64) -> (Scenario, Fault) {
    let mut rng = Rng::new(seed);
    let scenario = *rng.pick(&SCENARIOS);
    let calls = calibration(scenario);
    let fault = match rng.below(100) {
        0..=24 => Fault::Dkms { at: 1 + rng.below(calls), kind: "fail" },
        25..=44 => Fault::Dkms { at: 1 + rng.below(calls), kind: "crash" },
        45..=62 => Fault::Dkms { at: 1 + rng.below(calls), kind: "crash-after" },
        63..=69 => Fault::Dkms { at: 1 + rng.below(calls), kind: "hang" },
        70..=74 => Fault::Dkms { at: 1 + rng.below(calls), kind: "hang-after" },
        _ => Fault::Kill { at: 1 + rng.below(calls) },
    };
    (scenario, fault)
}

/// Runs one trial; the error says what went wrong.
fn trial(seed: u64) -> Result<String, String> {
    let t0 = Instant::now();
    let (scenario, fault) = draw(seed);
    let (t, phases) = setup(scenario);
    let setup_took = t0.elapsed();
    let flaky = Flaky::new(&t);
    let mut log = format!("seed {seed}: {scenario:?}, {fault:?}\n");
    let (dkms_fault, kill) = match &fault {
        Fault::Dkms { at, kind } => (Some((*at, *kind)), false),
        Fault::Kill { at } => (Some((*at, "pause")), true),
    };
    let mut aborted = false;
    for phase in &phases {
        let guard = phase.args == ["guard"];
        let fired_before = flaky.fired().is_some();
        let run = run_hook(&t, &flaky, &t.fake_dkms(), dkms_fault, phase.args, &phase.stdin, kill);
        log.push_str(&format!(
            "--- dkms-hook {:?} (exit {:?}, at {:?}, setup {setup_took:?}):\n{}",
            phase.args,
            run.code,
            t0.elapsed(),
            run.output
        ));
        if !kill {
            let fired_now = !fired_before && flaky.fired().is_some();
            // A fault must never be reported as success, nor crash dkms-hook; the guard warns
            // about a test build that failed (nothing is critical) and lets the transaction on.
            match (guard, fired_now, run.code) {
                (true, _, Some(0)) | (false, true, Some(1)) | (false, false, Some(0)) => {}
                (_, f, c) => return Err(format!("{log}exit status {c:?} with a fault fired: {f}")),
            }
            if run.output.contains("panicked") {
                return Err(format!("{log}dkms-hook panicked"));
            }
        }
        flaky.wait_idle().map_err(|e| format!("{log}{e}"))?;
        if guard && run.code != Some(0) {
            // A guard that did not finish (killed) makes pacman stop the transaction.
            log.push_str("--- the transaction stops: nothing of it happens\n");
            aborted = true;
            break;
        }
        (phase.then)(&t);
    }
    match flaky.fired() {
        Some(fired) => log.push_str(&format!("--- fault: {fired}")),
        // Every call number drawn is one a clean transaction makes, and a kill trial's paused
        // call is where dkms-hook died: it must have happened.
        None if kill => return Err(format!("{log}the kill never landed: dkms call {:?} never ran", dkms_fault)),
        None => {}
    }
    let sync = run_hook(&t, &flaky, &t.fake_dkms(), None, &["sync"], "", false);
    log.push_str(&format!("--- dkms-hook sync (exit {:?}, at {:?}):\n{}", sync.code, t0.elapsed(), sync.output));
    if sync.code != Some(0) {
        return Err(format!("{log}sync did not succeed"));
    }
    // An aborted transaction leaves the system as it was: both kernels with every module, which
    // is what a transaction bringing both kernels leads to.
    let desired = if aborted { Scenario::NewKernels } else { scenario };
    let diff = state_diff(&reference_of(desired), &state(&t, desired));
    if !diff.is_empty() {
        return Err(format!("{log}after sync the system differs from the desired state:\n  {}", diff.join("\n  ")));
    }
    let leftovers = own_leftovers(&t);
    if !leftovers.is_empty() {
        return Err(format!("{log}dkms-hook's own leftovers after sync:\n  {}", leftovers.join("\n  ")));
    }
    // A second sync has nothing to do, and status agrees that all is well (checked in every
    // third trial: each is a run of its own, and the file must stay fast).
    if !seed.is_multiple_of(3) {
        log.push_str(&format!("--- done at {:?}\n", t0.elapsed()));
        return Ok(log);
    }
    let calls = flaky.calls();
    let again = run_hook(&t, &flaky, &t.fake_dkms(), None, &["sync"], "", false);
    if again.code != Some(0) || flaky.calls() != calls {
        return Err(format!(
            "{log}a second sync was not a no-op (exit {:?}, {} dkms calls):\n{}",
            again.code,
            flaky.calls() - calls,
            again.output
        ));
    }
    let status = run_hook(&t, &flaky, &t.fake_dkms(), None, &["status"], "", false);
    if status.code != Some(0) {
        return Err(format!("{log}status after sync (exit {:?}):\n{}", status.code, status.output));
    }
    log.push_str(&format!("--- done at {:?}\n", t0.elapsed()));
    if std::env::var_os("DKMS_HOOK_FAULT_VERBOSE").is_some() {
        eprintln!("{log}");
    }
    Ok(log)
}

fn seeds() -> Vec<u64> {
    if let Some(seed) = std::env::var("DKMS_HOOK_FAULT_SEED").ok().and_then(|s| s.parse().ok()) {
        return vec![seed];
    }
    let n = std::env::var("DKMS_HOOK_FAULT_TRIALS").ok().and_then(|s| s.parse().ok()).unwrap_or(TRIALS);
    (0..n).map(|i| 0x5eed_0000 + i).collect()
}

#[test]
fn any_fault_then_sync_reaches_the_desired_state() {
    let seeds = seeds();
    let started = Instant::now();
    // Calibrate first, so workers do not race to do it.
    for s in SCENARIOS {
        calibration(s);
        reference_of(s);
    }
    let next = Mutex::new(0usize);
    let failures: Mutex<Vec<(u64, String)>> = Mutex::new(Vec::new());
    let kinds: Mutex<BTreeMap<String, usize>> = Mutex::new(BTreeMap::new());
    std::thread::scope(|scope| {
        for _ in 0..3 {
            scope.spawn(|| loop {
                let i = {
                    let mut n = next.lock().unwrap();
                    *n += 1;
                    *n - 1
                };
                let Some(&seed) = seeds.get(i) else { break };
                let (scenario, fault) = draw(seed);
                let kind = match fault {
                    Fault::Dkms { kind, .. } => kind.to_owned(),
                    Fault::Kill { .. } => "sigkill".to_owned(),
                };
                *kinds.lock().unwrap().entry(format!("{scenario:?}/{kind}")).or_default() += 1;
                if let Err(e) = trial(seed) {
                    failures.lock().unwrap().push((seed, e));
                }
            });
        }
    });
    let failures = failures.into_inner().unwrap();
    eprintln!("{} fault trials in {:?}: {:?}", seeds.len(), started.elapsed(), kinds.into_inner().unwrap());
    if !failures.is_empty() {
        let mut msg = format!(
            "{} of {} trials failed; replay one with DKMS_HOOK_FAULT_SEED=<seed>\n",
            failures.len(),
            seeds.len()
        );
        for (seed, e) in failures.iter().take(3) {
            msg.push_str(&format!("\n===== seed {seed} =====\n{e}\n"));
        }
        msg.push_str("\nall failures (seed: trial; what went wrong):\n");
        for (_, e) in &failures {
            let first = e.lines().next().unwrap_or("");
            let why = e.lines().rev().find(|l| !l.starts_with("  ")).unwrap_or("");
            let detail = e.lines().rev().find(|l| l.starts_with("  ")).unwrap_or("").trim();
            msg.push_str(&format!("  {first}; {why} {detail}\n"));
        }
        panic!("{msg}");
    }
}

// ---------------------------------------------------------------------------------------------
// The real dkms

/// The real Debian kernels whose headers this machine has.
const REAL_KERNELS: [&str; 2] = ["6.1.0-47-amd64", "6.1.0-47-cloud-amd64"];

const MODULE_C: &str = r#"#include <linux/module.h>
MODULE_LICENSE("GPL");
static int __init m_init(void) { return 0; }
static void __exit m_exit(void) {}
module_init(m_init);
module_exit(m_exit);
"#;

/// A fixture root for the real dkms: real headers copied in (their relative `scripts`/`tools`
/// links made absolute), `lib -> usr/lib` for `depmod -b`, two small modules.
fn real_root() -> Option<TestRoot> {
    let dkms = Path::new("/usr/sbin/dkms");
    let missing: Vec<String> = REAL_KERNELS
        .iter()
        .map(|k| format!("/usr/src/linux-headers-{k}"))
        .chain([dkms.display().to_string()])
        .filter(|p| !Path::new(p).exists())
        .collect();
    let missing = skip::root_missing()
        .or_else(|| (!missing.is_empty()).then(|| format!("it needs {}: run scripts/setup", missing.join(", "))));
    if !skip::can_run("fault injection with the real dkms", missing) {
        return None;
    }
    let t = TestRoot::new();
    std::os::unix::fs::symlink("usr/lib", t.path("lib")).unwrap();
    for (i, k) in REAL_KERNELS.iter().enumerate() {
        let (kpkg, hpkg) = if i == 0 { ("linux", "linux-headers") } else { ("linux-cloud", "linux-cloud-headers") };
        t.kernel(kpkg, k).headers(hpkg, k);
        let build = t.path(&format!("usr/lib/modules/{k}/build"));
        fs::remove_dir_all(&build).unwrap();
        let ok = Command::new("cp").arg("-a").arg(format!("/usr/src/linux-headers-{k}")).arg(&build).status().unwrap();
        assert!(ok.success(), "could not copy the headers of {k}");
        for link in ["scripts", "tools"] {
            let path = build.join(link);
            if let Ok(target) = fs::read_link(&path) {
                let abs = Path::new("/usr/src").join(format!("linux-headers-{k}")).join(&target);
                let abs = fs::canonicalize(&abs).unwrap_or(abs);
                fs::remove_file(&path).unwrap();
                std::os::unix::fs::symlink(abs, &path).unwrap();
            }
        }
    }
    for m in ["rhello", "rworld"] {
        let dir = format!("{m}-1.0");
        t.module_pkg(
            &pkg(m),
            &dir,
            &format!(
                "PACKAGE_NAME={m}\nPACKAGE_VERSION=1.0\nBUILT_MODULE_NAME[0]={m}\nDEST_MODULE_LOCATION[0]=/updates/dkms\n\
                 MAKE[0]=\"make -C ${{kernel_source_dir}} M=${{dkms_tree}}/{m}/1.0/build modules\"\n\
                 CLEAN=\"make -C ${{kernel_source_dir}} M=${{dkms_tree}}/{m}/1.0/build clean\"\nAUTOINSTALL=yes\n"
            ),
        );
        fs::write(t.path(&format!("usr/src/{dir}/Makefile")), format!("obj-m := {m}.o\n")).unwrap();
        fs::write(t.path(&format!("usr/src/{dir}/{m}.c")), MODULE_C).unwrap();
    }
    Some(t)
}

/// Processes still working on this root (dkms, make, gcc left by a killed dkms-hook).
fn wait_for_root_processes(t: &TestRoot) {
    let needle = t.root().to_string_lossy().into_owned();
    let deadline = Instant::now() + Duration::from_secs(120);
    while !processes_mentioning(&needle).is_empty() {
        assert!(Instant::now() < deadline, "processes on {needle} still running after 120 s");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits until `n` distinct `make` processes building in `t`'s root have been seen (the n-th
/// build has started compiling); returns whether that build's make still runs.
fn wait_for_builds(t: &TestRoot, n: usize) -> bool {
    let root = t.root().to_string_lossy().into_owned();
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut seen = std::collections::BTreeSet::new();
    loop {
        let makes: Vec<i32> = processes_mentioning(&root)
            .into_iter()
            .filter(|pid| {
                fs::read(format!("/proc/{pid}/cmdline"))
                    .is_ok_and(|c| c.split(|&b| b == 0).next().is_some_and(|argv0| argv0.ends_with(b"make")))
            })
            .collect();
        seen.extend(makes.iter().copied());
        if seen.len() >= n {
            return makes.iter().any(|p| Path::new(&format!("/proc/{p}")).exists());
        }
        assert!(Instant::now() < deadline, "build {n} never started ({} seen)", seen.len());
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn real_dkms_killed_mid_build_then_sync() {
    let Some(t) = real_root() else { return };
    let depmod = ["/usr/sbin/depmod", "/sbin/depmod"].into_iter().find(|p| Path::new(p).exists()).unwrap_or("depmod");
    let stdin: String = REAL_KERNELS
        .iter()
        .map(|k| format!("usr/lib/modules/{k}/build/include/\nusr/lib/modules/{k}/modules.order\n"))
        .collect();
    let mut rng = Rng::new(0x7ea1);
    for trial in 0..REAL_TRIALS {
        // Start from nothing built: the tree and the modules' install dirs emptied by dkms itself.
        let root = t.root().display().to_string();
        let base = ["--root", &root, "--dkms", "/usr/sbin/dkms", "--depmod", depmod];
        // Killed once the chosen build (of 4: 2 modules x 2 kernels) has started compiling.
        let at_build = 1 + rng.below(4) as usize;
        let mut cmd = Command::new(bin());
        cmd.args(base).arg("install").stdin(Stdio::piped()).stdout(Stdio::null()).stderr(Stdio::null());
        let mut child = cmd.spawn().unwrap();
        {
            use std::io::Write;
            let _ = child.stdin.take().unwrap().write_all(stdin.as_bytes());
        }
        let compiling = wait_for_builds(&t, at_build);
        let finished = child.try_wait().unwrap().is_some();
        let _ = child.kill();
        let _ = child.wait();
        assert!(
            !finished && compiling,
            "trial {trial}: the kill must land while build {at_build} compiles (finished: {finished})"
        );
        wait_for_root_processes(&t);
        let mut args: Vec<&str> = base.to_vec();
        args.push("sync");
        let run = t.run_raw(&args, "", &[]);
        assert_eq!(run.code, Some(0), "trial {trial} (killed during build {at_build}): sync failed\n{run}");
        for k in REAL_KERNELS {
            for m in ["rhello", "rworld"] {
                assert_eq!(
                    t.installed_for(m, k).as_deref(),
                    Some("1.0"),
                    "trial {trial}: {m} not installed for {k}\n{run}"
                );
                let ko = t.path(&format!("usr/lib/modules/{k}/updates/dkms/{m}.ko"));
                let bytes = fs::read(&ko).unwrap_or_else(|e| panic!("trial {trial}: {}: {e}\n{run}", ko.display()));
                let magic = format!("vermagic={k} ");
                assert!(
                    bytes.windows(magic.len()).any(|w| w == magic.as_bytes()),
                    "trial {trial}: {} is not built for {k}",
                    ko.display()
                );
            }
            let files: Vec<String> = fs::read_dir(t.path(&format!("usr/lib/modules/{k}/updates/dkms")))
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            assert_eq!(files.len(), 2, "trial {trial}: {k}: {files:?}");
        }
        let versions: Vec<String> = ["rhello", "rworld"]
            .iter()
            .flat_map(|m| fs::read_dir(t.path(&format!("var/lib/dkms/{m}"))).unwrap())
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| !n.starts_with("kernel-"))
            .collect();
        assert_eq!(versions, ["1.0", "1.0"], "trial {trial}: stale versions in the dkms tree");
        let leftovers = own_leftovers(&t);
        assert!(leftovers.is_empty(), "trial {trial}: dkms-hook's leftovers: {leftovers:?}");
        eprintln!("real trial {trial}: killed while build {at_build} compiled; sync repaired it");
        // Undo for the next trial: remove everything through dkms.
        let mut args: Vec<&str> = base.to_vec();
        args.push("remove");
        let gone: String = ["rhello-1.0", "rworld-1.0"].iter().map(|d| format!("usr/src/{d}/dkms.conf\n")).collect();
        let run = t.run_raw(&args, gone, &[]);
        assert_eq!(run.code, Some(0), "{run}");
        assert!(!t.is_registered("rhello", "1.0") && !t.is_registered("rworld", "1.0"), "{run}");
    }
}
