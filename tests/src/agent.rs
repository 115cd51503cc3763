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
