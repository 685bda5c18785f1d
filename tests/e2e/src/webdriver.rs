//! Debian's Chromium driven over WebDriver (W3C), through `chromedriver` from the
//! `chromium-driver` package: a session in a headless window, a page opened, clicked and typed
//! into, scripts run in it, its screenshots and its console log. A small client of our own over
//! reqwest: the dozen commands the console's tests need, without a second HTTP and TLS stack.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::{json, Value};

/// The key W3C WebDriver names an element reference by.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// A running `chromedriver`, stopped when dropped.
pub struct Driver {
    child: Child,
    base: String,
    http: reqwest::blocking::Client,
    profile: tempfile::TempDir,
}

impl Driver {
    /// Starts `chromedriver` on a free loopback port and waits until it says it is ready.
    pub fn start() -> Driver {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let child = match Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
        {
            Ok(child) => child,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
                "chromedriver is missing: run scripts/setup_packaging.sh as root (it installs \
                 Debian's chromium-driver package; the test command does) before the console's \
                 browser tests"
            ),
            Err(e) => panic!("cannot start chromedriver: {e}"),
        };
        // reqwest is built without a TLS provider of its own: the process's (ring), as elsewhere.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(120))
            .build()
            .expect("an HTTP client");
        let driver = Driver {
            child,
            base: format!("http://127.0.0.1:{port}"),
            http,
            profile: tempfile::tempdir().expect("a browser profile folder"),
        };
        crate::wait_until("chromedriver to be ready", Duration::from_secs(60), || {
            driver
                .http
                .get(format!("{}/status", driver.base))
                .send()
                .ok()
                .and_then(|r| r.text().ok())
                .and_then(|t| serde_json::from_str::<Value>(&t).ok())
                .is_some_and(|v| v["value"]["ready"] == true)
        });
        driver
    }

    /// A new headless browser window `width` × `height` that accepts the test controller's
    /// certificate (its CA is made by the test, not installed on this machine).
    pub fn session(&self, width: u32, height: u32) -> Session<'_> {
        let profile = self
            .profile
            .path()
            .join(format!("p{}", rand::random::<u32>()));
        let capabilities = json!({
            "capabilities": { "alwaysMatch": {
                "browserName": "chrome",
                "acceptInsecureCerts": true,
                "goog:loggingPrefs": { "browser": "ALL" },
                "goog:chromeOptions": {
                    "binary": "/usr/bin/chromium",
                    "args": [
                        "--headless=new", "--no-sandbox", "--disable-gpu",
                        "--disable-dev-shm-usage", "--no-first-run", "--hide-scrollbars",
                        format!("--window-size={width},{height}"),
                        format!("--user-data-dir={}", profile.display()),
                    ],
                },
            }}
        });
        let reply = self.send("POST", "/session", Some(capabilities));
        let id = reply["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session from chromedriver: {reply}"))
            .to_string();
        let session = Session { driver: self, id };
        session.resize(width, height);
        session
    }

    fn send(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let url = format!("{}{path}", self.base);
        let request = match method {
            "GET" => self.http.get(&url),
            "DELETE" => self.http.delete(&url),
            _ => self
                .http
                .post(&url)
                .header("content-type", "application/json")
                .body(body.unwrap_or_else(|| json!({})).to_string()),
        };
        let response = request
            .send()
            .unwrap_or_else(|e| panic!("WebDriver {method} {path}: {e}"));
        let status = response.status();
        let text = response
            .text()
            .unwrap_or_else(|e| panic!("WebDriver {method} {path}: {e}"));
        let value: Value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("WebDriver {method} {path}: not JSON ({e}): {text}"));
        assert!(
            status.is_success(),
            "WebDriver {method} {path} failed ({status}): {}",
            value["value"]
        );
        value["value"].clone()
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One browser window.
pub struct Session<'d> {
    driver: &'d Driver,
    id: String,
}

impl Session<'_> {
    fn send(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        self.driver
            .send(method, &format!("/session/{}{path}", self.id), body)
    }

    /// Resizes the window so that the page's viewport is `width` wide (a phone: 390).
    pub fn resize(&self, width: u32, height: u32) {
        self.send(
            "POST",
            "/window/rect",
            Some(json!({ "width": width, "height": height })),
        );
        // Headless windows may keep a little chrome: make the viewport itself that wide.
        let inner = self.run("return window.innerWidth", json!([]));
        let inner = inner.as_u64().unwrap_or(u64::from(width)) as u32;
        if inner != width {
            let outer = (2 * width).saturating_sub(inner);
            self.send(
                "POST",
                "/window/rect",
                Some(json!({ "width": outer, "height": height })),
            );
        }
    }

    pub fn open(&self, url: &str) {
        self.send("POST", "/url", Some(json!({ "url": url })));
    }

    pub fn url(&self) -> String {
        self.send("GET", "/url", None)
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// Runs `script` (a function body; `arguments` are `args`) and returns what it returns.
    pub fn run(&self, script: &str, args: Value) -> Value {
        self.send(
            "POST",
            "/execute/sync",
            Some(json!({ "script": script, "args": args })),
        )
    }

    /// Runs an async script: it calls `arguments[arguments.length - 1]` with its answer.
    pub fn run_async(&self, script: &str, args: Value) -> Value {
        self.send(
            "POST",
            "/execute/async",
            Some(json!({ "script": script, "args": args })),
        )
    }

    /// The first element matching the CSS `selector`, if any.
    pub fn find(&self, selector: &str) -> Option<String> {
        let found = self.send(
            "POST",
            "/elements",
            Some(json!({ "using": "css selector", "value": selector })),
        );
        found.as_array()?.first()?[ELEMENT]
            .as_str()
            .map(str::to_string)
    }

    pub fn click(&self, selector: &str) {
        let element = self.find(selector).unwrap_or_else(|| {
            panic!(
                "no element {selector} on {}:\n{}",
                self.url(),
                self.source()
            )
        });
        self.send("POST", &format!("/element/{element}/click"), None);
    }

    pub fn type_into(&self, selector: &str, text: &str) {
        let element = self.find(selector).unwrap_or_else(|| {
            panic!(
                "no element {selector} on {}:\n{}",
                self.url(),
                self.source()
            )
        });
        self.send(
            "POST",
            &format!("/element/{element}/value"),
            Some(json!({ "text": text })),
        );
    }

    /// Accepts the page's `confirm()` dialog.
    pub fn accept_dialog(&self) {
        self.send("POST", "/alert/accept", None);
    }

    /// The page's HTML as the browser has it now.
    pub fn source(&self) -> String {
        self.send("GET", "/source", None)
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// The page's text.
    pub fn text(&self, selector: &str) -> String {
        self.run(
            "const e = document.querySelector(arguments[0]); return e ? e.innerText : '';",
            json!([selector]),
        )
        .as_str()
        .unwrap_or_default()
        .to_string()
    }

    /// Waits until `script` returns true in the page.
    pub fn wait_for(&self, what: &str, timeout: Duration, script: &str) -> Duration {
        let start = Instant::now();
        loop {
            if self.run(script, json!([])) == Value::Bool(true) {
                return start.elapsed();
            }
            assert!(
                start.elapsed() < timeout,
                "{what} within {timeout:?}; the page ({}) says:\n{}",
                self.url(),
                self.text("body")
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The window as a PNG in `path`.
    pub fn screenshot(&self, path: &Path) -> PathBuf {
        let data = self.send("GET", "/screenshot", None);
        let png = base64::engine::general_purpose::STANDARD
            .decode(data.as_str().expect("screenshot as base64"))
            .expect("screenshot decodes");
        std::fs::write(path, png).expect("write screenshot");
        path.to_path_buf()
    }

    /// A cookie's value (HttpOnly ones too: WebDriver sees what a script cannot).
    pub fn cookie(&self, name: &str) -> Option<String> {
        let all = self.send("GET", "/cookie", None);
        all.as_array()?
            .iter()
            .find(|c| c["name"] == name)
            .and_then(|c| c["value"].as_str())
            .map(str::to_string)
    }

    pub fn delete_cookies(&self) {
        self.send("DELETE", "/cookie", None);
    }

    /// What the page wrote to its console since the last call (CSP violations included), as
    /// `LEVEL message` lines.
    pub fn console_log(&self) -> Vec<String> {
        let entries = self.send("POST", "/se/log", Some(json!({ "type": "browser" })));
        entries
            .as_array()
            .map(|list| {
                list.iter()
                    .map(|e| {
                        format!(
                            "{} {}",
                            e["level"].as_str().unwrap_or("?"),
                            e["message"].as_str().unwrap_or("")
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    }
}

impl Drop for Session<'_> {
    fn drop(&mut self) {
        let _ = self
            .driver
            .http
            .delete(format!("{}/session/{}", self.driver.base, self.id))
            .send();
    }
}
