//! Putting large values on the heap without building them on the stack first.
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
