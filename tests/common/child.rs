//! The rotor binary as a child process, for tests whose input could crash the gateway: an abort
//! there is a dead child and an unanswered request, not the end of the test binary.

use std::net::SocketAddr;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use super::{closed_port, eventually, Client, Conf, Response};

/// A rotor binary running as a child process; killed on drop.
pub struct ChildRotor {
    child: Child,
    pub addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl ChildRotor {
    /// The gateway with this config (`{MOCK}` = `mock_url`), on a free port.
    pub fn start(conf: &Conf, mock_url: &str) -> ChildRotor {
        let addr = closed_port();
        let text = conf
            .render(mock_url)
            .replace("listen = \"127.0.0.1:0\"", &format!("listen = \"{addr}\""));
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rotor.toml");
        std::fs::write(&path, text).unwrap();
        let args = ["--config".to_owned(), path.display().to_string()];
        ChildRotor::spawn(addr, &args, dir)
    }

    /// `rotor mock` alone, on a free port.
    pub fn mock() -> ChildRotor {
        let addr = closed_port();
        let args = ["mock".to_owned(), "--listen".to_owned(), addr.to_string()];
        ChildRotor::spawn(addr, &args, tempfile::tempdir().unwrap())
    }

    fn spawn(addr: SocketAddr, args: &[String], dir: tempfile::TempDir) -> ChildRotor {
        let child = Command::new(env!("CARGO_BIN_EXE_rotor"))
            .args(args)
            .env_remove("ROTOR_CONFIG")
            .env("ROTOR_LOG", "error")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut rotor = ChildRotor { child, addr, _dir: dir };
        let up = eventually(Duration::from_secs(20), || {
            assert!(rotor.exit().is_none(), "rotor exited while starting");
            std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
        });
        assert!(up, "rotor did not start listening on {addr}");
        rotor
    }

    /// The exit status, once the child has ended.
    pub fn exit(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().unwrap()
    }

    /// Sends a POST on `c` and reads the answer. Panics, naming the child's fate, when none
    /// comes.
    pub fn send(&mut self, c: &mut Client, path: &str, headers: &[(&str, &str)], body: &str) -> Response {
        c.send_request("POST", path, headers, body.as_bytes());
        match c.try_read_response() {
            Some(r) => r,
            None => {
                let _ = eventually(Duration::from_secs(2), || self.exit().is_some());
                panic!("no answer on {path}; rotor exit status: {:?}", self.exit())
            }
        }
    }
}

impl Drop for ChildRotor {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
