//! `oomlens`: the SRE command line, talking to a collector.

use clap::{Args, Parser, Subcommand, ValueEnum};
use std::process::ExitCode;

/// Ask oomlens why a workload died of memory, and what its limit should be.
#[derive(Debug, Parser)]
#[command(name = "oomlens", version)]
struct Cli {
    /// Collector address.
    #[arg(
        long,
        global = true,
        env = "OOMLENS_COLLECTOR",
        default_value = "http://127.0.0.1:7460"
    )]
    collector: String,
    /// Bearer token for the collector.
    #[arg(long, global = true, env = "OOMLENS_TOKEN", hide_env_values = true)]
    token: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// List OOM kills, newest first.
    Events {
        #[command(flatten)]
        filter: Filter,
        /// Output format.
        #[arg(long, short, value_enum, default_value_t = Output::Table)]
        output: Output,
    },
    /// Everything about one kill: identity, scope, memory chart, verdict and
    /// recommended limit.
    Show {
        /// Event id (as printed by `oomlens events`).
        id: String,
    },
    /// Follow new kills live.
    Watch {
        #[command(flatten)]
        filter: Filter,
        /// Output format.
        #[arg(long, short, value_enum, default_value_t = Output::Table)]
        output: Output,
    },
    /// Count kills by scope, namespace, node or workload.
    Summary {
        #[command(flatten)]
        filter: Filter,
        /// What to group by.
        #[arg(long, value_enum, default_value_t = GroupBy::Scope)]
        by: GroupBy,
    },
    /// Live containers closest to their memory limit.
    Top {
        /// Only this namespace.
        #[arg(long)]
        namespace: Option<String>,
    },
}

#[derive(Debug, Args)]
struct Filter {
    /// Only this namespace.
    #[arg(long)]
    namespace: Option<String>,
    /// Only this pod.
    #[arg(long)]
    pod: Option<String>,
    /// Only this node.
    #[arg(long)]
    node: Option<String>,
    /// Only this scope (container_limit, pod_limit, node_allocatable, node_oom, ...).
    #[arg(long)]
    scope: Option<String>,
    /// Only kills newer than this (e.g. 1h, 30m, 7d).
    #[arg(long)]
    since: Option<String>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Output {
    Table,
    Json,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum GroupBy {
    Scope,
    Namespace,
    Node,
    Workload,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let what = match cli.command {
        Command::Events { .. } => "`oomlens events`",
        Command::Show { .. } => "`oomlens show`",
        Command::Watch { .. } => "`oomlens watch`",
        Command::Summary { .. } => "`oomlens summary`",
        Command::Top { .. } => "`oomlens top`",
    };
    oomlens_collector::not_built(what)
}
