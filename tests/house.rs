//! The house rules of lib/, checked on the source itself:
//! - no module imports one on a higher floor of the data's way;
//! - no library file is longer than 600 lines (its `#[cfg(test)]` part and
//!   files named `tests.rs` aside);
//! - no library function outside tests is longer than 120 lines.
//!
//! The floors, lowest first (lib/lib.rs documents them):
//! ground (error, exit, fsutil, csvio, identity, layout, runtime, device, progress,
//! optim, figure) → data → models → checkpoint → score → stein → attack →
//! train → stats → sweep → report. Attack algorithms sit below training
//! because PGD-AT, TRADES and MART use them as the inner maximiser.
use std::fs;
use std::path::{Path, PathBuf};

const FLOORS: &[&[&str]] = &[
    &[
        "error", "exit", "fsutil", "csvio", "identity", "layout", "runtime", "device", "progress", "optim",
        "figure",
    ],
    &["data"],
    &["models"],
    &["checkpoint"],
    &["score"],
    &["stein"],
    &["attack"],
    &["train"],
    &["stats"],
    &["sweep"],
    &["report"],
];
const MAX_FILE_LINES: usize = 600;
const MAX_FN_LINES: usize = 120;

fn lib_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("lib")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).unwrap() {
        let p = entry.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|e| e == "rs") {
            out.push(p);
        }
    }
}

/// The top-level module a file belongs to (`lib/stats/eval.rs` → `stats`).
fn module_of(path: &Path) -> String {
    let rel = path.strip_prefix(lib_dir()).unwrap();
    let first = rel
        .components()
        .next()
        .unwrap()
        .as_os_str()
        .to_string_lossy();
    first.trim_end_matches(".rs").to_string()
}

fn floor_of(module: &str) -> Option<usize> {
    FLOORS.iter().position(|f| f.contains(&module))
}

/// The lines of a file before its unit tests (`#[cfg(test)]`).
fn code_lines(text: &str) -> Vec<&str> {
    text.lines()
        .take_while(|l| !l.trim_start().starts_with("#[cfg(test)]"))
        .collect()
}

fn library_files() -> Vec<PathBuf> {
    let mut files = Vec::new();
    rust_files(&lib_dir(), &mut files);
    files.retain(|p| p.file_name().unwrap() != "tests.rs" && p.file_name().unwrap() != "lib.rs");
    files.sort();
    files
}

/// `crate::<module>` paths a line refers to.
fn crate_refs(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = line;
    while let Some(i) = rest.find("crate::") {
        rest = &rest[i + "crate::".len()..];
        let name: String = rest
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect();
        if name == "{" || name.is_empty() {
            // `use crate::{a, b}`: every name in the braces.
            let inner = rest.trim_start_matches('{');
            let end = inner.find('}').unwrap_or(inner.len());
            for part in inner[..end].split(',') {
                let n: String = part
                    .trim()
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                if !n.is_empty() {
                    out.push(n);
                }
            }
        } else {
            out.push(name);
        }
    }
    out
}

#[test]
fn no_module_imports_one_on_a_higher_floor() {
    let mut violations = Vec::new();
    for file in library_files() {
        let module = module_of(&file);
        let floor = floor_of(&module)
            .unwrap_or_else(|| panic!("{}: module `{module}` is on no floor", file.display()));
        let text = fs::read_to_string(&file).unwrap();
        for (n, line) in code_lines(&text).iter().enumerate() {
            for used in crate_refs(line) {
                let Some(used_floor) = floor_of(&used) else {
                    continue; // crate-root items (Error, Result, VERSION)
                };
                if used_floor > floor {
                    violations.push(format!(
                        "{}:{}: {module} imports {used}",
                        file.display(),
                        n + 1
                    ));
                }
            }
        }
    }
    assert!(
        violations.is_empty(),
        "uphill imports:\n{}",
        violations.join("\n")
    );
}

#[test]
fn no_library_file_is_longer_than_600_lines() {
    let long: Vec<String> = library_files()
        .into_iter()
        .filter_map(|f| {
            let n = code_lines(&fs::read_to_string(&f).unwrap()).len();
            (n > MAX_FILE_LINES).then(|| format!("{}: {n} lines", f.display()))
        })
        .collect();
    assert!(
        long.is_empty(),
        "files over {MAX_FILE_LINES} lines:\n{}",
        long.join("\n")
    );
}

/// Functions (rustfmt-formatted: the closing brace at the `fn` line's
/// indentation) and their lengths in lines.
fn functions(text: &str) -> Vec<(usize, usize, String)> {
    let lines = code_lines(text);
    let mut out = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let trimmed = line.trim_start();
        let is_fn = [
            "fn ",
            "pub fn ",
            "pub(crate) fn ",
            "pub(super) fn ",
            "const fn ",
            "pub const fn ",
        ]
        .iter()
        .any(|p| trimmed.starts_with(p));
        let one_line = trimmed.ends_with(';') || trimmed.ends_with('}');
        if !is_fn || one_line {
            continue;
        }
        let indent = &line[..line.len() - trimmed.len()];
        let close = format!("{indent}}}");
        if let Some(end) = lines[i..].iter().position(|l| *l == close) {
            out.push((i + 1, end + 1, trimmed.to_string()));
        }
    }
    out
}

#[test]
fn no_library_function_is_longer_than_120_lines() {
    let mut long = Vec::new();
    for file in library_files() {
        let text = fs::read_to_string(&file).unwrap();
        for (line, len, sig) in functions(&text) {
            if len > MAX_FN_LINES {
                long.push(format!("{}:{line}: {len} lines: {sig}", file.display()));
            }
        }
    }
    assert!(
        long.is_empty(),
        "functions over {MAX_FN_LINES} lines:\n{}",
        long.join("\n")
    );
}

#[test]
fn the_checks_see_what_they_claim_to() {
    // The scanners themselves: a braced import, a long function, a test part.
    assert_eq!(
        crate_refs("use crate::{data::Dataset, train::x};"),
        vec!["data", "train"]
    );
    let body = "    let x = 1;\n".repeat(130);
    let text = format!("fn long() {{\n{body}}}\n#[cfg(test)]\nfn ignored() {{\n}}\n");
    assert_eq!(functions(&text), vec![(1, 132, "fn long() {".to_string())]);
    assert_eq!(floor_of("stats"), Some(8));
    assert!(floor_of("train") < floor_of("stats"));
}
