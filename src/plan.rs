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
//! Remove (PreTransaction): a module whose package stays (the upgrade hook's rebuild, or a package
//! the transaction upgrades) is not removed: its sources are kept for dkms (`Preserve`) until its
//! replacement is in. A module that leaves is removed from every kernel dkms built it for and
//! then unregistered; a leaving kernel loses all its modules; headers leaving alone keep the
//! installed modules (they still load). depmod runs once per kernel that changed and stays,
//! never for a leaving kernel, never for the rebuild removal of the upgrade hook.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use crate::config::Operation;
use crate::inventory::Inventory;
use crate::state::State;
use crate::targets::Targets;

/// A module version, as dkms names it: `name/version`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ModuleId {
    pub name: String,
    pub version: String,
}

impl ModuleId {
    pub fn new(name: impl Into<String>, version: impl Into<String>) -> Self {
        ModuleId { name: name.into(), version: version.into() }
    }
}

impl fmt::Display for ModuleId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.name, self.version)
    }
}

/// What a job does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobKind {
    /// `dkms install` for one kernel that has no version of the module installed.
    Install { kernel: String },
    /// Build for one kernel in a private tree and, only if that works, remove version `old` from
    /// the kernel (possibly the same version, built from other sources), move the build in and
    /// install it. `old_digest`: the digest of the sources `old`'s build was made from, whose
    /// kept copy dkms needs to remove it.
    Replace { kernel: String, old: String, old_digest: Option<String> },
    /// The installed build for the kernel was made from byte-identical sources: nothing to
    /// build; dkms's `source` link goes back to the packaged sources.
    Unchanged { kernel: String },
    /// Before the transaction replaces the sources (digest `digest`) of a module that stays: keep
    /// a copy and point dkms at it, so the builds installed for `installed` keep a dkms.conf.
    Preserve { digest: String, installed: Vec<String> },
    /// `dkms remove` for one kernel.
    Remove { kernel: String },
    /// `dkms remove --all`: drop the module version from the dkms tree.
    Unregister,
    /// After the jobs `replacing` (whatever came of them): unregister this replaced version if
    /// no kernel has it installed any more.
    Retire { replacing: Vec<usize> },
    /// The pre-transaction guard's build for a kernel: in a private tree, from sources and
    /// headers that may not be in place yet; nothing is installed.
    Test { kernel: String, build: TestBuild },
}

/// Where a guard's build finds what it needs, and where it goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestBuild {
    /// The kernel's headers (`--kernelsourcedir`).
    pub headers: std::path::PathBuf,
    /// The directory holding the sources as `NAME-VERSION/` (`--sourcetree`).
    pub source_tree: std::path::PathBuf,
    /// The private dkms tree the build goes to.
    pub tree: std::path::PathBuf,
    /// The kernel's `/lib/modules/K/build` does not exist yet: the build runs in a private mount
    /// namespace in which the headers are mounted there (for Makefiles that ignore
    /// `--kernelsourcedir`).
    pub mount_headers: bool,
}

/// One dkms invocation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Job {
    pub kind: JobKind,
    pub module: ModuleId,
    /// Indices of jobs that must succeed before this one starts (BUILD_DEPENDS, removals
    /// before unregistering).
    pub after: Vec<usize>,
}

impl Job {
    /// The kernel this job is for, if any.
    pub fn kernel(&self) -> Option<&str> {
        match &self.kind {
            JobKind::Install { kernel }
            | JobKind::Replace { kernel, .. }
            | JobKind::Unchanged { kernel }
            | JobKind::Remove { kernel }
            | JobKind::Test { kernel, .. } => Some(kernel),
            JobKind::Preserve { .. } | JobKind::Unregister | JobKind::Retire { .. } => None,
        }
    }

    /// What the job does, as one word.
    pub fn verb(&self) -> &'static str {
        match self.kind {
            JobKind::Install { .. } => "install",
            JobKind::Replace { .. } => "replace",
            JobKind::Unchanged { .. } => "keep",
            JobKind::Preserve { .. } => "preserve",
            JobKind::Remove { .. } => "remove",
            JobKind::Unregister => "unregister",
            JobKind::Retire { .. } => "retire",
            JobKind::Test { .. } => "test-build",
        }
    }

    /// True for jobs that build and install.
    pub fn is_install(&self) -> bool {
        matches!(self.kind, JobKind::Install { .. } | JobKind::Replace { .. })
    }

    /// True for jobs that build (and so run make and may sign): installs and the guard's builds.
    pub fn builds(&self) -> bool {
        self.is_install() || matches!(self.kind, JobKind::Test { .. })
    }

    /// The version this job replaces or retires when it is not the job's own module version:
    /// the other module version whose dkms state the job changes too.
    pub fn other_version(&self) -> Option<ModuleId> {
        match &self.kind {
            JobKind::Replace { old, .. } if *old != self.module.version => Some(ModuleId::new(&self.module.name, old)),
            _ => None,
        }
    }
}

impl fmt::Display for Job {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            JobKind::Install { kernel }
            | JobKind::Replace { kernel, .. }
            | JobKind::Unchanged { kernel }
            | JobKind::Test { kernel, .. } => write!(f, "{} for {kernel}", self.module),
            JobKind::Remove { kernel } => write!(f, "{} from {kernel}", self.module),
            JobKind::Preserve { .. } | JobKind::Unregister | JobKind::Retire { .. } => write!(f, "{}", self.module),
        }
    }
}

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

/// Plans the jobs for `operation` on `targets`, given what is installed and what the state file
/// remembers (which sources each installed build was made from).
pub fn plan(operation: Operation, targets: &Targets, inv: &Inventory, state: &State) -> Plan {
    match operation {
        Operation::Install => plan_install(targets, inv, state),
        Operation::Remove { rebuild } => plan_remove(targets, inv, rebuild),
    }
}

/// A module source resolved to its dkms identity, its BUILD_DEPENDS, and what its job does.
pub(crate) struct Source<'a> {
    pub(crate) id: ModuleId,
    pub(crate) depends: &'a [String],
    pub(crate) kind: JobKind,
}

fn plan_install(targets: &Targets, inv: &Inventory, state: &State) -> Plan {
    let mut plan = Plan::default();
    let mut wanted = wanted_pairs(targets, inv, &mut plan);
    drop_modules_shipped_twice(&mut wanted, inv, &mut plan);
    let per_kernel = resolve_pairs(&wanted, targets, inv, state, &mut plan);
    for (kver, sources) in per_kernel {
        push_in_dependency_order(&mut plan, kver, sources);
    }
    plan.retire_replaced();
    plan.note_build_depends(inv);
    plan.use_prebuilt(inv);
    plan
}

/// How far to trust an installed build of the same version to be made from today's sources.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Compare {
    /// Not at all: the package was just installed or upgraded. An installed build of the same
    /// version is rebuilt unless the state file says it was made from identical sources.
    Digest,
    /// Unless the state file says it was made from other sources (`sync`: builds made before
    /// digests were recorded are not all rebuilt).
    Recorded,
    /// Fully (a new kernel's pairs: the module's sources did not change).
    Trust,
}

/// What a wanted (module version, kernel) pair needs, given what is installed for the kernel
/// and how far an installed build of the same version is trusted (`compare`): `None` when
/// nothing. A build kept after its replacement failed is always retried.
pub(crate) fn job_for(
    inv: &Inventory,
    state: &State,
    id: &ModuleId,
    digest: Option<&str>,
    kernel: &str,
    compare: Compare,
) -> Option<JobKind> {
    let installed = inv.tree.versions_of(&id.name).find(|(_, e)| e.installed.contains(kernel)).map(|(v, _)| v);
    let built_from = |version: &str| state.get(&id.name, version, kernel).and_then(|r| r.digest.clone());
    let kernel_name = kernel;
    let kernel = kernel_name.to_owned();
    match installed {
        None => Some(JobKind::Install { kernel }),
        Some(v) if v == id.version => {
            let record = state.get(&id.name, v, kernel_name);
            let made_from = record.and_then(|r| r.digest.as_deref());
            let kept = record.is_some_and(|r| r.last == crate::state::Last::Kept);
            let stale = kept
                || match compare {
                    Compare::Digest => digest.is_none() || made_from != digest,
                    Compare::Recorded => made_from.is_some() && digest.is_some() && made_from != digest,
                    Compare::Trust => false,
                };
            // dkms's link at kept sources goes back to the packaged ones.
            let relink = inv.tree.entries.get(&(id.name.clone(), v.to_owned())).is_some_and(|e| e.kept.is_some());
            match (stale, compare) {
                (true, _) => Some(JobKind::Replace { kernel, old: v.to_owned(), old_digest: built_from(v) }),
                (false, Compare::Digest) => Some(JobKind::Unchanged { kernel }),
                (false, Compare::Recorded) if relink => Some(JobKind::Unchanged { kernel }),
                (false, _) => None,
            }
        }
        Some(v) => Some(JobKind::Replace { kernel, old: v.to_owned(), old_digest: built_from(v) }),
    }
}

/// The (kernel, module directory) pairs a transaction's targets call for: each changed module ×
/// every kernel, and every packaged module × each changed kernel. Kernels without headers get
/// one notice each instead; kvers no package owns get an informational notice.
fn wanted_pairs(targets: &Targets, inv: &Inventory, plan: &mut Plan) -> BTreeSet<(String, String)> {
    let mut wanted = BTreeSet::new();
    let mut headerless: BTreeSet<&str> = BTreeSet::new();
    for kver in targets.kernels.keys().filter(|k| !inv.kernels.contains_key(*k)) {
        plan.notices.push(Notice::NotAKernel { kver: kver.clone() });
    }
    for dir in &targets.module_dirs {
        for kernel in inv.kernels.values() {
            if kernel.headers.is_some() {
                wanted.insert((kernel.kver.clone(), dir.clone()));
            } else {
                headerless.insert(&kernel.kver);
            }
        }
    }
    let packaged: Vec<&str> = inv.sources.values().filter(|s| s.package.is_some()).map(|s| s.dir.as_str()).collect();
    for kernel in targets.kernels.keys().filter_map(|k| inv.kernels.get(k)) {
        match kernel.headers {
            Some(_) => wanted.extend(packaged.iter().map(|dir| (kernel.kver.clone(), (*dir).to_owned()))),
            None if !packaged.is_empty() => {
                headerless.insert(&kernel.kver);
            }
            None => {}
        }
    }
    for kver in headerless {
        let kernel = &inv.kernels[kver];
        plan.notices.push(Notice::NoHeaders {
            kver: kver.to_owned(),
            package: kernel.package.clone(),
            headers_package: kernel.headers_package(),
        });
    }
    wanted
}

/// Two packages shipping one module (foo-dkms and foo-git-dkms) would replace each other's
/// build: neither is built until one of them goes (an error notice says so).
fn drop_modules_shipped_twice(wanted: &mut BTreeSet<(String, String)>, inv: &Inventory, plan: &mut Plan) {
    let by_name = shipped_by_several(inv);
    let mut conflicted: BTreeSet<&str> = BTreeSet::new();
    for (_, dir) in wanted.iter() {
        let Some(Ok(conf)) = inv.sources.get(dir).map(|s| &s.conf) else { continue };
        if let Some(shipped) = by_name.get(conf.name.as_str()) {
            if conflicted.insert(&conf.name) {
                let shipped = shipped.iter().map(|(_, s)| s.clone()).collect();
                plan.notices.push(Notice::SeveralPackages { module: conf.name.clone(), shipped });
            }
        }
    }
    wanted.retain(|(_, dir)| match inv.sources.get(dir).map(|s| &s.conf) {
        Some(Ok(conf)) => !conflicted.contains(conf.name.as_str()),
        _ => true,
    });
}

/// Resolves directories to module identities and jobs, per kernel. A bad dkms.conf is reported
/// once; a module version dkms already has installed for the kernel needs nothing (`dkms install`
/// would only say so, at ~0.1 s a call) unless its package just changed (see [`job_for`]).
fn resolve_pairs<'i>(
    wanted: &BTreeSet<(String, String)>,
    targets: &Targets,
    inv: &'i Inventory,
    state: &State,
    plan: &mut Plan,
) -> BTreeMap<String, Vec<Source<'i>>> {
    let mut per_kernel: BTreeMap<String, Vec<Source>> = BTreeMap::new();
    let mut bad: BTreeSet<&str> = BTreeSet::new();
    for (kver, dir) in wanted {
        match resolve_source(inv, dir) {
            Ok((id, depends)) => {
                let digest = inv.sources.get(dir).and_then(|s| s.digest.as_deref());
                let compare = if targets.module_dirs.contains(dir) { Compare::Digest } else { Compare::Trust };
                if let Some(kind) = job_for(inv, state, &id, digest, kver, compare) {
                    per_kernel.entry(kver.clone()).or_default().push(Source { id, depends, kind });
                }
            }
            // No dkms.conf on disk for a target: nothing to build from (pacman matched a path
            // that is not there, e.g. NoExtract).
            Err(error) if error.is_empty() => {
                if bad.insert(dir) {
                    plan.notices.push(Notice::NotRegistered { dir: dir.clone() });
                }
            }
            Err(error) => {
                if bad.insert(dir) {
                    plan.notices.push(Notice::BadSource { dir: dir.clone(), error });
                }
            }
        }
    }
    per_kernel
}

/// Adds one kernel's install jobs, BUILD_DEPENDS first (name order among the others), and its
/// depmod when any job builds.
pub(crate) fn push_in_dependency_order(plan: &mut Plan, kver: String, mut sources: Vec<Source>) {
    sources.sort_by(|a, b| a.id.cmp(&b.id));
    let items: Vec<(&str, &[String])> = sources.iter().map(|s| (s.id.name.as_str(), s.depends)).collect();
    let (ordered, cycle) = dependency_order(&items);
    if !cycle.is_empty() {
        plan.notices.push(Notice::DependencyCycle { kernel: kver.clone(), modules: cycle });
    }
    let first = plan.jobs.len();
    for (pos, &i) in ordered.iter().enumerate() {
        let after = sources[i]
            .depends
            .iter()
            .filter_map(|dep| ordered[..pos].iter().position(|&j| &sources[j].id.name == dep))
            .map(|earlier| first + earlier)
            .collect();
        plan.jobs.push(Job { kind: sources[i].kind.clone(), module: sources[i].id.clone(), after });
    }
    if sources.iter().any(|s| !matches!(s.kind, JobKind::Unchanged { .. })) {
        plan.depmod.push(kver);
    }
}

/// The module identity and BUILD_DEPENDS of `usr/src/<dir>` from its dkms.conf.
fn resolve_source<'a>(inv: &'a Inventory, dir: &str) -> Result<(ModuleId, &'a [String]), String> {
    match inv.sources.get(dir) {
        Some(source) => match &source.conf {
            Ok(conf) => Ok((ModuleId::new(&conf.name, &conf.version), &conf.build_depends)),
            Err(e) => Err(e.clone()),
        },
        None => Err(String::new()),
    }
}

/// Orders modules `(name, BUILD_DEPENDS)` so that dependencies come first (Kahn's algorithm;
/// among modules that are ready, the earlier in `items` first). Returns the order as indices into
/// `items`, and the names left in a cycle, if any (appended in their order).
pub(crate) fn dependency_order(items: &[(&str, &[String])]) -> (Vec<usize>, Vec<String>) {
    let deps_of = |i: usize| -> Vec<usize> {
        items[i].1.iter().filter_map(|d| items.iter().position(|(name, _)| name == d)).filter(|&j| j != i).collect()
    };
    let mut done: Vec<usize> = Vec::new();
    let mut left: Vec<usize> = (0..items.len()).collect();
    while !left.is_empty() {
        let ready = left.iter().position(|&i| deps_of(i).iter().all(|d| done.contains(d)));
        match ready {
            Some(pos) => done.push(left.remove(pos)),
            None => {
                let cycle = left.iter().map(|&i| items[i].0.to_owned()).collect();
                done.extend(left);
                return (done, cycle);
            }
        }
    }
    (done, Vec::new())
}

/// Module names that more than one package ships (in different directories), each with its
/// sources as `(dir, "name/version from package")`.
pub fn shipped_by_several(inv: &Inventory) -> BTreeMap<&str, Vec<(&str, String)>> {
    let mut by_name: BTreeMap<&str, Vec<(&str, String)>> = BTreeMap::new();
    for source in inv.sources.values() {
        if let (Some(pkg), Ok(conf)) = (&source.package, &source.conf) {
            by_name
                .entry(&conf.name)
                .or_default()
                .push((&source.dir, format!("{}/{} from {pkg}", conf.name, conf.version)));
        }
    }
    by_name.retain(|_, shipped| shipped.len() > 1);
    by_name
}

fn plan_remove(targets: &Targets, inv: &Inventory, rebuild: bool) -> Plan {
    let mut plan = Plan::default();
    // (module, kernel) pairs to remove, in order of discovery but without duplicates.
    let mut removals: BTreeSet<(ModuleId, String)> = BTreeSet::new();
    let mut unregister: BTreeSet<ModuleId> = BTreeSet::new();
    let leaving: BTreeSet<&str> = targets.kernels.iter().filter(|(_, c)| c.image).map(|(k, _)| k.as_str()).collect();

    for dir in &targets.module_dirs {
        // The dkms.conf is still on disk before the transaction; when it is not (or cannot be
        // read), the dkms tree's `source` link says which module version the directory was.
        let id = match inv.sources.get(dir).map(|s| &s.conf) {
            Some(Ok(conf)) => Some(ModuleId::new(&conf.name, &conf.version)),
            _ => inv.tree.by_source_dir(dir).map(|(m, v)| ModuleId::new(m, v)),
        };
        let Some(id) = id else {
            plan.notices.push(Notice::NotRegistered { dir: dir.clone() });
            continue;
        };
        let Some(entry) = inv.tree.entries.get(&(id.name.clone(), id.version.clone())) else {
            plan.notices.push(Notice::NotRegistered { dir: dir.clone() });
            continue;
        };
        // A module that stays packaged keeps its builds until their replacements are built
        // after the transaction: the upgrade hook's rebuild (same directory), or a package the
        // transaction upgrades. Its sources are kept for dkms, which needs them to remove the
        // old builds later.
        let source = inv.sources.get(dir);
        let stays = rebuild || source.and_then(|s| s.package.as_ref()).is_some_and(|p| inv.upgrading.contains(p));
        if let (true, Some(digest)) = (stays, source.and_then(|s| s.digest.clone())) {
            let installed = entry.installed.iter().cloned().collect();
            plan.jobs.push(Job { kind: JobKind::Preserve { digest, installed }, module: id, after: Vec::new() });
            continue;
        }
        for kver in entry.built.union(&entry.installed) {
            removals.insert((id.clone(), kver.clone()));
        }
        // The module leaves: earlier versions kept for kernels whose upgrade failed go too.
        for (version, kept) in inv.tree.versions_of(&id.name).filter(|(v, e)| *v != id.version && e.kept.is_some()) {
            let old = ModuleId::new(&id.name, version);
            for kver in kept.built.union(&kept.installed) {
                removals.insert((old.clone(), kver.clone()));
            }
            unregister.insert(old);
        }
        unregister.insert(id);
    }

    for (kver, change) in &targets.kernels {
        let modules = inv.tree.for_kernel(kver);
        if change.image {
            for (m, v) in modules {
                removals.insert((ModuleId::new(m, v), kver.clone()));
            }
        } else if let Some(kernel) = inv.kernels.get(kver) {
            // Only the headers leave: modules already installed still load with this kernel.
            // (Headers upgraded in place, the rebuild case, need no word at all.)
            if !rebuild {
                let kept = inv
                    .tree
                    .entries
                    .iter()
                    .filter(|(_, e)| e.installed.contains(kver))
                    .map(|((m, v), _)| ModuleId::new(m, v))
                    .filter(|id| !removals.contains(&(id.clone(), kver.clone())))
                    .collect();
                plan.notices.push(Notice::HeadersLeaving { kver: kver.clone(), package: kernel.package.clone(), kept });
            }
        }
    }

    let mut removal_jobs: BTreeMap<ModuleId, Vec<usize>> = BTreeMap::new();
    let mut depmod: BTreeSet<String> = BTreeSet::new();
    for (id, kver) in removals {
        removal_jobs.entry(id.clone()).or_default().push(plan.jobs.len());
        if !leaving.contains(kver.as_str()) && inv.kernels.contains_key(&kver) {
            depmod.insert(kver.clone());
        }
        plan.jobs.push(Job { kind: JobKind::Remove { kernel: kver }, module: id, after: Vec::new() });
    }
    for id in unregister {
        let after = removal_jobs.get(&id).cloned().unwrap_or_default();
        plan.jobs.push(Job { kind: JobKind::Unregister, module: id, after });
    }
    if !rebuild {
        plan.depmod = depmod.into_iter().collect();
    }
    plan
}

#[cfg(test)]
mod tests {
    use super::*;
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
            self.state.record(&job, &crate::run::Outcome::Installed, None, 1, Some(digest));
            if kept {
                let replace = Job {
                    kind: JobKind::Replace { kernel: kernel.into(), old: version.into(), old_digest: None },
                    ..job
                };
                let failed = crate::run::Outcome::ExecFailed { error: "x".into() };
                let outcome = crate::run::Outcome::Kept { old: version.into(), failure: Box::new(failed) };
                self.state.record(&replace, &outcome, None, 2, None);
            }
            self
        }
        /// Tree entry `name/version` with its `source` link at kept sources `digest`.
        fn kept_sources(mut self, name: &str, version: &str, digest: &str) -> Self {
            self.inv.tree.entries.get_mut(&(name.into(), version.into())).unwrap().kept = Some(digest.into());
            self
        }
        /// The running transaction upgrades `package`.
        fn upgrading(mut self, package: &str) -> Self {
            self.inv.upgrading.insert(package.into());
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
        // The remove hook, while the transaction upgrades the package (to another directory).
        let upgraded = w.upgrading("hello-dkms");
        preserve(&upgraded.plan(REMOVE, "usr/src/hello-1.0/dkms.conf\n"));
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
