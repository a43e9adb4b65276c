//! dkms-hook: pacman's hooks call it with the transaction's paths on stdin; it works out which
//! (module, version, kernel) jobs to run, runs the real dkms for each, depmod once per kernel,
//! and reports like a pacman tool.
//!
//! Flow: argv → `Config` → stdin → `Targets` → `Inventory` → `Plan` → `Runner` → `Reporter`.
//! Only `main` prints a fatal error; exit status 0 ok, 1 a job failed, 2 could not run.

use std::io::{IsTerminal, Read};
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Parser;

use dkms_hook::config::{Config, Verbosity};
use dkms_hook::inventory::Inventory;
use dkms_hook::report::Reporter;
use dkms_hook::run::{self, Runner, Tools};
use dkms_hook::targets::Targets;
use dkms_hook::{cli, plan};

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let opts = cli::Opts::parse();
    match run(opts) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn run(opts: cli::Opts) -> Result<ExitCode> {
    let config = Config::resolve(opts)?;
    log::debug!("{config:?}");

    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        anyhow::bail!(
            "no targets: dkms-hook reads the paths pacman passes to its hooks on stdin (e.g. `echo usr/src/NAME-VERSION/dkms.conf | dkms-hook install`)"
        );
    }
    let mut input = Vec::new();
    stdin.lock().read_to_end(&mut input).context("failed to read targets from stdin")?;
    let targets = Targets::parse(&input);
    let reporter = Reporter::new(config.verbosity);
    for line in &targets.ignored {
        log::info!("ignoring target {line:?}");
    }
    if targets.is_empty() {
        if config.verbosity == Verbosity::Verbose {
            println!("  -> no DKMS module sources or kernels among the targets: nothing to do");
        }
        return Ok(ExitCode::SUCCESS);
    }

    if !config.dry_run && !config.layout.is_relocated() && !nix::unistd::geteuid().is_root() {
        anyhow::bail!("dkms-hook changes /usr/lib/modules and the dkms tree: run it as root (pacman does)");
    }

    let inventory = Inventory::read(&config.layout)?;
    log::debug!("{inventory:#?}");
    let plan = plan::plan(config.operation, &targets, &inventory);
    reporter.notices(&plan);
    if config.dry_run {
        reporter.dry_run(&plan);
        return Ok(reporter.finish(&plan, &run::Stats::default()));
    }
    if plan.jobs.is_empty() && plan.depmod.is_empty() {
        return Ok(reporter.finish(&plan, &run::Stats::default()));
    }
    let tools = Tools::resolve(&config.dkms, &config.depmod)?;
    reporter.start(config.operation, &plan);
    let stop = std::sync::atomic::AtomicBool::new(false);
    let runner = Runner { tools: &tools, layout: &config.layout, jobs: 0, timeout: None, stop: &stop };
    let stats = runner.run(&plan, &mut |event| reporter.event(event));
    Ok(reporter.finish(&plan, &stats))
}
