//! The persisted term and vote: one small file, replaced atomically and fsynced, so a restart
//! can never vote twice in one term.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use elect_core::{CandidateId, Error, Result, Term};

const FILE: &str = "raft-state";

/// Where a node keeps its term and vote.
#[derive(Debug, Clone)]
pub struct StateFile {
    dir: PathBuf,
}

impl StateFile {
    /// The state in `dir` (created if missing).
    pub fn open(dir: impl Into<PathBuf>) -> Result<StateFile> {
        let dir = dir.into();
        fs::create_dir_all(&dir).map_err(|e| io("create the state directory", &dir, e))?;
        Ok(StateFile { dir })
    }

    /// The persisted term and vote; zero and none when nothing was persisted yet.
    pub fn load(&self) -> Result<(Term, Option<CandidateId>)> {
        let path = self.dir.join(FILE);
        let text = match fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((Term::ZERO, None)),
            Err(e) => return Err(io("read", &path, e)),
        };
        let corrupt =
            |why: &str| Error::corrupt("raft", path.display().to_string(), why.to_owned());
        let mut lines = text.lines();
        let term = lines
            .next()
            .and_then(|l| l.strip_prefix("term "))
            .and_then(|t| t.parse::<u64>().ok())
            .ok_or_else(|| corrupt("no valid `term N` line"))?;
        let vote = match lines.next().and_then(|l| l.strip_prefix("vote")) {
            Some("") => None,
            Some(v) => Some(
                CandidateId::new(v.trim_start())
                    .map_err(|_| corrupt("the vote is not a valid node id"))?,
            ),
            None => return Err(corrupt("no `vote` line")),
        };
        Ok((Term(term), vote))
    }

    /// Replaces the state durably: write a temporary file, fsync it, rename it over the old
    /// one, fsync the directory.
    pub fn store(&self, term: Term, vote: Option<&CandidateId>) -> Result<()> {
        let path = self.dir.join(FILE);
        let tmp = self.dir.join(format!("{FILE}.tmp"));
        let text = match vote {
            Some(v) => format!("term {term}\nvote {v}\n"),
            None => format!("term {term}\nvote\n"),
        };
        let mut file = fs::File::create(&tmp).map_err(|e| io("create", &tmp, e))?;
        file.write_all(text.as_bytes())
            .and_then(|()| file.sync_all())
            .map_err(|e| io("write", &tmp, e))?;
        fs::rename(&tmp, &path).map_err(|e| io("replace", &path, e))?;
        fs::File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| io("sync", &self.dir, e))
    }
}

fn io(what: &str, path: &Path, e: std::io::Error) -> Error {
    Error::Other {
        store: "raft",
        message: format!("cannot {what} {}: {e}", path.display()),
        source: Some(std::sync::Arc::new(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_corruption() {
        let dir = std::env::temp_dir().join(format!("elect-raft-state-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let state = StateFile::open(&dir).unwrap();
        assert_eq!(state.load().unwrap(), (Term::ZERO, None));
        let a = CandidateId::new("a").unwrap();
        state.store(Term(7), Some(&a)).unwrap();
        assert_eq!(state.load().unwrap(), (Term(7), Some(a)));
        state.store(Term(8), None).unwrap();
        assert_eq!(state.load().unwrap(), (Term(8), None));
        for junk in ["", "term x\nvote\n", "term 3\n", "term 3\nvote bad id!\n"] {
            fs::write(dir.join(FILE), junk).unwrap();
            assert!(
                matches!(state.load(), Err(Error::CorruptRecord { .. })),
                "{junk:?}"
            );
        }
        let _ = fs::remove_dir_all(&dir);
    }
}
