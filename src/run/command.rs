//! dkms and depmod command lines (argv arrays, never shell strings), run through the process
//! runner with their output merged, as a terminal would show it.

use std::ffi::OsString;
use std::os::fd::RawFd;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::Result;

use crate::domain::{Job, JobKind, Layout, Signing};
use crate::interrupt::Stop;
use crate::inventory::signing::SystemSigning;
use crate::process::{self, Finished};

/// The external commands, resolved to paths.
#[derive(Debug, Clone)]
pub struct Tools {
    /// The dkms program.
    pub dkms: PathBuf,
    /// The depmod program.
    pub depmod: PathBuf,
    /// The run's lock, kept open in every dkms and depmod (see `process`).
    pub lock_fd: Option<RawFd>,
    /// How the system signs modules, decided once per run; `None`: builds sign as dkms decides
    /// where they run (`lint --build`, which installs nothing).
    pub signing: Option<SystemSigning>,
}

/// When to give up on a running command.
#[derive(Debug, Clone, Copy)]
pub struct Limits<'a> {
    /// Kill the command after this long.
    pub timeout: Option<Duration>,
    /// Kill the command as soon as this is set.
    pub stop: &'a Stop,
}

impl Tools {
    /// Resolves both commands (a bare name is looked up in PATH, then /usr/sbin and /usr/bin).
    pub fn resolve(dkms: &Path, depmod: &Path, lock_fd: Option<RawFd>) -> Result<Tools> {
        let dkms = find_program(dkms).map_err(|why| {
            anyhow::anyhow!("dkms not found ({why}): install the dkms package or set --dkms / `dkms` in the config")
        })?;
        let depmod = find_program(depmod).map_err(|why| {
            anyhow::anyhow!("depmod not found ({why}): install kmod or set --depmod / `depmod` in the config")
        })?;
        Ok(Tools { dkms, depmod, lock_fd, signing: None })
    }

    /// Why dkms is not installed, if it is not: the default `dkms` is nowhere to be found (a root
    /// without dkms, where the hooks have nothing to do). A program the configuration names
    /// instead is never "not installed": if it is missing, that is an error when a job needs it.
    pub fn dkms_not_installed(dkms: &Path) -> Option<String> {
        (dkms == Path::new(crate::config::DEFAULT_DKMS)).then(|| find_program(dkms).err()).flatten()
    }

    /// Runs dkms with `args` (an action and its arguments, relocated as needed), with
    /// `make -j make_jobs` when given, signing modules with `signing`.
    pub fn dkms(
        &self,
        args: Vec<OsString>,
        make_jobs: Option<usize>,
        signing: &Signing,
        limits: Limits,
    ) -> Result<Finished, String> {
        self.dkms_with(args, make_jobs, signing, limits, None)
    }

    /// [`Tools::dkms`], with `mount` set up for dkms alone (see [`process::PrivateMount`]).
    pub fn dkms_with(
        &self,
        mut args: Vec<OsString>,
        make_jobs: Option<usize>,
        signing: &Signing,
        limits: Limits,
        mount: Option<&process::PrivateMount>,
    ) -> Result<Finished, String> {
        // Without --verbose, dkms runs each long step beside a background `sleep 3` progress
        // loop whose teardown races: now and then dkms waits out the sleep (seen with 3.0 and
        // 3.2, the versions the tests run; 3.4's source has the same loop). Its output is
        // captured anyway, and --verbose turns the loop off.
        args.push("--verbose".into());
        if let Some(n) = make_jobs {
            // dkms 3.0 takes `-j N` as two arguments only.
            args.push("-j".into());
            args.push(n.to_string().into());
        }
        let mut cmd = Command::new(&self.dkms);
        cmd.args(args).env("mok_signing_key", &signing.key).env("mok_certificate", &signing.cert);
        if let (Some(_), Some(system)) = (mount, &self.signing) {
            // dkms >= 3.3 takes the namespace for a chroot and would not sign: tell it what a
            // direct install on this system does (framework.conf can still override it, which
            // `run::build` checks afterwards).
            cmd.env("try_sign_modules", if system.policy.signs() { "true" } else { "false" });
        }
        self.run(cmd, limits, mount).map_err(|e| match mount {
            Some(_) => format!("failed to run {} in a private mount namespace: {e}", self.dkms.display()),
            None => format!("failed to run {}: {e}", self.dkms.display()),
        })
    }

    /// Signs `module` with the kernel's `sign-file` (`HASH KEY CERT MODULE`), as dkms does; the
    /// error holds its output.
    pub fn sign_module(
        &self,
        sign_file: &Path,
        hash: &str,
        key: &Signing,
        module: &Path,
        limits: Limits,
    ) -> Result<(), String> {
        let mut cmd = Command::new(sign_file);
        cmd.arg(hash).arg(&key.key).arg(&key.cert).arg(module);
        match self.run(cmd, limits, None) {
            Ok(done) if done.code() == Some(0) => Ok(()),
            Ok(done) => Err(format!(
                "{} failed ({}): {}",
                sign_file.display(),
                done.code().map_or_else(|| "killed".to_owned(), |c| format!("exit {c}")),
                done.text().trim()
            )),
            Err(e) => Err(format!("failed to run {}: {e}", sign_file.display())),
        }
    }

    /// Runs depmod for one kernel; the error holds its output.
    pub fn depmod(&self, layout: &Layout, kver: &str, limits: Limits) -> Result<(), String> {
        let mut cmd = Command::new(&self.depmod);
        cmd.args(depmod_args(layout, kver));
        match self.run(cmd, limits, None) {
            Ok(done) if done.code() == Some(0) => Ok(()),
            Ok(done) => Err(format!(
                "depmod for {kver} failed ({}): {}",
                done.code().map_or_else(|| "killed".to_owned(), |c| format!("exit {c}")),
                done.text().trim()
            )),
            Err(e) => Err(format!("failed to run {}: {e}", self.depmod.display())),
        }
    }

    /// Runs a dkms or depmod command line, holding the run's lock, within `limits`.
    fn run(&self, cmd: Command, limits: Limits, mount: Option<&process::PrivateMount>) -> std::io::Result<Finished> {
        let opts = process::Options {
            timeout: limits.timeout,
            keep_open: self.lock_fd,
            mount,
            ..process::Options::new(limits.stop)
        };
        process::run(cmd, &opts)
    }
}

/// The dkms arguments for a job's dkms call in the real dkms tree: `install` for installs (a
/// replacement's last step), `remove -k` for removals, `remove --all` for unregistering. Jobs
/// without a dkms call of their own (keeping sources, unchanged sources) have none.
pub fn dkms_args(layout: &Layout, job: &Job) -> Vec<OsString> {
    let m = &job.module;
    let base: Vec<&str> = match &job.kind {
        JobKind::Install { kernel } | JobKind::Replace { kernel, .. } => {
            vec!["install", "--no-depmod", "-m", &m.name, "-v", &m.version, "-k", kernel]
        }
        JobKind::Remove { kernel } => vec!["remove", "--no-depmod", "-m", &m.name, "-v", &m.version, "-k", kernel],
        JobKind::Unregister | JobKind::Retire { .. } => {
            vec!["remove", "--no-depmod", "-m", &m.name, "-v", &m.version, "--all"]
        }
        JobKind::Unchanged { .. } | JobKind::Preserve { .. } | JobKind::Test { .. } => return Vec::new(),
    };
    let mut args: Vec<OsString> = base.into_iter().map(OsString::from).collect();
    let headers_for = if job.is_install() { job.kernel() } else { None };
    relocate(&mut args, layout, &layout.dkms_tree, headers_for);
    args
}

/// `dkms add` of a module version to the real tree.
pub fn add_args(layout: &Layout, job: &Job) -> Vec<OsString> {
    let m = &job.module;
    let mut args: Vec<OsString> = ["add", "-m", &m.name, "-v", &m.version].into_iter().map(OsString::from).collect();
    relocate(&mut args, layout, &layout.dkms_tree, None);
    args
}

/// With a root other than `/`, points every dkms path inside it (and the headers of `kernel`).
fn relocate(args: &mut Vec<OsString>, layout: &Layout, tree: &Path, kernel: Option<&str>) {
    if !layout.is_relocated() {
        return;
    }
    args.push("--sourcetree".into());
    args.push(layout.source_tree.clone().into());
    args.push("--dkmstree".into());
    args.push(tree.into());
    args.push("--installtree".into());
    args.push(layout.module_dir.clone().into());
    if let Some(kernel) = kernel {
        args.push("--kernelsourcedir".into());
        args.push(layout.kernel_dir(kernel).join("build").into());
    }
}

/// The depmod arguments for a kernel.
pub fn depmod_args(layout: &Layout, kver: &str) -> Vec<OsString> {
    let mut args: Vec<OsString> = Vec::new();
    if layout.is_relocated() {
        args.push("-b".into());
        args.push(layout.root.clone().into());
    }
    args.push(kver.into());
    args
}

/// Finds an executable: a path with `/` as given, a bare name in PATH or the sbin dirs.
fn find_program(program: &Path) -> Result<PathBuf, String> {
    use std::os::unix::fs::PermissionsExt;
    let executable = |p: &Path| p.metadata().is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0);
    if program.components().count() > 1 || program.is_absolute() {
        return if executable(program) {
            Ok(program.to_path_buf())
        } else if program.exists() {
            Err(format!("{} is not an executable file", program.display()))
        } else {
            Err(format!("{} does not exist", program.display()))
        };
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin"].map(PathBuf::from))
        .map(|dir| dir.join(program))
        .find(|p| executable(p))
        .ok_or_else(|| format!("no {} in PATH", program.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::ModuleId;

    fn job(kind: JobKind) -> Job {
        Job { kind, module: ModuleId::new("xpad-neo-x", "0.9-r12"), after: vec![] }
    }

    fn strings(args: Vec<OsString>) -> Vec<String> {
        args.into_iter().map(|a| a.into_string().unwrap()).collect()
    }

    #[test]
    fn dkms_args_on_the_running_system() {
        let l = Layout::new(Path::new("/"), None);
        assert_eq!(
            strings(dkms_args(&l, &job(JobKind::Install { kernel: "6.1-x".into() }))),
            ["install", "--no-depmod", "-m", "xpad-neo-x", "-v", "0.9-r12", "-k", "6.1-x"]
        );
        assert_eq!(
            strings(dkms_args(&l, &job(JobKind::Unregister))),
            ["remove", "--no-depmod", "-m", "xpad-neo-x", "-v", "0.9-r12", "--all"]
        );
        assert_eq!(strings(depmod_args(&l, "6.1-x")), ["6.1-x"]);
    }

    #[test]
    fn dkms_args_relocated() {
        let l = Layout::new(Path::new("/r"), None);
        let args = strings(dkms_args(&l, &job(JobKind::Install { kernel: "6.1-x".into() })));
        assert_eq!(
            args[8..],
            [
                "--sourcetree",
                "/r/usr/src",
                "--dkmstree",
                "/r/var/lib/dkms",
                "--installtree",
                "/r/usr/lib/modules",
                "--kernelsourcedir",
                "/r/usr/lib/modules/6.1-x/build"
            ]
        );
        let args = strings(dkms_args(&l, &job(JobKind::Remove { kernel: "6.1-x".into() })));
        assert_eq!(args.len(), 14);
        assert_eq!(strings(depmod_args(&l, "6.1-x")), ["-b", "/r", "6.1-x"]);
    }

    #[test]
    fn missing_programs_are_named() {
        assert!(find_program(Path::new("/nonexistent/dkms")).unwrap_err().contains("does not exist"));
        assert!(find_program(Path::new("no-such-program-xyz")).unwrap_err().contains("no no-such-program-xyz in PATH"));
        assert!(find_program(Path::new("/etc/os-release")).unwrap_err().contains("not an executable"));
        assert!(find_program(Path::new("sh")).is_ok());
    }
}
