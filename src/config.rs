//! The resolved configuration: command line over the TOML file over defaults, decided here once.
//!
//! Everything after `Config::resolve` works with plain paths and values; no clap or serde type
//! escapes this module.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::Deserialize;

use crate::cli::{Command, GlobalOpts, Opts};

/// What pacman asked us to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    /// PostTransaction: build and install.
    Install,
    /// PreTransaction: remove; `rebuild` when the install hook rebuilds afterwards (no depmod).
    Remove { rebuild: bool },
}

/// How much to print.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Verbosity {
    Quiet,
    Normal,
    Verbose,
}

/// Where things live on the system being acted on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    /// The system root; `/` for the running system.
    pub root: PathBuf,
    /// The pacman database directory (holds `local/`).
    pub dbpath: PathBuf,
    /// Module sources: `ROOT/usr/src`.
    pub source_tree: PathBuf,
    /// The dkms tree: `ROOT/var/lib/dkms`.
    pub dkms_tree: PathBuf,
    /// Kernel module directories: `ROOT/usr/lib/modules`.
    pub module_dir: PathBuf,
}

impl Layout {
    /// The standard layout below `root`, with pacman's database at `dbpath` if given.
    pub fn new(root: &Path, dbpath: Option<&Path>) -> Layout {
        Layout {
            root: root.to_path_buf(),
            dbpath: dbpath.map_or_else(|| root.join("var/lib/pacman"), Path::to_path_buf),
            source_tree: root.join("usr/src"),
            dkms_tree: root.join("var/lib/dkms"),
            module_dir: root.join("usr/lib/modules"),
        }
    }

    /// True when acting on another root than `/`: dkms and depmod must then be relocated.
    pub fn is_relocated(&self) -> bool {
        self.root != Path::new("/")
    }

    /// A kernel's module directory, `ROOT/usr/lib/modules/KVER`.
    pub fn kernel_dir(&self, kver: &str) -> PathBuf {
        self.module_dir.join(kver)
    }
}

/// Everything a run needs to know, resolved.
#[derive(Debug, Clone)]
pub struct Config {
    /// Install or remove.
    pub operation: Operation,
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
}

/// `/etc/dkms-hook.toml`. Every key is optional; an unknown key is an error so typos are caught.
#[derive(Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// The dkms command.
    pub dkms: Option<PathBuf>,
    /// The depmod command.
    pub depmod: Option<PathBuf>,
}

impl FileConfig {
    /// Parses the file's text; `origin` names it in errors.
    pub fn parse(text: &str, origin: &Path) -> Result<FileConfig> {
        toml::from_str(text).with_context(|| format!("invalid configuration in {}", origin.display()))
    }

    /// Reads the file; a file that does not exist means defaults.
    pub fn load(path: &Path) -> Result<FileConfig> {
        match std::fs::read_to_string(path) {
            Ok(text) => FileConfig::parse(&text, path),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(FileConfig::default()),
            Err(e) => Err(e).with_context(|| format!("failed to read {}", path.display())),
        }
    }
}

impl Config {
    /// Resolves argv over the configuration file over the defaults.
    pub fn resolve(opts: Opts) -> Result<Config> {
        let Opts { global, command } = opts;
        let GlobalOpts { root, dbpath, config, dkms, depmod, dry_run, verbose, quiet } = global;
        let root = root.unwrap_or_else(|| PathBuf::from("/"));
        if !root.is_dir() {
            anyhow::bail!("root directory {} does not exist: pass an existing directory to --root", root.display());
        }
        let root = std::fs::canonicalize(&root)
            .with_context(|| format!("failed to resolve root directory {}", root.display()))?;
        let config_path = config.unwrap_or_else(|| root.join("etc/dkms-hook.toml"));
        let file = FileConfig::load(&config_path)?;
        let operation = match command {
            Command::Install => Operation::Install,
            Command::Remove { no_depmod } => Operation::Remove { rebuild: no_depmod },
        };
        let verbosity = if quiet {
            Verbosity::Quiet
        } else if verbose {
            Verbosity::Verbose
        } else {
            Verbosity::Normal
        };
        Ok(Config {
            operation,
            layout: Layout::new(&root, dbpath.as_deref()),
            dkms: dkms.or(file.dkms).unwrap_or_else(|| PathBuf::from("dkms")),
            depmod: depmod.or(file.depmod).unwrap_or_else(|| PathBuf::from("depmod")),
            dry_run,
            verbosity,
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
}
