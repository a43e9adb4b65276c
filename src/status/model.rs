//! The state of every (module, kernel) pair and what is out of place, judged from what was read:
//! a pure function of the inventory, the state file, the configuration's exclusions and what
//! `gather` observed. The types are the JSON form (`--json`, `docs/status-json.md`).

use std::path::PathBuf;

use serde::Serialize;

use super::gather::{stem, Observed, Signature};
use crate::config::Excludes;
use crate::domain::Layout;
use crate::inventory::Inventory;
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
    /// When the running kernel refuses unsigned modules: whether it trusts dkms's certificate.
    pub module_signing: Option<ModuleSigning>,
}

/// The running kernel's module signature enforcement and dkms's certificate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ModuleSigning {
    /// What enforces signatures: `lockdown (integrity)`, `lockdown (confidentiality)` or
    /// `module.sig_enforce`.
    pub enforced_by: String,
    /// The certificate dkms signs with.
    pub certificate: PathBuf,
    /// The kernel trusts it (it is in `/proc/keys`); null when it cannot be read.
    pub trusted: Option<bool>,
    /// How to make the kernel trust it, when it does not.
    pub fix: Option<String>,
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
    /// When installed: who signed its modules. Needs attention when the system signs modules,
    /// the kernel supports it, and it is not `system_key`.
    pub signature: Option<Signature>,
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
    /// A kernel's boot image holds another build of an installed module than the installed one,
    /// or none of a module its generator's configuration puts in it.
    StaleBootImage,
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
        let module_signing = seen.enforced.as_ref().map(|(why, trusted)| ModuleSigning {
            enforced_by: why.clone(),
            certificate: seen.certificate.clone(),
            trusted: *trusted,
            fix: (*trusted != Some(true)).then(|| {
                format!(
                    "enroll it: `mokutil --import {}`, reboot and confirm in MokManager (shim), or add it to the \
                     kernel's trusted keys",
                    seen.certificate.display()
                )
            }),
        });
        let untrusted = module_signing.as_ref().is_some_and(|m| m.trusted != Some(true)) && seen.system_signs;
        let problems = modules.iter().filter(|p| !p.ok).count()
            + sources.iter().filter(|s| s.package.is_some() && s.error.is_some()).count()
            + out_of_place.len()
            + usize::from(untrusted);
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
            module_signing,
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
            let reason = match crate::plan::companions::package_of(inv, module, version) {
                Some(package) => match crate::plan::companions::out_of_step(inv, package, old).as_slice() {
                    [] => reason,
                    moved => format!(
                        "{reason}; {module}/{old} will not work with {} ({package} is locked to it)",
                        moved.join(", ")
                    ),
                },
                None => reason,
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
    let signature = seen.signatures.get(&(module.to_owned(), version.to_owned(), kver.to_owned())).copied();
    let mut ok = state.is_ok();
    let mut reason = reason;
    let must_sign = seen.system_signs && seen.signing_kernels.contains(kver);
    if let (true, PairState::Installed, Some(Signature::Unsigned | Signature::OtherKey)) = (must_sign, state, signature)
    {
        ok = false;
        reason = Some(
            "this system signs modules, and this one will not load where signatures are enforced: \
             `dkms-hook sync` builds it again, signed"
                .to_owned(),
        );
    }
    PairStatus {
        module: module.to_owned(),
        version: version.to_owned(),
        kernel: kver.to_owned(),
        state,
        ok,
        reason,
        serving,
        log,
        signature,
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
    for (kver, image) in &seen.images {
        let Some(kernel) = inv.kernels.get(kver) else { continue };
        let owners = seen.owners.get(kver);
        let command = crate::plan::boot::command_for(inv, kernel).unwrap_or_default();
        let mut stale = |stem: &str, inside: String| {
            let owner = owners.and_then(|o| o.get(stem));
            let (module, version) = match owner.and_then(|o| o.split_once('/')) {
                Some((m, v)) => (m.to_owned(), Some(v.to_owned())),
                None => (stem.to_owned(), None),
            };
            items.push(OutOfPlace {
                kind: OutOfPlaceKind::StaleBootImage,
                module: Some(module),
                version,
                kernels: vec![kver.clone()],
                path: Some(PathBuf::from(&image.path)),
                fix: format!("it holds {inside}: regenerate it: {command}"),
            });
        };
        for (stem, (version, same)) in &image.held {
            if !same {
                let inside = version.as_ref().map_or_else(|| "another build".to_owned(), |v| format!("version {v}"));
                stale(stem, inside);
            }
        }
        for stem in &inv.boot.modules {
            if owners.is_some_and(|o| o.contains_key(stem)) && !image.held.contains_key(stem) {
                stale(stem, "no build of it".to_owned());
            }
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
