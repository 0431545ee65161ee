//! rotor: an LLM API gateway on a thread-per-core io_uring runtime.
//!
//! Clients speak the OpenAI API to rotor; rotor picks an upstream (provider, key, model) for
//! each request, sends it over a pooled connection, and relays the answer as it arrives.
//! The request path is `proxy` (its module docs list the phases); the rest are the parts it
//! calls: `server` (downstream HTTP/1.1), `route` (balancing), `upstream` (client and pool),
//! `codec` (byte-level parsing), `config`, `runtime` (threads, reload, shutdown) and `mock`.

pub mod admin;
pub mod cache;
pub mod cluster;
pub mod codec;
pub mod config;
pub mod deadline;
pub mod gateway;
pub mod health;
pub mod heap;
pub mod import;
pub mod keys;
pub mod limits;
pub mod metrics;
pub mod mock;
pub mod net;
pub mod pins;
pub mod providers;
pub mod proxy;
pub mod route;
pub mod runtime;
pub mod server;
pub mod spare;
pub mod storage;
pub mod tokens;
pub mod upstream;
pub mod usage;
