//! Running a plan: dkms jobs and depmod (through the process runner), and the clean-up of
//! empty directories dkms leaves behind.
//!
//! Jobs run in parallel under one CPU budget (`schedule`): at most `jobs` dkms at once, each told
//! `make -j N` so the total stays near the core count. A job starts only when the jobs it
//! depends on (BUILD_DEPENDS, removals before unregistering) have succeeded. dkms keeps one build
//! directory per module version (`DKMSTREE/M/V/build`), so two jobs of the same module version
//! never touch the real tree at once: when one module version is installed for several
//! kernels, each kernel's build runs in a private dkms tree (`build`), in parallel, and only
//! moving the result in and the quick `dkms install` hold the module version's lock (`job`).
//!
//! A job's result is a value (`Outcome`): a failed build does not stop independent jobs, and
//! "could not start dkms" is kept apart from "dkms failed". Workers never print: the runner
//! hands each finished job to the caller's event sink, on the caller's thread.

pub mod build;
mod command;
mod job;
mod schedule;
pub mod vermagic;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::config::Layout;
use crate::interrupt::Stop;
use crate::plan::{Job, JobKind, Plan};
pub use build::{Built, PrivateBuild};
pub use command::{Limits, Signing, Tools};

/// What became of one job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Built (if needed) and installed; the built modules name the right kernel.
    Installed,
    /// The guard's build worked: built in its private tree, every module naming the kernel.
    Built,
    /// Built privately and swapped in for version `old` (the same version when only the sources
    /// changed), which is gone from the kernel.
    Replaced { old: String },
    /// The sources are those the installed build was made from: nothing was built.
    Unchanged,
    /// The sources were kept for dkms until the module's replacement is built.
    Preserved,
    /// A replaced version still installed for these kernels (their replacement failed, or they
    /// have no headers to build it): it stays registered.
    StillServing { kernels: Vec<String> },
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
    /// dkms built it, but a built module's vermagic names another kernel (a Makefile that
    /// builds for `uname -r`): built for the wrong kernel.
    WrongVermagic { module: PathBuf, vermagic: String },
    /// Building the replacement for the kernel failed (`failure` says how): version `old`, the
    /// one that was installed, stays installed.
    Kept { old: String, failure: Box<Outcome> },
    /// dkms could not be started at all.
    ExecFailed { error: String },
    /// Not run because a job it depends on did not succeed.
    DependencyFailed { dependency: String },
    /// Killed after running longer than the job timeout.
    TimedOut { after: Duration },
    /// Stopped, or never started, because dkms-hook was interrupted (SIGINT/SIGTERM/SIGHUP).
    Interrupted,
}

impl Outcome {
    /// True for outcomes that make the run fail.
    pub fn is_failure(&self) -> bool {
        !matches!(
            self,
            Outcome::Installed
                | Outcome::Built
                | Outcome::Replaced { .. }
                | Outcome::Unchanged
                | Outcome::Preserved
                | Outcome::StillServing { .. }
                | Outcome::Removed
                | Outcome::Unregistered
                | Outcome::Skipped
        )
    }
}

/// One finished job.
#[derive(Debug, Clone)]
pub struct JobResult {
    pub outcome: Outcome,
    pub duration: Duration,
    /// dkms's combined stdout and stderr (all dkms calls of the job).
    pub output: String,
    /// The job installed what the pre-transaction guard built, instead of building.
    pub prebuilt: bool,
}

/// What the runner tells its caller, in order.
#[derive(Debug)]
pub enum Event<'a> {
    /// A job finished; `index` counts finished jobs (0-based) out of `total`; the job is
    /// `plan.jobs[position]`.
    JobFinished { index: usize, total: usize, position: usize, job: &'a Job, result: &'a JobResult },
    /// depmod ran for a kernel.
    Depmod { kver: &'a str, result: Result<Duration, String> },
}

/// The totals that decide the exit status.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Stats {
    pub installed: usize,
    /// The guard's builds that worked.
    pub built: usize,
    pub unchanged: usize,
    pub preserved: usize,
    pub removed: usize,
    pub skipped: usize,
    pub failed: usize,
    pub depmod_failed: usize,
    /// Jobs stopped or never started because of a stopping signal.
    pub interrupted: usize,
}

impl Stats {
    /// Counts one finished job.
    fn record(&mut self, outcome: &Outcome) {
        match outcome {
            Outcome::Installed | Outcome::Replaced { .. } => self.installed += 1,
            Outcome::Built => self.built += 1,
            Outcome::Unchanged => self.unchanged += 1,
            Outcome::Preserved => self.preserved += 1,
            Outcome::StillServing { .. } => {}
            Outcome::Removed | Outcome::Unregistered => self.removed += 1,
            Outcome::Skipped => self.skipped += 1,
            Outcome::Interrupted => self.interrupted += 1,
            _ => self.failed += 1,
        }
    }
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
    /// The key and certificate dkms signs modules with (and creates on first use): the root's
    /// own ([`Signing::of`]), or the guard's.
    pub signing: Signing,
}

impl Runner<'_> {
    /// The number of CPUs to budget for.
    pub fn cores() -> usize {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    }

    /// Runs every job, reporting each through `sink` as it finishes, then tidies up and runs
    /// depmod; returns the totals.
    pub fn run(&self, plan: &Plan, sink: &mut dyn FnMut(Event)) -> Stats {
        let mut stats = schedule::Schedule::new(self, plan).run(sink);
        self.tidy(plan);
        self.depmod(plan, &mut stats, sink);
        stats
    }

    /// depmod for every kernel of the plan, in parallel. It is quick and leaves the kernel
    /// consistent with what was installed, so it runs even after a stop request (only the
    /// timeout applies).
    fn depmod(&self, plan: &Plan, stats: &mut Stats, sink: &mut dyn FnMut(Event)) {
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

/// Every built module must carry `vermagic=KERNEL …`: a module built for another kernel is
/// [`Outcome::WrongVermagic`]; one whose vermagic cannot be read at all is damaged (a failure
/// that shows `output`'s last lines and what was wrong).
pub fn judge_vermagic(modules: &[PathBuf], kernel: &str, output: &str) -> Result<(), Outcome> {
    for module in modules {
        match vermagic::read(module) {
            Ok(magic) if magic.split_whitespace().next() == Some(kernel) => {}
            Ok(magic) => return Err(Outcome::WrongVermagic { module: module.clone(), vermagic: magic }),
            Err(e) => {
                let mut tail = excerpt(output, TAIL_LINES);
                tail.push(format!("{}: {e}", module.display()));
                return Err(Outcome::Failed {
                    code: Some(0),
                    meaning: "dkms reported success, but a built module is damaged (a full disk?)",
                    log: None,
                    tail,
                });
            }
        }
    }
    Ok(())
}

/// Where private dkms trees live: dkms-hook's own directory beside the dkms tree, on the same
/// file system so a finished build moves in with one rename.
pub fn private_root(layout: &Layout) -> PathBuf {
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

/// dkms's exit codes, in its own terms: as dkms 3.0 and 3.2 (the versions the tests run) use
/// them, and 13 and 21 as newer dkms documents them.
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
        assert!(Outcome::WrongVermagic { module: "/m.ko".into(), vermagic: "x".into() }.is_failure());
    }
}
