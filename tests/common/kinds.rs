//! The checks every translated provider kind must pass, written once and run over a table of
//! kinds (`TABLE`, by `tests/kinds_shared.rs`): a key answering 429 fails over (and cools for its
//! `Retry-After`), a key answering 401 is quarantined, out of attempts the upstream's own refusal
//! reaches the client, and a stream cut midway ends in an error event. Each `kinds_*.rs` file
//! keeps only what is particular to its kind.

use rotor::mock::{KeyFault, MockServer, Recorded};
use sonic_rs::{JsonContainerTrait, JsonValueTrait, Value};

use super::{chat, chat_stream, start_mock, Conf, Harness, CLIENT_KEY};

/// One provider kind, as the shared checks drive it.
pub struct Kind {
    /// The provider's `kind` (and its name in the config), for failure messages.
    pub kind: &'static str,
    pub model: &'static str,
    /// Three pool keys: the first answers 429, the second 401, the third works.
    pub keys: [&'static str; 3],
    /// The `[[providers]]` entry's lines after `name`, `kind`, `keys` and `models` (the base
    /// URL, ...); `{ADDR}` is the mock's address.
    pub entry: &'static str,
    /// Whether a recorded upstream request is one the client's request caused to be sent
    /// with a key (a chat call, a prediction's create).
    pub is_call: fn(&Recorded) -> bool,
    /// A key the mock refuses with 401 by its name, and a piece of the message its refusal
    /// carries to the client.
    pub refused: (&'static str, &'static str),
}

pub const TABLE: &[Kind] = &[
    Kind {
        kind: "cloudflare",
        model: "@cf/meta/llama-3.1-8b-instruct",
        keys: ["cf_token_aaaa_0001", "cf_token_bbbb_0002", "cf_token_cccc_0003"],
        entry: "account_id = \"acct0123\"\nbase_url = \"http://{ADDR}/client/v4\"",
        is_call: |r| r.target == "/client/v4/accounts/acct0123/ai/v1/chat/completions",
        refused: ("cf_fail401_token_0001", "Incorrect API key provided (mock)"),
    },
    Kind {
        kind: "cohere",
        model: "command-r-plus",
        keys: ["co_key_aaaa_0001", "co_key_bbbb_0002", "co_key_cccc_0003"],
        entry: "base_url = \"http://{ADDR}/v2\"",
        is_call: |r| r.target == "/v2/chat",
        refused: ("co_fail401_0001", "invalid api token"),
    },
    Kind {
        kind: "replicate",
        model: "meta/meta-llama-3-8b-instruct",
        keys: ["r8_key_aaaa_0001", "r8_key_bbbb_0002", "r8_key_cccc_0003"],
        entry: "base_url = \"http://{ADDR}/v1\"\npoll_interval_ms = 50",
        is_call: |r| r.method == "POST" && r.target.ends_with("/predictions"),
        refused: ("r8_fail401_key_0001", "Unauthenticated"),
    },
];

impl Kind {
    /// A gateway in front of a fresh mock with this kind's provider holding `keys`.
    pub fn harness(&self, keys: &[&str], retry: &str) -> Harness {
        let mock = start_mock();
        let body = self.config(&mock, keys);
        Harness::with_mock(
            mock,
            Conf {
                workers: 1,
                retry: retry.to_owned(),
                ..Conf::with_body(&body)
            },
        )
    }

    fn config(&self, mock: &MockServer, keys: &[&str]) -> String {
        let keys: Vec<String> = keys.iter().map(|k| format!("{k:?}")).collect();
        format!(
            "[[clients]]\nname = \"tester\"\nkey = \"{CLIENT_KEY}\"\n\n[[providers]]\nname = \"{}\"\nkind = \"{}\"\nkeys = [{}]\nmodels = [\"{}\"]\n{}\n",
            self.kind,
            self.kind,
            keys.join(", "),
            self.model,
            self.entry.replace("{ADDR}", &mock.addr.to_string())
        )
    }

    fn calls_by(&self, h: &Harness, key: &str) -> usize {
        h.recorded()
            .iter()
            .filter(|r| (self.is_call)(r) && r.bearer() == Some(key))
            .count()
    }
}

/// A 429 key is tried once and cools for its Retry-After, a 401 key is tried once and
/// quarantined; the third key answers every request.
pub fn a_429_key_fails_over_and_a_401_key_is_quarantined(k: &Kind) {
    let [a, b, c] = k.keys;
    let h = k.harness(&k.keys, "quarantine_ms = 60000");
    let fault = |status| KeyFault {
        status: Some(status),
        retry_after_s: (status == 429).then_some(30),
        ..Default::default()
    };
    h.mock().faults.set(a, fault(429));
    h.mock().faults.set(b, fault(401));
    let mut client = h.client();
    for _ in 0..4 {
        let r = client.post("/v1/chat/completions", &chat(k.model), &[]);
        assert_eq!(r.status, 200, "{}: {}", k.kind, r.text());
    }
    let by = (k.calls_by(&h, a), k.calls_by(&h, b), k.calls_by(&h, c));
    assert_eq!(by, (1, 1, 4), "{}: calls by key", k.kind);
    let status = client.get("/v1/status", &[]).json();
    let keys = status["providers"][0]["keys"].as_array().unwrap().clone();
    let state = |tail: &str| {
        keys.iter()
            .find(|key| key["key"].as_str() == Some(tail))
            .and_then(|key| key["state"].as_str().map(str::to_owned))
    };
    assert_eq!(state("…0001").as_deref(), Some("cooling"), "{}: {status}", k.kind);
    assert_eq!(state("…0002").as_deref(), Some("quarantined"), "{}: {status}", k.kind);
    assert_eq!(state("…0003").as_deref(), Some("active"), "{}: {status}", k.kind);
}

/// With one attempt, the upstream's own refusal (status and message) reaches the client.
pub fn out_of_attempts_the_client_gets_the_upstream_message(k: &Kind) {
    let (key, message) = k.refused;
    let h = k.harness(&[key], "max_attempts = 1");
    let r = h.post("/v1/chat/completions", &chat(k.model), &[]);
    assert_eq!(r.status, 401, "{}: {}", k.kind, r.text());
    assert!(r.openai_error().0.contains(message), "{}: {}", k.kind, r.text());
}

/// A stream cut after two chunks keeps what arrived and ends in an OpenAI error event: no
/// `[DONE]`, no finish reason.
pub fn a_stream_cut_midway_ends_in_an_error_event(k: &Kind) {
    let h = k.harness(&k.keys[2..], "");
    let (status, text, _) = h.client().stream_chat(
        &chat_stream(k.model),
        &[("x-mock-chunks", "5"), ("x-mock-cut-after", "2")],
    );
    assert_eq!(status, 200, "{}: {text}", k.kind);
    assert!(text.contains("tok1 "), "{}: {text}", k.kind);
    let data: Vec<&str> = text
        .split("\n\n")
        .filter_map(|e| e.lines().find_map(|l| l.strip_prefix("data: ")))
        .collect();
    let last: Value = sonic_rs::from_str(data.last().unwrap()).unwrap();
    assert!(last["error"]["message"].as_str().is_some(), "{}: {text}", k.kind);
    assert!(!text.contains("[DONE]"), "{}: {text}", k.kind);
    assert!(!text.contains("\"finish_reason\":\"stop\""), "{}: {text}", k.kind);
}
