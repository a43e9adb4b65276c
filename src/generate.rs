//! The manual pages and shell completions, written by the binary itself (`dkms-hook generate man
//! DIR`, `dkms-hook generate completions SHELL`), so they always describe the binary they ship
//! with: the PKGBUILD runs the binary it has just built. The pages and scripts come from the clap
//! definitions in `cli.rs`; dkms-hook(8) adds what clap knows nothing about (the pacman hooks,
//! read from the hook files the package installs, the exit status, files and environment), and
//! dkms-hook.toml(5) is hand-written (clap cannot describe a file format). The `generate`
//! subcommand itself is hidden: it appears in no `--help`, page or completion script.

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::CommandFactory;
use nix::sys::signal::Signal;

use crate::cli;
use crate::config::{CONFIG_FILE, DEFAULT_LOG_DIR};
use crate::domain::Layout;
use crate::interrupt;

/// The program's name, as installed and as completed.
const BIN: &str = "dkms-hook";

/// The hand-written dkms-hook.toml(5).
const CONFIG_PAGE: (&str, &str) = ("dkms-hook.toml.5", include_str!("../man/dkms-hook.toml.5"));

/// The hook files the package installs: every file of `hooks/` (a unit test keeps this list
/// complete), by name, with the directory the package puts it in.
const HOOK_FILES: &[(&str, &str, &str)] = &[
    ("10-dkms-guard.hook", SYSTEM_HOOK_DIR, include_str!("../hooks/10-dkms-guard.hook")),
    ("70-dkms-install.hook", USER_HOOK_DIR, include_str!("../hooks/70-dkms-install.hook")),
    ("70-dkms-upgrade.hook", USER_HOOK_DIR, include_str!("../hooks/70-dkms-upgrade.hook")),
    ("71-dkms-remove.hook", USER_HOOK_DIR, include_str!("../hooks/71-dkms-remove.hook")),
];

/// Where pacman reads the administrator's hooks, whatever its `--root`; a file there replaces one
/// of the same name in the packages' hook directory.
const USER_HOOK_DIR: &str = "/etc/pacman.d/hooks/";

/// Where pacman reads the packages' hooks, relative to its `--root`.
const SYSTEM_HOOK_DIR: &str = "/usr/share/libalpm/hooks/";

/// Does what `dkms-hook generate` was asked to.
pub fn run(what: &cli::Generate) -> Result<ExitCode> {
    match what {
        cli::Generate::Man { dir } => write_man_pages(dir)?,
        cli::Generate::Completions { shell } => {
            let mut out = std::io::stdout().lock();
            out.write_all(completions(*shell).as_bytes())
                .and_then(|()| out.flush())
                .context("failed to write the completion script to stdout")?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Writes every page of [`man_pages`] into `dir`.
fn write_man_pages(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("failed to create {}", dir.display()))?;
    for (name, text) in man_pages() {
        let path = dir.join(&name);
        std::fs::write(&path, text).with_context(|| format!("failed to write {}", path.display()))?;
    }
    Ok(())
}

/// The command line as documented: the real one without its hidden subcommands (clap_complete
/// would complete them) and without clap's `help` subcommand (`--help` says the same).
pub fn documented_command() -> clap::Command {
    let full = cli::Opts::command();
    let mut docs = clap::Command::new(BIN)
        .version(env!("CARGO_PKG_VERSION"))
        .subcommand_required(full.is_subcommand_required_set())
        .arg_required_else_help(full.is_arg_required_else_help_set())
        .disable_help_subcommand(true)
        .args(full.get_arguments().cloned())
        .subcommands(full.get_subcommands().filter(|s| !s.is_hide_set()).cloned());
    if let Some(about) = full.get_about() {
        docs = docs.about(about.clone());
    }
    if let Some(about) = full.get_long_about() {
        docs = docs.long_about(about.clone());
    }
    if let Some(after) = full.get_after_long_help() {
        docs = docs.after_long_help(after.clone());
    }
    docs.build();
    docs
}

/// Every manual page as (file name, roff text): dkms-hook.8, one `dkms-hook-SUBCOMMAND.8` per
/// subcommand, and dkms-hook.toml.5.
pub fn man_pages() -> Vec<(String, String)> {
    let cmd = documented_command();
    let man = |cmd: clap::Command| {
        clap_mangen::Man::new(cmd.version(env!("CARGO_PKG_VERSION")))
            .section("8")
            .manual("System Administration")
            .source(format!("{BIN} {}", env!("CARGO_PKG_VERSION")))
    };
    let mut pages = vec![render_page(man(cmd.clone()), true, Some(&extra_sections()))];
    for sub in cmd.get_subcommands() {
        // A subcommand's long-help epilogue becomes sections of its page (`lint`'s FINDINGS).
        let extra = sub.get_after_long_help().map(|text| sections(&text.to_string()));
        pages.push(render_page(man(sub.clone()), false, extra.as_deref()));
    }
    pages.push((CONFIG_PAGE.0.to_owned(), CONFIG_PAGE.1.to_owned()));
    pages
}

/// A page with clap's sections (with the list of subcommands, for the main page), then `extra`
/// (roff), before VERSION.
fn render_page(man: clap_mangen::Man, subcommands: bool, extra: Option<&str>) -> (String, String) {
    let mut page = Vec::new();
    let rendered: std::io::Result<()> = (|| {
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
        man.render_version_section(&mut page)
    })();
    rendered.expect("writing to a Vec cannot fail");
    (man.get_filename(), String::from_utf8(page).expect("clap_mangen writes UTF-8"))
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

/// The completion script for `shell`.
pub fn completions(shell: cli::Shell) -> String {
    let generator = match shell {
        cli::Shell::Bash => clap_complete::Shell::Bash,
        cli::Shell::Zsh => clap_complete::Shell::Zsh,
        cli::Shell::Fish => clap_complete::Shell::Fish,
    };
    let mut script = Vec::new();
    clap_complete::generate(generator, &mut documented_command(), BIN, &mut script);
    let script = String::from_utf8(script).expect("clap_complete writes UTF-8");
    match shell {
        // clap_complete spells the state of a hyphenated program's subcommand two ways: the loop
        // arrives at `dkms__hook__subcmd__status`, the case arm says
        // `dkms__subcmd__hook__subcmd__status`, so no subcommand option ever completes
        // (clap-rs/clap#6421). Make the arms match the loop.
        cli::Shell::Bash => script.replace("dkms__subcmd__hook", "dkms__hook"),
        cli::Shell::Zsh | cli::Shell::Fish => script,
    }
}

/// A pacman hook file, as far as the manual page tells it.
#[derive(Debug, PartialEq, Eq)]
struct Hook {
    /// The file name.
    name: &'static str,
    /// The directory the package installs it in.
    dir: &'static str,
    /// The first sentence of the leading comment, without the `dkms-hook: ` it starts with.
    about: String,
    /// `Operation` values.
    operations: Vec<String>,
    /// `Target` values.
    targets: Vec<String>,
    /// `When`.
    when: String,
    /// `Exec`.
    exec: String,
}

impl Hook {
    /// Reads the fields the page needs from the hook file's text.
    fn parse(name: &'static str, dir: &'static str, text: &str) -> Hook {
        let mut hook = Hook {
            name,
            dir,
            about: String::new(),
            operations: Vec::new(),
            targets: Vec::new(),
            when: String::new(),
            exec: String::new(),
        };
        let mut about = Vec::new();
        for line in text.lines().map(str::trim) {
            if let Some(comment) = line.strip_prefix('#') {
                if hook.operations.is_empty() && hook.targets.is_empty() {
                    about.push(comment.trim());
                }
                continue;
            }
            let Some((key, value)) = line.split_once('=') else {
                continue;
            };
            let value = value.trim().to_owned();
            match key.trim() {
                "Operation" => hook.operations.push(value),
                "Target" => hook.targets.push(value),
                "When" => hook.when = value,
                "Exec" => hook.exec = value,
                _ => {}
            }
        }
        let about = about.join(" ");
        let about = about.strip_prefix("dkms-hook:").unwrap_or(&about).trim();
        let sentence = about.find(". ").map_or(about, |end| &about[..=end]);
        hook.about = capitalized(sentence);
        hook
    }

    /// The command as run: the dkms-hook command line that ends `Exec` (after the `/bin/sh -c`
    /// wrapper that runs it only where it is installed), without the program's directory.
    fn command(&self) -> &str {
        self.exec.rsplit_once('/').map_or(self.exec.as_str(), |(_, cmd)| cmd)
    }
}

/// The hooks of [`HOOK_FILES`], parsed.
fn hooks() -> Vec<Hook> {
    HOOK_FILES.iter().map(|(name, dir, text)| Hook::parse(name, dir, text)).collect()
}

/// `text` with its first letter in upper case.
fn capitalized(text: &str) -> String {
    let mut chars = text.chars();
    chars.next().map(|c| c.to_uppercase().chain(chars).collect()).unwrap_or_default()
}

/// `text` safe as roff running text: a backslash is `\e`, a line never starts with a control
/// character.
fn roff(text: &str) -> String {
    let text = text.replace('\\', "\\e");
    if text.starts_with(['.', '\'']) {
        format!("\\&{text}")
    } else {
        text
    }
}

/// A command, option or path in roff: as [`roff`], with `-` as `\-` so it is a minus sign that
/// can be copied and searched for.
fn roff_literal(text: &str) -> String {
    roff(text).replace('-', "\\-")
}

/// `a, b and c`.
fn enumerate(items: &[String]) -> String {
    match items {
        [] => String::new(),
        [one] => one.clone(),
        [init @ .., last] => format!("{} and {last}", init.join(", ")),
    }
}

/// The sections of dkms-hook(8) that clap knows nothing about, in roff.
fn extra_sections() -> String {
    let mut s = String::new();
    let hooks = hooks();
    let names_in =
        |dir: &str| -> Vec<String> { hooks.iter().filter(|h| h.dir == dir).map(|h| roff_literal(h.name)).collect() };
    s.push_str(".SH \"PACMAN HOOKS\"\npacman runs dkms\\-hook from these hooks.\n");
    s.push_str(&format!("The guard is installed in\n.IR {} ,\n", roff_literal(SYSTEM_HOOK_DIR)));
    s.push_str("which pacman reads relative to its\n.BR \\-\\-root :\n");
    s.push_str("it runs only in a root that has dkms\\-hook.\n");
    s.push_str(&format!("The others are installed in\n.IR {} ;\n", roff_literal(USER_HOOK_DIR)));
    s.push_str("a file there replaces the file of the same name in\n");
    s.push_str(&format!(".IR {} ,\n", roff_literal(SYSTEM_HOOK_DIR)));
    s.push_str("which is how the stock dkms hooks of the same names are overridden.\n");
    s.push_str("pacman reads that directory for every\n.B \\-\\-root\n(pacstrap) and runs the hook chrooted\n");
    s.push_str("into the root: where dkms\\-hook is not installed, the hooks do nothing there, and the\n");
    s.push_str("install hook says so in one line.\n");
    s.push_str("pacman runs the hooks of one phase in the order of their file names.\n");
    for hook in &hooks {
        s.push_str(&format!(".TP\n.B {}\n", roff_literal(hook.name)));
        s.push_str(&format!("({}; {}) runs\n", hook.operations.join(", "), hook.when));
        s.push_str(&format!(".BR \"{}\" :\n{}\n", roff_literal(hook.command()), roff(&hook.about)));
    }
    let targets = |hook: &Hook| -> Vec<String> { hook.targets.iter().map(|t| roff_literal(t)).collect() };
    s.push_str(".PP\n");
    if hooks.windows(2).all(|w| w[0].targets == w[1].targets) {
        let all = hooks.first().map(targets).unwrap_or_default();
        s.push_str(&format!(
            "Each hook matches the package paths {}, and gets the matched paths on stdin.\n",
            enumerate(&all)
        ));
    } else {
        for hook in &hooks {
            s.push_str(&format!("{} matches {}.\n.br\n", roff_literal(hook.name), enumerate(&targets(hook))));
        }
        s.push_str("Each hook gets the matched paths on stdin.\n");
    }

    let [sighup, sigint, sigterm] = [Signal::SIGHUP, Signal::SIGINT, Signal::SIGTERM].map(interrupt::exit_status);
    s.push_str(&format!(
        r#".SH "EXIT STATUS"
.TP
.B 0
Every job succeeded or was skipped (BUILD_EXCLUSIVE);
.BR status :
everything is as it should be;
.BR lint :
no package has an error;
.BR guard :
no critical module fails (other failures are warnings).
.TP
.B 1
A job or depmod failed, or a dkms.conf could not be read;
.BR status :
a module is missing, failed or built for the wrong kernel, or something is out of place;
.BR lint :
a package has an error;
.BR guard :
a critical module does not build for a kernel the transaction installs, and pacman aborts the
transaction before it changes anything.
.TP
.B 2
Usage, configuration or environment error (not root, a configured dkms missing, unreadable pacman database,
timed out waiting for the lock;
.BR lint :
a path that is not a package file or a PKGBUILD directory with a built package). Nothing was
changed.
.TP
.BR {sighup} ", " {sigint} ", " {sigterm}
Stopped by SIGHUP, SIGINT or SIGTERM: running dkms processes were terminated, no new job started.
.B dkms\-hook sync
finishes the work.
"#
    ));

    let layout = Layout::new(Path::new("/"), None);
    let files = [
        (CONFIG_FILE.to_owned(), "Configuration, see\n.BR dkms\\-hook.toml (5).".to_owned()),
        (
            SYSTEM_HOOK_DIR.to_owned(),
            format!("The pacman hook {} (see PACMAN HOOKS).", enumerate(&names_in(SYSTEM_HOOK_DIR))),
        ),
        (
            USER_HOOK_DIR.to_owned(),
            format!("The pacman hooks {} (see PACMAN HOOKS).", enumerate(&names_in(USER_HOOK_DIR))),
        ),
        (
            layout.lock_file().display().to_string(),
            "Held by the run that changes the system; a second run waits for it.".to_owned(),
        ),
        (
            layout.state_file().display().to_string(),
            "The last outcome of every (module, version, kernel) install job, used by\n.BR status .".to_owned(),
        ),
        (
            format!("{}/", layout.prebuilt_dir().display()),
            "What\n.B guard\nbuilt, until the install hook of the same transaction installs it.".to_owned(),
        ),
        (
            format!("{DEFAULT_LOG_DIR}/"),
            "The full dkms output of each job (unless\n.B log_dir\nsays otherwise).".to_owned(),
        ),
        (
            format!("{}/", layout.dkms_tree.display()),
            "The dkms tree, read directly (never through\n.BR \"dkms status\" ).".to_owned(),
        ),
    ];
    s.push_str(".SH FILES\n");
    for (path, what) in files {
        s.push_str(&format!(".TP\n.I {}\n{what}\n", roff_literal(&path)));
    }
    s.push_str(
        r#".SH ENVIRONMENT
.TP
.B DKMS_HOOK_GUARD
.B off
(in pacman's environment:
.BR "DKMS_HOOK_GUARD=off pacman \-Syu" )
turns the guard off for that transaction.
.TP
.B RUST_LOG
Debug logging to stderr, e.g.
.BR RUST_LOG=debug .
.SH "SEE ALSO"
.BR dkms\-hook.toml (5),
.BR dkms (8),
.BR depmod (8),
.BR alpm\-hooks (5),
.BR pacman (8)
"#,
    );
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_hook_file_is_listed() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("hooks");
        let mut shipped: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|name| name.ends_with(".hook"))
            .collect();
        shipped.sort();
        let listed: Vec<&str> = HOOK_FILES.iter().map(|(name, _, _)| *name).collect();
        assert_eq!(listed, shipped, "HOOK_FILES in src/generate.rs must list every file of hooks/, sorted");
        for (name, _, text) in HOOK_FILES {
            assert_eq!(*text, std::fs::read_to_string(dir.join(name)).unwrap());
        }
    }

    #[test]
    fn hook_files_parse() {
        let hook = Hook::parse(
            "50-x.hook",
            USER_HOOK_DIR,
            "# dkms-hook: do this\n# and that. Not this.\n[Trigger]\nOperation = Install\nOperation = Upgrade\n\
             Type = Path\n# not part of it\nTarget = usr/src/*/dkms.conf\n\n[Action]\nDescription = X\n\
             When = PostTransaction\nExec = /usr/bin/dkms-hook install\nNeedsTargets\n",
        );
        assert_eq!(
            hook,
            Hook {
                name: "50-x.hook",
                dir: USER_HOOK_DIR,
                about: "Do this and that.".into(),
                operations: vec!["Install".into(), "Upgrade".into()],
                targets: vec!["usr/src/*/dkms.conf".into()],
                when: "PostTransaction".into(),
                exec: "/usr/bin/dkms-hook install".into(),
            }
        );
        assert_eq!(hook.command(), "dkms-hook install");
        let wrapped = Hook::parse(
            "50-x.hook",
            USER_HOOK_DIR,
            "[Action]\nExec = /bin/sh -c 'if [ -x \"$0\" ]; then exec \"$0\" \"$@\"; fi' /usr/bin/dkms-hook remove --no-depmod\n",
        );
        assert_eq!(wrapped.command(), "dkms-hook remove --no-depmod");
    }

    #[test]
    fn the_hooks_section_describes_each_hook() {
        let extra = extra_sections();
        for hook in hooks() {
            assert!(!hook.about.is_empty() && !hook.operations.is_empty(), "{hook:?}");
            let entry =
                format!(".B {}\n({}; {}) runs\n", roff_literal(hook.name), hook.operations.join(", "), hook.when);
            assert!(extra.contains(&entry), "no entry {entry:?} in:\n{extra}");
            assert!(extra.contains(&format!(".BR \"{}\" :", roff_literal(hook.command()))), "{extra}");
            for target in &hook.targets {
                assert!(extra.contains(&roff_literal(target)), "{target} is not in:\n{extra}");
            }
        }
    }

    #[test]
    fn roff_escapes() {
        assert_eq!(roff("a\\b"), "a\\eb");
        assert_eq!(roff(".x"), "\\&.x");
        assert_eq!(roff_literal("--no-depmod"), "\\-\\-no\\-depmod");
        assert_eq!(enumerate(&["a".into(), "b".into(), "c".into()]), "a, b and c");
        assert_eq!(capitalized("build it"), "Build it");
    }

    /// The documented command must read exactly like the real one, minus what is hidden.
    #[test]
    fn the_documented_command_has_the_real_help() {
        let mut real = cli::Opts::command().disable_help_subcommand(true);
        real.build();
        let mut docs = documented_command();
        assert_eq!(docs.render_long_help().to_string(), real.render_long_help().to_string());
        assert_eq!(docs.render_version(), real.render_version());
        let visible: Vec<&str> = real.get_subcommands().filter(|s| !s.is_hide_set()).map(|s| s.get_name()).collect();
        let documented: Vec<&str> = docs.get_subcommands().map(|s| s.get_name()).collect();
        assert_eq!(documented, visible);
        assert!(!documented.contains(&"generate") && real.find_subcommand("generate").is_some());
        for name in visible {
            let mut a = real.find_subcommand(name).unwrap().clone();
            let mut b = docs.find_subcommand(name).unwrap().clone();
            assert_eq!(b.render_long_help().to_string(), a.render_long_help().to_string(), "{name}");
        }
    }
}
