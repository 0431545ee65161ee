//! Limits across an unclean stop (issue 12, item 7): the rotor binary runs as a child process
//! with a file database in front of the in-process mock; the test kills it with SIGKILL right
//! after it admitted requests (well within the one-second snapshot interval), starts it again
//! and counts at the mock what got through. A graceful SIGTERM restart must stay exact, not
//! over-careful; a journal that cannot vouch (written before a reboot) must fill the windows.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::disallowed_methods)]

mod common;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{chat, start_mock, Client, CLIENT_KEY};
use parking_lot::Mutex;
use sonic_rs::JsonValueTrait;

/// A running `rotor` child and everything it logged so far.
struct Rotor {
    child: Child,
    addr: SocketAddr,
    log: Arc<Mutex<String>>,
}

impl Rotor {
    fn start(config: &Path) -> Rotor {
        let mut child = Command::new(env!("CARGO_BIN_EXE_rotor"))
            .arg("--config")
            .arg(config)
            .env_remove("ROTOR_CONFIG")
            .env("ROTOR_LOG", "info")
            .env("NO_COLOR", "1")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let log = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = mpsc::channel();
        let stdout = child.stdout.take().unwrap();
        let shared = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if line.contains("rotor listening") {
                    let _ = tx.send(line.clone());
                }
                shared.lock().push_str(&line);
                shared.lock().push('\n');
            }
        });
        let line = rx
            .recv_timeout(Duration::from_secs(20))
            .unwrap_or_else(|_| panic!("rotor did not start: {}", log.lock()));
        let at = line.find("127.0.0.1:").unwrap();
        let port: String = line[at + 10..].chars().take_while(char::is_ascii_digit).collect();
        let addr = format!("127.0.0.1:{port}").parse().unwrap();
        Rotor { child, addr, log }
    }

    /// Sends `n` chat requests one after another: (answered 200, answered 429).
    fn send(&self, n: usize) -> (usize, usize) {
        let mut counts = (0, 0);
        let mut client = Client::connect(self.addr);
        for _ in 0..n {
            let r = client.post("/v1/chat/completions", &chat("gpt-4o-mini"), &[]);
            match r.status {
                200 => counts.0 += 1,
                429 => {
                    let retry: u64 = r.header("retry-after").expect("429 has Retry-After").parse().unwrap();
                    assert!((1..=61).contains(&retry), "Retry-After {retry}");
                    counts.1 += 1;
                }
                other => panic!("status {other}: {}", r.text()),
            }
        }
        counts
    }

    fn kill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// SIGTERM, then waits for a clean exit.
    fn terminate(mut self) {
        let pid = self.child.id().to_string();
        assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                assert!(status.success(), "graceful stop exits 0: {status}");
                return;
            }
            assert!(Instant::now() < deadline, "rotor did not stop on SIGTERM");
            common::sleep_ms(20);
        }
    }

    fn log(&self) -> String {
        self.log.lock().clone()
    }
}

impl Drop for Rotor {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A config with a file database and one pool key limited to `rpm = 20` (and a roomy `rpd`,
/// which a careless restore would lock for a day).
fn write_config(dir: &Path, mock_url: &str) -> (PathBuf, PathBuf) {
    let db = dir.join("data/rotor.db");
    let text = format!(
        r#"
[server]
listen = "127.0.0.1:0"
workers = 2
shutdown_grace_ms = 2000

[storage]
path = {db:?}

[[clients]]
name = "tester"
key = "{CLIENT_KEY}"

[[providers]]
name = "mock"
kind = "openai"
base_url = "{mock_url}"
keys = ["sk-key-one-0001"]
models = ["gpt-4o-mini"]
rpm = 20
rpd = 1000
"#,
        db = db.display().to_string()
    );
    let path = dir.join("rotor.toml");
    std::fs::write(&path, text).unwrap();
    (path, db)
}

#[test]
fn sigkill_within_the_snapshot_second_does_not_reset_the_window() {
    let dir = tempfile::tempdir().unwrap();
    let mock = start_mock();
    let (config, _) = write_config(dir.path(), &mock.base_url());

    let first = Rotor::start(&config);
    let started = Instant::now();
    assert_eq!(first.send(15), (15, 0));
    first.kill();
    let took = started.elapsed();

    let second = Rotor::start(&config);
    let (ok, limited) = second.send(15);
    let reached = mock.recorder.requests().len();
    assert!(
        reached <= 20,
        "{reached} requests reached the upstream against rpm = 20"
    );
    assert_eq!(
        (ok, limited),
        (5, 10),
        "exact: the journal says 15 were admitted (sent and killed in {took:?})"
    );
    assert!(second.log().contains("did not stop cleanly"), "{}", second.log());
    second.kill();
    mock.stop();
}

#[test]
fn sigterm_restart_keeps_windows_exact() {
    let dir = tempfile::tempdir().unwrap();
    let mock = start_mock();
    let (config, _) = write_config(dir.path(), &mock.base_url());

    let first = Rotor::start(&config);
    assert_eq!(first.send(15), (15, 0));
    first.terminate();

    let second = Rotor::start(&config);
    assert_eq!(second.send(15), (5, 10), "5 left of 20, not more and not fewer");
    assert_eq!(mock.recorder.requests().len(), 20);
    assert!(!second.log().contains("did not stop cleanly"), "{}", second.log());
    second.terminate();
    mock.stop();
}

#[test]
fn a_journal_from_before_a_reboot_fills_every_window() {
    let dir = tempfile::tempdir().unwrap();
    let mock = start_mock();
    let (config, db) = write_config(dir.path(), &mock.base_url());

    let first = Rotor::start(&config);
    assert_eq!(first.send(3), (3, 0));
    first.kill();
    // What a power loss leaves: the journal says "running", written under another boot id.
    let journal = rotor::storage::journal::path_for(&db);
    let mut bytes = std::fs::read(&journal).unwrap();
    bytes[8..16].copy_from_slice(&0x5eed_u64.to_ne_bytes());
    std::fs::write(&journal, bytes).unwrap();

    let second = Rotor::start(&config);
    assert_eq!(
        second.send(5),
        (0, 5),
        "nothing says what the lost second admitted: full"
    );
    assert_eq!(mock.recorder.requests().len(), 3);
    assert!(second.log().contains("counted full"), "{}", second.log());
    assert!(
        second.log().contains("before the machine restarted"),
        "{}",
        second.log()
    );
    second.kill();
    mock.stop();
}

/// The requests the stats rollups in the database file count (what a flush has committed).
fn committed_requests(db: &Path) -> i64 {
    let flags = rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY;
    let Ok(conn) = rusqlite::Connection::open_with_flags(db, flags) else {
        return -1;
    };
    conn.query_row("SELECT COALESCE(SUM(requests), 0) FROM rollups", [], |r| r.get(0))
        .unwrap_or(-1)
}

/// Issue 13 item 4: the stats rollups survive a graceful restart whole, and a SIGKILL loses
/// nothing a flush (once a second, `usage::writer::FLUSH_EVERY`) had committed; neither
/// restart counts a request twice (the rows are not folded into the rollups again).
#[test]
fn stats_survive_a_restart_and_a_kill_9_up_to_the_last_flush() {
    let dir = tempfile::tempdir().unwrap();
    let mock = start_mock();
    let (config, db) = write_config(dir.path(), &mock.base_url());
    let text = std::fs::read_to_string(&config).unwrap();
    let admin = "adm-key-crash-0001";
    let text = text.replace(
        "shutdown_grace_ms = 2000",
        &format!("shutdown_grace_ms = 2000\nadmin_key = \"{admin}\""),
    );
    std::fs::write(&config, text).unwrap();
    let overview = |rotor: &Rotor| {
        let auth = format!("Bearer {admin}");
        let r = Client::connect(rotor.addr).request(
            "GET",
            "/admin/stats/overview",
            &[("authorization", auth.as_str())],
            b"",
        );
        assert_eq!(r.status, 200, "{}", r.text());
        r.json()["requests"].as_u64().unwrap()
    };

    let first = Rotor::start(&config);
    assert_eq!(first.send(8), (8, 0));
    // No admin query here: it would flush the rollups itself; the stop must.
    first.terminate();

    let second = Rotor::start(&config);
    assert_eq!(overview(&second), 8, "a graceful restart keeps every request, once");
    assert_eq!(second.send(7), (7, 0));
    // Wait for the flush that commits them, then kill before anything else happens.
    assert!(
        common::eventually(Duration::from_secs(5), || committed_requests(&db) == 15),
        "the rollups in the file count {}",
        committed_requests(&db)
    );
    second.kill();

    let third = Rotor::start(&config);
    assert_eq!(
        overview(&third),
        15,
        "a kill -9 after the flush loses nothing, counts nothing twice"
    );
    third.terminate();
    mock.stop();
}
