//! One gateway per data directory (and per SQLite ledger).
//!
//! A gateway on the embedded ledger treats what it finds at start as the previous process's
//! leftovers: it hands every delivery lease back and removes spool files no ledger row names.
//! A second `docgate serve` started by hand on the same directory while the first runs (it
//! fails to bind its port only afterwards) would take the running gateway's deliveries from
//! under it — each sent again — and remove documents it had written but not yet recorded.
//! So the directory, and a SQLite ledger kept elsewhere, are locked first, with advisory locks
//! the kernel drops when the process dies however it dies, and a second start is refused
//! before it touches anything.
//!
//! Within one process a lock is shared: the sandbox takes the directory's before its
//! emulators start and the gateway takes it again (a kernel lock is per open file, so a second
//! open of the same file would refuse its own process).

use std::{
    collections::HashMap,
    fs::File,
    io::{Read, Seek, Write},
    path::{Path, PathBuf},
    sync::{Arc, Mutex, OnceLock, Weak},
};

/// The lock file's name inside the data directory.
pub const LOCK_FILE: &str = "docgate.lock";

/// Held for as long as the gateway runs; dropping the last handle releases it.
#[derive(Debug, Clone)]
pub struct DataDirLock {
    _file: Arc<File>,
}

/// Why the data directory could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum DataDirLockError {
    #[error(
        "another docgate{} is running on {}: one gateway per data directory and ledger (its \
         deliveries and spool would be taken from under it)",
        holder.map(|p| format!(" (pid {p})")).unwrap_or_default(),
        what.display()
    )]
    InUse { what: PathBuf, holder: Option<u32> },
    #[error("locking {}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// The locks this process holds, by lock file.
fn held() -> &'static Mutex<HashMap<PathBuf, Weak<File>>> {
    static HELD: OnceLock<Mutex<HashMap<PathBuf, Weak<File>>>> = OnceLock::new();
    HELD.get_or_init(Default::default)
}

impl DataDirLock {
    /// Take `dir`'s lock without waiting (`dir` exists).
    pub fn acquire(dir: &Path) -> Result<DataDirLock, DataDirLockError> {
        DataDirLock::acquire_at(&dir.join(LOCK_FILE), dir)
    }

    /// Take the lock of the SQLite ledger file `db` (a file beside it).
    pub fn acquire_for_ledger(db: &Path) -> Result<DataDirLock, DataDirLockError> {
        let mut name = db.as_os_str().to_owned();
        name.push(".docgate-lock");
        DataDirLock::acquire_at(&PathBuf::from(name), db)
    }

    /// Take the lock file at `path` for `what`, and write this process's id into it (for
    /// the message a second start prints).
    fn acquire_at(path: &Path, what: &Path) -> Result<DataDirLock, DataDirLockError> {
        let io = |source| DataDirLockError::Io {
            path: path.to_owned(),
            source,
        };
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(io)?;
        let key = path.canonicalize().map_err(io)?;
        let mut held = held().lock().unwrap_or_else(|e| e.into_inner());
        if let Some(file) = held.get(&key).and_then(Weak::upgrade) {
            return Ok(DataDirLock { _file: file });
        }
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                let mut text = String::new();
                let holder = file
                    .read_to_string(&mut text)
                    .ok()
                    .and_then(|_| text.trim().parse().ok());
                return Err(DataDirLockError::InUse {
                    what: what.to_owned(),
                    holder,
                });
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(io(e)),
        }
        file.set_len(0).map_err(io)?;
        file.rewind().map_err(io)?;
        writeln!(file, "{}", std::process::id()).map_err(io)?;
        let file = Arc::new(file);
        held.retain(|_, f| f.strong_count() > 0);
        held.insert(key, Arc::downgrade(&file));
        Ok(DataDirLock { _file: file })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn another_process_is_refused_and_named_until_the_holder_lets_go() {
        let dir = tempfile::tempdir().expect("tempdir");
        let first = DataDirLock::acquire(dir.path()).expect("first");
        let again = DataDirLock::acquire(dir.path()).expect("this process shares its lock");
        // What another process meets: the kernel's lock on the file, held by this one.
        let other = std::fs::File::open(dir.path().join(LOCK_FILE)).expect("open");
        assert!(matches!(
            other.try_lock(),
            Err(std::fs::TryLockError::WouldBlock)
        ));
        drop(first);
        assert!(
            matches!(other.try_lock(), Err(std::fs::TryLockError::WouldBlock)),
            "held while any handle lives"
        );
        drop(again);
        other.try_lock().expect("free once every handle is dropped");
    }

    #[test]
    fn a_held_lock_names_its_process() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join(LOCK_FILE);
        std::fs::write(&path, "4242\n").expect("write");
        let holder = std::fs::File::open(&path).expect("open");
        holder.lock().expect("lock");
        // Another open of the file, as another process's would be: not this process's lock.
        let err = DataDirLock::acquire_at(&path, dir.path());
        match err {
            Err(DataDirLockError::InUse { holder, .. }) => assert_eq!(holder, Some(4242)),
            other => panic!("not refused: {other:?}"),
        }
    }
}
