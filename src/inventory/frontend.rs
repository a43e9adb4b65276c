//! The frontend that runs the transaction, as its command line says: pacman 7.1's own options
//! (`/proc/PPID/cmdline`; hooks are children of the process running the transaction), and where
//! the paths it names lead from inside the root the hook runs in (pacman runs hooks chrooted into
//! `--root`, below `--sysroot`). The places it names — its configuration, its database, its
//! package caches, the files of `-U` — are led into the root once ([`Frontend::places`]); see
//! `incoming` for what is found with them.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use super::pacman_conf::PacmanConf;
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

/// The running transaction's frontend, as far as its command line says. Paths are as pacman
/// has them (host paths) unless said otherwise.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frontend {
    pub operation: Operation,
    /// `--root`/`-r`: where the host's paths on the command line lead into the hook's root.
    pub root: Option<PathBuf>,
    /// `--sysroot`: prefixed to the root, the database, the configuration and every cache.
    pub sysroot: Option<PathBuf>,
    /// `--dbpath`/`-b`; `None`: below the root.
    pub dbpath: Option<PathBuf>,
    /// `--config`; `None`: `/etc/pacman.conf`.
    pub config: Option<PathBuf>,
    /// `--cachedir` values, used before the configuration's `CacheDir`s.
    pub cachedirs: Vec<PathBuf>,
    /// The targets of `-U` (paths or URLs), as given.
    pub files: Vec<String>,
    /// The frontend's working directory as this process sees it (not a host path), when it can
    /// reach it: relative paths of the command line are relative to it.
    pub cwd: Option<PathBuf>,
    /// `--ignore` values, as given (comma-separated package names).
    pub ignored: Vec<String>,
}

/// pacman 7.1's long options (`src/pacman/pacman.c`, `parseargs`) and whether each takes a value;
/// like `getopt_long`, an unambiguous prefix stands for the whole name.
const LONG_OPTIONS: &[(&str, bool)] = &[
    ("database", false),
    ("files", false),
    ("query", false),
    ("remove", false),
    ("sync", false),
    ("deptest", false),
    ("upgrade", false),
    ("version", false),
    ("help", false),
    ("dbpath", true),
    ("cascade", false),
    ("changelog", false),
    ("clean", false),
    ("nodeps", false),
    ("deps", false),
    ("explicit", false),
    ("groups", false),
    ("info", false),
    ("check", false),
    ("list", false),
    ("foreign", false),
    ("native", false),
    ("nosave", false),
    ("owns", false),
    ("file", false),
    ("print", false),
    ("quiet", false),
    ("root", true),
    ("sysroot", true),
    ("recursive", false),
    ("search", false),
    ("regex", false),
    ("machinereadable", false),
    ("unrequired", false),
    ("upgrades", false),
    ("sysupgrade", false),
    ("unneeded", false),
    ("verbose", false),
    ("downloadonly", false),
    ("refresh", false),
    ("noconfirm", false),
    ("confirm", false),
    ("config", true),
    ("ignore", true),
    ("assume-installed", true),
    // Optional argument: only `--debug=N` has one.
    ("debug", false),
    ("force", false),
    ("overwrite", true),
    ("noprogressbar", false),
    ("noscriptlet", false),
    ("ask", true),
    ("cachedir", true),
    ("hookdir", true),
    ("asdeps", false),
    ("logfile", true),
    ("ignoregroup", true),
    ("needed", false),
    ("asexplicit", false),
    ("arch", true),
    ("print-format", true),
    ("gpgdir", true),
    ("dbonly", false),
    ("color", true),
    ("disable-download-timeout", false),
    ("disable-sandbox", false),
];

/// The long option `given` stands for: itself, or the only one it is a prefix of.
fn long_option(given: &str) -> Option<(&'static str, bool)> {
    if let Some(exact) = LONG_OPTIONS.iter().find(|(name, _)| *name == given) {
        return Some(*exact);
    }
    let mut matching = LONG_OPTIONS.iter().filter(|(name, _)| name.starts_with(given));
    match (matching.next(), matching.next()) {
        (Some(only), None) => Some(*only),
        _ => None,
    }
}

impl Frontend {
    /// The frontend that started this process (its parent), read from `/proc`.
    pub fn of_parent() -> Frontend {
        let ppid = super::transaction_id::frontend_pid();
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
        frontend.cwd = reachable_cwd(&format!("/proc/{ppid}/cwd"));
        frontend
    }

    /// Reads a pacman command line (`argv[0]` first).
    pub fn parse(argv: &[String]) -> Frontend {
        let mut frontend = Frontend {
            operation: Operation::Unknown,
            root: None,
            sysroot: None,
            dbpath: None,
            config: None,
            cachedirs: Vec::new(),
            files: Vec::new(),
            cwd: None,
            ignored: Vec::new(),
        };
        let Some(program) = argv.first() else { return frontend };
        if Path::new(program).file_name().is_none_or(|n| n != "pacman") {
            return frontend;
        }
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
                let (given, inline) = match long.split_once('=') {
                    Some((n, v)) => (n, Some(v.to_owned())),
                    None => (long, None),
                };
                let Some((name, valued)) = long_option(given) else { continue };
                let value = match (valued, inline) {
                    (true, None) => args.next().cloned(),
                    (_, inline) => inline,
                };
                let path = || value.as_deref().map(PathBuf::from);
                match name {
                    "sync" => frontend.operation = Operation::Sync,
                    "upgrade" => frontend.operation = Operation::Upgrade,
                    "remove" => frontend.operation = Operation::Remove,
                    "database" | "query" | "files" | "deptest" | "version" => frontend.operation = Operation::Unknown,
                    "root" => frontend.root = path(),
                    "sysroot" => frontend.sysroot = path(),
                    "dbpath" => frontend.dbpath = path(),
                    "config" => frontend.config = path(),
                    "cachedir" => frontend.cachedirs.extend(path()),
                    "ignore" => frontend.ignored.extend(value.clone()),
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
                        match flag {
                            'r' => frontend.root = value.map(PathBuf::from),
                            _ => frontend.dbpath = value.map(PathBuf::from),
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

    /// A path as pacman's options give it, as this process sees it: `--sysroot` prefixed (pacman
    /// does so to the root, the database, the configuration, its includes and every cache), then
    /// led into the root ([`Frontend::in_root`]).
    fn option_path(&self, layout: &Layout, path: &Path) -> Option<PathBuf> {
        match (&self.sysroot, path.is_absolute()) {
            (Some(sysroot), true) => self.in_root(layout, &sysroot.join(path.strip_prefix("/").ok()?)),
            _ => self.in_root(layout, path),
        }
    }

    /// The host directory pacman's hooks are chrooted into: the sysroot and the root.
    fn host_root(&self) -> Option<PathBuf> {
        let root = self.root.clone().unwrap_or_else(|| PathBuf::from("/"));
        if !root.is_absolute() {
            return None;
        }
        Some(match &self.sysroot {
            Some(sysroot) => sysroot.join(root.strip_prefix("/").ok()?),
            None => root,
        })
    }

    /// A path from the command line as this process sees it: below the root it was chrooted into,
    /// or relative to the frontend's working directory; `None` when it is out of reach (outside
    /// the root, or relative with the working directory out of reach).
    fn in_root(&self, layout: &Layout, path: &Path) -> Option<PathBuf> {
        if !path.is_absolute() {
            return self.cwd.as_ref().map(|cwd| cwd.join(path));
        }
        let inside = path.strip_prefix(self.host_root()?).ok()?;
        Some(layout.root.join(inside))
    }

    /// The places the transaction uses, as this process sees them below `layout`'s root: read
    /// once, so that what is found with them takes plain paths.
    pub fn places(&self, layout: &Layout) -> Places {
        let conf = self.pacman_conf(layout);
        let caches = self.cache_dirs(layout, conf.as_ref());
        let dbpath = match &self.dbpath {
            Some(dbpath) => self
                .option_path(layout, dbpath)
                .ok_or_else(|| format!("pacman's database {} is outside the root", dbpath.display())),
            None => Ok(layout.dbpath.clone()),
        };
        let files = self.files.iter().map(|t| (t.clone(), self.upgrade_target(layout, &caches, t))).collect();
        let mut ignored: BTreeSet<String> = conf.iter().flat_map(|c| c.conf.ignore_pkgs.iter().cloned()).collect();
        ignored.extend(self.ignored.iter().flat_map(|v| v.split(',')).filter(|n| !n.is_empty()).map(str::to_owned));
        Places { repos: conf.map(|c| c.conf.repos), dbpath, caches, files, ignored }
    }

    /// pacman's configuration as this process can read it: `--config` (default
    /// `/etc/pacman.conf`), and when that is out of reach (`pacman --root R` reads the host's),
    /// the root's own as the best guess. `None` when neither can be read.
    fn pacman_conf(&self, layout: &Layout) -> Option<Configuration> {
        let given = self.config.clone().unwrap_or_else(|| PathBuf::from("/etc/pacman.conf"));
        let from_frontend = |pattern: &str| glob_below(layout, &self.option_path(layout, Path::new(pattern))?);
        let from_root = |pattern: &str| glob_below(layout, &layout.on_root(Path::new(pattern)));
        let conf = self.option_path(layout, &given).and_then(|p| PacmanConf::load(&p, &from_frontend));
        match conf {
            Some(conf) => Some(Configuration { conf, roots_own: false }),
            None => PacmanConf::load(&layout.on_root(Path::new("/etc/pacman.conf")), &from_root)
                .map(|conf| Configuration { conf, roots_own: true }),
        }
    }

    /// pacman's package caches as this process sees them: `--cachedir` of the command line and
    /// then every `CacheDir` of the configuration (pacman 7.1 adds both to one list, the command
    /// line's first), else `/var/cache/pacman/pkg`; then where libalpm downloads when none of them
    /// is writable (`_alpm_filecache_setup`: `/tmp`, or `$TMPDIR`). Those out of reach are left
    /// out.
    fn cache_dirs(&self, layout: &Layout, conf: Option<&Configuration>) -> Vec<PathBuf> {
        let mut dirs: Vec<PathBuf> = self.cachedirs.iter().filter_map(|d| self.option_path(layout, d)).collect();
        let configured = conf.iter().flat_map(|c| c.conf.cache_dirs.iter().map(move |d| (Path::new(d), c.roots_own)));
        dirs.extend(configured.filter_map(|(dir, roots_own)| match roots_own {
            true => Some(layout.on_root(dir)),
            false => self.option_path(layout, dir),
        }));
        if self.cachedirs.is_empty() && conf.is_none_or(|c| c.conf.cache_dirs.is_empty()) {
            dirs.extend(self.option_path(layout, Path::new("/var/cache/pacman/pkg")));
        }
        // The fallback is not below the sysroot. Whether libalpm used it cannot always be told
        // from here; a file found there still has to be the package the database names. libalpm
        // 16 tests `(tmpdir = getenv("TMPDIR")) && stat(tmpdir, &buf) && S_ISDIR(buf.st_mode)`,
        // which takes $TMPDIR only when stat fails: /tmp in practice, so both are looked at.
        let temporary = std::env::var_os("TMPDIR").into_iter().map(PathBuf::from).chain([PathBuf::from("/tmp")]);
        dirs.extend(temporary.filter_map(|d| self.in_root(layout, &d)));
        let mut seen = BTreeSet::new();
        dirs.retain(|d| seen.insert(d.clone()));
        dirs
    }

    /// The file a `-U` target is, as this process sees it: a path (relative to pacman's working
    /// directory, or absolute), or for a URL the file pacman downloaded into its cache (named
    /// after the URL's last part, as libalpm's `alpm_fetch_pkgurl` names it when that part has
    /// `.pkg`).
    fn upgrade_target(&self, layout: &Layout, caches: &[PathBuf], target: &str) -> Option<PathBuf> {
        if target.contains("://") {
            let name = target.rsplit('/').next().filter(|n| n.contains(".pkg"))?;
            return caches.iter().map(|dir| dir.join(name)).find(|f| f.is_file());
        }
        self.in_root(layout, Path::new(target)).filter(|p| p.is_file())
    }
}

/// The places a transaction uses, as this process sees them (see [`Frontend::places`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Places {
    /// The sync repositories of pacman's configuration, in its order; `None` when no
    /// configuration could be read.
    pub repos: Option<Vec<String>>,
    /// The directory of the local and sync databases; why it is out of reach, when it is.
    pub dbpath: Result<PathBuf, String>,
    /// The package caches, in pacman's order of search.
    pub caches: Vec<PathBuf>,
    /// Each target of `-U`, as given, and the file it is here (`None`: out of reach).
    pub files: Vec<(String, Option<PathBuf>)>,
    /// The packages pacman leaves alone: `IgnorePkg` of its configuration (several per line,
    /// several lines, in `[options]`, also from `Include`d files), and the command line's
    /// `--ignore` values (comma-separated).
    pub ignored: BTreeSet<String>,
}

/// pacman's configuration as this process can read it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Configuration {
    conf: PacmanConf,
    /// Read from the root's own `/etc/pacman.conf`, not the frontend's: its paths are the root's.
    roots_own: bool,
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

/// The directory the magic link `link` (`/proc/PID/cwd`) leads to, as a path this process can
/// use: the link's text when it names that same directory here (from inside a chroot, the kernel
/// gives a directory below it relative to the chroot, and one outside it as a host path).
pub(super) fn reachable_cwd(link: &str) -> Option<PathBuf> {
    use std::os::unix::fs::MetadataExt;
    let text = std::fs::read_link(link).ok()?;
    let (there, here) = (std::fs::metadata(link).ok()?, std::fs::metadata(&text).ok()?);
    (there.dev() == here.dev() && there.ino() == here.ino()).then_some(text)
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
        let f = parse("pacman -Syu --ignore linux,linux-headers --ignore=gcc");
        assert_eq!(f.ignored, ["linux,linux-headers", "gcc"]);
        // Targets of other operations are package names, not files.
        assert!(parse("pacman -S foo").files.is_empty());
    }

    #[test]
    fn command_line_paths_lead_into_the_root() {
        let layout = Layout::new(Path::new("/"), None);
        let mut f = parse("pacman --root /tmp/r -U x");
        // Seen from inside the chroot, as the kernel gives it there.
        f.cwd = Some(PathBuf::from("/var/cache"));
        assert_eq!(f.in_root(&layout, Path::new("/tmp/r/var/cache/a.pkg")), Some(PathBuf::from("/var/cache/a.pkg")));
        assert_eq!(f.in_root(&layout, Path::new("b.pkg")), Some(PathBuf::from("/var/cache/b.pkg")));
        assert_eq!(f.in_root(&layout, Path::new("/elsewhere/c.pkg")), None);
        f.cwd = None;
        assert_eq!(f.in_root(&layout, Path::new("b.pkg")), None);
        let f = parse("pacman -U /var/cache/a.pkg");
        let relocated = Layout::new(Path::new("/srv/r"), None);
        assert_eq!(f.in_root(&relocated, Path::new("/var/cache/a.pkg")), Some(PathBuf::from("/srv/r/var/cache/a.pkg")));
        // A relative root cannot be placed: nothing absolute leads into it.
        let f = parse("pacman -r mnt -U /mnt/a.pkg");
        assert_eq!(f.in_root(&layout, Path::new("/mnt/a.pkg")), None);
    }

    #[test]
    fn reads_every_option_that_moves_a_path() {
        let f =
            parse("pacman --sysroot /s --config=/c.conf -b /db --cache /x --cachedir=/y --debug -Syu --ignore linux");
        assert_eq!(f.operation, Operation::Sync);
        assert_eq!(f.sysroot.as_deref(), Some(Path::new("/s")));
        assert_eq!(f.config.as_deref(), Some(Path::new("/c.conf")));
        assert_eq!(f.dbpath.as_deref(), Some(Path::new("/db")));
        assert_eq!(f.cachedirs, [PathBuf::from("/x"), PathBuf::from("/y")]);
        let f = parse("pacman --dbpath=/d -Ub/e --upgr ./a.pkg --asd file:///srv/b.pkg.tar.zst");
        assert_eq!(f.dbpath.as_deref(), Some(Path::new("/e")));
        assert_eq!(f.operation, Operation::Upgrade);
        assert_eq!(f.files, ["./a.pkg", "file:///srv/b.pkg.tar.zst"]);
        // Ambiguous abbreviations are pacman's usage errors: they change nothing here.
        assert_eq!(parse("pacman --db /d -S x").dbpath, None);
        assert_eq!(parse("pacman --conf /c -S x").config, None);
    }

    #[test]
    fn the_sysroot_holds_the_root_and_every_option_path() {
        let layout = Layout::new(Path::new("/"), None);
        let f = parse("pacman --sysroot /s --root /r -U /s/r/a.pkg /b.pkg");
        assert_eq!(f.host_root(), Some(PathBuf::from("/s/r")));
        assert_eq!(
            f.option_path(&layout, Path::new("/r/var/cache/pacman/pkg")),
            Some(PathBuf::from("/var/cache/pacman/pkg"))
        );
        assert_eq!(f.option_path(&layout, Path::new("/var/cache")), None);
        // `-U` files are not below the sysroot.
        assert_eq!(f.in_root(&layout, Path::new("/s/r/a.pkg")), Some(PathBuf::from("/a.pkg")));
        let f = parse("pacman --sysroot /s -S x");
        assert_eq!(
            f.option_path(&layout, Path::new("/var/cache/pacman/pkg")),
            Some(PathBuf::from("/var/cache/pacman/pkg"))
        );
    }

    #[test]
    fn caches_in_pacmans_order() {
        let layout = Layout::new(Path::new("/"), None);
        let conf =
            PacmanConf { cache_dirs: vec!["/r/a".into(), "/r/b".into(), "/elsewhere".into()], ..PacmanConf::default() };
        let conf = Configuration { conf, roots_own: false };
        let f = parse("pacman --root /r --cachedir /r/cmd -S x");
        let dirs = f.cache_dirs(&layout, Some(&conf));
        assert_eq!(dirs[..3], [PathBuf::from("/cmd"), PathBuf::from("/a"), PathBuf::from("/b")]);
        // Only a temporary directory inside the root can follow.
        assert!(dirs[3..].iter().all(|d| d.starts_with("/")), "{dirs:?}");
        let f = parse("pacman -S x");
        let dirs = f.cache_dirs(&layout, None);
        assert_eq!(dirs[0], PathBuf::from("/var/cache/pacman/pkg"));
        assert_eq!(dirs.last(), Some(&PathBuf::from("/tmp")));
        let relocated = Layout::new(Path::new("/srv/r"), None);
        let dirs = parse("paru -Syu").cache_dirs(&relocated, Some(&conf));
        assert_eq!(dirs[..2], [PathBuf::from("/srv/r/r/a"), PathBuf::from("/srv/r/r/b")]);
        // The root's own configuration, read for want of the frontend's: the root's paths.
        let roots_own = Configuration { roots_own: true, ..conf };
        let dirs = parse("pacman --root /r -S x").cache_dirs(&layout, Some(&roots_own));
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
        let target = |t: &str| f.upgrade_target(&layout, &caches, t);
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
    fn ignored_packages_come_from_pacman_conf_and_the_command_line() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::new(dir.path(), None);
        std::fs::create_dir_all(dir.path().join("etc")).unwrap();
        std::fs::write(
            dir.path().join("etc/pacman.conf"),
            "[options]\nIgnorePkg = gcc gcc-libs\n#IgnorePkg = glibc\nInclude = /etc/pacman.d/ignore\n[core]\nIgnorePkg = zlib\n",
        )
        .unwrap();
        std::fs::create_dir_all(dir.path().join("etc/pacman.d")).unwrap();
        std::fs::write(dir.path().join("etc/pacman.d/ignore"), "IgnorePkg=binutils\n").unwrap();
        let places = parse("pacman -Syu --ignore linux,linux-headers").places(&layout);
        let expected: BTreeSet<String> =
            ["binutils", "gcc", "gcc-libs", "linux", "linux-headers"].iter().map(|s| s.to_string()).collect();
        assert_eq!(places.ignored, expected);
        assert_eq!(places.repos, Some(vec!["core".to_owned()]));
    }

    #[test]
    fn the_working_directory_is_used_only_where_it_leads_to_the_same_place() {
        let here = std::env::current_dir().unwrap();
        assert_eq!(reachable_cwd("/proc/self/cwd"), Some(here));
        assert_eq!(reachable_cwd("/proc/0/cwd"), None);
    }
}
