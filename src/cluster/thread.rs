//! The `rotor-cluster` thread: the only code that talks to Redis. Every few milliseconds (or
//! at once when a worker is starved of a lease) it renews leases; every `cluster.sync_ms` it
//! shares key health and the key pool; every `cluster.heartbeat_ms` it beats. A failed call
//! puts the instance in its `on_redis_down` mode and reconnects with backoff.
//! Invariant: workers never wait on this thread longer than `cluster.lease_wait_ms`; this
//! thread never blocks on Redis longer than `cluster.redis_timeout_ms` per call.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::leases::Leases;
use super::redis_conn::RedisConn;
use super::sync::Sync;
use super::{Mode, Shared};
use crate::config::cluster::Cluster;
use crate::gateway::Gateway;

/// Lease pass period when no worker asks sooner (lease ends and renewals are checked then).
const LEASE_TICK: Duration = Duration::from_millis(10);
/// Every shared window is looked at least this often (a missed wake costs at most this).
const SWEEP: Duration = Duration::from_secs(1);

/// Starts the cluster thread when `[cluster]` is on.
pub fn spawn(gateway: Arc<Gateway>) -> std::io::Result<Option<JoinHandle<()>>> {
    let (Some(shared), Some(cluster)) = (gateway.cluster.clone(), gateway.current().config.cluster.clone()) else {
        return Ok(None);
    };
    let (ready_tx, ready_rx) = std::sync::mpsc::sync_channel(1);
    let data = super::data::spawn(gateway.clone(), shared.clone(), cluster.clone())?;
    let handle = std::thread::Builder::new()
        .name("rotor-cluster".into())
        .spawn(move || {
            run(&gateway, &shared, &cluster, ready_tx);
            if let Some(thread) = shared.data_thread.get() {
                thread.unpark();
            }
            let _ = data.join();
        })?;
    // Workers start after the first connection attempt (bounded by redis_timeout_ms), so they
    // do not begin in the fallback mode when Redis is there.
    let _ = ready_rx.recv_timeout(Duration::from_secs(15));
    Ok(Some(handle))
}

fn run(gateway: &Gateway, shared: &Arc<Shared>, cluster: &Cluster, ready: std::sync::mpsc::SyncSender<()>) {
    let _ = shared.thread.set(std::thread::current());
    tracing::info!(
        instance = %cluster.instance_id,
        redis = %cluster.redis_url,
        "cluster on: sharing limits, key health and the key pool through Redis"
    );
    let mut conn = RedisConn::new(cluster);
    let mut leases = Leases::new(&cluster.key_prefix, cluster.lease.as_millis() as u64);
    let mut sync = Sync::new(&cluster.key_prefix, &cluster.instance_id);
    let ttl_ms = cluster.heartbeat.as_millis() as u64 * 3;
    let mut last_sync = Instant::now() - cluster.sync;
    let mut last_beat = Instant::now() - cluster.heartbeat;
    let mut last_sweep = Instant::now();
    loop {
        if gateway.workers_stopped.load(Ordering::Acquire) {
            break;
        }
        let mut wanted = shared.take_wanted();
        if !wanted {
            // Idle (no lease in hand): sleep until the next poll; a starved worker wakes us.
            let idle = if leases.busy() {
                LEASE_TICK
            } else {
                cluster.sync.min(cluster.heartbeat)
            };
            std::thread::park_timeout(idle);
            wanted = shared.take_wanted();
        }
        // Every shared window is looked at when a worker asked, when one owes Redis, and once
        // a second; otherwise only the windows this thread holds leases or corrections for.
        let sweep_due = last_sweep.elapsed() >= SWEEP;
        if sweep_due {
            last_sweep = Instant::now();
        }
        let all = wanted | shared.take_debts() | sweep_due;
        if gateway.cluster_pool_changed.swap(false, Ordering::AcqRel) {
            sync.pool_dirty = true;
        }
        let result = match conn.get() {
            Ok(None) => {
                let _ = ready.try_send(());
                continue;
            }
            Err(e) => Err(e),
            Ok(Some(c)) => {
                let mut step = || -> redis::RedisResult<()> {
                    let beat_due = last_beat.elapsed() >= cluster.heartbeat || shared.mode() != Mode::Shared;
                    if beat_due {
                        last_beat = Instant::now();
                        sync.beat(c, shared, ttl_ms)?;
                    }
                    leases.tick(c, gateway, shared, all)?;
                    if last_sync.elapsed() >= cluster.sync {
                        last_sync = Instant::now();
                        sync.poll(c, gateway, shared)?;
                    }
                    Ok(())
                };
                step().map_err(|e| format!("Redis call failed: {e}"))
            }
        };
        match result {
            Ok(()) => {
                conn.succeeded();
                if shared.mode() != Mode::Shared {
                    shared.set_up();
                    shared.counters.reconnects.fetch_add(1, Ordering::Relaxed);
                    tracing::info!("Redis answers: limits are shared again");
                }
            }
            Err(error) => {
                conn.failed();
                shared.counters.redis_errors.fetch_add(1, Ordering::Relaxed);
                if shared.mode() == Mode::Shared {
                    tracing::warn!("{error}; falling back to on_redis_down until it is back");
                }
                shared.set_down(error);
                leases.reset();
            }
        }
        let _ = ready.try_send(());
    }
    if let Ok(Some(c)) = conn.get() {
        sync.leave(c, shared);
    }
}
