//! Instants in admin query strings: Unix seconds, Unix milliseconds, or a UTC date or
//! date-time (`2026-01-31`, `2026-01-31T12:00`, `2026-01-31T12:00:00Z`, offsets allowed).

use crate::codec::time::parse_rfc3339_ms;

/// Milliseconds since the Unix epoch.
pub fn parse_instant_ms(value: &str) -> Option<i64> {
    if let Ok(n) = value.parse::<i64>() {
        // Below 10^11 a number is seconds (until the year 5138), above it milliseconds.
        return Some(if n.abs() < 100_000_000_000 { n * 1000 } else { n });
    }
    // Complete the short forms to RFC 3339.
    let full = match value.len() {
        10 => format!("{value}T00:00:00Z"),
        16 => format!("{value}:00Z"),
        19 => format!("{value}Z"),
        _ => value.to_owned(),
    };
    parse_rfc3339_ms(&full).and_then(|ms| i64::try_from(ms).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms() {
        assert_eq!(parse_instant_ms("1767225600"), Some(1_767_225_600_000));
        assert_eq!(parse_instant_ms("1767225600123"), Some(1_767_225_600_123));
        assert_eq!(parse_instant_ms("2026-01-01"), Some(1_767_225_600_000));
        assert_eq!(parse_instant_ms("2026-01-01T01:30:00Z"), Some(1_767_231_000_000));
        assert_eq!(parse_instant_ms("2024-02-29T00:00"), Some(1_709_164_800_000));
        assert_eq!(parse_instant_ms("2026-13-01"), None);
        assert_eq!(parse_instant_ms("yesterday"), None);
    }
}
