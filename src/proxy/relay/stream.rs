//! Phase `relay` for an answer that streams (SSE, or a body too large to read whole): pieces
//! go to the client as they arrive, in the request's own task, with SSE keepalive comments
//! during upstream silences while the pending read stays in flight (a cancelled io_uring read
//! may lose the bytes it got).
//! Invariant: `Stream::run` reports the exchange poolable only when its body was read to the
//! end; a client that leaves under `on_client_disconnect = "cancel"` ends the stream at once,
//! under `drain` at most `DRAIN_LIMIT_BYTES` more are read (for usage).

use std::time::Duration;

use bytes::{Bytes, BytesMut};

use crate::config::DisconnectPolicy;
use crate::health::clock::Moment;
use crate::metrics::health::RelayFailure;
use crate::providers::transform::{Emit, ResponseTransform};
use crate::proxy::follow::Fetcher;
use crate::proxy::tick::Tick;
use crate::server::Responder;
use crate::upstream::{Exchange, UpstreamError, UpstreamErrorKind};

/// After the client left under the drain policy, read at most this much more for usage.
const DRAIN_LIMIT_BYTES: u64 = 16 * 1024 * 1024;
const KEEPALIVE_COMMENT: &[u8] = b": keepalive\n\n";
/// The longest the end of a stream waits for what its transform reads there (Replicate's
/// usage): the client's terminator is held meanwhile, and usage is not worth more.
const FETCH_AT_END_TIMEOUT: Duration = Duration::from_secs(5);

/// How one answer streams: its timeouts, whether it is SSE, and what a client that leaves means.
pub(super) struct Stream<'a> {
    pub(super) idle: Duration,
    pub(super) keepalive: Option<Duration>,
    pub(super) deadline: Option<Moment>,
    pub(super) sse: bool,
    pub(super) policy: DisconnectPolicy,
    pub(super) fetcher: &'a Fetcher<'a>,
}

/// What waiting for the next upstream piece ended with.
enum Next {
    Piece(Result<Option<Bytes>, UpstreamError>),
    /// The client left during an upstream silence and the policy is `cancel`.
    ClientGone,
    Deadline,
}

impl Stream<'_> {
    /// Relays pieces until the upstream ends or fails. Returns how the answer failed (`None`:
    /// the client got all of it), and whether the exchange may be pooled (its body was read to
    /// the end).
    pub(super) async fn run(
        &self,
        res: &mut Responder<'_>,
        exchange: &mut Exchange,
        transform: &mut dyn ResponseTransform,
    ) -> (Option<RelayFailure>, bool) {
        let mut client_present = true;
        let mut tick = Tick::default();
        let mut drained = 0u64;
        let abort = Some(RelayFailure::ClientAbort);
        loop {
            let data = match self.next_piece(exchange, res, &mut client_present, &mut tick).await {
                Next::Piece(Ok(Some(data))) => data,
                Next::Piece(Ok(None)) => {
                    if client_present {
                        self.fetch_at_end(transform).await;
                        let tail = transform.end();
                        client_present = send_all(res, tail).await && res.finish().await.is_ok();
                    }
                    return (if client_present { None } else { abort }, true);
                }
                Next::Piece(Err(e)) => {
                    tracing::warn!("upstream failed mid-response: {e}");
                    let message = format!("upstream failed mid-stream: {}", e.message);
                    self.fail(res, transform, &message, client_present).await;
                    let failure = match e.kind {
                        UpstreamErrorKind::IdleTimeout => RelayFailure::StreamIdleTimeout,
                        _ => RelayFailure::UpstreamCut,
                    };
                    // A client that had already left is what the answer's end looked like to it.
                    return (if client_present { Some(failure) } else { abort }, false);
                }
                Next::ClientGone => return (abort, false),
                Next::Deadline => {
                    let message = "request exceeded upstream.request_timeout_ms";
                    self.fail(res, transform, message, client_present).await;
                    let failure = Some(RelayFailure::RequestTimeout);
                    return (if client_present { failure } else { abort }, false);
                }
            };
            if !client_present {
                drained += data.len() as u64;
            }
            let out = transform.piece(data);
            // The terminator often comes in the same upstream read as the last event: then the
            // last piece and the end of the response go out in one write.
            if client_present && exchange.body_done() {
                self.fetch_at_end(transform).await;
                let last = joined(out, transform.end());
                let delivered = res.piece_and_finish(&last).await.is_ok();
                return (if delivered { None } else { abort }, true);
            }
            if client_present && !send_all(res, out).await {
                client_present = false;
                if self.policy == DisconnectPolicy::Cancel {
                    return (abort, false);
                }
            }
            if !client_present && drained > DRAIN_LIMIT_BYTES {
                return (abort, false);
            }
        }
    }

    /// The next piece of the upstream body, sending keepalive comments while the upstream is
    /// silent. The read stays in flight across those writes (a dropped io_uring read may lose
    /// the bytes it got); it is dropped only when the stream ends anyway (deadline, client gone
    /// under `cancel`). Keepalive writes also notice a client that left during a long silence.
    async fn next_piece(
        &self,
        exchange: &mut Exchange,
        res: &mut Responder<'_>,
        client_present: &mut bool,
        tick: &mut Tick,
    ) -> Next {
        let mut read = std::pin::pin!(exchange.next_piece(self.idle));
        // The silence a keepalive ends starts now (and again after each keepalive).
        let mut quiet_since = Moment::now();
        loop {
            if self.deadline.is_some_and(|d| quiet_since >= d) {
                return Next::Deadline;
            }
            let keepalive = self.keepalive.filter(|_| *client_present).map(|k| quiet_since + k);
            let due = match (keepalive, self.deadline) {
                (Some(k), Some(d)) => k.min(d),
                (Some(t), None) | (None, Some(t)) => t,
                (None, None) => return Next::Piece(read.await),
            };
            if let Some(piece) = tick.race(due, read.as_mut()).await {
                return Next::Piece(piece);
            }
            let now = Moment::now();
            if self.deadline.is_some_and(|d| now >= d) {
                return Next::Deadline;
            }
            if keepalive.is_some_and(|k| now >= k) {
                if *client_present && res.piece(KEEPALIVE_COMMENT).await.is_err() {
                    *client_present = false;
                    if self.policy == DisconnectPolicy::Cancel {
                        return Next::ClientGone;
                    }
                }
                quiet_since = Moment::now();
            }
        }
    }

    /// What the transform needs read before it can end (Replicate's usage), with the
    /// attempt's key; the exchange's connection is not involved.
    async fn fetch_at_end(&self, transform: &mut dyn ResponseTransform) {
        if let Some(url) = transform.fetch_at_end() {
            let read = Box::pin(crate::net::within(FETCH_AT_END_TIMEOUT, self.fetcher.read(&url))).await;
            transform.fetched(read.ok().flatten().as_deref());
        }
    }

    /// Ends a failed stream: an error event in the client's protocol and the terminator for SSE
    /// (the client's SDK raises it), a cut connection for anything else.
    async fn fail(&self, res: &mut Responder<'_>, transform: &mut dyn ResponseTransform, message: &str, present: bool) {
        if !present {
            return;
        }
        if self.sse && send_all(res, transform.fail(message)).await && res.finish().await.is_ok() {
            return;
        }
        res.abort();
    }
}

async fn send_all(res: &mut Responder<'_>, pieces: Emit) -> bool {
    for piece in pieces {
        if res.piece(&piece).await.is_err() {
            return false;
        }
    }
    true
}

/// A stream's last pieces and its end, for one write: a lone piece as it is, several copied
/// once into a buffer of their joint size (grown piece by piece from empty, it was reallocated
/// as it filled: ~250 instructions a streamed request, callgrind, issue 18).
fn joined(out: Emit, end: Emit) -> Bytes {
    let total: usize = out.iter().chain(&end).map(Bytes::len).sum();
    let mut pieces = out.into_iter().chain(end).filter(|piece| !piece.is_empty());
    let Some(first) = pieces.next() else {
        return Bytes::new();
    };
    if first.len() == total {
        return first;
    }
    let mut last = BytesMut::with_capacity(total);
    last.extend_from_slice(&first);
    pieces.for_each(|piece| last.extend_from_slice(&piece));
    last.freeze()
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use smallvec::smallvec;

    use super::{joined, Emit};

    /// The last pieces and the end go out as the same bytes, in order: a lone piece as it is
    /// (no copy), several in one buffer of their joint size.
    #[test]
    fn last_pieces_join_in_order_and_a_lone_one_is_not_copied() {
        let lone = Bytes::from_static(b"data: [DONE]\n\n");
        let same = joined(smallvec![Bytes::new(), lone.clone()], Emit::new());
        assert_eq!(same, lone);
        assert_eq!(same.as_ptr(), lone.as_ptr(), "handed on, not copied");
        let all = joined(
            smallvec![Bytes::from_static(b"data: a\n\n"), Bytes::new()],
            smallvec![
                Bytes::from_static(b"data: b\n\n"),
                Bytes::from_static(b"data: [DONE]\n\n")
            ],
        );
        assert_eq!(&all[..], b"data: a\n\ndata: b\n\ndata: [DONE]\n\n");
        assert!(joined(Emit::new(), smallvec![Bytes::new()]).is_empty());
    }
}
