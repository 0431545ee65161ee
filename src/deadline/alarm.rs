//! The ticker's kernel wake source on an io_uring worker: a one-shot `timerfd` on
//! `CLOCK_MONOTONIC` (the `Moment` clock), set to an absolute time and read through the ring.
//! Workers on io_uring run without monoio's time driver, whose pass on every park cost about
//! 355 instructions per request (callgrind, issue 18); the legacy (epoll) driver keeps it,
//! because a timerfd read there would be a blocking `pread` on the worker (monoio's legacy file
//! reads are plain system calls, not readiness waits), so its ticker sleeps on monoio's timer.
//! Invariant: at most one read is in flight, and the timer is set to a time no earlier than the
//! one asked for, so a completed read never means "early".

use std::future::Future;
use std::io;
use std::os::fd::{FromRawFd, OwnedFd};
use std::pin::Pin;
use std::task::{Context, Poll};

type Read = Pin<Box<dyn Future<Output = monoio::BufResult<usize, Vec<u8>>>>>;

pub struct Alarm {
    file: std::rc::Rc<monoio::fs::File>,
    read: Option<Read>,
    /// The absolute time (ns) the timer is set to, `None` once it went off.
    set_for: Option<u64>,
}

impl Alarm {
    /// A new timer descriptor, disarmed, or the system's error (out of descriptors). Needs no
    /// runtime: a worker makes it before it serves (`prepare`), so that a worker which cannot
    /// have one fails to start instead of finding out at its first deadline.
    #[allow(unsafe_code)]
    pub fn descriptor() -> io::Result<OwnedFd> {
        // SAFETY: timerfd_create takes no pointers; its result is checked before use.
        let fd = unsafe { libc::timerfd_create(libc::CLOCK_MONOTONIC, libc::TFD_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` was just created, is valid, and nothing else owns it.
        Ok(unsafe { OwnedFd::from_raw_fd(fd) })
    }

    /// The alarm on `fd` (from `descriptor`), read through the current runtime's ring.
    pub fn on(fd: OwnedFd) -> io::Result<Alarm> {
        let file = monoio::fs::File::from_std(std::fs::File::from(fd))?;
        Ok(Alarm {
            file: std::rc::Rc::new(file),
            read: None,
            set_for: None,
        })
    }

    /// Ready once the clock reached `at` (ns on the `Moment` clock); re-set only when `at`
    /// changed. Pending registers `cx`'s task for the read's completion.
    pub fn poll_at(&mut self, at: u64, cx: &mut Context<'_>) -> Poll<()> {
        if self.set_for != Some(at) {
            self.set(at);
        }
        let file = self.file.clone();
        let read = self
            .read
            .get_or_insert_with(|| Box::pin(async move { file.read_at(vec![0u8; 8], 0).await }));
        match read.as_mut().poll(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready((result, _)) => {
                self.read = None;
                if let Err(e) = result {
                    // Not expected from a timerfd; the caller runs its pass (a spurious wake)
                    // and asks again, so a deadline is at worst late by this, never early.
                    tracing::warn!("deadline alarm read failed: {e}");
                }
                // One-shot: it went off (or the read failed) and is disarmed until set again.
                self.set_for = None;
                Poll::Ready(())
            }
        }
    }

    #[allow(unsafe_code)]
    fn set(&mut self, at: u64) {
        let spec = libc::itimerspec {
            it_interval: libc::timespec { tv_sec: 0, tv_nsec: 0 },
            it_value: libc::timespec {
                tv_sec: (at / 1_000_000_000) as libc::time_t,
                // A zero `it_value` would disarm: time 0 is long past, so 1 ns fires as well.
                tv_nsec: ((at % 1_000_000_000).max(u64::from(at == 0))) as libc::c_long,
            },
        };
        use std::os::fd::AsRawFd;
        // SAFETY: the fd is this alarm's open timerfd; `spec` is a valid itimerspec that
        // outlives the call, and a null old-value pointer is allowed.
        let rc = unsafe {
            libc::timerfd_settime(
                self.file.as_raw_fd(),
                libc::TFD_TIMER_ABSTIME,
                &spec,
                std::ptr::null_mut(),
            )
        };
        if rc == 0 {
            self.set_for = Some(at);
        } else {
            tracing::warn!("deadline alarm cannot be set: {}", io::Error::last_os_error());
        }
    }
}
