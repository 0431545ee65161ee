//! Request records pushed through the library, as `finish` makes them: the real queue, writer
//! and rollups, without an HTTP round trip per record (for tests that need 100k+ of them).
#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use rotor::usage::record::{Label, RecordText, RequestRecord, Texts};

use super::{sleep_ms, Harness};

/// Rows as `finish` makes them, pushed through the library: the queue, the writer and the
/// rollups (the writer counts a queued record's request) are the real ones, without the cost
/// of an HTTP round trip per record.
pub fn log_directly(h: &Harness, n: usize) {
    let gateway = &h.running().gateway;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    // One route's records share their label, as a worker's do (`proxy::finish`).
    let label = Arc::new(Label::new(&RecordText {
        request_id: "",
        client: "tester",
        endpoint: "chat",
        model: "gpt-4o-mini",
        provider: "mock",
        upstream_model: "",
        key: "…0001",
        error: "",
    }));
    for i in 0..n {
        let id = format!("{i:016x}");
        let record = RequestRecord {
            ts_ms: now,
            text: Texts::with_label(id.as_bytes(), label.clone()),
            status: 200,
            attempts: 1,
            latency_ms: 3,
            overhead_us: 40,
            usage: rotor::usage::Usage {
                prompt_tokens: 10,
                completion_tokens: 20,
                reported: true,
                ..Default::default()
            },
            bytes_in: 100,
            bytes_out: 400,
            ..Default::default()
        };
        // Never faster than the writer: this test is about bounds, not about drops.
        while gateway.records.len() > 50_000 {
            sleep_ms(5);
        }
        assert!(gateway.records.push(record));
    }
}
