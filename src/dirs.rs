//! Listing directories, the one way every part of dkms-hook does it: names that are not UTF-8 are
//! left out (dkms-hook acts only on names it can validate), a directory that does not exist lists
//! as empty (a fresh system has no dkms tree yet), any other error names the directory, and names
//! come sorted so that every listing, plan and report is deterministic.

use std::path::Path;

use anyhow::{Context, Result};

/// The names in `dir`, sorted.
pub fn names(dir: &Path) -> Result<Vec<String>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("failed to list {}", dir.display())),
    };
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry.with_context(|| format!("failed to list {}", dir.display()))?;
        if let Ok(name) = entry.file_name().into_string() {
            names.push(name);
        }
    }
    names.sort();
    Ok(names)
}

/// The names in `dir` that are directories themselves (a symlink to one is not), sorted.
pub fn subdirs(dir: &Path) -> Result<Vec<String>> {
    let mut names = names(dir)?;
    names.retain(|name| dir.join(name).symlink_metadata().is_ok_and(|m| m.is_dir()));
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_sorted_names_and_directories() {
        let dir = tempfile::tempdir().unwrap();
        for d in ["b", "a"] {
            std::fs::create_dir(dir.path().join(d)).unwrap();
        }
        std::fs::write(dir.path().join("c"), "").unwrap();
        std::os::unix::fs::symlink(dir.path().join("a"), dir.path().join("link")).unwrap();
        assert_eq!(names(dir.path()).unwrap(), ["a", "b", "c", "link"]);
        assert_eq!(subdirs(dir.path()).unwrap(), ["a", "b"]);
        assert!(names(&dir.path().join("missing")).unwrap().is_empty());
        let err = names(&dir.path().join("c")).unwrap_err();
        assert!(format!("{err:#}").contains("failed to list"), "{err:#}");
    }
}
