//! The real agent binary shipping real kills to a collector, as the
//! delivery, stream and client tests run it: no CRI, no sampler, events
//! also printed as JSON (to nowhere), stopped by SIGTERM.

use std::path::Path;
use std::process::{Child, Command, Stdio};

/// Starts `oomlens-agent run` sending to `collector`, its state (cursor
/// and spool) in `state`, without the sampler.
pub fn start_shipping(collector: &str, state: &Path) -> Child {
    start_shipping_with(collector, state, &["--no-sampler"])
}

/// [`start_shipping`] with other arguments (and the sampler unless they
/// say `--no-sampler`).
pub fn start_shipping_with(collector: &str, state: &Path, args: &[&str]) -> Child {
    Command::new(crate::agent_binary())
        .args(["run", "--collector", collector])
        .args(["--state-dir", &state.display().to_string()])
        .args(["--metrics-listen", "", "--cri-socket", "none", "--output", "json"])
        .args(args)
        .env("OOMLENS_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .expect("start oomlens-agent")
}

/// SIGTERM, and the agent must exit cleanly.
pub fn stop(child: &mut Child) {
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(crate::kernel_pid(child.id())),
        nix::sys::signal::Signal::SIGTERM,
    );
    let status = child.wait().expect("wait for the agent");
    assert!(status.success(), "the agent exits cleanly on SIGTERM: {status}");
}

/// An agent process that is killed if the test ends without stopping it:
/// a failing test leaves no agent behind.
#[derive(Debug)]
pub struct KillOnDrop(pub Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// The agent's sender on a spool, in this process (as `oomlens-agent`
/// runs it), until [`InProcessShipper::stop`] or
/// [`InProcessShipper::abort`].
#[derive(Debug)]
pub struct InProcessShipper {
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

impl InProcessShipper {
    /// Ships `spool` to `endpoint` as `node`, its configuration first
    /// given to `tune`.
    pub fn start(
        spool: &oomlens_agent::ship::SharedSpool,
        endpoint: &str,
        metrics: &std::sync::Arc<oomlens_agent::app::AgentMetrics>,
        node: &str,
        tune: impl FnOnce(&mut oomlens_agent::ship::ShipperConfig),
    ) -> Self {
        let mut config = oomlens_agent::ship::ShipperConfig::new(
            oomlens_common::client::ClientConfig {
                endpoint: endpoint.to_owned(),
                ..oomlens_common::client::ClientConfig::default()
            },
            oomlens_proto::v1::AgentHello {
                node: node.into(),
                ..oomlens_proto::v1::AgentHello::default()
            },
        );
        tune(&mut config);
        let (_side, side) = tokio::sync::mpsc::channel(1);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(oomlens_agent::ship::run_shipper(
            spool.clone(),
            config,
            side,
            metrics.sender.clone(),
            async move {
                let _ = stopped.await;
            },
        ));
        Self { stop, task }
    }

    /// Shuts it down as the agent does (draining), and waits.
    pub async fn stop(self) {
        let _ = self.stop.send(());
        self.task.await.expect("the shipper task");
    }

    /// Drops it mid-stream, as a killed agent: acks in flight are lost.
    pub async fn abort(self) {
        self.task.abort();
        let _ = self.task.await;
    }
}
