//! The IDX format of the official MNIST files (LeCun et al.): a 4-byte magic
//! number `0x00 0x00 0x08 D` (unsigned bytes, D dimensions), D big-endian
//! u32 sizes, then the values row-major. Images are `idx3` (count, rows,
//! columns), labels `idx1` (count). Files ending in `.gz` are
//! gzip-decompressed first.
use crate::error::{Error, Result};
use crate::fsutil::write_bytes_atomically;
use flate2::read::GzDecoder;
use std::io::Read;
use std::path::Path;

/// Magic number of an IDX file of unsigned bytes with three dimensions.
pub const IMAGES_MAGIC: u32 = 0x0000_0803;
/// Magic number of an IDX file of unsigned bytes with one dimension.
pub const LABELS_MAGIC: u32 = 0x0000_0801;

/// The images of one IDX file: `count × rows × columns` bytes, row-major,
/// 0 = background.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdxImages {
    pub count: usize,
    pub rows: usize,
    pub columns: usize,
    pub pixels: Vec<u8>,
}

fn corrupt(path: &Path, reason: String, fix: &str) -> Error {
    Error::CorruptInput {
        path: path.to_path_buf(),
        reason,
        fix: fix.to_string(),
    }
}

/// The bytes of `path`, decompressed when its name ends in `.gz`.
fn read_bytes(path: &Path, fix: &str) -> Result<Vec<u8>> {
    let raw = std::fs::read(path).map_err(|e| Error::MissingInput {
        path: path.to_path_buf(),
        reason: e.to_string(),
        fix: fix.to_string(),
    })?;
    if path.extension().is_some_and(|e| e == "gz") {
        let mut out = Vec::new();
        GzDecoder::new(raw.as_slice())
            .read_to_end(&mut out)
            .map_err(|e| corrupt(path, format!("not a readable gzip file ({e})"), fix))?;
        Ok(out)
    } else {
        Ok(raw)
    }
}

/// Checks the magic number (its last byte is the number of dimensions) and
/// the length of an IDX file; returns its sizes and its values.
fn parse<'a>(
    bytes: &'a [u8],
    path: &Path,
    magic: u32,
    what: &str,
    fix: &str,
) -> Result<(Vec<usize>, &'a [u8])> {
    let dims = (magic & 0xff) as usize;
    let header = 4 + 4 * dims;
    let word = |i: usize| u32::from_be_bytes([bytes[i], bytes[i + 1], bytes[i + 2], bytes[i + 3]]);
    if bytes.len() >= 4 && word(0) != magic {
        return Err(corrupt(
            path,
            format!(
                "wrong magic number 0x{:08x}, expected 0x{magic:08x} \
                 (IDX {what}: unsigned bytes, {dims} dimension(s))",
                word(0)
            ),
            fix,
        ));
    }
    if bytes.len() < header {
        return Err(corrupt(
            path,
            format!(
                "{} bytes is shorter than the {header}-byte header of an IDX {what} file (truncated)",
                bytes.len()
            ),
            fix,
        ));
    }
    let sizes: Vec<usize> = (0..dims).map(|k| word(4 + 4 * k) as usize).collect();
    let expected = header + sizes.iter().product::<usize>();
    if bytes.len() != expected {
        let shape: Vec<String> = sizes.iter().map(|s| s.to_string()).collect();
        return Err(corrupt(
            path,
            format!(
                "{} bytes, but its header ({}) promises {expected} ({})",
                bytes.len(),
                shape.join(" × "),
                if bytes.len() < expected {
                    "truncated"
                } else {
                    "trailing bytes"
                }
            ),
            fix,
        ));
    }
    Ok((sizes, &bytes[header..]))
}

/// Reads an IDX image file (`.gz` or plain).
///
/// Errors, each naming the file and `fix`: [`Error::MissingInput`] when it
/// cannot be read; [`Error::CorruptInput`] for a wrong magic number (not
/// 0x00000803), a file shorter or longer than its header promises, or bad
/// gzip data.
pub fn read_images(path: &Path, fix: &str) -> Result<IdxImages> {
    let bytes = read_bytes(path, fix)?;
    let (sizes, values) = parse(&bytes, path, IMAGES_MAGIC, "images", fix)?;
    Ok(IdxImages {
        count: sizes[0],
        rows: sizes[1],
        columns: sizes[2],
        pixels: values.to_vec(),
    })
}

/// Reads an IDX label file (`.gz` or plain): one byte per image.
///
/// Errors: as [`read_images`], with magic number 0x00000801.
pub fn read_labels(path: &Path, fix: &str) -> Result<Vec<u8>> {
    let bytes = read_bytes(path, fix)?;
    let (_, values) = parse(&bytes, path, LABELS_MAGIC, "labels", fix)?;
    Ok(values.to_vec())
}

fn encode(magic: u32, sizes: &[usize], values: &[u8], gz: bool) -> Result<Vec<u8>> {
    let mut out = magic.to_be_bytes().to_vec();
    for &s in sizes {
        let s = u32::try_from(s).map_err(|_| Error::invalid("IDX size", s, "must fit in u32"))?;
        out.extend_from_slice(&s.to_be_bytes());
    }
    out.extend_from_slice(values);
    if !gz {
        return Ok(out);
    }
    use std::io::Write;
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(&out)
        .and_then(|_| enc.finish())
        .map_err(|e| Error::invalid("IDX data", e, "gzip compression failed"))
}

fn is_gz(path: &Path) -> bool {
    path.extension().is_some_and(|e| e == "gz")
}

/// Writes `images` as an IDX image file (gzip-compressed when `path` ends
/// in `.gz`), atomically. For synthetic MNIST-format data in tests.
///
/// Errors: [`Error::InvalidArgument`] when the pixel count is not
/// `count × rows × columns`; I/O errors naming the file.
pub fn write_images(path: &Path, images: &IdxImages) -> Result<()> {
    let sizes = [images.count, images.rows, images.columns];
    if images.pixels.len() != sizes.iter().product::<usize>() {
        return Err(Error::invalid(
            "images",
            images.pixels.len(),
            "expected count × rows × columns pixel bytes",
        ));
    }
    let bytes = encode(IMAGES_MAGIC, &sizes, &images.pixels, is_gz(path))?;
    write_bytes_atomically(path, &bytes)
}

/// Writes `labels` as an IDX label file (gzip-compressed when `path` ends
/// in `.gz`), atomically.
pub fn write_labels(path: &Path, labels: &[u8]) -> Result<()> {
    let bytes = encode(LABELS_MAGIC, &[labels.len()], labels, is_gz(path))?;
    write_bytes_atomically(path, &bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIX: &str = "place the files in --data-dir";

    fn sample(count: usize) -> IdxImages {
        let pixels = (0..count * 28 * 28).map(|i| (i * 7 % 256) as u8).collect();
        IdxImages {
            count,
            rows: 28,
            columns: 28,
            pixels,
        }
    }

    #[test]
    fn reader_returns_exactly_the_written_bytes_plain_and_gz() {
        let dir = tempfile::tempdir().unwrap();
        for name in ["images-idx3-ubyte", "images-idx3-ubyte.gz"] {
            let path = dir.path().join(name);
            let images = sample(5);
            write_images(&path, &images).unwrap();
            assert_eq!(read_images(&path, FIX).unwrap(), images, "{name}");
            let labels = [3u8, 0, 9, 1, 7];
            let lpath = dir.path().join(name.replace("images-idx3", "labels-idx1"));
            write_labels(&lpath, &labels).unwrap();
            assert_eq!(read_labels(&lpath, FIX).unwrap(), labels);
        }
        // The plain file is byte for byte the format: magic, sizes, pixels.
        let bytes = std::fs::read(dir.path().join("images-idx3-ubyte")).unwrap();
        assert_eq!(
            &bytes[..16],
            &[0, 0, 8, 3, 0, 0, 0, 5, 0, 0, 0, 28, 0, 0, 0, 28]
        );
        assert_eq!(bytes.len(), 16 + 5 * 784);
        let labels = std::fs::read(dir.path().join("labels-idx1-ubyte")).unwrap();
        assert_eq!(labels, [0, 0, 8, 1, 0, 0, 0, 5, 3, 0, 9, 1, 7]);
    }

    #[test]
    fn truncated_file_wrong_magic_and_trailing_bytes_are_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("train-images-idx3-ubyte");
        write_images(&path, &sample(3)).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() - 10]).unwrap();
        let err = read_images(&path, FIX).unwrap_err().to_string();
        for part in ["train-images-idx3-ubyte", "truncated", "3 × 28 × 28", FIX] {
            assert!(err.contains(part), "{part} missing: {err}");
        }
        std::fs::write(&path, &bytes[..9]).unwrap();
        let err = read_images(&path, FIX).unwrap_err().to_string();
        assert!(
            err.contains("16-byte header") && err.contains("truncated"),
            "{err}"
        );
        let mut longer = bytes.clone();
        longer.push(0);
        std::fs::write(&path, &longer).unwrap();
        let err = read_images(&path, FIX).unwrap_err().to_string();
        assert!(err.contains("trailing bytes"), "{err}");
        // A label file where images are expected: the magic number says so.
        let labels = dir.path().join("t10k-labels-idx1-ubyte");
        write_labels(&labels, &[1, 2, 3]).unwrap();
        let err = read_images(&labels, FIX).unwrap_err().to_string();
        for part in [
            "t10k-labels-idx1-ubyte",
            "wrong magic number 0x00000801",
            "0x00000803",
            FIX,
        ] {
            assert!(err.contains(part), "{part} missing: {err}");
        }
        let err = read_labels(&path, FIX).unwrap_err().to_string();
        assert!(err.contains("wrong magic number 0x00000803"), "{err}");
        // A .gz name over bytes that are not gzip.
        let gz = dir.path().join("train-labels-idx1-ubyte.gz");
        std::fs::write(&gz, b"not gzip").unwrap();
        let err = read_labels(&gz, FIX).unwrap_err().to_string();
        assert!(
            err.contains("gzip") && err.contains("train-labels-idx1-ubyte.gz"),
            "{err}"
        );
        let err = read_labels(&dir.path().join("absent"), FIX)
            .unwrap_err()
            .to_string();
        assert!(err.contains("absent") && err.contains(FIX), "{err}");
    }
}
