//! The `rotor-cluster-data` thread: the fleet's data in Redis, on its own connection so bulk
//! reads never delay a lease draw on the `rotor-cluster` thread. It answers shared-cache
//! lookups and stores them (`remote_cache`), publishes this instance's stats rollups every
//! `PUBLISH_EVERY` and answers cluster-scope stats queries (`fleet`).
//! Invariant: while Redis is unreachable every waiting lookup is answered as a miss at once
//! and every fleet query with 503, so no worker waits on this thread past its own deadline;
//! rollups not yet published wait in `usage::rollup` (bounded) and go out once Redis is back.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::fleet::{self, Publisher};
use super::redis_conn::RedisConn;
use super::remote_cache::Store;
use super::Shared;
use crate::config::cluster::Cluster;
use crate::gateway::commands::{Command, Reply};
use crate::gateway::Gateway;

/// Rollups go to Redis this often (the writer collects them once a second).
const PUBLISH_EVERY: Duration = Duration::from_secs(1);

pub fn spawn(gateway: Arc<Gateway>, shared: Arc<Shared>, cluster: Cluster) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name("rotor-cluster-data".into())
        .spawn(move || run(&gateway, &shared, &cluster))
}

fn run(gateway: &Gateway, shared: &Shared, cluster: &Cluster) {
    let _ = shared.data_thread.set(std::thread::current());
    let publishing = !cluster.stats_ttl.is_zero();
    if publishing {
        gateway.rollups.share_with_fleet();
    }
    let prefix = cluster.key_prefix.as_str();
    let mut conn = RedisConn::new(cluster);
    let store = Store::new(cluster.cache_max_entries, cluster.cache_max_bytes);
    let origin = format!("{}#{:016x}", cluster.instance_id, fastrand::u64(..));
    let mut publisher = Publisher::new(prefix, &origin);
    let mut last_publish = Instant::now();
    // The last call on this connection succeeded (a failure then reconnects at once).
    let mut worked = false;
    loop {
        let stopping = gateway.workers_stopped.load(Ordering::Acquire);
        if !stopping && !shared.remote_cache.pending() && shared.fleet_queries.is_empty() {
            std::thread::park_timeout(PUBLISH_EVERY.saturating_sub(last_publish.elapsed()));
        }
        // The period restarts whether or not Redis answers, so an outage never spins this loop.
        let period_over = last_publish.elapsed() >= PUBLISH_EVERY;
        if period_over {
            last_publish = Instant::now();
        }
        let publish_due = publishing && (stopping || period_over);
        let c = match conn.get() {
            Ok(Some(c)) => c,
            Ok(None) | Err(_) => {
                shared.remote_cache.fail_all();
                while let Some((_, tx)) = shared.fleet_queries.pop() {
                    let _ = tx.send(Err((503, "the cluster's Redis is unreachable".to_owned())));
                }
                if stopping {
                    break;
                }
                continue;
            }
        };
        let mut step = || -> redis::RedisResult<()> {
            shared.remote_cache.serve(c, &store, prefix)?;
            if let Some((command, tx)) = shared.fleet_queries.pop() {
                match answer(c, prefix, cluster.stats_ttl, command) {
                    Ok(reply) => {
                        let _ = tx.send(reply);
                    }
                    Err(e) => {
                        let _ = tx.send(Err((503, format!("cannot read the fleet's stats from Redis: {e}"))));
                        return Err(e);
                    }
                }
            }
            if publish_due {
                // A batch that failed goes again alone (its number makes a repeat a no-op);
                // the cells collected meanwhile wait in the registry for the next pass.
                let cells = if publisher.waiting() {
                    Vec::new()
                } else {
                    gateway.rollups.take_fleet()
                };
                let (n, folded) = publisher.publish(c, prefix, cells, cluster.stats_ttl, cluster.stats_max_cells)?;
                let counters = &shared.counters;
                counters.stats_cells_published.fetch_add(n, Ordering::Relaxed);
                counters.stats_cells_folded.fetch_add(folded, Ordering::Relaxed);
                counters
                    .stats_shed
                    .store(gateway.rollups.fleet_shed(), Ordering::Relaxed);
            }
            Ok(())
        };
        match step() {
            Ok(()) => {
                conn.succeeded();
                worked = true;
            }
            Err(e) => {
                tracing::debug!("cluster data call failed: {e}");
                shared.counters.data_errors.fetch_add(1, Ordering::Relaxed);
                if std::mem::take(&mut worked) {
                    conn.dropped();
                } else {
                    conn.failed();
                }
            }
        }
        if stopping {
            break;
        }
    }
}

/// A cluster-scope stats query, answered from the fleet's cells (a Redis error is the
/// caller's: the connection is dropped).
fn answer(conn: &mut redis::Connection, prefix: &str, ttl: Duration, command: Command) -> redis::RedisResult<Reply> {
    let body = match command {
        Command::Stats {
            period,
            group,
            since_ms,
            until_ms,
        } => {
            let cells = fleet::read(conn, prefix, since_ms, until_ms, ttl)?;
            sonic_rs::to_vec(&StatsPage {
                data: fleet::stats(&cells, period, group),
            })
        }
        Command::Overview { since_ms, until_ms } => {
            let cells = fleet::read(conn, prefix, since_ms, until_ms, ttl)?;
            sonic_rs::to_vec(&fleet::overview(&cells))
        }
        _ => return Ok(Err((500, "not a fleet stats query".to_owned()))),
    };
    Ok(body.map_err(|e| (500, format!("cannot encode the answer: {e}"))))
}

#[derive(serde::Serialize)]
struct StatsPage {
    data: Vec<crate::storage::rollups::StatsRow>,
}
