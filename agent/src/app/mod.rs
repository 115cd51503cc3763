//! The agent's wiring, in one place: [`Config`] says what to run,
//! [`Config::build`] checks it and reads the node's facts, and
//! [`Agent::start`] starts the tasks (the metrics endpoint, identity
//! sources, the embedded or remote collector, the sampler, the printer,
//! the pipeline) that [`Running::wait`] drains on shutdown. `run`, `demo`
//! and the tests all start the agent this way.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use oomlens_common::client::ClientConfig;
use oomlens_common::process::{Drain, Shutdown};
use oomlens_proto::v1::{AgentHello, OomEvent};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::{info, warn};

use crate::cgroup::{self, Sampler, SamplerConfig, Schedule, Selection, WarningRules};
use crate::event::NodeContext;
use crate::kmsg::StartAt;
use crate::output::Format;
use crate::pipeline::{self, Enrichers, EventSink, PipelineConfig, PipelineStats};
use crate::pods::{IdentitySource, cri};
use crate::ship::{self, SharedSpool, ShipperConfig, SideItem};
use crate::telemetry;

mod metrics;
mod sources;

pub use metrics::AgentMetrics;
use sources::{spawn_kill_series_pruning, start_cri, start_kube};

/// How the sampler runs.
#[derive(Debug, Clone)]
pub struct Sampling {
    /// Also systemd services and plain Docker containers.
    pub include_other: bool,
    pub schedule: Schedule,
    /// How long a removed cgroup's history is kept.
    pub grace: Duration,
    pub warnings: WarningRules,
}

/// Where pod and container names come from.
#[derive(Debug, Clone)]
pub enum CriSocket {
    /// containerd's or CRI-O's default socket, whichever exists.
    Detect,
    Off,
    At(PathBuf),
}

/// Where events go besides standard output.
#[derive(Debug, Clone)]
pub enum Delivery {
    /// Nowhere: printed and logged only.
    Local,
    /// An embedded collector on `listen` storing in `database` (default:
    /// `oomlens.db` in the state directory). Needs the `standalone` feature.
    Standalone {
        listen: String,
        database: Option<String>,
        /// Also write each kill of a pod's process as a Kubernetes Event.
        kubernetes_events: bool,
    },
    /// A remote collector.
    Collector(ClientConfig),
}

/// What the agent runs with; every path is configurable.
#[derive(Debug, Clone)]
pub struct Config {
    pub kmsg: PathBuf,
    pub proc_root: PathBuf,
    pub cgroup_root: PathBuf,
    /// Holds the kernel log cursor, the spool and (standalone) the database.
    pub state_dir: PathBuf,
    /// Default: the host name.
    pub node_name: Option<String>,
    /// Where to start without a cursor of this boot.
    pub start_without_cursor: StartAt,
    /// None: no sampler (events carry no history).
    pub sampling: Option<Sampling>,
    pub cri_socket: CriSocket,
    pub kubernetes_api: bool,
    /// For the Kubernetes API (pods, Events); None: in-cluster, then
    /// `$KUBECONFIG` and `~/.kube/config`.
    pub kubeconfig: Option<PathBuf>,
    /// How long a container's kill counter series outlives its pod.
    pub kill_series_grace: Duration,
    pub metrics_listen: Option<SocketAddr>,
    /// With the embedded collector: its API and pages on an address of
    /// their own rather than beside the metrics.
    pub web_listen: Option<SocketAddr>,
    /// None: events are not printed.
    pub output: Option<Format>,
    pub delivery: Delivery,
    pub spool_max_bytes: u64,
}

/// A checked configuration with the node's facts read.
#[derive(Debug)]
pub struct Agent {
    config: Config,
    node: NodeContext,
    log_clock_every: Option<Duration>,
    sampler: Option<SamplerConfig>,
    cgroup_mode: String,
    oom_groups: crate::pipeline::oom_group::OomGroups,
    cri_socket: Option<PathBuf>,
    pub metrics: Arc<AgentMetrics>,
}

impl Config {
    /// Reads the node's facts and checks what can be checked before any
    /// task starts.
    pub fn build(self) -> anyhow::Result<Agent> {
        let boot_id = crate::procfs::read_boot_id(&self.proc_root)
            .with_context(|| format!("cannot read the boot id under {}", self.proc_root.display()))?;
        // 0700: the cursor, the spool and the standalone database name
        // pods and commands.
        oomlens_common::secrets::create_private_dir(&self.state_dir)
            .with_context(|| format!("cannot create the state directory {}", self.state_dir.display()))?;
        if matches!(self.delivery, Delivery::Standalone { .. }) && !cfg!(feature = "standalone") {
            anyhow::bail!(
                "this oomlens-agent was built without an embedded collector (the `standalone` feature): use --collector"
            );
        }
        // An address, CA or client certificate that can never work is a
        // startup error, not a sender retrying forever.
        if let Delivery::Collector(client) = &self.delivery {
            client.check().context("the collector settings cannot work")?;
        }
        // The kernel log's clock drifts from CLOCK_MONOTONIC with uptime:
        // measured now, and again every hour by the pipeline, so that event
        // times are wall time. Where it cannot be measured (a file, no
        // write access) it never will be.
        let (log_clock_offset_us, log_clock_every) = match crate::clock::log_clock_offset_us(&self.kmsg) {
            Ok(offset) => {
                tracing::info!(
                    offset_us = offset,
                    "kernel log clock measured against CLOCK_MONOTONIC"
                );
                (offset, Some(pipeline::log_clock::REMEASURE_EVERY))
            }
            Err(error) => {
                tracing::info!(%error, "kernel log clock not measured: taken as CLOCK_MONOTONIC");
                (0, None)
            }
        };
        let node = NodeContext {
            node: self
                .node_name
                .clone()
                .or_else(|| crate::procfs::hostname(&self.proc_root))
                .unwrap_or_else(|| "unknown".to_owned()),
            boot_id,
            boot_wall_us: crate::clock::boot_wall_us(log_clock_offset_us),
            log_clock_offset_us,
            kernel_release: crate::procfs::kernel_release(&self.proc_root),
        };
        let (sampler, cgroup_mode) = match &self.sampling {
            None => (None, String::new()),
            Some(sampling) => match cgroup::detect(&self.cgroup_root) {
                Ok(root) => {
                    let mode = root.mode.to_string();
                    let config = SamplerConfig {
                        selection: Selection {
                            include_other: sampling.include_other,
                        },
                        schedule: sampling.schedule,
                        grace: sampling.grace,
                        warnings: sampling.warnings,
                        ..SamplerConfig::new(root, self.proc_root.clone(), node.node.clone())
                    };
                    (Some(config), mode)
                }
                Err(error) => {
                    warn!(%error, "kills are reported without memory history");
                    (None, String::new())
                }
            },
        };
        // Whether a kill can be followed by its memory.oom.group (v2 only).
        let oom_groups = match cgroup::detect(&self.cgroup_root) {
            Ok(root) if root.version == cgroup::Version::V1 => {
                crate::pipeline::oom_group::OomGroups::Impossible
            }
            Ok(root) => crate::pipeline::oom_group::OomGroups::V2(root.path),
            Err(_) => crate::pipeline::oom_group::OomGroups::Unknown,
        };
        let cri_socket = match &self.cri_socket {
            CriSocket::Off => None,
            CriSocket::At(path) => Some(path.clone()),
            CriSocket::Detect => cri::DEFAULT_SOCKETS
                .iter()
                .map(PathBuf::from)
                .find(|p| p.exists()),
        };
        Ok(Agent {
            config: self,
            node,
            log_clock_every,
            sampler,
            cgroup_mode,
            oom_groups,
            cri_socket,
            metrics: Arc::new(AgentMetrics::new()),
        })
    }
}

/// The started agent's tasks, in the order they are drained.
#[derive(Debug)]
pub struct Running {
    pipeline: JoinHandle<Result<PipelineStats, pipeline::PipelineError>>,
    printer: Option<JoinHandle<std::io::Result<()>>>,
    sampler: Option<JoinHandle<()>>,
    /// Told when the pipeline is done, so the sender drains after it.
    shipping: Option<(tokio::sync::oneshot::Sender<()>, JoinHandle<()>)>,
    #[cfg(feature = "standalone")]
    embedded: Option<oomlens_collector::server::Embedded>,
    collector_endpoint: Option<String>,
    metrics: Arc<AgentMetrics>,
}

/// How long a stopping agent waits for the pipeline, the sampler and the
/// printer; the sender has its own drain (`ShipperConfig::drain`) inside.
const STOP_DEADLINE: Duration = Duration::from_secs(15);

impl Agent {
    pub fn node(&self) -> &NodeContext {
        &self.node
    }

    /// Starts and runs until `shutdown`, then drains.
    pub async fn run(self, shutdown: Shutdown) -> anyhow::Result<PipelineStats> {
        self.start(shutdown).await?.wait().await
    }

    /// Starts every task; they stop on `shutdown`.
    pub async fn start(self, shutdown: Shutdown) -> anyhow::Result<Running> {
        let Self {
            config,
            node,
            log_clock_every,
            sampler: sampler_config,
            cgroup_mode,
            oom_groups,
            cri_socket,
            metrics,
        } = self;
        let late_routes = telemetry::LateRoutes::default();
        if let Some(addr) = config.web_listen {
            let listener = telemetry::bind(addr).await?;
            let serving = telemetry::serve_late(listener, Arc::clone(&late_routes), shutdown.wait());
            tokio::spawn(async move {
                if let Err(error) = serving.await {
                    warn!(%error, "web endpoint stopped");
                }
            });
        }
        if let Some(addr) = config.metrics_listen {
            let listener = telemetry::bind(addr).await?;
            // The API and pages go to the web address when there is one.
            let late = match config.web_listen {
                Some(_) => telemetry::LateRoutes::default(),
                None => Arc::clone(&late_routes),
            };
            let serving = telemetry::serve(
                listener,
                metrics.registry(),
                Arc::clone(&metrics.readiness),
                late,
                shutdown.wait(),
            );
            tokio::spawn(async move {
                if let Err(error) = serving.await {
                    warn!(%error, "metrics endpoint stopped");
                }
            });
        }
        spawn_kill_series_pruning(&metrics, &config.cgroup_root, config.kill_series_grace, &shutdown);
        let mut cri_client = None;
        let mut enrichers = Enrichers {
            host_proc: Some(config.proc_root.clone()),
            ..Enrichers::default()
        };
        if let Some(socket) = cri_socket {
            let started = start_cri(&socket, sampling_grace(&config), &shutdown).await;
            cri_client = started.as_ref().map(|(_, client)| client.clone());
            enrichers.cri = started.map(|(handle, _)| handle);
            if enrichers.cri.is_some() {
                metrics.identity.in_use(IdentitySource::Cri);
            }
        } else {
            info!("no container runtime socket: identity from cgroup paths only");
        }
        if config.kubernetes_api {
            enrichers.kube = start_kube(&node.node, config.kubeconfig.as_deref(), &shutdown).await;
            if enrichers.kube.is_some() {
                metrics.identity.in_use(IdentitySource::KubernetesApi);
            }
        }
        // Shipping: the embedded collector (standalone) or a remote one.
        #[cfg(feature = "standalone")]
        let mut embedded = None;
        let client = match &config.delivery {
            Delivery::Local => None,
            Delivery::Collector(client) => Some(client.clone()),
            #[cfg(feature = "standalone")]
            Delivery::Standalone {
                listen,
                database,
                kubernetes_events,
            } => {
                let database = database
                    .clone()
                    .unwrap_or_else(|| config.state_dir.join("oomlens.db").display().to_string());
                let listener = tokio::net::TcpListener::bind(listen)
                    .await
                    .with_context(|| format!("cannot listen on {listen} for the embedded collector"))?;
                let mut collector = oomlens_collector::server::Embedded::start(
                    &database,
                    listener,
                    oomlens_collector::server::ServerConfig::default(),
                )
                .await?;
                if *kubernetes_events {
                    use oomlens_collector::kube_events::{KubeEvents, KubeEventsConfig};
                    let events = KubeEvents::connect(KubeEventsConfig {
                        kubeconfig: config.kubeconfig.clone(),
                        ..KubeEventsConfig::new(format!("oomlens-agent-{}", node.node))
                    })
                    .await?;
                    collector.start_kube_events(&events).await;
                }
                info!(address = %collector.address(), database = %oomlens_collector::store::redact(&database), "embedded collector serving; try `oomlens events`");
                // Its API and web pages on the agent's metrics address.
                let _ = late_routes.set(collector.api_router());
                let endpoint = collector.endpoint();
                embedded = Some(collector);
                Some(ClientConfig {
                    endpoint,
                    ..ClientConfig::default()
                })
            }
            #[cfg(not(feature = "standalone"))]
            Delivery::Standalone { .. } => unreachable!("refused by Config::build"),
        };
        let collector_endpoint = client.as_ref().map(|c| c.endpoint.clone());
        let (side_sender, side_receiver) = mpsc::channel::<SideItem>(64);
        let mut shipping = None;
        let mut spool = None;
        let opened = client.map(|client| {
            let dir = config.state_dir.join("spool");
            (
                client,
                SharedSpool::open(&dir, config.spool_max_bytes, metrics.spool.clone()),
            )
        });
        let client = match opened {
            Some((client, Ok(shared))) => Some((client, shared)),
            Some((_, Err(error))) => {
                // An existing spool that cannot be read back. Kills are
                // still read, logged and printed; not ready until a
                // restart opens it.
                tracing::error!(
                    %error,
                    "cannot open the spool: kills are logged and printed but not sent; not ready until a restart opens it"
                );
                metrics.readiness.set_spool_unavailable();
                None
            }
            None => None,
        };
        if let Some((client, shared)) = client {
            let stats = shared.stats();
            if stats.events > 0 || stats.corrupt > 0 {
                info!(
                    events = stats.events,
                    corrupt = stats.corrupt,
                    "spooled events from the last run will be sent"
                );
            }
            let hello = AgentHello {
                node: node.node.clone(),
                agent_version: env!("CARGO_PKG_VERSION").to_owned(),
                boot_id: node.boot_id.clone(),
                kernel_release: node.kernel_release.clone().unwrap_or_default(),
                cgroup_mode,
            };
            info!(collector = %client.endpoint, "sending events to the collector");
            let (pipeline_done, pipeline_finished) = tokio::sync::oneshot::channel::<()>();
            let task = tokio::spawn(ship::run_shipper(
                shared.clone(),
                ShipperConfig::new(client, hello),
                side_receiver,
                metrics.sender.clone(),
                async move {
                    let _ = pipeline_finished.await;
                },
            ));
            shipping = Some((pipeline_done, task));
            spool = Some(shared);
        } else {
            drop(side_receiver);
        }
        let mut sampler_task = None;
        // The sampler's OOM notifications come before the kernel wakes the
        // log reader; they hurry it.
        let kmsg_hurry = sampler_config
            .as_ref()
            .and_then(|_| match crate::kmsg::KmsgHurry::start() {
                Ok(hurry) => Some(hurry),
                Err(error) => {
                    warn!(%error, "kills are read when the kernel wakes the log reader, not earlier");
                    None
                }
            });
        if let Some(mut sampler_config) = sampler_config {
            sampler_config.kmsg_hurry = kmsg_hurry.clone();
            let (handle, requests) = Sampler::channel();
            let (warnings, warning_rx) = mpsc::channel(256);
            let sampler = Sampler::new(sampler_config, warnings)
                .with_metrics(metrics.sampler.clone(), Arc::clone(&metrics.readiness));
            sampler_task = Some(tokio::spawn(sampler.run(requests, shutdown.wait())));
            if shipping.is_some() {
                tokio::spawn(ship::status::report(
                    handle.clone(),
                    enrichers.cri.clone(),
                    warning_rx,
                    side_sender,
                    Duration::from_secs(5),
                ));
            } else {
                tokio::spawn(ship::status::log_warnings(warning_rx));
            }
            enrichers.sampler = Some(handle);
        }
        let (printer, printer_task) = match config.output {
            Some(format) => {
                let (sender, receiver) = mpsc::channel::<OomEvent>(1024);
                let task = tokio::task::spawn_blocking(move || crate::output::print(receiver, format));
                (Some(sender), Some(task))
            }
            None => (None, None),
        };
        // What the runtime reports after each kill, as revisions.
        let runtime_watch = cri_client.zip(spool.clone()).map(|(cri, spool)| {
            pipeline::runtime_watch::RuntimeWatcher::new(
                cri,
                spool,
                pipeline::runtime_watch::WatchRules::default(),
                metrics.runtime_watch.clone(),
            )
        });
        let pipeline_config = PipelineConfig {
            state_dir: Some(config.state_dir.clone()),
            oom_groups,
            start_without_cursor: config.start_without_cursor,
            log_clock_every,
            kmsg_hurry,
            enrichers,
            metrics: metrics.pipeline.clone(),
            reader_metrics: metrics.reader.clone(),
            readiness: Arc::clone(&metrics.readiness),
            ..PipelineConfig::new(config.kmsg.clone(), config.proc_root.clone(), node)
        };
        let sink = EventSink {
            spool,
            channel: None,
            printer,
            runtime_watch,
        };
        let pipeline = tokio::spawn(pipeline::run(pipeline_config, sink, shutdown.wait()));
        Ok(Running {
            pipeline,
            printer: printer_task,
            sampler: sampler_task,
            shipping,
            #[cfg(feature = "standalone")]
            embedded,
            collector_endpoint,
            metrics,
        })
    }
}

impl Running {
    /// The collector events go to (the embedded one's, standalone).
    pub fn collector_endpoint(&self) -> Option<&str> {
        self.collector_endpoint.as_deref()
    }

    /// Waits for the tasks to stop after the shutdown: the pipeline (which
    /// spools its last kills), the printer and the sampler; then the sender
    /// delivers what is spooled (within its drain); then the embedded
    /// collector stops.
    pub async fn wait(self) -> anyhow::Result<PipelineStats> {
        let stats = self.pipeline.await??;
        let drain = Drain::within(STOP_DEADLINE);
        if let Some(printer) = self.printer
            && let Some(printed) = drain.wait("printer", printer).await
        {
            printed??;
        }
        if let Some(sampler) = self.sampler {
            drain.wait("sampler", sampler).await.transpose()?;
        }
        if let Some((pipeline_done, task)) = self.shipping {
            let _ = pipeline_done.send(());
            task.await?;
        }
        #[cfg(feature = "standalone")]
        if let Some(collector) = self.embedded {
            collector.stop().await?;
        }
        info!(
            events = stats.events,
            lost_records = stats.reader.lost,
            forged = stats.parser.forged,
            spooled = self.metrics.spool.waiting_events(),
            "agent stopped"
        );
        Ok(stats)
    }
}

fn sampling_grace(config: &Config) -> Duration {
    config
        .sampling
        .as_ref()
        .map_or(Duration::from_secs(120), |s| s.grace)
}
