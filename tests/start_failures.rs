//! The gateway started short of file descriptors: at every limit it either refuses to start,
//! saying why, or runs (answering once a descriptor is free to accept with); never a panic, and
//! never a worker missing from a gateway that runs. The limit
//! that leaves an io_uring worker its ring but not the timer descriptor its deadlines wake on
//! is among those swept, and must be refused at start with that reason.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

enum Outcome {
    /// The gateway exited on its own; what it wrote to stderr.
    Refused(String),
    /// The gateway kept running but did not answer (no descriptor left to accept with).
    Starved,
    /// The gateway answered `/health`.
    Served,
}

/// Runs `rotor --config CONFIG` with at most `limit` open descriptors (`ulimit -n`), until it
/// exits or answers `/health` or 3 s passed.
fn start_with_descriptor_limit(limit: u32, config: &Path, addr: SocketAddr) -> Outcome {
    let mut child = Command::new("sh")
        .args(["-c", r#"ulimit -n "$1" && exec "$0" --config "$2""#])
        .arg(env!("CARGO_BIN_EXE_rotor"))
        .arg(limit.to_string())
        .arg(config)
        .env_remove("ROTOR_CONFIG")
        .env("ROTOR_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    let mut served = false;
    while child.try_wait().unwrap().is_none() && !served && started.elapsed() < Duration::from_secs(3) {
        served = answers_health(addr);
        sleep_ms(50);
    }
    let running = child.try_wait().unwrap().is_none();
    if running {
        child.kill().unwrap();
    }
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(
        !stderr.contains("panicked"),
        "limit {limit}: a panic at start:\n{stderr}"
    );
    if served {
        return Outcome::Served;
    }
    if running {
        return Outcome::Starved;
    }
    assert!(
        !output.status.success(),
        "limit {limit}: exited with success without serving"
    );
    assert!(
        stderr.contains("rotor: "),
        "limit {limit}: refused without a reason:\n{stderr}"
    );
    Outcome::Refused(stderr)
}

/// Whether a `GET /health` on a new connection is answered 200 within a second.
fn answers_health(addr: SocketAddr) -> bool {
    let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) else {
        return false;
    };
    stream.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
    let mut answer = [0u8; 12];
    stream.write_all(b"GET /health HTTP/1.1\r\nhost: rotor\r\n\r\n").is_ok()
        && stream.read_exact(&mut answer).is_ok()
        && &answer == b"HTTP/1.1 200"
}

#[test]
fn short_of_descriptors_the_gateway_refuses_to_start_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let addr = closed_port();
    let config = dir.path().join("rotor.toml");
    let text = Conf::default().render(&format!("http://{}", closed_port())).replace(
        "listen = \"127.0.0.1:0\"",
        &format!("listen = \"{addr}\"\ndriver = \"io_uring\""),
    );
    std::fs::write(&config, text).unwrap();
    let mut reasons = Vec::new();
    let mut served_at = None;
    for limit in 4..200 {
        match start_with_descriptor_limit(limit, &config, addr) {
            Outcome::Refused(stderr) => reasons.push(stderr),
            Outcome::Starved => {}
            Outcome::Served => {
                served_at = Some(limit);
                break;
            }
        }
    }
    assert!(served_at.is_some(), "never started:\n{}", reasons.join("\n"));
    assert!(
        reasons.iter().any(|r| r.contains("no timerfd for the deadline ticker")),
        "no limit left the worker its ring without its timer:\n{}",
        reasons.join("\n")
    );
}
