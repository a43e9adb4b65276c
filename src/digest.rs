//! A content digest of a module source tree: SHA-256 over every entry below it, in name order —
//! its path relative to the tree, its kind, for files whether they are executable and their
//! bytes, for symlinks their target. Two trees have the same digest exactly when dkms would build
//! the same thing from them, so a package release that changes nothing in the sources (a
//! packaging fix) is recognised and its modules are not rebuilt.

use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use anyhow::{Context, Result};
use sha2::{Digest, Sha256};

/// The digest of the tree at `dir`, as lowercase hex.
pub fn of_tree(dir: &Path) -> Result<String> {
    let mut hasher = Sha256::new();
    add(&mut hasher, dir, "").with_context(|| format!("failed to read {}", dir.display()))?;
    Ok(hex(&hasher.finalize()))
}

/// The digest of the file at `path`, as lowercase hex.
pub fn of_file(path: &Path) -> Result<String> {
    let bytes = std::fs::read(path).with_context(|| format!("failed to read {}", path.display()))?;
    Ok(hex(&Sha256::digest(&bytes)))
}

/// A digest as lowercase hex.
fn hex(digest: &[u8]) -> String {
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// Adds the entries below `dir` (named `rel` relative to the tree's top).
fn add(hasher: &mut Sha256, dir: &Path, rel: &str) -> std::io::Result<()> {
    let names = crate::dirs::names(dir).map_err(std::io::Error::other)?;
    for name in names {
        let path = dir.join(&name);
        let rel = if rel.is_empty() { name } else { format!("{rel}/{name}") };
        let meta = path.symlink_metadata()?;
        // Each record: kind, path, NUL, then what the kind needs, so no two trees collide by
        // moving bytes between records.
        if meta.file_type().is_symlink() {
            let target = std::fs::read_link(&path)?;
            hasher.update(format!("l{rel}\0{}\0", target.display()).as_bytes());
        } else if meta.is_dir() {
            hasher.update(format!("d{rel}\0").as_bytes());
            add(hasher, &path, &rel)?;
        } else if meta.is_file() {
            let exec = if meta.permissions().mode() & 0o111 != 0 { "x" } else { "-" };
            hasher.update(format!("f{rel}\0{exec}{}\0", meta.len()).as_bytes());
            let mut file = std::fs::File::open(&path)?;
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                let n = file.read(&mut buf)?;
                if n == 0 {
                    break;
                }
                hasher.update(&buf[..n]);
            }
        } else {
            hasher.update(format!("o{rel}\0").as_bytes());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_trees_have_equal_digests_and_any_change_shows() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        for dir in [a.path(), b.path()] {
            std::fs::create_dir(dir.join("src")).unwrap();
            std::fs::write(dir.join("dkms.conf"), "PACKAGE_NAME=x\n").unwrap();
            std::fs::write(dir.join("src/x.c"), "int x;\n").unwrap();
            std::os::unix::fs::symlink("src/x.c", dir.join("link")).unwrap();
        }
        let same = of_tree(a.path()).unwrap();
        assert_eq!(same, of_tree(b.path()).unwrap());
        assert_eq!(same.len(), 64);
        // Content, a name, the executable bit, a link target: each changes the digest.
        std::fs::write(b.path().join("src/x.c"), "int y;\n").unwrap();
        let content = of_tree(b.path()).unwrap();
        assert_ne!(same, content);
        std::fs::write(b.path().join("src/x.c"), "int x;\n").unwrap();
        assert_eq!(same, of_tree(b.path()).unwrap());
        std::fs::set_permissions(b.path().join("src/x.c"), std::fs::Permissions::from_mode(0o755)).unwrap();
        assert_ne!(same, of_tree(b.path()).unwrap());
        std::fs::set_permissions(b.path().join("src/x.c"), std::fs::Permissions::from_mode(0o644)).unwrap();
        std::fs::remove_file(b.path().join("link")).unwrap();
        std::os::unix::fs::symlink("dkms.conf", b.path().join("link")).unwrap();
        assert_ne!(same, of_tree(b.path()).unwrap());
        // Bytes moved from one file to the next are a different tree.
        let c = tempfile::tempdir().unwrap();
        std::fs::write(c.path().join("a"), "12").unwrap();
        std::fs::write(c.path().join("b"), "3").unwrap();
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("a"), "1").unwrap();
        std::fs::write(d.path().join("b"), "23").unwrap();
        assert_ne!(of_tree(c.path()).unwrap(), of_tree(d.path()).unwrap());
    }
}
