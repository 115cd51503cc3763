//! oomlens collector: stores OOM events from the agents, answers queries and
//! serves the subscription stream; and the `oomlens` SRE command line.
//!
//! - [`store`]: SQLite or PostgreSQL through sqlx, idempotent by event id;
//! - [`service`]: `IngestService` (acks once stored) and `EventService`;
//! - [`server`]: TLS, mutual TLS and bearer tokens ([`auth`]), retention;
//! - [`http`]: metrics, probes and the read-only JSON API;
//! - [`webhook`]: POSTs each stored kill to configured URLs;
//! - [`kube_events`]: each kill of a pod's process as an Event on the pod;
//! - [`analysis`]: the verdict and recommended limit stored with each kill.
//!
//! Connecting to a collector, rendering for the `oomlens` command and the
//! binaries' process plumbing live in `oomlens-common`, which the agent
//! shares without depending on this crate.

pub mod analysis;
pub mod auth;
pub mod filter;
pub mod http;
pub mod hub;
pub mod kube_events;
pub mod metrics;
pub mod outbound;
mod private;
mod replicas;
pub mod server;
pub mod service;
pub mod standard;
pub mod store;
pub mod webhook;
