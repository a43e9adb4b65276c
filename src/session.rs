//! What every command that changes the system does around its plan, in one place, so the hooks
//! and `sync` cannot drift apart: check that we may change the system (root), handle stopping
//! signals, take the root's lock and clear what an interrupted run left half-written (and what the
//! pre-transaction guard built for another transaction), read the inventory and the state file,
//! drop what the configuration excludes, run the plan with every finished job going to its log,
//! the state file (with the digest of the sources each build was made from) and the reporter, and
//! drop the kept sources nothing needs any more. The guard's test builds run the same way, without
//! the state file.
//!
//! A dry run does the reading and planning the same way, but takes no lock, needs no root and
//! prints the plan instead of running it.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::io::{IsTerminal, Read};
use std::process::ExitCode;

use anyhow::{Context, Result};

use crate::config::{Action, Config};
use crate::domain::{Job, Outcome, Signing};
use crate::inventory::signing::SystemSigning;
use crate::inventory::{DkmsTree, Evaluate, Inventory, Scope};
use crate::lock::{self, Lock};
use crate::logs::Logs;
use crate::plan::Plan;
use crate::report::{Heading, Reporter};
use crate::run::{self, Event, JobResult, Runner, Tools};
use crate::state::{self, State};
use crate::targets::Targets;
use crate::{interrupt, kept, prebuilt};

/// Told of each finished job: its position in the plan, the job, its result and its log.
type JobDone<'a> = dyn FnMut(usize, &Job, &JobResult, Option<&std::path::Path>) + 'a;

/// A command's session with the system it changes.
pub struct Session<'c> {
    config: &'c Config,
    reporter: Reporter,
    /// `None` in a dry run.
    lock: Option<Lock>,
}

/// How beginning a session ended.
pub enum Begun<'c> {
    Ready(Session<'c>),
    /// A signal arrived while waiting for the lock: exit with this status, nothing was done.
    Stopped(ExitCode),
}

impl<'c> Session<'c> {
    /// Checks for root, handles stopping signals, takes the lock and clears what an interrupted
    /// run left (private build trees, half-copied kept sources). A dry run does none of it.
    pub fn begin(config: &'c Config) -> Result<Begun<'c>> {
        let reporter = Reporter::new(config.verbosity);
        if config.dry_run {
            return Ok(Begun::Ready(Session { config, reporter, lock: None }));
        }
        if !config.layout.is_relocated() && !nix::unistd::geteuid().is_root() {
            anyhow::bail!("dkms-hook changes /usr/lib/modules and the dkms tree: run it as root (pacman does)");
        }
        interrupt::install()?;
        // Not a pacman root (a wrong --root): fail before creating anything in it.
        crate::inventory::pacman::check_database(&config.layout)?;
        let path = config.layout.lock_file();
        let waiting = |holder: &lock::Holder| reporter.waiting(holder, &path, config.lock_timeout);
        let lock = match lock::acquire(&path, config.lock_timeout, &interrupt::STOP, waiting) {
            Ok(lock) => lock,
            Err(lock::LockError::Stopped { .. }) => {
                reporter.stopped_waiting();
                let status = interrupt::received().map_or(130, interrupt::exit_status);
                return Ok(Begun::Stopped(ExitCode::from(status)));
            }
            Err(e) => return Err(e.into()),
        };
        // With the lock held, whatever an interrupted run left half-written is ours to drop.
        run::clear_private_trees(&config.layout);
        // The guard's builds are for the hooks of its own transaction only: a guard run starts
        // from none, and a run outside any transaction (`sync`) drops them.
        let ours = || match config.action {
            Action::Hook(_) => crate::inventory::transaction_id::current(&config.layout),
            _ => None,
        };
        prebuilt::clear_other_transactions(&config.layout, ours);
        if !matches!(config.action, Action::Hook(_) | Action::Guard) {
            crate::coming::forget(&config.layout);
        }
        kept::remove_temporaries(&config.layout);
        Ok(Begun::Ready(Session { config, reporter, lock: Some(lock) }))
    }

    /// The reporter, the only writer of stdout.
    pub fn reporter(&self) -> &Reporter {
        &self.reporter
    }

    /// Reads what `scope` asks for of the system.
    pub fn inventory(&self, scope: Scope) -> Result<Inventory> {
        let mut inventory = Inventory::read_scope(&self.config.layout, scope, Evaluate::AsDkmsWould)?;
        crate::plan::companions::drop_unlocked(&mut inventory, &self.config.unlocked);
        log::debug!("{inventory:#?}");
        Ok(inventory)
    }

    /// A lazy reading ([`Scope::lazy`]) made whole (see [`Inventory::complete`]).
    pub fn complete(&self, inventory: Inventory) -> Result<Inventory> {
        inventory.complete(&self.config.layout, Evaluate::AsDkmsWould)
    }

    /// The state file (a damaged one reads as empty, with a warning).
    pub fn state(&self) -> State {
        State::load_or_warn(&self.config.layout.state_file())
    }

    /// Shows the plan's notices, drops what the configuration excludes, and runs it (or, in a
    /// dry run, prints it). Returns the exit status.
    pub fn run(&self, heading: Heading, inventory: &Inventory, state: State, plan: Plan) -> Result<ExitCode> {
        let (plan, excluded) = crate::plan::exclude(plan, &self.config.excludes);
        self.reporter.excluded(&excluded);
        self.reporter.notices(&plan);
        if self.config.dry_run {
            self.reporter.dry_run(&plan);
            return Ok(self.reporter.finish(&plan, &run::Stats::default()));
        }
        self.reporter.start(heading, &plan);
        if plan.jobs.is_empty() && plan.depmod.is_empty() {
            return Ok(self.reporter.finish(&plan, &run::Stats::default()));
        }
        self.execute(inventory, state, &plan)
    }

    /// Runs a plan: every finished job goes to the reporter, its log and the state file.
    fn execute(&self, inventory: &Inventory, mut state: State, plan: &Plan) -> Result<ExitCode> {
        let config = self.config;
        let state_file = config.layout.state_file();
        let digests = Digests::new(inventory);
        // Forget pairs that no longer exist, so the file does not grow forever.
        state.retain(|m, v, k| {
            inventory.kernels.contains_key(k)
                && (inventory.tree.entries.contains_key(&(m.to_owned(), v.to_owned()))
                    || inventory.sources.values().any(|s| s.conf.as_ref().is_ok_and(|c| c.name == m && c.version == v)))
        });
        let mut state_error = None;
        let mut locked = std::collections::BTreeSet::new();
        let mut changed = std::collections::BTreeSet::new();
        let stats = self.run_plan(plan, Signing::of(&config.layout), &mut |_, job, result, log| {
            if matches!(result.outcome, Outcome::Installed | Outcome::Replaced { .. } | Outcome::Removed) {
                changed.extend(job.kernel().map(str::to_owned));
            }
            if let Outcome::Kept { old, .. } = &result.outcome {
                locked.extend(crate::plan::companions::kept_line(inventory, &job.module, old));
            }
            let digest = job.is_install().then(|| digests.of(&config.layout, &job.module.name, &job.module.version));
            state.record(job, &result.outcome, log, state::now(), digest.flatten().as_deref());
            if let Err(e) = state.save(&state_file) {
                state_error.get_or_insert(e);
            }
        })?;
        if let Some(e) = state_error {
            log::warn!("{e:#}: `dkms-hook status` may not explain every failure");
        }
        self.drop_unneeded_kept_sources(&state, &digests);
        for line in &locked {
            self.reporter.print(line);
        }
        let images_failed = self.regenerate_images(inventory, &changed);
        let code = match self.reporter.finish(plan, &stats) {
            code if images_failed && code == ExitCode::SUCCESS => ExitCode::from(1),
            code => code,
        };
        if let Some(signal) = interrupt::received() {
            self.reporter.stopped(signal, stats.interrupted);
            return Ok(ExitCode::from(interrupt::exit_status(signal)));
        }
        Ok(code)
    }

    /// Regenerates the boot images of the kernels whose modules `changed` (after depmod), as
    /// `plan::boot` says; true when one failed.
    fn regenerate_images(&self, inventory: &Inventory, changed: &std::collections::BTreeSet<String>) -> bool {
        let config = self.config;
        let in_transaction = matches!(config.action, Action::Hook(_));
        let regens = crate::plan::boot::regenerate(inventory, changed, config.initramfs, in_transaction);
        let mut failed = false;
        for regen in &regens {
            if interrupt::received().is_some() {
                break;
            }
            self.reporter.print(&format!(
                "==> Regenerating the boot image of kernel {}: {}\n",
                regen.kver,
                regen.argv.join(" ")
            ));
            if let Err(why) = run::boot::regenerate(&config.layout, regen, &interrupt::STOP) {
                self.reporter.print(&format!(
                    "error: the boot image of kernel {} is not regenerated: {why}: fix it, then run `{}`\n",
                    regen.kver,
                    regen.argv.join(" ")
                ));
                failed = true;
                continue;
            }
            // Read back: an image that still holds another build than the installed one.
            let Some(image) =
                inventory.kernels.get(&regen.kver).and_then(|k| crate::plan::boot::image_of(inventory, k))
            else {
                continue;
            };
            let seen = crate::inventory::boot::read_image(&config.layout, &regen.kver, &image);
            for (stem, _) in seen.held.iter().filter(|(_, (_, same))| !same) {
                self.reporter.print(&format!(
                    "warning: the boot image {image} of kernel {} still holds another build of {stem} than the \
                     installed one: check the generator's configuration, then run `{}`\n",
                    regen.kver,
                    regen.argv.join(" ")
                ));
            }
        }
        failed
    }

    /// Runs the guard's test builds (signing with `signing`): each finished build goes to the
    /// reporter and its log, nothing to the state file. Returns each job's result, in plan order.
    pub fn run_builds(&self, plan: &Plan, signing: Signing) -> Result<Vec<Option<JobResult>>> {
        let mut results = vec![None; plan.jobs.len()];
        self.run_plan(plan, signing, &mut |position, _, result, _| results[position] = Some(result.clone()))?;
        Ok(results)
    }

    /// Runs a plan with the root's lock and the configured limits: each finished job gets its
    /// log, goes to `finished` (with the log's path) and then to the reporter.
    fn run_plan(&self, plan: &Plan, signing: Signing, finished: &mut JobDone) -> Result<run::Stats> {
        let config = self.config;
        let mut tools = Tools::resolve(&config.dkms, &config.depmod, self.lock.as_ref().map(Lock::fd))?;
        tools.signing = Some(SystemSigning::read(&config.layout));
        run::preflight(&config.layout)?;
        let logs = Logs::new(&config.log_dir, config.keep_logs);
        let runner = Runner {
            tools: &tools,
            layout: &config.layout,
            jobs: config.jobs,
            timeout: config.job_timeout,
            stop: &interrupt::STOP,
            signing,
        };
        let stats = runner.run(plan, &mut |event| {
            let Event::JobFinished { job, result, position, .. } = &event else {
                self.reporter.event(event);
                return;
            };
            let (job, result) = (*job, *result);
            let log = logs.write(job, result);
            finished(*position, job, result, log.as_deref());
            self.reporter.event(event);
            let failed = result.outcome.is_failure() && result.outcome != Outcome::Interrupted;
            if let (true, Some(log)) = (failed, &log) {
                self.reporter.job_log(log);
            }
        });
        logs.prune();
        Ok(stats)
    }

    /// Drops the kept copies of sources that nothing needs after the run (see `kept`).
    fn drop_unneeded_kept_sources(&self, state: &State, digests: &Digests) {
        let layout = &self.config.layout;
        let copies = kept::existing(layout);
        if copies.is_empty() {
            return;
        }
        let tree = match DkmsTree::read(&layout.dkms_tree, &kept::root(layout)) {
            Ok(tree) => tree,
            Err(e) => {
                log::warn!("{e:#}: kept sources are left for the next run to tidy");
                return;
            }
        };
        for digest in tree.unneeded_copies(&copies, state, |m, v| digests.of(layout, m, v)) {
            kept::drop(layout, &digest);
        }
    }
}

/// The digests of packaged module sources, read once each: those the inventory read already,
/// the others when first asked for.
struct Digests {
    known: RefCell<BTreeMap<String, Option<String>>>,
}

impl Digests {
    fn new(inventory: &Inventory) -> Digests {
        let known = inventory.sources.iter().filter_map(|(dir, s)| s.digest.clone().map(|d| (dir.clone(), Some(d))));
        Digests { known: RefCell::new(known.collect()) }
    }

    /// The digest of `usr/src/NAME-VERSION`, if it is there and readable.
    fn of(&self, layout: &crate::domain::Layout, name: &str, version: &str) -> Option<String> {
        let dir = format!("{name}-{version}");
        self.known
            .borrow_mut()
            .entry(dir.clone())
            .or_insert_with(|| {
                let path = layout.source_tree.join(&dir);
                path.is_dir().then(|| crate::inventory::digest_of(layout, &dir)).flatten()
            })
            .clone()
    }
}

/// Reads and parses stdin; a terminal there means a person ran the hook command by hand.
pub fn read_targets() -> Result<Targets> {
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        anyhow::bail!(
            "no targets: dkms-hook reads the paths pacman passes to its hooks on stdin (e.g. `echo usr/src/NAME-VERSION/dkms.conf | dkms-hook install`); to repair the system, run `dkms-hook sync`"
        );
    }
    let mut input = Vec::new();
    stdin.lock().read_to_end(&mut input).context("failed to read targets from stdin")?;
    Ok(Targets::parse(&input))
}
