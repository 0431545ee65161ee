//! Per-worker deadlines: what times every read on the request path and every other timed wait
//! on a worker (`sleep`, `net::within`), instead of monoio's timer. Each worker thread has one
//! `Wheel` (a slab of {deadline, waker} filed in a coarse hashed wheel, see `wheel`) and one
//! ticker task that sleeps until the end of the first occupied tick, wakes what expired there,
//! and parks without any timer when nothing is filed (an idle worker stays idle). The ticker
//! wakes on a timerfd read through the ring on io_uring (`alarm`; those runtimes have no
//! monoio time driver), on monoio's timer on the legacy driver.
//! Invariants: a [`Deadline`] fires no earlier than the time it was armed for (unless armed in
//! a [`Group`] that is fired: a server's stop ends its idle waits on purpose), and at most one
//! tick (2^21 ns, 2.1 ms) plus the worker's scheduling delay later (plus monoio's rounding to
//! the next ms on the legacy driver); dropping a `Deadline` removes its entry in O(1), so the
//! wheel holds only live entries however many come and go; an arm reaches the entry at the
//! deadline's next poll, so the wheel files, and a group fires, only deadlines that are waited
//! on; an entry filed in a slot is re-armed later in place (it shares its cells with the wheel),
//! and the wheel is reached only to file it earlier; while an entry is filed, a ticker runs
//! (one that ends unfiles every entry). A `Deadline` never leaves its thread (it is `!Send`).
//!
//! Why not monoio's timer: a fresh `monoio::time::sleep` per upstream exchange (a 640-byte
//! 128-aligned entry, an allocation, a wheel insert), its re-arms, polls and removal, and its
//! entry keeps the first waker that polled it, so it could not stay with a pooled connection.
//! Here arming is a clock read and a store, polling compares a waker, and an entry follows
//! whichever task polls it: chat went from 29,012-29,098 to 28,783 instructions per request
//! with this wheel and pooled entries, to 28,701-28,766 with one clock read per head
//! (`net::read_more_until`), and to 28,572-28,581 leaving a completed read's deadline armed
//! (`net::read_more_before`), about -480 in all (callgrind, issue 18). Then monoio's time
//! driver still ran a pass on every park (timers or not, about 355 instructions per chat
//! request) for the other sleeps and this ticker; with those on the wheel and the ticker on a
//! timerfd, io_uring workers run without it: chat 26,393/26,391 -> 25,940/26,028, stream
//! 42,481 -> 41,295 (callgrind). An entry armed further than one turn of the wheel (8.8 s)
//! ahead costs the ticker one pass per turn until its own; a removed entry can cost it one
//! spurious pass at the tick it was filed for.

mod alarm;
mod wheel;

use std::cell::RefCell;
use std::future::Future;
use std::io;
use std::marker::PhantomData;
use std::os::fd::OwnedFd;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use crate::health::clock::Moment;
use wheel::{Entry, Wheel, NIL};

thread_local! {
    static WHEEL: RefCell<Wheel> = const { RefCell::new(Wheel::new()) };
    /// The timer descriptor `prepare_alarm` made for this thread's next ticker.
    static PREPARED_ALARM: RefCell<Option<OwnedFd>> = const { RefCell::new(None) };
}

fn with<R>(f: impl FnOnce(&mut Wheel) -> R) -> R {
    WHEEL.with(|wheel| f(&mut wheel.borrow_mut()))
}

/// One deadline, re-armed for each timed wait. Takes its wheel entry at the first poll after an
/// `arm` (a connection that never waits on a timed read takes none) and gives it back on drop.
///
/// An `arm` is only stored here; the next `poll_elapsed` hands it to the entry together with
/// the waker. Arming in the wheel at once cost a second access per timed wait (a thread-local,
/// a `RefCell` borrow and a bounds check), and a wait whose operation completes at its first
/// poll never needs the entry at all. A deadline armed
/// and never polled fires nothing (nobody waits on it), and one armed again before its poll
/// keeps only the latest arm, as before.
///
/// The entry is shared with the wheel (`wheel::Entry`, its fields in cells): a poll re-arms it
/// for a later deadline, reads whether it fired and swaps its waker on the entry itself, and
/// reaches the thread's wheel only to file it in an earlier slot (a first poll, an earlier
/// deadline, an entry a pass unfiled). Through the wheel at every poll (a thread-local, a
/// `RefCell` borrow, bounds checks) each timed wait cost about 150 instructions, twice per
/// chat request (callgrind, issue 18).
pub struct Deadline {
    index: u32,
    /// The group of the arm not yet in the wheel (0: none).
    unfiled_group: u32,
    /// The time (ns) of an arm not yet in the wheel, `UNARMED` when there is none.
    unfiled_at: u64,
    /// The entry at `index` in this thread's wheel, once it has one (`Rc`: never `Send`).
    entry: Option<Rc<Entry>>,
}

/// `Deadline::unfiled_at` when no arm waits for the next poll (the wheel's `NEVER`, which no arm
/// stores: arms saturate one nanosecond earlier).
const UNARMED: u64 = wheel::NEVER;

impl Default for Deadline {
    fn default() -> Self {
        Deadline::new()
    }
}

impl Deadline {
    pub const fn new() -> Deadline {
        Deadline {
            index: NIL,
            unfiled_group: 0,
            unfiled_at: UNARMED,
            entry: None,
        }
    }

    /// Fires `limit` from now (a limit past any clock saturates: never, in practice).
    pub fn arm(&mut self, limit: Duration) {
        self.arm_at(Moment::now() + limit);
    }

    /// Fires at `at`.
    pub fn arm_at(&mut self, at: Moment) {
        self.arm_in_group(at, 0);
    }

    /// Fires `limit` from now, or earlier when `group` is fired first (until armed again).
    pub fn arm_in(&mut self, limit: Duration, group: &Group) {
        self.arm_in_group(Moment::now() + limit, group.id);
    }

    fn arm_in_group(&mut self, at: Moment, group: u32) {
        // `NEVER` is kept for "disarmed": the last nanosecond of the clock is close enough.
        self.unfiled_at = at.nanos().min(wheel::NEVER - 1);
        self.unfiled_group = group;
    }

    /// Disarms and drops the waker: the owner goes idle (a pooled connection) and must not keep
    /// the last task that used it alive.
    pub fn idle(&mut self) {
        self.unfiled_at = UNARMED;
        if let Some(entry) = &self.entry {
            // Dropped with no borrow held: it may be a task's last reference.
            drop(entry.idle());
        }
    }

    /// Ready once the armed deadline passed; until then the task polling it is the one woken
    /// (whichever task that is). Pending forever when never armed. Files an arm made since the
    /// last poll, and starts this thread's ticker if it is not running.
    #[inline]
    pub fn poll_elapsed(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let at = std::mem::replace(&mut self.unfiled_at, UNARMED);
        let Some(entry) = &self.entry else {
            if at == UNARMED {
                return Poll::Pending;
            }
            return self.poll_in_wheel(at, cx);
        };
        if at != UNARMED {
            if !entry.rearm_later(at, self.unfiled_group) {
                return self.poll_in_wheel(at, cx);
            }
        } else if let Some(armed) = entry.armed_unfiled() {
            // Unfiled by a ticker that ended (`Wheel::drop_ticker`): filed again, for a new one.
            self.unfiled_group = entry.group();
            return self.poll_in_wheel(armed, cx);
        }
        let (fired, replaced) = entry.poll(cx.waker());
        drop(replaced);
        if fired {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }

    /// `poll_elapsed` through the wheel: the first arm (the entry is made), an arm earlier than
    /// the slot the entry is filed in, or one the wheel has not filed (fired, passed over as
    /// disarmed, or left by a ticker that ended). Starts this thread's ticker if it is not
    /// running.
    #[inline(never)]
    fn poll_in_wheel(&mut self, at: u64, cx: &mut Context<'_>) -> Poll<()> {
        let (fired, replaced, start_ticker) = with(|wheel| {
            if self.entry.is_none() {
                self.index = wheel.insert();
                self.entry = Some(wheel.shared(self.index));
            }
            wheel.arm(self.index, at, self.unfiled_group);
            let (fired, replaced) = wheel.poll(self.index, cx.waker());
            let start = !wheel.ticker_alive;
            if start {
                wheel.ticker_alive = true;
                wheel.ticker_generation += 1;
            }
            (fired, replaced, start.then_some(wheel.ticker_generation))
        });
        drop(replaced);
        if let Some(generation) = start_ticker {
            // Detached: it lives as long as the runtime (its guard resets the flag if dropped).
            drop(monoio::spawn(ticker(generation)));
        }
        if fired {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }
}

impl Drop for Deadline {
    fn drop(&mut self) {
        if self.index != NIL {
            // The thread's wheel is gone only at thread exit, and the entry with it.
            let waker = WHEEL.try_with(|wheel| wheel.borrow_mut().remove(self.index));
            drop(waker);
        }
    }
}

/// Deadlines that can be fired together before their time: a server's idle keep-alive waits,
/// cut short when it stops. Membership is a field the arming stores (no registration per wait,
/// where a stop future beside each idle read cost about 200 instructions per request), and
/// lasts until the deadline is armed again by any other `arm`.
pub struct Group {
    /// Never 0 (the wheel's "no group"); unique in the process.
    id: u32,
    /// Fires entries in this thread's wheel.
    _not_send: PhantomData<*const ()>,
}

impl Default for Group {
    fn default() -> Self {
        Group::new()
    }
}

impl Group {
    pub fn new() -> Group {
        static NEXT: AtomicU32 = AtomicU32::new(1);
        Group {
            id: NEXT.fetch_add(1, Ordering::Relaxed).max(1),
            _not_send: PhantomData,
        }
    }

    /// Fires now every deadline of this group that is armed and has not fired: each wakes its
    /// task and reads as elapsed until armed again. Returns how many fired. O(deadlines on the
    /// thread): for a stop, not for the request path.
    pub fn fire(&self) -> usize {
        WHEEL
            .try_with(|wheel| wheel.borrow_mut().fire_group(self.id))
            .unwrap_or(0)
    }
}

/// Forgets this thread's ticker: called when a runtime on this thread returns, whose tasks
/// (the ticker among them) will not run again, so the next runtime starts its own.
pub fn forget_ticker() {
    drop(PREPARED_ALARM.with(|p| p.borrow_mut().take()));
    let waker = WHEEL.try_with(|wheel| wheel.borrow_mut().drop_ticker());
    // Dropped with the wheel released: it is the ticker task's last reference.
    drop(waker);
}

/// Marks the ticker of this generation gone when its task is dropped (a stale one, from a
/// runtime that already ended, leaves a newer ticker alone).
struct Alive(u64);

impl Drop for Alive {
    fn drop(&mut self) {
        let waker = WHEEL.try_with(|wheel| {
            let mut wheel = wheel.borrow_mut();
            (wheel.ticker_generation == self.0).then(|| wheel.drop_ticker())
        });
        drop(waker);
    }
}

/// The thread's ticker: runs the wheel's pass when its wake source goes off or when a deadline
/// earlier than it is filed, then sleeps until the end of the first occupied tick. With nothing
/// filed it waits to be woken by the next filing. Its wake source is a timerfd read through the
/// ring on io_uring (workers run without monoio's time driver: `alarm`), monoio's timer on the
/// legacy driver, or when no timerfd can be had (that runtime must then have timers enabled).
async fn ticker(generation: u64) {
    let _alive = Alive(generation);
    if !monoio::utils::is_legacy() {
        let prepared = PREPARED_ALARM.with(|p| p.borrow_mut().take());
        match prepared
            .map_or_else(alarm::Alarm::descriptor, Ok)
            .and_then(alarm::Alarm::on)
        {
            Ok(alarm) => return tick_on_alarm(alarm).await,
            // Only a runtime with timers gets here: a worker prepared its descriptor before
            // serving (`prepare_alarm`), and one that could not did not start.
            Err(e) => tracing::warn!("no timerfd for the deadline ticker, using monoio's timer: {e}"),
        }
    }
    tick_on_monoio_timer().await
}

/// Makes the timer descriptor this thread's next ticker wakes on, for a runtime without
/// monoio's timer (a worker on io_uring), which has no other wake source: called before the
/// worker serves, so that running out of descriptors stops the start with this error rather
/// than the ticker later.
pub fn prepare_alarm() -> io::Result<()> {
    let fd = alarm::Alarm::descriptor()?;
    PREPARED_ALARM.with(|p| *p.borrow_mut() = Some(fd));
    Ok(())
}

/// One pass: wakes what expired, registers the ticker, and says when to run next.
fn pass(cx: &Context<'_>) -> Option<u64> {
    let (next, replaced) = with(|wheel| {
        let replaced = wheel.set_ticker(cx.waker());
        (wheel.expire(Moment::now().nanos()), replaced)
    });
    drop(replaced);
    next
}

async fn tick_on_alarm(mut alarm: alarm::Alarm) {
    std::future::poll_fn(|cx| loop {
        // Nothing filed: the alarm may still go off at its old time (one spurious pass).
        let Some(at) = pass(cx) else {
            return Poll::<()>::Pending;
        };
        if alarm.poll_at(at, cx).is_pending() {
            return Poll::Pending;
        }
    })
    .await
}

async fn tick_on_monoio_timer() {
    let mut timer: Option<Pin<Box<monoio::time::Sleep>>> = None;
    std::future::poll_fn(|cx| loop {
        let Some(at) = pass(cx) else {
            timer = None;
            return Poll::<()>::Pending;
        };
        let at = monoio::time::Instant::from_std(Moment::from_nanos(at).instant());
        let sleep = match &mut timer {
            Some(sleep) => {
                sleep.as_mut().reset(at);
                sleep
            }
            None => timer.insert(Box::pin(monoio::time::sleep_until(at))),
        };
        if sleep.as_mut().poll(cx).is_pending() {
            return Poll::Pending;
        }
    })
    .await
}

/// Completes `limit` from now: `monoio::time::sleep` for code on a worker, which runs without
/// monoio's timer on io_uring. Never early; late by at most the slack in the module doc.
pub async fn sleep(limit: Duration) {
    let mut deadline = Deadline::new();
    deadline.arm(limit);
    std::future::poll_fn(|cx| deadline.poll_elapsed(cx)).await
}

#[cfg(test)]
#[path = "tests.rs"]
mod tests;
