//! The state file: the last outcome of each (module, version, kernel) install job, so `status`
//! can say *why* a pair is missing (skipped by BUILD_EXCLUSIVE, failed with this log, built for
//! the wrong kernel) without running dkms.
//!
//! The dkms tree stays the truth about what is built and installed; this file only adds the
//! reasons. It lives at `ROOT/var/lib/dkms-hook/state.json`, is only written by runs that hold
//! the lock, and is replaced atomically (temporary file, fsync, rename, fsync of the directory),
//! so a reader (`status`, which takes no lock) sees the old or the new file, never half of one.
//! A successful removal forgets the pair; unregistering forgets the module version.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::domain::{Job, JobKind, Outcome};

/// The file format's version; bumped on incompatible changes (an unknown version reads as empty).
const FORMAT: u32 = 1;

/// What the last install job of a pair came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Last {
    /// Installed, and the modules name the right kernel.
    Installed,
    /// dkms declined: BUILD_EXCLUSIVE_* does not match the kernel (exit 77).
    Skipped,
    /// dkms failed, could not be started, or a BUILD_DEPENDS module failed.
    Failed,
    /// Installed, but a module's vermagic names another kernel.
    WrongVermagic,
    /// Replacing the installed build failed; the version that was installed (`serving`) stays.
    Kept,
}

/// One remembered outcome.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    pub module: String,
    pub version: String,
    pub kernel: String,
    pub last: Last,
    /// A short explanation (`dkms exit 10, the module build (make) failed`, the wrong vermagic).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// The job's log (see `logs`), when one was written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log: Option<PathBuf>,
    /// When the job finished, in seconds since the epoch.
    pub time: u64,
    /// The digest of the sources the build installed for this pair was made from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    /// With [`Last::Kept`]: the version still installed for the kernel, the one that worked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serving: Option<String>,
}

/// All remembered outcomes, by (module, version, kernel).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct State {
    records: BTreeMap<(String, String, String), Record>,
}

#[derive(Serialize, Deserialize)]
struct File {
    format: u32,
    records: Vec<Record>,
}

impl State {
    /// Reads the state file; a missing file is an empty state.
    pub fn load(path: &Path) -> Result<State> {
        let text = match std::fs::read(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(State::default()),
            Err(e) => return Err(e).with_context(|| format!("failed to read {}", path.display())),
        };
        let file: File = serde_json::from_slice(&text).with_context(|| format!("{} is damaged", path.display()))?;
        if file.format != FORMAT {
            log::warn!("{} has format {}, not {FORMAT}: ignored", path.display(), file.format);
            return Ok(State::default());
        }
        Ok(State { records: file.records.into_iter().map(|r| (key(&r.module, &r.version, &r.kernel), r)).collect() })
    }

    /// Reads the state file; a damaged or unreadable one is reported as a warning and read as
    /// empty (it only holds explanations; the next runs rewrite it).
    pub fn load_or_warn(path: &Path) -> State {
        State::load(path).unwrap_or_else(|e| {
            eprintln!("warning: {e:#}: starting afresh");
            State::default()
        })
    }

    /// Writes the state atomically.
    pub fn save(&self, path: &Path) -> Result<()> {
        let file = File { format: FORMAT, records: self.records.values().cloned().collect() };
        let mut text = serde_json::to_vec_pretty(&file).expect("state serializes");
        text.push(b'\n');
        crate::atomic::write(path, &text)
    }

    /// The remembered outcome of a pair.
    pub fn get(&self, module: &str, version: &str, kernel: &str) -> Option<&Record> {
        self.records.get(&key(module, version, kernel))
    }

    /// Every record, in (module, version, kernel) order.
    pub fn records(&self) -> impl Iterator<Item = &Record> {
        self.records.values()
    }

    /// Remembers what a finished job came to; `log` is the job's log file, if written; `digest`
    /// the digest of the job's module sources, when it built from them.
    pub fn record(&mut self, job: &Job, outcome: &Outcome, log: Option<&Path>, time: u64, digest: Option<&str>) {
        let m = &job.module;
        let forget = |records: &mut BTreeMap<_, _>, version: &str, kernel: &str| {
            records.remove(&key(&m.name, version, kernel));
        };
        match (&job.kind, outcome) {
            // A job stopped by a signal says nothing about the pair: keep what was known.
            (_, Outcome::Interrupted) => {}
            (JobKind::Install { kernel } | JobKind::Replace { kernel, .. }, _) => {
                let (last, detail) = summarize(outcome);
                let built = matches!(outcome, Outcome::Installed | Outcome::Replaced { .. });
                let serving = match outcome {
                    Outcome::Kept { old, .. } => Some(old.clone()),
                    _ => None,
                };
                // A kept build of the same version is still the one made from the earlier sources.
                let previous = self.get(&m.name, &m.version, kernel).and_then(|r| r.digest.clone());
                let digest = match (built, &serving) {
                    (true, _) => digest.map(str::to_owned),
                    (false, Some(old)) if *old == m.version => previous,
                    _ => None,
                };
                if let (JobKind::Replace { old, .. }, true) = (&job.kind, built) {
                    if *old != m.version {
                        forget(&mut self.records, old, kernel);
                    }
                }
                let record = Record {
                    module: m.name.clone(),
                    version: m.version.clone(),
                    kernel: kernel.clone(),
                    last,
                    detail,
                    log: log.map(Path::to_path_buf),
                    time,
                    digest,
                    serving,
                };
                self.records.insert(key(&m.name, &m.version, kernel), record);
            }
            // Builds made before digests were recorded were made from these sources.
            (JobKind::Preserve { digest, installed }, Outcome::Preserved) => {
                for kernel in installed {
                    let record = self.records.entry(key(&m.name, &m.version, kernel)).or_insert_with(|| Record {
                        module: m.name.clone(),
                        version: m.version.clone(),
                        kernel: kernel.clone(),
                        last: Last::Installed,
                        detail: None,
                        log: None,
                        time,
                        digest: None,
                        serving: None,
                    });
                    record.digest.get_or_insert_with(|| digest.clone());
                }
            }
            (JobKind::Remove { kernel }, _) if !outcome.is_failure() => forget(&mut self.records, &m.version, kernel),
            (JobKind::Unregister | JobKind::Retire { .. }, Outcome::Unregistered) => {
                self.records.retain(|_, r| !(r.module == m.name && r.version == m.version));
            }
            _ => {}
        }
    }

    /// Forgets the records for which `keep(module, version, kernel)` is false (pairs that no
    /// longer exist).
    pub fn retain(&mut self, mut keep: impl FnMut(&str, &str, &str) -> bool) {
        self.records.retain(|_, r| keep(&r.module, &r.version, &r.kernel));
    }
}

fn key(module: &str, version: &str, kernel: &str) -> (String, String, String) {
    (module.to_owned(), version.to_owned(), kernel.to_owned())
}

/// An install outcome as a state and a short explanation.
pub fn summarize(outcome: &Outcome) -> (Last, Option<String>) {
    match outcome {
        Outcome::Kept { failure, .. } => (Last::Kept, summarize(failure).1),
        Outcome::Skipped => (Last::Skipped, Some("BUILD_EXCLUSIVE does not match this kernel".to_owned())),
        Outcome::WrongVermagic { module, vermagic } => {
            (Last::WrongVermagic, Some(format!("{} has vermagic {vermagic}", module.display())))
        }
        Outcome::Failed { code: Some(c), meaning, .. } => (Last::Failed, Some(format!("dkms exit {c}, {meaning}"))),
        Outcome::Failed { code: None, meaning, .. } => (Last::Failed, Some(format!("dkms {meaning}"))),
        Outcome::ExecFailed { error } => (Last::Failed, Some(format!("could not run dkms: {error}"))),
        Outcome::DependencyFailed { dependency } => {
            (Last::Failed, Some(format!("not built: it needs {dependency}, which did not succeed")))
        }
        Outcome::TimedOut { after } => {
            (Last::Failed, Some(format!("stopped after {} s (job_timeout)", after.as_secs())))
        }
        Outcome::Interrupted => (Last::Failed, Some("interrupted by a signal".to_owned())),
        // Every other outcome is a success (see `Outcome::is_failure`): the job's work is done.
        ok => {
            debug_assert!(!ok.is_failure(), "{ok:?}");
            (Last::Installed, None)
        }
    }
}

/// Seconds since the epoch, now.
pub fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::ModuleId;

    fn install(m: &str, v: &str, k: &str) -> Job {
        Job { kind: JobKind::Install { kernel: k.into() }, module: ModuleId::new(m, v), after: vec![] }
    }

    #[test]
    fn records_installs_and_forgets_removals() {
        let mut s = State::default();
        let failed =
            Outcome::Failed { code: Some(10), meaning: "the module build (make) failed", log: None, tail: vec![] };
        s.record(&install("a", "1", "k1"), &failed, Some(Path::new("/log/a")), 5, None);
        s.record(&install("a", "1", "k2"), &Outcome::Skipped, None, 6, None);
        s.record(&install("b", "2", "k1"), &Outcome::Installed, None, 7, None);
        let r = s.get("a", "1", "k1").unwrap();
        assert_eq!((r.last, r.detail.as_deref()), (Last::Failed, Some("dkms exit 10, the module build (make) failed")));
        assert_eq!(r.log.as_deref(), Some(Path::new("/log/a")));
        assert_eq!(s.get("a", "1", "k2").unwrap().last, Last::Skipped);

        let remove =
            Job { kind: JobKind::Remove { kernel: "k1".into() }, module: ModuleId::new("b", "2"), after: vec![] };
        s.record(&remove, &Outcome::Removed, None, 8, None);
        assert!(s.get("b", "2", "k1").is_none());
        let unregister = Job { kind: JobKind::Unregister, module: ModuleId::new("a", "1"), after: vec![] };
        s.record(&unregister, &Outcome::Unregistered, None, 9, None);
        assert_eq!(s.records().count(), 0);
    }

    #[test]
    fn saves_and_loads_atomically() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/state.json");
        assert_eq!(State::load(&path).unwrap(), State::default());
        let mut s = State::default();
        let wrong = Outcome::WrongVermagic { module: PathBuf::from("/m/a.ko"), vermagic: "6.1-y SMP".into() };
        s.record(&install("a", "1", "k1"), &wrong, None, 5, None);
        s.save(&path).unwrap();
        assert_eq!(State::load(&path).unwrap(), s);
        // No temporary file is left behind.
        assert_eq!(std::fs::read_dir(path.parent().unwrap()).unwrap().count(), 1);
        std::fs::write(&path, "{not json").unwrap();
        assert!(format!("{:#}", State::load(&path).unwrap_err()).contains("damaged"));
    }
}
