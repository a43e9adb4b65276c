//! The package files a running pacman transaction brings, as a hook can reach them: the guard
//! needs them to test-build (the incoming headers and module sources), and only for that. What
//! comes and what leaves is never decided from them: pacman's own hook targets say it.
//!
//! They are found from what pacman leaves visible:
//! - the frontend's command line (`/proc/PPID/cmdline`; hooks are children of the process running
//!   the transaction), read with pacman 7.1's own options (see `frontend`): `-R` removes only; `-U TARGET…` names
//!   the incoming package files (paths relative to pacman's working directory or absolute, or URLs
//!   whose download pacman put into its cache); `--root`, `--sysroot`, `--dbpath`, `--config` and
//!   `--cachedir` say where things are. Its paths are the host's; pacman runs hooks chrooted into
//!   the root, so each is led into the root, and one outside the root is out of reach;
//! - for `-S` (and frontends other than pacman): the sync databases of pacman's configuration give
//!   each package's version, file name and checksum, and pacman has downloaded every package of
//!   the transaction into its caches before any PreTransaction hook runs: `--cachedir`, then every
//!   `CacheDir` of the configuration (with its `Include`s, see `pacman_conf`), else
//!   `/var/cache/pacman/pkg`, else the temporary directory libalpm falls back to. A cached file
//!   counts only when it is that package: the database's name, version and checksum.
//!
//! Whatever cannot be found cannot be test-built: the guard says so, and the install hook builds
//! after the transaction.
//!
//! The reading carries the transaction's name ([`Transaction::id`], read by the caller with
//! `transaction_id::current`), so that what the guard built before it is used only by the hooks
//! of the same transaction.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use alpm::SigLevel;

pub use super::frontend::{Frontend, Operation, Places};
use super::package::Package;
use crate::domain::Layout;

/// The running transaction, as far as a hook can see it. What it reads of the incoming package
/// files is kept, so asking again reads nothing again.
#[derive(Debug)]
pub struct Transaction {
    pub frontend: Frontend,
    /// The packages pacman leaves alone in it (see `frontend::Places::ignored`).
    pub ignored: BTreeSet<String>,
    /// The transaction's name (see `transaction_id`): the same for every hook of one transaction.
    pub id: Option<String>,
    /// (package name, file) of every incoming package file; why there are none, when none can be
    /// listed.
    candidates: Result<Vec<(String, PathBuf)>, String>,
    /// What each candidate file from the sync databases must be to belong to this transaction.
    expected: BTreeMap<PathBuf, Expected>,
    /// Package files read whole so far (`None`: not a package libalpm can read, or not the one
    /// the transaction brings).
    read: RefCell<BTreeMap<PathBuf, Option<Package>>>,
}

/// What a file in pacman's cache must be to be the package a sync database names: pacman checks
/// the same (its name and version, and the database's checksum) before it installs the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expected {
    pub name: String,
    pub version: String,
    /// The database's `%SHA256SUM%`, when it has one.
    pub sha256: Option<String>,
}

impl Expected {
    /// Why `package` (read from `file`) is not the expected one; `None` when it is.
    fn mismatch(&self, package: &Package, file: &Path) -> Option<String> {
        if package.name != self.name || package.version != self.version {
            return Some(format!(
                "it holds {} {}, the database {} {}",
                package.name, package.version, self.name, self.version
            ));
        }
        let sha256 = self.sha256.as_deref()?;
        match crate::digest::of_file(file) {
            Ok(actual) if actual.eq_ignore_ascii_case(sha256) => None,
            Ok(actual) => Some(format!("its SHA-256 is {actual}, the database's {sha256}")),
            Err(e) => Some(format!("{e:#}")),
        }
    }
}

/// Where a path of the transaction comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Located {
    /// This package file brings it.
    Found(Package),
    /// No package file that dkms-hook can reach brings it (the reason says why).
    Unreachable(String),
}

impl Transaction {
    /// The transaction of the frontend that started this process, with its incoming package
    /// files as the hook can see them below `layout`'s root; `id` is its name (see
    /// `transaction_id::current`).
    pub fn discover(layout: &Layout, id: Option<String>) -> Transaction {
        let frontend = Frontend::of_parent();
        log::debug!("the running transaction's frontend: {frontend:?}");
        let places = frontend.places(layout);
        log::debug!("the places it uses, as seen here: {places:?}");
        let (candidates, expected) = match candidates(frontend.operation, &places, layout) {
            Ok(found) => (
                Ok(found.iter().map(|c| (c.name.clone(), c.file.clone())).collect()),
                found.into_iter().filter_map(|c| Some((c.file, c.expected?))).collect(),
            ),
            Err(why) => (Err(why), BTreeMap::new()),
        };
        Transaction { frontend, ignored: places.ignored, id, candidates, expected, read: RefCell::new(BTreeMap::new()) }
    }

    /// The incoming package files of the packages `names` (by the name the database or the file
    /// gives; see `candidates`).
    pub fn files_of(&self, names: &BTreeSet<String>) -> Vec<(String, PathBuf)> {
        let Ok(candidates) = &self.candidates else { return Vec::new() };
        candidates.iter().filter(|(name, _)| names.contains(name)).cloned().collect()
    }

    /// The incoming package file of each of `paths` (package paths: `usr/src/foo-1.0/dkms.conf`),
    /// looked for among the packages for which `likely(name, path)` holds (a cheap guess:
    /// `*-headers` for headers, `*dkms*` for module sources), and, for the files given to `-U`,
    /// then among the others. Reading a package's file list reads the whole package: the
    /// hundreds of packages of a big `-Syu` are never all read.
    pub fn locate(&self, paths: &[String], likely: impl Fn(&str, &str) -> bool) -> BTreeMap<String, Located> {
        paths.iter().map(|path| (path.clone(), self.holding(path, &likely))).collect()
    }

    /// The name of the incoming kernel package that brings `path` (`usr/lib/modules/K/vmlinuz`),
    /// where its file can be reached: among a `-Syu`'s packages only Arch's kernel names
    /// (`linux`, `linux-*`, not headers or firmware) are looked at.
    pub fn kernel_package_of(&self, path: &str) -> Option<String> {
        let likely = |name: &str, _: &str| {
            (name == "linux" || name.starts_with("linux-")) && !name.ends_with("-headers") && !name.contains("firmware")
        };
        match self.holding(path, &likely) {
            Located::Found(package) => Some(package.name),
            Located::Unreachable(_) => None,
        }
    }

    /// The version the sync database gives the package in `file`, for a file found in pacman's
    /// cache (`None` for the files of `-U`, which no database names).
    pub fn database_version(&self, file: &Path) -> Option<&str> {
        self.expected.get(file).map(|e| e.version.as_str())
    }

    /// `file` read whole (once), if it is the package the transaction brings.
    fn read(&self, file: &Path) -> Option<Package> {
        self.read
            .borrow_mut()
            .entry(file.to_path_buf())
            .or_insert_with(|| {
                let package = Package::read(file).map_err(|e| log::debug!("{e}")).ok()?;
                if let Some(why) = self.expected.get(file).and_then(|e| e.mismatch(&package, file)) {
                    log::info!("{} is not the package this transaction brings: {why}", file.display());
                    return None;
                }
                Some(package)
            })
            .clone()
    }

    /// The incoming package file holding `path`.
    fn holding(&self, path: &str, likely: &impl Fn(&str, &str) -> bool) -> Located {
        let all = match &self.candidates {
            Ok(all) => all,
            Err(why) => return Located::Unreachable(why.clone()),
        };
        // The files given to `-U` are few and chosen: when the guess misses, all are looked at.
        let every = self.frontend.operation == Operation::Upgrade;
        let (first, rest): (Vec<_>, Vec<_>) = all.iter().partition(|(name, _)| likely(name, path));
        for (name, file) in first.into_iter().chain(rest.into_iter().filter(|_| every)) {
            if let Some(package) = self.read(file).filter(|p| p.name == *name && p.files.iter().any(|f| f == path)) {
                return Located::Found(package);
            }
        }
        Located::Unreachable(format!(
            "no package file dkms-hook can reach brings {path} (a file given to pacman -U, or pacman's cache, \
             outside the root?)"
        ))
    }
}

/// An incoming package file, and what it must be when a sync database names it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Candidate {
    name: String,
    file: PathBuf,
    expected: Option<Expected>,
}

/// The incoming package files, by package name: `-U`'s files and URLs as this process sees them
/// (named by their metadata), or the sync databases' packages that differ from the installed ones
/// (or are not installed) and sit in pacman's cache (named by the database; a file is confirmed
/// to be that package when it is used). `Err` says why there are none to look at.
fn candidates(operation: Operation, places: &Places, layout: &Layout) -> Result<Vec<Candidate>, String> {
    let upgrade = match operation {
        Operation::Remove => return Err("the transaction only removes packages".to_owned()),
        Operation::Sync | Operation::Unknown => return from_sync_databases(places, layout),
        Operation::Upgrade => &places.files,
    };
    let mut files = Vec::new();
    for (target, file) in upgrade {
        let Some(file) = file else {
            log::info!("package file {target} is out of reach (outside the root?): dkms-hook cannot read it");
            continue;
        };
        // Named as libalpm reads the file's metadata.
        match Package::name_of(file) {
            Ok(name) => files.push(Candidate { name, file: file.clone(), expected: None }),
            Err(e) => log::debug!("{e}"),
        }
    }
    Ok(files)
}

/// The sync databases' packages whose version differs from the installed one (or that are not
/// installed) and whose file is in pacman's cache. The databases are those of pacman's
/// configuration, in its order; a package is taken from the first that has it, and its file from
/// the first cache that has it, as pacman does.
fn from_sync_databases(places: &Places, layout: &Layout) -> Result<Vec<Candidate>, String> {
    let layout = Layout { dbpath: places.dbpath.clone()?, ..layout.clone() };
    let handle = super::pacman::open(&layout).map_err(|e| format!("{e:#}"))?;
    let on_disk: Vec<String> = crate::dirs::names(&layout.dbpath.join("sync"))
        .unwrap_or_default()
        .into_iter()
        .filter_map(|db| db.strip_suffix(".db").map(str::to_owned))
        .collect();
    // Without the configuration, every database there is read (alphabetically).
    let repos = match &places.repos {
        Some(repos) => repos.iter().filter(|r| on_disk.contains(r)).cloned().collect(),
        None => on_disk,
    };
    for name in &repos {
        if let Err(e) = handle.register_syncdb(name.as_str(), SigLevel::NONE) {
            log::debug!("cannot read the sync database {name}: {e}");
        }
    }
    let mut seen = BTreeSet::new();
    let mut found = Vec::new();
    for db in handle.syncdbs() {
        for pkg in db.pkgs() {
            if !seen.insert(pkg.name().to_owned()) {
                continue;
            }
            let installed = handle.localdb().pkg(pkg.name()).ok().map(|p| p.version().to_string());
            if installed.as_deref() == Some(pkg.version().as_str()) {
                continue;
            }
            let Some(filename) = pkg.filename() else { continue };
            if let Some(file) = places.caches.iter().map(|d| d.join(filename)).find(|p| p.is_file()) {
                let expected = Expected {
                    name: pkg.name().to_owned(),
                    version: pkg.version().to_string(),
                    sha256: pkg.sha256sum().map(str::to_owned),
                };
                found.push(Candidate { name: pkg.name().to_owned(), file, expected: Some(expected) });
            }
        }
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_databases_package_belongs_to_the_transaction() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("hello-dkms-1.1-1-x86_64.pkg.tar.zst");
        std::fs::write(&file, "package bytes").unwrap();
        let sha256 = crate::digest::of_file(&file).unwrap();
        let package = Package {
            path: file.clone(),
            name: "hello-dkms".into(),
            version: "1.1-1".into(),
            depends: vec![],
            files: vec![],
            has_install: false,
        };
        let expected = |version: &str, sha256: Option<&str>| Expected {
            name: "hello-dkms".into(),
            version: version.into(),
            sha256: sha256.map(str::to_owned),
        };
        assert_eq!(expected("1.1-1", Some(&sha256)).mismatch(&package, &file), None);
        assert_eq!(expected("1.1-1", Some(&sha256.to_uppercase())).mismatch(&package, &file), None);
        assert_eq!(expected("1.1-1", None).mismatch(&package, &file), None);
        let stale = expected("1.2-1", Some(&sha256)).mismatch(&package, &file).unwrap();
        assert!(stale.contains("hello-dkms 1.1-1") && stale.contains("1.2-1"), "{stale}");
        let other = expected("1.1-1", Some(&"0".repeat(64))).mismatch(&package, &file).unwrap();
        assert!(other.contains("SHA-256"), "{other}");
    }
}
