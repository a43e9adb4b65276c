//! Running one job and judging what dkms did: an install must leave the module installed (the
//! `kernel-K-ARCH` link and the built modules) with every module's vermagic naming the kernel,
//! and a build for the wrong kernel is removed again through dkms; removals that find nothing to
//! remove are what removal wants.
//!
//! A replacement builds the new version in a private tree first. Only when that build works is
//! the installed version removed from the kernel (through dkms, which reads its dkms.conf from
//! the kept copy of the sources it was built from), the new build moved in and installed: the
//! kernel is without the module only for that swap. When the build fails, the installed version
//! stays as it is.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::Instant;

use super::build::{modified_since, private_root};
use super::build::{Built, PrivateBuild};
use super::command::{self, Limits};
use super::output::{excerpt, exit_meaning, TAIL_LINES};
use super::runner::{JobResult, Runner};
use super::vermagic::{self, judge_vermagic};
use crate::domain::{Job, JobKind, ModuleId, Outcome, TestBuild};
use crate::interrupt::Stop;
use crate::inventory::signing;
use crate::process::{Finished, PrivateMount};

/// The locks a job takes: its own module version's, and for a replacement of another version,
/// that version's too (taken in module version order, so two jobs never wait on each other).
#[derive(Clone, Copy)]
pub(super) struct Locks<'a> {
    pub own: &'a Mutex<()>,
    pub other: Option<(&'a Mutex<()>, &'a ModuleId)>,
}

impl<'a> Locks<'a> {
    fn own(&self) -> MutexGuard<'a, ()> {
        self.own.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn both(&self, own: &ModuleId) -> (MutexGuard<'a, ()>, Option<MutexGuard<'a, ()>>) {
        let lock = |m: &'a Mutex<()>| m.lock().unwrap_or_else(|e| e.into_inner());
        match self.other {
            Some((other, id)) if id < own => {
                let first = lock(other);
                (lock(self.own), Some(first))
            }
            Some((other, _)) => {
                let first = lock(self.own);
                (first, Some(lock(other)))
            }
            None => (lock(self.own), None),
        }
    }
}

/// How a job runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Mode {
    /// One dkms call in the real tree, holding the module version's lock throughout.
    Direct,
    /// `dkms build` in a private tree without the lock, then move in and `dkms install` with it.
    Private,
}

impl Runner<'_> {
    /// Runs one job and judges its result. `prebuilt`: the guard's build of the job's module
    /// version for its kernel, to install instead of building.
    pub(super) fn run_job(
        &self,
        job: &Job,
        mode: Mode,
        locks: Locks,
        prebuilt: Option<&PathBuf>,
        make_jobs: usize,
    ) -> JobResult {
        let started = Instant::now();
        let prebuilt_refused = prebuilt.and_then(|dir| self.refuse_prebuilt(job, dir));
        let prebuilt = prebuilt.filter(|_| prebuilt_refused.is_none());
        let limits = Limits { timeout: self.timeout, stop: self.stop };
        let mut output = String::new();
        let out = &mut output;
        let prebuilt_build = || prebuilt.map(|dir| Built { dir: dir.clone(), modules: Vec::new() });
        let outcome = match (&job.kind, mode, prebuilt_build()) {
            (JobKind::Replace { old, old_digest, .. }, _, built) => {
                let built = built.map_or_else(|| self.build_privately(job, make_jobs, limits, out), Ok);
                self.replace(job, old, old_digest.as_deref(), built, locks, make_jobs, limits, out)
            }
            (JobKind::Install { .. }, _, Some(built)) => {
                let _guard = locks.own();
                self.install_built(job, &built, make_jobs, limits, out)
            }
            (JobKind::Install { .. }, Mode::Private, None) => self.private(job, locks.own, make_jobs, limits, out),
            (JobKind::Test { kernel, build }, _, _) => self.test_build(job, kernel, build, make_jobs, limits, out),
            (JobKind::Unchanged { .. }, _, _) => {
                let _guard = locks.own();
                self.unchanged(job)
            }
            (JobKind::Preserve { digest, .. }, _, _) => {
                let _guard = locks.own();
                self.preserve(job, digest)
            }
            (JobKind::Retire { .. }, _, _) => {
                let _guard = locks.own();
                self.retire(job, limits, out)
            }
            _ => {
                let _guard = locks.own();
                self.direct(job, make_jobs, limits, started, out)
            }
        };
        // A build that could not be moved in (another file system) was built again in place.
        let used = prebuilt.is_some_and(|dir| !dir.exists());
        JobResult { outcome, duration: started.elapsed(), output, prebuilt: used, prebuilt_refused }
    }

    /// Why the guard's build in `dir` must not be installed: the system signs modules (and the
    /// kernel supports it) and a module of the build carries no signature — a build dkms made
    /// somewhere it would not sign. Which key signed it the guard's index already tells
    /// (`prebuilt::load`).
    fn refuse_prebuilt(&self, job: &Job, dir: &Path) -> Option<String> {
        let system = self.tools.signing.as_ref()?;
        let kernel = job.kernel()?;
        if !system.policy.signs() || signing::kernel_hash(&self.layout.kernel_dir(kernel).join("build")).is_none() {
            return None;
        }
        let modules = crate::dirs::subdirs(dir).unwrap_or_default().into_iter().flat_map(|arch| {
            let at = dir.join(arch).join("module");
            crate::dirs::names(&at).unwrap_or_default().into_iter().map(move |n| (at.join(&n), n))
        });
        for (module, name) in modules.filter(|(_, n)| n.contains(".ko")) {
            match vermagic::module_bytes(&module) {
                Ok(bytes) if signing::has_signature(&bytes) => {}
                Ok(_) => {
                    return Some(format!(
                        "built again: the build from before the transaction left {name} unsigned, and this system signs modules"
                    ))
                }
                Err(e) => return Some(format!("built again: cannot read {name} of the build from before the transaction: {e}")),
            }
        }
        None
    }

    /// The guard's build: private, from wherever `build` says, with nothing installed. A build
    /// that failed leaves nothing behind: its make.log goes into the job's output (and so into
    /// dkms-hook's log), and the excerpt names the sources as the package ships them.
    fn test_build(
        &self,
        job: &Job,
        kernel: &str,
        build: &TestBuild,
        make_jobs: usize,
        limits: Limits,
        output: &mut String,
    ) -> Outcome {
        let mount = build.mount_headers.then(|| self.headers_mount(kernel, build));
        let mount = match mount.transpose() {
            Ok(mount) => mount,
            Err(error) => return Outcome::ExecFailed { error },
        };
        let private = PrivateBuild {
            module: &job.module,
            kernel,
            tree: &build.tree,
            source_tree: &build.source_tree,
            headers: &build.headers,
            install_tree: &self.layout.module_dir,
            make_jobs,
            signing: &self.signing,
            mount: mount.as_ref(),
        };
        let outcome = match private.run(self.tools, limits, output) {
            Ok(_) => return Outcome::Built,
            Err(Outcome::Failed { code, meaning, log: Some(log), tail }) => {
                let text = std::fs::read_to_string(&log).unwrap_or_default();
                output.push_str(&format!("\n--- {} ---\n{text}", log.display()));
                let tail = private.name_sources(&tail, &format!("/usr/src/{}-{}", job.module.name, job.module.version));
                Outcome::Failed { code, meaning, log: None, tail }
            }
            Err(outcome) => outcome,
        };
        let _ = std::fs::remove_dir_all(&build.tree);
        outcome
    }

    /// The build's headers mounted at the root's `/lib/modules/KERNEL/build` for one dkms, beside
    /// stand-ins for one of the kernel's own compressed modules (empty) and a `modules.dep` naming
    /// it: dkms ≥ 3.2 picks the compression of its modules from the modules it finds there, older
    /// ones from `modules.dep` (which depmod writes after the transaction, before the install
    /// hook's direct installs).
    fn headers_mount(&self, kernel: &str, build: &TestBuild) -> Result<PrivateMount, String> {
        let headers = &build.headers;
        // `/lib` is a link to `usr/lib` on Arch: cover the directory it leads to.
        let modules = match self.layout.is_relocated() {
            true => self.layout.module_dir.clone(),
            false => std::fs::canonicalize("/lib/modules").unwrap_or_else(|_| PathBuf::from("/usr/lib/modules")),
        };
        let mut mount = PrivateMount::new(headers, &modules, &modules.join(kernel).join("build"));
        if let Some(own) = &build.compressed_module {
            let dep = format!("{own}:\n");
            mount = mount
                .and_then(|m| m.with_file(&modules.join(kernel).join(own), b""))
                .and_then(|m| m.with_file(&modules.join(kernel).join("modules.dep"), dep.as_bytes()));
        }
        mount.map_err(|e| format!("cannot mount {} for the build: {e}", headers.display()))
    }

    /// `DKMSTREE/M/V/K`: where dkms keeps a module version's build for a kernel.
    pub(super) fn built_dir(&self, module: &ModuleId, kernel: &str) -> PathBuf {
        self.layout.dkms_tree.join(&module.name).join(&module.version).join(kernel)
    }

    /// Whether dkms's signing key for this root exists.
    pub(super) fn tools_signing_key_exists(&self) -> bool {
        self.signing.exists()
    }

    /// The job as one dkms call in the real tree.
    fn direct(&self, job: &Job, make_jobs: usize, limits: Limits, started: Instant, output: &mut String) -> Outcome {
        let registered = self.layout.dkms_tree.join(&job.module.name).join(&job.module.version);
        let unregister = matches!(job.kind, JobKind::Unregister | JobKind::Retire { .. });
        if unregister && registered.symlink_metadata().is_err() {
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
        let built = match self.build_privately(job, make_jobs, limits, output) {
            Ok(built) => built,
            Err(outcome) => return outcome,
        };
        let _guard = lock.lock().unwrap_or_else(|e| e.into_inner());
        self.install_built(job, &built, make_jobs, limits, output)
    }

    /// The job's module version built for its kernel in a private tree from the packaged
    /// sources. A failed build's private tree stays (its make.log is named in the report and
    /// copied into dkms-hook's log) until the next run takes the lock.
    fn build_privately(
        &self,
        job: &Job,
        make_jobs: usize,
        limits: Limits,
        output: &mut String,
    ) -> Result<Built, Outcome> {
        let kernel = job.kernel().unwrap_or_default();
        let tree = self.private_tree(job);
        let headers = self.layout.kernel_dir(kernel).join("build");
        let build = PrivateBuild {
            module: &job.module,
            kernel,
            tree: &tree,
            source_tree: &self.layout.source_tree,
            headers: &headers,
            install_tree: &self.layout.module_dir,
            make_jobs,
            signing: &self.signing,
            mount: None,
        };
        build.run(self.tools, limits, output)
    }

    /// `OWN/build/NAME-VERSION-KERNEL`: the job's private dkms tree.
    fn private_tree(&self, job: &Job) -> PathBuf {
        let kernel = job.kernel().unwrap_or_default();
        private_root(self.layout).join(format!("{}-{}-{}", job.module.name, job.module.version, kernel))
    }

    /// Moves a private build into the real tree and installs it (call with the module version's
    /// lock held); the private tree goes.
    fn install_built(
        &self,
        job: &Job,
        built: &Built,
        make_jobs: usize,
        limits: Limits,
        output: &mut String,
    ) -> Outcome {
        let outcome = self
            .move_in(job, &built.dir, limits, output)
            .unwrap_or_else(|| self.direct(job, make_jobs, limits, Instant::now(), output));
        let _ = std::fs::remove_dir_all(self.private_tree(job));
        outcome
    }

    /// Replaces version `old` for the job's kernel with `built`, a private build of the job's
    /// version (or why there is none): see the module documentation.
    #[allow(clippy::too_many_arguments)]
    fn replace(
        &self,
        job: &Job,
        old: &str,
        old_digest: Option<&str>,
        built: Result<Built, Outcome>,
        locks: Locks,
        make_jobs: usize,
        limits: Limits,
        output: &mut String,
    ) -> Outcome {
        let built = match built {
            Ok(built) => built,
            // The new version excludes this kernel (BUILD_EXCLUSIVE): the old one goes.
            Err(Outcome::Skipped) => {
                let _guards = locks.both(&job.module);
                let removed = self.remove_old(job, old, old_digest, limits, output);
                self.unkeep_same_version(job, old);
                return match removed {
                    Outcome::Removed => Outcome::Skipped,
                    other => other,
                };
            }
            Err(Outcome::Interrupted) => return Outcome::Interrupted,
            Err(failure) => return Outcome::Kept { old: old.to_owned(), failure: Box::new(failure) },
        };
        let _guards = locks.both(&job.module);
        // From here until the install, the kernel has no version of the module: the swap.
        match self.remove_old(job, old, old_digest, limits, output) {
            Outcome::Removed => {}
            other => {
                let _ = std::fs::remove_dir_all(self.private_tree(job));
                return match other {
                    Outcome::Interrupted => other,
                    failure => Outcome::Kept { old: old.to_owned(), failure: Box::new(failure) },
                };
            }
        }
        self.unkeep_same_version(job, old);
        match self.install_built(job, &built, make_jobs, limits, output) {
            Outcome::Installed => Outcome::Replaced { old: old.to_owned() },
            other => other,
        }
    }

    /// After the old build of the job's own version left the kernel: the version, still
    /// registered for other kernels, reads its dkms.conf from the packaged sources again.
    fn unkeep_same_version(&self, job: &Job, old: &str) {
        if old == job.module.version {
            self.point_source(&job.module, &self.packaged_source(&job.module));
        }
    }

    /// Removes version `old` of the job's module from the job's kernel, dkms reading the
    /// dkms.conf of the sources that build was made from (their kept copy, when there is one).
    fn remove_old(
        &self,
        job: &Job,
        old: &str,
        old_digest: Option<&str>,
        limits: Limits,
        output: &mut String,
    ) -> Outcome {
        let old = ModuleId::new(&job.module.name, old);
        if let Some(kept) = old_digest.map(|d| crate::kept::path(self.layout, d)).filter(|k| k.is_dir()) {
            self.point_source(&old, &kept);
        }
        let kernel = job.kernel().unwrap_or_default().to_owned();
        let remove = Job { kind: JobKind::Remove { kernel }, module: old, after: Vec::new() };
        self.direct(&remove, 1, limits, Instant::now(), output)
    }

    /// `SOURCETREE/NAME-VERSION`: where a module version's packaged sources are.
    fn packaged_source(&self, id: &ModuleId) -> PathBuf {
        self.layout.source_tree.join(format!("{}-{}", id.name, id.version))
    }

    /// Points dkms's `NAME/VERSION/source` link at `target` (in one rename, so dkms never sees it
    /// missing), if the version is registered and the link points elsewhere.
    fn point_source(&self, id: &ModuleId, target: &Path) {
        let link = self.layout.dkms_tree.join(&id.name).join(&id.version).join("source");
        match std::fs::read_link(&link) {
            Ok(current) if current == target => return,
            Err(_) if link.symlink_metadata().is_err() => return,
            _ => {}
        }
        let tmp = link.with_file_name(".source.dkms-hook.tmp");
        let _ = std::fs::remove_file(&tmp);
        let pointed = std::os::unix::fs::symlink(target, &tmp).and_then(|()| std::fs::rename(&tmp, &link));
        if let Err(e) = pointed {
            let _ = std::fs::remove_file(&tmp);
            log::warn!("failed to point {} at {}: {e}", link.display(), target.display());
        }
    }

    /// Sources unchanged: dkms's link goes back to the packaged sources.
    fn unchanged(&self, job: &Job) -> Outcome {
        self.point_source(&job.module, &self.packaged_source(&job.module));
        Outcome::Unchanged
    }

    /// Keeps a copy of the module version's sources and points dkms at it.
    fn preserve(&self, job: &Job, digest: &str) -> Outcome {
        match crate::kept::keep(self.layout, &self.packaged_source(&job.module), digest) {
            Ok(kept) => {
                self.point_source(&job.module, &kept);
                Outcome::Preserved
            }
            Err(e) => Outcome::ExecFailed { error: format!("{e:#}") },
        }
    }

    /// Unregisters a replaced version that no kernel has installed any more.
    fn retire(&self, job: &Job, limits: Limits, output: &mut String) -> Outcome {
        let kernels = self.installed_kernels(&job.module);
        if !kernels.is_empty() {
            return Outcome::StillServing { kernels };
        }
        self.direct(job, 1, limits, Instant::now(), output)
    }

    /// The kernels module version `id` is installed for (`M/kernel-K-ARCH` links to `V/K/ARCH`).
    fn installed_kernels(&self, id: &ModuleId) -> Vec<String> {
        let mdir = self.layout.dkms_tree.join(&id.name);
        let mut kernels: Vec<String> = crate::dirs::names(&mdir)
            .unwrap_or_default()
            .iter()
            .filter(|name| name.starts_with("kernel-"))
            .filter_map(|name| {
                let target = std::fs::read_link(mdir.join(name)).ok()?;
                let mut parts = target.components().map(|c| c.as_os_str().to_string_lossy().into_owned());
                (parts.next()? == id.version).then(|| parts.next()).flatten()
            })
            .collect();
        kernels.sort();
        kernels.dedup();
        kernels
    }

    /// Registers the module version in the real tree if needed and moves a private build in
    /// (call with the module version's lock held). `None` when the job can go on to install;
    /// the outcome when registering failed.
    ///
    /// A version the real tree does not have yet, built privately from the packaged sources,
    /// moves in whole: the private tree's `NAME/VERSION` is what `dkms add` would make (its
    /// `source` link at the packaged sources) with the build in it, and one rename saves a dkms
    /// call. Anything else (the guard's builds, whose `source` leads to the extracted package) is
    /// registered by `dkms add`.
    fn move_in(&self, job: &Job, built: &Path, limits: Limits, output: &mut String) -> Option<Outcome> {
        let kernel = job.kernel().unwrap_or_default();
        let version_dir = self.layout.dkms_tree.join(&job.module.name).join(&job.module.version);
        let private_version = built
            .parent()
            .filter(|p| std::fs::read_link(p.join("source")).is_ok_and(|s| s == self.packaged_source(&job.module)));
        if let (Some(private), false) = (private_version, version_dir.symlink_metadata().is_ok()) {
            let moved = version_dir
                .parent()
                .map_or(Ok(()), std::fs::create_dir_all)
                .and_then(|()| std::fs::rename(private, &version_dir));
            if let Err(e) = moved {
                log::debug!("cannot move {} to {}: {e}; adding it", private.display(), version_dir.display());
            }
        }
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

    /// One dkms call with the run's signing key.
    fn dkms(&self, args: Vec<OsString>, make_jobs: Option<usize>, limits: Limits) -> Result<Finished, String> {
        self.tools.dkms(args, make_jobs, &self.signing, limits)
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
            (Some(0), JobKind::Install { kernel } | JobKind::Replace { kernel, .. }) => {
                self.judge_install(job, kernel, done)
            }
            (Some(0), JobKind::Remove { .. }) => Outcome::Removed,
            (Some(0), JobKind::Unregister | JobKind::Retire { .. }) => Outcome::Unregistered,
            // 3: "not located in the DKMS tree" — already gone, which is what removal wants.
            (Some(3), JobKind::Remove { .. }) => Outcome::Removed,
            (Some(3), JobKind::Unregister | JobKind::Retire { .. }) => Outcome::Unregistered,
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
