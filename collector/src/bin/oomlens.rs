//! `oomlens`: the SRE command line, talking to a collector.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::{Args, Parser, Subcommand, ValueEnum};
use oomlens_common::client::{ClientConfig, EventClient};
use oomlens_common::render::{self as cli, Style};
use oomlens_common::units::parse_duration;
use oomlens_proto::history;
use oomlens_proto::json::{JsonEnum as _, event_to_json_line};
use oomlens_proto::v1::{
    EventFilter, GetRequest, GroupBy as ProtoGroupBy, QueryRequest, Scope, SubscribeRequest, SummaryRequest,
    TopRequest, subscribe_response,
};

/// Ask oomlens why a workload died of memory, and what its limit should be.
#[derive(Debug, Parser)]
#[command(name = "oomlens", version)]
struct Cli {
    /// Collector address (https:// for TLS).
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
    /// CA certificate (PEM) that signed the collector's certificate.
    #[arg(long, global = true, env = "OOMLENS_CA_CERT")]
    ca_cert: Option<PathBuf>,
    /// Client certificate (PEM), when the collector requires mutual TLS.
    #[arg(long, global = true, env = "OOMLENS_CLIENT_CERT")]
    client_cert: Option<PathBuf>,
    /// Client private key (PEM).
    #[arg(long, global = true, env = "OOMLENS_CLIENT_KEY")]
    client_key: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// List OOM kills, newest first.
    Events {
        #[command(flatten)]
        filter: Filter,
        /// At most this many kills.
        #[arg(long, default_value_t = 50)]
        limit: u32,
        /// Output format.
        #[arg(long, short, value_enum, default_value_t = Output::Table)]
        output: Output,
    },
    /// Everything about one kill: identity, scope, memory chart, verdict and
    /// recommended limit.
    Show {
        /// Event id, or a unique prefix of it (as printed by `oomlens events`).
        id: String,
        /// Output format.
        #[arg(long, short, value_enum, default_value_t = Output::Table)]
        output: Output,
    },
    /// Follow new kills live (reconnects and resumes where it left off).
    Watch {
        #[command(flatten)]
        filter: Filter,
        /// Also show warnings about containers approaching their limit.
        #[arg(long)]
        warnings: bool,
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
        /// Only this node.
        #[arg(long)]
        node: Option<String>,
        /// At most this many containers.
        #[arg(long, default_value_t = 20)]
        limit: u32,
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
    /// Only this scope: container_limit, pod_limit, node_allocatable,
    /// node_oom, cpuset, mempolicy, other_cgroup, unknown.
    #[arg(long)]
    scope: Option<String>,
    /// Only kills newer than this (e.g. 1h, 30m, 7d).
    #[arg(long)]
    since: Option<String>,
    /// Only this verdict: limit_too_low, leak_suspected, spike,
    /// node_pressure, insufficient_data, tmpfs_full, page_cache_pressure,
    /// kernel_memory, pod_limit.
    #[arg(long)]
    verdict: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
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

/// A usage error (exit 2) rather than a runtime one (exit 1).
#[derive(Debug)]
struct Usage(String);

impl std::fmt::Display for Usage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Usage {}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) if error.is::<Usage>() => {
            eprintln!("error: {error}");
            ExitCode::from(2)
        }
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}

fn style() -> Style {
    Style {
        color: std::io::IsTerminal::is_terminal(&std::io::stdout()) && std::env::var_os("NO_COLOR").is_none(),
    }
}

fn event_filter(filter: &Filter) -> Result<EventFilter, Usage> {
    let mut f = EventFilter::default();
    f.namespaces.extend(filter.namespace.clone());
    f.pods.extend(filter.pod.clone());
    f.nodes.extend(filter.node.clone());
    if let Some(word) = &filter.scope {
        let scope = Scope::from_word(word).ok_or_else(|| {
            Usage(format!(
                "unknown scope {word:?}: use container_limit, pod_limit, node_allocatable, node_oom, \
                 cpuset, mempolicy, other_cgroup or unknown"
            ))
        })?;
        f.scopes.push(scope as i32);
    }
    if let Some(word) = &filter.verdict {
        let verdict = oomlens_proto::v1::Verdict::from_word(word).ok_or_else(|| {
            Usage(format!(
                "unknown verdict {word:?}: use limit_too_low, leak_suspected, spike, node_pressure, \
                 insufficient_data, tmpfs_full, page_cache_pressure, kernel_memory or pod_limit"
            ))
        })?;
        f.verdicts.push(verdict as i32);
    }
    if let Some(since) = &filter.since {
        let age = parse_duration(since).map_err(|e| Usage(format!("--since {e}")))?;
        let since = SystemTime::now()
            .checked_sub(age)
            .unwrap_or(UNIX_EPOCH)
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        f.since = Some(prost_types::Timestamp {
            seconds: i64::try_from(since.as_secs()).unwrap_or(i64::MAX),
            // Below 10^9: fits.
            nanos: i32::try_from(since.subsec_nanos()).unwrap_or(0),
        });
    }
    Ok(f)
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let config = ClientConfig {
        endpoint: cli.collector.clone(),
        ca_cert: cli.ca_cert.clone(),
        client_cert: cli.client_cert.clone(),
        client_key: cli.client_key.clone(),
        tls_server_name: None,
        token: cli.token.clone(),
    };
    // Usage errors first: no connection needed to reject a bad flag.
    let filter = match &cli.command {
        Command::Events { filter, .. } | Command::Watch { filter, .. } | Command::Summary { filter, .. } => {
            Some(event_filter(filter)?)
        }
        _ => None,
    };
    let mut client = config.event_client().await?;
    let style = style();
    let stdout = std::io::stdout();
    match cli.command {
        Command::Events { limit, output, .. } => {
            let mut out = stdout.lock();
            let mut token = String::new();
            let mut printed = 0;
            // The header once the first page came back: an error (a refused
            // token, an invalid filter) leaves standard output empty.
            let mut header = output == Output::Table;
            while printed < limit {
                let page = client
                    .query(QueryRequest {
                        filter: filter.clone(),
                        page_size: (limit - printed).min(500),
                        page_token: token,
                    })
                    .await
                    .map_err(|s| anyhow::anyhow!(config.status_line(&s)))?
                    .into_inner();
                if header {
                    writeln!(out, "{}", cli::events_header())?;
                    header = false;
                }
                for event in &page.events {
                    match output {
                        Output::Table => writeln!(out, "{}", cli::event_row(event, style))?,
                        Output::Json => writeln!(out, "{}", event_to_json_line(event))?,
                    }
                }
                // A page holds at most page_size (u32) events.
                printed += u32::try_from(page.events.len()).unwrap_or(u32::MAX);
                if page.next_page_token.is_empty() || page.events.is_empty() {
                    break;
                }
                token = page.next_page_token;
            }
            if printed == 0 && output == Output::Table {
                eprintln!("no OOM kills match");
            }
        }
        Command::Show { id, output } => {
            let event = client
                .get(GetRequest { id })
                .await
                .map_err(|s| anyhow::anyhow!(config.status_line(&s)))?
                .into_inner();
            let mut out = stdout.lock();
            match output {
                Output::Table => write!(out, "{}", cli::show_event(&event, style))?,
                Output::Json => writeln!(out, "{}", event_to_json_line(&event))?,
            }
        }
        Command::Watch { warnings, output, .. } => {
            watch(&mut client, &config, filter, warnings, output, style).await?
        }
        Command::Summary { by, .. } => {
            let (group_by, name) = match by {
                GroupBy::Scope => (ProtoGroupBy::Scope, "scope"),
                GroupBy::Namespace => (ProtoGroupBy::Namespace, "namespace"),
                GroupBy::Node => (ProtoGroupBy::Node, "node"),
                GroupBy::Workload => (ProtoGroupBy::Workload, "workload"),
            };
            let summary = client
                .summary(SummaryRequest {
                    filter,
                    group_by: group_by as i32,
                    bucket_seconds: 0,
                })
                .await
                .map_err(|s| anyhow::anyhow!(config.status_line(&s)))?
                .into_inner();
            let mut out = stdout.lock();
            writeln!(out, "{}", cli::summary_header(name))?;
            for group in &summary.groups {
                writeln!(out, "{}", cli::summary_row(group))?;
            }
            writeln!(out, "{} kills in all", summary.total)?;
        }
        Command::Top {
            namespace,
            node,
            limit,
        } => {
            let top = client
                .top(TopRequest {
                    nodes: node.into_iter().collect(),
                    namespaces: namespace.into_iter().collect(),
                    limit,
                })
                .await
                .map_err(|s| anyhow::anyhow!(config.status_line(&s)))?
                .into_inner();
            let mut out = stdout.lock();
            writeln!(out, "{}", cli::top_header())?;
            for status in &top.containers {
                writeln!(out, "{}", cli::top_row(status, style))?;
            }
            if top.containers.is_empty() {
                eprintln!("no container with a memory limit has reported in the last 30 s");
            }
        }
    }
    Ok(())
}

/// Follows the stream; on a dropped connection, reconnects with the last
/// cursor so no kill is missed.
async fn watch(
    client: &mut EventClient,
    config: &ClientConfig,
    filter: Option<EventFilter>,
    warnings: bool,
    output: Output,
    style: Style,
) -> anyhow::Result<()> {
    let mut cursor = String::new();
    let mut header = output == Output::Table;
    loop {
        // Histories packed: a third of the bytes; unpacked below.
        let mut request = tonic::Request::new(SubscribeRequest {
            filter: filter.clone(),
            cursor: cursor.clone(),
            include_warnings: warnings,
        });
        history::say_packed(request.metadata_mut());
        let stream = client.subscribe(request).await;
        let mut stream = match stream {
            Ok(stream) => stream.into_inner(),
            // Down, or serving all the subscriptions it takes: try again.
            Err(status)
                if matches!(
                    status.code(),
                    tonic::Code::Unavailable | tonic::Code::ResourceExhausted
                ) =>
            {
                eprintln!("{}; retrying", config.status_line(&status));
                tokio::time::sleep(Duration::from_secs(2)).await;
                if let Ok(fresh) = config.event_client().await {
                    *client = fresh;
                }
                continue;
            }
            Err(status) => anyhow::bail!(config.status_line(&status)),
        };
        if header {
            println!("{}", cli::events_header());
            header = false;
        }
        loop {
            match stream.message().await {
                Ok(Some(mut response)) => {
                    if let Err(error) = history::unpack_response(&mut response) {
                        // Shown all the same, without its history.
                        eprintln!("a memory history in the stream does not decode: {error}");
                    }
                    if !response.cursor.is_empty() {
                        cursor = response.cursor;
                    }
                    let mut out = std::io::stdout().lock();
                    match response.item {
                        Some(subscribe_response::Item::Event(event)) => match output {
                            Output::Table if event.revision > 0 => {
                                writeln!(out, "{}", cli::update_line(&event))?
                            }
                            Output::Table => writeln!(out, "{}", cli::event_row(&event, style))?,
                            Output::Json => writeln!(out, "{}", event_to_json_line(&event))?,
                        },
                        Some(subscribe_response::Item::Warning(warning)) => match output {
                            Output::Table => writeln!(out, "{}", cli::warning_line(&warning))?,
                            Output::Json => writeln!(out, "{}", serde_json_line(&warning))?,
                        },
                        Some(subscribe_response::Item::Lagged(lagged)) => {
                            eprintln!(
                                "(this terminal fell behind by {} items; catching up)",
                                lagged.missed
                            );
                        }
                        None => {}
                    }
                    out.flush()?;
                }
                Ok(None) => break,
                Err(status) => {
                    eprintln!("{}; reconnecting", config.status_line(&status));
                    break;
                }
            }
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        if let Ok(fresh) = config.event_client().await {
            *client = fresh;
        }
    }
}

fn serde_json_line(warning: &oomlens_proto::v1::MemoryWarning) -> String {
    // The warning's JSON form (serde derives from the contract).
    serde_json::to_string(warning).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
}
