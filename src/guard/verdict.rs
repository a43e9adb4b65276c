//! What the test builds came to: the critical modules' failures stop the transaction, with the
//! ways forward; the others are warnings.

use std::collections::BTreeSet;
use std::process::ExitCode;

use anyhow::Result;

use super::builds::{Checked, Paths};
use super::bypass::BYPASS_VARIABLE;
use super::incoming::Incoming;
use crate::config::{Config, Verbosity};
use crate::domain::{Outcome, Signing};
use crate::inventory::Inventory;
use crate::plan::companions;
use crate::plan::Plan;
use crate::prebuilt::{self, Index};
use crate::report::Heading;
use crate::run::JobResult;
use crate::session::Session;

/// Runs the test builds of `plan` and judges them: a critical failure stops the transaction (exit
/// 1), the others are warnings; what worked is described for the install hook (of the transaction
/// `transaction`).
pub(super) fn build_and_judge(
    config: &Config,
    session: &Session,
    paths: &Paths,
    plan: &Plan,
    current: &Inventory,
    transaction: Option<String>,
) -> Result<Checked> {
    let reporter = session.reporter();
    if plan.jobs.is_empty() {
        match paths.incoming.unreachable.is_empty() {
            true => reporter.start(Heading::Guard, plan),
            false if config.verbosity > Verbosity::Quiet => {
                reporter.print("==> DKMS guard: nothing checked before the transaction (see the warnings above)\n")
            }
            false => {}
        }
        return Ok(Checked::done(ExitCode::SUCCESS, String::new()));
    }
    // The root's own key when dkms has made it. Before that, dkms would make it in the dkms tree,
    // which the guard leaves alone: it makes one for the guard's builds instead, which the install
    // hook adopts as the root's (see `prebuilt`).
    let own = Signing::of(&config.layout);
    let signing = match own.exists() {
        true => own,
        false => prebuilt::temporary_key(&config.layout),
    };
    reporter.start(Heading::Guard, plan);
    let results = session.run_builds(plan, signing.clone())?;
    let verdict = Verdict::of(plan, &results, &with_locked(plan, paths.incoming, config));
    if let Some(signal) = crate::interrupt::received() {
        let stopped = "==> Stopped: the transaction does not go on\n".to_owned();
        return Ok(Checked::done(ExitCode::from(crate::interrupt::exit_status(signal)), stopped));
    }
    if !verdict.critical.is_empty() {
        let text = verdict.abort_message(plan, paths.incoming, &config.critical, &config.unlocked);
        return Ok(Checked::done(ExitCode::from(1), text));
    }
    let builds = paths.prebuilt(plan, &results, current);
    let signed = signing.cert.exists();
    let certificate = signed.then(|| crate::digest::of_file(&signing.cert).ok()).flatten();
    let index = Index { transaction, certificate, builds };
    Ok(Checked {
        code: ExitCode::SUCCESS,
        text: verdict.warnings(plan),
        hand_over: Some(index),
        tested: Some((verdict.built(&results), plan.jobs.len())),
    })
}

/// `critical`, and the modules of the plan locked to a companion the transaction moves
/// (`plan::companions`): after the transaction neither their old nor their new version would work.
fn with_locked(plan: &Plan, incoming: &Incoming, config: &Config) -> Vec<glob::Pattern> {
    let mut critical = config.critical.clone();
    for job in &plan.jobs {
        if incoming.locked(&job.module, &config.unlocked).is_some() {
            critical.extend(glob::Pattern::new(&glob::Pattern::escape(&job.module.name)));
        }
    }
    critical
}

/// One test build that failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// Its index in the plan.
    pub job: usize,
    /// The cause in one line: the first compiler error, or what else went wrong.
    pub cause: Option<String>,
}

impl Failure {
    fn new(job: usize, outcome: &Outcome) -> Failure {
        let cause = match outcome {
            Outcome::Failed { tail, .. } => tail.iter().find(|l| l.contains("error:") || l.contains("Error:")).cloned(),
            Outcome::WrongVermagic { module, vermagic } => {
                Some(format!("{} was built for another kernel (vermagic {vermagic})", module.display()))
            }
            Outcome::TimedOut { after } => Some(format!("dkms was stopped after {} s (job_timeout)", after.as_secs())),
            _ => None,
        };
        Failure { job, cause }
    }
}

/// What the test builds came to.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// Failed builds of critical modules: the transaction must not go on.
    pub critical: Vec<Failure>,
    /// Failed builds of the other modules.
    pub other: Vec<Failure>,
    /// Builds that could not be run at all (dkms did not start): nothing is known.
    pub unchecked: Vec<usize>,
}

impl Verdict {
    /// Sorts the results (by plan index; `None`: no result) by the modules' criticality.
    pub fn of(plan: &Plan, results: &[Option<JobResult>], critical: &[glob::Pattern]) -> Verdict {
        let mut verdict = Verdict::default();
        for (i, (job, result)) in plan.jobs.iter().zip(results).enumerate() {
            let Some(result) = result else { continue };
            match &result.outcome {
                Outcome::Built | Outcome::Skipped | Outcome::Interrupted => {}
                Outcome::ExecFailed { .. } => verdict.unchecked.push(i),
                outcome if critical.iter().any(|p| p.matches(&job.module.name)) => {
                    verdict.critical.push(Failure::new(i, outcome))
                }
                outcome => verdict.other.push(Failure::new(i, outcome)),
            }
        }
        verdict
    }

    /// How many test builds worked.
    pub fn built(&self, results: &[Option<JobResult>]) -> usize {
        results.iter().flatten().filter(|r| r.outcome == Outcome::Built).count()
    }

    /// The warnings for the failures that do not stop the transaction.
    pub(super) fn warnings(&self, plan: &Plan) -> String {
        let mut text = String::new();
        for failure in &self.other {
            let job = &plan.jobs[failure.job];
            text.push_str(&format!(
                "warning: {job} does not build (see above); {} is not critical, so the transaction goes on (the \
                 install hook reports the failure after it)\n",
                job.module.name
            ));
        }
        for i in &self.unchecked {
            text.push_str(&format!("warning: {} could not be test-built (see above)\n", plan.jobs[*i]));
        }
        text
    }

    /// What to tell the user when the transaction stops: each critical failure with its first
    /// compiler error, and the ways forward.
    pub(super) fn abort_message(
        &self,
        plan: &Plan,
        incoming: &Incoming,
        critical: &[glob::Pattern],
        unlocked: &[glob::Pattern],
    ) -> String {
        let mut text = String::new();
        let mut hold: BTreeSet<String> = BTreeSet::new();
        // Modules critical only because they are locked to a companion, and those `critical`
        // names: each is dropped from the stop in its own way.
        let (mut locked_only, mut configured): (BTreeSet<String>, bool) = (BTreeSet::new(), false);
        for failure in &self.critical {
            let job = &plan.jobs[failure.job];
            let kernel = job.kernel().unwrap_or_default();
            let locked = incoming.locked(&job.module, unlocked);
            match (locked, critical.iter().any(|p| p.matches(&job.module.name))) {
                (Some(_), false) => {
                    locked_only.insert(job.module.name.clone());
                }
                _ => configured = true,
            }
            let why = match locked {
                Some((_, moved)) => {
                    let names: Vec<&str> = moved.iter().map(|m| m.companion.as_str()).collect();
                    format!("is locked to {}", names.join(", "))
                }
                None => "is critical".to_owned(),
            };
            text.push_str(&format!(
                "error: {} {why} and does not build for kernel {kernel}: stopping the transaction before anything \
                 is changed\n",
                job.module
            ));
            if let Some(cause) = &failure.cause {
                text.push_str(&format!("       {cause}\n"));
            }
            if let Some((package, moved)) = locked {
                text.push_str(&format!(
                    "       {package} comes with {}: the installed {} would not work with it after the transaction\n",
                    companions::describe(moved),
                    job.module.name
                ));
                hold.extend(companions::hold(package, moved));
            }
            match incoming.kernel(kernel) {
                Some(k) => {
                    let name = k.headers_package.strip_suffix("-headers").unwrap_or(&k.headers_package);
                    hold.insert(name.to_owned());
                    hold.insert(k.headers_package.clone());
                }
                None => {
                    if let Some(package) = incoming.source(&job.module).and_then(|s| s.package.clone()) {
                        hold.insert(package);
                    }
                }
            }
        }
        text.push_str("==> Ways forward:\n");
        if !hold.is_empty() {
            let list: Vec<&str> = hold.iter().map(String::as_str).collect();
            text.push_str(&format!("  -> upgrade without it for now: pacman -Syu --ignore {}\n", list.join(",")));
        }
        let mut drop = vec!["remove its package".to_owned()];
        if configured {
            drop.push("its name from `critical` in /etc/dkms-hook.toml".to_owned());
        }
        if !locked_only.is_empty() {
            let names: Vec<String> = locked_only.iter().map(|n| format!("\"{n}\"")).collect();
            drop.push(format!(
                "let it be upgraded apart from what it is locked to (`unlocked = [{}]` in /etc/dkms-hook.toml; the \
                 version kept then does not work with the new companion)",
                names.join(", ")
            ));
        }
        text.push_str(&format!(
            "  -> fix the module (a newer release, or a report to its packager with the log above), or drop it: {}\n",
            drop.join(", or ")
        ));
        text.push_str(&format!(
            "  -> go ahead anyway, once (the module then fails after the transaction): {BYPASS_VARIABLE}=off pacman -Syu\n"
        ));
        text
    }
}
