//! The series a shard counted into last, remembered by what labels them, so the next request
//! with the same labels counts by index: no status formatting, no label capping or hashing, and
//! one memo walk for all of a request's families instead of one per family (`Shard::observe`
//! cost 518 instructions per chat request through `bound::bump` twice, callgrind, issue 18).
//! Invariant: an entry only names series that are the observation's own (never a fold into
//! `(other)`), and it matches only an observation whose labels equal the series' stored
//! labels, so a hit counts exactly where `bound::bump` would.

/// Entries kept per shard and kind: a worker's requests go to a few label sets, and almost
/// always to the one before.
const KEPT: usize = 4;

/// Label sets whose series are known, most recent first.
pub(super) struct Recent {
    entries: [Option<Entry>; KEPT],
}

/// One label set: the labels the memo compares itself (a `'static` name by address, a number),
/// and the series of each family it counted into.
#[derive(Clone, Copy)]
pub(super) struct Entry {
    /// The endpoint (requests) or outcome (attempts): `'static`, so equal address and length
    /// mean equal text.
    pub name: &'static str,
    /// The status (requests); 0 for attempts.
    pub number: u16,
    /// The series in the family the memo serves (`requests` or `attempts`).
    pub series: usize,
    /// The `tokens` series of the same model and provider, once one was counted.
    pub tokens: Option<usize>,
    /// The `attempts` series of the same provider and the outcome named (`'static`, compared
    /// by address like `name`), once a delivering attempt was counted with the request.
    pub attempt: Option<(&'static str, usize)>,
}

impl Entry {
    pub fn new(name: &'static str, number: u16, series: usize) -> Self {
        Entry {
            name,
            number,
            series,
            tokens: None,
            attempt: None,
        }
    }
}

impl Default for Recent {
    fn default() -> Self {
        Recent { entries: [None; KEPT] }
    }
}

impl Recent {
    /// The same `'static` text (equal address and length).
    pub fn same_name(a: &'static str, b: &'static str) -> bool {
        a.len() == b.len() && std::ptr::eq(a.as_ptr(), b.as_ptr())
    }

    /// The entry of `name` and `number` whose series `same` accepts (it compares the labels
    /// clients or the config choose), moved to the front.
    pub fn find(&mut self, name: &'static str, number: u16, same: impl Fn(usize) -> bool) -> Option<&mut Entry> {
        let at = self
            .entries
            .iter()
            .position(|e| e.is_some_and(|e| e.number == number && Recent::same_name(e.name, name) && same(e.series)))?;
        // The one before, almost always: nothing to move.
        if at > 0 {
            self.entries[..=at].rotate_right(1);
        }
        self.entries[0].as_mut()
    }

    /// Remembers `entry` first, forgetting the oldest.
    pub fn note(&mut self, entry: Entry) {
        self.entries.rotate_right(1);
        self.entries[0] = Some(entry);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_by_name_address_number_and_labels_most_recent_first() {
        let mut recent = Recent::default();
        for (series, name) in ["chat", "embeddings", "messages", "responses"].iter().enumerate() {
            recent.note(Entry::new(name, 200, series));
        }
        assert_eq!(recent.find("chat", 200, |_| true).map(|e| e.series), Some(0));
        assert!(recent.find("chat", 500, |_| true).is_none(), "another status");
        assert!(recent.find("chat", 200, |_| false).is_none(), "other labels");
        let owned = String::from("chat");
        let leaked: &'static str = Box::leak(owned.into_boxed_str());
        assert!(
            recent.find(leaked, 200, |_| true).is_none(),
            "equal text elsewhere is a miss (the full path then counts it)"
        );
        // `chat` went to the front: a fifth entry drops the oldest, `embeddings`.
        recent.note(Entry::new("gemini", 200, 4));
        assert!(recent.find("embeddings", 200, |_| true).is_none());
        assert_eq!(recent.find("chat", 200, |_| true).map(|e| e.series), Some(0));
        if let Some(entry) = recent.find("messages", 200, |_| true) {
            entry.tokens = Some(7);
        }
        assert_eq!(recent.find("messages", 200, |_| true).and_then(|e| e.tokens), Some(7));
    }
}
