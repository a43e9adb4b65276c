//! The guard's builds: a test build for each job of the install hook's plan that builds, with the
//! paths it needs (the incoming headers and sources where the transaction brings them), and the
//! successful ones described for the install hook.

use std::path::Path;
use std::process::ExitCode;

use super::incoming::{after_transaction, Incoming};
use crate::config::{Excludes, Verbosity};
use crate::domain::{Job, JobKind, Layout, ModuleId, Operation, Outcome, TestBuild};
use crate::inventory::{self, Inventory};
use crate::plan::{self, Plan};
use crate::prebuilt::{self, Index, Prebuilt};
use crate::report::count;
use crate::run::JobResult;
use crate::state::State;

/// The guard's plan and what to warn about before it runs.
pub struct Tests {
    pub plan: Plan,
    /// Warnings: targets that cannot be checked, errors of the install plan, modules left to the
    /// install hook.
    pub warnings: String,
}

/// Plans the test builds: the install hook's plan on the system as it will be after the
/// transaction (without what the configuration excludes), turned into test builds.
pub(super) fn plan_tests(paths: &Paths, current: &Inventory, state: &State, excludes: &Excludes) -> Tests {
    let incoming = paths.incoming;
    let mut warnings = String::new();
    for (path, why) in &incoming.unreachable {
        warnings.push_str(&format!("warning: cannot check {path} before the transaction: {why}\n"));
    }
    let after = after_transaction(current, incoming);
    let install = plan::plan(Operation::Install, &incoming.targets, &after, state);
    let (install, _) = plan::exclude(install, excludes);
    let (plan, skipped) = test_plan(&install, &|id, kernel| paths.test_build(id, kernel));
    for notice in install.notices.iter().filter(|n| n.is_error()) {
        warnings.push_str(&format!("warning: {notice}\n"));
    }
    for id in &skipped {
        warnings.push_str(&format!(
            "warning: {id} is not test-built before the transaction: it has BUILD_DEPENDS, which dkms checks in \
             its own tree; the install hook builds it after the transaction\n"
        ));
    }
    Tests { plan, warnings }
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
pub(super) struct Paths<'a> {
    pub(super) layout: &'a Layout,
    /// Where the incoming packages were extracted.
    pub(super) scratch: &'a Path,
    pub(super) incoming: &'a Incoming,
}

impl Paths<'_> {
    pub(super) fn test_build(&self, id: &ModuleId, kernel: &str) -> TestBuild {
        let source_tree = match self.incoming.source(id) {
            Some(_) => self.scratch.join("usr/src"),
            None => self.layout.source_tree.clone(),
        };
        let compressed_module = self.incoming.kernel(kernel).and_then(|k| k.compressed_module.clone());
        let (headers, mount_headers) = match self.incoming.kernel(kernel) {
            Some(_) => {
                let headers = self.scratch.join("usr/lib/modules").join(kernel).join("build");
                // Where the root expects them (`/lib/modules/K/build` on the running system).
                // Under --root, where no Makefile looks, only when we may make a namespace: the
                // build then sees the root as a build on that root would, and tests run the same
                // path as a booted system does.
                let missing = !self.layout.kernel_dir(kernel).join("build").exists();
                let may = !self.layout.is_relocated() || nix::unistd::geteuid().is_root();
                (headers, missing && may)
            }
            None => (self.layout.kernel_dir(kernel).join("build"), false),
        };
        let tree = prebuilt::tree(self.layout, &id.name, &id.version, kernel);
        TestBuild { headers, source_tree, tree, mount_headers, compressed_module }
    }

    /// The successful builds, described for the install hook.
    pub(super) fn prebuilt(&self, plan: &Plan, results: &[Option<JobResult>], current: &Inventory) -> Vec<Prebuilt> {
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

/// What a guard run came to.
pub struct Checked {
    pub code: ExitCode,
    /// What to tell the user once the builds are done: why the transaction stops, or the
    /// warnings.
    pub text: String,
    /// What the install hook of this transaction gets (`None`: nothing).
    pub hand_over: Option<Index>,
    /// Test builds that worked, of how many, when the builds ran to the end.
    pub tested: Option<(usize, usize)>,
}

impl Checked {
    pub(super) fn done(code: ExitCode, text: String) -> Checked {
        Checked { code, text, hand_over: None, tested: None }
    }

    /// What the guard says last: [`Checked::text`], then how many test builds work and how many
    /// of them the install hook installs (`kept`), when the builds ran to the end.
    pub fn report(&self, verbosity: Verbosity, kept: usize) -> String {
        let Some((built, total)) = self.tested.filter(|_| verbosity > Verbosity::Quiet) else {
            return self.text.clone();
        };
        let note = match (built, kept) {
            (0, _) => String::new(),
            (b, k) if k == b => "; the install hook installs these builds".to_owned(),
            (_, 0) => "; the install hook builds again".to_owned(),
            (_, k) => format!("; the install hook installs {k} of these builds"),
        };
        let works = if built == 1 { "works" } else { "work" };
        format!("{}==> DKMS guard: {built} of {} {works}{note}\n", self.text, count(total, "test build"))
    }
}
