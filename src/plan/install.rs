//! Planning the install hook (PostTransaction) and the guard's builds: each changed module × every
//! kernel with headers, and every packaged module × each changed kernel, resolved to dkms
//! identities and jobs per kernel (see `swap`), BUILD_DEPENDS first (see `order`).

use std::collections::{BTreeMap, BTreeSet};

use super::jobs::{Notice, Plan};
use super::order::{push_in_dependency_order, Source};
use super::swap::{job_for, Compare};
use crate::domain::ModuleId;
use crate::inventory::Inventory;
use crate::state::State;
use crate::targets::Targets;

pub(super) fn plan_install(targets: &Targets, inv: &Inventory, state: &State) -> Plan {
    let mut plan = Plan::default();
    let mut wanted = wanted_pairs(targets, inv, &mut plan);
    drop_modules_shipped_twice(&mut wanted, inv, &mut plan);
    let per_kernel = resolve_pairs(&wanted, targets, inv, state, &mut plan);
    for (kver, sources) in per_kernel {
        push_in_dependency_order(&mut plan, kver, sources);
    }
    plan.retire_replaced();
    plan.note_build_depends(inv);
    plan.use_prebuilt(inv);
    plan
}

/// The (kernel, module directory) pairs a transaction's targets call for: each changed module ×
/// every kernel, and every packaged module × each changed kernel. Kernels without headers get
/// one notice each instead; kvers no package owns get an informational notice.
fn wanted_pairs(targets: &Targets, inv: &Inventory, plan: &mut Plan) -> BTreeSet<(String, String)> {
    let mut wanted = BTreeSet::new();
    let mut headerless: BTreeSet<&str> = BTreeSet::new();
    for kver in targets.kernels.keys().filter(|k| !inv.kernels.contains_key(*k)) {
        plan.notices.push(Notice::NotAKernel { kver: kver.clone() });
    }
    for dir in &targets.module_dirs {
        for kernel in inv.kernels.values() {
            if kernel.headers.is_some() {
                wanted.insert((kernel.kver.clone(), dir.clone()));
            } else {
                headerless.insert(&kernel.kver);
            }
        }
    }
    let packaged: Vec<&str> = inv.sources.values().filter(|s| s.package.is_some()).map(|s| s.dir.as_str()).collect();
    for kernel in targets.kernels.keys().filter_map(|k| inv.kernels.get(k)) {
        match kernel.headers {
            Some(_) => wanted.extend(packaged.iter().map(|dir| (kernel.kver.clone(), (*dir).to_owned()))),
            None if !packaged.is_empty() => {
                headerless.insert(&kernel.kver);
            }
            None => {}
        }
    }
    for kver in headerless {
        let kernel = &inv.kernels[kver];
        plan.notices.push(Notice::NoHeaders {
            kver: kver.to_owned(),
            package: kernel.package.clone(),
            headers_package: kernel.headers_package(),
        });
    }
    wanted
}

/// Two packages shipping one module (foo-dkms and foo-git-dkms) would replace each other's
/// build: neither is built until one of them goes (an error notice says so).
fn drop_modules_shipped_twice(wanted: &mut BTreeSet<(String, String)>, inv: &Inventory, plan: &mut Plan) {
    let by_name = shipped_by_several(inv);
    let mut conflicted: BTreeSet<&str> = BTreeSet::new();
    for (_, dir) in wanted.iter() {
        let Some(Ok(conf)) = inv.sources.get(dir).map(|s| &s.conf) else { continue };
        if let Some(shipped) = by_name.get(conf.name.as_str()) {
            if conflicted.insert(&conf.name) {
                let shipped = shipped.iter().map(|(_, s)| s.clone()).collect();
                plan.notices.push(Notice::SeveralPackages { module: conf.name.clone(), shipped });
            }
        }
    }
    wanted.retain(|(_, dir)| match inv.sources.get(dir).map(|s| &s.conf) {
        Some(Ok(conf)) => !conflicted.contains(conf.name.as_str()),
        _ => true,
    });
}

/// Resolves directories to module identities and jobs, per kernel. A bad dkms.conf is reported
/// once; a module version dkms already has installed for the kernel needs nothing (`dkms install`
/// would only say so, at ~0.1 s a call) unless its package just changed (see [`job_for`]).
fn resolve_pairs<'i>(
    wanted: &BTreeSet<(String, String)>,
    targets: &Targets,
    inv: &'i Inventory,
    state: &State,
    plan: &mut Plan,
) -> BTreeMap<String, Vec<Source<'i>>> {
    let mut per_kernel: BTreeMap<String, Vec<Source>> = BTreeMap::new();
    let mut bad: BTreeSet<&str> = BTreeSet::new();
    for (kver, dir) in wanted {
        match resolve_source(inv, dir) {
            Ok((id, depends)) => {
                let digest = inv.sources.get(dir).and_then(|s| s.digest.as_deref());
                // Headers replaced in place: changed ones rebuild every installed build
                // (privately first), identical ones leave them as they are.
                let compare = match (inv.headers_in_place.get(kver), targets.module_dirs.contains(dir)) {
                    (Some(false), _) => Compare::NewHeaders,
                    (_, true) => Compare::Digest,
                    (Some(true), false) => Compare::SameHeaders,
                    (None, false) => Compare::Trust,
                };
                if let Some(kind) = job_for(inv, state, &id, digest, kver, compare) {
                    per_kernel.entry(kver.clone()).or_default().push(Source { id, depends, kind });
                }
            }
            // No dkms.conf on disk for a target: nothing to build from (pacman matched a path
            // that is not there, e.g. NoExtract).
            Err(error) if error.is_empty() => {
                if bad.insert(dir) {
                    plan.notices.push(Notice::NotRegistered { dir: dir.clone() });
                }
            }
            Err(error) => {
                if bad.insert(dir) {
                    plan.notices.push(Notice::BadSource { dir: dir.clone(), error });
                }
            }
        }
    }
    per_kernel
}

/// The module identity and BUILD_DEPENDS of `usr/src/<dir>` from its dkms.conf.
fn resolve_source<'a>(inv: &'a Inventory, dir: &str) -> Result<(ModuleId, &'a [String]), String> {
    match inv.sources.get(dir) {
        Some(source) => match &source.conf {
            Ok(conf) => Ok((ModuleId::new(&conf.name, &conf.version), &conf.build_depends)),
            Err(e) => Err(e.clone()),
        },
        None => Err(String::new()),
    }
}

/// Module names that more than one package ships (in different directories), each with its
/// sources as `(dir, "name/version from package")`.
pub fn shipped_by_several(inv: &Inventory) -> BTreeMap<&str, Vec<(&str, String)>> {
    let mut by_name: BTreeMap<&str, Vec<(&str, String)>> = BTreeMap::new();
    for source in inv.sources.values() {
        if let (Some(pkg), Ok(conf)) = (&source.package, &source.conf) {
            by_name
                .entry(&conf.name)
                .or_default()
                .push((&source.dir, format!("{}/{} from {pkg}", conf.name, conf.version)));
        }
    }
    by_name.retain(|_, shipped| shipped.len() > 1);
    by_name
}
