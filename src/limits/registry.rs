//! Where limit windows live across reloads: keyed by a stable identity (the upstream `KeyId` or
//! the client's name, plus the kind), so a key or client that stays in the config keeps its
//! counts when its limit changes; windows of removed keys and clients are forgotten. Also the
//! snapshot/restore seam used by the control thread for persistence, and the owner of the
//! admission journal that gives each window a crash-proof count (see `journal`).

use std::sync::Arc;

use ahash::AHashMap;
use parking_lot::Mutex;

use super::journal::{journal_id, JournalCell};
use super::{Gate, Kind, LimitSet, Window};
use crate::config::{Config, KeyId, Limit, Limits};
use crate::storage::journal::{Journal, Previous};

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Scope {
    Key(KeyId),
    Client(String),
}

/// Stable identity of one window.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct LimiterId {
    pub scope: Scope,
    pub kind: Kind,
}

impl LimiterId {
    /// The name under which the window is persisted: `key:<hex id>:rpm`, `client:<name>:tpm`.
    pub fn storage_name(&self) -> String {
        match &self.scope {
            Scope::Key(id) => format!("key:{:016x}:{}", id.0, self.kind.name()),
            Scope::Client(name) => format!("client:{name}:{}", self.kind.name()),
        }
    }

    pub fn parse(name: &str) -> Option<LimiterId> {
        let (rest, kind) = name.rsplit_once(':')?;
        let kind = Kind::from_name(kind)?;
        let scope = if let Some(hex) = rest.strip_prefix("key:") {
            Scope::Key(KeyId(u64::from_str_radix(hex, 16).ok()?))
        } else {
            Scope::Client(rest.strip_prefix("client:")?.to_owned())
        };
        Some(LimiterId { scope, kind })
    }
}

/// One window's live buckets, `(bucket start in limiter time, count)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WindowSnapshot {
    pub id: LimiterId,
    pub bucket_ms: u64,
    pub buckets: Vec<(u64, u32)>,
}

#[derive(Default)]
pub struct LimitRegistry {
    /// Only touched when a generation is prepared and by the control thread's snapshots,
    /// never per request.
    windows: Mutex<AHashMap<LimiterId, Arc<Window>>>,
    /// Set by the control thread once storage is open; gives windows created later their cell.
    journal: Mutex<Option<Journal>>,
    /// `[cluster]` on: every window gets a lease cell (set before the first table).
    cluster: std::sync::OnceLock<Arc<crate::cluster::Shared>>,
}

/// Every window's buckets, and the journal counts read just before them: once the buckets
/// are saved, `commit` tells the journal they are durable.
#[derive(Default)]
pub struct Snapshot {
    pub windows: Vec<WindowSnapshot>,
    marks: Vec<(&'static JournalCell, u64)>,
}

impl Snapshot {
    pub fn commit(&self) {
        for (cell, marked) in &self.marks {
            cell.commit(*marked);
        }
    }
}

/// Per generation: the limits of every upstream key (`[provider][key]`) and every client
/// (by position in `Config::clients`).
#[derive(Debug, Default)]
pub struct LimitTable {
    pub keys: Vec<Vec<LimitSet>>,
    pub clients: Vec<LimitSet>,
    /// Some key or client has a TPM limit (only then is a token estimate computed).
    pub any_tpm: bool,
}

impl LimitTable {
    pub fn provider(&self, provider: usize) -> &[LimitSet] {
        self.keys.get(provider).map_or(&[], Vec::as_slice)
    }

    pub fn key(&self, provider: usize, key: usize) -> Option<&LimitSet> {
        self.keys.get(provider).and_then(|keys| keys.get(key))
    }
}

impl LimitRegistry {
    /// Shares every window made from now on through the cluster (call before `table_for`).
    pub fn share(&self, shared: Arc<crate::cluster::Shared>) {
        let _ = self.cluster.set(shared);
    }

    /// Every live window with its id (the cluster thread walks them for leases).
    pub fn windows(&self) -> Vec<(LimiterId, Arc<Window>)> {
        self.windows
            .lock()
            .iter()
            .map(|(id, w)| (id.clone(), w.clone()))
            .collect()
    }

    /// The table for `config`, reusing windows already known (with their limits updated).
    pub fn table_for(&self, config: &Config) -> LimitTable {
        let mut known = self.windows.lock();
        let mut journal = self.journal.lock();
        let mut next = AHashMap::with_capacity(known.len());
        let mut set_for = |scope: Scope, limits: &Limits| LimitSet {
            gates: Kind::ALL.map(|kind| match kind.of(limits) {
                Limit::Unlimited => Gate::Unlimited,
                Limit::Disabled => Gate::Disabled,
                Limit::Max(n) => {
                    let id = LimiterId {
                        scope: scope.clone(),
                        kind,
                    };
                    let window = known.remove(&id).or_else(|| next.get(&id).cloned()).unwrap_or_else(|| {
                        let window = Window::new(kind.window_ms(), n);
                        if let Some(shared) = self.cluster.get() {
                            window.attach_lease(crate::cluster::lease::LeaseCell::new(shared.clone()));
                        }
                        if let Some(cell) = journal.as_mut().and_then(|j| j.cell(journal_id(&id))) {
                            window.attach(cell);
                        }
                        Arc::new(window)
                    });
                    window.set_limit(n);
                    next.insert(id, window.clone());
                    Gate::Max(window)
                }
            }),
        };
        let keys: Vec<Vec<LimitSet>> = config
            .providers
            .iter()
            .map(|p| p.keys.iter().map(|k| set_for(Scope::Key(k.id), &p.limits)).collect())
            .collect();
        let clients: Vec<LimitSet> = config
            .clients
            .iter()
            .map(|c| set_for(Scope::Client(c.name.clone()), &c.limits))
            .collect();
        for forgotten in known.values() {
            forgotten.retire_journal();
        }
        *known = next;
        let tpm = |set: &LimitSet| matches!(set.gates[2], Gate::Max(_) | Gate::Disabled);
        let any_tpm = clients.iter().any(tpm) || keys.iter().flatten().any(tpm);
        LimitTable { keys, clients, any_tpm }
    }

    /// Every window's live buckets at `now` (limiter time). Each window's journal count is
    /// read before its buckets, so a count the buckets miss stays unsaved in the journal.
    pub fn snapshot(&self, now: u64) -> Snapshot {
        let windows = self.windows.lock();
        let mut snapshot = Snapshot::default();
        for (id, w) in windows.iter() {
            snapshot.marks.extend(w.journal_mark());
            snapshot.windows.push(WindowSnapshot {
                id: id.clone(),
                bucket_ms: w.bucket_ms(),
                buckets: w.snapshot(now),
            });
        }
        snapshot
    }

    /// After restoring the saved snapshots: counts what the previous run admitted after its
    /// last saved snapshot (exactly, from its journal; or, when the journal cannot vouch,
    /// every window's remaining room), at `now`. Returns, per window, the units added: they
    /// are not saved yet, so the new journal starts with them.
    pub fn restore_unsaved(&self, previous: &Previous, now: u64) -> AHashMap<LimiterId, u64> {
        let windows = self.windows.lock();
        let mut added = AHashMap::new();
        for (id, window) in windows.iter() {
            let units = match previous {
                Previous::Clean => 0,
                Previous::Crashed(unsaved) => {
                    let units = unsaved.get(&journal_id(id)).copied().unwrap_or(0);
                    window.force(units, now);
                    units
                }
                Previous::Unknown(_) => window.fill(now),
            };
            if units > 0 {
                added.insert(id.clone(), units);
            }
        }
        added
    }

    /// Creates the admission journal (through `create`, given each window's id and its units
    /// not yet saved), gives every window its cell, and keeps the journal for later windows.
    pub fn attach_journal(
        &self,
        unsaved: &AHashMap<LimiterId, u64>,
        create: impl FnOnce(&[(u64, u64)]) -> std::io::Result<Journal>,
    ) -> std::io::Result<()> {
        let windows = self.windows.lock();
        let order: Vec<(&LimiterId, &Arc<Window>)> = windows.iter().collect();
        let entries: Vec<(u64, u64)> = order
            .iter()
            .map(|(id, _)| (journal_id(id), unsaved.get(*id).copied().unwrap_or(0)))
            .collect();
        let journal = create(&entries)?;
        for ((_, window), cell) in order.iter().zip(journal.cells()) {
            window.attach(cell);
        }
        *self.journal.lock() = Some(journal);
        Ok(())
    }

    /// A graceful stop saved its final snapshot after the workers ended.
    pub fn mark_clean_stop(&self) {
        if let Some(journal) = self.journal.lock().as_ref() {
            journal.mark_clean();
        }
    }

    /// Puts saved counts back into the windows that exist now. Windows no longer configured
    /// are ignored. Call before workers serve.
    pub fn restore(&self, saved: &[WindowSnapshot], now: u64) -> usize {
        let windows = self.windows.lock();
        let mut restored = 0;
        for snapshot in saved {
            let Some(window) = windows.get(&snapshot.id) else {
                continue;
            };
            for (start, count) in &snapshot.buckets {
                window.restore(*start, *count, now);
            }
            restored += 1;
        }
        restored
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn storage_names_round_trip() {
        for id in [
            LimiterId {
                scope: Scope::Key(KeyId(0xdead_beef)),
                kind: Kind::Rpm,
            },
            LimiterId {
                scope: Scope::Client("web:team".into()),
                kind: Kind::Tpm,
            },
        ] {
            assert_eq!(LimiterId::parse(&id.storage_name()), Some(id));
        }
        assert_eq!(LimiterId::parse("key:zz:rpm"), None);
        assert_eq!(LimiterId::parse("other:x:rpm"), None);
    }

    fn config(keys: &str) -> Config {
        let text = format!(
            "[[providers]]\nname = \"p\"\nkind = \"openai\"\nbase_url = \"http://127.0.0.1:9/v1\"\nkeys = [{keys}]\nrpm = 5\n"
        );
        crate::config::parse_str(&text, crate::config::ConfigSource::Environment).unwrap()
    }

    #[test]
    fn a_crash_restores_what_the_journal_saw_after_the_last_saved_snapshot() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rotor.db-admits");
        let now = super::super::CLOCK_BASE_MS;
        let run = LimitRegistry::default();
        let config = config("\"sk-aaaa-0001\", \"sk-bbbb-0002\"");
        let table = run.table_for(&config);
        run.attach_journal(&AHashMap::new(), |w| Journal::create(&path, 9, w))
            .unwrap();
        let key = table.key(0, 0).unwrap();
        for _ in 0..3 {
            assert!(matches!(key.admit(0, now), super::super::Admission::Admitted(_)));
        }
        let saved = run.snapshot(now);
        saved.commit();
        // Admitted after the last saved snapshot, then the process dies.
        assert!(matches!(key.admit(0, now + 10), super::super::Admission::Admitted(_)));
        let previous = crate::storage::journal::read_previous(&path, 9);

        let next = LimitRegistry::default();
        let table = next.table_for(&config);
        next.restore(&saved.windows, now + 20);
        let unsaved = next.restore_unsaved(&previous, now + 20);
        assert_eq!(unsaved.values().sum::<u64>(), 1);
        assert_eq!(table.key(0, 0).unwrap().usage(now + 20)[0], (Kind::Rpm, 4, 5));
        assert_eq!(table.key(0, 1).unwrap().usage(now + 20)[0], (Kind::Rpm, 0, 5));
        // A journal that cannot vouch fills every window.
        let careful = LimitRegistry::default();
        let table = careful.table_for(&config);
        careful.restore_unsaved(&Previous::Unknown("test".into()), now);
        assert_eq!(table.key(0, 1).unwrap().usage(now)[0], (Kind::Rpm, 5, 5));
    }

    #[test]
    fn a_window_a_reload_forgets_leaves_nothing_in_the_journal() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rotor.db-admits");
        let now = super::super::CLOCK_BASE_MS;
        let run = LimitRegistry::default();
        let table = run.table_for(&config("\"sk-aaaa-0001\""));
        run.attach_journal(&AHashMap::new(), |w| Journal::create(&path, 9, w))
            .unwrap();
        table.key(0, 0).unwrap().admit(0, now);
        // A reload swaps the key, then puts it back: the new window starts empty, and so
        // must its restore after a crash.
        drop(run.table_for(&config("\"sk-cccc-0003\"")));
        let table = run.table_for(&config("\"sk-aaaa-0001\""));
        table.key(0, 0).unwrap().admit(0, now);
        let Previous::Crashed(unsaved) = crate::storage::journal::read_previous(&path, 9) else {
            panic!("running journal of this boot")
        };
        assert_eq!(unsaved.values().sum::<u64>(), 1, "{unsaved:?}");
    }
}
