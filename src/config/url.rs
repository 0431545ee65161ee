//! `base_url` -> `BaseUrl`: scheme, host, port, path prefix, and the `Host` header value.
//!
//! Hand-written instead of the `url` crate because we need only these four parts and a strict
//! refusal of everything else (userinfo, query, fragment, non-HTTP schemes), which a general
//! URL parser would accept and normalise quietly. Runs once per (re)load, never per request.
//! Invariant: a `BaseUrl` has a non-empty host, a non-zero port and a path that is empty or
//! starts with `/` and does not end with one, so `path + "/chat/completions"` is always right.

use std::net::Ipv6Addr;

use super::model::{BaseUrl, Scheme};

/// Parses `raw`; the error is the reason only (the caller adds the key path).
pub(crate) fn parse_base_url(raw: &str) -> Result<BaseUrl, String> {
    let (scheme, rest) = split_scheme(raw)?;
    if rest.contains(['?', '#']) {
        return Err(format!(
            "{raw:?}: query (?) and fragment (#) are not allowed in a base URL"
        ));
    }
    let (authority, path) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    if authority.contains('@') {
        return Err(format!(
            "{raw:?}: user info (user@host) is not allowed; put keys in `keys`"
        ));
    }
    let default_port = match scheme {
        Scheme::Http => 80,
        Scheme::Https => 443,
    };
    let (host, port_text, bracketed) = split_host_port(authority, raw)?;
    let port = match port_text {
        None => default_port,
        Some(p) => match p.parse::<u16>() {
            Ok(n) if n != 0 => n,
            _ => return Err(format!("{raw:?}: port {p:?} is not a number in 1..=65535")),
        },
    };
    if let Some(bad) = path.chars().find(|c| c.is_ascii_control() || c.is_whitespace()) {
        return Err(format!("{raw:?}: path contains {bad:?}; percent-encode it"));
    }
    let path = path.trim_end_matches('/').to_string();
    let host_in_header = if bracketed { format!("[{host}]") } else { host.clone() };
    let host_header = if port == default_port {
        host_in_header
    } else {
        format!("{host_in_header}:{port}")
    };
    Ok(BaseUrl {
        scheme,
        host,
        port,
        path,
        host_header,
    })
}

fn split_scheme(raw: &str) -> Result<(Scheme, &str), String> {
    for (prefix, scheme) in [("https://", Scheme::Https), ("http://", Scheme::Http)] {
        // `get`, not indexing: a non-ASCII string may have no char boundary at the prefix end.
        if let (Some(head), Some(rest)) = (raw.get(..prefix.len()), raw.get(prefix.len()..)) {
            if head.eq_ignore_ascii_case(prefix) {
                return Ok((scheme, rest));
            }
        }
    }
    Err(format!("{raw:?}: must start with http:// or https://"))
}

/// Splits `host[:port]` or `[v6][:port]`; the host comes back lowercased, without brackets.
fn split_host_port<'a>(authority: &'a str, raw: &str) -> Result<(String, Option<&'a str>, bool), String> {
    if let Some(inner) = authority.strip_prefix('[') {
        let Some(end) = inner.find(']') else {
            return Err(format!("{raw:?}: unclosed '[' in IPv6 host"));
        };
        let (v6, after) = (&inner[..end], &inner[end + 1..]);
        if v6.parse::<Ipv6Addr>().is_err() {
            return Err(format!("{raw:?}: [{v6}] is not an IPv6 address"));
        }
        let port = match after {
            "" => None,
            _ => match after.strip_prefix(':') {
                Some(p) => Some(p),
                None => return Err(format!("{raw:?}: unexpected {after:?} after the IPv6 host")),
            },
        };
        return Ok((v6.to_ascii_lowercase(), port, true));
    }
    let (host, port) = match authority.split_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (authority, None),
    };
    if host.is_empty() {
        return Err(format!("{raw:?}: host is empty"));
    }
    if let Some(bad) = host
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || "-._".contains(*c)))
    {
        return Err(format!(
            "{raw:?}: host contains {bad:?} (letters, digits, '-', '.', '_' only)"
        ));
    }
    Ok((host.to_ascii_lowercase(), port, false))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(raw: &str) -> BaseUrl {
        parse_base_url(raw).unwrap_or_else(|e| panic!("{raw}: {e}"))
    }

    #[test]
    fn https_default_port_and_path() {
        let u = ok("https://api.openai.com/v1/");
        assert_eq!(u.scheme, Scheme::Https);
        assert_eq!(
            (u.host.as_str(), u.port, u.path.as_str()),
            ("api.openai.com", 443, "/v1")
        );
        assert_eq!(u.host_header, "api.openai.com");
    }

    #[test]
    fn http_with_port_and_no_path() {
        let u = ok("HTTP://127.0.0.1:18080");
        assert_eq!(u.scheme, Scheme::Http);
        assert_eq!((u.host.as_str(), u.port, u.path.as_str()), ("127.0.0.1", 18080, ""));
        assert_eq!(u.host_header, "127.0.0.1:18080");
        assert_eq!(ok("http://h/").path, "");
        assert_eq!(ok("http://h:80/x").host_header, "h", "default port left out of Host");
    }

    #[test]
    fn ipv6_literals() {
        let u = ok("http://[::1]:8080/v1");
        assert_eq!((u.host.as_str(), u.port), ("::1", 8080));
        assert_eq!(u.host_header, "[::1]:8080");
        assert_eq!(ok("https://[2001:DB8::1]").host_header, "[2001:db8::1]");
    }

    #[test]
    fn strict_rejections() {
        for (raw, why) in [
            ("ftp://x", "http:// or https://"),
            ("ééééé", "http:// or https://"),
            ("api.openai.com/v1", "http:// or https://"),
            ("https://user:pw@host/v1", "user info"),
            ("https://host/v1?x=1", "query"),
            ("https://host/v1#frag", "fragment"),
            ("https:///v1", "host is empty"),
            ("https://host:0", "port"),
            ("https://host:99999", "port"),
            ("https://host:abc", "port"),
            ("https://ho st", "host contains"),
            ("http://[::1", "unclosed"),
            ("http://[zz]:1", "IPv6"),
            ("http://[::1]x", "unexpected"),
            ("http://h/a b", "path contains"),
        ] {
            let err = parse_base_url(raw).unwrap_err();
            assert!(err.contains(why), "{raw}: {err}");
        }
    }
}
