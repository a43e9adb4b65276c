//! Package files (`*.pkg.tar.*`) as pacman sees them before they are installed: the metadata and
//! file list through libalpm, and chosen members extracted with `bsdtar`.
//!
//! [`Package::read`] loads a file the way `pacman -U` does (`alpm_pkg_load`, signatures not
//! checked) with a handle on an empty temporary database, and keeps what it found as owned data:
//! the handle is not `Send` and never leaves this module. Extraction runs `bsdtar` through the
//! process runner into a [`Scratch`] directory: a temporary directory that `nobody` can read
//! (0755), so that the unprivileged dkms.conf reader can read what was extracted, and that is
//! removed with everything in it when dropped. `bsdtar` refuses members that would land outside
//! the directory (`..`, absolute paths, writing through symlinks), so a hostile package cannot
//! write elsewhere.

use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result};

use crate::interrupt::Stop;
use crate::process::{self, Output};

/// How long one `bsdtar` may take: extracting is quick, a stuck decompressor is not.
const EXTRACT_TIMEOUT: Duration = Duration::from_secs(300);

/// A package file, read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Package {
    /// The file.
    pub path: PathBuf,
    /// `pkgname`.
    pub name: String,
    /// The full version, `[epoch:]pkgver-pkgrel`.
    pub version: String,
    /// `depends`, in the package's order.
    pub depends: Vec<Dependency>,
    /// Every path in the package as pacman lists them: relative, directories ending in `/`,
    /// without the metadata files (`.PKGINFO`, `.MTREE`, `.INSTALL`, …).
    pub files: Vec<String>,
    /// Whether the package carries an install scriptlet (`.INSTALL`).
    pub has_install: bool,
}

/// One entry of `depends`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dependency {
    /// The package (or provision) name.
    pub name: String,
    /// The entry as written, with any version constraint (`linux-headers>=6.1`).
    pub text: String,
}

/// Why a path could not be read as a package.
#[derive(Debug, thiserror::Error)]
pub enum PackageError {
    #[error("{}: no such file: check the path", .0.display())]
    Missing(PathBuf),
    #[error("{}: not a package file ({why}): pass a *.pkg.tar.* file that makepkg built", path.display())]
    NotAPackage { path: PathBuf, why: String },
    #[error("cannot read {}: {why}", path.display())]
    Unreadable { path: PathBuf, why: String },
}

impl Package {
    /// Loads `path` with libalpm (the whole archive is read, so the file list is complete even
    /// without a `.MTREE`).
    pub fn read(path: &Path) -> Result<Package, PackageError> {
        load(path, true, |loaded| {
            let files = loaded.files().files().iter().map(|f| String::from_utf8_lossy(f.name()).into_owned()).collect();
            Package {
                path: path.to_path_buf(),
                name: loaded.name().to_owned(),
                version: loaded.version().as_str().to_owned(),
                depends: loaded
                    .depends()
                    .iter()
                    .map(|d| Dependency { name: d.name().to_owned(), text: d.to_string() })
                    .collect(),
                files,
                has_install: loaded.has_scriptlet(),
            }
        })
    }

    /// The name of the package in `path`, read from its metadata alone (quick, whatever the
    /// package's size).
    pub fn name_of(path: &Path) -> Result<String, PackageError> {
        load(path, false, |loaded| loaded.name().to_owned())
    }

    /// The name and version (`pkgver-pkgrel`) of the package in `path`, from its metadata only.
    pub fn name_and_version_of(path: &Path) -> Result<(String, String), PackageError> {
        load(path, false, |loaded| (loaded.name().to_owned(), loaded.version().to_string()))
    }

    /// `pkgver`: the version without epoch and pkgrel.
    pub fn pkgver(&self) -> &str {
        let version = self.version.split_once(':').map_or(self.version.as_str(), |(_, v)| v);
        version.rsplit_once('-').map_or(version, |(v, _)| v)
    }

    /// Whether `name` is in `depends` (by name, whatever the version constraint).
    pub fn depends_on(&self, name: &str) -> bool {
        self.depends.iter().any(|d| d.name == name)
    }
}

/// Loads `path` with libalpm (`full`: the whole archive, for the file list; otherwise the metadata
/// only) and hands the package to `f`.
fn load<T>(path: &Path, full: bool, f: impl FnOnce(&alpm::LoadedPackage) -> T) -> Result<T, PackageError> {
    let meta = std::fs::metadata(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => PackageError::Missing(path.to_path_buf()),
        _ => PackageError::Unreadable { path: path.to_path_buf(), why: e.to_string() },
    })?;
    if !meta.is_file() {
        return Err(PackageError::NotAPackage { path: path.to_path_buf(), why: "not a regular file".into() });
    }
    let unreadable = |why: String| PackageError::Unreadable { path: path.to_path_buf(), why };
    // libalpm wants a database directory even to load a file; an empty one will do.
    let db = Scratch::new("dkms-hook-alpm.").map_err(|e| unreadable(format!("{e:#}")))?;
    let dbpath = super::pacman::path_bytes(db.path());
    let handle = alpm::Alpm::new(b"/".to_vec(), dbpath).map_err(|e| unreadable(e.to_string()))?;
    let loaded = handle
        .pkg_load(path.as_os_str().as_bytes(), full, alpm::SigLevel::NONE)
        .map_err(|e| PackageError::NotAPackage { path: path.to_path_buf(), why: e.to_string() })?;
    Ok(f(&loaded))
}

/// Whether a file name is a package's (`*.pkg.tar` with any compression), not its signature.
pub fn is_package_file_name(name: &str) -> bool {
    name.contains(".pkg.tar") && !name.ends_with(".sig")
}

/// The package files in `dir`, sorted by name.
pub fn package_files(dir: &Path) -> Result<Vec<PathBuf>> {
    Ok(crate::dirs::names(dir)?
        .into_iter()
        .filter(|name| is_package_file_name(name))
        .map(|name| dir.join(name))
        .filter(|path| path.is_file())
        .collect())
}

/// A temporary directory that `nobody` can read (0755), removed with its contents when dropped.
#[derive(Debug)]
pub struct Scratch(tempfile::TempDir);

impl Scratch {
    /// A new directory in the system's temporary directory (`TMPDIR`), named `PREFIX…`.
    pub fn new(prefix: &str) -> Result<Scratch> {
        Scratch::new_in(&std::env::temp_dir(), prefix)
    }

    /// A new directory in `parent` (created if missing), named `PREFIX…`.
    pub fn new_in(parent: &Path, prefix: &str) -> Result<Scratch> {
        std::fs::create_dir_all(parent).with_context(|| format!("failed to create {}", parent.display()))?;
        let dir = tempfile::Builder::new()
            .prefix(prefix)
            .permissions(std::fs::Permissions::from_mode(0o755))
            .tempdir_in(parent)
            .with_context(|| format!("failed to create a temporary directory in {}", parent.display()))?;
        // The mode given at creation is filtered by the umask.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
            .with_context(|| format!("failed to make {} readable", dir.path().display()))?;
        Ok(Scratch(dir))
    }

    pub fn path(&self) -> &Path {
        self.0.path()
    }
}

/// Extracts `members` of `package` (paths as in [`Package::files`], without the trailing `/`; a
/// directory brings everything below it; `.INSTALL` the scriptlet) into `into`, which must
/// exist. The directories leading to each member are made first, readable by everyone, so what
/// is extracted is as readable as the package made it. Owners are not restored.
pub fn extract(package: &Path, members: &[&str], into: &Path) -> Result<()> {
    check_members(members)?;
    for member in members {
        let mut dir = into.to_path_buf();
        let parents: Vec<&str> = member.trim_end_matches('/').split('/').collect();
        for part in &parents[..parents.len() - 1] {
            dir.push(part);
            if !dir.is_dir() {
                std::fs::create_dir(&dir).with_context(|| format!("failed to create {}", dir.display()))?;
                std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755))
                    .with_context(|| format!("failed to make {} readable", dir.display()))?;
            }
        }
    }
    let mut cmd = Command::new("bsdtar");
    cmd.args(["-x", "--no-same-owner", "-f"]).arg(package).arg("-C").arg(into);
    cmd.args(members.iter().map(|m| m.trim_end_matches('/')));
    bsdtar(cmd, package)?;
    Ok(())
}

/// The content of one member of `package` (a file, e.g. `.INSTALL` or `.PKGINFO`).
pub fn read_member(package: &Path, member: &str) -> Result<Vec<u8>> {
    check_members(&[member])?;
    let mut cmd = Command::new("bsdtar");
    cmd.args(["-x", "-O", "-f"]).arg(package).arg(member);
    bsdtar(cmd, package)
}

/// Members are package paths: relative, and never mistaken for an option.
fn check_members(members: &[&str]) -> Result<()> {
    for member in members {
        if member.is_empty() || member.starts_with('-') || member.starts_with('/') {
            anyhow::bail!("invalid package member {member:?}");
        }
    }
    Ok(())
}

/// Runs a `bsdtar` command on `package`; returns its stdout.
fn bsdtar(cmd: Command, package: &Path) -> Result<Vec<u8>> {
    // Extracting is quick; a stop request waits for it (like reading a dkms.conf).
    let never = Stop::new();
    let opts =
        process::Options { output: Output::Separate, timeout: Some(EXTRACT_TIMEOUT), ..process::Options::new(&never) };
    let done = process::run(cmd, &opts).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => anyhow::anyhow!("bsdtar not found: install libarchive (bsdtar)"),
        _ => anyhow::anyhow!("failed to run bsdtar: {e}"),
    })?;
    if done.timed_out {
        anyhow::bail!("bsdtar took longer than {} s on {}", EXTRACT_TIMEOUT.as_secs(), package.display());
    }
    if !done.status.success() {
        let stderr = String::from_utf8_lossy(&done.stderr);
        let why = stderr.lines().find(|l| !l.trim().is_empty()).unwrap_or("no message").trim().to_owned();
        anyhow::bail!("bsdtar could not extract from {}: {why}", package.display());
    }
    Ok(done.stdout)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Packs `stage` (with a `.PKGINFO` written from `pkginfo`) into `out/NAME.pkg.tar.zst`.
    fn pack(out: &Path, name: &str, pkginfo: &str, files: &[(&str, &str)]) -> PathBuf {
        let stage = out.join(format!("{name}.stage"));
        for (path, content) in files {
            let path = stage.join(path);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, content).unwrap();
        }
        std::fs::write(stage.join(".PKGINFO"), pkginfo).unwrap();
        let file = out.join(format!("{name}.pkg.tar.zst"));
        let mut entries = vec![".PKGINFO".to_owned()];
        entries.extend(crate::dirs::names(&stage).unwrap().into_iter().filter(|n| n != ".PKGINFO"));
        let status =
            Command::new("bsdtar").arg("--zstd").arg("-cf").arg(&file).arg("-C").arg(&stage).args(&entries).status();
        assert!(status.unwrap().success());
        file
    }

    const PKGINFO: &str = "pkgname = foo-dkms\npkgbase = foo-dkms\npkgver = 2:1.2.3-4\narch = any\n\
                           depend = dkms\ndepend = linux-headers>=6.1\nsize = 1\n";

    #[test]
    fn reads_metadata_files_and_the_scriptlet_flag() {
        let dir = tempfile::tempdir().unwrap();
        let files = [("usr/src/foo-1.2.3/dkms.conf", "PACKAGE_NAME=foo\n"), (".INSTALL", "post_install() { :; }\n")];
        let pkg = Package::read(&pack(dir.path(), "foo", PKGINFO, &files)).unwrap();
        assert_eq!((pkg.name.as_str(), pkg.version.as_str(), pkg.pkgver()), ("foo-dkms", "2:1.2.3-4", "1.2.3"));
        let deps: Vec<(&str, &str)> = pkg.depends.iter().map(|d| (d.name.as_str(), d.text.as_str())).collect();
        assert_eq!(deps, [("dkms", "dkms"), ("linux-headers", "linux-headers>=6.1")]);
        assert!(pkg.depends_on("dkms") && !pkg.depends_on("linux"));
        assert!(pkg.has_install);
        assert!(pkg.files.contains(&"usr/src/foo-1.2.3/dkms.conf".to_owned()), "{:?}", pkg.files);
        assert!(!pkg.files.iter().any(|f| f.starts_with('.')), "{:?}", pkg.files);

        let plain = Package::read(&pack(dir.path(), "bar", PKGINFO, &[("usr/share/x", "")])).unwrap();
        assert!(!plain.has_install);
    }

    #[test]
    fn extracts_a_tree_and_reads_one_member() {
        let dir = tempfile::tempdir().unwrap();
        let files = [
            ("usr/src/foo-1.2.3/dkms.conf", "PACKAGE_NAME=foo\n"),
            ("usr/src/foo-1.2.3/sub/Makefile", "obj-m := foo.o\n"),
            ("usr/share/doc/foo/README", "not extracted\n"),
            (".INSTALL", "post_install() { :; }\n"),
        ];
        let file = pack(dir.path(), "foo", PKGINFO, &files);
        let scratch = Scratch::new("dkms-hook-test.").unwrap();
        extract(&file, &["usr/src/foo-1.2.3/"], scratch.path()).unwrap();
        let src = scratch.path().join("usr/src/foo-1.2.3");
        assert_eq!(std::fs::read_to_string(src.join("sub/Makefile")).unwrap(), "obj-m := foo.o\n");
        assert!(!scratch.path().join("usr/share").exists());
        for dir in [scratch.path(), &scratch.path().join("usr"), &scratch.path().join("usr/src")] {
            assert_eq!(std::fs::metadata(dir).unwrap().permissions().mode() & 0o777, 0o755, "{}", dir.display());
        }
        assert_eq!(read_member(&file, ".INSTALL").unwrap(), b"post_install() { :; }\n");
        let err = read_member(&file, "usr/src/none").unwrap_err();
        assert!(format!("{err:#}").contains("bsdtar could not extract"), "{err:#}");
        assert!(extract(&file, &["-rf"], scratch.path()).is_err());
        let gone = scratch.path().to_path_buf();
        drop(scratch);
        assert!(!gone.exists());
    }

    #[test]
    fn errors_name_the_path_and_the_fix() {
        let dir = tempfile::tempdir().unwrap();
        let err = Package::read(&dir.path().join("none.pkg.tar.zst")).unwrap_err();
        assert!(matches!(err, PackageError::Missing(_)) && err.to_string().contains("no such file"), "{err}");
        let junk = dir.path().join("junk.pkg.tar.zst");
        std::fs::write(&junk, "not an archive").unwrap();
        let err = Package::read(&junk).unwrap_err();
        assert!(err.to_string().contains("not a package file"), "{err}");
        assert!(matches!(Package::read(dir.path()).unwrap_err(), PackageError::NotAPackage { .. }));
    }

    #[test]
    fn finds_package_files_but_not_signatures() {
        let dir = tempfile::tempdir().unwrap();
        for name in ["a-1-1-any.pkg.tar.zst", "a-1-1-any.pkg.tar.zst.sig", "b-1-1-x86_64.pkg.tar.xz", "PKGBUILD"] {
            std::fs::write(dir.path().join(name), "").unwrap();
        }
        let found: Vec<String> = package_files(dir.path())
            .unwrap()
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(found, ["a-1-1-any.pkg.tar.zst", "b-1-1-x86_64.pkg.tar.xz"]);
    }
}
