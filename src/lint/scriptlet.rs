//! What an install scriptlet (`.INSTALL`) runs, found by reading it as shell, never by running it.
//!
//! A scriptlet is a bash file of functions (`post_install() { … }`) that pacman sources and calls.
//! [`commands`] splits it into simple commands the way the shell does — quotes, escapes,
//! comments, here-documents, `;`, `&&`, `|`, subshells and braces — and takes the program each
//! one runs: the first word after variable assignments, shell keywords and wrappers such as
//! `sudo` or `env`, without its directory; and the functions it defines. Command substitutions (`$(…)`, backticks) run their
//! commands too, also inside double quotes. Function definitions and `case` patterns are not
//! commands. It is a reader for findings, not a shell: what it cannot tell apart it reports as a
//! command, so an unusual scriptlet is never taken for an empty one.

/// One command a scriptlet runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Command {
    /// The program, without its directory (`/usr/bin/dkms` is `dkms`).
    pub program: String,
    /// The 1-based line it starts on.
    pub line: usize,
}

/// Programs that only print or end a function: a scriptlet of nothing else can be dropped.
pub const PRINTING: &[&str] = &["echo", "printf", "true", ":", "return", "exit"];

/// Words that start or continue a command without being one.
const KEYWORDS: &[&str] = &["if", "then", "else", "elif", "fi", "do", "done", "while", "until", "!", "{", "}", "esac"];

/// Words that run the next word as the command.
const WRAPPERS: &[&str] = &["sudo", "exec", "command", "builtin", "env", "nohup", "nice", "time"];

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Word {
        text: String,
        line: usize,
    },
    /// `(`.
    Open,
    /// `)`.
    Close,
    /// Ends a command: newline, `;`, `&`, `|`.
    End,
}

/// What a scriptlet runs and defines.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Scriptlet {
    /// The commands it runs, in order of their lines.
    pub commands: Vec<Command>,
    /// The functions it defines (`post_install`, helpers): calling one runs what it holds.
    pub functions: Vec<String>,
}

/// Reads `script`.
pub fn read(script: &str) -> Scriptlet {
    let mut read = Scriptlet::default();
    let tokens = lex(script, 1, &mut read.commands);
    parse(&tokens, &mut read);
    read.commands.sort_by_key(|c| c.line);
    read
}

/// Splits `text` (starting on line `first_line`) into tokens; the commands of substitutions go
/// straight to `found`.
fn lex(text: &str, first_line: usize, found: &mut Vec<Command>) -> Vec<Token> {
    let chars: Vec<char> = text.chars().collect();
    let mut tokens = Vec::new();
    let mut line = first_line;
    let mut word = String::new();
    // Where the current word started (a word can span lines inside quotes).
    let mut word_line = line;
    let mut heredocs: Vec<(String, bool)> = Vec::new();
    let mut i = 0;
    let end_word = |word: &mut String, tokens: &mut Vec<Token>, line: usize| {
        if !word.is_empty() {
            tokens.push(Token::Word { text: std::mem::take(word), line });
        }
    };
    while i < chars.len() {
        let c = chars[i];
        if word.is_empty() {
            word_line = line;
        }
        match c {
            '\\' if chars.get(i + 1) == Some(&'\n') => {
                line += 1;
                i += 2;
                continue;
            }
            '\\' => {
                if let Some(&next) = chars.get(i + 1) {
                    word.push(next);
                }
                i += 2;
                continue;
            }
            '#' if word.is_empty() => {
                while i < chars.len() && chars[i] != '\n' {
                    i += 1;
                }
                continue;
            }
            ' ' | '\t' => end_word(&mut word, &mut tokens, word_line),
            '\n' => {
                end_word(&mut word, &mut tokens, word_line);
                tokens.push(Token::End);
                line += 1;
                i += 1;
                // Here-document bodies follow the line that opened them.
                for (delimiter, strip_tabs) in std::mem::take(&mut heredocs) {
                    while i < chars.len() {
                        let start = i;
                        while i < chars.len() && chars[i] != '\n' {
                            i += 1;
                        }
                        let body_line: String = chars[start..i].iter().collect();
                        i += 1;
                        line += 1;
                        let body_line = if strip_tabs { body_line.trim_start_matches('\t') } else { &body_line };
                        if body_line == delimiter {
                            break;
                        }
                    }
                }
                continue;
            }
            ';' | '&' | '|' => {
                end_word(&mut word, &mut tokens, word_line);
                tokens.push(Token::End);
            }
            '(' => {
                end_word(&mut word, &mut tokens, word_line);
                tokens.push(Token::Open);
            }
            ')' => {
                end_word(&mut word, &mut tokens, word_line);
                tokens.push(Token::Close);
            }
            '<' if chars.get(i + 1) == Some(&'<') && chars.get(i + 2) != Some(&'<') => {
                end_word(&mut word, &mut tokens, word_line);
                i += 2;
                let strip_tabs = chars.get(i) == Some(&'-');
                if strip_tabs {
                    i += 1;
                }
                while matches!(chars.get(i), Some(' ' | '\t')) {
                    i += 1;
                }
                let mut delimiter = String::new();
                while let Some(&d) = chars.get(i) {
                    if d.is_whitespace() || ";&|<>()".contains(d) {
                        break;
                    }
                    if !"'\"\\".contains(d) {
                        delimiter.push(d);
                    }
                    i += 1;
                }
                heredocs.push((delimiter, strip_tabs));
                continue;
            }
            '<' | '>' => end_word(&mut word, &mut tokens, word_line),
            '\'' => {
                let close = find(&chars, i + 1, '\'');
                let quoted: String = chars[i + 1..close].iter().collect();
                line += quoted.matches('\n').count();
                word.push_str(&quoted);
                i = close + 1;
                continue;
            }
            '"' => {
                i = double_quoted(&chars, i + 1, &mut word, &mut line, found);
                continue;
            }
            '`' => {
                let close = find(&chars, i + 1, '`');
                let inner: String = chars[i + 1..close].iter().collect();
                substitute(&inner, line, found);
                line += inner.matches('\n').count();
                word.push('`');
                i = close + 1;
                continue;
            }
            '$' if chars.get(i + 1) == Some(&'(') => {
                let close = matching_paren(&chars, i + 1);
                let inner: String = chars[i + 2..close.min(chars.len())].iter().collect();
                // `$((…))` is arithmetic, not a command.
                if !inner.starts_with('(') {
                    substitute(&inner, line, found);
                }
                line += inner.matches('\n').count();
                word.push('$');
                i = close + 1;
                continue;
            }
            _ => word.push(c),
        }
        i += 1;
    }
    end_word(&mut word, &mut tokens, word_line);
    tokens
}

/// Reads a double-quoted string from `i` (after the opening quote) into `word`; returns the index
/// after the closing quote.
fn double_quoted(chars: &[char], mut i: usize, word: &mut String, line: &mut usize, found: &mut Vec<Command>) -> usize {
    while i < chars.len() {
        match chars[i] {
            '"' => return i + 1,
            '\\' if i + 1 < chars.len() => {
                if chars[i + 1] == '\n' {
                    *line += 1;
                } else {
                    word.push(chars[i + 1]);
                }
                i += 2;
            }
            '$' if chars.get(i + 1) == Some(&'(') => {
                let close = matching_paren(chars, i + 1);
                let inner: String = chars[i + 2..close.min(chars.len())].iter().collect();
                if !inner.starts_with('(') {
                    substitute(&inner, *line, found);
                }
                *line += inner.matches('\n').count();
                i = close + 1;
            }
            '`' => {
                let close = find(chars, i + 1, '`');
                let inner: String = chars[i + 1..close].iter().collect();
                substitute(&inner, *line, found);
                *line += inner.matches('\n').count();
                i = close + 1;
            }
            c => {
                if c == '\n' {
                    *line += 1;
                }
                word.push(c);
                i += 1;
            }
        }
    }
    i
}

/// The commands of a command substitution's text, which starts on `line`.
fn substitute(inner: &str, line: usize, found: &mut Vec<Command>) {
    let mut inside = Scriptlet::default();
    let tokens = lex(inner, line, &mut inside.commands);
    parse(&tokens, &mut inside);
    found.extend(inside.commands);
}

/// The index of the next `c` from `from`, or the end of the text.
fn find(chars: &[char], from: usize, c: char) -> usize {
    (from..chars.len()).find(|&j| chars[j] == c).unwrap_or(chars.len())
}

/// The index of the `)` matching the `(` at `open`, skipping quoted text, or the end of the text.
fn matching_paren(chars: &[char], open: usize) -> usize {
    let mut depth = 0;
    let mut i = open;
    while i < chars.len() {
        match chars[i] {
            '(' => depth += 1,
            ')' => {
                depth -= 1;
                if depth == 0 {
                    return i;
                }
            }
            '\'' | '"' => i = find(chars, i + 1, chars[i]),
            '\\' => i += 1,
            _ => {}
        }
        i += 1;
    }
    chars.len()
}

/// Whether `word` assigns a variable (`NAME=…`, `NAME+=…`, `NAME[i]=…`).
fn is_assignment(word: &str) -> bool {
    let Some(eq) = word.find('=') else { return false };
    let name = word[..eq].trim_end_matches('+');
    let name = name.split('[').next().unwrap_or(name);
    !name.is_empty()
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// The commands and function definitions in a token stream, added to `into`.
fn parse(tokens: &[Token], into: &mut Scriptlet) {
    let mut at_start = true;
    // After a wrapper: its options and assignments are skipped too.
    let mut wrapped = false;
    let mut i = 0;
    while i < tokens.len() {
        match &tokens[i] {
            Token::End | Token::Open | Token::Close => {
                at_start = true;
                wrapped = false;
            }
            Token::Word { text, line } if at_start => {
                let next = tokens.get(i + 1);
                if next == Some(&Token::Open) && tokens.get(i + 2) == Some(&Token::Close) {
                    // `name() { … }`: a definition, not a call.
                    into.functions.push(text.clone());
                    i += 3;
                    continue;
                }
                if next == Some(&Token::Close) && !wrapped {
                    // A `case` pattern.
                } else if KEYWORDS.contains(&text.as_str()) || is_assignment(text) {
                } else if text == "function" {
                    // `function name`, maybe followed by `()`.
                    if let Some(Token::Word { text: name, .. }) = next {
                        into.functions.push(name.clone());
                    }
                    i += 2;
                    continue;
                } else if matches!(text.as_str(), "for" | "select" | "case") {
                    at_start = false;
                } else if wrapped && text.starts_with('-') {
                    if text == "-v" || text == "-V" {
                        // `command -v NAME` looks a program up and runs nothing.
                        at_start = false;
                    }
                } else if WRAPPERS.contains(&text.as_str()) {
                    wrapped = true;
                } else {
                    let program = text.rsplit('/').next().unwrap_or(text).to_owned();
                    into.commands.push(Command { program, line: *line });
                    at_start = false;
                }
            }
            Token::Word { .. } => {}
        }
        i += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn programs(script: &str) -> Vec<(String, usize)> {
        read(script).commands.into_iter().map(|c| (c.program, c.line)).collect()
    }

    #[test]
    fn finds_the_functions_it_defines() {
        let script = "post_install() {
  :
}
function post_upgrade {
  post_install
}
helper () { :; }
";
        assert_eq!(read(script).functions, ["post_install", "post_upgrade", "helper"]);
    }

    #[test]
    fn finds_the_programs_a_scriptlet_runs() {
        let owned = |list: &[(&str, usize)]| -> Vec<(String, usize)> {
            list.iter().map(|(p, l)| (p.to_string(), *l)).collect()
        };
        for (script, want) in [
            ("", &[][..]),
            ("# only a comment\n\n", &[]),
            ("post_install() {\n  :\n}\n", &[(":", 2)]),
            ("post_install() { echo hi; }\npre_remove () {\n  printf '%s\\n' x\n}\n", &[("echo", 1), ("printf", 3)]),
            ("function post_upgrade {\n  dkms install foo/1.0\n}\n", &[("dkms", 2)]),
            // Quotes and comments are not commands; the words after a command are its arguments.
            (
                "post_install() {\n  echo 'run dkms install' # then depmod\n  echo \"modprobe foo\"\n}\n",
                &[("echo", 2), ("echo", 3)],
            ),
            // Every simple command of a list or pipeline, with directories and assignments dropped.
            (
                "x=1 /usr/bin/dkms add -m a; depmod -a && LANG=C modprobe foo | cat\n",
                &[("dkms", 1), ("depmod", 1), ("modprobe", 1), ("cat", 1)],
            ),
            ("if [ -x /usr/bin/dkms ]; then\n  dkms build a\nfi\n", &[("[", 1), ("dkms", 2)]),
            ("( rmmod foo ) || true\n{ insmod bar.ko; }\n", &[("rmmod", 1), ("true", 1), ("insmod", 2)]),
            // Wrappers run the next word; `command -v` only looks it up.
            ("sudo -n dkms remove a\nenv X=1 depmod\ncommand -v dkms >/dev/null\n", &[("dkms", 1), ("depmod", 2)]),
            // Substitutions run their commands (before the command they are part of), inside double
            // quotes too; arithmetic does not.
            ("v=$(dkms status)\necho \"loaded: `lsmod`\" $((1+2))\n", &[("dkms", 1), ("lsmod", 2), ("echo", 2)]),
            // Here-documents are text; line continuations join lines.
            ("cat <<EOF\ndkms install x\nEOF\ndepmod \\\n  -a\n", &[("cat", 1), ("depmod", 4)]),
            ("cat <<-'END'\n\tmodprobe x\n\tEND\nrmmod y\n", &[("cat", 1), ("rmmod", 4)]),
            // case patterns are not commands; their bodies are.
            ("case $1 in\n  dkms) modprobe x ;;\n  *) ;;\nesac\n", &[("modprobe", 2)]),
            ("for k in /usr/lib/modules/*; do\n  depmod \"${k##*/}\"\ndone\n", &[("depmod", 2)]),
            // An escaped quote does not start a string.
            ("echo don\\'t; dkms status\n", &[("echo", 1), ("dkms", 1)]),
        ] {
            assert_eq!(programs(script), owned(want), "{script}");
        }
    }
}
