//! Transactions that PostgreSQL streams while they are still running, held here until they end.
//!
//! With pgoutput protocol 2 and `streaming 'on'`, PostgreSQL sends a transaction that outgrows
//! `logical_decoding_work_mem` in blocks as it runs, instead of spilling it to its own disk under
//! `pg_replslot` and replaying it at commit. Nothing of such a transaction may reach the sink
//! before its Stream Commit, so dbmazz stages the blocks here, per top-level transaction, as the
//! pgoutput frames they arrived as (the compact form PostgreSQL already chose). Within the
//! memory budget (`SPILL_MEMORY_BYTES`, counted as allocated capacity across every open
//! transaction) frames stay in memory; past it the transaction holding the most memory is
//! appended to its file in `SPILL_DIR`. At Stream Commit the reader replays the frames in arrival
//! order (file first, then memory), skipping rolled-back subtransactions; at Stream Abort the
//! transaction and its file are dropped.
//!
//! The spill is disposable: nothing is fsynced, and what a crash leaves behind is removed at the
//! next start ([`StreamedTxns::open`]), since PostgreSQL sends every transaction that committed
//! after the confirmed position again, in full. Files are named `<slot>-<source>-<xid>.spill`,
//! where `<source>` is a short hash of the source's hosts and database: jobs sharing a directory
//! (several daemons on one host, with the default slot name) never touch each other's files. A
//! job holds an exclusive `flock` on `<slot>-<source>.lock` while it runs, so that a second
//! daemon started for the same job fails instead of removing live files.
//!
//! A record is `len: u32 LE, lsn: u64 LE, frame: [u8; len]`.

use std::fs::File;
use std::io::{ErrorKind, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::{Buf, Bytes, BytesMut};

use crate::metrics::Metrics;
use crate::Lsn;

const HEADER: usize = 12;
/// Bytes read from a spill file at a time.
const READ_CHUNK: usize = 128 * 1024;

/// Where and how much the streamed transactions may take.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SpillLimits {
    /// `SPILL_DIR`.
    pub dir: PathBuf,
    /// `SPILL_MEMORY_BYTES`: memory for staged frames across every open transaction.
    pub memory_bytes: usize,
    /// `SPILL_MAX_BYTES`: disk for spilled frames; `None` means half the space free in `dir`
    /// at start.
    pub max_bytes: Option<u64>,
}

/// A streamed transaction could not be staged or read back.
#[derive(Debug, thiserror::Error)]
pub enum SpillError {
    /// `SPILL_MAX_BYTES` would be exceeded.
    #[error(
        "spilling streamed transaction {xid} to {dir} would exceed SPILL_MAX_BYTES \
         ({limit} bytes; {used} bytes already spilled by open transactions); nothing past the \
         last durable commit was confirmed. Give SPILL_DIR more space and raise SPILL_MAX_BYTES, \
         or set STREAMING=off so PostgreSQL holds large transactions on its own disk until they \
         commit"
    )]
    Full {
        /// The transaction being spilled.
        xid: u32,
        /// `SPILL_DIR`.
        dir: PathBuf,
        /// Bytes on disk before this write.
        used: u64,
        /// `SPILL_MAX_BYTES`.
        limit: u64,
    },
    /// A file operation failed (a full disk among them).
    #[error(
        "{what} {path} for streamed transaction {xid} failed: {source}; nothing past the last \
         durable commit was confirmed. Free space in SPILL_DIR (or point it elsewhere), or set \
         STREAMING=off"
    )]
    Io {
        /// The operation.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The transaction.
        xid: u32,
        /// The cause.
        source: std::io::Error,
    },
    /// Another process runs the same job with the same directory.
    #[error(
        "SPILL_DIR {dir}: {lock} is locked by another process: another dbmazz runs the same job \
         (same slot and source database); stop it, or give this one its own SLOT_NAME"
    )]
    Busy {
        /// `SPILL_DIR`.
        dir: PathBuf,
        /// The lock file.
        lock: PathBuf,
    },
    /// The directory could not be prepared at start.
    #[error(
        "SPILL_DIR {dir}: {what}: {source}; create it (mode 0700) or point SPILL_DIR elsewhere"
    )]
    Dir {
        /// `SPILL_DIR`.
        dir: PathBuf,
        /// The operation.
        what: &'static str,
        /// The cause.
        source: std::io::Error,
    },
    /// A spill file ended in the middle of a record.
    #[error(
        "spill file {path} of streamed transaction {xid} is truncated (a record is cut short)"
    )]
    Truncated {
        /// The file.
        path: PathBuf,
        /// The transaction.
        xid: u32,
    },
}

/// One open streamed transaction.
struct Staged {
    mem: Vec<u8>,
    file: Option<File>,
    file_bytes: u64,
    aborted_subxacts: hashbrown::HashSet<u32>,
}

impl Staged {
    fn new() -> Staged {
        Staged {
            mem: Vec::new(),
            file: None,
            file_bytes: 0,
            aborted_subxacts: hashbrown::HashSet::new(),
        }
    }
}

/// The open streamed transactions of one replication session.
pub struct StreamedTxns {
    dir: PathBuf,
    prefix: String,
    /// Held (flock) for as long as this job uses the directory.
    _lock: File,
    memory_budget: usize,
    max_disk: u64,
    txns: hashbrown::HashMap<u32, Staged>,
    mem_bytes: usize,
    disk_bytes: u64,
    metrics: Arc<Metrics>,
}

impl StreamedTxns {
    /// Prepares `limits.dir` (created with mode 0700 when missing), takes the job's lock in it,
    /// and removes the spill files an earlier run of the same job left there. `source`
    /// identifies the source database (hosts and database name); with `slot` it names the files.
    pub fn open(
        limits: &SpillLimits,
        slot: &str,
        source: &str,
        metrics: Arc<Metrics>,
    ) -> Result<StreamedTxns, SpillError> {
        let dir = limits.dir.clone();
        let dir_err = |what| {
            let dir = dir.clone();
            move |source| SpillError::Dir { dir, what, source }
        };
        if !dir.exists() {
            use std::os::unix::fs::DirBuilderExt;
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&dir)
                .map_err(dir_err("creating the directory"))?;
        }
        let job = format!("{slot}-{}", source_hash(source));
        let lock_path = dir.join(format!("{job}.lock"));
        let lock = {
            use std::os::unix::fs::OpenOptionsExt;
            use std::os::unix::io::AsRawFd;
            let file = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(false)
                .mode(0o600)
                .open(&lock_path)
                .map_err(dir_err("creating the lock file"))?;
            // SAFETY: flock on a descriptor this function owns; no memory is involved.
            if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
                let e = std::io::Error::last_os_error();
                if e.kind() == ErrorKind::WouldBlock {
                    return Err(SpillError::Busy {
                        dir: dir.clone(),
                        lock: lock_path,
                    });
                }
                return Err(dir_err("locking")(e));
            }
            file
        };
        let prefix = format!("{job}-");
        let mut removed = (0u64, 0u64);
        for entry in std::fs::read_dir(&dir).map_err(dir_err("listing the directory"))? {
            let entry = entry.map_err(dir_err("listing the directory"))?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if is_spill_file(name, &prefix) {
                let len = entry.metadata().map(|m| m.len()).unwrap_or(0);
                std::fs::remove_file(entry.path())
                    .map_err(dir_err("removing a leftover spill file"))?;
                removed = (removed.0 + 1, removed.1 + len);
            }
        }
        if removed.0 > 0 {
            tracing::info!(
                dir = %dir.display(),
                files = removed.0,
                bytes = removed.1,
                "removed spill files of an earlier run; PostgreSQL sends those transactions again"
            );
        }
        let max_disk = match limits.max_bytes {
            Some(m) => m,
            None => free_bytes(&dir).map_err(dir_err("reading the free space"))? / 2,
        };
        metrics.spill_max_bytes.store(max_disk, Ordering::Relaxed);
        Ok(StreamedTxns {
            dir,
            prefix,
            _lock: lock,
            memory_budget: limits.memory_bytes,
            max_disk,
            txns: hashbrown::HashMap::new(),
            mem_bytes: 0,
            disk_bytes: 0,
            metrics,
        })
    }

    /// `SPILL_MAX_BYTES` in force (half the free space at start when it was not set).
    pub fn max_disk(&self) -> u64 {
        self.max_disk
    }

    /// Whether `xid` has been started and not yet committed or aborted.
    pub fn is_open(&self, xid: u32) -> bool {
        self.txns.contains_key(&xid)
    }

    /// The first block of `xid` arrived. A transaction started again (it cannot be, within
    /// one session) restarts empty.
    pub fn start(&mut self, xid: u32) {
        if let Some(old) = self.txns.insert(xid, Staged::new()) {
            self.release(xid, old);
        }
        self.publish();
    }

    /// Appends one frame of `xid`; frames of a transaction that is not open are ignored.
    ///
    /// Memory is counted as allocated capacity, and a buffer only grows into what the budget
    /// leaves: when it cannot, the largest buffer (this one or another) goes to disk first.
    pub fn stage(&mut self, xid: u32, lsn: Lsn, frame: &[u8]) -> Result<(), SpillError> {
        let record = HEADER + frame.len();
        if !self.txns.contains_key(&xid) {
            return Ok(());
        }
        let mut header = [0u8; HEADER];
        header[..4].copy_from_slice(&(frame.len() as u32).to_le_bytes());
        header[4..].copy_from_slice(&lsn.0.to_le_bytes());
        if record > self.memory_budget {
            // Never through memory: straight to the end of the file, after what is staged.
            self.spill(xid)?;
            self.write(xid, &[&header, frame])?;
            self.publish();
            return Ok(());
        }
        loop {
            let txn = &self.txns[&xid];
            let need = txn.mem.len() + record;
            if need <= txn.mem.capacity() {
                break;
            }
            let others = self.mem_bytes - txn.mem.capacity();
            let room = self.memory_budget.saturating_sub(others);
            if need <= room {
                let Some(txn) = self.txns.get_mut(&xid) else {
                    return Ok(());
                };
                let before = txn.mem.capacity();
                let target = (before * 2).max(need).max(64 * 1024).min(room);
                txn.mem.reserve_exact(target - txn.mem.len());
                self.mem_bytes = self.mem_bytes - before + txn.mem.capacity();
                break;
            }
            // Over budget means some buffer holds memory; without one, grow past it.
            let Some(largest) = self
                .txns
                .iter()
                .filter(|(_, t)| t.mem.capacity() > 0)
                .max_by_key(|(_, t)| t.mem.capacity())
                .map(|(&x, _)| x)
            else {
                break;
            };
            self.spill(largest)?;
        }
        let Some(txn) = self.txns.get_mut(&xid) else {
            return Ok(());
        };
        txn.mem.extend_from_slice(&header);
        txn.mem.extend_from_slice(frame);
        self.publish();
        Ok(())
    }

    /// A subtransaction (`subxid != xid`) or the whole transaction rolled back.
    pub fn abort(&mut self, xid: u32, subxid: u32) {
        if xid == subxid {
            if let Some(txn) = self.txns.remove(&xid) {
                self.release(xid, txn);
            }
        } else if let Some(txn) = self.txns.get_mut(&xid) {
            txn.aborted_subxacts.insert(subxid);
        }
        self.publish();
    }

    /// Hands over a committed transaction for replay; `None` when `xid` is not open.
    pub fn take(&mut self, xid: u32) -> Option<Replay> {
        let txn = self.txns.remove(&xid)?;
        self.mem_bytes -= txn.mem.capacity();
        self.disk_bytes -= txn.file_bytes;
        let path = txn.file.is_some().then(|| self.path(xid));
        self.publish();
        Some(Replay {
            xid,
            path,
            reader: None,
            buf: BytesMut::new(),
            mem: Bytes::from(txn.mem),
            mem_pos: 0,
            file_done: false,
            aborted_subxacts: txn.aborted_subxacts,
            file_bytes: txn.file_bytes,
        })
    }

    /// Open transactions, bytes in memory, bytes on disk.
    pub fn usage(&self) -> (usize, usize, u64) {
        (self.txns.len(), self.mem_bytes, self.disk_bytes)
    }

    fn path(&self, xid: u32) -> PathBuf {
        self.dir.join(format!("{}{xid}.spill", self.prefix))
    }

    /// Moves the memory of `xid` to the end of its file.
    fn spill(&mut self, xid: u32) -> Result<(), SpillError> {
        let Some(txn) = self.txns.get_mut(&xid) else {
            return Ok(());
        };
        let mem = std::mem::take(&mut txn.mem);
        self.mem_bytes -= mem.capacity();
        if mem.is_empty() {
            return Ok(());
        }
        self.write(xid, &[&mem])
    }

    fn write(&mut self, xid: u32, parts: &[&[u8]]) -> Result<(), SpillError> {
        let len: u64 = parts.iter().map(|p| p.len() as u64).sum();
        if self.disk_bytes + len > self.max_disk {
            return Err(SpillError::Full {
                xid,
                dir: self.dir.clone(),
                used: self.disk_bytes,
                limit: self.max_disk,
            });
        }
        let path = self.path(xid);
        let Some(txn) = self.txns.get_mut(&xid) else {
            return Ok(());
        };
        if txn.file.is_none() {
            use std::os::unix::fs::OpenOptionsExt;
            let file = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&path)
                .map_err(|source| SpillError::Io {
                    what: "creating",
                    path: path.clone(),
                    xid,
                    source,
                })?;
            txn.file = Some(file);
        }
        let Some(file) = txn.file.as_mut() else {
            return Ok(());
        };
        for part in parts {
            file.write_all(part).map_err(|source| SpillError::Io {
                what: "writing",
                path: path.clone(),
                xid,
                source,
            })?;
        }
        txn.file_bytes += len;
        self.disk_bytes += len;
        self.metrics
            .spilled_bytes_total
            .fetch_add(len, Ordering::Relaxed);
        Ok(())
    }

    fn release(&mut self, xid: u32, txn: Staged) {
        self.mem_bytes -= txn.mem.capacity();
        self.disk_bytes -= txn.file_bytes;
        if txn.file.is_some() {
            drop(txn.file);
            remove_quietly(&self.path(xid));
        }
    }

    fn publish(&self) {
        let m = &self.metrics;
        m.streamed_txns_open
            .store(self.txns.len() as u64, Ordering::Relaxed);
        m.spill_memory_bytes
            .store(self.mem_bytes as u64, Ordering::Relaxed);
        m.spill_disk_bytes.store(self.disk_bytes, Ordering::Relaxed);
    }
}

impl Drop for StreamedTxns {
    fn drop(&mut self) {
        let xids: Vec<u32> = self.txns.keys().copied().collect();
        for xid in xids {
            if let Some(txn) = self.txns.remove(&xid) {
                self.release(xid, txn);
            }
        }
        self.publish();
    }
}

/// A committed streamed transaction, read back in arrival order. Its file is removed when the
/// replay is dropped.
pub struct Replay {
    xid: u32,
    path: Option<PathBuf>,
    reader: Option<File>,
    buf: BytesMut,
    mem: Bytes,
    mem_pos: usize,
    file_done: bool,
    aborted_subxacts: hashbrown::HashSet<u32>,
    file_bytes: u64,
}

impl Replay {
    /// The top-level transaction.
    pub fn xid(&self) -> u32 {
        self.xid
    }

    /// Whether `xid` is a subtransaction that rolled back (its changes are to be skipped).
    pub fn is_aborted(&self, xid: u32) -> bool {
        self.aborted_subxacts.contains(&xid)
    }

    /// Bytes this transaction had spilled to disk.
    pub fn spilled_bytes(&self) -> u64 {
        self.file_bytes
    }

    /// The next frame and the WAL position it was sent at.
    ///
    /// The file is read in chunks of [`READ_CHUNK`] bytes and frames are slices of them, as
    /// frames from the socket are slices of its read buffer: no allocation per frame.
    pub fn next_frame(&mut self) -> Result<Option<(Lsn, Bytes)>, SpillError> {
        if !self.file_done {
            if let Some(frame) = self.next_file_frame()? {
                return Ok(Some(frame));
            }
            self.file_done = true;
            self.reader = None;
            self.buf = BytesMut::new();
        }
        let rest = &self.mem[self.mem_pos..];
        if rest.len() < HEADER {
            return Ok(None);
        }
        let (len, lsn) = header(rest);
        let start = self.mem_pos + HEADER;
        let end = start + len;
        if end > self.mem.len() {
            return Ok(None);
        }
        self.mem_pos = end;
        Ok(Some((Lsn(lsn), self.mem.slice(start..end))))
    }

    fn next_file_frame(&mut self) -> Result<Option<(Lsn, Bytes)>, SpillError> {
        let Some(path) = &self.path else {
            return Ok(None);
        };
        let io_err = |what: &'static str, xid: u32| {
            let path = path.clone();
            move |source| SpillError::Io {
                what,
                path,
                xid,
                source,
            }
        };
        if self.reader.is_none() {
            self.reader = Some(File::open(path).map_err(io_err("opening", self.xid))?);
        }
        let Some(file) = self.reader.as_mut() else {
            return Ok(None);
        };
        let mut need = HEADER;
        loop {
            if self.buf.len() >= HEADER {
                let (len, _) = header(&self.buf);
                need = HEADER + len;
            }
            if self.buf.len() >= need && self.buf.len() >= HEADER {
                let (len, lsn) = header(&self.buf);
                self.buf.advance(HEADER);
                return Ok(Some((Lsn(lsn), self.buf.split_to(len).freeze())));
            }
            // Room for the rest of this record, read a chunk at a time.
            self.buf.reserve((need - self.buf.len()).max(READ_CHUNK));
            let n = read_into(file, &mut self.buf).map_err(io_err("reading", self.xid))?;
            if n == 0 {
                if self.buf.is_empty() {
                    return Ok(None);
                }
                return Err(SpillError::Truncated {
                    path: path.clone(),
                    xid: self.xid,
                });
            }
        }
    }
}

/// Length and LSN of the record at the start of `b` (at least [`HEADER`] bytes).
fn header(b: &[u8]) -> (usize, u64) {
    let mut len = [0u8; 4];
    let mut lsn = [0u8; 8];
    len.copy_from_slice(&b[..4]);
    lsn.copy_from_slice(&b[4..HEADER]);
    (u32::from_le_bytes(len) as usize, u64::from_le_bytes(lsn))
}

/// Appends what one read returns to `buf`'s spare capacity (which the caller reserved).
fn read_into(file: &mut File, buf: &mut BytesMut) -> std::io::Result<usize> {
    let start = buf.len();
    let spare = buf.capacity() - start;
    buf.resize(start + spare, 0);
    loop {
        match file.read(&mut buf[start..]) {
            Ok(n) => {
                buf.truncate(start + n);
                return Ok(n);
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => {
                buf.truncate(start);
                return Err(e);
            }
        }
    }
}

impl Drop for Replay {
    fn drop(&mut self) {
        self.reader = None;
        if let Some(path) = &self.path {
            remove_quietly(path);
        }
    }
}

/// A short, stable name for the source: 12 hex digits of SHA-256.
fn source_hash(source: &str) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(source.as_bytes());
    digest[..6].iter().map(|b| format!("{b:02x}")).collect()
}

fn is_spill_file(name: &str, prefix: &str) -> bool {
    name.strip_prefix(prefix)
        .and_then(|rest| rest.strip_suffix(".spill"))
        .is_some_and(|xid| !xid.is_empty() && xid.bytes().all(|b| b.is_ascii_digit()))
}

fn remove_quietly(path: &Path) {
    if let Err(e) = std::fs::remove_file(path) {
        if e.kind() != ErrorKind::NotFound {
            tracing::warn!(path = %path.display(), error = %e, "could not remove a spill file");
        }
    }
}

/// Bytes available to an unprivileged user on the file system holding `dir`.
fn free_bytes(dir: &Path) -> std::io::Result<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes())
        .map_err(|e| std::io::Error::new(ErrorKind::InvalidInput, e))?;
    let mut st = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: `c` is a valid NUL-terminated path and `st` points to writable memory of the
    // right type; statvfs only writes to it, and we read it only when it returned 0.
    let rc = unsafe { libc::statvfs(c.as_ptr(), st.as_mut_ptr()) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: statvfs returned 0, so it initialised `st`.
    let st = unsafe { st.assume_init() };
    // The field types differ between targets (u32 or u64); widen whatever they are.
    #[allow(clippy::useless_conversion)]
    let (avail, frsize) = (u64::from(st.f_bavail), u64::from(st.f_frsize));
    Ok(avail.saturating_mul(frsize))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(dir: &Path, memory: usize, max: Option<u64>) -> SpillLimits {
        SpillLimits {
            dir: dir.to_path_buf(),
            memory_bytes: memory,
            max_bytes: max,
        }
    }

    fn tempdir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!(
            "dbmazz-streamed-{name}-{}-{}",
            std::process::id(),
            crate::metrics::now_unix_us()
        ));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    fn frame(i: u32, len: usize) -> Vec<u8> {
        let mut f = vec![b'I'];
        f.extend_from_slice(&i.to_be_bytes());
        f.resize(len, b'x');
        f
    }

    fn drain(mut r: Replay) -> Vec<(Lsn, Bytes)> {
        let mut out = Vec::new();
        while let Some(f) = r.next_frame().unwrap() {
            out.push(f);
        }
        out
    }

    fn spill_files(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".spill"))
            .collect();
        v.sort();
        v
    }

    #[test]
    fn frames_come_back_in_order_across_memory_and_disk() {
        let dir = tempdir("order");
        let m = Arc::new(Metrics::default());
        let mut s =
            StreamedTxns::open(&limits(&dir, 4096, Some(1 << 30)), "slot", "src", m.clone())
                .unwrap();
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777,
            0o700
        );
        s.start(7);
        s.start(8);
        let mut expected = Vec::new();
        for i in 0..500u32 {
            let f = frame(i, 20 + (i as usize % 90));
            s.stage(7, Lsn(1000 + u64::from(i)), &f).unwrap();
            expected.push((Lsn(1000 + u64::from(i)), f));
            s.stage(8, Lsn(5), &frame(i, 10)).unwrap();
            let (_, mem, _) = s.usage();
            assert!(mem <= 4096, "memory {mem} over the budget");
        }
        let (open, _, disk) = s.usage();
        assert_eq!(open, 2);
        assert!(disk > 0, "nothing spilled");
        assert_eq!(m.spill_disk_bytes.load(Ordering::Relaxed), disk);
        let job = format!("slot-{}", source_hash("src"));
        assert_eq!(
            spill_files(&dir),
            vec![format!("{job}-7.spill"), format!("{job}-8.spill")]
        );
        let got = drain(s.take(7).unwrap());
        assert_eq!(got.len(), expected.len());
        for ((l, f), (el, ef)) in got.iter().zip(&expected) {
            assert_eq!(l, el);
            assert_eq!(&f[..], &ef[..]);
        }
        assert_eq!(spill_files(&dir), vec![format!("{job}-8.spill")]);
        assert!(s.take(7).is_none());
        s.abort(8, 8);
        assert!(spill_files(&dir).is_empty());
        assert_eq!(s.usage(), (0, 0, 0));
        assert_eq!(m.spill_disk_bytes.load(Ordering::Relaxed), 0);
        assert_eq!(m.streamed_txns_open.load(Ordering::Relaxed), 0);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_frame_larger_than_the_budget_goes_straight_to_disk_after_what_is_staged() {
        let dir = tempdir("big");
        let m = Arc::new(Metrics::default());
        let mut s = StreamedTxns::open(&limits(&dir, 1024, Some(1 << 20)), "s", "src", m).unwrap();
        s.start(1);
        s.stage(1, Lsn(1), &frame(1, 100)).unwrap();
        s.stage(1, Lsn(2), &frame(2, 5000)).unwrap();
        s.stage(1, Lsn(3), &frame(3, 100)).unwrap();
        // Larger than a read chunk, and records that straddle chunks.
        s.stage(1, Lsn(4), &frame(4, 3 * READ_CHUNK + 7)).unwrap();
        for i in 5..300 {
            s.stage(1, Lsn(i), &frame(i as u32, 900)).unwrap();
        }
        let got = drain(s.take(1).unwrap());
        let mut expected = vec![(1, 100), (2, 5000), (3, 100), (4, 3 * READ_CHUNK + 7)];
        expected.extend((5..300).map(|i| (i, 900)));
        assert_eq!(
            got.iter().map(|(l, f)| (l.0, f.len())).collect::<Vec<_>>(),
            expected
        );
        assert!(got
            .iter()
            .all(|(l, f)| f[1..5] == (l.0 as u32).to_be_bytes()));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn aborts_drop_the_transaction_or_mark_the_subtransaction() {
        let dir = tempdir("abort");
        let m = Arc::new(Metrics::default());
        let mut s = StreamedTxns::open(&limits(&dir, 64, Some(1 << 20)), "s", "src", m).unwrap();
        s.start(10);
        s.stage(10, Lsn(1), &frame(1, 50)).unwrap();
        s.stage(10, Lsn(2), &frame(2, 50)).unwrap();
        assert_eq!(
            spill_files(&dir),
            vec![format!("s-{}-10.spill", source_hash("src"))]
        );
        s.abort(10, 11);
        let r = s.take(10).unwrap();
        assert!(r.is_aborted(11));
        assert!(!r.is_aborted(10));
        assert_eq!(drain(r).len(), 2);
        s.start(12);
        s.stage(12, Lsn(1), &frame(1, 50)).unwrap();
        s.stage(12, Lsn(1), &frame(1, 50)).unwrap();
        s.abort(12, 12);
        assert!(!s.is_open(12));
        assert!(spill_files(&dir).is_empty());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_disk_limit_is_a_clear_error_naming_the_transaction_and_directory() {
        let dir = tempdir("full");
        let m = Arc::new(Metrics::default());
        let mut s = StreamedTxns::open(&limits(&dir, 64, Some(300)), "s", "src", m).unwrap();
        s.start(99);
        let err = (0..10)
            .find_map(|i| s.stage(99, Lsn(i), &frame(i as u32, 50)).err())
            .expect("the limit is reached");
        let text = err.to_string();
        assert!(
            matches!(
                err,
                SpillError::Full {
                    xid: 99,
                    limit: 300,
                    ..
                }
            ),
            "{text}"
        );
        assert!(text.contains(&dir.display().to_string()), "{text}");
        assert!(text.contains("STREAMING=off"), "{text}");
        drop(s);
        assert!(spill_files(&dir).is_empty());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn leftovers_of_the_same_job_are_removed_at_start_and_others_kept() {
        let dir = tempdir("left");
        std::fs::create_dir_all(&dir).unwrap();
        let mine = format!("a-{}", source_hash("db1"));
        let other = format!("a-{}", source_hash("db2"));
        for name in [
            format!("{mine}-1.spill"),
            format!("{mine}-22.spill"),
            format!("{mine}-x.spill"),
            format!("{other}-1.spill"),
            "a-1.spill".to_owned(),
            "notes.txt".to_owned(),
        ] {
            std::fs::write(dir.join(name), b"x").unwrap();
        }
        let m = Arc::new(Metrics::default());
        let s = StreamedTxns::open(&limits(&dir, 64, None), "a", "db1", m.clone()).unwrap();
        let mut expected = vec![
            format!("{mine}-x.spill"),
            format!("{other}-1.spill"),
            "a-1.spill".to_owned(),
        ];
        expected.sort();
        assert_eq!(spill_files(&dir), expected);
        assert!(s.max_disk() > 0, "half the free space");
        assert_eq!(m.spill_max_bytes.load(Ordering::Relaxed), s.max_disk());

        // The same job twice is refused while the first holds the directory; another source
        // with the same slot name is not.
        let err = StreamedTxns::open(&limits(&dir, 64, None), "a", "db1", m.clone())
            .err()
            .expect("the lock is held");
        assert!(matches!(err, SpillError::Busy { .. }), "{err}");
        assert!(err.to_string().contains("another dbmazz"), "{err}");
        assert!(StreamedTxns::open(&limits(&dir, 64, None), "a", "db2", m.clone()).is_ok());
        drop(s);
        assert!(StreamedTxns::open(&limits(&dir, 64, None), "a", "db1", m).is_ok());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
