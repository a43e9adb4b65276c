//! `dkms-hook status`: what each module source and kernel is, the state of every (module,
//! kernel) pair, and what is out of place — fast (directory listings and the state file; never
//! `dkms status`, which costs ~70 ms per built module) and without the lock, so it never waits
//! for or blocks a build.
//!
//! [`gather`] does the reading; [`Status::build`] is a pure function of what was read, so every
//! state is unit-tested without a system. The JSON form (`--json`) is the `Status` value itself
//! and is documented in `docs/status-json.md`: fields are only ever added to it, and `schema`
//! changes when anything else would.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use std::process::ExitCode;

use anyhow::{Context, Result};
use serde::Serialize;

use crate::config::{Config, Excludes, Verbosity};
use crate::domain::Layout;
use crate::inventory::{Evaluate, Inventory};
use crate::report::Reporter;
use crate::state::{Last, State};

/// The JSON format's version.
pub const SCHEMA: u32 = 1;

/// Everything `status` reports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Status {
    /// Format version of this document.
    pub schema: u32,
    /// The root acted on.
    pub root: PathBuf,
    /// True when nothing needs attention (the exit status is 0).
    pub ok: bool,
    /// How many things need attention: pairs not `ok`, unreadable sources, items out of place.
    pub problems: usize,
    /// The running kernel (`uname -r`), only when the root is `/`.
    pub running_kernel: Option<String>,
    pub sources: Vec<SourceStatus>,
    pub kernels: Vec<KernelStatus>,
    /// One entry per packaged module and installed kernel.
    pub modules: Vec<PairStatus>,
    pub out_of_place: Vec<OutOfPlace>,
}

/// A module source directory `usr/src/DIR` with a dkms.conf.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SourceStatus {
    /// Its path.
    pub path: PathBuf,
    /// PACKAGE_NAME and PACKAGE_VERSION, when dkms.conf reads.
    pub module: Option<String>,
    pub version: Option<String>,
    /// The package owning its dkms.conf; `None`: no package (dkms-hook leaves it alone).
    pub package: Option<String>,
    pub package_version: Option<String>,
    /// Why dkms.conf could not be read.
    pub error: Option<String>,
    /// Matches `exclude_modules`.
    pub excluded: bool,
}

/// An installed kernel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KernelStatus {
    pub kernel: String,
    pub package: String,
    pub package_version: Option<String>,
    /// The headers package, when headers are installed; `None`: no headers, nothing is built.
    pub headers: Option<String>,
    /// The package to install for headers.
    pub headers_package: String,
    pub running: bool,
    /// Matches `exclude_kernels`.
    pub excluded: bool,
}

/// The state of one module version for one kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PairState {
    /// dkms has it installed for the kernel.
    Installed,
    /// Built by dkms but not installed.
    Built,
    /// Neither built nor installed (and no recorded reason).
    Missing,
    /// dkms declined it: BUILD_EXCLUSIVE does not match the kernel.
    Skipped,
    /// The last build or install failed.
    Failed,
    /// Installed, but built for another kernel (its vermagic names another kernel).
    WrongVermagic,
    /// Not installed, but the version that was installed before (or its build from the sources
    /// before the last upgrade) still is: building the replacement failed or is pending.
    Kept,
    /// Not installed, and excluded by the configuration.
    Excluded,
}

impl PairState {
    /// The states that need no attention.
    pub fn is_ok(self) -> bool {
        matches!(self, PairState::Installed | PairState::Skipped | PairState::Excluded)
    }

    fn word(self) -> &'static str {
        match self {
            PairState::Installed => "installed",
            PairState::Built => "built, not installed",
            PairState::Missing => "missing",
            PairState::Skipped => "skipped",
            PairState::Failed => "failed",
            PairState::WrongVermagic => "wrong vermagic",
            PairState::Kept => "kept",
            PairState::Excluded => "excluded",
        }
    }
}

/// One (module version, kernel) pair.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PairStatus {
    pub module: String,
    pub version: String,
    pub kernel: String,
    pub state: PairState,
    pub ok: bool,
    /// Why, and what to do, when there is something to say.
    pub reason: Option<String>,
    /// With `kept`: the version still installed for the kernel.
    pub serving: Option<String>,
    /// The log of the last job for this pair, when it still exists.
    pub log: Option<PathBuf>,
}

/// What kind of thing is out of place.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OutOfPlaceKind {
    /// dkms has a build for a kernel that is no longer installed.
    StaleBuild,
    /// dkms has a module version registered whose source directory is gone.
    OrphanRegistration,
    /// A module file under `usr/lib/modules/K/updates/dkms` that dkms does not know.
    UnknownModuleFile,
}

/// Something that should not be there.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OutOfPlace {
    pub kind: OutOfPlaceKind,
    pub module: Option<String>,
    pub version: Option<String>,
    /// The kernel(s) concerned.
    pub kernels: Vec<String>,
    /// The file or directory concerned.
    pub path: Option<PathBuf>,
    /// How to fix it.
    pub fix: String,
}

/// `dkms-hook status [--json]`: reads only (dkms.conf files only as an unprivileged user), takes
/// no lock; exits 0 when everything is as it should be, 1 otherwise.
pub fn run(config: &Config, json: bool) -> Result<ExitCode> {
    let layout = &config.layout;
    let inventory = Inventory::read(layout, Evaluate::Unprivileged)?;
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

/// What `status` reads besides the inventory and the state file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Observed {
    /// `uname -r`, when the root is `/`.
    pub running_kernel: Option<String>,
    /// Per directory under `usr/lib/modules`: the module files under `updates/dkms` (relative).
    pub module_files: BTreeMap<String, Vec<String>>,
    /// Per kernel: the module file stems (`hello` of `hello.ko.zst`) of dkms's installed builds.
    pub known_modules: BTreeMap<String, BTreeSet<String>>,
    /// Log files that exist (so a pruned log is not pointed to).
    pub existing_logs: BTreeSet<PathBuf>,
}

/// Reads what `status` needs besides the inventory and the state file.
pub fn gather(layout: &Layout, inv: &Inventory, state: &State) -> Observed {
    let mut seen = Observed::default();
    if !layout.is_relocated() {
        seen.running_kernel = nix::sys::utsname::uname().ok().map(|u| u.release().to_string_lossy().into_owned());
    }
    for kver in crate::dirs::names(&layout.module_dir).unwrap_or_default() {
        let dir = layout.kernel_dir(&kver).join("updates/dkms");
        let mut files = Vec::new();
        walk(&dir, Path::new(""), &mut files);
        if !files.is_empty() {
            files.sort();
            seen.module_files.insert(kver, files);
        }
    }
    for ((m, v), entry) in &inv.tree.entries {
        for kver in &entry.installed {
            let stems = seen.known_modules.entry(kver.clone()).or_default();
            for path in crate::inventory::dkms_tree::built_modules(&layout.dkms_tree, m, v, kver) {
                if let Some(name) = path.file_name() {
                    stems.insert(stem(&name.to_string_lossy()).to_owned());
                }
            }
        }
    }
    seen.existing_logs = state.records().filter_map(|r| r.log.clone()).filter(|l| l.is_file()).collect();
    seen
}

/// Module files (`*.ko*`) below `dir`, as paths relative to it.
fn walk(dir: &Path, rel: &Path, into: &mut Vec<String>) {
    for name in crate::dirs::names(dir).unwrap_or_default() {
        let path = dir.join(&name);
        let Ok(meta) = path.symlink_metadata() else { continue };
        if meta.is_dir() {
            walk(&path, &rel.join(&name), into);
        } else if name.contains(".ko") {
            into.push(rel.join(&name).to_string_lossy().into_owned());
        }
    }
}

/// `hello` of `hello.ko`, `hello.ko.zst`, `sub/hello.ko.xz`.
fn stem(file: &str) -> &str {
    let base = file.rsplit('/').next().unwrap_or(file);
    base.find(".ko").map_or(base, |i| &base[..i])
}

impl Status {
    /// Judges the system from what was read. Pure.
    pub fn build(layout: &Layout, inv: &Inventory, state: &State, excludes: &Excludes, seen: &Observed) -> Status {
        let version_of = |pkg: &str| inv.package_versions.get(pkg).cloned();
        let sources: Vec<SourceStatus> = inv
            .sources
            .values()
            .map(|s| SourceStatus {
                path: layout.source_tree.join(&s.dir),
                module: s.conf.as_ref().ok().map(|c| c.name.clone()),
                version: s.conf.as_ref().ok().map(|c| c.version.clone()),
                package: s.package.clone(),
                package_version: s.package.as_deref().and_then(version_of),
                error: s.conf.as_ref().err().cloned(),
                excluded: s.conf.as_ref().is_ok_and(|c| excludes.module(&c.name, &c.version)),
            })
            .collect();
        let kernels: Vec<KernelStatus> = inv
            .kernels
            .values()
            .map(|k| KernelStatus {
                kernel: k.kver.clone(),
                package: k.package.clone(),
                package_version: version_of(&k.package),
                headers: k.headers.clone(),
                headers_package: k.headers_package(),
                running: seen.running_kernel.as_deref() == Some(k.kver.as_str()),
                excluded: excludes.kernel(&k.kver),
            })
            .collect();

        let mut modules = Vec::new();
        for source in inv.sources.values().filter(|s| s.package.is_some()) {
            let Ok(conf) = &source.conf else { continue };
            for kernel in inv.kernels.values() {
                modules.push(pair(inv, state, excludes, seen, &conf.name, &conf.version, kernel));
            }
        }
        modules.sort_by(|a, b| (&a.module, &a.version, &a.kernel).cmp(&(&b.module, &b.version, &b.kernel)));

        let out_of_place = out_of_place(layout, inv, seen);
        let problems = modules.iter().filter(|p| !p.ok).count()
            + sources.iter().filter(|s| s.package.is_some() && s.error.is_some()).count()
            + out_of_place.len();
        Status {
            schema: SCHEMA,
            root: layout.root.clone(),
            ok: problems == 0,
            problems,
            running_kernel: seen.running_kernel.clone(),
            sources,
            kernels,
            modules,
            out_of_place,
        }
    }

    /// The report as text: pacman-style headings and items. `problems_only` (`-q`) keeps what
    /// needs attention and the verdict.
    pub fn text(&self, problems_only: bool) -> String {
        let mut t = String::new();
        let sources: Vec<&SourceStatus> =
            self.sources.iter().filter(|s| !problems_only || (s.package.is_some() && s.error.is_some())).collect();
        if !problems_only || !sources.is_empty() {
            let _ = writeln!(t, "==> Module sources");
        }
        if self.sources.is_empty() && !problems_only {
            let _ = writeln!(t, "  -> none (no usr/src/*/dkms.conf)");
        }
        for s in sources {
            let what = match (&s.module, &s.version) {
                (Some(m), Some(v)) => format!("{m}/{v}"),
                _ => s.path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(),
            };
            let from = match (&s.package, &s.package_version) {
                (Some(p), Some(v)) => format!("from {p} {v}"),
                (Some(p), None) => format!("from {p}"),
                (None, _) => "not owned by any package: dkms-hook leaves it alone".to_owned(),
            };
            let _ = write!(t, "  -> {what} {from} ({})", s.path.display());
            if s.excluded {
                t.push_str(", excluded");
            }
            t.push('\n');
            if let Some(e) = &s.error {
                let _ = writeln!(t, "     error: {e}");
            }
        }
        if !problems_only {
            self.kernels_text(&mut t);
        }
        let modules: Vec<&PairStatus> = self.modules.iter().filter(|p| !problems_only || !p.ok).collect();
        if !modules.is_empty() {
            let _ = writeln!(t, "==> Modules");
        }
        for p in modules {
            let _ = write!(t, "  -> {}/{} for {}: {}", p.module, p.version, p.kernel, p.state.word());
            if let Some(r) = &p.reason {
                let _ = write!(t, ": {r}");
            }
            t.push('\n');
            if let Some(l) = &p.log {
                let _ = writeln!(t, "     log: {}", l.display());
            }
        }
        if !self.out_of_place.is_empty() {
            let _ = writeln!(t, "==> Out of place");
        }
        for o in &self.out_of_place {
            let _ = writeln!(t, "  -> {}: {}", describe(o), o.fix);
        }
        if self.ok {
            let _ = writeln!(t, "==> Everything is as it should be");
        } else {
            let n = self.problems;
            let _ = writeln!(
                t,
                "==> {n} {} need{} attention",
                if n == 1 { "item" } else { "items" },
                if n == 1 { "s" } else { "" }
            );
        }
        t
    }
}

impl Status {
    fn kernels_text(&self, t: &mut String) {
        let _ = writeln!(t, "==> Kernels");
        if self.kernels.is_empty() {
            let _ = writeln!(t, "  -> none (no kernel package owns a usr/lib/modules directory)");
        }
        for k in &self.kernels {
            let pkg = match &k.package_version {
                Some(v) => format!("{} {v}", k.package),
                None => k.package.clone(),
            };
            let headers = match &k.headers {
                Some(h) => format!("headers from {h}"),
                None => format!("no headers: install {} to build modules for it", k.headers_package),
            };
            let _ = write!(t, "  -> {} from {pkg}, {headers}", k.kernel);
            if k.running {
                t.push_str(" (running)");
            }
            if k.excluded {
                t.push_str(", excluded");
            }
            t.push('\n');
        }
        if let Some(running) = self.running_kernel.as_deref().filter(|r| !self.kernels.iter().any(|k| k.kernel == *r)) {
            let _ = writeln!(t, "  -> the running kernel {running} is not an installed kernel (replaced since boot?)");
        }
    }
}

fn describe(o: &OutOfPlace) -> String {
    let id = match (&o.module, &o.version) {
        (Some(m), Some(v)) => format!("{m}/{v}"),
        _ => String::new(),
    };
    let kernels = o.kernels.join(" ");
    match o.kind {
        OutOfPlaceKind::StaleBuild => format!("{id} is built for {kernels}, which is not an installed kernel"),
        OutOfPlaceKind::OrphanRegistration => {
            let source = o.path.as_ref().map_or_else(|| "(no source link)".to_owned(), |p| p.display().to_string());
            if kernels.is_empty() {
                format!("{id} is registered with dkms but its source {source} is gone")
            } else {
                format!("{id} is registered with dkms (built for {kernels}) but its source {source} is gone")
            }
        }
        OutOfPlaceKind::UnknownModuleFile => {
            format!("{} is not known to dkms", o.path.as_ref().map(|p| p.display().to_string()).unwrap_or_default())
        }
    }
}

fn pair(
    inv: &Inventory,
    state: &State,
    excludes: &Excludes,
    seen: &Observed,
    module: &str,
    version: &str,
    kernel: &crate::inventory::Kernel,
) -> PairStatus {
    let kver = kernel.kver.as_str();
    let entry = inv.tree.entries.get(&(module.to_owned(), version.to_owned()));
    let installed = entry.is_some_and(|e| e.installed.contains(kver));
    let built = entry.is_some_and(|e| e.built.contains(kver));
    let record = state.get(module, version, kver);
    let log = record.and_then(|r| r.log.clone()).filter(|l| seen.existing_logs.contains(l));
    let detail = record.and_then(|r| r.detail.clone());
    let wrong = |detail: Option<String>| {
        detail.map(|d| format!("{d}: its build ignores the kernel it is given; report it to the packager"))
    };
    // Another version of the module still installed for the kernel: its replacement is pending.
    let other = inv.tree.versions_of(module).find(|(v, e)| *v != version && e.installed.contains(kver)).map(|(v, _)| v);
    let mut serving = None;
    let (state, reason, log) = match record.map(|r| r.last) {
        _ if installed => match record.map(|r| r.last) {
            Some(Last::WrongVermagic) => (PairState::WrongVermagic, wrong(detail), log),
            Some(Last::Kept) => {
                serving = Some(version.to_owned());
                let why = detail.map(|d| format!(": {d}")).unwrap_or_default();
                let reason = format!(
                    "the build from before the last upgrade of {module}/{version} is still installed; rebuilding it \
                     from the new sources failed{why}: fix the cause, then `dkms-hook sync`"
                );
                (PairState::Kept, Some(reason), log)
            }
            _ => (PairState::Installed, None, None),
        },
        _ if excludes.pair(module, version, kver) => {
            (PairState::Excluded, Some("by the configuration".to_owned()), None)
        }
        last if other.is_some() => {
            let old = other.unwrap_or_default();
            serving = Some(old.to_owned());
            let still = format!("{module}/{old} is still installed");
            let reason = match (last, &detail) {
                (Some(Last::Kept | Last::Failed), Some(d)) => {
                    format!("{still}; {version} failed: {d}: fix the cause, then `dkms-hook sync`")
                }
                _ if kernel.headers.is_none() => {
                    format!("{still}; install {} to build {version}", kernel.headers_package())
                }
                _ => format!("{still}; run `dkms-hook sync` to build {version}"),
            };
            (PairState::Kept, Some(reason), log)
        }
        _ if kernel.headers.is_none() => (
            if built { PairState::Built } else { PairState::Missing },
            Some(format!("no headers: install {}", kernel.headers_package())),
            None,
        ),
        // dkms-hook removes a module built for the wrong kernel again; the state file says why
        // the pair is missing.
        Some(Last::WrongVermagic) => (PairState::WrongVermagic, wrong(detail), log),
        Some(Last::Failed | Last::Kept) => {
            (PairState::Failed, detail.map(|d| format!("{d}: fix the cause, then `dkms-hook sync`")), log)
        }
        Some(Last::Skipped) => (PairState::Skipped, detail, None),
        _ if built => (PairState::Built, Some("run `dkms-hook sync` to install it".to_owned()), None),
        _ => (PairState::Missing, Some("run `dkms-hook sync` to build it".to_owned()), None),
    };
    PairStatus {
        module: module.to_owned(),
        version: version.to_owned(),
        kernel: kver.to_owned(),
        state,
        ok: state.is_ok(),
        reason,
        serving,
        log,
    }
}

fn out_of_place(layout: &Layout, inv: &Inventory, seen: &Observed) -> Vec<OutOfPlace> {
    let mut items = Vec::new();
    for ((m, v), entry) in &inv.tree.entries {
        let all: Vec<String> = entry.built.union(&entry.installed).cloned().collect();
        // Kept sources stand in for `usr/src/NAME-VERSION` while a replacement is pending.
        let source_dir = match &entry.kept {
            Some(_) => Some(format!("{m}-{v}")),
            None => entry.source_dir.clone(),
        };
        let orphan = source_dir.as_deref().is_none_or(|d| !inv.sources.contains_key(d));
        // A version another packaged version replaces is shown with the pairs it still serves.
        let replaced = inv.sources.values().any(|s| s.conf.as_ref().is_ok_and(|c| c.name == *m && c.version != *v));
        let serving = entry.installed.iter().any(|k| inv.kernels.contains_key(k));
        if orphan && !(replaced && serving) {
            items.push(OutOfPlace {
                kind: OutOfPlaceKind::OrphanRegistration,
                module: Some(m.clone()),
                version: Some(v.clone()),
                kernels: all,
                path: source_dir.as_ref().map(|d| layout.source_tree.join(d)),
                fix: "`dkms-hook sync` removes it".to_owned(),
            });
            continue;
        }
        let gone: Vec<String> = all.into_iter().filter(|k| !inv.kernels.contains_key(k)).collect();
        if !gone.is_empty() {
            items.push(OutOfPlace {
                kind: OutOfPlaceKind::StaleBuild,
                module: Some(m.clone()),
                version: Some(v.clone()),
                kernels: gone,
                path: None,
                fix: "`dkms-hook sync` removes it".to_owned(),
            });
        }
    }
    for (kver, files) in &seen.module_files {
        let known = seen.known_modules.get(kver);
        for file in files {
            if known.is_some_and(|k| k.contains(stem(file))) {
                continue;
            }
            items.push(OutOfPlace {
                kind: OutOfPlaceKind::UnknownModuleFile,
                module: None,
                version: None,
                kernels: vec![kver.clone()],
                path: Some(layout.kernel_dir(kver).join("updates/dkms").join(file)),
                fix: "dkms-hook does not touch it: delete it if nothing needs it, then run depmod".to_owned(),
            });
        }
    }
    items
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Outcome;
    use crate::domain::{Job, JobKind, ModuleId};
    use crate::inventory::dkms_tree::TreeEntry;
    use crate::inventory::{DkmsConf, Kernel, ModuleSource};

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
            ["kernels", "modules", "ok", "out_of_place", "problems", "root", "running_kernel", "schema", "sources"]
        );
        assert_eq!(
            keys(&json["modules"][0]),
            ["kernel", "log", "module", "ok", "reason", "serving", "state", "version"]
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
    fn stems() {
        assert_eq!(stem("hello.ko"), "hello");
        assert_eq!(stem("sub/hello.ko.zst"), "hello");
    }
}
