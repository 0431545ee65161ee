//! Worker threads: one monoio runtime per thread, each driving its own listener.
//! Invariant: a worker's state never leaves its thread; it is built inside the thread from a
//! `Send` factory ("send factory, per-core service").

use std::future::Future;
use std::io;
use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;

use monoio::{IoUringDriver, LegacyDriver, RuntimeBuilder};

use crate::config::Driver;

/// io_uring submission queue size (the completion queue gets twice as many). The rings are
/// memory shared with the kernel and resident from the start: 4096 entries cost 404 KB per
/// worker, 0.8 of an idle 2-worker rotor's 12-13 MB; 1024 cost 101 KB. The queue only has to
/// hold the operations one scheduler round issues (monoio submits early when it fills, and the
/// kernel keeps completions that overflow), and 5,000 concurrent streams through 2 workers all
/// completed at 1024 as at 4096, 22.6 KB each either way (`benches/memory.sh`, issue 18).
const RING_ENTRIES: u32 = 1024;

/// A worker's stack. JSON parsers recurse once per nesting level, and `server.max_json_depth`
/// (at most `codec::depth::MAX_DEPTH_CEILING`) is sized for 2 MiB, set here rather than left
/// to `RUST_MIN_STACK`. Unoptimised builds spend about 40 KiB per level in sonic-rs (128 levels
/// overflowed 2 MiB, fit in 8 MiB), so debug builds, which the tests run, get 16 MiB: enough
/// for the default depth, not for the ceiling.
const WORKER_STACK_BYTES: usize = if cfg!(debug_assertions) { 16 << 20 } else { 2 << 20 };

#[derive(Debug, Clone)]
pub struct WorkerSpec {
    pub count: usize,
    pub driver: Driver,
    pub pin: bool,
    /// Thread name prefix, e.g. "rotor-worker".
    pub name: &'static str,
}

/// Starts `spec.count` worker threads. Worker `i` receives listener `i` and runs the future that
/// `body(i, listener)` returns until it completes. Returns once every worker has its runtime,
/// or the first worker's error that could not build one (io_uring refused, out of descriptors):
/// a gateway with a worker missing does not start.
pub fn spawn_workers<F, Fut>(spec: &WorkerSpec, listeners: Vec<TcpListener>, body: F) -> io::Result<Vec<JoinHandle<()>>>
where
    F: Fn(usize, monoio::net::TcpListener) -> Fut + Send + Clone + 'static,
    Fut: Future<Output = ()> + 'static,
{
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut handles = Vec::with_capacity(listeners.len());
    let mut started = Vec::with_capacity(listeners.len());
    for (index, listener) in listeners.into_iter().enumerate() {
        let body = body.clone();
        let driver = spec.driver;
        let pin = spec.pin;
        let (report, built) = std::sync::mpsc::sync_channel::<io::Result<()>>(1);
        let handle = std::thread::Builder::new()
            .name(format!("{}-{index}", spec.name))
            .stack_size(WORKER_STACK_BYTES)
            .spawn(move || {
                if pin {
                    if let Err(e) = monoio::utils::bind_to_cpu_set([index % cores]) {
                        tracing::warn!(worker = index, "cannot pin worker to a core: {e}");
                    }
                }
                let runtime = WorkerRuntime::build(driver);
                let _ = report.send(
                    runtime
                        .as_ref()
                        .map(|_| ())
                        .map_err(|e| io::Error::new(e.kind(), e.to_string())),
                );
                if let Ok(runtime) = runtime {
                    runtime.run(move || async move {
                        match monoio::net::TcpListener::from_std(listener) {
                            Ok(listener) => body(index, listener).await,
                            Err(e) => tracing::error!(worker = index, "cannot adopt listener: {e}"),
                        }
                    });
                }
            })?;
        handles.push(handle);
        started.push(built);
    }
    for (index, built) in started.into_iter().enumerate() {
        match built.recv() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(io::Error::new(e.kind(), format!("worker {index} cannot start: {e}"))),
            Err(_) => {
                return Err(io::Error::other(format!(
                    "worker {index} ended before its runtime was built"
                )))
            }
        }
    }
    Ok(handles)
}

/// An io_uring runtime on the tuned ring, or on a plain one when the kernel refuses the
/// task-run flags (before 6.1). Without monoio's time driver: its wheel pass on every park
/// cost about 355 instructions per request with nothing due (callgrind, issue 18); every
/// timed wait on a worker goes through `crate::deadline`, whose ticker wakes on a timerfd read
/// through the ring (`monoio::time` panics here).
fn uring_runtime() -> io::Result<monoio::Runtime<IoUringDriver>> {
    let builder = || RuntimeBuilder::<IoUringDriver>::new().with_entries(RING_ENTRIES);
    builder()
        .uring_builder(tuned_ring())
        .build()
        .or_else(|_| builder().build())
}

/// Runs one future to completion on a worker runtime of the chosen driver (`WorkerRuntime`).
pub fn run_on_driver<F, Fut>(driver: Driver, make: F) -> io::Result<()>
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = ()>,
{
    WorkerRuntime::build(driver)?.run(make);
    Ok(())
}

/// A worker's runtime, built but not yet running. `Auto` makes the choice monoio's
/// `FusionDriver` would (io_uring when the kernel has every operation it uses, epoll
/// otherwise), so that only the io_uring runtime drops monoio's time driver. The legacy runtime
/// keeps it: the deadline ticker sleeps on it there (see `deadline::alarm`). The io_uring one
/// has the ticker's timer descriptor made with it, its only wake source.
enum WorkerRuntime {
    Uring(monoio::Runtime<IoUringDriver>),
    Legacy(monoio::Runtime<monoio::time::TimeDriver<LegacyDriver>>),
}

impl WorkerRuntime {
    fn build(driver: Driver) -> io::Result<WorkerRuntime> {
        let uring = match driver {
            Driver::Auto => {
                let found = monoio::utils::detect_uring();
                if !found {
                    say_fallback_once();
                }
                found
            }
            Driver::IoUring => true,
            Driver::Legacy => false,
        };
        if !uring {
            return Ok(WorkerRuntime::Legacy(
                RuntimeBuilder::<LegacyDriver>::new().enable_timer().build()?,
            ));
        }
        let runtime = uring_runtime().map_err(|e| io::Error::new(e.kind(), format!("io_uring unavailable: {e}")))?;
        crate::deadline::prepare_alarm()
            .map_err(|e| io::Error::new(e.kind(), format!("no timerfd for the deadline ticker: {e}")))?;
        Ok(WorkerRuntime::Uring(runtime))
    }

    fn run<F, Fut>(self, make: F)
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = ()>,
    {
        match self {
            WorkerRuntime::Uring(mut rt) => rt.block_on(make()),
            WorkerRuntime::Legacy(mut rt) => rt.block_on(make()),
        }
        // The runtime's tasks, this thread's deadline ticker among them, run no more.
        crate::deadline::forget_ticker();
    }
}

/// The ring every worker asks for first. Completions are run only when the worker itself enters
/// the kernel to wait (`DEFER_TASKRUN`, which needs `SINGLE_ISSUER`: the ring is built and used
/// on its worker thread only), so a packet arriving for a busy worker neither interrupts it nor
/// wakes it early; the worker collects every completion in one batch when it runs out of work.
/// The alternatives measured against it (`COOP_TASKRUN`, a plain ring, `SUBMIT_ALL`, `SQPOLL`)
/// are in the README (io_uring: what rotor uses and what it does not).
fn tuned_ring() -> io_uring::Builder {
    let mut builder = io_uring::IoUring::builder();
    builder.setup_single_issuer().setup_defer_taskrun();
    builder
}

/// Whether io_uring would be used under `driver` (for the start-up log line and `/health`).
pub fn uses_io_uring(driver: Driver) -> bool {
    match driver {
        Driver::Auto => monoio::utils::detect_uring(),
        Driver::IoUring => true,
        Driver::Legacy => false,
    }
}

fn say_fallback_once() {
    static SAID: AtomicBool = AtomicBool::new(false);
    if !SAID.swap(true, Ordering::Relaxed) {
        tracing::warn!("io_uring is unavailable here; using the epoll (legacy) driver");
    }
}
