//! Building one module version for one kernel in a private dkms tree, and judging the result
//! before anything of it reaches the real dkms tree: dkms's exit status, a build that is really
//! there, and every built module's vermagic naming the kernel.
//!
//! The scheduler builds privately when one module version is built for several kernels at once
//! (dkms keeps one build directory per module version and tree). The same build serves
//! `lint --build`, which only wants to know whether a package builds: the sources, the headers
//! and the signing key can all be somewhere else than on the system's usual paths.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::command::{Limits, Tools};
use super::output::{excerpt, exit_meaning, TAIL_LINES};
use super::vermagic::judge_vermagic;
use crate::domain::{Layout, ModuleId, Outcome, Signing};
use crate::inventory::signing;
use crate::process::PrivateMount;

/// One private build.
#[derive(Debug, Clone, Copy)]
pub struct PrivateBuild<'a> {
    pub module: &'a ModuleId,
    pub kernel: &'a str,
    /// The private dkms tree; emptied first.
    pub tree: &'a Path,
    /// The directory holding the module's sources as `NAME-VERSION/` (`--sourcetree`).
    pub source_tree: &'a Path,
    /// The kernel's headers (`--kernelsourcedir`).
    pub headers: &'a Path,
    /// The directory of the kernels' module directories (`--installtree`).
    pub install_tree: &'a Path,
    /// `make -j` for this build.
    pub make_jobs: usize,
    /// What to sign the modules with.
    pub signing: &'a Signing,
    /// Where dkms sees the headers besides `headers` (see [`crate::process::PrivateMount`]).
    pub mount: Option<&'a PrivateMount>,
}

/// A private build that succeeded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Built {
    /// `TREE/NAME/VERSION/KERNEL`: what moves into the real dkms tree.
    pub dir: PathBuf,
    /// The built module files.
    pub modules: Vec<PathBuf>,
}

impl PrivateBuild<'_> {
    /// `TREE/NAME/VERSION`.
    fn version_dir(&self) -> PathBuf {
        self.tree.join(&self.module.name).join(&self.module.version)
    }

    /// `lines` of the build's log with the private copy of the sources named `packaged`: the
    /// compiler names the copy dkms built in, the user knows the files by the package's path.
    /// dkms's record of the command it ran (`# command: …`) stays as it ran.
    pub fn name_sources(&self, lines: &[String], packaged: &str) -> Vec<String> {
        let copy = self.version_dir().join("build").display().to_string();
        lines
            .iter()
            .map(|line| match line.trim_start().starts_with("# command:") {
                true => line.clone(),
                false => line.replace(&copy, packaged),
            })
            .collect()
    }

    /// `dkms build` with every path given explicitly.
    fn args(&self) -> Vec<OsString> {
        let m = self.module;
        let mut args: Vec<OsString> =
            ["build", "-m", &m.name, "-v", &m.version, "-k", self.kernel].into_iter().map(OsString::from).collect();
        for (flag, path) in [
            ("--dkmstree", self.tree),
            ("--sourcetree", self.source_tree),
            ("--installtree", self.install_tree),
            ("--kernelsourcedir", self.headers),
        ] {
            args.push(flag.into());
            args.push(path.into());
        }
        args
    }

    /// Runs the build and judges it; dkms's output goes to `output`. On failure the private
    /// tree is kept when it holds dkms's make.log (the outcome names it); otherwise it is removed.
    pub fn run(&self, tools: &Tools, limits: Limits, output: &mut String) -> Result<Built, Outcome> {
        let started = Instant::now();
        let _ = std::fs::remove_dir_all(self.tree);
        if let Err(e) = std::fs::create_dir_all(self.tree) {
            return Err(Outcome::ExecFailed { error: format!("failed to create {}: {e}", self.tree.display()) });
        }
        let result = self.build(tools, limits, started, output);
        if let Err(outcome) = &result {
            if !matches!(outcome, Outcome::Failed { log: Some(_), .. }) {
                let _ = std::fs::remove_dir_all(self.tree);
            }
        }
        result
    }

    fn build(&self, tools: &Tools, limits: Limits, started: Instant, output: &mut String) -> Result<Built, Outcome> {
        let done = tools
            .dkms_with(self.args(), Some(self.make_jobs), self.signing, limits, self.mount)
            .map_err(|error| Outcome::ExecFailed { error })?;
        let text = done.text();
        output.push_str(&text);
        let dir = self.version_dir().join(self.kernel);
        let log = self.version_dir().join("build/make.log");
        match done.code() {
            _ if done.interrupted => Err(Outcome::Interrupted),
            _ if done.timed_out => Err(Outcome::TimedOut { after: started.elapsed() }),
            Some(0) => {
                let modules = crate::inventory::dkms_tree::built_modules(
                    self.tree,
                    &self.module.name,
                    &self.module.version,
                    self.kernel,
                );
                if modules.is_empty() {
                    return Err(Outcome::Failed {
                        code: Some(0),
                        meaning: "dkms reported success, but built nothing (a full or read-only disk?)",
                        log: None,
                        tail: excerpt(&text, TAIL_LINES),
                    });
                }
                judge_vermagic(&modules, self.kernel, &text)?;
                self.sign_as_the_system_does(tools, limits, &modules, output);
                Ok(Built { dir, modules })
            }
            Some(77) => Err(Outcome::Skipped),
            code => {
                let log_text = std::fs::read_to_string(&log).unwrap_or_else(|_| text.clone());
                let log = log.is_file().then_some(log);
                Err(Outcome::Failed { code, meaning: exit_meaning(code), log, tail: excerpt(&log_text, TAIL_LINES) })
            }
        }
    }
}

impl PrivateBuild<'_> {
    /// A build in a private mount namespace comes out signed exactly when a direct `dkms install`
    /// on this system would sign: dkms was told so (`try_sign_modules`), but framework.conf can
    /// override that, so a module left unsigned is signed here with the kernel's `sign-file`.
    /// What cannot be signed here (no key yet, a compressed module) is left to the install hook,
    /// which checks every prebuilt module before installing it.
    fn sign_as_the_system_does(&self, tools: &Tools, limits: Limits, modules: &[PathBuf], output: &mut String) {
        let (Some(_), Some(system)) = (self.mount, &tools.signing) else { return };
        if !system.policy.signs() {
            return;
        }
        let Some(hash) = signing::kernel_hash(self.headers) else { return };
        let key = system.key_or(self.signing);
        let sign_file = system.sign_file_for(self.headers);
        for module in modules.iter().filter(|m| signing::is_signed(m) == Some(false)) {
            if !key.exists() {
                output.push_str(&format!(
                    "\ndkms-hook: {} is unsigned and there is no key to sign it with\n",
                    module.display()
                ));
                continue;
            }
            match tools.sign_module(&sign_file, &hash, key, module, limits) {
                Ok(()) => {
                    output.push_str(&format!("\ndkms-hook: signed {} as this system signs modules\n", module.display()))
                }
                Err(e) => output.push_str(&format!("\ndkms-hook: {e}\n")),
            }
        }
    }
}

/// Where private dkms trees live: dkms-hook's own directory beside the dkms tree, on the same
/// file system so a finished build moves in with one rename.
pub fn private_root(layout: &Layout) -> PathBuf {
    layout.own_dir().join("build")
}

/// Deletes private build trees an interrupted run left behind (call with the lock held).
pub fn clear_private_trees(layout: &Layout) {
    let _ = std::fs::remove_dir_all(private_root(layout));
}

/// Whether `path` was written since `started` (a second of slack for coarse timestamps).
pub(super) fn modified_since(path: &Path, started: Instant) -> bool {
    let age = started.elapsed();
    path.metadata()
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.elapsed().ok())
        .is_none_or(|since| since <= age + Duration::from_secs(1))
}
