//! An upload on disk: received into `SCHEMA_TMP_PATH` and checked on the way in, read back as
//! pieces by the appliers, and cleared away after a crash.
//!
//! ```text
//! body chunks ─▶ receive ─┬─▶ <id>.sql.part (size cap, SHA-256)      renamed to <id>.sql
//!                         └─▶ Validator (split + guard): the verdict, before any worker starts
//! <id>.sql ─▶ PieceReader (bounded reads through the splitter) ─▶ applier
//! ```
//!
//! Validating while the bytes arrive means a worker starts with the verdict instead of reading
//! a multi-gigabyte file twice; reading back through [`PieceReader`] keeps memory bounded by the
//! splitter's limits whatever the file's size.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::error::ProvisionError;
use super::guard::{Guard, GuardViolation};
use super::split::{Dialect, Piece, SplitError, Splitter};

/// Bytes read from the stored file per step of the splitter.
const READ_BYTES: usize = 256 * 1024;

/// Why a stored upload cannot be read back as pieces; the text is the job's error.
#[derive(Debug, thiserror::Error)]
pub(super) enum PieceError {
    /// The stored file cannot be opened.
    #[error("cannot read the stored upload {}: {source}", path.display())]
    Open {
        /// The stored upload.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Reading the stored file failed.
    #[error("cannot read the stored upload: {0}")]
    Read(#[source] std::io::Error),
    /// The file does not split (it changed on disk since it was validated).
    #[error(transparent)]
    Split(#[from] SplitError),
}

/// The first problem the [`Validator`] found in an upload; the text is the job's error.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub(super) enum ValidationError {
    /// The SQL guard refused a statement.
    #[error(transparent)]
    Refused(#[from] GuardViolation),
    /// The file does not split.
    #[error(transparent)]
    Split(#[from] SplitError),
}

/// The pieces of a stored file, read in bounded chunks through the splitter.
pub(super) struct PieceReader {
    file: tokio::fs::File,
    splitter: Splitter,
    buf: Vec<u8>,
    pieces: VecDeque<Piece>,
    out: Vec<Piece>,
    eof: bool,
}

impl PieceReader {
    /// Opens a stored upload.
    pub(super) async fn open(path: &Path, dialect: Dialect) -> Result<PieceReader, PieceError> {
        let file = tokio::fs::File::open(path)
            .await
            .map_err(|source| PieceError::Open {
                path: path.to_owned(),
                source,
            })?;
        Ok(PieceReader {
            file,
            splitter: Splitter::new(dialect),
            buf: vec![0; READ_BYTES],
            pieces: Default::default(),
            out: Vec::new(),
            eof: false,
        })
    }

    /// The next piece, `None` at the end of the file. A file that does not split is an error
    /// naming its line.
    pub(super) async fn next(&mut self) -> Result<Option<Piece>, PieceError> {
        loop {
            if let Some(p) = self.pieces.pop_front() {
                return Ok(Some(p));
            }
            if self.eof {
                return Ok(None);
            }
            let n = self
                .file
                .read(&mut self.buf)
                .await
                .map_err(PieceError::Read)?;
            if n == 0 {
                self.eof = true;
                self.splitter.finish(&mut self.out)?;
            } else {
                self.splitter.feed(&self.buf[..n], &mut self.out)?;
            }
            self.pieces.extend(self.out.drain(..));
        }
    }
}

/// Split and SQL guard over a file fed in chunks of any size: the count of statements, or the
/// first problem in file order (a statement the guard refuses, or text that does not split),
/// with the same messages as reading the stored file piece by piece.
pub(super) struct Validator {
    splitter: Splitter,
    guard: Option<Guard>,
    out: Vec<Piece>,
    statements: u64,
    error: Option<ValidationError>,
}

impl Validator {
    pub(super) fn new(dialect: Dialect, guard: Option<Guard>) -> Validator {
        Validator {
            splitter: Splitter::new(dialect),
            guard,
            out: Vec::new(),
            statements: 0,
            error: None,
        }
    }

    /// The next bytes of the file. After the first problem the rest is ignored.
    pub(super) fn feed(&mut self, chunk: &[u8]) {
        if self.error.is_none() {
            let split = self.splitter.feed(chunk, &mut self.out);
            self.check(split);
        }
    }

    /// The verdict once the file is complete: the number of statements, or the problem.
    pub(super) fn finish(mut self) -> Result<u64, ValidationError> {
        if self.error.is_none() {
            let split = self.splitter.finish(&mut self.out);
            self.check(split);
        }
        match self.error {
            Some(e) => Err(e),
            None => Ok(self.statements),
        }
    }

    /// Checks the pieces the splitter produced (they come before its own error, if any).
    fn check(&mut self, split: Result<(), SplitError>) {
        for piece in self.out.drain(..) {
            if let Piece::Statement { sql, line, .. } = &piece {
                if let Some(guard) = &self.guard {
                    if let Err(v) = guard.check(sql, *line) {
                        self.error = Some(v.into());
                        break;
                    }
                }
                self.statements += 1;
            }
        }
        self.out.clear();
        if self.error.is_none() {
            if let Err(e) = split {
                self.error = Some(e.into());
            }
        }
    }
}

/// Streams `body` into a new file at `part`, through `validator` if any: (SHA-256 hex, bytes).
pub(super) async fn receive<S>(
    mut body: S,
    part: &Path,
    max: u64,
    mut validator: Option<&mut Validator>,
) -> Result<(String, u64), ProvisionError>
where
    S: Stream<Item = Result<Bytes, ProvisionError>> + Send + Unpin,
{
    let io = |e: std::io::Error| {
        ProvisionError::Internal(format!(
            "cannot store the upload in SCHEMA_TMP_PATH ({}): {e}",
            part.parent()
                .map(|p| p.display().to_string())
                .unwrap_or_default()
        ))
    };
    let file = tokio::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(part)
        .await
        .map_err(io)?;
    let mut file = tokio::io::BufWriter::with_capacity(READ_BYTES, file);
    let mut hasher = Sha256::new();
    let mut bytes = 0u64;
    while let Some(chunk) = body.next().await {
        let chunk = chunk?;
        bytes += chunk.len() as u64;
        if bytes > max {
            return Err(ProvisionError::TooLarge(format!(
                "the upload is larger than SCHEMA_MAX_BYTES ({max} bytes)"
            )));
        }
        hasher.update(&chunk);
        if let Some(v) = validator.as_deref_mut() {
            v.feed(&chunk);
        }
        file.write_all(&chunk).await.map_err(io)?;
    }
    file.flush().await.map_err(io)?;
    let digest = hasher.finalize();
    Ok((hex(&digest), bytes))
}

/// Feeds a stored file through `validator` (an upload whose engine or guard setting was only
/// known after its bytes).
pub(super) async fn validate_file(
    path: &Path,
    validator: &mut Validator,
) -> Result<(), ProvisionError> {
    let mut file = tokio::fs::File::open(path).await.map_err(|e| {
        ProvisionError::Internal(format!(
            "cannot read the stored upload {}: {e}",
            path.display()
        ))
    })?;
    let mut buf = vec![0; READ_BYTES];
    loop {
        let n = file.read(&mut buf).await.map_err(|e| {
            ProvisionError::Internal(format!(
                "cannot read the stored upload {}: {e}",
                path.display()
            ))
        })?;
        if n == 0 {
            return Ok(());
        }
        validator.feed(&buf[..n]);
    }
}

/// Lower-case hex of a digest.
pub(super) fn hex(digest: &impl std::fmt::LowerHex) -> String {
    format!("{digest:x}")
}

/// Deletes `*.sql.part` files a dead daemon left in the upload directory.
pub(super) fn remove_partial_uploads(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.ends_with(".sql.part"))
        {
            let _ = std::fs::remove_file(&path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn validate(text: &str, chunk: usize, guard: bool) -> Result<u64, String> {
        let guard = guard.then(|| Guard::new(Dialect::Postgres, &[]));
        let mut v = Validator::new(Dialect::Postgres, guard);
        for c in text.as_bytes().chunks(chunk) {
            v.feed(c);
        }
        v.finish().map_err(|e| e.to_string())
    }

    #[test]
    fn validation_during_the_upload_does_not_depend_on_chunks_and_names_the_first_problem() {
        let clean = "CREATE TABLE a (id int);\nCOPY a (id) FROM stdin;\n1\n\\.\nSELECT 1;\n";
        let bad = format!("{clean}CREATE DATABASE other;\nSELECT 'unterminated;\n");
        for chunk in [1, 3, 64, 1 << 20] {
            assert_eq!(validate(clean, chunk, true), Ok(3), "chunks of {chunk}");
            let e = validate(&bad, chunk, true).unwrap_err();
            assert!(
                e.starts_with("line 6: ") && e.contains("create-database"),
                "chunks of {chunk}: {e}"
            );
            // Without the guard the split error is the first problem.
            let e = validate(&bad, chunk, false).unwrap_err();
            assert!(e.starts_with("line 7: "), "chunks of {chunk}: {e}");
        }
    }
}
