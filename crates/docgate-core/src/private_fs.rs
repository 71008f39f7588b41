//! Files and directories only the gateway's user can read.
//!
//! What docgate writes is personal data: documents (in clear unless the spool is sealed, and a
//! split ZIP's parts always), the ledger. A directory the operator made (systemd's
//! `StateDirectory=` is 0755) must not open them to every local user, so each file and
//! directory is created private itself instead of relying on its parent's mode.

use std::{fs, io, path::Path};

#[cfg(unix)]
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};

/// `dir` and its missing parents, 0700 (one that exists keeps its mode).
pub fn create_dir_all(dir: &Path) -> io::Result<()> {
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    builder.mode(0o700);
    builder.create(dir)
}

/// Create or truncate `path` for writing, 0600 when it is new.
pub fn create_file(path: &Path) -> io::Result<fs::File> {
    let mut options = fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    options.mode(0o600);
    options.open(path)
}

/// Make `path` an empty file, 0600, unless it exists: so that a program that creates it
/// later (SQLite, with its `-wal` and `-shm` files, which take the database's mode) does not
/// create it readable by all.
pub fn touch_new(path: &Path) -> io::Result<()> {
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    options.mode(0o600);
    match options.open(path) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn mode(p: &Path) -> u32 {
        fs::metadata(p).expect("stat").permissions().mode() & 0o777
    }

    #[test]
    fn what_it_makes_is_private_inside_an_open_directory() {
        let dir = tempfile::tempdir().expect("tempdir");
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).expect("chmod");
        let inner = dir.path().join("a/b");
        create_dir_all(&inner).expect("dirs");
        assert_eq!(mode(&dir.path().join("a")), 0o700);
        assert_eq!(mode(&inner), 0o700);
        let file = inner.join("doc");
        create_file(&file).expect("file");
        assert_eq!(mode(&file), 0o600);
        let db = inner.join("ledger.sqlite");
        touch_new(&db).expect("touch");
        assert_eq!(mode(&db), 0o600);
        fs::write(&db, b"kept").expect("write");
        touch_new(&db).expect("touch again");
        assert_eq!(
            fs::read(&db).expect("read"),
            b"kept",
            "an existing file is left as it is"
        );
    }
}
