//! Upstream host names -> addresses, resolved on the control thread only.
//! Invariant: workers never block on DNS: they read the last resolved table (an atomic pointer
//! load) and, on a miss, leave the name for the control thread to resolve on its next tick.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use ahash::{AHashMap, AHashSet};
use arc_swap::ArcSwap;
use parking_lot::Mutex;

type Table = AHashMap<(String, u16), Arc<[SocketAddr]>>;

#[derive(Default)]
pub struct Resolver {
    table: ArcSwap<Table>,
    /// Names a worker asked for that were not in the table.
    missed: Mutex<AHashSet<(String, u16)>>,
}

impl Resolver {
    /// Addresses for `host:port`: IP literals directly, names from the last resolution.
    pub fn lookup(&self, host: &str, port: u16) -> Option<Arc<[SocketAddr]>> {
        if let Ok(ip) = host.parse::<IpAddr>() {
            return Some(Arc::from([SocketAddr::new(ip, port)]));
        }
        let table = self.table.load();
        match table.get(&(host.to_owned(), port)) {
            Some(addrs) => Some(addrs.clone()),
            None => {
                self.missed.lock().insert((host.to_owned(), port));
                None
            }
        }
    }

    /// Whether a worker asked for a name that is not resolved yet.
    pub fn has_misses(&self) -> bool {
        !self.missed.lock().is_empty()
    }

    /// Resolves every name given plus every name workers missed, and swaps the table. Blocking:
    /// control thread (or start-up) only. Names that fail keep their previous addresses.
    pub fn refresh(&self, names: impl IntoIterator<Item = (String, u16)>) -> Vec<String> {
        let mut wanted: AHashSet<(String, u16)> = names.into_iter().collect();
        wanted.extend(self.missed.lock().drain());
        let old = self.table.load_full();
        let mut table = Table::with_capacity(wanted.len());
        let mut failures = Vec::new();
        for (host, port) in wanted {
            if host.parse::<IpAddr>().is_ok() {
                continue;
            }
            match resolve_blocking(&host, port) {
                Ok(addrs) if !addrs.is_empty() => {
                    table.insert((host, port), Arc::from(addrs));
                }
                result => {
                    let why = result
                        .err()
                        .map_or_else(|| "no addresses".to_owned(), |e| e.to_string());
                    failures.push(format!("{host}:{port}: {why}"));
                    if let Some(previous) = old.get(&(host.clone(), port)) {
                        table.insert((host, port), previous.clone());
                    }
                }
            }
        }
        self.table.store(Arc::new(table));
        failures
    }
}

#[allow(clippy::disallowed_methods)] // the one sanctioned blocking resolution: control thread only
fn resolve_blocking(host: &str, port: u16) -> std::io::Result<Vec<SocketAddr>> {
    use std::net::ToSocketAddrs;
    Ok((host, port).to_socket_addrs()?.collect())
}
