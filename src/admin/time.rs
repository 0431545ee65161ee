//! Instants in admin query strings: Unix seconds, Unix milliseconds, or a UTC date/date-time
//! (`2026-01-31`, `2026-01-31T12:00`, `2026-01-31T12:00:00Z`). Hand-written because only these
//! few forms are accepted and a date-time crate would be the only reason to add one.

/// Milliseconds since the Unix epoch.
pub fn parse_instant_ms(value: &str) -> Option<i64> {
    if let Ok(n) = value.parse::<i64>() {
        // Below 10^11 a number is seconds (until the year 5138), above it milliseconds.
        return Some(if n.abs() < 100_000_000_000 { n * 1000 } else { n });
    }
    let value = value.strip_suffix('Z').unwrap_or(value);
    let (date, time) = value.split_once('T').unwrap_or((value, "00:00:00"));
    let mut d = date.splitn(3, '-').map(|p| p.parse::<i64>().ok());
    let (year, month, day) = (d.next()??, d.next()??, d.next()??);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) {
        return None;
    }
    let mut t = time.splitn(3, ':').map(|p| p.parse::<i64>().ok());
    let hour = t.next().flatten().unwrap_or(0);
    let minute = t.next().flatten().unwrap_or(0);
    let second = t.next().flatten().unwrap_or(0);
    if !(0..24).contains(&hour) || !(0..60).contains(&minute) || !(0..61).contains(&second) {
        return None;
    }
    let days = days_from_civil(year, month, day);
    Some(((days * 24 + hour) * 60 + minute) * 60_000 + second * 1000)
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
