//! The admission journal file, `<storage.path>-admits`: a 64-byte header and one 64-byte
//! `JournalCell` per limit window, mapped shared into memory. Workers write cells with plain
//! atomic adds: no system call, and no page-in (the pages are locked in memory when
//! RLIMIT_MEMLOCK allows; at worst a minor fault when the kernel re-arms dirty tracking after
//! writing a page back). The kernel owns the pages, so what was written survives the process
//! dying at any instant. The control thread creates the file before any worker serves, maps more of it when
//! a reload adds windows, and marks it clean after the final snapshot of a graceful stop.
//! Invariant: a journal vouches for a crashed run only when it says "running" and was written
//! since the last boot (a power loss can lose page-cache writes); anything else it cannot
//! vouch for is reported as `Previous::Unknown`, and the caller restores conservatively.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use ahash::AHashMap;

use crate::limits::journal::JournalCell;

const MAGIC: u64 = u64::from_le_bytes(*b"rotorAJ1");
const CELL_BYTES: usize = std::mem::size_of::<JournalCell>();
/// Cells per mapping (64 KiB): the file grows, and is mapped, in these steps.
const CHUNK_CELLS: usize = 1024;
const CHUNK_BYTES: usize = CHUNK_CELLS * CELL_BYTES;

/// The first 64 bytes of the file (in the place of cell 0).
#[repr(C, align(64))]
struct Header {
    magic: AtomicU64,
    /// `boot_id` of the boot that wrote the file; 0 = the journal cannot vouch for this run.
    boot: AtomicU64,
    /// 1 from start until the final snapshot of a graceful stop is saved.
    running: AtomicU64,
}

const _: () = assert!(CELL_BYTES == 64 && std::mem::size_of::<Header>() == 64);

/// What the previous run's journal says about the saved window snapshots.
#[derive(Debug, PartialEq, Eq)]
pub enum Previous {
    /// No journal (first start), or the last run stopped gracefully: the snapshots are exact.
    Clean,
    /// The last run died: per window (`journal_id`), the units admitted after its last saved
    /// snapshot. Exact.
    Crashed(AHashMap<u64, u64>),
    /// The last run did not stop gracefully and its journal cannot say what it admitted last
    /// (written before a reboot, damaged, or unreadable): the reason.
    Unknown(String),
}

/// The journal of the running process.
pub struct Journal {
    file: File,
    header: &'static Header,
    /// Chunk `k` holds cells `k * CHUNK_CELLS ..`; cell 0 is the header, never handed out.
    chunks: Vec<&'static [JournalCell]>,
    next: usize,
}

/// The journal's path beside the database: `data/rotor.db` -> `data/rotor.db-admits`.
pub fn path_for(db: &Path) -> PathBuf {
    let mut name = db.as_os_str().to_owned();
    name.push("-admits");
    PathBuf::from(name)
}

/// A number for this boot of the machine (from the kernel's boot id), 0 when unknown.
pub fn boot_id() -> u64 {
    let Ok(text) = std::fs::read_to_string("/proc/sys/kernel/random/boot_id") else {
        return 0;
    };
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in text.trim().bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash.max(1)
}

fn word(bytes: &[u8], at: usize) -> u64 {
    bytes
        .get(at..at + 8)
        .and_then(|b| b.try_into().ok())
        .map_or(0, u64::from_ne_bytes)
}

/// Reads what the journal at `path` says about the last run (`boot` = this boot's id).
pub fn read_previous(path: &Path, boot: u64) -> Previous {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Previous::Clean,
        Err(e) => return Previous::Unknown(format!("cannot read {}: {e}", path.display())),
    };
    if bytes.len() < CELL_BYTES || word(&bytes, 0) != MAGIC {
        return Previous::Unknown(format!("{} is not an admission journal", path.display()));
    }
    if word(&bytes, 16) == 0 {
        return Previous::Clean;
    }
    let written_by = word(&bytes, 8);
    if written_by == 0 || written_by != boot {
        return Previous::Unknown("its admission journal was written before the machine restarted".into());
    }
    let mut unsaved: AHashMap<u64, u64> = AHashMap::new();
    for cell in bytes.chunks_exact(CELL_BYTES).skip(1) {
        let (id, admitted, committed) = (word(cell, 0), word(cell, 8), word(cell, 16));
        if id != 0 && admitted > committed {
            *unsaved.entry(id).or_default() += admitted - committed;
        }
    }
    Previous::Crashed(unsaved)
}

impl Journal {
    /// Replaces the journal at `path` with a new one marked running on `boot`, with a cell for
    /// each `(window id, units admitted but not yet in a saved snapshot)`, in order (see
    /// `cells`). The old file is replaced only once the new one is on disk whole.
    pub fn create(path: &Path, boot: u64, windows: &[(u64, u64)]) -> io::Result<Journal> {
        let chunks = (windows.len() + 1).div_ceil(CHUNK_CELLS).max(1);
        let mut bytes = vec![0u8; chunks * CHUNK_BYTES];
        for (at, value) in [(0, MAGIC), (8, boot), (16, 1)] {
            bytes[at..at + 8].copy_from_slice(&value.to_ne_bytes());
        }
        for (i, (id, seed)) in windows.iter().enumerate() {
            let at = (i + 1) * CELL_BYTES;
            bytes[at..at + 8].copy_from_slice(&id.to_ne_bytes());
            bytes[at + 8..at + 16].copy_from_slice(&seed.to_ne_bytes());
        }
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(".tmp");
        let tmp = PathBuf::from(tmp);
        {
            let mut file = File::create(&tmp)?;
            file.write_all(&bytes)?;
            file.sync_all()?;
        }
        std::fs::rename(&tmp, path)?;
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            let _ = File::open(dir).and_then(|d| d.sync_all());
        }
        let file = OpenOptions::new().read(true).write(true).open(path)?;
        let mut journal = Journal {
            header: map_header(&file)?,
            chunks: Vec::with_capacity(chunks),
            file,
            next: windows.len() + 1,
        };
        for k in 0..chunks {
            let chunk = map_cells(&journal.file, k)?;
            journal.chunks.push(chunk);
        }
        Ok(journal)
    }

    /// The cells `create` wrote for its windows, in their order.
    pub fn cells(&self) -> Vec<&'static JournalCell> {
        (1..self.next).filter_map(|i| self.cell_at(i)).collect()
    }

    fn cell_at(&self, i: usize) -> Option<&'static JournalCell> {
        self.chunks.get(i / CHUNK_CELLS).and_then(|c| c.get(i % CHUNK_CELLS))
    }

    /// A fresh cell for a window created after start (a reload). On failure (the file cannot
    /// grow) the journal stops vouching for this run, so a crash is restored conservatively.
    pub fn cell(&mut self, id: u64) -> Option<&'static JournalCell> {
        if self.next == self.chunks.len() * CHUNK_CELLS {
            let grown = self
                .file
                .set_len(((self.chunks.len() + 1) * CHUNK_BYTES) as u64)
                .and_then(|()| map_cells(&self.file, self.chunks.len()));
            match grown {
                Ok(chunk) => self.chunks.push(chunk),
                Err(e) => {
                    tracing::error!("cannot grow the admission journal ({e}); a crash will be restored conservatively");
                    self.header.boot.store(0, Ordering::Release);
                    return None;
                }
            }
        }
        let cell = self.cell_at(self.next)?;
        cell.id.store(id, Ordering::Release);
        self.next += 1;
        Some(cell)
    }

    /// The final snapshot of a graceful stop is saved: nothing is left unsaved.
    pub fn mark_clean(&self) {
        self.header.running.store(0, Ordering::Release);
        sync_header(self.header);
    }
}

/// Maps `len` bytes of `file` from `offset` shared, read-write, for the rest of the process.
#[allow(unsafe_code)]
fn map(file: &File, offset: usize, len: usize) -> io::Result<*mut libc::c_void> {
    use std::os::fd::AsRawFd;
    let offset = libc::off_t::try_from(offset).map_err(io::Error::other)?;
    // SAFETY: a fresh shared mapping of our own file descriptor at a page-aligned offset (a
    // multiple of 64 KiB); the kernel picks the address, so nothing existing is overwritten.
    let ptr = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            file.as_raw_fd(),
            offset,
        )
    };
    if ptr == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: locks pages of the mapping just made. Best effort (RLIMIT_MEMLOCK may refuse):
    // it only keeps a worker's first write to a cell from waiting on a page-in.
    let _ = unsafe { libc::mlock(ptr, len) };
    Ok(ptr)
}

/// Chunk `k`'s cells. The file is at least `(k + 1) * CHUNK_BYTES` long.
#[allow(unsafe_code)]
fn map_cells(file: &File, k: usize) -> io::Result<&'static [JournalCell]> {
    let ptr = map(file, k * CHUNK_BYTES, CHUNK_BYTES)?;
    // SAFETY: the mapping is never unmapped (it lives as long as the process), is page-aligned
    // (so 64-byte aligned), spans exactly CHUNK_CELLS cells of file bytes the file already
    // has, and every byte pattern is a valid `JournalCell` (three `AtomicU64`s and padding).
    // All access goes through atomics, so sharing it between threads is sound.
    Ok(unsafe { std::slice::from_raw_parts(ptr.cast::<JournalCell>(), CHUNK_CELLS) })
}

#[allow(unsafe_code)]
fn map_header(file: &File) -> io::Result<&'static Header> {
    let ptr = map(file, 0, CELL_BYTES)?;
    // SAFETY: as in `map_cells`: a never-unmapped, page-aligned mapping of the file's first 64
    // bytes, valid as a `Header` for any content, accessed only through atomics.
    Ok(unsafe { &*ptr.cast::<Header>() })
}

#[allow(unsafe_code)]
fn sync_header(header: &'static Header) {
    // SAFETY: msync of the page-aligned mapping `map_header` made; it only flushes.
    let _ = unsafe { libc::msync((header as *const Header).cast_mut().cast(), CELL_BYTES, libc::MS_SYNC) };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_crashed_run_reports_what_its_windows_admitted_after_the_last_commit() {
        let dir = tempfile::tempdir().unwrap();
        let path = path_for(&dir.path().join("rotor.db"));
        assert_eq!(read_previous(&path, 7), Previous::Clean, "no journal yet");
        let mut journal = Journal::create(&path, 7, &[(11, 3), (22, 0)]).unwrap();
        let cells = journal.cells();
        assert_eq!(cells.len(), 2);
        cells[1].note(5);
        cells[1].commit(4);
        // A window added by a reload, past the first chunk.
        let mut late = None;
        for _ in 0..CHUNK_CELLS + 5 {
            late = journal.cell(33);
        }
        late.unwrap().note(9);
        let Previous::Crashed(unsaved) = read_previous(&path, 7) else {
            panic!("a running journal of this boot vouches")
        };
        assert_eq!(unsaved.get(&11), Some(&3), "the seed counts until committed");
        assert_eq!(unsaved.get(&22), Some(&1));
        assert_eq!(unsaved.get(&33), Some(&9));
        assert!(matches!(read_previous(&path, 8), Previous::Unknown(_)), "another boot");
        journal.mark_clean();
        assert_eq!(read_previous(&path, 8), Previous::Clean);
        std::fs::write(&path, b"garbage").unwrap();
        assert!(matches!(read_previous(&path, 7), Previous::Unknown(_)));
    }
}
