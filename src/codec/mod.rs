//! Byte-level HTTP/1.1 parsers and encoders and JSON inspection, with no IO.
//!
//! Everything here is a pure function (or a small state machine) over `BytesMut`/`&[u8]`, so
//! the server, the upstream client and the fuzz targets all share one implementation. The
//! invariant every parser keeps: untrusted bytes never panic, and a message is either framed
//! unambiguously or rejected (no request smuggling through CL/TE disagreements).

pub mod chunked;
mod classes;
pub mod depth;
pub mod encode;
pub mod field_index;
mod fields;
pub(crate) mod fill;
pub mod head;
mod headers;
pub mod json;
mod origin_form;
mod quick;
pub mod response;
pub mod response_head;
pub(crate) mod scan;
mod spans;
pub mod sse;
pub mod target;
pub mod time;

pub use chunked::{Chunk, ChunkError, ChunkedDecoder, ChunkedLimits};
pub use depth::{check_depth, TooDeep, DEFAULT_MAX_DEPTH};
pub use encode::{write_chunk, write_last_chunk};
pub use field_index::Field;
pub use head::{
    find_header, parse_request_head, BodyFraming, HeadError, HeadLimits, Header, Headers, Method, RequestHead,
};
pub use json::{
    inspect_body, inspect_full, inspect_request, multipart_field, splice_model, InspectError, Inspection, ModelName,
};
pub use response::{parse_response_head, ResponseFraming, ResponseHead};
pub use response_head::{reason_phrase, write_response_head, HeadFields};
/// The two readers of an answer's usage tail, for the `json_inspect` fuzz target's
/// differential check (the quick one decides only what the general one reads the same).
#[doc(hidden)]
pub use scan::{usage_tail, usage_tail_quick, UsageCounts};

/// For the JSON readers' randomized tests: one byte of `bytes` dropped, doubled or replaced
/// by one of `with` (structural bytes, and whatever else the reader under test treats
/// specially).
#[cfg(test)]
pub(crate) fn mutate_one_byte(rng: &mut fastrand::Rng, bytes: &mut Vec<u8>, with: &[u8]) {
    let at = rng.usize(..bytes.len());
    match rng.u8(..3) {
        0 => {
            bytes.remove(at);
        }
        1 => bytes.insert(at, bytes[at]),
        _ => bytes[at] = with[rng.usize(..with.len())],
    }
}

/// The replacements of the usage readers' mutations: structural bytes, a digit, the `n` of
/// `null` and a byte that is not UTF-8.
#[cfg(test)]
pub(crate) const USAGE_MUTATIONS: &[u8] = b"{}[],:\"\\ 0n\xff";
