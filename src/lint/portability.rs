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
//! and dkms.
//!
//! Nor does a `uname -r` whose value the build never uses. When MAKE goes straight to kbuild
//! (`make -C ${kernel_source_dir} M=…`, also dkms's default), the kernel's own Makefile builds the
//! module: it reads the module's Makefile only for kbuild's variables (`obj-m`, `ccflags-y`, …) and
//! never runs its recipes, so `KVER ?= $(shell uname -r)` that only leads to a recipe's
//! `make -C $(KDIR)` decides nothing (Debian's acpi-call-dkms). When MAKE runs the module's own
//! Makefile, its recipes run too. [`used_variables`] follows a `uname -r` value through the
//! assignments to where the build uses it. Pure text functions; the caller decides what is a
//! finding.

use std::collections::BTreeSet;

/// A line that uses `uname -r`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunningKernelUse {
    /// 1-based.
    pub line: usize,
    /// The line, trimmed (a continued line joined into one).
    pub text: String,
    /// The make variable the line assigns, if it is an assignment (`KDIR := …`).
    pub variable: Option<String>,
    /// The line is a recipe (it starts with a tab): a shell command of a rule.
    pub recipe: bool,
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
        .map(|(i, line)| RunningKernelUse { line: i + 1, text: line.trim().to_owned(), variable: None, recipe: false })
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
    reachable_lines(text)
        .into_iter()
        .filter(|l| !l.conditional && mentions_uname_r(&l.code) && !l.code.contains("KERNELRELEASE"))
        .map(|l| RunningKernelUse {
            line: l.number,
            variable: assigned_variable(&l.code),
            recipe: l.code.starts_with('\t'),
            text: l.text.trim().to_owned(),
        })
        .collect()
}

/// A logical line of a Makefile that a dkms build reads.
struct Line {
    /// 1-based, where it starts.
    number: usize,
    /// As written (a continued line joined).
    text: String,
    /// Without its comment.
    code: String,
    /// A conditional directive (`ifeq`, `else`, `endif`, …).
    conditional: bool,
}

/// The logical lines outside the branches only taken when KERNELRELEASE is empty (which a dkms
/// build never takes: dkms passes KERNELRELEASE, kbuild sets it).
fn reachable_lines(text: &str) -> Vec<Line> {
    let mut lines = Vec::new();
    // One entry per open conditional: Some(true) while in a branch only taken when
    // KERNELRELEASE is empty, Some(false) in its other branch, None for other conditions.
    let mut conditions: Vec<Option<bool>> = Vec::new();
    for (number, text) in logical_lines(text) {
        let code = strip_make_comment(&text).to_owned();
        let directive = code.trim_start();
        let keyword = directive.split(|c: char| c.is_whitespace() || c == '(').next().unwrap_or("");
        let conditional = matches!(keyword, "ifeq" | "ifneq" | "ifdef" | "ifndef" | "else" | "endif");
        match keyword {
            "ifeq" | "ifneq" | "ifdef" | "ifndef" => {
                conditions.push(kernelrelease_empty_branch(keyword, &directive[keyword.len()..]))
            }
            "else" => {
                if let Some(top) = conditions.last_mut() {
                    *top = top.map(|empty| !empty);
                }
            }
            "endif" => {
                conditions.pop();
            }
            _ => {}
        }
        if conditions.contains(&Some(true)) {
            continue;
        }
        lines.push(Line { number, text, code, conditional });
    }
    lines
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

/// A make assignment's variable and value (`[export|override] NAME [?:+!]= VALUE`), with the names
/// kbuild uses (`obj-m`, `ccflags-y`, `CFLAGS_a.o`); and whether it is exported.
fn assignment(code: &str) -> Option<(&str, &str, bool)> {
    if code.starts_with('\t') {
        return None;
    }
    let mut rest = code.trim_start();
    let mut exported = false;
    for prefix in ["export ", "override "] {
        if let Some(r) = rest.strip_prefix(prefix) {
            exported |= prefix == "export ";
            rest = r.trim_start();
        }
    }
    let name_len = rest.find(|c: char| !(c.is_ascii_alphanumeric() || "_-.".contains(c))).unwrap_or(rest.len());
    let (name, after) = rest.split_at(name_len);
    let after = after.trim_start();
    let op = ["::=", ":=", "?=", "+=", "!=", "="].into_iter().find(|op| after.starts_with(op))?;
    (!name.is_empty()).then(|| (name, &after[op.len()..], exported))
}

/// The variables a line refers to: `$(NAME)`, `${NAME}`, `$(NAME:a=b)`, and those inside function
/// calls (`$(if $(KVER),…)`, not the function's name); `ifdef NAME` too.
fn references(code: &str) -> Vec<&str> {
    let mut names = Vec::new();
    let mut rest = code;
    while let Some(at) = rest.find('$') {
        rest = &rest[at + 1..];
        if let Some(inner) = rest.strip_prefix('(').or_else(|| rest.strip_prefix('{')) {
            let len = inner.find(|c: char| !(c.is_ascii_alphanumeric() || "_-.".contains(c))).unwrap_or(inner.len());
            // `$(shell …)`, `$(if …)`: a function, whose arguments are looked at in turn.
            let function = inner[len..].starts_with(char::is_whitespace);
            if len > 0 && !function {
                names.push(&inner[..len]);
            }
        }
    }
    let directive = code.trim_start();
    if let Some(name) = directive.strip_prefix("ifdef ").or_else(|| directive.strip_prefix("ifndef ")) {
        names.push(name.trim());
    }
    names
}

/// Whether kbuild reads the variable `name` when it builds the module (its goals, sources and
/// flags), whatever started make.
fn kbuild_reads(name: &str) -> bool {
    name.starts_with("obj-")
        || name.starts_with("lib-")
        || name.starts_with("KBUILD_")
        || name.starts_with("CFLAGS_")
        || name.starts_with("AFLAGS_")
        || name.to_ascii_lowercase().contains("flags")
        || ["-y", "-m", "-objs"].iter().any(|suffix| name.ends_with(suffix))
        || matches!(name, "targets" | "always" | "extra-y" | "hostprogs" | "src" | "obj")
}

/// Whether every MAKE command hands the build straight to the kernel's own Makefile (`make -C
/// KERNEL_DIR M=…` or `SUBDIRS=…`), as dkms's default (no MAKE) does: kbuild then reads the module's
/// Makefile only for its variables and never runs its recipes. KERNEL_DIR names the kernel tree:
/// `${kernel_source_dir}` or `/lib/modules/$kernelver/build`, or nothing where dkms.conf was read
/// with those variables empty.
pub fn kbuild_only(make: &[String]) -> bool {
    make.iter().all(|cmd| {
        let words: Vec<&str> = cmd.split_whitespace().collect();
        let external = words.iter().any(|w| w.starts_with("M=") || w.starts_with("SUBDIRS="));
        let kernel_dir = |dir: &str| {
            dir.is_empty()
                || dir.contains('=')
                || dir.starts_with('-')
                || dir.contains("kernel_source_dir")
                || dir.contains("kernelver")
                || dir.contains("/lib/modules/")
        };
        let directory = words.iter().enumerate().find_map(|(i, w)| {
            let next = || words.get(i + 1).copied().unwrap_or("");
            match *w {
                "-C" | "--directory" => Some(next()),
                _ => w.strip_prefix("--directory=").or_else(|| w.strip_prefix("-C")),
            }
        });
        words.first() == Some(&"make") && external && directory.is_some_and(kernel_dir)
    })
}

/// The variables whose values a dkms build uses, over all of a module's build files (`texts`):
/// those kbuild reads, and with `kbuild_only` false (MAKE runs the module's own Makefile) those in
/// recipes, rules and directives and every exported one; then, through the assignments, every
/// variable their values refer to. An assignment to a variable MAKE sets on make's command line
/// (`set_by_build`) is never used, nor is what it refers to.
pub fn used_variables(texts: &[&str], kbuild_only: bool, make: &[String]) -> BTreeSet<String> {
    let mut assignments: Vec<(String, Vec<String>)> = Vec::new();
    let mut used: BTreeSet<String> = BTreeSet::new();
    for text in texts {
        for line in reachable_lines(text) {
            let refs = |s: &str| references(s).into_iter().map(str::to_owned).collect::<Vec<_>>();
            match assignment(&line.code) {
                Some((name, _, _)) if set_by_build(name, make) => {}
                Some((name, value, exported)) => {
                    if kbuild_reads(name) || (exported && !kbuild_only) {
                        used.insert(name.to_owned());
                    }
                    assignments.push((name.to_owned(), refs(value)));
                }
                None if kbuild_only && line.code.starts_with('\t') => {}
                None => used.extend(refs(&line.code)),
            }
        }
    }
    let mut todo: Vec<String> = used.iter().cloned().collect();
    while let Some(name) = todo.pop() {
        for (_, refs) in assignments.iter().filter(|(n, _)| *n == name) {
            for r in refs {
                if used.insert(r.clone()) {
                    todo.push(r.clone());
                }
            }
        }
    }
    used
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
    fn builds_that_go_straight_to_kbuild() {
        let make = |cmds: &[&str]| -> Vec<String> { cmds.iter().map(|c| c.to_string()).collect() };
        for (cmds, want) in [
            (&[][..], true),
            (&["make -C ${kernel_source_dir} M=${dkms_tree}/a/1.0/build"][..], true),
            (&["make -C  M=/var/lib/dkms/a/1.0/build modules"], true),
            (&["make -C /lib/modules/${kernelver}/build M=/x"], true),
            (&["make -C/lib/modules//build SUBDIRS=/x modules"], true),
            (&["make --directory=${kernel_source_dir} M=/x"], true),
            (&["make KERNEL_DIR=/x all"], false),
            (&["make"], false),
            (&["make -C src M=/x"], false),
            (&["make -C ${kernel_source_dir}"], false),
            (&["./build.sh -C ${kernel_source_dir} M=/x"], false),
            (&["make -C ${kernel_source_dir} M=/x", "make all"], false),
        ] {
            assert_eq!(kbuild_only(&make(cmds)), want, "{cmds:?}");
        }
    }

    #[test]
    fn variables_the_build_uses() {
        let make = |cmds: &[&str]| -> Vec<String> { cmds.iter().map(|c| c.to_string()).collect() };
        let used = |text: &str, kbuild: bool, cmds: &[&str]| -> Vec<String> {
            used_variables(&[text], kbuild, &make(cmds)).into_iter().collect()
        };
        let chain =
            "KVER ?= $(shell uname -r)\nKDIR ?= /lib/modules/$(KVER)/build\nall:\n\t$(MAKE) -C $(KDIR) M=$(PWD)\n";
        assert_eq!(used(chain, false, &["make"]), ["KDIR", "KVER", "MAKE", "PWD"]);
        assert_eq!(used(chain, true, &[]), Vec::<String>::new());
        // KDIR from make's command line: its own value, and KVER with it, are never used.
        assert_eq!(used(chain, false, &["make KDIR=/k"]), ["KDIR", "MAKE", "PWD"]);
        // kbuild's variables, and what they refer to, in both cases.
        let flags = "V := $(shell uname -r)\nX := -DV=$(V)\nccflags-y += $(X)\nobj-m := a.o\n";
        assert_eq!(used(flags, true, &[]), ["V", "X", "ccflags-y", "obj-m"]);
        // Exported variables reach the recipes' commands; directives count too.
        assert_eq!(used("export K := $(shell uname -r)\n", false, &["make"]), ["K"]);
        assert_eq!(used("export K := $(shell uname -r)\n", true, &[]), Vec::<String>::new());
        assert_eq!(used("ifeq ($(K),x)\nendif\nifdef L\nendif\n", true, &[]), ["K", "L"]);
        // Not in the branch that only runs without KERNELRELEASE.
        let guarded = "ifeq ($(KERNELRELEASE),)\nall:\n\t$(MAKE) -C $(KDIR)\nelse\nobj-m := a.o\nendif\n";
        assert_eq!(used(guarded, false, &["make"]), ["obj-m"]);
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
