//! Compacted tracking files: the one rule the compactor (`tidings_sinks::tracking::compact`)
//! and every reader (`tidings_sql`) share (docs/tables.md, "Compaction").
//!
//! A partition directory (`events/date=YYYY-MM-DD/`) holds the small files the workers flush
//! and, once compacted, `compact-<ms>-<n>.parquet` files holding the rows of several of them.
//! Beside each compacted file, `compact-<ms>-<n>.replaces.json` names the files it replaces;
//! it is made durable *before* the compacted file is renamed into place, so a compacted file
//! is never visible without its list. A reader lists the directory once and leaves out every
//! file a present compacted file replaces: before the rename it reads the small files, after
//! it the compacted one, never both. The replaced files are deleted only after a grace period
//! (`tracking.compact_grace_secs`), longer than a query, so a query that listed them can still
//! read them.

use std::collections::BTreeSet;
use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The name prefix of compacted files.
pub const PREFIX: &str = "compact-";
/// The suffix of the list beside a compacted file.
pub const REPLACES_SUFFIX: &str = ".replaces.json";

/// What a compacted file replaces.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Replaces {
    /// File names in the same directory.
    pub files: Vec<String>,
}

/// The list beside compacted file `parquet` (`compact-X.parquet` → `compact-X.replaces.json`).
pub fn replaces_path(parquet: &Path) -> PathBuf {
    let stem = parquet
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    parquet.with_file_name(format!("{stem}{REPLACES_SUFFIX}"))
}

/// The compacted file a list stands beside (`None` if `list` is not a list's name).
pub fn compacted_of(list: &Path) -> Option<PathBuf> {
    let name = list.file_name()?.to_str()?;
    let stem = name.strip_suffix(REPLACES_SUFFIX)?;
    name.starts_with(PREFIX)
        .then(|| list.with_file_name(format!("{stem}.parquet")))
}

/// The lists in `dir` whose compacted file is present, with what each replaces.
pub fn lists(dir: &Path) -> io::Result<Vec<(PathBuf, Replaces)>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        let Some(parquet) = compacted_of(&path) else {
            continue;
        };
        if !parquet.is_file() {
            // A compaction cut short before its rename: its list counts for nothing.
            continue;
        }
        let text = std::fs::read_to_string(&path)?;
        let replaces: Replaces = serde_json::from_str(&text).map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{}: {e}", path.display()),
            )
        })?;
        out.push((parquet, replaces));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

/// The names of the files in `dir` that a present compacted file replaces: a reader leaves
/// them out.
pub fn superseded(dir: &Path) -> io::Result<BTreeSet<String>> {
    Ok(lists(dir)?.into_iter().flat_map(|(_, r)| r.files).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_list_counts_only_beside_its_compacted_file() {
        let dir = tempfile_dir();
        let list = dir.join("compact-1-0.replaces.json");
        std::fs::write(&list, r#"{"files":["part-a.parquet","part-b.parquet"]}"#).unwrap();
        assert!(
            superseded(&dir).unwrap().is_empty(),
            "no compacted file yet"
        );
        std::fs::write(dir.join("compact-1-0.parquet"), b"x").unwrap();
        assert_eq!(
            superseded(&dir).unwrap().into_iter().collect::<Vec<_>>(),
            ["part-a.parquet", "part-b.parquet"]
        );
        assert_eq!(replaces_path(&dir.join("compact-1-0.parquet")), list);
        assert_eq!(compacted_of(&dir.join("part-a.parquet")), None);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    fn tempfile_dir() -> PathBuf {
        let d = std::env::temp_dir().join(format!(
            "tidings-compaction-{}-{}",
            std::process::id(),
            crate::time::wall_ms()
        ));
        std::fs::create_dir_all(&d).unwrap();
        d
    }
}
