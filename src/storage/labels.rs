//! Label ids of request rows: what a row shares with many others (client, endpoint, model,
//! provider, upstream model, key, error and, since migration 9, its status) lives once in
//! `log_labels`, and each row holds its id. This cache maps a label to its id on the writer's
//! side, so a row insert binds one integer instead of strings and a status. It is keyed by the
//! record's label fields as they arrived (one run of text, `Texts::label_key`) and its status:
//! two keys (an empty upstream model, or the model itself) may map to one id, never one key to
//! two.
//! Invariant: the cache only holds ids committed to (or being written in the current
//! transaction of) the database it belongs to; it is cleared whenever that may stop being true
//! (a failed transaction, labels deleted, another database opened), and holds at most
//! `MAX_CACHED` entries. A batch's `BatchLabels` remembers only ids this cache gave it during
//! that batch's transaction.

use ahash::AHashMap;
use rusqlite::{params, OptionalExtension, Transaction};

use super::StorageError;
use crate::usage::record::{RecordText, Texts};

const MAX_CACHED: usize = 50_000;
/// Labels a batch remembers: a gateway's rows come from a few routes, keys and models, so a
/// row's label is nearly always one of the last few.
const RECENT: usize = 8;

/// A label as the cache keys it (`Texts::label_key`): its fields back to back, where each
/// ends, and the status.
struct Key {
    run: Box<str>,
    ends: [u16; 7],
    status: u16,
}

/// The label part of a row's text, in column order.
fn fields<'a>(t: &RecordText<'a>) -> [&'a str; 7] {
    [
        t.client,
        t.endpoint,
        t.model,
        t.provider,
        t.upstream_model,
        t.key,
        t.error,
    ]
}

fn hash(run: &str, ends: &[u16; 7], status: u16) -> u64 {
    ahash::RandomState::with_seeds(13, 17, 19, 23).hash_one((run, ends, status))
}

#[derive(Default)]
pub struct LabelCache {
    /// By hash of the key; equal hashes with different keys share the bucket.
    ids: AHashMap<u64, Vec<(Key, i64)>>,
    len: usize,
}

impl LabelCache {
    pub fn clear(&mut self) {
        self.ids.clear();
        self.len = 0;
    }

    /// Label ids for the rows of one batch (one transaction).
    pub fn batch<'r>(&mut self) -> BatchLabels<'_, 'r> {
        BatchLabels {
            cache: self,
            recent: [("", [0; 7], 0, 0); RECENT],
            len: 0,
            next: 0,
        }
    }

    /// The id of the label of a record's `texts` and `status`, added to `log_labels` when new
    /// (inside `tx`; an empty upstream model is stored as the model when a provider served it).
    /// One hash of one run of text per row, not seven; the fields are split out only when the
    /// label is new to the cache.
    fn id(&mut self, tx: &Transaction<'_>, texts: &Texts, status: u16) -> Result<i64, StorageError> {
        let (run, ends) = texts.label_key();
        let h = hash(run, &ends, status);
        if let Some(bucket) = self.ids.get(&h) {
            let same = |k: &Key| k.status == status && k.ends == ends && &*k.run == run;
            if let Some((_, id)) = bucket.iter().find(|(k, _)| same(k)) {
                return Ok(*id);
            }
        }
        let mut text = texts.get();
        if text.upstream_model.is_empty() && !text.provider.is_empty() {
            text.upstream_model = text.model;
        }
        let [client, endpoint, model, provider, upstream_model, key, error] = fields(&text);
        let found: Option<i64> = tx
            .prepare_cached(
                "SELECT id FROM log_labels WHERE model = ?3 AND client = ?1 AND endpoint = ?2 AND provider = ?4 \
                 AND upstream_model = ?5 AND key = ?6 AND error = ?7 AND status = ?8",
            )?
            .query_row(
                params![client, endpoint, model, provider, upstream_model, key, error, status],
                |r| r.get(0),
            )
            .optional()?;
        let id =
            match found {
                Some(id) => id,
                None => {
                    tx.prepare_cached(
                    "INSERT INTO log_labels (client, endpoint, model, provider, upstream_model, key, error, status) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                )?
                .execute(params![client, endpoint, model, provider, upstream_model, key, error, status])?;
                    tx.last_insert_rowid()
                }
            };
        if self.len >= MAX_CACHED {
            self.clear();
        }
        self.ids.entry(h).or_default().push((
            Key {
                run: Box::from(run),
                ends,
                status,
            },
            id,
        ));
        self.len += 1;
        Ok(id)
    }
}

/// The label ids of one batch's rows: the last `RECENT` labels it resolved, borrowed from its
/// records, are compared (their status and ends, then their text) before the cache is asked,
/// so a row whose label is one of them skips the hash and the map lookup.
pub struct BatchLabels<'c, 'r> {
    cache: &'c mut LabelCache,
    /// (label text, its ends, status, id); the first `len` are filled, `next` is replaced next.
    recent: [(&'r str, [u16; 7], u16, i64); RECENT],
    len: usize,
    next: usize,
}

impl<'r> BatchLabels<'_, 'r> {
    /// The id of the label of `texts` and `status` (see `LabelCache::id`).
    pub fn id(&mut self, tx: &Transaction<'_>, texts: &'r Texts, status: u16) -> Result<i64, StorageError> {
        let (run, ends) = texts.label_key();
        let recent = self.recent.get(..self.len).unwrap_or(&[]);
        // Records of one route share their label's text: every recent one is compared by its
        // address before any by its text.
        let by_address = |(r, _, s, _): &&(&str, [u16; 7], u16, i64)| *s == status && std::ptr::eq(*r, run);
        let by_text = |(r, e, s, _): &&(&str, [u16; 7], u16, i64)| *s == status && *e == ends && *r == run;
        if let Some((_, _, _, id)) = recent.iter().find(by_address).or_else(|| recent.iter().find(by_text)) {
            return Ok(*id);
        }
        let id = self.cache.id(tx, texts, status)?;
        if let Some(slot) = self.recent.get_mut(self.next) {
            *slot = (run, ends, status, id);
        }
        self.next = (self.next + 1) % RECENT;
        self.len = (self.len + 1).min(RECENT);
        Ok(id)
    }
}

#[cfg(test)]
mod tests {
    use crate::storage::requests::{insert, logs, LogFilter};
    use crate::storage::Storage;
    use crate::usage::record::{RecordText, RequestRecord, Texts};

    fn record(ts_ms: i64, model: &str, key: &str, status: u16) -> RequestRecord {
        RequestRecord {
            ts_ms,
            status,
            text: Texts::new(&RecordText {
                request_id: "r",
                model,
                key,
                client: "c",
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn rows_whose_label_changes_within_a_batch_keep_their_own_label() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Storage::open(Some(&dir.path().join("l.db"))).unwrap();
        // More labels than a batch remembers, revisited out of order, two that differ only
        // in where one field ends ("ab"+"c" against "a"+"bc"), and the same text with another
        // status.
        let mut wanted = Vec::new();
        for (i, at) in [0, 1, 0, 2, 3, 4, 5, 6, 7, 8, 9, 10, 1, 0, 11, 10].iter().enumerate() {
            wanted.push((format!("m{at}"), "k".to_owned(), 200));
            if i % 5 == 0 {
                wanted.push(("ab".to_owned(), "c".to_owned(), 200));
                wanted.push(("a".to_owned(), "bc".to_owned(), 200));
            }
            if i % 3 == 0 {
                wanted.push((format!("m{at}"), "k".to_owned(), 429));
            }
        }
        for _ in 0..2 {
            let batch: Vec<_> = (0..)
                .zip(&wanted)
                .map(|(ts, (model, key, status))| record(ts, model, key, *status))
                .collect();
            insert(&mut s, &batch).unwrap();
        }
        let page = logs(&mut s, &LogFilter::default(), 500, 0).unwrap();
        let got: Vec<(String, String, u16)> = page
            .data
            .iter()
            .rev()
            .map(|r| (r.model.clone(), r.key.clone(), r.status as u16))
            .collect();
        let twice: Vec<_> = wanted.iter().chain(&wanted).cloned().collect();
        assert_eq!(got, twice);
        let only_429 = LogFilter {
            status: Some(429),
            ..Default::default()
        };
        let filtered = logs(&mut s, &only_429, 500, 0).unwrap();
        assert_eq!(
            filtered.total as usize,
            2 * wanted.iter().filter(|w| w.2 == 429).count()
        );
        assert!(filtered.data.iter().all(|r| r.status == 429));
    }
}
