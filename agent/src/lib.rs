//! The oomlens node agent: detects kernel OOM kills, attributes them to pods
//! and containers, and attaches the memory history that led to them.
//!
//! ```text
//! /dev/kmsg -> kmsg::KmsgReader -> oom::Parser -> pipeline (attribute, enrich) -> ship::SharedSpool -> ship::sender -> collector
//! cgroup tree -> cgroup::Sampler (history rings, warnings, kill evidence) --^
//! pods: path -> identity; cri::CriResolver (names, main pid); kube::KubeEnricher (owners, limits)
//! ```
//!
//! Modules, one job each:
//! - [`app`]: the wiring: a [`app::Config`] built into an [`app::Agent`]
//!   and started; `run`, `demo` and the tests use it.
//! - [`kmsg`]: reading `/dev/kmsg` records, with overrun accounting and a
//!   persisted cursor.
//! - [`oom`]: the pure parser turning kernel lines into OOM reports.
//! - [`logtext`]: saved kernel logs (dmesg, journalctl, syslog) as lines
//!   for the same parser, for post-mortems.
//! - [`event`]: assembling the `oomlens.v1.OomEvent` from a report.
//! - [`pipeline`]: the live path from records to delivered events: placing
//!   kills without a cgroup path ([`pipeline::attribute`]), enriching them.
//! - [`cgroup`]: sampling cgroup memory and keeping its history; cgroup
//!   paths as trees ([`cgroup::path`]).
//! - [`pods`]: the identity a cgroup path encodes; names from the runtime
//!   and the Kubernetes API.
//! - [`ship`]: the durable spool and the gRPC sender.
//! - [`procfs`], [`vmstat`], [`clock`]: the `/proc` files read, the
//!   vmstat cross-check of missed kills, the kernel's clock.
//! - [`output`]: events as a table for people or JSON lines for scripts.
//! - [`telemetry`]: `/metrics`, `/healthz`, `/readyz`; each component
//!   owns its metrics.
//! - `demo` (feature `standalone`): a real kill, captured end to end.

pub mod app;
pub mod cgroup;
pub mod clock;
#[cfg(feature = "standalone")]
pub mod demo;
pub mod event;
pub mod kmsg;
pub mod logtext;
pub mod oom;
pub mod output;
pub mod pipeline;
pub mod pods;
pub mod postmortem;
pub mod procfs;
pub mod ship;
pub mod telemetry;
pub mod vmstat;
