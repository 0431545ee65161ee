//! Configuration: TOML file -> validated, compiled `Config` (see `model.rs`, the contract).
