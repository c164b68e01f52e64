//! `make dist`'s binaries (scripts/make-dist.sh) as a GPU node gets them:
//! the highest glibc and libstdc++ symbol versions they ask for, what
//! dist/lib carries, and the binaries run here with only dist/lib and
//! torch's own lib folder on LD_LIBRARY_PATH. Every test is named `dist_…`
//! (`make test-fast` leaves them out); `make dist-check` and `make test`
//! build dist/ first.
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const BINARIES: &[&str] = &[
    "score-precompute",
    "train",
    "finetune",
    "attack",
    "bootstrap",
    "sweep",
    "report",
    "bench-train-step",
];

/// glibc's own libraries (a node's glibc must never meet a copied one).
const GLIBC_LIBS: &[&str] = &[
    "libc.so",
    "libm.so",
    "libmvec.so",
    "libpthread.so",
    "libdl.so",
    "librt.so",
    "libresolv.so",
    "libutil.so",
    "libanl.so",
    "libnsl.so",
    "libcrypt.so",
    "libBrokenLocale.so",
    "libthread_db.so",
    "libnss_",
    "ld-linux",
];

fn dist() -> PathBuf {
    let d = Path::new(env!("CARGO_MANIFEST_DIR")).join("dist");
    assert!(
        d.join("bin/train").is_file(),
        "no {}/bin/train: run `make dist` (or `make dist-check`) first",
        d.display()
    );
    d
}

/// The lib folder of the venv's torch (what a node's torch provides).
fn torch_lib() -> PathBuf {
    let py = std::env::var("TASER_PYTHON").unwrap_or_else(|_| ".venv/bin/python".into());
    let o = Command::new(py)
        .args([
            "-c",
            "import torch,os;print(os.path.dirname(torch.__file__))",
        ])
        .output()
        .expect("python runs");
    PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()).join("lib")
}

/// The versions `prefix`_x.y… an ELF file's dynamic symbols ask for, as
/// objdump -T prints them (`(GLIBC_2.28)` or `GLIBC_2.28` columns).
fn versions(objdump_t: &str, prefix: &str) -> BTreeSet<Vec<u32>> {
    objdump_t
        .split(|c: char| c.is_whitespace() || c == '(' || c == ')')
        .filter_map(|w| w.strip_prefix(prefix)?.strip_prefix('_'))
        .filter_map(|v| v.split('.').map(|n| n.parse().ok()).collect())
        .collect()
}

fn objdump(file: &Path) -> String {
    let o = Command::new("objdump")
        .arg("-T")
        .arg(file)
        .output()
        .expect("objdump runs");
    assert!(o.status.success(), "objdump -T {}", file.display());
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn highest(file: &Path, prefix: &str) -> Vec<u32> {
    versions(&objdump(file), prefix)
        .into_iter()
        .max()
        .unwrap_or_default()
}

#[test]
fn dist_binaries_need_glibc_2_28_and_no_libstdcxx_newer_than_libtorchs() {
    let d = dist();
    let torch = highest(&torch_lib().join("libtorch_cpu.so"), "GLIBCXX");
    assert!(
        !torch.is_empty(),
        "libtorch_cpu.so asks for no GLIBCXX version"
    );
    for b in BINARIES {
        let f = d.join("bin").join(b);
        let (glibc, glibcxx) = (highest(&f, "GLIBC"), highest(&f, "GLIBCXX"));
        eprintln!("{b}: GLIBC {glibc:?}, GLIBCXX {glibcxx:?} (libtorch_cpu.so: GLIBCXX {torch:?})");
        assert!(glibc <= vec![2, 28], "{b} needs GLIBC {glibc:?}");
        assert!(
            glibcxx <= torch,
            "{b} needs GLIBCXX {glibcxx:?}, libtorch {torch:?}"
        );
        // The unwinder is the node's libgcc_s.so.1; GCC 8's (RHEL 8) has
        // symbol versions up to GCC_7.0.0.
        let gcc = highest(&f, "GCC");
        assert!(gcc <= vec![7, 0, 0], "{b} needs libgcc_s GCC {gcc:?}");
    }
    // The reader itself: both column forms, GLIBCXX is no GLIBC.
    let sample = "0 DF *UND* 0 (GLIBC_2.34) dlopen\n0 DF *UND* 0 GLIBC_2.2.5 free\n\
                  0 DF *UND* 0 (GLIBCXX_3.4.26) _ZNSt7\n";
    let g = versions(sample, "GLIBC");
    assert_eq!(g.iter().max(), Some(&vec![2, 34]));
    assert!(g.contains(&vec![2, 2, 5]) && !g.contains(&vec![3, 4, 26]));
}

#[test]
fn dist_lib_holds_no_glibc_library_and_the_binaries_need_no_mpi_or_hdf5() {
    let d = dist();
    for b in BINARIES {
        let o = Command::new("readelf")
            .arg("-d")
            .arg(d.join("bin").join(b))
            .output()
            .unwrap();
        let needed = String::from_utf8_lossy(&o.stdout).into_owned();
        // One unwinder for libtorch's C++ exceptions and ours: the shared one.
        assert!(
            needed.contains("[libgcc_s.so.1]"),
            "{b} has its own unwinder: {needed}"
        );
        for lib in ["libmpi", "libhdf5", "libz.so", "libopen-"] {
            assert!(!needed.contains(lib), "{b} needs {lib}: {needed}");
        }
    }
    for e in std::fs::read_dir(d.join("lib")).unwrap() {
        let name = e.unwrap().file_name().to_string_lossy().into_owned();
        assert!(
            !GLIBC_LIBS.iter().any(|g| name.starts_with(g)),
            "dist/lib carries glibc's {name}"
        );
    }
}

/// A dist binary with only dist/lib and torch's lib folder to load from.
fn run(bin: &str, args: &[&str]) -> Output {
    let d = dist();
    let path = format!("{}:{}", d.join("lib").display(), torch_lib().display());
    Command::new(d.join("bin").join(bin))
        .args(args)
        .env("LD_LIBRARY_PATH", path)
        .env("TASER_BIN_DIR", d.join("bin"))
        .output()
        .expect("the dist binary starts")
}

/// dist's `train`: a one-epoch mlp of `hidden` units on digits, on the CPU,
/// with `extra` flags, into `tmp/out`.
fn train_digits_mlp(data: &str, hidden: &str, extra: &[&str], tmp: &str, out: &str) -> Output {
    let out = format!("{tmp}/{out}");
    let mut args = vec![
        "--dataset",
        "digits",
        "--data-dir",
        data,
        "--model",
        "mlp",
        "--mlp-hidden",
        hidden,
        "--epochs",
        "1",
        "--device",
        "cpu",
        "--out",
        &out,
    ];
    args.extend_from_slice(extra);
    run("train", &args)
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn dist_binaries_run_scores_training_a_libtorch_error_and_the_array_path() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path().display().to_string();
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/cache");
    let data = data.display().to_string();
    for b in BINARIES.iter().filter(|b| **b != "bench-train-step") {
        let o = run(b, &["--help"]);
        assert!(o.status.success(), "{b} --help: {}", text(&o));
    }
    // Static HDF5 with zlib: a gzip score file written and read back.
    let scores = format!("{t}/scores.h5");
    let o = run(
        "score-precompute",
        &[
            "--dataset",
            "digits",
            "--data-dir",
            &data,
            "--source",
            "gaussian-fit",
            "--compression",
            "gzip1",
            "--out",
            &scores,
        ],
    );
    assert!(o.status.success(), "score-precompute: {}", text(&o));
    let o = train_digits_mlp(
        &data,
        "32",
        &["--lambda", "0.01", "--scores", &scores],
        &t,
        "run",
    );
    assert!(o.status.success(), "train: {}", text(&o));
    let o = run("report", &["run", &format!("{t}/run")]);
    assert!(
        text(&o).contains("\"test_acc\""),
        "report run: {}",
        text(&o)
    );
    // A C++ exception thrown inside libtorch (its allocator fails) is caught
    // across the boundary and mapped to exit 1, never an abort.
    let o = train_digits_mlp(&data, "100000000000", &[], &t, "huge");
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("libtorch: "), "{}", text(&o));
    // No MPI: sweep run says so and names the array form; run-one works.
    let grid = format!("{t}/grid.toml");
    std::fs::write(
        &grid,
        "name = \"d\"\nsteps = [\"train\"]\n[axes]\nseed = [0, 1]\n[train]\ndataset = \"toy-sin\"\n\
         model = \"mlp\"\nepochs = 2\n",
    )
    .unwrap();
    let out = format!("{t}/sweep");
    let o = run("sweep", &["run", &grid, "--out", &out]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        text(&o).contains("built without MPI") && text(&o).contains("sweep-array.sbatch"),
        "{}",
        text(&o)
    );
    let o = run("sweep", &["run-one", &grid, "--index", "1", "--out", &out]);
    assert!(o.status.success(), "run-one: {}", text(&o));
    let o = run("sweep", &["collect", &out]);
    assert!(
        text(&o).contains("ok = 1") && text(&o).contains("pending = 1"),
        "{}",
        text(&o)
    );
}
