//! `dkms-hook sync`: the plan that brings dkms in line with the installed packages, run in a
//! session like a hook's. The planning is pure: an `Inventory` (and the state file) in, a `Plan`
//! for the same runner out; the session drops what the configuration excludes, as for a hook.
//!
//! The desired state is every packaged module source (a package owns its dkms.conf and the file
//! reads) installed for every kernel with headers, less the excluded pairs. From there:
//! - dkms builds for kernels that are no longer installed are removed;
//! - module versions whose source directory is gone are removed from every kernel, then
//!   unregistered (a source directory no package owns is the user's and is left alone);
//! - pairs that are not installed are installed, BUILD_DEPENDS first, each after the removal of
//!   other versions of the same module from that kernel. Only what is missing is planned, so a
//!   sync of a system in order runs nothing. A pair that dkms skipped (BUILD_EXCLUSIVE) is not
//!   retried: neither its dkms.conf nor its kernel can have changed without a new version.
//!
//! depmod runs once for every installed kernel that a job touches.

use std::collections::{BTreeMap, BTreeSet};

use std::process::ExitCode;

use anyhow::Result;

use crate::config::Config;
use crate::inventory::{DkmsConf, Inventory};
use crate::plan::{dependency_order, shipped_by_several, Job, JobKind, ModuleId, Notice, Plan};
use crate::report::Heading;
use crate::session::{Begun, Session};
use crate::state::{Last, State};

/// `dkms-hook sync`: plans what the installed packages imply and runs it like a hook.
pub fn run(config: &Config) -> Result<ExitCode> {
    let session = match Session::begin(config)? {
        Begun::Stopped(code) => return Ok(code),
        Begun::Ready(session) => session,
    };
    let inventory = session.inventory(None)?;
    let state = State::load_or_warn(&config.layout.state_file());
    session.run(Heading::Sync, &inventory, plan(&inventory, &state))
}

/// Plans what `sync` does.
pub fn plan(inv: &Inventory, state: &State) -> Plan {
    let mut plan = Plan::default();
    let mut depmod: BTreeSet<String> = BTreeSet::new();
    // Removal and unregister jobs by module name, so installs of another version wait for them.
    let mut leaving: BTreeMap<String, Vec<(usize, Option<String>)>> = BTreeMap::new();

    // 1. What is left over.
    let present: BTreeSet<&str> = inv.sources.keys().map(String::as_str).collect();
    let mut unregister = Vec::new();
    for ((name, version), entry) in &inv.tree.entries {
        let id = ModuleId::new(name, version);
        let orphan = entry.source_dir.as_deref().is_none_or(|d| !present.contains(d));
        let mut removals = Vec::new();
        for kver in entry.built.union(&entry.installed) {
            if orphan || !inv.kernels.contains_key(kver) {
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
        }
        if orphan {
            unregister.push((id, removals));
        }
    }
    for (id, after) in unregister {
        leaving.entry(id.name.clone()).or_default().push((plan.jobs.len(), None));
        plan.jobs.push(Job { kind: JobKind::Unregister, module: id, after });
    }

    // 2. What is missing.
    let mut sources: Vec<&DkmsConf> = Vec::new();
    for source in inv.sources.values().filter(|s| s.package.is_some()) {
        match &source.conf {
            Ok(conf) => sources.push(conf),
            Err(error) => plan.notices.push(Notice::BadSource { dir: source.dir.clone(), error: error.clone() }),
        }
    }
    // Two packages shipping the same module (foo-dkms and foo-git-dkms): installing both for a
    // kernel would have the second replace the first, so neither is built until one goes.
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
    for kernel in inv.kernels.values() {
        let wanted: Vec<&DkmsConf> = sources
            .iter()
            .copied()
            .filter(|c| !inv.tree.is_installed(&c.name, &c.version, &kernel.kver))
            .filter(|c| state.get(&c.name, &c.version, &kernel.kver).is_none_or(|r| r.last != Last::Skipped))
            .collect();
        if wanted.is_empty() {
            continue;
        }
        if kernel.headers.is_none() {
            plan.notices.push(Notice::NoHeaders {
                kver: kernel.kver.clone(),
                package: kernel.package.clone(),
                headers_package: kernel.headers_package(),
            });
            continue;
        }
        let items: Vec<(&str, &[String])> = wanted.iter().map(|c| (c.name.as_str(), &c.build_depends[..])).collect();
        let (order, cycle) = dependency_order(&items);
        if !cycle.is_empty() {
            plan.notices.push(Notice::DependencyCycle { kernel: kernel.kver.clone(), modules: cycle });
        }
        let mut index_of: BTreeMap<&str, usize> = BTreeMap::new();
        for conf in order.into_iter().map(|i| wanted[i]) {
            let mut after: Vec<usize> =
                conf.build_depends.iter().filter_map(|d| index_of.get(d.as_str()).copied()).collect();
            // The old version leaves this kernel (or the tree) first.
            for (i, k) in leaving.get(&conf.name).into_iter().flatten() {
                if k.as_ref().is_none_or(|k| *k == kernel.kver) {
                    after.push(*i);
                }
            }
            after.sort_unstable();
            index_of.insert(&conf.name, plan.jobs.len());
            plan.jobs.push(Job {
                kind: JobKind::Install { kernel: kernel.kver.clone() },
                module: ModuleId::new(&conf.name, &conf.version),
                after,
            });
        }
        depmod.insert(kernel.kver.clone());
    }
    plan.depmod = depmod.into_iter().collect();
    plan.note_build_depends(inv);
    plan
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inventory::dkms_tree::TreeEntry;
    use crate::inventory::{Kernel, ModuleSource};
    use crate::plan::ModuleId;

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
            self.inv.sources.insert(dir.clone(), ModuleSource { dir, package, conf: Ok(conf) });
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
            crate::exclude::apply(plan(&self.inv, &self.state), &self.excludes).0
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
    fn versions_whose_source_is_gone_are_removed_and_unregistered_before_the_new_one() {
        let w = two().source("a", "2", &[]).installed("a", "1", &["k1", "old"]);
        let p = w.plan();
        assert_eq!(
            jobs(&p),
            ["remove a/1 from k1", "remove a/1 from old", "unregister a/1", "install a/2 for k1", "install a/2 for k2"]
        );
        assert_eq!(p.jobs[2].after, [0, 1]);
        assert_eq!(p.jobs[3].after, [0, 2]);
        assert_eq!(p.jobs[4].after, [2]);
        assert_eq!(p.depmod, ["k1", "k2"]);
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
        w.state.record(&job, &crate::run::Outcome::Skipped, None, 1);
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
        let failed = crate::run::Outcome::ExecFailed { error: "x".into() };
        w.state.record(&job, &failed, None, 1);
        assert_eq!(jobs(&w.plan()), ["install a/1 for k1"]);
    }
}
