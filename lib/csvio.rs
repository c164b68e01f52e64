//! CSV files, the one way the suite writes and reads them.
//!
//! Writing: a header line, then one record per row, comma-separated,
//! `\n`-terminated, a field quoted only when it holds a comma, a quote or a
//! line break; the whole file is written under a temporary name and renamed
//! ([`crate::fsutil::write_atomically`]), so a crash never leaves half a
//! file at the final name. Rows are serde records: a struct (its field
//! names are the header; [`write_records`]) or, for files whose columns are
//! only known at run time, a list of text fields under a given header
//! ([`write_table`]). Numbers are written as serde's CSV writer writes them
//! (`1.0`, `1e-7`) unless a field asks for Rust's `{}` form with
//! `#[serde(serialize_with = "crate::csvio::display")]` (`1`, `0.0000001`).
//!
//! Reading: the header, then rows deserialised into a struct
//! ([`read_records`]) or kept as text ([`read_table`]); or, for data sets
//! stored as CSV text without a header, rows of values
//! ([`parse_headerless`]). Every field is trimmed of surrounding spaces. A file that cannot be opened is
//! [`Error::MissingInput`]; a row that does not fit is
//! [`Error::CorruptInput`] naming the line (1 = the header) and the column.
use crate::error::{Error, Result};
use crate::fsutil::{create_parent_dir, write_bytes_atomically};
use serde::de::{self, DeserializeOwned, Visitor};
use serde::{Serialize, Serializer};
use std::fmt::Display;
use std::path::Path;

/// What a reader tells the user to do (each names a command or flag that
/// exists): when the file cannot be opened, and when it does not fit.
#[derive(Debug, Clone, Copy)]
pub struct Fixes<'a> {
    /// Fix when the file cannot be opened.
    pub missing: &'a str,
    /// Fix when a row or the header does not fit.
    pub corrupt: &'a str,
}

/// A CSV file read as text: its header and its rows (each as long as the
/// header).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Table {
    pub header: Vec<String>,
    pub rows: Vec<Vec<String>>,
}

impl Table {
    /// The position of column `name`, if the header has it.
    pub fn column(&self, name: &str) -> Option<usize> {
        self.header.iter().position(|h| h == name)
    }
}

/// serde `serialize_with` for a field written as Rust's `{}` formats it
/// (for `f64`: the shortest text that reads back the same, never an
/// exponent: `1`, `0.25`, `0.0000001`).
pub fn display<T: Display, S: Serializer>(value: &T, s: S) -> std::result::Result<S::Ok, S::Error> {
    s.collect_str(value)
}

/// Writes `rows` to `path` atomically (creating its folder): a header of
/// `R`'s field names, then one record per row. `R` is a struct of scalar
/// fields (`Option` ones empty when `None`); the header is written even
/// when there are no rows.
///
/// Errors: [`Error::OutputFailed`] when a row cannot be serialised (or `R`
/// is not such a struct), [`Error::Io`] when the file cannot be written.
pub fn write_records<R: Serialize + DeserializeOwned>(path: &Path, rows: &[R]) -> Result<()> {
    let header = field_names::<R>().ok_or_else(|| Error::OutputFailed {
        path: path.to_path_buf(),
        reason: format!(
            "rows of type {} are not a struct with named fields",
            std::any::type_name::<R>()
        ),
    })?;
    write_csv(path, header, rows)
}

/// Writes `header` and `rows` (text fields; each row as long as the header)
/// to `path` atomically, creating its folder: for files whose columns are
/// known only at run time.
///
/// Errors: [`Error::OutputFailed`] when a row's length differs from the
/// header's, [`Error::Io`] when the file cannot be written.
pub fn write_table<H: AsRef<str>>(path: &Path, header: &[H], rows: &[Vec<String>]) -> Result<()> {
    let header: Vec<&str> = header.iter().map(AsRef::as_ref).collect();
    write_csv(path, &header, rows)
}

fn write_csv<R: Serialize>(path: &Path, header: &[&str], rows: &[R]) -> Result<()> {
    let failed = |e: csv::Error| Error::OutputFailed {
        path: path.to_path_buf(),
        reason: e.to_string(),
    };
    let mut w = csv::WriterBuilder::new()
        .has_headers(false)
        .from_writer(Vec::new());
    w.write_record(header).map_err(failed)?;
    for row in rows {
        w.serialize(row).map_err(failed)?;
    }
    let bytes = w.into_inner().map_err(|e| Error::OutputFailed {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    create_parent_dir(path)?;
    write_bytes_atomically(path, &bytes)
}

/// Reads the CSV file at `path` into rows of `T`, matched to the header by
/// field name (a column `T` lacks is ignored; an `Option` field whose
/// column is absent or empty is `None` when it has `#[serde(default)]`).
///
/// Errors: [`Error::MissingInput`] when it cannot be opened,
/// [`Error::CorruptInput`] naming the line and column of the first field
/// that does not fit; each carries the matching fix from `fixes`.
pub fn read_records<T: DeserializeOwned>(path: &Path, fixes: Fixes<'_>) -> Result<Vec<T>> {
    let mut reader = open(path, fixes)?;
    let header = reader
        .headers()
        .map_err(|e| corrupt(path, fixes, &e, None, None))?
        .clone();
    reader
        .deserialize()
        .collect::<std::result::Result<Vec<T>, _>>()
        .map_err(|e| corrupt(path, fixes, &e, Some(&header), None))
}

/// Reads the CSV file at `path` as text: the header and every row.
///
/// Errors: [`Error::MissingInput`] when it cannot be opened,
/// [`Error::CorruptInput`] naming the line of a row whose length differs
/// from the header's or that is not UTF-8.
pub fn read_table(path: &Path, fixes: Fixes<'_>) -> Result<Table> {
    let mut reader = open(path, fixes)?;
    let header: Vec<String> = reader
        .headers()
        .map_err(|e| corrupt(path, fixes, &e, None, None))?
        .iter()
        .map(String::from)
        .collect();
    let mut rows = Vec::new();
    for record in reader.records() {
        let record = record.map_err(|e| corrupt(path, fixes, &e, None, None))?;
        rows.push(record.iter().map(String::from).collect());
    }
    Ok(Table { header, rows })
}

/// Parses `text`, CSV without a header read from `path` (named in errors),
/// into one `T` per non-empty line, each with its line number (from 1).
/// Rows may differ in length (a `Vec` row takes them all; the caller checks
/// the width).
///
/// Errors: [`Error::CorruptInput`] naming the line and column of the first
/// field that does not fit, with the fix `fix`.
pub fn parse_headerless<T: DeserializeOwned>(
    text: &str,
    path: &Path,
    fix: &str,
) -> Result<Vec<(u64, T)>> {
    let fixes = Fixes {
        missing: fix,
        corrupt: fix,
    };
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .trim(csv::Trim::All)
        .from_reader(text.as_bytes());
    let mut rows = Vec::new();
    let mut record = csv::StringRecord::new();
    // Lines counted from the bytes (the reader skips empty lines uncounted).
    let (mut line, mut counted) = (1u64, 0usize);
    loop {
        match reader.read_record(&mut record) {
            Ok(false) => return Ok(rows),
            Ok(true) => {
                // The record starts at its first byte that ends no line.
                let bytes = text.as_bytes();
                let mut start = record.position().map_or(counted, |p| p.byte() as usize);
                while matches!(bytes.get(start), Some(b'\n' | b'\r')) {
                    start += 1;
                }
                line += bytes[counted..start]
                    .iter()
                    .filter(|&&b| b == b'\n')
                    .count() as u64;
                counted = start;
                let row = record
                    .deserialize(None)
                    .map_err(|e| corrupt(path, fixes, &e, None, Some(line)))?;
                rows.push((line, row));
            }
            Err(e) => return Err(corrupt(path, fixes, &e, None, None)),
        }
    }
}

fn open(path: &Path, fixes: Fixes<'_>) -> Result<csv::Reader<std::fs::File>> {
    let missing = |reason: String| Error::MissingInput {
        path: path.to_path_buf(),
        reason,
        fix: fixes.missing.to_string(),
    };
    if !path.is_file() {
        let what = if path.is_dir() {
            "a folder, not a file"
        } else {
            "no such file"
        };
        return Err(missing(what.into()));
    }
    let file = std::fs::File::open(path).map_err(|e| missing(e.to_string()))?;
    Ok(csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        .from_reader(file))
}

/// A [`Error::CorruptInput`] saying where in the file `e` happened: the
/// line (`at_line`, else the reader's) and, when known, the column by its
/// header name.
fn corrupt(
    path: &Path,
    fixes: Fixes<'_>,
    e: &csv::Error,
    header: Option<&csv::StringRecord>,
    at_line: Option<u64>,
) -> Error {
    let line = |pos: Option<&csv::Position>| match (at_line, pos) {
        (Some(n), _) => format!("line {n}"),
        (None, Some(p)) => format!("line {}", p.line()),
        (None, None) => "a line".to_string(),
    };
    let column = |field: u64| {
        let name = header.and_then(|h| h.get(field as usize));
        match name {
            Some(name) => format!("column `{name}`"),
            None => format!("column {}", field + 1),
        }
    };
    let reason = match e.kind() {
        csv::ErrorKind::Deserialize { pos, err } => match err.field() {
            Some(f) => format!("{}, {}: {}", line(pos.as_ref()), column(f), err.kind()),
            None => format!("{}: {}", line(pos.as_ref()), err.kind()),
        },
        csv::ErrorKind::UnequalLengths {
            pos,
            expected_len,
            len,
        } => format!(
            "{}: {len} fields, the header has {expected_len}",
            line(pos.as_ref())
        ),
        csv::ErrorKind::Utf8 { pos, err } => format!(
            "{}, {}: not UTF-8",
            line(pos.as_ref()),
            column(err.field() as u64)
        ),
        _ => e.to_string(),
    };
    Error::CorruptInput {
        path: path.to_path_buf(),
        reason,
        fix: fixes.corrupt.to_string(),
    }
}

/// The field names of the struct `T` deserialises into (its CSV header),
/// or `None` when `T` is not a struct with named fields. Read from `T`'s
/// `Deserialize` implementation, which names them without needing a value.
fn field_names<T: DeserializeOwned>() -> Option<&'static [&'static str]> {
    let mut names = FieldNames(None);
    let _ = T::deserialize(&mut names);
    names.0
}

/// A deserialiser that records the field names a struct asks for, then
/// stops.
struct FieldNames(Option<&'static [&'static str]>);

impl<'de> de::Deserializer<'de> for &mut FieldNames {
    type Error = de::value::Error;

    fn deserialize_any<V: Visitor<'de>>(self, _: V) -> std::result::Result<V::Value, Self::Error> {
        Err(de::Error::custom("not a struct"))
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        _visitor: V,
    ) -> std::result::Result<V::Value, Self::Error> {
        self.0 = Some(fields);
        Err(de::Error::custom("field names taken"))
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf option unit unit_struct newtype_struct seq tuple
        tuple_struct map enum identifier ignored_any
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    struct Row {
        name: String,
        n: usize,
        x: f64,
        #[serde(default)]
        y: Option<f64>,
        #[serde(serialize_with = "display")]
        z: f64,
    }

    const FIXES: Fixes<'static> = Fixes {
        missing: "write it first",
        corrupt: "rewrite it",
    };

    fn rows() -> Vec<Row> {
        vec![
            Row {
                name: "a,b".into(),
                n: 3,
                x: 1.0,
                y: None,
                z: 1.0,
            },
            Row {
                name: "c".into(),
                n: 4,
                x: 1e-7,
                y: Some(0.5),
                z: 1e-7,
            },
        ]
    }

    #[test]
    fn records_are_written_with_a_header_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/rows.csv");
        write_records(&path, &rows()).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(
            text,
            "name,n,x,y,z\n\"a,b\",3,1.0,,1\nc,4,1e-7,0.5,0.0000001\n"
        );
        assert_eq!(read_records::<Row>(&path, FIXES).unwrap(), rows());
        // Only the file itself is left in its folder (no temporary sibling).
        assert_eq!(
            std::fs::read_dir(path.parent().unwrap()).unwrap().count(),
            1
        );
        write_records::<Row>(&path, &[]).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "name,n,x,y,z\n");
        assert!(read_records::<Row>(&path, FIXES).unwrap().is_empty());
    }

    #[test]
    fn a_table_is_written_and_read_as_text_with_fields_trimmed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.csv");
        let body = vec![
            vec!["1".to_string(), String::new()],
            vec!["x y".into(), "2".into()],
        ];
        write_table(&path, &["a", "b"], &body).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "a,b\n1,\nx y,2\n");
        std::fs::write(&path, "a, b\n 1 ,\nx y,2\n").unwrap();
        let table = read_table(&path, FIXES).unwrap();
        assert_eq!(table.header, ["a", "b"]);
        assert_eq!(table.rows, body);
        assert_eq!(table.column("b"), Some(1));
        let err = write_table(&path, &["a"], &body).unwrap_err();
        assert!(matches!(err, Error::OutputFailed { .. }), "{err}");
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "a, b\n 1 ,\nx y,2\n"
        );
    }

    #[test]
    fn errors_name_the_file_the_line_and_the_column() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.csv");
        std::fs::write(&path, "name,n,x,z\nc,4,0.5,1\nd,five,0.5,1\n").unwrap();
        let err = read_records::<Row>(&path, FIXES).unwrap_err().to_string();
        assert!(err.contains("bad.csv"), "{err}");
        assert!(err.contains("line 3, column `n`"), "{err}");
        assert!(err.contains("rewrite it"), "{err}");
        std::fs::write(&path, "name,n,x,z\nc,4,0.5\n").unwrap();
        let err = read_table(&path, FIXES).unwrap_err().to_string();
        assert!(err.contains("line 2: 3 fields, the header has 4"), "{err}");
        std::fs::write(&path, "name,x,z\nc,0.5,1\n").unwrap();
        let err = read_records::<Row>(&path, FIXES).unwrap_err().to_string();
        assert!(err.contains("line 2: missing field `n`"), "{err}");
        let err = read_table(&dir.path().join("none.csv"), FIXES).unwrap_err();
        assert!(matches!(err, Error::MissingInput { .. }));
        assert!(
            err.to_string()
                .contains("no such file. Fix: write it first"),
            "{err}"
        );
        let err = read_table(dir.path(), FIXES).unwrap_err().to_string();
        assert!(err.contains("a folder, not a file"), "{err}");
    }

    #[test]
    fn headerless_text_parses_into_rows_with_their_lines() {
        let p = Path::new("x.csv.gz");
        let rows: Vec<(u64, Vec<f64>)> =
            parse_headerless("1, 2,3\n\n4,5\n", p, "fetch it").unwrap();
        assert_eq!(rows, [(1, vec![1.0, 2.0, 3.0]), (3, vec![4.0, 5.0])]);
        let err = parse_headerless::<Vec<f64>>("1,2\n\n3,x\n", p, "fetch it").unwrap_err();
        let err = err.to_string();
        assert!(
            err.contains("x.csv.gz") && err.contains("line 3, column 2"),
            "{err}"
        );
        assert!(err.contains("fetch it"), "{err}");
    }

    #[test]
    fn field_names_come_from_the_struct_and_nothing_else() {
        assert_eq!(
            field_names::<Row>(),
            Some(&["name", "n", "x", "y", "z"][..])
        );
        assert_eq!(field_names::<Vec<String>>(), None);
        let err = write_records(&std::env::temp_dir().join("never.csv"), &[1u8]).unwrap_err();
        assert!(err.to_string().contains("not a struct"), "{err}");
    }
}
