//! Locked companions: a module package that depends on another package at one exact version
//! (`depends = nvidia-utils=590.44.01`, or `=590.44.01-1`) only works with that version of it.
//! nvidia's kernel module and its userspace (libraries, GSP firmware) are such a pair: an old
//! module beside a new userspace fails ("NVRM: API mismatch"). What is read here, from the local
//! database and from package files, is which packages lock which; `plan::companions` decides
//! what that means for a transaction.

use std::collections::BTreeMap;

/// One exact-version dependency of a module package.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Lock {
    /// The companion package, e.g. `nvidia-utils`.
    pub companion: String,
    /// The version the module package requires, as written (`590.44.01` or `590.44.01-1`).
    pub version: String,
    /// Installed packages that depend on the companion at one exact version too (e.g.
    /// `lib32-nvidia-utils`): they move with it, so holding the companion back holds them back.
    pub dependents: Vec<String>,
}

/// The locks of module packages, by package name.
pub type Locks = BTreeMap<String, Vec<Lock>>;

/// The companion and version of one `depends` entry when it is an exact-version dependency
/// (`name=version`; not `>=`, `<=`, nor a bare name).
pub fn exact(depend: &str) -> Option<(String, String)> {
    let (name, version) = depend.split_once('=')?;
    if name.is_empty() || name.ends_with(['<', '>']) || version.is_empty() {
        return None;
    }
    Some((name.to_owned(), version.to_owned()))
}

/// The locks among `depends` entries (as written).
pub fn of<'a>(depends: impl IntoIterator<Item = &'a str>) -> Vec<Lock> {
    depends
        .into_iter()
        .filter_map(exact)
        .map(|(companion, version)| Lock { companion, version, dependents: Vec::new() })
        .collect()
}

/// Whether the companion's `installed` version (`[epoch:]pkgver-pkgrel`) is the one `lock`
/// requires: the same full version, or the same version without the pkgrel when the dependency
/// gives none.
pub fn satisfied(lock: &Lock, installed: &str) -> bool {
    if installed == lock.version {
        return true;
    }
    !lock.version.contains('-') && installed.rsplit_once('-').is_some_and(|(v, _)| v == lock.version)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_exact_versions_lock() {
        assert_eq!(exact("nvidia-utils=590.44.01"), Some(("nvidia-utils".into(), "590.44.01".into())));
        assert_eq!(exact("nvidia-utils=590.44.01-1"), Some(("nvidia-utils".into(), "590.44.01-1".into())));
        for loose in ["dkms", "linux-headers>=6.1", "libfoo<=2", "x<3", "x>3", "=1"] {
            assert_eq!(exact(loose), None, "{loose}");
        }
        let locks = of(["dkms", "nvidia-utils=590-1", "libglvnd"]);
        assert_eq!(locks.len(), 1);
        assert_eq!(locks[0].companion, "nvidia-utils");
    }

    #[test]
    fn a_version_without_pkgrel_takes_any_pkgrel() {
        let lock = |v: &str| Lock { companion: "c".into(), version: v.into(), dependents: vec![] };
        assert!(satisfied(&lock("590"), "590-2"));
        assert!(satisfied(&lock("590-1"), "590-1"));
        assert!(!satisfied(&lock("590-1"), "590-2"));
        assert!(!satisfied(&lock("590"), "580-1"));
        assert!(!satisfied(&lock("59"), "590-1"));
    }
}
