//! Phase `relay`: the upstream answer goes to the client through a `ResponseTransform`. A whole
//! (non-SSE) answer is read, transformed and written here in one piece (one all here already,
//! a chat answer, by `ready`, with no future of its own); anything that streams is handed to
//! `stream` once its head went out.
//! How an answer ends is recorded: cleanly, or as an upstream cut, an idle timeout, a client
//! abort or the request deadline (`RelayFailure`), even though the status already went out.
//! Invariant: the upstream connection returns to the pool only when its body was read to the
//! end; a client that leaves (with `on_client_disconnect = "cancel"`) closes it at once; a
//! whole (non-SSE) answer that breaks off while it is read, before any byte of it reached the
//! client, is handed back for a retry.

mod stream;

use std::time::Duration;

use bytes::{Bytes, BytesMut};

use super::answer_fields::AnswerFields;
use super::error::{ErrorKind, ProxyError, Side};
use super::follow::Fetcher;
use super::RequestContext;
use crate::codec::response::{ResponseFraming, ResponseHead};
use crate::codec::Field;
use crate::config::Provider;
use crate::health::clock::{self, Moment};
use crate::metrics::health::RelayFailure;
use crate::providers::transform::ResponseTransform;
use crate::server::{HeldBody, Responder, Staged};
use crate::upstream::{Exchange, UpstreamError};
use crate::usage::Usage;
use stream::Stream;

/// Non-SSE upstream bodies up to this are read whole (usage read, translation applied, one
/// write to the client); larger untranslated ones stream through.
const BUFFER_WHOLE_LIMIT: usize = 16 * 1024 * 1024;

/// How the relay ended, for accounting.
#[derive(Debug, Clone, Copy)]
pub struct Relayed {
    pub status: u16,
    pub streamed: bool,
    /// How the answer failed after its status went out; `None` = the client got all of it.
    pub failure: Option<RelayFailure>,
    pub usage: Usage,
}

/// What became of the chosen answer.
pub(super) enum Relay {
    Done(Relayed),
    /// The upstream failed before any byte of the answer reached the client (a body read
    /// whole broke off): the request may try elsewhere.
    Unsent(UpstreamError),
}

pub(super) struct RelayInput<'a> {
    pub provider: &'a Provider,
    pub attempts: usize,
    /// The answer's head and exchange stay in the attempt's future, borrowed: moved by value
    /// through `try_key`, `attempt::relay` and here, they cost a 400-byte copy per layer.
    pub head: &'a mut ResponseHead,
    pub exchange: &'a mut Exchange,
    /// GETs with the attempt's key, for a transform that reads a URL at the end.
    pub fetcher: &'a Fetcher<'a>,
    /// Absolute deadline for the whole request (`upstream.request_timeout_ms`), if any.
    pub deadline: Option<Moment>,
    /// `Retry-After` seconds to add when the upstream's answer has none (a relayed 503).
    pub retry_after: Option<u64>,
    /// The client's body and the one sent upstream: let go of when the answer streams, since
    /// no attempt can follow once its head is out (a long prompt is not held for a stream's
    /// whole length, issue 18).
    pub bodies: [&'a HeldBody; 2],
}

/// The digits an answer's head borrows, kept by whoever writes the head.
#[derive(Default)]
struct Digits {
    attempts: itoa::Buffer,
    retry: itoa::Buffer,
    overhead: itoa::Buffer,
}

/// rotor's own fields of the answer's head but its overhead, added to `headers` (built by the
/// caller: returned from here, the fields, about 170 bytes, were copied by `memcpy`).
#[inline(always)]
fn own_fields<'a>(
    ctx: &RequestContext,
    input: &RelayInput<'_>,
    transform: &dyn ResponseTransform,
    headers: &mut AnswerFields<'a>,
    retry: &'a mut itoa::Buffer,
) {
    if let Some(flag) = ctx.trace.borrow().cache {
        headers.push("x-rotor-cache", flag.as_bytes());
    }
    if let Some(content_type) = transform.content_type() {
        headers.replace_content_type(content_type);
    }
    if let Some(seconds) = input.retry_after {
        headers.retry_after_unless_sent(retry.format(seconds).as_bytes());
    }
}

/// A whole answer staged by [`ready`], for the caller to write (`server::write_staged!`) and
/// report with [`sent_ready`].
pub(super) struct Ready {
    /// The status the client gets.
    pub status: u16,
    pub staged: Staged,
}

/// The answer when all of it is here (phase `follow` read its body, or its head's read brought
/// a sized body along, as it does a chat answer): its connection released, the body
/// transformed, and head and body staged in the answer's buffer, with no future for the read
/// and none for the relay: their set-up, resumes and drops cost about 200 instructions a chat
/// request (callgrind, issue 18). `None` (nothing done): [`relay`] reads or streams it.
pub(super) fn ready(
    ctx: &RequestContext,
    res: &mut Responder<'_>,
    input: &mut RelayInput<'_>,
    read_before: Option<Bytes>,
    transform: &mut dyn ResponseTransform,
) -> Option<Result<Ready, ProxyError>> {
    let head: &ResponseHead = input.head;
    let body = match read_before {
        Some(body) => body,
        // What `relay` does with it: read whole (a piece at least `BUFFER_WHOLE_LIMIT` long
        // would stream), unless it is SSE.
        None => match head.framing {
            ResponseFraming::Length(_) if !is_event_stream(head) => {
                input.exchange.buffered_body(BUFFER_WHOLE_LIMIT as u64)?
            }
            _ => return None,
        },
    };
    let mut digits = Digits::default();
    let attempts = digits.attempts.format(input.attempts).as_bytes();
    // The upstream's fields are read from its head as the answer's head is written; every
    // field pushed here is rotor's own (ids, names, digits, static text).
    let mut headers = AnswerFields::new(head, &ctx.request_id, &input.provider.answer_lines, attempts);
    own_fields(ctx, input, transform, &mut headers, &mut digits.retry);
    let answer_ready = clock::read();
    input.exchange.release();
    let body = transform.full(head.status, body);
    let status = transform.status(head.status);
    let overhead = digits
        .overhead
        .format(overhead_micros(ctx, answer_ready, clock::read()));
    headers.overhead_us(overhead.as_bytes());
    let staged = res.stage_whole(status, headers.fields(), body);
    Some(
        staged
            .map(|staged| Ready { status, staged })
            .map_err(|e| client_gone(ctx, e)),
    )
}

/// How the write of a [`ready`] answer went.
pub(super) fn sent_ready(
    ctx: &RequestContext,
    status: u16,
    written: std::io::Result<()>,
    transform: &dyn ResponseTransform,
) -> Result<Relay, ProxyError> {
    written.map_err(|e| client_gone(ctx, e))?;
    mark_sent_whole(ctx);
    Ok(Relay::Done(Relayed {
        status,
        streamed: false,
        failure: None,
        usage: transform.usage(),
    }))
}

/// Every answer [`ready`] did not take: read whole, streamed, or empty.
pub(super) async fn relay(
    ctx: &RequestContext,
    res: &mut Responder<'_>,
    input: RelayInput<'_>,
    transform: &mut dyn ResponseTransform,
) -> Result<Relay, ProxyError> {
    // Read once: a stream's answer asked it twice (about 130 instructions each).
    let sse = is_event_stream(input.head);
    if sse {
        // For as long as it streams, neither its head nor its reads hold the connection's
        // 8 KiB read buffer (~6 KiB less an open stream, DHAT, issue 18), nor its writes a
        // buffer a large request grew.
        input.head.headers.detach();
        input.exchange.lean_reads();
        res.lean_writes();
    }
    let head: &ResponseHead = input.head;
    let mut digits = Digits::default();
    let attempts = digits.attempts.format(input.attempts).as_bytes();
    let mut headers = AnswerFields::new(head, &ctx.request_id, &input.provider.answer_lines, attempts);
    own_fields(ctx, &input, transform, &mut headers, &mut digits.retry);
    let overhead_digits = &mut digits.overhead;
    let RelayInput {
        exchange,
        fetcher,
        deadline,
        bodies,
        ..
    } = input;
    let upstream_config = &ctx.generation.config.upstream;
    let idle = upstream_config.stream_idle_timeout;
    let status = head.status;
    let gone = |e: std::io::Error| client_gone(ctx, e);
    let whole = Relayed {
        status,
        streamed: false,
        failure: None,
        usage: Usage::default(),
    };
    match head.framing {
        ResponseFraming::Empty => {
            // Nothing to read or transform: the answer is ready as its head goes out.
            let ready = clock::read();
            let overhead = overhead_digits.format(overhead_micros(ctx, ready, ready));
            headers.overhead_us(overhead.as_bytes());
            let result = res.send_fields(status, headers.fields(), Bytes::new()).await;
            mark_sent_whole(ctx);
            exchange.release();
            result.map_err(gone)?;
            Ok(Relay::Done(whole))
        }
        // Anything but SSE is read whole when it fits, sized or not (providers behind CDNs answer
        // JSON with chunked encoding): usage is read from it and translations see a whole body.
        framing if !sse && fits_whole(framing, transform) => {
            let body = match read_whole(exchange, idle).await {
                Ok(Whole::Complete(body)) => body,
                Err(error) => return Ok(Relay::Unsent(error)),
                Ok(Whole::TooLarge(_)) if transform.content_type().is_some() => {
                    let message = format!("upstream answer over {BUFFER_WHOLE_LIMIT} bytes cannot be translated");
                    return Err(ProxyError::new(ErrorKind::UpstreamFailed, Side::Upstream, message));
                }
                Ok(Whole::TooLarge(start)) => {
                    // Untranslated: relay it as a stream, starting with what was read.
                    let ready = clock::read();
                    let overhead = overhead_digits.format(overhead_micros(ctx, ready, ready));
                    headers.overhead_us(overhead.as_bytes());
                    res.start_fields(status, headers.fields(), None).await.map_err(gone)?;
                    mark_first_byte(ctx, clock::read());
                    res.piece(&start).await.map_err(gone)?;
                    let stream = Stream {
                        idle,
                        keepalive: None,
                        deadline,
                        sse: false,
                        policy: upstream_config.on_client_disconnect,
                        fetcher,
                    };
                    bodies.iter().for_each(|body| body.release());
                    let (failure, poolable) = stream.run(res, exchange, transform).await;
                    mark_end(ctx, exchange, poolable);
                    return Ok(Relay::Done(Relayed {
                        status,
                        streamed: true,
                        failure,
                        usage: transform.usage(),
                    }));
                }
            };
            let answer_ready = clock::read();
            exchange.release();
            let body = transform.full(status, body);
            let status = transform.status(status);
            let overhead = overhead_digits.format(overhead_micros(ctx, answer_ready, clock::read()));
            headers.overhead_us(overhead.as_bytes());
            // Written out here (`send_whole!`), not through `send_fields`' future (~190
            // instructions a chat request: see the macro).
            crate::server::send_whole!(res, status, headers.fields(), body).map_err(gone)?;
            mark_sent_whole(ctx);
            Ok(Relay::Done(Relayed {
                status,
                usage: transform.usage(),
                ..whole
            }))
        }
        framing => {
            // The head goes out right after (only headers are added): one reading for both.
            let answer_ready = clock::read();
            // A transform may change the length, so only untouched sized bodies keep theirs.
            let length = match framing {
                ResponseFraming::Length(n) if transform.content_type().is_none() && !sse => Some(n),
                _ => None,
            };
            let overhead = overhead_digits.format(overhead_micros(ctx, answer_ready, answer_ready));
            headers.overhead_us(overhead.as_bytes());
            // SSE: the head leaves with the first event (one write, not two); every way a
            // stream ends writes something, so the head is never lost. Its first byte is the
            // moment it was handed over, as before (no write waited on in between).
            if sse {
                res.start_held_fields(status, headers.fields(), length).map_err(gone)?;
                mark_first_byte(ctx, answer_ready);
            } else {
                res.start_fields(status, headers.fields(), length).await.map_err(gone)?;
                mark_first_byte(ctx, clock::read());
            }
            let keepalive = if sse {
                ctx.generation.config.server.sse_keepalive
            } else {
                None
            };
            let policy = upstream_config.on_client_disconnect;
            let stream = Stream {
                idle,
                keepalive,
                deadline,
                sse,
                policy,
                fetcher,
            };
            bodies.iter().for_each(|body| body.release());
            let (failure, poolable) = stream.run(res, exchange, transform).await;
            mark_end(ctx, exchange, poolable);
            let mut usage = transform.usage();
            usage.partial |= failure.is_some();
            Ok(Relay::Done(Relayed {
                status,
                streamed: true,
                failure,
                usage,
            }))
        }
    }
}

/// Whether a non-SSE body is read whole: always when it may fit, and always when a translation
/// needs the whole body (a larger one then fails rather than being mistranslated).
fn fits_whole(framing: ResponseFraming, transform: &dyn ResponseTransform) -> bool {
    match framing {
        ResponseFraming::Length(n) => n <= BUFFER_WHOLE_LIMIT as u64 || transform.content_type().is_some(),
        _ => true,
    }
}

enum Whole {
    Complete(Bytes),
    /// Past `BUFFER_WHOLE_LIMIT`: what was read so far; the rest follows on the exchange.
    TooLarge(Bytes),
}

/// Reads a body whole, up to `BUFFER_WHOLE_LIMIT`.
async fn read_whole(exchange: &mut Exchange, idle: Duration) -> Result<Whole, UpstreamError> {
    let mut all = BytesMut::new();
    while let Some(piece) = exchange.next_piece(idle).await? {
        if all.is_empty() && piece.len() >= BUFFER_WHOLE_LIMIT {
            return Ok(Whole::TooLarge(piece));
        }
        if all.is_empty() && exchange.body_done() {
            // The whole body in one piece (the usual answer): handed on without a copy.
            return Ok(Whole::Complete(piece));
        }
        all.extend_from_slice(&piece);
        if all.len() >= BUFFER_WHOLE_LIMIT {
            return Ok(Whole::TooLarge(all.freeze()));
        }
    }
    Ok(Whole::Complete(all.freeze()))
}

/// rotor's own time (before the upstream send, plus from the answer being ready to its head
/// going out), in µs.
fn overhead_micros(ctx: &RequestContext, answer_ready: Moment, head_out: Moment) -> u64 {
    let mut trace = ctx.trace.borrow_mut();
    trace.after_upstream_ns = Some(head_out.nanos_since(answer_ready));
    trace.overhead_ns().map_or(0, |ns| ns / 1_000)
}

fn mark_first_byte(ctx: &RequestContext, at: Moment) {
    ctx.trace.borrow_mut().first_byte_at = Some(at);
}

/// A whole answer was written (or failed to be): its head and its end are one moment.
fn mark_sent_whole(ctx: &RequestContext) {
    let at = clock::read();
    let mut trace = ctx.trace.borrow_mut();
    trace.first_byte_at = Some(at);
    trace.ended_at = Some(at);
}

/// A streamed answer ended: its end is read before its connection goes back to the pool (the
/// pool stamps it with this reading, `clock::latest`).
fn mark_end(ctx: &RequestContext, exchange: &mut Exchange, poolable: bool) {
    ctx.trace.borrow_mut().ended_at = Some(clock::read());
    if poolable {
        exchange.release();
    }
}

/// Any `Content-Type` field (through the field index, not a walk comparing names) says so.
/// Compared exactly first (providers send it in lower case): a byte-wise caseless compare of
/// the 17 bytes cost about 100 instructions more.
fn is_event_stream(head: &ResponseHead) -> bool {
    const SSE: &[u8] = b"text/event-stream";
    head.headers.fields(Field::ContentType).any(|v| {
        v.get(..SSE.len())
            .is_some_and(|t| t == SSE || t.eq_ignore_ascii_case(SSE))
    })
}

/// The client left before the answer was written: recorded as a client abort.
fn client_gone(ctx: &RequestContext, e: std::io::Error) -> ProxyError {
    ctx.trace.borrow_mut().relay_failure = Some(RelayFailure::ClientAbort);
    ProxyError::new(
        ErrorKind::Internal,
        Side::Downstream,
        format!("client connection lost: {e}"),
    )
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use crate::codec::head::HeadLimits;
    use crate::codec::response::parse_response_head;

    fn sse(content_type: &str) -> bool {
        let raw = format!("HTTP/1.1 200 OK\r\ncontent-type: {content_type}\r\ncontent-length: 0\r\n\r\n");
        let mut buf = bytes::BytesMut::from(raw.as_str());
        let head = parse_response_head(&mut buf, &HeadLimits::default(), false)
            .unwrap()
            .unwrap();
        super::is_event_stream(&head)
    }

    /// SSE is told by its media type in any case, with or without parameters.
    #[test]
    fn event_streams_are_told_by_their_media_type_in_any_case() {
        assert!(sse("text/event-stream"));
        assert!(sse("text/event-stream; charset=utf-8"));
        assert!(sse("Text/Event-Stream"));
        assert!(!sse("application/json"));
        assert!(!sse("text/event"));
    }
}
