//! Where a grid file sets a flag, for errors that point at the grid line
//! behind a refused command-line flag.
use super::toml::{entries, Ctx};
use super::{Grid, Step};
use toml_edit::Document;

/// Whether grid parameter `name` (as written in `[axes]`: `lr`,
/// `attack.eps`, `train.lr`) sets flag `flag` of `section`.
fn addresses(name: &str, section: &str, flag: &str) -> bool {
    match name.split_once('.') {
        Some((s, f)) => f == flag && (s == section || (s != "attack" && section != "attack")),
        None => name == flag && section != "attack",
    }
}

impl Grid {
    /// Where the grid file sets flag `flag` of `section` (`train`,
    /// `finetune`, `attack` or `scores.NAME`): the key as errors name it
    /// and its 1-based line; None when the file (read again from
    /// [`Grid::path`]) no longer sets it.
    pub fn flag_origin(&self, section: &str, flag: &str) -> Option<(String, usize)> {
        let src = std::fs::read_to_string(&self.path).ok()?;
        let ctx = Ctx {
            src: &src,
            path: &self.path,
        };
        let doc = Document::parse(src.as_str()).ok()?;
        let root = doc.as_table();
        let mut table = Some(root);
        for part in section.split('.') {
            table = table.and_then(|t| t.get(part)).and_then(|i| i.as_table());
        }
        if let Some((key, item)) = table.and_then(|t| t.get_key_value(flag)) {
            return Some((format!("{section}.{flag}"), ctx.key_line(key, item)));
        }
        let axes = root.get("axes").and_then(|i| i.as_table())?;
        for (name, key, item) in entries(axes) {
            let line = ctx.key_line(key, item);
            if addresses(&name, section, flag) {
                return Some((format!("axes.{name}"), line));
            }
            let tables = item.as_array().into_iter().flat_map(|a| a.iter());
            for it in tables.filter_map(|v| v.as_inline_table()) {
                for (k, x) in it.iter() {
                    let inner: Vec<String> = match x.as_inline_table() {
                        Some(t) if Step::parse(k).is_some() => {
                            t.iter().map(|(a, _)| format!("{k}.{a}")).collect()
                        }
                        _ => vec![k.to_string()],
                    };
                    if let Some(n) = inner.iter().find(|n| addresses(n, section, flag)) {
                        return Some((format!("axes.{name}.{n}"), line));
                    }
                }
            }
        }
        None
    }
}
