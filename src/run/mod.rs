//! The only code that spawns processes: dkms jobs, depmod, module decompression for the
//! vermagic check, and the clean-up of empty directories dkms leaves behind.
//!
//! Jobs run in parallel under one CPU budget: at most `jobs` dkms at once, each told
//! `make -j N` so the total stays near the core count. A job starts only when the jobs it
//! depends on (BUILD_DEPENDS, removals before unregistering) have succeeded. dkms keeps one build
//! directory per module version (`DKMSTREE/M/V/build`), so two jobs of the same module version
//! never touch the real tree at once: when one module version is installed for several
//! kernels, each kernel's build runs in a private dkms tree, in parallel, and only moving the
//! result in and the quick `dkms install` hold the module version's lock.
//!
//! A job's result is a value (`Outcome`): a failed build does not stop independent jobs, and
//! "could not start dkms" is kept apart from "dkms failed". Workers never print: the runner
//! hands each finished job to the caller's event sink, on the caller's thread.

mod command;
mod vermagic;

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Mutex};
use std::time::{Duration, Instant};

use crate::config::Layout;
use crate::plan::{Job, JobKind, ModuleId, Plan};
use command::Limits;
pub use command::Tools;

use crate::interrupt::Stop;
use crate::process::Finished;

/// What became of one job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Built (if needed) and installed; the built modules name the right kernel.
    Installed,
    /// Removed from one kernel.
    Removed,
    /// Dropped from the dkms tree.
    Unregistered,
    /// dkms declined: BUILD_EXCLUSIVE_* does not match this kernel (dkms exit 77).
    Skipped,
    /// dkms ran and failed.
    Failed {
        /// dkms's exit code (`None` when killed by a signal).
        code: Option<i32>,
        /// What the code means, in dkms's terms.
        meaning: &'static str,
        /// The build log, when dkms left one.
        log: Option<PathBuf>,
        /// The last lines of the build log (or of dkms's output).
        tail: Vec<String>,
    },
    /// dkms said it installed, but a built module's vermagic names another kernel (a Makefile
    /// that builds for `uname -r`).
    WrongKernel { module: PathBuf, vermagic: String },
    /// dkms could not be started at all.
    ExecFailed { error: String },
    /// Not run because a job it depends on did not succeed.
    DependencyFailed { dependency: String },
    /// Killed after running longer than the job timeout.
    TimedOut { after: Duration },
    /// Stopped, or never started, because dkms-hook was interrupted (SIGINT/SIGTERM).
    Interrupted,
}

impl Outcome {
    /// True for outcomes that make the run fail.
    pub fn is_failure(&self) -> bool {
        !matches!(self, Outcome::Installed | Outcome::Removed | Outcome::Unregistered | Outcome::Skipped)
    }
}

/// One finished job.
#[derive(Debug, Clone)]
pub struct JobResult {
    pub outcome: Outcome,
    pub duration: Duration,
    /// dkms's combined stdout and stderr (all dkms calls of the job).
    pub output: String,
}

/// What the runner tells its caller, in order.
#[derive(Debug)]
pub enum Event<'a> {
    /// A job finished; `index` counts finished jobs (0-based) out of `total`.
    JobFinished { index: usize, total: usize, job: &'a Job, result: &'a JobResult },
    /// depmod ran for a kernel.
    Depmod { kver: &'a str, result: Result<Duration, String> },
}

/// The totals that decide the exit status.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Stats {
    pub installed: usize,
    pub removed: usize,
    pub skipped: usize,
    pub failed: usize,
    pub depmod_failed: usize,
    /// Jobs stopped or never started because of SIGINT/SIGTERM.
    pub interrupted: usize,
}

/// Lines of a log shown with a failure.
const TAIL_LINES: usize = 20;

/// Runs a plan: jobs in parallel where safe, then depmod once per kernel.
pub struct Runner<'a> {
    pub tools: &'a Tools,
    pub layout: &'a Layout,
    /// dkms processes at once; 0 chooses from the core count.
    pub jobs: usize,
    /// A dkms call running longer than this is killed (its whole process group) and failed.
    pub timeout: Option<Duration>,
    /// Set (by a signal handler) to stop: no new jobs start, running dkms are terminated.
    pub stop: &'a Stop,
}

/// How a job runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// One dkms call in the real tree, holding the module version's lock throughout.
    Direct,
    /// `dkms build` in a private tree without the lock, then move in and `dkms install` with it.
    PrivateBuild,
}

impl Runner<'_> {
    /// The number of CPUs to budget for.
    pub fn cores() -> usize {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    }

    /// Runs every job, reporting each through `sink` as it finishes; returns the totals.
    pub fn run(&self, plan: &Plan, sink: &mut dyn FnMut(Event)) -> Stats {
        let cores = Self::cores();
        let parallel = if self.jobs == 0 { cores } else { self.jobs }.max(1);
        let may_build_privately = self.may_build_privately(plan, parallel);
        let total = plan.jobs.len();
        let locks: BTreeMap<&ModuleId, Mutex<()>> = plan.jobs.iter().map(|j| (&j.module, Mutex::new(()))).collect();
        // The first build creates dkms's signing key if there is none; two first builds at
        // once race on creating it, so until the key exists one install runs at a time.
        let (key, cert) = command::signing_key(self.layout);
        let key_exists = || key.exists() && cert.exists();
        let mut key_pending = parallel > 1 && !key_exists();

        let mut stats = Stats::default();
        let mut outcomes: Vec<Option<Outcome>> = vec![None; total];
        let mut started = vec![false; total];
        let mut running: BTreeSet<usize> = BTreeSet::new();
        let mut finished = 0;
        let (tx, rx) = mpsc::channel::<(usize, JobResult)>();

        std::thread::scope(|scope| loop {
            // Settle jobs that can no longer run: a failed dependency, or a stop request.
            let stopping = self.stop.is_set();
            for i in 0..total {
                if started[i] {
                    continue;
                }
                let failed_dep =
                    plan.jobs[i].after.iter().find(|&&d| outcomes[d].as_ref().is_some_and(Outcome::is_failure));
                let outcome = match failed_dep {
                    Some(&d) => Outcome::DependencyFailed { dependency: plan.jobs[d].to_string() },
                    None if stopping => Outcome::Interrupted,
                    None => continue,
                };
                started[i] = true;
                let result = JobResult { outcome, duration: Duration::ZERO, output: String::new() };
                self.record(&mut stats, &result.outcome);
                sink(Event::JobFinished { index: finished, total, job: &plan.jobs[i], result: &result });
                finished += 1;
                outcomes[i] = Some(result.outcome);
            }
            // Start what may start: first a job whose module version nothing running uses (it
            // runs directly in the real tree); only when there is none, a job of a busy module
            // version that may build in a private tree (which costs a few extra dkms calls).
            loop {
                // Removals are short shell work with no make of their own: one more of them
                // fills the gaps between the others' process starts.
                let slot_free =
                    |i: usize| running.len() < parallel || (!plan.jobs[i].is_install() && running.len() < parallel + 1);
                // While the signing key does not exist, one install at a time.
                let install_may_start = !key_pending || !running.iter().any(|&r| plan.jobs[r].is_install());
                let ready = |i: usize| {
                    !started[i]
                        && slot_free(i)
                        && (install_may_start || !plan.jobs[i].is_install())
                        && plan.jobs[i].after.iter().all(|&d| outcomes[d].as_ref().is_some_and(|o| !o.is_failure()))
                };
                let busy = |i: usize| running.iter().any(|&r| plan.jobs[r].module == plan.jobs[i].module);
                let next = (0..total).find(|&i| ready(i) && !busy(i)).map(|i| (i, Mode::Direct)).or_else(|| {
                    (0..total).find(|&i| ready(i) && may_build_privately[i]).map(|i| (i, Mode::PrivateBuild))
                });
                let Some((i, mode)) = next else { break };
                started[i] = true;
                running.insert(i);
                let remaining = total - finished;
                let make_jobs = (cores / parallel.min(remaining).max(1)).max(1);
                let tx = tx.clone();
                let job = &plan.jobs[i];
                let lock = &locks[&job.module];
                scope.spawn(move || {
                    let result = self.run_job(job, mode, lock, make_jobs);
                    let _ = tx.send((i, result));
                });
            }
            if running.is_empty() {
                break;
            }
            let Ok((i, result)) = rx.recv() else { break };
            running.remove(&i);
            if key_pending && plan.jobs[i].is_install() {
                key_pending = !key_exists();
            }
            self.record(&mut stats, &result.outcome);
            sink(Event::JobFinished { index: finished, total, job: &plan.jobs[i], result: &result });
            finished += 1;
            outcomes[i] = Some(result.outcome);
        });

        // Nothing may be silently dropped: a job that never started (its dependencies never
        // finished) is reported as such.
        for i in (0..total).filter(|&i| !started[i]) {
            let result = JobResult {
                outcome: Outcome::ExecFailed { error: "not started: the jobs it depends on never finished".into() },
                duration: Duration::ZERO,
                output: String::new(),
            };
            self.record(&mut stats, &result.outcome);
            sink(Event::JobFinished { index: finished, total, job: &plan.jobs[i], result: &result });
            finished += 1;
        }

        self.tidy(plan);
        // depmod is quick and leaves the kernel consistent with what was installed, so it runs
        // to the end even after a stop request (only the timeout applies).
        let never = Stop::new();
        let limits = Limits { timeout: self.timeout, stop: &never };
        let depmods: Vec<(&String, Result<Duration, String>)> = std::thread::scope(|scope| {
            let handles: Vec<_> = plan
                .depmod
                .iter()
                .map(|kver| {
                    scope.spawn(move || {
                        let t = Instant::now();
                        (kver, self.tools.depmod(self.layout, kver, limits).map(|()| t.elapsed()))
                    })
                })
                .collect();
            handles.into_iter().filter_map(|h| h.join().ok()).collect()
        });
        for (kver, result) in depmods {
            if result.is_err() {
                stats.depmod_failed += 1;
            }
            sink(Event::Depmod { kver, result });
        }
        stats
    }

    fn record(&self, stats: &mut Stats, outcome: &Outcome) {
        match outcome {
            Outcome::Installed => stats.installed += 1,
            Outcome::Removed | Outcome::Unregistered => stats.removed += 1,
            Outcome::Skipped => stats.skipped += 1,
            Outcome::Interrupted => stats.interrupted += 1,
            _ => stats.failed += 1,
        }
    }

    /// Which jobs may build in a private tree when their module version is busy: install jobs
    /// whose module version is installed for more than one kernel in this plan and not yet
    /// built for theirs. A module with BUILD_DEPENDS builds in the real tree: dkms (≥ 3.1) looks
    /// for the dependencies in the tree it builds in.
    fn may_build_privately(&self, plan: &Plan, parallel: usize) -> Vec<bool> {
        let mut per_module: BTreeMap<&ModuleId, usize> = BTreeMap::new();
        for job in plan.jobs.iter().filter(|j| j.is_install()) {
            *per_module.entry(&job.module).or_default() += 1;
        }
        plan.jobs
            .iter()
            .map(|job| {
                matches!(&job.kind, JobKind::Install { kernel }
                    if parallel > 1
                        && per_module[&job.module] > 1
                        && !plan.build_depends.contains_key(&job.module)
                        && !self.built_dir(&job.module, kernel).exists())
            })
            .collect()
    }

    /// `DKMSTREE/M/V/K`: where dkms keeps a module version's build for a kernel.
    fn built_dir(&self, module: &ModuleId, kernel: &str) -> PathBuf {
        self.layout.dkms_tree.join(&module.name).join(&module.version).join(kernel)
    }

    /// Runs one job and judges its result.
    fn run_job(&self, job: &Job, mode: Mode, lock: &Mutex<()>, make_jobs: usize) -> JobResult {
        let started = Instant::now();
        let limits = Limits { timeout: self.timeout, stop: self.stop };
        let mut output = String::new();
        let outcome = match mode {
            Mode::Direct => {
                let _guard = lock.lock().unwrap_or_else(|e| e.into_inner());
                self.direct(job, make_jobs, limits, started, &mut output)
            }
            Mode::PrivateBuild => self.private_build(job, lock, make_jobs, limits, started, &mut output),
        };
        JobResult { outcome, duration: started.elapsed(), output }
    }

    fn direct(&self, job: &Job, make_jobs: usize, limits: Limits, started: Instant, output: &mut String) -> Outcome {
        let registered = self.layout.dkms_tree.join(&job.module.name).join(&job.module.version);
        if job.kind == JobKind::Unregister && registered.symlink_metadata().is_err() {
            // dkms drops a module version from its tree when the last kernel's build is
            // removed: there is nothing left to unregister.
            return Outcome::Unregistered;
        }
        let make_jobs = job.is_install().then_some(make_jobs);
        let args = command::dkms_args(self.layout, job);
        let log = self.layout.dkms_tree.join(&job.module.name).join(&job.module.version).join("build/make.log");
        self.call(args, make_jobs, limits, output, started, job, &log)
    }

    /// Runs one dkms call and judges it for `job`.
    #[allow(clippy::too_many_arguments)]
    fn call(
        &self,
        args: Vec<OsString>,
        make_jobs: Option<usize>,
        limits: Limits,
        output: &mut String,
        started: Instant,
        job: &Job,
        log: &Path,
    ) -> Outcome {
        let captured = match self.tools.dkms(self.layout, args, make_jobs, limits) {
            Ok(c) => c,
            Err(error) => return Outcome::ExecFailed { error },
        };
        output.push_str(&captured.text());
        self.judge(job, &captured, started, log)
    }

    fn judge(&self, job: &Job, captured: &Finished, started: Instant, log: &Path) -> Outcome {
        if captured.interrupted {
            return Outcome::Interrupted;
        }
        if captured.timed_out {
            return Outcome::TimedOut { after: started.elapsed() };
        }
        match (captured.code(), &job.kind) {
            (Some(0), JobKind::Install { kernel }) if !self.is_installed(job, kernel) => Outcome::Failed {
                code: Some(0),
                meaning: "dkms reported success, but the module is not installed (a full or read-only disk?)",
                log: None,
                tail: excerpt(&captured.text(), TAIL_LINES),
            },
            (Some(0), JobKind::Install { kernel }) => match self.check_vermagic(job, kernel) {
                Ok(wrong @ Outcome::WrongKernel { .. }) => {
                    // A module built for another kernel must not stay installed for this one.
                    self.undo_install(job);
                    wrong
                }
                Ok(other) => other,
                Err(damage) => {
                    self.undo_install(job);
                    let mut tail = excerpt(&captured.text(), TAIL_LINES);
                    tail.push(damage);
                    Outcome::Failed {
                        code: Some(0),
                        meaning: "dkms reported success, but a built module is damaged (a full disk?)",
                        log: None,
                        tail,
                    }
                }
            },
            (Some(0), JobKind::Remove { .. }) => Outcome::Removed,
            (Some(0), JobKind::Unregister) => Outcome::Unregistered,
            // 3: "not located in the DKMS tree" — already gone, which is what removal wants.
            (Some(3), JobKind::Remove { .. }) => Outcome::Removed,
            (Some(3), JobKind::Unregister) => Outcome::Unregistered,
            (Some(77), _) => Outcome::Skipped,
            (code, _) => {
                let log = (log.is_file() && modified_since(log, started)).then(|| log.to_path_buf());
                let text = match &log {
                    Some(l) => std::fs::read_to_string(l).unwrap_or_default(),
                    None => captured.text(),
                };
                Outcome::Failed { code, meaning: exit_meaning(code), log, tail: excerpt(&text, TAIL_LINES) }
            }
        }
    }

    /// Builds in a private dkms tree, then moves the build into the real tree and installs it
    /// there under the module version's lock.
    fn private_build(
        &self,
        job: &Job,
        lock: &Mutex<()>,
        make_jobs: usize,
        limits: Limits,
        started: Instant,
        output: &mut String,
    ) -> Outcome {
        let kernel = job.kernel().unwrap_or_default();
        let tree = private_root(self.layout).join(format!("{}-{}-{}", job.module.name, job.module.version, kernel));
        let _ = std::fs::remove_dir_all(&tree);
        if let Err(e) = std::fs::create_dir_all(&tree) {
            return Outcome::ExecFailed { error: format!("failed to create {}: {e}", tree.display()) };
        }
        let args = command::private_build_args(self.layout, job, &tree);
        let log = tree.join(&job.module.name).join(&job.module.version).join("build/make.log");
        let built = tree.join(&job.module.name).join(&job.module.version).join(kernel);
        let captured = match self.tools.dkms(self.layout, args, Some(make_jobs), limits) {
            Ok(c) => c,
            Err(error) => {
                let _ = std::fs::remove_dir_all(&tree);
                return Outcome::ExecFailed { error };
            }
        };
        output.push_str(&captured.text());
        // A private build is only built, not installed. A failed build's private tree stays
        // (its make.log is named in the report and copied into dkms-hook's log) until the next
        // run takes the lock; any other outcome needs nothing of it.
        let failure = match captured.code() {
            _ if captured.interrupted => Some(Outcome::Interrupted),
            _ if captured.timed_out => Some(Outcome::TimedOut { after: started.elapsed() }),
            Some(0) if built.is_dir() => None,
            Some(0) => Some(Outcome::Failed {
                code: Some(0),
                meaning: "dkms reported success, but built nothing (a full or read-only disk?)",
                log: None,
                tail: excerpt(&captured.text(), TAIL_LINES),
            }),
            Some(77) => Some(Outcome::Skipped),
            code => {
                let text = std::fs::read_to_string(&log).unwrap_or_else(|_| captured.text());
                let log = log.is_file().then(|| log.clone());
                return Outcome::Failed { code, meaning: exit_meaning(code), log, tail: excerpt(&text, TAIL_LINES) };
            }
        };
        if let Some(outcome) = failure {
            let _ = std::fs::remove_dir_all(&tree);
            return outcome;
        }
        let _guard = lock.lock().unwrap_or_else(|e| e.into_inner());
        let registered = self.layout.dkms_tree.join(&job.module.name).join(&job.module.version).join("source");
        if registered.symlink_metadata().is_err() {
            let args = command::add_args(self.layout, job);
            let added = self.tools.dkms(self.layout, args, None, limits);
            match added {
                Ok(c) if c.code() == Some(0) || c.code() == Some(3) => output.push_str(&c.text()),
                Ok(c) => {
                    output.push_str(&c.text());
                    return self.judge(job, &c, started, &log);
                }
                Err(error) => return Outcome::ExecFailed { error },
            }
        }
        let target = self.built_dir(&job.module, kernel);
        if !target.exists() {
            if let Err(e) = std::fs::rename(&built, &target) {
                // Another file system (EXDEV) or a surprise: build in the real tree instead.
                log::debug!("cannot move {} to {}: {e}; building in place", built.display(), target.display());
            }
        }
        let outcome = self.direct(job, make_jobs, limits, started, output);
        let _ = std::fs::remove_dir_all(&tree);
        outcome
    }

    /// What dkms leaves when it installed `M/V` for `kernel`: the link `M/kernel-K-ARCH` to
    /// `V/K/ARCH`, and the built modules it points at.
    fn is_installed(&self, job: &Job, kernel: &str) -> bool {
        let mdir = self.layout.dkms_tree.join(&job.module.name);
        let prefix = format!("kernel-{kernel}-");
        let linked = std::fs::read_dir(&mdir).into_iter().flatten().flatten().any(|entry| {
            entry.file_name().to_str().is_some_and(|n| n.starts_with(&prefix))
                && std::fs::read_link(entry.path())
                    .is_ok_and(|t| t.starts_with(Path::new(&job.module.version).join(kernel)))
        });
        linked
            && !crate::inventory::dkms_tree::built_modules(
                &self.layout.dkms_tree,
                &job.module.name,
                &job.module.version,
                kernel,
            )
            .is_empty()
    }

    /// Removes what an install job installed (through dkms), after the result proved wrong.
    fn undo_install(&self, job: &Job) {
        let Some(kernel) = job.kernel() else { return };
        let remove =
            Job { kind: JobKind::Remove { kernel: kernel.to_owned() }, module: job.module.clone(), after: vec![] };
        let never = Stop::new();
        let limits = Limits { timeout: self.timeout, stop: &never };
        match self.tools.dkms(self.layout, command::dkms_args(self.layout, &remove), None, limits) {
            Ok(c) if c.code() == Some(0) => {}
            Ok(c) => log::warn!("could not remove {remove}: dkms exit {:?}: {}", c.code(), c.text().trim()),
            Err(e) => log::warn!("could not remove {remove}: {e}"),
        }
    }

    /// After an install, every built module must carry `vermagic=KVER …`; a module whose
    /// vermagic cannot be read at all is damaged (the error says which).
    fn check_vermagic(&self, job: &Job, kernel: &str) -> Result<Outcome, String> {
        let built = crate::inventory::dkms_tree::built_modules(
            &self.layout.dkms_tree,
            &job.module.name,
            &job.module.version,
            kernel,
        );
        for module in built {
            match vermagic::read(&module) {
                Ok(magic) if magic.split_whitespace().next() == Some(kernel) => {}
                Ok(magic) => return Ok(Outcome::WrongKernel { module, vermagic: magic }),
                Err(e) => return Err(format!("{}: {e}", module.display())),
            }
        }
        Ok(Outcome::Installed)
    }

    /// dkms removes modules but can leave `updates/dkms/` and `updates/` empty; an empty
    /// directory we leave would keep a removed kernel's module directory alive, and the module
    /// directory of a kernel that is gone is then empty too.
    fn tidy(&self, plan: &Plan) {
        for job in &plan.jobs {
            if let JobKind::Remove { kernel } = &job.kind {
                let kdir = self.layout.kernel_dir(kernel);
                let mut dirs = vec![kdir.join("updates/dkms"), kdir.join("updates")];
                if plan.gone_kernels.contains(kernel) {
                    dirs.push(kdir);
                }
                for dir in dirs {
                    // remove_dir only removes an empty directory: nothing of anyone's is lost.
                    let _ = std::fs::remove_dir(dir);
                }
            }
        }
    }
}

/// Where private dkms trees live: dkms-hook's own directory beside the dkms tree, on the same
/// file system so a finished build moves in with one rename.
fn private_root(layout: &Layout) -> PathBuf {
    layout.own_dir().join("build")
}

/// Deletes private build trees an interrupted run left behind (call with the lock held).
pub fn clear_private_trees(layout: &Layout) {
    let _ = std::fs::remove_dir_all(private_root(layout));
}

/// Fails early, changing nothing, when what the jobs must write is on a read-only file system.
pub fn preflight(layout: &Layout) -> anyhow::Result<()> {
    use nix::sys::statvfs::{statvfs, FsFlags};
    for (what, path) in [("the dkms tree", &layout.dkms_tree), ("the kernel module directory", &layout.module_dir)] {
        // The nearest existing directory tells which file system the path is on.
        let Some(existing) = path.ancestors().find(|p| p.exists()) else { continue };
        if statvfs(existing).is_ok_and(|s| s.flags().contains(FsFlags::ST_RDONLY)) {
            anyhow::bail!(
                "{what} {} is on a read-only file system: remount it read-write (`mount -o remount,rw {}`), then run `dkms-hook sync`",
                path.display(),
                existing.display()
            );
        }
    }
    Ok(())
}

fn modified_since(path: &Path, started: Instant) -> bool {
    let age = started.elapsed();
    path.metadata()
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.elapsed().ok())
        .is_none_or(|since| since <= age + Duration::from_secs(1))
}

/// The last `n` non-empty lines of `text`.
pub fn tail(text: &str, n: usize) -> Vec<String> {
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(n)..].iter().map(|l| l.trim_end().to_owned()).collect()
}

/// What to show of a failed build's log: its last `n` lines, preceded by the first compiler
/// error when that scrolled out of them (the first error names the cause; later ones cascade).
pub fn excerpt(text: &str, n: usize) -> Vec<String> {
    let mut lines = tail(text, n);
    let first_error = text.lines().find(|l| l.contains("error:") || l.contains("Error:")).map(str::trim_end);
    if let Some(first) = first_error {
        if !lines.iter().any(|l| l == first) {
            lines.insert(0, "…".to_owned());
            lines.insert(0, first.to_owned());
        }
    }
    lines
}

/// dkms's exit codes, in its own terms (dkms 3.0–3.4).
pub fn exit_meaning(code: Option<i32>) -> &'static str {
    match code {
        None => "killed by a signal",
        Some(1) | Some(2) => "usage error, missing kernel headers or not root",
        Some(3) => "module already added or not added",
        Some(4) => "bad dkms.conf or missing source",
        Some(5) => "module version not found",
        Some(6) => "install tree for the kernel is missing",
        Some(7) => "built module has an unexpected name",
        Some(8) => "bad dkms.conf",
        Some(10) => "the module build (make) failed",
        Some(11) => "autoinstall had a failure",
        Some(13) => "BUILD_DEPENDS not installed",
        Some(21) => "kernel headers missing",
        Some(_) => "dkms failed",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_keeps_the_last_non_empty_lines() {
        let text = "a\n\nb\nc\n  \nd\n";
        assert_eq!(tail(text, 2), ["c", "d"]);
        assert_eq!(tail(text, 10), ["a", "b", "c", "d"]);
        assert!(tail("", 3).is_empty());
    }

    #[test]
    fn excerpt_keeps_the_first_compiler_error() {
        let mut log = String::from("make -C build\nhello.c:3:1: error: expected ';'\n");
        for i in 0..30 {
            log.push_str(&format!("hello.c:{i}: error: cascade {i}\n"));
        }
        let e = excerpt(&log, 5);
        assert_eq!(e[0], "hello.c:3:1: error: expected ';'");
        assert_eq!(e[1], "…");
        assert_eq!(e.len(), 7);
        assert_eq!(excerpt("a\nx: error: y\nb\n", 5), ["a", "x: error: y", "b"]);
    }

    #[test]
    fn failures_are_the_outcomes_that_count_against_the_run() {
        assert!(!Outcome::Skipped.is_failure());
        assert!(!Outcome::Installed.is_failure());
        assert!(Outcome::ExecFailed { error: "x".into() }.is_failure());
        assert!(Outcome::DependencyFailed { dependency: "x".into() }.is_failure());
        assert!(Outcome::Interrupted.is_failure());
        assert_eq!(exit_meaning(Some(10)), "the module build (make) failed");
    }
}
