//! Validation of `[storage]` and `[cache]` (split from `compile.rs`): the request log's
//! retention, row and file bounds, and the response cache's size and entry bounds.
//!
//! Invariant: a bound that would let the log or the cache grow without end is refused here,
//! with the key's path; what is returned is used as is.

use std::time::Duration;

use super::compile::one_of;
use super::compile::positive_ms;
use super::file::{CacheConfig, StorageConfig};
use super::model::{Cache, Storage, WriterClass};
use super::ConfigError;

pub(super) fn storage(s: StorageConfig) -> Result<Storage, ConfigError> {
    if s.retention_days == 0 {
        return Err(ConfigError::at(
            "storage.retention_days",
            "must be at least 1 (days of request logs kept)",
        ));
    }
    if s.rollup_retention_days == 0 {
        return Err(ConfigError::at(
            "storage.rollup_retention_days",
            "must be at least 1 (days of stats rollups kept)",
        ));
    }
    if !(1..=1_000_000).contains(&s.max_stat_models) {
        return Err(ConfigError::at(
            "storage.max_stat_models",
            format!(
                "must be between 1 and 1000000 (distinct model names in the stats), got {}",
                s.max_stat_models
            ),
        ));
    }
    if !(0.0..=1.0).contains(&s.sample_rate) {
        return Err(ConfigError::at(
            "storage.sample_rate",
            format!(
                "must be between 0.0 and 1.0 (fraction of requests logged as rows), got {}",
                s.sample_rate
            ),
        ));
    }
    // Relative to the working directory, like the default "data/rotor.db".
    let path: Option<std::path::PathBuf> = (!s.path.is_empty()).then(|| s.path.into());
    let max_records = match (s.max_records, path.is_some()) {
        // The in-memory log lives in RAM: bounded by default.
        (None, false) => Some(100_000),
        (None, true) | (Some(-1), true) => None,
        (Some(-1), false) => {
            return Err(ConfigError::at(
                "storage.max_records",
                "-1 (unlimited) needs a storage.path: an in-memory log must be bounded",
            ))
        }
        (Some(n), _) => Some(u64::try_from(n).map_err(|_| {
            ConfigError::at(
                "storage.max_records",
                format!("must be -1 (unlimited), 0 (no rows, stats only) or a row count, got {n}"),
            )
        })?),
    };
    let max_db_bytes = match s.max_db_bytes {
        -1 => None,
        n if n >= MIN_DB_BYTES => Some(n as u64),
        n => {
            return Err(ConfigError::at(
                "storage.max_db_bytes",
                format!("must be -1 (unlimited) or at least {MIN_DB_BYTES} (1 MiB), got {n}"),
            ))
        }
    };
    if !(1..=MAX_PINS).contains(&s.max_pins) {
        return Err(ConfigError::at(
            "storage.max_pins",
            format!(
                "must be between 1 and {MAX_PINS} (object ids pinned to their key), got {}",
                s.max_pins
            ),
        ));
    }
    if s.pin_retention_days == 0 {
        return Err(ConfigError::at(
            "storage.pin_retention_days",
            "must be at least 1 (days an object id stays pinned to its key)",
        ));
    }
    let writer_class = one_of(&s.writer_class, WRITER_CLASSES, "storage.writer_class")?;
    if writer_class == WriterClass::Idle && !crate::storage::idle_class::may_leave_idle_class() {
        return Err(ConfigError::at(
            "storage.writer_class",
            "\"idle\" needs a process that may leave the idle scheduling class again \
             (CAP_SYS_NICE, or an RLIMIT_NICE of 20); \"auto\" uses it only where it can",
        ));
    }
    Ok(Storage {
        path,
        log_requests: s.log_requests,
        retention_days: s.retention_days,
        max_records,
        max_db_bytes,
        sample_rate: s.sample_rate,
        rollup_retention_days: s.rollup_retention_days,
        max_stat_models: s.max_stat_models as usize,
        health_window: positive_ms(s.health_window_ms, "storage.health_window_ms")?,
        max_pins: s.max_pins as usize,
        pin_retention_days: s.pin_retention_days,
        writer_class,
    })
}

const WRITER_CLASSES: &[(&str, WriterClass)] = &[
    ("auto", WriterClass::Auto),
    ("idle", WriterClass::Idle),
    ("normal", WriterClass::Normal),
];

/// `[cache] max_bytes` bounds: the store is split in `cache::SHARDS` parts of at least 1 KiB,
/// and at most 64 GiB is ever held.
const MIN_CACHE_BYTES: u64 = 16 << 10;
const MAX_CACHE_BYTES: u64 = 64 << 30;

pub(super) fn cache(c: &CacheConfig) -> Result<Cache, ConfigError> {
    if !(MIN_CACHE_BYTES..=MAX_CACHE_BYTES).contains(&c.max_bytes) {
        return Err(ConfigError::at(
            "cache.max_bytes",
            format!(
                "must be between {MIN_CACHE_BYTES} (16 KiB) and {MAX_CACHE_BYTES} (64 GiB), got {}",
                c.max_bytes
            ),
        ));
    }
    if c.ttl_ms < 1000 {
        return Err(ConfigError::at(
            "cache.ttl_ms",
            format!("must be at least 1000 (ms an entry is served), got {}", c.ttl_ms),
        ));
    }
    // One shard of the store, and no more than the relay reads whole (16 MiB).
    let most = (c.max_bytes / crate::cache::SHARDS as u64).min(16 << 20);
    if c.max_entry_bytes == 0 || c.max_entry_bytes > most {
        return Err(ConfigError::at(
            "cache.max_entry_bytes",
            format!(
                "must be between 1 and {most} (the smaller of cache.max_bytes / {} and 16 MiB), got {}",
                crate::cache::SHARDS,
                c.max_entry_bytes
            ),
        ));
    }
    Ok(Cache {
        enabled: c.enabled,
        max_bytes: c.max_bytes,
        ttl: Duration::from_millis(c.ttl_ms),
        max_entry_bytes: c.max_entry_bytes,
    })
}

/// Largest `storage.max_pins`: each pin costs ~150 bytes of shared memory.
const MAX_PINS: u64 = 10_000_000;

/// Smallest `storage.max_db_bytes`: room for the schema, the stats rollups and a batch of rows.
const MIN_DB_BYTES: i64 = 1 << 20;
