//! Request ids the emulator has seen, so a captured request cannot be played again.
//!
//! The timestamp window (±30 s) already stops old captures; the id rule stops a replay
//! *inside* the window. Ids are kept far longer than the window (a day) and appended to a
//! log in the data directory, so restarting the emulator does not reopen the door.

use std::{
    collections::HashMap,
    fs::{self, File, OpenOptions},
    io::{self, BufRead, BufReader, Write},
    path::{Path, PathBuf},
};

/// How long a seen id is remembered.
pub const RETENTION_MS: i64 = 24 * 60 * 60 * 1000;

#[derive(Debug)]
pub struct ReplayGuard {
    seen: HashMap<String, i64>,
    log: File,
    path: PathBuf,
    last_prune_ms: i64,
}

impl ReplayGuard {
    /// Load the ids of the last day from `path` (compacting the log) and keep appending there.
    pub fn open(path: &Path, now_ms: i64) -> io::Result<ReplayGuard> {
        let mut seen = HashMap::new();
        if path.exists() {
            for line in BufReader::new(File::open(path)?).lines() {
                let line = line?;
                let Some((at, id)) = line.split_once(' ') else {
                    continue;
                };
                if let Ok(at) = at.parse::<i64>() {
                    if now_ms - at < RETENTION_MS {
                        seen.insert(id.to_owned(), at);
                    }
                }
            }
            let compacted = path.with_extension("compact");
            {
                let mut out = io::BufWriter::new(File::create(&compacted)?);
                for (id, at) in &seen {
                    writeln!(out, "{at} {id}")?;
                }
                out.flush()?;
            }
            fs::rename(&compacted, path)?;
        }
        let log = OpenOptions::new().create(true).append(true).open(path)?;
        Ok(ReplayGuard {
            seen,
            log,
            path: path.to_owned(),
            last_prune_ms: now_ms,
        })
    }

    /// Record `id`; `false` if it was seen before (a replay).
    pub fn first_use(&mut self, id: &str, now_ms: i64) -> io::Result<bool> {
        if now_ms - self.last_prune_ms > 60_000 {
            self.seen.retain(|_, at| now_ms - *at < RETENTION_MS);
            self.last_prune_ms = now_ms;
        }
        if self.seen.contains_key(id) {
            return Ok(false);
        }
        // Ids are checked to be printable without spaces or newlines before they get here,
        // so one line per id is unambiguous.
        writeln!(self.log, "{now_ms} {id}")?;
        self.log.flush()?;
        self.seen.insert(id.to_owned(), now_ms);
        Ok(true)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_refused_the_second_time_even_after_a_restart() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("request_ids.log");
        let now = 1_700_000_000_000;
        let mut g = ReplayGuard::open(&path, now).expect("open");
        assert!(g
            .first_use("45242f41f20b456092d1b48caa76ce13", now)
            .expect("io"));
        assert!(!g
            .first_use("45242f41f20b456092d1b48caa76ce13", now + 5)
            .expect("io"));
        drop(g);
        let mut g = ReplayGuard::open(&path, now + 60_000).expect("reopen");
        assert!(!g
            .first_use("45242f41f20b456092d1b48caa76ce13", now + 60_001)
            .expect("io"));
        assert!(g
            .first_use("5737eb4809b846e48ad15d4b8f97d98c", now + 60_002)
            .expect("io"));
    }

    #[test]
    fn ids_older_than_the_retention_are_forgotten() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("request_ids.log");
        let now = 1_700_000_000_000;
        let mut g = ReplayGuard::open(&path, now).expect("open");
        assert!(g.first_use("old-request-id-0000000000", now).expect("io"));
        drop(g);
        let later = now + RETENTION_MS + 1;
        let mut g = ReplayGuard::open(&path, later).expect("reopen");
        assert!(g.first_use("old-request-id-0000000000", later).expect("io"));
    }
}
