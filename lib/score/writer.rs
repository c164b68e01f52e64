//! Writing the HDF5 score file (layout: [`super::file`]) batch by batch,
//! each `/score` chunk handed to HDF5 whole.
use super::file::{lock_error, Compression, ScoreFileMeta, CHUNK_SAMPLES, FORMAT};
use crate::error::{Error, Result};
use hdf5::types::VarLenUnicode;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use tch::{Device, Kind, Tensor};

/// Maps an HDF5 write error to [`Error::FileLocked`] or
/// [`Error::OutputFailed`].
fn write_err(path: &Path) -> impl Fn(hdf5::Error) -> Error + '_ {
    move |e| {
        lock_error(path, &e).unwrap_or_else(|| Error::OutputFailed {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })
    }
}

/// (Σv, Σv²) of `values`: f32 partial sums in 16 independent lanes (so the
/// loop vectorises) over blocks of 1024 values, added up in f64 — relative
/// error ~1e-6, far below what σ̂ is used for. A block whose f32 Σv² is not
/// finite (a NaN, an Inf, or |v| > 1.8e19) is summed again in f64, so the
/// returned Σv² is finite exactly when every value is (Σv² of finite f32
/// values cannot overflow an f64).
fn moments(values: &[f32]) -> (f64, f64) {
    let (mut sum, mut sum_sq) = (0.0f64, 0.0f64);
    for block in values.chunks(LANES * 64) {
        let (s, q) = lane_sums(block);
        let block_sq: f64 = q.iter().map(|&v| f64::from(v)).sum();
        if block_sq.is_finite() {
            sum += s.iter().map(|&v| f64::from(v)).sum::<f64>();
            sum_sq += block_sq;
        } else {
            for &v in block {
                sum += f64::from(v);
                sum_sq += f64::from(v) * f64::from(v);
            }
        }
    }
    (sum, sum_sq)
}

const LANES: usize = 16;

/// Per-lane f32 (Σv, Σv²) of `block`. Kept out of line and in this shape
/// (fixed-size lanes, the remainder folded into lane 0): so written, it
/// compiles to packed SSE adds (~0.15 ns per value; the same loop inlined
/// into `moments` came out scalar, ×4 slower).
#[inline(never)]
fn lane_sums(block: &[f32]) -> ([f32; LANES], [f32; LANES]) {
    let (mut s, mut q) = ([0.0f32; LANES], [0.0f32; LANES]);
    let lanes = block.chunks_exact(LANES);
    let rest = lanes.remainder();
    for lane in lanes {
        let lane: &[f32; LANES] = lane.try_into().expect("chunks_exact");
        for i in 0..LANES {
            s[i] += lane[i];
            q[i] += lane[i] * lane[i];
        }
    }
    for &v in rest {
        s[0] += v;
        q[0] += v * v;
    }
    (s, q)
}

/// Writes a score file batch by batch.
pub struct ScoreWriter {
    path: PathBuf,
    file: hdf5::File,
    scores: hdf5::Dataset,
    n: usize,
    /// Samples accepted by `write_batch` so far.
    written: usize,
    /// Values per sample (product of the input shape).
    row: usize,
    /// Samples `written − staged .. written` waiting for their chunk to be
    /// whole: every HDF5 write is one whole chunk (or the file's last, short
    /// one), whatever the batch size, so HDF5 never patches a chunk nor
    /// filters a partial one.
    staging: Vec<f32>,
    staged: usize,
    sum: f64,
    sum_sq: f64,
}

impl ScoreWriter {
    /// Creates the file at `path` (the caller's temporary name) for `n`
    /// samples, with the metadata attributes, `/score` filtered by
    /// `compression` (deflate levels need libhdf5's zlib filter; without it
    /// the error names --compression none).
    pub fn create(
        path: &Path,
        meta: &ScoreFileMeta,
        n: usize,
        compression: Compression,
    ) -> Result<ScoreWriter> {
        let we = write_err(path);
        let file = hdf5::File::create(path).map_err(&we)?;
        let mut shape = vec![n];
        shape.extend(meta.input_shape.iter().map(|&d| d as usize));
        let mut chunk = shape.clone();
        chunk[0] = CHUNK_SAMPLES.min(n.max(1));
        // No fill values: every chunk is written whole (`finish` checks all
        // n samples came), and with the crate's default (fill at
        // allocation) HDF5 routes each chunk through its chunk cache —
        // allocate, fill, copy in, write out — instead of writing it
        // straight from our buffer.
        let mut builder = file
            .new_dataset::<f32>()
            .shape(shape.as_slice())
            .chunk(chunk.as_slice())
            .fill_time(hdf5::plist::dataset_create::FillTime::Never);
        let level = match compression {
            Compression::None => None,
            Compression::Gzip1 => Some(1),
            Compression::Gzip4 => Some(4),
        };
        if let Some(level) = level {
            if !hdf5::filters::deflate_available() {
                return Err(Error::invalid(
                    "--compression",
                    format!("gzip{level}"),
                    "this libhdf5 has no deflate filter; use --compression none",
                ));
            }
            builder = builder.shuffle().deflate(level);
        }
        let scores = builder.create("score").map_err(&we)?;
        let index: Vec<u64> = (0..n as u64).collect();
        file.new_dataset_builder()
            .with_data(&index)
            .create("index")
            .map_err(&we)?;
        let text = |name: &str, value: &str| -> Result<()> {
            let v = VarLenUnicode::from_str(value)
                .map_err(|e| Error::invalid(name, value, e.to_string()))?;
            file.new_attr::<VarLenUnicode>()
                .create(name)
                .and_then(|a| a.write_scalar(&v))
                .map_err(&we)
        };
        text("format", FORMAT)?;
        text("dataset", &meta.dataset)?;
        text("split", &meta.split)?;
        text("source", &meta.source)?;
        text("source_config", &meta.source_config)?;
        text("fingerprint", &meta.fingerprint)?;
        text("version", crate::VERSION)?;
        file.new_attr::<i64>()
            .shape([meta.input_shape.len()])
            .create("input_shape")
            .and_then(|a| a.write_raw(&meta.input_shape))
            .map_err(&we)?;
        file.new_attr::<i64>()
            .create("t")
            .and_then(|a| a.write_scalar(&meta.t.unwrap_or(-1)))
            .map_err(&we)?;
        file.new_attr::<f64>()
            .create("sigma_t")
            .and_then(|a| a.write_scalar(&meta.sigma_t.unwrap_or(f64::NAN)))
            .map_err(&we)?;
        file.new_attr::<i64>()
            .create("libtorch_threads")
            .and_then(|a| a.write_scalar(&i64::from(tch::get_num_threads())))
            .map_err(&we)?;
        let row = meta.input_shape.iter().product::<i64>() as usize;
        Ok(ScoreWriter {
            path: path.to_path_buf(),
            file,
            scores,
            n,
            written: 0,
            row,
            staging: vec![0.0; chunk[0] * row],
            staged: 0,
            sum: 0.0,
            sum_sq: 0.0,
        })
    }

    /// Appends the scores `[b, …input shape]` of the next `b` samples;
    /// refuses NaN or Inf (nothing of that batch is written). One pass over
    /// the values in Rust (σ̂'s sums and the finiteness check), then each
    /// whole chunk goes to HDF5 straight from the tensor's memory; rows of a
    /// chunk that spans batches are copied once into the chunk being filled.
    pub fn write_batch(&mut self, scores: &Tensor) -> Result<()> {
        let b = scores.size()[0] as usize;
        if self.written + b > self.n {
            return Err(Error::invalid(
                "scores",
                self.written + b,
                format!("more than the {} samples declared", self.n),
            ));
        }
        let cpu = scores
            .to_device(Device::Cpu)
            .to_kind(Kind::Float)
            .contiguous();
        if cpu.numel() != b * self.row {
            return Err(Error::invalid(
                "scores",
                format!("{:?}", scores.size()),
                format!(
                    "each sample must hold {} values (the input shape)",
                    self.row
                ),
            ));
        }
        let values: &[f32] = if b == 0 {
            &[]
        } else {
            // SAFETY: `cpu` is a contiguous CPU float tensor of exactly
            // b·row elements (checked above) that outlives `values` and that
            // nothing writes to while it is read here.
            unsafe { std::slice::from_raw_parts(cpu.data_ptr() as *const f32, b * self.row) }
        };
        let (sum, sum_sq) = moments(values);
        if !sum_sq.is_finite() {
            let bad = values.iter().position(|v| !v.is_finite()).unwrap_or(0);
            let first = self.written + bad / self.row;
            return Err(Error::invalid(
                "score",
                "NaN/Inf",
                format!("the score of sample {first} is not finite; the source is broken for these inputs (nothing was written)"),
            ));
        }
        self.sum += sum;
        self.sum_sq += sum_sq;
        let chunk = self.staging.len() / self.row;
        let mut done = 0;
        while done < b {
            let len = (chunk - self.staged).min(b - done);
            let rows = &values[done * self.row..(done + len) * self.row];
            if self.staged == 0 && (len == chunk || self.written + len == self.n) {
                self.write_rows(self.written, len, rows)?;
            } else {
                let at = self.staged * self.row;
                self.staging[at..at + rows.len()].copy_from_slice(rows);
                self.staged += len;
                if self.staged == chunk || self.written + len == self.n {
                    let first = self.written + len - self.staged;
                    self.write_rows(first, self.staged, &self.staging[..self.staged * self.row])?;
                    self.staged = 0;
                }
            }
            self.written += len;
            done += len;
        }
        Ok(())
    }

    /// Writes `values` (`rows` samples) to rows `first..first + rows` of
    /// `/score`: one whole chunk, or the file's last one.
    fn write_rows(&self, first: usize, rows: usize, values: &[f32]) -> Result<()> {
        let mut shape = self.scores.shape();
        shape[0] = rows;
        let array = ndarray::ArrayViewD::from_shape(ndarray::IxDyn(&shape), values)
            .map_err(|e| Error::invalid("scores", "(shape)", e.to_string()))?;
        // Rows first..first+rows of the first axis, every other axis whole.
        let mut slices = vec![hdf5::SliceOrIndex::from(first..first + rows)];
        slices.extend((1..shape.len()).map(|_| hdf5::SliceOrIndex::from(..)));
        self.scores
            .write_slice(array, hdf5::Hyperslab::from(slices))
            .map_err(write_err(&self.path))
    }

    /// Writes the statistics attributes (score_std, c_t) and closes the
    /// file. Returns σ̂, the standard deviation of every score entry.
    pub fn finish(self, c_t: f64) -> Result<f64> {
        if self.written != self.n {
            return Err(Error::invalid(
                "scores",
                self.written,
                format!("{} samples were declared", self.n),
            ));
        }
        let count = (self.n as f64) * self.scores.shape()[1..].iter().product::<usize>() as f64;
        let mean = self.sum / count;
        let std = (self.sum_sq / count - mean * mean).max(0.0).sqrt();
        let we = write_err(&self.path);
        self.file
            .new_attr::<f64>()
            .create("score_std")
            .and_then(|a| a.write_scalar(&std))
            .map_err(&we)?;
        self.file
            .new_attr::<f64>()
            .create("c_t")
            .and_then(|a| a.write_scalar(&c_t))
            .map_err(&we)?;
        self.file.flush().map_err(&we)?;
        Ok(std)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta() -> ScoreFileMeta {
        ScoreFileMeta {
            dataset: "test".into(),
            split: "train".into(),
            input_shape: vec![2, 3],
            source: "test".into(),
            source_config: "{}".into(),
            t: None,
            sigma_t: None,
            fingerprint: "0".into(),
        }
    }

    fn read_back(path: &Path) -> Vec<f32> {
        hdf5::File::open(path)
            .unwrap()
            .dataset("score")
            .unwrap()
            .read_raw()
            .unwrap()
    }

    #[test]
    fn batches_that_straddle_chunks_read_back_exactly_with_their_std() {
        // 600 samples in batches of 37 and 300: chunks of 256 are filled
        // across batch boundaries, the last chunk is short.
        let n = 600;
        tch::manual_seed(3);
        let x = Tensor::randn([n as i64, 2, 3], (Kind::Float, tch::Device::Cpu)) * 3.0;
        // 256: every chunk written straight from the batch.
        let cases = [
            (37, Compression::None),
            (256, Compression::None),
            (300, Compression::Gzip1),
        ];
        for (batch, compression) in cases {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("s.h5");
            let mut w = ScoreWriter::create(&path, &meta(), n, compression).unwrap();
            let mut start = 0;
            while start < n {
                let len = batch.min(n - start);
                w.write_batch(&x.narrow(0, start as i64, len as i64))
                    .unwrap();
                start += len;
            }
            let std = w.finish(1.0).unwrap();
            let want: Vec<f32> = Vec::try_from(x.view([-1])).unwrap();
            assert_eq!(read_back(&path), want, "batch {batch}, {compression:?}");
            let torch_std = x.to_kind(Kind::Double).std(false).double_value(&[]);
            assert!(
                (std - torch_std).abs() < 1e-6 * torch_std,
                "{std} vs {torch_std}"
            );
        }
    }

    #[test]
    fn a_non_finite_score_is_refused_naming_its_sample() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.h5");
        let mut w = ScoreWriter::create(&path, &meta(), 10, Compression::None).unwrap();
        w.write_batch(&Tensor::zeros([4, 2, 3], (Kind::Float, tch::Device::Cpu)))
            .unwrap();
        let bad = Tensor::zeros([4, 2, 3], (Kind::Float, tch::Device::Cpu));
        let _ = bad.get(2).get(1).get(0).fill_(f64::NAN);
        let e = w.write_batch(&bad).unwrap_err().to_string();
        assert!(e.contains("sample 6 is not finite"), "{e}");
        let inf = Tensor::zeros([1, 2, 3], (Kind::Float, tch::Device::Cpu)).fill_(f64::INFINITY);
        let path = dir.path().join("t.h5");
        let mut w = ScoreWriter::create(&path, &meta(), 1, Compression::None).unwrap();
        let e = w.write_batch(&inf).unwrap_err().to_string();
        assert!(e.contains("sample 0 is not finite"), "{e}");
    }

    #[test]
    fn moments_match_f64_sums_and_flag_exactly_the_non_finite() {
        tch::manual_seed(5);
        // 3001 values: whole blocks, a partial block and a lane remainder.
        let t = Tensor::randn([3001], (Kind::Float, tch::Device::Cpu)) * 4.0 + 1.0;
        let mut v: Vec<f32> = Vec::try_from(&t).unwrap();
        let exact = |v: &[f32]| {
            let s: f64 = v.iter().map(|&x| f64::from(x)).sum();
            let q: f64 = v.iter().map(|&x| f64::from(x).powi(2)).sum();
            (s, q)
        };
        let ((s, q), (es, eq)) = (moments(&v), exact(&v));
        assert!((s - es).abs() <= 1e-6 * eq.sqrt() && (q - eq).abs() <= 1e-6 * eq);
        // Finite values whose square overflows f32: summed in f64, finite.
        v[2000] = 3e20;
        let ((s, q), (es, eq)) = (moments(&v), exact(&v));
        assert!(q.is_finite() && (q - eq).abs() <= 1e-6 * eq && (s - es).abs() <= 1e-6 * es);
        for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
            v[3000] = bad;
            assert!(!moments(&v).1.is_finite(), "{bad}");
        }
    }
}
