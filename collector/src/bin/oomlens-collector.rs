//! `oomlens-collector`: receives events from agents, stores them, serves
//! queries and subscriptions.

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

/// The oomlens collector: stores OOM events sent by node agents and serves
/// them to the `oomlens` CLI and to subscribing tools over gRPC.
#[derive(Debug, Parser)]
#[command(name = "oomlens-collector", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve IngestService (agents) and EventService (queries, subscriptions).
    Serve {
        /// gRPC listen address.
        #[arg(long, env = "OOMLENS_LISTEN", default_value = "127.0.0.1:7460")]
        listen: String,
        /// Storage: a SQLite file path (default) or a postgres:// URL.
        #[arg(long, env = "OOMLENS_DATABASE", default_value = "oomlens.db")]
        database: String,
        /// Keep events at most this many days.
        #[arg(long, env = "OOMLENS_RETENTION_DAYS", default_value_t = 30)]
        retention_days: u32,
        /// Server certificate (PEM) for TLS.
        #[arg(long, env = "OOMLENS_TLS_CERT")]
        tls_cert: Option<PathBuf>,
        /// Server private key (PEM) for TLS.
        #[arg(long, env = "OOMLENS_TLS_KEY")]
        tls_key: Option<PathBuf>,
        /// CA bundle (PEM): require agents to present a certificate it signed.
        #[arg(long, env = "OOMLENS_TLS_CLIENT_CA")]
        tls_client_ca: Option<PathBuf>,
        /// Metrics and health endpoint address.
        #[arg(long, env = "OOMLENS_METRICS_LISTEN", default_value = "127.0.0.1:7461")]
        metrics_listen: String,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve { .. } => oomlens_collector::not_built("`oomlens-collector serve`"),
    }
}
