//! Which job starts next, and the bookkeeping of a running plan.
//!
//! A job may start when every job it depends on succeeded and a slot is free (at most `jobs`
//! dkms at once; removals, short shell work without make, may use one slot more). First choice
//! is a job whose module version no running job uses: it runs directly in the real dkms tree.
//! Only when there is none does a job of a busy module version start, building in a private tree
//! (which costs a few extra dkms calls). A replacement always builds privately (the version it
//! replaces stays installed until the build works). A job whose dependency failed, or any job not
//! started when a stop is requested, is settled without running; a job retiring a replaced
//! version waits for its replacements to finish, whatever came of them. Until one install has succeeded, one
//! install runs at a time while dkms's signing key does not exist: dkms creates the key during
//! its first signing build, and two first builds race on it; after a success the key either
//! exists or dkms does not sign on this system, so installs run in parallel from then on.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{mpsc, Mutex};

use super::job::{Locks, Mode};
use super::runner::{Event, JobResult, Runner, Stats};
use crate::domain::{Job, JobKind, ModuleId, Outcome};
use crate::plan::Plan;

/// A plan being run.
pub(super) struct Schedule<'r, 'p> {
    runner: &'r Runner<'r>,
    plan: &'p Plan,
    /// dkms processes at once.
    parallel: usize,
    cores: usize,
    /// Per job: may it build in a private tree when its module version is busy?
    may_build_privately: Vec<bool>,
    /// Per job: its outcome once finished.
    outcomes: Vec<Option<Outcome>>,
    /// Per job: started (or settled without running).
    started: Vec<bool>,
    running: BTreeSet<usize>,
    finished: usize,
    /// One install at a time until the first succeeds, while dkms has no signing key yet.
    signing_first: bool,
    stats: Stats,
}

impl<'r, 'p> Schedule<'r, 'p> {
    pub(super) fn new(runner: &'r Runner<'r>, plan: &'p Plan) -> Self {
        let cores = Runner::cores();
        let parallel = if runner.jobs == 0 { cores } else { runner.jobs }.max(1);
        let total = plan.jobs.len();
        let schedule = Schedule {
            runner,
            plan,
            parallel,
            cores,
            may_build_privately: Vec::new(),
            outcomes: vec![None; total],
            started: vec![false; total],
            running: BTreeSet::new(),
            finished: 0,
            signing_first: parallel > 1 && !runner.tools_signing_key_exists(),
            stats: Stats::default(),
        };
        Schedule { may_build_privately: schedule.private_builds(), ..schedule }
    }

    /// Runs every job; returns the totals.
    pub(super) fn run(mut self, sink: &mut dyn FnMut(Event)) -> Stats {
        let plan = self.plan;
        let mut locks: BTreeMap<ModuleId, Mutex<()>> = BTreeMap::new();
        for job in &plan.jobs {
            for id in std::iter::once(job.module.clone()).chain(job.other_version()) {
                locks.entry(id).or_insert_with(|| Mutex::new(()));
            }
        }
        let (tx, rx) = mpsc::channel::<(usize, JobResult)>();
        std::thread::scope(|scope| loop {
            self.settle_blocked(sink);
            while let Some((i, mode)) = self.next() {
                self.started[i] = true;
                self.running.insert(i);
                let make_jobs = self.make_jobs();
                let job = &plan.jobs[i];
                let other = job.other_version().and_then(|o| locks.get_key_value(&o)).map(|(id, lock)| (lock, id));
                let job_locks = Locks { own: &locks[&job.module], other };
                let prebuilt = job.kernel().and_then(|k| plan.prebuilt.get(&(job.module.clone(), k.to_owned())));
                let (tx, runner) = (tx.clone(), self.runner);
                scope.spawn(move || {
                    let _ = tx.send((i, runner.run_job(job, mode, job_locks, prebuilt, make_jobs)));
                });
            }
            if self.running.is_empty() {
                break;
            }
            let Ok((i, result)) = rx.recv() else { break };
            self.running.remove(&i);
            self.finish(i, result, sink);
        });
        self.settle_never_started(sink);
        self.stats
    }

    /// Settles the jobs that can no longer run: a dependency failed, or a stop was requested.
    fn settle_blocked(&mut self, sink: &mut dyn FnMut(Event)) {
        let stopping = self.runner.stop.is_set();
        for i in 0..self.plan.jobs.len() {
            if self.started[i] {
                continue;
            }
            let failed =
                self.plan.jobs[i].after.iter().find(|&&d| self.outcomes[d].as_ref().is_some_and(Outcome::is_failure));
            let outcome = match failed {
                Some(&d) => Outcome::DependencyFailed { dependency: self.plan.jobs[d].to_string() },
                None if stopping => Outcome::Interrupted,
                None => continue,
            };
            self.started[i] = true;
            self.finish(i, JobResult::not_run(outcome), sink);
        }
    }

    /// Nothing may be silently dropped: a job that never started (its dependencies never
    /// finished) is reported as such.
    fn settle_never_started(&mut self, sink: &mut dyn FnMut(Event)) {
        for i in 0..self.plan.jobs.len() {
            if !self.started[i] {
                self.started[i] = true;
                let outcome =
                    Outcome::ExecFailed { error: "not started: the jobs it depends on never finished".into() };
                self.finish(i, JobResult::not_run(outcome), sink);
            }
        }
    }

    /// Records a finished job and reports it.
    fn finish(&mut self, i: usize, result: JobResult, sink: &mut dyn FnMut(Event)) {
        let job = &self.plan.jobs[i];
        if self.signing_first
            && job.builds()
            && matches!(result.outcome, Outcome::Installed | Outcome::Replaced { .. } | Outcome::Built)
        {
            self.signing_first = false;
        }
        self.stats.record(&result.outcome);
        let total = self.plan.jobs.len();
        sink(Event::JobFinished { index: self.finished, total, position: i, job, result: &result });
        self.finished += 1;
        self.outcomes[i] = Some(result.outcome);
    }

    /// The next job to start and how, if any may start now.
    fn next(&self) -> Option<(usize, Mode)> {
        let jobs = &self.plan.jobs;
        // Removals are short shell work with no make of their own: one more of them fills the
        // gaps between the others' process starts.
        let slot_free =
            |i: usize| self.running.len() < self.parallel || (!jobs[i].builds() && self.running.len() <= self.parallel);
        let install_may_start = !self.signing_first || !self.running.iter().any(|&r| jobs[r].builds());
        let waited_for = |i: usize| match &jobs[i].kind {
            JobKind::Retire { replacing } => replacing.iter().all(|&r| self.outcomes[r].is_some()),
            _ => true,
        };
        let ready = |i: usize| {
            !self.started[i]
                && slot_free(i)
                && (install_may_start || !jobs[i].builds())
                && jobs[i].after.iter().all(|&d| self.outcomes[d].as_ref().is_some_and(|o| !o.is_failure()))
                && waited_for(i)
        };
        let busy = |i: usize| self.running.iter().any(|&r| jobs[r].module == jobs[i].module);
        // A replacement and a guard's build work in trees of their own.
        let replace = |i: usize| matches!(jobs[i].kind, JobKind::Replace { .. } | JobKind::Test { .. });
        (0..jobs.len())
            .find(|&i| ready(i) && (replace(i) || !busy(i)))
            .map(|i| (i, if replace(i) { Mode::Private } else { Mode::Direct }))
            .or_else(|| (0..jobs.len()).find(|&i| ready(i) && self.may_build_privately[i]).map(|i| (i, Mode::Private)))
    }

    /// `make -j` for a job starting now: the cores shared among the dkms that may run at once.
    fn make_jobs(&self) -> usize {
        let remaining = self.plan.jobs.len() - self.finished;
        (self.cores / self.parallel.min(remaining).max(1)).max(1)
    }

    /// Which jobs may build in a private tree when their module version is busy: install jobs
    /// whose module version is installed for more than one kernel in this plan and not yet
    /// built for theirs. A module with BUILD_DEPENDS builds in the real tree: dkms (≥ 3.1) looks
    /// for the dependencies in the tree it builds in.
    fn private_builds(&self) -> Vec<bool> {
        let mut per_module: BTreeMap<&ModuleId, usize> = BTreeMap::new();
        for job in self.plan.jobs.iter().filter(|j| j.is_install()) {
            *per_module.entry(&job.module).or_default() += 1;
        }
        let private = |job: &Job| {
            matches!(&job.kind, JobKind::Install { kernel }
                if self.parallel > 1
                    && per_module[&job.module] > 1
                    && !self.plan.build_depends.contains_key(&job.module)
                    && !self.runner.built_dir(&job.module, kernel).exists())
        };
        self.plan.jobs.iter().map(private).collect()
    }
}
