//! The resolved configuration: command line over the TOML file over defaults, decided here once.
//!
//! Everything after `Config::resolve` works with plain paths and values; no clap or serde type
//! escapes this module. The file's keys are documented in `man/dkms-hook.toml.5`; a unit test
//! keeps the two in step.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use serde::Deserialize;

use crate::cli::{self, Command, GlobalOpts, Opts};
use crate::domain::{Layout, Operation};

/// The dkms program when neither the command line nor the configuration names one: looked up in
/// PATH (see `run`).
pub const DEFAULT_DKMS: &str = "dkms";

/// The subcommand, resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// A hook: targets on stdin.
    Hook(Operation),
    /// Show the state of modules and kernels (`json`: machine-readable).
    Status { json: bool },
    /// Bring dkms in line with the installed packages.
    Sync,
    /// The pre-transaction guard: test-build for the incoming packages; targets on stdin.
    Guard,
    /// Write the manual pages or a shell completion script (reads no configuration file).
    Generate(cli::Generate),
    /// Check package files (`build`: also build their modules privately; `json`: machine-readable).
    Lint { paths: Vec<PathBuf>, build: bool, json: bool },
}

/// How much to print.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Verbosity {
    Quiet,
    Normal,
    Verbose,
}

/// Module and kernel patterns that dkms-hook never builds or installs for. Removals still
/// clean up after them: excluding is about building, not about leaving files behind.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Excludes {
    /// Glob patterns matched against a kernel version (`*-rt-*`).
    pub kernels: Vec<glob::Pattern>,
    /// Glob patterns matched against a module name, or `name/version`.
    pub modules: Vec<glob::Pattern>,
}

impl Excludes {
    /// True when `kver` matches an `exclude_kernels` pattern.
    pub fn kernel(&self, kver: &str) -> bool {
        self.kernels.iter().any(|p| p.matches(kver))
    }

    /// True when `name` or `name/version` matches an `exclude_modules` pattern.
    pub fn module(&self, name: &str, version: &str) -> bool {
        let full = format!("{name}/{version}");
        self.modules.iter().any(|p| p.matches(name) || p.matches(&full))
    }

    /// True when the pair is not to be built or installed.
    pub fn pair(&self, name: &str, version: &str, kver: &str) -> bool {
        self.kernel(kver) || self.module(name, version)
    }

    pub fn is_empty(&self) -> bool {
        self.kernels.is_empty() && self.modules.is_empty()
    }
}

/// Everything a run needs to know, resolved.
#[derive(Debug, Clone)]
pub struct Config {
    /// What to do.
    pub action: Action,
    /// The paths of the system acted on.
    pub layout: Layout,
    /// The dkms command (a path, or a name looked up in PATH).
    pub dkms: PathBuf,
    /// The depmod command (a path, or a name looked up in PATH).
    pub depmod: PathBuf,
    /// Print the plan and run nothing.
    pub dry_run: bool,
    /// How much to print.
    pub verbosity: Verbosity,
    /// dkms jobs to run at once; 0 lets the runner choose from the number of CPUs.
    pub jobs: usize,
    /// Pairs never to build or install.
    pub excludes: Excludes,
    /// Where each job's full dkms output goes (below the root); default `ROOT/var/log/dkms-hook`.
    pub log_dir: PathBuf,
    /// How many job logs to keep, oldest pruned first; 0 writes none.
    pub keep_logs: usize,
    /// How long one dkms job may run before it is stopped; `None`: no limit.
    pub job_timeout: Option<Duration>,
    /// How long to wait for another run's lock before giving up.
    pub lock_timeout: Duration,
    /// Glob patterns of module names whose failure to build for an incoming kernel, or whose own
    /// upgrade failing to build, stops the transaction (`guard`); empty: none.
    pub critical: Vec<glob::Pattern>,
    /// Whether the pre-transaction guard test-builds at all (`guard = false` turns it off).
    pub guard: bool,
    /// Glob patterns of module names whose package's exact-version dependencies do not lock them
    /// to their companions (see `plan::companions`); empty: every such module is locked.
    pub unlocked: Vec<glob::Pattern>,
    /// Whether boot images are regenerated for the kernels whose modules changed when no
    /// generator hook of pacman's will (`initramfs = "off"` turns it off).
    pub initramfs: Initramfs,
}

/// The `initramfs` setting.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Initramfs {
    /// Regenerate with the generators found installed (none found: nothing).
    #[default]
    Auto,
    /// Never regenerate.
    Off,
}

/// The configuration file, below the root.
pub const CONFIG_FILE: &str = "/etc/dkms-hook.toml";
/// Where job logs go when the file does not say, below the root.
pub const DEFAULT_LOG_DIR: &str = "/var/log/dkms-hook";
/// Job logs kept when the file does not say.
pub const DEFAULT_KEEP_LOGS: usize = 50;
/// Seconds to wait for the lock when the file does not say.
pub const DEFAULT_LOCK_TIMEOUT: u64 = 600;

/// `/etc/dkms-hook.toml`. Every key is optional; an unknown key is an error so typos are caught.
#[derive(Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// dkms jobs to run at once (0: automatic).
    pub jobs: Option<usize>,
    /// The dkms command.
    pub dkms: Option<PathBuf>,
    /// The depmod command.
    pub depmod: Option<PathBuf>,
    /// Glob patterns of kernel versions never to build for.
    pub exclude_kernels: Option<Vec<String>>,
    /// Glob patterns of module names (or `name/version`) never to build.
    pub exclude_modules: Option<Vec<String>>,
    /// Directory for job logs (absolute, on the system acted on).
    pub log_dir: Option<PathBuf>,
    /// Job logs to keep (0: write none).
    pub keep_logs: Option<usize>,
    /// Seconds one dkms job may take (0: no limit).
    pub job_timeout: Option<u64>,
    /// Seconds to wait for another run to finish.
    pub lock_timeout: Option<u64>,
    /// Glob patterns of module names that must build for a kernel before it is installed.
    pub critical: Option<Vec<String>>,
    /// Whether the pre-transaction guard test-builds (default true).
    pub guard: Option<bool>,
    /// Glob patterns of module names not locked to the packages they depend on exactly.
    pub unlocked: Option<Vec<String>>,
    /// `"auto"` (default) or `"off"`: regenerate boot images after modules change.
    pub initramfs: Option<Initramfs>,
}

/// The keys `FileConfig` accepts, for documentation checks.
pub const FILE_KEYS: &[&str] = &[
    "jobs",
    "dkms",
    "depmod",
    "exclude_kernels",
    "exclude_modules",
    "log_dir",
    "keep_logs",
    "job_timeout",
    "lock_timeout",
    "critical",
    "guard",
    "unlocked",
    "initramfs",
];

/// A configuration file that cannot be used, located as precisely as the parser allows.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration {}{}{}: {message}: fix or remove it", file.display(),
    line.map(|l| format!(" line {l}")).unwrap_or_default(),
    key.as_ref().map(|k| format!(", key `{k}`")).unwrap_or_default())]
pub struct ConfigError {
    /// The file.
    pub file: PathBuf,
    /// 1-based line, when known.
    pub line: Option<usize>,
    /// The key concerned, when known.
    pub key: Option<String>,
    /// What is wrong.
    pub message: String,
}

impl FileConfig {
    /// Parses the file's text; `origin` names it in errors.
    pub fn parse(text: &str, origin: &Path) -> Result<FileConfig, ConfigError> {
        let file: FileConfig = toml::from_str(text).map_err(|e| {
            let line = e.span().map(|s| line_of(text, s.start));
            let key = line.and_then(|l| key_on_line(text, l));
            let message = e.message().trim().replace("unknown field", "unknown key");
            ConfigError { file: origin.to_path_buf(), line, key, message }
        })?;
        file.check(text, origin)?;
        Ok(file)
    }

    /// Checks what the types alone do not: glob patterns and absolute paths.
    fn check(&self, text: &str, origin: &Path) -> Result<(), ConfigError> {
        let error = |key: &str, message: String| ConfigError {
            file: origin.to_path_buf(),
            line: line_of_key(text, key),
            key: Some(key.to_owned()),
            message,
        };
        for (key, patterns) in [
            ("exclude_kernels", &self.exclude_kernels),
            ("exclude_modules", &self.exclude_modules),
            ("critical", &self.critical),
            ("unlocked", &self.unlocked),
        ] {
            for p in patterns.iter().flatten() {
                if let Err(e) = glob::Pattern::new(p) {
                    return Err(error(key, format!("invalid glob pattern {p:?}: {}", e.msg)));
                }
            }
        }
        if let Some(dir) = &self.log_dir {
            if !dir.is_absolute() {
                return Err(error("log_dir", format!("{} is not an absolute path", dir.display())));
            }
        }
        Ok(())
    }

    /// Reads the file; a file that does not exist means defaults.
    pub fn load(path: &Path) -> Result<FileConfig> {
        match std::fs::read_to_string(path) {
            Ok(text) => Ok(FileConfig::parse(&text, path)?),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(FileConfig::default()),
            Err(e) => Err(e).with_context(|| format!("failed to read {}", path.display())),
        }
    }
}

/// The 1-based line holding byte `offset`.
fn line_of(text: &str, offset: usize) -> usize {
    text.as_bytes()[..offset.min(text.len())].iter().filter(|&&b| b == b'\n').count() + 1
}

/// The key assigned on 1-based `line` (`key = …`, quoted or bare), if the line is an assignment.
fn key_on_line(text: &str, line: usize) -> Option<String> {
    let (key, _) = text.lines().nth(line - 1)?.split_once('=')?;
    let key = key.trim().trim_matches(|c| c == '"' || c == '\'');
    let bare = !key.is_empty() && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.');
    bare.then(|| key.to_owned())
}

/// The 1-based line where `key` is assigned.
fn line_of_key(text: &str, key: &str) -> Option<usize> {
    (1..=text.lines().count()).find(|&l| key_on_line(text, l).as_deref() == Some(key))
}

impl Config {
    /// Resolves argv over the configuration file over the defaults.
    pub fn resolve(opts: Opts) -> Result<Config> {
        let Opts { global, command } = opts;
        let GlobalOpts { root, dbpath, config, dkms, depmod, jobs, dry_run, verbose, quiet } = global;
        let root = root.unwrap_or_else(|| PathBuf::from("/"));
        if !root.is_dir() {
            anyhow::bail!("root directory {} does not exist: pass an existing directory to --root", root.display());
        }
        let root = std::fs::canonicalize(&root)
            .with_context(|| format!("failed to resolve root directory {}", root.display()))?;
        let layout = Layout::new(&root, dbpath.as_deref());
        let action = match command {
            Command::Install => Action::Hook(Operation::Install),
            Command::Remove { no_depmod } => Action::Hook(Operation::Remove { rebuild: no_depmod }),
            Command::Status { json } => Action::Status { json },
            Command::Sync => Action::Sync,
            Command::Guard => Action::Guard,
            Command::Generate(what) => Action::Generate(what),
            Command::Lint { build, json, paths } => Action::Lint { paths, build, json },
        };
        let file = match config {
            // Generating documentation must not depend on the build host's configuration.
            _ if matches!(action, Action::Generate(_)) => FileConfig::default(),
            // A file named on the command line must exist; the default one may be absent.
            Some(path) if !path.exists() => {
                anyhow::bail!("configuration file {} does not exist: check the --config path", path.display())
            }
            Some(path) => FileConfig::load(&path)?,
            None => FileConfig::load(&layout.on_root(Path::new(CONFIG_FILE)))?,
        };
        let verbosity = if quiet {
            Verbosity::Quiet
        } else if verbose {
            Verbosity::Verbose
        } else {
            Verbosity::Normal
        };
        let patterns = |list: Option<Vec<String>>| -> Vec<glob::Pattern> {
            // Already validated by `FileConfig::parse`.
            list.unwrap_or_default().iter().filter_map(|p| glob::Pattern::new(p).ok()).collect()
        };
        let log_dir = layout.on_root(file.log_dir.as_deref().unwrap_or(Path::new(DEFAULT_LOG_DIR)));
        Ok(Config {
            action,
            dkms: dkms.or(file.dkms).unwrap_or_else(|| PathBuf::from(DEFAULT_DKMS)),
            depmod: depmod.or(file.depmod).unwrap_or_else(|| PathBuf::from("depmod")),
            dry_run,
            verbosity,
            jobs: jobs.or(file.jobs).unwrap_or(0),
            excludes: Excludes { kernels: patterns(file.exclude_kernels), modules: patterns(file.exclude_modules) },
            log_dir,
            keep_logs: file.keep_logs.unwrap_or(DEFAULT_KEEP_LOGS),
            job_timeout: file.job_timeout.filter(|&s| s > 0).map(Duration::from_secs),
            lock_timeout: Duration::from_secs(file.lock_timeout.unwrap_or(DEFAULT_LOCK_TIMEOUT)),
            critical: patterns(file.critical),
            guard: file.guard.unwrap_or(true),
            unlocked: patterns(file.unlocked),
            initramfs: file.initramfs.unwrap_or_default(),
            layout,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_below_a_root() {
        let l = Layout::new(Path::new("/mnt"), None);
        assert_eq!(l.dbpath, Path::new("/mnt/var/lib/pacman"));
        assert_eq!(l.dkms_tree, Path::new("/mnt/var/lib/dkms"));
        assert_eq!(l.kernel_dir("6.1-x"), Path::new("/mnt/usr/lib/modules/6.1-x"));
        assert_eq!(l.on_root(Path::new("/var/log/x")), Path::new("/mnt/var/log/x"));
        assert_eq!(l.lock_file(), Path::new("/mnt/var/lib/dkms-hook/lock"));
        assert!(l.is_relocated());
        assert!(!Layout::new(Path::new("/"), Some(Path::new("/db"))).is_relocated());
    }

    #[test]
    fn file_config_keys_and_errors() {
        let f = FileConfig::parse("dkms = \"/opt/dkms\"\n", Path::new("x.toml")).unwrap();
        assert_eq!(f.dkms.as_deref(), Some(Path::new("/opt/dkms")));
        let err = FileConfig::parse("dksm = \"/opt/dkms\"\n", Path::new("/etc/dkms-hook.toml")).unwrap_err();
        let msg = format!("{err:#}");
        assert!(msg.contains("/etc/dkms-hook.toml") && msg.contains("dksm") && msg.contains("line 1"), "{msg}");
        let err = FileConfig::parse("dkms = 3\n", Path::new("c.toml")).unwrap_err();
        assert!(format!("{err:#}").contains("invalid type"), "{err:#}");
    }

    #[test]
    fn every_key_parses() {
        let text = "jobs = 3\ndkms = \"/d\"\ndepmod = \"/m\"\nexclude_kernels = [\"*-rt-*\"]\n\
                    exclude_modules = [\"nvidia\", \"zfs/2.*\"]\nlog_dir = \"/var/log/x\"\nkeep_logs = 5\n\
                    job_timeout = 900\nlock_timeout = 60\ncritical = [\"zfs\", \"nvidia*\"]\nguard = false\n\
                    unlocked = [\"nvidia-470xx\"]\ninitramfs = \"off\"\n";
        let f = FileConfig::parse(text, Path::new("c.toml")).unwrap();
        assert_eq!(f.jobs, Some(3));
        assert_eq!(f.exclude_modules.as_deref().unwrap(), ["nvidia", "zfs/2.*"]);
        assert_eq!(f.job_timeout, Some(900));
        assert_eq!(f.critical.as_deref().unwrap(), ["zfs", "nvidia*"]);
        assert_eq!(f.guard, Some(false));
        assert_eq!(f.unlocked.as_deref().unwrap(), ["nvidia-470xx"]);
        assert_eq!(f.initramfs, Some(Initramfs::Off));
        for key in FILE_KEYS {
            assert!(text.contains(&format!("{key} =")), "{key} is not in the test");
        }
    }

    #[test]
    fn errors_name_file_line_and_key() {
        for (text, line, key, want) in [
            ("jobs = 2\nkeep_logs = \"many\"\n", 2, "keep_logs", "invalid type"),
            ("\n\njobs = -1\n", 3, "jobs", "invalid value"),
            ("jobs = 1\nexclude_kernels = \"x\"\n", 2, "exclude_kernels", "invalid type"),
            ("jobs = 1\n\nlog-dir = \"/x\"\n", 3, "log-dir", "unknown key"),
            ("exclude_modules = [\"a[\"]\n", 1, "exclude_modules", "invalid glob pattern"),
            ("jobs = 1\nlog_dir = \"var/log\"\n", 2, "log_dir", "not an absolute path"),
        ] {
            let err = FileConfig::parse(text, Path::new("/etc/dkms-hook.toml")).unwrap_err();
            assert_eq!((err.line, err.key.as_deref()), (Some(line), Some(key)), "{err}");
            let msg = err.to_string();
            assert!(msg.contains(want) && msg.contains("/etc/dkms-hook.toml line"), "{msg}");
            assert!(msg.contains(&format!("key `{key}`")), "{msg}");
        }
        let err = FileConfig::parse("jobs = = 2\n", Path::new("c.toml")).unwrap_err();
        assert_eq!(err.line, Some(1), "{err}");
    }

    #[test]
    fn excludes_match_kernels_names_and_versions() {
        let p = |s: &str| glob::Pattern::new(s).unwrap();
        let e = Excludes { kernels: vec![p("*-rt-*")], modules: vec![p("nvidia*"), p("zfs/2.1.*")] };
        assert!(e.kernel("6.1.0-47-rt-amd64") && !e.kernel("6.1.0-47-amd64"));
        assert!(e.module("nvidia-open", "550") && e.module("zfs", "2.1.5") && !e.module("zfs", "2.2.0"));
        assert!(e.pair("hello", "1", "6.1.0-47-rt-amd64") && !e.pair("hello", "1", "6.1.0-47-amd64"));
    }

    #[test]
    fn file_keys_are_exactly_the_accepted_keys() {
        // serde lists the accepted keys when it meets an unknown one.
        let err = FileConfig::parse("zzz = 1\n", Path::new("c.toml")).unwrap_err();
        let listed = err.message.matches('`').count() / 2 - 1; // less the unknown key itself
        assert_eq!(listed, FILE_KEYS.len(), "{}", err.message);
        for key in FILE_KEYS {
            assert!(err.message.contains(&format!("`{key}`")), "{key} is not accepted: {}", err.message);
        }
    }

    #[test]
    fn every_key_is_documented_in_the_man_page() {
        let page = include_str!("../man/dkms-hook.toml.5");
        for key in FILE_KEYS {
            assert!(page.contains(&format!(".B {key}")), "man/dkms-hook.toml.5 does not document {key}");
        }
    }
}
