//! The only code that spawns processes: dkms jobs, depmod, module decompression for the
//! vermagic check, and the clean-up of empty directories dkms leaves behind.
//!
//! A job's result is a value (`Outcome`): a failed build does not stop the others, and "could
//! not start dkms" is kept apart from "dkms failed". Workers never print: the runner hands each
//! finished job to the caller's event sink, which owns the output.

mod command;
mod vermagic;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::config::Layout;
use crate::plan::{Job, JobKind, Plan};
pub use command::Tools;

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
    /// dkms's combined stdout and stderr.
    pub output: String,
}

/// What the runner tells its caller, in order.
#[derive(Debug)]
pub enum Event<'a> {
    /// Job `index` (0-based, of `total`) finished.
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
}

/// Lines of a log shown with a failure.
const TAIL_LINES: usize = 20;

/// Runs a plan's jobs one after another, then depmod once per kernel.
pub struct Runner<'a> {
    pub tools: &'a Tools,
    pub layout: &'a Layout,
}

impl Runner<'_> {
    /// Runs every job, reporting each through `sink`; returns the totals.
    pub fn run(&self, plan: &Plan, sink: &mut dyn FnMut(Event)) -> Stats {
        let mut stats = Stats::default();
        let mut results: Vec<Option<Outcome>> = vec![None; plan.jobs.len()];
        for (index, job) in plan.jobs.iter().enumerate() {
            let blocked = job.after.iter().find(|&&d| results[d].as_ref().is_none_or(Outcome::is_failure));
            let result = match blocked {
                Some(&d) => JobResult {
                    outcome: Outcome::DependencyFailed { dependency: plan.jobs[d].to_string() },
                    duration: Duration::ZERO,
                    output: String::new(),
                },
                None => self.run_job(job),
            };
            match &result.outcome {
                Outcome::Installed => stats.installed += 1,
                Outcome::Removed | Outcome::Unregistered => stats.removed += 1,
                Outcome::Skipped => stats.skipped += 1,
                _ => stats.failed += 1,
            }
            sink(Event::JobFinished { index, total: plan.jobs.len(), job, result: &result });
            results[index] = Some(result.outcome);
        }
        self.tidy(plan);
        for kver in &plan.depmod {
            let started = Instant::now();
            let result = self.tools.depmod(self.layout, kver).map(|()| started.elapsed());
            if result.is_err() {
                stats.depmod_failed += 1;
            }
            sink(Event::Depmod { kver, result });
        }
        stats
    }

    /// Runs one job and judges its result.
    pub fn run_job(&self, job: &Job) -> JobResult {
        let started = Instant::now();
        let registered = self.layout.dkms_tree.join(&job.module.name).join(&job.module.version);
        if job.kind == JobKind::Unregister && registered.symlink_metadata().is_err() {
            // dkms drops a module version from its tree when the last kernel's build is
            // removed: there is nothing left to unregister.
            return JobResult { outcome: Outcome::Unregistered, duration: started.elapsed(), output: String::new() };
        }
        let captured = match self.tools.dkms(self.layout, job) {
            Ok(c) => c,
            Err(error) => {
                return JobResult { outcome: Outcome::ExecFailed { error }, duration: started.elapsed(), output: String::new() }
            }
        };
        let outcome = match (captured.code, &job.kind) {
            (Some(0), JobKind::Install { kernel }) => self.check_vermagic(job, kernel),
            (Some(0), JobKind::Remove { .. }) => Outcome::Removed,
            (Some(0), JobKind::Unregister) => Outcome::Unregistered,
            // 3: "not located in the DKMS tree" — already gone, which is what removal wants.
            (Some(3), JobKind::Remove { .. }) => Outcome::Removed,
            (Some(3), JobKind::Unregister) => Outcome::Unregistered,
            (Some(77), _) => Outcome::Skipped,
            (code, _) => {
                let log = self.layout.dkms_tree.join(&job.module.name).join(&job.module.version).join("build/make.log");
                let log = log.is_file().then_some(log).filter(|l| modified_since(l, started));
                let text = match &log {
                    Some(l) => std::fs::read_to_string(l).unwrap_or_default(),
                    None => captured.output.clone(),
                };
                Outcome::Failed { code, meaning: exit_meaning(code), log, tail: tail(&text, TAIL_LINES) }
            }
        };
        JobResult { outcome, duration: started.elapsed(), output: captured.output }
    }

    /// After an install, every built module must carry `vermagic=KVER …`.
    fn check_vermagic(&self, job: &Job, kernel: &str) -> Outcome {
        let built = crate::inventory::dkms_tree::built_modules(
            &self.layout.dkms_tree,
            &job.module.name,
            &job.module.version,
            kernel,
        );
        for module in built {
            match vermagic::read(&module) {
                Ok(magic) if magic.split_whitespace().next() == Some(kernel) => {}
                Ok(magic) => return Outcome::WrongKernel { module, vermagic: magic },
                Err(e) => log::warn!("cannot read vermagic of {}: {e}", module.display()),
            }
        }
        Outcome::Installed
    }

    /// dkms removes modules but can leave `updates/dkms/` and `updates/` empty; an empty
    /// directory we leave would keep a removed kernel's module directory alive.
    fn tidy(&self, plan: &Plan) {
        for job in &plan.jobs {
            if let JobKind::Remove { kernel } = &job.kind {
                let kdir = self.layout.kernel_dir(kernel);
                for dir in [kdir.join("updates/dkms"), kdir.join("updates")] {
                    // remove_dir only removes an empty directory: nothing of anyone's is lost.
                    let _ = std::fs::remove_dir(dir);
                }
            }
        }
    }
}

fn modified_since(path: &std::path::Path, started: Instant) -> bool {
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
    fn failures_are_the_outcomes_that_count_against_the_run() {
        assert!(!Outcome::Skipped.is_failure());
        assert!(!Outcome::Installed.is_failure());
        assert!(Outcome::ExecFailed { error: "x".into() }.is_failure());
        assert!(Outcome::DependencyFailed { dependency: "x".into() }.is_failure());
        assert_eq!(exit_meaning(Some(10)), "the module build (make) failed");
    }
}
