//! The cluster thread's one Redis connection: connect with a deadline, every call with a
//! deadline, reconnect with exponential backoff after a failure.
//! Invariant: no call blocks longer than `cluster.redis_timeout_ms` (connect, read and write
//! each), so a dead Redis costs the cluster thread at most that per attempt; errors carry
//! no secret (the URL holds no password, the password is set apart).

use std::time::{Duration, Instant};

use redis::{Client, Connection, ConnectionInfo, IntoConnectionInfo};

use crate::config::cluster::Cluster;

const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

pub struct RedisConn {
    client: Option<Client>,
    conn: Option<Connection>,
    timeout: Duration,
    backoff: Duration,
    next_try: Instant,
}

impl RedisConn {
    pub fn new(cluster: &Cluster) -> Self {
        let client = info(cluster).and_then(|info| client(info, cluster)).ok();
        RedisConn {
            client,
            conn: None,
            timeout: cluster.redis_timeout,
            backoff: BACKOFF_MIN,
            next_try: Instant::now(),
        }
    }

    /// The connection, connecting first when none is open and the backoff allows a try.
    /// `Ok(None)`: still backing off.
    pub fn get(&mut self) -> Result<Option<&mut Connection>, String> {
        if self.conn.is_none() {
            if Instant::now() < self.next_try {
                return Ok(None);
            }
            let Some(client) = &self.client else {
                return Err("the Redis URL cannot be used".into());
            };
            let conn = client.get_connection_with_timeout(self.timeout).and_then(|c| {
                c.set_read_timeout(Some(self.timeout))?;
                c.set_write_timeout(Some(self.timeout))?;
                Ok(c)
            });
            match conn {
                Ok(c) => self.conn = Some(c),
                Err(e) => {
                    self.failed();
                    return Err(format!("cannot connect to Redis: {e}"));
                }
            }
        }
        Ok(self.conn.as_mut())
    }

    /// A call failed: drop the connection and wait before the next try (doubling).
    pub fn failed(&mut self) {
        self.conn = None;
        self.next_try = Instant::now() + self.backoff;
        self.backoff = (self.backoff * 2).min(BACKOFF_MAX);
    }

    /// A call failed on a connection that had worked (Redis restarted, an idle connection
    /// cut): reconnect at once, once; the backoff applies from the next failure.
    pub fn dropped(&mut self) {
        self.conn = None;
        self.next_try = Instant::now();
    }

    /// A call succeeded: the next failure starts the backoff from the bottom again.
    pub fn succeeded(&mut self) {
        self.backoff = BACKOFF_MIN;
    }
}

/// The client, with `cluster.tls_ca_file` / client certificates when set (`rediss://` only).
fn client(info: ConnectionInfo, cluster: &Cluster) -> redis::RedisResult<Client> {
    let files = &cluster.tls_files;
    if files.ca.is_none() && files.client.is_none() {
        return Client::open(info);
    }
    let certificates = redis::TlsCertificates {
        client_tls: files.client.as_ref().map(|(cert, key)| redis::ClientTlsConfig {
            client_cert: cert.clone(),
            client_key: key.clone(),
        }),
        root_cert: files.ca.clone(),
    };
    Client::build_with_tls(info, certificates)
}

fn info(cluster: &Cluster) -> redis::RedisResult<ConnectionInfo> {
    let info = cluster.redis_url.as_str().into_connection_info()?;
    let mut settings = info.redis_settings().clone();
    if let Some(user) = &cluster.username {
        settings = settings.set_username(user);
    }
    if let Some(password) = &cluster.password {
        settings = settings.set_password(password.expose());
    }
    Ok(info.set_redis_settings(settings))
}
