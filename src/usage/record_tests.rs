//! Tests of the request record queue: lanes, drops, drains and the text fields.

use super::*;

#[test]
fn a_full_queue_counts_drops_and_keeps_the_oldest() {
    let q = RecordQueue::with_capacity(2);
    for i in 0..5 {
        assert_eq!(q.push(numbered(200 + i)), i < 2);
    }
    assert_eq!(q.dropped(), 3);
    assert!(q.last_drop_ms() > 0);
    let drained = q.drain(10);
    assert_eq!(drained.iter().map(|r| r.status).collect::<Vec<_>>(), vec![200, 201]);
    assert!(q.is_empty());
}

fn numbered(status: u16) -> RequestRecord {
    RequestRecord {
        status,
        ..Default::default()
    }
}

/// A request that ended at `ns` (the order key of a lane's records).
fn at(ns: u64) -> Moment {
    Moment::from_nanos(ns)
}

#[test]
fn lanes_share_the_capacity_and_drain_every_record_once_in_the_order_requests_ended() {
    let q = RecordQueue::with_capacity(8);
    let (a, b) = (q.lane(), q.lane());
    assert!(
        q.push_to(&b, at(15), numbered(200)),
        "b's request ended between a's second and third"
    );
    for i in 0..5 {
        let ended = at(10 + 10 * u64::from(i));
        assert_eq!(q.push_to(&a, ended, numbered(100 + i)), i < 4, "a lane holds half");
    }
    assert_eq!((q.len(), q.dropped()), (5, 1));
    let first = q.drain(3);
    assert_eq!(first.iter().map(|r| r.status).collect::<Vec<_>>(), [100, 200, 101]);
    assert_eq!(q.len(), 2, "what did not fit waits for the next drain");
    assert!(q.push_to(&a, at(5), numbered(104)), "the lane was taken: room again");
    let rest = q.drain(10);
    assert_eq!(
        rest.iter().map(|r| r.status).collect::<Vec<_>>(),
        [102, 103, 104],
        "leftovers first (they were drained before), then the rest in the order requests ended"
    );
    assert!(q.push(numbered(300)), "a push without a lane");
    assert_eq!(q.drain(10).iter().map(|r| r.status).collect::<Vec<_>>(), [300]);
    assert!(q.is_empty());
    assert!(q.drain(10).is_empty());
    let burst = RecordQueue::with_capacity(1 << 20);
    let c = burst.lane();
    assert!((0..10 * LANE_KEEP as u16).all(|i| burst.push_to(&c, at(u64::from(i)), numbered(i))));
    assert_eq!(burst.drain(usize::MAX).len(), 10 * LANE_KEEP);
    assert!(burst.push_to(&c, at(0), numbered(0)) && burst.drain(1).len() == 1);
    let room = c.records.lock().records.capacity();
    assert!(room <= LANE_KEEP, "a burst's room goes with the next take: {room}");
}

#[test]
fn a_worker_pushing_while_the_writer_drains_loses_nothing() {
    let q = Arc::new(RecordQueue::with_capacity(1 << 20));
    let lane = q.lane();
    const N: u16 = 50_000;
    let pusher = {
        let q = q.clone();
        std::thread::spawn(move || (0..N).all(|i| q.push_to(&lane, at(u64::from(i)), numbered(i))))
    };
    let mut seen = Vec::new();
    loop {
        let done = pusher.is_finished();
        seen.extend(q.drain(64).into_iter().map(|r| r.status));
        if done && q.is_empty() {
            break;
        }
    }
    assert!(pusher.join().unwrap(), "nothing was dropped");
    // A record that met a lane being taken went to the shared queue: order aside, each
    // arrives once.
    seen.sort_unstable();
    assert!(seen.iter().copied().eq(0..N));
    assert!(q.is_empty());
}

#[test]
fn text_fields_round_trip_through_one_allocation() {
    let text = RecordText {
        request_id: "req-1",
        client: "web",
        endpoint: "chat",
        model: "gpt-4o-mini",
        provider: "",
        upstream_model: "gpt-4o-mini-2024",
        key: "…abcd",
        error: "upstream_timeout",
    };
    assert_eq!(Texts::new(&text).get(), text);
    let key = Texts::new(&text);
    let (run, ends) = key.label_key();
    assert_eq!(run, "webchatgpt-4o-minigpt-4o-mini-2024…abcdupstream_timeout");
    assert_eq!(ends, [3, 7, 18, 18, 34, 41, 57]);
    assert_eq!(
        Texts::split_label(run, &ends),
        [
            "web",
            "chat",
            "gpt-4o-mini",
            "",
            "gpt-4o-mini-2024",
            "…abcd",
            "upstream_timeout"
        ]
    );
    assert_eq!(key.request_id(), "req-1");
    let moved = Texts::new(&RecordText {
        client: "webc",
        endpoint: "hat",
        request_id: "other",
        ..text
    });
    assert_eq!(moved.label_key().0, run, "the same run of text...");
    assert_ne!(
        moved.label_key(),
        key.label_key(),
        "...split elsewhere is another label"
    );
    assert_eq!(RequestRecord::default().text.get(), RecordText::default());
    let long = "é".repeat(MAX_FIELD_BYTES);
    let t = Texts::new(&RecordText {
        model: &long,
        key: "k",
        ..Default::default()
    });
    assert_eq!(t.get().model.len(), MAX_FIELD_BYTES, "cut at a char boundary");
    assert_eq!(t.get().key, "k");
    assert!(
        std::mem::size_of::<RequestRecord>() <= 168,
        "{}",
        std::mem::size_of::<RequestRecord>()
    );
}

/// One lane's records are taken as they are when their requests ended in the order they were
/// pushed (ties too), and put in that order when not (a request whose end was read before a
/// record pushed ahead of it).
#[test]
fn one_lane_drains_in_the_order_requests_ended_whether_pushed_so_or_not() {
    let q = RecordQueue::with_capacity(64);
    let lane = q.lane();
    for (ns, status) in [(1, 100), (2, 101), (2, 102), (3, 103)] {
        assert!(q.push_to(&lane, at(ns), numbered(status)));
    }
    assert_eq!(
        q.drain(10).iter().map(|r| r.status).collect::<Vec<_>>(),
        [100, 101, 102, 103]
    );
    for (ns, status) in [(5, 202), (4, 200), (4, 201), (6, 203)] {
        assert!(q.push_to(&lane, at(ns), numbered(status)));
    }
    assert_eq!(q.drain(3).iter().map(|r| r.status).collect::<Vec<_>>(), [200, 201, 202]);
    assert!(q.push_to(&lane, at(7), numbered(204)));
    assert_eq!(q.drain(10).iter().map(|r| r.status).collect::<Vec<_>>(), [203, 204]);
    assert!(q.is_empty());
}

/// Request ids of the usual lengths (rotor's 16 hex digits, a UUID, `req_` and 32 hex digits)
/// are held in the record itself, so the writer's drop frees nothing the worker allocated; a
/// longer one takes a box, and one past `MAX_FIELD_BYTES` is cut. Each reads back as it was.
#[test]
fn usual_request_ids_are_held_inline_and_longer_ones_boxed() {
    let label = Arc::new(Label::default());
    for (id, inline) in [
        ("0123456789abcdef".to_owned(), true),
        ("123e4567-e89b-12d3-a456-426614174000".to_owned(), true),
        (format!("req_{}", "f".repeat(36)), true),
        (format!("req_{}", "f".repeat(37)), false),
    ] {
        let texts = Texts::with_label(id.as_bytes(), label.clone());
        assert_eq!(texts.request_id(), id);
        assert_eq!(!texts.request_id.spilled(), inline, "{} bytes", id.len());
    }
    let long = "x".repeat(MAX_FIELD_BYTES + 5);
    let texts = Texts::with_label(long.as_bytes(), label);
    assert_eq!(texts.request_id().len(), MAX_FIELD_BYTES);
}

/// Several lanes and the shared queue drain as one sequence in the order requests ended: ties
/// keep the lanes' order (then the queue's), a lane pushed out of order is put in order first,
/// and every record comes out once. The expected order is a stable sort of every record by the
/// time its request ended, lanes first, then the queue.
#[test]
fn lanes_and_the_queue_merge_in_the_order_requests_ended() {
    let q = RecordQueue::with_capacity(1 << 16);
    let lanes = [q.lane(), q.lane(), q.lane()];
    let mut seed = 7u64;
    let mut pushed: Vec<(u64, usize, u16)> = Vec::new();
    for status in 0..3000u16 {
        seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        let source = (seed >> 33) as usize % 4;
        // Lanes 0 and 1 push in the order their requests ended (with ties); lane 2 and the
        // shared queue out of it.
        let ended = match source {
            0 | 1 => u64::from(status / 3),
            _ => (seed >> 40) % 1000,
        };
        pushed.push((ended, source, status));
        let queued = match lanes.get(source) {
            Some(lane) => q.push_to(lane, at(ended), numbered(status)),
            None => q.push_ordered((ended, numbered(status))),
        };
        assert!(queued);
    }
    pushed.sort_by_key(|&(ended, source, _)| (ended, source));
    let expected: Vec<u16> = pushed.iter().map(|&(_, _, status)| status).collect();
    let drained: Vec<u16> = q.drain(usize::MAX).iter().map(|r| r.status).collect();
    assert_eq!(drained, expected);
    assert!(q.is_empty());
}

/// With one lane busy and in order, the batch is that lane's vector: no record is moved.
#[test]
fn a_lone_lane_in_order_is_handed_over_as_it_is() {
    let q = RecordQueue::with_capacity(64);
    let (busy, _idle) = (q.lane(), q.lane());
    for i in 0..10 {
        assert!(q.push_to(&busy, at(u64::from(i)), numbered(i)));
    }
    let held = busy.records.lock().records.as_ptr();
    let drained = q.drain(64);
    assert_eq!(drained.len(), 10);
    assert_eq!(drained.as_ptr(), held);
}
