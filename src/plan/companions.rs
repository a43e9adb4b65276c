//! What locked companions (`inventory::locks`) mean for a transaction. A module package that an
//! upgrade brings with an exact-version dependency on a companion the same transaction moves to
//! another version cannot be saved after the transaction: the build-first swap would keep the old
//! module, and the old module does not work with the new companion. So the guard treats its test
//! builds as critical, whatever `critical` says. A transaction that brings only a kernel moves no
//! companion: today's rule (`critical`) holds. `unlocked` opts a module out.

use std::collections::{BTreeMap, BTreeSet};

use crate::inventory::locks::{self, Lock, Locks};

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
}
