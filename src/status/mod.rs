//! `dkms-hook status`: what each module source and kernel is, the state of every (module,
//! kernel) pair, and what is out of place — fast (directory listings and the state file; never
//! `dkms status`, which costs ~70 ms per built module) and without the lock, so it never waits
//! for or blocks a build.
//!
//! [`gather`] does the reading; [`Status::build`] is a pure function of what was read, so every
//! state is unit-tested without a system. The JSON form (`--json`) is the `Status` value itself
//! and is documented in `docs/status-json.md`: fields are only ever added to it, and `schema`
//! changes when anything else would.

mod gather;
mod model;
mod render;

use std::process::ExitCode;

use anyhow::{Context, Result};

use crate::config::{Config, Verbosity};
use crate::inventory::{Evaluate, Inventory};
use crate::report::Reporter;
use crate::state::State;
pub use gather::{gather, Observed};
pub use model::{KernelStatus, OutOfPlace, OutOfPlaceKind, PairState, PairStatus, SourceStatus, Status, SCHEMA};

/// `dkms-hook status [--json]`: reads only (dkms.conf files only as an unprivileged user), takes
/// no lock; exits 0 when everything is as it should be, 1 otherwise.
pub fn run(config: &Config, json: bool) -> Result<ExitCode> {
    let layout = &config.layout;
    let mut inventory = Inventory::read(layout, Evaluate::Unprivileged)?;
    crate::plan::companions::drop_unlocked(&mut inventory, &config.unlocked);
    let state = State::load_or_warn(&layout.state_file());
    let seen = gather(layout, &inventory, &state);
    let status = Status::build(layout, &inventory, &state, &config.excludes, &seen);
    let text = if json {
        let mut s = serde_json::to_string_pretty(&status).context("failed to write JSON")?;
        s.push('\n');
        s
    } else {
        status.text(config.verbosity == Verbosity::Quiet)
    };
    Reporter::new(config.verbosity).print(&text);
    Ok(if status.ok { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

#[cfg(test)]
mod tests {
    use super::gather::stem;
    use super::*;
    use crate::config::Excludes;
    use crate::domain::{Job, JobKind, Layout, ModuleId, Outcome};
    use crate::inventory::dkms_tree::TreeEntry;
    use crate::inventory::{DkmsConf, Kernel, ModuleSource};
    use std::path::Path;

    struct World {
        layout: Layout,
        inv: Inventory,
        state: State,
        excludes: Excludes,
        seen: Observed,
    }

    fn world() -> World {
        let mut inv = Inventory::default();
        for (k, headers) in [("k1", true), ("k2", true), ("k3", false)] {
            inv.kernels.insert(
                k.into(),
                Kernel {
                    kver: k.into(),
                    package: format!("linux-{k}"),
                    pkgbase: format!("linux-{k}"),
                    headers: headers.then(|| format!("linux-{k}-headers")),
                },
            );
        }
        inv.sources.insert(
            "a-1".into(),
            ModuleSource {
                dir: "a-1".into(),
                package: Some("a-dkms".into()),
                conf: Ok(DkmsConf { name: "a".into(), version: "1".into(), ..Default::default() }),
                digest: None,
            },
        );
        World {
            layout: Layout::new(Path::new("/r"), None),
            inv,
            state: State::default(),
            excludes: Excludes::default(),
            seen: Observed::default(),
        }
    }

    impl World {
        fn tree(&mut self, m: &str, v: &str, source: Option<&str>, built: &[&str], installed: &[&str]) {
            self.inv.tree.entries.insert(
                (m.into(), v.into()),
                TreeEntry {
                    source_dir: source.map(str::to_owned),
                    kept: None,
                    built: built.iter().map(|s| s.to_string()).collect(),
                    installed: installed.iter().map(|s| s.to_string()).collect(),
                },
            );
        }
        fn record(&mut self, k: &str, outcome: Outcome, log: Option<&str>) {
            let job =
                Job { kind: JobKind::Install { kernel: k.into() }, module: ModuleId::new("a", "1"), after: vec![] };
            self.state.record(&job, &outcome, log.map(Path::new), 1, None);
        }
        fn status(&self) -> Status {
            Status::build(&self.layout, &self.inv, &self.state, &self.excludes, &self.seen)
        }
    }

    fn states(s: &Status) -> Vec<(String, PairState)> {
        s.modules.iter().map(|p| (p.kernel.clone(), p.state)).collect()
    }

    #[test]
    fn every_pair_state() {
        let mut w = world();
        w.inv.kernels.insert(
            "k4".into(),
            Kernel {
                kver: "k4".into(),
                package: "l4".into(),
                pkgbase: "l4".into(),
                headers: Some("l4-headers".into()),
            },
        );
        w.inv.kernels.insert(
            "k5".into(),
            Kernel {
                kver: "k5".into(),
                package: "l5".into(),
                pkgbase: "l5".into(),
                headers: Some("l5-headers".into()),
            },
        );
        w.inv.kernels.insert(
            "rt".into(),
            Kernel { kver: "rt".into(), package: "lrt".into(), pkgbase: "lrt".into(), headers: Some("h".into()) },
        );
        w.tree("a", "1", Some("a-1"), &["k1", "k2", "k4"], &["k1", "k4"]);
        w.record("k4", Outcome::WrongVermagic { module: "/x/a.ko".into(), vermagic: "k9 SMP".into() }, None);
        let failed =
            Outcome::Failed { code: Some(10), meaning: "the module build (make) failed", log: None, tail: vec![] };
        w.record("k5", failed, Some("/r/var/log/dkms-hook/a_1_k5.install.log"));
        w.seen.existing_logs.insert("/r/var/log/dkms-hook/a_1_k5.install.log".into());
        w.excludes.kernels.push(glob::Pattern::new("rt").unwrap());
        let s = w.status();
        assert_eq!(
            states(&s),
            [
                ("k1".into(), PairState::Installed),
                ("k2".into(), PairState::Built),
                ("k3".into(), PairState::Missing),
                ("k4".into(), PairState::WrongVermagic),
                ("k5".into(), PairState::Failed),
                ("rt".into(), PairState::Excluded),
            ]
        );
        assert_eq!(s.problems, 4);
        assert!(!s.ok);
        let k3 = &s.modules[2];
        assert_eq!(k3.reason.as_deref(), Some("no headers: install linux-k3-headers"));
        let k5 = &s.modules[4];
        assert!(k5.reason.as_deref().unwrap().starts_with("dkms exit 10"), "{k5:?}");
        assert_eq!(k5.log.as_deref(), Some(Path::new("/r/var/log/dkms-hook/a_1_k5.install.log")));
        assert!(s.modules[3].reason.as_deref().unwrap().contains("vermagic k9 SMP"));
        let text = s.text(false);
        assert!(text.contains("  -> a/1 for k5: failed: dkms exit 10"), "{text}");
        assert!(text.contains("     log: /r/var/log/dkms-hook/a_1_k5.install.log"), "{text}");
        assert!(text.contains("==> 4 items need attention"), "{text}");
        let quiet = s.text(true);
        assert!(quiet.contains("  -> a/1 for k5: failed") && quiet.contains("==> 4 items need attention"), "{quiet}");
        assert!(!quiet.contains("==> Kernels") && !quiet.contains("==> Module sources"), "{quiet}");
        assert!(!quiet.contains(": installed") && !quiet.contains(": excluded"), "{quiet}");
    }

    #[test]
    fn skipped_pairs_are_fine_and_a_pruned_log_is_not_shown() {
        let mut w = world();
        w.inv.kernels.remove("k3");
        w.tree("a", "1", Some("a-1"), &["k1"], &["k1"]);
        w.record("k2", Outcome::Skipped, Some("/gone.log"));
        let s = w.status();
        assert_eq!(states(&s), [("k1".into(), PairState::Installed), ("k2".into(), PairState::Skipped)]);
        assert!(s.ok && s.problems == 0);
        assert_eq!(s.modules[1].log, None);
        assert!(s.text(false).contains("==> Everything is as it should be"));
    }

    #[test]
    fn a_version_still_serving_while_its_replacement_failed_or_waits_is_kept() {
        let mut w = world();
        // a/0.9 (sources kept) still installed for k1, k2 (failed there) and k3 (no headers).
        w.tree("a", "0.9", Some("0123"), &["k1", "k2", "k3"], &["k1", "k2", "k3"]);
        w.inv.tree.entries.get_mut(&("a".into(), "0.9".into())).unwrap().kept = Some("0123".into());
        let failed =
            Outcome::Failed { code: Some(10), meaning: "the module build (make) failed", log: None, tail: vec![] };
        w.record("k2", Outcome::Kept { old: "0.9".into(), failure: Box::new(failed) }, Some("/l/a.log"));
        w.seen.existing_logs.insert("/l/a.log".into());
        let s = w.status();
        assert_eq!(
            states(&s),
            [("k1".into(), PairState::Kept), ("k2".into(), PairState::Kept), ("k3".into(), PairState::Kept)]
        );
        assert!(s.modules.iter().all(|p| p.serving.as_deref() == Some("0.9") && !p.ok));
        assert_eq!(s.modules[0].reason.as_deref(), Some("a/0.9 is still installed; run `dkms-hook sync` to build 1"));
        let k2 = s.modules[1].reason.as_deref().unwrap();
        assert!(k2.starts_with("a/0.9 is still installed; 1 failed: dkms exit 10"), "{k2}");
        assert_eq!(s.modules[1].log.as_deref(), Some(Path::new("/l/a.log")));
        assert!(s.modules[2].reason.as_deref().unwrap().contains("install linux-k3-headers to build 1"));
        // The version it serves with is not out of place: its pairs say what it is.
        assert!(s.out_of_place.is_empty(), "{:?}", s.out_of_place);
        assert!(
            s.text(false).contains("  -> a/1 for k2: kept: a/0.9 is still installed; 1 failed"),
            "{}",
            s.text(false)
        );

        // The same version, its build from the sources before the last upgrade kept.
        let mut w = world();
        w.tree("a", "1", Some("a-1"), &["k1"], &["k1"]);
        let failed = Outcome::ExecFailed { error: "x".into() };
        w.record("k1", Outcome::Kept { old: "1".into(), failure: Box::new(failed) }, None);
        let s = w.status();
        assert_eq!(s.modules[0].state, PairState::Kept);
        assert_eq!(s.modules[0].serving.as_deref(), Some("1"));
        assert!(s.modules[0].reason.as_deref().unwrap().contains("before the last upgrade"), "{:?}", s.modules[0]);
    }

    #[test]
    fn installed_wins_over_an_old_failure() {
        let mut w = world();
        w.record("k1", Outcome::ExecFailed { error: "x".into() }, None);
        w.tree("a", "1", Some("a-1"), &["k1"], &["k1"]);
        assert_eq!(w.status().modules[0].state, PairState::Installed);
    }

    #[test]
    fn out_of_place_items() {
        let mut w = world();
        w.inv.kernels.remove("k3");
        w.tree("a", "1", Some("a-1"), &["k1", "k2", "old"], &["k1", "k2"]);
        w.tree("gone", "2", Some("gone-2"), &["k1"], &["k1"]);
        w.seen.module_files.insert("k1".into(), vec!["a.ko".into(), "gone.ko.zst".into(), "stray.ko".into()]);
        w.seen.module_files.insert("leftover".into(), vec!["old.ko".into()]);
        w.seen.known_modules.insert("k1".into(), ["a".to_owned(), "gone".to_owned()].into());
        let s = w.status();
        let kinds: Vec<(OutOfPlaceKind, Vec<String>)> =
            s.out_of_place.iter().map(|o| (o.kind, o.kernels.clone())).collect();
        assert_eq!(
            kinds,
            [
                (OutOfPlaceKind::StaleBuild, vec!["old".to_owned()]),
                (OutOfPlaceKind::OrphanRegistration, vec!["k1".to_owned()]),
                (OutOfPlaceKind::UnknownModuleFile, vec!["k1".to_owned()]),
                (OutOfPlaceKind::UnknownModuleFile, vec!["leftover".to_owned()]),
            ]
        );
        assert_eq!(s.out_of_place[1].path.as_deref(), Some(Path::new("/r/usr/src/gone-2")));
        assert_eq!(s.out_of_place[2].path.as_deref(), Some(Path::new("/r/usr/lib/modules/k1/updates/dkms/stray.ko")));
        assert_eq!(s.problems, 4);
        let text = s.text(false);
        assert!(
            text.contains("a/1 is built for old, which is not an installed kernel: `dkms-hook sync` removes it"),
            "{text}"
        );
        assert!(
            text.contains("gone/2 is registered with dkms (built for k1) but its source /r/usr/src/gone-2 is gone"),
            "{text}"
        );
    }

    #[test]
    fn unpackaged_sources_are_listed_but_not_judged() {
        let mut w = world();
        w.inv.sources.get_mut("a-1").unwrap().package = None;
        let s = w.status();
        assert!(s.modules.is_empty() && s.ok);
        assert!(s.text(false).contains("not owned by any package"));
    }

    #[test]
    fn json_field_names_are_stable() {
        let mut w = world();
        w.tree("a", "1", Some("a-1"), &["k1"], &["k1"]);
        let json = serde_json::to_value(w.status()).unwrap();
        let keys = |v: &serde_json::Value| v.as_object().unwrap().keys().cloned().collect::<Vec<_>>();
        assert_eq!(
            keys(&json),
            [
                "kernels",
                "module_signing",
                "modules",
                "ok",
                "out_of_place",
                "problems",
                "root",
                "running_kernel",
                "schema",
                "sources"
            ]
        );
        assert_eq!(
            keys(&json["modules"][0]),
            ["kernel", "log", "module", "ok", "reason", "serving", "signature", "state", "version"]
        );
        assert_eq!(
            keys(&json["kernels"][0]),
            ["excluded", "headers", "headers_package", "kernel", "package", "package_version", "running"]
        );
        assert_eq!(
            keys(&json["sources"][0]),
            ["error", "excluded", "module", "package", "package_version", "path", "version"]
        );
        assert_eq!(json["modules"][0]["state"], "installed");
        assert_eq!(json["schema"], 1);
    }

    #[test]
    fn modules_not_signed_as_the_system_signs_need_attention() {
        use super::gather::Signature;
        let mut w = world();
        w.tree("a", "1", Some("a-1"), &["k1", "k2"], &["k1", "k2"]);
        let key = |k: &str| ("a".to_owned(), "1".to_owned(), k.to_owned());
        w.seen.signatures.insert(key("k1"), Signature::SystemKey);
        w.seen.signatures.insert(key("k2"), Signature::Unsigned);
        // The system does not sign: shown, nothing to do.
        let s = w.status();
        assert!(s.modules.iter().filter(|p| p.kernel != "k3").all(|p| p.ok), "{s:?}");
        assert!(s.text(false).contains("a/1 for k2: installed, unsigned\n"));
        w.seen.system_signs = true;
        w.seen.signing_kernels = ["k1".to_owned(), "k2".to_owned()].into();
        let s = w.status();
        let k2 = s.modules.iter().find(|p| p.kernel == "k2").unwrap();
        assert!(!k2.ok && k2.signature == Some(Signature::Unsigned));
        assert!(s.modules.iter().find(|p| p.kernel == "k1").unwrap().ok);
        let text = s.text(false);
        assert!(text.contains("a/1 for k1: installed, signed with dkms's key\n"), "{text}");
        assert!(
            text.contains(
                "a/1 for k2: installed, unsigned: this system signs modules, and this one will not load where \
                 signatures are enforced: `dkms-hook sync` builds it again, signed"
            ),
            "{text}"
        );
    }

    #[test]
    fn an_enforcing_kernel_that_does_not_trust_dkms_certificate_needs_attention() {
        let mut w = world();
        w.tree("a", "1", Some("a-1"), &["k1", "k2"], &["k1", "k2"]);
        w.inv.kernels.remove("k3");
        w.seen.certificate = "/var/lib/dkms/mok.pub".into();
        w.seen.enforced = Some(("lockdown (integrity)".into(), Some(true)));
        w.seen.system_signs = true;
        let s = w.status();
        assert!(s.ok, "{s:?}");
        assert!(s.text(false).contains(
            "==> Module signing: the running kernel enforces signatures (lockdown (integrity))\n  -> dkms's \
             certificate /var/lib/dkms/mok.pub is among the keys the kernel trusts\n"
        ));
        w.seen.enforced = Some(("module.sig_enforce".into(), Some(false)));
        let s = w.status();
        assert!(!s.ok && s.problems == 1, "{s:?}");
        let text = s.text(true);
        assert!(
            text.contains(
                "  -> dkms's certificate /var/lib/dkms/mok.pub is not among the keys the kernel trusts: enroll it: \
                 `mokutil --import /var/lib/dkms/mok.pub`"
            ),
            "{text}"
        );
        let json = serde_json::to_value(&s).unwrap();
        assert_eq!(json["module_signing"]["trusted"], false);
    }

    #[test]
    fn stems() {
        assert_eq!(stem("hello.ko"), "hello");
        assert_eq!(stem("sub/hello.ko.zst"), "hello");
    }
}
