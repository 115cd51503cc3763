//! `oomlens-agent`: the node agent, and the post-mortem log parser.

use std::io::{BufWriter, Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand, ValueEnum};
use oomlens_agent::cgroup::{self, Sampler, SamplerConfig, Schedule, Selection, WarningRules};
use oomlens_agent::event::{NodeContext, event_from_report};
use oomlens_agent::kmsg::{StartAt, read_boot_id};
use oomlens_agent::live::{self, EventSink, LiveConfig};
use oomlens_agent::logtext::reports_from_text;
use oomlens_agent::output::{table_header, table_row};
use oomlens_agent::pods::cri;
use oomlens_agent::ship::{self, SharedSpool, ShipperConfig, SideItem};
use oomlens_agent::telemetry::{self, AgentMetrics};
#[cfg(feature = "standalone")]
use oomlens_collector::server::{Embedded, ServerConfig};
use oomlens_common::client::ClientConfig;
use oomlens_proto::json::event_to_json_line;
use oomlens_proto::v1::AgentHello;
use oomlens_proto::v1::OomEvent;
use std::sync::Arc;
use tokio::sync::mpsc;
use tracing::{info, warn};

/// The oomlens node agent: recognises every kernel OOM kill as it happens
/// and reports it with the pod, container and memory history behind it.
///
/// Without a subcommand it runs the agent (`run`).
#[derive(Debug, Parser)]
#[command(name = "oomlens-agent", version, args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the agent: follow the kernel log and report each OOM kill.
    Run(Box<RunArgs>),
    /// Watch oomlens capture a real OOM kill: creates a scratch memory
    /// cgroup, runs a memory hog in it, shows the kill with its memory
    /// history and verdict, and cleans up. Needs root.
    Demo(DemoArgs),
    /// The demo's memory hog (internal).
    #[cfg(feature = "standalone")]
    #[command(hide = true)]
    DemoHog {
        #[arg(long)]
        cgroup: PathBuf,
        #[arg(long, default_value_t = 24)]
        rate_mib: u64,
        #[arg(long, default_value_t = 256)]
        total_mib: u64,
    },
    /// Find the OOM kills in a saved kernel log (dmesg, dmesg -T/-x/-r,
    /// journalctl -k, syslog, raw /dev/kmsg), for post-mortems.
    Parse(ParseArgs),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Output {
    /// A table for people.
    Table,
    /// One JSON object per kill and line, in the documented OomEvent form.
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum From {
    /// Only kills from now on.
    End,
    /// Every kill still in the kernel's ring buffer.
    Oldest,
}

#[derive(Debug, Args)]
struct RunArgs {
    /// The kernel log device.
    #[arg(long, env = "OOMLENS_KMSG", default_value = "/dev/kmsg")]
    kmsg: PathBuf,
    /// Root of the proc filesystem (the host's, inside a container).
    #[arg(long, env = "OOMLENS_PROC_ROOT", default_value = "/proc")]
    proc_root: PathBuf,
    /// Where cgroups are mounted (v1, v2 and hybrid layouts are detected).
    #[arg(long, env = "OOMLENS_CGROUP_ROOT", default_value = "/sys/fs/cgroup")]
    cgroup_root: PathBuf,
    /// Also sample systemd services and plain Docker containers, not only
    /// Kubernetes pods and containers.
    #[arg(long, env = "OOMLENS_INCLUDE_OTHER_CGROUPS")]
    include_other_cgroups: bool,
    /// Do not sample cgroup memory (events then carry no history).
    #[arg(long, env = "OOMLENS_NO_SAMPLER")]
    no_sampler: bool,
    /// Interval between usage samples of each container, milliseconds.
    #[arg(long, env = "OOMLENS_SAMPLE_INTERVAL_MS", default_value_t = 100,
          value_parser = clap::value_parser!(u64).range(10..=10_000))]
    sample_interval_ms: u64,
    /// Interval between full samples (every memory file) of each container,
    /// and between usage samples of pods and the levels above them,
    /// milliseconds.
    #[arg(long, env = "OOMLENS_FULL_SAMPLE_INTERVAL_MS", default_value_t = 1000,
          value_parser = clap::value_parser!(u64).range(10..=60_000))]
    full_sample_interval_ms: u64,
    /// Interval between full samples of pods and the levels above them
    /// (QoS, kubepods) while not near a limit, milliseconds.
    #[arg(long, env = "OOMLENS_POD_FULL_SAMPLE_INTERVAL_MS", default_value_t = 5000,
          value_parser = clap::value_parser!(u64).range(10..=60_000))]
    pod_full_sample_interval_ms: u64,
    /// Interval between reads of a cgroup's limits while it is not near
    /// one (a resized limit is seen within this time), milliseconds.
    #[arg(long, env = "OOMLENS_LIMIT_INTERVAL_MS", default_value_t = 10_000,
          value_parser = clap::value_parser!(u64).range(10..=600_000))]
    limit_interval_ms: u64,
    /// Interval between full samples of a cgroup near its limit or climbing
    /// fast, milliseconds.
    #[arg(long, env = "OOMLENS_HOT_SAMPLE_INTERVAL_MS", default_value_t = 50,
          value_parser = clap::value_parser!(u64).range(10..=10_000))]
    hot_sample_interval_ms: u64,
    /// How long a removed cgroup's history is kept, seconds.
    #[arg(long, env = "OOMLENS_HISTORY_GRACE_SECS", default_value_t = 120)]
    history_grace_secs: u64,
    /// The container runtime's CRI socket, for pod and container names and
    /// silent kills. Default: containerd's or CRI-O's, whichever exists;
    /// `none`: identity from cgroup paths only.
    #[arg(long, env = "OOMLENS_CRI_SOCKET")]
    cri_socket: Option<PathBuf>,
    /// Also read this node's pods from the Kubernetes API (in-cluster
    /// service account, or the kubeconfig outside a cluster): owner
    /// workloads, requests and limits, container roles. Needs get/list/watch
    /// on pods, get on replicasets and jobs.
    #[arg(long, env = "OOMLENS_KUBERNETES_API")]
    kubernetes_api: bool,
    /// Address for /metrics, /healthz and /readyz; empty: none.
    #[arg(long, env = "OOMLENS_METRICS_LISTEN", default_value = "127.0.0.1:7462")]
    metrics_listen: String,
    /// Warn about a container above this fraction of its limit...
    #[arg(long, env = "OOMLENS_WARN_RATIO", default_value_t = 0.9)]
    warn_ratio: f64,
    /// ...projected to reach it within this many seconds.
    #[arg(long, env = "OOMLENS_WARN_HORIZON_SECS", default_value_t = 300.0)]
    warn_horizon_secs: f64,
    /// Directory for the agent's state (the kernel log cursor). Created if
    /// missing.
    #[arg(long, env = "OOMLENS_STATE_DIR", default_value = "/var/lib/oomlens")]
    state_dir: PathBuf,
    /// Node name put on events (the DaemonSet sets it from the downward
    /// API); defaults to the host name.
    #[arg(long, env = "NODE_NAME")]
    node_name: Option<String>,
    /// Where to start when there is no cursor from this boot.
    #[arg(long, value_enum, env = "OOMLENS_FROM", default_value_t = From::End)]
    from: From,
    /// How events are printed on standard output.
    #[arg(long, short, value_enum, default_value_t = Output::Table)]
    output: Output,
    /// Run with an embedded collector (SQLite in the state directory,
    /// serving on --listen) so the `oomlens` CLI can query this host: a
    /// complete OOM monitor without a cluster.
    #[arg(long, env = "OOMLENS_STANDALONE")]
    standalone: bool,
    /// With --standalone: the embedded collector's gRPC address.
    #[arg(long, env = "OOMLENS_LISTEN", default_value = "127.0.0.1:7460")]
    listen: String,
    /// With --standalone: the event database (default: oomlens.db in the
    /// state directory; a postgres:// URL also works).
    #[arg(long, env = "OOMLENS_DATABASE", hide_env_values = true)]
    database: Option<String>,
    /// Send events to this collector (http://HOST:PORT, or https:// for
    /// TLS). Events are spooled on disk until it acknowledges them.
    #[arg(long, env = "OOMLENS_COLLECTOR", conflicts_with = "standalone")]
    collector: Option<String>,
    /// CA certificate (PEM) that signed the collector's certificate.
    #[arg(long, env = "OOMLENS_CA_CERT")]
    ca_cert: Option<PathBuf>,
    /// Client certificate (PEM) for mutual TLS.
    #[arg(long, env = "OOMLENS_CLIENT_CERT", requires = "client_key")]
    client_cert: Option<PathBuf>,
    /// Client private key (PEM) for mutual TLS.
    #[arg(long, env = "OOMLENS_CLIENT_KEY", requires = "client_cert")]
    client_key: Option<PathBuf>,
    /// File holding the bearer token (an `ingest` or `admin` token) for
    /// the collector.
    #[arg(long, env = "OOMLENS_TOKEN_FILE")]
    token_file: Option<PathBuf>,
    /// Most the on-disk spool of unsent events may hold, MiB (older
    /// histories are thinned first, then the oldest events dropped,
    /// counted).
    #[arg(long, env = "OOMLENS_SPOOL_MAX_MIB", default_value_t = 256,
          value_parser = clap::value_parser!(u64).range(1..=1_048_576))]
    spool_max_mib: u64,
    /// Log format on standard error.
    #[arg(long, value_enum, env = "OOMLENS_LOG_FORMAT", default_value_t = LogFormat::Text)]
    log_format: LogFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Args)]
struct DemoArgs {
    /// Root of the proc filesystem.
    #[arg(long, default_value = "/proc")]
    proc_root: PathBuf,
    /// Where cgroups are mounted.
    #[arg(long, default_value = "/sys/fs/cgroup")]
    cgroup_root: PathBuf,
}

#[derive(Debug, Args)]
struct ParseArgs {
    /// The saved log; `-` or nothing reads standard input.
    file: Option<PathBuf>,
    /// Output format.
    #[arg(long, short, value_enum, default_value_t = Output::Table)]
    output: Output,
    /// Year of syslog timestamps, which do not show one (default: this year).
    #[arg(long, value_parser = clap::value_parser!(i64).range(1..=9999))]
    year: Option<i64>,
    /// Node name for the events (default: the host name the log shows, if any).
    #[arg(long)]
    node: Option<String>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Some(Command::Parse(args)) => parse(&args),
        Some(Command::Run(args)) => run(*args),
        Some(Command::Demo(args)) => demo(&args),
        #[cfg(feature = "standalone")]
        Some(Command::DemoHog {
            cgroup,
            rate_mib,
            total_mib,
        }) => oomlens_agent::demo::hog(&cgroup, rate_mib, total_mib).map(|()| ExitCode::SUCCESS),
        None => run(cli.run),
    };
    match result {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(format: LogFormat) {
    oomlens_common::process::init_logging(format == LogFormat::Json);
}

fn read_trimmed(path: &Path) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
}

fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    init_logging(args.log_format);
    let boot_id = read_boot_id(&args.proc_root)
        .with_context(|| format!("cannot read the boot id under {}", args.proc_root.display()))?;
    std::fs::create_dir_all(&args.state_dir)
        .with_context(|| format!("cannot create the state directory {}", args.state_dir.display()))?;
    let node = args
        .node_name
        .clone()
        .or_else(|| read_trimmed(&args.proc_root.join("sys/kernel/hostname")))
        .unwrap_or_else(|| "unknown".to_owned());
    let mut config = LiveConfig {
        kmsg_path: args.kmsg.clone(),
        proc_root: args.proc_root.clone(),
        state_dir: Some(args.state_dir.clone()),
        node: NodeContext {
            node,
            boot_id,
            boot_wall_us: live::boot_wall_us(),
            kernel_release: read_trimmed(&args.proc_root.join("sys/kernel/osrelease")),
        },
        start_without_cursor: match args.from {
            From::End => StartAt::End,
            From::Oldest => StartAt::Oldest,
        },
        idle_flush: Duration::from_millis(20),
        sampler: None,
        metrics: Arc::new(AgentMetrics::new()),
        cri: None,
        kube: None,
    };
    let cri_socket = match &args.cri_socket {
        Some(path) if path.as_os_str() == "none" => None,
        Some(path) => Some(path.clone()),
        None => cri::DEFAULT_SOCKETS
            .iter()
            .map(PathBuf::from)
            .find(|p| p.exists()),
    };
    let metrics_addr: Option<std::net::SocketAddr> =
        match args.metrics_listen.trim() {
            "" => None,
            addr => Some(addr.parse().with_context(|| {
                format!("--metrics-listen {addr:?} is not an address like 127.0.0.1:7462")
            })?),
        };
    let sampler_config = if args.no_sampler {
        None
    } else {
        match cgroup::detect(&args.cgroup_root) {
            Ok(root) => Some(SamplerConfig {
                selection: Selection {
                    include_other: args.include_other_cgroups,
                },
                schedule: Schedule {
                    fast: Duration::from_millis(args.sample_interval_ms),
                    full: Duration::from_millis(args.full_sample_interval_ms),
                    hot: Duration::from_millis(args.hot_sample_interval_ms),
                    pod_full: Duration::from_millis(args.pod_full_sample_interval_ms),
                    limits: Duration::from_millis(args.limit_interval_ms),
                    ..Schedule::default()
                },
                grace: Duration::from_secs(args.history_grace_secs),
                warnings: WarningRules {
                    ratio: args.warn_ratio,
                    horizon_s: args.warn_horizon_secs,
                    ..WarningRules::default()
                },
                ..SamplerConfig::new(root, args.proc_root.clone(), config.node.node.clone())
            }),
            Err(error) => {
                eprintln!("warning: {error}; kills are reported without memory history");
                None
            }
        }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let wait_stop = move || {
            let mut stopped = stopped.clone();
            async move {
                let _ = stopped.wait_for(|s| *s).await;
            }
        };
        tokio::spawn(async move {
            oomlens_common::process::shutdown_signal().await;
            let _ = stop.send(true);
        });
        if let Some(addr) = metrics_addr {
            let listener = telemetry::bind(addr).await?;
            let metrics = Arc::clone(&config.metrics);
            let stopping = wait_stop();
            tokio::spawn(async move {
                if let Err(error) = telemetry::serve(listener, metrics, stopping).await {
                    warn!(%error, "metrics endpoint stopped");
                }
            });
        }
        match cri_socket {
            Some(socket) => match cri::CriClient::connect(&socket).await {
                Ok(client) => {
                    let (handle, requests) = cri::CriResolver::channel();
                    let grace = Duration::from_secs(args.history_grace_secs);
                    // Relist every second, as the kubelet does: a container that
                    // dies of memory soon after starting still has its main pid.
                    let resolver = cri::CriResolver::new(client, grace, Duration::from_secs(1));
                    tokio::spawn(resolver.run(requests, wait_stop()));
                    config.cri = Some(handle);
                    config
                        .metrics
                        .identity_sources
                        .get_or_create(&telemetry::SourceLabels {
                            source: telemetry::IdentitySource::Cri,
                        })
                        .set(1);
                }
                Err(error) => {
                    warn!(%error, "pod and container names unavailable: identity from cgroup paths only")
                }
            },
            None => info!("no container runtime socket: identity from cgroup paths only"),
        }
        if args.kubernetes_api {
            match kube::Client::try_default().await {
                Ok(client) => {
                    let (enricher, reflector) =
                        oomlens_agent::pods::kube::KubeEnricher::start(client, &config.node.node);
                    let stopping = wait_stop();
                    tokio::spawn(async move {
                        tokio::select! {
                            () = reflector => {}
                            () = stopping => {}
                        }
                    });
                    config.kube = Some(Arc::new(enricher));
                    config
                        .metrics
                        .identity_sources
                        .get_or_create(&telemetry::SourceLabels {
                            source: telemetry::IdentitySource::KubernetesApi,
                        })
                        .set(1);
                }
                Err(error) => {
                    warn!(%error, "Kubernetes API unavailable: no owners, requests or limits on events")
                }
            }
        }
        // Shipping: the embedded collector (standalone) or a remote one.
        #[cfg(feature = "standalone")]
        let mut embedded = None;
        #[cfg(not(feature = "standalone"))]
        if args.standalone {
            anyhow::bail!("this oomlens-agent was built without an embedded collector (the `standalone` feature): use --collector");
        }
        #[cfg(feature = "standalone")]
        let endpoint = if args.standalone {
            let database = args.database.clone().unwrap_or_else(|| {
                args.state_dir.join("oomlens.db").display().to_string()
            });
            let listener = tokio::net::TcpListener::bind(&args.listen)
                .await
                .with_context(|| format!("cannot listen on {} for the embedded collector", args.listen))?;
            let collector = Embedded::start(&database, listener, ServerConfig::default()).await?;
            let endpoint = collector.endpoint();
            info!(address = %collector.address(), database = %oomlens_collector::store::redact(&database), "embedded collector serving; try `oomlens events`");
            embedded = Some(collector);
            Some(endpoint)
        } else {
            args.collector.clone()
        };
        #[cfg(not(feature = "standalone"))]
        let endpoint = args.collector.clone();
        let token = match &args.token_file {
            Some(path) => Some(
                std::fs::read_to_string(path)
                    .with_context(|| format!("cannot read the token file {}", path.display()))?
                    .trim()
                    .to_owned(),
            ),
            None => None,
        };
        let (side_sender, side_receiver) = mpsc::channel::<SideItem>(64);
        let mut shipping = None;
        let mut spool = None;
        if let Some(endpoint) = endpoint {
            let shared = SharedSpool::open(&args.state_dir.join("spool"), args.spool_max_mib * 1024 * 1024)
                .with_context(|| format!("cannot open the spool under {}", args.state_dir.display()))?;
            let stats = shared.stats();
            if stats.events > 0 || stats.corrupt > 0 {
                info!(events = stats.events, corrupt = stats.corrupt, "spooled events from the last run will be sent");
            }
            config.metrics.sync_spool(stats);
            let shipper_config = ShipperConfig::new(
                ClientConfig {
                    endpoint: endpoint.clone(),
                    ca_cert: args.ca_cert.clone(),
                    client_cert: args.client_cert.clone(),
                    client_key: args.client_key.clone(),
                    tls_server_name: None,
                    token,
                },
                AgentHello {
                    node: config.node.node.clone(),
                    agent_version: env!("CARGO_PKG_VERSION").to_owned(),
                    boot_id: config.node.boot_id.clone(),
                    kernel_release: config.node.kernel_release.clone().unwrap_or_default(),
                    cgroup_mode: sampler_config
                        .as_ref()
                        .map(|c| c.root.mode.to_string())
                        .unwrap_or_default(),
                },
            );
            let (pipeline_done, pipeline_finished) = tokio::sync::oneshot::channel::<()>();
            let task = tokio::spawn(ship::run_shipper(
                shared.clone(),
                shipper_config,
                side_receiver,
                Arc::clone(&config.metrics),
                async move {
                    let _ = pipeline_finished.await;
                },
            ));
            info!(collector = %endpoint, "sending events to the collector");
            shipping = Some((pipeline_done, task));
            spool = Some(shared);
        } else {
            drop(side_receiver);
        }
        let mut sampler_task = None;
        if let Some(sampler_config) = sampler_config {
            let (handle, requests) = Sampler::channel();
            let (warnings, mut warning_rx) = mpsc::channel(256);
            let sampler = Sampler::new(sampler_config, warnings).with_metrics(Arc::clone(&config.metrics));
            sampler_task = Some(tokio::spawn(sampler.run(requests, wait_stop())));
            if shipping.is_some() {
                tokio::spawn(ship::status::report(
                    handle.clone(),
                    config.cri.clone(),
                    warning_rx,
                    side_sender,
                    Duration::from_secs(5),
                ));
            } else {
                tokio::spawn(async move {
                    while let Some(w) = warning_rx.recv().await {
                        warn!(
                            cgroup = %w.cgroup,
                            working_set = w.working_set_bytes,
                            limit = w.limit_bytes,
                            seconds_to_limit = w.seconds_to_limit,
                            "container approaching its memory limit"
                        );
                    }
                });
            }
            config.sampler = Some(handle);
        }
        let (sender, receiver) = mpsc::channel::<OomEvent>(1024);
        let printer = tokio::task::spawn_blocking(move || print_events(receiver, args.output));
        let sink = EventSink {
            spool,
            channel: Some(sender),
        };
        let metrics = Arc::clone(&config.metrics);
        let stats = live::run(config, sink, wait_stop()).await?;
        printer.await??;
        if let Some(task) = sampler_task {
            task.await?;
        }
        // Then deliver what is spooled (for a few seconds), then stop the
        // embedded collector.
        if let Some((pipeline_done, task)) = shipping {
            let _ = pipeline_done.send(());
            task.await?;
        }
        #[cfg(feature = "standalone")]
        if let Some(collector) = embedded {
            collector.stop().await?;
        }
        info!(
            events = stats.events,
            lost_records = stats.reader.lost,
            forged = stats.parser.forged,
            spooled = metrics.spool_events.get(),
            "agent stopped"
        );
        Ok(ExitCode::SUCCESS)
    })
}

#[cfg(not(feature = "standalone"))]
fn demo(_: &DemoArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!(
        "this oomlens-agent was built without an embedded collector (the `standalone` feature), which the demo needs"
    )
}

#[cfg(feature = "standalone")]
fn demo(args: &DemoArgs) -> anyhow::Result<ExitCode> {
    if std::env::var_os("OOMLENS_LOG").is_some() {
        init_logging(LogFormat::Text);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(oomlens_agent::demo::run(&args.cgroup_root, &args.proc_root))?;
    Ok(ExitCode::SUCCESS)
}

fn print_events(mut receiver: mpsc::Receiver<OomEvent>, output: Output) -> anyhow::Result<()> {
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    if output == Output::Table {
        writeln!(out, "{}", table_header())?;
        out.flush()?;
    }
    while let Some(event) = receiver.blocking_recv() {
        match output {
            Output::Table => writeln!(out, "{}", table_row(&event))?,
            Output::Json => writeln!(out, "{}", event_to_json_line(&event))?,
        }
        out.flush()?;
    }
    Ok(())
}

fn parse(args: &ParseArgs) -> anyhow::Result<ExitCode> {
    let mut raw = Vec::new();
    match args.file.as_deref() {
        None => std::io::stdin()
            .read_to_end(&mut raw)
            .context("cannot read standard input")?,
        Some(path) if path == Path::new("-") => std::io::stdin()
            .read_to_end(&mut raw)
            .context("cannot read standard input")?,
        Some(path) => {
            let mut file =
                std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
            file.read_to_end(&mut raw)
                .with_context(|| format!("cannot read {}", path.display()))?
        }
    };
    // Saved logs are not always valid UTF-8 (binary garbage in dmesg).
    let text = String::from_utf8_lossy(&raw);
    let year = args.year.unwrap_or_else(current_year);
    let (reports, stats) = reports_from_text(&text, year);
    let ctx = NodeContext {
        node: args.node.clone().unwrap_or_default(),
        ..NodeContext::default()
    };
    let stdout = std::io::stdout();
    let mut out = BufWriter::new(stdout.lock());
    if args.output == Output::Table && !reports.is_empty() {
        writeln!(out, "{}", table_header())?;
    }
    for (ordinal, report) in reports.iter().enumerate() {
        let event = event_from_report(report, &ctx, ordinal as u64);
        match args.output {
            Output::Table => writeln!(out, "{}", table_row(&event))?,
            Output::Json => writeln!(out, "{}", event_to_json_line(&event))?,
        }
    }
    out.flush()?;
    if args.output == Output::Table {
        if reports.is_empty() {
            eprintln!("no OOM kills found ({} lines read)", stats.lines);
        }
        if stats.forged > 0 {
            eprintln!(
                "ignored {} kill-like lines that were not written by the kernel",
                stats.forged
            );
        }
        if stats.partial > 0 {
            eprintln!(
                "{} kills had their report rate-limited by the kernel (marked partial)",
                stats.partial
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn current_year() -> i64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    oomlens_proto::time::civil_from_days(now.div_euclid(86_400)).0
}
