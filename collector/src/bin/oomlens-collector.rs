//! `oomlens-collector`: receives events from agents, stores them, serves
//! queries and subscriptions.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use oomlens_collector::auth::Tokens;
use oomlens_collector::http;
use oomlens_collector::metrics::CollectorMetrics;
use oomlens_collector::server::{self, Retention, ServerConfig, TlsFiles};
use oomlens_collector::service::Collector;
use oomlens_collector::store::Store;
use oomlens_common::process::{Shutdown, init_logging};
use tracing::{info, warn};

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
    Serve(ServeArgs),
}

#[derive(Debug, clap::Args)]
struct ServeArgs {
    /// gRPC listen address (0.0.0.0:7460 in a cluster).
    #[arg(long, env = "OOMLENS_LISTEN", default_value = "127.0.0.1:7460")]
    listen: String,
    /// Storage: a SQLite file path (default) or a postgres:// URL (several
    /// replicas may share one database).
    #[arg(
        long,
        env = "OOMLENS_DATABASE",
        default_value = "oomlens.db",
        hide_env_values = true
    )]
    database: String,
    /// Delete events older than this many days (0: keep).
    #[arg(long, env = "OOMLENS_RETENTION_DAYS", default_value_t = 30)]
    retention_days: u32,
    /// Delete the oldest events while the store holds more than this many
    /// MiB of events (0: no size limit).
    #[arg(long, env = "OOMLENS_RETENTION_MIB", default_value_t = 4096)]
    retention_mib: u64,
    /// Server certificate (PEM) for TLS.
    #[arg(long, env = "OOMLENS_TLS_CERT", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// Server private key (PEM) for TLS.
    #[arg(long, env = "OOMLENS_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// CA bundle (PEM): require clients to present a certificate it signed
    /// (mutual TLS).
    #[arg(long, env = "OOMLENS_TLS_CLIENT_CA", requires = "tls_cert")]
    tls_client_ca: Option<PathBuf>,
    /// Bearer tokens, one `ROLE TOKEN` per line (roles: read, ingest,
    /// admin; `#` starts a comment line). A file with no token is an
    /// error. Without it every caller is accepted.
    #[arg(long, env = "OOMLENS_TOKEN_FILE")]
    token_file: Option<PathBuf>,
    /// Refuse to start when the token file or the TLS key may be read by
    /// other users (without it: a warning).
    #[arg(long, env = "OOMLENS_STRICT_PERMISSIONS")]
    strict_permissions: bool,
    /// Live containers whose memory status (for `oomlens top`) this
    /// collector keeps; statuses of more are dropped and counted. About
    /// 1 KiB each.
    #[arg(long, env = "OOMLENS_MAX_CONTAINER_STATUSES", default_value_t = oomlens_collector::service::MAX_STATUSES)]
    max_container_statuses: usize,
    /// HTTP address: metrics, health probes and the read-only JSON API
    /// (docs/api.md); empty: none.
    #[arg(long, env = "OOMLENS_METRICS_LISTEN", default_value = "127.0.0.1:7461")]
    metrics_listen: String,
    /// The read-only JSON API on the HTTP address (docs/api.md): on, off,
    /// or auto (on unless the gRPC port has TLS: the HTTP address has
    /// none, and would carry tokens and events in the clear).
    #[arg(long, env = "OOMLENS_HTTP_API", default_value = "auto")]
    http_api: HttpApi,
    /// A separate address for the JSON API and the web pages, which then
    /// leave the metrics address. With --tls-cert it serves HTTPS with the
    /// same certificate (docs/web.md#https). Empty: they share the metrics
    /// address.
    #[arg(long, env = "OOMLENS_WEB_LISTEN", default_value = "")]
    web_listen: String,
    /// The web pages (kills, one kill with its chart, summary, top) beside
    /// the JSON API; `--web false` serves the API alone (docs/web.md).
    #[arg(long, env = "OOMLENS_WEB", default_value_t = true, action = clap::ArgAction::Set)]
    web: bool,
    /// POST each stored kill, as JSON, to this URL (repeatable; in the
    /// environment, comma-separated). Delivered in order, at least once,
    /// resuming after restarts (docs/api.md#webhooks).
    #[arg(
        long = "webhook",
        env = "OOMLENS_WEBHOOKS",
        value_delimiter = ',',
        hide_env_values = true
    )]
    webhooks: Vec<String>,
    /// What webhooks receive: the whole event, or a summary with one line
    /// of text.
    #[arg(long, env = "OOMLENS_WEBHOOK_FORMAT", default_value = "full")]
    webhook_format: WebhookFormat,
    /// Sign webhook bodies (`X-Oomlens-Signature`, HMAC-SHA256) with the
    /// secret in this file (at least 16 bytes).
    #[arg(long, env = "OOMLENS_WEBHOOK_SECRET_FILE")]
    webhook_secret_file: Option<PathBuf>,
    /// A CA (PEM) trusted beside the system's roots for HTTPS webhooks.
    #[arg(long, env = "OOMLENS_WEBHOOK_CA_CERT")]
    webhook_ca_cert: Option<PathBuf>,
    /// Write each kill of a pod's process as a Kubernetes Event on the pod
    /// (events.k8s.io/v1; RBAC: create and patch events). Off by default
    /// (docs/kubernetes-events.md).
    #[arg(long, env = "OOMLENS_KUBERNETES_EVENTS")]
    kubernetes_events: bool,
    /// The kubeconfig for --kubernetes-events; without it the in-cluster
    /// service account, then $KUBECONFIG and ~/.kube/config.
    #[arg(long, env = "OOMLENS_KUBECONFIG")]
    kubeconfig: Option<PathBuf>,
    /// Log format on standard error.
    #[arg(long, env = "OOMLENS_LOG_FORMAT", default_value = "text")]
    log_format: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum WebhookFormat {
    Full,
    Summary,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum HttpApi {
    Auto,
    On,
    Off,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(args) => serve(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn serve(args: ServeArgs) -> anyhow::Result<()> {
    init_logging(args.log_format == "json");
    let tokens = match &args.token_file {
        Some(path) => Tokens::load(path, args.strict_permissions)?,
        None => Tokens::default(),
    };
    let tls = args.tls_cert.clone().map(|cert| TlsFiles {
        cert,
        key: args.tls_key.clone().unwrap_or_default(),
        client_ca: args.tls_client_ca.clone(),
    });
    // Before the database is opened or a port bound: a bad file is a
    // startup error naming it.
    if let Some(tls) = &tls {
        tls.check(args.strict_permissions)?;
    }
    let webhooks = webhooks(&args)?;
    if !args.web_listen.trim().is_empty() && args.http_api == HttpApi::Off {
        anyhow::bail!("--web-listen serves the JSON API and the pages, which --http-api off turns off");
    }
    // HTTPS on the web address with the gRPC certificate. A browser rarely
    // holds a client certificate: with tokens it may come without one.
    let web_tls = match (&tls, args.web_listen.trim().is_empty()) {
        (Some(tls), false) => Some(tls.https_config(args.token_file.is_none())?),
        _ => None,
    };
    let config = ServerConfig {
        tls,
        tokens,
        retention: Retention {
            max_age: (args.retention_days > 0)
                .then(|| Duration::from_secs(u64::from(args.retention_days) * 86_400)),
            max_bytes: (args.retention_mib > 0).then(|| args.retention_mib * 1024 * 1024),
        },
        limits: oomlens_collector::service::Limits {
            max_statuses: args.max_container_statuses,
            ..oomlens_collector::service::Limits::default()
        },
    };
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(&args.listen)
            .await
            .with_context(|| format!("cannot listen on {}", args.listen))?;
        let web_listener = match args.web_listen.trim() {
            "" => None,
            addr => Some(
                tokio::net::TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("cannot listen on {addr} for the web pages"))?,
            ),
        };
        let store = Store::open(&args.database).await?;
        let metrics = Arc::new(CollectorMetrics::new());
        let collector = Collector::start_with(store.clone(), Arc::clone(&metrics), config.limits).await?;
        let shutdown = Shutdown::on_signals();
        let web_listen = args.web_listen.trim();
        if !args.metrics_listen.trim().is_empty() {
            let metrics_listener = tokio::net::TcpListener::bind(args.metrics_listen.trim())
                .await
                .with_context(|| format!("cannot listen on {} for metrics", args.metrics_listen))?;
            let stopping = shutdown.wait();
            // The API and pages come here unless they have their own address.
            let api = web_listen.is_empty()
                && match args.http_api {
                    HttpApi::On => true,
                    HttpApi::Off => false,
                    HttpApi::Auto if config.tls.is_some() => {
                        info!(
                            "the JSON API is off: gRPC has TLS and the HTTP address has none \
                             (--web-listen serves it with TLS; --http-api on serves it here anyway, \
                             e.g. behind a TLS-terminating proxy)"
                        );
                        false
                    }
                    HttpApi::Auto => true,
                };
            let api = api.then(|| http::Api::new(collector.clone(), config.tokens.clone()));
            let router = http::router(metrics, api, args.web);
            tokio::spawn(async move {
                if let Err(error) = http::serve(metrics_listener, router, stopping).await {
                    warn!(%error, "HTTP endpoint stopped");
                }
            });
        }
        if let Some(web_listener) = web_listener {
            let router = http::api_routes(http::Api::new(collector.clone(), config.tokens.clone()), args.web);
            let stopping = shutdown.wait();
            let addr = web_listener.local_addr()?;
            match &web_tls {
                Some(tls) => {
                    let listener = http::TlsListener::new(web_listener, tls.clone())?;
                    info!(%addr, pages = args.web, "serving the JSON API over HTTPS");
                    tokio::spawn(async move {
                        if let Err(error) = http::serve_tls(listener, router, stopping).await {
                            warn!(%error, "HTTPS endpoint stopped");
                        }
                    });
                }
                None => {
                    info!(%addr, pages = args.web, "serving the JSON API");
                    tokio::spawn(async move {
                        if let Err(error) = http::serve(web_listener, router, stopping).await {
                            warn!(%error, "web endpoint stopped");
                        }
                    });
                }
            }
        }
        let mut sinks = match &webhooks {
            Some(webhooks) => oomlens_collector::webhook::start(webhooks, &collector).await,
            None => Vec::new(),
        };
        if let Some(events) = kube_events(&args).await? {
            sinks.push(oomlens_collector::kube_events::start(&events, &collector).await);
        }
        server::serve(collector, listener, config, shutdown.wait()).await?;
        for sink in sinks {
            sink.abort();
        }
        store.close().await;
        info!("collector stopped");
        Ok(())
    })
}

/// The Kubernetes Event writer, its configuration checked at start.
async fn kube_events(args: &ServeArgs) -> anyhow::Result<Option<oomlens_collector::kube_events::KubeEvents>> {
    use oomlens_collector::kube_events::{KubeEvents, KubeEventsConfig, default_instance};
    if !args.kubernetes_events {
        if args.kubeconfig.is_some() {
            warn!("--kubeconfig given without --kubernetes-events: no Events are written");
        }
        return Ok(None);
    }
    let config = KubeEventsConfig {
        kubeconfig: args.kubeconfig.clone(),
        ..KubeEventsConfig::new(default_instance("oomlens-collector"))
    };
    Ok(Some(KubeEvents::connect(config).await?))
}

/// The webhook sinks, checked before anything starts: URLs, the secret
/// file (private, like the token file) and the CA.
fn webhooks(args: &ServeArgs) -> anyhow::Result<Option<oomlens_collector::webhook::Webhooks>> {
    use oomlens_collector::webhook::{Format, WebhookConfig, Webhooks};
    let urls: Vec<String> = args
        .webhooks
        .iter()
        .map(|u| u.trim().to_owned())
        .filter(|u| !u.is_empty())
        .collect();
    if urls.is_empty() {
        if args.webhook_secret_file.is_some() || args.webhook_ca_cert.is_some() {
            warn!("--webhook-secret-file or --webhook-ca-cert given without --webhook: no webhooks");
        }
        return Ok(None);
    }
    let secret = match &args.webhook_secret_file {
        Some(path) => {
            oomlens_common::secrets::check_private(
                "the webhook secret (--webhook-secret-file)",
                path,
                args.strict_permissions,
            )?;
            let text = std::fs::read(path)
                .with_context(|| format!("cannot read the webhook secret {}", path.display()))?;
            let secret = text.trim_ascii().to_vec();
            anyhow::ensure!(
                secret.len() >= 16,
                "the webhook secret {} holds {} bytes: use at least 16 (e.g. `openssl rand -hex 32`)",
                path.display(),
                secret.len()
            );
            Some(secret)
        }
        None => None,
    };
    let config = WebhookConfig {
        urls,
        secret,
        format: match args.webhook_format {
            WebhookFormat::Full => Format::Full,
            WebhookFormat::Summary => Format::Summary,
        },
        ca_cert: args.webhook_ca_cert.clone(),
    };
    let webhooks = Webhooks::new(&config)?;
    info!(
        sinks = webhooks.sinks.len(),
        signed = webhooks.secret.is_some(),
        "webhooks configured"
    );
    Ok(Some(webhooks))
}
