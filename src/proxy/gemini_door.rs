//! The Gemini front door on the request path (the protocol itself is `providers::gemini::door`
//! and the `front_*` translators): phase `route` for `/v1beta/*` and for Gemini methods under
//! `/v1/models/`, phase `inspect` (the model and the stream flag come from the path; the body is
//! only bounded, the adapter reads it), and `GET /v1beta/models[/{model}]` (also under `/v1/`
//! when Google's SDK asks, see `lists_models_under_v1`), answered by rotor from its route table
//! in Gemini's shape.
//! Invariant: the door adds no provider-kind branch; which upstream serves a request, and how,
//! is `providers::prepare`'s decision, as for every other door.

use crate::codec::Field;
use bytes::Bytes;
use serde::Serialize;

use super::error::{ErrorKind, ProxyError, Side};
use super::{Endpoint, RequestContext};
use crate::codec::depth::check_depth;
use crate::codec::head::{Method, RequestHead};
use crate::codec::json::Inspection;
use crate::codec::target::percent_decode;
use crate::config::{Client, Route};
use crate::providers::gemini::door::{door_path, is_google_path};
use crate::server::{Request, Responder};

/// Paths the door answers (any other `/v1beta/` path is its 404).
pub(super) fn owns(path: &str) -> bool {
    is_google_path(path)
}

/// The Gemini SDK's `models.list` / `models.get` with its default `api_version` (`v1`): `GET
/// /v1/models[/{model}]`, the paths of OpenAI's model list too. Told apart by how the key comes:
/// Google's `x-goog-api-key` header or `?key=`, and no `Authorization` (which every OpenAI
/// client sends).
pub(super) fn lists_models_under_v1(head: &RequestHead) -> bool {
    let path = head.path();
    let one_model = path.strip_prefix("/v1/models/").is_some_and(|m| !m.contains(':'));
    if path != "/v1/models" && !one_model {
        return false;
    }
    let google_key = head.field(Field::XGoogApiKey).is_some()
        || head
            .query()
            .is_some_and(|q| q.split('&').any(|p| p.starts_with("key=")));
    google_key && head.field(Field::Authorization).is_none()
}

/// Phase `route` for an owned path: the endpoint and the method it accepts.
pub(super) fn route(path: &str) -> Result<(Endpoint, Method), ProxyError> {
    if door_path(path).is_some() {
        return Ok((Endpoint::Gemini, Method::Post));
    }
    if path == "/v1beta/models" || path.starts_with("/v1beta/models/") {
        return Ok((Endpoint::GeminiModels, Method::Get));
    }
    Err(ProxyError::new(ErrorKind::NotFound, Side::Downstream, format!("unknown path {path}")).with_code("unknown_url"))
}

/// Phase `inspect` for the door: the path's model, `streamGenerateContent` as the stream flag
/// (served as SSE only: `?alt=sse` is required), and a body bounded by `max_json_depth`.
pub(super) fn inspect(req: &Request, max_json_depth: usize) -> Result<(String, Inspection), ProxyError> {
    let door = door_path(req.head.path()).ok_or_else(|| ProxyError::bad_request("not a Gemini model method"))?;
    let stream = door.stream();
    if stream && !req.head.query().is_some_and(|q| q.split('&').any(|p| p == "alt=sse")) {
        return Err(ProxyError::bad_request(
            "streamGenerateContent is served as server-sent events only: add '?alt=sse'",
        ));
    }
    if req.body.is_empty() {
        return Err(ProxyError::bad_request(
            "the request body is empty; a JSON object is required",
        ));
    }
    check_depth(&req.body.bytes(), max_json_depth)
        .map_err(|e| ProxyError::bad_request(format!("invalid JSON body: {e}")))?;
    let inspection = Inspection {
        stream,
        ..Inspection::default()
    };
    Ok((door.model.into_owned(), inspection))
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ModelList<'a> {
    models: Vec<GeminiModel<'a>>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct GeminiModel<'a> {
    name: String,
    base_model_id: &'a str,
    version: &'static str,
    display_name: &'a str,
    description: String,
    supported_generation_methods: [&'static str; 2],
}

fn entry<'a>(ctx: &'a RequestContext, route: &'a Route) -> GeminiModel<'a> {
    let config = &ctx.generation.config;
    let provider = route
        .candidates
        .first()
        .and_then(|c| config.providers.get(c.provider))
        .map_or("rotor", |p| p.name.as_str());
    GeminiModel {
        name: format!("models/{}", route.model),
        base_model_id: &route.model,
        version: "rotor",
        display_name: &route.model,
        description: format!("served by rotor (provider '{provider}')"),
        supported_generation_methods: ["generateContent", "streamGenerateContent"],
    }
}

/// `GET /v1beta/models`: every model this client may use, sorted; `GET /v1beta/models/{model}`:
/// that one, or a 404 in Google's envelope. The same under `/v1/models` for the Gemini SDK
/// (`lists_models_under_v1`).
pub(super) async fn models(
    ctx: &RequestContext,
    client: Option<&Client>,
    head: &RequestHead,
    res: &mut Responder<'_>,
) -> Result<(), ProxyError> {
    let config = &ctx.generation.config;
    let allowed = |route: &&std::sync::Arc<Route>| client.is_none_or(|c| c.allows(&route.model));
    let path = head.path();
    let body = match path
        .strip_prefix("/v1beta/models/")
        .or(path.strip_prefix("/v1/models/"))
    {
        None => {
            let mut models: Vec<GeminiModel> = config
                .routes
                .by_model
                .values()
                .filter(allowed)
                .map(|route| entry(ctx, route))
                .collect();
            models.sort_by(|a, b| a.base_model_id.cmp(b.base_model_id));
            sonic_rs::to_vec(&ModelList { models })
        }
        Some(raw) => {
            let name = String::from_utf8_lossy(&percent_decode(raw.as_bytes())).into_owned();
            let name = name.strip_prefix("models/").unwrap_or(&name);
            let route = config.routes.by_model.get(name).filter(allowed).ok_or_else(|| {
                ProxyError::new(
                    ErrorKind::NotFound,
                    Side::Downstream,
                    format!("model '{name}' is not found"),
                )
            })?;
            sonic_rs::to_vec(&entry(ctx, route))
        }
    };
    let body = body.map_err(|e| ProxyError::new(ErrorKind::Internal, Side::Internal, format!("cannot encode: {e}")))?;
    let headers: [(&str, &[u8]); 2] = [("content-type", b"application/json"), ("x-request-id", &ctx.request_id)];
    res.send(200, &headers, Bytes::from(body)).await.map_err(|e| {
        ProxyError::new(
            ErrorKind::Internal,
            Side::Downstream,
            format!("client connection lost: {e}"),
        )
    })
}
