//! Job logs: each dkms job's full output in its own file under `log_dir`, so a failure can be
//! read in full after pacman's scrollback is gone (dkms's own `make.log` is overwritten by the
//! next build of the same module).
//!
//! One file per module, version, kernel and operation (`NAME_VERSION_KERNEL.install.log`,
//! `NAME_VERSION.unregister.log`); a later job of the same kind replaces it. After a run the
//! directory is pruned to `keep_logs` of dkms-hook's own logs, oldest first. A file is dkms-hook's
//! own only when both its name (`*.install.log`, `*.remove.log`, `*.unregister.log`) and its first
//! line (`dkms-hook: …`) say so: `log_dir` may be shared (even `/var/log`), and nothing else in it
//! is ever deleted. Writing a log is best effort: a full disk must not turn a good build into a
//! failed run.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use crate::domain::{Job, JobKind, Outcome};
use crate::run::JobResult;

/// Where job logs go and how many are kept.
#[derive(Debug, Clone)]
pub struct Logs {
    dir: PathBuf,
    keep: usize,
}

impl Logs {
    /// Logs in `dir`, keeping at most `keep` (0: write none).
    pub fn new(dir: &Path, keep: usize) -> Logs {
        Logs { dir: dir.to_path_buf(), keep }
    }

    /// The log file of a job.
    pub fn path(&self, job: &Job) -> PathBuf {
        self.dir.join(file_name(job))
    }

    /// Writes a finished job's log; returns its path, or `None` when logs are off, nothing ran,
    /// or it could not be written (a warning says why).
    pub fn write(&self, job: &Job, result: &JobResult) -> Option<PathBuf> {
        let ran = match result.outcome {
            Outcome::DependencyFailed { .. } => false,
            // Nothing of dkms ran: nothing to log.
            Outcome::Interrupted | Outcome::Unchanged | Outcome::Preserved | Outcome::StillServing { .. } => {
                !result.output.is_empty()
            }
            _ => true,
        };
        if self.keep == 0 || !ran {
            return None;
        }
        let path = self.path(job);
        if path.symlink_metadata().is_ok() && !is_own_log(&path) {
            log::warn!("not writing the job log {}: a file there is not dkms-hook's", path.display());
            return None;
        }
        let written = std::fs::create_dir_all(&self.dir).and_then(|()| std::fs::write(&path, render(job, result)));
        match written {
            Ok(()) => Some(path),
            Err(e) => {
                log::warn!("failed to write the job log {}: {e}", path.display());
                None
            }
        }
    }

    /// Deletes the oldest of dkms-hook's own logs beyond `keep`.
    pub fn prune(&self) {
        let names = crate::dirs::names(&self.dir).unwrap_or_default();
        let mut logs: Vec<(std::time::SystemTime, PathBuf)> = names
            .iter()
            .map(|name| self.dir.join(name))
            .filter(|path| is_own_log(path))
            .filter_map(|path| {
                let meta = path.symlink_metadata().ok().filter(std::fs::Metadata::is_file)?;
                Some((meta.modified().ok()?, path))
            })
            .collect();
        // Newest first; the name breaks ties so pruning is deterministic.
        logs.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| b.1.cmp(&a.1)));
        for (_, path) in logs.into_iter().skip(self.keep) {
            if let Err(e) = std::fs::remove_file(&path) {
                log::warn!("failed to prune {}: {e}", path.display());
            }
        }
    }
}

/// The first bytes of every log dkms-hook writes.
const HEADER: &str = "dkms-hook: ";

/// Whether `path` is a log dkms-hook wrote: a regular file whose name and first line say so.
fn is_own_log(path: &Path) -> bool {
    use std::io::Read;
    let regular = path.symlink_metadata().is_ok_and(|m| m.is_file());
    let named = path.file_name().and_then(|n| n.to_str()).is_some_and(|n| {
        [".install.log", ".remove.log", ".unregister.log", ".preserve.log", ".guard.log"]
            .iter()
            .any(|suffix| n.ends_with(suffix))
    });
    let mut start = [0u8; HEADER.len()];
    regular
        && named
        && std::fs::File::open(path).and_then(|mut f| f.read_exact(&mut start)).is_ok()
        && start == HEADER.as_bytes()
}

/// `NAME_VERSION_KERNEL.OPERATION.log` (names and versions are single path components, checked
/// when dkms.conf was read).
pub fn file_name(job: &Job) -> String {
    let m = &job.module;
    match &job.kind {
        JobKind::Install { kernel } | JobKind::Replace { kernel, .. } | JobKind::Unchanged { kernel } => {
            format!("{}_{}_{kernel}.install.log", m.name, m.version)
        }
        JobKind::Remove { kernel } => format!("{}_{}_{kernel}.remove.log", m.name, m.version),
        JobKind::Unregister | JobKind::Retire { .. } => format!("{}_{}.unregister.log", m.name, m.version),
        JobKind::Preserve { .. } => format!("{}_{}.preserve.log", m.name, m.version),
        JobKind::Test { kernel, .. } => format!("{}_{}_{kernel}.guard.log", m.name, m.version),
    }
}

/// The log's text: what ran, how it ended, dkms's output, and dkms's build log when it failed.
fn render(job: &Job, result: &JobResult) -> String {
    let verb = job.verb();
    let (_, detail) = crate::state::summarize(&result.outcome);
    let ended = if result.outcome.is_failure() { "failed" } else { "succeeded" };
    let mut text = String::new();
    let _ = writeln!(text, "{HEADER}{verb} {job}");
    let _ =
        writeln!(text, "finished: {} (unix time), after {:.1} s", crate::state::now(), result.duration.as_secs_f64());
    let _ = writeln!(text, "outcome: {ended}{}", detail.map(|d| format!(": {d}")).unwrap_or_default());
    let _ = writeln!(text, "\n--- dkms output ---");
    text.push_str(&result.output);
    if !result.output.ends_with('\n') && !result.output.is_empty() {
        text.push('\n');
    }
    if let Outcome::Failed { log: Some(make_log), .. } = &result.outcome {
        let _ = writeln!(text, "\n--- {} ---", make_log.display());
        match std::fs::read_to_string(make_log) {
            Ok(body) => text.push_str(&body),
            Err(e) => {
                let _ = writeln!(text, "(could not read it: {e})");
            }
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::ModuleId;
    use std::time::{Duration, SystemTime};

    fn job(kind: JobKind) -> Job {
        Job { kind, module: ModuleId::new("xpad-neo", "0.9-r1"), after: vec![] }
    }

    #[test]
    fn one_file_per_module_version_kernel_and_operation() {
        assert_eq!(file_name(&job(JobKind::Install { kernel: "6.1-x".into() })), "xpad-neo_0.9-r1_6.1-x.install.log");
        assert_eq!(file_name(&job(JobKind::Remove { kernel: "6.1-x".into() })), "xpad-neo_0.9-r1_6.1-x.remove.log");
        assert_eq!(file_name(&job(JobKind::Unregister)), "xpad-neo_0.9-r1.unregister.log");
    }

    #[test]
    fn writes_output_and_make_log_then_prunes_oldest() {
        let dir = tempfile::tempdir().unwrap();
        let make_log = dir.path().join("make.log");
        std::fs::write(&make_log, "cc: error: boom\n").unwrap();
        let logs = Logs::new(&dir.path().join("logs"), 2);
        let failed = JobResult {
            outcome: Outcome::Failed {
                code: Some(10),
                meaning: "the module build (make) failed",
                log: Some(make_log),
                tail: vec![],
            },
            duration: Duration::from_millis(1500),
            output: "Building module...\nError! Bad return status".into(),
            prebuilt: false,
            prebuilt_refused: None,
        };
        let path = logs.write(&job(JobKind::Install { kernel: "k1".into() }), &failed).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains("install xpad-neo/0.9-r1 for k1") && text.contains("dkms exit 10"), "{text}");
        assert!(text.contains("Error! Bad return status\n") && text.contains("cc: error: boom"), "{text}");

        for (i, k) in ["k2", "k3"].iter().enumerate() {
            let ok = JobResult {
                outcome: Outcome::Installed,
                duration: Duration::ZERO,
                output: String::new(),
                prebuilt: false,
                prebuilt_refused: None,
            };
            let p = logs.write(&job(JobKind::Install { kernel: (*k).into() }), &ok).unwrap();
            let t = SystemTime::now() + Duration::from_secs(10 * (i as u64 + 1));
            std::fs::File::options().write(true).open(&p).unwrap().set_modified(t).unwrap();
        }
        std::fs::write(dir.path().join("logs/notes.txt"), "kept").unwrap();
        // Named like ours, but not written by dkms-hook.
        std::fs::write(dir.path().join("logs/other.install.log"), "another tool's log\n").unwrap();
        logs.prune();
        let left = crate::dirs::names(&dir.path().join("logs")).unwrap();
        assert_eq!(
            left,
            ["notes.txt", "other.install.log", "xpad-neo_0.9-r1_k2.install.log", "xpad-neo_0.9-r1_k3.install.log"]
        );
    }

    #[test]
    fn keep_zero_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let logs = Logs::new(dir.path(), 0);
        let ok = JobResult {
            outcome: Outcome::Installed,
            duration: Duration::ZERO,
            output: "x".into(),
            prebuilt: false,
            prebuilt_refused: None,
        };
        assert!(logs.write(&job(JobKind::Unregister), &ok).is_none());
    }
}
