//! Running a plan: dkms jobs and depmod (through the process runner), and the clean-up of
//! empty directories dkms leaves behind.
//!
//! Jobs run in parallel under one CPU budget (`schedule`): at most `jobs` dkms at once, each told
//! `make -j N` so the total stays near the core count. A job starts only when the jobs it
//! depends on (BUILD_DEPENDS, removals before unregistering) have succeeded. dkms keeps one build
//! directory per module version (`DKMSTREE/M/V/build`), so two jobs of the same module version
//! never touch the real tree at once: when one module version is installed for several
//! kernels, each kernel's build runs in a private dkms tree (`build`), in parallel, and only
//! moving the result in and the quick `dkms install` hold the module version's lock (`job`).
//!
//! A job's result is a value (`Outcome`): a failed build does not stop independent jobs, and
//! "could not start dkms" is kept apart from "dkms failed". Workers never print: the runner
//! hands each finished job to the caller's event sink, on the caller's thread.

pub mod boot;
pub mod build;
mod command;
mod job;
mod output;
mod runner;
mod schedule;
pub mod vermagic;

use std::time::{Duration, Instant};

use crate::domain::{JobKind, Layout};
use crate::interrupt::Stop;
use crate::plan::Plan;
pub use build::{clear_private_trees, Built, PrivateBuild};
pub use command::{Limits, Tools};
pub use output::{excerpt, exit_meaning, tail};
pub use runner::{Event, JobResult, Runner, Stats};
pub use vermagic::judge_vermagic;

impl Runner<'_> {
    /// Runs every job, reporting each through `sink` as it finishes, then tidies up and runs
    /// depmod; returns the totals.
    pub fn run(&self, plan: &Plan, sink: &mut dyn FnMut(Event)) -> Stats {
        let mut stats = schedule::Schedule::new(self, plan).run(sink);
        self.tidy(plan);
        self.depmod(plan, &mut stats, sink);
        stats
    }

    /// depmod for every kernel of the plan, in parallel. It is quick and leaves the kernel
    /// consistent with what was installed, so it runs even after a stop request (only the
    /// timeout applies).
    fn depmod(&self, plan: &Plan, stats: &mut Stats, sink: &mut dyn FnMut(Event)) {
        let never = Stop::new();
        let limits = Limits { timeout: self.timeout, stop: &never };
        let depmods: Vec<(&String, Result<Duration, String>)> = std::thread::scope(|scope| {
            let handles: Vec<_> = plan
                .depmod
                .iter()
                .map(|kver| {
                    scope.spawn(move || {
                        let t = Instant::now();
                        (kver, self.tools.depmod(self.layout, kver, limits).map(|()| t.elapsed()))
                    })
                })
                .collect();
            handles.into_iter().filter_map(|h| h.join().ok()).collect()
        });
        for (kver, result) in depmods {
            if result.is_err() {
                stats.depmod_failed += 1;
            }
            sink(Event::Depmod { kver, result });
        }
    }

    /// dkms removes modules but can leave `updates/dkms/` and `updates/` empty; an empty
    /// directory we leave would keep a removed kernel's module directory alive, and the module
    /// directory of a kernel that is gone is then empty too.
    fn tidy(&self, plan: &Plan) {
        for job in &plan.jobs {
            if let JobKind::Remove { kernel } = &job.kind {
                let kdir = self.layout.kernel_dir(kernel);
                let mut dirs = vec![kdir.join("updates/dkms"), kdir.join("updates")];
                if plan.gone_kernels.contains(kernel) {
                    dirs.push(kdir);
                }
                for dir in dirs {
                    // remove_dir only removes an empty directory: nothing of anyone's is lost.
                    let _ = std::fs::remove_dir(dir);
                }
            }
        }
    }
}

/// Fails early, changing nothing, when what the jobs must write is on a read-only file system.
pub fn preflight(layout: &Layout) -> anyhow::Result<()> {
    use nix::sys::statvfs::{statvfs, FsFlags};
    for (what, path) in [("the dkms tree", &layout.dkms_tree), ("the kernel module directory", &layout.module_dir)] {
        // The nearest existing directory tells which file system the path is on.
        let Some(existing) = path.ancestors().find(|p| p.exists()) else { continue };
        if statvfs(existing).is_ok_and(|s| s.flags().contains(FsFlags::ST_RDONLY)) {
            anyhow::bail!(
                "{what} {} is on a read-only file system: remount it read-write (`mount -o remount,rw {}`), then run `dkms-hook sync`",
                path.display(),
                existing.display()
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Outcome;

    #[test]
    fn failures_are_the_outcomes_that_count_against_the_run() {
        assert!(!Outcome::Skipped.is_failure());
        assert!(!Outcome::Installed.is_failure());
        assert!(Outcome::ExecFailed { error: "x".into() }.is_failure());
        assert!(Outcome::DependencyFailed { dependency: "x".into() }.is_failure());
        assert!(Outcome::Interrupted.is_failure());
        assert_eq!(exit_meaning(Some(10)), "the module build (make) failed");
        assert!(Outcome::WrongVermagic { module: "/m.ko".into(), vermagic: "x".into() }.is_failure());
    }
}
