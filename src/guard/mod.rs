//! `dkms-hook guard`, the PreTransaction hook that runs before every other: it builds, before
//! pacman changes anything, what the install hook will build after the transaction, and stops the
//! transaction when a module the user marked critical cannot be built.
//!
//! Its targets are what pacman itself matched in the transaction (its hook's triggers): the
//! incoming packages' paths — `usr/lib/modules/K/vmlinuz` of a kernel package,
//! `usr/lib/modules/K/build/include/` of a headers package, `usr/src/D/dkms.conf` of a module
//! package — and the leaving kernels' `usr/lib/modules/K/modules.order` (matched as removed).
//! What comes and what leaves is taken from these alone; package files are only read to build.
//! A kernel that comes without headers stops the transaction when a critical module could not be
//! built for it ([`headerless`]); headers that come without their kernel, for a kernel that is not
//! installed, are not built for. The package files that bring the targets are found
//! as `inventory::incoming` describes (pacman's cache for `-S`, the files of `-U`), and the headers
//! (`usr/lib/modules/K/build`) and module sources (`usr/src/D`) are extracted into a temporary
//! directory. The pairs to build are those the install hook would plan on the system as it will be
//! after the transaction ([`after_transaction`]: the incoming kernels and module versions in, the
//! kernels and module versions they replace out), turned into test builds ([`test_plan`]); they
//! run under the same scheduler and CPU budget as the install hook, each in a private dkms tree,
//! with the incoming headers given to dkms (and, for an incoming kernel, mounted at
//! `/lib/modules/K/build` in a private mount namespace, for Makefiles that look there).
//!
//! A critical module (`critical` in the configuration) that fails: exit 1, which makes pacman
//! abort the transaction before any package is touched, with what failed and the ways forward.
//! Any other failure: a warning, exit 0. What cannot be reached or read: a warning, exit 0.
//! When the transaction also brings another compiler, C library or binutils (`toolchain`), the
//! builds say nothing about those after it: one warning, no failure stops the transaction, and
//! nothing is handed over.
//! Successful builds are kept for the install hook of the same transaction (`prebuilt`), which
//! installs them instead of building again; nothing of the guard is ever in the dkms tree or
//! `/usr/lib/modules`.

mod builds;
mod bypass;
mod headerless;
mod incoming;
mod toolchain;
mod verdict;

use std::process::ExitCode;

use anyhow::Result;

use crate::config::Config;
use crate::inventory::incoming::Transaction;
use crate::inventory::package::Scratch;
use crate::inventory::Scope;
use crate::prebuilt;
use crate::report::Reporter;
use crate::session::{Begun, Session};
use crate::targets::Targets;
pub use builds::test_plan;
pub use builds::Checked;
use builds::{plan_tests, Paths};
use bypass::say_off;
pub use bypass::{bypassed, disabled, BYPASS_VARIABLE};
pub use incoming::{after_transaction, Incoming, IncomingKernel};
use verdict::build_and_judge;
pub use verdict::{Failure, Verdict};

/// What an error that stops the guard (and so the transaction) is prefixed with.
pub const STOPPED: &str = "the DKMS guard cannot check this transaction, so pacman stops it (fix what follows, or \
                           let it through unchecked: DKMS_HOOK_GUARD=off pacman …)";

/// Runs the guard with the targets on stdin. When it cannot do its job (an error), the
/// transaction stops only if a module is marked critical: otherwise there is nothing the guard
/// would have stopped it for.
pub fn run(config: &Config) -> Result<ExitCode> {
    match check(config) {
        Ok(code) => Ok(code),
        Err(e) if config.critical.is_empty() => {
            let reporter = Reporter::new(config.verbosity);
            reporter.print(&format!(
                "warning: the DKMS guard cannot check this transaction: {e:#}; no module is critical, so it goes on\n"
            ));
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => Err(e.context(STOPPED)),
    }
}

/// The guard's work (see the module documentation), one step after the other, each handing its
/// data to the next: find what the transaction brings, plan on the system as it will be, build,
/// judge, hand over. The prebuilt records are written once, at the end, whatever came of the steps.
fn check(config: &Config) -> Result<ExitCode> {
    let read = crate::session::read_targets();
    let transaction = record_what_comes(config, read.as_ref().ok());
    if let Some(why) = disabled(config.guard, None) {
        say_off(&why);
        return Ok(ExitCode::SUCCESS);
    }
    let reporter = Reporter::new(config.verbosity);
    let targets = wanted_targets(&read?);
    if targets.is_empty() {
        reporter.no_targets();
        return Ok(ExitCode::SUCCESS);
    }
    // Without dkms nothing builds, here or after the transaction: nothing to check (the install
    // hook says so).
    if let Some(why) = crate::run::Tools::dkms_not_installed(&config.dkms) {
        reporter.no_dkms(&why, false);
        return Ok(ExitCode::SUCCESS);
    }
    // Taking the lock drops whatever an earlier guard run kept.
    let session = match Session::begin(config)? {
        Begun::Stopped(code) => return Ok(code),
        Begun::Ready(session) => session,
    };
    let checked = steps(config, &session, &targets, transaction);
    if config.dry_run {
        return checked.map(|c| c.code);
    }
    // Whatever came of the steps (an error included), the one write of the prebuilt records.
    let kept = prebuilt::hand_over(&config.layout, checked.as_ref().ok().and_then(|c| c.hand_over.as_ref()));
    let checked = checked?;
    let report = checked.report(config.verbosity, kept);
    reporter.print(&report);
    Ok(checked.code)
}

/// The steps once the session holds the lock.
fn steps(config: &Config, session: &Session, targets: &Targets, transaction: Option<String>) -> Result<Checked> {
    let layout = &config.layout;
    let transaction = Transaction::discover(layout, transaction);
    let current = session.inventory(Scope::default())?;
    // The packages are extracted beside the builds (on the root's file system, not into a
    // RAM-backed /tmp), where the next run of another transaction clears whatever a killed guard
    // left.
    let scratch = match config.dry_run {
        true => Scratch::new("dkms-hook-guard.")?,
        false => Scratch::new_in(&layout.prebuilt_dir(), "incoming.")?,
    };
    let incoming = Incoming::find(&transaction, targets, &current, scratch.path());
    let after = after_transaction(&current, &incoming);
    let package_of = |kver: &str| transaction.kernel_package_of(&format!("usr/lib/modules/{kver}/vmlinuz"));
    let headerless = headerless::find(targets, &current, &after, &config.critical, &config.excludes, &package_of);
    let (said, stop) = headerless::judge(&headerless);
    if stop {
        return Ok(Checked::done(ExitCode::from(1), said));
    }
    session.reporter().print(&said);
    let paths = Paths { layout, scratch: scratch.path(), incoming: &incoming };
    let tests = plan_tests(&paths, &current, &session.state(), &config.excludes);
    let toolchain = toolchain::check(&current, &transaction, &tests.plan);
    let reporter = session.reporter();
    reporter.print(&tests.warnings);
    if let Some(change) = &toolchain.change {
        reporter.print(&toolchain::warning(change));
    }
    if config.dry_run {
        reporter.dry_run(&tests.plan);
        return Ok(Checked::done(ExitCode::SUCCESS, String::new()));
    }
    build_and_judge(config, session, &paths, &tests.plan, &current, transaction.id, toolchain)
}

/// Records the module source directories among the guard's targets (when it could read them)
/// for the remove hook of the same transaction (see `coming`), and returns the transaction's name
/// (see `inventory::transaction_id`). The guard off still records: the remove hook keeps an
/// upgraded module whatever the guard does.
pub fn record_what_comes(config: &Config, targets: Option<&Targets>) -> Option<String> {
    let transaction = crate::inventory::transaction_id::current(&config.layout);
    if let (Some(targets), false) = (targets, config.dry_run) {
        crate::coming::record(&config.layout, transaction.as_deref(), &targets.module_dirs);
    }
    transaction
}

/// The targets the guard acts on: headers (`build/…`), kernel images (`vmlinuz`: a kernel that
/// comes), `modules.order` (a kernel that leaves) and module sources.
pub fn wanted_targets(targets: &Targets) -> Targets {
    let mut wanted = targets.clone();
    wanted.kernels.retain(|_, change| change.headers || change.vmlinuz || change.order);
    wanted
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Job, JobKind, ModuleId, Operation, Outcome, TestBuild};
    use crate::inventory::dkms_tree::TreeEntry;
    use crate::inventory::{DkmsConf, Inventory, Kernel, ModuleSource};
    use crate::plan::{self, Plan};
    use crate::run::JobResult;
    use crate::state::State;
    use std::time::Duration;

    fn source(dir: &str, name: &str, version: &str, package: &str, depends: &[&str]) -> ModuleSource {
        let conf = DkmsConf {
            name: name.into(),
            version: version.into(),
            build_depends: depends.iter().map(|d| d.to_string()).collect(),
            ..Default::default()
        };
        ModuleSource {
            dir: dir.into(),
            package: Some(package.into()),
            conf: Ok(conf),
            digest: Some(format!("d-{dir}")),
        }
    }

    /// `linux` at 6.1 and `linux-lts` at 6.6, both with headers; hello 1.0 and zfs 2.2 installed
    /// for both.
    fn system() -> Inventory {
        let mut inv = Inventory::default();
        for (kver, package) in [("6.1-arch", "linux"), ("6.6-lts", "linux-lts")] {
            let headers = Some(format!("{package}-headers"));
            let kernel = Kernel { kver: kver.into(), package: package.into(), pkgbase: package.into(), headers };
            inv.kernels.insert(kver.into(), kernel);
        }
        for (dir, name, version) in [("hello-1.0", "hello", "1.0"), ("zfs-2.2", "zfs", "2.2")] {
            inv.sources.insert(dir.into(), source(dir, name, version, &format!("{name}-dkms"), &[]));
            let entry = TreeEntry {
                source_dir: Some(dir.into()),
                kept: None,
                built: ["6.1-arch", "6.6-lts"].map(String::from).into(),
                installed: ["6.1-arch", "6.6-lts"].map(String::from).into(),
            };
            inv.tree.entries.insert((name.into(), version.into()), entry);
        }
        inv
    }

    fn kernel_upgrade() -> Incoming {
        let mut incoming = Incoming::default();
        incoming.kernels.push(IncomingKernel {
            kver: "6.2-arch".into(),
            headers_package: "linux-headers".into(),
            headers_version: "6.2-1".into(),
            compressed_module: None,
        });
        incoming.leaving.insert("6.1-arch".into());
        incoming.targets = Targets::parse(b"usr/lib/modules/6.2-arch/build/include/\n");
        incoming
    }

    fn test_jobs(incoming: &Incoming, inv: &Inventory) -> Vec<String> {
        let after = after_transaction(inv, incoming);
        let install = plan::plan(Operation::Install, &incoming.targets, &after, &State::default());
        let build = |id: &ModuleId, kernel: &str| TestBuild {
            headers: format!("/h/{kernel}").into(),
            source_tree: "/s".into(),
            tree: format!("/t/{id}/{kernel}").into(),
            mount_headers: false,
            compressed_module: None,
        };
        let (plan, _) = test_plan(&install, &build);
        plan.jobs.iter().map(|j| format!("{} {j}", j.verb())).collect()
    }

    #[test]
    fn a_kernel_upgrade_builds_every_module_for_the_incoming_kernel_only() {
        let after = after_transaction(&system(), &kernel_upgrade());
        assert_eq!(after.kernels.keys().collect::<Vec<_>>(), ["6.2-arch", "6.6-lts"]);
        assert_eq!(after.kernels["6.2-arch"].headers.as_deref(), Some("linux-headers"));
        assert_eq!(after.package_versions["linux-headers"], "6.2-1");
        assert_eq!(
            test_jobs(&kernel_upgrade(), &system()),
            ["test-build hello/1.0 for 6.2-arch", "test-build zfs/2.2 for 6.2-arch"]
        );
    }

    #[test]
    fn a_module_upgrade_replaces_the_installed_version_on_the_kernels_that_stay() {
        let mut incoming = kernel_upgrade();
        incoming.sources.push(source("zfs-2.3", "zfs", "2.3", "zfs-dkms", &[]));
        incoming.targets = Targets::parse(b"usr/lib/modules/6.2-arch/build/include/\nusr/src/zfs-2.3/dkms.conf\n");
        let after = after_transaction(&system(), &incoming);
        assert!(!after.sources.contains_key("zfs-2.2") && after.sources.contains_key("zfs-2.3"));
        assert_eq!(
            test_jobs(&incoming, &system()),
            ["test-build hello/1.0 for 6.2-arch", "test-build zfs/2.3 for 6.2-arch", "test-build zfs/2.3 for 6.6-lts"]
        );
    }

    #[test]
    fn modules_with_build_depends_are_left_to_the_install_hook() {
        let mut incoming = Incoming::default();
        incoming.sources.push(source("spl-1.0", "spl", "1.0", "spl-dkms", &["zfs"]));
        incoming.targets = Targets::parse(b"usr/src/spl-1.0/dkms.conf\n");
        let after = after_transaction(&system(), &incoming);
        let install = plan::plan(Operation::Install, &incoming.targets, &after, &State::default());
        let build = |_: &ModuleId, _: &str| TestBuild {
            headers: "/h".into(),
            source_tree: "/s".into(),
            tree: "/t".into(),
            mount_headers: false,
            compressed_module: None,
        };
        let (plan, skipped) = test_plan(&install, &build);
        assert!(plan.jobs.is_empty());
        assert_eq!(skipped, [ModuleId::new("spl", "1.0")]);
    }

    #[test]
    fn only_critical_modules_that_fail_stop_the_transaction() {
        let build = TestBuild {
            headers: "/h".into(),
            source_tree: "/s".into(),
            tree: "/t".into(),
            mount_headers: false,
            compressed_module: None,
        };
        let job = |name: &str| Job {
            kind: JobKind::Test { kernel: "6.2".into(), build: build.clone() },
            module: ModuleId::new(name, "1"),
            after: vec![],
        };
        let plan = Plan { jobs: ["zfs", "nvidia-open", "hello", "wifi", "cam"].map(job).to_vec(), ..Plan::default() };
        let failed = Outcome::Failed {
            code: Some(10),
            meaning: "the module build (make) failed",
            log: None,
            tail: vec!["make: Entering".into(), "zfs.c:3:1: error: boom".into()],
        };
        let result = |outcome: Outcome| {
            Some(JobResult {
                outcome,
                duration: Duration::ZERO,
                output: String::new(),
                prebuilt: false,
                prebuilt_refused: None,
            })
        };
        let results = [
            result(failed.clone()),
            result(Outcome::TimedOut { after: Duration::from_secs(600) }),
            result(failed),
            result(Outcome::Built),
            result(Outcome::ExecFailed { error: "no dkms".into() }),
        ];
        let critical = ["zfs", "nvidia*"].map(|p| glob::Pattern::new(p).unwrap());
        let verdict = Verdict::of(&plan, &results, &critical);
        assert_eq!(verdict.critical.len(), 2);
        assert_eq!(verdict.critical[0].cause.as_deref(), Some("zfs.c:3:1: error: boom"));
        assert_eq!(verdict.critical[1].cause.as_deref(), Some("dkms was stopped after 600 s (job_timeout)"));
        assert_eq!(verdict.other, [Failure { job: 2, cause: Some("zfs.c:3:1: error: boom".into()) }]);
        assert_eq!(verdict.unchecked, [4]);
    }

    #[test]
    fn the_guard_is_off_by_configuration_or_by_the_variable() {
        assert_eq!(disabled(true, None), None);
        assert_eq!(disabled(true, Some("on")), None);
        assert!(disabled(false, None).unwrap().contains("guard = false"));
        for off in ["off", "0", "no", "false", "OFF"] {
            assert_eq!(disabled(true, Some(off)), Some(format!("{BYPASS_VARIABLE}={off}")));
        }
    }
}
