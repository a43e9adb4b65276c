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
/// installed kernel; `dkms-hook sync` repairs whatever is missing or left over.
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
    /// A module whose package stays (a new release in the same directory, or a package the running
    /// transaction upgrades) is not removed: its sources are kept for dkms until the install hook
    /// has swapped in its replacement. A module whose package leaves is removed from every kernel
    /// and unregistered; a kernel that leaves loses its modules; headers leaving alone keep them.
    Remove {
        /// Do not run depmod: the removal is for a rebuild the install hook does after the transaction
        #[arg(long)]
        no_depmod: bool,
    },
    /// Show module sources, kernels and the state of every module for every kernel
    ///
    /// Lists each module source with the package that owns it, each installed kernel with its
    /// package and headers, and for every (module, kernel) pair one state: installed, built (not
    /// installed), missing, skipped (BUILD_EXCLUSIVE), failed (with its log), wrong-vermagic, kept
    /// (its upgrade failed or is pending: the version that was installed still is) or excluded.
    /// Then what is out of place: dkms builds for kernels that are gone, registrations whose
    /// source is gone, and module files under updates/dkms that dkms does not know.
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
    /// Write the manual pages or print a shell completion script (for packagers)
    #[command(hide = true, subcommand)]
    Generate(Generate),
}

/// What `dkms-hook generate` writes.
#[derive(Debug, Subcommand)]
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
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Shell {
    Bash,
    Zsh,
    Fish,
}
