//! Everything the user sees: pacman/makepkg-style lines (`==> ` headings, `  -> ` items), one
//! line per finished job, failures with the end of their build log, a final summary, and the
//! exit status. The reporter is the only writer of stdout (`status` prints its report through it
//! too); warnings of the inventory go to stderr through the log. Hook output goes through a pipe
//! into pacman.log, so lines are plain (no `\r`, no colour).

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use nix::sys::signal::Signal;

use crate::config::Verbosity;
use crate::domain::{Job, Outcome};
use crate::lock::Holder;
use crate::plan::Plan;
use crate::run::{Event, JobResult, Stats};

/// Sets up the log: lines read like the rest of the output (`warning: …`); RUST_LOG=debug adds
/// detail.
pub fn init_logging() {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn"))
        .format(|buf, record| {
            let level = match record.level() {
                log::Level::Error => "error",
                log::Level::Warn => "warning",
                log::Level::Info => "info",
                log::Level::Debug => "debug",
                log::Level::Trace => "trace",
            };
            writeln!(buf, "{level}: {}", record.args())
        })
        .init();
}

/// What a run is doing, for its heading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Heading {
    /// The install hook.
    Install,
    /// A removal hook.
    Remove,
    /// `dkms-hook sync`.
    Sync,
    /// `dkms-hook guard`.
    Guard,
}

/// Owns stdout for a run.
pub struct Reporter {
    verbosity: Verbosity,
    out: std::io::Stdout,
}

impl Reporter {
    pub fn new(verbosity: Verbosity) -> Self {
        Reporter { verbosity, out: std::io::stdout() }
    }

    /// Writes `text` to stdout as it is.
    pub fn print(&self, text: &str) {
        let mut out = self.out.lock();
        // A closed pipe must not turn a finished build into a crash; nothing useful can be
        // done about it.
        let _ = out.write_all(text.as_bytes());
        let _ = out.flush();
    }

    /// Warnings, errors and (with `-v`) information about the plan.
    pub fn notices(&self, plan: &Plan) {
        let mut text = String::new();
        for notice in &plan.notices {
            if notice.is_error() {
                text.push_str(&format!("error: {notice}\n"));
            } else if !notice.is_info() {
                text.push_str(&format!("warning: {notice}\n"));
            } else if self.verbosity == Verbosity::Verbose {
                text.push_str(&format!("  -> {notice}\n"));
            }
        }
        self.print(&text);
    }

    /// The heading before jobs run, or for `sync`, that there is nothing to do.
    pub fn start(&self, heading: Heading, plan: &Plan) {
        if self.verbosity == Verbosity::Quiet {
            return;
        }
        if plan.jobs.is_empty() {
            if heading == Heading::Sync && plan.depmod.is_empty() {
                self.print("==> Nothing to do: every packaged module is installed for every kernel with headers\n");
            }
            if heading == Heading::Guard {
                self.print("==> DKMS guard: the transaction brings nothing to build\n");
            }
            return;
        }
        let n = count(plan.jobs.len(), "job");
        let all = |kind: fn(&crate::domain::JobKind) -> bool| plan.jobs.iter().all(|j| kind(&j.kind));
        let text = match heading {
            Heading::Install if all(|k| matches!(k, crate::domain::JobKind::Unchanged { .. })) => {
                format!("==> Nothing to build: the DKMS module sources are unchanged ({n})\n")
            }
            Heading::Install => format!("==> Installing DKMS modules: {n}\n"),
            Heading::Remove if all(|k| matches!(k, crate::domain::JobKind::Preserve { .. })) => {
                format!("==> Keeping DKMS modules installed until their upgrades are built: {n}\n")
            }
            Heading::Remove => format!("==> Removing DKMS modules: {n}\n"),
            Heading::Sync => format!("==> Synchronizing DKMS modules: {n}\n"),
            Heading::Guard => {
                format!("==> Test-building DKMS modules before the transaction: {}\n", count(plan.jobs.len(), "build"))
            }
        };
        self.print(&text);
    }

    /// `-v`: the targets named nothing to act on.
    pub fn no_targets(&self) {
        if self.verbosity == Verbosity::Verbose {
            self.print("  -> no DKMS module sources or kernels among the targets: nothing to do\n");
        }
    }

    /// The root has no dkms: the hooks have nothing to do there. SAY: the one line of the
    /// transaction (the install hook's); the others only with `-v`.
    pub fn no_dkms(&self, why: &str, say: bool) {
        if say || self.verbosity == Verbosity::Verbose {
            self.print(&format!("dkms is not installed ({why}): nothing to do\n"));
        }
    }

    /// `-v`: install jobs the configuration excludes.
    pub fn excluded(&self, jobs: &[Job]) {
        if self.verbosity == Verbosity::Verbose {
            let text: String = jobs.iter().map(|job| format!("  -> {job}: excluded by the configuration\n")).collect();
            self.print(&text);
        }
    }

    /// Another run holds the lock: said once.
    pub fn waiting(&self, holder: &Holder, lock: &Path, timeout: Duration) {
        self.print(&format!(
            "==> Waiting for {holder} to finish (it holds {}); giving up after {} s\n",
            lock.display(),
            timeout.as_secs()
        ));
    }

    /// A signal arrived while waiting for the lock.
    pub fn stopped_waiting(&self) {
        self.print("==> Stopped while waiting for the lock: nothing was done\n");
    }

    /// Where a failed job's full log is.
    pub fn job_log(&self, log: &Path) {
        self.print(&format!("     log: {}\n", log.display()));
    }

    /// The run was stopped by `signal` with `left` jobs not done.
    pub fn stopped(&self, signal: Signal, left: usize) {
        self.print(&format!(
            "==> Stopped by {signal}: {} not done; run `dkms-hook sync` to finish\n",
            count(left, "job")
        ));
    }

    /// `--dry-run`: the plan, one line per job, then depmod.
    pub fn dry_run(&self, plan: &Plan) {
        let mut text = format!("==> Plan (dry run): {}\n", count(plan.jobs.len(), "job"));
        for job in &plan.jobs {
            text.push_str(&format!("  -> {} {job}\n", job.verb()));
        }
        for kver in &plan.depmod {
            text.push_str(&format!("  -> depmod {kver}\n"));
        }
        self.print(&text);
    }

    /// One runner event.
    pub fn event(&self, event: Event) {
        match event {
            Event::JobFinished { index, total, job, result, .. } => self.job(index, total, job, result),
            Event::Depmod { kver, result } => match result {
                Ok(d) if self.verbosity > Verbosity::Quiet => {
                    self.print(&format!("==> depmod {kver}: done in {}\n", secs(d)));
                }
                Ok(_) => {}
                Err(e) => self.print(&format!("error: {e}: run `depmod {kver}` by hand once it is fixed\n")),
            },
        }
    }

    fn job(&self, index: usize, total: usize, job: &Job, result: &JobResult) {
        let failed = result.outcome.is_failure();
        if self.verbosity == Verbosity::Quiet && !failed {
            return;
        }
        let said = describe(job, &result.outcome, result.duration, result.prebuilt);
        let mut text = format!("  -> ({}/{total}) {job}: {said}\n", index + 1);
        if let Some(why) = &result.prebuilt_refused {
            text.push_str(&format!("     {why}\n"));
        }
        let cause = match &result.outcome {
            Outcome::Kept { failure, .. } => failure,
            other => other,
        };
        match cause {
            Outcome::Failed { log, tail, .. } => {
                match log {
                    Some(log) => text.push_str(&format!("     last lines of {}:\n", log.display())),
                    None => text.push_str("     last lines of the build:\n"),
                }
                for line in tail {
                    text.push_str(&format!("       {line}\n"));
                }
                if let Some(log) = log {
                    text.push_str(&format!("     full log: {}\n", log.display()));
                }
            }
            _ if self.verbosity == Verbosity::Verbose && !result.output.trim().is_empty() => {}
            _ => {}
        }
        if self.verbosity == Verbosity::Verbose && !result.output.trim().is_empty() {
            text.push_str("     dkms output:\n");
            for line in result.output.lines().filter(|l| !l.trim().is_empty()) {
                text.push_str(&format!("       {}\n", line.trim_end()));
            }
        }
        self.print(&text);
    }

    /// The final summary; returns the exit status (0 all good, 1 anything failed).
    pub fn finish(&self, plan: &Plan, stats: &Stats) -> ExitCode {
        let errors = plan.notices.iter().filter(|n| n.is_error()).count();
        let failed = stats.failed + stats.depmod_failed + errors;
        let ran = stats.installed
            + stats.built
            + stats.unchanged
            + stats.preserved
            + stats.removed
            + stats.skipped
            + stats.failed
            > 0;
        if ran && (self.verbosity > Verbosity::Quiet || failed > 0) {
            let mut parts = Vec::new();
            for (n, word) in [
                (stats.installed, "installed"),
                (stats.built, "build"),
                (stats.unchanged, "unchanged"),
                (stats.preserved, "kept until rebuilt"),
                (stats.removed, "removed"),
                (stats.skipped, "skipped"),
                (stats.failed, "failed"),
            ] {
                if n > 0 {
                    parts.push(format!("{n} {word}"));
                }
            }
            self.print(&format!("==> DKMS modules: {}\n", parts.join(", ")));
        }
        if failed > 0 {
            self.print(&format!(
                "error: {} failed: see the messages above; fix the cause, then run `dkms-hook sync` to retry\n",
                count(failed, "DKMS task")
            ));
            ExitCode::from(1)
        } else {
            ExitCode::SUCCESS
        }
    }
}

/// The outcome of `job` as a short phrase; `prebuilt`: what was installed is the guard's build.
fn describe(job: &Job, outcome: &Outcome, duration: Duration, prebuilt: bool) -> String {
    let took = secs(duration);
    let installed = if prebuilt { "installed (built before the transaction)" } else { "installed" };
    match outcome {
        Outcome::Installed => format!("{installed} in {took}"),
        Outcome::Built => format!("builds (checked in {took})"),
        Outcome::Replaced { old } if *old == job.module.version => {
            format!("rebuilt in {took}, replacing the build from before")
        }
        Outcome::Replaced { old } => format!("{installed} in {took}, replacing {}/{old}", job.module.name),
        Outcome::Unchanged => "unchanged (the same sources as the installed build: nothing to build)".to_owned(),
        Outcome::Preserved => "kept installed until its upgrade is built after the transaction".to_owned(),
        Outcome::StillServing { kernels } => {
            format!(
                "kept: still installed for {} (its replacement failed there, or cannot be built)",
                kernels.join(" ")
            )
        }
        Outcome::Kept { old, failure } => {
            let kept = if *old == job.module.version {
                format!("kept the build from before the upgrade of {}", job.module)
            } else {
                format!("kept {}/{old} (the version that was installed)", job.module.name)
            };
            format!("{}; {kept}", describe(job, failure, duration, prebuilt))
        }
        Outcome::Removed => format!("removed in {took}"),
        Outcome::Unregistered => format!("unregistered in {took}"),
        Outcome::Skipped => "skipped (BUILD_EXCLUSIVE does not match this kernel)".to_owned(),
        Outcome::Failed { code, meaning, .. } => match code {
            Some(c) => format!("failed in {took}: dkms exit {c}, {meaning}"),
            None => format!("failed in {took}: dkms {meaning}"),
        },
        Outcome::WrongVermagic { module, vermagic } => format!(
            "failed: built for the wrong kernel: {} has vermagic {vermagic} (its build uses another kernel, \
             e.g. `uname -r`): report it to the module's packager",
            module.display()
        ),
        Outcome::ExecFailed { error } => format!("failed: could not run dkms: {error}"),
        Outcome::DependencyFailed { dependency } => format!("not built: it needs {dependency}, which did not succeed"),
        Outcome::TimedOut { after } => {
            format!(
                "failed: dkms was stopped after {} (the job timeout): raise job_timeout or fix the build",
                secs(*after)
            )
        }
        Outcome::Interrupted => "interrupted: run `dkms-hook sync` to finish".to_owned(),
    }
}

fn secs(d: Duration) -> String {
    format!("{:.1} s", d.as_secs_f64())
}

/// `1 job`, `3 jobs`.
pub fn count(n: usize, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    #[test]
    fn outcome_phrases() {
        let d = Duration::from_millis(4210);
        let job = Job {
            kind: crate::domain::JobKind::Install { kernel: "k1".into() },
            module: crate::domain::ModuleId::new("hello", "1.1"),
            after: vec![],
        };
        assert_eq!(describe(&job, &Outcome::Installed, d, false), "installed in 4.2 s");
        assert_eq!(describe(&job, &Outcome::Built, d, false), "builds (checked in 4.2 s)");
        assert!(describe(&job, &Outcome::Skipped, d, false).starts_with("skipped"));
        let failed =
            Outcome::Failed { code: Some(10), meaning: "the module build (make) failed", log: None, tail: vec![] };
        assert_eq!(describe(&job, &failed, d, false), "failed in 4.2 s: dkms exit 10, the module build (make) failed");
        let wrong = Outcome::WrongVermagic { module: PathBuf::from("/m.ko"), vermagic: "6.1-y SMP".into() };
        let text = describe(&job, &wrong, d, false);
        assert!(text.contains("wrong kernel") && text.contains("vermagic 6.1-y SMP"), "{text}");
        let kept = Outcome::Kept { old: "1.0".into(), failure: Box::new(failed) };
        assert_eq!(
            describe(&job, &kept, d, false),
            "failed in 4.2 s: dkms exit 10, the module build (make) failed; kept hello/1.0 (the version that was installed)"
        );
        assert_eq!(
            describe(&job, &Outcome::Replaced { old: "1.0".into() }, d, false),
            "installed in 4.2 s, replacing hello/1.0"
        );
        assert_eq!(
            describe(&job, &Outcome::Replaced { old: "1.0".into() }, d, true),
            "installed (built before the transaction) in 4.2 s, replacing hello/1.0"
        );
        assert_eq!(describe(&job, &Outcome::Installed, d, true), "installed (built before the transaction) in 4.2 s");
        assert_eq!(count(1, "job"), "1 job");
        assert_eq!(count(3, "job"), "3 jobs");
    }
}
