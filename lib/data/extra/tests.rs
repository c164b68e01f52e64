//! Streamed batches ([`ExtraSource::batch`]) against the in-memory reader
//! ([`read_extra`]): the same pixels bit for bit, the same labels, the same
//! fingerprints and the same errors, in each format.
use super::*;
use crate::data::cifar::{random_images, write_bin, Variant};
use crate::data::fingerprint;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::path::PathBuf;
use tch::{Device, Kind, Tensor};

/// Indices with repeats, out of order, and a run of consecutive rows.
fn indices(n: i64) -> Vec<i64> {
    vec![n - 1, 0, 5, 5, 2, 3, 4, n / 2, 1, n - 1]
}

/// Asserts that the streamed source at `path` matches the whole set.
fn assert_streamed_equals_whole(path: &Path, input_shape: &[i64], classes: i64) {
    let whole = read_extra(path, input_shape, classes).unwrap();
    let source = ExtraSource::open(path, input_shape, classes).unwrap();
    assert_eq!(source.len(), whole.len());
    assert_eq!(source.labels(), Vec::<i64>::try_from(&whole.y).unwrap());
    assert_eq!(source.fingerprint(), whole.fingerprint());
    assert_eq!(source.labels_fingerprint(), fingerprint(&whole.y));
    for idx in [indices(whole.len()), (0..whole.len()).rev().collect()] {
        let (x, y) = source.batch(&idx, Device::Cpu).unwrap();
        let expect = whole.select(&Tensor::from_slice(&idx));
        assert_eq!(x.size(), expect.x.size());
        assert_eq!(x.kind(), Kind::Float);
        assert!(x.equal(&expect.x), "{}: pixels differ", path.display());
        assert!(y.equal(&expect.y), "{}: labels differ", path.display());
    }
}

#[test]
fn streamed_cifar_batches_are_the_rows_of_the_whole_set_bit_for_bit() {
    let dir = tempfile::tempdir().unwrap();
    for (variant, classes) in [(Variant::Cifar10, 10), (Variant::Cifar100, 100)] {
        let path = dir.path().join(format!("extra{classes}.bin"));
        // 37 records: 3 a chunk while the file is checked.
        write_bin(&path, variant, &random_images(37, classes as usize, 7)).unwrap();
        assert_streamed_equals_whole(&path, &[3, 32, 32], classes);
    }
}

/// Writes `images` (of shape `dims`) and `labels` to `dir/name`.
fn write_h5<T: hdf5::H5Type>(
    dir: &Path,
    name: &str,
    dims: &[usize],
    images: Vec<T>,
    labels: &[i64],
) -> PathBuf {
    let path = dir.join(name);
    let file = hdf5::File::create(&path).unwrap();
    let images = ndarray::ArrayD::from_shape_vec(dims, images).unwrap();
    file.new_dataset_builder()
        .with_data(&images)
        .create("images")
        .unwrap();
    file.new_dataset_builder()
        .with_data(labels)
        .create("labels")
        .unwrap();
    path
}

fn labels(n: usize, classes: i64, rng: &mut ChaCha8Rng) -> Vec<i64> {
    (0..n).map(|_| rng.gen_range(0..classes)).collect()
}

#[test]
fn streamed_h5_batches_are_the_rows_of_the_whole_set_bit_for_bit() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    // uint8 [N, H, W, C] with H ≠ W ≠ C, 153 rows a chunk while checked.
    let n = 400;
    let bytes: Vec<u8> = (0..n * 4 * 5 * 3).map(|_| rng.gen()).collect();
    let y = labels(n, 7, &mut rng);
    let path = write_h5(dir.path(), "u8.h5", &[n, 4, 5, 3], bytes, &y);
    assert_streamed_equals_whole(&path, &[3, 4, 5], 7);
    // float32 [N, C, H, W] in [0, 1], 36 rows a chunk.
    let n = 100;
    let x: Vec<f32> = (0..n * 64).map(|_| rng.gen::<f32>()).collect();
    let y = labels(n, 10, &mut rng);
    let path = write_h5(dir.path(), "f32.hdf5", &[n, 1, 8, 8], x, &y);
    assert_streamed_equals_whole(&path, &[1, 8, 8], 10);
}

/// The error texts of opening the file at `path` both ways.
fn both_errors(path: &Path, input_shape: &[i64], classes: i64) -> (String, String) {
    let whole = read_extra(path, input_shape, classes).unwrap_err();
    let streamed = ExtraSource::open(path, input_shape, classes).unwrap_err();
    (whole.to_string(), streamed.to_string())
}

#[test]
fn opening_refuses_what_the_whole_reader_refuses_with_the_same_text() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mut rng = ChaCha8Rng::seed_from_u64(4);
    let pixels =
        |n: usize, v: f32| -> Vec<f32> { (0..n * 64).map(|i| v * (i % 2) as f32).collect() };
    let mut bad_late = pixels(90, 1.0);
    bad_late[89 * 64] = f32::NAN;
    let cases: Vec<(PathBuf, &[i64], i64, &str)> = vec![
        (d.join("nowhere.h5"), &[1, 8, 8], 10, "no such file"),
        (
            write_h5(
                d,
                "range.h5",
                &[90, 1, 8, 8],
                pixels(90, 1.5),
                &labels(90, 10, &mut rng),
            ),
            &[1, 8, 8],
            10,
            "pixels span [0, 1.5]",
        ),
        (
            write_h5(
                d,
                "nan.h5",
                &[90, 1, 8, 8],
                bad_late,
                &labels(90, 10, &mut rng),
            ),
            &[1, 8, 8],
            10,
            "pixels span [NaN, NaN]",
        ),
        (
            write_h5(
                d,
                "shape.h5",
                &[9, 1, 8, 8],
                pixels(9, 1.0),
                &labels(9, 10, &mut rng),
            ),
            &[3, 8, 8],
            10,
            "images have shape [9, 1, 8, 8]",
        ),
        (
            write_h5(
                d,
                "count.h5",
                &[9, 1, 8, 8],
                pixels(9, 1.0),
                &labels(8, 10, &mut rng),
            ),
            &[1, 8, 8],
            10,
            "labels have shape [8], images [9, 1, 8, 8]",
        ),
        (
            write_h5(d, "classes.h5", &[9, 1, 8, 8], pixels(9, 1.0), &[12; 9]),
            &[1, 8, 8],
            10,
            "labels span 12..=12",
        ),
        (
            write_h5(d, "u8dims.h5", &[9, 64], vec![0u8; 9 * 64], &[0; 9]),
            &[1, 8, 8],
            10,
            "uint8 images have shape [9, 64]",
        ),
    ];
    for (path, shape, classes, text) in cases {
        let (whole, streamed) = both_errors(&path, shape, classes);
        assert_eq!(whole, streamed);
        assert!(streamed.contains(text), "{streamed}");
        assert!(streamed.contains(&*path.to_string_lossy()), "{streamed}");
    }
    // A truncated CIFAR file, a label outside the classes, a digits-shaped set.
    let path = d.join("cut.bin");
    std::fs::write(&path, vec![0u8; 2 * 3073 + 5]).unwrap();
    let (whole, streamed) = both_errors(&path, &[3, 32, 32], 10);
    assert_eq!(whole, streamed);
    assert!(streamed.contains("not a whole number"), "{streamed}");
    let mut records = vec![1u8; 8 * 3073];
    records[7 * 3073] = 10;
    std::fs::write(&path, records).unwrap();
    let (whole, streamed) = both_errors(&path, &[3, 32, 32], 10);
    assert_eq!(whole, streamed);
    assert!(streamed.contains("record 7 has label 10"), "{streamed}");
    let (whole, streamed) = both_errors(&path, &[1, 8, 8], 10);
    assert_eq!(whole, streamed);
    assert!(streamed.contains("HDF5"), "{streamed}");
}

#[test]
fn an_index_outside_the_set_is_an_error_not_a_read() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("extra.bin");
    write_bin(&path, Variant::Cifar10, &random_images(4, 10, 1)).unwrap();
    let source = ExtraSource::open(&path, &[3, 32, 32], 10).unwrap();
    for bad in [4, -1] {
        let err = source.batch(&[0, bad], Device::Cpu).unwrap_err();
        assert!(err.to_string().contains(&format!("index {bad}")), "{err}");
    }
}

#[test]
fn byte_values_are_libtorchs_division_by_255() {
    let bytes: Vec<u8> = (0..=255).collect();
    let torch = Tensor::from_slice(&bytes).to_kind(Kind::Float) / 255.0;
    assert!(Tensor::from_slice(&byte_values()).equal(&torch));
}
