//! What is installed, read once into owned data: kernels and their headers and module sources
//! (from the local pacman database through libalpm), the module sources' dkms.conf values, and
//! what dkms has built and installed (from the dkms tree, never `dkms status`).
//!
//! This is the only code that reads the system. The libalpm handle lives only inside
//! `pacman::read` (it is not `Send`); everything returned is plain owned data the planner and
//! the runner can use freely.

pub mod dkms_conf;
pub mod dkms_tree;
pub mod incoming;
pub mod package;
pub mod pacman;

use std::collections::{BTreeMap, BTreeSet};

use anyhow::Result;

use crate::domain::Layout;
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
    /// The versions (`pkgver-pkgrel`) of the packages named above, by package name.
    pub package_versions: BTreeMap<String, String>,
    /// Packages owning the module sources read that the running pacman transaction upgrades
    /// (when the scope asked; see `incoming`).
    pub upgrading: BTreeSet<String>,
    /// What the pre-transaction guard built for the running transaction (when the scope asked).
    pub prebuilt: Vec<crate::prebuilt::Prebuilt>,
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
    /// Find which of the sources' packages the running transaction upgrades.
    pub incoming: bool,
    /// Read what the guard built for the running transaction (and the digests of their sources).
    pub prebuilt: bool,
}

impl Inventory {
    /// Reads the system below `layout`: every module source, no digests; `evaluate` says who may
    /// evaluate the dkms.conf files.
    pub fn read(layout: &Layout, evaluate: Evaluate) -> Result<Inventory> {
        Inventory::read_scope(layout, Scope::default(), evaluate)
    }

    /// Reads what `scope` asks for.
    pub fn read_scope(layout: &Layout, scope: Scope, evaluate: Evaluate) -> Result<Inventory> {
        let tree = DkmsTree::read(&layout.dkms_tree, &crate::kept::root(layout))?;
        let prebuilt = if scope.prebuilt {
            crate::prebuilt::load(layout, incoming::Transaction::current_id().as_deref())
        } else {
            Vec::new()
        };
        let mut dirs = dkms_conf::source_dirs(&layout.source_tree)?;
        if let Some(only) = scope.only {
            dirs.retain(|d| only.contains(d));
        }
        let paths: Vec<_> = dirs.iter().map(|dir| layout.source_tree.join(dir).join("dkms.conf")).collect();
        // bash reads the dkms.conf files while libalpm loads the database.
        let (owners, confs) = std::thread::scope(|scope| {
            let confs = scope.spawn(|| dkms_conf::read_many(&paths, evaluate));
            let owners = pacman::read(layout, &dirs);
            let confs = confs.join().unwrap_or_else(|_| vec![Err("reading dkms.conf failed".to_owned()); paths.len()]);
            (owners, confs)
        });
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
        let packages: BTreeSet<String> = sources.values().filter_map(|s| s.package.clone()).collect();
        let upgrading = match scope.incoming && !packages.is_empty() {
            true => incoming::Transaction::discover(layout).upgraded(&packages),
            false => BTreeSet::new(),
        };
        Ok(Inventory { kernels: owners.kernels, sources, tree, package_versions: owners.versions, upgrading, prebuilt })
    }
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
