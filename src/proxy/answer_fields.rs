//! The fields of a relayed answer's head: the upstream's end-to-end ones, read from its parsed
//! head as they are written (no list of them is built), then rotor's own.
//! Invariant: only the upstream's fields as httparse parsed them and rotor's own (ids, names,
//! digits, static text: nothing that can hold CR or LF) reach the head writer unchecked, and
//! the own fields never outgrow their fixed room (`OWN_ROOM`, every field the relay adds).

use crate::codec::response::ResponseHead;
use crate::codec::response_head::{HeadFields, Pair, ProviderLines, Relayed};

/// The most own fields one answer carries besides the relayed ones (`Relayed`):
/// `x-rotor-cache`, a replacing `content-type` and `retry-after`.
const OWN_ROOM: usize = 3;

/// Built where the relay starts; borrowed into every head it may write.
pub struct AnswerFields<'a> {
    head: &'a ResponseHead,
    /// The upstream's `content-type` is returned (rotor did not replace it).
    upstream_content_type: bool,
    /// The request id, provider, attempts and overhead (written around `own`).
    relayed: Relayed<'a>,
    /// Inline, not a `Vec`: with the upstream's fields no longer copied into a list, the
    /// allocation was the list's main cost (see `Returned`). Together: -220 instructions per
    /// chat request (callgrind, 26,630 to 26,410).
    own: [Pair<'a>; OWN_ROOM],
    own_len: usize,
}

impl<'a> AnswerFields<'a> {
    /// The upstream's returned fields, then rotor's first three: the request id (graphic ASCII
    /// by `RequestId`), the provider's lines (its name printable ASCII by
    /// `config::check_name`) and the attempts' digits.
    pub fn new(head: &'a ResponseHead, request_id: &'a [u8], provider: &'a ProviderLines, attempts: &'a [u8]) -> Self {
        AnswerFields {
            head,
            upstream_content_type: true,
            relayed: Relayed {
                request_id,
                provider,
                attempts,
                overhead_us: None,
            },
            own: [("", &[]); OWN_ROOM],
            own_len: 0,
        }
    }

    /// `x-rotor-overhead-us`, the last of rotor's fields: its digits.
    pub fn overhead_us(&mut self, digits: &'a [u8]) {
        self.relayed.overhead_us = Some(digits);
    }

    /// One of rotor's own fields, after those before it. `value` must hold no CR or LF.
    pub fn push(&mut self, name: &'static str, value: &'a [u8]) {
        debug_assert!(self.own_len < OWN_ROOM, "the relay adds at most OWN_ROOM fields");
        if let Some(slot) = self.own.get_mut(self.own_len) {
            *slot = (name, value);
            self.own_len += 1;
        }
    }

    /// rotor's `content-type` instead of the upstream's (which is then not returned).
    pub fn replace_content_type(&mut self, content_type: &'a [u8]) {
        self.upstream_content_type = false;
        self.push("content-type", content_type);
    }

    /// `retry-after: seconds`, unless the upstream's answer carries one (returned as it is).
    pub fn retry_after_unless_sent(&mut self, seconds: &'a [u8]) {
        // Through the head's index and name lengths, not a walk: every upstream `retry-after`
        // is returned (none is hop-by-hop or renamed), and no own field has that name yet.
        if self.head.headers.find("retry-after").is_none() {
            self.push("retry-after", seconds);
        }
    }

    /// As the head writer takes them: the upstream's first, then rotor's own.
    pub fn fields(&self) -> HeadFields<'_> {
        HeadFields {
            checked: &[],
            returned: Some(self.head.returned(self.upstream_content_type)),
            own: self.own.get(..self.own_len).unwrap_or_default(),
            relayed: Some(self.relayed),
        }
    }
}

#[cfg(test)]
#[path = "answer_fields_tests.rs"]
mod tests;
