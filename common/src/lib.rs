//! What the oomlens binaries share, so that the node agent does not need
//! the collector to build:
//!
//! - [`client`]: connecting to a collector (plain, TLS, mutual TLS, bearer
//!   token), for the agent's sender and the `oomlens` CLI;
//! - [`process`]: logging, stop signals, the [`process::Shutdown`] every
//!   task watches, and the one [`process::Drain`] a stopping process waits
//!   through;
//! - [`units`]: sizes and durations as people read and type them;
//! - [`render`]: events, summaries and live memory for terminals (every
//!   string from an event escaped);
//! - [`tls`]: certificate and key files checked as they are read, and
//!   handshake failures explained;
//! - [`secrets`]: bearer tokens' rules, permissions of token and key
//!   files, and state files created private;
//! - [`ingest`]: what the collector answered for each event (a metric label
//!   both sides export);
//! - [`kill_point`]: the kernel's numbers at a kill as the last point of
//!   the killed cgroup's curve, for the verdicts and the charts.

pub mod client;
pub mod ingest;
pub mod kill_point;
pub mod limits;
pub mod process;
pub mod render;
pub mod secrets;
pub mod tls;
pub mod units;
