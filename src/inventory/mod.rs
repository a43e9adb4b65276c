//! What is installed, read once into owned data: kernels and their headers and module sources
//! (from the local pacman database through libalpm), the module sources' dkms.conf values, and
//! what dkms has built and installed (from the dkms tree, never `dkms status`).
//!
//! This is the only code that reads the system. The libalpm handle lives only inside
//! `pacman::read` (it is not `Send`); everything returned is plain owned data the planner and
//! the runner can use freely.

pub mod boot;
pub mod dkms_conf;
pub mod dkms_tree;
pub mod frontend;
pub mod headers;
pub mod incoming;
pub mod locks;
pub mod package;
pub mod pacman;
pub mod pacman_conf;
pub mod signing;
pub mod toolchain;
pub mod transaction_id;

use std::collections::{BTreeMap, BTreeSet};

use anyhow::Result;

use crate::domain::{Layout, ModuleId};
pub use dkms_conf::{DkmsConf, Evaluate};
pub use dkms_tree::DkmsTree;
pub use pacman::Kernel;

/// A module source directory `usr/src/<dir>` with a dkms.conf.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModuleSource {
    /// The directory name under `usr/src`.
    pub dir: String,
    /// The package owning its dkms.conf; `None` when no package does (left out of "every module").
    pub package: Option<String>,
    /// The values read from dkms.conf, or why they could not be read.
    pub conf: Result<DkmsConf, String>,
    /// The digest of the directory's contents (see `digest`), when the scope asked for it.
    pub digest: Option<String>,
}

/// Everything the planner needs about the system.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Inventory {
    /// Installed kernels by kver.
    pub kernels: BTreeMap<String, Kernel>,
    /// Module sources by directory name (`usr/src/*/dkms.conf` present on disk).
    pub sources: BTreeMap<String, ModuleSource>,
    /// What dkms has registered, built and installed.
    pub tree: DkmsTree,
    /// The versions (`pkgver-pkgrel`) of the packages named above and of the toolchain's (see
    /// `toolchain::packages`), by package name.
    pub package_versions: BTreeMap<String, String>,
    /// What the pre-transaction guard built for the running transaction (when the scope asked).
    pub prebuilt: Vec<crate::prebuilt::Prebuilt>,
    /// Why the guard's builds for the running transaction are not used, when they are not for a
    /// reason the user should see (the toolchain changed).
    pub prebuilt_refused: Option<String>,
    /// The exact-version dependencies of the module packages, by package (`locks`); their
    /// companions' installed versions are in `package_versions`.
    pub locks: locks::Locks,
    /// The boot image generators installed (`boot`).
    pub boot: boot::Boot,
    /// Module source directories the running transaction brings, as the guard recorded them
    /// (when the scope asked; see `coming`).
    pub coming: BTreeSet<String>,
    /// Kernels whose headers the transaction replaced in place (same kver, see `headers`), by
    /// kver: `true` when the new headers are byte-identical to those before (when the caller asked).
    pub headers_in_place: BTreeMap<String, bool>,
    /// Installed builds a direct `dkms install` would have signed with the system's key and that
    /// are not, by (module, version, kernel) (when the scope asked; see `signing`).
    pub not_signed: BTreeSet<(String, String, String)>,
    /// Module source directories whose dkms.conf was not evaluated ([`Scope::lazy`]): their
    /// `conf` holds only the name and version dkms knows them by.
    pub unevaluated: BTreeSet<String>,
}

/// What to read, beyond kernels and the dkms tree.
#[derive(Debug, Clone, Copy, Default)]
pub struct Scope<'a> {
    /// Only these module sources (a removal never looks at the others); `None`: every one.
    pub only: Option<&'a BTreeSet<String>>,
    /// The digest of these module sources' contents; `None`: of none. `Some` of every directory
    /// read with [`Scope::all_digests`].
    pub digests: Option<&'a BTreeSet<String>>,
    /// Every module source read gets its digest.
    pub all_digests: bool,
    /// Read what the guard built for the running transaction (and the digests of their sources).
    pub prebuilt: bool,
    /// Find the installed builds that are not signed as the system signs.
    pub signatures: bool,
    /// Read which module source directories the running transaction brings (the guard's record).
    pub coming: bool,
    /// Read just enough to tell whether the install plan has anything to do (the quiet path):
    /// module sources no package owns are left out unless their digest is asked for, and no
    /// dkms.conf is evaluated whose module version dkms has registered from that very directory,
    /// unless its digest is asked for: its `conf` holds only the name and version dkms knows it
    /// by. Evaluating costs a bash run. A caller whose plan has anything to do makes the
    /// reading whole with [`Inventory::complete`].
    pub lazy: bool,
}

impl Inventory {
    /// Reads the system below `layout`: every module source, no digests; `evaluate` says who may
    /// evaluate the dkms.conf files.
    pub fn read(layout: &Layout, evaluate: Evaluate) -> Result<Inventory> {
        Inventory::read_scope(layout, Scope::default(), evaluate)
    }

    /// Reads what `scope` asks for.
    pub fn read_scope(layout: &Layout, scope: Scope, evaluate: Evaluate) -> Result<Inventory> {
        let mut dirs = dkms_conf::source_dirs(&layout.source_tree)?;
        if let Some(only) = scope.only {
            dirs.retain(|d| only.contains(d));
        }
        let asked = |dir: &str| scope.all_digests || scope.digests.is_some_and(|d| d.contains(dir));
        // Lazily, the owners come first (while the dkms tree is read): a source no package owns
        // that is not asked for is of no use to the install plan.
        let (tree, lazy_owners) = std::thread::scope(|threads| {
            let tree = threads.spawn(|| DkmsTree::read(&layout.dkms_tree, &crate::kept::root(layout)));
            let owners = scope.lazy.then(|| pacman::read(layout, &dirs, &toolchain::packages(true)));
            let tree = tree.join().unwrap_or_else(|_| Err(anyhow::anyhow!("reading the dkms tree failed")));
            (tree, owners)
        });
        let tree = tree?;
        let lazy_owners = lazy_owners.transpose()?;
        let (prebuilt, prebuilt_refused) = match scope.prebuilt {
            true => {
                crate::prebuilt::load(layout, || transaction_id::current(layout), || toolchain::for_prebuilt(layout))
            }
            false => (Vec::new(), None),
        };
        if let Some(owners) = &lazy_owners {
            dirs.retain(|dir| asked(dir) || owners.sources.contains_key(dir));
        }
        let registered = |dir: &String| registered_as(&tree, dir).filter(|_| scope.lazy && !asked(dir));
        let mut unevaluated = BTreeSet::new();
        let known: Vec<Option<Result<DkmsConf, String>>> = dirs
            .iter()
            .map(|dir| {
                let id = registered(dir)?;
                unevaluated.insert(dir.clone());
                Some(Ok(DkmsConf { name: id.name, version: id.version, ..DkmsConf::default() }))
            })
            .collect();
        let paths: Vec<_> = dirs
            .iter()
            .zip(&known)
            .filter(|(_, conf)| conf.is_none())
            .map(|(dir, _)| layout.source_tree.join(dir).join("dkms.conf"))
            .collect();
        let (owners, evaluated) = match lazy_owners {
            Some(owners) => (Ok(owners), dkms_conf::read_many(&paths, evaluate)),
            // bash reads the dkms.conf files while libalpm loads the database.
            None => std::thread::scope(|scope| {
                let confs = scope.spawn(|| dkms_conf::read_many(&paths, evaluate));
                let owners = pacman::read(layout, &dirs, &toolchain::packages(true));
                let failed = || vec![Err("reading dkms.conf failed".to_owned()); paths.len()];
                (owners, confs.join().unwrap_or_else(|_| failed()))
            }),
        };
        let mut evaluated = evaluated.into_iter();
        let confs: Vec<Result<DkmsConf, String>> = known
            .into_iter()
            .map(|conf| {
                conf.unwrap_or_else(|| evaluated.next().unwrap_or_else(|| Err("reading dkms.conf failed".to_owned())))
            })
            .collect();
        let owners = owners?;
        let sources: BTreeMap<String, ModuleSource> = dirs
            .into_iter()
            .zip(confs)
            .map(|(dir, conf)| {
                let package = owners.sources.get(&dir).cloned();
                let wanted = scope.all_digests
                    || scope.digests.is_some_and(|d| d.contains(&dir))
                    || prebuilt.iter().any(|p| format!("{}-{}", p.module, p.version) == dir);
                let digest = wanted.then(|| digest_of(layout, &dir)).flatten();
                (dir.clone(), ModuleSource { dir, package, conf, digest })
            })
            .collect();
        let not_signed = match scope.signatures {
            true => {
                let kernels: Vec<&str> = owners.kernels.keys().map(String::as_str).collect();
                signing::not_signed_as_the_system_signs(layout, &tree, &kernels)
            }
            false => BTreeSet::new(),
        };
        let coming = match scope.coming {
            true => crate::coming::read(layout, || transaction_id::current(layout)),
            false => BTreeSet::new(),
        };
        Ok(Inventory {
            coming,
            not_signed,
            kernels: owners.kernels,
            sources,
            tree,
            package_versions: owners.versions,
            prebuilt,
            prebuilt_refused,
            locks: owners.locks,
            boot: owners.boot,
            unevaluated,
            headers_in_place: BTreeMap::new(),
        })
    }

    /// For the install hook's quiet path, from the files alone (no libalpm, no dkms.conf
    /// evaluated): the kernels `kvers` and every module source, read so that a plan with nothing
    /// to do on this reading has nothing to do on the full one either. Every `usr/src/*/dkms.conf`
    /// counts as packaged, each of `kvers` with a `vmlinuz` or `pkgbase` as a kernel, with headers
    /// when `build/include/` and `build/Makefile` are there: supersets of what libalpm confirms,
    /// so each install pair the full reading plans is planned here too. Owners and package names
    /// stay empty (nothing a plan with nothing to do shows). `None` when the files cannot tell: a
    /// source directory that is not a module version dkms registered from it (its dkms.conf would
    /// need evaluating), or anything the guard built (`prebuilt`).
    pub fn read_files_only<'k>(
        layout: &Layout,
        kvers: impl IntoIterator<Item = &'k String>,
    ) -> Result<Option<Inventory>> {
        if layout.prebuilt_dir().exists() {
            log::debug!("the guard built modules: libalpm is read");
            return Ok(None);
        }
        let tree = DkmsTree::read(&layout.dkms_tree, &crate::kept::root(layout))?;
        let mut sources = BTreeMap::new();
        for dir in dkms_conf::source_dirs(&layout.source_tree)? {
            let Some(id) = registered_as(&tree, &dir) else {
                log::debug!("usr/src/{dir} is not registered with dkms from there: libalpm is read");
                return Ok(None);
            };
            let conf = Ok(DkmsConf { name: id.name, version: id.version, ..DkmsConf::default() });
            sources.insert(dir.clone(), ModuleSource { dir, package: Some(String::new()), conf, digest: None });
        }
        let kernels = kvers
            .into_iter()
            .filter(|kver| {
                let dir = layout.kernel_dir(kver);
                dir.join("vmlinuz").exists() || dir.join("pkgbase").exists()
            })
            .map(|kver| {
                let build = layout.kernel_dir(kver).join("build");
                let headers = (build.join("include").is_dir() && build.join("Makefile").exists()).then(String::new);
                (kver.clone(), Kernel { kver: kver.clone(), package: String::new(), pkgbase: String::new(), headers })
            })
            .collect();
        let unevaluated = sources.keys().cloned().collect();
        Ok(Some(Inventory { kernels, sources, tree, unevaluated, ..Inventory::default() }))
    }

    /// A lazy reading ([`Scope::lazy`]) made whole, as a full reading with the same scope would
    /// have it: the module sources it left out (no package owns them) and the dkms.conf files it
    /// did not evaluate are read now; the rest, libalpm's answers included, is taken over.
    pub fn complete(mut self, layout: &Layout, evaluate: Evaluate) -> Result<Inventory> {
        let missing: Vec<String> = dkms_conf::source_dirs(&layout.source_tree)?
            .into_iter()
            .filter(|dir| !self.sources.contains_key(dir) || self.unevaluated.contains(dir))
            .collect();
        let paths: Vec<_> = missing.iter().map(|dir| layout.source_tree.join(dir).join("dkms.conf")).collect();
        for (dir, conf) in missing.into_iter().zip(dkms_conf::read_many(&paths, evaluate)) {
            match self.sources.get_mut(&dir) {
                Some(source) => source.conf = conf,
                None => {
                    self.sources.insert(dir.clone(), ModuleSource { dir, package: None, conf, digest: None });
                }
            }
        }
        self.unevaluated.clear();
        Ok(self)
    }
}

/// The module version dkms registered from `usr/src/DIR` itself (its `source` link leads there,
/// no kept copy, the directory named `NAME-VERSION`): that directory's dkms.conf says this name
/// and version, so it needs no evaluation to be known.
fn registered_as(tree: &DkmsTree, dir: &str) -> Option<ModuleId> {
    let (m, v) = tree.by_source_dir(dir)?;
    let entry = &tree.entries[&(m.to_owned(), v.to_owned())];
    (entry.kept.is_none() && format!("{m}-{v}") == dir).then(|| ModuleId::new(m, v))
}

/// The digest of `usr/src/DIR`; `None` (and a warning) when it cannot be read.
pub fn digest_of(layout: &Layout, dir: &str) -> Option<String> {
    match crate::digest::of_tree(&layout.source_tree.join(dir)) {
        Ok(digest) => Some(digest),
        Err(e) => {
            log::warn!("{e:#}: its modules are rebuilt rather than compared");
            None
        }
    }
}
