//! The control thread's request-log writes, and its naps between them, in the kernel's
//! `SCHED_IDLE` class while CPUs have room (`storage.writer_class`): a worker, client or
//! upstream woken on the CPU the thread holds then takes that CPU at once, where a thread in
//! the normal class keeps it for its whole run (EEVDF's run-to-parity), which put the log's
//! ~1 % of a core right at p99 at one connection (issue 18). Used only where the thread may
//! return to the normal class (`CAP_SYS_NICE`, or an `RLIMIT_NICE` of 20), found at start, and
//! the kernel reports its time waiting for a CPU (`/proc/<tid>/schedstat`).
//! Invariant: the thread is in the idle class only inside a `begin`..`end` stretch, which holds
//! no lock a worker takes while serving (but for the storage status's error text, set when a
//! write fails or the file vanished, which `/health` reads); a watchdog thread in the normal
//! class returns it to the normal class once it has waited `STARVED` for a CPU within one
//! `WATCH` (the CPUs are full), and keeps it there for `NORMAL_FOR`, so a stretch is never
//! starved for longer than about `WATCH`. The watchdog sleeps through a `WATCH` without
//! stretches until the next one.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crate::config::WriterClass;
use crate::storage::health::clock_ms;

/// How often the watchdog looks at the control thread.
const WATCH: Duration = Duration::from_millis(20);
/// Waiting this long for a CPU within one `WATCH` means the CPUs are full. A thread that
/// waits less still gets a quarter of `WATCH` or more, many times what the log's writes take
/// (1-5 % of a core); at one connection on 2 CPUs, a 10 ms bound was crossed within the first
/// seconds of each of two 3-4 s runs, 15 ms once in three 5 s runs.
const STARVED: Duration = Duration::from_millis(15);
/// How long the thread stays in the normal class after it was found starved.
const NORMAL_FOR: Duration = Duration::from_secs(5);

/// What the control thread and its watchdog share.
#[derive(Default)]
struct Watch {
    in_stretch: AtomicBool,
    /// Stretches begun, so the watchdog sees whether any ran since its last look.
    stretches: AtomicU64,
    /// The watchdog sleeps until a stretch begins (`begin` wakes it).
    asleep: AtomicBool,
    /// `clock_ms` until which no stretch starts; 0 = none.
    normal_until_ms: AtomicU64,
    starved: AtomicU64,
    stop: AtomicBool,
}

/// The control thread's use of the idle class: usable on this machine or not, its watchdog.
pub struct IdleClass {
    watch: Arc<Watch>,
    watchdog: Option<JoinHandle<()>>,
}

/// A stretch in the idle class, begun by `IdleClass::begin`.
pub struct Stretch(());

impl IdleClass {
    /// For the calling thread, the one that will call `begin` and `end`: whether it may enter
    /// the idle class and leave it again, and can be watched; if so, its watchdog starts.
    pub fn probe() -> IdleClass {
        let watch = Arc::new(Watch::default());
        let schedstat = may_leave_idle_class()
            .then(|| File::open(format!("/proc/self/task/{}/schedstat", gettid())).ok())
            .flatten()
            .filter(|file| waited_ns(file).is_some());
        let watchdog = schedstat.and_then(|file| {
            let (watch, tid) = (watch.clone(), gettid());
            std::thread::Builder::new()
                .name("rotor-watchdog".into())
                .spawn(move || watch_over(&watch, tid, &file))
                .ok()
        });
        IdleClass { watch, watchdog }
    }

    /// Whether stretches run in the idle class on this machine (else `begin` never enters it).
    pub fn usable(&self) -> bool {
        self.watchdog.is_some()
    }

    /// Times the watchdog found the thread starved in the idle class.
    pub fn starved(&self) -> u64 {
        self.watch.starved.load(Ordering::Relaxed)
    }

    /// Enters the idle class when `class` allows it and the CPUs were not full lately; `None`
    /// when the stretch stays in the normal class. Hand what it returns to `end`.
    pub fn begin(&mut self, class: WriterClass) -> Option<Stretch> {
        if class == WriterClass::Normal || !self.usable() {
            return None;
        }
        if clock_ms() < self.watch.normal_until_ms.load(Ordering::Relaxed) {
            return None;
        }
        self.watch.in_stretch.store(true, Ordering::SeqCst);
        self.watch.stretches.fetch_add(1, Ordering::Relaxed);
        if self.watch.asleep.load(Ordering::SeqCst) {
            if let Some(watchdog) = &self.watchdog {
                watchdog.thread().unpark();
            }
        }
        if enter(0, libc::SCHED_IDLE) {
            return Some(Stretch(()));
        }
        self.watch.in_stretch.store(false, Ordering::Relaxed);
        None
    }

    /// Back in the normal class after a stretch `begin` started.
    pub fn end(&mut self, stretch: Option<Stretch>) {
        if stretch.is_none() {
            return;
        }
        self.watch.in_stretch.store(false, Ordering::Relaxed);
        if !enter(0, libc::SCHED_OTHER) {
            tracing::error!("the control thread could not leave the idle scheduling class");
        }
    }
}

impl Drop for IdleClass {
    fn drop(&mut self) {
        self.watch.stop.store(true, Ordering::Relaxed);
        if let Some(watchdog) = self.watchdog.take() {
            watchdog.thread().unpark();
            let _ = watchdog.join();
        }
    }
}

/// Whether this process may put a thread in the idle class and take it out again, tried on a
/// thread of its own (a thread that could not leave would stay there).
pub fn may_leave_idle_class() -> bool {
    std::thread::spawn(|| enter(0, libc::SCHED_IDLE) && enter(0, libc::SCHED_OTHER))
        .join()
        .unwrap_or(false)
}

/// The watchdog's loop: every `WATCH`, the time thread `tid` waited for a CPU; past `STARVED`
/// inside a stretch, the thread goes back to the normal class for `NORMAL_FOR`.
fn watch_over(watch: &Watch, tid: libc::pid_t, schedstat: &File) {
    let mut waited_before = waited_ns(schedstat).unwrap_or(0);
    let mut stretches_before = 0;
    while !watch.stop.load(Ordering::Relaxed) {
        let stretches = watch.stretches.load(Ordering::Relaxed);
        if stretches == stretches_before && !watch.in_stretch.load(Ordering::SeqCst) {
            // No stretch through a whole `WATCH`: asleep until `begin` (or `drop`) wakes it,
            // `in_stretch` read again after `asleep` is set so no wake is missed.
            watch.asleep.store(true, Ordering::SeqCst);
            if !watch.in_stretch.load(Ordering::SeqCst) {
                std::thread::park();
            }
            watch.asleep.store(false, Ordering::SeqCst);
            waited_before = waited_ns(schedstat).unwrap_or(waited_before);
        }
        stretches_before = stretches;
        std::thread::park_timeout(WATCH);
        let Some(waited) = waited_ns(schedstat) else {
            return;
        };
        let starved = Duration::from_nanos(waited.saturating_sub(waited_before)) >= STARVED;
        waited_before = waited;
        if starved && watch.in_stretch.load(Ordering::Relaxed) {
            let until = clock_ms() + NORMAL_FOR.as_millis() as u64;
            watch.normal_until_ms.store(until, Ordering::Relaxed);
            if enter(tid, libc::SCHED_OTHER) {
                watch.starved.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// A thread's total time waiting on a run queue, in ns: the second field of its schedstat.
fn waited_ns(file: &File) -> Option<u64> {
    let mut text = [0u8; 96];
    let read = file.read_at(&mut text, 0).ok()?;
    let line = std::str::from_utf8(text.get(..read)?).ok()?;
    line.split_ascii_whitespace().nth(1)?.parse().ok()
}

/// Puts thread `tid` (0: the calling thread) in scheduling class `policy` (priority 0).
#[allow(unsafe_code)]
fn enter(tid: libc::pid_t, policy: libc::c_int) -> bool {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: `param` is a valid `sched_param`; `tid` is 0 or a thread of this process.
    unsafe { libc::sched_setscheduler(tid, policy, &param) == 0 }
}

#[allow(unsafe_code)]
fn gettid() -> libc::pid_t {
    // SAFETY: no arguments, cannot fail.
    unsafe { libc::gettid() }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;

    #[allow(unsafe_code)]
    fn class_now() -> libc::c_int {
        // SAFETY: pid 0 is the calling thread.
        unsafe { libc::sched_getscheduler(0) }
    }

    /// A stretch puts the thread in the idle class and `end` takes it out; `normal` never
    /// enters it; on a machine where the class cannot be left, nothing uses it (CI runs as root,
    /// where it can).
    #[test]
    fn a_stretch_is_spent_in_the_idle_class_and_ends_in_the_normal_one() {
        let mut idle = IdleClass::probe();
        assert_eq!(idle.usable(), may_leave_idle_class());
        if !idle.usable() {
            assert!(idle.begin(WriterClass::Auto).is_none());
            return;
        }
        let stretch = idle.begin(WriterClass::Auto);
        assert!(stretch.is_some());
        assert_eq!(class_now(), libc::SCHED_IDLE);
        idle.end(stretch);
        assert_eq!(class_now(), libc::SCHED_OTHER);
        assert!(idle.begin(WriterClass::Normal).is_none());
        assert_eq!(class_now(), libc::SCHED_OTHER);
    }

    /// With every CPU taken by busy normal-class threads, a thread spinning in a stretch is
    /// returned to the normal class by the watchdog within a few `WATCH`es, counted, and the
    /// next stretch stays in the normal class.
    #[test]
    fn the_watchdog_returns_a_starved_thread_to_the_normal_class() {
        if !may_leave_idle_class() {
            assert!(!IdleClass::probe().usable());
            return;
        }
        let busy = Arc::new(AtomicBool::new(true));
        let cpus = std::thread::available_parallelism().map_or(2, |n| n.get());
        let hogs: Vec<_> = (0..cpus + 1)
            .map(|_| {
                let busy = busy.clone();
                std::thread::spawn(move || {
                    while busy.load(Ordering::Relaxed) {
                        std::hint::spin_loop();
                    }
                })
            })
            .collect();
        let mut idle = IdleClass::probe();
        let stretch = idle.begin(WriterClass::Idle);
        assert!(stretch.is_some());
        let started = Instant::now();
        while class_now() == libc::SCHED_IDLE && started.elapsed() < Duration::from_secs(5) {
            std::hint::spin_loop();
        }
        let returned_after = started.elapsed();
        busy.store(false, Ordering::Relaxed);
        hogs.into_iter().for_each(|hog| hog.join().expect("hog"));
        assert_eq!(class_now(), libc::SCHED_OTHER, "still idle after {returned_after:?}");
        assert!(returned_after < Duration::from_secs(1), "{returned_after:?}");
        assert_eq!(idle.starved(), 1);
        idle.end(stretch);
        assert!(idle.begin(WriterClass::Auto).is_none(), "normal for NORMAL_FOR");
    }
}
