use super::*;
use crate::codec::head::{parse_request_head, HeadLimits};
use crate::config::{parse_str, ConfigSource};
use crate::providers::prepared::PreparedHeads;

/// `switch` answers as `listed(name, list)` for the list's names in both cases, each with a
/// byte added, its first byte dropped or changed, and for `others`.
fn agrees_with_the_list(switch: fn(&[u8]) -> bool, list: &[&str], others: &[&str]) {
    let mut names: Vec<String> = list.iter().map(|n| n.to_string()).collect();
    names.extend(list.iter().map(|n| n.to_ascii_uppercase()));
    names.extend(list.iter().map(|n| format!("{n}x")));
    names.extend(list.iter().map(|n| n[1..].to_string()));
    names.extend(list.iter().map(|n| format!("z{}", &n[1..])));
    names.extend(others.iter().map(|n| n.to_string()));
    for name in &names {
        assert_eq!(switch(name.as_bytes()), listed(name.as_bytes(), list), "{name}");
    }
}

#[test]
fn not_forwarded_matches_the_list() {
    let others = [
        "",
        "t",
        "tf",
        "hosts",
        "x-api-kez",
        "content-type",
        "accept",
        "user-agent",
        "api-kex",
        "trailers",
    ];
    agrees_with_the_list(not_forwarded, NOT_FORWARDED, &others);
}

#[test]
fn not_returned_matches_the_list() {
    let mut others = vec![
        "",
        "content-type",
        "x-request-id",
        "retry-after",
        "trailers",
        "upgrades",
    ];
    others.extend(NOT_FORWARDED);
    agrees_with_the_list(not_returned, NOT_RETURNED, &others);
}

fn head(raw: &str) -> RequestHead {
    let mut buf = BytesMut::from(raw.as_bytes());
    parse_request_head(&mut buf, &HeadLimits::default()).unwrap().unwrap()
}

/// Differential: the head built from the generation's prepared parts is byte for byte the
/// one the checked writers build, for every kind of auth line and with configured headers,
/// an `extra` header, a `Connection`-named header and the client's own credentials; and on
/// every upstream path, so the prepared POST start is used where it applies (and only
/// there: a query, another method or another path take the checked pieces).
#[test]
fn prepared_head_equals_checked_head() {
    let raw = [
        "POST /v1/chat/completions?a=1&key=rk HTTP/1.1\r\nHost: rotor\r\nContent-Type: application/json\r\nAuthorization: Bearer rk\r\nContent-Length: 2\r\n\r\n",
        "POST /v1/chat/completions HTTP/1.1\r\nHost: rotor\r\nContent-Type: application/json\r\nAuthorization: Bearer rk\r\nContent-Length: 2\r\n\r\n",
        "POST /v1/chat/completions? HTTP/1.1\r\nHost: rotor\r\nx-odd: \"q\" a\tb\r\n\r\n",
        "POST /v1/messages HTTP/1.1\r\nhost: rotor\r\nx-api-key: rk\r\nanthropic-version: 2024-01-01\r\nConnection: x-drop, keep-alive\r\nx-drop: 1\r\nx-keep: 2\r\nX-Fixed: client\r\nTE: trailers\r\n\r\n",
        "PUT /v1/messages HTTP/1.1\r\nhost: rotor\r\n\r\n",
        "GET /v1/models HTTP/1.1\r\nHost: rotor\r\nAccept-Encoding: gzip\r\nx-goog-api-key: rk\r\n\r\n",
    ];
    let paths = [
        "/chat",
        "/chat/completions",
        "/messages",
        "/models/m:generateContent?alt=sse",
        "",
    ];
    let mut fast_used = 0;
    for kind in ["openai", "anthropic", "gemini", "ondemand", "cohere"] {
        let text = format!(
            "[[providers]]\nname = \"p\"\nkind = \"{kind}\"\nbase_url = \"http://127.0.0.1:9/base\"\nkeys = [\"sk-1\", \"sk-2\"]\nheaders = {{ x-fixed = \"conf\", x-org = \"o\" }}\n"
        );
        let config = parse_str(&text, ConfigSource::Environment).unwrap();
        let provider = &config.providers[0];
        let heads = PreparedHeads::for_config(&config);
        let prepared = heads.get(0).expect("prepared");
        for (raw, path) in raw.into_iter().flat_map(|r| paths.map(|p| (r, p))) {
            let head = head(raw);
            for (index, key) in ["sk-1", "sk-2"].into_iter().enumerate() {
                for extra in [None, Some(("x-keep", "adapter"))] {
                    let line = prepared.key_line(index);
                    assert!(line.is_some(), "{kind}: key line prepared");
                    let post = prepared.post_line(index);
                    assert_eq!(post.is_some(), kind != "gemini" && kind != "ondemand", "{kind}");
                    let fast_path = post.is_some() && prepared.post_path == Some(path);
                    fast_used += usize::from(fast_path && raw.starts_with("POST") && !raw.contains('?'));
                    let checked = Auth {
                        key,
                        line: None,
                        post: None,
                    };
                    let fast = Auth { key, line, post };
                    let mut want = BytesMut::new();
                    upstream_request_head(&mut want, &head, provider, None, checked, path, 2, extra).unwrap();
                    // Written behind what the lent buffer holds, as the answer's buffer is.
                    let mut got = BytesMut::from(&b"kept"[..]);
                    upstream_request_head(&mut got, &head, provider, Some(prepared), fast, path, 2, extra).unwrap();
                    assert_eq!(&got.split_to(4)[..], b"kept");
                    assert_eq!(
                        String::from_utf8_lossy(&got),
                        String::from_utf8_lossy(&want),
                        "{kind} {raw:?} {path} {extra:?}"
                    );
                    let text = String::from_utf8_lossy(&got).to_string();
                    assert!(text.contains(key) && !text.contains("rk"), "{text}");
                    assert!(!text.contains("x-drop") && !text.contains("TE:"), "{text}");
                }
            }
        }
    }
    // openai, anthropic and cohere each: 2 raw heads x 2 keys x 2 extras.
    assert_eq!(fast_used, 3 * 2 * 2 * 2, "the prepared start was exercised");
}

/// Every name the client's `Connection` lists stays back, in any case and however long,
/// and only those: a name of the same length but other letters, or one byte longer, goes.
#[test]
fn names_listed_in_connection_are_not_forwarded() {
    let config = parse_str(
        "[[providers]]\nname = \"p\"\nkind = \"openai\"\nbase_url = \"http://h/v1\"\nkeys = [\"k\"]\n",
        ConfigSource::Environment,
    )
    .unwrap();
    let auth = Auth {
        key: "k",
        line: None,
        post: None,
    };
    let long = format!("x-{}", "l".repeat(70));
    let raw = format!(
        "POST /v1/x HTTP/1.1\r\nHost: r\r\nConnection: close, X-Drop ,{long}, te\r\nconnection: x-also\r\nclose: 1\r\nx-drop: 2\r\nx-dro: 3\r\nx-drot: 4\r\n{long}: 5\r\n{long}x: 6\r\nx-ALSO: 7\r\nx-keep: 8\r\n\r\n"
    );
    let head = head(&raw);
    let mut out = BytesMut::new();
    upstream_request_head(&mut out, &head, &config.providers[0], None, auth, "/x", 0, None).unwrap();
    let text = String::from_utf8_lossy(&out).to_string();
    for kept in ["x-dro: 3", "x-drot: 4", &format!("{long}x: 6"), "x-keep: 8"] {
        assert!(text.contains(kept), "{kept} in {text}");
    }
    for dropped in ["close:", "x-drop:", &format!("{long}:"), "x-ALSO", "onnection"] {
        assert!(!text.contains(dropped), "{dropped} in {text}");
    }
}

/// Differential: the client's fields as copied in runs are byte for byte what writing each
/// kept field as `name: value` CRLF gives, on random heads whose lines are written tightly or
/// loosely (no space, two spaces, a tab, trailing blanks), with fields left out between kept
/// ones by tag, by `Connection`, by the adapter's `extra` and by configured headers.
#[test]
fn client_fields_copied_in_runs_equal_field_by_field() {
    // With configured headers and without (then only `Connection` and `extra` keep fields
    // back by name).
    let config = parse_str(
        "[[providers]]\nname = \"p\"\nkind = \"openai\"\nbase_url = \"http://h/v1\"\nkeys = [\"k\"]\nheaders = { x-fixed = \"conf\" }\n\
         [[providers]]\nname = \"q\"\nkind = \"openai\"\nbase_url = \"http://h/v1\"\nkeys = [\"k\"]\n",
        ConfigSource::Environment,
    )
    .unwrap();
    let auth = Auth {
        key: "k",
        line: None,
        post: None,
    };
    let names = [
        "x-a",
        "X-B",
        "content-type",
        "Accept",
        "user-agent",
        "x-fixed",
        "x-keep",
        "TE",
        "x-drop",
        "authorization",
        "Keep-Alive",
        "x-stainless-os",
    ];
    let separators = [": ", ":", ":  ", ":\t", ": \t"];
    let values = ["1", "a b", "v\t", "w ", "\u{e9}", ""];
    let mut rng = fastrand::Rng::with_seed(18);
    let mut copied = 0;
    for _ in 0..3_000 {
        let mut raw = String::from("POST /v1/x HTTP/1.1\r\nHost: r\r\n");
        if rng.bool() {
            raw.push_str(["Connection: x-drop\r\n", "connection: keep-alive, X-A\r\n"][rng.usize(..2)]);
        }
        for _ in 0..rng.usize(0..8) {
            let (name, sep, value) = (
                names[rng.usize(..names.len())],
                separators[rng.usize(..separators.len())],
                values[rng.usize(..values.len())],
            );
            raw.push_str(&format!("{name}{sep}{value}\r\n"));
        }
        raw.push_str("\r\n");
        let head = head(&raw);
        let provider = &config.providers[rng.usize(..2)];
        let extra = rng.bool().then_some(("x-keep", "adapter"));
        let named: Vec<&[u8]> = head
            .headers
            .fields(Field::Connection)
            .flat_map(|v| v.split(|&b| b == b','))
            .map(<[u8]>::trim_ascii)
            .collect();
        let mut want = String::new();
        for h in &head.headers {
            let kept = !listed(h.name, NOT_FORWARDED)
                && !named.iter().any(|n| n.eq_ignore_ascii_case(h.name))
                && !extra.is_some_and(|(n, _)| n.as_bytes().eq_ignore_ascii_case(h.name))
                && !provider
                    .headers
                    .iter()
                    .any(|(n, _)| n.as_bytes().eq_ignore_ascii_case(h.name));
            if kept {
                want.push_str(&format!(
                    "{}: {}\r\n",
                    String::from_utf8_lossy(h.name),
                    String::from_utf8_lossy(h.value)
                ));
            }
        }
        copied += usize::from(!want.is_empty());
        let mut out = BytesMut::new();
        upstream_request_head(&mut out, &head, provider, None, auth, "/x", 2, extra).unwrap();
        let text = String::from_utf8_lossy(&out).to_string();
        let start = text.find("content-length: 2\r\n").unwrap() + "content-length: 2\r\n".len();
        let fixed = if provider.headers.is_empty() {
            ""
        } else {
            "x-fixed: conf\r\n"
        };
        let tail = format!("{want}{fixed}\r\n");
        assert_eq!(&text[start..], tail, "{raw:?}");
    }
    assert!(copied > 1_000, "enough heads kept fields to mean something: {copied}");
}

/// Fields rotor did not parse are still checked: a head whose fields were replaced by ones
/// holding a line break, a NUL or a bad name is refused whole, with a tagged name or not.
#[test]
fn fields_not_parsed_are_still_checked() {
    let config = parse_str(
        "[[providers]]\nname = \"p\"\nkind = \"openai\"\nbase_url = \"http://h/v1\"\nkeys = [\"k\"]\n",
        ConfigSource::Environment,
    )
    .unwrap();
    let auth = Auth {
        key: "k",
        line: None,
        post: None,
    };
    let write = |head: &RequestHead| {
        let mut out = BytesMut::from(&b"kept"[..]);
        let written = upstream_request_head(&mut out, head, &config.providers[0], None, auth, "/x", 0, None);
        (written, out)
    };
    let mut head = head("POST /v1/x HTTP/1.1\r\nHost: r\r\nx-a: b\r\n\r\n");
    assert!(write(&head).0.is_ok(), "the parsed head goes out");
    for pair in [
        ("x-a", "b\r\nx-evil: 1"),
        ("content-type", "a\nb"),
        ("x-a", "a\0b"),
        ("x a", "b"),
        ("x:a", "b"),
    ] {
        head.headers = crate::codec::Headers::from_pairs(&[pair]);
        let (written, out) = write(&head);
        assert!(written.is_err(), "{pair:?}");
        assert_eq!(&out[..], b"kept", "{pair:?}");
    }
    head.headers = crate::codec::Headers::from_pairs(&[("x-a", "b c\t\u{e9}")]);
    let (written, out) = write(&head);
    assert!(
        written.is_ok() && out.ends_with(b"x-a: b c\t\xc3\xa9\r\n\r\n"),
        "{out:?}"
    );
}

/// A secret the writer refuses gets no prepared line, so the request still takes the
/// checked path and is refused there.
#[test]
fn refused_secret_is_not_prepared() {
    let text = "[[providers]]\nname = \"p\"\nkind = \"openai\"\nbase_url = \"http://h/v1\"\nkeys = [\"ok\"]\n";
    let mut config = parse_str(text, ConfigSource::Environment).unwrap();
    let p = std::sync::Arc::make_mut(&mut config.providers[0]);
    let mut bad = p.keys[0].clone();
    bad.secret = crate::config::Secret::new("a\r\nx-evil: 1".to_owned());
    p.keys.push(bad);
    let heads = PreparedHeads::for_config(&config);
    let prepared = heads.get(0).unwrap();
    assert_eq!(prepared.key_line(0), Some(&b"authorization: Bearer ok\r\n"[..]));
    assert_eq!(prepared.key_line(1), None);
    assert_eq!(prepared.key_line(2), None);
    let head = head("POST /v1/x HTTP/1.1\r\nHost: r\r\n\r\n");
    let auth = Auth {
        key: "a\r\nx-evil: 1",
        line: prepared.key_line(1),
        post: prepared.post_line(1),
    };
    assert_eq!(auth.post, None, "no prepared start for a refused secret");
    let mut out = BytesMut::from(&b"kept"[..]);
    let refused = upstream_request_head(
        &mut out,
        &head,
        &config.providers[0],
        Some(prepared),
        auth,
        "/x",
        0,
        None,
    );
    assert!(refused.is_err());
    assert_eq!(&out[..], b"kept", "a refused head leaves the buffer as it was");
}

/// `bearer_token` takes exactly what the byte-wise rule it replaced took (more than seven
/// bytes, the first seven `bearer ` in any case): every case of the scheme, and every byte
/// value at each of the first eight places of a few values.
#[test]
fn bearer_token_agrees_with_the_byte_wise_rule() {
    fn old(v: &[u8]) -> Option<&[u8]> {
        (v.len() > 7 && v[..7].eq_ignore_ascii_case(b"bearer ")).then(|| &v[7..])
    }
    let mut values: Vec<Vec<u8>> = Vec::new();
    for case in 0..64u32 {
        let mut v = b"bearer key-1".to_vec();
        for (i, b) in v.iter_mut().take(6).enumerate() {
            if case & (1 << i) != 0 {
                b.make_ascii_uppercase();
            }
        }
        values.push(v);
    }
    for base in [&b"Bearer k"[..], b"bearer sk-123", b"BEARER  x"] {
        for at in 0..8 {
            for byte in 0..=255u8 {
                let mut v = base.to_vec();
                v[at] = byte;
                values.push(v);
            }
        }
    }
    for short in [&b""[..], b"Bearer", b"Bearer ", b"bearer\tk", b"Basic abc"] {
        values.push(short.to_vec());
    }
    for v in &values {
        assert_eq!(bearer_token(v), old(v), "{:?}", String::from_utf8_lossy(v));
    }
}

/// The client's key from each place it may come, the scheme in any case.
#[test]
fn client_key_from_each_place() {
    let key = |fields: &str, target: &str| {
        let raw = format!("POST {target} HTTP/1.1\r\nHost: r\r\n{fields}\r\n");
        let mut buf = bytes::BytesMut::from(raw.as_str());
        let head = parse_request_head(&mut buf, &HeadLimits::default()).unwrap().unwrap();
        client_key(&head).map(|k| String::from_utf8_lossy(k).into_owned())
    };
    let k = |s: &str| Some(s.to_string());
    assert_eq!(key("Authorization: Bearer sk-1\r\n", "/v1/chat/completions"), k("sk-1"));
    assert_eq!(key("authorization: bEaReR   sk-2 \r\n", "/"), k("sk-2"));
    assert_eq!(key("Authorization: Bearer\r\nx-api-key: a\r\n", "/"), k("a"));
    assert_eq!(key("Authorization: Basic abc\r\nx-goog-api-key: g\r\n", "/"), k("g"));
    assert_eq!(key("", "/v1beta/models/m:generateContent?alt=sse&key=q"), k("q"));
    assert_eq!(key("", "/"), None);
}
