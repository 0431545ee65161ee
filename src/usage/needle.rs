//! Byte needles the usage taps look for in every body and stream event, each searcher built once.
//! `memmem::find` builds a new searcher per call, which cost 2 % of a streaming proxy core
//! (`benches/profile.sh perf`, issue 7).

use std::sync::LazyLock;

use memchr::memmem::Finder;

macro_rules! needles {
    ($($(#[$doc:meta])* $name:ident = $bytes:expr;)*) => {
        $($(#[$doc])* pub(crate) static $name: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new($bytes));)*
    };
}

needles! {
    /// A `usage` key.
    USAGE = b"\"usage\"";
    /// A null `usage` (every chunk of a stream asked for `include_usage` carries one).
    USAGE_NULL = b"\"usage\":null";
    /// The member `write_event` removes from chunks when the client did not ask for usage.
    COMMA_USAGE_NULL = b",\"usage\":null";
    /// The usage-only chunk that `include_usage` adds.
    EMPTY_CHOICES = b"\"choices\":[]";
    /// Anthropic's first stream event, when it arrives without an `event:` line.
    MESSAGE_START = b"\"message_start\"";
}
