//! Kernels, headers and module sources as the local pacman database knows them (libalpm).
//!
//! A directory under `usr/lib/modules` is only a kernel when an installed package owns its
//! `pkgbase` or `vmlinuz`: leftover directories are not kernels. Owner lookups are cheap when
//! we can guess the owner (the `pkgbase` file names the kernel package, `<pkgbase>-headers` owns
//! the headers, `*dkms*` packages own module sources) and fall back to one pass over every
//! package's file list only for what the guesses did not resolve.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::rc::Rc;

use alpm::Alpm;
use anyhow::{Context, Result};

use crate::domain::Layout;

/// An installed kernel: a `<kver>` whose `vmlinuz`/`pkgbase` an installed package owns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kernel {
    /// The module directory name, e.g. `6.12.1-arch1-1`.
    pub kver: String,
    /// The package owning the kernel, e.g. `linux`.
    pub package: String,
    /// The package base (content of `pkgbase`), used to name the headers package to install.
    pub pkgbase: String,
    /// Where the headers come from, when `build/include/` exists: the package owning `build/`
    /// (a directory, or a symlink to a headers tree), or the directory an unpackaged `build`
    /// symlink leads to.
    pub headers: Option<String>,
}

impl Kernel {
    /// The headers package a user should install for this kernel.
    pub fn headers_package(&self) -> String {
        format!("{}-headers", self.pkgbase)
    }
}

/// What the pacman database says about kernels and module sources.
#[derive(Debug, Default)]
pub struct Owners {
    /// Installed kernels by kver.
    pub kernels: BTreeMap<String, Kernel>,
    /// Owning package of `usr/src/<dir>/dkms.conf`, by dir.
    pub sources: BTreeMap<String, String>,
    /// The versions of the packages named above and of those asked for, by package name.
    pub versions: BTreeMap<String, String>,
    /// The exact-version dependencies of the module packages, by package.
    pub locks: super::locks::Locks,
    /// The boot image generators installed.
    pub boot: super::boot::Boot,
}

/// Fails, naming the fix, unless `layout` has a readable local pacman database.
pub fn check_database(layout: &Layout) -> Result<()> {
    let db_version = layout.dbpath.join("local/ALPM_DB_VERSION");
    match std::fs::metadata(&db_version) {
        Ok(m) if m.is_file() => {}
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => anyhow::bail!(
            "cannot read the pacman database at {}: {e}: run dkms-hook as root (pacman does)",
            layout.dbpath.display()
        ),
        _ => anyhow::bail!(
            "no pacman database at {} (missing {}): pass the right --root or --dbpath",
            layout.dbpath.display(),
            db_version.display()
        ),
    }
    if let Err(e) = std::fs::read_dir(layout.dbpath.join("local")) {
        anyhow::bail!(
            "cannot read the pacman database at {}: {e}: run dkms-hook as root (pacman does)",
            layout.dbpath.display()
        );
    }
    Ok(())
}

/// Opens libalpm on `layout`'s root and database (the one place that does).
pub fn open(layout: &Layout) -> Result<Alpm> {
    check_database(layout)?;
    Alpm::new(path_bytes(&layout.root), path_bytes(&layout.dbpath)).with_context(|| {
        format!("failed to open the pacman database {} (root {})", layout.dbpath.display(), layout.root.display())
    })
}

/// Reads kernels (from the module directories on disk, confirmed by ownership) and the owners
/// of the given source directories' dkms.conf; the installed versions of the packages `also`
/// name are among the versions as well.
pub fn read(layout: &Layout, source_dirs: &[String], also: &[&str]) -> Result<Owners> {
    let handle = open(layout)?;
    // libalpm reports damaged entries (a missing `files`, a directory name without a pkgrel)
    // through its log and carries on; so do we, but say so once per problem.
    let complaints: Rc<RefCell<BTreeSet<String>>> = Rc::default();
    let sink = Rc::clone(&complaints);
    handle.set_log_cb((), move |level, msg, _| {
        if level.intersects(alpm::LogLevel::ERROR | alpm::LogLevel::WARNING) {
            sink.borrow_mut().insert(msg.trim().to_owned());
        }
    });
    let owners = read_owners(layout, source_dirs, also, &handle);
    for complaint in complaints.borrow().iter() {
        log::warn!(
            "the pacman database at {} is damaged: {complaint}: check it with `pacman -Dk`",
            layout.dbpath.display()
        );
    }
    owners
}

/// The reading part of [`read`], with the database open.
fn read_owners(layout: &Layout, source_dirs: &[String], also: &[&str], handle: &Alpm) -> Result<Owners> {
    let mut lookup = Lookup::new(handle);

    let mut owners = Owners::default();
    for kver in kernel_dirs(&layout.module_dir)? {
        let dir = layout.kernel_dir(&kver);
        let pkgbase_file = format!("usr/lib/modules/{kver}/pkgbase");
        let vmlinuz = format!("usr/lib/modules/{kver}/vmlinuz");
        let pkgbase = std::fs::read_to_string(dir.join("pkgbase")).ok().map(|s| s.trim().to_owned());
        let guess = pkgbase.as_deref().filter(|s| !s.is_empty());
        let Some(package) = lookup.owner(&pkgbase_file, guess).or_else(|| lookup.owner(&vmlinuz, guess)) else {
            log::debug!("{} is not owned by any package: not a kernel", dir.display());
            continue;
        };
        let pkgbase = guess
            .map(str::to_owned)
            .or_else(|| handle.localdb().pkg(package.as_str()).ok().and_then(|p| p.base().map(str::to_owned)))
            .unwrap_or_else(|| package.clone());
        let guess = format!("{pkgbase}-headers");
        let headers = headers(&dir, &kver, |path| lookup.owner(path, Some(&guess)));
        owners.kernels.insert(kver.clone(), Kernel { kver, package, pkgbase, headers });
    }

    let wanted: Vec<String> = source_dirs.iter().map(|d| format!("usr/src/{d}/dkms.conf")).collect();
    for (dir, path) in source_dirs.iter().zip(&wanted) {
        if let Some(pkg) = lookup.owner_among_dkms_packages(path) {
            owners.sources.insert(dir.clone(), pkg);
        }
    }
    let missing: Vec<(&String, &String)> =
        source_dirs.iter().zip(&wanted).filter(|(d, _)| !owners.sources.contains_key(*d)).collect();
    if !missing.is_empty() {
        let paths: BTreeSet<&str> = missing.iter().map(|(_, p)| p.as_str()).collect();
        let found = lookup.scan(&paths);
        for (dir, path) in missing {
            if let Some(pkg) = found.get(path.as_str()) {
                owners.sources.insert(dir.clone(), pkg.clone());
            }
        }
    }
    let named: BTreeSet<String> = owners
        .kernels
        .values()
        .flat_map(|k| [Some(&k.package), k.headers.as_ref()])
        .flatten()
        .chain(owners.sources.values())
        .cloned()
        .chain(also.iter().map(|name| (*name).to_owned()))
        .collect();
    for name in named {
        if let Ok(pkg) = handle.localdb().pkg(name.as_str()) {
            owners.versions.insert(name, pkg.version().to_string());
        }
    }
    let modules: BTreeSet<String> = owners.sources.values().cloned().collect();
    for name in modules {
        let locks = installed_locks(handle, &name);
        for lock in &locks {
            if let Ok(pkg) = handle.localdb().pkg(lock.companion.as_str()) {
                owners.versions.insert(lock.companion.clone(), pkg.version().to_string());
            }
        }
        if !locks.is_empty() {
            owners.locks.insert(name, locks);
        }
    }
    owners.boot = super::boot::read(layout, handle);
    Ok(owners)
}

/// The exact-version dependencies of the installed package `name`, each with the other installed
/// packages that depend on its companion at one exact version.
fn installed_locks(handle: &Alpm, name: &str) -> Vec<super::locks::Lock> {
    let Ok(pkg) = handle.localdb().pkg(name) else { return Vec::new() };
    let depends: Vec<String> = pkg.depends().iter().map(|d| d.to_string()).collect();
    let mut locks = super::locks::of(depends.iter().map(String::as_str));
    for lock in &mut locks {
        let Ok(companion) = handle.localdb().pkg(lock.companion.as_str()) else { continue };
        lock.dependents = companion
            .required_by()
            .iter()
            .filter(|other| *other != name)
            .filter(|other| {
                handle.localdb().pkg(*other).is_ok_and(|o| {
                    o.depends()
                        .iter()
                        .any(|d| super::locks::exact(&d.to_string()).is_some_and(|(c, _)| c == lock.companion))
                })
            })
            .map(str::to_owned)
            .collect();
    }
    locks
}

/// Where a kernel's headers come from, if it has any: the package owning `build/` (a directory,
/// or a symlink to a headers tree), or, for a `build` symlink no package owns, the directory it
/// leads to. The disk is checked first: a kernel without `build/include` costs no lookup.
/// `owner` looks a package path up in the local database.
fn headers(kernel_dir: &Path, kver: &str, mut owner: impl FnMut(&str) -> Option<String>) -> Option<String> {
    let build = kernel_dir.join("build");
    if !build.join("include").is_dir() {
        return None;
    }
    let path = format!("usr/lib/modules/{kver}/build");
    owner(&format!("{path}/")).or_else(|| owner(&path)).or_else(|| {
        std::fs::read_link(&build).ok()?;
        Some(std::fs::canonicalize(&build).ok()?.display().to_string())
    })
}

/// Owner lookups against the local database, guess first, one full scan at most.
struct Lookup<'h> {
    handle: &'h Alpm,
    scanned: Option<BTreeMap<String, String>>,
}

impl<'h> Lookup<'h> {
    fn new(handle: &'h Alpm) -> Self {
        Lookup { handle, scanned: None }
    }

    fn owns(&self, package: &str, path: &str) -> bool {
        self.handle.localdb().pkg(package).is_ok_and(|p| p.files().contains(path).is_some())
    }

    /// The owner of `path`, trying `guess` first, then every package (indexed once).
    fn owner(&mut self, path: &str, guess: Option<&str>) -> Option<String> {
        if let Some(g) = guess {
            if self.owns(g, path) {
                return Some(g.to_owned());
            }
        }
        self.full_index().get(path).cloned()
    }

    /// The owner of `path` among packages whose name mentions dkms (the packaging convention).
    fn owner_among_dkms_packages(&self, path: &str) -> Option<String> {
        self.handle
            .localdb()
            .pkgs()
            .iter()
            .filter(|p| p.name().contains("dkms"))
            .find(|p| p.files().contains(path).is_some())
            .map(|p| p.name().to_owned())
    }

    /// Owners of the given paths, by looking through every package's file list.
    fn scan(&self, paths: &BTreeSet<&str>) -> BTreeMap<String, String> {
        let mut found = BTreeMap::new();
        for pkg in self.handle.localdb().pkgs() {
            for path in paths {
                if !found.contains_key(*path) && pkg.files().contains(*path).is_some() {
                    found.insert((*path).to_owned(), pkg.name().to_owned());
                }
            }
            if found.len() == paths.len() {
                break;
            }
        }
        found
    }

    /// Every kernel-related path's owner: module dir files under `usr/lib/modules/*/`.
    fn full_index(&mut self) -> &BTreeMap<String, String> {
        self.scanned.get_or_insert_with(|| {
            let mut index = BTreeMap::new();
            for pkg in self.handle.localdb().pkgs() {
                for file in pkg.files().files() {
                    let Ok(name) = std::str::from_utf8(file.name()) else { continue };
                    if is_kernel_marker(name) {
                        index.insert(name.to_owned(), pkg.name().to_owned());
                    }
                }
            }
            index
        })
    }
}

/// `usr/lib/modules/K/{pkgbase,vmlinuz,build/,build}`: the paths that make a kernel or its
/// headers (`build` without the slash is a symlink to a headers tree).
fn is_kernel_marker(path: &str) -> bool {
    let Some(rest) = path.strip_prefix("usr/lib/modules/") else { return false };
    match rest.split_once('/') {
        Some((_, tail)) => matches!(tail, "pkgbase" | "vmlinuz" | "build/" | "build"),
        None => false,
    }
}

/// Directory names under the module dir that can be kernel versions (a missing dir means no
/// kernels). A symlinked kver is not a kernel package's directory: packages ship real directories.
fn kernel_dirs(module_dir: &Path) -> Result<Vec<String>> {
    let mut kvers = crate::dirs::subdirs(module_dir)?;
    kvers.retain(|name| {
        let valid = crate::targets::is_valid_name(name);
        if !valid {
            log::debug!("{}/{name:?} is not a kernel version", module_dir.display());
        }
        valid
    });
    Ok(kvers)
}

/// A directory as libalpm takes it: bytes, ending in `/`.
pub(crate) fn path_bytes(path: &Path) -> Vec<u8> {
    use std::os::unix::ffi::OsStrExt;
    let mut bytes = path.as_os_str().as_bytes().to_vec();
    if !bytes.ends_with(b"/") {
        bytes.push(b'/');
    }
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_are_looked_up_only_when_they_are_on_disk() {
        let dir = tempfile::tempdir().unwrap();
        let kdir = dir.path().join("usr/lib/modules/6.1-x");
        std::fs::create_dir_all(kdir.join("build")).unwrap();
        // No build/include: no lookup at all (it may cost a scan of every package's files).
        assert_eq!(headers(&kdir, "6.1-x", |p| panic!("looked up {p}")), None);
        // A headers directory: its owner.
        std::fs::create_dir(kdir.join("build/include")).unwrap();
        let owner = |p: &str| (p == "usr/lib/modules/6.1-x/build/").then(|| "linux-headers".to_owned());
        assert_eq!(headers(&kdir, "6.1-x", owner).as_deref(), Some("linux-headers"));
        // An unowned directory (left behind): no headers.
        assert_eq!(headers(&kdir, "6.1-x", |_| None), None);
        // A symlink to a headers tree: its owner (the entry has no trailing slash), else where it leads.
        let tree = dir.path().join("usr/src/linux-6.1-x");
        std::fs::create_dir_all(tree.join("include")).unwrap();
        std::fs::remove_dir_all(kdir.join("build")).unwrap();
        std::os::unix::fs::symlink(&tree, kdir.join("build")).unwrap();
        let owner = |p: &str| (p == "usr/lib/modules/6.1-x/build").then(|| "linux-custom".to_owned());
        assert_eq!(headers(&kdir, "6.1-x", owner).as_deref(), Some("linux-custom"));
        let unowned = headers(&kdir, "6.1-x", |_| None).unwrap();
        assert_eq!(unowned, std::fs::canonicalize(&tree).unwrap().display().to_string());
    }

    #[test]
    fn kernel_markers() {
        assert!(is_kernel_marker("usr/lib/modules/6.1-x/pkgbase"));
        assert!(is_kernel_marker("usr/lib/modules/6.1-x/build/"));
        assert!(is_kernel_marker("usr/lib/modules/6.1-x/build"));
        assert!(!is_kernel_marker("usr/lib/modules/6.1-x/build/include/"));
        assert!(!is_kernel_marker("usr/lib/modules/6.1-x/"));
        assert!(!is_kernel_marker("usr/src/x/dkms.conf"));
    }
}
