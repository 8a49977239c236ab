//! The log's files on disk: their names (`audit-<first seq, 20 digits>.jsonl`, so that name order is chain
//! order), finding them in a folder, and reading their lines (noticing a last line torn by a crash).
//! Not for: what the lines mean (see `verify`, `search`) or writing them (see `writer`).

use crate::audit::AuditError;
use std::path::{Path, PathBuf};

const PREFIX: &str = "audit-";
const SUFFIX: &str = ".jsonl";

/// The name of the file whose first record has sequence number `first_seq`.
pub fn file_name(first_seq: u64) -> String {
    format!("{PREFIX}{first_seq:020}{SUFFIX}")
}

/// Whether a file name is one of the log's.
pub fn is_log_file_name(name: &str) -> bool {
    name.strip_prefix(PREFIX)
        .and_then(|rest| rest.strip_suffix(SUFFIX))
        .is_some_and(|digits| digits.len() == 20 && digits.bytes().all(|b| b.is_ascii_digit()))
}

/// The log files in a folder, in chain order.
pub fn list_dir(dir: &Path) -> Result<Vec<PathBuf>, AuditError> {
    let io = |e: std::io::Error| AuditError::Io {
        path: dir.to_path_buf(),
        source: e,
    };
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(io)?
        .filter_map(|entry| entry.ok())
        .filter(|entry| entry.file_name().to_str().is_some_and(is_log_file_name))
        .map(|entry| entry.path())
        .collect();
    files.sort();
    Ok(files)
}

/// Expands folders into their log files; files are kept; the whole is put in name order.
pub fn expand(paths: &[PathBuf]) -> Result<Vec<PathBuf>, AuditError> {
    let mut files = Vec::new();
    for path in paths {
        if path.is_dir() {
            files.extend(list_dir(path)?);
        } else {
            files.push(path.clone());
        }
    }
    files.sort_by(|a, b| a.file_name().cmp(&b.file_name()));
    Ok(files)
}

/// The bare file name of a path, as the records name files.
pub fn base_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// A file's content split into lines.
pub struct Lines {
    /// Complete lines (each ended by a newline), without the newline.
    pub complete: Vec<String>,
    /// Bytes after the last newline: a line a crash tore, or an append in progress.
    pub torn: Option<String>,
}

/// Reads a whole file as lines. NUL bytes at its end are space the writer reserved ahead of its
/// records (records never hold a NUL byte: JSON escapes it), not content.
pub fn read_lines(path: &Path) -> Result<Lines, AuditError> {
    let mut bytes = std::fs::read(path).map_err(|e| AuditError::Io {
        path: path.to_path_buf(),
        source: e,
    })?;
    let content = bytes
        .iter()
        .rposition(|&b| b != 0)
        .map_or(0, |last| last + 1);
    bytes.truncate(content);
    let text = String::from_utf8_lossy(&bytes);
    let mut complete: Vec<String> = text.split('\n').map(str::to_string).collect();
    let last = complete.pop().unwrap_or_default();
    Ok(Lines {
        complete,
        torn: (!last.is_empty()).then_some(last),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_sort_in_chain_order_and_foreign_files_are_ignored() {
        assert_eq!(file_name(12), "audit-00000000000000000012.jsonl");
        assert!(is_log_file_name(&file_name(u64::MAX)));
        assert!(!is_log_file_name("audit-12.jsonl"));
        let dir = tempfile::tempdir().unwrap();
        for name in [file_name(100), file_name(9), "notes.txt".to_string()] {
            std::fs::write(dir.path().join(name), "").unwrap();
        }
        let names: Vec<String> = list_dir(dir.path())
            .unwrap()
            .iter()
            .map(|p| base_name(p))
            .collect();
        assert_eq!(names, vec![file_name(9), file_name(100)]);
    }

    #[test]
    fn a_last_line_without_newline_is_torn() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, "a\nb\nc").unwrap();
        let lines = read_lines(&path).unwrap();
        assert_eq!(lines.complete, vec!["a", "b"]);
        assert_eq!(lines.torn.as_deref(), Some("c"));
        std::fs::write(&path, "a\n").unwrap();
        assert!(read_lines(&path).unwrap().torn.is_none());
    }

    #[test]
    fn reserved_space_at_the_end_is_not_content() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, b"a\nb\n\0\0\0\0").unwrap();
        let lines = read_lines(&path).unwrap();
        assert_eq!(lines.complete, vec!["a", "b"]);
        assert!(lines.torn.is_none());
        // A write a crash cut short inside the reserved space is a torn line.
        std::fs::write(&path, b"a\nb\0\0").unwrap();
        let lines = read_lines(&path).unwrap();
        assert_eq!(lines.complete, vec!["a"]);
        assert_eq!(lines.torn.as_deref(), Some("b"));
    }
}
