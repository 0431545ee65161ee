//! Tests of `passthrough_path`: the upstream path a passthrough request is sent to.

use std::borrow::Cow;

use super::{passthrough_path, ClientPath};

/// A fixed front door's upstream path is a constant, the same text the general rule gives
/// and one `check_path` accepts (forward skips the check for borrowed paths); any other
/// path is the client's own text, owned, and checked.
#[test]
fn fixed_doors_pass_through_as_checked_constants_and_the_rest_as_client_text() {
    for door in [
        "/v1/chat/completions",
        "/v1/completions",
        "/v1/embeddings",
        "/v1/messages",
        "/v1/responses",
    ] {
        let path = passthrough_path(ClientPath::of(door));
        assert!(matches!(path, Cow::Borrowed(_)), "{door}");
        assert_eq!(path, &door[3..]);
        assert!(crate::codec::target::check_path(&path).is_ok(), "{door}");
    }
    for client in ["/v1/files/a%2F..%2Fb", "/v1/chat/completions/x", "/v1/models/../admin"] {
        let path = passthrough_path(ClientPath::of(client));
        assert!(matches!(path, Cow::Owned(_)), "{client}");
        assert_eq!(path, &client[3..]);
    }
}
