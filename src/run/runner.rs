//! The runner's settings and what it tells its caller: a [`Runner`] (tools, layout, budget, time
//! limit, stop flag, signing key), each finished job as a [`JobResult`] inside an [`Event`], and the
//! totals ([`Stats`]) that decide the exit status.

use std::time::Duration;

use super::command::Tools;
use crate::domain::{Job, Layout, Outcome, Signing};
use crate::interrupt::Stop;

/// One finished job.
#[derive(Debug, Clone)]
pub struct JobResult {
    pub outcome: Outcome,
    pub duration: Duration,
    /// dkms's combined stdout and stderr (all dkms calls of the job).
    pub output: String,
    /// The job installed what the pre-transaction guard built, instead of building.
    pub prebuilt: bool,
    /// Why the guard's build was not installed and the job built again (its signature does not
    /// match the system's signing).
    pub prebuilt_refused: Option<String>,
}

impl JobResult {
    /// The result of a job that never ran: no time, no output.
    pub fn not_run(outcome: Outcome) -> JobResult {
        JobResult { outcome, duration: Duration::ZERO, output: String::new(), prebuilt: false, prebuilt_refused: None }
    }
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
    pub(super) fn record(&mut self, outcome: &Outcome) {
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
}
