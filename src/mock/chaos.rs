//! Random upstream faults for soak runs (`rotor mock --chaos 5xx=5,cut=1,slow=1,429=1`): each
//! request independently draws at most one fault, so a retry on another key (or the same one)
//! usually succeeds, as with a real provider having a bad minute. Knobs sent as headers and
//! per-key faults win over chaos, so tests stay deterministic.
//!
//! Invariant: the rates are percentages that sum to at most 100; `parse` refuses anything else.

use std::time::Duration;

/// Fault rates in percent of requests.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Chaos {
    /// Answer 500, 502 or 503 with an error body.
    pub error_pct: f64,
    /// Close the connection mid-answer (streams after a few events, whole answers mid-body).
    pub cut_pct: f64,
    /// Wait `slow` before the response head.
    pub slow_pct: f64,
    /// Answer 429 with `Retry-After: 1`.
    pub ratelimit_pct: f64,
    pub slow: Duration,
}

/// The fault one request drew.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    Status(u16),
    Cut,
    Slow(Duration),
}

impl Chaos {
    /// `5xx=5,cut=1,slow=1,429=1,slow_ms=2000`; absent names are 0 (slow_ms defaults to 2000).
    pub fn parse(spec: &str) -> Result<Chaos, String> {
        let mut chaos = Chaos {
            slow: Duration::from_millis(2000),
            ..Chaos::default()
        };
        for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (name, value) = part
                .split_once('=')
                .ok_or_else(|| format!("chaos: '{part}' is not name=value"))?;
            let number: f64 = value
                .parse()
                .map_err(|_| format!("chaos: '{value}' in '{part}' is not a number"))?;
            if !(0.0..=100.0).contains(&number) && name != "slow_ms" {
                return Err(format!("chaos: {name}={value} is not a percentage in 0..=100"));
            }
            match name {
                "5xx" => chaos.error_pct = number,
                "cut" => chaos.cut_pct = number,
                "slow" => chaos.slow_pct = number,
                "429" => chaos.ratelimit_pct = number,
                "slow_ms" if number >= 0.0 => chaos.slow = Duration::from_millis(number as u64),
                _ => return Err(format!("chaos: unknown fault '{name}' (5xx, cut, slow, 429, slow_ms)")),
            }
        }
        if chaos.total() > 100.0 {
            return Err(format!("chaos: the rates add up to {}%, more than 100", chaos.total()));
        }
        Ok(chaos)
    }

    fn total(&self) -> f64 {
        self.error_pct + self.cut_pct + self.slow_pct + self.ratelimit_pct
    }

    pub fn is_off(&self) -> bool {
        self.total() == 0.0
    }

    /// Draws this request's fault from a uniform number in `0..100`.
    pub fn draw(&self, roll: f64) -> Option<Fault> {
        let mut edge = self.error_pct;
        if roll < edge {
            return Some(Fault::Status([500, 502, 503][(roll as usize) % 3]));
        }
        edge += self.cut_pct;
        if roll < edge {
            return Some(Fault::Cut);
        }
        edge += self.slow_pct;
        if roll < edge {
            return Some(Fault::Slow(self.slow));
        }
        edge += self.ratelimit_pct;
        (roll < edge).then_some(Fault::Status(429))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_rates_and_refuses_bad_specs() {
        let chaos = Chaos::parse("5xx=5, cut=1,slow=1.5,429=2,slow_ms=300").unwrap();
        assert_eq!(chaos.error_pct, 5.0);
        assert_eq!(chaos.slow_pct, 1.5);
        assert_eq!(chaos.slow, Duration::from_millis(300));
        assert!(Chaos::parse("").unwrap().is_off());
        assert!(Chaos::parse("5xx=60,cut=50").is_err());
        assert!(Chaos::parse("teapot=1").is_err());
        assert!(Chaos::parse("5xx").is_err());
        assert!(Chaos::parse("cut=-1").is_err());
    }

    #[test]
    fn draws_each_fault_in_its_band() {
        let chaos = Chaos::parse("5xx=5,cut=1,slow=1,429=1").unwrap();
        assert!(matches!(chaos.draw(0.5), Some(Fault::Status(500..=503))));
        assert_eq!(chaos.draw(5.5), Some(Fault::Cut));
        assert_eq!(chaos.draw(6.5), Some(Fault::Slow(Duration::from_millis(2000))));
        assert_eq!(chaos.draw(7.5), Some(Fault::Status(429)));
        assert_eq!(chaos.draw(8.0), None);
        assert_eq!(chaos.draw(99.9), None);
    }
}
