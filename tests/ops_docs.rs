//! The manual pages and shell completions the binary writes (`dkms-hook generate man DIR`,
//! `dkms-hook generate completions SHELL`), as the PKGBUILD installs them: every subcommand of
//! `--help` and its own options are in them, the pacman hooks of `hooks/` are described, every
//! finding of `lint` is in dkms-hook-lint(8), the hidden `generate` is in none of them, bash
//! really completes; and `--version`/`--help` read well.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

/// Runs the binary; returns its exit code, stdout and stderr.
fn dkms_hook(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_dkms-hook")).args(args).output().unwrap();
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (out.status.code().unwrap_or(-1), text(&out.stdout), text(&out.stderr))
}

/// `s` as roff writes it (a hyphen is `\-`).
fn roff(s: &str) -> String {
    s.replace('-', "\\-")
}

/// The names listed under `heading` in `--help` (the first word of each indented line).
fn help_list(heading: &str) -> Vec<String> {
    let (code, help, _) = dkms_hook(&["--help"]);
    assert_eq!(code, 0);
    let section = help.split(&format!("\n{heading}:\n")).nth(1).unwrap_or_else(|| panic!("no {heading}:\n{help}"));
    section
        .lines()
        .take_while(|l| !l.trim().is_empty())
        .filter(|l| l.starts_with("  ") && !l.starts_with("       "))
        .map(|l| l.split_whitespace().next().unwrap().trim_end_matches(',').to_owned())
        .collect()
}

/// The subcommands `--help` lists.
fn subcommands() -> Vec<String> {
    let subs = help_list("Commands");
    assert_eq!(
        subs,
        ["install", "remove", "guard", "status", "sync", "lint", "help"],
        "the subcommands in --help changed"
    );
    subs.into_iter().filter(|s| s != "help").collect()
}

/// The long options `--help` lists, without `--`.
fn options() -> Vec<String> {
    let (_, help, _) = dkms_hook(&["--help"]);
    let section = help.split("\nOptions:\n").nth(1).unwrap();
    let options: Vec<String> = section
        .lines()
        .filter_map(|l| l.split("--").nth(1))
        .map(|rest| rest.split([' ', ',']).next().unwrap().to_owned())
        .filter(|o| o != "help" && o != "version")
        .collect();
    for must in ["root", "dbpath", "config", "dkms", "depmod", "jobs", "dry-run", "verbose", "quiet"] {
        assert!(options.iter().any(|o| o == must), "--help lists no --{must}: {options:?}");
    }
    options
}

/// The hook files the repository ships.
fn hook_files() -> Vec<(String, String)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("hooks");
    let mut hooks: Vec<(String, String)> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "hook"))
        .map(|p| (p.file_name().unwrap().to_str().unwrap().to_owned(), std::fs::read_to_string(&p).unwrap()))
        .collect();
    hooks.sort();
    assert!(hooks.len() >= 4, "hooks/ has {} hook files", hooks.len());
    hooks
}

/// Writes the man pages into a fresh directory; returns them by file name.
fn man_pages() -> std::collections::BTreeMap<String, String> {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("man");
    let (code, stdout, stderr) = dkms_hook(&["generate", "man", out.to_str().unwrap()]);
    assert_eq!((code, stdout.as_str(), stderr.as_str()), (0, "", ""), "dkms-hook generate man");
    std::fs::read_dir(&out)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (e.file_name().into_string().unwrap(), std::fs::read_to_string(e.path()).unwrap())
        })
        .collect()
}

/// Text of the roff section `name` (up to the next `.SH`).
fn section<'a>(page: &'a str, name: &str) -> &'a str {
    let start = page
        .find(&format!(".SH {name}\n"))
        .or_else(|| page.find(&format!(".SH \"{name}\"\n")))
        .unwrap_or_else(|| panic!("no section {name}"));
    let rest = &page[start + 4..];
    &rest[..rest.find("\n.SH ").unwrap_or(rest.len())]
}

#[test]
fn man_pages_are_one_per_subcommand_and_the_file_format() {
    let pages = man_pages();
    let mut expected: BTreeSet<String> = subcommands().iter().map(|s| format!("dkms-hook-{s}.8")).collect();
    expected.extend(["dkms-hook.8".to_owned(), "dkms-hook.toml.5".to_owned()]);
    assert_eq!(pages.keys().cloned().collect::<BTreeSet<_>>(), expected, "pages written");
    assert_eq!(pages["dkms-hook.toml.5"], include_str!("../man/dkms-hook.toml.5"));
}

#[test]
fn the_main_page_has_every_subcommand_option_and_section() {
    let pages = man_pages();
    let page = &pages["dkms-hook.8"];
    assert!(page.contains("\n.TH dkms-hook 8 "), "{}", &page[..200]);
    assert!(page.contains(concat!("\"dkms-hook ", env!("CARGO_PKG_VERSION"), "\"")), "no version in the title");
    let subs = section(page, "SUBCOMMANDS");
    for sub in subcommands() {
        assert!(subs.contains(&roff(&format!(".TP\ndkms-hook-{sub}(8)\n"))), "SUBCOMMANDS lacks {sub}:\n{subs}");
    }
    let documented = section(page, "OPTIONS");
    for opt in options() {
        assert!(documented.contains(&roff(&format!("\\fB--{opt}\\fR"))), "OPTIONS lacks --{opt}:\n{documented}");
    }
    for name in ["EXIT STATUS", "FILES", "ENVIRONMENT", "SEE ALSO"] {
        section(page, name);
    }
    assert!(section(page, "EXIT STATUS").contains(".BR 129 \", \" 130 \", \" 143"), "{page}");
    let layout = dkms_hook::domain::Layout::new(Path::new("/"), None);
    for file in [layout.lock_file(), layout.state_file()] {
        let entry = format!(".I {}\n", roff(file.to_str().unwrap()));
        assert!(section(page, "FILES").contains(&entry), "FILES lacks {}:\n{page}", file.display());
    }
    assert!(!page.contains("generate"), "the hidden subcommand is documented:\n{page}");
}

/// PACMAN HOOKS describes every file of `hooks/`: its name, operations, phase and command.
#[test]
fn the_main_page_describes_every_hook_file() {
    let pages = man_pages();
    let hooks = section(&pages["dkms-hook.8"], "PACMAN HOOKS");
    for (name, text) in hook_files() {
        let field = |key: &str| -> Vec<&str> {
            text.lines().filter_map(|l| l.strip_prefix(key)?.trim().strip_prefix('=')).map(str::trim).collect()
        };
        let operations = field("Operation").join(", ");
        let when = field("When")[0];
        // The dkms-hook command line that ends Exec (after the `/bin/sh -c` wrapper).
        let exec = field("Exec")[0].rsplit_once("/usr/bin/").unwrap().1;
        let entry = format!(".TP\n.B {}\n({operations}; {when}) runs\n.BR \"{}\" :\n", roff(&name), roff(exec));
        assert!(hooks.contains(&entry), "PACMAN HOOKS lacks {entry:?}:\n{hooks}");
        for target in field("Target") {
            assert!(hooks.contains(&roff(target)), "PACMAN HOOKS lacks the target {target}:\n{hooks}");
        }
    }
    let files = section(&pages["dkms-hook.8"], "FILES");
    for (name, _) in hook_files() {
        assert!(files.contains(&roff(&name)), "FILES lacks {name}:\n{files}");
    }
}

#[test]
fn subcommand_pages_have_their_own_options() {
    let pages = man_pages();
    for sub in subcommands() {
        let page = &pages[&format!("dkms-hook-{sub}.8")];
        assert!(page.contains(&roff(&format!(".SH NAME\ndkms-hook-{sub} - "))), "dkms-hook-{sub}.8:\n{page}");
        assert!(page.contains(&roff(&format!("\\fBdkms-hook {sub}\\fR"))), "dkms-hook-{sub}.8 synopsis:\n{page}");
        // Global options are accepted after the subcommand too.
        assert!(section(page, "OPTIONS").contains(&roff("\\fB--root\\fR")), "dkms-hook-{sub}.8:\n{page}");
    }
    let option = |sub: &str, opt: &str| section(&pages[&format!("dkms-hook-{sub}.8")], "OPTIONS").contains(&roff(opt));
    assert!(option("status", "\\fB--json\\fR") && !option("remove", "\\fB--json\\fR"));
    assert!(option("remove", "\\fB--no-depmod\\fR") && !option("status", "\\fB--no-depmod\\fR"));
    assert!(section(&pages["dkms-hook-status.8"], "DESCRIPTION").contains("Exits 0 when everything is as it should be"));
    assert!(option("lint", "\\fB--build\\fR") && !option("status", "\\fB--build\\fR"));
}

#[test]
fn the_lint_page_documents_every_finding() {
    let pages = man_pages();
    let findings = section(&pages["dkms-hook-lint.8"], "FINDINGS");
    for tag in dkms_hook::lint::Tag::ALL {
        let entry = format!("\\fB{}\\fR ({})", roff(tag.name()), tag.level().word());
        assert!(findings.contains(&entry), "dkms-hook-lint.8 does not document {tag}:\n{findings}");
    }
}

/// A completion script as the binary prints it.
fn completions(shell: &str) -> String {
    let (code, script, stderr) = dkms_hook(&["generate", "completions", shell]);
    assert_eq!((code, stderr.as_str()), (0, ""), "dkms-hook generate completions {shell}");
    assert!(!script.contains("generate"), "the {shell} script completes the hidden subcommand:\n{script}");
    script
}

#[test]
fn zsh_completes_each_subcommand_with_its_options() {
    let script = completions("zsh");
    assert!(script.starts_with("#compdef dkms-hook\n"), "{}", &script[..100]);
    for sub in subcommands() {
        assert!(script.contains(&format!("\n'{sub}:")), "zsh does not list {sub}");
        assert!(script.contains(&format!("({sub})\n_arguments")), "zsh has no arguments for {sub}");
    }
    for opt in options() {
        let offered = script.contains(&format!("--{opt}[")) || script.contains(&format!("--{opt}=["));
        assert!(offered, "zsh does not complete --{opt}");
    }
    let arm = |sub: &str| {
        let start = script.find(&format!("({sub})\n_arguments")).unwrap();
        let rest = &script[start..];
        rest[..rest.find("\n;;").unwrap()].to_owned()
    };
    assert!(arm("status").contains("'--json[") && !arm("remove").contains("'--json["));
    assert!(arm("remove").contains("'--no-depmod[") && !arm("status").contains("'--no-depmod["));
}

#[test]
fn fish_completes_each_subcommand_with_its_options() {
    let script = completions("fish");
    for sub in subcommands() {
        assert!(script.contains(&format!("-f -a \"{sub}\"")), "fish does not offer {sub}");
        assert!(script.contains(&format!("using_subcommand {sub}\" -l root")), "fish: {sub} lacks --root");
    }
    for opt in options() {
        let offered =
            script.lines().any(|l| l.contains("__fish_dkms_hook_needs_command") && l.contains(&format!(" -l {opt} ")));
        assert!(offered, "fish does not complete --{opt}");
    }
    assert!(script.contains("using_subcommand status\" -l json"));
    assert!(script.contains("using_subcommand remove\" -l no-depmod"));
    assert!(!script.contains("using_subcommand remove\" -l json"));
}

/// What bash completes for the words `line` (the last one being completed), with the script the
/// binary prints sourced.
fn bash_complete(script: &Path, line: &[&str]) -> String {
    let shell = format!(
        "source '{}'\nCOMP_WORDS=({})\nCOMP_CWORD={}\n_dkms__hook dkms-hook '{}' '{}'\necho \"${{COMPREPLY[*]}}\"\n",
        script.display(),
        line.join(" "),
        line.len() - 1,
        line[line.len() - 1],
        line[line.len() - 2],
    );
    let out = Command::new("bash").args(["--norc", "-c", &shell]).output().unwrap();
    assert!(out.status.success(), "bash: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

#[test]
fn bash_completes_subcommands_and_their_options() {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("dkms-hook.bash");
    std::fs::write(&script, completions("bash")).unwrap();
    assert_eq!(bash_complete(&script, &["dkms-hook", "sy"]), "sync");
    assert_eq!(bash_complete(&script, &["dkms-hook", "status", "--js"]), "--json");
    assert_eq!(bash_complete(&script, &["dkms-hook", "remove", "--no-d"]), "--no-depmod");
    assert_eq!(bash_complete(&script, &["dkms-hook", "--root", "/", "sync", "--dry"]), "--dry-run");
    assert_eq!(bash_complete(&script, &["dkms-hook", "status", "--no-d"]), "");
    assert_eq!(bash_complete(&script, &["dkms-hook", "gen"]), "");
    let all: BTreeSet<String> = bash_complete(&script, &["dkms-hook", ""]).split(' ').map(str::to_owned).collect();
    for sub in subcommands() {
        assert!(all.contains(&sub), "bash does not offer {sub}: {all:?}");
    }
    for opt in options() {
        assert!(all.contains(&format!("--{opt}")), "bash does not offer --{opt}: {all:?}");
    }
}

/// The build host's configuration file has no say in what is generated.
#[test]
fn generating_reads_no_configuration() {
    let root = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(root.path().join("etc")).unwrap();
    std::fs::write(root.path().join("etc/dkms-hook.toml"), "jobs = \"many\"\n").unwrap();
    let root = root.path().to_str().unwrap();
    let (code, _, stderr) = dkms_hook(&["--root", root, "status"]);
    assert_eq!(code, 2, "the broken file is an error for status: {stderr}");
    let (code, script, stderr) = dkms_hook(&["--root", root, "generate", "completions", "bash"]);
    assert_eq!((code, stderr.as_str()), (0, ""));
    assert_eq!(script, completions("bash"));
}

#[test]
fn generate_errors_name_the_problem() {
    let (code, _, stderr) = dkms_hook(&["generate", "completions", "nushell"]);
    assert_eq!(code, 2);
    assert!(stderr.contains("invalid value 'nushell'") && stderr.contains("bash, zsh, fish"), "{stderr}");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("file");
    std::fs::write(&file, "").unwrap();
    let (code, _, stderr) = dkms_hook(&["generate", "man", file.join("man").to_str().unwrap()]);
    assert_eq!(code, 2);
    assert!(stderr.starts_with("error: failed to create ") && stderr.contains("/file/man"), "{stderr}");
}

#[test]
fn version_and_help() {
    let (code, out, _) = dkms_hook(&["--version"]);
    assert_eq!((code, out.trim()), (0, concat!("dkms-hook ", env!("CARGO_PKG_VERSION"))));
    let (code, out, _) = dkms_hook(&["--help"]);
    assert_eq!(code, 0);
    for want in ["Usage: dkms-hook [OPTIONS] <COMMAND>", "status", "sync", "Exit status: 0", "dkms-hook.toml(5)"] {
        assert!(out.contains(want), "--help lacks {want:?}:\n{out}");
    }
    assert!(!out.contains("generate"), "--help shows the hidden subcommand:\n{out}");
    assert!(out.lines().all(|l| l.chars().count() <= 100), "--help has lines over 100 columns:\n{out}");
    let (code, out, _) = dkms_hook(&["status", "--help"]);
    assert_eq!(code, 0);
    assert!(out.contains("--json") && out.contains("Exits 0 when everything is as it should be"), "{out}");
    let (code, out, _) = dkms_hook(&["lint", "--help"]);
    assert_eq!(code, 0);
    assert!(out.contains("Findings:") && out.contains("error no-dkms-conf"), "{out}");
    assert!(out.lines().all(|l| l.chars().count() <= 100), "lint --help has lines over 100 columns:\n{out}");
}
