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
//! The same reading names the transaction ([`Transaction::id`], see `transaction_id`), so that
//! what the guard built before it is used only by the hooks of the same transaction.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use alpm::SigLevel;

pub use super::frontend::{Frontend, Operation};
use super::package::Package;
use super::pacman_conf::PacmanConf;
use crate::domain::Layout;

/// The running transaction, as far as a hook can see it. What it reads of the incoming package
/// files is kept, so asking again reads nothing again.
#[derive(Debug)]
pub struct Transaction {
    pub frontend: Frontend,
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
    /// files as the hook can see them below `layout`'s root.
    pub fn discover(layout: &Layout) -> Transaction {
        let frontend = Frontend::of_parent();
        log::debug!("the running transaction's frontend: {frontend:?}");
        let mut transaction = Transaction {
            frontend,
            id: Transaction::current_id(layout),
            candidates: Err(String::new()),
            expected: BTreeMap::new(),
            read: RefCell::new(BTreeMap::new()),
        };
        match candidates(&transaction.frontend, layout) {
            Ok(found) => {
                transaction.candidates = Ok(found.iter().map(|c| (c.name.clone(), c.file.clone())).collect());
                transaction.expected = found.into_iter().filter_map(|c| Some((c.file, c.expected?))).collect();
            }
            Err(why) => transaction.candidates = Err(why),
        }
        transaction
    }

    /// The name of the running transaction, without reading anything else of it: the frontend's
    /// process id and start time, and libalpm's lock file (see `transaction_id`).
    pub fn current_id(layout: &Layout) -> Option<String> {
        super::transaction_id::current(layout)
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

/// The name of the package in `file`, as libalpm reads it from the file's metadata.
fn name_of(file: &Path) -> Option<String> {
    match Package::name_of(file) {
        Ok(name) => Some(name),
        Err(e) => {
            log::debug!("{e}");
            None
        }
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
fn candidates(frontend: &Frontend, layout: &Layout) -> Result<Vec<Candidate>, String> {
    match frontend.operation {
        Operation::Remove => Err("the transaction only removes packages".to_owned()),
        Operation::Upgrade => {
            let caches = cache_dirs(layout, frontend);
            let mut files = Vec::new();
            for target in &frontend.files {
                match upgrade_target(layout, frontend, &caches, target) {
                    Some(file) => files.extend(name_of(&file).map(|name| Candidate { name, file, expected: None })),
                    None => log::info!(
                        "package file {target} is out of reach (outside the root?): dkms-hook cannot read it"
                    ),
                }
            }
            Ok(files)
        }
        Operation::Sync | Operation::Unknown => from_sync_databases(layout, frontend),
    }
}

/// The file a `-U` target is, as this process sees it: a path (relative to pacman's working
/// directory, or absolute), or for a URL the file pacman downloaded into its cache (named after
/// the URL's last part, as libalpm's `alpm_fetch_pkgurl` names it when that part has `.pkg`).
fn upgrade_target(layout: &Layout, frontend: &Frontend, caches: &[PathBuf], target: &str) -> Option<PathBuf> {
    if target.contains("://") {
        let name = target.rsplit('/').next().filter(|n| n.contains(".pkg"))?;
        return caches.iter().map(|dir| dir.join(name)).find(|f| f.is_file());
    }
    frontend.in_root(layout, Path::new(target)).filter(|p| p.is_file())
}

/// The sync databases' packages whose version differs from the installed one (or that are not
/// installed) and whose file is in pacman's cache. The databases are those of pacman's
/// configuration, in its order; a package is taken from the first that has it, and its file from
/// the first cache that has it, as pacman does.
fn from_sync_databases(layout: &Layout, frontend: &Frontend) -> Result<Vec<Candidate>, String> {
    let conf = pacman_conf(layout, frontend);
    let cachedirs = cache_dirs_of(layout, frontend, conf.as_ref());
    let conf = conf.map(|c| c.conf);
    let dbpath = match &frontend.dbpath {
        Some(dbpath) => frontend
            .option_path(layout, dbpath)
            .ok_or_else(|| format!("pacman's database {} is outside the root", dbpath.display()))?,
        None => layout.dbpath.clone(),
    };
    let layout = Layout { dbpath, ..layout.clone() };
    let handle = super::pacman::open(&layout).map_err(|e| format!("{e:#}"))?;
    let on_disk: Vec<String> = crate::dirs::names(&layout.dbpath.join("sync"))
        .unwrap_or_default()
        .into_iter()
        .filter_map(|db| db.strip_suffix(".db").map(str::to_owned))
        .collect();
    // Without the configuration, every database there is read (alphabetically).
    let repos = match &conf {
        Some(conf) => conf.repos.iter().filter(|r| on_disk.contains(r)).cloned().collect(),
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
            if let Some(file) = cachedirs.iter().map(|d| d.join(filename)).find(|p| p.is_file()) {
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

/// pacman's configuration as this process can read it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Configuration {
    conf: PacmanConf,
    /// Read from the root's own `/etc/pacman.conf`, not the frontend's: its paths are the root's.
    roots_own: bool,
}

/// pacman's configuration as this process can read it: `--config` (default `/etc/pacman.conf`),
/// and when that is out of reach (`pacman --root R` reads the host's), the root's own as the best
/// guess. `None` when neither can be read.
fn pacman_conf(layout: &Layout, frontend: &Frontend) -> Option<Configuration> {
    let given = frontend.config.clone().unwrap_or_else(|| PathBuf::from("/etc/pacman.conf"));
    let from_frontend = |pattern: &str| glob_below(layout, &frontend.option_path(layout, Path::new(pattern))?);
    let from_root = |pattern: &str| glob_below(layout, &layout.on_root(Path::new(pattern)));
    let conf = frontend.option_path(layout, &given).and_then(|p| PacmanConf::load(&p, &from_frontend));
    match conf {
        Some(conf) => Some(Configuration { conf, roots_own: false }),
        None => PacmanConf::load(&layout.on_root(Path::new("/etc/pacman.conf")), &from_root)
            .map(|conf| Configuration { conf, roots_own: true }),
    }
}

/// `path` (a glob pattern below the root) as a pattern for this process: the root's own path
/// matched literally.
fn glob_below(layout: &Layout, path: &Path) -> Option<String> {
    let text = path.to_str()?;
    match path.strip_prefix(&layout.root) {
        Ok(rest) => {
            let root = layout.root.to_str()?.trim_end_matches('/');
            Some(format!("{}/{}", glob::Pattern::escape(root), rest.to_str()?))
        }
        Err(_) => Some(text.to_owned()),
    }
}

/// pacman's package caches as this process sees them, in pacman's order of search; see
/// [`cache_dirs_of`].
pub fn cache_dirs(layout: &Layout, frontend: &Frontend) -> Vec<PathBuf> {
    cache_dirs_of(layout, frontend, pacman_conf(layout, frontend).as_ref())
}

/// pacman's package caches as this process sees them: `--cachedir` of the command line and then
/// every `CacheDir` of the configuration (pacman 7.1 adds both to one list, the command line's
/// first), else `/var/cache/pacman/pkg`; then where libalpm downloads when none of them is
/// writable (`_alpm_filecache_setup`: `/tmp`, or `$TMPDIR`). Those out of reach are left out.
fn cache_dirs_of(layout: &Layout, frontend: &Frontend, conf: Option<&Configuration>) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = frontend.cachedirs.iter().filter_map(|d| frontend.option_path(layout, d)).collect();
    let configured = conf.iter().flat_map(|c| c.conf.cache_dirs.iter().map(move |d| (Path::new(d), c.roots_own)));
    dirs.extend(configured.filter_map(|(dir, roots_own)| match roots_own {
        true => Some(layout.on_root(dir)),
        false => frontend.option_path(layout, dir),
    }));
    if frontend.cachedirs.is_empty() && conf.is_none_or(|c| c.conf.cache_dirs.is_empty()) {
        dirs.extend(frontend.option_path(layout, Path::new("/var/cache/pacman/pkg")));
    }
    // The fallback is not below the sysroot. Whether libalpm used it cannot always be told from
    // here; a file found there still has to be the package the database names. libalpm 16 tests
    // `(tmpdir = getenv("TMPDIR")) && stat(tmpdir, &buf) && S_ISDIR(buf.st_mode)`, which takes
    // $TMPDIR only when stat fails: /tmp in practice, so both are looked at.
    let temporary = std::env::var_os("TMPDIR").into_iter().map(PathBuf::from).chain([PathBuf::from("/tmp")]);
    dirs.extend(temporary.filter_map(|d| frontend.in_root(layout, &d)));
    let mut seen = BTreeSet::new();
    dirs.retain(|d| seen.insert(d.clone()));
    dirs
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(line: &str) -> Frontend {
        Frontend::parse(&line.split(' ').map(str::to_owned).collect::<Vec<_>>())
    }

    #[test]
    fn caches_in_pacmans_order() {
        let layout = Layout::new(Path::new("/"), None);
        let conf =
            PacmanConf { cache_dirs: vec!["/r/a".into(), "/r/b".into(), "/elsewhere".into()], ..PacmanConf::default() };
        let conf = Configuration { conf, roots_own: false };
        let f = parse("pacman --root /r --cachedir /r/cmd -S x");
        let dirs = cache_dirs_of(&layout, &f, Some(&conf));
        assert_eq!(dirs[..3], [PathBuf::from("/cmd"), PathBuf::from("/a"), PathBuf::from("/b")]);
        // Only a temporary directory inside the root can follow.
        assert!(dirs[3..].iter().all(|d| d.starts_with("/")), "{dirs:?}");
        let f = parse("pacman -S x");
        let dirs = cache_dirs_of(&layout, &f, None);
        assert_eq!(dirs[0], PathBuf::from("/var/cache/pacman/pkg"));
        assert_eq!(dirs.last(), Some(&PathBuf::from("/tmp")));
        let relocated = Layout::new(Path::new("/srv/r"), None);
        let dirs = cache_dirs_of(&relocated, &parse("paru -Syu"), Some(&conf));
        assert_eq!(dirs[..2], [PathBuf::from("/srv/r/r/a"), PathBuf::from("/srv/r/r/b")]);
        // The root's own configuration, read for want of the frontend's: the root's paths.
        let roots_own = Configuration { roots_own: true, ..conf };
        let dirs = cache_dirs_of(&layout, &parse("pacman --root /r -S x"), Some(&roots_own));
        assert_eq!(dirs[..3], [PathBuf::from("/r/a"), PathBuf::from("/r/b"), PathBuf::from("/elsewhere")]);
    }

    #[test]
    fn upgrade_targets_are_paths_or_downloads() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::new(dir.path(), None);
        let cache = dir.path().join("var/cache/pacman/pkg");
        std::fs::create_dir_all(&cache).unwrap();
        std::fs::write(cache.join("hello-dkms-1.1-1-x86_64.pkg.tar.zst"), "").unwrap();
        std::fs::write(dir.path().join("local.pkg.tar.zst"), "").unwrap();
        let mut f = parse("pacman -U x");
        f.cwd = Some(dir.path().to_path_buf());
        let caches = [cache.clone()];
        let target = |t: &str| upgrade_target(&layout, &f, &caches, t);
        let cached = cache.join("hello-dkms-1.1-1-x86_64.pkg.tar.zst");
        assert_eq!(target("file:///outside/hello-dkms-1.1-1-x86_64.pkg.tar.zst"), Some(cached.clone()));
        assert_eq!(target("https://example.org/pkgs/hello-dkms-1.1-1-x86_64.pkg.tar.zst"), Some(cached));
        assert_eq!(target("https://example.org/download?id=3"), None);
        assert_eq!(target("https://example.org/other-1-1-x86_64.pkg.tar.zst"), None);
        assert_eq!(target("local.pkg.tar.zst"), Some(dir.path().join("local.pkg.tar.zst")));
        assert_eq!(target("/local.pkg.tar.zst"), Some(dir.path().join("local.pkg.tar.zst")));
        assert_eq!(target("missing.pkg.tar.zst"), None);
    }

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
