//! Putting large values on the heap without building them on the stack first, handing freed
//! memory back to the OS, and keeping the heap in small pages.
//! Invariant: the value is written straight into its allocation (no stack copy of its full size).

use std::pin::Pin;

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

/// Turns transparent huge pages off for this process. mimalloc advises huge pages on the regions
/// it maps (`MADV_HUGEPAGE`), so the first small allocations of each 2 MiB stretch fault in a
/// whole huge page: an idle rotor with two workers held 8 MB of its 17-18 MB RSS in four of
/// them (`AnonHugePages` in /proc/PID/smaps). A gateway's heap is small and churns, so the TLB
/// gain of huge pages does not pay for that. Called first thing in `main`: the two huge pages
/// mimalloc faulted in before `main` stay (idle RSS 14 MB); `MIMALLOC_ALLOW_THP=0` in the
/// environment avoids those too (9.5 MB). A kernel without the knob keeps its default.
pub fn disable_transparent_huge_pages() {
    // SAFETY: PR_SET_THP_DISABLE takes plain integer arguments and touches no memory of ours;
    // it only sets a flag on this process. There is no safe wrapper in the crates rotor uses.
    // The arguments are unsigned longs to the kernel: passed as such through the variadic call.
    let (on, unused): (libc::c_ulong, libc::c_ulong) = (1, 0);
    #[allow(unsafe_code)]
    let _ = unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, on, unused, unused, unused) };
}
