//! Small JSON writers for the stream translators: they build each output event by hand into one
//! buffer (no DOM, no intermediate structs), which keeps per-token translation in the
//! sub-microsecond range.
//! Invariant: every string goes through `string`, so output is valid JSON whatever the input.

use std::fmt::Write as _;

/// Appends `s` as a quoted JSON string.
pub fn string(out: &mut String, s: &str) {
    out.reserve(s.len() + 2);
    out.push('"');
    let mut start = 0;
    for (i, b) in s.bytes().enumerate() {
        let escape: Option<&str> = match b {
            b'"' => Some("\\\""),
            b'\\' => Some("\\\\"),
            b'\n' => Some("\\n"),
            b'\r' => Some("\\r"),
            b'\t' => Some("\\t"),
            0..=0x1f => None,
            _ => continue,
        };
        out.push_str(s.get(start..i).unwrap_or(""));
        match escape {
            Some(e) => out.push_str(e),
            None => {
                let _ = write!(out, "\\u{b:04x}");
            }
        }
        start = i + 1;
    }
    out.push_str(s.get(start..).unwrap_or(""));
    out.push('"');
}

/// Appends an unsigned number.
pub fn number(out: &mut String, n: u64) {
    let mut buf = itoa::Buffer::new();
    out.push_str(buf.format(n));
}

/// `"key":` followed by the quoted string.
pub fn field_str(out: &mut String, key: &str, value: &str) {
    out.push('"');
    out.push_str(key);
    out.push_str("\":");
    string(out, value);
}

/// Seconds since the Unix epoch, for `created`.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_round_trip_through_a_json_parser() {
        for s in ["plain", "q\"uote\\", "nl\n\r\t", "\u{1}\u{1f}", "é✓ 😀", ""] {
            let mut out = String::new();
            string(&mut out, s);
            let back: String = sonic_rs::from_str(&out).unwrap();
            assert_eq!(back, s);
        }
    }
}
