//! An extra set in HDF5, read from the host row by row: opening checks the
//! shapes, reads the labels and scans the images in chunks (pixel range,
//! the inputs' fingerprint); a batch reads its rows as runs of consecutive
//! rows (one hyperslab each, in sorted order) and puts them back in the
//! batch's order.
use super::{
    byte_values, check_label_count, check_label_span, check_pixels, check_shape, corrupt,
    unreadable_now, Scanned, SCAN_BYTES,
};
use crate::data::Fingerprint;
use crate::error::{Error, Result};
use hdf5::{H5Type, Hyperslab, SliceOrIndex};
use std::path::{Path, PathBuf};

/// An open HDF5 extra set of checked images and labels.
pub(super) struct H5Rows {
    /// Held so that the dataset stays open.
    _file: hdf5::File,
    images: hdf5::Dataset,
    path: PathBuf,
    /// Shape of one stored row: `[H, W, C]` (uint8) or `[C, H, W]` (f32).
    row_dims: Vec<usize>,
    /// uint8 `[N, H, W, C]` (else float32 `[N, C, H, W]`).
    uint8: bool,
}

fn h5_err<'a>(path: &'a Path, what: &'static str) -> impl Fn(hdf5::Error) -> Error + 'a {
    move |e| corrupt(path, format!("{what}: {e}"))
}

impl H5Rows {
    /// Opens `path` for inputs of `input_shape` and `num_classes` classes
    /// and checks it, [`super::SCAN_BYTES`] of images at a time.
    ///
    /// Errors: [`Error::CorruptInput`] (the texts of [`super::read_extra`])
    /// for a file HDF5 cannot read, a missing dataset, a wrong shape, a
    /// float pixel outside [0, 1] (or NaN), a label count or value that
    /// does not fit.
    pub(super) fn open(
        path: &Path,
        input_shape: &[i64],
        num_classes: i64,
    ) -> Result<Scanned<H5Rows>> {
        let file = hdf5::File::open(path).map_err(h5_err(path, "not a readable HDF5 file"))?;
        let images = file
            .dataset("images")
            .map_err(h5_err(path, "dataset `images`"))?;
        let labels = file
            .dataset("labels")
            .map_err(h5_err(path, "dataset `labels`"))?;
        let dims: Vec<i64> = images.shape().iter().map(|&d| d as i64).collect();
        let uint8 = images
            .dtype()
            .map_err(h5_err(path, "dataset `images`"))?
            .size()
            == 1;
        if uint8 && dims.len() != 4 {
            return Err(corrupt(
                path,
                format!("uint8 images have shape {dims:?}, not [N, H, W, C]"),
            ));
        }
        // The shape the model sees: [N, C, H, W].
        let shape = match uint8 {
            true => vec![dims[0], dims[3], dims[1], dims[2]],
            false => dims.clone(),
        };
        check_shape(path, &shape, input_shape)?;
        let labels: Vec<i64> = labels
            .read_raw()
            .map_err(h5_err(path, "dataset `labels`"))?;
        check_label_count(path, labels.len() as i64, &shape)?;
        let rows = H5Rows {
            _file: file,
            images,
            path: path.to_path_buf(),
            row_dims: dims[1..].iter().map(|&d| d as usize).collect(),
            uint8,
        };
        let (span, inputs_print) = rows.scan(&shape)?;
        if let Some((lo, hi)) = span {
            check_pixels(path, lo, hi)?;
        }
        let ymin = labels.iter().copied().min().unwrap_or(0);
        let ymax = labels.iter().copied().max().unwrap_or(0);
        check_label_span(path, ymin, ymax, num_classes)?;
        Ok(Scanned {
            rows,
            labels,
            inputs_print,
        })
    }

    /// Elements of one row.
    fn row_len(&self) -> usize {
        self.row_dims.iter().product()
    }

    /// Bytes of one row as stored (1 or 4 a pixel).
    pub(super) fn row_bytes(&self) -> usize {
        self.row_len() * if self.uint8 { 1 } else { 4 }
    }

    /// Whether the images are uint8 `[N, H, W, C]` (else f32 `[N, C, H, W]`).
    pub(super) fn uint8(&self) -> bool {
        self.uint8
    }

    /// Shape of one stored row: `[H, W, C]` (uint8) or `[C, H, W]` (f32).
    pub(super) fn row_dims(&self) -> &[usize] {
        &self.row_dims
    }

    /// The images' span over all of them (f32 only; NaN when a pixel is
    /// NaN) and their fingerprint as f32 `shape` (`[N, C, H, W]`).
    fn scan(&self, shape: &[i64]) -> Result<(Option<(f64, f64)>, String)> {
        let n = shape[0] as usize;
        let per_chunk = (SCAN_BYTES / self.row_bytes().max(1)).max(1);
        let values = byte_values();
        let mut print = Fingerprint::new(shape);
        let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
        let mut planar = Vec::new();
        let err = h5_err(&self.path, "dataset `images`");
        for first in (0..n).step_by(per_chunk) {
            let count = per_chunk.min(n - first);
            if self.uint8 {
                let bytes: Vec<u8> = self.read_range(first, count).map_err(&err)?;
                let channels = self.row_dims[2];
                planar.clear();
                for row in bytes.chunks_exact(self.row_len()) {
                    for c in 0..channels {
                        let plane = row.iter().skip(c).step_by(channels);
                        planar.extend(plane.map(|&b| values[b as usize]));
                    }
                }
                print.update(&planar);
            } else {
                let x: Vec<f32> = self.read_range(first, count).map_err(&err)?;
                for v in x.iter().map(|&v| v as f64) {
                    let nan = v.is_nan() || lo.is_nan();
                    (lo, hi) = match nan {
                        true => (f64::NAN, f64::NAN),
                        false => (lo.min(v), hi.max(v)),
                    };
                }
                print.update(&x);
            }
        }
        Ok(((!self.uint8).then_some((lo, hi)), print.finish()))
    }

    /// Rows `first..first + count` in row-major order.
    fn read_range<T: H5Type>(&self, first: usize, count: usize) -> hdf5::Result<Vec<T>> {
        let mut slices = vec![SliceOrIndex::from(first..first + count)];
        slices.extend(self.row_dims.iter().map(|_| SliceOrIndex::from(..)));
        let rows: ndarray::ArrayD<T> = self.images.read_slice(Hyperslab::from(slices))?;
        Ok(rows.into_raw_vec_and_offset().0)
    }

    /// Rows `first..first + count` as stored bytes (f32 in native order).
    fn read_bytes(&self, first: usize, count: usize) -> hdf5::Result<Vec<u8>> {
        match self.uint8 {
            true => self.read_range(first, count),
            false => Ok(self
                .read_range::<f32>(first, count)?
                .iter()
                .flat_map(|v| v.to_ne_bytes())
                .collect()),
        }
    }

    /// Reads rows `rows` (each in 0..N, repeats allowed) into `out`, row
    /// `rows[k]` at `out[row_bytes·k..]`: sorted, runs of consecutive rows
    /// in one read each.
    ///
    /// Errors: [`Error::MissingInput`] when the file can no longer be read
    /// while the run trains.
    pub(super) fn read(&self, rows: &[usize], out: &mut [u8]) -> Result<()> {
        let size = self.row_bytes();
        let mut order: Vec<(usize, usize)> = rows.iter().copied().zip(0..).collect();
        order.sort_unstable();
        let mut start = 0;
        while start < order.len() {
            let mut end = start + 1;
            while end < order.len() && order[end].0 <= order[end - 1].0 + 1 {
                end += 1;
            }
            let (first, last) = (order[start].0, order[end - 1].0);
            let bytes = self.read_bytes(first, last + 1 - first).map_err(|e| {
                unreadable_now(&self.path, format!("reading rows {first}..={last}: {e}"))
            })?;
            for &(row, slot) in &order[start..end] {
                let from = (row - first) * size;
                out[slot * size..][..size].copy_from_slice(&bytes[from..][..size]);
            }
            start = end;
        }
        Ok(())
    }
}
