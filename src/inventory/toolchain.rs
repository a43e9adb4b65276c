//! The toolchain dkms builds modules with, as the system has it and as the running transaction
//! brings it: the compiler, the C library and binutils (`gcc`, `gcc-libs`, `glibc`, `binutils`),
//! and for kernels built with clang (`CONFIG_CC_IS_CLANG=y`) `clang`, `llvm` and `lld` too.
//!
//! A build made before the transaction with the old toolchain says little about one made after it
//! with the new one, and is not what the install hook would make (the guard's judgement is in
//! `guard::toolchain`, the install hook's check in `prebuilt`).
//!
//! What the transaction brings is read from its incoming package files as `incoming` lists them
//! (the files given to `-U`, or the sync databases' packages found in pacman's cache), leaving out
//! the packages pacman leaves alone (`IgnorePkg` in its configuration, `--ignore` on the front
//! end's command line, see `frontend::Places`), and, from pacman's cache, files whose version is
//! not the sync database's: only what pacman would install counts.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use super::incoming::Transaction;
use super::package::Package;
use crate::domain::Layout;
use crate::prebuilt::Toolchain;

/// The packages of the toolchain every module build uses.
pub const COMPILER: &[&str] = &["gcc", "gcc-libs", "glibc", "binutils"];
/// The packages of the toolchain builds for a kernel built with clang use as well.
pub const CLANG: &[&str] = &["clang", "llvm", "lld"];

/// The toolchain packages that count: [`COMPILER`], and [`CLANG`] when `clang`.
pub fn packages(clang: bool) -> Vec<&'static str> {
    let mut names = COMPILER.to_vec();
    if clang {
        names.extend(CLANG);
    }
    names
}

/// The installed versions of `names`, from the local database; empty when it cannot be read
/// (then any recorded toolchain differs: builds are made again, the safe side).
pub fn installed(layout: &Layout, names: &[&str]) -> Toolchain {
    let handle = match super::pacman::open(layout) {
        Ok(handle) => handle,
        Err(e) => {
            log::warn!("{e:#}: the toolchain's version is unknown");
            return Toolchain::default();
        }
    };
    let local = handle.localdb();
    Toolchain(
        names
            .iter()
            .filter_map(|name| local.pkg(*name).ok().map(|p| ((*name).to_owned(), p.version().to_string())))
            .collect(),
    )
}

/// The toolchain the system has now, for the install hook's check of the guard's builds
/// (`prebuilt::load`), and the packages that count whatever the guard recorded: [`COMPILER`] (the
/// [`CLANG`] packages count when the guard recorded them, for a kernel built with clang).
pub fn for_prebuilt(layout: &Layout) -> (Toolchain, Vec<&'static str>) {
    (installed(layout, &packages(true)), COMPILER.to_vec())
}

/// Whether the kernel whose headers are at `build` was built with clang (its `.config`, or
/// `include/config/auto.conf`, says `CONFIG_CC_IS_CLANG=y`).
pub fn built_with_clang(build: &Path) -> bool {
    [".config", "include/config/auto.conf"].iter().any(|file| {
        std::fs::read_to_string(build.join(file)).is_ok_and(|text| text.lines().any(|l| l == "CONFIG_CC_IS_CLANG=y"))
    })
}

/// The versions of `names` that the transaction brings and pacman would install: see the module
/// documentation.
pub fn incoming(transaction: &Transaction, names: &[&str]) -> Toolchain {
    let wanted: BTreeSet<String> =
        names.iter().filter(|n| !transaction.ignored.contains(**n)).map(|n| (*n).to_owned()).collect();
    let mut found = Toolchain::default();
    for (name, file) in transaction.files_of(&wanted) {
        let Some((read_name, version)) = name_and_version(&file) else { continue };
        let database = transaction.database_version(&file);
        if read_name != name || database.is_some_and(|v| v != version) {
            log::debug!("{} is not the {name} pacman installs: left out", file.display());
            continue;
        }
        found.0.insert(name, version);
    }
    found
}

/// The installed versions of `names` among `versions` (an inventory's package versions).
pub fn installed_among(versions: &BTreeMap<String, String>, names: &[&str]) -> Toolchain {
    Toolchain(names.iter().filter_map(|n| Some(((*n).to_owned(), versions.get(*n)?.clone()))).collect())
}

/// The package name and version in `file`'s metadata.
fn name_and_version(file: &Path) -> Option<(String, String)> {
    match Package::name_and_version_of(file) {
        Ok(found) => Some(found),
        Err(e) => {
            log::debug!("{e}");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clang_counts_only_for_kernels_built_with_it() {
        assert_eq!(packages(false), COMPILER);
        assert!(packages(true).contains(&"lld"));
        let dir = tempfile::tempdir().unwrap();
        assert!(!built_with_clang(dir.path()));
        std::fs::write(dir.path().join(".config"), "CONFIG_CC_IS_GCC=y\n# CONFIG_CC_IS_CLANG is not set\n").unwrap();
        assert!(!built_with_clang(dir.path()));
        std::fs::create_dir_all(dir.path().join("include/config")).unwrap();
        std::fs::write(dir.path().join("include/config/auto.conf"), "CONFIG_X=y\nCONFIG_CC_IS_CLANG=y\n").unwrap();
        assert!(built_with_clang(dir.path()));
    }
}
