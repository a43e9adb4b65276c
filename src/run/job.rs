//! Running one job and judging what dkms did: an install must leave the module installed (the
//! `kernel-K-ARCH` link and the built modules) with every module's vermagic naming the kernel,
//! and a build for the wrong kernel is removed again through dkms; removals that find nothing to
//! remove are what removal wants.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Instant;

use super::build::PrivateBuild;
use super::command::{self, Limits};
use super::{
    excerpt, exit_meaning, judge_vermagic, modified_since, private_root, JobResult, Outcome, Runner, TAIL_LINES,
};
use crate::interrupt::Stop;
use crate::plan::{Job, JobKind, ModuleId};
use crate::process::Finished;

/// How a job runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Mode {
    /// One dkms call in the real tree, holding the module version's lock throughout.
    Direct,
    /// `dkms build` in a private tree without the lock, then move in and `dkms install` with it.
    Private,
}

impl Runner<'_> {
    /// Runs one job and judges its result.
    pub(super) fn run_job(&self, job: &Job, mode: Mode, lock: &Mutex<()>, make_jobs: usize) -> JobResult {
        let started = Instant::now();
        let limits = Limits { timeout: self.timeout, stop: self.stop };
        let mut output = String::new();
        let outcome = match mode {
            Mode::Direct => {
                let _guard = lock.lock().unwrap_or_else(|e| e.into_inner());
                self.direct(job, make_jobs, limits, started, &mut output)
            }
            Mode::Private => self.private(job, lock, make_jobs, limits, &mut output),
        };
        JobResult { outcome, duration: started.elapsed(), output }
    }

    /// `DKMSTREE/M/V/K`: where dkms keeps a module version's build for a kernel.
    pub(super) fn built_dir(&self, module: &ModuleId, kernel: &str) -> PathBuf {
        self.layout.dkms_tree.join(&module.name).join(&module.version).join(kernel)
    }

    /// Whether dkms's signing key for this root exists.
    pub(super) fn tools_signing_key_exists(&self) -> bool {
        command::Signing::of(self.layout).exists()
    }

    /// The job as one dkms call in the real tree.
    fn direct(&self, job: &Job, make_jobs: usize, limits: Limits, started: Instant, output: &mut String) -> Outcome {
        let registered = self.layout.dkms_tree.join(&job.module.name).join(&job.module.version);
        if job.kind == JobKind::Unregister && registered.symlink_metadata().is_err() {
            // dkms drops a module version from its tree when the last kernel's build is
            // removed: there is nothing left to unregister.
            return Outcome::Unregistered;
        }
        let make_jobs = job.is_install().then_some(make_jobs);
        let log = registered.join("build/make.log");
        match self.dkms(command::dkms_args(self.layout, job), make_jobs, limits) {
            Ok(done) => {
                output.push_str(&done.text());
                self.judge(job, &done, started, &log)
            }
            Err(error) => Outcome::ExecFailed { error },
        }
    }

    /// Builds in a private dkms tree, then moves the build into the real tree and installs it
    /// there under the module version's lock.
    fn private(&self, job: &Job, lock: &Mutex<()>, make_jobs: usize, limits: Limits, output: &mut String) -> Outcome {
        let started = Instant::now();
        let kernel = job.kernel().unwrap_or_default();
        let tree = private_root(self.layout).join(format!("{}-{}-{}", job.module.name, job.module.version, kernel));
        let headers = self.layout.kernel_dir(kernel).join("build");
        let signing = command::Signing::of(self.layout);
        let build = PrivateBuild {
            module: &job.module,
            kernel,
            tree: &tree,
            source_tree: &self.layout.source_tree,
            headers: &headers,
            install_tree: &self.layout.module_dir,
            make_jobs,
            signing: &signing,
        };
        // A failed build's private tree stays (its make.log is named in the report and copied
        // into dkms-hook's log) until the next run takes the lock.
        let built = match build.run(self.tools, limits, output) {
            Ok(built) => built,
            Err(outcome) => return outcome,
        };
        let _guard = lock.lock().unwrap_or_else(|e| e.into_inner());
        let outcome = self
            .move_in(job, &built.dir, limits, output)
            .unwrap_or_else(|| self.direct(job, make_jobs, limits, started, output));
        let _ = std::fs::remove_dir_all(&tree);
        outcome
    }

    /// Registers the module version in the real tree if needed and moves a private build in
    /// (call with the module version's lock held). `None` when the job can go on to install;
    /// the outcome when registering failed.
    fn move_in(&self, job: &Job, built: &Path, limits: Limits, output: &mut String) -> Option<Outcome> {
        let kernel = job.kernel().unwrap_or_default();
        let version_dir = self.layout.dkms_tree.join(&job.module.name).join(&job.module.version);
        if version_dir.join("source").symlink_metadata().is_err() {
            match self.dkms(command::add_args(self.layout, job), None, limits) {
                Ok(done) if done.code() == Some(0) || done.code() == Some(3) => output.push_str(&done.text()),
                Ok(done) => {
                    output.push_str(&done.text());
                    return Some(self.judge(job, &done, Instant::now(), &version_dir.join("build/make.log")));
                }
                Err(error) => return Some(Outcome::ExecFailed { error }),
            }
        }
        let target = self.built_dir(&job.module, kernel);
        if !target.exists() {
            if let Err(e) = std::fs::rename(built, &target) {
                // Another file system (EXDEV) or a surprise: dkms builds in the real tree instead.
                log::debug!("cannot move {} to {}: {e}; building in place", built.display(), target.display());
            }
        }
        None
    }

    /// One dkms call with the root's signing key.
    fn dkms(&self, args: Vec<OsString>, make_jobs: Option<usize>, limits: Limits) -> Result<Finished, String> {
        self.tools.dkms(args, make_jobs, &command::Signing::of(self.layout), limits)
    }

    /// What a finished dkms call came to for `job`.
    fn judge(&self, job: &Job, done: &Finished, started: Instant, log: &Path) -> Outcome {
        if done.interrupted {
            return Outcome::Interrupted;
        }
        if done.timed_out {
            return Outcome::TimedOut { after: started.elapsed() };
        }
        match (done.code(), &job.kind) {
            (Some(0), JobKind::Install { kernel }) => self.judge_install(job, kernel, done),
            (Some(0), JobKind::Remove { .. }) => Outcome::Removed,
            (Some(0), JobKind::Unregister) => Outcome::Unregistered,
            // 3: "not located in the DKMS tree" — already gone, which is what removal wants.
            (Some(3), JobKind::Remove { .. }) => Outcome::Removed,
            (Some(3), JobKind::Unregister) => Outcome::Unregistered,
            (Some(77), _) => Outcome::Skipped,
            (code, _) => {
                let log = (log.is_file() && modified_since(log, started)).then(|| log.to_path_buf());
                let text = match &log {
                    Some(l) => std::fs::read_to_string(l).unwrap_or_default(),
                    None => done.text(),
                };
                Outcome::Failed { code, meaning: exit_meaning(code), log, tail: excerpt(&text, TAIL_LINES) }
            }
        }
    }

    /// dkms said it installed: the module must be installed and built for this kernel. A build
    /// for another kernel must not stay installed for this one.
    fn judge_install(&self, job: &Job, kernel: &str, done: &Finished) -> Outcome {
        let modules = crate::inventory::dkms_tree::built_modules(
            &self.layout.dkms_tree,
            &job.module.name,
            &job.module.version,
            kernel,
        );
        if modules.is_empty() || !self.is_installed(job, kernel) {
            return Outcome::Failed {
                code: Some(0),
                meaning: "dkms reported success, but the module is not installed (a full or read-only disk?)",
                log: None,
                tail: excerpt(&done.text(), TAIL_LINES),
            };
        }
        match judge_vermagic(&modules, kernel, &done.text()) {
            Ok(()) => Outcome::Installed,
            Err(wrong) => {
                self.undo_install(job);
                wrong
            }
        }
    }

    /// Whether `M/kernel-K-ARCH` links to `V/K/ARCH`: what dkms leaves when it installed `M/V`
    /// for `kernel`.
    fn is_installed(&self, job: &Job, kernel: &str) -> bool {
        let mdir = self.layout.dkms_tree.join(&job.module.name);
        let prefix = format!("kernel-{kernel}-");
        crate::dirs::names(&mdir).unwrap_or_default().iter().any(|name| {
            name.starts_with(&prefix)
                && std::fs::read_link(mdir.join(name))
                    .is_ok_and(|t| t.starts_with(Path::new(&job.module.version).join(kernel)))
        })
    }

    /// Removes what an install job installed (through dkms), after the result proved wrong.
    fn undo_install(&self, job: &Job) {
        let Some(kernel) = job.kernel() else { return };
        let remove =
            Job { kind: JobKind::Remove { kernel: kernel.to_owned() }, module: job.module.clone(), after: vec![] };
        let never = Stop::new();
        let limits = Limits { timeout: self.timeout, stop: &never };
        match self.dkms(command::dkms_args(self.layout, &remove), None, limits) {
            Ok(done) if done.code() == Some(0) => {}
            Ok(done) => log::warn!("could not remove {remove}: dkms exit {:?}: {}", done.code(), done.text().trim()),
            Err(e) => log::warn!("could not remove {remove}: {e}"),
        }
    }
}
