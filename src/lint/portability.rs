//! Where a module's build asks for the running kernel (`uname -r`) instead of the kernel dkms
//! builds for: in dkms.conf, and in the sources' Makefiles and Kbuild files.
//!
//! dkms builds for one kernel at a time, often not the running one (a new kernel in the same
//! transaction, every installed kernel after `sync`). It sources dkms.conf with `$kernelver` and
//! `$kernel_source_dir` set for that kernel, and runs MAKE with `KERNELRELEASE=<kernel>` on the
//! command line whenever MAKE starts with `make` (dkms 3.0 to 3.4). So in a Makefile, `uname -r`
//! is harmless where the build never reaches it: a variable that MAKE sets on its command line
//! (`KDIR=${kernel_source_dir}`), a fallback on a line that also asks for KERNELRELEASE, and the
//! branches of `ifeq ($(KERNELRELEASE),)` / `ifndef KERNELRELEASE` that only run outside kbuild
//! and dkms. Everything else is reported. Pure text functions; the caller decides what is a
//! finding.

/// A line that uses `uname -r`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunningKernelUse {
    /// 1-based.
    pub line: usize,
    /// The line, trimmed (a continued line joined into one).
    pub text: String,
    /// The make variable the line assigns, if it is an assignment (`KDIR := …`).
    pub variable: Option<String>,
}

/// Whether `text` (one line) runs `uname -r`: `$(shell uname -r)`, `` `uname -r` ``,
/// `$(uname -r)`, `/bin/uname --kernel-release`.
pub fn mentions_uname_r(text: &str) -> bool {
    let words: Vec<&str> = text.split_whitespace().collect();
    words.windows(2).any(|pair| {
        // The program is the end of the word after `$(`, a backtick, a quote, `=` or a directory.
        let program = pair[0].rsplit(['`', '(', '{', '"', '\'', '=', '/', ';', '|', '&']).next().unwrap_or("");
        program == "uname" && (pair[1].starts_with("-r") || pair[1].starts_with("--kernel-release"))
    })
}

/// The lines of a shell file (dkms.conf) that use `uname -r`, comments left out.
pub fn in_shell(text: &str) -> Vec<RunningKernelUse> {
    text.lines()
        .enumerate()
        .filter(|(_, line)| mentions_uname_r(strip_shell_comment(line)))
        .map(|(i, line)| RunningKernelUse { line: i + 1, text: line.trim().to_owned(), variable: None })
        .collect()
}

/// `line` without a `#` comment (one that starts a word outside quotes).
fn strip_shell_comment(line: &str) -> &str {
    let mut quote = None;
    let mut previous = ' ';
    for (i, c) in line.char_indices() {
        match (quote, c) {
            (None, '\'' | '"') => quote = Some(c),
            (Some(q), _) if c == q && previous != '\\' => quote = None,
            (None, '#') if previous.is_whitespace() => return &line[..i],
            _ => {}
        }
        previous = c;
    }
    line
}

/// The lines of a Makefile or Kbuild file that use `uname -r` where a dkms build can reach
/// them (see the module documentation; the caller checks the variables against MAKE).
pub fn in_makefile(text: &str) -> Vec<RunningKernelUse> {
    let mut found = Vec::new();
    // One entry per open conditional: Some(true) while in a branch only taken when
    // KERNELRELEASE is empty, Some(false) in its other branch, None for other conditions.
    let mut conditions: Vec<Option<bool>> = Vec::new();
    for (line, text) in logical_lines(text) {
        let code = strip_make_comment(&text);
        let directive = code.trim_start();
        let keyword = directive.split(|c: char| c.is_whitespace() || c == '(').next().unwrap_or("");
        match keyword {
            "ifeq" | "ifneq" | "ifdef" | "ifndef" => {
                conditions.push(kernelrelease_empty_branch(keyword, &directive[keyword.len()..]));
                continue;
            }
            "else" => {
                if let Some(top) = conditions.last_mut() {
                    *top = top.map(|empty| !empty);
                }
                continue;
            }
            "endif" => {
                conditions.pop();
                continue;
            }
            _ => {}
        }
        if conditions.contains(&Some(true)) || !mentions_uname_r(code) || code.contains("KERNELRELEASE") {
            continue;
        }
        found.push(RunningKernelUse { line, text: text.trim().to_owned(), variable: assigned_variable(code) });
    }
    found
}

/// For a conditional that tests whether KERNELRELEASE is empty: whether its first branch is the
/// empty one. `None` for any other condition.
fn kernelrelease_empty_branch(keyword: &str, condition: &str) -> Option<bool> {
    let compact: String =
        condition.replace("${KERNELRELEASE}", "$(KERNELRELEASE)").chars().filter(|c| !c.is_whitespace()).collect();
    match keyword {
        "ifdef" | "ifndef" if compact == "KERNELRELEASE" => Some(keyword == "ifndef"),
        "ifeq" | "ifneq" => {
            let empty_test = [
                "($(KERNELRELEASE),)",
                "(,$(KERNELRELEASE))",
                "\"$(KERNELRELEASE)\"\"\"",
                "\"\"\"$(KERNELRELEASE)\"",
                "'$(KERNELRELEASE)'''",
                "'''$(KERNELRELEASE)'",
            ];
            empty_test.contains(&compact.as_str()).then_some(keyword == "ifeq")
        }
        _ => None,
    }
}

/// Lines with their 1-based numbers, a line ending in `\` joined with the next.
fn logical_lines(text: &str) -> Vec<(usize, String)> {
    let mut lines = Vec::new();
    let mut pending: Option<(usize, String)> = None;
    for (i, line) in text.lines().enumerate() {
        let (start, mut joined) = pending.take().unwrap_or((i + 1, String::new()));
        match line.strip_suffix('\\') {
            Some(head) => {
                joined.push_str(head);
                joined.push(' ');
                pending = Some((start, joined));
            }
            None => {
                joined.push_str(line);
                lines.push((start, joined));
            }
        }
    }
    lines.extend(pending);
    lines
}

/// `line` without a make comment (`#` not escaped).
fn strip_make_comment(line: &str) -> &str {
    let mut previous = ' ';
    for (i, c) in line.char_indices() {
        if c == '#' && previous != '\\' {
            return &line[..i];
        }
        previous = c;
    }
    line
}

/// The variable a make assignment sets (`[export|override] NAME [?:+!]= …`).
fn assigned_variable(code: &str) -> Option<String> {
    let mut rest = code.trim_start();
    for prefix in ["export ", "override "] {
        rest = rest.strip_prefix(prefix).map_or(rest, str::trim_start);
    }
    let name_len = rest.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(rest.len());
    let (name, after) = rest.split_at(name_len);
    let after = after.trim_start();
    let assigns = ["=", ":=", "::=", "?=", "+=", "!="].iter().any(|op| after.starts_with(op));
    (!name.is_empty() && assigns).then(|| name.to_owned())
}

/// Whether the build sets `variable` on make's command line, so that a Makefile's own value of
/// it is never used: a MAKE command passes `VARIABLE=…`, or it is KERNELRELEASE, which dkms
/// passes itself when MAKE runs make (or is left to dkms's default).
pub fn set_by_build(variable: &str, make: &[String]) -> bool {
    let passed = make
        .iter()
        .any(|cmd| cmd.split_whitespace().any(|w| w.strip_prefix(variable).is_some_and(|r| r.starts_with('='))));
    let runs_make = make.is_empty() || make.iter().all(|cmd| cmd.split_whitespace().next() == Some("make"));
    passed || (variable == "KERNELRELEASE" && runs_make)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognizes_uname_r() {
        for (line, want) in [
            ("KDIR := /lib/modules/$(shell uname -r)/build", true),
            ("\t$(MAKE) -C /lib/modules/`uname -r`/build M=$(PWD)", true),
            ("MAKE[0]=\"make -C /lib/modules/$(uname -r)/build\"", true),
            ("V=$$(/bin/uname --kernel-release)", true),
            ("KV=$(uname -r)", true),
            ("x;uname -r", true),
            ("ARCH := $(shell uname -m)", false),
            ("# uname-r is not a command", false),
            ("MAKE[0]=\"make KVER=$kernelver\"", false),
        ] {
            assert_eq!(mentions_uname_r(line), want, "{line}");
        }
    }

    #[test]
    fn dkms_conf_lines_outside_comments() {
        let text = "PACKAGE_NAME=x\n# never uname -r here\nMAKE[0]=\"make -C /lib/modules/$(uname -r)/build\"\n\
                    CLEAN='make clean' # uname -r\nKV=\"#$(uname -r)\"\n";
        let lines: Vec<usize> = in_shell(text).iter().map(|u| u.line).collect();
        assert_eq!(lines, [3, 5]);
    }

    #[test]
    fn makefile_uses_that_a_dkms_build_reaches() {
        for (text, want) in [
            // A recipe and an assignment that kbuild and dkms use.
            ("all:\n\t$(MAKE) -C /lib/modules/$(shell uname -r)/build M=$(CURDIR) modules\n", &[(2, None)][..]),
            ("KDIR := /lib/modules/$(shell uname -r)/build\n", &[(1, Some("KDIR"))]),
            ("export KVER ?= $(shell uname -r)\n", &[(1, Some("KVER"))]),
            // A continued line is one line, reported where it starts.
            ("KDIR = /lib/modules/$(shell \\\n  uname -r)/build\n", &[(1, Some("KDIR"))]),
            // Comments, and fallbacks that prefer KERNELRELEASE.
            ("# KDIR := /lib/modules/$(shell uname -r)/build\n", &[]),
            ("KVER ?= $(if $(KERNELRELEASE),$(KERNELRELEASE),$(shell uname -r))\n", &[]),
            // The branches only taken without KERNELRELEASE (outside dkms and kbuild).
            (
                "ifneq ($(KERNELRELEASE),)\nobj-m := a.o\nelse\nKDIR ?= /lib/modules/$(shell uname -r)/build\n\
                 default:\n\t$(MAKE) -C $(KDIR) M=$(PWD) modules\nendif\nX := $(shell uname -r)\n",
                &[(8, Some("X"))],
            ),
            ("ifeq \"$(KERNELRELEASE)\" \"\"\nKDIR := /lib/modules/$(shell uname -r)/build\nendif\n", &[]),
            (
                "ifndef KERNELRELEASE\nK := $(shell uname -r)\nelse\nobj-m := a.o\nK2 := $(shell uname -r)\nendif\n",
                &[(5, Some("K2"))],
            ),
            // Other conditions change nothing; nesting keeps the outer branch.
            ("ifeq ($(ARCH),x86)\nK := $(shell uname -r)\nendif\n", &[(2, Some("K"))]),
            ("ifeq ($(KERNELRELEASE),)\nifeq ($(A),b)\nK := $(shell uname -r)\nendif\nendif\n", &[]),
        ] {
            let uses = in_makefile(text);
            let got: Vec<(usize, Option<&str>)> = uses.iter().map(|u| (u.line, u.variable.as_deref())).collect();
            assert_eq!(got, want, "{text}");
        }
    }

    #[test]
    fn variables_the_build_sets() {
        let make = |cmds: &[&str]| -> Vec<String> { cmds.iter().map(|c| c.to_string()).collect() };
        assert!(set_by_build("KDIR", &make(&["make KDIR=/usr/lib/modules/6.1/build all"])));
        assert!(!set_by_build("KDIR", &make(&["make KDIRX=/x all"])));
        assert!(!set_by_build("KVER", &make(&["make KDIR=/x"])));
        assert!(set_by_build("KERNELRELEASE", &make(&[])));
        assert!(set_by_build("KERNELRELEASE", &make(&["make -C /x M=/y"])));
        assert!(!set_by_build("KERNELRELEASE", &make(&["./build.sh"])));
    }
}
