//! Writing a head's pieces into a buffer after one reservation for all of them.
//! Invariant: only bytes this module wrote are ever taken into the buffer's length, and
//! nothing is written past the capacity reserved.

use bytes::BytesMut;

/// Places pieces one after another in a buffer's spare room, reserved once for all of them
/// (`new`), and takes them into the buffer's length once (`commit`): no capacity check and no
/// length update per piece (that `put_slice` bookkeeping was ~200 instructions per chat
/// request in the response head alone, callgrind). A piece that does not fit (a measuring bug
/// in the caller) stops the filling: nothing past the room is written, and the head comes out
/// short rather than overflowing.
pub(crate) struct Fill<'a> {
    out: &'a mut BytesMut,
    /// The start of `out`'s spare room, and how many bytes of it may be written.
    dst: *mut u8,
    room: usize,
    at: usize,
}

impl<'a> Fill<'a> {
    /// Reserves `len` bytes behind what `out` holds.
    #[inline(always)]
    pub(crate) fn new(out: &'a mut BytesMut, len: usize) -> Self {
        out.reserve(len);
        let spare = out.spare_capacity_mut();
        let (dst, room) = (spare.as_mut_ptr().cast::<u8>(), spare.len());
        Fill { out, dst, room, at: 0 }
    }

    #[inline(always)]
    pub(crate) fn put(&mut self, piece: &[u8]) {
        // The one check per piece: a compare against the room (`at <= room` always holds).
        if piece.len() > self.room - self.at {
            // Nothing more fits: later pieces (but empty ones) fail this test too.
            self.room = self.at;
            return;
        }
        // SAFETY: `at + piece.len() <= room`, and the first `room` bytes from `dst` are the
        // spare capacity `new` found, which belongs to `out` alone (a `BytesMut` never shares
        // it, and `out` is not touched until `commit`), so the write stays inside it and
        // cannot overlap `piece`. `u8` has no invalid values.
        #[allow(unsafe_code)]
        unsafe {
            std::ptr::copy_nonoverlapping(piece.as_ptr(), self.dst.add(self.at), piece.len());
        }
        self.at += piece.len();
    }

    /// `name: value` CRLF.
    #[inline(always)]
    pub(crate) fn field(&mut self, name: &[u8], value: &[u8]) {
        self.put(name);
        self.put(b": ");
        self.put(value);
        self.put(b"\r\n");
    }

    /// Takes what was written into the buffer; returns how many bytes that was.
    #[inline(always)]
    pub(crate) fn commit(self) -> usize {
        let written = self.at;
        // SAFETY: `put` wrote each of the first `written` bytes of the spare capacity, in
        // order and without gaps (`at` only moves past a piece once it is written), and never
        // past it (`at <= room`). So every byte taken into the length is initialised and
        // within capacity.
        #[allow(unsafe_code)]
        unsafe {
            self.out.set_len(self.out.len() + written);
        }
        written
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pieces_land_in_order_behind_what_was_there() {
        let mut out = BytesMut::from(&b"ab"[..]);
        let mut fill = Fill::new(&mut out, 9);
        fill.put(b"c");
        fill.field(b"n", b"v");
        fill.put(b"");
        assert_eq!(fill.commit(), 7);
        assert_eq!(&out[..], b"abcn: v\r\n");
    }

    /// A piece past the reserved room stops the filling: what fitted is kept, nothing after it.
    #[test]
    fn a_piece_past_the_room_stops_the_filling() {
        let mut out = BytesMut::with_capacity(4);
        let cap = out.capacity();
        let mut fill = Fill::new(&mut out, 4);
        fill.put(b"1234");
        fill.put(&vec![b'x'; cap]);
        fill.put(b"5");
        assert_eq!(fill.commit(), 4);
        assert_eq!(&out[..], b"1234");
    }
}
