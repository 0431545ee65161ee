//! The wheel on a made-up clock: when entries fire, how re-arming moves them, and that removal
//! and disarming leave nothing filed.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Wake, Waker};

use super::{Wheel, NEVER, SLOTS, TICK_SHIFT};

const MS: u64 = 1_000_000;
const TICK: u64 = 1 << TICK_SHIFT;

/// A waker that counts its wakes.
struct Count(AtomicUsize);

impl Wake for Count {
    fn wake(self: Arc<Self>) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
}

fn counter() -> (Arc<Count>, Waker) {
    let count = Arc::new(Count(AtomicUsize::new(0)));
    (count.clone(), Waker::from(count))
}

fn wakes(count: &Count) -> usize {
    count.0.load(Ordering::Relaxed)
}

/// Runs the ticker's passes as its timer would: at each time `expire` asks for, until `until`.
fn run_until(wheel: &mut Wheel, from: u64, until: u64) -> u64 {
    let mut now = from;
    while let Some(next) = wheel.expire(now) {
        if next > until {
            break;
        }
        now = next;
    }
    now
}

/// An entry fires at the first pass at or after its deadline, never before, and the ticker is
/// asked to run no later than one tick after it.
#[test]
fn fires_on_time_never_early() {
    let mut wheel = Wheel::new();
    let start = 1_000 * MS;
    wheel.expire(start);
    let (count, waker) = counter();
    let e = wheel.insert();
    let deadline = start + 50 * MS;
    wheel.arm(e, deadline, 0);
    assert!(!wheel.poll(e, &waker).0);
    // A pass just before the deadline fires nothing; the ticker is asked to run again by the
    // end of the deadline's tick, and then it fires.
    let next = wheel.expire(deadline - 1).expect("something is filed");
    assert!(!wheel.poll(e, &waker).0);
    assert_eq!(wakes(&count), 0);
    assert!(next > deadline && next <= deadline + TICK, "{next} for {deadline}");
    wheel.expire(next);
    assert!(wheel.poll(e, &waker).0);
    assert_eq!(wakes(&count), 1);
    assert_eq!(wheel.filed(), 0, "a fired entry leaves its slot");
    assert_eq!(wheel.expire(next), None, "nothing filed: the ticker parks");
    assert_eq!(wheel.ticker_at(), NEVER);
}

/// Re-arming to a later deadline keeps the entry where it is (the pass at the old slot moves
/// it); it fires at the later deadline only. Re-arming earlier re-files it at once. Arming again
/// after it fired clears the fired mark.
#[test]
fn rearm_later_and_earlier() {
    let mut wheel = Wheel::new();
    let start = 5_000 * MS;
    wheel.expire(start);
    let (count, waker) = counter();
    let e = wheel.insert();
    wheel.arm(e, start + 10 * MS, 0);
    drop(wheel.poll(e, &waker));
    wheel.arm(e, start + 300 * MS, 0);
    let now = run_until(&mut wheel, start, start + 299 * MS);
    assert!(!wheel.poll(e, &waker).0, "not at the first deadline (ran to {now})");
    assert_eq!(wakes(&count), 0);
    assert_eq!(wheel.filed(), 1, "re-filed under the later deadline");
    wheel.expire(start + 300 * MS + TICK);
    assert!(wheel.poll(e, &waker).0);
    // Earlier than filed: moved now, fires at the earlier one.
    let now = start + 400 * MS;
    wheel.arm(e, now + 10 * SLOTS * TICK, 0);
    assert!(!wheel.poll(e, &waker).0, "arming clears the fired mark");
    wheel.arm(e, now + 20 * MS, 0);
    let next = wheel.expire(now).expect("filed");
    assert!(next <= now + 20 * MS + TICK, "the ticker runs by the earlier deadline");
    wheel.expire(now + 20 * MS);
    assert!(wheel.poll(e, &waker).0);
}

/// A deadline several turns of the wheel away is kept, not fired, each time its slot comes
/// round, and fires in its own turn.
#[test]
fn far_deadline_survives_turns() {
    let mut wheel = Wheel::new();
    let start = 7 * MS;
    wheel.expire(start);
    let (count, waker) = counter();
    let e = wheel.insert();
    let deadline = start + 3 * SLOTS * TICK + 5 * MS;
    wheel.arm(e, deadline, 0);
    drop(wheel.poll(e, &waker));
    let mut passes = 0;
    let mut now = start;
    while let Some(next) = wheel.expire(now) {
        if wheel.poll(e, &waker).0 {
            break;
        }
        assert!(next > now);
        now = next;
        passes += 1;
    }
    assert!(
        now >= deadline && now <= deadline + TICK,
        "fired at {now} for {deadline}"
    );
    assert!(passes <= 5, "one pass per turn, not per tick: {passes}");
    assert_eq!(wakes(&count), 1);
}

/// A disarmed entry wakes nobody and leaves its slot at the next pass there; removal unlinks
/// at once and the slab reuses the freed entry.
#[test]
fn disarm_and_remove_leave_nothing() {
    let mut wheel = Wheel::new();
    let start = 100 * MS;
    wheel.expire(start);
    let (count, waker) = counter();
    let a = wheel.insert();
    let b = wheel.insert();
    wheel.arm(a, start + 5 * MS, 0);
    wheel.arm(b, start + 5 * MS, 0);
    drop(wheel.poll(a, &waker));
    drop(wheel.poll(b, &waker));
    wheel.disarm(a);
    drop(wheel.remove(b));
    assert_eq!(wheel.filed(), 1, "removed at once; disarmed stays until its slot");
    wheel.expire(start + 50 * MS);
    assert_eq!(wakes(&count), 0);
    assert_eq!(wheel.filed(), 0);
    assert_eq!(wheel.expire(start + 50 * MS), None);
    let c = wheel.insert();
    assert_eq!(c, b, "the freed entry is reused");
    assert_eq!(wheel.slab_len(), 2);
}

/// Many entries with deadlines spread over several turns: each fires exactly once, never
/// early and within a tick of its deadline, and entries dropped halfway (every third) never
/// fire; at the end nothing is filed and the slab is only as large as the peak.
#[test]
fn many_entries_fire_once_each() {
    let mut wheel = Wheel::new();
    let start = 3_000 * MS;
    wheel.expire(start);
    let n = 2_000u64;
    let mut entries = Vec::new();
    let mut counts = Vec::new();
    for i in 0..n {
        let (count, waker) = counter();
        let e = wheel.insert();
        // Spread over about two turns, several per tick, in no order.
        let deadline = start + (i * 7_919_000_003) % (2 * SLOTS * TICK);
        wheel.arm(e, deadline, 0);
        drop(wheel.poll(e, &waker));
        entries.push((e, deadline, waker, true));
        counts.push(count);
    }
    let mut now = start;
    let mut removed = false;
    while let Some(next) = wheel.expire(now) {
        for (i, (e, deadline, waker, live)) in entries.iter_mut().enumerate() {
            if *live && wheel.poll(*e, waker).0 {
                assert!(now >= *deadline, "entry {i} fired early at {now} for {deadline}");
                assert!(now <= *deadline + TICK, "entry {i} fired late at {now} for {deadline}");
                drop(wheel.remove(*e));
                *live = false;
            }
        }
        if !removed && now > start + SLOTS * TICK {
            for (e, _, _, live) in entries.iter_mut().step_by(3) {
                if *live {
                    drop(wheel.remove(*e));
                    *live = false;
                }
            }
            removed = true;
        }
        now = next;
    }
    assert!(removed);
    for (i, count) in counts.iter().enumerate() {
        assert!(wakes(count) <= 1, "entry {i} woke {} times", wakes(count));
    }
    let fired = counts.iter().filter(|c| wakes(c) == 1).count() as u64;
    assert!(fired > n / 2 && fired < n, "{fired} of {n} fired");
    assert_eq!(wheel.filed(), 0);
    assert_eq!(wheel.slab_len(), n as usize, "no more entries than were live at once");
}

/// Entries armed and dropped over and over (an exchange per request) keep the slab and the
/// wheel at the number live at once, however many come and go.
#[test]
fn churn_is_bounded() {
    let mut wheel = Wheel::new();
    let mut now = 9_000 * MS;
    let (_count, waker) = counter();
    for _ in 0..100_000 {
        let e = wheel.insert();
        wheel.arm(e, now + 60_000 * MS, 0);
        drop(wheel.poll(e, &waker));
        drop(wheel.remove(e));
        now += 10_000;
        wheel.expire(now);
    }
    assert_eq!(wheel.slab_len(), 1);
    assert_eq!(wheel.filed(), 0);
    assert_eq!(wheel.expire(now), None);
}

/// Filing a deadline before the ticker's next run wakes the ticker; one after it does not.
#[test]
fn earlier_filing_wakes_the_ticker() {
    let mut wheel = Wheel::new();
    let start = 40 * MS;
    let (ticker, ticker_waker) = counter();
    drop(wheel.set_ticker(&ticker_waker));
    wheel.expire(start);
    let e = wheel.insert();
    wheel.arm(e, start + 100 * MS, 0);
    assert_eq!(wakes(&ticker), 1, "a parked ticker is woken by the first filing");
    wheel.expire(start);
    let f = wheel.insert();
    wheel.arm(f, start + 200 * MS, 0);
    assert_eq!(
        wakes(&ticker),
        1,
        "a later deadline: the ticker's timer already covers it"
    );
    wheel.arm(f, start + 10 * MS, 0);
    assert_eq!(wakes(&ticker), 2, "an earlier one: it must sleep less");
}

/// Firing a group wakes, at once, exactly its armed entries that have not fired: not another
/// group's, not ungrouped ones, not disarmed or freed ones, and not one re-armed without the
/// group since; fired entries leave their slots and report fired until armed again.
#[test]
fn fire_group_fires_only_its_armed_entries() {
    let mut wheel = Wheel::new();
    let start = 100 * MS;
    wheel.expire(start);
    let (mine, mine_waker) = counter();
    let (other, other_waker) = counter();
    let a = wheel.insert();
    let b = wheel.insert();
    let ungrouped = wheel.insert();
    let foreign = wheel.insert();
    let disarmed = wheel.insert();
    let regrouped = wheel.insert();
    for (e, group) in [
        (a, 7),
        (b, 7),
        (ungrouped, 0),
        (foreign, 8),
        (disarmed, 7),
        (regrouped, 7),
    ] {
        wheel.arm(e, start + 60_000 * MS, group);
    }
    for e in [a, b, disarmed, regrouped] {
        drop(wheel.poll(e, &mine_waker));
    }
    for e in [ungrouped, foreign] {
        drop(wheel.poll(e, &other_waker));
    }
    wheel.disarm(disarmed);
    // Re-armed for another wait that the group must not cut short (a head read after the idle
    // wait on the same connection timer).
    wheel.arm(regrouped, start + 60_000 * MS, 0);
    let gone = wheel.insert();
    wheel.arm(gone, start + 60_000 * MS, 7);
    drop(wheel.remove(gone));
    assert_eq!(wheel.fire_group(0), 0, "group 0 is no group");
    assert_eq!(wheel.fire_group(7), 2);
    assert_eq!(wakes(&mine), 2);
    assert_eq!(wakes(&other), 0);
    assert!(wheel.poll(a, &mine_waker).0);
    assert!(wheel.poll(b, &mine_waker).0);
    assert!(!wheel.poll(regrouped, &mine_waker).0);
    assert!(!wheel.poll(ungrouped, &other_waker).0);
    // Left: ungrouped, foreign, regrouped, and the disarmed one until a pass reaches its slot.
    assert_eq!(wheel.filed(), 4, "the fired entries left their slots");
    assert_eq!(wheel.fire_group(7), 0, "a second firing finds nothing");
    assert_eq!(wakes(&mine), 2);
    // Armed again, an entry waits for its deadline as before.
    wheel.arm(a, start + 10 * MS, 7);
    assert!(!wheel.poll(a, &mine_waker).0);
    wheel.expire(start + 20 * MS);
    assert!(wheel.poll(a, &mine_waker).0);
}

/// The search for the next occupied slot (which skips empty words through `occupied_words`)
/// finds what a slot-by-slot scan finds, from any start and over any span, wrapping around the
/// wheel, as entries are filed and removed.
#[test]
fn next_occupied_matches_a_scan_of_every_slot() {
    let mut wheel = Wheel::new();
    let scan = |wheel: &Wheel, from: u64, count: u64| {
        (0..count).find(|k| wheel.heads[((from + k) % SLOTS) as usize] != super::NIL)
    };
    let mut rng = fastrand::Rng::with_seed(18);
    let mut live = Vec::new();
    for round in 0..400 {
        if live.len() > 12 || (round % 3 == 2 && !live.is_empty()) {
            let index = live.swap_remove(rng.usize(..live.len()));
            drop(wheel.remove(index));
        } else {
            let index = wheel.insert();
            // Deadlines anywhere in the next two turns: slots all over the wheel, some in the
            // same word, some wrapping past the last slot.
            wheel.arm(index, rng.u64(..2 * SLOTS) * TICK, 0);
            live.push(index);
        }
        for _ in 0..20 {
            let from = rng.u64(..2 * SLOTS);
            let count = rng.u64(1..=SLOTS);
            assert_eq!(
                wheel.next_occupied(from, count),
                scan(&wheel, from, count),
                "from {from}, count {count}"
            );
        }
    }
}
