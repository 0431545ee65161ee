//! The request log's released migrations before its rows became batches (2, 4 and 9; 10 is in
//! `batches`): kept so a file of any older schema still upgrades in order.
//! Invariant: a released migration's text never changes (`MIGRATIONS` applies each once, by
//! position), so these are only ever read, never edited.

/// Migration that creates the table (appended to `MIGRATIONS`).
pub const MIGRATION: &str = "CREATE TABLE requests (
        id INTEGER PRIMARY KEY,
        ts_ms INTEGER NOT NULL,
        request_id TEXT NOT NULL,
        client TEXT NOT NULL,
        endpoint TEXT NOT NULL,
        model TEXT NOT NULL,
        provider TEXT NOT NULL,
        upstream_model TEXT NOT NULL,
        key TEXT NOT NULL,
        status INTEGER NOT NULL,
        error TEXT NOT NULL,
        attempts INTEGER NOT NULL,
        stream INTEGER NOT NULL,
        latency_ms INTEGER NOT NULL,
        ttfb_ms INTEGER NOT NULL,
        overhead_us INTEGER NOT NULL,
        prompt_tokens INTEGER NOT NULL,
        completion_tokens INTEGER NOT NULL,
        cached_tokens INTEGER NOT NULL,
        reasoning_tokens INTEGER NOT NULL,
        usage_partial INTEGER NOT NULL,
        bytes_in INTEGER NOT NULL,
        bytes_out INTEGER NOT NULL
    ) STRICT;
    CREATE INDEX requests_ts ON requests (ts_ms);
    CREATE INDEX requests_model ON requests (model, ts_ms);
    CREATE INDEX requests_client ON requests (client, ts_ms);";

/// Migration to compact rows: the shared text moves to `log_labels`, a row keeps its label id
/// and numbers, and the row table has no secondary index (each cost an index insert per row;
/// stats no longer read rows). Rows are renumbered in order so ids have no gaps.
pub const MIGRATION_COMPACT: &str = "CREATE TABLE log_labels (
        id INTEGER PRIMARY KEY,
        client TEXT NOT NULL,
        endpoint TEXT NOT NULL,
        model TEXT NOT NULL,
        provider TEXT NOT NULL,
        upstream_model TEXT NOT NULL,
        key TEXT NOT NULL,
        error TEXT NOT NULL,
        UNIQUE (model, client, endpoint, provider, upstream_model, key, error)
    ) STRICT;
    CREATE TABLE request_rows (
        id INTEGER PRIMARY KEY,
        ts_ms INTEGER NOT NULL,
        request_id TEXT NOT NULL,
        labels INTEGER NOT NULL,
        status INTEGER NOT NULL,
        attempts INTEGER NOT NULL,
        stream INTEGER NOT NULL,
        latency_ms INTEGER NOT NULL,
        ttfb_ms INTEGER NOT NULL,
        overhead_us INTEGER NOT NULL,
        prompt_tokens INTEGER NOT NULL,
        completion_tokens INTEGER NOT NULL,
        cached_tokens INTEGER NOT NULL,
        reasoning_tokens INTEGER NOT NULL,
        usage_partial INTEGER NOT NULL,
        bytes_in INTEGER NOT NULL,
        bytes_out INTEGER NOT NULL
    ) STRICT;
    INSERT INTO log_labels (client, endpoint, model, provider, upstream_model, key, error)
        SELECT DISTINCT client, endpoint, model, provider, upstream_model, key, error FROM requests;
    INSERT INTO request_rows (ts_ms, request_id, labels, status, attempts, stream, latency_ms, ttfb_ms,
            overhead_us, prompt_tokens, completion_tokens, cached_tokens, reasoning_tokens, usage_partial,
            bytes_in, bytes_out)
        SELECT r.ts_ms, r.request_id, l.id, r.status, r.attempts, r.stream, r.latency_ms, r.ttfb_ms,
            r.overhead_us, r.prompt_tokens, r.completion_tokens, r.cached_tokens, r.reasoning_tokens,
            r.usage_partial, r.bytes_in, r.bytes_out
        FROM requests r JOIN log_labels l ON l.model = r.model AND l.client = r.client
            AND l.endpoint = r.endpoint AND l.provider = r.provider AND l.upstream_model = r.upstream_model
            AND l.key = r.key AND l.error = r.error
        ORDER BY r.id;
    DROP TABLE requests;";

/// Migration 9: a row insert was 22 VDBE steps a row, 8 of them checks that can never fail
/// here (five `NOT NULL`s and `STRICT`'s type check on values `insert` always binds as
/// integers and a blob, and the '' request id with its copy), and bound four values. Now a
/// row is its time, its label id and its blob, in columns with no type (no affinity to apply)
/// and no constraint: the status joins the label (a gateway answers a few statuses per
/// label), and the request id moves into the blob of the rows that still had it in its column
/// (`packed`: `VARINT` -> `VARINT_ID`, `FIXED` -> `FIXED_ID`, the format byte changed and the
/// id appended; `||` joins the bytes as text, the cast takes them back as a blob). Rows keep
/// their ids (so pruning and the id span stay exact), including a row whose label is missing,
/// which stays out of `logs` as before.
pub const MIGRATION_LEAN: &str = "CREATE TABLE log_labels_lean (
        id INTEGER PRIMARY KEY,
        client TEXT NOT NULL,
        endpoint TEXT NOT NULL,
        model TEXT NOT NULL,
        provider TEXT NOT NULL,
        upstream_model TEXT NOT NULL,
        key TEXT NOT NULL,
        error TEXT NOT NULL,
        status INTEGER NOT NULL,
        UNIQUE (model, client, endpoint, provider, upstream_model, key, error, status)
    ) STRICT;
    INSERT INTO log_labels_lean (client, endpoint, model, provider, upstream_model, key, error, status)
        SELECT DISTINCT l.client, l.endpoint, l.model, l.provider, l.upstream_model, l.key, l.error, r.status
        FROM request_rows r JOIN log_labels l ON l.id = r.labels;
    CREATE TABLE request_rows_lean (id INTEGER PRIMARY KEY, ts_ms, labels, numbers);
    INSERT INTO request_rows_lean (id, ts_ms, labels, numbers)
        SELECT r.id, r.ts_ms, n.id, CASE substr(r.numbers, 1, 1)
            WHEN X'00' THEN CAST(X'03' || substr(r.numbers, 2) || CAST(r.request_id AS BLOB) AS BLOB)
            WHEN X'01' THEN CAST(X'02' || substr(r.numbers, 2) || CAST(r.request_id AS BLOB) AS BLOB)
            ELSE r.numbers END
        FROM request_rows r LEFT JOIN log_labels l ON l.id = r.labels
            LEFT JOIN log_labels_lean n ON n.model = l.model AND n.client = l.client
                AND n.endpoint = l.endpoint AND n.provider = l.provider
                AND n.upstream_model = l.upstream_model AND n.key = l.key AND n.error = l.error
                AND n.status = r.status
        ORDER BY r.id;
    DROP TABLE request_rows;
    DROP TABLE log_labels;
    ALTER TABLE request_rows_lean RENAME TO request_rows;
    ALTER TABLE log_labels_lean RENAME TO log_labels;";
