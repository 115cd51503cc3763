//! The oomlens node agent: detects kernel OOM kills, attributes them to pods
//! and containers, and attaches the memory history that led to them.
//!
//! Modules, one job each:
//! - [`kmsg`]: reading `/dev/kmsg` records, with overrun accounting and a
//!   persisted cursor.
//! - [`oom`]: the pure parser turning kernel lines into OOM reports.
//! - [`logtext`]: saved kernel logs (dmesg, journalctl, syslog) as lines
//!   for the same parser, for post-mortems.
//! - [`cgroup`]: sampling cgroup memory and keeping its history.
//! - [`pods`]: the identity a cgroup path encodes.
//! - [`event`]: assembling the `oomlens.v1.OomEvent`.
//! - [`live`]: the live pipeline from `/dev/kmsg` to events.
//! - [`reconcile`]: kills the log missed, from `/proc/vmstat`.
//! - [`output`]: events as a table for people or JSON lines for scripts.
//! - [`telemetry`]: the agent's own metrics and health endpoints.

pub mod cgroup;
#[cfg(feature = "standalone")]
pub mod demo;
pub mod event;
pub mod kmsg;
pub mod live;
pub mod logtext;
pub mod oom;
pub mod output;
pub mod pods;
pub mod reconcile;
pub mod ship;
pub mod telemetry;
