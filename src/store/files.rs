//! Whole-file writes the store makes durable: replaced atomically (temporary file beside it,
//! fsync, rename, directory fsync), so that a reader finds the old file or the new one, never
//! a part. The projection checkpoint, the witness file and the sled rewrite's mark use it.

use std::fs::File;
use std::io::Write;
use std::path::Path;

use super::error::LogError;

/// Maps an I/O error to [`LogError::Io`] at `path`.
pub fn io_at(path: &Path) -> impl FnOnce(std::io::Error) -> LogError + '_ {
    move |error| LogError::Io {
        path: path.to_path_buf(),
        error,
    }
}

/// fsyncs a directory, so that a rename or a new file in it is durable.
pub fn sync_dir(dir: &Path) -> Result<(), LogError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_at(dir))
}

/// Replaces `path` with the concatenation of `parts`, atomically and durably.
pub fn replace_file(path: &Path, parts: &[&[u8]]) -> Result<(), LogError> {
    let parent = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy())
        .unwrap_or_default();
    let temporary = parent.join(format!("{name}.tmp"));
    let mut file = File::create(&temporary).map_err(io_at(&temporary))?;
    for part in parts {
        file.write_all(part).map_err(io_at(&temporary))?;
    }
    file.sync_all().map_err(io_at(&temporary))?;
    drop(file);
    std::fs::rename(&temporary, path).map_err(io_at(path))?;
    sync_dir(parent)
}
