//! dkms-hook: pacman's hooks call it with the transaction's paths on stdin; it works out which
//! (module, version, kernel) jobs to run, runs the real dkms for each, depmod once per kernel,
//! and reports like a pacman tool. `status` shows the state of every module for every kernel;
//! `sync` repairs what is missing or left over.
//!
//! Flow: argv → `Config` → (stdin → `Targets` | nothing) → lock → `Inventory` → `Plan` →
//! `Runner` → `Reporter`, with each finished job written to its log and the state file.
//! Only `main` prints a fatal error; exit status 0 ok, 1 a job failed (status: not all is well),
//! 2 could not run, 128 + N when stopped by signal N.

use std::io::{IsTerminal, Read};
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Parser;

use dkms_hook::config::{Action, Config, Operation, Verbosity};
use dkms_hook::interrupt;
use dkms_hook::inventory::Inventory;
use dkms_hook::lock::{self, Lock};
use dkms_hook::logs::Logs;
use dkms_hook::plan::Plan;
use dkms_hook::report::Reporter;
use dkms_hook::run::{self, Event, Outcome, Runner, Tools};
use dkms_hook::state::{self, State};
use dkms_hook::status::{self, Status};
use dkms_hook::targets::Targets;
use dkms_hook::{cli, exclude, plan, sync};

fn main() -> ExitCode {
    // Log lines read like the rest of the output (`warning: …`); RUST_LOG=debug adds detail.
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn"))
        .format(|buf, record| {
            use std::io::Write;
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
    match config.action {
        Action::Status { json } => status(&config, json),
        Action::Sync => sync(&config),
        Action::Hook(operation) => hook(&config, operation),
        Action::Generate(ref output) => dkms_hook::generate::run(output),
    }
}

/// `dkms-hook install` / `remove`: targets on stdin.
fn hook(config: &Config, operation: Operation) -> Result<ExitCode> {
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        anyhow::bail!(
            "no targets: dkms-hook reads the paths pacman passes to its hooks on stdin (e.g. `echo usr/src/NAME-VERSION/dkms.conf | dkms-hook install`); to repair the system, run `dkms-hook sync`"
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
            print("  -> no DKMS module sources or kernels among the targets: nothing to do\n");
        }
        return Ok(ExitCode::SUCCESS);
    }
    check_root(config)?;
    interrupt::install()?;
    let _lock = match take_lock(config)? {
        Taken::Lock(lock) => lock,
        Taken::Stopped(code) => return Ok(code),
    };

    // A removal looks only at the module sources among its targets.
    let inventory = match operation {
        Operation::Install => Inventory::read(&config.layout)?,
        Operation::Remove { .. } => Inventory::read_some(&config.layout, &targets.module_dirs)?,
    };
    log::debug!("{inventory:#?}");
    let plan = plan::plan(operation, &targets, &inventory);
    let plan = apply_excludes(config, plan);
    reporter.notices(&plan);
    if config.dry_run {
        reporter.dry_run(&plan);
        return Ok(reporter.finish(&plan, &run::Stats::default()));
    }
    if plan.jobs.is_empty() && plan.depmod.is_empty() {
        return Ok(reporter.finish(&plan, &run::Stats::default()));
    }
    reporter.start(operation, &plan);
    execute(config, &inventory, &plan, &reporter)
}

/// `dkms-hook sync`: plan what the installed packages imply and run it like a hook.
fn sync(config: &Config) -> Result<ExitCode> {
    check_root(config)?;
    interrupt::install()?;
    let _lock = match take_lock(config)? {
        Taken::Lock(lock) => lock,
        Taken::Stopped(code) => return Ok(code),
    };
    let inventory = Inventory::read(&config.layout)?;
    log::debug!("{inventory:#?}");
    let state = State::load_or_warn(&config.layout.state_file());
    let plan = sync::plan(&inventory, &config.excludes, &state);
    let reporter = Reporter::new(config.verbosity);
    reporter.notices(&plan);
    if config.dry_run {
        reporter.dry_run(&plan);
        return Ok(reporter.finish(&plan, &run::Stats::default()));
    }
    if plan.jobs.is_empty() && plan.depmod.is_empty() {
        if config.verbosity > Verbosity::Quiet {
            print("==> Nothing to do: every packaged module is installed for every kernel with headers\n");
        }
        return Ok(reporter.finish(&plan, &run::Stats::default()));
    }
    if config.verbosity > Verbosity::Quiet {
        let n = plan.jobs.len();
        print(&format!("==> Synchronizing DKMS modules: {}\n", count(n, "job")));
    }
    let code = execute(config, &inventory, &plan, &reporter)?;
    // The module directory of a kernel that is gone outlived its package only because of what
    // dkms had installed there; once that is removed, an empty directory is all that is left.
    for kver in plan.jobs.iter().filter_map(|j| j.kernel()).filter(|k| !inventory.kernels.contains_key(*k)) {
        let _ = std::fs::remove_dir(config.layout.kernel_dir(kver)); // only if empty
    }
    Ok(code)
}

/// `dkms-hook status [--json]`: reads only, takes no lock.
fn status(config: &Config, json: bool) -> Result<ExitCode> {
    let inventory = Inventory::read(&config.layout)?;
    let state = State::load_or_warn(&config.layout.state_file());
    let seen = status::gather(&config.layout, &inventory, &state);
    let status = Status::build(&config.layout, &inventory, &state, &config.excludes, &seen);
    let text = if json {
        let mut s = serde_json::to_string_pretty(&status).context("failed to write JSON")?;
        s.push('\n');
        s
    } else {
        status.text(config.verbosity == Verbosity::Quiet)
    };
    print(&text);
    Ok(if status.ok { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

/// Runs a plan: every finished job goes to the reporter, its log and the state file.
fn execute(config: &Config, inventory: &Inventory, plan: &Plan, reporter: &Reporter) -> Result<ExitCode> {
    let tools = Tools::resolve(&config.dkms, &config.depmod)?;
    run::preflight(&config.layout)?;
    let state_file = config.layout.state_file();
    let mut state = State::load_or_warn(&state_file);
    // Forget pairs that no longer exist, so the file does not grow forever.
    state.retain(|m, v, k| {
        inventory.kernels.contains_key(k)
            && (inventory.tree.entries.contains_key(&(m.to_owned(), v.to_owned()))
                || inventory.sources.values().any(|s| s.conf.as_ref().is_ok_and(|c| c.name == m && c.version == v)))
    });
    let logs = Logs::new(&config.log_dir, config.keep_logs);
    let runner = Runner {
        tools: &tools,
        layout: &config.layout,
        jobs: config.jobs,
        timeout: config.job_timeout,
        stop: &interrupt::STOP,
    };
    let mut state_error = None;
    let stats = runner.run(plan, &mut |event| {
        let Event::JobFinished { job, result, .. } = &event else {
            reporter.event(event);
            return;
        };
        let (job, result) = (*job, *result);
        let log = logs.write(job, result);
        state.record(job, &result.outcome, log.as_deref(), state::now());
        if let Err(e) = state.save(&state_file) {
            state_error.get_or_insert(e);
        }
        reporter.event(event);
        let failed = result.outcome.is_failure() && result.outcome != Outcome::Interrupted;
        if let (true, Some(log)) = (failed, &log) {
            print(&format!("     log: {}\n", log.display()));
        }
    });
    logs.prune();
    if let Some(e) = state_error {
        eprintln!("warning: {e:#}: `dkms-hook status` may not explain every failure");
    }
    let code = reporter.finish(plan, &stats);
    if let Some(signal) = interrupt::received() {
        print(&format!(
            "==> Stopped by {signal}: {} not done; run `dkms-hook sync` to finish\n",
            count(stats.interrupted, "job")
        ));
        return Ok(ExitCode::from(interrupt::exit_status(signal)));
    }
    Ok(code)
}

/// Hooks and sync change the system: on `/` that needs root (unless only printing a plan).
fn check_root(config: &Config) -> Result<()> {
    if !config.dry_run && !config.layout.is_relocated() && !nix::unistd::geteuid().is_root() {
        anyhow::bail!("dkms-hook changes /usr/lib/modules and the dkms tree: run it as root (pacman does)");
    }
    Ok(())
}

enum Taken {
    /// Not needed (dry run) or held.
    Lock(Option<Lock>),
    /// A signal arrived while waiting: exit with this status.
    Stopped(ExitCode),
}

/// Takes the root's lock unless this is a dry run, telling the user once if it has to wait.
fn take_lock(config: &Config) -> Result<Taken> {
    if config.dry_run {
        return Ok(Taken::Lock(None));
    }
    if !config.layout.dbpath.join("local/ALPM_DB_VERSION").is_file() {
        // Not a pacman root (a wrong --root): fail with the inventory's message before
        // creating anything in it.
        Inventory::read(&config.layout)?;
    }
    let path = config.layout.lock_file();
    let waiting = |holder: &lock::Holder| {
        print(&format!(
            "==> Waiting for {holder} to finish (it holds {}); giving up after {} s\n",
            path.display(),
            config.lock_timeout.as_secs()
        ));
    };
    match lock::acquire(&path, config.lock_timeout, &interrupt::STOP, waiting) {
        Ok(lock) => {
            // With the lock held, whatever an interrupted run left half-written is ours to drop.
            run::clear_private_trees(&config.layout);
            state::remove_stale_temporaries(&config.layout.state_file());
            Ok(Taken::Lock(Some(lock)))
        }
        Err(lock::LockError::Stopped { .. }) => {
            let signal = interrupt::received();
            print("==> Stopped while waiting for the lock: nothing was done\n");
            Ok(Taken::Stopped(ExitCode::from(signal.map_or(130, interrupt::exit_status))))
        }
        Err(e) => Err(e.into()),
    }
}

/// Drops install jobs that the configuration excludes (told with `-v`).
fn apply_excludes(config: &Config, plan: Plan) -> Plan {
    let (plan, dropped) = exclude::apply(plan, &config.excludes);
    if config.verbosity == Verbosity::Verbose {
        for job in dropped {
            print(&format!("  -> {job}: excluded by the configuration\n"));
        }
    }
    plan
}

fn count(n: usize, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

/// Prints to stdout; a closed pipe is not worth a crash.
fn print(text: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes());
    let _ = out.flush();
}
