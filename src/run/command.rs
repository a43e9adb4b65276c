//! dkms and depmod command lines (argv arrays, never shell strings) and running them with
//! their output captured.

use std::ffi::OsString;
use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::Result;

use crate::config::Layout;
use crate::plan::{Job, JobKind};

/// The external commands, resolved to paths.
#[derive(Debug, Clone)]
pub struct Tools {
    /// The dkms program.
    pub dkms: PathBuf,
    /// The depmod program.
    pub depmod: PathBuf,
}

/// A finished command: exit code (`None` if killed by a signal) and its merged output.
#[derive(Debug, Clone)]
pub struct Captured {
    pub code: Option<i32>,
    pub output: String,
}

impl Tools {
    /// Resolves both commands (a bare name is looked up in PATH, then /usr/sbin and /usr/bin).
    pub fn resolve(dkms: &Path, depmod: &Path) -> Result<Tools> {
        let dkms = find_program(dkms).map_err(|why| {
            anyhow::anyhow!("dkms not found ({why}): install the dkms package or set --dkms / `dkms` in the config")
        })?;
        let depmod = find_program(depmod).map_err(|why| {
            anyhow::anyhow!("depmod not found ({why}): install kmod or set --depmod / `depmod` in the config")
        })?;
        Ok(Tools { dkms, depmod })
    }

    /// Runs dkms for one job.
    pub fn dkms(&self, layout: &Layout, job: &Job) -> Result<Captured, String> {
        let mut cmd = Command::new(&self.dkms);
        cmd.args(dkms_args(layout, job));
        if layout.is_relocated() {
            // Keep module signing inside the root: dkms would otherwise create and use
            // /var/lib/dkms/mok.key of the running system.
            cmd.env("mok_signing_key", layout.dkms_tree.join("mok.key"));
            cmd.env("mok_certificate", layout.dkms_tree.join("mok.pub"));
        }
        capture(cmd).map_err(|e| format!("failed to run {}: {e}", self.dkms.display()))
    }

    /// Runs depmod for one kernel; the error holds its output.
    pub fn depmod(&self, layout: &Layout, kver: &str) -> Result<(), String> {
        let mut cmd = Command::new(&self.depmod);
        cmd.args(depmod_args(layout, kver));
        match capture(cmd) {
            Ok(Captured { code: Some(0), .. }) => Ok(()),
            Ok(Captured { code, output }) => Err(format!(
                "depmod for {kver} failed ({}): {}",
                code.map_or_else(|| "killed".to_owned(), |c| format!("exit {c}")),
                output.trim()
            )),
            Err(e) => Err(format!("failed to run {}: {e}", self.depmod.display())),
        }
    }
}

/// The dkms arguments for a job; with a relocated root, every dkms path points inside it.
pub fn dkms_args(layout: &Layout, job: &Job) -> Vec<OsString> {
    let m = &job.module;
    let mut args: Vec<OsString> = Vec::new();
    let mut push = |s: &str| args.push(s.into());
    match &job.kind {
        JobKind::Install { kernel } => {
            for a in ["install", "--no-depmod", "-m", &m.name, "-v", &m.version, "-k", kernel] {
                push(a);
            }
        }
        JobKind::Remove { kernel } => {
            for a in ["remove", "--no-depmod", "-m", &m.name, "-v", &m.version, "-k", kernel] {
                push(a);
            }
        }
        JobKind::Unregister => {
            for a in ["remove", "--no-depmod", "-m", &m.name, "-v", &m.version, "--all"] {
                push(a);
            }
        }
    }
    if layout.is_relocated() {
        args.push("--sourcetree".into());
        args.push(layout.source_tree.clone().into());
        args.push("--dkmstree".into());
        args.push(layout.dkms_tree.clone().into());
        args.push("--installtree".into());
        args.push(layout.module_dir.clone().into());
        if let JobKind::Install { kernel } = &job.kind {
            args.push("--kernelsourcedir".into());
            args.push(layout.kernel_dir(kernel).join("build").into());
        }
    }
    args
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

/// Runs a command with stdin closed and stdout+stderr merged into one captured pipe, in its
/// own process group (so it can be stopped as a whole).
fn capture(mut cmd: Command) -> std::io::Result<Captured> {
    let (mut reader, writer) = std::io::pipe()?;
    cmd.stdin(Stdio::null()).stdout(writer.try_clone()?).stderr(writer).process_group(0);
    let mut child = cmd.spawn()?;
    // The parent's copies of the write end are gone with `cmd`; reading ends at the child's exit.
    drop(cmd);
    let mut bytes = Vec::new();
    reader.read_to_end(&mut bytes)?;
    let status = child.wait()?;
    Ok(Captured { code: status.code(), output: String::from_utf8_lossy(&bytes).into_owned() })
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
    use crate::plan::ModuleId;

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
