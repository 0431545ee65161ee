//! The `rotor` binary: parses the command line, sets up logging and the allocator, and starts
//! the gateway, the config check, the demo or the mock. Everything else lives in the library.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use rotor::config::{self, Config, ConfigSource, Driver};
use rotor::runtime::{self, control::Signals};

#[global_allocator]
static GLOBAL: Allocator = Allocator;

/// mimalloc, asked for plain blocks when the alignment is one `malloc` already guarantees.
/// The `mimalloc` crate's `MiMalloc` sends every allocation through `mi_malloc_aligned`, whose
/// fast path only covers blocks up to 1 KiB; larger ones (read buffers, the request future)
/// took its generic aligned path. Plain `mi_malloc` for them: 35,849 → 34,893 user-space
/// instructions per proxied request (`benches/profile.sh callgrind`, issue 7).
struct Allocator;

/// What `mi_malloc` aligns every block of more than 8 bytes to (`MI_MAX_ALIGN_SIZE`; blocks of
/// up to 8 bytes are 8-aligned), the same rule `std`'s system allocator relies on.
const MALLOC_ALIGN: usize = 16;

/// Plain `mi_malloc` serves a block of `size` bytes with this alignment.
fn malloc_aligns(align: usize, size: usize) -> bool {
    align <= MALLOC_ALIGN && align <= size
}

// SAFETY: each method forwards to the mimalloc call with the same contract; plain `mi_malloc`
// is used only for layouts whose alignment it guarantees (`malloc_aligns`).
#[allow(unsafe_code)]
unsafe impl std::alloc::GlobalAlloc for Allocator {
    #[inline]
    unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
        if malloc_aligns(layout.align(), layout.size()) {
            libmimalloc_sys::mi_malloc(layout.size()).cast()
        } else {
            libmimalloc_sys::mi_malloc_aligned(layout.size(), layout.align()).cast()
        }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: std::alloc::Layout) -> *mut u8 {
        if malloc_aligns(layout.align(), layout.size()) {
            libmimalloc_sys::mi_zalloc(layout.size()).cast()
        } else {
            libmimalloc_sys::mi_zalloc_aligned(layout.size(), layout.align()).cast()
        }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, _layout: std::alloc::Layout) {
        libmimalloc_sys::mi_free(ptr.cast());
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: std::alloc::Layout, new_size: usize) -> *mut u8 {
        if malloc_aligns(layout.align(), new_size) {
            libmimalloc_sys::mi_realloc(ptr.cast(), new_size).cast()
        } else {
            libmimalloc_sys::mi_realloc_aligned(ptr.cast(), new_size, layout.align()).cast()
        }
    }
}

/// rotor's mimalloc option defaults (`rotor::heap::set_allocator_defaults`) must be in place
/// before mimalloc starts, and mimalloc starts before `main`: from its own `.init_array` entry
/// (priority 101), or at the first allocation. Priority 99 runs ahead of it (the linker sorts
/// `.init_array.NNNNN` sections by number; std's own argument capture uses the same slot).
#[cfg(target_os = "linux")]
#[used]
#[allow(unsafe_code)] // `link_section`: the slot is only read by the loader, which calls it once
#[link_section = ".init_array.00099"]
static ALLOCATOR_DEFAULTS: extern "C" fn() = {
    extern "C" fn set() {
        rotor::heap::set_allocator_defaults();
    }
    set
};

const DEFAULT_CONFIG: &str = "config/rotor.toml";
const DEMO_CONFIG: &str = include_str!("../config/demo.toml");
/// The mock address written in `config/demo.toml`; `rotor demo` swaps in the real one.
const DEMO_MOCK_ADDR: &str = "127.0.0.1:18080";

#[derive(Parser)]
#[command(
    name = "rotor",
    version,
    about = "LLM API gateway: key pools, rate limits, failover, SSE relay"
)]
struct Cli {
    /// Config file, or an http(s):// URL fetched at start and on every reload (default:
    /// config/rotor.toml, or the ROTOR_* environment quick start).
    #[arg(long, global = true, env = "ROTOR_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Validate the config and print the route table.
    Check,
    /// Run the gateway on 127.0.0.1:8080 with the built-in mock provider behind it.
    Demo,
    /// Convert another gateway's config (api-together apis.json, pro-api / uni-api api.yaml,
    /// the on-demand proxy's config.json) to a rotor TOML on stdout; notes go to stderr.
    Import {
        /// The file to convert.
        path: PathBuf,
    },
    /// Run the built-in mock provider alone.
    Mock {
        #[arg(long, default_value = "127.0.0.1:18080")]
        listen: std::net::SocketAddr,
        #[arg(long, default_value_t = 1)]
        workers: usize,
        /// Wait before each response head, in ms.
        #[arg(long, default_value_t = 0)]
        latency_ms: u64,
        /// Content chunks per streamed answer.
        #[arg(long, default_value_t = 5)]
        chunks: usize,
        /// Gap between streamed chunks, in ms.
        #[arg(long, default_value_t = 0)]
        interval_ms: u64,
        /// Keep the last N requests in memory (0 = none; use 0 for benchmarks).
        #[arg(long, default_value_t = 0)]
        record: usize,
        /// Random faults in percent of requests, for soak runs: "5xx=5,cut=1,slow=1,429=1,slow_ms=2000".
        #[arg(long, default_value = "", value_parser = rotor::mock::Chaos::parse)]
        chaos: rotor::mock::Chaos,
    },
}

fn main() -> ExitCode {
    init_logging();
    let cli = Cli::parse();
    let result = match cli.command {
        None => run(cli.config),
        Some(Command::Check) => check(cli.config),
        Some(Command::Demo) => demo(),
        Some(Command::Import { path }) => import(&path),
        Some(Command::Mock {
            listen,
            workers,
            latency_ms,
            chunks,
            interval_ms,
            record,
            chaos,
        }) => mock(rotor::mock::MockOptions {
            listen,
            workers,
            driver: Driver::Auto,
            latency: Duration::from_millis(latency_ms),
            chunks,
            interval: Duration::from_millis(interval_ms),
            record_limit: record,
            chaos,
        }),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("rotor: {message}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("ROTOR_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colours only for a person at a terminal: a log file, journald or `docker logs` would keep
    // the escape codes as text. NO_COLOR turns them off there too (no-color.org).
    let colour = std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_ansi(colour)
        .init();
}

/// The config from `--config`/`ROTOR_CONFIG` (a path or an http(s) URL), else `config/rotor.toml`, else the environment.
fn load_config(path: Option<PathBuf>) -> Result<Config, String> {
    if let Some(path) = path {
        if let Some(url) = path.to_str().filter(|p| config::remote::is_url(p)) {
            let remote = config::Remote::from_env(url, |name| std::env::var(name).ok()).map_err(|e| e.to_string())?;
            return config::load_remote(&remote).map_err(|e| e.to_string());
        }
        return config::load(&path).map_err(|e| e.to_string());
    }
    let default = PathBuf::from(DEFAULT_CONFIG);
    if default.exists() {
        return config::load(&default).map_err(|e| e.to_string());
    }
    match config::from_env().map_err(|e| e.to_string())? {
        Some(config) => Ok(config),
        None => Err(format!(
            "no config: pass --config PATH, create {DEFAULT_CONFIG} (see config/rotor.example.toml), \
             or set ROTOR_UPSTREAM_URL and ROTOR_UPSTREAM_KEYS; `rotor demo` runs without any"
        )),
    }
}

fn run(path: Option<PathBuf>) -> Result<(), String> {
    let config = load_config(path)?;
    let signals = Signals::install().map_err(|e| format!("cannot install signal handlers: {e}"))?;
    let running = runtime::start(config, Some(signals)).map_err(|e| e.to_string())?;
    running.wait();
    tracing::info!("stopped");
    Ok(())
}

fn check(path: Option<PathBuf>) -> Result<(), String> {
    let config = load_config(path)?;
    print!("{}", config.route_table_text());
    println!("config OK");
    Ok(())
}

fn import(path: &std::path::Path) -> Result<(), String> {
    let imported = rotor::import::import(path)?;
    print!("{}", imported.toml);
    eprintln!("rotor import: read {} as {}", path.display(), imported.format);
    if imported.notes.is_empty() {
        eprintln!("rotor import: everything was carried over");
    } else {
        eprintln!("rotor import: not carried over or changed ({}):", imported.notes.len());
        for note in &imported.notes {
            eprintln!("  - {note}");
        }
    }
    if !imported.passes {
        return Err("the imported config does not pass `rotor check` yet (see the last note)".into());
    }
    Ok(())
}

fn mock(options: rotor::mock::MockOptions) -> Result<(), String> {
    let server = rotor::mock::start(options).map_err(|e| e.to_string())?;
    let signals = Signals::install().map_err(|e| e.to_string())?;
    println!(
        "rotor mock listening on http://{} (OpenAI shapes under /v1)",
        server.addr
    );
    let shutdown = server.shutdown_handle();
    std::thread::spawn(move || wait_for_terminate(&signals, || shutdown.trigger()));
    server.wait();
    Ok(())
}

fn demo() -> Result<(), String> {
    let mock = rotor::mock::start(rotor::mock::MockOptions {
        chunks: 8,
        interval: Duration::from_millis(40),
        ..Default::default()
    })
    .map_err(|e| format!("cannot start the mock provider: {e}"))?;
    let text = DEMO_CONFIG.replace(DEMO_MOCK_ADDR, &mock.addr.to_string());
    let config = config::parse_str(&text, ConfigSource::Environment).map_err(|e| e.to_string())?;
    let signals = Signals::install().map_err(|e| e.to_string())?;
    let running = runtime::start(config, Some(signals)).map_err(|e| e.to_string())?;
    let base = format!("http://{}", running.addr);
    println!(
        "\nrotor demo: gateway on {base}, mock provider on {mock_addr} (no real keys, no network)\n\n\
         try:\n  curl -s {base}/v1/models -H 'Authorization: Bearer demo-key'\n  \
         curl -s {base}/v1/chat/completions -H 'Authorization: Bearer demo-key' -H 'content-type: application/json' \\\n    \
         -d '{{\"model\":\"gpt-4o-mini\",\"messages\":[{{\"role\":\"user\",\"content\":\"hi\"}}]}}'\n  \
         curl -sN {base}/v1/chat/completions -H 'Authorization: Bearer demo-key' -H 'content-type: application/json' \\\n    \
         -d '{{\"model\":\"gpt-3.5-turbo\",\"stream\":true,\"messages\":[{{\"role\":\"user\",\"content\":\"hi\"}}]}}'\n  \
         curl -s {base}/v1/embeddings -H 'Authorization: Bearer demo-key' -H 'content-type: application/json' \\\n    \
         -d '{{\"model\":\"text-embedding-3-small\",\"input\":\"hello\"}}'\n  \
         curl -s {base}/health\n\n\
         dashboard: {base}/admin/ (admin key demo-admin-key, or user demo / password demo-password)\n\n\
         Ctrl-C stops it.\n",
        mock_addr = mock.addr
    );
    running.wait();
    mock.stop();
    Ok(())
}

#[allow(clippy::disallowed_methods)] // main thread, not a worker
fn wait_for_terminate(signals: &Signals, stop: impl FnOnce()) {
    while !signals.terminate.load(std::sync::atomic::Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(100));
    }
    stop();
}

#[cfg(test)]
mod tests {
    use std::alloc::{GlobalAlloc, Layout};

    use super::Allocator;

    /// Every size and alignment mix, on both sides of `MALLOC_ALIGN` and of mimalloc's 1 KiB
    /// small-block limit: blocks come back aligned, zeroed when asked, and keep their bytes
    /// through a grow and a shrink.
    #[test]
    #[allow(unsafe_code)]
    fn blocks_are_aligned_zeroed_and_kept_through_realloc() {
        let small = [1, 7, 8, 9, 15, 16, 17, 24, 40, 100];
        let large = [1000, 1024, 1025, 4096, 65536, 1 << 20];
        for size in small.into_iter().chain(large) {
            for align in [1, 2, 4, 8, 16, 32, 64, 128, 4096] {
                let layout = Layout::from_size_align(size, align).unwrap();
                // SAFETY: non-zero sizes; every block is freed with the layout it has.
                unsafe {
                    let zeroed = Allocator.alloc_zeroed(layout);
                    assert_eq!(zeroed as usize % align, 0, "zeroed {size}/{align}");
                    assert!(std::slice::from_raw_parts(zeroed, size).iter().all(|&b| b == 0));
                    Allocator.dealloc(zeroed, layout);

                    let block = Allocator.alloc(layout);
                    assert_eq!(block as usize % align, 0, "alloc {size}/{align}");
                    for i in 0..size {
                        *block.add(i) = i as u8;
                    }
                    let grown = Allocator.realloc(block, layout, size * 2 + 3);
                    assert_eq!(grown as usize % align, 0, "grow {size}/{align}");
                    let grown_layout = Layout::from_size_align(size * 2 + 3, align).unwrap();
                    let shrunk_size = size.div_ceil(2);
                    let shrunk = Allocator.realloc(grown, grown_layout, shrunk_size);
                    assert_eq!(shrunk as usize % align, 0, "shrink {size}/{align}");
                    for i in 0..shrunk_size {
                        assert_eq!(*shrunk.add(i), i as u8, "byte {i} of {size}/{align}");
                    }
                    Allocator.dealloc(shrunk, Layout::from_size_align(shrunk_size, align).unwrap());
                }
            }
        }
    }
}
