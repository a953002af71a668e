//! Numeric CSV tables for `hanzo-candle sample`: a header row naming the
//! columns, then rows of finite numbers. Parsing (quoting, line endings,
//! blank lines) is the `csv` crate's; every error names the file, the line
//! and the column at fault. Lines are counted from byte offsets because the
//! crate's own line count leaves out the blank lines it skips.

use std::path::Path;

/// A numeric table read from CSV.
#[derive(Clone, Debug)]
pub struct Table {
    /// Names the errors give for the table's source, e.g. its path.
    pub origin: String,
    pub columns: Vec<String>,
    pub rows: Vec<Row>,
}

/// One data row and the line it starts on (1-based, the header is line 1).
#[derive(Clone, Debug)]
pub struct Row {
    pub line: u64,
    pub values: Vec<f64>,
}

#[derive(Debug, thiserror::Error)]
pub enum CsvError {
    #[error("reading {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{origin}:{line}:{column}: {message}")]
    At {
        origin: String,
        line: u64,
        column: usize,
        message: String,
    },
    #[error("{origin}: {message}")]
    Other { origin: String, message: String },
}

impl Table {
    /// An error at `line` and 1-based `column` of this table's source.
    pub fn error_at(&self, line: u64, column: usize, message: String) -> CsvError {
        CsvError::At {
            origin: self.origin.clone(),
            line,
            column,
            message,
        }
    }
}

/// Reads the CSV file at `path` (see [`parse`]).
pub fn read(path: &Path) -> Result<Table, CsvError> {
    let origin = path.display().to_string();
    let text = std::fs::read(path).map_err(|source| CsvError::Io {
        path: origin.clone(),
        source,
    })?;
    parse(&text, &origin)
}

/// Where the record the `csv` crate places at `byte` starts: the crate's
/// position lies before the previous line's terminator and any blank lines.
fn record_start(text: &[u8], byte: u64) -> usize {
    let byte = (byte as usize).min(text.len());
    byte + text[byte..]
        .iter()
        .take_while(|&&b| b == b'\r' || b == b'\n')
        .count()
}

fn newlines(text: &[u8]) -> u64 {
    text.iter().filter(|&&b| b == b'\n').count() as u64
}

/// The 1-based line of the record the `csv` crate places at `byte`.
fn line_of(text: &[u8], byte: u64) -> u64 {
    1 + newlines(&text[..record_start(text, byte)])
}

/// Parses CSV text with a header row and at least one row of finite
/// numbers, all rows as wide as the header; `origin` names it in errors.
pub fn parse(text: &[u8], origin: &str) -> Result<Table, CsvError> {
    let at = |line: u64, column: usize, message: String| CsvError::At {
        origin: origin.to_string(),
        line,
        column,
        message,
    };
    let mut reader = ::csv::ReaderBuilder::new()
        .trim(::csv::Trim::All)
        .from_reader(text);
    let columns: Vec<String> = reader
        .headers()
        .map_err(|e| from_csv_error(e, text, origin))?
        .iter()
        .map(String::from)
        .collect();
    if columns.iter().all(String::is_empty) {
        return Err(at(1, 1, "empty file: expected a header row".into()));
    }
    let mut rows = Vec::new();
    // Rows come in order, so each line count continues the previous one.
    let (mut counted_to, mut line) = (0, 1);
    for record in reader.records() {
        let record = record.map_err(|e| from_csv_error(e, text, origin))?;
        let start = record
            .position()
            .map_or(counted_to, |p| record_start(text, p.byte()));
        line += newlines(&text[counted_to..start]);
        counted_to = start;
        let values = record
            .iter()
            .enumerate()
            .map(|(column, field)| match field.parse::<f64>() {
                Ok(v) if v.is_finite() => Ok(v),
                _ => Err(at(
                    line,
                    column + 1,
                    format!(
                        "column `{}`: expected a finite number, found {field:?}",
                        columns[column]
                    ),
                )),
            })
            .collect::<Result<Vec<f64>, CsvError>>()?;
        rows.push(Row { line, values });
    }
    if rows.is_empty() {
        return Err(at(2, 1, "no data rows after the header".into()));
    }
    Ok(Table {
        origin: origin.to_string(),
        columns,
        rows,
    })
}

/// The `csv` crate's error, with its position as line and column.
fn from_csv_error(error: ::csv::Error, text: &[u8], origin: &str) -> CsvError {
    let message = error.to_string();
    let at = |line: u64, column: usize, message: String| CsvError::At {
        origin: origin.to_string(),
        line,
        column,
        message,
    };
    match error.into_kind() {
        ::csv::ErrorKind::Io(source) => CsvError::Io {
            path: origin.to_string(),
            source,
        },
        ::csv::ErrorKind::UnequalLengths {
            pos,
            expected_len,
            len,
        } => at(
            pos.map_or(0, |p| line_of(text, p.byte())),
            expected_len.min(len) as usize + 1,
            format!("expected {expected_len} fields as in the header, found {len}"),
        ),
        ::csv::ErrorKind::Utf8 { pos, err } => at(
            pos.map_or(0, |p| line_of(text, p.byte())),
            err.field() + 1,
            "not valid UTF-8".into(),
        ),
        _ => CsvError::Other {
            origin: origin.to_string(),
            message,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_str(text: &str) -> Result<Table, CsvError> {
        parse(text.as_bytes(), "data.csv")
    }

    #[test]
    fn reads_header_and_rows_with_their_lines() {
        let table = parse_str("a,\"b\", y\r\n1,2.5,0\n\n\n-3,4e-1,1\n").unwrap();
        assert_eq!(table.columns, ["a", "b", "y"]);
        let lines: Vec<u64> = table.rows.iter().map(|r| r.line).collect();
        assert_eq!(lines, [2, 5], "blank lines still count as lines");
        assert_eq!(table.rows[1].values, [-3.0, 0.4, 1.0]);
    }

    #[test]
    fn a_bad_number_names_line_and_column() {
        let err = parse_str("a,b,y\n1,2,0\n3,oops,1\n").unwrap_err();
        assert_eq!(
            err.to_string(),
            "data.csv:3:2: column `b`: expected a finite number, found \"oops\""
        );
        let err = parse_str("a,y\n1,0\ninf,1\n").unwrap_err();
        assert!(
            err.to_string().starts_with("data.csv:3:1: column `a`"),
            "{err}"
        );
    }

    #[test]
    fn a_short_or_long_row_names_its_line() {
        let err = parse_str("a,b,y\n1,2,0\n\n1,2\n").unwrap_err();
        assert_eq!(
            err.to_string(),
            "data.csv:4:3: expected 3 fields as in the header, found 2"
        );
        let err = parse_str("a,b\n1,2,3\n").unwrap_err();
        assert!(err.to_string().starts_with("data.csv:2:3: "), "{err}");
    }

    #[test]
    fn empty_input_and_header_only_are_errors() {
        let err = parse_str("").unwrap_err();
        assert_eq!(
            err.to_string(),
            "data.csv:1:1: empty file: expected a header row"
        );
        let err = parse_str("a,y\n").unwrap_err();
        assert_eq!(
            err.to_string(),
            "data.csv:2:1: no data rows after the header"
        );
    }

    #[test]
    fn invalid_utf8_names_its_field() {
        let err = parse(b"a,y\n1,\xff\n", "data.csv").unwrap_err();
        assert_eq!(err.to_string(), "data.csv:2:2: not valid UTF-8");
    }

    #[test]
    fn a_missing_file_names_its_path() {
        let err = read(Path::new("/nonexistent/data.csv")).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("reading /nonexistent/data.csv: "),
            "{err}"
        );
    }
}
