//! `Headers`: the header fields of one parsed head, as spans into its frozen buffer.
//!
//! Invariant: every span was measured on the buffer the list holds (`parsed`, or built with it
//! in `from_pairs`), and its name range holds the bytes of a `&str` there; fields are sliced on
//! demand through `get`, so a span that does not fit reads as empty instead of panicking. A
//! span marks itself `parsed` only when `spans_of` made it from httparse's fields or
//! `push_scanned` from a field `quick` read as httparse does, so its name is a token and its
//! value holds no CR, LF or NUL: writers skip those checks for it alone.
//! Parsing a head makes no `Bytes` per field (issue 18: one `Bytes` per name and value,
//! collected into a `Vec`, cost ~830 instructions a request).
//! Each span carries the [`Field`] its name is (recognised once, while parsing), and the list
//! an index of where each field first is, so `field` is one array read and no name compare;
//! and the list the set of its names' lengths, so a look-up by any other name that no field has
//! the length of answers without a walk (the response path asks for rate-limit names most
//! answers do not carry: six walks cost ~300 instructions an answer, issue 18).

use std::ops::Range;

use bytes::{BufMut, Bytes, BytesMut};

use super::field_index::{Field, FieldIndex, FAR};
use super::fields::{connection_options, ConnectionOptions};
pub use super::spans::NameLengths;
pub(crate) use super::spans::{spans_of, Span, Spans};
use super::spans::{wide, Lengths};

/// One header field, borrowed from its list. The name keeps the case it was sent in (compare
/// with [`Headers::find`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header<'a> {
    pub name: &'a [u8],
    pub value: &'a [u8],
}

/// One field as [`Headers::lines`] hands it out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Line<'a> {
    pub field: Option<Field>,
    pub name: &'a str,
    pub value: &'a [u8],
    /// The range of the buffer that is exactly `name: value` CRLF, when it is.
    pub exact: Option<Range<usize>>,
}

/// One field as [`Headers::tagged_except`] hands it out; its bytes are sliced only when asked
/// for ([`Tagged::header`]): most forwarded fields are copied as a run of lines that never
/// looks at them (slicing both first cost ~25 instructions a field).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Tagged<'a> {
    pub field: Option<Field>,
    /// httparse parsed it (see [`Span::parsed`]): the name is a token and the value holds no
    /// CR, LF or NUL, so a writer needs not look for them again.
    pub parsed: bool,
    /// As [`Line::exact`]: where its line lies in [`Headers::raw`], when that is exactly
    /// `name: value` CRLF.
    pub exact: Option<Range<usize>>,
    head: &'a [u8],
    span: &'a Span,
}

impl<'a> Tagged<'a> {
    /// The field's name and value.
    pub fn header(&self) -> Header<'a> {
        field(self.head, self.span)
    }

    /// The length of its name, without slicing it.
    pub fn name_len(&self) -> usize {
        self.span.name.len()
    }
}

/// On the heap (the spans): a head travels inside the request's future through every phase.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Headers {
    head: Bytes,
    spans: Vec<Span>,
    index: FieldIndex,
    lengths: Lengths,
}

impl Headers {
    /// The fields at `spans` of `head` (the frozen buffer the spans were measured on).
    /// `head` must be that very buffer: [`Headers::tagged_text`] trusts that each span's name
    /// range holds the text pushed with it (the `unsafe` in `name_text`).
    pub(crate) fn parsed(head: Bytes, spans: Spans) -> Self {
        Self {
            head,
            spans: spans.list,
            index: spans.index,
            lengths: spans.lengths,
        }
    }

    /// A list of the given fields, in order, in one buffer of its own.
    pub fn from_pairs<N: AsRef<str>, V: AsRef<[u8]>>(pairs: &[(N, V)]) -> Self {
        let mut buf = BytesMut::new();
        let mut spans = Spans::with_capacity(pairs.len());
        for (name, value) in pairs {
            let (name, value) = (name.as_ref(), value.as_ref());
            let start = buf.len();
            buf.put_slice(name.as_bytes());
            buf.put_slice(value);
            let mid = start + name.len();
            spans.push(name, start..mid, mid..mid + value.len());
        }
        Self::parsed(buf.freeze(), spans)
    }

    pub fn len(&self) -> usize {
        self.spans.len()
    }

    /// The same fields in a buffer of their own, their list no longer than they are: a parsed
    /// head shares the connection's read buffer (8 KiB upstream), which a head kept for the
    /// length of a stream would otherwise hold (see `upstream::Exchange::lean_reads`).
    pub fn detach(&mut self) {
        self.head = Bytes::copy_from_slice(&self.head);
        self.spans.shrink_to_fit();
    }

    /// The bytes at `r` of the buffer the fields lie in (empty when `r` does not fit): a
    /// request head reads its method and target from that one buffer.
    pub(crate) fn head_bytes(&self, r: &Range<u32>) -> &[u8] {
        self.head.get(r.start as usize..r.end as usize).unwrap_or_default()
    }

    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }

    pub fn get(&self, i: usize) -> Option<Header<'_>> {
        self.spans.get(i).map(|s| field(&self.head, s))
    }

    pub fn iter(&self) -> Iter<'_> {
        Iter {
            head: &self.head,
            spans: self.spans.iter(),
        }
    }

    /// The span index of the first `f`: the index's, or past the index's reach, a walk from
    /// where it ends. Inlined, as `field`, `fields` and `repeated` are: the framing checks of
    /// both heads ask for six fields, and each call with its iterator set up out of line cost
    /// ~30 instructions where the inlined read of an absent field takes a few (issue 18).
    #[inline]
    fn first(&self, f: Field) -> Option<usize> {
        let at = self.index.first(f)?;
        if at < usize::from(FAR - 1) {
            return Some(at);
        }
        self.first_far(f, at)
    }

    #[cold]
    fn first_far(&self, f: Field, from: usize) -> Option<usize> {
        let rest = self.spans.get(from..)?;
        rest.iter().position(|s| s.field == Some(f)).map(|i| from + i)
    }

    /// The value of the first `f`, through the index (no name is compared).
    #[inline]
    pub fn field(&self, f: Field) -> Option<&[u8]> {
        let span = self.spans.get(self.first(f)?)?;
        Some(slice(&self.head, &span.value))
    }

    /// [`Headers::field`] as a `Bytes` that shares the head buffer (no copy).
    pub fn field_bytes(&self, f: Field) -> Option<Bytes> {
        let v = wide(&self.spans.get(self.first(f)?)?.value);
        let fits = v.start <= v.end && v.end <= self.head.len();
        Some(if fits { self.head.slice(v.clone()) } else { Bytes::new() })
    }

    /// The values of every `f`, in order (one when it is not repeated).
    #[inline]
    pub fn fields(&self, f: Field) -> impl Iterator<Item = &[u8]> + '_ {
        let from = self.first(f).unwrap_or(self.spans.len());
        let count = if self.index.repeated(f) { usize::MAX } else { 1 };
        self.spans
            .get(from..)
            .unwrap_or_default()
            .iter()
            .filter(move |s| s.field == Some(f))
            .take(count)
            .map(|s| slice(&self.head, &s.value))
    }

    /// What the `Connection` fields say ([`connection_options`]); with none (most heads), read
    /// from the index alone (setting up the walk over no field cost ~40 instructions a head).
    #[inline]
    pub(crate) fn connection(&self) -> ConnectionOptions {
        if self.first(Field::Connection).is_none() {
            return ConnectionOptions::default();
        }
        connection_options(self.fields(Field::Connection))
    }

    /// Whether `f` occurs more than once.
    #[inline]
    pub fn repeated(&self, f: Field) -> bool {
        self.index.repeated(f)
    }

    /// Each field with the [`Field`] its name is, if any.
    pub fn tagged(&self) -> impl Iterator<Item = (Option<Field>, Header<'_>)> + '_ {
        self.spans.iter().map(|s| (s.field, field(&self.head, s)))
    }

    /// [`Headers::tagged`] without the fields whose tag `skip` holds for, passed over before
    /// their bytes are sliced: an upstream request forwards few of the client's fields, and
    /// slicing each first cost ~20 instructions.
    pub(crate) fn tagged_except<'a>(
        &'a self,
        skip: impl Fn(Field) -> bool + 'a,
    ) -> impl Iterator<Item = Tagged<'a>> + 'a {
        self.spans
            .iter()
            .filter(move |s| !s.field.is_some_and(&skip))
            .map(|s| Tagged {
                field: s.field,
                parsed: s.parsed,
                exact: self.exact_line(s),
                head: &self.head,
                span: s,
            })
    }

    /// [`Headers::tagged`] with each name as text, for writing it into an answer's head: not
    /// checked again (`from_utf8` on every name cost ~70 instructions each, issue 18).
    pub fn tagged_text(&self) -> impl Iterator<Item = (Option<Field>, &str, &[u8])> + '_ {
        self.spans
            .iter()
            .map(|s| (s.field, name_text(&self.head, s), slice(&self.head, &s.value)))
    }

    /// The whole buffer the fields lie in (the head as it arrived, for a parsed one).
    pub(crate) fn raw(&self) -> &[u8] {
        &self.head
    }

    /// [`Headers::tagged_text`], each field with where its line lies in [`Headers::raw`] when
    /// the buffer holds it exactly as a head writer writes it, `name: value` CRLF: a run of
    /// such lines is then copied whole (one copy where writing each field took four).
    pub(crate) fn lines(&self) -> impl Iterator<Item = Line<'_>> + '_ {
        self.spans.iter().map(|s| Line {
            field: s.field,
            name: name_text(&self.head, s),
            value: slice(&self.head, &s.value),
            exact: self.exact_line(s),
        })
    }

    /// Where the line of `s` lies in the buffer, when it is exactly `name: value` CRLF.
    #[inline]
    fn exact_line(&self, s: &Span) -> Option<Range<usize>> {
        let (name, value) = (wide(&s.name), wide(&s.value));
        let after_name = name.end..name.end.checked_add(2)?;
        let after_value = value.end..value.end.checked_add(2)?;
        let exact = value.start == after_name.end
            && self.head.get(after_name) == Some(b": ")
            && self.head.get(after_value.clone()) == Some(b"\r\n");
        exact.then_some(name.start..after_value.end)
    }

    /// The value of the first field named `name`, compared ASCII case-insensitively (field
    /// names are case-insensitive, RFC 9110 §5.1). A [`Field`] is read through the index.
    #[inline]
    pub fn find(&self, name: &str) -> Option<&[u8]> {
        // First, and inlined: a caller's constant name is then ruled out in two instructions.
        if !self.lengths.may_hold(name.len()) {
            return None;
        }
        if let Some(f) = Field::of(name.as_bytes()) {
            return self.field(f);
        }
        self.span_of(name).map(|s| slice(&self.head, &s.value))
    }

    /// Whether a field named any of the names `names` was built from may be here: `false` is
    /// certain (no field's name has any of their lengths), `true` needs a `find`.
    #[inline]
    pub fn may_hold_any(&self, names: NameLengths) -> bool {
        self.lengths.may_hold_any(names)
    }

    /// [`Headers::find`] as a `Bytes` that shares the head buffer (no copy).
    pub fn find_bytes(&self, name: &str) -> Option<Bytes> {
        if !self.lengths.may_hold(name.len()) {
            return None;
        }
        if let Some(f) = Field::of(name.as_bytes()) {
            return self.field_bytes(f);
        }
        let v = wide(&self.span_of(name)?.value);
        let fits = v.start <= v.end && v.end <= self.head.len();
        Some(if fits { self.head.slice(v.clone()) } else { Bytes::new() })
    }

    /// Most lookups miss most fields: the span's length rules them out before any slicing.
    fn span_of(&self, name: &str) -> Option<&Span> {
        let name = name.as_bytes();
        self.spans
            .iter()
            .find(|s| s.name.len() == name.len() && slice(&self.head, &s.name).eq_ignore_ascii_case(name))
    }
}

fn slice<'a>(head: &'a [u8], r: &Range<u32>) -> &'a [u8] {
    head.get(wide(r)).unwrap_or_default()
}

/// The one unchecked conversion: only `Headers::tagged_text` calls it, on a list's own buffer.
#[allow(unsafe_code)]
fn name_text<'a>(head: &'a [u8], s: &Span) -> &'a str {
    let name = slice(head, &s.name);
    debug_assert!(std::str::from_utf8(name).is_ok());
    // SAFETY: each span's name range holds text in the buffer the list then holds: `Spans::push`
    // takes the name as a `&str` with where those bytes lie (httparse's `&str` names measured
    // on the head it parsed, or a pair's name written by `from_pairs`), and `push_scanned` is
    // given only names `quick::fields` read as ASCII (token bytes by its `TOKEN` table, or a
    // `Field`'s name but for letter case), with where they lie in the head that becomes the
    // list's buffer. `Bytes` never changes its contents; a range that does not fit reads as
    // empty. No safe way: std has no stable ASCII-to-`str` conversion, and checking again is
    // the cost this avoids.
    unsafe { std::str::from_utf8_unchecked(name) }
}

fn field<'a>(head: &'a [u8], s: &Span) -> Header<'a> {
    Header {
        name: slice(head, &s.name),
        value: slice(head, &s.value),
    }
}

impl std::fmt::Debug for Headers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let lossy = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        f.debug_list()
            .entries(self.iter().map(|h| (lossy(h.name), lossy(h.value))))
            .finish()
    }
}

pub struct Iter<'a> {
    head: &'a [u8],
    spans: std::slice::Iter<'a, Span>,
}

impl<'a> Iterator for Iter<'a> {
    type Item = Header<'a>;

    fn next(&mut self) -> Option<Header<'a>> {
        self.spans.next().map(|s| field(self.head, s))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.spans.size_hint()
    }
}

impl<'a> IntoIterator for &'a Headers {
    type Item = Header<'a>;
    type IntoIter = Iter<'a>;

    fn into_iter(self) -> Iter<'a> {
        self.iter()
    }
}

#[cfg(test)]
#[path = "headers_tests.rs"]
mod tests;
