//! The house reads one way: every file of `src/` imports only from its own floor or the floors
//! below it, and no files import each other in a circle. The floors are the numbered list in the
//! `//!` paragraph of `src/lib.rs`; this test reads that list and every `use crate::…`,
//! `use super::…` and inline `crate::…` path of `src/` (unit tests aside: they may use anything),
//! so the documentation and the code cannot drift apart.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

const SRC: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/src");

/// A floor of the house, as `src/lib.rs` lists it.
#[derive(Debug, Clone)]
struct Floor {
    number: usize,
    name: String,
}

/// The floors of the top-level modules: lines `//! N. NAME: `mod`, `mod` — …` of `src/lib.rs`.
fn floors(lib: &str) -> BTreeMap<String, Floor> {
    let mut floors = BTreeMap::new();
    for line in lib.lines() {
        let Some(text) = line.strip_prefix("//!") else { continue };
        let text = text.trim_start();
        let Some((number, rest)) = text.split_once(". ") else { continue };
        let Ok(number) = number.parse::<usize>() else { continue };
        let Some((name, modules)) = rest.split_once(':') else { continue };
        let modules = modules.split(" — ").next().unwrap_or_default();
        for module in modules.split('`').skip(1).step_by(2) {
            floors.insert(module.to_owned(), Floor { number, name: name.trim().to_owned() });
        }
    }
    floors
}

/// Every `.rs` file below `dir`.
fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The module path of a file: `src/run/job.rs` is `run::job`, `src/run/mod.rs` is `run`.
fn module_of(file: &Path) -> Vec<String> {
    let rel = file.strip_prefix(SRC).unwrap().with_extension("");
    let mut parts: Vec<String> = rel.iter().map(|p| p.to_string_lossy().into_owned()).collect();
    if parts.last().is_some_and(|p| p == "mod") {
        parts.pop();
    }
    parts
}

/// The code of a file without its unit tests (a `#[cfg(test)] mod …` block, by convention the
/// last item) and without comments.
fn code_of(text: &str) -> String {
    let mut code = String::new();
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        if line.trim() == "#[cfg(test)]" && lines.peek().is_some_and(|next| next.trim_start().starts_with("mod ")) {
            break;
        }
        let line = match line.find("//") {
            Some(i) if !line[..i].contains('"') => &line[..i],
            _ => line,
        };
        code.push_str(line);
        code.push('\n');
    }
    code
}

/// The paths a `use` tree names: `crate::a::{b, c::{d, self}}` → `crate::a::b`, `crate::a::c::d`,
/// `crate::a::c`.
fn expand(tree: &str) -> Vec<String> {
    let tree: String = tree.chars().filter(|c| !c.is_whitespace()).collect();
    let Some(open) = tree.find('{') else { return vec![tree.trim_end_matches("::self").to_owned()] };
    let (prefix, inner) = (&tree[..open], &tree[open + 1..tree.len() - 1]);
    let mut parts = Vec::new();
    let (mut depth, mut start) = (0, 0);
    for (i, c) in inner.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&inner[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&inner[start..]);
    parts.into_iter().filter(|p| !p.is_empty()).flat_map(|p| expand(&format!("{prefix}{p}"))).collect()
}

/// The paths a file's code names: `use` trees of `crate::`, `super::`, `self::` and of its own
/// submodules (`children`), and the same paths inline.
fn paths_in(code: &str, children: &[&str]) -> Vec<String> {
    let prefixes: Vec<String> =
        ["crate", "super", "self"].iter().copied().chain(children.iter().copied()).map(|p| format!("{p}::")).collect();
    let mut paths = Vec::new();
    // The code with its `use` items taken out: what is left names paths inline.
    let mut inline = String::new();
    let mut rest = code;
    while let Some(i) = rest.find("use ") {
        let before = &rest[..i];
        let starts_item = before.is_empty() || before.ends_with(|c: char| c.is_whitespace() || c == ')');
        inline.push_str(&rest[..i + 4]);
        rest = &rest[i + 4..];
        let tree = rest.trim_start();
        if starts_item && prefixes.iter().any(|p| tree.starts_with(p.as_str())) {
            let end = tree.find(';').unwrap_or(tree.len());
            paths.extend(expand(&tree[..end]));
            rest = &tree[end..];
        }
    }
    inline.push_str(rest);
    for prefix in &prefixes {
        let mut rest = inline.as_str();
        while let Some(i) = rest.find(prefix.as_str()) {
            let boundary = rest[..i].chars().last().is_none_or(|c| !c.is_alphanumeric() && c != '_' && c != ':');
            let path: String =
                rest[i..].chars().take_while(|c| c.is_alphanumeric() || *c == '_' || *c == ':').collect();
            if boundary {
                paths.push(path.trim_end_matches(':').to_owned());
            }
            rest = &rest[i + prefix.len()..];
        }
    }
    paths
}

/// The house as drawn from the code: each file's module path, and the files each file imports.
struct House {
    modules: BTreeMap<Vec<String>, PathBuf>,
    edges: BTreeMap<Vec<String>, BTreeSet<Vec<String>>>,
}

impl House {
    fn read() -> House {
        let mut files = Vec::new();
        rust_files(Path::new(SRC), &mut files);
        let modules: BTreeMap<Vec<String>, PathBuf> = files
            .into_iter()
            // The binaries (`main.rs`, `bin/`) use the library from outside, as its users do.
            .filter(|f| !matches!(f.file_name().and_then(|n| n.to_str()), Some("main.rs" | "lib.rs")))
            .filter(|f| !f.starts_with(Path::new(SRC).join("bin")))
            .map(|f| (module_of(&f), f))
            .collect();
        let mut edges: BTreeMap<Vec<String>, BTreeSet<Vec<String>>> = BTreeMap::new();
        for (module, file) in &modules {
            let code = code_of(&std::fs::read_to_string(file).unwrap());
            let children: Vec<&str> = modules
                .keys()
                .filter(|m| m.len() == module.len() + 1 && m.starts_with(module))
                .map(|m| m[module.len()].as_str())
                .collect();
            for path in paths_in(&code, &children) {
                let mut segments: Vec<String> = path.split("::").map(str::to_owned).collect();
                let first = segments.remove(0);
                segments = match first.as_str() {
                    "crate" => segments,
                    // `super` of `run::job` (src/run/job.rs) is `run`.
                    "super" => [&module[..module.len() - 1], &segments[..]].concat(),
                    // `self::x` and a submodule `x::…` are below the file's own module.
                    "self" => [&module[..], &segments[..]].concat(),
                    child => [&module[..], &[child.to_owned()], &segments[..]].concat(),
                };
                // The longest prefix that is a file of the crate is what the path imports.
                let target =
                    (1..=segments.len()).rev().map(|n| segments[..n].to_vec()).find(|m| modules.contains_key(m));
                if let Some(target) = target.filter(|t| t != module) {
                    edges.entry(module.clone()).or_default().insert(target);
                }
            }
        }
        House { modules, edges }
    }

    fn name(&self, module: &[String]) -> String {
        self.modules[module].strip_prefix(env!("CARGO_MANIFEST_DIR")).unwrap().display().to_string()
    }

    /// Groups of files that import each other in a circle (Tarjan's strongly connected components).
    fn circles(&self) -> Vec<Vec<Vec<String>>> {
        struct Walk<'h> {
            house: &'h House,
            index: BTreeMap<&'h [String], usize>,
            low: BTreeMap<&'h [String], usize>,
            stack: Vec<&'h [String]>,
            circles: Vec<Vec<Vec<String>>>,
        }
        impl<'h> Walk<'h> {
            fn visit(&mut self, v: &'h [String]) {
                let n = self.index.len();
                self.index.insert(v, n);
                self.low.insert(v, n);
                self.stack.push(v);
                for w in self.house.edges.get(v).into_iter().flatten() {
                    let w = w.as_slice();
                    if !self.index.contains_key(w) {
                        self.visit(w);
                        let low = self.low[v].min(self.low[w]);
                        self.low.insert(v, low);
                    } else if self.stack.contains(&w) {
                        let low = self.low[v].min(self.index[w]);
                        self.low.insert(v, low);
                    }
                }
                if self.low[v] == self.index[v] {
                    let mut group = Vec::new();
                    while let Some(w) = self.stack.pop() {
                        group.push(w.to_vec());
                        if w == v {
                            break;
                        }
                    }
                    if group.len() > 1 {
                        group.sort();
                        self.circles.push(group);
                    }
                }
            }
        }
        let mut walk =
            Walk { house: self, index: BTreeMap::new(), low: BTreeMap::new(), stack: Vec::new(), circles: Vec::new() };
        for module in self.modules.keys() {
            if !walk.index.contains_key(module.as_slice()) {
                walk.visit(module);
            }
        }
        walk.circles
    }
}

fn lib_floors() -> BTreeMap<String, Floor> {
    floors(&std::fs::read_to_string(Path::new(SRC).join("lib.rs")).unwrap())
}

#[test]
fn every_module_has_a_floor() {
    let floors = lib_floors();
    assert!(floors.len() >= 10, "src/lib.rs lists too few modules on its floors: {floors:?}");
    let house = House::read();
    let top: BTreeSet<&String> = house.modules.keys().map(|m| &m[0]).collect();
    let missing: Vec<&&String> = top.iter().filter(|m| !floors.contains_key(m.as_str())).collect();
    assert!(missing.is_empty(), "modules on no floor of src/lib.rs: {missing:?}");
    let unknown: Vec<&String> = floors.keys().filter(|m| !top.contains(m)).collect();
    assert!(unknown.is_empty(), "src/lib.rs names modules that do not exist: {unknown:?}");
}

#[test]
fn no_import_points_up() {
    let floors = lib_floors();
    let house = House::read();
    let mut up = Vec::new();
    for (from, targets) in &house.edges {
        for to in targets {
            let (Some(a), Some(b)) = (floors.get(&from[0]), floors.get(&to[0])) else { continue };
            if b.number > a.number {
                up.push(format!(
                    "{} (floor {} {}) imports {} (floor {} {})",
                    house.name(from),
                    a.number,
                    a.name,
                    house.name(to),
                    b.number,
                    b.name
                ));
            }
        }
    }
    assert!(up.is_empty(), "imports that point up:\n  {}", up.join("\n  "));
}

#[test]
fn no_import_circle() {
    let house = House::read();
    let circles: Vec<String> = house
        .circles()
        .iter()
        .map(|group| group.iter().map(|m| house.name(m)).collect::<Vec<_>>().join(" ↔ "))
        .collect();
    assert!(circles.is_empty(), "files that import each other in a circle:\n  {}", circles.join("\n  "));
}

#[test]
fn the_reader_sees_imports_in_every_form() {
    let code = "use crate::a::{b, c::{d, self}};\npub use super::e;\nfn f() { crate::g::h(); sub::i(); }\n";
    let mut paths = paths_in(code, &["sub"]);
    paths.sort();
    assert_eq!(paths, ["crate::a::b", "crate::a::c", "crate::a::c::d", "crate::g::h", "sub::i", "super::e"]);
    assert_eq!(
        code_of("use crate::x; // crate::y\n#[cfg(test)]\nmod tests {\n use crate::z;\n}\n"),
        "use crate::x; \n"
    );
    let floors = floors("//! 3. settings: `config` — the file\n//! 4. records: `state`, `kept`\n");
    assert_eq!(floors["kept"].number, 4);
    assert_eq!(floors["config"].name, "settings");
}
