//! The real collector binary as a child process on a loopback port and its
//! own database, restartable and killable.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::{collector_binary, free_port};

/// `oomlens-collector serve` on a fixed port and database; killed on drop.
#[derive(Debug)]
pub struct CollectorProcess {
    pub port: u16,
    database: PathBuf,
    child: Option<Child>,
}

impl CollectorProcess {
    pub fn start(database: &Path) -> Self {
        let mut process = Self {
            port: free_port(),
            database: database.to_owned(),
            child: None,
        };
        process.restart();
        process
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Starts it (again) and waits until it listens.
    pub fn restart(&mut self) {
        let child = Command::new(collector_binary())
            .args(["serve", "--listen", &format!("127.0.0.1:{}", self.port)])
            .args(["--database", &self.database.display().to_string()])
            .args(["--metrics-listen", ""])
            .env("OOMLENS_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .expect("start oomlens-collector");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "the collector did not start listening");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGKILL: no graceful shutdown, whatever was in flight is cut off.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for CollectorProcess {
    fn drop(&mut self) {
        self.kill();
    }
}
