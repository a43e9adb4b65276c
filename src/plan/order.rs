//! The order of one kernel's install jobs: a module's BUILD_DEPENDS before it, name order among
//! the others, a cycle reported and still planned.

use super::jobs::{Notice, Plan};
use crate::domain::{Job, JobKind, ModuleId};

/// A module source resolved to its dkms identity, its BUILD_DEPENDS, and what its job does.
pub(super) struct Source<'a> {
    pub(super) id: ModuleId,
    pub(super) depends: &'a [String],
    pub(super) kind: JobKind,
}

/// Adds one kernel's install jobs, BUILD_DEPENDS first (name order among the others), and its
/// depmod when any job builds.
pub(super) fn push_in_dependency_order(plan: &mut Plan, kver: String, mut sources: Vec<Source>) {
    sources.sort_by(|a, b| a.id.cmp(&b.id));
    let items: Vec<(&str, &[String])> = sources.iter().map(|s| (s.id.name.as_str(), s.depends)).collect();
    let (ordered, cycle) = dependency_order(&items);
    if !cycle.is_empty() {
        plan.notices.push(Notice::DependencyCycle { kernel: kver.clone(), modules: cycle });
    }
    let first = plan.jobs.len();
    for (pos, &i) in ordered.iter().enumerate() {
        let after = sources[i]
            .depends
            .iter()
            .filter_map(|dep| ordered[..pos].iter().position(|&j| &sources[j].id.name == dep))
            .map(|earlier| first + earlier)
            .collect();
        plan.jobs.push(Job { kind: sources[i].kind.clone(), module: sources[i].id.clone(), after });
    }
    if sources.iter().any(|s| !matches!(s.kind, JobKind::Unchanged { .. })) {
        plan.depmod.push(kver);
    }
}

/// Orders modules `(name, BUILD_DEPENDS)` so that dependencies come first (Kahn's algorithm;
/// among modules that are ready, the earlier in `items` first). Returns the order as indices into
/// `items`, and the names left in a cycle, if any (appended in their order).
pub(crate) fn dependency_order(items: &[(&str, &[String])]) -> (Vec<usize>, Vec<String>) {
    let deps_of = |i: usize| -> Vec<usize> {
        items[i].1.iter().filter_map(|d| items.iter().position(|(name, _)| name == d)).filter(|&j| j != i).collect()
    };
    let mut done: Vec<usize> = Vec::new();
    let mut left: Vec<usize> = (0..items.len()).collect();
    while !left.is_empty() {
        let ready = left.iter().position(|&i| deps_of(i).iter().all(|d| done.contains(d)));
        match ready {
            Some(pos) => done.push(left.remove(pos)),
            None => {
                let cycle = left.iter().map(|&i| items[i].0.to_owned()).collect();
                done.extend(left);
                return (done, cycle);
            }
        }
    }
    (done, Vec::new())
}
