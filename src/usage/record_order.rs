//! The order of a drain's records (`RecordQueue::drain`): each source, a worker's lane or the
//! shared queue, put in the order its requests ended, then the sources merged by that time, so
//! rows are numbered in the order requests ended, across workers.
//! Invariant: every record of every source comes out exactly once; records whose requests
//! ended at the same time keep the sources' order, then the order they were pushed in.

use super::{Ordered, RequestRecord};

/// Records and the times their requests ended, side by side: a lane's records are nearly
/// always in that order already.
#[derive(Default)]
pub(super) struct Timed {
    pub(super) ended: Vec<u64>,
    pub(super) records: Vec<RequestRecord>,
}

impl Timed {
    pub(super) fn len(&self) -> usize {
        self.records.len()
    }

    pub(super) fn push(&mut self, (ended, record): Ordered) {
        self.ended.push(ended);
        self.records.push(record);
    }

    /// The same records in the order their requests ended (ties in the order they were
    /// pushed): as they are when already so, else sorted by (time, position) pairs and moved
    /// once each (sorting the ~140-byte records themselves moved each several times, and a
    /// stable sort's scratch copy of a 10,000-record batch left the writer's heap megabytes
    /// larger).
    fn sorted(self) -> Timed {
        if self.ended.is_sorted() {
            return self;
        }
        let mut order: Vec<(u64, usize)> = self.ended.iter().copied().zip(0..).collect();
        order.sort_unstable();
        // `Option` of a record is no larger than the record: this reuses the vector's memory.
        let mut slots: Vec<Option<RequestRecord>> = self.records.into_iter().map(Some).collect();
        let records = order
            .iter()
            .filter_map(|&(_, at)| slots.get_mut(at).and_then(Option::take))
            .collect();
        let ended = order.into_iter().map(|(ended, _)| ended).collect();
        Timed { ended, records }
    }
}

/// The records of `sources` in the order their requests ended. A lone source already in order
/// is handed on as it is (one busy worker: no record moves); else each source is put in order
/// and they are merged a run at a time, each record moved once. Issue 18: the lanes appended
/// into one vector and that sorted by (time, position) moved a record four or five times, and
/// with two workers busy at 64 connections a quarter of the log writer's time was `memmove`
/// (`perf record` of its thread).
pub(super) fn in_order_ended(sources: Vec<Timed>) -> Vec<RequestRecord> {
    let mut sources: Vec<Timed> = sources
        .into_iter()
        .filter(|source| !source.records.is_empty())
        .map(Timed::sorted)
        .collect();
    if sources.len() <= 1 {
        return sources.pop().map(|source| source.records).unwrap_or_default();
    }
    let mut out = Vec::with_capacity(sources.iter().map(Timed::len).sum());
    let mut heads: Vec<Head> = sources
        .into_iter()
        .map(|source| Head {
            ended: source.ended,
            at: 0,
            records: source.records.into_iter(),
        })
        .collect();
    while let Some((first, until)) = next_run(&heads) {
        let Some(head) = heads.get_mut(first) else {
            break;
        };
        let ahead = head.ended.get(head.at..).unwrap_or_default();
        let run = ahead.iter().take_while(|&&time| (time, first) < until).count();
        head.at += run;
        out.extend(head.records.by_ref().take(run));
    }
    out
}

/// A source being merged: its records not yet taken, and the times their requests ended.
struct Head {
    ended: Vec<u64>,
    /// Where the next record's time is in `ended`.
    at: usize,
    records: std::vec::IntoIter<RequestRecord>,
}

/// The source whose next request ended first (ties: the earlier source), and the (time,
/// source) of the first next record of any other, where that source's run stops; `None` once
/// every source is taken. Sources are few (a lane a worker and the shared queue).
fn next_run(heads: &[Head]) -> Option<(usize, (u64, usize))> {
    let mut first: Option<(u64, usize)> = None;
    let mut until = (u64::MAX, usize::MAX);
    for (at, head) in heads.iter().enumerate() {
        let Some(&time) = head.ended.get(head.at) else {
            continue;
        };
        match first {
            Some(earliest) if (time, at) > earliest => until = until.min((time, at)),
            Some(earliest) => {
                until = earliest;
                first = Some((time, at));
            }
            None => first = Some((time, at)),
        }
    }
    first.map(|(_, at)| (at, until))
}
