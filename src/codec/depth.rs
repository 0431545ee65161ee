//! The nesting bound on untrusted JSON (`server.max_json_depth`): one pass over the raw bytes,
//! without recursion, that refuses arrays and objects nested deeper than a limit before any
//! recursive parser sees them. sonic-rs's skipping, `Value` and serde-derive parsers all recurse
//! once per level, and 15,000 levels (a 30 KB body) overflowed a worker's stack and aborted the
//! whole process (issue 12).
//! Invariant: wherever a JSON parser stands in the input, the depth this scan counted there is
//! at least the parser's nesting: both agree on where strings start and end up to the first byte
//! a parser refuses, and every `[` and `{` outside a string is counted. So a body that passes
//! never makes a parser recurse more than `max` levels.

use memchr::{memchr2, memchr2_iter};

/// Default for `server.max_json_depth`: far beyond any real request (JSON schemas in tool
/// definitions rarely pass 20 levels), far below what a 2 MiB worker stack survives.
pub const DEFAULT_MAX_DEPTH: usize = 128;

/// Largest `server.max_json_depth` accepted. sonic-rs needs about 240 bytes of stack per level
/// in a release build (a `Value` parse overflowed a 2 MiB thread stack near 8,700 levels), so
/// 1,024 levels stay under a quarter of a worker's stack with room for the request path above.
pub const MAX_DEPTH_CEILING: usize = 1024;

/// The input nests deeper than `limit`; the message names the setting that allows more.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TooDeep {
    pub limit: usize,
}

impl std::fmt::Display for TooDeep {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "nests deeper than {} levels (server.max_json_depth)", self.limit)
    }
}

impl std::error::Error for TooDeep {}

/// `Err` when arrays and objects in `json` nest deeper than `max` anywhere. Not a validator:
/// malformed input passes when it is shallow, and the parser that follows refuses it.
///
/// Fast path: fewer than `max + 1` brackets in the whole input (strings included) cannot nest
/// deeper than `max`, and counting them is a vectorised `memchr2` that stops at `max + 1`.
/// Only inputs with more brackets get the exact scan.
pub fn check_depth(json: &[u8], max: usize) -> Result<(), TooDeep> {
    if memchr2_iter(b'[', b'{', json).nth(max).is_none() {
        return Ok(());
    }
    exact(json, max)
}

/// The exact scan: structure bytes one at a time, string contents skipped with `memchr2` to the
/// next quote or backslash.
fn exact(json: &[u8], max: usize) -> Result<(), TooDeep> {
    let mut depth = 0usize;
    let mut i = 0;
    while let Some(&b) = json.get(i) {
        i += 1;
        match b {
            b'"' => i = string_end(json, i),
            b'[' | b'{' => {
                depth += 1;
                if depth > max {
                    return Err(TooDeep { limit: max });
                }
            }
            // A closer at depth 0 is malformed; the parser refuses it before going deeper.
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    Ok(())
}

/// Index just past the closing quote of the string whose contents start at `from`; the input's
/// length when it never closes. A backslash escapes the byte after it, as in JSON.
fn string_end(json: &[u8], mut from: usize) -> usize {
    loop {
        let Some(rest) = json.get(from..) else {
            return json.len();
        };
        let Some(at) = memchr2(b'"', b'\\', rest) else {
            return json.len();
        };
        let pos = from + at;
        if json.get(pos) == Some(&b'"') {
            return pos + 1;
        }
        from = pos + 2;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nested(open: &str, close: &str, depth: usize) -> String {
        format!("{}{}", open.repeat(depth), close.repeat(depth))
    }

    /// Both paths (the counting shortcut and the exact scan) must agree.
    fn check(json: &str, max: usize) -> Result<(), TooDeep> {
        let fast = check_depth(json.as_bytes(), max);
        assert_eq!(fast, exact(json.as_bytes(), max), "paths disagree on {json:?}");
        fast
    }

    #[test]
    fn exactly_at_the_limit_passes_and_one_over_fails() {
        for max in [1, 2, 5, 128] {
            assert_eq!(check(&nested("[", "]", max), max), Ok(()));
            assert_eq!(check(&nested("[", "]", max + 1), max), Err(TooDeep { limit: max }));
            assert_eq!(check(&nested("{\"a\":", "}", max), max), Ok(()));
            assert_eq!(
                check(&nested("{\"a\":", "}", max + 1), max),
                Err(TooDeep { limit: max })
            );
        }
        assert_eq!(check("[[]]", 1), Err(TooDeep { limit: 1 }));
        assert_eq!(check("[1,2,{\"a\":[]}]", 3), Ok(()));
        assert_eq!(check("[1,2,{\"a\":[]}]", 2), Err(TooDeep { limit: 2 }));
    }

    #[test]
    fn siblings_do_not_add_up() {
        let wide = format!("[{}[]]", "[],".repeat(1000));
        assert_eq!(check(&wide, 2), Ok(()));
        assert_eq!(check(&wide, 1), Err(TooDeep { limit: 1 }));
        let objects = format!("{{\"m\":[{}{{}}]}}", "{\"a\":{}},".repeat(500));
        assert_eq!(check(&objects, 4), Ok(()));
        assert_eq!(check(&objects, 3), Err(TooDeep { limit: 3 }));
    }

    #[test]
    fn brackets_inside_strings_do_not_count() {
        let text = format!("{{\"content\":\"{}\"}}", "[{".repeat(5000));
        assert_eq!(check(&text, 1), Ok(()));
        // Keys too.
        let key = format!("{{\"{}\":1}}", "[".repeat(300));
        assert_eq!(check(&key, 1), Ok(()));
    }

    #[test]
    fn escapes_are_followed() {
        // An escaped quote does not end the string: the brackets after it are still text.
        let escaped_quote = format!(r#"{{"a":"x\"{}"}}"#, "[".repeat(300));
        assert_eq!(check(&escaped_quote, 1), Ok(()));
        // An escaped backslash does end before the quote: the brackets after it count.
        let escaped_backslash = format!(r#"{{"a":"x\\",{}"#, nested("[", "]", 300));
        assert_eq!(check(&escaped_backslash, 299), Err(TooDeep { limit: 299 }));
        assert_eq!(check(&escaped_backslash, 301), Ok(()));
        // `\u005b` is `[` only after decoding: still text.
        let unicode = format!(r#"["{}"]"#, r"\u005b".repeat(300));
        assert_eq!(check(&unicode, 1), Ok(()));
        // Backslash pairs: `\\\"` is an escaped backslash then an escaped quote.
        let mixed = format!(r#"["a\\\"{}"]"#, "[".repeat(300));
        assert_eq!(check(&mixed, 1), Ok(()));
    }

    #[test]
    fn deep_after_a_string_with_brackets_is_caught() {
        let body = format!(
            "{{\"content\":\"{}\",\"metadata\":{}}}",
            "]]]]}}}}".repeat(100),
            nested("[", "]", 200)
        );
        assert_eq!(check(&body, 128), Err(TooDeep { limit: 128 }));
        assert_eq!(check(&body, 201), Ok(()));
    }

    #[test]
    fn malformed_input_never_hides_depth() {
        // Unterminated string: everything after the quote is text to the scan and to a parser.
        assert_eq!(check(&format!("[\"{}", "[".repeat(300)), 2), Ok(()));
        // Stray closers cannot buy depth back below zero.
        let stray = format!("]]]]]{}", nested("[", "]", 10));
        assert_eq!(check(&stray, 9), Err(TooDeep { limit: 9 }));
        // A trailing backslash at the very end.
        assert_eq!(check("[\"\\", 1), Ok(()));
        assert_eq!(check("", 1), Ok(()));
    }

    #[test]
    fn a_hundred_thousand_levels_fail_fast() {
        let deep = nested("[", "]", 100_000);
        assert_eq!(check(&deep, DEFAULT_MAX_DEPTH), Err(TooDeep { limit: 128 }));
        assert!(TooDeep { limit: 128 }.to_string().contains("server.max_json_depth"));
    }
}
