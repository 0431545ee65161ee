//! Putting large values on the heap without building them on the stack first, handing freed
//! memory back to the OS, keeping the heap in small pages, and reusing the blocks of a worker's
//! request futures (`recycled`).
//! Invariant: the value is written straight into its allocation (no stack copy of its full size).

use std::pin::Pin;

mod recycled;
pub use recycled::{pin_recycled, trim as trim_recycled, Recycled};

/// `Box::pin(make())`, with the allocation made before the value: the value can then be built
/// in place. `Box::pin(serve_one(..))` built the 5.8 KB request future on the stack and copied
/// it into the box, 37 % of rotor's memmove time under load (`perf record --call-graph dwarf`
/// under `wrk -c256`, issue 7).
#[inline(always)]
pub fn pin_in_place<T>(make: impl FnOnce() -> T) -> Pin<Box<T>> {
    Box::into_pin(Box::write(Box::new_uninit(), make()))
}

/// Returns memory this thread has freed to the OS once mimalloc's purge delay has passed. The
/// rotor binary's allocator (mimalloc, `src/main.rs`) purges only when the owning thread calls
/// into it, so a worker gone quiet after a burst (10,000 connections closed, or 1,000 slow
/// uploads cut) kept that memory: 29 MB of 79 stayed resident with no traffic. Cheap (it visits
/// the thread's pages); called once a second by every worker. Without mimalloc as the global
/// allocator (the test binaries) it only touches mimalloc's own empty heap.
pub fn release_freed_memory() {
    // SAFETY: `mi_collect` has no preconditions; it works on the calling thread's heap only.
    #[allow(unsafe_code)]
    unsafe {
        libmimalloc_sys::mi_collect(false);
    }
}

/// mimalloc's number for `allow_thp` in the mimalloc the `libmimalloc-sys` of Cargo.lock
/// vendors (3.3: `libmimalloc-sys` names only the older options). The assertion below stops the
/// build when an update renumbers the options, so a wrong option is never set.
const MI_OPTION_ALLOW_THP: libmimalloc_sys::mi_option_t = 43;
const _: () = assert!(
    libmimalloc_sys::_mi_option_last == 47,
    "libmimalloc-sys changed its mimalloc: check MI_OPTION_ALLOW_THP in include/mimalloc.h"
);

/// rotor's defaults for mimalloc's options; a `MIMALLOC_<OPTION>` environment variable still
/// overrides each (mimalloc reads them when it starts). Must run before mimalloc starts, which
/// is before `main` (its constructor, or the first allocation): the `rotor` binary calls it from
/// an `.init_array` entry ordered ahead of mimalloc's (`src/main.rs`).
///
/// - `allow_thp` = 0 (mimalloc: 1): no transparent huge pages for rotor. mimalloc advises huge
///   pages on the regions it maps (`MADV_HUGEPAGE`), so the first small allocation in each
///   2 MiB stretch faults in a whole huge page: its page map and the main thread's first arena
///   before `main`, then each worker's heap. An idle rotor with two workers held 8 MB of its
///   17-18 MB RSS in four of them (`AnonHugePages` in /proc/PID/smaps). A gateway's heap is
///   small and churns, so the TLB gain does not pay for that. mimalloc then also turns THP off
///   for the whole process (`PR_SET_THP_DISABLE`: SQLite's heap, thread stacks).
///   `MIMALLOC_ALLOW_THP=1` brings them back.
pub fn set_allocator_defaults() {
    // SAFETY: `mi_option_set_default` only writes mimalloc's static option table; it is safe
    // before mimalloc has started (it then decides what mimalloc starts with) and leaves an
    // option the environment or code already set alone.
    #[allow(unsafe_code)]
    unsafe {
        libmimalloc_sys::mi_option_set_default(MI_OPTION_ALLOW_THP, 0);
    }
}
