//! The real collector binary as a child process on loopback ports and its
//! own database: restartable, killable, its log kept per start, its
//! readiness and metrics read over HTTP.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::{collector_binary, free_port, http_get};

/// The collector binary on fixed ports, restartable; its log is kept per
/// start.
#[derive(Debug)]
pub struct CollectorProcess {
    port: u16,
    metrics_port: u16,
    database: String,
    logs: PathBuf,
    starts: usize,
    env: Vec<(String, String)>,
    child: Option<Child>,
}

impl CollectorProcess {
    pub fn start(database: &str, logs: &Path) -> Self {
        Self::start_with_env(database, logs, &[])
    }

    /// [`CollectorProcess::start`] with more environment variables.
    pub fn start_with_env(database: &str, logs: &Path, env: &[(&str, &str)]) -> Self {
        let mut process = Self {
            port: free_port(),
            metrics_port: free_port(),
            database: database.to_owned(),
            logs: logs.to_owned(),
            starts: 0,
            env: env
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            child: None,
        };
        process.restart();
        process
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// `127.0.0.1:PORT` of its HTTP listener (metrics, probes, JSON API).
    pub fn http_address(&self) -> String {
        format!("127.0.0.1:{}", self.metrics_port)
    }

    pub fn log_path(&self, start: usize) -> PathBuf {
        self.logs.join(format!("collector-{start}.log"))
    }

    /// The log of the current (last) start.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path(self.starts)).unwrap_or_default()
    }

    pub fn restart(&mut self) {
        self.starts += 1;
        let log = std::fs::File::create(self.log_path(self.starts)).expect("the collector log file");
        let child = Command::new(collector_binary())
            .args(["serve", "--listen", &format!("127.0.0.1:{}", self.port)])
            .args(["--database", &self.database])
            .args(["--metrics-listen", &format!("127.0.0.1:{}", self.metrics_port)])
            .env("OOMLENS_LOG", "info")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start oomlens-collector");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        // Both its ports: the HTTP one is bound after the gRPC one.
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err()
            || std::net::TcpStream::connect(("127.0.0.1", self.metrics_port)).is_err()
        {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().expect("wait for the collector"))
            {
                panic!("the collector exited ({status}):\n{}", self.log());
            }
            assert!(Instant::now() < deadline, "the collector did not start listening");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Its process id while it runs (for /proc).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// SIGKILL: whatever it had not committed is gone.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// `/readyz`: Some(true) 200, Some(false) 503.
    pub fn ready(&self) -> Option<bool> {
        match http_get(self.metrics_port, "/readyz") {
            Ok((200, _)) => Some(true),
            Ok((503, _)) => Some(false),
            _ => None,
        }
    }

    pub fn metrics(&self) -> String {
        http_get(self.metrics_port, "/metrics")
            .map(|(_, body)| body)
            .unwrap_or_default()
    }
}

impl Drop for CollectorProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The ids of every event stored at the collector on `endpoint`, page
/// after page, as often as each is stored.
pub async fn stored_ids(endpoint: &str) -> Vec<String> {
    try_stored_ids(endpoint).await.expect("a page of stored events")
}

/// [`stored_ids`], or the status of the first query that failed.
pub async fn try_stored_ids(endpoint: &str) -> Result<Vec<String>, tonic::Status> {
    let config = oomlens_common::client::ClientConfig {
        endpoint: endpoint.to_owned(),
        ..oomlens_common::client::ClientConfig::default()
    };
    let mut client = config.event_client().await.expect("a client for the collector");
    let mut ids = Vec::new();
    let mut token = String::new();
    loop {
        let page = client
            .query(oomlens_proto::v1::QueryRequest {
                filter: None,
                page_size: 1000,
                page_token: token,
            })
            .await?
            .into_inner();
        ids.extend(page.events.into_iter().map(|e| e.id));
        if page.next_page_token.is_empty() {
            return Ok(ids);
        }
        token = page.next_page_token;
    }
}
