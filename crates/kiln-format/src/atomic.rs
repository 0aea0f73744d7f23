//! Output files that appear under their name only once complete, and never linger when kiln
//! is interrupted.
//!
//! An output is written as `.kiln-*.partial` beside its destination and renamed into place
//! when complete. While it is written its process holds an exclusive lock on it, so that a
//! later run can tell a partial file whose writer died (`kill -9`) from one a concurrent build
//! is still writing ([`remove_stale_partials`]). Partial files of this process are listed in a
//! process-wide register, which a signal handler empties with [`remove_own_partials`].

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

const PREFIX: &str = ".kiln-";
const SUFFIX: &str = ".partial";

/// The partial files this process is writing.
static OWN_PARTIALS: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

fn register(path: &Path) -> Registered {
    if let Ok(mut list) = OWN_PARTIALS.lock() {
        list.push(path.to_path_buf());
    }
    Registered(path.to_path_buf())
}

/// Keeps a partial file in the register while it lives.
struct Registered(PathBuf);

impl Drop for Registered {
    fn drop(&mut self) {
        if let Ok(mut list) = OWN_PARTIALS.lock() {
            list.retain(|p| p != &self.0);
        }
    }
}

/// Remove every partial output this process is writing (for a signal handler before exit).
/// Returns how many were removed.
pub fn remove_own_partials() -> usize {
    let Ok(mut list) = OWN_PARTIALS.lock() else {
        return 0;
    };
    list.drain(..)
        .filter(|p| std::fs::remove_file(p).is_ok())
        .count()
}

/// Remove the partial outputs in `dir` that no live process is writing (left by a writer that
/// was killed). Partial files of running builds are locked and stay. Returns how many were
/// removed.
pub fn remove_stale_partials(dir: &Path) -> io::Result<usize> {
    let mut removed = 0;
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e),
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if !(name.starts_with(PREFIX) && name.ends_with(SUFFIX)) {
            continue;
        }
        let path = entry.path();
        let Ok(file) = std::fs::OpenOptions::new().write(true).open(&path) else {
            continue;
        };
        if file.try_lock().is_ok() && std::fs::remove_file(&path).is_ok() {
            removed += 1;
        }
    }
    Ok(removed)
}

/// A temporary file beside the outputs, for what a writer makes before them (a captured
/// initrd, a UKI, a raw disk): a partial file as an output's is (locked while it lives, removed
/// by the signal handler, and after a `kill -9` by the next build in that directory), removed
/// when dropped.
pub struct Spool {
    tmp: tempfile::NamedTempFile,
    _registered: Registered,
}

impl Spool {
    /// A new spool file in `dir`, which must exist. Partial files that killed runs left there
    /// are removed first.
    pub fn create(dir: &Path) -> io::Result<Spool> {
        remove_stale_partials(dir)?;
        let tmp = kiln_fs::locked::create_locked(dir, PREFIX, SUFFIX)?;
        Ok(Spool {
            _registered: register(tmp.path()),
            tmp,
        })
    }
}

impl Spool {
    /// Make the spool file the output `dest`: fsync it and rename it into place, as
    /// [`AtomicOutput::commit`] does, instead of copying it.
    pub fn commit(self, dest: &Path) -> io::Result<PathBuf> {
        persist(self.tmp, dest)?;
        Ok(dest.to_path_buf())
    }
}

/// Fsync `tmp`, make it readable by all as outputs are, and rename it to `dest`.
fn persist(tmp: tempfile::NamedTempFile, dest: &Path) -> io::Result<()> {
    tmp.as_file().sync_all()?;
    let mode = std::os::unix::fs::PermissionsExt::from_mode(0o644);
    std::fs::set_permissions(tmp.path(), mode)?;
    tmp.persist(dest).map_err(|e| e.error)?;
    Ok(())
}

impl std::ops::Deref for Spool {
    type Target = tempfile::NamedTempFile;
    fn deref(&self) -> &Self::Target {
        &self.tmp
    }
}

impl std::ops::DerefMut for Spool {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.tmp
    }
}

/// A file written under a temporary name and renamed into place by [`AtomicOutput::commit`];
/// dropped uncommitted, it leaves nothing behind.
pub struct AtomicOutput {
    tmp: tempfile::NamedTempFile,
    dest: PathBuf,
    _registered: Registered,
}

impl AtomicOutput {
    /// Start writing `dest`. Partial outputs that killed runs left beside it are removed first.
    pub fn create(dest: &Path) -> io::Result<Self> {
        let dir = dest
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir)?;
        remove_stale_partials(dir)?;
        let tmp = kiln_fs::locked::create_locked(dir, PREFIX, SUFFIX)?;
        Ok(AtomicOutput {
            _registered: register(tmp.path()),
            tmp,
            dest: dest.to_path_buf(),
        })
    }

    /// Truncate or extend the output to `len` bytes (extending leaves a hole).
    pub fn set_len(&mut self, len: u64) -> io::Result<()> {
        self.tmp.as_file().set_len(len)
    }

    /// Flush, fsync and rename into place.
    pub fn commit(mut self) -> io::Result<PathBuf> {
        self.tmp.flush()?;
        persist(self.tmp, &self.dest)?;
        Ok(self.dest)
    }
}

impl io::Seek for AtomicOutput {
    fn seek(&mut self, pos: io::SeekFrom) -> io::Result<u64> {
        self.tmp.seek(pos)
    }
}

impl io::Read for AtomicOutput {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.tmp.read(buf)
    }
}

impl Write for AtomicOutput {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.tmp.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.tmp.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // One test: the register of partial files is process-wide.
    #[test]
    fn outputs_appear_whole_and_only_dead_partials_are_removed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let dest = dir.path().join("out");
        let mut o = AtomicOutput::create(&dest).expect("create");
        o.write_all(b"data").expect("write");
        assert!(!dest.exists());
        assert_eq!(o.commit().expect("commit"), dest);
        assert_eq!(std::fs::read(&dest).expect("read"), b"data");
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .expect("read")
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(names, ["out"]);

        let stale = dir.path().join(".kiln-dead.partial");
        std::fs::write(&stale, b"left by a killed build").expect("write");
        let live = AtomicOutput::create(&dir.path().join("out2")).expect("create");
        let live_path = live.tmp.path().to_path_buf();
        assert!(!stale.exists(), "the stale partial was not removed");
        assert_eq!(remove_stale_partials(dir.path()).expect("scan"), 0);
        assert!(live_path.exists(), "a live partial was removed");
        assert_eq!(remove_own_partials(), 1);
        assert!(!live_path.exists());
        drop(live);

        // A spool is a partial file too: kept while it lives, removed when dropped.
        let spool = Spool::create(dir.path()).expect("spool");
        let name = spool
            .path()
            .file_name()
            .expect("name")
            .to_string_lossy()
            .into_owned();
        assert!(name.starts_with(PREFIX) && name.ends_with(SUFFIX), "{name}");
        assert_eq!(remove_stale_partials(dir.path()).expect("scan"), 0);
        let spool_path = spool.path().to_path_buf();
        drop(spool);
        assert!(!spool_path.exists());

        // A cleaner running while outputs are started never takes a live writer's file.
        let busy = tempfile::tempdir().expect("tempdir");
        let stop = std::sync::atomic::AtomicBool::new(false);
        std::thread::scope(|s| {
            s.spawn(|| {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    remove_stale_partials(busy.path()).expect("scan");
                }
            });
            let started = (0..1000).try_for_each(|i| {
                let mut o = AtomicOutput::create(&busy.path().join(format!("o{i}")))?;
                o.write_all(b"x")?;
                o.commit().map(drop)
            });
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
            started.expect("a live partial was removed");
        });
    }
}
