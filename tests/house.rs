//! The house rules of lib/, checked on the source itself:
//! - no module imports one on a higher floor of the data's way;
//! - no library file is longer than 600 lines (its `#[cfg(test)]` part and
//!   files named `tests.rs` aside);
//! - no library function outside tests is longer than 120 lines;
//! - no script (scripts/, slurm/, data/, analysis/) names a file inside a
//!   run folder: scripts read runs through the binaries;
//! - the training step's files make no raw host↔device copy or host read:
//!   what the epoch loop moves goes through lib/device/transfers.rs, which
//!   counts (tests/host_transfers.rs).
//!
//! The floors, lowest first (lib/lib.rs documents them):
//! ground (error, exit, fsutil, outdir, csvio, identity, layout, runtime, device, progress,
//! optim, figure, collective, signal, portable) → data → models → checkpoint → score → stein → attack →
//! train → stats → sweep → report. Attack algorithms sit below training
//! because PGD-AT, TRADES and MART use them as the inner maximiser.
use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

const FLOORS: &[&[&str]] = &[
    &[
        "error",
        "exit",
        "fsutil",
        "outdir",
        "csvio",
        "identity",
        "layout",
        "runtime",
        "device",
        "progress",
        "optim",
        "figure",
        "collective",
        "signal",
        "portable",
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
/// The penalty's room (lib/stein/penalty/) keeps space for what is added
/// to it: each of its files at most this long.
const MAX_PENALTY_FILE_LINES: usize = 450;
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

/// A library source file as the import checks see it.
#[derive(Debug, Clone)]
struct Source {
    /// Path under lib/, e.g. `train/step.rs`.
    rel: String,
    /// Module path: `train/step.rs` → [train, step], `train/mod.rs` →
    /// [train], `lib.rs` → [].
    module: Vec<String>,
    /// The code before the unit tests, as tokens with their line numbers
    /// (comments, strings and char literals dropped).
    tokens: Vec<(usize, String)>,
}

/// Every library source file but the `tests.rs` ones, by module path.
type Tree = BTreeMap<Vec<String>, Source>;

fn source(rel: &str, text: &str) -> Source {
    let stem = rel.trim_end_matches(".rs");
    let mut module: Vec<String> = stem.split('/').map(String::from).collect();
    if module.last().is_some_and(|m| m == "mod") || stem == "lib" {
        module.pop();
    }
    Source {
        rel: rel.to_string(),
        module,
        tokens: tokens(&code_lines(text).join("\n")),
    }
}

fn tree_of(files: &[(&str, &str)]) -> Tree {
    files
        .iter()
        .map(|(rel, text)| {
            let s = source(rel, text);
            (s.module.clone(), s)
        })
        .collect()
}

fn library_tree() -> Tree {
    let mut files = Vec::new();
    rust_files(&lib_dir(), &mut files);
    let texts: Vec<(String, String)> = files
        .iter()
        .filter(|p| p.file_name().unwrap() != "tests.rs")
        .map(|p| {
            let rel = p.strip_prefix(lib_dir()).unwrap();
            (
                rel.to_string_lossy().into_owned(),
                fs::read_to_string(p).unwrap(),
            )
        })
        .collect();
    let refs: Vec<(&str, &str)> = texts
        .iter()
        .map(|(r, t)| (r.as_str(), t.as_str()))
        .collect();
    tree_of(&refs)
}

/// Identifiers, `::` and single punctuation, each with its line; comments,
/// string literals (raw ones included) and char literals are skipped, so
/// a path in a comment or a message is no import.
fn tokens(code: &str) -> Vec<(usize, String)> {
    let c: Vec<char> = code.chars().collect();
    let (mut out, mut i, mut line) = (Vec::new(), 0, 1);
    let ident = |ch: char| ch.is_alphanumeric() || ch == '_';
    // Skips to just past `end` (counting lines); returns the new index.
    let skip_to = |from: usize, end: &str, line: &mut usize| -> usize {
        let end: Vec<char> = end.chars().collect();
        let mut j = from;
        while j < c.len() && c[j..].iter().take(end.len()).ne(end.iter()) {
            if c[j] == '\\' && end == ['"'] {
                j += 1;
            }
            if c.get(j) == Some(&'\n') {
                *line += 1;
            }
            j += 1;
        }
        j + end.len()
    };
    while i < c.len() {
        let (ch, next) = (c[i], c.get(i + 1).copied());
        if ch == '\n' {
            line += 1;
            i += 1;
        } else if ch == '/' && next == Some('/') {
            while i < c.len() && c[i] != '\n' {
                i += 1;
            }
        } else if ch == '/' && next == Some('*') {
            i = skip_to(i + 2, "*/", &mut line);
        } else if ch == '"' {
            i = skip_to(i + 1, "\"", &mut line);
        } else if ch == 'r'
            && matches!(next, Some('"' | '#'))
            && (i == 0 || !ident(c[i - 1]) || c[i - 1] == 'b')
        {
            let hashes = c[i + 1..].iter().take_while(|&&h| h == '#').count();
            if c.get(i + 1 + hashes) == Some(&'"') {
                let end = format!("\"{}", "#".repeat(hashes));
                i = skip_to(i + 2 + hashes, &end, &mut line);
            } else {
                out.push((line, "r".to_string()));
                i += 1;
            }
        } else if ch == '\'' {
            // A char literal ('x', '\n', '\u{..}'); otherwise a lifetime.
            if next == Some('\\') {
                i = skip_to(i + 2, "'", &mut line);
            } else if c.get(i + 2) == Some(&'\'') {
                i += 3;
            } else {
                i += 1;
            }
        } else if ident(ch) {
            let start = i;
            while i < c.len() && ident(c[i]) {
                i += 1;
            }
            out.push((line, c[start..i].iter().collect()));
        } else if ch == ':' && next == Some(':') {
            out.push((line, "::".to_string()));
            i += 2;
        } else {
            if !ch.is_whitespace() {
                out.push((line, ch.to_string()));
            }
            i += 1;
        }
    }
    out
}

/// A path a file names: its segments as written, the line, whether it is
/// a `pub use` (a re-export), and the name it is known by (its last
/// segment, or the `as` alias).
#[derive(Debug, Clone, PartialEq)]
struct PathRef {
    segments: Vec<String>,
    line: usize,
    reexport: bool,
    name: String,
}

/// Every path of a `use` tree, braces expanded (`crate::{a::B, c::{D, E}}`
/// → crate::a::B, crate::c::D, crate::c::E; `x::{self}` → x). `t` is at the
/// tree's first token; returns the index after it.
fn use_tree(
    t: &[(usize, String)],
    mut i: usize,
    prefix: &[String],
    reexport: bool,
    out: &mut Vec<PathRef>,
) -> usize {
    let mut segs = prefix.to_vec();
    let line = t.get(i).map_or(0, |x| x.0);
    while i < t.len() {
        match t[i].1.as_str() {
            "{" => {
                i += 1;
                while i < t.len() && t[i].1 != "}" {
                    if t[i].1 == "," {
                        i += 1;
                        continue;
                    }
                    i = use_tree(t, i, &segs, reexport, out);
                }
                return i + 1;
            }
            "*" => {
                let name = "*".to_string();
                out.push(PathRef {
                    segments: segs,
                    line,
                    reexport,
                    name,
                });
                return i + 1;
            }
            "::" => i += 1,
            seg => {
                if seg != "self" {
                    segs.push(seg.to_string());
                }
                i += 1;
                if t.get(i).is_some_and(|x| x.1 == "::") {
                    continue;
                }
                let mut name = seg.to_string();
                if t.get(i).is_some_and(|x| x.1 == "as") {
                    name = t.get(i + 1).map(|x| x.1.clone()).unwrap_or_default();
                    i += 2;
                }
                if name == "self" {
                    name = segs.last().cloned().unwrap_or_default();
                }
                out.push(PathRef {
                    segments: segs,
                    line,
                    reexport,
                    name,
                });
                return i;
            }
        }
    }
    i
}

/// The paths a file names: every `use` (over any number of lines, braces
/// expanded), and every path in its code that starts at `crate::`,
/// `super::`, `self::` or at one of `children` (its child modules).
fn path_refs(src: &Source, children: &BTreeSet<String>) -> Vec<PathRef> {
    let t = &src.tokens;
    let mut out = Vec::new();
    let mut i = 0;
    while i < t.len() {
        let word = t[i].1.as_str();
        if word == "use" {
            let before: Vec<&str> = t[i.saturating_sub(4)..i]
                .iter()
                .map(|x| x.1.as_str())
                .collect();
            let reexport =
                before.last() == Some(&"pub") || before.ends_with(&["pub", "(", "crate", ")"]);
            i = use_tree(t, i + 1, &[], reexport, &mut out);
            continue;
        }
        let starts_path = matches!(word, "crate" | "super" | "self") || children.contains(word);
        let after_colons = i > 0 && t[i - 1].1 == "::";
        if starts_path && !after_colons && t.get(i + 1).is_some_and(|x| x.1 == "::") {
            let line = t[i].0;
            let mut segs = vec![word.to_string()];
            i += 1;
            while i + 1 < t.len()
                && t[i].1 == "::"
                && t[i + 1].1.chars().all(|c| c.is_alphanumeric() || c == '_')
            {
                segs.push(t[i + 1].1.clone());
                i += 2;
            }
            let name = segs.last().cloned().unwrap_or_default();
            out.push(PathRef {
                segments: segs,
                line,
                reexport: false,
                name,
            });
            continue;
        }
        i += 1;
    }
    out
}

/// The child modules of `module` that have a file.
fn children(tree: &Tree, module: &[String]) -> BTreeSet<String> {
    tree.keys()
        .filter(|k| k.len() == module.len() + 1 && k.starts_with(module))
        .map(|k| k[module.len()].clone())
        .collect()
}

/// The absolute path (from the crate root) of `segs` as written in
/// `module`: `crate::` from the root, `super::` from the parent (each one
/// level up), `self::` and a child module's name from `module` itself.
/// `None` for paths into other crates.
fn absolute(tree: &Tree, module: &[String], segs: &[String]) -> Option<Vec<String>> {
    match segs.first()?.as_str() {
        "crate" => Some(segs[1..].to_vec()),
        "super" => {
            let ups = segs.iter().take_while(|s| *s == "super").count();
            let base = module.get(..module.len().checked_sub(ups)?)?;
            Some([base, &segs[ups..]].concat())
        }
        "self" => Some([module, &segs[1..]].concat()),
        first if children(tree, module).contains(first) => Some([module, segs].concat()),
        _ => None,
    }
}

/// The file that defines what the absolute path `abs` names: the deepest
/// module file on it, followed through that file's re-exports
/// (`pub use child::Item`) when the item is one.
fn defining_file<'a>(tree: &'a Tree, abs: &[String], depth: usize) -> Option<&'a Source> {
    let k = (0..=abs.len())
        .rev()
        .find(|&k| tree.contains_key(&abs[..k]))?;
    let src = &tree[&abs[..k]];
    if k < abs.len() && depth < 8 {
        let kids = children(tree, &src.module);
        for r in path_refs(src, &kids)
            .iter()
            .filter(|r| r.reexport && r.name == abs[k])
        {
            if let Some(target) = absolute(tree, &src.module, &r.segments) {
                let target = [target.as_slice(), &abs[k + 1..]].concat();
                if let Some(f) = defining_file(tree, &target, depth + 1) {
                    return Some(f);
                }
            }
        }
    }
    Some(src)
}

/// Each path `src` names, made absolute.
fn imports(tree: &Tree, src: &Source) -> Vec<(PathRef, Vec<String>)> {
    let kids = children(tree, &src.module);
    path_refs(src, &kids)
        .into_iter()
        .filter_map(|r| absolute(tree, &src.module, &r.segments).map(|a| (r, a)))
        .collect()
}

/// Imports that run uphill: `file:line: module imports other`.
fn uphill_imports(tree: &Tree) -> Vec<String> {
    let mut violations = Vec::new();
    for src in tree.values().filter(|s| !s.module.is_empty()) {
        let module = &src.module[0];
        let floor = floor_of(module)
            .unwrap_or_else(|| panic!("lib/{}: module `{module}` is on no floor", src.rel));
        for (r, abs) in imports(tree, src) {
            let Some(used) = abs.first() else { continue };
            if floor_of(used).is_some_and(|f| f > floor) {
                violations.push(format!(
                    "lib/{}:{}: {module} imports {}",
                    src.rel,
                    r.line,
                    abs.join("::")
                ));
            }
        }
    }
    violations
}

/// The file-level import graph among the files of `modules`: file →
/// (file it imports from, line). A module file's re-export of its own
/// children (`pub use child::X`) is the module tree, not an import.
fn file_graph(tree: &Tree, modules: &[&str]) -> BTreeMap<String, BTreeMap<String, usize>> {
    let inside = |s: &Source| {
        s.module
            .first()
            .is_some_and(|m| modules.contains(&m.as_str()))
    };
    let mut graph: BTreeMap<String, BTreeMap<String, usize>> = BTreeMap::new();
    for src in tree.values().filter(|s| inside(s)) {
        let node = graph.entry(src.rel.clone()).or_default();
        for (r, abs) in imports(tree, src) {
            if r.reexport && abs.len() > src.module.len() && abs.starts_with(&src.module) {
                continue;
            }
            match defining_file(tree, &abs, 0) {
                Some(dst) if inside(dst) && dst.rel != src.rel => {
                    node.entry(dst.rel.clone()).or_insert(r.line);
                }
                _ => {}
            }
        }
    }
    graph
}

/// The groups of two or more files that import each other, directly or
/// through a cycle (the graph's strongly connected components), each
/// with its edges as `a:line → b`.
fn import_loops(graph: &BTreeMap<String, BTreeMap<String, usize>>) -> Vec<Vec<String>> {
    let reach = |from: &str| {
        let mut seen = BTreeSet::new();
        let mut stack = vec![from.to_string()];
        while let Some(n) = stack.pop() {
            for next in graph.get(&n).into_iter().flat_map(|e| e.keys()) {
                if seen.insert(next.clone()) {
                    stack.push(next.clone());
                }
            }
        }
        seen
    };
    let reach: BTreeMap<&String, BTreeSet<String>> = graph.keys().map(|n| (n, reach(n))).collect();
    let mut done = BTreeSet::new();
    let mut loops = Vec::new();
    for (n, r) in &reach {
        if done.contains(*n) || !r.contains(*n) {
            continue;
        }
        let group: BTreeSet<&String> = r
            .iter()
            .filter_map(|m| reach.get_key_value(m))
            .filter(|(_, rm)| rm.contains(*n))
            .map(|(m, _)| *m)
            .collect();
        let mut edges = Vec::new();
        for a in &group {
            for (b, line) in &graph[*a] {
                if group.contains(b) {
                    edges.push(format!("lib/{a}:{line} → lib/{b}"));
                }
            }
        }
        done.extend(group.iter().map(|g| g.to_string()));
        loops.push(edges);
    }
    loops
}

#[test]
fn no_module_imports_one_on_a_higher_floor() {
    let violations = uphill_imports(&library_tree());
    assert!(
        violations.is_empty(),
        "uphill imports:\n{}",
        violations.join("\n")
    );
}

/// Import loops between files of train/ and stein/ that are known and
/// being taken apart, as pairs of files that import each other. The check
/// below ignores the two imports of each pair, and fails once a pair no
/// longer imports each other: then delete the pair here. Keep it empty
/// otherwise.
const KNOWN_LOOPS: &[(&str, &str)] = &[];

#[test]
fn no_files_of_train_and_stein_import_each_other() {
    let mut graph = file_graph(&library_tree(), &["train", "stein"]);
    for (a, b) in KNOWN_LOOPS {
        let imports = |x: &str, y: &str| graph.get(x).is_some_and(|e| e.contains_key(y));
        assert!(
            imports(a, b) && imports(b, a),
            "lib/{a} and lib/{b} no longer import each other: delete the pair from KNOWN_LOOPS"
        );
        graph.get_mut(*a).unwrap().remove(*b);
        graph.get_mut(*b).unwrap().remove(*a);
    }
    let loops: Vec<String> = import_loops(&graph)
        .iter()
        .map(|edges| edges.join("\n  "))
        .collect();
    assert!(
        loops.is_empty(),
        "files that import each other (directly or through a cycle):\n  {}",
        loops.join("\n\n  ")
    );
}

#[test]
fn no_library_file_is_longer_than_600_lines() {
    let penalty_room = lib_dir().join("stein").join("penalty");
    let long: Vec<String> = library_files()
        .into_iter()
        .filter_map(|f| {
            let n = code_lines(&fs::read_to_string(&f).unwrap()).len();
            let max = if f.starts_with(&penalty_room) {
                MAX_PENALTY_FILE_LINES
            } else {
                MAX_FILE_LINES
            };
            (n > max).then(|| format!("{}: {n} lines (at most {max})", f.display()))
        })
        .collect();
    assert!(
        long.is_empty(),
        "files over their line limit:\n{}",
        long.join("\n")
    );
}

/// The files a training step runs through (lib/device/transfers.rs): the
/// loop, the step, the methods and their attacks, the penalty, the
/// optimiser, the augmentation and the score lookup.
const STEP_FILES: &[&str] = &[
    "train/epochs.rs",
    "train/step.rs",
    "train/losses.rs",
    "train/method.rs",
    "train/awp.rs",
    "train/ema.rs",
    "attack/pgd.rs",
    "stein/mod.rs",
    "stein/penalty/mod.rs",
    "stein/penalty/chunked.rs",
    "stein/penalty/estimator.rs",
    "stein/penalty/coordinates.rs",
    "stein/penalty/controls.rs",
    "stein/penalty/subsample.rs",
    "stein/penalty/ramp.rs",
    "optim/flat.rs",
    "data/augment.rs",
];

/// Calls that copy between host and device or read a device value on the
/// host, outside lib/device/transfers.rs.
const RAW_TRANSFERS: &[&str] = &[
    "from_slice(",
    "double_value(",
    "int64_value(",
    "::try_from(",
    ".to_device(Device::Cpu)",
];

/// `RAW_TRANSFERS` found in the code (not the unit tests) of `text`.
fn raw_transfers(text: &str) -> Vec<String> {
    code_lines(text)
        .iter()
        .enumerate()
        .filter(|(_, l)| !l.trim_start().starts_with("//"))
        .filter_map(|(i, l)| {
            let hit = RAW_TRANSFERS.iter().find(|r| l.contains(*r))?;
            Some(format!("{}: {hit} in `{}`", i + 1, l.trim()))
        })
        .collect()
}

#[test]
fn the_step_moves_data_only_through_the_counted_transfers() {
    let mut found = Vec::new();
    for rel in STEP_FILES {
        let text = fs::read_to_string(lib_dir().join(rel)).unwrap();
        found.extend(
            raw_transfers(&text)
                .into_iter()
                .map(|h| format!("lib/{rel}:{h}")),
        );
    }
    assert!(
        found.is_empty(),
        "raw host↔device traffic in the step's files (use lib/device/transfers.rs, \
         once per epoch):\n{}",
        found.join("\n")
    );
    // The scan sees what it claims to, and not the unit tests.
    let sample = "fn f(t: &Tensor) -> f64 {\n    t.double_value(&[])\n}\n\
                  #[cfg(test)]\nmod tests { fn g() { Tensor::from_slice(&[1]); } }\n";
    assert_eq!(raw_transfers(sample).len(), 1);
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

/// A small made-up library for the self-tests: `data` imports uphill in
/// every form, train/ has a loop through a re-export, stein/ a loop of
/// three files.
const FAKE_LIBRARY: &[(&str, &str)] = &[
    ("data/mod.rs", "pub mod toy;\nuse super::train::Plan;\n"),
    (
        "data/toy.rs",
        "use crate::{\n    error::Error,\n    stats::{eval::Eval, table as t},\n};\n\
         // use crate::sweep::x;\nconst S: &str = \"crate::report::x\";\n\
         fn f<'a>(c: char) { let _ = '\"'; crate::attack::run(); }\n\
         #[cfg(test)]\nmod tests { use crate::sweep::x; }\n",
    ),
    (
        "train/mod.rs",
        "mod a;\nmod b;\nmod c;\npub use a::A;\npub struct Plan;\n",
    ),
    ("train/a.rs", "use super::b::{self, B};\npub struct A;\n"),
    ("train/b.rs", "pub(crate) use super::A;\npub struct B;\n"),
    ("train/c.rs", "use super::Plan;\n"),
    ("stein/mod.rs", "pub mod x;\npub mod y;\npub mod z;\n"),
    ("stein/x.rs", "use crate::stein::y::Y;\npub fn g() {}\n"),
    ("stein/y.rs", "use super::z::{\n    Z,\n};\npub struct Y;\n"),
    (
        "stein/z.rs",
        "pub struct Z;\nfn f() {\n    super::x::g()\n}\n",
    ),
];

#[test]
fn the_checks_see_what_they_claim_to() {
    let tree = tree_of(FAKE_LIBRARY);
    // Imports over several lines and in nested braces, one path each.
    let toy = &tree[&vec!["data".to_string(), "toy".to_string()]];
    let paths: Vec<(usize, String)> = path_refs(toy, &BTreeSet::new())
        .iter()
        .map(|r| (r.line, r.segments.join("::")))
        .collect();
    assert_eq!(
        paths,
        [
            (2, "crate::error::Error".to_string()),
            (3, "crate::stats::eval::Eval".to_string()),
            (3, "crate::stats::table".to_string()),
            (7, "crate::attack::run".to_string()),
        ],
        "comments, strings, char literals and the test part are no imports"
    );
    // `super::` from a mod.rs is the crate root; braces, lines and inline
    // paths are seen; ground-floor imports are allowed.
    assert_eq!(
        uphill_imports(&tree),
        [
            "lib/data/mod.rs:2: data imports train::Plan",
            "lib/data/toy.rs:3: data imports stats::eval::Eval",
            "lib/data/toy.rs:3: data imports stats::table",
            "lib/data/toy.rs:7: data imports attack::run",
        ]
    );
    // `super::A` is resolved through train/mod.rs's re-export to a.rs;
    // mod.rs re-exporting its child is no import of it.
    let graph = file_graph(&tree, &["train", "stein"]);
    assert_eq!(
        graph["train/c.rs"].keys().collect::<Vec<_>>(),
        ["train/mod.rs"]
    );
    assert!(graph["train/mod.rs"].is_empty());
    assert_eq!(
        import_loops(&graph),
        [
            vec![
                "lib/stein/x.rs:1 → lib/stein/y.rs",
                "lib/stein/y.rs:2 → lib/stein/z.rs",
                "lib/stein/z.rs:3 → lib/stein/x.rs",
            ],
            vec![
                "lib/train/a.rs:1 → lib/train/b.rs",
                "lib/train/b.rs:1 → lib/train/a.rs",
            ],
        ]
    );
    // `super::super::` climbs two levels; other crates are no paths here.
    let module = [
        "train".to_string(),
        "posterior".to_string(),
        "ball".to_string(),
    ];
    let segs = |p: &str| p.split("::").map(String::from).collect::<Vec<_>>();
    assert_eq!(
        absolute(&tree, &module, &segs("super::super::method::M")),
        Some(segs("train::method::M"))
    );
    assert_eq!(absolute(&tree, &module, &segs("std::fs")), None);

    // The function scanner: a long function, a test part.
    let body = "    let x = 1;\n".repeat(130);
    let text = format!("fn long() {{\n{body}}}\n#[cfg(test)]\nfn ignored() {{\n}}\n");
    assert_eq!(functions(&text), vec![(1, 132, "fn long() {".to_string())]);
    assert_eq!(floor_of("stats"), Some(8));
    assert!(floor_of("train") < floor_of("stats"));
}

/// The files inside a run folder (lib/layout.rs): scripts reach them
/// through the binaries (`report run`, `sweep collect`, …), never by name.
const RUN_FOLDER_FILES: &[&str] = &[
    taser::layout::MODEL_WEIGHTS,
    taser::layout::MODEL_SIDECAR,
    taser::layout::BEST_WEIGHTS,
    taser::layout::LAST_WEIGHTS,
    taser::layout::METRICS,
    taser::layout::RESUME_WEIGHTS,
    taser::layout::RESUME_STATE,
    taser::layout::PER_SAMPLE,
    taser::layout::SUMMARY,
    taser::layout::ATTACK_STATE,
    taser::layout::SUBSET,
    taser::layout::FAILED,
    taser::layout::JOB_CONFIG,
    taser::layout::ATTEMPTS,
    taser::layout::SCORES,
];

/// `file:line` of each line (a `#` comment aside) of a bash or Python
/// script that names a run-folder file.
fn layout_names_in_script(name: &str, text: &str) -> Vec<String> {
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim_start().starts_with('#'))
        .filter(|(_, l)| RUN_FOLDER_FILES.iter().any(|f| l.contains(f)))
        .map(|(i, _)| format!("{name}:{}", i + 1))
        .collect()
}

#[test]
fn scripts_read_run_folders_through_the_binaries() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut found = Vec::new();
    for dir in ["scripts", "slurm", "data", "analysis"] {
        let mut files: Vec<PathBuf> = fs::read_dir(root.join(dir))
            .unwrap()
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                let ext = p.extension().and_then(|e| e.to_str()).unwrap_or("");
                matches!(ext, "sh" | "py" | "sbatch")
            })
            .collect();
        files.sort();
        for f in files {
            let rel = f.strip_prefix(root).unwrap().display().to_string();
            found.extend(layout_names_in_script(
                &rel,
                &fs::read_to_string(&f).unwrap(),
            ));
        }
    }
    assert!(found.is_empty(), "scripts name run-folder files: {found:?}");
    // The check itself: a code line is seen, a comment is not.
    let sample = "# reads model.json\nopen(os.path.join(run, \"metrics.csv\"))\n";
    assert_eq!(layout_names_in_script("s.py", sample), ["s.py:2"]);
}
