//! `dkms-hook install` and `dkms-hook remove`, the commands pacman's hooks run: the paths pacman
//! matched arrive on stdin, become targets, and the plan for them runs in a session.

use std::process::ExitCode;

use anyhow::Result;

use crate::config::{Config, Verbosity};
use crate::domain::Operation;
use crate::inventory::{Inventory, Scope};
use crate::plan::{self, Plan};
use crate::report::{Heading, Reporter};
use crate::run::Tools;
use crate::session::{Begun, Session};
use crate::targets::Targets;

/// Runs the hook command for `operation` with the targets on stdin.
pub fn run(config: &Config, operation: Operation) -> Result<ExitCode> {
    let targets = crate::session::read_targets()?;
    for line in &targets.ignored {
        log::info!("ignoring target {line:?}");
    }
    if targets.is_empty() {
        Reporter::new(config.verbosity).no_targets();
        return Ok(ExitCode::SUCCESS);
    }
    // A root with dkms-hook but without dkms (pacstrap, `pacman -Rdd dkms`): nothing can run.
    if let Some(why) = Tools::dkms_not_installed(&config.dkms) {
        Reporter::new(config.verbosity).no_dkms(&why, operation == Operation::Install);
        return Ok(ExitCode::SUCCESS);
    }
    let session = match Session::begin(config)? {
        Begun::Stopped(code) => return Ok(code),
        Begun::Ready(session) => session,
    };
    if operation == Operation::Install && !config.dry_run {
        crate::prebuilt::adopt_key(&config.layout);
    }
    // The sources among the targets get their digests (a rebuild of unchanged sources needs
    // nothing). A removal looks only at the module sources among its targets, and at what the
    // guard saw coming in the same transaction (a directory of the same module: they stay).
    let scope = match operation {
        // What the guard built before the transaction is installed instead of built again.
        Operation::Install => {
            Scope { digests: Some(&targets.module_dirs), prebuilt: true, lazy: true, ..Scope::default() }
        }
        // A removal also asks what the guard saw coming in the same transaction.
        Operation::Remove { rebuild } => Scope {
            only: Some(&targets.module_dirs),
            digests: Some(&targets.module_dirs),
            coming: !rebuild,
            ..Scope::default()
        },
    };
    let state = session.state();
    let mut inventory = session.inventory(scope)?;
    if let Some(why) = inventory.prebuilt_refused.as_ref().filter(|_| config.verbosity > Verbosity::Quiet) {
        session.reporter().print(&format!("==> The guard's builds are not used, modules are {why}\n"));
    }
    match operation {
        // Before a kernel's headers are replaced in place: what they were, for the install hook.
        Operation::Remove { rebuild: true } if !config.dry_run => {
            for kver in targets.kernels.keys().filter(|k| inventory.kernels.contains_key(*k)) {
                match crate::inventory::headers::digest(&config.layout, kver) {
                    Some(digest) => crate::rebuilt::record(&config.layout, kver, &digest)?,
                    None => crate::rebuilt::forget(&config.layout, kver),
                }
            }
        }
        Operation::Install => {
            inventory.headers_in_place = crate::inventory::headers::in_place(&config.layout, targets.kernels.keys());
        }
        Operation::Remove { .. } => {}
    }
    let mut plan = plan::plan(operation, &targets, &inventory, &state);
    // The lazy reading only tells that there is nothing to do (the quiet path: every module
    // already installed); anything to do is planned on the whole system.
    if scope.lazy && !(plan.jobs.is_empty() && plan.depmod.is_empty()) {
        inventory = session.complete(inventory)?;
        plan = plan::plan(operation, &targets, &inventory, &state);
    }
    let heading = match operation {
        Operation::Install => Heading::Install,
        Operation::Remove { .. } => Heading::Remove,
    };
    let code = session.run(heading, &inventory, state, plan)?;
    if operation == Operation::Install && !config.dry_run {
        after_install(config, &targets);
    }
    // The record of what came is for the remove hook of the same transaction, which has used it
    // now.
    if scope.coming && !config.dry_run {
        crate::coming::forget(&config.layout);
    }
    Ok(code)
}

/// What an install hook leaves behind it: the install hook is the guard's builds' only user
/// (what it did not take goes), and the records of the transaction (headers replaced in place,
/// what came) have served.
fn after_install(config: &Config, targets: &Targets) {
    crate::prebuilt::clear(&config.layout);
    for kver in targets.kernels.keys() {
        crate::rebuilt::forget(&config.layout, kver);
    }
    crate::coming::forget(&config.layout);
}

/// The install hook's quiet path from the files alone, without libalpm (what the `dkms-hook`
/// front runs before it starts the whole program): an install whose targets are kernels only,
/// where every module source is a version dkms registered from it and installed for each of
/// those kernels, so the plan has nothing to do. The same session as [`run`] (root check, lock,
/// clean-ups, report, what an install hook leaves behind) around
/// [`Inventory::read_files_only`], whose supersets make an empty plan here an empty plan on the
/// full reading. `None` when the files cannot tell (see there; also headers replaced in place, a
/// damaged state file, `--verbose`, `--dry-run`) or there is anything to do or to say: then
/// nothing but the session's clean-ups has happened, and [`run`] does the hook.
pub fn run_from_files(config: &Config, targets: &Targets) -> Result<Option<ExitCode>> {
    let plain = !config.dry_run && config.verbosity <= Verbosity::Normal;
    if !plain || targets.is_empty() || !targets.module_dirs.is_empty() || !targets.ignored.is_empty() {
        return Ok(None);
    }
    if Tools::dkms_not_installed(&config.dkms).is_some() {
        return Ok(None);
    }
    let session = match Session::begin(config)? {
        Begun::Stopped(code) => return Ok(Some(code)),
        Begun::Ready(session) => session,
    };
    // Headers replaced in place are compared (and their installed builds said unchanged or
    // rebuilt) by the whole program.
    if targets.kernels.keys().any(|kver| crate::rebuilt::recorded(&config.layout, kver).is_some()) {
        return Ok(None);
    }
    let Some(inventory) = Inventory::read_files_only(&config.layout, targets.kernels.keys())? else {
        return Ok(None);
    };
    // A damaged state file is the whole program's to report.
    let Ok(state) = crate::state::State::load(&config.layout.state_file()) else {
        return Ok(None);
    };
    let plan = plan::plan(Operation::Install, targets, &inventory, &state);
    if plan != Plan::default() {
        log::debug!("the files alone show something to do or to say: libalpm is read");
        return Ok(None);
    }
    let code = session.run(Heading::Install, &inventory, state, plan)?;
    after_install(config, targets);
    log::debug!("nothing to do, told from the files alone");
    Ok(Some(code))
}
