//! The keepalive / deadline timer of one streamed answer (phase `relay`), kept across upstream
//! pieces. Invariant: it fires at the earliest instant asked for by the current `race`, never
//! earlier, and at most the deadline wheel's slack later (`crate::deadline`: a 2.1 ms tick plus
//! monoio's rounding to the next ms), so a keepalive or the request deadline is that late at most.

use std::future::Future;
use std::pin::Pin;

use crate::deadline::Deadline;
use crate::health::clock::Moment;

/// The one keepalive / deadline entry of a stream, taken at the first race and re-armed for
/// each: a monoio timer built, inserted into its wheel, removed and freed for every upstream
/// piece cost about 1,000 instructions per piece (callgrind, issue 18), and even one kept per
/// stream was re-registered at each move. Re-arming a `Deadline` later is one store.
#[derive(Default)]
pub(super) struct Tick {
    deadline: Deadline,
}

impl Tick {
    /// `read`'s output, or `None` when `due` passed first.
    pub(super) async fn race<F: Future>(&mut self, due: Moment, read: Pin<&mut F>) -> Option<F::Output> {
        self.deadline.arm_at(due);
        crate::net::before_deadline(read, &mut self.deadline).await
    }
}
