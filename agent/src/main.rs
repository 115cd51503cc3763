//! `oomlens-agent`: the node agent, and the post-mortem log parser.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand, ValueEnum};
use oomlens_agent::app::{Config, CriSocket, Delivery, Sampling};
use oomlens_agent::cgroup::{Schedule, Trend, WarningRules};
use oomlens_agent::kmsg::StartAt;
use oomlens_agent::output::Format;
use oomlens_agent::postmortem::{ParseRequest, current_year, parse};
use oomlens_common::client::ClientConfig;
use oomlens_common::process::{Shutdown, init_logging};
use oomlens_common::secrets::{check_private, read_token_file};

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
enum StartFrom {
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
    /// With --standalone: write each kill of a pod's process as a
    /// Kubernetes Event on the pod (RBAC: create and patch events).
    #[arg(long, env = "OOMLENS_KUBERNETES_EVENTS", requires = "standalone")]
    kubernetes_events: bool,
    /// The kubeconfig for --kubernetes-api and --kubernetes-events; without
    /// it the in-cluster service account, then $KUBECONFIG and
    /// ~/.kube/config.
    #[arg(long, env = "OOMLENS_KUBECONFIG")]
    kubeconfig: Option<PathBuf>,
    /// How long a container's kill counter series outlives its pod's
    /// cgroup on /metrics.
    #[arg(long, env = "OOMLENS_KILL_SERIES_GRACE_SECS", default_value_t = 900)]
    kill_series_grace_secs: u64,
    /// Address for /metrics, /healthz and /readyz; empty: none.
    #[arg(long, env = "OOMLENS_METRICS_LISTEN", default_value = "127.0.0.1:7462")]
    metrics_listen: String,
    /// With --standalone: the embedded collector's JSON API and web pages
    /// on this address instead of beside the metrics.
    #[arg(long, env = "OOMLENS_WEB_LISTEN", requires = "standalone")]
    web_listen: Option<String>,
    /// Warn about a container from this fraction of its limit...
    #[arg(long, env = "OOMLENS_WARN_RATIO", default_value_t = 0.5)]
    warn_ratio: f64,
    /// ...when its last minute's climb would reach the limit within this
    /// many seconds...
    #[arg(long, env = "OOMLENS_WARN_HORIZON_SECS", default_value_t = 900.0)]
    warn_horizon_secs: f64,
    /// ...or its steady trend of the last 15 minutes (a slow leak) within
    /// this many seconds.
    #[arg(long, env = "OOMLENS_WARN_SLOW_HORIZON_SECS", default_value_t = 21_600.0)]
    warn_slow_horizon_secs: f64,
    /// Directory for the agent's state (the kernel log cursor). Created if
    /// missing.
    #[arg(long, env = "OOMLENS_STATE_DIR", default_value = "/var/lib/oomlens")]
    state_dir: PathBuf,
    /// Node name put on events (the DaemonSet sets it from the downward
    /// API); defaults to the host name.
    #[arg(long, env = "NODE_NAME")]
    node_name: Option<String>,
    /// Where to start when there is no cursor from this boot.
    #[arg(long, value_enum, env = "OOMLENS_FROM", default_value_t = StartFrom::End)]
    from: StartFrom,
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
    /// the collector: one token (lines starting with # are comments).
    #[arg(long, env = "OOMLENS_TOKEN_FILE")]
    token_file: Option<PathBuf>,
    /// Refuse to start when the token file or the client key may be read
    /// by other users (without it: a warning).
    #[arg(long, env = "OOMLENS_STRICT_PERMISSIONS")]
    strict_permissions: bool,
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
    /// The kernel log device.
    #[arg(long, default_value = "/dev/kmsg")]
    kmsg: PathBuf,
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
    /// Also list, on standard error, each line that looked like part of an
    /// OOM report but made no kill, and why.
    #[arg(long)]
    explain: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Some(Command::Parse(args)) => parse(&ParseRequest {
            file: args.file.as_deref(),
            format: args.output.into(),
            year: args.year.unwrap_or_else(current_year),
            node: args.node,
            explain: args.explain,
        })
        .map(|_| ExitCode::SUCCESS),
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

impl From<Output> for Format {
    fn from(output: Output) -> Self {
        match output {
            Output::Table => Self::Table,
            Output::Json => Self::Json,
        }
    }
}

impl RunArgs {
    fn into_config(self) -> anyhow::Result<Config> {
        let metrics_listen = match self.metrics_listen.trim() {
            "" => None,
            addr => Some(addr.parse().with_context(|| {
                format!("--metrics-listen {addr:?} is not an address like 127.0.0.1:7462")
            })?),
        };
        let web_listen =
            match self.web_listen.as_deref().map(str::trim) {
                None | Some("") => None,
                Some(addr) => Some(addr.parse().with_context(|| {
                    format!("--web-listen {addr:?} is not an address like 127.0.0.1:7463")
                })?),
            };
        let token = match &self.token_file {
            Some(path) => Some(read_token_file(path, self.strict_permissions)?),
            None => None,
        };
        if let Some(key) = &self.client_key {
            check_private("the client key (--client-key)", key, self.strict_permissions)?;
        }
        let delivery = match (self.standalone, self.collector) {
            (true, _) => Delivery::Standalone {
                listen: self.listen,
                database: self.database,
                kubernetes_events: self.kubernetes_events,
            },
            (false, Some(endpoint)) => Delivery::Collector(ClientConfig {
                endpoint,
                ca_cert: self.ca_cert,
                client_cert: self.client_cert,
                client_key: self.client_key,
                tls_server_name: None,
                token,
            }),
            (false, None) => Delivery::Local,
        };
        Ok(Config {
            kmsg: self.kmsg,
            proc_root: self.proc_root,
            cgroup_root: self.cgroup_root,
            state_dir: self.state_dir,
            node_name: self.node_name,
            start_without_cursor: match self.from {
                StartFrom::End => StartAt::End,
                StartFrom::Oldest => StartAt::Oldest,
            },
            sampling: (!self.no_sampler).then(|| Sampling {
                include_other: self.include_other_cgroups,
                schedule: Schedule {
                    fast: Duration::from_millis(self.sample_interval_ms),
                    full: Duration::from_millis(self.full_sample_interval_ms),
                    hot: Duration::from_millis(self.hot_sample_interval_ms),
                    pod_full: Duration::from_millis(self.pod_full_sample_interval_ms),
                    limits: Duration::from_millis(self.limit_interval_ms),
                    ..Schedule::default()
                },
                grace: Duration::from_secs(self.history_grace_secs),
                warnings: {
                    let rules = WarningRules::default();
                    WarningRules {
                        floor: self.warn_ratio,
                        fast: Trend {
                            horizon: Duration::from_secs_f64(self.warn_horizon_secs.max(0.0)),
                            ..rules.fast
                        },
                        slow: Trend {
                            horizon: Duration::from_secs_f64(self.warn_slow_horizon_secs.max(0.0)),
                            ..rules.slow
                        },
                        ..rules
                    }
                },
            }),
            cri_socket: match self.cri_socket {
                Some(path) if path.as_os_str() == "none" => CriSocket::Off,
                Some(path) => CriSocket::At(path),
                None => CriSocket::Detect,
            },
            kubernetes_api: self.kubernetes_api,
            kubeconfig: self.kubeconfig,
            kill_series_grace: Duration::from_secs(self.kill_series_grace_secs),
            metrics_listen,
            web_listen,
            output: Some(self.output.into()),
            delivery,
            spool_max_bytes: self.spool_max_mib * 1024 * 1024,
        })
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?)
}

fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    // Everything the agent creates (the state directory, the kernel log
    // cursor, the spool, the standalone database) is its own: 0600/0700
    // whatever the umask it was started with.
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o077));
    init_logging(args.log_format == LogFormat::Json);
    let agent = args.into_config()?.build()?;
    // The signal handlers need the runtime: made inside it.
    runtime()?.block_on(async { agent.run(Shutdown::on_signals()).await })?;
    Ok(ExitCode::SUCCESS)
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
        init_logging(false);
    }
    runtime()?.block_on(oomlens_agent::demo::run(&oomlens_agent::demo::Paths {
        kmsg: args.kmsg.clone(),
        cgroup_root: args.cgroup_root.clone(),
        proc_root: args.proc_root.clone(),
    }))?;
    Ok(ExitCode::SUCCESS)
}
