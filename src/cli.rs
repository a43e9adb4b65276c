//! The command line, as clap types. Nothing outside `config.rs` sees these: they are resolved
//! into a `Config` in one place.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// Build, install and remove DKMS modules for every installed kernel, from pacman hooks.
///
/// pacman runs `dkms-hook install` after and `dkms-hook remove` before a transaction, writing the
/// matched paths (`usr/src/*/dkms.conf`, `usr/lib/modules/*/…`) on stdin.
#[derive(Debug, Parser)]
#[command(name = "dkms-hook", version, about, long_about)]
pub struct Opts {
    #[command(flatten)]
    pub global: GlobalOpts,

    #[command(subcommand)]
    pub command: Command,
}

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
    Install,
    /// Remove modules of sources and kernels that leave (the PreTransaction hooks); targets on stdin
    Remove {
        /// Do not run depmod: the removal is for a rebuild the install hook does after the transaction
        #[arg(long)]
        no_depmod: bool,
    },
}
