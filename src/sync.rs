//! `dkms-hook sync`: the plan that brings dkms in line with the installed packages, run in a
//! session like a hook's. The planning is pure: an `Inventory` (and the state file) in, a `Plan`
//! for the same runner out; the session drops what the configuration excludes, as for a hook.
//!
//! The desired state is every packaged module source (a package owns its dkms.conf and the file
//! reads) installed for every kernel with headers, less the excluded pairs. From there:
//! - dkms builds for kernels that are no longer installed are removed;
//! - module versions whose source directory is gone are removed from every kernel, then
//!   unregistered (a source directory no package owns is the user's and is left alone) — except
//!   where another version of the module is packaged and the old one is still installed for a
//!   kernel: there the new version replaces it (built first, swapped in when it works), and a
//!   kernel without headers keeps it;
//! - pairs that are not installed are installed, BUILD_DEPENDS first, each after the removal of
//!   other versions of the same module from that kernel; a build kept after its replacement
//!   failed, or made from sources other than the packaged ones (the state file says which), is
//!   replaced. Only what is missing is planned, so a sync of a system in order runs nothing. A
//!   pair that dkms skipped (BUILD_EXCLUSIVE) is not retried: neither its dkms.conf nor its
//!   kernel can have changed without a new version.
//!
//! depmod runs once for every installed kernel that a job touches.

use std::collections::{BTreeMap, BTreeSet};

use std::process::ExitCode;

use anyhow::Result;

use crate::config::Config;
use crate::domain::{Job, JobKind, ModuleId};
use crate::inventory::{DkmsConf, Inventory, Scope};
use crate::plan::{dependency_order, job_for, shipped_by_several, Compare, Notice, Plan};
use crate::report::Heading;
use crate::session::{Begun, Session};
use crate::state::{Last, State};

/// `dkms-hook sync`: plans what the installed packages imply and runs it like a hook.
pub fn run(config: &Config) -> Result<ExitCode> {
    let session = match Session::begin(config)? {
        Begun::Stopped(code) => return Ok(code),
        Begun::Ready(session) => session,
    };
    let mut inventory = session.inventory(Scope { all_digests: true, signatures: true, ..Scope::default() })?;
    // Kernels whose headers a transaction replaced in place without its install hook finishing.
    inventory.headers_in_place = crate::inventory::headers::in_place(&config.layout, inventory.kernels.keys());
    let state = session.state();
    let plan = plan(&inventory, &state);
    let code = session.run(Heading::Sync, &inventory, state, plan)?;
    if !config.dry_run {
        for kver in inventory.kernels.keys() {
            crate::rebuilt::forget(&config.layout, kver);
        }
    }
    Ok(code)
}

/// Plans what `sync` does.
pub fn plan(inv: &Inventory, state: &State) -> Plan {
    let mut plan = Plan::default();
    let mut depmod: BTreeSet<String> = BTreeSet::new();
    let sources = usable_sources(inv, &mut plan);
    let leaving = plan_leftovers(inv, &sources, &mut plan, &mut depmod);
    for kernel in inv.kernels.values() {
        plan_missing(inv, state, kernel, &sources, &leaving, &mut plan, &mut depmod);
    }
    plan.retire_replaced();
    plan.depmod = depmod.into_iter().collect();
    plan.note_build_depends(inv);
    plan
}

/// Removal and unregister jobs by module name (the kernel, or `None` for unregistering), so
/// installs of another version of the module wait for them.
type Leaving = BTreeMap<String, Vec<(usize, Option<String>)>>;

/// What is left over: builds for kernels that are gone are removed; module versions whose source
/// directory is gone are removed from every kernel, then unregistered — but where another version
/// of the module is packaged, an installed kernel keeps the old one until it is replaced.
fn plan_leftovers(inv: &Inventory, sources: &[&DkmsConf], plan: &mut Plan, depmod: &mut BTreeSet<String>) -> Leaving {
    let mut leaving = Leaving::new();
    let present: BTreeSet<&str> = inv.sources.keys().map(String::as_str).collect();
    let mut unregister = Vec::new();
    for ((name, version), entry) in &inv.tree.entries {
        let id = ModuleId::new(name, version);
        // Kept sources stand in for `usr/src/NAME-VERSION` while a replacement is pending.
        let source_dir = match &entry.kept {
            Some(_) => Some(format!("{name}-{version}")),
            None => entry.source_dir.clone(),
        };
        let orphan = source_dir.as_deref().is_none_or(|d| !present.contains(d));
        let replaceable = orphan && sources.iter().any(|c| c.name == *name);
        let serving = |k: &String| replaceable && entry.installed.contains(k) && inv.kernels.contains_key(k);
        let mut removals = Vec::new();
        for kver in
            entry.built.union(&entry.installed).filter(|k| (orphan && !serving(k)) || !inv.kernels.contains_key(*k))
        {
            if inv.kernels.contains_key(kver) {
                depmod.insert(kver.clone());
            } else {
                plan.gone_kernels.insert(kver.clone());
            }
            removals.push(plan.jobs.len());
            leaving.entry(name.clone()).or_default().push((plan.jobs.len(), Some(kver.clone())));
            plan.jobs.push(Job {
                kind: JobKind::Remove { kernel: kver.clone() },
                module: id.clone(),
                after: Vec::new(),
            });
        }
        if orphan && !entry.installed.iter().any(serving) {
            unregister.push((id, removals));
        }
    }
    for (id, after) in unregister {
        leaving.entry(id.name.clone()).or_default().push((plan.jobs.len(), None));
        plan.jobs.push(Job { kind: JobKind::Unregister, module: id, after });
    }
    leaving
}

/// The packaged module sources that can be built, in name order: an unreadable dkms.conf and a
/// module shipped by two packages (foo-dkms and foo-git-dkms, which would replace each other's
/// build) are errors, and neither is built until one goes.
fn usable_sources<'i>(inv: &'i Inventory, plan: &mut Plan) -> Vec<&'i DkmsConf> {
    let mut sources: Vec<&DkmsConf> = Vec::new();
    for source in inv.sources.values().filter(|s| s.package.is_some()) {
        match &source.conf {
            Ok(conf) => sources.push(conf),
            Err(error) => plan.notices.push(Notice::BadSource { dir: source.dir.clone(), error: error.clone() }),
        }
    }
    for (module, shipped) in shipped_by_several(inv) {
        sources.retain(|c| c.name != module);
        let error = Notice::SeveralPackages {
            module: module.to_owned(),
            shipped: shipped.iter().map(|(_, s)| s.clone()).collect(),
        }
        .to_string();
        for (dir, _) in shipped {
            plan.notices.push(Notice::BadSource { dir: dir.to_owned(), error: error.clone() });
        }
    }
    sources.sort_by(|a, b| (&a.name, &a.version).cmp(&(&b.name, &b.version)));
    sources
}

/// What is missing for one kernel: every usable source not installed for it (nor skipped by
/// BUILD_EXCLUSIVE last time), or installed as another version or from other sources (replaced),
/// BUILD_DEPENDS first, each after its module's other versions left.
fn plan_missing(
    inv: &Inventory,
    state: &State,
    kernel: &crate::inventory::Kernel,
    sources: &[&DkmsConf],
    leaving: &Leaving,
    plan: &mut Plan,
    depmod: &mut BTreeSet<String>,
) {
    let wanted: Vec<(&DkmsConf, JobKind)> = sources
        .iter()
        .filter_map(|c| {
            let id = ModuleId::new(&c.name, &c.version);
            let digest = inv.sources.get(&format!("{}-{}", c.name, c.version)).and_then(|s| s.digest.as_deref());
            // Built against headers that were replaced in place since: built again.
            let compare = match inv.headers_in_place.get(&kernel.kver) {
                Some(false) => Compare::NewHeaders,
                _ => Compare::Recorded,
            };
            let kind = job_for(inv, state, &id, digest, &kernel.kver, compare)?;
            let skipped = state.get(&c.name, &c.version, &kernel.kver).is_some_and(|r| r.last == Last::Skipped);
            (!(skipped && matches!(kind, JobKind::Install { .. }))).then_some((*c, kind))
        })
        .collect();
    if wanted.is_empty() {
        return;
    }
    if kernel.headers.is_none() {
        plan.notices.push(Notice::NoHeaders {
            kver: kernel.kver.clone(),
            package: kernel.package.clone(),
            headers_package: kernel.headers_package(),
        });
        return;
    }
    let items: Vec<(&str, &[String])> = wanted.iter().map(|(c, _)| (c.name.as_str(), &c.build_depends[..])).collect();
    let (order, cycle) = dependency_order(&items);
    if !cycle.is_empty() {
        plan.notices.push(Notice::DependencyCycle { kernel: kernel.kver.clone(), modules: cycle });
    }
    let mut index_of: BTreeMap<&str, usize> = BTreeMap::new();
    let mut builds = false;
    for (conf, kind) in order.into_iter().map(|i| wanted[i].clone()) {
        let mut after: Vec<usize> =
            conf.build_depends.iter().filter_map(|d| index_of.get(d.as_str()).copied()).collect();
        after.extend(
            leaving
                .get(&conf.name)
                .into_iter()
                .flatten()
                .filter(|(_, k)| k.as_ref().is_none_or(|k| *k == kernel.kver))
                .map(|(i, _)| *i),
        );
        after.sort_unstable();
        index_of.insert(&conf.name, plan.jobs.len());
        builds |= !matches!(kind, JobKind::Unchanged { .. });
        plan.jobs.push(Job { kind, module: ModuleId::new(&conf.name, &conf.version), after });
    }
    if builds {
        depmod.insert(kernel.kver.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::ModuleId;
    use crate::inventory::dkms_tree::TreeEntry;
    use crate::inventory::{Kernel, ModuleSource};

    #[derive(Default)]
    struct World {
        inv: Inventory,
        excludes: crate::config::Excludes,
        state: State,
    }

    impl World {
        fn kernel(mut self, kver: &str, headers: bool) -> Self {
            let k = Kernel {
                kver: kver.into(),
                package: format!("linux-{kver}"),
                pkgbase: format!("linux-{kver}"),
                headers: headers.then(|| format!("linux-{kver}-headers")),
            };
            self.inv.kernels.insert(kver.into(), k);
            self
        }
        fn source(mut self, name: &str, version: &str, depends: &[&str]) -> Self {
            let dir = format!("{name}-{version}");
            let conf = DkmsConf {
                name: name.into(),
                version: version.into(),
                build_depends: depends.iter().map(|s| s.to_string()).collect(),
                ..Default::default()
            };
            let package = Some(format!("{name}-dkms"));
            self.inv.sources.insert(dir.clone(), ModuleSource { dir, package, conf: Ok(conf), digest: None });
            self
        }
        fn unpackaged(mut self, name: &str, version: &str) -> Self {
            self = self.source(name, version, &[]);
            self.inv.sources.get_mut(&format!("{name}-{version}")).unwrap().package = None;
            self
        }
        fn tree(mut self, name: &str, version: &str, source: Option<&str>, built: &[&str], installed: &[&str]) -> Self {
            self.inv.tree.entries.insert(
                (name.into(), version.into()),
                TreeEntry {
                    source_dir: source.map(str::to_owned),
                    kept: None,
                    built: built.iter().map(|s| s.to_string()).collect(),
                    installed: installed.iter().map(|s| s.to_string()).collect(),
                },
            );
            self
        }
        fn installed(self, name: &str, version: &str, kernels: &[&str]) -> Self {
            let dir = format!("{name}-{version}");
            self.tree(name, version, Some(&dir), kernels, kernels)
        }
        /// The plan as the session runs it: excluded pairs dropped.
        fn plan(&self) -> Plan {
            crate::plan::exclude(plan(&self.inv, &self.state), &self.excludes).0
        }
    }

    fn jobs(plan: &Plan) -> Vec<String> {
        plan.jobs.iter().map(|j| format!("{} {j}", j.verb())).collect()
    }

    fn two() -> World {
        World::default().kernel("k1", true).kernel("k2", true)
    }

    #[test]
    fn a_system_in_order_plans_nothing() {
        let w = two().source("a", "1", &[]).installed("a", "1", &["k1", "k2"]);
        assert_eq!(w.plan(), Plan::default());
    }

    #[test]
    fn missing_and_built_pairs_are_installed() {
        let w = two().source("a", "1", &[]).tree("a", "1", Some("a-1"), &["k1", "k2"], &["k1"]).source("b", "2", &[]);
        let p = w.plan();
        assert_eq!(jobs(&p), ["install b/2 for k1", "install a/1 for k2", "install b/2 for k2"]);
        assert_eq!(p.depmod, ["k1", "k2"]);
        assert!(p.notices.is_empty());
    }

    #[test]
    fn builds_for_kernels_that_are_gone_are_removed_without_depmod() {
        let w = two().source("a", "1", &[]).installed("a", "1", &["k1", "k2", "old"]);
        let p = w.plan();
        assert_eq!(jobs(&p), ["remove a/1 from old"]);
        assert!(p.depmod.is_empty());
    }

    #[test]
    fn versions_whose_source_is_gone_are_replaced_where_installed_then_retired() {
        let w = two().source("a", "2", &[]).installed("a", "1", &["k1", "old"]);
        let p = w.plan();
        assert_eq!(jobs(&p), ["remove a/1 from old", "replace a/2 for k1", "install a/2 for k2", "retire a/1"]);
        assert!(p.jobs[1].after.is_empty(), "k1 keeps a/1 until a/2 is built");
        assert_eq!(p.jobs[3].kind, JobKind::Retire { replacing: vec![1] });
        assert_eq!(p.depmod, ["k1", "k2"]);
        // Without another packaged version, the old one is removed everywhere and unregistered.
        let w = two().installed("a", "1", &["k1", "old"]);
        let p = w.plan();
        assert_eq!(jobs(&p), ["remove a/1 from k1", "remove a/1 from old", "unregister a/1"]);
        assert_eq!(p.jobs[2].after, [0, 1]);
    }

    #[test]
    fn a_kernel_without_headers_keeps_the_old_version_it_has() {
        let w = World::default().kernel("k1", true).kernel("k2", false).source("a", "2", &[]).installed(
            "a",
            "1",
            &["k1", "k2"],
        );
        let p = w.plan();
        assert_eq!(jobs(&p), ["replace a/2 for k1", "retire a/1"]);
        assert!(matches!(&p.notices[..], [Notice::NoHeaders { kver, .. }] if kver == "k2"));
    }

    #[test]
    fn builds_made_from_other_sources_or_kept_are_replaced() {
        let mut w = two().source("a", "1", &[]).installed("a", "1", &["k1", "k2"]);
        w.inv.sources.get_mut("a-1").unwrap().digest = Some("new".into());
        let record = |w: &mut World, k: &str, digest: &str, kept: bool| {
            let job =
                Job { kind: JobKind::Install { kernel: k.into() }, module: ModuleId::new("a", "1"), after: vec![] };
            let outcome = if kept {
                let failed = crate::domain::Outcome::ExecFailed { error: "x".into() };
                crate::domain::Outcome::Kept { old: "1".into(), failure: Box::new(failed) }
            } else {
                crate::domain::Outcome::Installed
            };
            w.state.record(&job, &crate::domain::Outcome::Installed, None, 1, Some(digest));
            w.state.record(&job, &outcome, None, 2, Some(digest));
        };
        // Builds made before digests were recorded are trusted; one recorded as made from other
        // sources, or kept after its replacement failed, is replaced.
        assert_eq!(w.plan(), Plan::default());
        record(&mut w, "k1", "old", false);
        assert_eq!(jobs(&w.plan()), ["replace a/1 for k1"]);
        record(&mut w, "k1", "new", false);
        record(&mut w, "k2", "new", true);
        assert_eq!(jobs(&w.plan()), ["replace a/1 for k2"]);
        // dkms's link left at kept sources goes back when the build is current.
        record(&mut w, "k2", "new", false);
        w.inv.tree.entries.get_mut(&("a".into(), "1".into())).unwrap().kept = Some("new".into());
        let p = w.plan();
        assert_eq!(jobs(&p), ["keep a/1 for k1", "keep a/1 for k2"]);
        assert!(p.depmod.is_empty());
    }

    #[test]
    fn builds_not_signed_as_the_system_signs_are_replaced() {
        let mut w = two().source("a", "1", &[]).installed("a", "1", &["k1", "k2"]);
        assert_eq!(w.plan(), Plan::default());
        w.inv.not_signed.insert(("a".into(), "1".into(), "k2".into()));
        assert_eq!(jobs(&w.plan()), ["replace a/1 for k2"]);
    }

    #[test]
    fn registrations_without_a_source_link_are_unregistered() {
        let w = two().tree("ghost", "0.1", None, &[], &[]);
        assert_eq!(jobs(&w.plan()), ["unregister ghost/0.1"]);
    }

    #[test]
    fn unpackaged_sources_are_left_alone() {
        let w = two().unpackaged("mine", "1").installed("mine", "1", &["k1"]);
        assert_eq!(w.plan(), Plan::default());
    }

    #[test]
    fn kernels_without_headers_get_a_notice() {
        let w =
            World::default().kernel("k1", true).kernel("k2", false).source("a", "1", &[]).installed("a", "1", &["k1"]);
        let p = w.plan();
        assert!(p.jobs.is_empty());
        assert!(matches!(&p.notices[..], [Notice::NoHeaders { kver, .. }] if kver == "k2"));
        // Installed already: nothing to say.
        let w = World::default().kernel("k2", false).source("a", "1", &[]).installed("a", "1", &["k2"]);
        assert_eq!(w.plan(), Plan::default());
    }

    #[test]
    fn bad_sources_are_errors() {
        let mut w = two();
        w.inv.sources.insert(
            "bad".into(),
            ModuleSource {
                dir: "bad".into(),
                package: Some("bad-dkms".into()),
                conf: Err("PACKAGE_NAME is empty".into()),
                digest: None,
            },
        );
        let p = w.plan();
        assert!(p.jobs.is_empty() && p.notices[0].is_error());
    }

    #[test]
    fn build_depends_come_first_and_are_waited_for() {
        let w = World::default().kernel("k1", true).source("aa-top", "1", &["zz-base"]).source("zz-base", "1", &[]);
        let p = w.plan();
        assert_eq!(jobs(&p), ["install zz-base/1 for k1", "install aa-top/1 for k1"]);
        assert_eq!(p.jobs[1].after, [0]);
        // An installed dependency needs no job and no wait.
        let w = World::default()
            .kernel("k1", true)
            .source("aa-top", "1", &["zz-base"])
            .source("zz-base", "1", &[])
            .installed("zz-base", "1", &["k1"]);
        let p = w.plan();
        assert_eq!(jobs(&p), ["install aa-top/1 for k1"]);
        assert!(p.jobs[0].after.is_empty());
    }

    #[test]
    fn excluded_pairs_and_skipped_pairs_are_not_planned() {
        let mut w = two().source("a", "1", &[]).source("nv", "1", &[]);
        w.excludes.kernels.push(glob::Pattern::new("k2").unwrap());
        w.excludes.modules.push(glob::Pattern::new("nv").unwrap());
        let job =
            Job { kind: JobKind::Install { kernel: "k1".into() }, module: ModuleId::new("a", "1"), after: vec![] };
        w.state.record(&job, &crate::domain::Outcome::Skipped, None, 1, None);
        assert_eq!(w.plan(), Plan::default());
    }

    #[test]
    fn a_module_shipped_by_two_packages_is_not_built() {
        let mut w = World::default().kernel("k1", true).source("foo", "1.0", &[]).source("foo", "2.0.r5", &[]);
        w.inv.sources.get_mut("foo-2.0.r5").unwrap().package = Some("foo-git-dkms".into());
        let p = w.plan();
        assert!(p.jobs.is_empty());
        assert_eq!(p.notices.len(), 2);
        assert!(p.notices[0].is_error());
        let msg = p.notices[0].to_string();
        assert!(msg.contains("foo/1.0 from foo-dkms") && msg.contains("foo/2.0.r5 from foo-git-dkms"), "{msg}");
    }

    #[test]
    fn failed_pairs_are_retried() {
        let mut w = World::default().kernel("k1", true).source("a", "1", &[]);
        let job =
            Job { kind: JobKind::Install { kernel: "k1".into() }, module: ModuleId::new("a", "1"), after: vec![] };
        let failed = crate::domain::Outcome::ExecFailed { error: "x".into() };
        w.state.record(&job, &failed, None, 1, None);
        assert_eq!(jobs(&w.plan()), ["install a/1 for k1"]);
    }
}
