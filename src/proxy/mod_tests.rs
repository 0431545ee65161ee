//! Unit tests of the request path's entry: each core's copy of the live generation, and
//! `route` with the front door of each endpoint.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use super::Core;
use crate::config::{parse_str, ConfigSource};
use crate::gateway::Gateway;
use crate::server::Service;

fn config(model: &str) -> crate::config::Config {
    let text = format!(
        "[[providers]]\nname = \"p\"\nkind = \"openai\"\nbase_url = \"http://127.0.0.1:9/v1\"\nkeys = [\"sk-p-0001\"]\nmodels = [\"{model}\"]\n"
    );
    parse_str(&text, ConfigSource::Environment).unwrap()
}

fn head(raw: &str) -> crate::codec::head::RequestHead {
    use crate::codec::head::{parse_request_head, HeadLimits};
    let raw = raw.replacen("HTTP/1.1\r\n", "HTTP/1.1\r\nhost: a\r\n", 1);
    let mut buf = bytes::BytesMut::from(raw.as_str());
    parse_request_head(&mut buf, &HeadLimits::default()).unwrap().unwrap()
}

/// `route` tries rotor's fixed paths before the Gemini door's checks: every path keeps its
/// endpoint (a Gemini SDK's model list under `/v1` included), and a proxied endpoint's
/// `front` is the front door `Front::of_path` finds in its path.
#[test]
fn routes_keep_their_endpoints_and_fronts() {
    use super::{route, Endpoint};
    use crate::providers::Front;
    let cases = [
        ("POST /v1/chat/completions HTTP/1.1\r\n\r\n", Endpoint::ChatCompletions),
        ("POST /v1/completions HTTP/1.1\r\n\r\n", Endpoint::Completions),
        ("POST /v1/embeddings HTTP/1.1\r\n\r\n", Endpoint::Embeddings),
        ("POST /v1/messages HTTP/1.1\r\n\r\n", Endpoint::Messages),
        ("POST /v1/responses HTTP/1.1\r\n\r\n", Endpoint::Responses),
        ("GET /v1/responses/resp_1 HTTP/1.1\r\n\r\n", Endpoint::Passthrough),
        ("GET /health HTTP/1.1\r\n\r\n", Endpoint::Health),
        ("GET /metrics HTTP/1.1\r\n\r\n", Endpoint::Metrics),
        ("GET /v1/status HTTP/1.1\r\n\r\n", Endpoint::Status),
        (
            "GET /v1/models HTTP/1.1\r\nauthorization: Bearer k\r\n\r\n",
            Endpoint::Models,
        ),
        (
            "GET /v1/models HTTP/1.1\r\nx-goog-api-key: k\r\n\r\n",
            Endpoint::GeminiModels,
        ),
        (
            "GET /v1/models/gemini-pro?key=k HTTP/1.1\r\n\r\n",
            Endpoint::GeminiModels,
        ),
        (
            "POST /v1/models/gemini-pro:generateContent HTTP/1.1\r\n\r\n",
            Endpoint::Gemini,
        ),
        (
            "POST /v1beta/models/gemini-pro:streamGenerateContent HTTP/1.1\r\n\r\n",
            Endpoint::Gemini,
        ),
        ("GET /v1beta/models HTTP/1.1\r\n\r\n", Endpoint::GeminiModels),
        ("POST /v1/images/generations HTTP/1.1\r\n\r\n", Endpoint::Passthrough),
        ("GET /admin/logs HTTP/1.1\r\n\r\n", Endpoint::Admin),
    ];
    for (raw, endpoint) in cases {
        let head = head(raw);
        assert_eq!(route(&head).unwrap(), endpoint, "{raw}");
        assert_eq!(endpoint.front(), Front::of_path(head.path()), "{raw}");
    }
    assert!(
        route(&head("GET /v1/chat/completions HTTP/1.1\r\n\r\n")).is_err(),
        "POST only"
    );
    assert!(route(&head("GET /v2/x HTTP/1.1\r\n\r\n")).is_err(), "unknown path");
}

/// A core's copy of the live generation follows a swap at its next read, and lets the old
/// generation go then.
#[test]
fn a_cores_generation_follows_a_swap_at_the_next_read() {
    let gateway = Gateway::new(config("m1")).unwrap();
    let core = Core::new(0, gateway.clone());
    let first = core.generation();
    assert_eq!(first.id, 1);
    assert!(Arc::ptr_eq(&first, &gateway.current()));
    let held = Arc::strong_count(&first);

    let id = gateway.install(config("m2")).unwrap();
    assert_eq!(gateway.live_id(), id);
    let second = core.generation();
    assert_eq!(second.id, id);
    assert!(second.config.routes.by_model.contains_key("m2"));
    assert_eq!(
        Arc::strong_count(&first),
        held - 2,
        "the core's copy and the gateway's are gone"
    );
    assert_eq!(core.limits().max_body_bytes, second.config.server.max_body_bytes);
}
