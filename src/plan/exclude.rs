//! `exclude_kernels` and `exclude_modules` applied to a plan, the one place they are applied for
//! hooks and `sync` alike: install jobs for excluded pairs are dropped (removals are kept:
//! excluding is about building, not about leaving files behind), and so is the missing-headers
//! warning for an excluded kernel. Pure: the planners stay unaware of the configuration, and the
//! indices in `after` are renumbered for the jobs that are left.

use std::collections::BTreeSet;

use super::jobs::{Notice, Plan};
use crate::config::Excludes;
use crate::domain::{Job, JobKind};

/// The plan without excluded install jobs, and the jobs that were dropped.
pub fn apply(plan: Plan, excludes: &Excludes) -> (Plan, Vec<Job>) {
    if excludes.is_empty() {
        return (plan, Vec::new());
    }
    let Plan { jobs, depmod, mut notices, build_depends, gone_kernels, prebuilt } = plan;
    notices.retain(|n| !matches!(n, Notice::NoHeaders { kver, .. } if excludes.kernel(kver)));
    let excluded = |job: &Job| match &job.kind {
        JobKind::Install { kernel }
        | JobKind::Replace { kernel, .. }
        | JobKind::Unchanged { kernel }
        | JobKind::Test { kernel, .. } => excludes.pair(&job.module.name, &job.module.version, kernel),
        _ => false,
    };
    // Old index -> new index, for the jobs that stay.
    let mut renumber: Vec<Option<usize>> = Vec::with_capacity(jobs.len());
    let mut kept = Vec::new();
    let mut dropped = Vec::new();
    for job in jobs {
        if excluded(&job) {
            renumber.push(None);
            dropped.push(job);
        } else {
            renumber.push(Some(kept.len()));
            kept.push(job);
        }
    }
    let renumbered = |list: &[usize]| -> Vec<usize> { list.iter().filter_map(|&i| renumber[i]).collect() };
    for job in &mut kept {
        job.after = renumbered(&job.after);
        if let JobKind::Retire { replacing } = &mut job.kind {
            *replacing = renumbered(replacing);
        }
    }
    // depmod stays for a kernel that still has a job, or that lost none.
    let touched: BTreeSet<&str> = kept.iter().filter_map(Job::kernel).collect();
    let emptied: BTreeSet<&str> = dropped.iter().filter_map(Job::kernel).collect();
    let depmod = depmod.into_iter().filter(|k| touched.contains(k.as_str()) || !emptied.contains(k.as_str())).collect();
    (Plan { jobs: kept, depmod, notices, build_depends, gone_kernels, prebuilt }, dropped)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::ModuleId;

    fn job(kind: JobKind, m: &str, after: &[usize]) -> Job {
        Job { kind, module: ModuleId::new(m, "1"), after: after.to_vec() }
    }
    fn install(m: &str, k: &str, after: &[usize]) -> Job {
        job(JobKind::Install { kernel: k.into() }, m, after)
    }

    #[test]
    fn drops_excluded_installs_and_renumbers() {
        let p = |s: &str| glob::Pattern::new(s).unwrap();
        let excludes = Excludes { kernels: vec![p("*-rt")], modules: vec![p("nvidia")] };
        let plan = Plan {
            jobs: vec![
                install("base", "6.1-rt", &[]),
                install("top", "6.1-rt", &[0]),
                install("nvidia", "6.1", &[]),
                install("base", "6.1", &[]),
                install("top", "6.1", &[2, 3]),
                job(JobKind::Remove { kernel: "6.1-rt".into() }, "old", &[]),
                job(JobKind::Unregister, "old", &[5]),
            ],
            depmod: vec!["6.1".into(), "6.1-rt".into(), "6.2".into()],
            notices: vec![],
            ..Plan::default()
        };
        let (plan, dropped) = apply(plan, &excludes);
        let names: Vec<String> = plan.jobs.iter().map(ToString::to_string).collect();
        assert_eq!(names, ["base/1 for 6.1", "top/1 for 6.1", "old/1 from 6.1-rt", "old/1"]);
        assert_eq!(plan.jobs[1].after, [0]);
        assert_eq!(plan.jobs[3].after, [2]);
        assert_eq!(dropped.len(), 3);
        // 6.1-rt keeps depmod: a removal still touches it.
        assert_eq!(plan.depmod, ["6.1", "6.1-rt", "6.2"]);
    }

    #[test]
    fn depmod_is_dropped_for_a_kernel_whose_jobs_are_all_excluded() {
        let excludes = Excludes { kernels: vec![glob::Pattern::new("k2").unwrap()], modules: vec![] };
        let plan = Plan {
            jobs: vec![install("a", "k1", &[]), install("a", "k2", &[])],
            depmod: vec!["k1".into(), "k2".into()],
            notices: vec![],
            ..Plan::default()
        };
        let (plan, _) = apply(plan, &excludes);
        assert_eq!(plan.depmod, ["k1"]);
    }
}
