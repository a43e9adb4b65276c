//! The plan itself: the jobs in order, the kernels that get depmod, what to tell the user, and
//! what the runner needs to know beside the jobs (BUILD_DEPENDS, kernels that are gone, the
//! guard's builds to install instead of building). The planners fill it; the finishing steps
//! every install plan gets (retiring replaced versions, BUILD_DEPENDS, the guard's builds) are
//! its methods.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use crate::domain::{Job, JobKind, ModuleId};
use crate::inventory::Inventory;

/// Something the user should know that is not a job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    /// A kernel that would get modules has no headers.
    NoHeaders { kver: String, package: String, headers_package: String },
    /// Only the headers leave; the kernel stays and keeps its modules.
    HeadersLeaving { kver: String, package: String, kept: Vec<ModuleId> },
    /// A module source whose dkms.conf could not be read (an error: its module is not built).
    BadSource { dir: String, error: String },
    /// A changed module source with no dkms.conf on disk (install) or that dkms does not know
    /// (remove): nothing to do.
    NotRegistered { dir: String },
    /// A kver among the targets that no installed package owns.
    NotAKernel { kver: String },
    /// Several packages ship the same module (in different versions): installing one would
    /// replace the other, so neither is built (an error).
    SeveralPackages { module: String, shipped: Vec<String> },
    /// BUILD_DEPENDS form a cycle; the order among these is arbitrary.
    DependencyCycle { kernel: String, modules: Vec<String> },
}

impl Notice {
    /// Errors make the run fail; the rest are warnings or information.
    pub fn is_error(&self) -> bool {
        matches!(self, Notice::BadSource { .. } | Notice::SeveralPackages { .. })
    }

    /// Information shown only with `--verbose`.
    pub fn is_info(&self) -> bool {
        matches!(self, Notice::NotRegistered { .. } | Notice::NotAKernel { .. })
    }
}

impl fmt::Display for Notice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Notice::NoHeaders { kver, package, headers_package } => {
                write!(
                    f,
                    "no headers for kernel {kver} ({package}): install {headers_package} to build DKMS modules for it"
                )
            }
            Notice::HeadersLeaving { kver, package, kept } => {
                write!(f, "headers for kernel {kver} ({package}) are being removed; ")?;
                if kept.is_empty() {
                    write!(f, "no DKMS modules to keep")
                } else {
                    let names: Vec<String> = kept.iter().map(ToString::to_string).collect();
                    write!(f, "its installed modules are kept: {}", names.join(" "))
                }
            }
            Notice::BadSource { dir, error } => write!(f, "cannot read module source {dir}: {error}"),
            Notice::NotRegistered { dir } => {
                write!(f, "{dir} has no dkms.conf and is not registered with dkms: nothing to do")
            }
            Notice::SeveralPackages { module, shipped } => {
                write!(f, "several packages ship module {module}: {}; remove all but one", shipped.join(", "))
            }
            Notice::NotAKernel { kver } => write!(f, "{kver} is not an installed kernel (no package owns it): ignored"),
            Notice::DependencyCycle { kernel, modules } => {
                write!(f, "BUILD_DEPENDS cycle among {} for {kernel}: building in name order", modules.join(" "))
            }
        }
    }
}

/// Everything to do, in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    pub jobs: Vec<Job>,
    /// Kernels to run depmod for once all jobs are done.
    pub depmod: Vec<String>,
    pub notices: Vec<Notice>,
    /// BUILD_DEPENDS of the modules installed by this plan (only those that have any): dkms
    /// checks them in the tree it builds in, so these modules must build in the real tree.
    pub build_depends: BTreeMap<ModuleId, Vec<String>>,
    /// Kernels that are not installed (any more): once the plan's removals emptied their module
    /// directory, nothing keeps it, so it goes too.
    pub gone_kernels: BTreeSet<String>,
    /// Builds the pre-transaction guard made that install jobs use instead of building, by
    /// (module version, kernel): `TREE/NAME/VERSION/KERNEL` of a private tree.
    pub prebuilt: BTreeMap<(ModuleId, String), std::path::PathBuf>,
}

impl Plan {
    /// Adds, for every version the plan replaces with another version, a job that unregisters it
    /// once all its replacements ran, if no kernel uses it any more then.
    pub fn retire_replaced(&mut self) {
        let mut replaced: BTreeMap<ModuleId, Vec<usize>> = BTreeMap::new();
        for (i, job) in self.jobs.iter().enumerate() {
            if let Some(old) = job.other_version() {
                replaced.entry(old).or_default().push(i);
            }
        }
        for (old, replacing) in replaced {
            self.jobs.push(Job { kind: JobKind::Retire { replacing }, module: old, after: Vec::new() });
        }
    }

    /// Notes, for each install job, the guard's build to install instead of building: one for
    /// the same module version and kernel, made from sources with the digest the packaged ones
    /// have now, against the headers package (and version) the kernel has now.
    pub fn use_prebuilt(&mut self, inv: &Inventory) {
        for job in self.jobs.iter().filter(|j| j.is_install()) {
            let Some(kernel) = job.kernel() else { continue };
            let id = &job.module;
            let current = inv.sources.get(&format!("{}-{}", id.name, id.version)).and_then(|s| s.digest.as_deref());
            let headers = inv.kernels.get(kernel).and_then(|k| k.headers.as_deref());
            let headers_version = headers.and_then(|h| inv.package_versions.get(h));
            let usable = inv.prebuilt.iter().find(|p| {
                p.module == id.name
                    && p.version == id.version
                    && p.kernel == kernel
                    && current == Some(p.digest.as_str())
                    && headers == Some(p.headers_package.as_str())
                    && headers_version == Some(&p.headers_version)
            });
            if let Some(p) = usable {
                self.prebuilt.insert((id.clone(), kernel.to_owned()), p.dir.clone());
            }
        }
    }

    /// Fills `build_depends` for the plan's install jobs from the module sources' dkms.conf.
    pub fn note_build_depends(&mut self, inv: &Inventory) {
        for source in inv.sources.values() {
            let Ok(conf) = &source.conf else { continue };
            if conf.build_depends.is_empty() {
                continue;
            }
            let id = ModuleId::new(&conf.name, &conf.version);
            if self.jobs.iter().any(|j| j.is_install() && j.module == id) {
                self.build_depends.insert(id, conf.build_depends.clone());
            }
        }
    }
}
