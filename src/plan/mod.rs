//! From targets and inventory to a plan: which (module, version, kernel) jobs to run, in what
//! order, which kernels get depmod, and what to tell the user. Pure: no filesystem, no processes.
//!
//! Install (PostTransaction): each changed module × every kernel with headers, and every module
//! × each changed kernel; a kernel without headers gets a notice naming the package to install.
//! For one kernel, a module's BUILD_DEPENDS come before it. Where another version of the module
//! (or the same version built from other sources) is installed for the kernel, the job replaces
//! it: the new build is made privately first and swapped in only when it works, so a build that
//! fails leaves the version that worked. Sources byte-identical to those the installed build was
//! made from need no job beyond saying so (`Unchanged`). A replaced version leaves the dkms tree
//! once no kernel uses it (`Retire`).
//! Remove (PreTransaction): a module that stays (the upgrade hook's rebuild, or a directory of the
//! same module coming in the same transaction) is not removed: its sources are kept for dkms (`Preserve`) until its
//! replacement is in. A module that leaves is removed from every kernel dkms built it for and
//! then unregistered; a leaving kernel loses all its modules; headers leaving alone keep the
//! installed modules (they still load). depmod runs once per kernel that changed and stays,
//! never for a leaving kernel, never for the rebuild removal of the upgrade hook.

pub mod boot;
pub mod companions;
mod exclude;
mod install;
mod jobs;
mod order;
mod remove;
mod swap;

use crate::domain::Operation;
use crate::inventory::Inventory;
use crate::state::State;
use crate::targets::Targets;
pub use exclude::apply as exclude;
pub use install::shipped_by_several;
pub use jobs::{Notice, Plan};
pub(crate) use order::dependency_order;
pub(crate) use swap::{job_for, Compare};

/// Plans the jobs for `operation` on `targets`, given what is installed and what the state file
/// remembers (which sources each installed build was made from).
pub fn plan(operation: Operation, targets: &Targets, inv: &Inventory, state: &State) -> Plan {
    match operation {
        Operation::Install => install::plan_install(targets, inv, state),
        Operation::Remove { rebuild } => remove::plan_remove(targets, inv, rebuild),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Job, JobKind, ModuleId};
    use crate::inventory::dkms_tree::TreeEntry;
    use crate::inventory::{DkmsConf, Kernel, ModuleSource};

    /// A small world: kernels `(kver, package, has headers)`, sources `(dir, name, version,
    /// depends)`, tree entries `(name, version, source dir, built, installed)`, and the state
    /// file's records of which sources installed builds were made from.
    struct World {
        inv: Inventory,
        state: State,
    }

    impl World {
        fn new() -> Self {
            World { inv: Inventory::default(), state: State::default() }
        }
        /// The digest of `usr/src/DIR` (as the inventory computes it for targets).
        fn digest(mut self, dir: &str, digest: &str) -> Self {
            self.inv.sources.get_mut(dir).unwrap().digest = Some(digest.into());
            self
        }
        /// The state file says `name/version`'s build for `kernel` was made from sources `digest`
        /// (`kept`: its replacement failed and it stays).
        fn made_from(mut self, name: &str, version: &str, kernel: &str, digest: &str, kept: bool) -> Self {
            let job = Job {
                kind: JobKind::Install { kernel: kernel.into() },
                module: ModuleId::new(name, version),
                after: vec![],
            };
            self.state.record(&job, &crate::domain::Outcome::Installed, None, 1, Some(digest));
            if kept {
                let replace = Job {
                    kind: JobKind::Replace { kernel: kernel.into(), old: version.into(), old_digest: None },
                    ..job
                };
                let failed = crate::domain::Outcome::ExecFailed { error: "x".into() };
                let outcome = crate::domain::Outcome::Kept { old: version.into(), failure: Box::new(failed) };
                self.state.record(&replace, &outcome, None, 2, None);
            }
            self
        }
        /// Tree entry `name/version` with its `source` link at kept sources `digest`.
        fn kept_sources(mut self, name: &str, version: &str, digest: &str) -> Self {
            self.inv.tree.entries.get_mut(&(name.into(), version.into())).unwrap().kept = Some(digest.into());
            self
        }
        fn kernel(mut self, kver: &str, package: &str, headers: bool) -> Self {
            self.inv.kernels.insert(
                kver.into(),
                Kernel {
                    kver: kver.into(),
                    package: package.into(),
                    pkgbase: package.into(),
                    headers: headers.then(|| format!("{package}-headers")),
                },
            );
            self
        }
        fn source(mut self, dir: &str, name: &str, version: &str, depends: &[&str]) -> Self {
            let conf = DkmsConf {
                name: name.into(),
                version: version.into(),
                build_depends: depends.iter().map(|s| s.to_string()).collect(),
                ..Default::default()
            };
            self.inv.sources.insert(
                dir.into(),
                ModuleSource { dir: dir.into(), package: Some(format!("{name}-dkms")), conf: Ok(conf), digest: None },
            );
            self
        }
        fn bad_source(mut self, dir: &str, error: &str) -> Self {
            self.inv.sources.insert(
                dir.into(),
                ModuleSource { dir: dir.into(), package: Some("x".into()), conf: Err(error.into()), digest: None },
            );
            self
        }
        fn built(mut self, name: &str, version: &str, dir: &str, built: &[&str], installed: &[&str]) -> Self {
            self.inv.tree.entries.insert(
                (name.into(), version.into()),
                TreeEntry {
                    source_dir: Some(dir.into()),
                    kept: None,
                    built: built.iter().map(|s| s.to_string()).collect(),
                    installed: installed.iter().map(|s| s.to_string()).collect(),
                },
            );
            self
        }
        fn plan(&self, op: Operation, stdin: &str) -> Plan {
            plan(op, &Targets::parse(stdin.as_bytes()), &self.inv, &self.state)
        }
    }

    fn jobs(plan: &Plan) -> Vec<String> {
        plan.jobs.iter().map(|j| format!("{} {j}", j.verb())).collect()
    }

    const INSTALL: Operation = Operation::Install;
    const REMOVE: Operation = Operation::Remove { rebuild: false };
    const REBUILD: Operation = Operation::Remove { rebuild: true };

    /// The kernels of [`two_kernels`].
    const BOTH: &[&str] = &["6.12.1-arch1-1", "6.6.30-1-lts"];

    fn two_kernels() -> World {
        World::new().kernel("6.12.1-arch1-1", "linux", true).kernel("6.6.30-1-lts", "linux-lts", true)
    }

    #[test]
    fn module_install_builds_for_every_kernel_with_headers() {
        let w = two_kernels().source("hello-1.0", "hello", "1.0", &[]);
        let p = w.plan(INSTALL, "usr/src/hello-1.0/dkms.conf\n");
        assert_eq!(jobs(&p), ["install hello/1.0 for 6.12.1-arch1-1", "install hello/1.0 for 6.6.30-1-lts"]);
        assert_eq!(p.depmod, ["6.12.1-arch1-1", "6.6.30-1-lts"]);
        assert!(p.notices.is_empty());
    }

    #[test]
    fn new_headers_build_every_packaged_module_for_that_kernel() {
        let w = two_kernels().source("a-1", "a", "1", &[]).source("b-2", "b", "2", &[]);
        let p = w.plan(INSTALL, "usr/lib/modules/6.6.30-1-lts/build/include/\n");
        assert_eq!(jobs(&p), ["install a/1 for 6.6.30-1-lts", "install b/2 for 6.6.30-1-lts"]);
        assert_eq!(p.depmod, ["6.6.30-1-lts"]);
    }

    #[test]
    fn unpackaged_sources_are_not_built_for_new_kernels() {
        let mut w = two_kernels().source("a-1", "a", "1", &[]);
        w.inv.sources.get_mut("a-1").unwrap().package = None;
        let p = w.plan(INSTALL, "usr/lib/modules/6.6.30-1-lts/modules.order\n");
        assert!(p.jobs.is_empty());
        assert!(p.depmod.is_empty());
    }

    #[test]
    fn already_installed_pairs_need_no_job() {
        let w = two_kernels()
            .source("hello-1.0", "hello", "1.0", &[])
            .digest("hello-1.0", "d1")
            .built("hello", "1.0", "hello-1.0", BOTH, &["6.12.1-arch1-1"])
            .made_from("hello", "1.0", "6.12.1-arch1-1", "d1", false);
        // The package (re)installed with the sources the installed build was made from.
        let p = w.plan(INSTALL, "usr/src/hello-1.0/dkms.conf\n");
        assert_eq!(jobs(&p), ["keep hello/1.0 for 6.12.1-arch1-1", "install hello/1.0 for 6.6.30-1-lts"]);
        assert_eq!(p.depmod, ["6.6.30-1-lts"]);
        // A kernel's headers: an installed pair is not looked at at all.
        let p = w.plan(INSTALL, "usr/lib/modules/6.12.1-arch1-1/build/include/\n");
        assert_eq!(p, Plan::default());
    }

    #[test]
    fn changed_or_unknown_sources_of_an_installed_version_are_rebuilt_by_replacing_it() {
        let w = two_kernels()
            .source("hello-1.0", "hello", "1.0", &[])
            .digest("hello-1.0", "new")
            .built("hello", "1.0", "hello-1.0", BOTH, BOTH)
            .made_from("hello", "1.0", "6.12.1-arch1-1", "old", false);
        let p = w.plan(INSTALL, "usr/src/hello-1.0/dkms.conf\n");
        assert_eq!(jobs(&p), ["replace hello/1.0 for 6.12.1-arch1-1", "replace hello/1.0 for 6.6.30-1-lts"]);
        assert_eq!(
            p.jobs[0].kind,
            JobKind::Replace { kernel: "6.12.1-arch1-1".into(), old: "1.0".into(), old_digest: Some("old".into()) }
        );
        assert_eq!(
            p.jobs[1].kind,
            JobKind::Replace { kernel: "6.6.30-1-lts".into(), old: "1.0".into(), old_digest: None }
        );
        assert_eq!(p.depmod, ["6.12.1-arch1-1", "6.6.30-1-lts"]);
        // Replacing a version by itself leaves nothing to retire.
        assert!(!p.jobs.iter().any(|j| j.verb() == "retire"));
    }

    #[test]
    fn a_new_version_replaces_the_installed_one_and_retires_it_after() {
        let w = two_kernels()
            .source("hello-1.1", "hello", "1.1", &[])
            .digest("hello-1.1", "d11")
            .built("hello", "1.0", "hello-1.0", BOTH, BOTH)
            .kept_sources("hello", "1.0", "d10")
            .made_from("hello", "1.0", "6.12.1-arch1-1", "d10", false);
        let p = w.plan(INSTALL, "usr/src/hello-1.1/dkms.conf\n");
        assert_eq!(
            jobs(&p),
            ["replace hello/1.1 for 6.12.1-arch1-1", "replace hello/1.1 for 6.6.30-1-lts", "retire hello/1.0"]
        );
        assert_eq!(p.jobs[2].kind, JobKind::Retire { replacing: vec![0, 1] });
        assert_eq!(p.jobs[0].other_version(), Some(ModuleId::new("hello", "1.0")));
    }

    #[test]
    fn a_kept_build_is_retried_when_its_kernel_changes() {
        let w = two_kernels()
            .source("hello-1.0", "hello", "1.0", &[])
            .built("hello", "1.0", "hello-1.0", &["6.12.1-arch1-1"], &["6.12.1-arch1-1"])
            .made_from("hello", "1.0", "6.12.1-arch1-1", "old", true);
        let p = w.plan(INSTALL, "usr/lib/modules/6.12.1-arch1-1/build/include/\n");
        assert_eq!(jobs(&p), ["replace hello/1.0 for 6.12.1-arch1-1"]);
    }

    #[test]
    fn kernel_without_headers_gets_a_notice_and_no_job() {
        let w = World::new().kernel("6.12.1-arch1-1", "linux", true).kernel("6.6.30-1-lts", "linux-lts", false).source(
            "hello-1.0",
            "hello",
            "1.0",
            &[],
        );
        let p = w.plan(INSTALL, "usr/src/hello-1.0/dkms.conf\nusr/lib/modules/6.6.30-1-lts/modules.order\n");
        assert_eq!(jobs(&p), ["install hello/1.0 for 6.12.1-arch1-1"]);
        assert_eq!(
            p.notices,
            [Notice::NoHeaders {
                kver: "6.6.30-1-lts".into(),
                package: "linux-lts".into(),
                headers_package: "linux-lts-headers".into()
            }]
        );
        assert!(p.notices[0].to_string().contains("install linux-lts-headers"));
    }

    #[test]
    fn unowned_kernel_directory_is_not_a_kernel() {
        let w = two_kernels().source("hello-1.0", "hello", "1.0", &[]);
        let p = w.plan(INSTALL, "usr/lib/modules/6.1.0-old/build/include/\n");
        assert!(p.jobs.is_empty());
        assert_eq!(p.notices, [Notice::NotAKernel { kver: "6.1.0-old".into() }]);
        assert!(p.notices[0].is_info());
    }

    #[test]
    fn hyphenated_names_come_from_dkms_conf_not_the_directory() {
        let w = World::new().kernel("6.12.1-arch1-1", "linux", true).source(
            "xpad-neo-x-0.9-r12-g3a1b",
            "xpad-neo-x",
            "0.9-r12-g3a1b",
            &[],
        );
        let p = w.plan(INSTALL, "usr/src/xpad-neo-x-0.9-r12-g3a1b/dkms.conf\n");
        assert_eq!(p.jobs[0].module, ModuleId::new("xpad-neo-x", "0.9-r12-g3a1b"));
    }

    #[test]
    fn build_depends_come_first_per_kernel() {
        let w = two_kernels().source("zz-base-1", "zz-base", "1", &[]).source("aa-top-1", "aa-top", "1", &["zz-base"]);
        let p = w.plan(INSTALL, "usr/src/aa-top-1/dkms.conf\nusr/src/zz-base-1/dkms.conf\n");
        assert_eq!(
            jobs(&p),
            [
                "install zz-base/1 for 6.12.1-arch1-1",
                "install aa-top/1 for 6.12.1-arch1-1",
                "install zz-base/1 for 6.6.30-1-lts",
                "install aa-top/1 for 6.6.30-1-lts",
            ]
        );
        assert_eq!(p.jobs[1].after, [0]);
        assert_eq!(p.jobs[3].after, [2]);
        assert!(p.jobs[0].after.is_empty());
        assert_eq!(p.build_depends.len(), 1);
        assert_eq!(p.build_depends[&ModuleId::new("aa-top", "1")], ["zz-base"]);
    }

    #[test]
    fn a_module_shipped_by_two_packages_is_not_built_and_is_an_error() {
        let w = two_kernels().source("foo-1.0", "foo", "1.0", &[]).source("foo-2.0", "foo", "2.0", &[]).source(
            "bar-1",
            "bar",
            "1",
            &[],
        );
        let p = w.plan(INSTALL, "usr/lib/modules/6.6.30-1-lts/modules.order\n");
        assert_eq!(jobs(&p), ["install bar/1 for 6.6.30-1-lts"]);
        assert_eq!(p.notices.len(), 1);
        assert!(p.notices[0].is_error());
        let text = p.notices[0].to_string();
        assert!(text.contains("foo/1.0 from foo-dkms") && text.contains("foo/2.0 from foo-dkms"), "{text}");
    }

    #[test]
    fn dependency_cycle_is_reported_and_still_planned() {
        let w =
            World::new().kernel("k1", "linux", true).source("a-1", "a", "1", &["b"]).source("b-1", "b", "1", &["a"]);
        let p = w.plan(INSTALL, "usr/src/a-1/dkms.conf\nusr/src/b-1/dkms.conf\n");
        assert_eq!(p.jobs.len(), 2);
        assert!(matches!(p.notices[0], Notice::DependencyCycle { .. }));
    }

    #[test]
    fn bad_dkms_conf_is_an_error_once_and_others_still_build() {
        let w = two_kernels().bad_source("bad-1", "PACKAGE_NAME is empty").source("good-1", "good", "1", &[]);
        let p = w.plan(INSTALL, "usr/src/bad-1/dkms.conf\nusr/src/good-1/dkms.conf\n");
        assert_eq!(p.jobs.len(), 2);
        assert_eq!(p.notices.len(), 1);
        assert!(p.notices[0].is_error());
    }

    #[test]
    fn module_removal_removes_every_built_kernel_then_unregisters() {
        let w = two_kernels().source("hello-1.0", "hello", "1.0", &[]).built(
            "hello",
            "1.0",
            "hello-1.0",
            &["6.12.1-arch1-1", "5.0-gone"],
            &["6.12.1-arch1-1", "6.6.30-1-lts"],
        );
        let p = w.plan(REMOVE, "usr/src/hello-1.0/dkms.conf\n");
        assert_eq!(
            jobs(&p),
            [
                "remove hello/1.0 from 5.0-gone",
                "remove hello/1.0 from 6.12.1-arch1-1",
                "remove hello/1.0 from 6.6.30-1-lts",
                "unregister hello/1.0",
            ]
        );
        assert_eq!(p.jobs[3].after, [0, 1, 2]);
        // depmod only for installed kernels that stay.
        assert_eq!(p.depmod, ["6.12.1-arch1-1", "6.6.30-1-lts"]);
    }

    #[test]
    fn a_module_whose_package_stays_is_preserved_not_removed() {
        let installed = ["6.12.1-arch1-1", "6.6.30-1-lts"];
        let w = two_kernels().source("hello-1.0", "hello", "1.0", &[]).digest("hello-1.0", "d10").built(
            "hello",
            "1.0",
            "hello-1.0",
            &installed,
            &installed,
        );
        let preserve = |p: &Plan| {
            assert_eq!(jobs(p), ["preserve hello/1.0"]);
            assert_eq!(
                p.jobs[0].kind,
                JobKind::Preserve { digest: "d10".into(), installed: installed.map(String::from).to_vec() }
            );
            assert!(p.depmod.is_empty());
        };
        // The upgrade hook: the directory stays (a package release in the same directory).
        preserve(&w.plan(REBUILD, "usr/src/hello-1.0/dkms.conf\n"));
        // The remove hook, while the transaction brings another directory of the module (pacman
        // matches it as an Install target: no installed package owns it).
        preserve(&w.plan(REMOVE, "usr/src/hello-1.0/dkms.conf\nusr/src/hello-1.1/dkms.conf\n"));
    }

    #[test]
    fn only_a_directory_of_the_same_module_keeps_a_leaving_one() {
        let w = two_kernels().source("hello-1.0", "hello", "1.0", &[]).digest("hello-1.0", "d10").built(
            "hello",
            "1.0",
            "hello-1.0",
            &["6.12.1-arch1-1"],
            &["6.12.1-arch1-1"],
        );
        // Another module comes: hello leaves for good.
        let p = w.plan(REMOVE, "usr/src/hello-1.0/dkms.conf\nusr/src/hellox-2.0/dkms.conf\n");
        assert_eq!(jobs(&p), ["remove hello/1.0 from 6.12.1-arch1-1", "unregister hello/1.0"]);
        // A name of which `hello` is a prefix could be hello's next version: kept (the safe side).
        let p = w.plan(REMOVE, "usr/src/hello-1.0/dkms.conf\nusr/src/hello-extra-2.0/dkms.conf\n");
        assert_eq!(jobs(&p), ["preserve hello/1.0"]);
        // Only something coming (a first install): nothing to do and nothing to say.
        let p = w.plan(REMOVE, "usr/src/hello-1.1/dkms.conf\n");
        assert!(p.jobs.is_empty() && p.notices.is_empty() && p.depmod.is_empty(), "{p:?}");
    }

    #[test]
    fn a_leaving_module_takes_its_kept_versions_along() {
        let w = two_kernels()
            .source("hello-1.1", "hello", "1.1", &[])
            .built("hello", "1.1", "hello-1.1", &["6.6.30-1-lts"], &["6.6.30-1-lts"])
            .built("hello", "1.0", "x", &["6.12.1-arch1-1"], &["6.12.1-arch1-1"])
            .kept_sources("hello", "1.0", "d10");
        let p = w.plan(REMOVE, "usr/src/hello-1.1/dkms.conf\n");
        assert_eq!(
            jobs(&p),
            [
                "remove hello/1.0 from 6.12.1-arch1-1",
                "remove hello/1.1 from 6.6.30-1-lts",
                "unregister hello/1.0",
                "unregister hello/1.1"
            ]
        );
    }

    #[test]
    fn module_removal_falls_back_to_the_dkms_tree_when_dkms_conf_is_gone() {
        let w = two_kernels().built("foo-bar", "2-rc1", "foo-bar-2-rc1", &["6.12.1-arch1-1"], &["6.12.1-arch1-1"]);
        let p = w.plan(REMOVE, "usr/src/foo-bar-2-rc1/dkms.conf\n");
        assert_eq!(jobs(&p), ["remove foo-bar/2-rc1 from 6.12.1-arch1-1", "unregister foo-bar/2-rc1"]);
    }

    #[test]
    fn unregistered_module_removal_does_nothing() {
        let w = two_kernels().source("hello-1.0", "hello", "1.0", &[]);
        let p = w.plan(REMOVE, "usr/src/hello-1.0/dkms.conf\n");
        assert!(p.jobs.is_empty() && p.depmod.is_empty());
        assert!(p.notices[0].is_info());
    }

    #[test]
    fn leaving_kernel_loses_all_modules_and_gets_no_depmod() {
        let w = two_kernels().built("a", "1", "a-1", BOTH, BOTH).built("b", "2", "b-2", &["6.6.30-1-lts"], &[]);
        let p =
            w.plan(REMOVE, "usr/lib/modules/6.6.30-1-lts/build/include/\nusr/lib/modules/6.6.30-1-lts/modules.order\n");
        assert_eq!(jobs(&p), ["remove a/1 from 6.6.30-1-lts", "remove b/2 from 6.6.30-1-lts"]);
        assert!(p.depmod.is_empty());
        assert!(p.notices.is_empty());
    }

    #[test]
    fn headers_only_removal_keeps_installed_modules() {
        let w = two_kernels().built("a", "1", "a-1", &["6.6.30-1-lts"], &["6.6.30-1-lts"]);
        let p = w.plan(REMOVE, "usr/lib/modules/6.6.30-1-lts/build/include/\n");
        assert!(p.jobs.is_empty() && p.depmod.is_empty());
        assert_eq!(
            p.notices,
            [Notice::HeadersLeaving {
                kver: "6.6.30-1-lts".into(),
                package: "linux-lts".into(),
                kept: vec![ModuleId::new("a", "1")]
            }]
        );
        assert!(p.notices[0].to_string().contains("kept: a/1"));
    }

    #[test]
    fn rebuild_removal_runs_no_depmod() {
        let w = two_kernels().source("hello-1.0", "hello", "1.0", &[]).built(
            "hello",
            "1.0",
            "hello-1.0",
            &["6.12.1-arch1-1"],
            &["6.12.1-arch1-1"],
        );
        let p = w.plan(REBUILD, "usr/src/hello-1.0/dkms.conf\n");
        assert_eq!(jobs(&p), ["remove hello/1.0 from 6.12.1-arch1-1", "unregister hello/1.0"]);
        assert!(p.depmod.is_empty());
    }

    #[test]
    fn module_and_kernel_leaving_together_do_not_duplicate_jobs() {
        let w = two_kernels().source("a-1", "a", "1", &[]).built("a", "1", "a-1", BOTH, BOTH);
        let p = w.plan(REMOVE, "usr/src/a-1/dkms.conf\nusr/lib/modules/6.6.30-1-lts/modules.order\n");
        assert_eq!(jobs(&p), ["remove a/1 from 6.12.1-arch1-1", "remove a/1 from 6.6.30-1-lts", "unregister a/1"]);
        assert_eq!(p.depmod, ["6.12.1-arch1-1"]);
    }

    #[test]
    fn empty_or_garbage_targets_plan_nothing() {
        let w = two_kernels().source("a-1", "a", "1", &[]).built("a", "1", "a-1", &["6.6.30-1-lts"], &[]);
        for op in [INSTALL, REMOVE, REBUILD] {
            let p = w.plan(op, "\ngarbage\nusr/src/../dkms.conf\n");
            assert_eq!(p, Plan::default(), "{op:?}");
        }
    }
}
