//! Glob matching for client model allow-lists (`models = ["gpt-*", "claude-3-?-x"]`).
//!
//! Hand-written rather than a crate because we need exactly two wildcards (`*` any run, `?` one
//! character), no allocation on the request path (it runs at every authenticated request), and
//! a linear-ish bound against hostile names: the classic iterative matcher that remembers only
//! the last `*` and backtracks there, O(glob * name) worst case and no recursion.
//! Invariant: `?` consumes one whole UTF-8 character, so positions in `name` stay on character
//! boundaries and a byte comparison of literals is a character comparison. A list prepared as a
//! [`ModelSet`] allows exactly the names one of its globs `matches`.

use ahash::AHashSet;

/// A client's `models` list prepared at config compile, so the check at every request does not
/// walk a glob per model name (`*` alone cost 205 instructions on `gpt-4o-mini`: callgrind,
/// issue 18): `*` allows all, names without wildcards are one hash look-up, `prefix*` a
/// `starts_with`, and only other globs run [`matches`].
#[derive(Debug, Clone, Default)]
pub struct ModelSet {
    /// A pattern of stars only: every name.
    any: bool,
    /// Patterns without `*` or `?`.
    exact: AHashSet<String>,
    /// Patterns `prefix*` (no other wildcard): the prefixes.
    prefixes: Vec<String>,
    /// Every other pattern.
    globs: Vec<String>,
}

impl ModelSet {
    pub fn new(patterns: &[String]) -> Self {
        let mut set = ModelSet::default();
        for p in patterns {
            let literal = p.trim_end_matches('*');
            if literal.is_empty() && !p.is_empty() {
                set.any = true;
            } else if literal.contains(['*', '?']) {
                set.globs.push(p.clone());
            } else if literal.len() == p.len() {
                set.exact.insert(p.clone());
            } else {
                set.prefixes.push(literal.to_owned());
            }
        }
        set
    }

    /// Whether one of the patterns [`matches`] `name`.
    pub fn contains(&self, name: &str) -> bool {
        self.any
            || (!self.exact.is_empty() && self.exact.contains(name))
            || self.prefixes.iter().any(|p| name.starts_with(p.as_str()))
            || self.globs.iter().any(|g| matches(g, name))
    }
}

/// Whether `name` matches `glob` in full. `*` matches any run (including empty), `?` exactly
/// one character; every other character matches itself. No escapes: model names never need
/// a literal `*` or `?`.
pub fn matches(glob: &str, name: &str) -> bool {
    let (g, n) = (glob.as_bytes(), name.as_bytes());
    let (mut gi, mut ni) = (0usize, 0usize);
    // The glob position just after the last `*`, and the name position that `*` resumes from.
    let mut star: Option<(usize, usize)> = None;
    while ni < n.len() {
        match g.get(gi) {
            Some(b'*') => {
                gi += 1;
                star = Some((gi, ni));
                continue;
            }
            Some(b'?') => {
                gi += 1;
                ni += char_len(n[ni]);
                continue;
            }
            Some(&c) if c == n[ni] => {
                gi += 1;
                ni += 1;
                continue;
            }
            _ => {}
        }
        // Mismatch: let the last `*` swallow one more character and retry from there.
        match star {
            Some((star_g, star_n)) => {
                let resume = star_n + char_len(n[star_n]);
                star = Some((star_g, resume));
                gi = star_g;
                ni = resume;
            }
            None => return false,
        }
    }
    // The name is used up: what is left of the glob must be all `*`.
    g.get(gi..).is_some_and(|rest| rest.iter().all(|&b| b == b'*'))
}

/// Length of the UTF-8 character that starts with `lead` (`name` is a valid `&str`, so `lead`
/// is always a leading byte here).
fn char_len(lead: u8) -> usize {
    match lead {
        0xF0..=0xFF => 4,
        0xE0..=0xEF => 3,
        0xC0..=0xDF => 2,
        _ => 1,
    }
}

#[cfg(test)]
mod tests {
    use super::{matches, ModelSet};

    #[test]
    fn a_prepared_set_allows_exactly_what_one_of_its_globs_matches() {
        let mut rng = fastrand::Rng::with_seed(18);
        let alphabet = ['a', 'b', '-', 'é', '*', '?'];
        let word = |rng: &mut fastrand::Rng, wild: bool| -> String {
            let n = if wild { alphabet.len() } else { alphabet.len() - 2 };
            (0..rng.usize(0..6)).map(|_| alphabet[rng.usize(..n)]).collect()
        };
        for _ in 0..5_000 {
            let patterns: Vec<String> = (0..rng.usize(1..4)).map(|_| word(&mut rng, true)).collect();
            let set = ModelSet::new(&patterns);
            for _ in 0..20 {
                let name = word(&mut rng, false);
                let expected = patterns.iter().any(|g| matches(g, &name));
                assert_eq!(set.contains(&name), expected, "{patterns:?} {name:?}");
            }
        }
        let set = ModelSet::new(&["gpt-4o".into(), "claude-*".into(), "*-mini".into(), "**".into()]);
        assert!(set.contains("anything"));
        let set = ModelSet::new(&["gpt-4o".into(), "claude-*".into(), "*-mini".into()]);
        assert!(set.contains("gpt-4o") && set.contains("claude-") && set.contains("o3-mini"));
        assert!(!set.contains("gpt-4o-x") && !set.contains("claud") && !set.contains("mini"));
    }

    #[test]
    fn prefix_star() {
        assert!(matches("gpt-*", "gpt-4o"));
        assert!(matches("gpt-*", "gpt-"));
        assert!(!matches("gpt-*", "gpt"));
        assert!(!matches("gpt-*", "claude-3"));
    }

    #[test]
    fn star_alone_matches_everything() {
        assert!(matches("*", ""));
        assert!(matches("*", "anything/at:all"));
        assert!(matches("**", "x"));
    }

    #[test]
    fn question_mark_is_one_char() {
        assert!(matches("claude-3-?-x", "claude-3-5-x"));
        assert!(!matches("claude-3-?-x", "claude-3-55-x"));
        assert!(!matches("claude-3-?-x", "claude-3--x"));
        assert!(matches("a?c", "aéc"), "? consumes a whole multi-byte character");
        assert!(!matches("a??c", "aéc"));
    }

    #[test]
    fn empty_glob_and_name() {
        assert!(matches("", ""));
        assert!(!matches("", "x"));
        assert!(!matches("x", ""));
        assert!(!matches("?", ""));
    }

    #[test]
    fn literal_must_match_exactly() {
        assert!(matches("gpt-4o", "gpt-4o"));
        assert!(!matches("gpt-4o", "gpt-4o-mini"));
        assert!(!matches("gpt-4o", "GPT-4o"));
    }

    #[test]
    fn inner_and_multiple_stars_backtrack() {
        assert!(matches("*-mini", "gpt-4o-mini"));
        assert!(matches("g*o*i", "gpt-4o-mini"));
        assert!(matches("*a*b*", "xxaxxbxx"));
        assert!(!matches("*a*b", "xxaxxbxxc"));
        assert!(matches("*é", "caféé"));
    }

    #[test]
    fn hostile_input_stays_fast() {
        let name = "a".repeat(10_000);
        let glob = format!("{}b", "*a".repeat(50));
        assert!(!matches(&glob, &name));
    }
}
