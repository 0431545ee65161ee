//! The `usage` object of an OpenAI answer, read by the one-pass reader: from a body's `"usage"`
//! key on (`usage_tail`), or at a cursor inside a stream's usage chunk (`usage_object`).
//! Invariant: the reader's own (`codec::scan`): only the plain case is decided; a value serde
//! would refuse or read otherwise is `None`, and the caller's full parser decides.

use super::Cursor;

/// The token counts of an OpenAI `usage` object.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UsageCounts {
    pub(crate) prompt: u64,
    pub(crate) completion: u64,
    pub(crate) cached: u64,
    pub(crate) reasoning: u64,
}

/// The `usage` read from `tail`, the bytes of a body from its one `"usage"` key on, read as
/// the members of an object whose `{` precedes them (what `usage::openai` parses with serde
/// after copying `{` in front). `None` = not decided here: a value serde would refuse or read
/// otherwise (a count that is not a plain integer, a duplicate member), `usage` null, or any
/// byte outside the subset.
pub fn usage_tail(tail: &[u8], max_depth: usize) -> Option<UsageCounts> {
    let mut c = Cursor::new(tail, max_depth);
    c.enter()?;
    if c.key()? != b"usage" {
        return None;
    }
    let out = usage_object(&mut c)?;
    // The members after `usage`, then the body's closing brace.
    while c.take(b',') {
        c.key()?;
        c.skip()?;
    }
    c.eat(b'}')?;
    c.finish()?;
    Some(out)
}

/// A `usage` object's counts (the cursor at its `{`, after whitespace or not): a count that is
/// not a plain integer, a duplicate member or a `*_details` that is neither an object nor null
/// is left to serde (`None`), which `usage::openai` reads it with otherwise.
pub(crate) fn usage_object(c: &mut Cursor<'_>) -> Option<UsageCounts> {
    let mut out = UsageCounts::default();
    let mut seen = [false; 4];
    let mut once = |i: usize| (!std::mem::replace(&mut seen[i], true)).then_some(());
    c.open_object()?;
    if !c.take(b'}') {
        loop {
            match c.key()? {
                b"prompt_tokens" => {
                    once(0)?;
                    out.prompt = c.uint()?;
                }
                b"completion_tokens" => {
                    once(1)?;
                    out.completion = c.uint()?;
                }
                b"prompt_tokens_details" => {
                    once(2)?;
                    out.cached = details(c, b"cached_tokens")?;
                }
                b"completion_tokens_details" => {
                    once(3)?;
                    out.reasoning = details(c, b"reasoning_tokens")?;
                }
                _ => c.skip()?,
            }
            if !c.take(b',') {
                break;
            }
        }
        c.eat(b'}')?;
    }
    c.depth -= 1;
    Some(out)
}

/// A `*_tokens_details` value: null, or an object whose `field` is a count or null (0 then).
fn details(c: &mut Cursor<'_>, field: &[u8]) -> Option<u64> {
    c.ws();
    if c.peek() != Some(b'{') {
        return c.literal()?.map_or(Some(0), |_| None);
    }
    let found = c.only_member(field, |c| match c.peek() {
        Some(b'n') => c.literal()?.map_or(Some(0), |_| None),
        _ => c.uint(),
    })?;
    Some(found.unwrap_or(0))
}
