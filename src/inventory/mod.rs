//! What is installed, read once into owned data: kernels and their headers and module sources
//! (from the local pacman database through libalpm), the module sources' dkms.conf values, and
//! what dkms has built and installed (from the dkms tree, never `dkms status`).
//!
//! This is the only code that reads the system. The libalpm handle lives only inside
//! `pacman::read` (it is not `Send`); everything returned is plain owned data the planner and
//! the runner can use freely.

pub mod dkms_conf;
pub mod dkms_tree;
pub mod pacman;

use std::collections::{BTreeMap, BTreeSet};

use anyhow::Result;

use crate::config::Layout;
pub use dkms_conf::{DkmsConf, Evaluate};
pub use dkms_tree::DkmsTree;

/// An installed kernel: a `<kver>` whose `vmlinuz`/`pkgbase` an installed package owns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kernel {
    /// The module directory name, e.g. `6.12.1-arch1-1`.
    pub kver: String,
    /// The package owning the kernel, e.g. `linux`.
    pub package: String,
    /// The package base (content of `pkgbase`), used to name the headers package to install.
    pub pkgbase: String,
    /// Where the headers come from, when `build/include/` exists: the package owning `build/`
    /// (a directory, or a symlink to a headers tree), or the directory an unpackaged `build`
    /// symlink leads to.
    pub headers: Option<String>,
}

impl Kernel {
    /// The headers package a user should install for this kernel.
    pub fn headers_package(&self) -> String {
        format!("{}-headers", self.pkgbase)
    }
}

/// A module source directory `usr/src/<dir>` with a dkms.conf.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModuleSource {
    /// The directory name under `usr/src`.
    pub dir: String,
    /// The package owning its dkms.conf; `None` when no package does (left out of "every module").
    pub package: Option<String>,
    /// The values read from dkms.conf, or why they could not be read.
    pub conf: Result<DkmsConf, String>,
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
}

impl Inventory {
    /// Reads the system below `layout`; `evaluate` says who may evaluate the dkms.conf files.
    pub fn read(layout: &Layout, evaluate: Evaluate) -> Result<Inventory> {
        Inventory::read_sources(layout, None, evaluate)
    }

    /// Like `read`, with only the module sources in `dirs` (those that exist): what a removal
    /// needs, which never looks at the other sources.
    pub fn read_some(layout: &Layout, dirs: &BTreeSet<String>, evaluate: Evaluate) -> Result<Inventory> {
        Inventory::read_sources(layout, Some(dirs), evaluate)
    }

    fn read_sources(layout: &Layout, only: Option<&BTreeSet<String>>, evaluate: Evaluate) -> Result<Inventory> {
        let tree = DkmsTree::read(&layout.dkms_tree)?;
        let mut dirs = dkms_conf::source_dirs(&layout.source_tree)?;
        if let Some(only) = only {
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
        let sources = dirs
            .into_iter()
            .zip(confs)
            .map(|(dir, conf)| {
                let package = owners.sources.get(&dir).cloned();
                (dir.clone(), ModuleSource { dir, package, conf })
            })
            .collect();
        Ok(Inventory { kernels: owners.kernels, sources, tree, package_versions: owners.versions })
    }
}
