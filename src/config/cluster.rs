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
    /// `rediss://` with a private CA: PEM roots trusted for Redis (on top of the public ones).
    pub tls_ca_file: String,
    /// `rediss://` with client certificates (mutual TLS): PEM certificate chain and key.
    pub tls_cert_file: String,
    pub tls_key_file: String,
    /// Hours the fleet's stats rollups are kept in Redis (0 = not published).
    pub stats_ttl_hours: u64,
    /// Label sets (model x provider x key x client x status) per published minute or hour.
    pub stats_max_cells: u64,
    /// `[cache]` on: how long a local miss waits for Redis before going upstream (0 = the
    /// cache is not shared).
    pub cache_wait_ms: u64,
    /// Answers larger than this are kept locally only.
    pub cache_max_entry_bytes: u64,
    /// Bound of the shared cache in Redis: entries, and their bytes.
    pub cache_max_entries: u64,
    pub cache_max_bytes: u64,
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
            tls_ca_file: String::new(),
            tls_cert_file: String::new(),
            tls_key_file: String::new(),
            stats_ttl_hours: 168,
            stats_max_cells: 2_000,
            cache_wait_ms: 20,
            cache_max_entry_bytes: 256 << 10,
            cache_max_entries: 10_000,
            cache_max_bytes: 64 << 20,
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
    /// Extra TLS material for `rediss://` (read at compile time, so `rotor check` sees it).
    pub tls_files: TlsFiles,
    /// Zero = stats are not published.
    pub stats_ttl: Duration,
    pub stats_max_cells: u64,
    /// Zero = the response cache is not shared.
    pub cache_wait: Duration,
    pub cache_max_entry_bytes: u64,
    pub cache_max_entries: u64,
    pub cache_max_bytes: u64,
}

/// PEM bytes of `cluster.tls_ca_file` and `tls_cert_file` + `tls_key_file`.
#[derive(Clone, Default)]
pub struct TlsFiles {
    pub ca: Option<Vec<u8>>,
    /// (certificate chain, private key).
    pub client: Option<(Vec<u8>, Vec<u8>)>,
}

impl std::fmt::Debug for TlsFiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key's bytes.
        f.debug_struct("TlsFiles")
            .field("ca", &self.ca.is_some())
            .field("client", &self.client.is_some())
            .finish()
    }
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
    let tls_files = tls_files(&c, tls, r)?;
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
        tls_files,
        stats_ttl: Duration::from_secs(3_600 * within(c.stats_ttl_hours, "cluster.stats_ttl_hours", 0, 8_784)?),
        stats_max_cells: within(c.stats_max_cells, "cluster.stats_max_cells", 10, 1_000_000)?,
        cache_wait: ms(c.cache_wait_ms, "cluster.cache_wait_ms", 0, 1_000)?,
        cache_max_entry_bytes: within(
            c.cache_max_entry_bytes,
            "cluster.cache_max_entry_bytes",
            1_024,
            16 << 20,
        )?,
        cache_max_entries: within(c.cache_max_entries, "cluster.cache_max_entries", 1, 10_000_000)?,
        cache_max_bytes: within(
            c.cache_max_bytes,
            "cluster.cache_max_bytes",
            c.cache_max_entry_bytes,
            64 << 30,
        )?,
    }))
}

fn within(v: u64, path: &str, min: u64, max: u64) -> Result<u64, ConfigError> {
    if v < min || v > max {
        return Err(ConfigError::at(
            path,
            format!("must be between {min} and {max}, got {v}"),
        ));
    }
    Ok(v)
}

/// Reads the TLS files now: an unreadable or empty one is refused with its key path.
fn tls_files(c: &ClusterConfig, tls: bool, r: &Resolver<'_>) -> Result<TlsFiles, ConfigError> {
    let read = |raw: &str, path: &str, what: &str| -> Result<Option<Vec<u8>>, ConfigError> {
        if raw.is_empty() {
            return Ok(None);
        }
        if !tls {
            return Err(ConfigError::at(path, "needs a rediss:// (TLS) cluster.redis_url"));
        }
        let file = r.path(raw);
        let bytes = std::fs::read(&file)
            .map_err(|e| ConfigError::at(path, format!("{} is not readable: {e}", file.display())))?;
        if !pem_holds(&bytes, what) {
            return Err(ConfigError::at(path, format!("{} holds no PEM {what}", file.display())));
        }
        Ok(Some(bytes))
    };
    let ca = read(&c.tls_ca_file, "cluster.tls_ca_file", "certificate")?;
    let cert = read(&c.tls_cert_file, "cluster.tls_cert_file", "certificate")?;
    let key = read(&c.tls_key_file, "cluster.tls_key_file", "private key")?;
    let client = match (cert, key) {
        (Some(cert), Some(key)) => Some((cert, key)),
        (None, None) => None,
        (Some(_), None) => {
            return Err(ConfigError::at(
                "cluster.tls_key_file",
                "is required with tls_cert_file",
            ))
        }
        (None, Some(_)) => {
            return Err(ConfigError::at(
                "cluster.tls_cert_file",
                "is required with tls_key_file",
            ))
        }
    };
    Ok(TlsFiles { ca, client })
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

/// Whether `bytes` parse as PEM certificates (at least one, all valid) or a private key.
fn pem_holds(bytes: &[u8], what: &str) -> bool {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    if what == "private key" {
        return PrivateKeyDer::from_pem_slice(bytes).is_ok();
    }
    let certs: Result<Vec<_>, _> = CertificateDer::pem_slice_iter(bytes).collect();
    certs.is_ok_and(|c| !c.is_empty())
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
    fn tls_files_are_read_now_and_bad_ones_are_refused_with_their_key_path() {
        let dir = tempfile::tempdir().unwrap();
        let pem = dir.path().join("ca.pem");
        let junk = dir.path().join("junk.pem");
        std::fs::write(&junk, "not a certificate").unwrap();
        let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
        std::fs::write(&pem, cert.cert.pem()).unwrap();
        let key = dir.path().join("key.pem");
        std::fs::write(&key, cert.key_pair.serialize_pem()).unwrap();
        let tls = |extra: &str| parse(&format!("redis_url = \"rediss://cache:6380\"\n{extra}"));
        let ok = tls(&format!(
            "tls_ca_file = \"{}\"\ntls_cert_file = \"{}\"\ntls_key_file = \"{}\"",
            pem.display(),
            pem.display(),
            key.display()
        ))
        .unwrap()
        .cluster
        .unwrap();
        assert!(ok.tls_files.ca.is_some() && ok.tls_files.client.is_some());
        assert!(!format!("{ok:?}").contains("PRIVATE KEY"), "Debug never shows the key");
        let missing = dir.path().join("nope.pem");
        for (extra, path) in [
            (
                format!("tls_ca_file = \"{}\"", missing.display()),
                "cluster.tls_ca_file",
            ),
            (format!("tls_ca_file = \"{}\"", junk.display()), "cluster.tls_ca_file"),
            (format!("tls_cert_file = \"{}\"", pem.display()), "cluster.tls_key_file"),
            (format!("tls_key_file = \"{}\"", pem.display()), "cluster.tls_key_file"),
            ("stats_ttl_hours = 9999".to_owned(), "cluster.stats_ttl_hours"),
            ("cache_wait_ms = 5000".to_owned(), "cluster.cache_wait_ms"),
            ("cache_max_bytes = 10".to_owned(), "cluster.cache_max_bytes"),
            ("stats_max_cells = 1".to_owned(), "cluster.stats_max_cells"),
        ] {
            let err = tls(&extra).unwrap_err();
            assert!(err.contains(path), "{extra}: {err}");
        }
        let plain = parse(&format!(
            "redis_url = \"redis://cache:6379\"\ntls_ca_file = \"{}\"",
            pem.display()
        ))
        .unwrap_err();
        assert!(
            plain.contains("cluster.tls_ca_file") && plain.contains("rediss://"),
            "{plain}"
        );
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
