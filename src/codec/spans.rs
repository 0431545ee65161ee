//! `Spans`: where each field of a head lies (name and value ranges in `u32`s), the field each
//! name is, the index of where each field first is and the set of the names' lengths, built
//! together in the one pass that reads the head (`quick::fields`, or from httparse's fields in
//! `spans_of`); `headers::Headers` holds them with the head's buffer.
//!
//! Invariant: a span is marked `parsed` only when its name is a token and its value holds no
//! CR, LF or NUL (httparse's fields, or `quick`'s read as httparse reads them), and every span a
//! list holds is in its index and its lengths.

use std::ops::Range;

use super::field_index::{Field, FieldIndex};

/// `r` in `u32`s: a head is far shorter than 4 GiB, and a bound that does not fit saturates,
/// so the span reads as empty through `get` rather than as other bytes.
#[inline(always)]
fn narrow(r: Range<usize>) -> Range<u32> {
    let at = |i: usize| u32::try_from(i).unwrap_or(u32::MAX);
    at(r.start)..at(r.end)
}

#[inline(always)]
pub(super) fn wide(r: &Range<u32>) -> Range<usize> {
    r.start as usize..r.end as usize
}

/// Where one field's name and value lie in the head buffer.
///
/// Bounds in `u32`s (20 bytes a span, where `usize` ranges made 40): a list's room for the 17
/// fields an SDK's head carries is then 640 bytes, one small allocation (with room for 16 of
/// 40 bytes, the 17th field reallocated the list: ~365 instructions a request, callgrind).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Span {
    pub(super) name: Range<u32>,
    pub(super) value: Range<u32>,
    /// The field the name is, when it is one rotor reads or drops.
    pub(super) field: Option<Field>,
    /// Made by [`spans_of`] from what httparse parsed: a name of token bytes and a value of
    /// HTAB, SP, visible ASCII and obs-text only (obsolete line folding is off). In the span's
    /// padding: no byte is added to a head for it.
    pub(super) parsed: bool,
}

/// The spans of one head's fields, their index and their names' lengths (built together, in
/// one pass).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Spans {
    pub(super) list: Vec<Span>,
    pub(super) index: FieldIndex,
    pub(super) lengths: Lengths,
}

/// Bit `min(len, 63)` set for each name length in a list: a name whose bit is clear is not in it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Lengths(u64);

impl Lengths {
    fn bit(len: usize) -> u64 {
        1 << len.min(63)
    }

    fn note(&mut self, len: usize) {
        self.0 |= Self::bit(len);
    }

    pub(super) fn may_hold(self, len: usize) -> bool {
        self.0 & Self::bit(len) != 0
    }

    /// Whether a name of any length in `names` may be in the list.
    pub(super) fn may_hold_any(self, names: NameLengths) -> bool {
        self.0 & names.0 != 0
    }
}

/// The lengths of a list of names, as [`Lengths`] marks them, built once (a constant): a head
/// that holds none of them rules the whole list out with one test (`Headers::may_hold_any`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NameLengths(u64);

impl NameLengths {
    pub const fn of(names: &[&str]) -> Self {
        let mut bits = 0u64;
        let mut i = 0;
        while i < names.len() {
            let len = names[i].len();
            bits |= 1 << if len < 63 { len } else { 63 };
            i += 1;
        }
        NameLengths(bits)
    }
}

impl Spans {
    pub(super) fn with_capacity(n: usize) -> Self {
        Spans {
            list: Vec::with_capacity(n),
            index: FieldIndex::default(),
            lengths: Lengths::default(),
        }
    }

    /// An empty list for a scanner that adds fields one by one (`quick::fields`), with room for
    /// the fields of most heads.
    #[inline(always)]
    pub(crate) fn for_scan() -> Self {
        Spans {
            list: Vec::with_capacity(32),
            index: FieldIndex::default(),
            lengths: Lengths::default(),
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.list.len()
    }

    /// Appends a field read as httparse reads it (`quick::fields`): `name` of token bytes, the
    /// field it is (`Field::of`, asked by the scanner), at `name_at`, and a value of HTAB, SP
    /// and visible ASCII at `value`, so it is marked [`Span::parsed`] as httparse's are. Its
    /// bounds fit `u32` as they are: `quick::fields` reads no buffer of 4 GiB or more.
    #[inline(always)]
    pub(crate) fn push_scanned(
        &mut self,
        name: &[u8],
        field: Option<Field>,
        name_at: Range<usize>,
        value: Range<usize>,
    ) {
        debug_assert!(name.is_ascii(), "a token is ASCII");
        debug_assert_eq!(field, Field::of(name), "recognised by the scanner");
        self.lengths.note(name.len());
        if let Some(f) = field {
            self.index.note(f, self.list.len());
        }
        debug_assert!(value.end <= u32::MAX as usize, "quick reads heads under 4 GiB");
        self.list.push(Span {
            name: name_at.start as u32..name_at.end as u32,
            value: value.start as u32..value.end as u32,
            field,
            parsed: true,
        });
    }

    /// Appends the field named `name`, recognising it. `name` is text, and `name_at` where its
    /// bytes lie in the list's buffer: what lets [`Headers::tagged_text`](super::headers::Headers::tagged_text) hand names out as
    /// text without checking them again.
    pub(super) fn push(&mut self, name: &str, name_at: Range<usize>, value: Range<usize>) {
        let field = recognise(&mut self.index, &mut self.lengths, name.as_bytes(), self.list.len());
        self.list.push(Span {
            name: narrow(name_at),
            value: narrow(value),
            field,
            parsed: false,
        });
    }
}

/// The field the name at span `at` is, noted in `index`, and its length in `lengths`: what
/// every span added to a list records.
#[inline]
fn recognise(index: &mut FieldIndex, lengths: &mut Lengths, name: &[u8], at: usize) -> Option<Field> {
    let field = Field::of(name);
    lengths.note(name.len());
    if let Some(f) = field {
        index.note(f, at);
    }
    field
}

/// The spans of httparse's `headers`, which borrow from the buffer starting at `base`.
/// One `collect` of exactly `headers.len()` spans: no capacity check per field, as `push` has.
pub(crate) fn spans_of(base: usize, headers: &[httparse::Header<'_>]) -> Spans {
    let mut index = FieldIndex::default();
    let mut lengths = Lengths::default();
    let list = headers
        .iter()
        .enumerate()
        .map(|(at, h)| {
            let name = h.name.as_bytes();
            let field = recognise(&mut index, &mut lengths, name, at);
            Span {
                name: narrow(place(base, name)),
                value: narrow(place(base, h.value)),
                field,
                parsed: true,
            }
        })
        .collect();
    Spans { list, index, lengths }
}

/// Where `part`, which borrows from the buffer starting at `base`, lies in it. Wrapping, not
/// saturating as `range_in` is (two conditional moves a bound, four bounds a field): httparse's
/// slices lie in the buffer, and a range that did not would read as empty through `get`.
#[inline(always)]
fn place(base: usize, part: &[u8]) -> Range<usize> {
    let start = (part.as_ptr() as usize).wrapping_sub(base);
    start..start.wrapping_add(part.len())
}
