//! `rotor_cluster_*` families (`[cluster]` on): lease draws and returns, Redis calls and
//! errors, the fallback state and time spent in it, health and key-pool events shared.

use std::fmt::Write;
use std::sync::atomic::Ordering::Relaxed;

use crate::cluster::{Mode, Shared};

pub fn render(out: &mut String, shared: &Shared) {
    let c = &shared.counters;
    let counters: [(&str, &str, u64); 13] = [
        (
            "rotor_cluster_lease_draws_total",
            "Lease draws asked of Redis.",
            c.lease_draws.load(Relaxed),
        ),
        (
            "rotor_cluster_lease_denied_total",
            "Lease draws Redis refused (the shared window was full).",
            c.lease_denied.load(Relaxed),
        ),
        (
            "rotor_cluster_slots_leased_total",
            "Window slots (requests or tokens) drawn in leases.",
            c.slots_leased.load(Relaxed),
        ),
        (
            "rotor_cluster_slots_returned_total",
            "Unused or refunded slots given back to Redis.",
            c.slots_returned.load(Relaxed),
        ),
        (
            "rotor_cluster_returns_lost_total",
            "Refunded slots whose lease was too old to give back (never over-admission).",
            c.returns_lost.load(Relaxed),
        ),
        (
            "rotor_cluster_redis_calls_total",
            "Lease script calls to Redis.",
            c.redis_calls.load(Relaxed),
        ),
        (
            "rotor_cluster_redis_errors_total",
            "Failed Redis connections or calls.",
            c.redis_errors.load(Relaxed),
        ),
        (
            "rotor_cluster_connects_total",
            "Times Redis answered after being unreachable (the first connection included).",
            c.reconnects.load(Relaxed),
        ),
        (
            "rotor_cluster_fallback_seconds_total",
            "Seconds spent without Redis (on_redis_down in force).",
            shared.fallback_ms() / 1000,
        ),
        (
            "rotor_cluster_decisions_without_redis_total",
            "Window admissions decided without Redis (local share of the limit, or refused).",
            c.decisions_without_redis.load(Relaxed),
        ),
        (
            "rotor_cluster_events_published_total",
            "Key health changes published to other instances.",
            c.events_published.load(Relaxed),
        ),
        (
            "rotor_cluster_events_applied_total",
            "Key health changes applied from other instances.",
            c.events_applied.load(Relaxed),
        ),
        (
            "rotor_cluster_pool_syncs_total",
            "Key-pool changes received from other instances.",
            c.pool_syncs.load(Relaxed),
        ),
    ];
    for (name, help, value) in counters {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}");
    }
    let fleet: [(&str, &str, u64); 4] = [
        (
            "rotor_cluster_stats_cells_published_total",
            "Stats rollup cells (minute x labels) published to the fleet in Redis.",
            c.stats_cells_published.load(Relaxed),
        ),
        (
            "rotor_cluster_stats_cells_folded_total",
            "Published label sets counted under (other): a fleet minute was at cluster.stats_max_cells.",
            c.stats_cells_folded.load(Relaxed),
        ),
        (
            "rotor_cluster_stats_shed_requests_total",
            "Requests whose stats cells could not wait for Redis (bound reached) and are missing from the fleet view.",
            c.stats_shed.load(Relaxed),
        ),
        (
            "rotor_cluster_data_errors_total",
            "Failed Redis calls of the cluster data thread (shared cache, fleet stats).",
            c.data_errors.load(Relaxed),
        ),
    ];
    for (name, help, value) in fleet {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}");
    }
    shared.remote_cache.write_metrics(out);
    let mode = shared.mode();
    let _ = writeln!(
        out,
        "# HELP rotor_cluster_state 1 for the state this instance is in: shared (through Redis), fallback_local, refusing.\n# TYPE rotor_cluster_state gauge"
    );
    for (name, m) in [
        ("shared", Mode::Shared),
        ("fallback_local", Mode::Local),
        ("refusing", Mode::Refuse),
    ] {
        let _ = writeln!(out, "rotor_cluster_state{{state=\"{name}\"}} {}", u8::from(mode == m));
    }
    let _ = writeln!(
        out,
        "# HELP rotor_cluster_live_instances Instances with a live heartbeat.\n# TYPE rotor_cluster_live_instances gauge\nrotor_cluster_live_instances {}",
        shared.live()
    );
}
