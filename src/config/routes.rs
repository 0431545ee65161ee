//! The route table (client model name -> candidates) and its readable form for `rotor check`.
//!
//! Invariant: route indices are dense `0..len` in first-seen order with the wildcard route
//! last, and each route lists at most one candidate per provider, in declaration order, so
//! per-core balancing state can be a `Vec` indexed by route and by candidate.

use std::fmt::Write;
use std::sync::Arc;

use ahash::AHashMap;

use super::model::*;

/// Builds the table from the enabled providers: each `models` entry routes its own name, each
/// alias routes the client-facing name to its target, and a provider with no `models` joins the
/// wildcard route (its aliases still get exact routes).
pub(crate) fn build(providers: &[Arc<Provider>]) -> RouteTable {
    let mut order: Vec<(String, Vec<Candidate>)> = Vec::new();
    let mut index: AHashMap<String, usize> = AHashMap::new();
    let mut wildcard = Vec::new();
    let mut add = |model: &str, candidate: Candidate| {
        let i = *index.entry(model.to_string()).or_insert_with(|| {
            order.push((model.to_string(), Vec::new()));
            order.len() - 1
        });
        if let Some((_, list)) = order.get_mut(i) {
            list.push(candidate);
        }
    };
    for p in providers.iter().filter(|p| p.enabled) {
        for m in &p.models {
            add(
                m,
                Candidate {
                    provider: p.index,
                    upstream_model: m.clone(),
                },
            );
        }
        for (alias, target) in &p.aliases {
            add(
                alias,
                Candidate {
                    provider: p.index,
                    upstream_model: target.clone(),
                },
            );
        }
        if p.models.is_empty() {
            wildcard.push(Candidate {
                provider: p.index,
                upstream_model: String::new(),
            });
        }
    }
    let exact = order.len();
    let by_model = order
        .into_iter()
        .enumerate()
        .map(|(i, (model, candidates))| {
            (
                model.clone(),
                Arc::new(Route {
                    index: i,
                    model,
                    candidates,
                }),
            )
        })
        .collect();
    let wildcard = (!wildcard.is_empty()).then(|| {
        Arc::new(Route {
            index: exact,
            model: "*".to_string(),
            candidates: wildcard,
        })
    });
    let len = exact + usize::from(wildcard.is_some());
    RouteTable {
        by_model,
        wildcard,
        len,
    }
}

impl RouteTable {
    /// The route serving `model`: its exact route, else the wildcard route. (`default_model`
    /// and fallbacks are the caller's next steps, in `Routing`.)
    pub fn get(&self, model: &str) -> Option<&Arc<Route>> {
        self.by_model.get(model).or(self.wildcard.as_ref())
    }
}

/// At most this many masked keys are listed per provider; large pools show a count beyond.
const KEYS_SHOWN: usize = 3;

impl Config {
    /// Things that are allowed but probably not intended; printed by `rotor check` and logged
    /// once at start and reload.
    pub fn warnings(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.clients.is_empty() {
            out.push(
                "open gateway: no [[clients]], so anyone who can reach the listen address can use every route"
                    .to_string(),
            );
        }
        for p in self.providers.iter().filter(|p| !p.enabled) {
            out.push(format!(
                "provider {:?} is disabled (enabled = false) and serves no route",
                p.name
            ));
        }
        if self.routes.len == 0 {
            out.push("no enabled provider: every request will get 404 (no route)".to_string());
        }
        out
    }

    /// The human-readable route table for `rotor check`. Keys appear masked only.
    pub fn route_table_text(&self) -> String {
        let mut s = String::new();
        let source = match &self.source {
            ConfigSource::File(p) => p.display().to_string(),
            ConfigSource::Environment => "ROTOR_* environment".to_string(),
            ConfigSource::Remote(r) => r.display(),
        };
        let _ = writeln!(s, "source: {source}");
        let _ = writeln!(
            s,
            "listen {}, {} workers, driver {}",
            self.server.listen,
            self.server.workers,
            match self.server.driver {
                Driver::Auto => "auto",
                Driver::IoUring => "io_uring",
                Driver::Legacy => "legacy",
            }
        );
        if let Some(c) = &self.cluster {
            let _ = writeln!(
                s,
                "cluster: {} as instance {:?}, on_redis_down {}, lease {} ms",
                c.redis_url,
                c.instance_id,
                match c.on_redis_down {
                    super::cluster::OnRedisDown::Local => "local",
                    super::cluster::OnRedisDown::Refuse => "refuse",
                },
                c.lease.as_millis()
            );
        }
        let _ = writeln!(s, "\nroutes (client model -> provider, upstream model, weight, keys):");
        let mut models: Vec<&Arc<Route>> = self.routes.by_model.values().collect();
        models.sort_by(|a, b| a.model.cmp(&b.model));
        for route in models {
            let _ = writeln!(s, "  {}", route.model);
            self.write_candidates(&mut s, route);
        }
        if let Some(route) = &self.routes.wildcard {
            let _ = writeln!(s, "  * (any other model)");
            self.write_candidates(&mut s, route);
        }
        if let Some(m) = &self.routing.default_model {
            let _ = writeln!(s, "\ndefault_model: {m} (for models with no route)");
        }
        if !self.routing.fallbacks.is_empty() {
            let _ = writeln!(s, "\nfallbacks:");
            let mut fb: Vec<_> = self.routing.fallbacks.iter().collect();
            fb.sort();
            for (model, targets) in fb {
                let _ = writeln!(s, "  {model} -> {}", targets.join(", "));
            }
        }
        let _ = writeln!(s, "\nclients:");
        if self.clients.is_empty() {
            let _ = writeln!(s, "  (none: open gateway)");
        }
        for c in &self.clients {
            let l = &c.limits;
            let _ = writeln!(
                s,
                "  {}  key {}  models {}  rpm {} rpd {} tpm {}",
                c.name,
                c.key.masked(),
                c.models.join(", "),
                limit_text(l.rpm),
                limit_text(l.rpd),
                limit_text(l.tpm)
            );
        }
        let warnings = self.warnings();
        if !warnings.is_empty() {
            let _ = writeln!(s, "\nwarnings:");
            for w in warnings {
                let _ = writeln!(s, "  - {w}");
            }
        }
        s
    }

    fn write_candidates(&self, s: &mut String, route: &Route) {
        for c in &route.candidates {
            let Some(p) = self.providers.get(c.provider) else {
                continue;
            };
            let upstream = if c.upstream_model.is_empty() {
                "(client's name)"
            } else {
                &c.upstream_model
            };
            let _ = writeln!(
                s,
                "    -> {}  upstream {}  weight {}  {}",
                p.name,
                upstream,
                p.weight,
                keys_text(&p.keys)
            );
        }
    }
}

/// `3 keys (…abcd, …wxyz, …1234)`, or `500 keys (…abcd, …wxyz, …1234, … 497 more)`.
fn keys_text(keys: &[Key]) -> String {
    let shown: Vec<String> = keys.iter().take(KEYS_SHOWN).map(|k| k.secret.masked()).collect();
    let more = keys.len().saturating_sub(KEYS_SHOWN);
    let noun = if keys.len() == 1 { "key" } else { "keys" };
    let tail = if more > 0 {
        format!(", … {more} more")
    } else {
        String::new()
    };
    format!("{} {noun} ({}{tail})", keys.len(), shown.join(", "))
}

fn limit_text(l: Limit) -> String {
    match l {
        Limit::Unlimited => "unlimited".to_string(),
        Limit::Disabled => "disabled".to_string(),
        Limit::Max(n) => n.to_string(),
    }
}
