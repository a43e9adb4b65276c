//! pacman's configuration file, read as pacman 7.1 reads it (`src/common/ini.c`,
//! `src/pacman/conf.c`), for the little dkms-hook needs of it: the package caches (`CacheDir`)
//! and the order of the sync repositories (the `[name]` sections).
//!
//! The file is a list of lines: blank lines and lines starting with `#` (after trimming) are
//! skipped, `[name]` opens a section, anything else is `key = value` or a bare `key`. `Include =
//! GLOB` may stand in any section and reads each matching file in place, sharing the section (a
//! section opened inside an included file goes on after it); at most 10 levels deep, like pacman.
//! `CacheDir` counts only in `[options]`, may repeat, and each value is split on spaces
//! (`setrepeatingoption`). pacman 7.1 first resolves the whole value with `realpath`
//! (`resolve_path(value, "CacheDir")`), so `CacheDir = /a /b` stops pacman ("failed to resolve
//! path") unless a directory `/a /b` exists; earlier pacman versions took it as two caches. Split
//! the same way here, either reading holds.
//!
//! The values are paths as pacman sees them (host paths); [`PacmanConf::parse`] leaves them as
//! written and reads included files through a callback, so it needs no file system.

use std::path::{Path, PathBuf};

/// pacman's `config_max_recursion`.
const MAX_INCLUDE_DEPTH: usize = 10;

/// What dkms-hook reads of a pacman configuration.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PacmanConf {
    /// Every `CacheDir` value of `[options]`, in order, split on spaces.
    pub cache_dirs: Vec<String>,
    /// The sync repositories, in the order pacman registers them (its priority order).
    pub repos: Vec<String>,
    /// Every `IgnorePkg` value of `[options]`, split on spaces.
    pub ignore_pkgs: Vec<String>,
}

impl PacmanConf {
    /// Reads the configuration `text`; `include(glob)` gives the texts of the files an `Include`
    /// names, in pacman's (sorted glob) order.
    pub fn parse(text: &str, include: &mut dyn FnMut(&str) -> Vec<String>) -> PacmanConf {
        let mut conf = PacmanConf::default();
        let mut section = None;
        conf.read(text, include, &mut section, 0);
        conf
    }

    /// Reads the file at `path` (a path this process can open) and what it includes;
    /// `glob_path(pattern)` turns an `Include` pattern, as pacman sees it, into one this process
    /// can glob (`None`: out of reach). `None` when the file cannot be read.
    pub fn load(path: &Path, glob_path: &dyn Fn(&str) -> Option<String>) -> Option<PacmanConf> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| log::debug!("cannot read pacman's configuration {}: {e}", path.display()))
            .ok()?;
        let mut include = |pattern: &str| -> Vec<String> {
            let Some(pattern) = glob_path(pattern) else {
                log::debug!("pacman's configuration includes {pattern}, out of reach");
                return Vec::new();
            };
            let files: Vec<PathBuf> = glob::glob(&pattern).map(|paths| paths.flatten().collect()).unwrap_or_default();
            files.iter().filter_map(|f| std::fs::read_to_string(f).ok()).collect()
        };
        Some(PacmanConf::parse(&text, &mut include))
    }

    fn read(
        &mut self,
        text: &str,
        include: &mut dyn FnMut(&str) -> Vec<String>,
        section: &mut Option<String>,
        depth: usize,
    ) {
        for line in text.lines() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
                if name != "options" && !self.repos.iter().any(|r| r == name) {
                    self.repos.push(name.to_owned());
                }
                *section = Some(name.to_owned());
                continue;
            }
            let (key, value) = match line.split_once('=') {
                Some((key, value)) => (key.trim(), Some(value.trim())),
                None => (line, None),
            };
            match (key, value) {
                ("Include", Some(pattern)) if depth < MAX_INCLUDE_DEPTH => {
                    for text in include(pattern) {
                        self.read(&text, include, section, depth + 1);
                    }
                }
                ("CacheDir", Some(value)) if section.as_deref() == Some("options") => {
                    self.cache_dirs.extend(value.split(' ').filter(|v| !v.is_empty()).map(str::to_owned));
                }
                ("IgnorePkg", Some(value)) if section.as_deref() == Some("options") => {
                    self.ignore_pkgs.extend(value.split_whitespace().map(str::to_owned));
                }
                _ => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str, files: &[(&str, &str)]) -> PacmanConf {
        let mut include = |pattern: &str| -> Vec<String> {
            let pattern = glob::Pattern::new(pattern).unwrap();
            files.iter().filter(|(name, _)| pattern.matches(name)).map(|(_, text)| text.to_string()).collect()
        };
        PacmanConf::parse(text, &mut include)
    }

    #[test]
    fn every_cache_dir_of_options_in_order() {
        let conf = parse(
            "# CacheDir = /commented\n[options]\n  CacheDir   =  /a  /b\nHoldPkg = pacman\nCacheDir=/c\n\
             [core]\nCacheDir = /not-an-option\nInclude = /etc/pacman.d/mirrorlist\n[extra]\n",
            &[],
        );
        assert_eq!(conf.cache_dirs, ["/a", "/b", "/c"]);
        assert_eq!(conf.repos, ["core", "extra"]);
    }

    #[test]
    fn includes_are_read_in_place_in_any_section() {
        let conf = parse(
            "[options]\nCacheDir = /first\nInclude = /etc/pacman.d/*.conf\nCacheDir = /last\n[core]\n\
             Include = /etc/pacman.d/repo.list\n",
            &[
                ("/etc/pacman.d/10-cache.conf", "CacheDir = /included\nInclude = /etc/pacman.d/nested\n"),
                ("/etc/pacman.d/20-repo.conf", "[custom]\nServer = file:///srv/repo\n"),
                ("/etc/pacman.d/nested", "CacheDir = /nested\n"),
                ("/etc/pacman.d/repo.list", "[options]\nCacheDir = /from-a-repo-section\n"),
            ],
        );
        // The section an included file opens goes on after it: `/last` belongs to [custom].
        assert_eq!(conf.cache_dirs, ["/first", "/included", "/nested", "/from-a-repo-section"]);
        assert_eq!(conf.repos, ["custom", "core"]);
    }

    #[test]
    fn an_include_loop_ends() {
        let conf = parse("[options]\nInclude = /loop\n", &[("/loop", "CacheDir = /x\nInclude = /loop\n")]);
        assert_eq!(conf.cache_dirs.len(), MAX_INCLUDE_DEPTH);
    }

    #[test]
    fn nothing_without_options() {
        assert_eq!(parse("", &[]), PacmanConf::default());
        assert_eq!(parse("CacheDir = /no-section\nCacheDir\n[options]\nCacheDir\n", &[]), PacmanConf::default());
    }
}
