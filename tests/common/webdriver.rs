//! A minimal W3C WebDriver client over `std::net::TcpStream` (JSON over HTTP/1.1, one
//! connection per command), driving Debian's `chromedriver` with headless `chromium`.
//! Missing binaries are a test failure, never a skip: `.ci/run` installs both.
#![allow(dead_code)]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#![allow(clippy::disallowed_methods)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use sonic_rs::{JsonContainerTrait, JsonValueTrait, Value};

const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// How long `wait_for` polls before failing.
pub const WAIT: Duration = Duration::from_secs(15);

/// A running chromedriver and one browser session; both end on drop, and so does `scratch`.
pub struct Browser {
    driver: Child,
    port: u16,
    session: String,
    /// The `TMPDIR` of chromedriver and Chromium: Chromium leaves its singleton-socket directory
    /// (`org.chromium.Chromium.*`) behind in the temp directory after every session, 286 of them
    /// in `/tmp` after a day of test runs; here they go with the browser.
    scratch: PathBuf,
}

fn find_binary(names: &[&str]) -> PathBuf {
    for name in names {
        for dir in ["/usr/bin", "/usr/local/bin", "/usr/lib/chromium"] {
            let path = Path::new(dir).join(name);
            if path.is_file() {
                return path;
            }
        }
    }
    panic!(
        "none of {names:?} is installed: the dashboard test needs Debian's chromium and chromium-driver \
         (apt-get install -y chromium chromium-driver; .ci/run does this)"
    );
}

impl Browser {
    /// Starts chromedriver on a free port and opens a headless Chromium session.
    pub fn start() -> Browser {
        Browser::start_with(None)
    }

    /// `start`, with downloads saved to `downloads` without asking.
    pub fn start_with(downloads: Option<&Path>) -> Browser {
        let driver_bin = find_binary(&["chromedriver"]);
        let chromium = find_binary(&["chromium", "chromium-browser"]);
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let scratch = std::env::temp_dir().join(format!("rotor-browser-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&scratch).expect("the browser's temp directory");
        let driver = Command::new(driver_bin)
            .arg(format!("--port={port}"))
            .env("TMPDIR", &scratch)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts");
        let mut browser = Browser {
            driver,
            port,
            session: String::new(),
            scratch,
        };
        let deadline = Instant::now() + WAIT;
        while browser.try_call("GET", "/status", None).is_none() {
            assert!(Instant::now() < deadline, "chromedriver did not come up on port {port}");
            std::thread::sleep(Duration::from_millis(50));
        }
        let prefs = downloads.map_or_else(String::new, |dir| {
            format!(
                r#","prefs":{{"download.default_directory":{},"download.prompt_for_download":false}}"#,
                json_str(&dir.display().to_string())
            )
        });
        let caps = format!(
            r#"{{"capabilities":{{"alwaysMatch":{{"browserName":"chrome","goog:loggingPrefs":{{"browser":"ALL"}},
            "goog:chromeOptions":{{"binary":"{}","args":["--headless=new","--no-sandbox","--disable-gpu",
            "--disable-dev-shm-usage","--window-size=1360,900","--hide-scrollbars"]{prefs}}}}}}}}}"#,
            chromium.display()
        );
        let answer = browser.call("POST", "/session", Some(&caps));
        browser.session = answer["sessionId"].as_str().expect("a session id").to_owned();
        browser
    }

    fn try_call(&self, method: &str, path: &str, body: Option<&str>) -> Option<Value> {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port)).ok()?;
        stream.set_read_timeout(Some(Duration::from_secs(60))).ok()?;
        let body = body.unwrap_or("");
        let request = format!(
            "{method} {path} HTTP/1.1\r\nhost: 127.0.0.1:{}\r\ncontent-type: application/json\r\n\
             content-length: {}\r\nconnection: close\r\n\r\n{body}",
            self.port,
            body.len()
        );
        stream.write_all(request.as_bytes()).ok()?;
        // chromedriver keeps the connection open: read the head, then Content-Length bytes.
        let mut raw = Vec::new();
        let mut chunk = [0u8; 64 * 1024];
        let split = loop {
            if let Some(at) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
                break at;
            }
            let n = stream.read(&mut chunk).ok()?;
            if n == 0 {
                return None;
            }
            raw.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8_lossy(&raw[..split]).to_ascii_lowercase();
        let length: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse().ok())?;
        let mut body = raw[split + 4..].to_vec();
        while body.len() < length {
            let n = stream.read(&mut chunk).ok()?;
            if n == 0 {
                return None;
            }
            body.extend_from_slice(&chunk[..n]);
        }
        sonic_rs::from_slice(&body).ok()
    }

    /// One command; panics with the driver's message on a WebDriver error.
    fn call(&self, method: &str, path: &str, body: Option<&str>) -> Value {
        let answer = self
            .try_call(method, path, body)
            .unwrap_or_else(|| panic!("webdriver {method} {path}: no answer"));
        let value = answer["value"].clone();
        if let Some(error) = value.get("error").and_then(|e| e.as_str()) {
            panic!(
                "webdriver {method} {path}: {error}: {}",
                value["message"].as_str().unwrap_or("")
            );
        }
        value
    }

    fn session_call(&self, method: &str, path: &str, body: Option<&str>) -> Value {
        self.call(method, &format!("/session/{}{path}", self.session), body)
    }

    pub fn goto(&self, url: &str) {
        self.session_call("POST", "/url", Some(&format!(r#"{{"url":{}}}"#, json_str(url))));
    }

    /// Runs `script` (a function body; `arguments` as usual) and returns its value.
    pub fn script(&self, script: &str) -> Value {
        let body = format!(r#"{{"script":{},"args":[]}}"#, json_str(script));
        self.session_call("POST", "/execute/sync", Some(&body))
    }

    /// The first element matching `css`, if any.
    pub fn find(&self, css: &str) -> Option<String> {
        let body = format!(r#"{{"using":"css selector","value":{}}}"#, json_str(css));
        let answer = self.try_call("POST", &format!("/session/{}/element", self.session), Some(&body))?;
        answer["value"][ELEMENT].as_str().map(str::to_owned)
    }

    pub fn element(&self, css: &str) -> String {
        self.wait_for(&format!("element {css}"), || self.find(css))
    }

    pub fn click(&self, css: &str) {
        let id = self.element(css);
        self.session_call("POST", &format!("/element/{id}/click"), Some("{}"));
    }

    pub fn type_into(&self, css: &str, text: &str) {
        let id = self.element(css);
        self.session_call("POST", &format!("/element/{id}/clear"), Some("{}"));
        let body = format!(r#"{{"text":{}}}"#, json_str(text));
        self.session_call("POST", &format!("/element/{id}/value"), Some(&body));
    }

    /// The visible text of the first element matching `css` ("" when there is none).
    pub fn text(&self, css: &str) -> String {
        let script = format!(
            "const e = document.querySelector({}); return e ? e.textContent : '';",
            json_str(css)
        );
        self.script(&script).as_str().unwrap_or("").to_owned()
    }

    /// Polls `probe` until it gives a value, or fails after `WAIT` naming `what`.
    pub fn wait_for<T>(&self, what: &str, mut probe: impl FnMut() -> Option<T>) -> T {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(v) = probe() {
                return v;
            }
            if Instant::now() >= deadline {
                let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/dashboard-screenshots");
                let shot = self.screenshot(&dir, "failed");
                let page = self.script("return document.body.innerText");
                panic!(
                    "timed out waiting for {what}; screenshot {}; page text:\n{}",
                    shot.display(),
                    page.as_str().unwrap_or("")
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits until the script returns `true`.
    pub fn wait_until(&self, what: &str, script: &str) {
        self.wait_for(what, || self.script(script).as_bool().filter(|b| *b));
    }

    /// Saves a PNG of the viewport to `dir/name.png`.
    pub fn screenshot(&self, dir: &Path, name: &str) -> PathBuf {
        use base64::Engine;
        let value = self.session_call("GET", "/screenshot", None);
        let png = base64::engine::general_purpose::STANDARD
            .decode(value.as_str().expect("base64 screenshot"))
            .expect("valid base64");
        assert!(png.starts_with(b"\x89PNG"), "screenshot is a PNG");
        std::fs::create_dir_all(dir).unwrap();
        let path = dir.join(format!("{name}.png"));
        std::fs::write(&path, png).unwrap();
        path
    }

    /// The browser console since the last call (chromedriver's log extension).
    pub fn console(&self) -> Vec<String> {
        let value = self.session_call("POST", "/se/log", Some(r#"{"type":"browser"}"#));
        value
            .as_array()
            .map(|entries| {
                entries
                    .iter()
                    .filter_map(|e| e["message"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let _ = self.try_call("DELETE", &format!("/session/{}", self.session), None);
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
        let _ = std::fs::remove_dir_all(&self.scratch);
    }
}

/// A JSON string literal.
pub fn json_str(s: &str) -> String {
    sonic_rs::to_string(s).unwrap()
}
