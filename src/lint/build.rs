//! `lint --build`: each module of a package built for every installed kernel with headers (of the
//! system, or of `--root`), the way the hooks build it and judged the same way (dkms's exit
//! status, built files, every module's vermagic naming the kernel), but privately: the sources
//! come from the package, the dkms tree is a fresh one in a temporary directory, and so is the
//! signing key dkms makes for the build. Nothing is installed; the system's dkms tree, its key
//! (`/var/lib/dkms/mok.key`) and its module directories are never written, and the temporary
//! directory goes with everything in it when the [`Builder`] is dropped.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Result;
use serde::Serialize;

use crate::config::Config;
use crate::domain::{Layout, ModuleId, Outcome, Signing};
use crate::interrupt;
use crate::inventory::package::Scratch;
use crate::inventory::{Evaluate, Inventory, Kernel, Scope};
use crate::run::{Limits, PrivateBuild, Runner, Tools};

use super::finding::{Finding, Tag};

/// What became of one module version on one kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BuildOutcome {
    /// Built, and every module's vermagic names the kernel.
    Built,
    /// dkms declined: BUILD_EXCLUSIVE does not match the kernel (exit 77). Not an error.
    Skipped,
    /// The build failed (a `build-failed` finding).
    Failed,
    /// Built for another kernel (a `build-wrong-kernel` finding).
    WrongKernel,
    /// The kernel has no headers: nothing to build against.
    NoHeaders,
    /// Stopped by a signal.
    Interrupted,
}

/// One build, as reported.
#[derive(Debug, Clone, Serialize)]
pub struct BuildResult {
    pub module: String,
    pub version: String,
    pub kernel: String,
    pub result: BuildOutcome,
    /// How long dkms ran.
    pub seconds: f64,
    /// For `no_headers`: the package that has them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub headers_package: Option<String>,
    /// The finding a failed build makes (also among the package's findings).
    #[serde(skip)]
    pub finding: Option<Finding>,
    /// dkms's output.
    #[serde(skip)]
    pub output: String,
}

/// Builds modules privately for the installed kernels.
pub struct Builder {
    layout: Layout,
    tools: Tools,
    kernels: Vec<Kernel>,
    make_jobs: usize,
    timeout: Option<Duration>,
    signing: Signing,
    /// Holds the private dkms tree and the signing key.
    scratch: Scratch,
}

impl Builder {
    /// Checks that builds can run at all (root, dkms, a kernel with headers) before any package
    /// is looked at; the errors name the fix.
    pub fn prepare(config: &Config) -> Result<Builder> {
        if !nix::unistd::geteuid().is_root() {
            anyhow::bail!(
                "lint --build runs dkms, which builds as root: run it as root (the module's own build then runs as \
                 root, as it would when the package is installed)"
            );
        }
        let tools = Tools::resolve(&config.dkms, &config.depmod, None)?;
        // Only the kernels: no module source of the system is read.
        let none = BTreeSet::new();
        let scope = Scope { only: Some(&none), ..Scope::default() };
        let inventory = Inventory::read_scope(&config.layout, scope, Evaluate::Unprivileged)?;
        let kernels: Vec<Kernel> = inventory.kernels.into_values().collect();
        if !kernels.iter().any(|k| k.headers.is_some()) {
            let install = kernels.first().map_or_else(|| "linux-headers".to_owned(), Kernel::headers_package);
            anyhow::bail!(
                "no installed kernel under {} has headers, so there is nothing to build against: install {install}, \
                 or lint without --build",
                config.layout.root.display()
            );
        }
        let scratch = Scratch::new("dkms-hook-lint-build.")?;
        let signing = Signing { key: scratch.path().join("mok.key"), cert: scratch.path().join("mok.pub") };
        let make_jobs = if config.jobs == 0 { Runner::cores() } else { config.jobs };
        Ok(Builder {
            layout: config.layout.clone(),
            tools,
            kernels,
            make_jobs,
            timeout: config.job_timeout,
            signing,
            scratch,
        })
    }

    /// The kernels builds run for (those with headers), and the others.
    pub fn kernels(&self) -> &[Kernel] {
        &self.kernels
    }

    /// Builds `module`, whose sources are `source_tree/NAME-VERSION`, for every kernel in turn,
    /// handing each result to `sink` as it is known. Stops early when a stop is requested.
    pub fn build(&self, module: &ModuleId, source_tree: &Path, sink: &mut dyn FnMut(BuildResult)) {
        for kernel in &self.kernels {
            if interrupt::STOP.is_set() {
                return;
            }
            let result = self.build_one(module, source_tree, kernel);
            let stop = result.result == BuildOutcome::Interrupted;
            sink(result);
            if stop {
                return;
            }
        }
    }

    fn build_one(&self, module: &ModuleId, source_tree: &Path, kernel: &Kernel) -> BuildResult {
        let mut result = BuildResult {
            module: module.name.clone(),
            version: module.version.clone(),
            kernel: kernel.kver.clone(),
            result: BuildOutcome::Built,
            seconds: 0.0,
            headers_package: None,
            finding: None,
            output: String::new(),
        };
        if kernel.headers.is_none() {
            result.result = BuildOutcome::NoHeaders;
            result.headers_package = Some(kernel.headers_package());
            return result;
        }
        let tree = self.tree();
        let headers = self.layout.kernel_dir(&kernel.kver).join("build");
        let build = PrivateBuild {
            module,
            kernel: &kernel.kver,
            tree: &tree,
            source_tree,
            headers: &headers,
            install_tree: &self.layout.module_dir,
            make_jobs: self.make_jobs,
            signing: &self.signing,
            mount: None,
        };
        let started = Instant::now();
        let limits = Limits { timeout: self.timeout, stop: &interrupt::STOP };
        let outcome = build.run(&self.tools, limits, &mut result.output);
        result.seconds = started.elapsed().as_secs_f64();
        // A failed build keeps its tree for the log; its tail is in the outcome already.
        let _ = std::fs::remove_dir_all(&tree);
        let on = format!("{module} for {}", kernel.kver);
        let (outcome, finding) = match outcome {
            Ok(_) => (BuildOutcome::Built, None),
            Err(Outcome::Skipped) => (BuildOutcome::Skipped, None),
            Err(Outcome::Interrupted) => (BuildOutcome::Interrupted, None),
            Err(Outcome::WrongVermagic { module: ko, vermagic }) => {
                let name = ko.file_name().map_or_else(|| ko.display().to_string(), |n| n.to_string_lossy().into());
                let finding = Finding::new(
                    Tag::BuildWrongKernel,
                    format!("{on}: the built {name} has vermagic {vermagic}: the build used another kernel's headers"),
                    "build against the kernel dkms asks for: ${kernel_source_dir} and $kernelver in dkms.conf, \
                     $(KERNELRELEASE) in the Makefile, never `uname -r`",
                );
                (BuildOutcome::WrongKernel, Some(finding))
            }
            Err(Outcome::Failed { code, meaning, tail, .. }) => {
                let what = code.map_or_else(|| format!("dkms {meaning}"), |c| format!("dkms exit {c}, {meaning}"));
                let tail = build.name_sources(&tail, &format!("usr/src/{}-{}", module.name, module.version));
                let finding = Finding::new(
                    Tag::BuildFailed,
                    format!("{on}: {what}"),
                    "fix the first error shown below (the end of the build log follows it), then lint --build again",
                )
                .with_details(tail);
                (BuildOutcome::Failed, Some(finding))
            }
            Err(Outcome::TimedOut { after }) => {
                let finding = Finding::new(
                    Tag::BuildFailed,
                    format!("{on}: dkms was stopped after {} s (job_timeout)", after.as_secs()),
                    "make the build finish, or raise job_timeout in the configuration",
                );
                (BuildOutcome::Failed, Some(finding))
            }
            Err(other) => {
                let why = match other {
                    Outcome::ExecFailed { error } => format!("could not run dkms: {error}"),
                    other => format!("{other:?}"),
                };
                let finding = Finding::new(Tag::BuildFailed, format!("{on}: {why}"), "fix what the message names");
                (BuildOutcome::Failed, Some(finding))
            }
        };
        result.result = outcome;
        result.finding = finding;
        result
    }

    /// The private dkms tree (emptied by each build).
    fn tree(&self) -> PathBuf {
        self.scratch.path().join("dkms")
    }
}
