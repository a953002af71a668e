//! Reading the JSON files of a model directory, with errors that name the
//! file and field at fault.

use super::{ConvertError, Result};
use serde_json::Value as Json;
use std::path::{Path, PathBuf};

pub(super) fn require(dir: &Path, file: &'static str, what: &'static str) -> Result<PathBuf> {
    let path = dir.join(file);
    if path.is_file() {
        Ok(path)
    } else {
        Err(ConvertError::MissingFile {
            dir: dir.to_path_buf(),
            file,
            what,
        })
    }
}

pub(super) fn read_text(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|source| ConvertError::Io {
        path: path.to_path_buf(),
        source,
    })
}

pub(super) fn parse_json(path: &Path, text: &str) -> Result<Json> {
    serde_json::from_str(text).map_err(|source| ConvertError::Json {
        path: path.to_path_buf(),
        source,
    })
}

pub(super) fn optional_json(path: &Path) -> Result<Option<Json>> {
    if !path.is_file() {
        return Ok(None);
    }
    parse_json(path, &read_text(path)?).map(Some)
}

pub(super) fn field_error(path: &Path, field: &str, expected: &str, found: &Json) -> ConvertError {
    let mut found = found.to_string();
    if found.len() > 80 {
        found.truncate(77);
        found.push_str("...");
    }
    ConvertError::Field {
        path: path.to_path_buf(),
        field: field.to_string(),
        expected: expected.to_string(),
        found,
    }
}
