//! `dkms-hook install` and `dkms-hook remove`, the commands pacman's hooks run: the paths pacman
//! matched arrive on stdin, become targets, and the plan for them runs in a session.

use std::process::ExitCode;

use anyhow::Result;

use crate::config::{Config, Verbosity};
use crate::domain::Operation;
use crate::inventory::Scope;
use crate::plan;
use crate::report::{Heading, Reporter};
use crate::run::Tools;
use crate::session::{Begun, Session};

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
        // The install hook is the guard's builds' only user: what it did not take goes.
        crate::prebuilt::clear(&config.layout);
        for kver in targets.kernels.keys() {
            crate::rebuilt::forget(&config.layout, kver);
        }
    }
    // The record of what came is for the remove hook of the same transaction, which has used it
    // now, as has a transaction that got as far as its install hook.
    if (scope.coming || operation == Operation::Install) && !config.dry_run {
        crate::coming::forget(&config.layout);
    }
    Ok(code)
}
