//! The boot image generators a system has: which of mkinitcpio, dracut and booster the local
//! pacman database says are installed, and mkinitcpio's presets on disk. Nothing is guessed from
//! programs lying around: a generator counts only when its package is installed.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Cursor, Read};
use std::path::Path;

use anyhow::{bail, Context, Result};

use alpm::Alpm;

use crate::domain::Layout;

/// A boot image generator, by its Arch package.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Generator {
    Mkinitcpio,
    Dracut,
    Booster,
}

impl Generator {
    /// Every generator, in the order one is chosen when several are installed.
    pub const ALL: [Generator; 3] = [Generator::Mkinitcpio, Generator::Dracut, Generator::Booster];

    /// Its package, and the program it runs.
    pub fn name(self) -> &'static str {
        match self {
            Generator::Mkinitcpio => "mkinitcpio",
            Generator::Dracut => "dracut",
            Generator::Booster => "booster",
        }
    }
}

/// What the system has to make boot images with.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Boot {
    /// The installed generators, in [`Generator::ALL`]'s order.
    pub generators: Vec<Generator>,
    /// mkinitcpio's presets (`/etc/mkinitcpio.d/NAME.preset`), by name, with the image their
    /// `default_image` names.
    pub presets: BTreeMap<String, Option<String>>,
    /// The module names mkinitcpio's `MODULES=(…)` (`/etc/mkinitcpio.conf`) puts in every image.
    pub modules: BTreeSet<String>,
}

/// Reads the generators from the local database (`handle`) and the presets below `layout`'s root.
pub fn read(layout: &Layout, handle: &Alpm) -> Boot {
    let generators: Vec<Generator> =
        Generator::ALL.into_iter().filter(|g| handle.localdb().pkg(g.name()).is_ok()).collect();
    let mut presets = BTreeMap::new();
    let mut modules = BTreeSet::new();
    if generators.contains(&Generator::Mkinitcpio) {
        let dir = layout.on_root(Path::new("/etc/mkinitcpio.d"));
        for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if let Some(preset) = name.strip_suffix(".preset") {
                let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
                presets.insert(preset.to_owned(), shell_value(&text, "default_image"));
            }
        }
        let conf = std::fs::read_to_string(layout.on_root(Path::new("/etc/mkinitcpio.conf"))).unwrap_or_default();
        if let Some(list) = shell_value(&conf, "MODULES") {
            modules = list
                .trim_matches(['(', ')'])
                .split_whitespace()
                .map(|m| m.trim_matches(['"', '\'']).to_owned())
                .collect();
        }
    }
    Boot { generators, presets, modules }
}

/// The value of a plain `NAME=value` line of a shell file (quotes dropped; the last one wins).
fn shell_value(text: &str, name: &str) -> Option<String> {
    let prefix = format!("{name}=");
    text.lines()
        .filter_map(|l| l.trim().strip_prefix(&prefix))
        .map(|v| v.split(" #").next().unwrap_or(v).trim().trim_matches(['"', '\'']).to_owned())
        .next_back()
}

/// A kernel's boot image, as read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageSeen {
    /// The image (on the system, not below the root).
    pub path: String,
    /// Why its modules could not be listed.
    pub error: Option<String>,
    /// The DKMS modules it holds, by file stem, with the `version=` of the copy in the image and
    /// whether that copy is the installed one (byte for byte, decompressed).
    pub held: BTreeMap<String, (Option<String>, bool)>,
}

/// Reads the boot image `image` (a path on the system) of kernel `kver` below `layout`'s root and
/// compares the DKMS modules inside with the installed files.
pub fn read_image(layout: &Layout, kver: &str, image: &str) -> ImageSeen {
    let mut seen = ImageSeen { path: image.to_owned(), ..ImageSeen::default() };
    match image_modules(&layout.on_root(Path::new(image)), kver) {
        Ok(modules) => {
            let installed = layout.kernel_dir(kver);
            let prefix = format!("usr/lib/modules/{kver}/");
            for module in modules {
                let rel = module.path.trim_start_matches(&prefix);
                let on_disk = std::fs::read(installed.join(rel)).ok().and_then(|d| module_contents(rel, d).ok());
                let same = on_disk.as_deref() == Some(module.contents.as_slice());
                let base = rel.rsplit('/').next().unwrap_or(rel);
                let stem = base.find(".ko").map_or(base, |i| &base[..i]);
                seen.held.insert(stem.to_owned(), (modinfo_version(&module.contents), same));
            }
        }
        Err(e) => seen.error = Some(format!("{e:#}")),
    }
    seen
}

/// One DKMS module file inside a boot image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageModule {
    /// Its path in the image, relative (`usr/lib/modules/K/updates/dkms/hello.ko.zst`).
    pub path: String,
    /// Its contents, decompressed when compressed (`.ko.zst`, `.ko.xz`, `.ko.gz`).
    pub contents: Vec<u8>,
}

/// The DKMS modules (`usr/lib/modules/KVER/updates/…/*.ko*`) inside the boot image `path`: one
/// cpio archive, or several concatenated (an uncompressed early one, then a compressed one, as
/// mkinitcpio writes with microcode), uncompressed or compressed with any compressor the
/// generators offer that the kernel unpacks (zstd, gzip, xz, lzma, lz4).
pub fn image_modules(path: &Path, kver: &str) -> Result<Vec<ImageModule>> {
    let data = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let prefix = format!("usr/lib/modules/{kver}/updates/");
    let mut found = Vec::new();
    let mut rest: &[u8] = &data;
    while !rest.is_empty() {
        if rest.starts_with(b"070701") {
            let used = read_cpio(rest, &prefix, &mut found)?;
            rest = &rest[used..];
            // Archives are padded with zeros between them.
            let next = rest.iter().position(|&b| b != 0).unwrap_or(rest.len());
            rest = &rest[next..];
        } else if let Some(inflated) = decompress(rest) {
            let inflated = inflated.with_context(|| format!("cannot decompress {}", path.display()))?;
            let mut inner: &[u8] = &inflated;
            while inner.starts_with(b"070701") {
                let used = read_cpio(inner, &prefix, &mut found)?;
                inner = &inner[used..];
                let next = inner.iter().position(|&b| b != 0).unwrap_or(inner.len());
                inner = &inner[next..];
            }
            break;
        } else {
            bail!(
                "{} is not a cpio image, plain or compressed as the kernel reads it: it is not checked",
                path.display()
            );
        }
    }
    Ok(found)
}

/// Reads one newc cpio archive at the start of `data`, keeping the module files below `prefix`;
/// returns how many bytes it took.
fn read_cpio(data: &[u8], prefix: &str, found: &mut Vec<ImageModule>) -> Result<usize> {
    let mut cursor = Cursor::new(data);
    loop {
        let mut reader = cpio::NewcReader::new(&mut cursor).context("damaged cpio archive")?;
        if reader.entry().is_trailer() {
            reader.finish().context("damaged cpio archive")?;
            break;
        }
        let name = reader.entry().name().trim_start_matches("./").trim_start_matches('/').to_owned();
        if name.starts_with(prefix) && name.contains(".ko") {
            let mut contents = Vec::new();
            reader.read_to_end(&mut contents).context("damaged cpio archive")?;
            let contents = module_contents(&name, contents)?;
            found.push(ImageModule { path: name, contents });
        }
        reader.finish().context("damaged cpio archive")?;
    }
    Ok(cursor.position() as usize)
}

/// Decompresses zstd data (every frame).
/// `data` decompressed, when it starts with the magic of a compressor the kernel unpacks boot
/// images with (and the generators offer): zstd, gzip, xz, lzma, lz4 (the legacy format the
/// kernel reads, and the frame format). `None`: none of these.
fn decompress(data: &[u8]) -> Option<Result<Vec<u8>>> {
    let mut out = Vec::new();
    let done = if data.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        return Some(unzstd(data));
    } else if data.starts_with(&[0x1f, 0x8b]) {
        flate2::read::MultiGzDecoder::new(data).read_to_end(&mut out).map(|_| ()).context("damaged gzip data")
    } else if data.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0]) {
        lzma_rs::xz_decompress(&mut Cursor::new(data), &mut out).context("damaged xz data")
    } else if data.starts_with(&[0x5d, 0, 0]) {
        lzma_rs::lzma_decompress(&mut Cursor::new(data), &mut out).context("damaged lzma data")
    } else if data.starts_with(&[0x04, 0x22, 0x4d, 0x18]) {
        lz4_flex::frame::FrameDecoder::new(data).read_to_end(&mut out).map(|_| ()).context("damaged lz4 data")
    } else if data.starts_with(&[0x02, 0x21, 0x4c, 0x18]) {
        unlz4_legacy(&data[4..], &mut out)
    } else {
        return None;
    };
    Some(done.map(|()| out))
}

/// lz4's legacy format (`lz4 -l`, what the kernel unpacks): after the magic, blocks of at most
/// 8 MiB, each its compressed size (4 bytes, little-endian) and the compressed block. It ends at
/// the end of the data, or where a size is not a block's (the next archive, or padding).
fn unlz4_legacy(mut data: &[u8], out: &mut Vec<u8>) -> Result<()> {
    const BLOCK: usize = 8 << 20;
    while data.len() >= 4 {
        let size = u32::from_le_bytes([data[0], data[1], data[2], data[3]]) as usize;
        if size == 0 || size > lz4_flex::block::get_maximum_output_size(BLOCK) || size > data.len() - 4 {
            break;
        }
        let block = lz4_flex::block::decompress(&data[4..4 + size], BLOCK).context("damaged lz4 data")?;
        out.extend_from_slice(&block);
        data = &data[4 + size..];
    }
    Ok(())
}

/// A module file's contents as the kernel loads them: `.ko.zst`, `.ko.xz` and `.ko.gz` (`name`)
/// decompressed.
fn module_contents(name: &str, data: Vec<u8>) -> Result<Vec<u8>> {
    match [".zst", ".xz", ".gz"].iter().any(|s| name.ends_with(s)) {
        true => decompress(&data).unwrap_or_else(|| bail!("{name} is not compressed as its name says")),
        false => Ok(data),
    }
}

pub fn unzstd(data: &[u8]) -> Result<Vec<u8>> {
    let mut decoder = ruzstd::decoding::StreamingDecoder::new(data).context("not zstd data")?;
    let mut out = Vec::new();
    decoder.read_to_end(&mut out).context("damaged zstd data")?;
    Ok(out)
}

/// The `version=` of a module's `.modinfo` (`MODULE_VERSION`), when it has one.
pub fn modinfo_version(module: &[u8]) -> Option<String> {
    let key = b"version=";
    let mut at = 0;
    while let Some(i) = module[at..].windows(key.len()).position(|w| w == key) {
        let start = at + i;
        // `srcversion=` ends the same way; `version=` starts a string of its own.
        if start == 0 || module[start - 1] == 0 {
            let value = &module[start + key.len()..];
            let end = value.iter().position(|&b| b == 0).unwrap_or(value.len());
            return Some(String::from_utf8_lossy(&value[..end]).into_owned());
        }
        at = start + 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// A newc archive of `files`, zstd-compressed when `zstd`, as a generator writes one.
    fn image(files: &[(&str, &[u8])], zstd: bool) -> Vec<u8> {
        let mut archive = Vec::new();
        for (name, contents) in files {
            let mut writer = cpio::NewcBuilder::new(name).mode(0o100644).write(&mut archive, contents.len() as u32);
            writer.write_all(contents).unwrap();
            writer.finish().unwrap();
        }
        cpio::newc::trailer(&mut archive).unwrap();
        if !zstd {
            return archive;
        }
        let mut out = Vec::new();
        let mut encoder = ruzstd::encoding::FrameCompressor::new(ruzstd::encoding::CompressionLevel::Fastest);
        encoder.set_source(archive.as_slice());
        encoder.set_drain(&mut out);
        encoder.compress();
        out
    }

    #[test]
    fn the_dkms_modules_of_an_image_built_here_are_read_back() {
        let ko: &[u8] = b"\x7fELF...\0srcversion=ABC\0version=1.1\0license=GPL\0";
        let dir = tempfile::tempdir().unwrap();
        let files: [(&str, &[u8]); 3] = [
            ("usr/lib/modules/6.1-arch/updates/dkms/hello.ko", ko),
            ("usr/lib/modules/6.1-arch/kernel/fs/ext4.ko", b"in-tree"),
            ("usr/lib/modules/6.6-lts/updates/dkms/hello.ko", b"other kernel"),
        ];
        // An early uncompressed archive, then the compressed main one, as mkinitcpio concatenates.
        let mut data = image(&[("kernel/x86/microcode/GenuineIntel.bin", b"ucode")], false);
        data.extend(image(&files, true));
        let path = dir.path().join("initramfs-linux.img");
        std::fs::write(&path, &data).unwrap();
        let modules = image_modules(&path, "6.1-arch").unwrap();
        assert_eq!(modules.len(), 1);
        assert_eq!(modules[0].path, "usr/lib/modules/6.1-arch/updates/dkms/hello.ko");
        assert_eq!(modinfo_version(&modules[0].contents).as_deref(), Some("1.1"));
        std::fs::write(&path, b"\x1f\x8b damaged gzip").unwrap();
        assert!(image_modules(&path, "6.1-arch").is_err());
        std::fs::write(&path, b"BZh9 bzip2").unwrap();
        assert!(image_modules(&path, "6.1-arch").unwrap_err().to_string().contains("is not a cpio image"));
    }

    #[test]
    fn images_compressed_with_every_compressor_the_kernel_unpacks_are_read() {
        let ko: &[u8] = b"\x7fELF...\0version=2.0\0";
        let archive = image(&[("usr/lib/modules/6.1-arch/updates/dkms/hello.ko", ko)], false);
        let gzip = {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            e.write_all(&archive).unwrap();
            e.finish().unwrap()
        };
        let xz = {
            let mut out = Vec::new();
            lzma_rs::xz_compress(&mut Cursor::new(&archive), &mut out).unwrap();
            out
        };
        let lzma = {
            let mut out = Vec::new();
            lzma_rs::lzma_compress(&mut Cursor::new(&archive), &mut out).unwrap();
            out
        };
        let lz4_frame = {
            let mut e = lz4_flex::frame::FrameEncoder::new(Vec::new());
            e.write_all(&archive).unwrap();
            e.finish().unwrap()
        };
        // `lz4 -l`: the magic, then (size, block) pairs.
        let lz4_legacy = {
            let block = lz4_flex::block::compress(&archive);
            let mut out = vec![0x02, 0x21, 0x4c, 0x18];
            out.extend((block.len() as u32).to_le_bytes());
            out.extend(block);
            out
        };
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("initramfs.img");
        for (what, data) in [("gzip", gzip), ("xz", xz), ("lzma", lzma), ("lz4", lz4_frame), ("lz4 -l", lz4_legacy)] {
            std::fs::write(&path, &data).unwrap();
            let modules = image_modules(&path, "6.1-arch").unwrap_or_else(|e| panic!("{what}: {e:#}"));
            assert_eq!(modules.len(), 1, "{what}");
            assert_eq!(modinfo_version(&modules[0].contents).as_deref(), Some("2.0"), "{what}");
        }
        // A module compressed inside the image (`.ko.xz`) is read decompressed.
        let mut xz_ko = Vec::new();
        lzma_rs::xz_compress(&mut Cursor::new(ko), &mut xz_ko).unwrap();
        std::fs::write(&path, image(&[("usr/lib/modules/6.1-arch/updates/dkms/hello.ko.xz", &xz_ko)], true)).unwrap();
        assert_eq!(image_modules(&path, "6.1-arch").unwrap()[0].contents, ko);
    }

    #[test]
    fn shell_values_of_presets_and_mkinitcpio_conf() {
        let text = "PRESETS=('default')\n#default_image=\"/x\"\ndefault_image=\"/boot/initramfs-linux.img\"\n";
        assert_eq!(shell_value(text, "default_image").as_deref(), Some("/boot/initramfs-linux.img"));
        assert_eq!(shell_value("MODULES=(nvidia zfs)\n", "MODULES").as_deref(), Some("(nvidia zfs)"));
    }
}
