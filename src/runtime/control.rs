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
/// thread looks again when `BUSY_ROWS` will have queued at the rate just seen (`busy_nap`),
/// then every `BUSY_TICK`, and writes as soon as they have, so a write is a burst of a few
/// hundred rows rather than a 100 ms backlog: at 40k requests/s that backlog is about 4,000
/// rows, milliseconds of one core taken at once on a machine the workers fill.
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
    let mut nap = None;
    let mut last_look = Instant::now();
    let mut queued = 0;
    while !gateway.shutdown.is_stopping() {
        duties
            .log_writer
            .nap_in_idle_class(gateway, queued > 0, || pause(gateway, nap));
        queued = gateway.records.len();
        nap = (queued >= BUSY_ROWS).then(|| busy_nap(queued, last_look.elapsed()));
        last_look = Instant::now();
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

/// Waits for the next tick: `TICK`, or while the log is busy (`nap` set) until `BUSY_ROWS`
/// records have queued, looking first after `nap`, then every `BUSY_TICK`.
/// Parked, not slept: an admin command unparks the thread to run at once.
fn pause(gateway: &Gateway, nap: Option<Duration>) {
    let Some(nap) = nap else {
        std::thread::park_timeout(TICK);
        return;
    };
    let started = Instant::now();
    let mut next = nap;
    while started.elapsed() < TICK {
        std::thread::park_timeout(next);
        if gateway.records.len() >= BUSY_ROWS || gateway.commands.pending() || gateway.shutdown.is_stopping() {
            return;
        }
        next = BUSY_TICK;
    }
}

/// How long a busy log takes to queue `BUSY_ROWS` records at the rate it queued `queued` in
/// `over`, within `BUSY_TICK..=TICK`: the first look comes when the next write is due. Looking
/// every `BUSY_TICK` from the start woke the thread ~115 times a second to write ~35 times at
/// 8-9k streams/s (one connection); this halved its runs (570-592 -> 286-304 in 5 s, from
/// `/proc/<pid>/task/<tid>/schedstat`) and its CPU went from 1.47 to 1.38 us a request (medians
/// of 5 runs, lower in 4 of them; issue 18).
fn busy_nap(queued: usize, over: Duration) -> Duration {
    let nanos = over.as_nanos() * BUSY_ROWS as u128 / queued.max(1) as u128;
    Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX)).clamp(BUSY_TICK, TICK)
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

#[cfg(test)]
mod tests {
    use super::{busy_nap, BUSY_ROWS, BUSY_TICK, TICK};
    use std::time::Duration;

    /// The first look comes when `BUSY_ROWS` will have queued at the rate just seen, never
    /// sooner than `BUSY_TICK` (a fast log writes every tick, as before) nor later than `TICK`.
    #[test]
    fn a_busy_log_is_looked_at_when_its_next_write_is_due() {
        // 9k requests/s: 300 rows in 33 ms; 256 take 28 ms.
        let nap = busy_nap(300, Duration::from_micros(33_333));
        assert!(
            (Duration::from_millis(28)..Duration::from_millis(29)).contains(&nap),
            "{nap:?}"
        );
        assert_eq!(
            busy_nap(BUSY_ROWS, Duration::from_millis(50)),
            Duration::from_millis(50)
        );
        assert_eq!(
            busy_nap(9_700, Duration::from_millis(100)),
            BUSY_TICK,
            "97k/s: every tick"
        );
        assert_eq!(busy_nap(BUSY_ROWS, Duration::from_secs(3)), TICK, "a slow trickle");
        assert_eq!(
            busy_nap(0, Duration::from_secs(u64::MAX / 2)),
            TICK,
            "no overflow, no division by 0"
        );
    }
}
