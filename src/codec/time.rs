//! Timestamps in headers and query strings: RFC 3339 (`2024-05-01T12:00:30Z`, fractions and
//! `+hh:mm` offsets allowed) to Unix milliseconds. Hand-written: only this one form is needed
//! (Anthropic rate-limit resets, admin query times) and a date-time crate would be the only
//! reason to add one.

/// An RFC 3339 timestamp (`2024-05-01T12:00:30Z`, fractions and `+hh:mm` offsets allowed) as
/// unix ms.
pub fn parse_rfc3339_ms(text: &str) -> Option<u64> {
    let b = text.trim().as_bytes();
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let s = std::str::from_utf8(b.get(r)?).ok()?;
        s.bytes().all(|c| c.is_ascii_digit()).then(|| s.parse().ok())?
    };
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hour, minute, second) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    let mut i = 19;
    let mut millis = 0i64;
    if b.get(i) == Some(&b'.') {
        let start = i + 1;
        i = start;
        while b.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
        let frac = std::str::from_utf8(&b[start..i]).ok()?;
        let padded = format!("{:0<3}", frac.get(..3.min(frac.len()))?);
        millis = padded.parse().ok()?;
    }
    let offset_min = match b.get(i)? {
        b'Z' | b'z' if i + 1 == b.len() => 0,
        sign @ (b'+' | b'-') if i + 6 == b.len() => {
            let m = num(i + 1..i + 3)? * 60 + num(i + 4..i + 6)?;
            if *sign == b'+' {
                m
            } else {
                -m
            }
        }
        _ => return None,
    };
    let days = days_from_civil(year, month, day);
    let seconds = days * 86_400 + hour * 3_600 + minute * 60 + second - offset_min * 60;
    u64::try_from(seconds * 1_000 + millis).ok()
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_timestamps() {
        assert_eq!(parse_rfc3339_ms("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(parse_rfc3339_ms("2024-05-01T12:00:30Z"), Some(1_714_564_830_000));
        assert_eq!(parse_rfc3339_ms("2024-05-01T12:00:30.25Z"), Some(1_714_564_830_250));
        assert_eq!(parse_rfc3339_ms("2024-05-01T14:00:30+02:00"), Some(1_714_564_830_000));
        assert_eq!(parse_rfc3339_ms("2024-13-01T12:00:30Z"), None);
        assert_eq!(parse_rfc3339_ms("yesterday"), None);
    }
}
