//! [`ExtraSource`]: an extra set that training reads from the host one
//! batch at a time, in its stored form (uint8, or float32), with one
//! host-to-device copy per batch.
use super::cifar_rows::{self, CifarRows};
use super::h5_rows::H5Rows;
use super::{byte_values, is_h5, missing};
use crate::data::Fingerprint;
use crate::error::{Error, Result};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};
use tch::{Device, Kind, Tensor};

/// Where the rows are read from.
enum Rows {
    Cifar(CifarRows),
    H5(H5Rows),
}

/// How one row is stored, so how a batch becomes f32 `[n, C, H, W]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Encoding {
    /// uint8 0–255, `[C, H, W]` (the CIFAR binary format).
    Planar8,
    /// uint8 0–255, `[H, W, C]` (HDF5 uint8 images).
    ChannelsLast8,
    /// f32 in [0, 1], `[C, H, W]` (HDF5 float32 images).
    Float32,
}

/// The host buffer a batch's rows are gathered in (reused batch after
/// batch) and the byte-to-pixel table on the device last used.
#[derive(Default)]
struct Stage {
    bytes: Vec<u8>,
    values: Option<Tensor>,
}

/// An opened and checked extra set (`--extra-data`): its labels in memory
/// (8 bytes a sample), its images in the file, read per batch.
pub struct ExtraSource {
    path: PathBuf,
    rows: Rows,
    encoding: Encoding,
    /// Shape of one stored row: `[C, H, W]`, or `[H, W, C]` for uint8 HDF5.
    row_shape: Vec<i64>,
    labels: Vec<i64>,
    inputs_print: String,
    labels_print: String,
    stage: Mutex<Stage>,
}

impl std::fmt::Debug for ExtraSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExtraSource")
            .field("path", &self.path)
            .field("len", &self.labels.len())
            .field("encoding", &self.encoding)
            .field("row_shape", &self.row_shape)
            .finish()
    }
}

impl ExtraSource {
    /// Opens the extra set at `path` for inputs of `input_shape`
    /// (`[C, H, W]`) and `num_classes` classes, checking all of it chunk by
    /// chunk (host memory bounded by a chunk plus the labels): the checks
    /// and error texts of [`super::read_extra`], and the same fingerprints.
    ///
    /// Errors: [`Error::MissingInput`] when the file cannot be read;
    /// [`Error::CorruptInput`] for a wrong layout, shape, pixel range or
    /// label.
    pub fn open(path: &Path, input_shape: &[i64], num_classes: i64) -> Result<ExtraSource> {
        if !path.is_file() {
            return Err(missing(path));
        }
        let (scanned, encoding, row_shape) = if is_h5(path) {
            let s = H5Rows::open(path, input_shape, num_classes)?;
            let encoding = match s.rows.uint8() {
                true => Encoding::ChannelsLast8,
                false => Encoding::Float32,
            };
            let shape = s.rows.row_dims().iter().map(|&d| d as i64).collect();
            (s.map_rows(Rows::H5), encoding, shape)
        } else {
            let variant = cifar_rows::variant(path, input_shape, num_classes)?;
            let s = CifarRows::open(path, variant)?.map_rows(Rows::Cifar);
            (s, Encoding::Planar8, vec![3, 32, 32])
        };
        let mut labels_print = Fingerprint::new(&[scanned.labels.len() as i64]);
        for part in scanned.labels.chunks(1 << 16) {
            labels_print.update(&part.iter().map(|&y| y as f32).collect::<Vec<_>>());
        }
        Ok(ExtraSource {
            path: path.to_path_buf(),
            rows: scanned.rows,
            encoding,
            row_shape,
            labels: scanned.labels,
            inputs_print: scanned.inputs_print,
            labels_print: labels_print.finish(),
            stage: Mutex::default(),
        })
    }

    /// Samples N.
    pub fn len(&self) -> i64 {
        self.labels.len() as i64
    }

    /// Whether there is no sample (never, once opened).
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// The labels `[N]`, in 0..K.
    pub fn labels(&self) -> &[i64] {
        &self.labels
    }

    /// Fingerprint of the images as f32 `[N, C, H, W]` in [0, 1]
    /// ([`crate::data::fingerprint`] of [`super::read_extra`]'s images).
    pub fn fingerprint(&self) -> &str {
        &self.inputs_print
    }

    /// Fingerprint of the labels ([`crate::data::fingerprint`] of `[N]`).
    pub fn labels_fingerprint(&self) -> &str {
        &self.labels_print
    }

    /// Bytes of one stored row.
    fn row_bytes(&self) -> usize {
        let elem = match self.encoding {
            Encoding::Float32 => 4,
            _ => 1,
        };
        elem * self.row_shape.iter().product::<i64>() as usize
    }

    /// Samples `idx` (each in 0..N, repeats allowed) on `device`: images
    /// f32 `[n, C, H, W]` in [0, 1], bit for bit those of
    /// [`super::read_extra`], and labels int64 `[n]`. The rows are read
    /// into one reused host buffer in their stored form, made one tensor
    /// (pinned when `device` is CUDA), copied to `device` in one transfer
    /// (non-blocking when pinned) and converted to f32 there.
    ///
    /// Errors: [`Error::MissingInput`] when the file can no longer be read;
    /// [`Error::Invariant`] for an index outside 0..N; [`Error::Torch`].
    pub fn batch(&self, idx: &[i64], device: Device) -> Result<(Tensor, Tensor)> {
        let n = self.labels.len();
        let rows: Vec<usize> = idx
            .iter()
            .map(|&i| {
                usize::try_from(i)
                    .ok()
                    .filter(|&r| r < n)
                    .ok_or_else(|| Error::Invariant {
                        what: "an --extra-data batch".into(),
                        reason: format!("sample index {i} outside 0..{n}"),
                    })
            })
            .collect::<Result<_>>()?;
        let labels: Vec<i64> = rows.iter().map(|&r| self.labels[r]).collect();
        let mut stage = self.stage.lock().unwrap_or_else(PoisonError::into_inner);
        stage.bytes.resize(rows.len() * self.row_bytes(), 0);
        match &self.rows {
            Rows::Cifar(r) => r.read(&rows, &mut stage.bytes)?,
            Rows::H5(r) => r.read(&rows, &mut stage.bytes)?,
        }
        let mut shape = vec![rows.len() as i64];
        shape.extend_from_slice(&self.row_shape);
        let kind = match self.encoding {
            Encoding::Float32 => Kind::Float,
            _ => Kind::Uint8,
        };
        let host = Tensor::f_from_data_size(&stage.bytes, &shape, kind)?;
        let pinned = device.is_cuda();
        let host = match pinned {
            true => host.f_pin_memory(device)?,
            false => host,
        };
        let x = host.f_to_device_(device, kind, pinned, false)?;
        let x = match self.encoding {
            Encoding::Float32 => x,
            Encoding::Planar8 => stage.values(device)?.f_take(&x.to_kind(Kind::Int64))?,
            Encoding::ChannelsLast8 => stage
                .values(device)?
                .f_take(&x.to_kind(Kind::Int64))?
                .permute([0, 3, 1, 2])
                .contiguous(),
        };
        Ok((x, Tensor::from_slice(&labels).to_device(device)))
    }
}

impl Stage {
    /// The 256 pixel values of the bytes ([`super::byte_values`]) on
    /// `device`, copied there once.
    fn values(&mut self, device: Device) -> Result<&Tensor> {
        if self.values.as_ref().is_none_or(|t| t.device() != device) {
            self.values = Some(Tensor::from_slice(&byte_values()).f_to_device(device)?);
        }
        Ok(self.values.as_ref().expect("set above"))
    }
}
