//! A real browser for the web pages' tests: headless Chromium from
//! Debian's packages driven through chromedriver's WebDriver protocol
//! (HTTP and JSON on loopback), with just what the tests need: open a
//! page, run a script in it, fill a form, take a screenshot.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::http;

/// Where Debian puts them (`apt-get install chromium chromium-driver`).
const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// Whether the browser can run here; the reason when not.
pub fn available() -> Result<(), String> {
    for path in [CHROMIUM, CHROMEDRIVER] {
        if !Path::new(path).exists() {
            return Err(format!(
                "{path} is missing (apt-get install chromium chromium-driver)"
            ));
        }
    }
    Ok(())
}

/// A chromedriver process with one browser session.
#[derive(Debug)]
pub struct Browser {
    driver: Child,
    address: String,
    session: String,
    _profile: tempfile::TempDir,
}

impl Browser {
    /// Starts chromedriver and a headless Chromium of `width`×`height`.
    pub async fn start(width: u32, height: u32) -> Self {
        let port = crate::free_port();
        let driver = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let address = format!("127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(20);
        while tokio::net::TcpStream::connect(&address).await.is_err() {
            assert!(Instant::now() < deadline, "chromedriver did not listen");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let profile = tempfile::tempdir().expect("a browser profile directory");
        // The flags keep Chromium off the network (this machine has none
        // beyond loopback) and out of the sandbox it cannot have as root.
        let capabilities = json!({
            "capabilities": { "alwaysMatch": {
                "browserName": "chrome",
                "goog:chromeOptions": {
                    "binary": CHROMIUM,
                    "args": [
                        "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                        "--disable-quic", "--no-first-run", "--disable-background-networking",
                        "--disable-component-update", "--disable-sync",
                        format!("--window-size={width},{height}"),
                        format!("--user-data-dir={}", profile.path().display()),
                    ]
                }
            }}
        });
        let response = http::request(
            &address,
            "POST",
            "/session",
            &[("Content-Type", "application/json")],
            Some(&capabilities.to_string()),
        )
        .await;
        let value = response.json();
        let session = value["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no browser session: {value}"))
            .to_owned();
        Self {
            driver,
            address,
            session,
            _profile: profile,
        }
    }

    async fn command(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let path = format!("/session/{}{path}", self.session);
        let body = body.map(|b| b.to_string());
        let response = http::request(
            &self.address,
            method,
            &path,
            &[("Content-Type", "application/json")],
            body.as_deref(),
        )
        .await;
        let value = response.json();
        assert_eq!(response.status, 200, "{method} {path}: {value}");
        value["value"].clone()
    }

    /// Opens `url` and waits for it to load.
    pub async fn goto(&self, url: &str) {
        self.command("POST", "/url", Some(json!({ "url": url }))).await;
    }

    pub async fn url(&self) -> String {
        self.command("GET", "/url", None)
            .await
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// Runs `script` (a function body; `return` gives its value) in the page.
    pub async fn eval(&self, script: &str) -> Value {
        self.command(
            "POST",
            "/execute/sync",
            Some(json!({ "script": script, "args": [] })),
        )
        .await
    }

    /// Waits until `script` returns true; panics after `wait`.
    pub async fn wait_for(&self, what: &str, wait: Duration, script: &str) {
        let deadline = Instant::now() + wait;
        loop {
            if self.eval(script).await == Value::Bool(true) {
                return;
            }
            assert!(Instant::now() < deadline, "{what}: not within {wait:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Makes the pages see `prefers-color-scheme: dark` (through
    /// chromedriver's DevTools passthrough).
    pub async fn dark_mode(&self) {
        self.command(
            "POST",
            "/goog/cdp/execute",
            Some(json!({
                "cmd": "Emulation.setEmulatedMedia",
                "params": { "features": [{ "name": "prefers-color-scheme", "value": "dark" }] }
            })),
        )
        .await;
    }

    /// A PNG of the window, saved at `path`.
    pub async fn screenshot(&self, path: &Path) -> PathBuf {
        use base64::Engine as _;
        let data = self.command("GET", "/screenshot", None).await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(data.as_str().unwrap_or_default())
            .expect("a base64 screenshot");
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).expect("the screenshot directory");
        }
        std::fs::write(path, png).expect("write the screenshot");
        path.to_owned()
    }
}

impl Browser {
    /// Ends the session (the browser exits) and chromedriver.
    pub async fn close(self) {
        let path = format!("/session/{}", self.session);
        let _ = http::request(&self.address, "DELETE", &path, &[], None).await;
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}
