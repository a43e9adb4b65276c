//! dkms-hook: pacman's hooks call it with the transaction's paths on stdin; it works out which
//! (module, version, kernel) jobs to run, runs the real dkms for each, depmod once per kernel,
//! and reports like a pacman tool. `status` shows the state of every module for every kernel;
//! `sync` repairs what is missing or left over; `lint` checks *-dkms packages for packagers.
//!
//! This is the whole program, which `/usr/bin/dkms-hook` (`src/main.rs`, without libalpm) runs
//! for everything but the install hook's quiet path. This file only sets up logging, resolves
//! the configuration and dispatches to the library's command for the subcommand. Only `main`
//! prints a fatal error; exit status 0 ok, 1 a job failed (status: not all is well), 2 could not
//! run, 128 + N when stopped by signal N.

use std::process::ExitCode;

use anyhow::Result;
use clap::Parser;

use dkms_hook::config::{Action, Config};
use dkms_hook::{cli, generate, guard, hook, lint, session, status, sync};

fn main() -> ExitCode {
    dkms_hook::report::init_logging();
    match run(cli::Opts::parse()) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn run(opts: cli::Opts) -> Result<ExitCode> {
    // The guard stops pacman when it fails: its bypass works whatever else is wrong.
    let is_guard = matches!(opts.command, cli::Command::Guard);
    if is_guard {
        if let Some(code) = guard::bypassed() {
            // What comes is still recorded for the remove hook, when the configuration can be read.
            if let Ok(config) = Config::resolve(opts) {
                guard::record_what_comes(&config, session::read_targets().ok().as_ref());
            }
            return Ok(code);
        }
    }
    let config = match Config::resolve(opts) {
        Err(e) if is_guard => return Err(e.context(guard::STOPPED)),
        other => other?,
    };
    log::debug!("{config:?}");
    match &config.action {
        Action::Hook(operation) => hook::run(&config, *operation),
        Action::Status { json } => status::run(&config, *json),
        Action::Sync => sync::run(&config),
        Action::Guard => guard::run(&config),
        Action::Generate(output) => generate::run(output),
        Action::Lint { paths, build, json } => lint::run(&config, paths, *build, *json),
    }
}
