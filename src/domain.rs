//! The words every layer of dkms-hook speaks, defined once on the ground floor: a module version
//! (`ModuleId`), a job and what it does (`Job`, `JobKind`, `TestBuild`), what became of it
//! (`Outcome`), the hook's operation, where things live on the system acted on (`Layout`) and the
//! key dkms signs with (`Signing`). Plain data with the little behaviour that belongs to the words
//! themselves; nothing here reads the system or imports another module of the crate.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// What pacman asked us to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    /// PostTransaction: build and install.
    Install,
    /// PreTransaction: remove; `rebuild` when the install hook rebuilds afterwards (no depmod).
    Remove { rebuild: bool },
}

/// Where things live on the system being acted on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    /// The system root; `/` for the running system.
    pub root: PathBuf,
    /// The pacman database directory (holds `local/`).
    pub dbpath: PathBuf,
    /// Module sources: `ROOT/usr/src`.
    pub source_tree: PathBuf,
    /// The dkms tree: `ROOT/var/lib/dkms`.
    pub dkms_tree: PathBuf,
    /// Kernel module directories: `ROOT/usr/lib/modules`.
    pub module_dir: PathBuf,
}

impl Layout {
    /// The standard layout below `root`, with pacman's database at `dbpath` if given.
    pub fn new(root: &Path, dbpath: Option<&Path>) -> Layout {
        Layout {
            root: root.to_path_buf(),
            dbpath: dbpath.map_or_else(|| root.join("var/lib/pacman"), Path::to_path_buf),
            source_tree: root.join("usr/src"),
            dkms_tree: root.join("var/lib/dkms"),
            module_dir: root.join("usr/lib/modules"),
        }
    }

    /// True when acting on another root than `/`: dkms and depmod must then be relocated.
    pub fn is_relocated(&self) -> bool {
        self.root != Path::new("/")
    }

    /// A kernel's module directory, `ROOT/usr/lib/modules/KVER`.
    pub fn kernel_dir(&self, kver: &str) -> PathBuf {
        self.module_dir.join(kver)
    }

    /// `path` (absolute, as seen on the system acted on) below the root.
    pub fn on_root(&self, path: &Path) -> PathBuf {
        self.root.join(path.strip_prefix("/").unwrap_or(path))
    }

    /// The file remembering each job's last outcome: `ROOT/var/lib/dkms-hook/state.json`.
    pub fn state_file(&self) -> PathBuf {
        self.own_dir().join("state.json")
    }

    /// dkms-hook's own directory on the root's persistent file system: `ROOT/var/lib/dkms-hook`.
    pub fn own_dir(&self) -> PathBuf {
        self.root.join("var/lib/dkms-hook")
    }

    /// What the pre-transaction guard keeps for the install hook: `ROOT/var/lib/dkms-hook/prebuilt`.
    pub fn prebuilt_dir(&self) -> PathBuf {
        self.own_dir().join("prebuilt")
    }

    /// The lock serializing runs on this root: `ROOT/var/lib/dkms-hook/lock`.
    pub fn lock_file(&self) -> PathBuf {
        self.own_dir().join("lock")
    }
}

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
    /// With `mount_headers`: one of the kernel's own compressed modules, relative to its module
    /// directory, shown in the namespace (with a `modules.dep` naming it) so that dkms compresses
    /// as a direct install after the transaction would.
    pub compressed_module: Option<String>,
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

/// What became of one job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Built (if needed) and installed; the built modules name the right kernel.
    Installed,
    /// The guard's build worked: built in its private tree, every module naming the kernel.
    Built,
    /// Built privately and swapped in for version `old` (the same version when only the sources
    /// changed), which is gone from the kernel.
    Replaced { old: String },
    /// The sources are those the installed build was made from: nothing was built.
    Unchanged,
    /// The sources were kept for dkms until the module's replacement is built.
    Preserved,
    /// A replaced version still installed for these kernels (their replacement failed, or they
    /// have no headers to build it): it stays registered.
    StillServing { kernels: Vec<String> },
    /// Removed from one kernel.
    Removed,
    /// Dropped from the dkms tree.
    Unregistered,
    /// dkms declined: BUILD_EXCLUSIVE_* does not match this kernel (dkms exit 77).
    Skipped,
    /// dkms ran and failed.
    Failed {
        /// dkms's exit code (`None` when killed by a signal).
        code: Option<i32>,
        /// What the code means, in dkms's terms.
        meaning: &'static str,
        /// The build log, when dkms left one.
        log: Option<PathBuf>,
        /// The last lines of the build log (or of dkms's output).
        tail: Vec<String>,
    },
    /// dkms built it, but a built module's vermagic names another kernel (a Makefile that
    /// builds for `uname -r`): built for the wrong kernel.
    WrongVermagic { module: PathBuf, vermagic: String },
    /// Building the replacement for the kernel failed (`failure` says how): version `old`, the
    /// one that was installed, stays installed.
    Kept { old: String, failure: Box<Outcome> },
    /// dkms could not be started at all.
    ExecFailed { error: String },
    /// Not run because a job it depends on did not succeed.
    DependencyFailed { dependency: String },
    /// Killed after running longer than the job timeout.
    TimedOut { after: Duration },
    /// Stopped, or never started, because dkms-hook was interrupted (SIGINT/SIGTERM/SIGHUP).
    Interrupted,
}

impl Outcome {
    /// True for outcomes that make the run fail.
    pub fn is_failure(&self) -> bool {
        !matches!(
            self,
            Outcome::Installed
                | Outcome::Built
                | Outcome::Replaced { .. }
                | Outcome::Unchanged
                | Outcome::Preserved
                | Outcome::StillServing { .. }
                | Outcome::Removed
                | Outcome::Unregistered
                | Outcome::Skipped
        )
    }
}

/// The module signing key and certificate dkms signs with (and creates on first use).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signing {
    pub key: PathBuf,
    pub cert: PathBuf,
}

impl Signing {
    /// The root's own: dkms would otherwise create and use `/var/lib/dkms/mok.key` of the running
    /// system even for another root. Private build trees sign with the real tree's key too.
    pub fn of(layout: &Layout) -> Signing {
        Signing { key: layout.dkms_tree.join("mok.key"), cert: layout.dkms_tree.join("mok.pub") }
    }

    /// Whether both files exist.
    pub fn exists(&self) -> bool {
        self.key.exists() && self.cert.exists()
    }
}

/// Whether dkms signs the modules it builds on the system acted on, decided once per run where
/// dkms-hook itself runs — never inside the private mount namespaces of its builds, which dkms
/// ≥ 3.3 would take for a chroot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SignPolicy {
    /// A direct `dkms install` signs (on kernels built with module signing).
    Sign,
    /// A direct `dkms install` signs nothing, for the reason given (dkms's own words).
    Unsigned(String),
}

impl SignPolicy {
    /// dkms ≥ 3.3's rule (`prepare_signing`): `try_sign_modules` `false` never signs, `true`
    /// always does, anything else counts as the default `not_in_chroot`. dkms 3.0–3.2 sign
    /// regardless: what they build in a namespace is signed either way.
    pub fn decide(try_sign_modules: Option<&str>, in_chroot: bool) -> SignPolicy {
        match try_sign_modules {
            Some("false") => SignPolicy::Unsigned("module signing is disabled by policy (try_sign_modules)".into()),
            Some("true") => SignPolicy::Sign,
            _ if in_chroot => SignPolicy::Unsigned("running in a chroot, modules are not signed".into()),
            _ => SignPolicy::Sign,
        }
    }

    /// Whether modules are to be signed.
    pub fn signs(&self) -> bool {
        matches!(self, SignPolicy::Sign)
    }
}

#[cfg(test)]
mod sign_policy_tests {
    use super::SignPolicy;

    #[test]
    fn dkms_rule_for_signing() {
        for (value, chroot, signs) in [
            (None, false, true),
            (None, true, false),
            (Some("not_in_chroot"), true, false),
            (Some("not_in_chroot"), false, true),
            (Some("true"), true, true),
            (Some("false"), false, false),
            (Some("yes"), true, false),
        ] {
            assert_eq!(SignPolicy::decide(value, chroot).signs(), signs, "{value:?} {chroot}");
        }
    }
}
