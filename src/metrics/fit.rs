//! The last bound on `/metrics`: a rendered body longer than `server.metrics_max_bytes` loses
//! series lines, always from the family that is largest at that moment (the one a flood fills),
//! until it fits. Every family keeps its `# HELP`/`# TYPE` lines, so the body still parses,
//! and `rotor_metrics_series_omitted` says how many series this scrape left out.
//! Invariant: the returned body is at most `max` bytes whenever the family headers fit in it.

/// Room kept for the trailing omitted-series family.
const TAIL_RESERVE: usize = 256;

struct Family<'a> {
    /// `# HELP` and `# TYPE` lines (and anything before the first family).
    head: Vec<&'a str>,
    series: Vec<&'a str>,
    bytes: usize,
}

/// `text` unchanged when it fits in `max` bytes, else with series lines left out until it does.
pub fn fit(text: String, max: usize) -> String {
    if text.len() <= max {
        return text;
    }
    let mut families: Vec<Family<'_>> = Vec::new();
    for line in text.lines() {
        if line.starts_with("# HELP ") || families.is_empty() {
            families.push(Family {
                head: Vec::new(),
                series: Vec::new(),
                bytes: 0,
            });
        }
        let Some(family) = families.last_mut() else { continue };
        if line.starts_with('#') {
            family.head.push(line);
        } else {
            family.series.push(line);
            family.bytes += line.len() + 1;
        }
    }
    let mut excess = (text.len() + TAIL_RESERVE).saturating_sub(max);
    let mut omitted = 0u64;
    while excess > 0 {
        let Some(largest) = families
            .iter_mut()
            .filter(|f| !f.series.is_empty())
            .max_by_key(|f| f.bytes)
        else {
            break;
        };
        if let Some(line) = largest.series.pop() {
            largest.bytes -= line.len() + 1;
            excess = excess.saturating_sub(line.len() + 1);
            omitted += 1;
        }
    }
    let mut out = String::with_capacity(max);
    for family in &families {
        for line in family.head.iter().chain(&family.series) {
            out.push_str(line);
            out.push('\n');
        }
    }
    out.push_str(
        "# HELP rotor_metrics_series_omitted Series left out of this scrape to keep the body within server.metrics_max_bytes.\n\
         # TYPE rotor_metrics_series_omitted gauge\n",
    );
    out.push_str(&format!("rotor_metrics_series_omitted {omitted}\n"));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_largest_family_loses_series_and_every_header_stays() {
        let mut text = String::from("# HELP small s\n# TYPE small counter\nsmall 1\n");
        text.push_str("# HELP big b\n# TYPE big counter\n");
        for i in 0..1000 {
            text.push_str(&format!("big{{model=\"m{i:04}\"}} 1\n"));
        }
        text.push_str("# HELP last l\n# TYPE last gauge\nlast 7\n");
        let out = fit(text.clone(), 4096);
        assert!(out.len() <= 4096, "{}", out.len());
        assert!(out.contains("small 1\n") && out.contains("last 7\n"), "{out}");
        assert!(out.contains("# TYPE big counter\n") && out.contains("big{model=\"m0000\"} 1\n"));
        let kept = out.lines().filter(|l| l.starts_with("big{")).count();
        assert!(
            out.contains(&format!("rotor_metrics_series_omitted {}\n", 1000 - kept)),
            "{out}"
        );
        assert_eq!(fit(text.clone(), text.len()), text, "a body that fits is untouched");
    }
}
