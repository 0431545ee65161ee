//! rotor: an LLM API gateway on a thread-per-core io_uring runtime.
//!
//! Clients speak the OpenAI API to rotor; rotor picks an upstream (provider, key, model) for
//! each request, sends it over a pooled connection, and relays the answer as it arrives.
//! The request path is `proxy` (read it top to bottom); the rest are the parts it calls.

pub mod codec;
pub mod config;
