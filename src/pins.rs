//! Account-scoped objects (OpenAI files, batches, uploads, vector stores, fine-tuning jobs):
//! every id an upstream returned from a create is pinned to the provider and key that created
//! it, so later requests naming the id reach the same account. The table is shared by all
//! workers (one mutex, held for a map operation, never across an await) and persisted by the
//! control thread (`storage::pins`), which drains `take_unsaved` on its tick.
//! Invariant: at most `storage.max_pins` pins are held (the oldest pruned first, counted in
//! `pruned`); the unsaved queue never holds more than that either.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use ahash::AHashMap;
use parking_lot::Mutex;
use smallvec::SmallVec;
use sonic_rs::JsonValueTrait;

use crate::config::KeyId;

/// Path prefixes whose objects belong to the account (key) that created them.
pub const COLLECTIONS: &[&str] = &[
    "/v1/files",
    "/v1/batches",
    "/v1/uploads",
    "/v1/vector_stores",
    "/v1/fine_tuning/jobs",
];

/// Body fields of a create that name an existing object (a batch's input file, a fine-tune's
/// files, a vector store file).
const BODY_REFERENCES: &[&str] = &["input_file_id", "training_file", "validation_file", "file_id"];

/// Longest id rotor pins or looks up (OpenAI's are ~30 bytes).
const MAX_ID_BYTES: usize = 128;

/// Who created an object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pin {
    pub provider: Arc<str>,
    pub key: KeyId,
    /// Unix ms.
    pub created_ms: u64,
}

#[derive(Default)]
struct Table {
    map: AHashMap<Box<str>, Pin>,
    /// Ids in creation order, with their creation time (an entry whose time no longer matches
    /// the map's was replaced and is skipped).
    order: VecDeque<(Box<str>, u64)>,
    unsaved: Vec<(Box<str>, Pin)>,
}

#[derive(Default)]
pub struct Pins {
    table: Mutex<Table>,
    /// Pins dropped by `storage.max_pins` (oldest first).
    pub pruned: AtomicU64,
    /// Pins dropped by `storage.pin_retention_days`.
    pub expired: AtomicU64,
    /// Pins kept in memory but not saved: more than `storage.max_pins` were made between two
    /// control-thread ticks.
    pub unsaved_dropped: AtomicU64,
}

impl Pins {
    /// The creator of object `id`.
    pub fn get(&self, id: &str) -> Option<Pin> {
        self.table.lock().map.get(id).cloned()
    }

    /// Pins `id` to its creator (queued for storage), pruning the oldest past `max`.
    pub fn insert(&self, id: &str, pin: Pin, max: usize) {
        if id.is_empty() || id.len() > MAX_ID_BYTES {
            return;
        }
        let mut table = self.table.lock();
        // A read or cancel answer names its object again: already pinned to the same key.
        if table
            .map
            .get(id)
            .is_some_and(|p| p.key == pin.key && p.provider == pin.provider)
        {
            return;
        }
        let pruned = table.add(id, pin.clone(), max);
        let queued = table.unsaved.len() < max;
        if queued {
            table.unsaved.push((id.into(), pin));
        }
        drop(table);
        if !queued {
            self.unsaved_dropped.fetch_add(1, Ordering::Relaxed);
        }
        if pruned > 0 {
            self.pruned.fetch_add(pruned, Ordering::Relaxed);
        }
    }

    /// Pins restored from storage at start (oldest first); not queued for saving again.
    pub fn restore(&self, rows: Vec<(String, Pin)>, max: usize) {
        let mut table = self.table.lock();
        let mut pruned = 0;
        for (id, pin) in rows {
            pruned += table.add(&id, pin, max);
        }
        drop(table);
        self.pruned.fetch_add(pruned, Ordering::Relaxed);
    }

    /// Drops pins created before `cutoff_ms` (unix ms); how many went.
    pub fn expire(&self, cutoff_ms: u64) -> u64 {
        let mut table = self.table.lock();
        let mut expired = 0;
        while let Some((_, created)) = table.order.front() {
            if *created >= cutoff_ms {
                break;
            }
            expired += table.pop_oldest();
        }
        drop(table);
        self.expired.fetch_add(expired, Ordering::Relaxed);
        expired
    }

    /// Pins made since the last call, for the control thread to write.
    pub fn take_unsaved(&self) -> Vec<(Box<str>, Pin)> {
        std::mem::take(&mut self.table.lock().unsaved)
    }

    pub fn len(&self) -> usize {
        self.table.lock().map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn render_metrics(&self, out: &mut String) {
        let _ = writeln!(
            out,
            "# HELP rotor_object_pins account-scoped object ids pinned to their creating key (bounded by storage.max_pins).\n# TYPE rotor_object_pins gauge\nrotor_object_pins {}",
            self.len()
        );
        let _ = writeln!(
            out,
            "# HELP rotor_object_pins_pruned_total pins dropped: the oldest past storage.max_pins (bound), older than storage.pin_retention_days (expired), or not saved to storage because more than max_pins were made in one 100 ms tick (unsaved).\n# TYPE rotor_object_pins_pruned_total counter\nrotor_object_pins_pruned_total{{reason=\"bound\"}} {}\nrotor_object_pins_pruned_total{{reason=\"expired\"}} {}\nrotor_object_pins_pruned_total{{reason=\"unsaved\"}} {}",
            self.pruned.load(Ordering::Relaxed),
            self.expired.load(Ordering::Relaxed),
            self.unsaved_dropped.load(Ordering::Relaxed)
        );
    }
}

/// How often the control thread applies `storage.pin_retention_days` and the bound on disk.
const PRUNE_EVERY_MS: u64 = 60_000;
const DAY_MS: u64 = 86_400_000;

/// Control thread, at start: the stored pins (within retention) back into memory.
pub fn restore(gateway: &crate::gateway::Gateway, storage: Option<&mut crate::storage::Storage>) {
    let Some(storage) = storage else { return };
    let config = &gateway.current().config.storage;
    let cutoff = crate::storage::windows::unix_now_ms().saturating_sub(u64::from(config.pin_retention_days) * DAY_MS);
    let max = config.max_pins;
    if let Err(e) = crate::storage::pins::prune(storage, cutoff, max) {
        tracing::error!("cannot prune the stored object pins: {e}");
    }
    match crate::storage::pins::load(storage) {
        Ok(rows) if rows.is_empty() => {}
        Ok(rows) => {
            let n = rows.len();
            gateway.pins.restore(rows, max);
            tracing::info!(pins = n, "object pins restored from storage");
        }
        Err(e) => tracing::error!("cannot read the stored object pins: {e}"),
    }
}

/// Control thread, every tick: new pins to disk; once a minute, retention and the bound
/// applied in memory and on disk. `last_prune` is the caller's (unix ms).
pub fn persist(gateway: &crate::gateway::Gateway, storage: Option<&mut crate::storage::Storage>, last_prune: &mut u64) {
    let unsaved = gateway.pins.take_unsaved();
    let now = crate::storage::windows::unix_now_ms();
    let due = now.saturating_sub(*last_prune) >= PRUNE_EVERY_MS;
    if unsaved.is_empty() && !due {
        return;
    }
    let config = &gateway.current().config.storage;
    let cutoff = now.saturating_sub(u64::from(config.pin_retention_days) * DAY_MS);
    if due {
        *last_prune = now;
        gateway.pins.expire(cutoff);
    }
    let Some(storage) = storage else { return };
    if !unsaved.is_empty() {
        if let Err(e) = crate::storage::pins::save(storage, &unsaved) {
            tracing::error!(pins = unsaved.len(), "cannot save object pins: {e}");
        }
    }
    if due {
        if let Err(e) = crate::storage::pins::prune(storage, cutoff, config.max_pins) {
            tracing::error!("cannot prune the stored object pins: {e}");
        }
    }
}

impl Table {
    /// Adds a pin; returns how many old ones the bound pruned.
    fn add(&mut self, id: &str, pin: Pin, max: usize) -> u64 {
        let created = pin.created_ms;
        let fresh = self.map.insert(id.into(), pin).is_none();
        self.order.push_back((id.into(), created));
        let mut pruned = 0;
        while self.map.len() > max.max(1) {
            pruned += self.pop_oldest();
        }
        // Replaced ids leave stale order entries; keep the queue from outgrowing the map.
        if !fresh && self.order.len() > 2 * self.map.len() + 16 {
            let map = &self.map;
            self.order
                .retain(|(id, t)| map.get(id).is_some_and(|p| p.created_ms == *t));
        }
        pruned
    }

    /// Removes the oldest live pin (skipping stale order entries); 1 if one went.
    fn pop_oldest(&mut self) -> u64 {
        while let Some((id, created)) = self.order.pop_front() {
            if self.map.get(&id).is_some_and(|p| p.created_ms == created) {
                self.map.remove(&id);
                return 1;
            }
        }
        0
    }
}

/// The collection a path belongs to and what follows it (`""`, or `/id...`).
fn split_collection(path: &str) -> Option<&str> {
    // Every collection is `/v1/` and one of these letters: chat, messages and embeddings are
    // turned away on one byte (the search below cost about 200 instructions per chat request).
    if !matches!(path.as_bytes().get(4), Some(b'f' | b'b' | b'u' | b'v')) {
        return None;
    }
    let path = path.split('?').next().unwrap_or(path);
    COLLECTIONS.iter().find_map(|c| {
        let rest = path.strip_prefix(c)?;
        (rest.is_empty() || rest.starts_with('/')).then_some(rest)
    })
}

/// Whether a request on `path` may create (and so pin) account-scoped objects.
pub fn creates_objects(path: &str) -> bool {
    split_collection(path).is_some()
}

/// The object ids a request names: the path's id segments under a collection
/// (`/v1/files/{id}/content`, `/v1/vector_stores/{vs}/files/{file}`) and the body's references
/// (`input_file_id`, `training_file`, ...).
pub fn referenced_ids(path: &str, body: &[u8]) -> SmallVec<[String; 4]> {
    let mut ids = SmallVec::new();
    // Only requests on a collection name objects: chat, messages and the rest never pay for
    // the body look-ups below (they cost 35 % of a chat request: `benches/gate.sh`).
    let Some(rest) = split_collection(path) else {
        return ids;
    };
    for segment in rest.split('/').filter(|s| looks_like_id(s)) {
        ids.push(segment.to_owned());
    }
    if body.first().is_some_and(|b| *b == b'{') {
        for field in BODY_REFERENCES {
            if let Some(id) = sonic_rs::get(body, &[*field])
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
            {
                if looks_like_id(&id) {
                    ids.push(id);
                }
            }
        }
    }
    ids
}

/// The ids an answer to a create carries: its top-level `id` and, for a completed upload, the
/// file inside it.
pub fn created_ids(body: &[u8]) -> SmallVec<[String; 2]> {
    let mut ids = SmallVec::new();
    for path in [&["id"][..], &["file", "id"][..]] {
        if let Some(id) = sonic_rs::get(body, path)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
        {
            if looks_like_id(&id) {
                ids.push(id);
            }
        }
    }
    ids
}

/// An object id, not a sub-resource name (`content`, `cancel`, `files`, ...): OpenAI's ids
/// carry a `-` or `_` after their type prefix.
fn looks_like_id(s: &str) -> bool {
    !s.is_empty() && s.len() <= MAX_ID_BYTES && s.contains(['-', '_']) && !s.contains(['"', '\\'])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pin(t: u64) -> Pin {
        Pin {
            provider: Arc::from("p"),
            key: KeyId(1),
            created_ms: t,
        }
    }

    #[test]
    fn ids_from_paths_and_bodies() {
        assert_eq!(referenced_ids("/v1/files/file-1/content", b"").as_slice(), ["file-1"]);
        assert_eq!(
            referenced_ids("/v1/batches/batch_9/cancel", b"").as_slice(),
            ["batch_9"]
        );
        assert!(referenced_ids("/v1/files", b"").is_empty());
        assert!(referenced_ids("/v1/chat/completions", b"").is_empty());
        // Only requests on a collection name objects: a chat body is never read for them.
        assert!(referenced_ids("/v1/chat/completions", br#"{"file_id":"file-9"}"#).is_empty());
        let body = br#"{"input_file_id":"file-3","endpoint":"/v1/chat/completions"}"#;
        assert_eq!(referenced_ids("/v1/batches", body).as_slice(), ["file-3"]);
        assert_eq!(
            created_ids(br#"{"id":"file-7","object":"file"}"#).as_slice(),
            ["file-7"]
        );
        assert!(!creates_objects("/v1/filesx"));
        assert!(creates_objects("/v1/uploads/upload_1/complete"));
    }

    /// The one-byte guard in `split_collection` lets every collection through, with or without
    /// a query or an id, and turns away what only shares its first letters.
    #[test]
    fn every_collection_passes_the_quick_guard() {
        for collection in COLLECTIONS {
            for path in [
                collection.to_string(),
                format!("{collection}?limit=2"),
                format!("{collection}/obj_1"),
            ] {
                assert!(creates_objects(&path), "{path}");
            }
        }
        for path in [
            "/v1/chat/completions",
            "/v1/embeddings",
            "/v1/fine_tuning",
            "/v1/",
            "",
            "/v1/f",
        ] {
            assert!(!creates_objects(path), "{path}");
        }
    }

    #[test]
    fn bound_prunes_oldest_and_expiry_drops_old() {
        let pins = Pins::default();
        for i in 0..5u64 {
            pins.insert(&format!("file-{i}"), pin(i), 3);
        }
        assert_eq!(pins.len(), 3);
        assert!(pins.get("file-0").is_none() && pins.get("file-4").is_some());
        assert_eq!(pins.pruned.load(Ordering::Relaxed), 2);
        assert_eq!(pins.expire(4), 2);
        assert_eq!(pins.len(), 1);
        assert_eq!(pins.take_unsaved().len(), 3);
        assert_eq!(pins.unsaved_dropped.load(Ordering::Relaxed), 2);
        pins.insert("file-9", pin(9), 3);
        assert_eq!(pins.take_unsaved().len(), 1, "drained: room again");
    }
}
