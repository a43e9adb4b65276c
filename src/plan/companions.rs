//! What locked companions (`inventory::locks`) mean for a transaction. A module package that an
//! upgrade brings with an exact-version dependency on a companion the same transaction moves to
//! another version cannot be saved after the transaction: the build-first swap would keep the old
//! module, and the old module does not work with the new companion. So the guard treats its test
//! builds as critical, whatever `critical` says. A transaction that brings only a kernel moves no
//! companion: today's rule (`critical`) holds. `unlocked` opts a module out.

use std::collections::{BTreeMap, BTreeSet};

use crate::domain::ModuleId;
use crate::inventory::locks::{self, Lock, Locks};
use crate::inventory::Inventory;

/// A companion that moves to another version with the module package locked to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Moved {
    /// The companion package.
    pub companion: String,
    /// Its installed version; `None`: the transaction installs it.
    pub from: Option<String>,
    /// The version the incoming module package requires.
    pub to: String,
    /// Packages that depend on the companion at one exact version too (they move with it).
    pub dependents: Vec<String>,
}

/// The incoming module packages (by name) whose locked companions the transaction moves: the
/// companions whose installed version (`installed`) is not the one the incoming package requires
/// (pacman installs the package only with its dependencies met, so the companion comes with it).
/// `known` (the installed packages' locks) supplies the dependents.
pub fn moved(incoming: &Locks, installed: &BTreeMap<String, String>, known: &Locks) -> BTreeMap<String, Vec<Moved>> {
    let mut moved = BTreeMap::new();
    for (package, locks) in incoming {
        let moving: Vec<Moved> = locks
            .iter()
            .filter(|lock| !installed.get(&lock.companion).is_some_and(|v| locks::satisfied(lock, v)))
            .map(|lock| Moved {
                companion: lock.companion.clone(),
                from: installed.get(&lock.companion).cloned(),
                to: lock.version.clone(),
                dependents: dependents(known, lock),
            })
            .collect();
        if !moving.is_empty() {
            moved.insert(package.clone(), moving);
        }
    }
    moved
}

/// The installed packages that depend on `lock`'s companion exactly, besides the module package.
fn dependents(known: &Locks, lock: &Lock) -> Vec<String> {
    let of_lock = lock.dependents.iter().cloned();
    let of_known =
        known.values().flatten().filter(|l| l.companion == lock.companion).flat_map(|l| l.dependents.clone());
    of_lock.chain(of_known).collect::<BTreeSet<_>>().into_iter().collect()
}

/// What to hold back with a module package whose companions move: the package, the companions
/// and their exact dependents, for `pacman -Syu --ignore`.
pub fn hold(package: &str, moved: &[Moved]) -> BTreeSet<String> {
    let mut hold = BTreeSet::from([package.to_owned()]);
    for m in moved {
        hold.insert(m.companion.clone());
        hold.extend(m.dependents.iter().cloned());
    }
    hold
}

/// Whether the module `name` is locked, given `unlocked` (module-name globs).
pub fn is_locked(name: &str, unlocked: &[glob::Pattern]) -> bool {
    !unlocked.iter().any(|p| p.matches(name))
}

/// One line for the user: the companions and where they go.
pub fn describe(moved: &[Moved]) -> String {
    let each: Vec<String> = moved
        .iter()
        .map(|m| match &m.from {
            Some(from) => format!("{} {from} -> {}", m.companion, m.to),
            None => format!("{} {}", m.companion, m.to),
        })
        .collect();
    each.join(", ")
}

/// Drops the locks of module packages whose modules `unlocked` opts out.
pub fn drop_unlocked(inv: &mut Inventory, unlocked: &[glob::Pattern]) {
    if unlocked.is_empty() {
        return;
    }
    let opted_out: BTreeSet<String> = inv
        .sources
        .values()
        .filter(|s| s.conf.as_ref().is_ok_and(|c| !is_locked(&c.name, unlocked)))
        .filter_map(|s| s.package.clone())
        .collect();
    inv.locks.retain(|package, _| !opted_out.contains(package));
}

/// The companions (`name version`) the installed version `old` of a module does not go with:
/// those the module's package (`package`, as installed now) is locked to whose installed version
/// is not `old` (a locked companion's pkgver is the driver's version, as nvidia-utils' is
/// nvidia's). Empty: the kept version still matches, or the module is not locked.
pub fn out_of_step(inv: &Inventory, package: &str, old: &str) -> Vec<String> {
    let Some(locks) = inv.locks.get(package) else { return Vec::new() };
    locks
        .iter()
        .filter_map(|lock| {
            let installed = inv.package_versions.get(&lock.companion)?;
            (pkgver(installed) != old).then(|| format!("{} {installed}", lock.companion))
        })
        .collect()
}

/// The package that brings the module `name` `version`, when one does.
pub fn package_of<'a>(inv: &'a Inventory, name: &str, version: &str) -> Option<&'a str> {
    inv.sources
        .values()
        .find(|s| s.conf.as_ref().is_ok_and(|c| c.name == name && c.version == version))
        .and_then(|s| s.package.as_deref())
}

/// The line after a transaction in which `module` failed and its version `old` was kept although
/// its package is locked to companions it does not go with; `None` when it still goes with them.
pub fn kept_line(inv: &Inventory, module: &ModuleId, old: &str) -> Option<String> {
    let package = package_of(inv, &module.name, &module.version)?;
    let companions = out_of_step(inv, package, old);
    if companions.is_empty() {
        return None;
    }
    Some(format!(
        "warning: the kept {}/{old} will not work with {} ({package} is locked to it): fix {module}, or downgrade \
         {package} and its companions together\n",
        module.name,
        companions.join(", ")
    ))
}

/// `[epoch:]pkgver-pkgrel` without epoch and pkgrel.
fn pkgver(version: &str) -> &str {
    let version = version.split_once(':').map_or(version, |(_, v)| v);
    version.rsplit_once('-').map_or(version, |(v, _)| v)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lock(companion: &str, version: &str, dependents: &[&str]) -> Lock {
        Lock {
            companion: companion.into(),
            version: version.into(),
            dependents: dependents.iter().map(|d| d.to_string()).collect(),
        }
    }

    #[test]
    fn a_companion_moves_when_its_installed_version_is_not_the_required_one() {
        let installed: BTreeMap<String, String> =
            [("nvidia-utils", "580.1-1"), ("libfoo", "2-1")].map(|(p, v)| (p.to_owned(), v.to_owned())).into();
        let known: Locks =
            [("nvidia-dkms".to_owned(), vec![lock("nvidia-utils", "580.1", &["lib32-nvidia-utils"])])].into();
        let cases: [(&str, Vec<Lock>, Vec<&str>); 4] = [
            ("nvidia-dkms", vec![lock("nvidia-utils", "590.2", &[])], vec!["nvidia-utils"]),
            ("nvidia-dkms", vec![lock("nvidia-utils", "580.1", &[])], vec![]),
            ("foo-dkms", vec![lock("libfoo", "2", &[]), lock("libbar", "1", &[])], vec!["libbar"]),
            ("bar-dkms", vec![], vec![]),
        ];
        for (package, locks, want) in cases {
            let incoming: Locks = [(package.to_owned(), locks)].into();
            let moved = moved(&incoming, &installed, &known);
            let got: Vec<&str> = moved.values().flatten().map(|m| m.companion.as_str()).collect();
            assert_eq!(got, want, "{package}");
        }
    }

    #[test]
    fn the_hold_names_the_module_its_companions_and_their_dependents() {
        let installed: BTreeMap<String, String> = [("nvidia-utils".to_owned(), "580.1-1".to_owned())].into();
        let known: Locks =
            [("nvidia-dkms".to_owned(), vec![lock("nvidia-utils", "580.1", &["lib32-nvidia-utils"])])].into();
        let incoming: Locks = [("nvidia-dkms".to_owned(), vec![lock("nvidia-utils", "590.2", &[])])].into();
        let moved = moved(&incoming, &installed, &known);
        let hold: Vec<String> = hold("nvidia-dkms", &moved["nvidia-dkms"]).into_iter().collect();
        assert_eq!(hold, ["lib32-nvidia-utils", "nvidia-dkms", "nvidia-utils"]);
        assert_eq!(describe(&moved["nvidia-dkms"]), "nvidia-utils 580.1-1 -> 590.2");
    }

    #[test]
    fn unlocked_opts_a_module_out() {
        let unlocked = [glob::Pattern::new("nvidia-470*").unwrap()];
        assert!(!is_locked("nvidia-470xx", &unlocked));
        assert!(is_locked("nvidia", &unlocked));
    }

    #[test]
    fn a_kept_version_out_of_step_with_its_companion_is_told() {
        use crate::inventory::{DkmsConf, ModuleSource};
        let mut inv = Inventory::default();
        let conf = DkmsConf { name: "nvidia".into(), version: "590".into(), ..Default::default() };
        let source = ModuleSource {
            dir: "nvidia-590".into(),
            package: Some("nvidia-dkms".into()),
            conf: Ok(conf),
            digest: None,
        };
        inv.sources.insert("nvidia-590".into(), source);
        inv.locks.insert("nvidia-dkms".into(), vec![lock("nvidia-utils", "590-1", &[])]);
        inv.package_versions.insert("nvidia-utils".into(), "590-1".into());
        let id = ModuleId::new("nvidia", "590");
        let line = kept_line(&inv, &id, "580").unwrap();
        assert!(line.starts_with("warning: the kept nvidia/580 will not work with nvidia-utils 590-1"), "{line}");
        assert_eq!(kept_line(&inv, &id, "590"), None);
        drop_unlocked(&mut inv, &[glob::Pattern::new("nvidia").unwrap()]);
        assert_eq!(kept_line(&inv, &id, "580"), None);
    }
}
