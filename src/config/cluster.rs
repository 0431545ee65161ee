//! `[cluster]`: many rotor instances sharing limit windows, key health and the key pool
//! through Redis (DESIGN 1.4 "Many instances, one gateway"). File struct -> compiled `Cluster`.
//! Invariant: a compiled `Cluster` has a parseable `redis://` or `rediss://` URL with its
//! password resolved (never printed: `Debug` masks it), and every duration is positive.

use std::time::Duration;

use serde::Deserialize;

use super::compile::one_of;
use super::secret::{Resolver, Secret};
use super::ConfigError;

#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterConfig {
    /// `redis://host:port/db` or `rediss://` (TLS); may be a secret reference (`env:`, `file:`).
    pub redis_url: String,
    /// Redis AUTH user (ACL); absent = the URL's, or none.
    pub username: Option<String>,
    /// Redis AUTH password, a secret (`env:NAME`, `file:PATH` or literal); absent = the URL's.
    pub password: Option<String>,
    /// This instance's name in the fleet; "" = host name + ":" + the listen port.
    pub instance_id: String,
    /// `local` (fall back to local windows of limit / live instances) | `refuse` (503).
    pub on_redis_down: String,
    /// Prefix of every Redis key rotor writes (fleets sharing one Redis use different ones).
    pub key_prefix: String,
    /// How long a lease of window slots lives before its unused slots go back.
    pub lease_ms: u64,
    /// The longest a request waits for a lease before it is answered 429.
    pub lease_wait_ms: u64,
    /// Deadline of one Redis call (connect, read, write).
    pub redis_timeout_ms: u64,
    /// How often each instance polls shared key health and key-pool events.
    pub sync_ms: u64,
    /// Heartbeat period; an instance silent for 3 periods is no longer live.
    pub heartbeat_ms: u64,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            redis_url: String::new(),
            username: None,
            password: None,
            instance_id: String::new(),
            on_redis_down: "local".into(),
            key_prefix: "rotor".into(),
            lease_ms: 2_000,
            lease_wait_ms: 250,
            redis_timeout_ms: 250,
            sync_ms: 100,
            heartbeat_ms: 1_000,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnRedisDown {
    /// Keep proxying with local windows of limit / live instances.
    Local,
    /// Answer limited requests 503 until Redis is back.
    Refuse,
}

/// The compiled `[cluster]` section.
#[derive(Debug, Clone)]
pub struct Cluster {
    /// The URL with any password removed (shown in logs as is).
    pub redis_url: String,
    pub tls: bool,
    pub username: Option<String>,
    pub password: Option<Secret>,
    pub instance_id: String,
    pub on_redis_down: OnRedisDown,
    pub key_prefix: String,
    pub lease: Duration,
    pub lease_wait: Duration,
    pub redis_timeout: Duration,
    pub sync: Duration,
    pub heartbeat: Duration,
}

const ON_DOWN: &[(&str, OnRedisDown)] = &[("local", OnRedisDown::Local), ("refuse", OnRedisDown::Refuse)];

pub(super) fn cluster(
    c: Option<ClusterConfig>,
    listen_port: u16,
    r: &Resolver<'_>,
) -> Result<Option<Cluster>, ConfigError> {
    let Some(c) = c else { return Ok(None) };
    if c.redis_url.is_empty() {
        return Err(ConfigError::at(
            "cluster.redis_url",
            "is required in [cluster] (redis://host:6379 or rediss://host:6380); leave [cluster] out to run alone",
        ));
    }
    let raw = r.secret(&c.redis_url, "cluster.redis_url")?;
    let (redis_url, tls, url_user, url_password) = split_url(raw.expose())?;
    let password = match c.password.as_deref() {
        None | Some("") => url_password.map(Secret::new),
        Some(p) => Some(r.secret(p, "cluster.password")?),
    };
    let username = c.username.filter(|u| !u.is_empty()).or(url_user);
    let instance_id = match c.instance_id.trim() {
        "" => format!("{}:{listen_port}", host_name()),
        id if id.len() > 128 || id.chars().any(|ch| ch.is_control() || ch.is_whitespace()) => {
            return Err(ConfigError::at(
                "cluster.instance_id",
                "must be at most 128 characters without whitespace or control characters",
            ))
        }
        id => id.to_owned(),
    };
    if c.key_prefix.is_empty() || c.key_prefix.chars().any(|ch| ch.is_control() || ch.is_whitespace()) {
        return Err(ConfigError::at(
            "cluster.key_prefix",
            "must be non-empty, without whitespace or control characters",
        ));
    }
    let ms = |v: u64, path: &str, min: u64, max: u64| {
        if v < min || v > max {
            return Err(ConfigError::at(
                path,
                format!("must be between {min} and {max} (milliseconds), got {v}"),
            ));
        }
        Ok(Duration::from_millis(v))
    };
    Ok(Some(Cluster {
        redis_url,
        tls,
        username,
        password,
        instance_id,
        on_redis_down: one_of(&c.on_redis_down, ON_DOWN, "cluster.on_redis_down")?,
        key_prefix: c.key_prefix,
        lease: ms(c.lease_ms, "cluster.lease_ms", 100, 60_000)?,
        lease_wait: ms(c.lease_wait_ms, "cluster.lease_wait_ms", 0, 10_000)?,
        redis_timeout: ms(c.redis_timeout_ms, "cluster.redis_timeout_ms", 10, 10_000)?,
        sync: ms(c.sync_ms, "cluster.sync_ms", 10, 10_000)?,
        heartbeat: ms(c.heartbeat_ms, "cluster.heartbeat_ms", 100, 60_000)?,
    }))
}

/// `(url without password, tls, user, password)`; errors never quote the URL (it may hold one).
fn split_url(raw: &str) -> Result<(String, bool, Option<String>, Option<String>), ConfigError> {
    let bad = |why: &str| ConfigError::at("cluster.redis_url", why.to_owned());
    let (tls, rest) = if let Some(rest) = raw.strip_prefix("rediss://") {
        (true, rest)
    } else if let Some(rest) = raw.strip_prefix("redis://") {
        (false, rest)
    } else {
        return Err(bad("must start with redis:// or rediss:// (TLS)"));
    };
    let (authority, path) = rest.split_once('/').map_or((rest, ""), |(a, p)| (a, p));
    let (userinfo, host) = match authority.rsplit_once('@') {
        Some((u, h)) => (Some(u), h),
        None => (None, authority),
    };
    if host.is_empty() {
        return Err(bad("has no host (redis://host:6379)"));
    }
    if !path.is_empty() && path.parse::<u32>().is_err() {
        return Err(bad("the path must be a database number (redis://host:6379/0)"));
    }
    let (user, password) = match userinfo {
        None => (None, None),
        Some(info) => match info.split_once(':') {
            Some((u, p)) => (
                (!u.is_empty()).then(|| u.to_owned()),
                (!p.is_empty()).then(|| p.to_owned()),
            ),
            None => ((!info.is_empty()).then(|| info.to_owned()), None),
        },
    };
    let scheme = if tls { "rediss" } else { "redis" };
    let clean = if path.is_empty() {
        format!("{scheme}://{host}")
    } else {
        format!("{scheme}://{host}/{path}")
    };
    redis::Client::open(clean.as_str()).map_err(|_| bad("is not a valid Redis URL (redis://host:port/db)"))?;
    Ok((clean, tls, user, password))
}

/// The machine's host name ("localhost" when it cannot be read).
fn host_name() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its whole length; gethostname writes at most that.
    #[allow(unsafe_code)]
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return "localhost".into();
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    match std::str::from_utf8(&buf[..end]) {
        Ok(name) if !name.is_empty() => name.to_owned(),
        _ => "localhost".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{parse_str_with_env, ConfigSource};

    fn parse(cluster: &str) -> Result<crate::config::Config, String> {
        let text = format!(
            "[server]\nlisten = \"127.0.0.1:8181\"\n[[providers]]\nname = \"p\"\nkind = \"openai\"\nbase_url = \"http://127.0.0.1:9/v1\"\nkeys = [\"sk-test-0001\"]\n[cluster]\n{cluster}\n"
        );
        let env = |name: &str| (name == "REDIS_PASSWORD").then(|| "pw-from-env-1234".to_owned());
        parse_str_with_env(&text, ConfigSource::Environment, &env).map_err(|e| e.0)
    }

    #[test]
    fn the_documented_section_parses_with_every_key() {
        let example =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config/rotor.example.toml")).unwrap();
        let section: Vec<String> = example
            .lines()
            .skip_while(|l| !l.starts_with("# [cluster]"))
            .skip(1)
            .take_while(|l| l.starts_with('#'))
            .map(|l| l.trim_start_matches('#').to_owned())
            .collect();
        assert!(section.len() >= 11, "{section:?}");
        let c = parse(&section.join("\n")).unwrap().cluster.unwrap();
        assert_eq!(c.redis_url, "redis://127.0.0.1:6379/0");
        assert_eq!(c.password.as_ref().map(Secret::expose), Some("pw-from-env-1234"));
        assert_eq!(c.on_redis_down, OnRedisDown::Local);
        assert!(c.instance_id.ends_with(":8181"), "{}", c.instance_id);
        assert_eq!((c.lease.as_millis(), c.lease_wait.as_millis()), (2000, 250));
        assert!(!format!("{c:?}").contains("pw-from-env"), "Debug masks the password");
    }

    #[test]
    fn bad_values_are_refused_with_their_key_path() {
        for (text, path) in [
            ("", "cluster.redis_url"),
            ("redis_url = \"http://h:1\"", "cluster.redis_url"),
            (
                "redis_url = \"redis://h:1\"\non_redis_down = \"ignore\"",
                "cluster.on_redis_down",
            ),
            (
                "redis_url = \"redis://h:1\"\npassword = \"env:NOPE\"",
                "cluster.password",
            ),
            ("redis_url = \"redis://h:1\"\nlease_ms = 5", "cluster.lease_ms"),
            (
                "redis_url = \"redis://h:1\"\ninstance_id = \"a b\"",
                "cluster.instance_id",
            ),
            ("redis_url = \"redis://h:1\"\nkey_prefix = \"\"", "cluster.key_prefix"),
            ("redis_url = \"redis://h:1\"\nredis_timout_ms = 5", "redis_timout_ms"),
        ] {
            let err = parse(text).unwrap_err();
            assert!(err.contains(path), "{text}: {err}");
        }
        let c = parse(
            "redis_url = \"rediss://:secret-pw@cache:6380\"\ninstance_id = \"edge-1\"\non_redis_down = \"refuse\"",
        )
        .unwrap()
        .cluster
        .unwrap();
        assert!(c.tls && c.redis_url == "rediss://cache:6380" && c.instance_id == "edge-1");
        assert_eq!(c.password.map(|p| p.expose().to_owned()).as_deref(), Some("secret-pw"));
        assert_eq!(c.on_redis_down, OnRedisDown::Refuse);
    }

    #[test]
    fn urls_split_off_their_password_and_bad_ones_name_the_key() {
        let (url, tls, user, pass) = split_url("rediss://app:s3cret@cache:6380/2").unwrap();
        assert_eq!((url.as_str(), tls), ("rediss://cache:6380/2", true));
        assert_eq!((user.as_deref(), pass.as_deref()), (Some("app"), Some("s3cret")));
        let (url, tls, _, pass) = split_url("redis://127.0.0.1:6379").unwrap();
        assert_eq!((url.as_str(), tls, pass), ("redis://127.0.0.1:6379", false, None));
        for bad in ["http://x:1", "redis://", "redis://h:1/x", "redis://u:hunter2@h:1/x"] {
            let err = split_url(bad).unwrap_err().0;
            assert!(err.contains("cluster.redis_url"), "{err}");
            assert!(!err.contains("hunter2"), "{err}");
        }
    }
}
