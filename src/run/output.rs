//! What is shown of a dkms run that failed: the end of its log with the first compiler error, and
//! what its exit code means in dkms's terms.

/// Lines of a log shown with a failure.
pub const TAIL_LINES: usize = 20;

/// The last `n` non-empty lines of `text`.
pub fn tail(text: &str, n: usize) -> Vec<String> {
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(n)..].iter().map(|l| l.trim_end().to_owned()).collect()
}

/// What to show of a failed build's log: its last `n` lines, preceded by the first compiler
/// error when that scrolled out of them (the first error names the cause; later ones cascade).
pub fn excerpt(text: &str, n: usize) -> Vec<String> {
    let mut lines = tail(text, n);
    let first_error = text.lines().find(|l| l.contains("error:") || l.contains("Error:")).map(str::trim_end);
    if let Some(first) = first_error {
        if !lines.iter().any(|l| l == first) {
            lines.insert(0, "…".to_owned());
            lines.insert(0, first.to_owned());
        }
    }
    lines
}

/// dkms's exit codes, in its own terms: as dkms 3.0 and 3.2 (the versions the tests run) use
/// them, and 13 and 21 as newer dkms documents them.
pub fn exit_meaning(code: Option<i32>) -> &'static str {
    match code {
        None => "killed by a signal",
        Some(1) | Some(2) => "usage error, missing kernel headers or not root",
        Some(3) => "module already added or not added",
        Some(4) => "bad dkms.conf or missing source",
        Some(5) => "module version not found",
        Some(6) => "install tree for the kernel is missing",
        Some(7) => "built module has an unexpected name",
        Some(8) => "bad dkms.conf",
        Some(10) => "the module build (make) failed",
        Some(11) => "autoinstall had a failure",
        Some(13) => "BUILD_DEPENDS not installed",
        Some(21) => "kernel headers missing",
        Some(_) => "dkms failed",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_keeps_the_last_non_empty_lines() {
        let text = "a\n\nb\nc\n  \nd\n";
        assert_eq!(tail(text, 2), ["c", "d"]);
        assert_eq!(tail(text, 10), ["a", "b", "c", "d"]);
        assert!(tail("", 3).is_empty());
    }

    #[test]
    fn excerpt_keeps_the_first_compiler_error() {
        let mut log = String::from("make -C build\nhello.c:3:1: error: expected ';'\n");
        for i in 0..30 {
            log.push_str(&format!("hello.c:{i}: error: cascade {i}\n"));
        }
        let e = excerpt(&log, 5);
        assert_eq!(e[0], "hello.c:3:1: error: expected ';'");
        assert_eq!(e[1], "…");
        assert_eq!(e.len(), 7);
        assert_eq!(excerpt("a\nx: error: y\nb\n", 5), ["a", "x: error: y", "b"]);
    }
}
