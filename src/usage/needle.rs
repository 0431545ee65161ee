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
    /// The only JSON escape that can spell a letter of `usage` in a key (`\u0075sage`): text
    /// with neither this nor a plain `"usage"` has no usage member.
    LETTER_ESCAPE = b"\\u00";
    /// Gemini's usage member.
    USAGE_METADATA = b"\"usageMetadata\"";
    /// Anthropic's first stream event, when it arrives without an `event:` line.
    MESSAGE_START = b"\"message_start\"";
}

/// Whether `json` can have a member named `usage`: it holds `"usage"` or an escape that could
/// spell one of its letters. `false` is certain; `true` needs a parse to confirm.
pub(crate) fn may_name_usage(json: &[u8]) -> bool {
    USAGE.find(json).is_some() || LETTER_ESCAPE.find(json).is_some()
}
