//! Planning the remove hooks (PreTransaction): a module whose package stays keeps its builds (its
//! sources are kept for dkms); a module that leaves is removed from every kernel dkms built it for,
//! then unregistered; a leaving kernel loses all its modules; headers leaving alone keep them.
//!
//! What leaves and what comes is read from pacman's own targets, never from package files: the
//! remove hook matches `usr/src/*/dkms.conf` as it leaves (`Remove`: a path an installed package
//! owns), and the guard, earlier in the same transaction, as it comes (`Install`, `Upgrade`),
//! which it records (`Inventory::coming`); directories among the remove hook's own targets that
//! no installed package owns count as coming too. A module version leaves for good only when no
//! directory of the same module name comes in the same transaction; otherwise it is being
//! upgraded (a new version, or another package of the same module) and stays until its
//! replacement is built.
//! When in doubt (the sources of a leaving version are gone from disk already, or a directory that
//! comes could belong to it), it stays: the install hook or `sync` finishes the work.

use std::collections::{BTreeMap, BTreeSet};

use super::jobs::{Notice, Plan};
use crate::domain::{Job, JobKind, ModuleId};
use crate::inventory::Inventory;
use crate::targets::Targets;

/// Whether the source directory `dir` (`NAME-VERSION`, as dkms requires) can be one of module
/// `name`. A name that is a prefix of another (`foo`, `foo-extra`) matches both: the safe side.
fn of_module(dir: &str, name: &str) -> bool {
    dir.strip_prefix(name).and_then(|rest| rest.strip_prefix('-')).is_some_and(|version| !version.is_empty())
}

pub(super) fn plan_remove(targets: &Targets, inv: &Inventory, rebuild: bool) -> Plan {
    let mut plan = Plan::default();
    // (module, kernel) pairs to remove, in order of discovery but without duplicates.
    let mut removals: BTreeSet<(ModuleId, String)> = BTreeSet::new();
    let mut unregister: BTreeSet<ModuleId> = BTreeSet::new();
    let leaving: BTreeSet<&str> = targets.kernels.iter().filter(|(_, c)| c.image).map(|(k, _)| k.as_str()).collect();
    // Directories an installed package owns leave (also when their files are gone already and
    // dkms has the module registered from there); the others among the targets come.
    let leaves = |dir: &str| match inv.sources.get(dir) {
        Some(source) => source.package.is_some(),
        None => inv.tree.entries.values().any(|e| e.kept.is_none() && e.source_dir.as_deref() == Some(dir)),
    };
    let coming: Vec<&str> = targets
        .module_dirs
        .iter()
        .map(String::as_str)
        .filter(|d| !leaves(d))
        .chain(inv.coming.iter().map(String::as_str))
        .collect();

    for dir in targets.module_dirs.iter().filter(|d| leaves(d) || rebuild) {
        // The dkms.conf is still on disk before the transaction; when it cannot be read, the
        // dkms tree's `source` link says which module version the directory was.
        let id = match inv.sources.get(dir).map(|s| &s.conf) {
            Some(Ok(conf)) => Some(ModuleId::new(&conf.name, &conf.version)),
            _ => inv.tree.by_source_dir(dir).map(|(m, v)| ModuleId::new(m, v)),
        };
        let Some(id) = id else {
            plan.notices.push(Notice::NotRegistered { dir: dir.clone() });
            continue;
        };
        let Some(entry) = inv.tree.entries.get(&(id.name.clone(), id.version.clone())) else {
            plan.notices.push(Notice::NotRegistered { dir: dir.clone() });
            continue;
        };
        // A module that stays packaged keeps its builds until their replacements are built
        // after the transaction: the upgrade hook's rebuild (same directory), or a directory of
        // the same module that the transaction brings. Its sources are kept for dkms, which
        // needs them to remove the old builds later.
        let source = inv.sources.get(dir);
        let stays = rebuild || coming.iter().any(|d| of_module(d, &id.name));
        if let (true, Some(digest)) = (stays, source.and_then(|s| s.digest.clone())) {
            let installed = entry.installed.iter().cloned().collect();
            plan.jobs.push(Job { kind: JobKind::Preserve { digest, installed }, module: id, after: Vec::new() });
            continue;
        }
        for kver in entry.built.union(&entry.installed) {
            removals.insert((id.clone(), kver.clone()));
        }
        // The module leaves: earlier versions kept for kernels whose upgrade failed go too.
        for (version, kept) in inv.tree.versions_of(&id.name).filter(|(v, e)| *v != id.version && e.kept.is_some()) {
            let old = ModuleId::new(&id.name, version);
            for kver in kept.built.union(&kept.installed) {
                removals.insert((old.clone(), kver.clone()));
            }
            unregister.insert(old);
        }
        unregister.insert(id);
    }

    for (kver, change) in &targets.kernels {
        let modules = inv.tree.for_kernel(kver);
        // A kernel upgraded in place (the rebuild case: same kver) keeps its modules: the install
        // hook rebuilds them privately and swaps each in only when it works.
        if change.image && !rebuild {
            for (m, v) in modules {
                removals.insert((ModuleId::new(m, v), kver.clone()));
            }
        } else if let Some(kernel) = inv.kernels.get(kver) {
            // Only the headers leave: modules already installed still load with this kernel.
            // (Headers upgraded in place, the rebuild case, need no word at all.)
            if !rebuild {
                let kept = inv
                    .tree
                    .entries
                    .iter()
                    .filter(|(_, e)| e.installed.contains(kver))
                    .map(|((m, v), _)| ModuleId::new(m, v))
                    .filter(|id| !removals.contains(&(id.clone(), kver.clone())))
                    .collect();
                plan.notices.push(Notice::HeadersLeaving { kver: kver.clone(), package: kernel.package.clone(), kept });
            }
        }
    }

    let mut removal_jobs: BTreeMap<ModuleId, Vec<usize>> = BTreeMap::new();
    let mut depmod: BTreeSet<String> = BTreeSet::new();
    for (id, kver) in removals {
        removal_jobs.entry(id.clone()).or_default().push(plan.jobs.len());
        if !leaving.contains(kver.as_str()) && inv.kernels.contains_key(&kver) {
            depmod.insert(kver.clone());
        }
        plan.jobs.push(Job { kind: JobKind::Remove { kernel: kver }, module: id, after: Vec::new() });
    }
    for id in unregister {
        let after = removal_jobs.get(&id).cloned().unwrap_or_default();
        plan.jobs.push(Job { kind: JobKind::Unregister, module: id, after });
    }
    if !rebuild {
        plan.depmod = depmod.into_iter().collect();
    }
    plan
}
