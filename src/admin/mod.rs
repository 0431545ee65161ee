//! The admin API (`/admin/*`, DESIGN 1.3): reload, request logs, usage stats, live status,
//! the key pool (`keys`) and the dashboard (`GET /admin/`, `assets`). Off (404) unless
//! `server.admin_key` or `server.admin_user` + `admin_password` is set; every call but the
//! login page, its files and the login itself needs the admin key as a bearer token or a
//! dashboard session (`auth`).
//! Invariant: nothing here touches storage or the config file on a worker: the work runs on the
//! control thread (`gateway::commands`), and the worker only awaits the reply.

mod assets;
mod auth;
mod keys;
pub mod sessions;
mod time;

use bytes::Bytes;

use crate::codec::head::{Method, RequestHead};
use crate::gateway::commands::{Command, Reply};
use crate::gateway::Gateway;
use crate::server::{Request, Responder};
use crate::storage::requests::LogFilter;
use crate::storage::rollups::{GroupBy, Period};

pub use sessions::AdminState;

/// An admin answer: status, body, its content type and extra headers (cookies, caching).
pub struct AdminAnswer {
    pub status: u16,
    pub body: Bytes,
    pub content_type: &'static str,
    pub headers: Vec<(&'static str, String)>,
}

/// Handles one `/admin` or `/admin/*` request. `None` = the admin API is off (the caller
/// answers 404).
pub async fn handle(core: &crate::proxy::Core, req: &Request) -> Option<AdminAnswer> {
    let gateway: &Gateway = &core.gateway;
    let body = req.body.to_bytes();
    let body: &[u8] = &body;
    let generation = gateway.current();
    let server = &generation.config.server;
    if !server.admin_enabled() {
        return None;
    }
    // Login and key bodies are parsed by recursive parsers: bound their nesting first (issue 12
    // item 1; `/admin/login` needs no key, so this is reachable by anyone).
    if let Err(e) = crate::codec::check_depth(body, server.max_json_depth) {
        return Some(error(400, &format!("the body {e}")));
    }
    let head = &req.head;
    let path = head.path();
    match (head.method, path) {
        (Method::Get | Method::Head, "/admin") => return Some(redirect("/admin/")),
        (Method::Get | Method::Head, "/admin/") => return Some(file(head, &assets::INDEX)),
        (Method::Get | Method::Head, _) if path.starts_with("/admin/assets/") => {
            let name = &path["/admin/assets/".len()..];
            return Some(match assets::find(name) {
                Some(asset) => file(head, asset),
                None => error(404, &format!("no dashboard file {name}")),
            });
        }
        (Method::Post, "/admin/login") => return Some(auth::login(&gateway.admin, server, head, body, req.peer.ip())),
        _ => {}
    }
    let caller = match auth::check(&gateway.admin, server, head) {
        Ok(caller) => caller,
        Err(answer) => return Some(answer),
    };
    let query = Query::parse(head.query().unwrap_or(""));
    let command = match (head.method, path) {
        (Method::Post, "/admin/logout") => return Some(auth::logout(&caller, &gateway.admin)),
        (Method::Get, "/admin/session") => return Some(auth::session_info(&caller, &gateway.admin)),
        (Method::Get, "/admin/status") => {
            let body = crate::proxy::status_json(&generation, None, gateway.cluster.as_deref());
            return Some(json_bytes(200, body));
        }
        (Method::Post, "/admin/reload") => Command::Reload,
        (Method::Get, "/admin/logs") => match logs_command(&query) {
            Ok(c) => c,
            Err(message) => return Some(error(400, &message)),
        },
        (Method::Delete, "/admin/logs") => Command::DeleteLogs,
        (Method::Get, "/admin/keys") => return Some(keys::list(gateway)),
        (Method::Get, "/admin/keys/export") => return Some(keys::export(gateway)),
        (Method::Post, "/admin/keys/validate") => return Some(keys::validate(core, body).await),
        (Method::Post, "/admin/keys") => match keys::add(gateway, body) {
            Ok(c) => c,
            Err(answer) => return Some(answer),
        },
        (Method::Delete, "/admin/keys") => match keys::remove(gateway, &query, body) {
            Ok(c) => c,
            Err(answer) => return Some(answer),
        },
        (Method::Get, "/admin/stats") => match stats_command(&query) {
            Ok(c) => c,
            Err(message) => return Some(error(400, &message)),
        },
        (Method::Get, "/admin/stats/overview") => match range(&query) {
            Ok((since_ms, until_ms)) => Command::Overview { since_ms, until_ms },
            Err(message) => return Some(error(400, &message)),
        },
        (_, path) => return Some(error(404, &format!("no admin endpoint {path} for this method"))),
    };
    if matches!(command, Command::Stats { .. } | Command::Overview { .. }) {
        match query.get("scope").unwrap_or("instance") {
            "instance" => {}
            "cluster" => {
                let Some(cluster) = gateway.cluster.as_deref() else {
                    return Some(error(
                        400,
                        "scope=cluster needs [cluster] (many instances sharing a Redis)",
                    ));
                };
                if generation
                    .config
                    .cluster
                    .as_ref()
                    .is_some_and(|c| c.stats_ttl.is_zero())
                {
                    let why = "scope=cluster: cluster.stats_ttl_hours = 0, the fleet's stats are not published";
                    return Some(error(400, why));
                }
                return Some(answer(cluster.fleet_query(command).await));
            }
            other => return Some(error(400, &format!("scope must be instance or cluster, got {other:?}"))),
        }
    }
    Some(answer(gateway.commands.call(command).await))
}

/// Sends an admin answer with its request id and the dashboard's security headers.
pub async fn send(res: &mut Responder<'_>, answer: AdminAnswer, request_id: &[u8]) -> std::io::Result<()> {
    let mut headers: Vec<(&str, &[u8])> = Vec::with_capacity(8 + answer.headers.len());
    headers.push(("content-type", answer.content_type.as_bytes()));
    headers.push(("x-request-id", request_id));
    headers.extend(assets::SECURITY_HEADERS);
    if !answer.headers.iter().any(|(n, _)| *n == "cache-control") {
        headers.push(("cache-control", b"no-store"));
    }
    headers.extend(answer.headers.iter().map(|(n, v)| (*n, v.as_bytes())));
    res.send(answer.status, &headers, answer.body).await
}

fn answer(reply: Reply) -> AdminAnswer {
    match reply {
        Ok(body) => json_bytes(200, body),
        Err((status, message)) => error(status, &message),
    }
}

fn json_bytes(status: u16, body: Vec<u8>) -> AdminAnswer {
    AdminAnswer {
        status,
        body: Bytes::from(body),
        content_type: "application/json",
        headers: Vec::new(),
    }
}

fn json<T: serde::Serialize>(status: u16, value: &T) -> AdminAnswer {
    match sonic_rs::to_vec(value) {
        Ok(body) => json_bytes(status, body),
        Err(e) => error(500, &format!("cannot encode the answer: {e}")),
    }
}

fn error(status: u16, message: &str) -> AdminAnswer {
    json_bytes(status, crate::server::error_body(message, "admin_error"))
}

fn redirect(to: &'static str) -> AdminAnswer {
    let mut answer = json_bytes(308, Vec::new());
    answer.headers.push(("location", to.to_owned()));
    answer
}

/// A dashboard file: revalidated on every use (`no-cache` + ETag), so an upgraded binary's
/// files are picked up at once and unchanged ones cost a 304.
fn file(head: &RequestHead, asset: &'static assets::Asset) -> AdminAnswer {
    let etag = assets::etag(asset);
    let fresh = head.header("if-none-match").is_some_and(|v| v == etag.as_bytes());
    let mut answer = AdminAnswer {
        status: if fresh { 304 } else { 200 },
        body: if fresh {
            Bytes::new()
        } else {
            Bytes::from_static(asset.body.as_bytes())
        },
        content_type: asset.content_type,
        headers: vec![("cache-control", "no-cache".to_owned())],
    };
    answer.headers.push(("etag", etag));
    answer
}

struct Query(Vec<(String, String)>);

impl Query {
    fn parse(raw: &str) -> Query {
        Query(
            form_urlencoded::parse(raw.as_bytes())
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect(),
        )
    }

    /// A non-empty value for `name`.
    fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, v)| k == name && !v.is_empty())
            .map(|(_, v)| v.as_str())
    }

    fn int(&self, name: &str, default: i64) -> Result<i64, String> {
        match self.get(name) {
            None => Ok(default),
            Some(v) => v.parse().map_err(|_| format!("{name} must be an integer, got {v:?}")),
        }
    }
}

fn range(query: &Query) -> Result<(Option<i64>, Option<i64>), String> {
    let at = |name: &str| match query.get(name) {
        None => Ok(None),
        Some(v) => time::parse_instant_ms(v)
            .map(Some)
            .ok_or_else(|| format!("{name} must be Unix seconds, Unix ms or a date like 2026-01-31T12:00:00Z")),
    };
    Ok((at("since")?, at("until")?))
}

fn logs_command(query: &Query) -> Result<Command, String> {
    let (since_ms, until_ms) = range(query)?;
    let status = match query.get("status") {
        None => None,
        Some(_) => Some(query.int("status", 0)?),
    };
    let filter = LogFilter {
        model: query.get("model").map(str::to_owned),
        client: query.get("client").map(str::to_owned),
        provider: query.get("provider").map(str::to_owned),
        status,
        since_ms,
        until_ms,
    };
    Ok(Command::Logs {
        filter,
        limit: query.int("limit", 50)?,
        offset: query.int("offset", 0)?,
    })
}

fn stats_command(query: &Query) -> Result<Command, String> {
    let period = query.get("period").unwrap_or("day");
    let period = Period::parse(period).ok_or_else(|| format!("period must be hour, day or month, got {period:?}"))?;
    let group = query.get("group_by").unwrap_or("model");
    let group = GroupBy::parse(group)
        .ok_or_else(|| format!("group_by must be model, provider, key or client, got {group:?}"))?;
    let (since_ms, until_ms) = range(query)?;
    Ok(Command::Stats {
        period,
        group,
        since_ms,
        until_ms,
    })
}
