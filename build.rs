//! Generates the manual pages and shell completions from the clap definitions in `src/cli.rs`,
//! so they can never disagree with `--help`. Everything goes to `$OUT_DIR/assets/`:
//! `dkms-hook.8`, `dkms-hook-{install,remove,status,sync,lint}.8` (a subcommand's long
//! help epilogue becomes sections of its page: `lint`'s FINDINGS), `dkms-hook.toml.5` (hand-written:
//! clap cannot describe a file format), `dkms-hook.bash`, `_dkms-hook` (zsh), `dkms-hook.fish`.
//! The PKGBUILD installs them from there.

#[path = "src/cli.rs"]
#[allow(dead_code)]
mod cli;

use std::io::Write;
use std::path::{Path, PathBuf};

use clap::CommandFactory;
use clap_complete::Shell;

/// Sections of dkms-hook(8) that clap knows nothing about.
const EXTRA_SECTIONS: &str = r#".SH "PACMAN HOOKS"
dkms-hook is run by three pacman hooks, installed in
.I /etc/pacman.d/hooks/
under the names of the stock dkms hooks so that they replace them:
.TP
.B 70-dkms-upgrade.hook
(Upgrade, PreTransaction) runs
.BR "dkms-hook remove \-\-no-depmod" :
the old version of an upgraded module is removed before its files change.
.TP
.B 71-dkms-remove.hook
(Remove, PreTransaction) runs
.BR "dkms-hook remove" :
modules of a module package or kernel that leaves are removed, and depmod runs for the kernels
that stay.
.TP
.B 70-dkms-install.hook
(Install and Upgrade, PostTransaction) runs
.BR "dkms-hook install" :
a new or upgraded module is built for every kernel with headers, and every packaged module is
built for a new kernel; depmod runs once per kernel. It sorts before mkinitcpio's hook, so the
initramfs sees the new modules.
.PP
All three match
.IR usr/src/*/dkms.conf ,
.I usr/lib/modules/*/build/include/
and
.IR usr/lib/modules/*/modules.order .
.SH "EXIT STATUS"
.TP
.B 0
Every job succeeded or was skipped (BUILD_EXCLUSIVE);
.BR status :
everything is as it should be;
.BR lint :
no package has an error.
.TP
.B 1
A job or depmod failed, or a dkms.conf could not be read;
.BR status :
a module is missing, failed or built for the wrong kernel, or something is out of place;
.BR lint :
a package has an error.
.TP
.B 2
Usage, configuration or environment error (not root, dkms missing, unreadable pacman database,
timed out waiting for the lock;
.BR lint :
a path that is not a package file or a PKGBUILD directory with a built package). Nothing was
changed.
.TP
.BR 130 ", " 143
Stopped by SIGINT or SIGTERM: running dkms processes were terminated, no new job started.
.B dkms-hook sync
finishes the work.
.SH FILES
.TP
.I /etc/dkms-hook.toml
Configuration, see
.BR dkms-hook.toml (5).
.TP
.I /run/dkms-hook.lock
Held by the run that changes the system; a second run waits for it.
.TP
.I /var/lib/dkms-hook/state.json
The last outcome of every (module, version, kernel) install job, used by
.BR status .
.TP
.I /var/log/dkms-hook/
The full dkms output of each job.
.TP
.I /var/lib/dkms/
The dkms tree, read directly (never through
.BR "dkms status" ).
.SH ENVIRONMENT
.TP
.B RUST_LOG
Debug logging to stderr, e.g.
.BR RUST_LOG=debug .
.SH "SEE ALSO"
.BR dkms-hook.toml (5),
.BR dkms (8),
.BR depmod (8),
.BR alpm-hooks (5),
.BR pacman (8)
"#;

fn main() -> std::io::Result<()> {
    println!("cargo:rerun-if-changed=src/cli.rs");
    println!("cargo:rerun-if-changed=man/dkms-hook.toml.5");
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR")).join("assets");
    std::fs::create_dir_all(&out)?;

    let mut cmd = cli::Opts::command().disable_help_subcommand(true);
    cmd.build();
    let page = |cmd: clap::Command| {
        let source = format!("dkms-hook {}", env!("CARGO_PKG_VERSION"));
        clap_mangen::Man::new(cmd.version(env!("CARGO_PKG_VERSION")))
            .section("8")
            .manual("System Administration")
            .source(source)
    };
    write_page(&out, page(cmd.clone()), true, Some(EXTRA_SECTIONS))?;
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        let extra = sub.get_after_long_help().map(|text| sections(&text.to_string()));
        write_page(&out, page(sub.clone()), false, extra.as_deref())?;
    }
    std::fs::copy("man/dkms-hook.toml.5", out.join("dkms-hook.toml.5"))?;

    for shell in [Shell::Zsh, Shell::Fish] {
        clap_complete::generate_to(shell, &mut cmd, "dkms-hook", &out)?;
    }
    let mut bash = Vec::new();
    clap_complete::generate(Shell::Bash, &mut cmd, "dkms-hook", &mut bash);
    // clap_complete spells the state of a hyphenated program's subcommand two ways: the loop
    // arrives at `dkms__hook__subcmd__status`, the case arm says `dkms__subcmd__hook__subcmd__status`,
    // so no subcommand option ever completes (clap-rs/clap#6421). Make the arms match the loop.
    let bash = String::from_utf8(bash).expect("bash completion is UTF-8").replace("dkms__subcmd__hook", "dkms__hook");
    std::fs::write(out.join("dkms-hook.bash"), bash)?;
    Ok(())
}

/// Renders a page with clap's sections (and the list of subcommands), then `extra` (roff) before
/// VERSION.
fn write_page(out: &Path, man: clap_mangen::Man, subcommands: bool, extra: Option<&str>) -> std::io::Result<()> {
    let mut page = Vec::new();
    man.render_title(&mut page)?;
    man.render_name_section(&mut page)?;
    man.render_synopsis_section(&mut page)?;
    man.render_description_section(&mut page)?;
    man.render_options_section(&mut page)?;
    if subcommands {
        man.render_subcommands_section(&mut page)?;
    }
    if let Some(extra) = extra {
        page.write_all(extra.as_bytes())?;
    }
    man.render_version_section(&mut page)?;
    std::fs::write(out.join(man.get_filename()), page)
}

/// A subcommand's `after_long_help` as man page sections: an unindented line ending in `:` is a
/// section heading, another unindented line `WORD TERM` starts an entry (TERM in bold, WORD after
/// it in parentheses: `lint`'s `error no-dkms-conf`), and indented lines are the entry's text.
fn sections(text: &str) -> String {
    let mut roff = String::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        if line.starts_with(' ') {
            roff.push_str(&escape(line.trim()));
        } else if let Some(title) = line.strip_suffix(':') {
            roff.push_str(&format!(".SH {}", title.to_uppercase()));
        } else {
            let (word, term) = line.split_once(' ').unwrap_or(("", line));
            roff.push_str(&format!(".TP\n\\fB{}\\fR ({})", escape(term.trim()), escape(word)));
        }
        roff.push('\n');
    }
    roff
}

/// `text` as a roff text line.
fn escape(text: &str) -> String {
    let text = text.replace('\\', "\\e").replace('-', "\\-");
    if text.starts_with(['.', '\'']) {
        format!("\\&{text}")
    } else {
        text
    }
}
