//! Phases `inspect` and `adapt` for same-protocol requests: the model name and stream flag,
//! read strictly (DESIGN 2.1a), and the body as the upstream will see it.
//! Invariant: the body sent upstream differs from the client's only in the model value, and
//! only when the client used an alias.

use crate::codec::Field;
use bytes::Bytes;

use super::error::{ErrorKind, ProxyError, Side};
use super::Endpoint;
use crate::codec::json::{inspect_request, multipart_field, splice_model, Inspection, ModelName};
use crate::config::Config;
use crate::server::Request;

/// Phase `inspect`: the model name (and stream flag) from a JSON body, or the multipart `model`
/// field; `None` when a passthrough request carries no model at all (a bodiless one like
/// `GET /v1/files` or `POST /v1/batches/{id}/cancel`, a multipart upload to `/v1/files`).
/// A JSON body nesting deeper than `max_json_depth` is a 400. The name is copied out of the
/// body here, once: the body is only borrowed while it is read (see `HeldBody`).
pub(super) fn inspect(
    endpoint: Endpoint,
    req: &Request,
    max_json_depth: usize,
) -> Result<Option<(ModelName, Inspection)>, ProxyError> {
    if endpoint == Endpoint::Gemini {
        let (model, inspection) = super::gemini_door::inspect(req, max_json_depth)?;
        return Ok(Some((ModelName::new(&model), inspection)));
    }
    let body = req.body.bytes();
    let content_type = req.head.field(Field::ContentType).unwrap_or(b"");
    let is_multipart = content_type.len() >= 19 && content_type[..19].eq_ignore_ascii_case(b"multipart/form-data");
    if is_multipart {
        let model = multipart_field(&body, content_type, "model")
            .and_then(|m| std::str::from_utf8(m).ok())
            .map(str::trim);
        return match model {
            Some(m) if !m.is_empty() => Ok(Some((ModelName::new(m), Inspection::default()))),
            _ if endpoint == Endpoint::Passthrough => Ok(None),
            _ => Err(ProxyError::bad_request("the multipart form has no 'model' field").with_param("model")),
        };
    }
    if body.is_empty() {
        if endpoint == Endpoint::Passthrough {
            return Ok(None);
        }
        return Err(ProxyError::bad_request(
            "the request body is empty; a JSON object is required",
        ));
    }
    // The name comes apart from the inspection (the request carries it as `model` from here).
    let (inspection, model) = inspect_request(&body, max_json_depth)
        .map_err(|e| ProxyError::bad_request(format!("invalid JSON body: {}", e.0)))?;
    match model {
        Some(m) => Ok(Some((ModelName::new(&m), inspection))),
        None if endpoint == Endpoint::Passthrough => Ok(None),
        None => Err(ProxyError::bad_request("you must provide a model parameter").with_param("model")),
    }
}

/// For requests without a model: `routing.default_model`, else the wildcard route, else the
/// first route an OpenAI-kind provider serves (files, batches and similar account-level
/// endpoints are OpenAI's), else the first route.
pub(super) fn default_model_for(config: &Config) -> Result<String, ProxyError> {
    if let Some(model) = &config.routing.default_model {
        return Ok(model.clone());
    }
    // A model-less call (`GET /v1/files`, ...) speaks OpenAI's API: a route with an OpenAI
    // provider first, the wildcard before the named routes, then any route at all.
    let openai = |route: &crate::config::Route| {
        route.candidates.iter().any(|c| {
            config
                .providers
                .get(c.provider)
                .is_some_and(|p| p.kind == crate::config::ProviderKind::OpenAi)
        })
    };
    let wildcard = config.routes.wildcard.as_deref();
    if wildcard.is_some_and(openai) {
        return Ok(String::new());
    }
    let routes = || config.routes.by_model.values();
    let named = routes()
        .filter(|r| openai(r))
        .min_by_key(|r| r.index)
        .map(|r| r.model.clone());
    let any = || match wildcard {
        Some(_) => Some(String::new()),
        None => routes().min_by_key(|r| r.index).map(|r| r.model.clone()),
    };
    named.or_else(any).ok_or_else(|| {
        ProxyError::new(
            ErrorKind::NoRoute,
            Side::Downstream,
            "no provider can serve this request",
        )
    })
}

/// Phase `adapt` (same protocol): the body as sent, with only the model value replaced when the
/// client used an alias.
pub(super) fn adapt(body: &Bytes, inspection: &Inspection, upstream_model: &str, client_model: &str) -> Bytes {
    match &inspection.model_span {
        Some(span) if !upstream_model.is_empty() && upstream_model != client_model => {
            Bytes::from(splice_model(body, span.clone(), upstream_model))
        }
        _ => body.clone(),
    }
}

/// Phase `inspect`, the name itself: a client's model name is at most
/// `codec::target::MAX_MODEL_NAME_BYTES` and has no control character (CR/LF in a name that
/// reaches an upstream path would split the request); a 400 in the API's envelope otherwise.
pub(super) fn validate_model_name(model: &str) -> Result<(), ProxyError> {
    crate::codec::target::check_model_name(model).map_err(|e| {
        ProxyError::bad_request(e.to_string())
            .with_param("model")
            .with_code("invalid_model_name")
    })
}
