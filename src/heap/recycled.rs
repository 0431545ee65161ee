//! A pinned heap value whose block this thread keeps when the value is dropped, so the next
//! value of the same layout is built in it: a worker's request futures (one per request, all of
//! one type) then cost no allocation and free each. `Box::pin` of the request future was
//! 308 + 115 instructions per request in mimalloc (a block of several KiB, freed and taken
//! again at once; callgrind, 30,900 per proxied chat).
//! Invariants: a value is built in its block, never moved, and dropped in place before its
//! block is reused or freed; each thread keeps at most `KEPT` blocks (the rest are freed), so
//! a busy worker holds at most `KEPT` request futures' worth of memory, and `trim` frees them
//! once it is idle; no block is kept while a value lives in it.

use std::alloc::{alloc, dealloc, handle_alloc_error, Layout};
use std::cell::RefCell;
use std::ops::{Deref, DerefMut};
use std::pin::Pin;
use std::ptr::NonNull;

/// Blocks kept per thread: one per request in flight on a worker, up to this many at once.
const KEPT: usize = 8;

/// Free blocks, the layout each was allocated with, and whether it was kept since the last
/// `trim`.
struct Blocks(Vec<(Layout, NonNull<u8>, bool)>);

impl Blocks {
    /// Frees the blocks for which `free` says so.
    #[allow(unsafe_code)]
    fn free_where(&mut self, mut free: impl FnMut(&mut bool) -> bool) {
        self.0.retain_mut(|(layout, block, recent)| {
            if !free(recent) {
                return true;
            }
            // SAFETY: every listed block came from `alloc(layout)` with this layout and is
            // owned by the list alone (`take` removes a block before handing it out); it is
            // unlisted here, so it is freed once.
            unsafe { dealloc(block.as_ptr(), *layout) };
            false
        });
    }
}

impl Drop for Blocks {
    fn drop(&mut self) {
        self.free_where(|_| true);
    }
}

thread_local! {
    static BLOCKS: RefCell<Blocks> = const { RefCell::new(Blocks(Vec::new())) };
}

/// Frees the blocks not kept since the previous call: called once a second by every worker,
/// so a worker gone idle holds none after two seconds.
pub fn trim() {
    let _ = BLOCKS.try_with(|blocks| {
        blocks
            .borrow_mut()
            .free_where(|recent| !std::mem::replace(recent, false));
    });
}

/// A value of type `T` in a block of its own (see the module). Only pinned ([`pin_recycled`]).
pub struct Recycled<T> {
    value: NonNull<T>,
}

/// `Box::pin(make())`, built in place (as `pin_in_place`) in a block this thread kept from an
/// earlier value of `T`'s layout when there is one.
#[allow(unsafe_code)]
pub fn pin_recycled<T>(make: impl FnOnce() -> T) -> Pin<Recycled<T>> {
    let layout = Layout::new::<T>();
    let block = if layout.size() == 0 {
        NonNull::<T>::dangling()
    } else {
        take(layout)
            .unwrap_or_else(|| {
                // SAFETY: `layout` has a non-zero size (checked above).
                let fresh = unsafe { alloc(layout) };
                NonNull::new(fresh).unwrap_or_else(|| handle_alloc_error(layout))
            })
            .cast::<T>()
    };
    // SAFETY: `block` is valid for a write of one `T` and aligned for it: allocated with `T`'s
    // layout (or a kept block of exactly that layout, no longer listed, so nothing else uses
    // it), or dangling for a zero-sized `T`. Nothing was in it to drop.
    unsafe { block.as_ptr().write(make()) };
    // SAFETY: the value never moves: `Recycled` hands out only references to it, and its drop
    // drops it in place before the block is reused or freed (the `Pin` contract).
    unsafe { Pin::new_unchecked(Recycled { value: block }) }
}

/// A kept block of exactly `layout`, taken off the list.
fn take(layout: Layout) -> Option<NonNull<u8>> {
    BLOCKS
        .try_with(|blocks| {
            let mut blocks = blocks.borrow_mut();
            let at = blocks.0.iter().rposition(|(kept, _, _)| *kept == layout)?;
            Some(blocks.0.swap_remove(at).1)
        })
        .ok()
        .flatten()
}

/// Lists `block` for reuse; false when the list is full (or the thread is ending).
fn keep(layout: Layout, block: NonNull<u8>) -> bool {
    BLOCKS
        .try_with(|blocks| {
            let mut blocks = blocks.borrow_mut();
            let room = blocks.0.len() < KEPT;
            if room {
                blocks.0.push((layout, block, true));
            }
            room
        })
        .unwrap_or(false)
}

impl<T> Deref for Recycled<T> {
    type Target = T;

    #[allow(unsafe_code)]
    fn deref(&self) -> &T {
        // SAFETY: `value` holds a live `T` from `pin_recycled` until drop.
        unsafe { self.value.as_ref() }
    }
}

impl<T> DerefMut for Recycled<T> {
    #[allow(unsafe_code)]
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: as in `deref`; `&mut self` makes this the only reference.
        unsafe { self.value.as_mut() }
    }
}

impl<T> Drop for Recycled<T> {
    #[allow(unsafe_code)]
    fn drop(&mut self) {
        // SAFETY: `value` holds a live `T`, dropped here once, in place.
        unsafe { std::ptr::drop_in_place(self.value.as_ptr()) };
        let layout = Layout::new::<T>();
        let block = self.value.cast::<u8>();
        if layout.size() > 0 && !keep(layout, block) {
            // SAFETY: the block came from `alloc(layout)` (directly or as a kept block of this
            // layout), its value was dropped above, and it was not listed.
            unsafe { dealloc(block.as_ptr(), layout) };
        }
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;
    use std::rc::Rc;

    use super::{pin_recycled, trim, BLOCKS};

    fn kept() -> usize {
        BLOCKS.with_borrow(|blocks| blocks.0.len())
    }

    struct Counted(Rc<Cell<usize>>, [u64; 64]);

    impl Drop for Counted {
        fn drop(&mut self) {
            self.0.set(self.0.get() + 1);
        }
    }

    /// A dropped value's block holds the next value of its layout, each value is dropped once,
    /// and a future polls through it (what `serve_connection` uses it for).
    #[test]
    fn blocks_are_reused_and_values_dropped_once() {
        let drops = Rc::new(Cell::new(0));
        let first = pin_recycled(|| Counted(drops.clone(), [1; 64]));
        let at = &*first as *const Counted;
        drop(first);
        assert_eq!(drops.get(), 1);
        let second = pin_recycled(|| Counted(drops.clone(), [2; 64]));
        assert_eq!(&*second as *const Counted, at, "built in the kept block");
        assert_eq!(second.1[63], 2);
        let third = pin_recycled(|| Counted(drops.clone(), [3; 64]));
        assert_ne!(&*third as *const Counted, at, "a block in use is never handed out");
        drop((second, third));
        assert_eq!(drops.get(), 3);
        assert_eq!(kept(), 2);
        trim();
        assert_eq!(kept(), 2, "kept since the last trim: kept through one");
        let again = pin_recycled(|| Counted(drops.clone(), [4; 64]));
        assert_eq!(kept(), 1);
        drop(again);
        trim();
        assert_eq!(kept(), 1, "the block kept again since");
        trim();
        assert_eq!(kept(), 0, "an idle thread keeps none after two trims");
        let mut rt = monoio::RuntimeBuilder::<monoio::FusionDriver>::new().build().unwrap();
        assert_eq!(rt.block_on(pin_recycled(|| async { 7 })), 7);
    }
}
