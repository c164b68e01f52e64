//! Every flag the suite's messages name exists: each `--flag` in a string
//! literal of lib/ and bin/ (error reasons, "Fix:" texts, JsonFixes, notes,
//! warnings — outside `#[cfg(test)]` code) must appear in the `--help` of
//! at least one binary or subcommand. A message that sends a user to a
//! flag that does not exist wastes the one moment they read it.
mod common;
use common::*;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// The binaries of the suite (each has a `--help`).
const BINARIES: [&str; 7] = [
    "attack",
    "bootstrap",
    "finetune",
    "report",
    "score-precompute",
    "sweep",
    "train",
];

/// Flags that literals name but that belong to other programs the suite
/// drives or mentions, with why: the flag is not ours to have.
const FOREIGN: [(&str, &str); 8] = [
    (
        "--gpus",
        "sbatch/srun (Slurm), in the fix of a GPU the job expected but libtorch cannot see",
    ),
    (
        "--ntasks-per-node",
        "srun/sbatch (Slurm), in `sweep plan`'s launch lines",
    ),
    ("--mpi", "srun (Slurm), in `sweep plan`'s launch lines"),
    ("--array", "sbatch (Slurm), in `sweep plan`'s launch lines"),
    (
        "--map-by",
        "mpirun (Open MPI), in `sweep plan`'s launch lines",
    ),
    (
        "--bind-to",
        "mpirun (Open MPI), in `sweep plan`'s launch lines",
    ),
    (
        "--parsable",
        "sbatch (Slurm), in `sweep plan`'s job-array lines",
    ),
    (
        "--dependency",
        "sbatch (Slurm), in `sweep plan`'s job-array lines",
    ),
];

/// The string literals of Rust source `text`, with their line numbers, as
/// their values (escapes resolved, `\`-newline continuations joined);
/// comments, char literals and lifetimes are skipped, raw strings read.
fn string_literals(text: &str) -> Vec<(usize, String)> {
    let c: Vec<char> = text.chars().collect();
    let (mut i, mut line, mut out) = (0, 1, Vec::new());
    while i < c.len() {
        match c[i] {
            '\n' => line += 1,
            '/' if c.get(i + 1) == Some(&'/') => {
                while i < c.len() && c[i] != '\n' {
                    i += 1;
                }
                continue;
            }
            '/' if c.get(i + 1) == Some(&'*') => {
                while i + 1 < c.len() && !(c[i] == '*' && c[i + 1] == '/') {
                    line += usize::from(c[i] == '\n');
                    i += 1;
                }
                i += 2;
                continue;
            }
            '\'' => {
                // 'x', '\n', '\'' are char literals; 'a (no closing quote) a lifetime.
                if c.get(i + 1) == Some(&'\\') {
                    i += 3;
                    while i < c.len() && c[i] != '\'' {
                        i += 1;
                    }
                } else if c.get(i + 2) == Some(&'\'') {
                    i += 2;
                }
            }
            'r' if raw_start(&c, i).is_some() && !ident_char(c.get(i.wrapping_sub(1))) => {
                let hashes = raw_start(&c, i).unwrap_or(0);
                let start_line = line;
                let mut s = String::new();
                i += 2 + hashes;
                while i < c.len() && !raw_end(&c, i, hashes) {
                    line += usize::from(c[i] == '\n');
                    s.push(c[i]);
                    i += 1;
                }
                out.push((start_line, s));
                i += 1 + hashes;
                continue;
            }
            '"' => {
                let (s, next, lines) = quoted(&c, i + 1);
                out.push((line, s));
                line += lines;
                i = next;
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    out
}

fn ident_char(c: Option<&char>) -> bool {
    c.is_some_and(|c| c.is_alphanumeric() || *c == '_')
}

/// At `r"` or `r#…#"`: the number of `#`.
fn raw_start(c: &[char], i: usize) -> Option<usize> {
    let hashes = c[i + 1..].iter().take_while(|&&x| x == '#').count();
    (c.get(i + 1 + hashes) == Some(&'"')).then_some(hashes)
}

fn raw_end(c: &[char], i: usize, hashes: usize) -> bool {
    c[i] == '"' && (1..=hashes).all(|k| c.get(i + k) == Some(&'#'))
}

/// A `"…"` literal whose body starts at `i`: its value, the index after
/// the closing quote, and the newlines it spans.
fn quoted(c: &[char], mut i: usize) -> (String, usize, usize) {
    let (mut s, mut lines) = (String::new(), 0);
    while i < c.len() && c[i] != '"' {
        if c[i] == '\\' {
            i += 1;
            match c.get(i) {
                Some('\n') => {
                    lines += 1;
                    i += 1;
                    while i < c.len() && c[i].is_whitespace() {
                        lines += usize::from(c[i] == '\n');
                        i += 1;
                    }
                    continue;
                }
                Some('n') => s.push('\n'),
                Some(&x) => s.push(x),
                None => break,
            }
        } else {
            lines += usize::from(c[i] == '\n');
            s.push(c[i]);
        }
        i += 1;
    }
    (s, i + 1, lines)
}

/// The `--flag` tokens of `text` (lowercase, digits and inner dashes; a
/// `--` not followed by a letter, as in `--{name}`, is no flag).
fn flags(text: &str) -> Vec<String> {
    let c: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    for i in 0..c.len().saturating_sub(2) {
        let starts = c[i] == '-' && c[i + 1] == '-' && c[i + 2].is_ascii_lowercase();
        let boundary = i == 0 || !(c[i - 1].is_alphanumeric() || c[i - 1] == '-');
        if starts && boundary {
            let name: String = c[i + 2..]
                .iter()
                .take_while(|x| x.is_ascii_lowercase() || x.is_ascii_digit() || **x == '-')
                .collect();
            out.push(format!("--{}", name.trim_end_matches('-')));
        }
    }
    out
}

/// `file:line: --flag` for each flag named by a literal of `source` (up to
/// its `#[cfg(test)]`) that `known` lacks.
fn unknown_flags(file: &str, source: &str, known: &BTreeSet<String>) -> Vec<String> {
    let code = source.split("#[cfg(test)]").next().unwrap_or(source);
    let foreign: BTreeSet<&str> = FOREIGN.iter().map(|(f, _)| *f).collect();
    let mut out = Vec::new();
    for (line, literal) in string_literals(code) {
        for flag in flags(&literal) {
            if !known.contains(&flag) && !foreign.contains(flag.as_str()) {
                out.push(format!("{file}:{line}: {flag} (in {literal:?})"));
            }
        }
    }
    out
}

fn rust_files(dir: &Path, into: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, into);
        } else if path.extension().is_some_and(|e| e == "rs") {
            into.push(path);
        }
    }
}

/// The subcommands a `--help` lists under `Commands:` (but `help`).
fn subcommands(help: &str) -> Vec<String> {
    help.lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|w| *w != "help")
        .map(String::from)
        .collect()
}

/// Every flag any binary or subcommand lists in its `--help`.
fn known_flags() -> BTreeSet<String> {
    let help = |args: &[&str]| {
        let (bin, rest) = args.split_first().unwrap();
        let o = run(bin, &[rest, &["--help"]].concat());
        assert!(o.status.success(), "{args:?} --help: {}", stderr(&o));
        stdout(&o)
    };
    let mut known = BTreeSet::new();
    for bin in BINARIES {
        let top = help(&[bin]);
        known.extend(flags(&top));
        for sub in subcommands(&top) {
            known.extend(flags(&help(&[bin, &sub])));
        }
    }
    known
}

#[test]
fn every_flag_a_message_names_exists() {
    let known = known_flags();
    assert!(
        known.contains("--eps") && known.contains("--runs"),
        "{known:?}"
    );
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    rust_files(&root.join("lib"), &mut files);
    rust_files(&root.join("bin"), &mut files);
    files.sort();
    let (mut bad, mut named) = (Vec::new(), 0);
    for file in &files {
        let source = std::fs::read_to_string(file).unwrap();
        let name = file.strip_prefix(root).unwrap().display().to_string();
        named += string_literals(&source)
            .iter()
            .map(|(_, l)| flags(l).len())
            .sum::<usize>();
        bad.extend(unknown_flags(&name, &source, &known));
    }
    eprintln!(
        "{named} flags named in the messages of {} files",
        files.len()
    );
    assert!(
        named > 50,
        "only {named} flags found in messages: the scanner is broken"
    );
    assert!(
        bad.is_empty(),
        "messages name flags no binary has:\n{}",
        bad.join("\n")
    );
}

#[test]
fn the_scanner_finds_a_planted_bad_flag_and_passes_real_ones() {
    let known: BTreeSet<String> = ["--eps", "--n-eval", "--out"].map(String::from).into();
    let source = r#####"
        // "--commented-out" is not a message.
        let c = '"'; let q = '\''; fn f<'a>(x: &'a str) {}
        let e = Error::invalid("--eps", 8, "use --eps 8/255 or --n-eval 10");
        let fix = "rerun with --out DIR, or \
                   --subset-size 100 to draw fewer";
        let raw = r#"a "quoted" --no-such-flag"#;
        let dynamic = format!("--{name}: {change} (--)");
        #[cfg(test)]
        mod tests { const T: &str = "--test-only"; }
    "#####;
    let bad = unknown_flags("planted.rs", source, &known);
    assert_eq!(bad.len(), 2, "{bad:#?}");
    assert!(
        bad[0].starts_with("planted.rs:5: --subset-size"),
        "{bad:#?}"
    );
    assert!(
        bad[1].starts_with("planted.rs:7: --no-such-flag"),
        "{bad:#?}"
    );
    assert_eq!(flags("a--b --x- -- --{y} ---z"), ["--x"]);
}
