//! Kept copies of module sources. Before a transaction replaces or deletes the sources of a
//! module that stays packaged (`/usr/src/NAME-VERSION`), dkms-hook keeps a copy of them under
//! `ROOT/var/lib/dkms-hook/kept/DIGEST/` (the digest of the tree, see `inventory::digest`), and
//! points dkms's `NAME/VERSION/source` link at it: the build that is installed keeps working, and
//! dkms can still remove it later, because dkms reads the module's dkms.conf (and any post-remove
//! script) through that link. Without it, `dkms remove` dies with "Could not locate dkms.conf"
//! once pacman deleted the sources.
//!
//! A copy is made of hard links where the file system allows it (instant, no space; pacman
//! replaces files by unlinking them, so the kept inode never changes), of real copies otherwise.
//! It is written under a temporary name and renamed into place, so a copy is complete or absent.
//! A copy is dropped once nothing needs it: no `source` link points at it and no installed build
//! was made from it while the packaged sources of its module version differ ([`unneeded`]).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::domain::Layout;

/// Where kept copies live: `ROOT/var/lib/dkms-hook/kept`.
pub fn root(layout: &Layout) -> PathBuf {
    layout.own_dir().join("kept")
}

/// The kept copy of the sources with `digest`.
pub fn path(layout: &Layout, digest: &str) -> PathBuf {
    root(layout).join(digest)
}

/// The digest of the kept copy a `source` link target points at, if it points at one.
pub fn digest_of(layout: &Layout, target: &Path) -> Option<String> {
    let rest = target.strip_prefix(root(layout)).ok()?;
    let digest = rest.to_str()?;
    (digest.len() == 64 && digest.bytes().all(|b| b.is_ascii_hexdigit())).then(|| digest.to_owned())
}

/// Keeps a copy of the tree `source` (whose digest is `digest`); returns where it is. Keeping
/// what is kept already does nothing.
pub fn keep(layout: &Layout, source: &Path, digest: &str) -> Result<PathBuf> {
    let dest = path(layout, digest);
    if dest.is_dir() {
        return Ok(dest);
    }
    let tmp = root(layout).join(format!(".{digest}.{}.tmp", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).with_context(|| format!("failed to create {}", tmp.display()))?;
    let copied = copy_tree(source, &tmp).and_then(|()| std::fs::rename(&tmp, &dest).map_err(Into::into));
    if copied.is_err() {
        let _ = std::fs::remove_dir_all(&tmp);
    }
    copied.with_context(|| format!("failed to keep a copy of {} in {}", source.display(), dest.display()))?;
    Ok(dest)
}

/// Copies the contents of `from` into the existing directory `to`: hard links for files where
/// possible, symlinks as they are, directories with their modes.
fn copy_tree(from: &Path, to: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    for name in crate::dirs::names(from)? {
        let (src, dst) = (from.join(&name), to.join(&name));
        let meta = src.symlink_metadata()?;
        if meta.file_type().is_symlink() {
            std::os::unix::fs::symlink(std::fs::read_link(&src)?, &dst)?;
        } else if meta.is_dir() {
            std::fs::create_dir(&dst)?;
            copy_tree(&src, &dst)?;
            std::fs::set_permissions(&dst, std::fs::Permissions::from_mode(meta.permissions().mode()))?;
        } else if meta.is_file() && std::fs::hard_link(&src, &dst).is_err() {
            std::fs::copy(&src, &dst)?;
        }
    }
    Ok(())
}

/// The kept copies there are, by digest (temporaries of an interrupted copy left out).
pub fn existing(layout: &Layout) -> Vec<String> {
    crate::dirs::names(&root(layout))
        .unwrap_or_default()
        .into_iter()
        .filter(|name| digest_of(layout, &root(layout).join(name)).is_some())
        .collect()
}

/// Removes what an interrupted run left half-copied (call with the lock held).
pub fn remove_temporaries(layout: &Layout) {
    for name in crate::dirs::names(&root(layout)).unwrap_or_default() {
        if name.starts_with('.') && name.ends_with(".tmp") {
            let _ = std::fs::remove_dir_all(root(layout).join(name));
        }
    }
}

/// Drops a kept copy (and the directory of kept copies once it is empty).
pub fn drop(layout: &Layout, digest: &str) {
    let dir = path(layout, digest);
    if let Err(e) = std::fs::remove_dir_all(&dir) {
        log::warn!("failed to remove the kept sources {}: {e}", dir.display());
    }
    let _ = std::fs::remove_dir(root(layout));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_a_complete_copy_once() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::new(dir.path(), None);
        let src = dir.path().join("usr/src/hello-1.0");
        std::fs::create_dir_all(src.join("sub")).unwrap();
        std::fs::write(src.join("dkms.conf"), "PACKAGE_NAME=hello\n").unwrap();
        std::fs::write(src.join("sub/x.c"), "int x;\n").unwrap();
        std::os::unix::fs::symlink("sub/x.c", src.join("link")).unwrap();
        let digest = crate::digest::of_tree(&src).unwrap();
        let kept = keep(&layout, &src, &digest).unwrap();
        assert_eq!(kept, path(&layout, &digest));
        assert_eq!(crate::digest::of_tree(&kept).unwrap(), digest);
        assert_eq!(digest_of(&layout, &kept).as_deref(), Some(digest.as_str()));
        assert_eq!(digest_of(&layout, &src), None);
        // The sources going away (pacman unlinks them) leave the copy whole.
        std::fs::remove_dir_all(&src).unwrap();
        assert_eq!(std::fs::read_to_string(kept.join("sub/x.c")).unwrap(), "int x;\n");
        assert_eq!(keep(&layout, &src, &digest).unwrap(), kept);
        assert_eq!(existing(&layout), std::slice::from_ref(&digest));
        drop(&layout, &digest);
        assert!(existing(&layout).is_empty());
    }
}
