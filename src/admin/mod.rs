//! The admin API (`/admin/*`, DESIGN 1.3): reload, request logs and usage stats. Off (404)
//! unless `server.admin_key` is set; every call needs `Authorization: Bearer <admin_key>`.
//! Invariant: nothing here touches storage or the config file on a worker: the work runs on the
//! control thread (`gateway::commands`), and the worker only awaits the reply.

mod time;

use bytes::Bytes;

use crate::codec::head::{Method, RequestHead};
use crate::gateway::commands::{Command, Reply};
use crate::gateway::Gateway;
use crate::server::Responder;
use crate::storage::requests::{GroupBy, LogFilter, Period};

/// An admin answer: status and JSON body.
pub struct AdminAnswer {
    pub status: u16,
    pub body: Vec<u8>,
}

/// Handles one `/admin/*` request. `None` = the admin API is off (the caller answers 404).
pub async fn handle(gateway: &Gateway, head: &RequestHead) -> Option<AdminAnswer> {
    let generation = gateway.current();
    let admin_key = generation.config.server.admin_key.as_ref()?;
    let presented = bearer(head);
    if !presented.is_some_and(|k| admin_key.ct_eq(k)) {
        return Some(error(
            401,
            "admin API: missing or wrong admin key (Authorization: Bearer <admin_key>)",
        ));
    }
    let query = Query::parse(head.query().unwrap_or(""));
    let command = match (head.method, head.path()) {
        (Method::Post, "/admin/reload") => Command::Reload,
        (Method::Get, "/admin/logs") => match logs_command(&query) {
            Ok(c) => c,
            Err(message) => return Some(error(400, &message)),
        },
        (Method::Delete, "/admin/logs") => Command::DeleteLogs,
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
    Some(answer(gateway.commands.call(command).await))
}

/// Sends an admin answer with its request id.
pub async fn send(res: &mut Responder<'_>, answer: AdminAnswer, request_id: &[u8]) -> std::io::Result<()> {
    let headers: [(&str, &[u8]); 2] = [("content-type", b"application/json"), ("x-request-id", request_id)];
    res.send(answer.status, &headers, Bytes::from(answer.body)).await
}

fn answer(reply: Reply) -> AdminAnswer {
    match reply {
        Ok(body) => AdminAnswer { status: 200, body },
        Err((status, message)) => error(status, &message),
    }
}

fn error(status: u16, message: &str) -> AdminAnswer {
    AdminAnswer {
        status,
        body: crate::server::error_body(message, "admin_error"),
    }
}

fn bearer(head: &RequestHead) -> Option<&[u8]> {
    let value = head.header("authorization")?.trim_ascii();
    let prefix = value.get(..7)?;
    prefix
        .eq_ignore_ascii_case(b"bearer ")
        .then(|| value.get(7..).unwrap_or_default().trim_ascii())
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
