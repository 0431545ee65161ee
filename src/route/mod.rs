//! Choosing where a request goes: client model -> route -> provider (smooth weighted
//! round-robin) -> key (the provider's strategy). All state here is per core: plain integers,
//! no locks, no atomics. Invariant: the state is rebuilt whenever the config generation changes,
//! so indices never point into another generation's tables.

mod balance;

pub use balance::CoreBalance;

use std::sync::Arc;

use crate::config::{Config, Route};

/// Why a model has no route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unroutable {
    /// Nothing serves this model and there is no usable `default_model`.
    NoRoute,
}

/// The route for a client-facing model name: exact, then wildcard providers, then
/// `routing.default_model`. The bool says whether the default model was substituted.
pub fn find_route<'a>(config: &'a Config, model: &str) -> Result<(&'a Arc<Route>, bool), Unroutable> {
    if let Some(route) = config.routes.by_model.get(model) {
        return Ok((route, false));
    }
    if let Some(route) = &config.routes.wildcard {
        return Ok((route, false));
    }
    if let Some(default) = &config.routing.default_model {
        if let Some(route) = config.routes.by_model.get(default.as_str()) {
            return Ok((route, true));
        }
    }
    Err(Unroutable::NoRoute)
}
