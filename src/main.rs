//! `/usr/bin/dkms-hook`, the front: it answers the install hook's quiet path (nothing to do:
//! every module already installed for the kernels the transaction touched) from the files alone,
//! and runs the whole program (`dkms-hook-full`, `src/bin/dkms-hook-full.rs`) for everything else.
//! It does not link libalpm: loading libalpm and the libraries it pulls in (curl, TLS, gpgme,
//! libarchive) costs a program more than the quiet path's own work.
//!
//! The whole program is found beside this one (a build tree) or in `../lib/dkms-hook/` from it
//! (`/usr/lib/dkms-hook/dkms-hook-full`). It gets the same arguments, and the targets this front
//! read from stdin on a memory file in place of stdin.

use std::ffi::OsString;
use std::io::{IsTerminal, Read, Seek, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use anyhow::{anyhow, Context, Result};
use clap::Parser;

use dkms_hook::config::Config;
use dkms_hook::targets::Targets;
use dkms_hook::{cli, hook, interrupt};

/// The whole program's file name.
const FULL: &str = "dkms-hook-full";

fn main() -> ExitCode {
    match run() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// Answers the quiet path here, or runs the whole program in this process's place; an error
/// only when neither can be done.
fn run() -> Result<ExitCode> {
    let args: Vec<OsString> = std::env::args_os().collect();
    let Some((opts, input)) = quiet_candidate(&args).context("failed to read targets from stdin")? else {
        return Err(whole_program(&args, None));
    };
    dkms_hook::report::init_logging();
    let Ok(config) = Config::resolve(opts) else {
        return Err(whole_program(&args, Some(&input)));
    };
    let targets = Targets::parse(&input);
    match hook::run_from_files(&config, &targets) {
        Ok(Some(code)) => Ok(code),
        // A stopping signal that came while the front worked ends the run here, as it would the
        // whole program's.
        _ if interrupt::received().is_some() => {
            Ok(ExitCode::from(interrupt::received().map_or(130, interrupt::exit_status)))
        }
        Ok(None) => Err(whole_program(&args, Some(&input))),
        Err(e) => {
            log::debug!("{e:#}: the whole program runs the hook");
            Err(whole_program(&args, Some(&input)))
        }
    }
}

/// The command line and the targets on stdin when the command line asks for the install hook
/// (the only command this front may answer); `None` for any other command or a command line
/// clap refuses (the whole program says why), or when stdin is a terminal (the whole program
/// says what to do). An error: stdin could not be read (nor could it be by the whole program).
fn quiet_candidate(args: &[OsString]) -> std::io::Result<Option<(cli::Opts, Vec<u8>)>> {
    let Ok(opts) = cli::Opts::try_parse_from(args) else { return Ok(None) };
    if !matches!(opts.command, cli::Command::Install) || std::io::stdin().is_terminal() {
        return Ok(None);
    }
    let mut input = Vec::new();
    std::io::stdin().lock().read_to_end(&mut input)?;
    Ok(Some((opts, input)))
}

/// Runs the whole program in this process's place with `args`, and `input` (what this front
/// read of stdin) as its stdin; returns only when it cannot be started, with why.
fn whole_program(args: &[OsString], input: Option<&[u8]>) -> anyhow::Error {
    let program = whole_program_path(args.first().map(Path::new));
    let mut command = Command::new(&program);
    command.args(args.iter().skip(1));
    if let Some(arg0) = args.first() {
        command.arg0(arg0);
    }
    if let Some(input) = input {
        match memory_file(input) {
            Ok(file) => command.stdin(file),
            Err(e) => return anyhow!("failed to hand the targets to {}: {e}", program.display()),
        };
    }
    let e = command.exec();
    anyhow!("failed to run {}: {e}: reinstall dkms-hook", program.display())
}

/// `input` in a memory file, read from its start.
fn memory_file(input: &[u8]) -> std::io::Result<std::fs::File> {
    let fd = nix::sys::memfd::memfd_create(c"dkms-hook-targets", nix::sys::memfd::MemFdCreateFlag::MFD_CLOEXEC)?;
    let mut file = std::fs::File::from(fd);
    file.write_all(input)?;
    file.rewind()?;
    Ok(file)
}

/// Where the whole program is: beside this one, or in `../lib/dkms-hook/` from it; this one is
/// found through `/proc/self/exe`, else through `argv0` when it is a path.
fn whole_program_path(argv0: Option<&Path>) -> PathBuf {
    let me =
        std::env::current_exe().ok().or_else(|| argv0.filter(|p| p.components().count() > 1).map(Path::to_path_buf));
    let dir = me.as_deref().and_then(Path::parent);
    let candidates = dir.map(|d| [d.join(FULL), d.join("../lib/dkms-hook").join(FULL)]);
    candidates
        .into_iter()
        .flatten()
        .find(|p| p.is_file())
        .unwrap_or_else(|| PathBuf::from("/usr/lib/dkms-hook").join(FULL))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_install_hook_is_answered_here() {
        let args = |a: &[&str]| a.iter().map(OsString::from).collect::<Vec<_>>();
        for other in [
            &["dkms-hook", "status"][..],
            &["dkms-hook", "remove"],
            &["dkms-hook", "--version"],
            &["dkms-hook", "bogus"],
        ] {
            assert!(quiet_candidate(&args(other)).unwrap().is_none(), "{other:?}");
        }
    }
}
