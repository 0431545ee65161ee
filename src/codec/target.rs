//! Upstream request targets built from client-chosen text (the `inspect` and `adapt` steps):
//! the model-name check, the one-segment percent-encoder, and the path judge that reads a path
//! the way a decoding upstream would.
//!
//! Invariant: text a client chose never changes the shape of an upstream URL. A name placed in
//! a path is one percent-encoded segment (no `/`, `?`, `#`, `%`, space or control byte survives
//! raw), and a path is refused when, after percent-decoding (`%2e`, `%2f`, `%5c`), with `\` as
//! a separator and `;params` ignored, it has a `.` or `..` segment or climbs above its base.

use std::borrow::Cow;

/// Longest model name accepted from a client, in bytes. Real names are under 100 bytes
/// (`ft:gpt-4o-mini-2024-07-18:org:suffix:id` is about 50); the name goes into upstream URLs,
/// logs, request records and metric labels, so it is bounded.
pub const MAX_MODEL_NAME_BYTES: usize = 256;

/// Why a client's model name was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameError {
    /// Longer than [`MAX_MODEL_NAME_BYTES`]; holds the length.
    TooLong(usize),
    /// Holds a control character (C0, DEL or C1): CR/LF would split an upstream request line.
    Control,
}

impl std::fmt::Display for NameError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NameError::TooLong(n) => write!(
                f,
                "the model name is {n} bytes long; at most {MAX_MODEL_NAME_BYTES} are allowed"
            ),
            NameError::Control => f.write_str("the model name contains a control character"),
        }
    }
}

/// A client's model name is at most [`MAX_MODEL_NAME_BYTES`] and has no control character.
pub fn check_model_name(name: &str) -> Result<(), NameError> {
    if name.len() > MAX_MODEL_NAME_BYTES {
        return Err(NameError::TooLong(name.len()));
    }
    // Printable ASCII (almost every name) has no control character; one pass without
    // decoding characters (the `chars` walk cost 148 instructions a request: callgrind, issue 18).
    let printable = name.bytes().fold(true, |all, b| all & (0x20..0x7f).contains(&b));
    if !printable && name.chars().any(char::is_control) {
        return Err(NameError::Control);
    }
    Ok(())
}

/// Appends `segment` percent-encoded as one path segment: only RFC 3986 unreserved characters,
/// `:` and `@` stay raw (model names use them: `llama3:8b`, `claude-3-5-sonnet@20240620`);
/// every other byte, `/` `?` `#` `%` `\` space and controls included, becomes `%XX`.
pub fn push_segment(out: &mut String, segment: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for &b in segment {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b':' | b'@') {
            out.push(char::from(b));
        } else {
            out.push('%');
            out.push(char::from(HEX.get(usize::from(b >> 4)).copied().unwrap_or(b'0')));
            out.push(char::from(HEX.get(usize::from(b & 0xf)).copied().unwrap_or(b'0')));
        }
    }
}

/// Why a path was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathError {
    /// A `..` climbs above the base path.
    Escapes,
    /// A `.` or `..` segment (hops may resolve it differently, so it is never forwarded).
    DotSegment,
    /// A control byte once decoded (`%00`, `%0d%0a`).
    Control,
}

impl PathError {
    pub fn message(self) -> &'static str {
        match self {
            PathError::Escapes => "the path climbs above /v1/ ('..' segments, also encoded as %2e or with %2f)",
            PathError::DotSegment => "the path contains a '.' or '..' segment (also when encoded); send it resolved",
            PathError::Control => "the path contains an encoded control character",
        }
    }
}

/// Most `%` decoding rounds applied to one segment (each round shortens it, so real input
/// settles in one or two).
const DECODE_ROUNDS: usize = 4;

/// Judges `path` (relative to a base path, starting with `/`; a query after `?` is ignored) as
/// the most decoding upstream would read it: each segment percent-decoded until it stops
/// changing (so `%252e` counts as `.`), `/` and `\` (raw or decoded) as separators, empty
/// segments collapsed, `;params` cut off a segment before it is compared with `.` and `..`.
/// Any dot segment is refused; one that climbs above the base is [`PathError::Escapes`].
pub fn check_path(path: &str) -> Result<(), PathError> {
    // Most paths (`/chat/completions`) hold nothing a decoder could turn into a dot segment, a
    // separator or a control byte: no `%`, `.` or `\`, no control (nor a `?` to cut first).
    // Those pass without decoding, after one table look-up a byte.
    if !path.bytes().fold(false, |any, b| any | PATH_SPECIAL[usize::from(b)]) {
        return Ok(());
    }
    judge(path.split_once('?').map_or(path, |(p, _)| p))
}

/// `check_path` for a path without its query, segment by segment.
fn judge(path: &str) -> Result<(), PathError> {
    let mut depth = 0usize;
    let mut dots = false;
    for raw in path.split('/') {
        let decoded = decode_fully(raw.as_bytes());
        if decoded.iter().any(|&b| b < 0x20 || b == 0x7f) {
            return Err(PathError::Control);
        }
        for piece in decoded.split(|&b| b == b'/' || b == b'\\') {
            let core = piece.split(|&b| b == b';').next().unwrap_or(piece);
            match core {
                b"" => {}
                b"." => dots = true,
                b".." => {
                    dots = true;
                    depth = depth.checked_sub(1).ok_or(PathError::Escapes)?;
                }
                _ => depth += 1,
            }
        }
    }
    if dots {
        return Err(PathError::DotSegment);
    }
    Ok(())
}

/// The bytes `check_path` must look at more closely: `%`, `.`, `\\`, `?`, controls and DEL.
static PATH_SPECIAL: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 256 {
        table[b] = matches!(b as u8, b'%' | b'.' | b'\\' | b'?' | 0..0x20 | 0x7f);
        b += 1;
    }
    table
};

fn decode_fully(raw: &[u8]) -> Cow<'_, [u8]> {
    let mut current = percent_decode(raw);
    for _ in 1..DECODE_ROUNDS {
        let next = match percent_decode(&current) {
            Cow::Borrowed(_) => break,
            Cow::Owned(next) if next.len() == current.len() => break,
            Cow::Owned(next) => next,
        };
        current = Cow::Owned(next);
    }
    current
}

/// `%XX` escapes decoded once; a `%` without two hex digits stays as it is.
pub fn percent_decode(raw: &[u8]) -> Cow<'_, [u8]> {
    if !raw.contains(&b'%') {
        return Cow::Borrowed(raw);
    }
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while let Some(&b) = raw.get(i) {
        let hex = |j: usize| raw.get(j).and_then(|&h| char::from(h).to_digit(16));
        match (b, hex(i + 1), hex(i + 2)) {
            (b'%', Some(hi), Some(lo)) => {
                out.push((hi * 16 + lo) as u8);
                i += 3;
            }
            _ => {
                out.push(b);
                i += 1;
            }
        }
    }
    Cow::Owned(out)
}

/// Whether `target` can go on a request line as it is: no control byte (CR, LF, NUL ...), no
/// space and no DEL, any of which would end the target or the line early.
pub fn target_is_clean(target: &[u8]) -> bool {
    !target.iter().any(|&b| b <= b' ' || b == 0x7f)
}

#[cfg(test)]
#[path = "target_tests.rs"]
mod tests;
