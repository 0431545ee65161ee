//! Restarting the `rotor` binary on the same port after `kill -9`, on both IO drivers, with
//! keep-alive clients still connected (issue 12 item 10: on io_uring the killed process's
//! listener outlived it by a few milliseconds and the restart failed with "address in use").

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
// Tests may block and sleep: they are not worker threads.
#![allow(clippy::disallowed_methods)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const ROUNDS: usize = 20;
const KEEPALIVE_CLIENTS: usize = 16;

/// A port that was free a moment ago (bound to 0, then released).
fn free_port() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap()
}

/// `rotor` from the environment quick start on `addr`, in an empty directory (no config file
/// is picked up), optionally forced onto the epoll driver.
fn spawn(addr: SocketAddr, legacy: bool, dir: &std::path::Path) -> Child {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_rotor"));
    cmd.current_dir(dir)
        .env_remove("ROTOR_CONFIG")
        .env("ROTOR_UPSTREAM_URL", "http://127.0.0.1:9/v1")
        .env("ROTOR_UPSTREAM_KEYS", "sk-restart-test-0001")
        .env("ROTOR_LISTEN", addr.to_string())
        .env("ROTOR_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    if legacy {
        cmd.env("MONOIO_FORCE_LEGACY_DRIVER", "1");
    } else {
        cmd.env_remove("MONOIO_FORCE_LEGACY_DRIVER");
    }
    cmd.spawn().expect("rotor binary starts")
}

/// One `GET /health` on `stream`; true when a 200 came back.
fn health(stream: &mut TcpStream) -> bool {
    if stream
        .write_all(b"GET /health HTTP/1.1\r\nhost: restart.test\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut buf = [0u8; 4096];
    let mut got = Vec::new();
    while !got.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => return false,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
    got.starts_with(b"HTTP/1.1 200")
}

fn connect(addr: SocketAddr) -> Option<TcpStream> {
    let s = TcpStream::connect_timeout(&addr, Duration::from_millis(500)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    Some(s)
}

/// Waits until `child` answers `/health` on `addr`; panics with its stderr if it exits first.
fn wait_serving(child: &mut Child, addr: SocketAddr, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let mut err = String::new();
            if let Some(mut e) = child.stderr.take() {
                let _ = e.read_to_string(&mut err);
            }
            panic!("{what}: rotor exited ({status}) instead of serving:\n{err}");
        }
        if let Some(mut s) = connect(addr) {
            if health(&mut s) {
                return;
            }
        }
        assert!(Instant::now() < deadline, "{what}: rotor did not serve within 20 s");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn restarts_after_kill_9(legacy: bool) {
    let dir = tempfile::tempdir().unwrap();
    let addr = free_port();
    let mut child = spawn(addr, legacy, dir.path());
    for round in 0..ROUNDS {
        wait_serving(&mut child, addr, &format!("round {round}"));
        // Keep-alive connections that stay open across the kill, as real clients' would.
        let mut clients: Vec<TcpStream> = (0..KEEPALIVE_CLIENTS).filter_map(|_| connect(addr)).collect();
        for c in &mut clients {
            assert!(health(c), "round {round}: a keep-alive client was not served");
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        // At once, as a supervisor would: this is where "address in use" used to appear.
        child = spawn(addr, legacy, dir.path());
        drop(clients);
    }
    wait_serving(&mut child, addr, "last round");
    child.kill().unwrap();
    child.wait().unwrap();
}

#[test]
fn restart_after_kill_9_binds_the_same_port_on_io_uring() {
    restarts_after_kill_9(false);
}

#[test]
fn restart_after_kill_9_binds_the_same_port_on_epoll() {
    restarts_after_kill_9(true);
}

/// The wait for a port to come free must not turn into sharing it: a second rotor on the port
/// of a live one still fails, naming the address.
#[test]
fn a_port_held_by_a_live_rotor_still_refuses_a_second_one() {
    let dir = tempfile::tempdir().unwrap();
    let addr = free_port();
    let mut first = spawn(addr, false, dir.path());
    wait_serving(&mut first, addr, "first rotor");
    let second = spawn(addr, false, dir.path());
    let out = second.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a second rotor started on a taken port");
    assert!(
        stderr.contains("cannot listen on") && stderr.contains(&addr.to_string()),
        "stderr: {stderr}"
    );
    // The first one is untouched.
    let mut s = connect(addr).expect("first rotor still accepts");
    assert!(health(&mut s));
    first.kill().unwrap();
    first.wait().unwrap();
}

/// Logs written to a pipe (a file, journald, `docker logs`) carry no terminal colour codes: they
/// would stay in the text as `\x1b[...m`.
#[test]
fn logs_to_a_pipe_carry_no_colour_codes() {
    use std::io::BufRead;
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_rotor"));
    cmd.current_dir(dir.path())
        .env_remove("ROTOR_CONFIG")
        .env_remove("NO_COLOR")
        .env("ROTOR_UPSTREAM_URL", "http://127.0.0.1:9/v1")
        .env("ROTOR_UPSTREAM_KEYS", "sk-restart-test-0001")
        .env("ROTOR_LISTEN", free_port().to_string())
        .env("ROTOR_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let mut child = cmd.spawn().expect("rotor binary starts");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
            if line.contains("INFO") {
                let _ = tx.send(line);
                return;
            }
        }
    });
    let line = rx.recv_timeout(Duration::from_secs(20));
    child.kill().unwrap();
    child.wait().unwrap();
    let line = line.expect("rotor logged an INFO line within 20 s");
    assert!(!line.contains('\x1b'), "a colour code in a piped log line: {line:?}");
}
