//! The nesting bound on untrusted JSON (`server.max_json_depth`): one pass over the raw bytes,
//! without recursion, that refuses arrays and objects nested deeper than a limit before any
//! recursive parser sees them. sonic-rs's skipping, `Value` and serde-derive parsers all recurse
//! once per level, and 15,000 levels (a 30 KB body) overflowed a worker's stack and aborted the
//! whole process (issue 12).
//! Invariant: wherever a JSON parser stands in the input, the depth this scan counted there is
//! at least the parser's nesting: both agree on where strings start and end up to the first byte
//! a parser refuses (a backslash escapes the byte after it; outside a string, where the scan
//! lets it do so too, a parser refuses the backslash itself), and every `[` and `{` outside a
//! string is counted. So a body that passes never makes a parser recurse more than `max` levels.

use sonic_simd::{u8x64, Mask, Simd};

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
/// Fast path: at most `max` opening brackets in the whole input (strings included) cannot nest
/// deeper than `max`. Only inputs with more brackets get the exact scan, 64 bytes at a time.
pub fn check_depth(json: &[u8], max: usize) -> Result<(), TooDeep> {
    if openers_at_most(json, max) {
        return Ok(());
    }
    let mut scan = Scan::new(max);
    let mut blocks = json.chunks_exact(64);
    for block in blocks.by_ref() {
        if let Ok(block) = <&[u8; 64]>::try_from(block) {
            scan.block(block)?;
        }
    }
    // The tail, padded with spaces (neutral outside and inside strings).
    let rest = blocks.remainder();
    let mut last = [b' '; 64];
    if let Some(head) = last.get_mut(..rest.len()) {
        head.copy_from_slice(rest);
    }
    scan.block(&last)
}

/// Whether `json` holds at most `max` bytes `[` or `{` (the only bytes with `b | 0x20 == b'{'`).
/// Counted in 16 `u8` lanes over 240-byte runs (at most 15 per lane), a loop the compiler
/// vectorises; a `memchr2` iterator costs about 8 ns per match, and the bodies that fail here
/// are dense in brackets. Stops once past `max`.
fn openers_at_most(json: &[u8], max: usize) -> bool {
    let is_opener = |b: u8| u8::from(b | 0x20 == b'{');
    let mut seen = 0usize;
    let mut runs = json.chunks_exact(240);
    for run in runs.by_ref() {
        let mut lanes = [0u8; 16];
        for part in run.chunks_exact(16) {
            for (lane, &b) in lanes.iter_mut().zip(part) {
                *lane += is_opener(b);
            }
        }
        seen += lanes.iter().map(|&n| usize::from(n)).sum::<usize>();
        if seen > max {
            return false;
        }
    }
    seen += runs
        .remainder()
        .iter()
        .map(|&b| usize::from(is_opener(b)))
        .sum::<usize>();
    seen <= max
}

/// The exact scan's state between 64-byte blocks (the string and escape logic of simdjson's
/// stage 1, on bitmasks: bit `i` stands for byte `i` of the block).
struct Scan {
    /// Nesting so far; a stray closer at zero leaves it at zero (a parser refuses it anyway, and
    /// a lax one cannot get below zero either).
    depth: u32,
    max: usize,
    /// 1 when the block ended in an odd run of backslashes: its first byte is escaped.
    escape_carry: u64,
    /// All ones when the block ended inside a string.
    in_string: u64,
}

const EVEN_BITS: u64 = 0x5555_5555_5555_5555;

impl Scan {
    fn new(max: usize) -> Scan {
        Scan {
            depth: 0,
            max,
            escape_carry: 0,
            in_string: 0,
        }
    }

    fn block(&mut self, block: &[u8; 64]) -> Result<(), TooDeep> {
        let v = load(block);
        let is = |byte: u8| v.eq(&u8x64::splat(byte));
        let escaped = self.escaped(is(b'\\').bitmask());
        let quotes = is(b'"').bitmask() & !escaped;
        let in_string = if quotes == 0 {
            self.in_string
        } else {
            // Inside a string from its opening quote up to (not including) its closing one.
            let inside = prefix_xor(quotes) ^ self.in_string;
            self.in_string = ((inside as i64) >> 63) as u64;
            inside
        };
        if in_string == u64::MAX {
            // All string contents (long texts): brackets here are text.
            return Ok(());
        }
        let opens = (is(b'[') | is(b'{')).bitmask() & !in_string;
        let closes = (is(b']') | is(b'}')).bitmask() & !in_string;
        if opens | closes == 0 {
            return Ok(());
        }
        let (up, down) = (opens.count_ones(), closes.count_ones());
        // In bulk when neither the limit nor zero can be reached inside the block, whatever the
        // order of its brackets.
        if down <= self.depth && (self.depth + up) as usize <= self.max {
            self.depth = self.depth + up - down;
            return Ok(());
        }
        let mut rest = opens | closes;
        while rest != 0 {
            let bit = rest & rest.wrapping_neg();
            if opens & bit != 0 {
                self.depth += 1;
                if self.depth as usize > self.max {
                    return Err(TooDeep { limit: self.max });
                }
            } else {
                self.depth = self.depth.saturating_sub(1);
            }
            rest ^= bit;
        }
        Ok(())
    }

    /// Bytes escaped by a backslash (the byte after each odd-length run of backslashes).
    fn escaped(&mut self, backslashes: u64) -> u64 {
        if backslashes | self.escape_carry == 0 {
            return 0;
        }
        let backslashes = backslashes & !self.escape_carry;
        let follows_escape = (backslashes << 1) | self.escape_carry;
        let odd_starts = backslashes & !EVEN_BITS & !follows_escape;
        let (even_starts, carry) = odd_starts.overflowing_add(backslashes);
        self.escape_carry = u64::from(carry);
        (EVEN_BITS ^ (even_starts << 1)) & follows_escape
    }
}

/// Bit `i` set in the result = an odd number of bits set in `bits` at positions `<= i`.
fn prefix_xor(mut bits: u64) -> u64 {
    for shift in [1, 2, 4, 8, 16, 32] {
        bits ^= bits << shift;
    }
    bits
}

/// One block as a vector, for byte comparisons 16 or 32 bytes at a time (sonic-rs's portable
/// SIMD: SSE2/AVX2 on x86-64, NEON on aarch64).
#[allow(unsafe_code)]
fn load(block: &[u8; 64]) -> u8x64 {
    // SAFETY: `block` is 64 readable bytes, exactly one `u8x64`; `loadu` allows any alignment.
    unsafe { u8x64::loadu(block.as_ptr()) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nested(open: &str, close: &str, depth: usize) -> String {
        format!("{}{}", open.repeat(depth), close.repeat(depth))
    }

    /// The reference: one byte at a time, strings skipped to their closing quote.
    fn reference(json: &[u8], max: usize) -> Result<(), TooDeep> {
        let mut depth = 0usize;
        let mut i = 0;
        while let Some(&b) = json.get(i) {
            i += 1;
            match b {
                b'"' => loop {
                    match json.get(i) {
                        None => break,
                        Some(b'\\') => i += 2,
                        Some(b'"') => {
                            i += 1;
                            break;
                        }
                        Some(_) => i += 1,
                    }
                },
                b'[' | b'{' => {
                    depth += 1;
                    if depth > max {
                        return Err(TooDeep { limit: max });
                    }
                }
                b']' | b'}' => depth = depth.saturating_sub(1),
                // Outside a string a parser refuses a backslash; the scan lets it escape the
                // next byte, which then neither opens a string nor escapes (brackets still count).
                b'\\' if matches!(json.get(i), Some(b'"' | b'\\')) => i += 1,
                _ => {}
            }
        }
        Ok(())
    }

    /// The exact scan alone (no counting shortcut).
    fn exact(json: &[u8], max: usize) -> Result<(), TooDeep> {
        let mut scan = Scan::new(max);
        let mut blocks = json.chunks_exact(64);
        for block in blocks.by_ref() {
            scan.block(block.try_into().unwrap())?;
        }
        let mut last = [b' '; 64];
        last[..blocks.remainder().len()].copy_from_slice(blocks.remainder());
        scan.block(&last)
    }

    /// The shortcut, the exact scan and the reference must agree.
    fn check(json: &str, max: usize) -> Result<(), TooDeep> {
        let bytes = json.as_bytes();
        let fast = check_depth(bytes, max);
        assert_eq!(fast, reference(bytes, max), "check_depth vs reference on {json:?}");
        assert_eq!(exact(bytes, max), fast, "exact scan vs check_depth on {json:?}");
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

    /// Every arrangement of the bytes that matter, at every offset across block boundaries:
    /// pseudo-random strings over `"\\[]{}a ` compared with the reference at several limits.
    #[test]
    fn random_inputs_agree_with_the_reference() {
        let alphabet = b"\"\\[]{}a ";
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        for round in 0..3000 {
            let len = 1 + (round % 300);
            let text: Vec<u8> = (0..len)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    alphabet[(seed % alphabet.len() as u64) as usize]
                })
                .collect();
            for max in [0, 1, 3, 8, 40] {
                let want = reference(&text, max);
                assert_eq!(
                    check_depth(&text, max),
                    want,
                    "{:?} max {max}",
                    String::from_utf8_lossy(&text)
                );
                assert_eq!(
                    exact(&text, max),
                    want,
                    "{:?} max {max}",
                    String::from_utf8_lossy(&text)
                );
            }
        }
    }

    #[test]
    fn runs_of_backslashes_across_block_boundaries() {
        for pad in 0..70 {
            for run in 0..6 {
                // `run` backslashes then a quote: the quote closes the string when `run` is even.
                let text = format!("[\"{}{}\"{}", "a".repeat(pad), "\\".repeat(run), nested("[", "]", 10));
                for max in [5, 11, 12] {
                    assert_eq!(
                        check(&text, max),
                        reference(text.as_bytes(), max),
                        "pad {pad} run {run}"
                    );
                }
            }
        }
    }

    #[test]
    fn a_hundred_thousand_levels_fail_fast() {
        let deep = nested("[", "]", 100_000);
        assert_eq!(check(&deep, DEFAULT_MAX_DEPTH), Err(TooDeep { limit: 128 }));
        assert!(TooDeep { limit: 128 }.to_string().contains("server.max_json_depth"));
    }
}
