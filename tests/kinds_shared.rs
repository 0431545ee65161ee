//! The failure checks every translated provider kind shares (`common::kinds`), run over its
//! table: 429 failover with cooling, 401 quarantine, the upstream's refusal when out of
//! attempts, a cut stream's error event. One test per check; a failure names the kind.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::disallowed_methods)]

mod common;

use common::kinds::{self, TABLE};

#[test]
fn a_429_key_fails_over_and_a_401_key_is_quarantined() {
    TABLE
        .iter()
        .for_each(kinds::a_429_key_fails_over_and_a_401_key_is_quarantined);
}

#[test]
fn out_of_attempts_the_client_gets_the_upstream_message() {
    TABLE
        .iter()
        .for_each(kinds::out_of_attempts_the_client_gets_the_upstream_message);
}

#[test]
fn a_stream_cut_midway_ends_in_an_error_event() {
    TABLE.iter().for_each(kinds::a_stream_cut_midway_ends_in_an_error_event);
}
