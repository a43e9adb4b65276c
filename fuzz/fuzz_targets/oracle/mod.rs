//! The oracle the fuzz targets share, written from the spec, not from the code under test (in a
//! directory of its own, so scripts/fuzz does not take it for a target).

/// A name dkms may use (module name, version, module directory, kernel version): 1–255 bytes of
/// `A-Z a-z 0-9 . _ + ~ : @ -`, starting with a letter, digit or `_`.
pub fn plain(name: &str) -> bool {
    let b = name.as_bytes();
    !b.is_empty()
        && b.len() <= 255
        && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
        && b.iter().all(|&c| c.is_ascii_alphanumeric() || b"._+~:@-".contains(&c))
}
