//! The keepalive / deadline timer of one streamed answer (phase `relay`), kept across upstream
//! pieces. Invariant: it never fires later than the earliest instant asked for since it was
//! armed, so a keepalive or the request deadline is never late; firing early is allowed (the
//! caller checks the clock and asks again).

use std::future::Future;
use std::pin::Pin;

use crate::health::clock::Moment;

/// The one keepalive / deadline timer of a stream, armed when first needed and moved only when
/// it fires: a timer built, inserted into the wheel, removed and freed for every upstream piece
/// cost about 1,000 instructions per piece (callgrind, issue 18). It may fire early (the
/// silence it was armed for ended with a piece); `Stream::next_piece` then checks the clock and
/// waits on.
#[derive(Default)]
pub(super) struct Tick {
    timer: Option<Pin<Box<monoio::time::Sleep>>>,
    /// Where the timer is armed; never later than any `due` asked for since (a silence starts
    /// later each piece and the deadline is fixed), so an armed timer fires no later than due.
    armed: Option<Moment>,
}

impl Tick {
    /// `read`'s output, or `None` when the timer fired first (at `due` or earlier).
    pub(super) async fn race<F: Future>(&mut self, due: Moment, read: Pin<&mut F>) -> Option<F::Output> {
        let timer = match (&mut self.timer, self.armed) {
            (Some(timer), Some(armed)) if armed <= due => timer,
            (slot, _) => {
                self.armed = Some(due);
                // Never later than `due` (`Moment::instant`).
                let at = monoio::time::Instant::from_std(due.instant());
                match slot {
                    Some(timer) => {
                        timer.as_mut().reset(at);
                        timer
                    }
                    None => slot.insert(crate::heap::pin_in_place(|| monoio::time::sleep_until(at))),
                }
            }
        };
        let fired = crate::net::before_timer(read, timer.as_mut()).await;
        if fired.is_none() {
            // Fired: the next wait re-arms it.
            self.armed = None;
        }
        fired
    }
}
