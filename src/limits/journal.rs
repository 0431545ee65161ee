//! The admission journal's cell: per limit window, how much it admitted since it got the cell,
//! and how much of that the last durable window snapshot covers. Cells live in a shared file
//! mapping (`storage::journal`), so a write to one is in the kernel's page cache the moment it
//! is made and survives the death of the process (kill -9, OOM kill, abort), though not a
//! power loss. After an unclean stop, `admitted - committed` is exactly what the windows
//! admitted after their last saved snapshot.
//! Invariant: `admitted` grows after the window counted the admission and `committed` is
//! only ever set to an `admitted` value read *before* the snapshot it belongs to, so
//! `admitted - committed` never misses an admission the snapshot did not hold (it may count
//! one twice, which only makes a restore more careful).

use std::sync::atomic::{AtomicU64, Ordering};

use super::LimiterId;

/// One window's cell. 64 bytes, so windows written by different cores never share a line.
#[repr(C, align(64))]
#[derive(Debug, Default)]
pub struct JournalCell {
    /// `journal_id` of the window's `LimiterId`; 0 = free or retired.
    pub id: AtomicU64,
    /// Units admitted (and forced) since the cell was given to the window, refunds not taken
    /// off: a refund may land after the snapshot that saw it.
    pub admitted: AtomicU64,
    /// The `admitted` value the last successfully saved snapshot covers.
    pub committed: AtomicU64,
}

impl JournalCell {
    /// After the window counted `cost`.
    pub fn note(&self, cost: u64) {
        self.admitted.fetch_add(cost, Ordering::Release);
    }

    /// Read before the window's buckets are read for a snapshot.
    pub fn mark(&self) -> u64 {
        self.admitted.load(Ordering::Acquire)
    }

    /// The snapshot taken after `mark` returned `marked` is durable.
    pub fn commit(&self, marked: u64) {
        self.committed.fetch_max(marked, Ordering::AcqRel);
    }

    /// The window is gone: a restore must not give its counts to a later window of that name.
    /// (Not on drop: windows also drop when the process exits, and a crash-time journal must
    /// keep every count the last snapshot missed.)
    pub fn retire(&self) {
        self.id.store(0, Ordering::Release);
    }
}

/// A stable 64-bit name for a window (FNV-1a of its storage name: the same in every build and
/// on every CPU, unlike the hashers used in memory). Never 0.
pub fn journal_id(id: &LimiterId) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in id.storage_name().bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash.max(1)
}
