//! What the transaction brings that the guard can build with: the package files of its targets
//! (found as `inventory::incoming` describes), with the headers and module sources extracted, and
//! the system as it will be after the transaction ([`after_transaction`]).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use crate::digest;
use crate::domain::ModuleId;
use crate::inventory::incoming::{Located, Transaction};
use crate::inventory::locks::{self, Locks};
use crate::inventory::package::{self, Package};
use crate::inventory::{dkms_conf, Evaluate, Inventory, Kernel, ModuleSource};
use crate::plan::companions::{self, Moved};
use crate::targets::Targets;

/// One incoming kernel's headers, extracted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IncomingKernel {
    pub kver: String,
    /// The headers package and its version.
    pub headers_package: String,
    pub headers_version: String,
    /// One of the kernel's own compressed modules, relative to its module directory
    /// (`kernel/fs/ext4.ko.zst`), from the incoming kernel package's file list: dkms compresses
    /// its modules as it finds the kernel's (3.2 and later) or as `modules.dep` lists them.
    pub compressed_module: Option<String>,
}

/// What the transaction brings that the guard can build with.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Incoming {
    /// The targets whose package files were found and extracted.
    pub targets: Targets,
    pub kernels: Vec<IncomingKernel>,
    /// The incoming module sources (their dkms.conf read unprivileged, their digest computed).
    pub sources: Vec<ModuleSource>,
    /// Installed kernels that leave: pacman matched their `modules.order` as removed.
    pub leaving: BTreeSet<String>,
    /// Targets that could not be checked, and why.
    pub unreachable: Vec<(String, String)>,
    /// The exact-version dependencies of the incoming module packages, by package.
    pub locks: Locks,
    /// The incoming module packages whose locked companions the transaction moves, by package
    /// (see `plan::companions`).
    pub moved: BTreeMap<String, Vec<Moved>>,
}

impl Incoming {
    /// Finds the package files of `targets` and extracts what the builds need into `into`.
    pub(super) fn find(transaction: &Transaction, targets: &Targets, current: &Inventory, into: &Path) -> Self {
        let mut incoming = Incoming::default();
        let headers_path = |kver: &str| format!("usr/lib/modules/{kver}/build/include/");
        let source_path = |dir: &str| format!("usr/src/{dir}/dkms.conf");
        let mut paths: Vec<String> = targets.kernels.keys().map(|k| headers_path(k)).collect();
        paths.extend(targets.module_dirs.iter().map(|d| source_path(d)));
        let located = transaction.locate(&paths, |name, path| match path.starts_with("usr/src/") {
            true => name.contains("dkms"),
            false => name.ends_with("-headers"),
        });
        let mut found = |path: &str, member: &str| -> Option<Package> {
            match located.get(path) {
                Some(Located::Found(package)) => match package::extract(&package.path, &[member], into) {
                    Ok(()) => Some(package.clone()),
                    Err(e) => {
                        incoming.unreachable.push((path.to_owned(), format!("{e:#}")));
                        None
                    }
                },
                Some(Located::Unreachable(why)) => {
                    incoming.unreachable.push((path.to_owned(), why.clone()));
                    None
                }
                None => None,
            }
        };
        let mut kernels = Vec::new();
        for (kver, change) in targets.kernels.iter().filter(|(_, c)| c.headers) {
            // Headers alone, for a kernel that is neither installed nor coming, build nothing
            // that could ever load.
            if !change.vmlinuz && !current.kernels.contains_key(kver) {
                log::info!(
                    "the headers of kernel {kver} come without the kernel, which is not installed: nothing to build"
                );
                continue;
            }
            if let Some(package) = found(&headers_path(kver), &format!("usr/lib/modules/{kver}/build")) {
                kernels.push(IncomingKernel {
                    kver: kver.clone(),
                    headers_package: package.name.clone(),
                    headers_version: package.version.clone(),
                    compressed_module: compressed_module(transaction, kver, &package.name),
                });
                incoming.targets.kernels.insert(kver.clone(), *change);
            }
        }
        let mut sources = Vec::new();
        let mut incoming_locks = Locks::new();
        for dir in &targets.module_dirs {
            if let Some(package) = found(&source_path(dir), &format!("usr/src/{dir}")) {
                let locks = locks::of(package.depends.iter().map(|d| d.text.as_str()));
                if !locks.is_empty() {
                    incoming_locks.insert(package.name.clone(), locks);
                }
                sources.push((dir.clone(), package.name));
                incoming.targets.module_dirs.insert(dir.clone());
            }
        }
        incoming.kernels = kernels;
        incoming.moved = companions::moved(&incoming_locks, &current.package_versions, &current.locks);
        incoming.locks = incoming_locks;
        let tree = into.join("usr/src");
        let confs: Vec<PathBuf> = sources.iter().map(|(dir, _)| tree.join(dir).join("dkms.conf")).collect();
        let confs = dkms_conf::read_many(&confs, Evaluate::Unprivileged);
        incoming.sources = sources
            .into_iter()
            .zip(confs)
            .map(|((dir, package), conf)| {
                let digest = digest::of_tree(&tree.join(&dir)).ok();
                ModuleSource { dir, package: Some(package), conf, digest }
            })
            .collect();
        // An installed kernel leaves when pacman matched its `modules.order` as removed and
        // nothing of it as coming (which would be a contradiction: then it stays).
        incoming.leaving = targets
            .kernels
            .iter()
            .filter(|(kver, c)| c.order && !c.vmlinuz && !c.headers && current.kernels.contains_key(*kver))
            .map(|(kver, _)| kver.clone())
            .collect();
        incoming
    }

    /// The companions a test build of `id` is locked to that the transaction moves, and the
    /// package that brings the module; `None`: not locked, or opted out (`unlocked`).
    pub(super) fn locked(&self, id: &ModuleId, unlocked: &[glob::Pattern]) -> Option<(&str, &[Moved])> {
        let package = self.source(id)?.package.as_deref()?;
        let moved = self.moved.get(package)?;
        companions::is_locked(&id.name, unlocked).then_some((package, moved.as_slice()))
    }

    pub(super) fn kernel(&self, kver: &str) -> Option<&IncomingKernel> {
        self.kernels.iter().find(|k| k.kver == kver)
    }

    pub(super) fn source(&self, id: &ModuleId) -> Option<&ModuleSource> {
        self.sources.iter().find(|s| s.conf.as_ref().is_ok_and(|c| c.name == id.name && c.version == id.version))
    }
}

/// One compressed module the incoming kernel package of `kver` ships (see
/// [`IncomingKernel::compressed_module`]); `None` when its modules are plain `.ko` or the
/// package cannot be found.
fn compressed_module(transaction: &Transaction, kver: &str, headers_package: &str) -> Option<String> {
    let image = format!("usr/lib/modules/{kver}/vmlinuz");
    let kernel_package = headers_package.strip_suffix("-headers").unwrap_or(headers_package).to_owned();
    let located = transaction.locate(std::slice::from_ref(&image), |name, _| name == kernel_package);
    let Some(Located::Found(package)) = located.get(&image) else { return None };
    let dir = format!("usr/lib/modules/{kver}/");
    package.files.iter().find_map(|f| {
        let rel = f.strip_prefix(&dir)?;
        [".ko.zst", ".ko.xz", ".ko.gz"].iter().any(|s| rel.ends_with(s)).then(|| rel.to_owned())
    })
}

/// The system as it will be after the transaction, as far as the install hook's planning goes:
/// the incoming kernels with their headers, the incoming module sources in place of those their
/// packages replace, without the kernels that leave. The dkms tree is as it is now.
pub fn after_transaction(current: &Inventory, incoming: &Incoming) -> Inventory {
    let mut after = current.clone();
    after.kernels.retain(|kver, _| !incoming.leaving.contains(kver));
    for k in &incoming.kernels {
        let name = k.headers_package.strip_suffix("-headers").unwrap_or(&k.headers_package).to_owned();
        let kernel = after.kernels.entry(k.kver.clone()).or_insert_with(|| Kernel {
            kver: k.kver.clone(),
            package: name.clone(),
            pkgbase: name,
            headers: None,
        });
        kernel.headers = Some(k.headers_package.clone());
        after.package_versions.insert(k.headers_package.clone(), k.headers_version.clone());
    }
    let replaced: BTreeSet<&str> = incoming.sources.iter().filter_map(|s| s.package.as_deref()).collect();
    after.sources.retain(|_, s| s.package.as_deref().is_none_or(|p| !replaced.contains(p)));
    for source in &incoming.sources {
        after.sources.insert(source.dir.clone(), source.clone());
    }
    after.prebuilt.clear();
    after
}
