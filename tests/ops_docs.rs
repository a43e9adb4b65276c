//! The manual pages and shell completions build.rs generates from the clap definitions, and the
//! hand-written dkms-hook.toml(5): every subcommand and option is in them, every finding of
//! `lint` is in dkms-hook-lint(8), `--version` and `--help` read well.

use std::process::Command;

/// A file build.rs wrote to `$OUT_DIR/assets`.
fn asset(name: &str) -> String {
    let path = std::path::Path::new(env!("OUT_DIR")).join("assets").join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn dkms_hook(args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_dkms-hook")).args(args).output().unwrap();
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `s` as roff writes it (a hyphen is `\-`).
fn roff(s: &str) -> String {
    s.replace('-', "\\-")
}

const SUBCOMMANDS: [&str; 5] = ["install", "remove", "status", "sync", "lint"];
const OPTIONS: [&str; 9] = ["root", "dbpath", "config", "dkms", "depmod", "jobs", "dry-run", "verbose", "quiet"];

#[test]
fn the_man_page_has_every_subcommand_option_and_section() {
    let page = asset("dkms-hook.8");
    assert!(page.contains("\n.TH dkms-hook 8 "), "{}", &page[..120]);
    for sub in SUBCOMMANDS {
        assert!(page.contains(&roff(&format!("dkms-hook-{sub}(8)"))), "dkms-hook.8 does not list {sub}");
        let subpage = asset(&format!("dkms-hook-{sub}.8"));
        assert!(subpage.contains(".SH SYNOPSIS"), "dkms-hook-{sub}.8");
    }
    for opt in OPTIONS {
        assert!(page.contains(&roff(&format!("--{opt}"))), "dkms-hook.8 does not document --{opt}");
    }
    for section in ["PACMAN HOOKS", "EXIT STATUS", "FILES", "SEE ALSO"] {
        assert!(
            page.contains(&format!(".SH \"{section}\"")) || page.contains(&format!(".SH {section}")),
            "no {section}"
        );
    }
    assert!(asset("dkms-hook-status.8").contains("\\-\\-json"));
    let lint = asset("dkms-hook-lint.8");
    assert!(lint.contains("\\-\\-build") && lint.contains(".SH FINDINGS"), "dkms-hook-lint.8");
    for tag in dkms_hook::lint::Tag::ALL {
        let entry = format!("\\fB{}\\fR ({})", roff(tag.name()), tag.level().word());
        assert!(lint.contains(&entry), "dkms-hook-lint.8 does not document {tag}");
    }
    assert!(asset("dkms-hook-remove.8").contains("\\-\\-no\\-depmod"));
    assert_eq!(asset("dkms-hook.toml.5"), include_str!("../man/dkms-hook.toml.5"));
}

#[test]
fn completions_know_every_subcommand_and_option() {
    for file in ["dkms-hook.bash", "_dkms-hook", "dkms-hook.fish"] {
        let text = asset(file);
        for word in SUBCOMMANDS.iter().chain(OPTIONS.iter()).chain(["json", "no-depmod"].iter()) {
            assert!(text.contains(word), "{file} does not complete {word}");
        }
    }
}

/// What bash completes for the words `line` (the last one being completed).
fn bash_complete(line: &[&str]) -> String {
    let script = format!(
        "source '{}'\nCOMP_WORDS=({})\nCOMP_CWORD={}\n_dkms__hook dkms-hook '{}' '{}'\necho \"${{COMPREPLY[*]}}\"\n",
        std::path::Path::new(env!("OUT_DIR")).join("assets/dkms-hook.bash").display(),
        line.join(" "),
        line.len() - 1,
        line[line.len() - 1],
        line[line.len() - 2],
    );
    let out = Command::new("bash").args(["--norc", "-c", &script]).output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

#[test]
fn bash_completes_subcommands_and_their_options() {
    assert_eq!(bash_complete(&["dkms-hook", "sy"]), "sync");
    assert_eq!(bash_complete(&["dkms-hook", "status", "--js"]), "--json");
    assert_eq!(bash_complete(&["dkms-hook", "remove", "--no-d"]), "--no-depmod");
    assert_eq!(bash_complete(&["dkms-hook", "--root", "/", "sync", "--dry"]), "--dry-run");
}

#[test]
fn version_and_help() {
    let (code, out) = dkms_hook(&["--version"]);
    assert_eq!((code, out.trim()), (0, concat!("dkms-hook ", env!("CARGO_PKG_VERSION"))));
    let (code, out) = dkms_hook(&["--help"]);
    assert_eq!(code, 0);
    for want in ["Usage: dkms-hook [OPTIONS] <COMMAND>", "status", "sync", "Exit status: 0", "dkms-hook.toml(5)"] {
        assert!(out.contains(want), "--help lacks {want:?}:\n{out}");
    }
    assert!(out.lines().all(|l| l.chars().count() <= 100), "--help has lines over 100 columns:\n{out}");
    let (code, out) = dkms_hook(&["lint", "--help"]);
    assert_eq!(code, 0);
    assert!(out.contains("Findings:") && out.contains("error no-dkms-conf"), "{out}");
    assert!(out.lines().all(|l| l.chars().count() <= 100), "lint --help has lines over 100 columns:\n{out}");
    let (code, out) = dkms_hook(&["status", "--help"]);
    assert_eq!(code, 0);
    assert!(out.contains("--json") && out.contains("Exits 0 when everything is as it should be"), "{out}");
}
