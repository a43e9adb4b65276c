//! The package files a running pacman transaction brings, as a hook can reach them: the guard
//! needs them to test-build (the incoming headers and module sources), and only for that. What
//! comes and what leaves is never decided from them: pacman's own hook targets say it.
//!
//! They are found from what pacman leaves visible:
//! - the frontend's command line (`/proc/PPID/cmdline`; hooks are children of the process running
//!   the transaction): `-U FILE…` names the incoming package files (paths of the host, mapped into
//!   the root pacman was given with `--root`, which is where the hook runs);
//! - for `-S` (and frontends other than pacman): the sync databases give each package's newest
//!   version and file name, and pacman has downloaded every package of the transaction into its
//!   cache before any PreTransaction hook runs. A file counts only when libalpm confirms it is that
//!   package.
//!
//! Whatever cannot be found cannot be test-built: the guard says so, and the install hook builds
//! after the transaction.
//!
//! The same reading names the transaction ([`Transaction::id`]: the frontend's process and start
//! time), so that what the guard built before it is used only by the hooks of the same transaction.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use alpm::SigLevel;

use super::package::Package;
use crate::domain::Layout;

/// What pacman operation the frontend runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    /// `-S`: packages from the sync databases.
    Sync,
    /// `-U`: package files.
    Upgrade,
    /// `-R`: removal only; nothing comes in.
    Remove,
    /// Not pacman, or nothing recognisable.
    Unknown,
}

/// The running transaction's frontend, as far as its command line says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frontend {
    pub operation: Operation,
    /// `--root`/`-r`: where the host's paths on the command line lead into the hook's root.
    pub root: Option<PathBuf>,
    /// `--cachedir` values (host paths).
    pub cachedirs: Vec<PathBuf>,
    /// The targets of `-U` (host paths or URLs), as given.
    pub files: Vec<String>,
    /// The frontend's working directory (host path), for relative `-U` targets.
    pub cwd: Option<PathBuf>,
}

impl Frontend {
    /// The frontend that started this process (its parent), read from `/proc`.
    pub fn of_parent() -> Frontend {
        let ppid = nix::unistd::getppid();
        let argv: Vec<String> = std::fs::read(format!("/proc/{ppid}/cmdline"))
            .map(|bytes| {
                bytes
                    .split(|&b| b == 0)
                    .filter(|a| !a.is_empty())
                    .map(|a| String::from_utf8_lossy(a).into_owned())
                    .collect()
            })
            .unwrap_or_default();
        let mut frontend = Frontend::parse(&argv);
        frontend.cwd = std::fs::read_link(format!("/proc/{ppid}/cwd")).ok();
        frontend
    }

    /// Reads a pacman command line (`argv[0]` first).
    pub fn parse(argv: &[String]) -> Frontend {
        let mut frontend =
            Frontend { operation: Operation::Unknown, root: None, cachedirs: Vec::new(), files: Vec::new(), cwd: None };
        let Some(program) = argv.first() else { return frontend };
        if Path::new(program).file_name().is_none_or(|n| n != "pacman") {
            return frontend;
        }
        // pacman's options that take a value (long, and the short ones among them).
        const VALUED: &[&str] = &[
            "--root",
            "--dbpath",
            "--cachedir",
            "--config",
            "--logfile",
            "--gpgdir",
            "--hookdir",
            "--arch",
            "--sysroot",
            "--color",
            "--overwrite",
            "--ignore",
            "--ignoregroup",
            "--assume-installed",
            "--print-format",
            "--dbonly-for",
        ];
        let mut args = argv[1..].iter();
        let mut only_targets = false;
        while let Some(arg) = args.next() {
            if only_targets || !arg.starts_with('-') || arg == "-" {
                frontend.files.push(arg.clone());
                continue;
            }
            if arg == "--" {
                only_targets = true;
                continue;
            }
            if let Some(long) = arg.strip_prefix("--") {
                let (name, inline) = match long.split_once('=') {
                    Some((n, v)) => (n, Some(v.to_owned())),
                    None => (long, None),
                };
                let value = |args: &mut std::slice::Iter<String>| inline.clone().or_else(|| args.next().cloned());
                match name {
                    "sync" => frontend.operation = Operation::Sync,
                    "upgrade" => frontend.operation = Operation::Upgrade,
                    "remove" => frontend.operation = Operation::Remove,
                    "root" => frontend.root = value(&mut args).map(PathBuf::from),
                    "cachedir" => frontend.cachedirs.extend(value(&mut args).map(PathBuf::from)),
                    _ if VALUED.contains(&arg.split('=').next().unwrap_or_default()) && inline.is_none() => {
                        args.next();
                    }
                    _ => {}
                }
                continue;
            }
            // Short options, possibly combined (`-Syu`, `-Rns`, `-Ur /mnt`); `r` and `b` take a value.
            let flags: Vec<char> = arg[1..].chars().collect();
            for (i, flag) in flags.iter().enumerate() {
                match flag {
                    'S' => frontend.operation = Operation::Sync,
                    'U' => frontend.operation = Operation::Upgrade,
                    'R' => frontend.operation = Operation::Remove,
                    'D' | 'Q' | 'F' | 'T' | 'V' => frontend.operation = Operation::Unknown,
                    'r' | 'b' => {
                        let rest: String = flags[i + 1..].iter().collect();
                        let value = if rest.is_empty() { args.next().cloned() } else { Some(rest) };
                        if *flag == 'r' {
                            frontend.root = value.map(PathBuf::from);
                        }
                        break;
                    }
                    _ => {}
                }
            }
        }
        if frontend.operation != Operation::Upgrade {
            frontend.files.clear();
        }
        frontend
    }

    /// A host path from the command line as seen from the hook (inside `--root`); `None` when
    /// it is outside the root and so out of the hook's reach.
    fn in_root(&self, layout: &Layout, path: &Path) -> Option<PathBuf> {
        let absolute = match (path.is_absolute(), &self.cwd) {
            (true, _) => path.to_path_buf(),
            (false, Some(cwd)) => cwd.join(path),
            (false, None) => return None,
        };
        let inside = match &self.root {
            Some(root) if root != Path::new("/") => absolute.strip_prefix(root).ok()?.to_path_buf(),
            _ => absolute.strip_prefix("/").ok()?.to_path_buf(),
        };
        Some(layout.root.join(inside))
    }
}

/// The running transaction, as far as a hook can see it. What it reads of the incoming package
/// files is kept, so asking again reads nothing again.
#[derive(Debug)]
pub struct Transaction {
    pub frontend: Frontend,
    /// The frontend's process id and start time: the same for every hook of one transaction.
    pub id: Option<String>,
    /// (package name, file) of every incoming package file; why there are none, when none can be
    /// listed.
    candidates: Result<Vec<(String, PathBuf)>, String>,
    /// Package files read whole so far (`None`: not a package libalpm can read).
    read: RefCell<BTreeMap<PathBuf, Option<Package>>>,
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
            id: Transaction::current_id(),
            candidates: Err(String::new()),
            read: RefCell::new(BTreeMap::new()),
        };
        transaction.candidates = candidates(&transaction, layout);
        transaction
    }

    /// The name of the running transaction, without reading anything else of it: the frontend's
    /// process id and start time.
    pub fn current_id() -> Option<String> {
        transaction_id(nix::unistd::getppid().as_raw())
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

    /// `file` read whole (once).
    fn read(&self, file: &Path) -> Option<Package> {
        self.read
            .borrow_mut()
            .entry(file.to_path_buf())
            .or_insert_with(|| match Package::read(file) {
                Ok(package) => Some(package),
                Err(e) => {
                    log::debug!("{e}");
                    None
                }
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

/// The incoming package files, by package name: `-U`'s files as the hook sees them (named by
/// their metadata), or the sync databases' packages that differ from the installed ones (or are
/// not installed) and sit in pacman's cache (named by the database; a file is confirmed to be
/// that package when it is used). `Err` says why there are none to look at.
fn candidates(transaction: &Transaction, layout: &Layout) -> Result<Vec<(String, PathBuf)>, String> {
    let frontend = &transaction.frontend;
    match frontend.operation {
        Operation::Remove => Err("the transaction only removes packages".to_owned()),
        Operation::Upgrade => {
            let mut files = Vec::new();
            for file in &frontend.files {
                match frontend.in_root(layout, Path::new(file)) {
                    Some(path) if path.is_file() => files.extend(name_of(&path).map(|name| (name, path))),
                    _ => log::info!("package file {file} is outside the root: dkms-hook cannot read it"),
                }
            }
            Ok(files)
        }
        Operation::Sync | Operation::Unknown => from_sync_databases(layout, frontend),
    }
}

/// The sync databases' packages whose version differs from the installed one (or that are not
/// installed) and whose file is in pacman's cache, as (name, file).
fn from_sync_databases(layout: &Layout, frontend: &Frontend) -> Result<Vec<(String, PathBuf)>, String> {
    let cachedirs = cache_dirs(layout, frontend);
    let handle = super::pacman::open(layout).map_err(|e| format!("{e:#}"))?;
    for db in crate::dirs::names(&layout.dbpath.join("sync")).unwrap_or_default() {
        if let Some(name) = db.strip_suffix(".db") {
            if let Err(e) = handle.register_syncdb(name, SigLevel::NONE) {
                log::debug!("cannot read the sync database {db}: {e}");
            }
        }
    }
    let mut found = Vec::new();
    for db in handle.syncdbs() {
        for pkg in db.pkgs() {
            let installed = handle.localdb().pkg(pkg.name()).ok().map(|p| p.version().to_string());
            if installed.as_deref() == Some(pkg.version().as_str()) {
                continue;
            }
            let Some(filename) = pkg.filename() else { continue };
            if let Some(file) = cachedirs.iter().map(|d| d.join(filename)).find(|p| p.is_file()) {
                found.push((pkg.name().to_owned(), file));
            }
        }
    }
    Ok(found)
}

/// The transaction id of process `pid`: `PID.STARTTIME` (field 22 of `/proc/PID/stat`), unique
/// while the machine runs.
fn transaction_id(pid: i32) -> Option<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // pid (comm) state ppid …: comm may hold spaces and parentheses, so split after the last ')'.
    let (_, rest) = stat.rsplit_once(')')?;
    let start = rest.split_whitespace().nth(19)?;
    Some(format!("{pid}.{start}"))
}

/// pacman's package caches as the hook sees them: `--cachedir` of the command line, else
/// `CacheDir` of `ROOT/etc/pacman.conf`, else the default.
pub fn cache_dirs(layout: &Layout, frontend: &Frontend) -> Vec<PathBuf> {
    let from_command_line: Vec<PathBuf> =
        frontend.cachedirs.iter().filter_map(|d| frontend.in_root(layout, d)).collect();
    if !from_command_line.is_empty() {
        return from_command_line;
    }
    let conf = std::fs::read_to_string(layout.root.join("etc/pacman.conf")).unwrap_or_default();
    let mut dirs: Vec<PathBuf> = conf
        .lines()
        .filter_map(|line| {
            let (key, value) = line.split_once('=')?;
            (key.trim() == "CacheDir").then(|| layout.on_root(Path::new(value.trim())))
        })
        .collect();
    if dirs.is_empty() {
        dirs.push(layout.root.join("var/cache/pacman/pkg"));
    }
    dirs
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(line: &str) -> Frontend {
        Frontend::parse(&line.split(' ').map(str::to_owned).collect::<Vec<_>>())
    }

    #[test]
    fn reads_pacman_command_lines() {
        assert_eq!(parse("pacman -Syu").operation, Operation::Sync);
        assert_eq!(parse("/usr/bin/pacman --sync --refresh foo-dkms").operation, Operation::Sync);
        assert_eq!(parse("pacman -Rns foo-dkms").operation, Operation::Remove);
        assert_eq!(parse("pacman --remove foo-dkms").operation, Operation::Remove);
        assert_eq!(parse("paru -Syu").operation, Operation::Unknown);
        assert_eq!(parse("pacman -Qi foo").operation, Operation::Unknown);
        let f = parse(
            "pacman --root /mnt/r --dbpath /mnt/r/var/lib/pacman --cachedir /c -U /p/a.pkg.tar.zst b.pkg.tar.zst",
        );
        assert_eq!(f.operation, Operation::Upgrade);
        assert_eq!(f.root.as_deref(), Some(Path::new("/mnt/r")));
        assert_eq!(f.cachedirs, [PathBuf::from("/c")]);
        assert_eq!(f.files, ["/p/a.pkg.tar.zst", "b.pkg.tar.zst"]);
        let f = parse("pacman -Ur /mnt --noconfirm --overwrite * x.pkg");
        assert_eq!((f.root.as_deref(), f.files.as_slice()), (Some(Path::new("/mnt")), &["x.pkg".to_owned()][..]));
        let f = parse("pacman -U --root=/mnt -- -odd.pkg");
        assert_eq!((f.root.as_deref(), f.files.as_slice()), (Some(Path::new("/mnt")), &["-odd.pkg".to_owned()][..]));
        // Targets of other operations are package names, not files.
        assert!(parse("pacman -S foo").files.is_empty());
    }

    #[test]
    fn a_transaction_is_named_by_its_frontend_process() {
        let me = std::process::id() as i32;
        let id = transaction_id(me).unwrap();
        assert!(id.starts_with(&format!("{me}.")), "{id}");
        assert_eq!(transaction_id(me), Some(id));
        assert_eq!(transaction_id(i32::MAX), None);
    }

    #[test]
    fn command_line_paths_lead_into_the_root() {
        let layout = Layout::new(Path::new("/"), None);
        let mut f = parse("pacman --root /tmp/r -U x");
        f.cwd = Some(PathBuf::from("/tmp/r/var/cache"));
        assert_eq!(f.in_root(&layout, Path::new("/tmp/r/var/cache/a.pkg")), Some(PathBuf::from("/var/cache/a.pkg")));
        assert_eq!(f.in_root(&layout, Path::new("b.pkg")), Some(PathBuf::from("/var/cache/b.pkg")));
        assert_eq!(f.in_root(&layout, Path::new("/elsewhere/c.pkg")), None);
        let f = parse("pacman -U /var/cache/a.pkg");
        let relocated = Layout::new(Path::new("/srv/r"), None);
        assert_eq!(f.in_root(&relocated, Path::new("/var/cache/a.pkg")), Some(PathBuf::from("/srv/r/var/cache/a.pkg")));
    }
}
