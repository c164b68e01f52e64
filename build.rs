//! Links the binaries against the libtorch of the project's Python env.
//!
//! torch-sys finds libtorch through `LIBTORCH_USE_PYTORCH=1`; this script adds
//! what it leaves out:
//! 1. an rpath to `torch/lib`, so the binaries run without LD_LIBRARY_PATH;
//! 2. `libtorch_cuda.so` linked with `--no-as-needed` when present: nothing in
//!    our objects references its symbols directly, so the linker would drop it
//!    and CUDA would be silently unavailable at run time (tch-rs #177, #907).
use std::path::PathBuf;
use std::process::Command;

fn torch_lib_dir() -> Option<PathBuf> {
    if let Ok(dir) = std::env::var("LIBTORCH") {
        return Some(PathBuf::from(dir).join("lib"));
    }
    let python = std::env::var("PYTHON_SYS_EXECUTABLE").unwrap_or_else(|_| "python3".into());
    let out = Command::new(python)
        .args([
            "-c",
            "import os, torch; print(os.path.join(os.path.dirname(torch.__file__), 'lib'))",
        ])
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    Some(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
}

fn main() {
    println!("cargo:rerun-if-env-changed=LIBTORCH");
    println!("cargo:rerun-if-env-changed=PYTHON_SYS_EXECUTABLE");
    println!("cargo:rerun-if-changed=build.rs");
    let Some(lib) = torch_lib_dir() else {
        println!(
            "cargo:warning=could not locate torch/lib; run `make setup` (creates .venv with torch)"
        );
        return;
    };
    println!("cargo:rustc-link-search=native={}", lib.display());
    println!("cargo:rustc-link-arg=-Wl,-rpath,{}", lib.display());
    if lib.join("libtorch_cuda.so").exists() {
        // Three arguments, not one `-Wl,…,-ltorch_cuda,…`: zig cc (the
        // portable dist's linker driver) takes the library only on its own.
        println!("cargo:rustc-link-arg=-Wl,--no-as-needed");
        println!("cargo:rustc-link-arg=-ltorch_cuda");
        println!("cargo:rustc-link-arg=-Wl,--as-needed");
    }
}
