//! Files that hold an exclusive lock (`flock`) from the moment they appear under their name.
//!
//! A running writer marks its work with a locked file, and a cleaner removes the files whose
//! lock it can take, since their writer is gone. A file created and then locked would leave a
//! moment in which a cleaner could take the lock of a live writer's file and remove it; a file
//! made here is created and locked under a name cleaners do not match (ending in `.new`), then
//! renamed to its real name, keeping its lock.

use std::fs::{File, OpenOptions};
use std::io;
use std::path::Path;
use tempfile::{NamedTempFile, TempPath};

/// What the name of a file carries until it is locked.
const UNLOCKED_SUFFIX: &str = ".new";

/// Create a new file in `dir` named `prefix`, random characters and `suffix`, which holds an
/// exclusive lock for as long as the returned file is open. It is removed when dropped, unless
/// kept.
pub fn create_locked(dir: &Path, prefix: &str, suffix: &str) -> io::Result<NamedTempFile> {
    let unlocked = tempfile::Builder::new()
        .prefix(prefix)
        .suffix(&format!("{suffix}{UNLOCKED_SUFFIX}"))
        .make_in(dir, |path| {
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .open(path)?;
            file.lock()?;
            Ok::<File, io::Error>(file)
        })?;
    let (file, unlocked_path) = unlocked.into_parts();
    let name = unlocked_path
        .to_string_lossy()
        .strip_suffix(UNLOCKED_SUFFIX)
        .map(str::to_owned)
        .ok_or_else(|| io::Error::other("a temporary name lost its suffix"))?;
    std::fs::rename(&unlocked_path, &name)?;
    // The old name is gone: nothing is left to delete under it.
    let _ = unlocked_path.keep();
    Ok(NamedTempFile::from_parts(
        file,
        TempPath::try_from_path(name)?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_file_is_locked_under_its_name_and_removed_when_dropped() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = create_locked(dir.path(), ".x-", ".partial").expect("create");
        let name = file
            .path()
            .file_name()
            .expect("name")
            .to_string_lossy()
            .into_owned();
        assert!(
            name.starts_with(".x-") && name.ends_with(".partial"),
            "{name}"
        );
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .expect("list")
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(names.len(), 1, "{names:?}");
        let other = OpenOptions::new()
            .write(true)
            .open(file.path())
            .expect("open");
        assert!(other.try_lock().is_err(), "the new file is not locked");
        let path = file.path().to_path_buf();
        drop(file);
        assert!(!path.exists());
        assert!(other.try_lock().is_ok());
    }
}
