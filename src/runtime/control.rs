//! The control thread: the one place that may block. It reloads the config (SIGHUP, file
//! change), refreshes DNS, owns the storage (limit-window snapshots every second and after the
//! workers stop), and turns SIGTERM/SIGINT into a graceful shutdown.
//! Invariant: a failed reload is logged and changes nothing.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use super::persist::Persist;
use crate::config::ConfigSource;
use crate::gateway::commands::Command;
use crate::gateway::{upstream_hosts, Gateway};
use crate::storage::Storage;
use crate::usage::writer::LogWriter;

const TICK: Duration = Duration::from_millis(100);
/// While the request log is busy (a tick found at least `BUSY_ROWS` queued records), the
/// thread looks every `BUSY_TICK` and writes as soon as `BUSY_ROWS` have queued, so a write is
/// a burst of a few hundred rows rather than a 100 ms backlog: at 40k requests/s that backlog
/// is about 4,000 rows, milliseconds of one core taken at once on a machine the workers fill.
const BUSY_TICK: Duration = Duration::from_millis(10);
const BUSY_ROWS: usize = 256;
const FILE_CHECK: Duration = Duration::from_secs(1);
const DNS_REFRESH: Duration = Duration::from_secs(30);

/// Flags set by signal handlers (signal-hook), read by the control thread.
#[derive(Clone, Default)]
pub struct Signals {
    pub reload: Arc<AtomicBool>,
    pub terminate: Arc<AtomicBool>,
}

impl Signals {
    /// Registers SIGHUP (reload) and SIGTERM/SIGINT (graceful stop). Binary only: tests drive
    /// the same paths through `Gateway::reload` and `Running::stop`.
    pub fn install() -> std::io::Result<Self> {
        let signals = Signals::default();
        signal_hook::flag::register(signal_hook::consts::SIGHUP, signals.reload.clone())?;
        signal_hook::flag::register(signal_hook::consts::SIGTERM, signals.terminate.clone())?;
        signal_hook::flag::register(signal_hook::consts::SIGINT, signals.terminate.clone())?;
        Ok(signals)
    }
}

/// Starts the control thread and returns once it has opened storage and restored the limit
/// windows, so workers started afterwards never serve with empty windows.
pub fn spawn(gateway: Arc<Gateway>, signals: Option<Signals>) -> std::io::Result<JoinHandle<()>> {
    let (ready_tx, ready_rx) = std::sync::mpsc::sync_channel(1);
    let handle = std::thread::Builder::new()
        .name("rotor-control".into())
        .spawn(move || {
            let mut duties = Duties::open(&gateway);
            let _ = ready_tx.send(());
            run(&gateway, signals.unwrap_or_default(), &mut duties);
            duties.after_shutdown(&gateway);
        })?;
    let _ = ready_rx.recv();
    Ok(handle)
}

fn run(gateway: &Gateway, signals: Signals, duties: &mut Duties) {
    gateway.commands.attach();
    let mut watched = watched_file(gateway);
    let mut last_file_check = Instant::now();
    let mut last_dns = Instant::now();
    let mut busy = false;
    while !gateway.shutdown.is_stopping() {
        pause(gateway, busy);
        busy = gateway.records.len() >= BUSY_ROWS;
        duties.tick(gateway);
        if signals.terminate.swap(false, Ordering::Relaxed) {
            tracing::info!("signal received: no longer accepting; finishing requests in flight");
            gateway.shutdown.trigger();
            break;
        }
        let mut reload = signals.reload.swap(false, Ordering::Relaxed);
        if last_file_check.elapsed() >= FILE_CHECK {
            last_file_check = Instant::now();
            if let Some((path, seen)) = &mut watched {
                let now = modified(path);
                if now != *seen {
                    *seen = now;
                    reload = true;
                }
            }
        }
        if reload {
            match gateway.reload() {
                Ok(id) => tracing::info!(generation = id, "config reloaded"),
                Err(e) => tracing::error!("config reload rejected, keeping the running config: {e}"),
            }
            watched = watched_file(gateway);
        }
        let missed = gateway.resolver.has_misses() && last_dns.elapsed() >= Duration::from_secs(1);
        if missed || last_dns.elapsed() >= DNS_REFRESH {
            last_dns = Instant::now();
            let hosts = upstream_hosts(&gateway.current().config);
            for failure in gateway.resolver.refresh(hosts) {
                tracing::warn!("cannot resolve upstream {failure}; keeping previous addresses");
            }
        }
    }
}

/// Waits for the next tick: `TICK`, or while `busy` until `BUSY_ROWS` records have queued.
/// Parked, not slept: an admin command unparks the thread to run at once.
fn pause(gateway: &Gateway, busy: bool) {
    if !busy {
        std::thread::park_timeout(TICK);
        return;
    }
    let started = Instant::now();
    while started.elapsed() < TICK {
        std::thread::park_timeout(BUSY_TICK);
        if gateway.records.len() >= BUSY_ROWS || gateway.commands.pending() || gateway.shutdown.is_stopping() {
            return;
        }
    }
}

/// What the control thread does with its one storage connection: request logs, limit-window
/// snapshots, admin commands.
struct Duties {
    storage: Option<Storage>,
    persist: Persist,
    log_writer: LogWriter,
    /// TLS roots for the token endpoints (access tokens are minted here).
    token_tls: crate::tokens::Tls,
    /// When object pins were last pruned (unix ms).
    pins_pruned: u64,
}

impl Duties {
    /// Opens storage and restores limit windows (before any worker serves).
    fn open(gateway: &Gateway) -> Duties {
        let mut log_writer = LogWriter::new();
        let mut storage = log_writer.open_storage(gateway);
        // Runtime keys join the generation before their windows are restored.
        crate::keys::command::restore(gateway, storage.as_mut());
        crate::pins::restore(gateway, storage.as_mut());
        let persist = Persist::open(gateway, storage.as_mut());
        Duties {
            storage,
            persist,
            log_writer,
            token_tls: crate::tokens::Tls::default(),
            pins_pruned: crate::storage::windows::unix_now_ms(),
        }
    }

    fn tick(&mut self, gateway: &Gateway) {
        self.run_commands(gateway);
        // Access tokens due for refresh (blocks on the token endpoints; this thread may).
        if gateway.tokens.any() {
            self.token_tls.update(&gateway.current().config);
            gateway.tokens.refresh_due(&self.token_tls);
        }
        self.log_writer.tick(gateway, &mut self.storage);
        self.persist.tick(gateway, self.storage.as_mut());
        crate::keys::command::persist_if_dirty(gateway, self.storage.as_mut());
        crate::pins::persist(gateway, self.storage.as_mut(), &mut self.pins_pruned);
    }

    /// Workers finish in-flight requests after shutdown starts; their records and the final
    /// window snapshot are written once they have all stopped (bounded by the grace period plus
    /// a margin).
    fn after_shutdown(&mut self, gateway: &Gateway) {
        let limit = Instant::now() + gateway.current().config.server.shutdown_grace + Duration::from_secs(2);
        while !gateway.workers_stopped.load(Ordering::Acquire) && Instant::now() < limit {
            std::thread::park_timeout(TICK);
            self.run_commands(gateway);
            self.log_writer.tick(gateway, &mut self.storage);
        }
        self.log_writer.finish(gateway, &mut self.storage);
        crate::pins::persist(gateway, self.storage.as_mut(), &mut self.pins_pruned);
        let saved = self.persist.snapshot(gateway, self.storage.as_mut());
        // Only a snapshot taken after every worker ended holds every admission.
        if saved && gateway.workers_stopped.load(Ordering::Acquire) {
            gateway.limits.mark_clean_stop();
        }
    }

    fn run_commands(&mut self, gateway: &Gateway) {
        while let Some((command, reply)) = gateway.commands.next() {
            let result = match command {
                Command::Reload => match gateway.reload() {
                    Ok(id) => {
                        tracing::info!(generation = id, "config reloaded (admin API)");
                        Ok(format!("{{\"reloaded\":true,\"generation\":{id}}}").into_bytes())
                    }
                    Err(e) => {
                        tracing::error!("config reload rejected, keeping the running config: {e}");
                        Err((400, e))
                    }
                },
                Command::Keys(change) => crate::keys::command::execute(change, gateway, self.storage.as_mut()),
                Command::MintToken { key, refused } => {
                    self.token_tls.update(&gateway.current().config);
                    gateway
                        .tokens
                        .mint_now(key, refused, &self.token_tls)
                        .map(|()| Vec::new())
                        .map_err(|e| (502, e))
                }
                Command::ClusterPool(state) => {
                    crate::keys::command::adopt(state, gateway, self.storage.as_mut());
                    Ok(Vec::new())
                }
                other => self.log_writer.execute(other, gateway, &mut self.storage),
            };
            let _ = reply.send(result);
        }
    }
}

/// The config file and its modification time, polled once a second. Polling a stat is cheaper
/// to reason about than inotify here: editors and Kubernetes ConfigMaps replace the file
/// through renames and symlink swaps, which watchers of the old inode miss.
fn watched_file(gateway: &Gateway) -> Option<(PathBuf, Option<SystemTime>)> {
    match &gateway.current().config.source {
        ConfigSource::File(path) => Some((path.clone(), modified(path))),
        // A remote config is fetched on SIGHUP and POST /admin/reload only.
        ConfigSource::Environment | ConfigSource::Remote(_) => None,
    }
}

fn modified(path: &PathBuf) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}
