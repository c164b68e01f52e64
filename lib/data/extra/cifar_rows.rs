//! An extra set in the CIFAR binary format, read from the host record by
//! record: opening scans the file in chunks (record count, labels, the
//! inputs' fingerprint); a batch reads its records' pixel bytes with
//! positioned reads (no mmap: touched mapped pages would count as the
//! process's memory).
use super::{byte_values, corrupt, unreadable_now, Scanned, SCAN_BYTES};
use crate::data::cifar::{record_count, record_label, unreadable, Variant, IMAGE_BYTES};
use crate::data::Fingerprint;
use crate::error::Result;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// The binary format that holds inputs of `input_shape` with `num_classes`
/// classes.
///
/// Errors: [`crate::Error::CorruptInput`] for any other data set than 32×32×3
/// images of 10 or 100 classes (they need the HDF5 layout).
pub(super) fn variant(path: &Path, input_shape: &[i64], num_classes: i64) -> Result<Variant> {
    match (input_shape, num_classes) {
        ([3, 32, 32], 10) => Ok(Variant::Cifar10),
        ([3, 32, 32], 100) => Ok(Variant::Cifar100),
        _ => Err(corrupt(
            path,
            "the CIFAR binary format holds 32×32×3 images of CIFAR-10/100; use the HDF5 layout (.h5)",
        )),
    }
}

/// An open CIFAR binary file of checked records.
pub(super) struct CifarRows {
    file: File,
    path: PathBuf,
    variant: Variant,
}

impl CifarRows {
    /// Opens `path` and checks every record, [`super::SCAN_BYTES`] at a time.
    ///
    /// Errors: [`crate::Error::MissingInput`] when the file cannot be read;
    /// [`crate::Error::CorruptInput`] for a size that is not a whole number of
    /// records or a label outside the classes (the texts of
    /// [`crate::data::cifar::read_bin`]).
    pub(super) fn open(path: &Path, variant: Variant) -> Result<Scanned<CifarRows>> {
        let file = File::open(path).map_err(|e| unreadable(path, variant, e))?;
        let len = file
            .metadata()
            .map_err(|e| unreadable(path, variant, e))?
            .len();
        let n = record_count(path, variant, len)?;
        let record = variant.record_bytes();
        let per_chunk = (SCAN_BYTES / record).max(1);
        let values = byte_values();
        let mut print = Fingerprint::new(&[n as i64, 3, 32, 32]);
        let mut labels = Vec::with_capacity(n);
        let mut bytes = Vec::new();
        let mut pixels = Vec::with_capacity(per_chunk * IMAGE_BYTES);
        for first in (0..n).step_by(per_chunk) {
            let count = per_chunk.min(n - first);
            bytes.resize(count * record, 0);
            file.read_exact_at(&mut bytes, (first * record) as u64)
                .map_err(|e| unreadable(path, variant, e))?;
            pixels.clear();
            for (k, rec) in bytes.chunks_exact(record).enumerate() {
                labels.push(record_label(path, variant, first + k, rec)?);
                pixels.extend(
                    rec[variant.label_bytes()..]
                        .iter()
                        .map(|&b| values[b as usize]),
                );
            }
            print.update(&pixels);
        }
        Ok(Scanned {
            rows: CifarRows {
                file,
                path: path.to_path_buf(),
                variant,
            },
            labels,
            inputs_print: print.finish(),
        })
    }

    /// Reads the pixel bytes (planar RGB, 3072 a record) of records `rows`
    /// (each in 0..N) into `out`, record `rows[k]` at `out[3072·k..]`.
    ///
    /// Errors: [`crate::Error::MissingInput`] when the file can no longer be read
    /// (moved, truncated) while the run trains.
    pub(super) fn read(&self, rows: &[usize], out: &mut [u8]) -> Result<()> {
        let record = self.variant.record_bytes();
        for (&row, dest) in rows.iter().zip(out.chunks_exact_mut(IMAGE_BYTES)) {
            let at = (row * record + self.variant.label_bytes()) as u64;
            self.file
                .read_exact_at(dest, at)
                .map_err(|e| unreadable_now(&self.path, format!("reading record {row}: {e}")))?;
        }
        Ok(())
    }
}
