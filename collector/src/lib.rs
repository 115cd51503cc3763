//! oomlens collector: stores OOM events from the agents, answers queries and
//! serves the subscription stream; and the `oomlens` SRE command line.
//!
//! - [`store`]: SQLite or PostgreSQL through sqlx, idempotent by event id;
//! - [`service`]: `IngestService` (acks once stored) and `EventService`;
//! - [`server`]: TLS, mutual TLS and bearer tokens ([`auth`]), retention;
//! - [`analysis`]: the verdict and recommended limit stored with each kill;
//! - [`client`]: connecting to a collector (agent and CLI);
//! - [`cli`]: rendering for the `oomlens` command;
//! - [`process`]: logging and stop signals for the binaries.

pub mod analysis;
pub mod auth;
pub mod cli;
pub mod client;
pub mod filter;
pub mod hub;
pub mod metrics;
pub mod process;
mod replicas;
pub mod server;
pub mod service;
pub mod store;
