//! The command line, as clap types. Nothing outside `config.rs` sees these: they are resolved
//! into a `Config` in one place. The manual pages and shell completions are generated from these
//! definitions (`generate.rs`), so they never disagree with `--help`.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Build, install and remove DKMS modules for every installed kernel, from pacman hooks.
///
/// pacman runs `dkms-hook remove` before and `dkms-hook install` after a transaction that changes
/// a module source (`usr/src/*/dkms.conf`) or a kernel (`usr/lib/modules/*/…`), writing the
/// matched paths on stdin. dkms-hook works out which (module, version, kernel) pairs to build or
/// remove from those paths and the local pacman database, runs dkms for each, runs depmod once per
/// kernel, and exits non-zero when anything failed.
///
/// `dkms-hook status` shows which package each module comes from and its state for every
/// installed kernel; `dkms-hook sync` repairs whatever is missing or left over; `dkms-hook lint`
/// checks *-dkms packages for packagers.
#[derive(Debug, Parser)]
#[command(
    name = "dkms-hook",
    version,
    about,
    long_about,
    after_long_help = AFTER_LONG_HELP,
    help_expected = true
)]
pub struct Opts {
    #[command(flatten)]
    pub global: GlobalOpts,

    #[command(subcommand)]
    pub command: Command,
}

/// Shown at the end of `--help` (and in the man page).
pub const AFTER_LONG_HELP: &str = "\
Exit status: 0 when every job succeeded or was skipped (status: everything is as it should be);
1 when a job failed (status: something is missing, failed or out of place); 2 for usage,
configuration or environment errors; 129/130/143 when stopped by SIGHUP/SIGINT/SIGTERM.

Configuration: ROOT/etc/dkms-hook.toml, see dkms-hook.toml(5).";

/// Options accepted before or after the subcommand.
#[derive(Debug, Args)]
pub struct GlobalOpts {
    /// The system to act on (pacman DB, /usr/src, dkms tree and /usr/lib/modules below it)
    #[arg(long, global = true, value_name = "DIR")]
    pub root: Option<PathBuf>,

    /// The pacman database directory [default: ROOT/var/lib/pacman]
    #[arg(long, global = true, value_name = "DIR")]
    pub dbpath: Option<PathBuf>,

    /// The configuration file [default: ROOT/etc/dkms-hook.toml; a missing file means defaults]
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// The dkms command to run [default: dkms]
    #[arg(long, global = true, value_name = "PATH")]
    pub dkms: Option<PathBuf>,

    /// The depmod command to run [default: depmod]
    #[arg(long, global = true, value_name = "PATH")]
    pub depmod: Option<PathBuf>,

    /// How many dkms jobs to run at once [default: `jobs` in the config, else automatic (0)]
    #[arg(short, long, global = true, value_name = "N")]
    pub jobs: Option<usize>,

    /// Print the plan and run nothing
    #[arg(long, global = true)]
    pub dry_run: bool,

    /// Show dkms's own output for every job
    #[arg(short, long, global = true, conflicts_with = "quiet")]
    pub verbose: bool,

    /// Show only warnings, failures and the summary
    #[arg(short, long, global = true)]
    pub quiet: bool,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Build and install modules (the PostTransaction hook); targets on stdin
    ///
    /// A new or upgraded module is built for every kernel with headers, and every packaged module
    /// is built for a new kernel. Where a kernel has another version of the module installed (or
    /// the same version built from other sources), the new build is made privately first and
    /// swapped in only when it works: a build that fails keeps the version that was installed.
    /// Sources byte-identical to those of the installed build are not built again (unchanged).
    Install,
    /// Remove modules of sources and kernels that leave (the PreTransaction hooks); targets on stdin
    ///
    /// A module that stays (a new release in the same directory, or another directory of the same
    /// module coming in the same transaction: pacman gives both as targets) is not removed: its
    /// sources are kept for dkms until the install hook has swapped in its replacement. A module whose package leaves is removed from every kernel
    /// and unregistered; a kernel that leaves loses its modules; headers leaving alone keep them.
    Remove {
        /// Do not run depmod: the removal is for a rebuild the install hook does after the transaction
        #[arg(long)]
        no_depmod: bool,
    },
    /// Test-build modules for the incoming packages before the transaction (the first PreTransaction hook); targets on stdin
    ///
    /// Before pacman changes anything, builds what the install hook will build after the
    /// transaction: every module for an incoming kernel's headers, and an incoming module version
    /// for every kernel with headers. The headers and sources come from the incoming package files
    /// (pacman's cache, or the files given to `pacman -U`); each build runs with the real dkms in a
    /// private tree, and nothing is installed. A module marked critical (`critical` in
    /// dkms-hook.toml) that fails makes the guard exit 1, and pacman aborts the transaction; any
    /// other failure is a warning, and so is a kernel that comes without its headers, unless a
    /// critical module needs them. Headers for a kernel that is neither installed nor coming are not
    /// built for. The install hook of the same transaction installs the builds that worked instead
    /// of building again. Off with `guard = false` in the configuration, or for
    /// one run with DKMS_HOOK_GUARD=off in pacman's environment.
    Guard,
    /// Show module sources, kernels and the state of every module for every kernel
    ///
    /// Lists each module source with the package that owns it, each installed kernel with its
    /// package and headers, and for every (module, kernel) pair one state: installed, built (not
    /// installed), missing, skipped (BUILD_EXCLUSIVE), failed (with its log), wrong-vermagic, kept
    /// (its upgrade failed or is pending: the version that was installed still is) or excluded.
    /// Then what is out of place: dkms builds for kernels that are gone, registrations whose
    /// source is gone, and module files under updates/dkms that dkms does not know.
    ///
    /// An installed pair also says who signed its modules: dkms's key (the mok_certificate dkms
    /// signs with, /var/lib/dkms/mok.pub unless /etc/dkms/framework.conf names another), another
    /// key, or nobody. When the system signs modules (dkms's try_sign_modules, and a kernel built
    /// with CONFIG_MODULE_SIG_HASH), an unsigned or foreign-signed module needs attention: it will
    /// not load under Secure Boot or module.sig_enforce=1; the fix is to remove it with dkms and
    /// run `dkms-hook sync`. When the running kernel enforces module signatures (lockdown,
    /// module.sig_enforce), it also says whether that certificate is among the keys the kernel
    /// trusts (/proc/keys), and if not, how to enroll it (`mokutil --import CERT` for shim).
    ///
    /// Exits 0 when everything is as it should be, 1 otherwise. Reads only; takes no lock.
    Status {
        /// Print JSON (a stable, documented format) instead of text
        #[arg(long)]
        json: bool,
    },
    /// Bring dkms in line with the installed packages: build what is missing, remove what is left over
    ///
    /// Installs every packaged module for every kernel with headers where it is missing, removes
    /// dkms builds for kernels that are no longer installed, and unregisters module versions whose
    /// source is gone; then runs depmod for the kernels it changed. The repair after a failed or
    /// interrupted run, or after manual changes. With --dry-run, prints the plan only.
    Sync,
    /// Check *-dkms package files for what dkms-hook and dkms expect (namcap for DKMS packages)
    ///
    /// Each PATH is a package file (*.pkg.tar.*) or a directory with a PKGBUILD, where the newest
    /// package makepkg built is taken (a split package's parts without a dkms.conf and -debug
    /// packages are left out). For each package, one line per finding: `LEVEL: PACKAGE [TAG]: what is
    /// wrong: how to fix it`. The dkms.conf is read as every dkms-hook command reads it: by bash, as
    /// nobody when run as root. Nothing is installed and nothing is left behind: the package is
    /// extracted into a temporary directory that is removed.
    ///
    /// With --build, each module is also built for every installed kernel with headers (of this
    /// system, or of --root) with the real dkms, in a private dkms tree with its own signing key in
    /// that temporary directory, and every built module's vermagic must name the kernel. A build that
    /// BUILD_EXCLUSIVE excludes (dkms exit 77) is reported as skipped, not as an error. --build needs
    /// root (dkms builds as root) and runs the module's build as root, as installing it would.
    ///
    /// Exits 0 when no package has an error (warnings allowed), 1 when one has, 2 when a PATH is not
    /// a package or a PKGBUILD directory with a built package, or the builds cannot run. --json prints
    /// one document for all packages (docs/lint-json.md).
    #[command(after_long_help = LINT_FINDINGS)]
    Lint {
        /// Also build each module for every installed kernel with headers, in a private dkms tree
        #[arg(long)]
        build: bool,
        /// Print JSON (a stable, documented format) instead of text
        #[arg(long)]
        json: bool,
        /// Package files (*.pkg.tar.*) or directories with a PKGBUILD and the package built there
        #[arg(required = true, value_name = "PATH")]
        paths: Vec<PathBuf>,
    },
    /// Write the manual pages or print a shell completion script (for packagers)
    #[command(hide = true, subcommand)]
    Generate(Generate),
}

/// What `dkms-hook generate` writes.
#[derive(Debug, Clone, PartialEq, Eq, Subcommand)]
pub enum Generate {
    /// Write dkms-hook.8, one page per subcommand and dkms-hook.toml.5 into DIR
    Man {
        /// The directory to write the pages to (created if missing)
        #[arg(value_name = "DIR")]
        dir: PathBuf,
    },
    /// Print the completion script for SHELL
    Completions {
        /// The shell to complete for
        #[arg(value_enum, value_name = "SHELL")]
        shell: Shell,
    },
}

/// The shells `dkms-hook generate completions` writes scripts for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Shell {
    Bash,
    Zsh,
    Fish,
}

/// The findings of `lint`, each with its level, tag, meaning and fix: the end of `lint --help` and
/// the FINDINGS section of dkms-hook-lint(8). A `LEVEL TAG` line starts an entry; its indented lines
/// explain it. A unit test checks that this lists exactly the tags the code emits.
pub const LINT_FINDINGS: &str = "\
Findings:

error no-dkms-conf
    The package has no usr/src/NAME-VERSION/dkms.conf: it is not a DKMS package and no hook builds
    anything for it. Fix: install the module sources with a dkms.conf into usr/src/NAME-VERSION/.
error dkms-conf-misplaced
    A dkms.conf is somewhere dkms never looks (it reads only usr/src/NAME-VERSION/dkms.conf).
    Fix: move the sources with their dkms.conf into usr/src/NAME-VERSION/.
error dkms-conf-unreadable
    bash cannot source the dkms.conf, or it sets no valid PACKAGE_NAME or PACKAGE_VERSION.
    Fix: make it a bash file that sets both, as dkms sources it.
error dkms-conf-wrong-directory
    PACKAGE_NAME-PACKAGE_VERSION is not the name of the dkms.conf's directory, so dkms looks for
    the sources elsewhere. Fix: name the directory after them, e.g. write pkgver into dkms.conf in
    package() with sed \"s/@PKGVER@/$pkgver/\".
warning package-version-differs
    PACKAGE_VERSION is not the package's pkgver: dkms and pacman name different versions.
    Fix: take PACKAGE_VERSION and the directory name from pkgver.
error no-built-module-name
    dkms.conf sets no BUILT_MODULE_NAME (dkms then builds and installs nothing), or a module record
    lacks one. Fix: set BUILT_MODULE_NAME[N] to each .ko file's name without .ko.
warning implicit-built-module-name
    The only module record leaves BUILT_MODULE_NAME to dkms, which assumes PACKAGE_NAME.ko.
    Fix: set BUILT_MODULE_NAME[0].
error built-module-name-suffix
    BUILT_MODULE_NAME ends in .ko or .o, which dkms refuses. Fix: drop the suffix.
error bad-dest-module-location
    DEST_MODULE_LOCATION is unset or does not start with /kernel, /updates or /extra: dkms refuses
    the module. Fix: set DEST_MODULE_LOCATION[N]=\"/updates/dkms\".
warning deprecated-dkms-conf-option
    dkms.conf sets an option dkms 3 reports as deprecated on every build: REMAKE_INITRD and
    MODULES_CONF* (ignored), CLEAN other than true (dkms 3.1.8 and later never run it),
    OBSOLETE_BY. Fix: drop the line; for OBSOLETE_BY, use BUILD_EXCLUSIVE_KERNEL_MAX.
error dkms-missing-dependency
    dkms is not in depends: without it pacman runs no DKMS hook. Fix: add dkms to depends=().
warning hard-headers-dependency
    depends names a kernel headers package (linux-headers, any *-headers): headers belong to one
    kernel, and dkms-hook names the missing headers package of each kernel.
    Fix: drop it from depends (at most list it in optdepends).
error scriptlet-runs-module-tools
    The .install scriptlet runs dkms, depmod, modprobe, insmod or rmmod. The hooks build, install
    and remove the module for every kernel and run depmod, so it happens twice, or a module is
    loaded in the middle of the transaction. Fix: remove those calls.
warning scriptlet-unneeded
    The .install scriptlet is empty or only prints messages. Fix: drop it and the install= line.
warning builds-for-running-kernel
    dkms.conf, a Makefile or a Kbuild file uses `uname -r`: the running kernel, not the one dkms
    builds for (a Makefile's fallback that MAKE overrides on make's command line, or that is only
    used without KERNELRELEASE, is fine). Fix: use $kernelver or ${kernel_source_dir} in dkms.conf,
    pass KDIR=${kernel_source_dir} in MAKE, or use $(KERNELRELEASE) in the Makefile.
error build-failed
    --build: the module did not build for a kernel; the first compiler error and the end of the
    log are shown. Fix: fix the build.
error build-wrong-kernel
    --build: a built module's vermagic names another kernel than the one it was built for.
    Fix: build against ${kernel_source_dir} and $kernelver, never `uname -r`.";
