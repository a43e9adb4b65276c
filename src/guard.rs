//! `dkms-hook guard`, the PreTransaction hook that runs before every other: it builds, before
//! pacman changes anything, what the install hook will build after the transaction, and stops the
//! transaction when a module the user marked critical cannot be built.
//!
//! Its targets are the incoming packages' paths: `usr/lib/modules/K/build/include/` of a headers
//! package, `usr/src/D/dkms.conf` of a module package. The package files that bring them are found
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
//! Successful builds are kept for the install hook of the same transaction (`prebuilt`), which
//! installs them instead of building again; nothing of the guard is ever in the dkms tree or
//! `/usr/lib/modules`.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Result;

use crate::config::{Config, Verbosity};
use crate::domain::{Job, JobKind, ModuleId, TestBuild};
use crate::domain::{Layout, Operation};
use crate::domain::{Outcome, Signing};
use crate::inventory::incoming::{Located, Transaction};
use crate::inventory::package::{self, Package, Scratch};
use crate::inventory::{self, dkms_conf, Evaluate, Inventory, Kernel, ModuleSource, Scope};
use crate::plan::{self, Plan};
use crate::prebuilt::{self, Prebuilt};
use crate::report::{count, Heading};
use crate::run::JobResult;
use crate::session::{Begun, Session};
use crate::targets::Targets;

/// The environment variable that turns the guard off for one pacman run.
pub const BYPASS_VARIABLE: &str = "DKMS_HOOK_GUARD";

/// What an error that stops the guard (and so the transaction) is prefixed with.
pub const STOPPED: &str = "the DKMS guard cannot check this transaction, so pacman stops it (fix what follows, or \
                           let it through unchecked: DKMS_HOOK_GUARD=off pacman …)";

/// When the bypass variable turns the guard off: says so; the exit status.
pub fn bypassed() -> Option<ExitCode> {
    let why = disabled(true, std::env::var(BYPASS_VARIABLE).ok().as_deref())?;
    say_off(&why);
    Some(ExitCode::SUCCESS)
}

fn say_off(why: &str) {
    let reporter = crate::report::Reporter::new(Verbosity::Normal);
    reporter.print(&format!("==> DKMS guard off ({why}): modules are not test-built before the transaction\n"));
}

/// Runs the guard with the targets on stdin. When it cannot do its job (an error), the
/// transaction stops only if a module is marked critical: otherwise there is nothing the guard
/// would have stopped it for.
pub fn run(config: &Config) -> Result<ExitCode> {
    if let Some(why) = disabled(config.guard, None) {
        say_off(&why);
        return Ok(ExitCode::SUCCESS);
    }
    match check(config) {
        Ok(code) => Ok(code),
        Err(e) if config.critical.is_empty() => {
            let reporter = crate::report::Reporter::new(config.verbosity);
            reporter.print(&format!(
                "warning: the DKMS guard cannot check this transaction: {e:#}; no module is critical, so it goes on\n"
            ));
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => Err(e.context(STOPPED)),
    }
}

/// The guard's work: see the module documentation.
fn check(config: &Config) -> Result<ExitCode> {
    let targets = crate::session::read_targets()?;
    let reporter = crate::report::Reporter::new(config.verbosity);
    let targets = wanted_targets(&targets);
    if targets.is_empty() {
        reporter.no_targets();
        return Ok(ExitCode::SUCCESS);
    }
    let session = match Session::begin(config)? {
        Begun::Stopped(code) => return Ok(code),
        Begun::Ready(session) => session,
    };
    let result = check_with(config, &session, &targets);
    if result.is_err() && !config.dry_run {
        // Nothing half-done of the guard stays (the lock is still held).
        prebuilt::clear(&config.layout);
    }
    result
}

/// The guard's work once the session holds the lock.
fn check_with(config: &Config, session: &Session, targets: &Targets) -> Result<ExitCode> {
    let reporter = session.reporter();
    let layout = &config.layout;
    let transaction = Transaction::discover();
    let current = session.inventory(Scope::default())?;
    // A new guard run replaces whatever an earlier one kept. The packages are extracted beside
    // the builds (on the root's file system, not into a RAM-backed /tmp), where the next run of
    // another transaction clears whatever a killed guard left.
    let scratch = match config.dry_run {
        true => Scratch::new("dkms-hook-guard.")?,
        false => {
            prebuilt::clear(layout);
            Scratch::new_in(&prebuilt::root(layout), "incoming.")?
        }
    };
    let incoming = Incoming::find(layout, &transaction, targets, &current, scratch.path());
    for (path, why) in &incoming.unreachable {
        reporter.print(&format!("warning: cannot check {path} before the transaction: {why}\n"));
    }
    let after = after_transaction(&current, &incoming);
    let state = session.state();
    let install = plan::plan(Operation::Install, &incoming.targets, &after, &state);
    let (install, _) = crate::plan::exclude(install, &config.excludes);
    let paths = Paths { layout, scratch: scratch.path(), incoming: &incoming };
    let (plan, skipped) = test_plan(&install, &|id, kernel| paths.test_build(id, kernel));
    for notice in install.notices.iter().filter(|n| n.is_error()) {
        reporter.print(&format!("warning: {notice}\n"));
    }
    for id in &skipped {
        reporter.print(&format!(
            "warning: {id} is not test-built before the transaction: it has BUILD_DEPENDS, which dkms checks in \
             its own tree; the install hook builds it after the transaction\n"
        ));
    }
    if config.dry_run {
        reporter.dry_run(&plan);
        return Ok(ExitCode::SUCCESS);
    }
    if plan.jobs.is_empty() {
        match incoming.unreachable.is_empty() {
            true => reporter.start(Heading::Guard, &plan),
            false if config.verbosity > Verbosity::Quiet => {
                reporter.print("==> DKMS guard: nothing checked before the transaction (see the warnings above)\n")
            }
            false => {}
        }
        prebuilt::clear(layout);
        return Ok(ExitCode::SUCCESS);
    }
    // The root's own key when dkms has made it. Before that, dkms would make it in the dkms tree,
    // which the guard leaves alone: it makes one for the guard's builds instead, which the install
    // hook adopts as the root's (see `prebuilt`).
    let own = Signing::of(layout);
    let signing = match own.exists() {
        true => own.clone(),
        false => Signing { key: scratch.path().join("mok.key"), cert: scratch.path().join("mok.pub") },
    };
    reporter.start(Heading::Guard, &plan);
    let results = session.run_builds(&plan, signing.clone())?;
    let verdict = Verdict::of(&plan, &results, &config.critical);
    if let Some(signal) = crate::interrupt::received() {
        prebuilt::clear(layout);
        reporter.print("==> Stopped: the transaction does not go on\n");
        return Ok(ExitCode::from(crate::interrupt::exit_status(signal)));
    }
    if !verdict.critical.is_empty() {
        prebuilt::clear(layout);
        reporter.print(&verdict.abort_message(&plan, &incoming));
        return Ok(ExitCode::from(1));
    }
    for failure in &verdict.other {
        let job = &plan.jobs[failure.job];
        reporter.print(&format!(
            "warning: {job} does not build (see above); {} is not critical, so the transaction goes on (the \
             install hook reports the failure after it)\n",
            job.module.name
        ));
    }
    for i in &verdict.unchecked {
        reporter.print(&format!("warning: {} could not be test-built (see above)\n", plan.jobs[*i]));
    }
    let mut builds = paths.prebuilt(&plan, &results, &current);
    let signed = signing.cert.exists();
    if signed && signing != own {
        if let Err(e) = prebuilt::keep_key(layout, &signing) {
            log::warn!("{e:#}: the install hook builds again");
            builds.clear();
        }
    }
    let certificate = signed.then(|| crate::digest::of_file(&signing.cert).ok()).flatten();
    let built = results.iter().filter(|r| matches!(r.as_ref().map(|r| &r.outcome), Some(Outcome::Built))).count();
    let kept = builds.len();
    drop(scratch);
    let index = prebuilt::Index { transaction: transaction.id.clone(), certificate, builds };
    if kept == 0 {
        prebuilt::clear(layout);
    } else if let Err(e) = prebuilt::save(layout, &index) {
        log::warn!("{e:#}: the install hook builds again");
        prebuilt::clear(layout);
    }
    let note = match (built, kept) {
        (0, _) => String::new(),
        (b, k) if k == b => "; the install hook installs these builds".to_owned(),
        (_, 0) => "; the install hook builds again".to_owned(),
        (_, k) => format!("; the install hook installs {k} of these builds"),
    };
    if config.verbosity > Verbosity::Quiet {
        reporter.print(&format!(
            "==> DKMS guard: {} of {} {}{note}\n",
            built,
            count(plan.jobs.len(), "test build"),
            if built == 1 { "works" } else { "work" }
        ));
    }
    Ok(ExitCode::SUCCESS)
}

/// Why the guard is off, if it is: the configuration, or the bypass variable.
pub fn disabled(configured: bool, variable: Option<&str>) -> Option<String> {
    if !configured {
        return Some("guard = false in the configuration".to_owned());
    }
    match variable.map(str::trim) {
        Some(v) if ["off", "0", "no", "false"].contains(&v.to_ascii_lowercase().as_str()) => {
            Some(format!("{BYPASS_VARIABLE}={v}"))
        }
        _ => None,
    }
}

/// The targets the guard acts on: headers (`build/…`) and module sources; a kernel image alone
/// brings nothing to build against.
pub fn wanted_targets(targets: &Targets) -> Targets {
    let mut wanted = targets.clone();
    wanted.kernels.retain(|_, change| change.headers);
    wanted
}

/// One incoming kernel's headers, extracted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IncomingKernel {
    pub kver: String,
    /// The headers package and its version.
    pub headers_package: String,
    pub headers_version: String,
}

/// What the transaction brings that the guard can build with.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Incoming {
    /// The targets whose package files were found and extracted.
    pub targets: Targets,
    pub kernels: Vec<IncomingKernel>,
    /// The incoming module sources (their dkms.conf read unprivileged, their digest computed).
    pub sources: Vec<ModuleSource>,
    /// Installed kernels that leave: their package is upgraded to one without their kver.
    pub leaving: BTreeSet<String>,
    /// Targets that could not be checked, and why.
    pub unreachable: Vec<(String, String)>,
}

impl Incoming {
    /// Finds the package files of `targets` and extracts what the builds need into `into`.
    fn find(layout: &Layout, transaction: &Transaction, targets: &Targets, current: &Inventory, into: &Path) -> Self {
        let mut incoming = Incoming::default();
        let headers_path = |kver: &str| format!("usr/lib/modules/{kver}/build/include/");
        let source_path = |dir: &str| format!("usr/src/{dir}/dkms.conf");
        let mut paths: Vec<String> = targets.kernels.keys().map(|k| headers_path(k)).collect();
        paths.extend(targets.module_dirs.iter().map(|d| source_path(d)));
        let located = transaction.locate(layout, &paths, |name, path| match path.starts_with("usr/src/") {
            true => name.contains("dkms"),
            false => name.ends_with("-headers"),
        });
        let mut found = |path: &str, member: &str| -> Option<Package> {
            match located.get(path) {
                Some(Located::Found(package)) => match package::extract(&package.path, &[member], into) {
                    Ok(()) => Some(package.clone()),
                    Err(e) => {
                        incoming.unreachable.push((path.to_owned(), format!("{e:#}")));
                        None
                    }
                },
                Some(Located::Unreachable(why)) => {
                    incoming.unreachable.push((path.to_owned(), why.clone()));
                    None
                }
                None => None,
            }
        };
        let mut kernels = Vec::new();
        for (kver, change) in &targets.kernels {
            if let Some(package) = found(&headers_path(kver), &format!("usr/lib/modules/{kver}/build")) {
                kernels.push(IncomingKernel {
                    kver: kver.clone(),
                    headers_package: package.name.clone(),
                    headers_version: package.version.clone(),
                });
                incoming.targets.kernels.insert(kver.clone(), *change);
            }
        }
        let mut sources = Vec::new();
        for dir in &targets.module_dirs {
            if let Some(package) = found(&source_path(dir), &format!("usr/src/{dir}")) {
                sources.push((dir.clone(), package.name));
                incoming.targets.module_dirs.insert(dir.clone());
            }
        }
        incoming.kernels = kernels;
        let tree = into.join("usr/src");
        let confs: Vec<PathBuf> = sources.iter().map(|(dir, _)| tree.join(dir).join("dkms.conf")).collect();
        let confs = dkms_conf::read_many(&confs, Evaluate::Unprivileged);
        incoming.sources = sources
            .into_iter()
            .zip(confs)
            .map(|((dir, package), conf)| {
                let digest = crate::digest::of_tree(&tree.join(&dir)).ok();
                ModuleSource { dir, package: Some(package), conf, digest }
            })
            .collect();
        // An installed kernel whose package the transaction upgrades leaves unless the upgrade
        // brings its kver again (its headers among the targets, or its module directory in the
        // incoming kernel package).
        let packages: BTreeSet<String> = current.kernels.values().map(|k| k.package.clone()).collect();
        let upgraded = transaction.upgraded(layout, &packages);
        let stays = |kernel: &Kernel| {
            let dir = format!("usr/lib/modules/{}/", kernel.kver);
            let located = transaction.locate(layout, std::slice::from_ref(&dir), |name, _| name == kernel.package);
            matches!(located.get(&dir), Some(Located::Found(_)))
        };
        incoming.leaving = current
            .kernels
            .values()
            .filter(|k| upgraded.contains(&k.package) && !targets.kernels.contains_key(&k.kver) && !stays(k))
            .map(|k| k.kver.clone())
            .collect();
        incoming
    }

    fn kernel(&self, kver: &str) -> Option<&IncomingKernel> {
        self.kernels.iter().find(|k| k.kver == kver)
    }

    fn source(&self, id: &ModuleId) -> Option<&ModuleSource> {
        self.sources.iter().find(|s| s.conf.as_ref().is_ok_and(|c| c.name == id.name && c.version == id.version))
    }
}

/// The system as it will be after the transaction, as far as the install hook's planning goes:
/// the incoming kernels with their headers, the incoming module sources in place of those their
/// packages replace, without the kernels that leave. The dkms tree is as it is now.
pub fn after_transaction(current: &Inventory, incoming: &Incoming) -> Inventory {
    let mut after = current.clone();
    after.kernels.retain(|kver, _| !incoming.leaving.contains(kver));
    for k in &incoming.kernels {
        let name = k.headers_package.strip_suffix("-headers").unwrap_or(&k.headers_package).to_owned();
        let kernel = after.kernels.entry(k.kver.clone()).or_insert_with(|| Kernel {
            kver: k.kver.clone(),
            package: name.clone(),
            pkgbase: name,
            headers: None,
        });
        kernel.headers = Some(k.headers_package.clone());
        after.package_versions.insert(k.headers_package.clone(), k.headers_version.clone());
    }
    let replaced: BTreeSet<&str> = incoming.sources.iter().filter_map(|s| s.package.as_deref()).collect();
    after.sources.retain(|_, s| s.package.as_deref().is_none_or(|p| !replaced.contains(p)));
    for source in &incoming.sources {
        after.sources.insert(source.dir.clone(), source.clone());
    }
    after.upgrading.clear();
    after.prebuilt.clear();
    after
}

/// The guard's plan: a test build for each job of the install hook's plan that builds, made by
/// `build(module version, kernel)`. Modules with BUILD_DEPENDS are left out (returned): dkms
/// looks for their dependencies in the tree it builds in, which a private tree does not have.
pub fn test_plan(install: &Plan, build: &dyn Fn(&ModuleId, &str) -> TestBuild) -> (Plan, Vec<ModuleId>) {
    let mut plan = Plan::default();
    let mut skipped = Vec::new();
    for job in install.jobs.iter().filter(|j| j.is_install()) {
        let Some(kernel) = job.kernel() else { continue };
        if install.build_depends.contains_key(&job.module) {
            if !skipped.contains(&job.module) {
                skipped.push(job.module.clone());
            }
            continue;
        }
        let kind = JobKind::Test { kernel: kernel.to_owned(), build: build(&job.module, kernel) };
        plan.jobs.push(Job { kind, module: job.module.clone(), after: Vec::new() });
    }
    (plan, skipped)
}

/// Where each test build finds its sources and headers, and where it goes.
struct Paths<'a> {
    layout: &'a Layout,
    /// Where the incoming packages were extracted.
    scratch: &'a Path,
    incoming: &'a Incoming,
}

impl Paths<'_> {
    fn test_build(&self, id: &ModuleId, kernel: &str) -> TestBuild {
        let source_tree = match self.incoming.source(id) {
            Some(_) => self.scratch.join("usr/src"),
            None => self.layout.source_tree.clone(),
        };
        let (headers, mount_headers) = match self.incoming.kernel(kernel) {
            Some(_) => {
                let headers = self.scratch.join("usr/lib/modules").join(kernel).join("build");
                // Only where the build runs on the system the hook changes: under --root, a
                // Makefile's /lib/modules is another system's.
                let missing = !Path::new("/lib/modules").join(kernel).join("build").exists();
                (headers, missing && !self.layout.is_relocated())
            }
            None => (self.layout.kernel_dir(kernel).join("build"), false),
        };
        let tree = prebuilt::tree(self.layout, &id.name, &id.version, kernel);
        TestBuild { headers, source_tree, tree, mount_headers }
    }

    /// The successful builds, described for the install hook.
    fn prebuilt(&self, plan: &Plan, results: &[Option<JobResult>], current: &Inventory) -> Vec<Prebuilt> {
        let mut builds = Vec::new();
        for (job, result) in plan.jobs.iter().zip(results) {
            let (Some(result), JobKind::Test { kernel, build }) = (result, &job.kind) else { continue };
            if result.outcome != Outcome::Built {
                continue;
            }
            let id = &job.module;
            let digest = match self.incoming.source(id) {
                Some(source) => source.digest.clone(),
                None => inventory::digest_of(self.layout, &format!("{}-{}", id.name, id.version)),
            };
            let headers = match self.incoming.kernel(kernel) {
                Some(k) => Some((k.headers_package.clone(), k.headers_version.clone())),
                None => current.kernels.get(kernel).and_then(|k| k.headers.clone()).and_then(|h| {
                    let version = current.package_versions.get(&h).cloned()?;
                    Some((h, version))
                }),
            };
            let (Some(digest), Some((headers_package, headers_version))) = (digest, headers) else { continue };
            builds.push(Prebuilt {
                module: id.name.clone(),
                version: id.version.clone(),
                kernel: kernel.clone(),
                digest,
                headers_package,
                headers_version,
                dir: build.tree.join(&id.name).join(&id.version).join(kernel),
            });
        }
        builds
    }
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

    /// What to tell the user when the transaction stops: each critical failure with its first
    /// compiler error, and the ways forward.
    fn abort_message(&self, plan: &Plan, incoming: &Incoming) -> String {
        let mut text = String::new();
        let mut hold: BTreeSet<String> = BTreeSet::new();
        for failure in &self.critical {
            let job = &plan.jobs[failure.job];
            let kernel = job.kernel().unwrap_or_default();
            text.push_str(&format!(
                "error: {} is critical and does not build for kernel {kernel}: stopping the transaction before \
                 anything is changed\n",
                job.module
            ));
            if let Some(cause) = &failure.cause {
                text.push_str(&format!("       {cause}\n"));
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
        text.push_str(
            "  -> fix the module (a newer release, or a report to its packager with the log above), or drop it: \
             remove its package, or its name from `critical` in /etc/dkms-hook.toml\n",
        );
        text.push_str(&format!(
            "  -> go ahead anyway, once (the module then fails after the transaction): {BYPASS_VARIABLE}=off pacman -Syu\n"
        ));
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inventory::dkms_tree::TreeEntry;
    use crate::inventory::DkmsConf;
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
        };
        let (plan, skipped) = test_plan(&install, &build);
        assert!(plan.jobs.is_empty());
        assert_eq!(skipped, [ModuleId::new("spl", "1.0")]);
    }

    #[test]
    fn only_critical_modules_that_fail_stop_the_transaction() {
        let build =
            TestBuild { headers: "/h".into(), source_tree: "/s".into(), tree: "/t".into(), mount_headers: false };
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
            Some(JobResult { outcome, duration: Duration::ZERO, output: String::new(), prebuilt: false })
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
