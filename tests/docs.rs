//! The documentation's own rules, checked on the files:
//! - README.md stays a front door: at most [`README_MAX_BYTES`] bytes;
//! - every relative link (`[text](path)`, `![alt](path)`, `[text](#anchor)`,
//!   `[text](path#anchor)`) in README.md, ARCHITECTURE.md, docs/*.md and
//!   analysis/README.md names a file or folder that exists, and an anchor
//!   names a heading of the target file (GitHub's heading slugs);
//! - no markdown file of the repository points outside it: none contains
//!   `../shared` or `SPEC §`.
//!
//! Each check has a self-test on a temporary tree holding the defect.
use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};

/// README.md's size limit in bytes (12 KiB).
const README_MAX_BYTES: u64 = 12 * 1024;

/// Texts no markdown file may contain: they point outside the repository.
const FORBIDDEN: &[&str] = &["../shared", "SPEC §"];

/// Folders never searched for markdown files (build output, the Python
/// environment, git's own data, the fetched-data cache).
const SKIPPED_DIRS: &[&str] = &["target", ".venv", ".git", "cache", "dist", "runs"];

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The markdown files whose links are checked, relative to `root`.
fn linked_docs(root: &Path) -> Vec<PathBuf> {
    let mut files = vec![
        root.join("README.md"),
        root.join("ARCHITECTURE.md"),
        root.join("analysis/README.md"),
    ];
    let mut docs: Vec<PathBuf> = fs::read_dir(root.join("docs"))
        .map(|rd| rd.map(|e| e.unwrap().path()).collect())
        .unwrap_or_default();
    docs.retain(|p| p.extension().is_some_and(|e| e == "md"));
    docs.sort();
    files.extend(docs);
    files
}

/// Every `.md` file under `dir`, symlinked folders and [`SKIPPED_DIRS`] left out.
fn markdown_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for p in entries {
        let meta = fs::symlink_metadata(&p).unwrap();
        let name = p.file_name().unwrap().to_string_lossy().to_string();
        if meta.is_dir() {
            if !SKIPPED_DIRS.contains(&name.as_str()) {
                markdown_files(&p, out);
            }
        } else if meta.is_file() && name.ends_with(".md") {
            out.push(p);
        }
    }
}

/// The lines of `text` outside fenced code blocks (``` or ~~~), with their
/// 1-based line numbers.
fn prose_lines(text: &str) -> Vec<(usize, &str)> {
    let mut fence: Option<&str> = None;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let trimmed = line.trim_start();
        let marker = ["```", "~~~"].into_iter().find(|m| trimmed.starts_with(m));
        match (fence, marker) {
            (None, Some(m)) => fence = Some(m),
            (Some(f), Some(m)) if f == m => fence = None,
            (None, None) => out.push((i + 1, line)),
            _ => {}
        }
    }
    out
}

/// `line` with its inline code spans (`…`) removed.
fn without_code_spans(line: &str) -> String {
    let mut out = String::new();
    let mut in_code = false;
    for c in line.chars() {
        if c == '`' {
            in_code = !in_code;
        } else if !in_code {
            out.push(c);
        }
    }
    out
}

/// The link targets of one line: what stands between `](` and the matching
/// `)`, up to the first space (a title follows it).
fn link_targets(line: &str) -> Vec<String> {
    let line = without_code_spans(line);
    let mut out = Vec::new();
    let mut rest = line.as_str();
    while let Some(start) = rest.find("](") {
        let after = &rest[start + 2..];
        let mut depth = 0usize;
        let mut end = after.len();
        for (i, c) in after.char_indices() {
            match c {
                '(' => depth += 1,
                ')' if depth == 0 => {
                    end = i;
                    break;
                }
                ')' => depth -= 1,
                _ => {}
            }
        }
        // A destination is one word, optionally followed by a quoted or
        // parenthesised title; anything else (`[0,1](2x − 1)`) is no link.
        let mut words = after[..end].trim().splitn(2, char::is_whitespace);
        let target = words.next().unwrap_or("");
        let title = words.next().unwrap_or("").trim_start();
        if title.is_empty() || title.starts_with(['"', '\'', '(']) {
            out.push(target.trim_matches(|c| c == '<' || c == '>').to_string());
        }
        rest = &after[end.min(after.len())..];
    }
    out
}

/// GitHub's anchor of a heading text: lower case, every character that is
/// not a letter, digit, `_`, `-` or space dropped, spaces turned into `-`.
fn slug(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || matches!(c, '_' | '-' | ' '))
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

/// The anchors of a markdown text's headings (ATX `#` headings outside code
/// blocks); a repeated slug gets `-1`, `-2`, … as on GitHub.
fn anchors(text: &str) -> Vec<String> {
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut out = Vec::new();
    for (_, line) in prose_lines(text) {
        let hashes = line.chars().take_while(|c| *c == '#').count();
        if hashes == 0 || hashes > 6 || !line[hashes..].starts_with(' ') {
            continue;
        }
        // GitHub keeps the text of a heading's code spans (only the
        // backticks go, and `slug` drops them as punctuation).
        let base = slug(&line[hashes..]);
        let n = seen.entry(base.clone()).or_insert(0);
        out.push(if *n == 0 {
            base.clone()
        } else {
            format!("{base}-{n}")
        });
        *n += 1;
    }
    out
}

/// Whether a link target leaves the repository's files (a URL or an e-mail).
fn is_external(target: &str) -> bool {
    target.contains("://") || target.starts_with("mailto:")
}

/// Every broken relative link of `file`, as `file:line: target (why)`.
fn broken_links(file: &Path) -> Vec<String> {
    let text = fs::read_to_string(file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    let dir = file.parent().unwrap();
    let mut broken = Vec::new();
    for (n, line) in prose_lines(&text) {
        for target in link_targets(line) {
            if target.is_empty() || is_external(&target) {
                continue;
            }
            let (path, anchor) = match target.split_once('#') {
                Some((p, a)) => (p, Some(a)),
                None => (target.as_str(), None),
            };
            let resolved = if path.is_empty() {
                file.to_path_buf()
            } else {
                dir.join(path)
            };
            let at = format!("{}:{n}: {target}", file.display());
            if !resolved.exists() {
                broken.push(format!("{at} (no such file: {})", resolved.display()));
                continue;
            }
            let Some(anchor) = anchor else { continue };
            if resolved.is_dir() || resolved.extension().is_none_or(|e| e != "md") {
                broken.push(format!("{at} (an anchor into a file that is not markdown)"));
                continue;
            }
            let heads = anchors(&fs::read_to_string(&resolved).unwrap());
            if !heads.iter().any(|h| h == anchor) {
                broken.push(format!(
                    "{at} (no heading with anchor #{anchor} in {})",
                    resolved.display()
                ));
            }
        }
    }
    broken
}

/// Every occurrence of a [`FORBIDDEN`] text in the markdown files under
/// `root`, as `file:line: text`.
fn outside_pointers(root: &Path) -> Vec<String> {
    let mut files = Vec::new();
    markdown_files(root, &mut files);
    let mut hits = Vec::new();
    for f in files {
        let text = fs::read_to_string(&f).unwrap_or_default();
        for (i, line) in text.lines().enumerate() {
            for bad in FORBIDDEN {
                if line.contains(bad) {
                    hits.push(format!("{}:{}: {bad}", f.display(), i + 1));
                }
            }
        }
    }
    hits
}

#[test]
fn the_readme_is_at_most_12_kib() {
    let size = fs::metadata(root().join("README.md")).unwrap().len();
    assert!(
        size <= README_MAX_BYTES,
        "README.md is {size} bytes, over {README_MAX_BYTES}: move detail to docs/"
    );
}

#[test]
fn every_relative_link_of_the_docs_resolves() {
    let files = linked_docs(&root());
    assert!(
        files.len() >= 8,
        "expected README, ARCHITECTURE, analysis/README and docs/*.md, found {files:?}"
    );
    let broken: Vec<String> = files.iter().flat_map(|f| broken_links(f)).collect();
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
}

#[test]
fn no_markdown_file_points_outside_the_repository() {
    let hits = outside_pointers(&root());
    assert!(
        hits.is_empty(),
        "pointers outside the repository:\n{}",
        hits.join("\n")
    );
}

#[test]
fn github_slugs_drop_punctuation_and_number_repeats() {
    assert_eq!(slug("`train`"), "train");
    assert_eq!(
        slug("Robust methods and SCORE's losses"),
        "robust-methods-and-scores-losses"
    );
    assert_eq!(slug("SCORE Figures 1–3 (toy)"), "score-figures-13-toy");
    assert_eq!(
        slug("TRADES at ε = 0.3 on mnist-5k"),
        "trades-at-ε--03-on-mnist-5k"
    );
    let text = "# A\n```sh\n# not a heading\n```\n## A\n## `b_c` d\n";
    assert_eq!(anchors(text), vec!["a", "a-1", "b_c-d"]);
}

#[test]
fn link_targets_skip_code_and_titles() {
    assert_eq!(
        link_targets("see [a](x.md#y) and ![i](img.png \"title\") but `[no](z.md)`"),
        vec!["x.md#y", "img.png"]
    );
    assert_eq!(link_targets("[f](f(1).md)"), vec!["f(1).md"]);
    assert!(link_targets("s_[−1,1](2x − 1)").is_empty());
}

#[test]
fn self_test_a_broken_link_a_missing_anchor_and_an_outside_pointer_are_found() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    fs::create_dir_all(root.join("docs")).unwrap();
    fs::write(root.join("docs/OK.md"), "# Good heading\n\ntext\n").unwrap();
    let readme = root.join("README.md");
    fs::write(
        &readme,
        "# Top\n\n[fine](docs/OK.md#good-heading) [self](#top) [web](https://example.org/x)\n\
         [gone](docs/MISSING.md)\n[bad anchor](docs/OK.md#no-such-heading)\n\
         ```sh\n[in code](nowhere.md)\n```\n\
         The method is in ../shared/SPEC.md, see SPEC §2.\n",
    )
    .unwrap();
    let broken = broken_links(&readme);
    assert_eq!(broken.len(), 2, "{broken:?}");
    assert!(broken[0].contains("docs/MISSING.md") && broken[0].contains("no such file"));
    assert!(broken[1].contains("#no-such-heading") && broken[1].contains("no heading"));

    fs::create_dir_all(root.join("target/doc")).unwrap();
    fs::write(root.join("target/doc/x.md"), "../shared").unwrap();
    let hits = outside_pointers(root);
    assert_eq!(hits.len(), 2, "{hits:?}");
    assert!(hits.iter().all(|h| h.contains("README.md:9")));
}
