//! The gRPC server: both services behind TLS (optional, mutual optional)
//! and bearer tokens (optional), plus the retention loop.

use std::path::PathBuf;
use std::time::Duration;

use oomlens_common::client::error_chain;
use oomlens_common::limits::{MAX_INGEST_MESSAGE, MAX_MESSAGE};
use oomlens_common::secrets::{PermissionError, check_private};
use oomlens_common::tls::{TlsFileError, read_ca, read_identity};
use oomlens_proto::v1::ingest_service_server::IngestServiceServer;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Certificate, Identity, Server, ServerTlsConfig};
use tracing::{info, warn};

use crate::auth::{Role, Tokens};
use crate::service::{Collector, EventRoutes, Ingest};

/// How long a shutdown waits for connections to close.
const SHUTDOWN_DEADLINE: Duration = Duration::from_secs(10);

#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// Require clients to present a certificate signed by this CA.
    pub client_ca: Option<PathBuf>,
}

impl TlsFiles {
    /// The certificate chain and key (PEM), read and checked.
    fn identity(&self) -> Result<(Vec<u8>, Vec<u8>), TlsFileError> {
        read_identity(
            "the server certificate (--tls-cert)",
            &self.cert,
            "the server key (--tls-key)",
            &self.key,
        )
    }

    /// Reads and checks the files (a certificate and its key, a usable
    /// CA), so that a mistake is reported at start with the file named.
    fn load(&self) -> Result<ServerTlsConfig, ServeError> {
        let (cert, key) = self.identity()?;
        let mut config = ServerTlsConfig::new().identity(Identity::from_pem(cert, key));
        if let Some(ca) = &self.client_ca {
            config = config.client_ca_root(Certificate::from_pem(read_ca(
                "the client CA (--tls-client-ca)",
                ca,
            )?));
        }
        Ok(config)
    }

    /// The same files for the HTTPS web address. A client certificate is
    /// asked for whenever gRPC requires one; `require_client_certificate`
    /// false admits a browser without one (its token authenticates it
    /// then), while a certificate that is presented must still verify.
    pub fn https_config(&self, require_client_certificate: bool) -> Result<rustls::ServerConfig, ServeError> {
        use rustls::pki_types::pem::PemObject as _;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let (cert, key) = self.identity()?;
        // read_identity has parsed both already; these cannot fail now.
        let bad = |e: rustls::pki_types::pem::Error| ServeError::Https(e.to_string());
        let chain = CertificateDer::pem_slice_iter(&cert)
            .collect::<Result<Vec<_>, _>>()
            .map_err(bad)?;
        let key = PrivateKeyDer::from_pem_slice(&key).map_err(bad)?;
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ServerConfig::builder_with_provider(std::sync::Arc::clone(&provider))
            .with_safe_default_protocol_versions()
            .map_err(|e| ServeError::Https(e.to_string()))?;
        let builder = match &self.client_ca {
            None => builder.with_no_client_auth(),
            Some(ca) => {
                let pem = read_ca("the client CA (--tls-client-ca)", ca)?;
                let mut roots = rustls::RootCertStore::empty();
                for cert in CertificateDer::pem_slice_iter(&pem) {
                    roots
                        .add(cert.map_err(bad)?)
                        .map_err(|e| ServeError::Https(e.to_string()))?;
                }
                let verifier =
                    rustls::server::WebPkiClientVerifier::builder_with_provider(roots.into(), provider);
                let verifier = if require_client_certificate {
                    verifier
                } else {
                    verifier.allow_unauthenticated()
                };
                builder.with_client_cert_verifier(
                    verifier.build().map_err(|e| ServeError::Https(e.to_string()))?,
                )
            }
        };
        let mut config = builder
            .with_single_cert(chain, key)
            .map_err(|e| ServeError::Https(e.to_string()))?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(config)
    }

    /// Checks the files before anything starts: readable, parsed, the key
    /// matching the certificate, and the key private to this user (others
    /// able to read it: a warning, an error with `strict_permissions`).
    pub fn check(&self, strict_permissions: bool) -> Result<(), ServeError> {
        check_private("the server key (--tls-key)", &self.key, strict_permissions)?;
        self.load().map(drop)
    }
}

#[derive(Debug, Clone, Copy, Default)]
pub struct Retention {
    pub max_age: Option<Duration>,
    pub max_bytes: Option<u64>,
}

#[derive(Debug, Clone, Default)]
pub struct ServerConfig {
    pub tls: Option<TlsFiles>,
    pub tokens: Tokens,
    pub retention: Retention,
    /// Bounds on what is held for clients.
    pub limits: crate::service::Limits,
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// A certificate or key file that cannot be used (named in the error).
    #[error(transparent)]
    TlsFile(#[from] TlsFileError),
    #[error(transparent)]
    Permissions(#[from] PermissionError),
    #[error("TLS configuration rejected: {}", error_chain(.0))]
    Tls(tonic::transport::Error),
    #[error("cannot serve HTTPS on the web address: {0}")]
    Https(String),
    #[error("gRPC server failed: {}", error_chain(.0))]
    Serve(tonic::transport::Error),
    #[error("cannot build the reflection service: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
}

/// Serves until `shutdown` completes; open streams are then closed.
pub async fn serve(
    collector: Collector,
    listener: tokio::net::TcpListener,
    config: ServerConfig,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let mut builder = Server::builder()
        // Detect agents that vanished without closing their stream.
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .http2_keepalive_timeout(Some(Duration::from_secs(10)));
    if let Some(tls) = &config.tls {
        builder = builder.tls_config(tls.load()?).map_err(ServeError::Tls)?;
    }
    let ingest = IngestServiceServer::new(Ingest::new(collector.clone()))
        .max_decoding_message_size(MAX_INGEST_MESSAGE);
    let events = EventRoutes::new(collector.clone(), MAX_MESSAGE);
    let (health_reporter, health) = tonic_health::server::health_reporter();
    let (reflection_v1, reflection_v1alpha) = crate::standard::reflection()?;
    let router = builder
        .add_service(tonic::service::interceptor::InterceptedService::new(
            ingest,
            config.tokens.interceptor(Role::Ingest),
        ))
        .add_service(tonic::service::interceptor::InterceptedService::new(
            events,
            config.tokens.interceptor(Role::Read),
        ))
        // Open: probes carry no token (see crate::standard).
        .add_service(health)
        .add_service(tonic::service::interceptor::InterceptedService::new(
            reflection_v1,
            config.tokens.interceptor(Role::Read),
        ))
        .add_service(tonic::service::interceptor::InterceptedService::new(
            reflection_v1alpha,
            config.tokens.interceptor(Role::Read),
        ));
    if let Ok(addr) = listener.local_addr() {
        info!(
            %addr,
            tls = config.tls.is_some(),
            mutual_tls = config.tls.as_ref().is_some_and(|t| t.client_ca.is_some()),
            tokens = config.tokens.is_enabled(),
            "serving IngestService, EventService, grpc.health.v1 and reflection"
        );
    }
    let retention = tokio::spawn(enforce_retention(collector.clone(), config.retention));
    let (health_stop, health_stopped) = tokio::sync::oneshot::channel::<()>();
    let health_task = tokio::spawn(crate::standard::report_health(
        health_reporter,
        std::sync::Arc::clone(collector.metrics()),
        async move {
            let _ = health_stopped.await;
        },
    ));
    let (draining, drain_started) = tokio::sync::oneshot::channel::<()>();
    let stopping = async move {
        shutdown.await;
        // Probes see the server go before its streams do.
        let _ = health_stop.send(());
        // End open streams, or the graceful shutdown would wait for them.
        collector.close();
        let _ = draining.send(());
    };
    // No Nagle: a small response must not wait for the peer's delayed ACK
    // (40 ms per query otherwise).
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
    let serving = router.serve_with_incoming_shutdown(incoming, stopping);
    tokio::pin!(serving);
    let served = tokio::select! {
        result = &mut serving => result.map_err(ServeError::Serve),
        () = async {
            let _ = drain_started.await;
            tokio::time::sleep(SHUTDOWN_DEADLINE).await;
        } => {
            warn!("connections still open after the shutdown deadline; stopping anyway");
            Ok(())
        }
    };
    retention.abort();
    health_task.abort();
    served
}

async fn enforce_retention(collector: Collector, retention: Retention) {
    let mut every = tokio::time::interval(Duration::from_secs(60));
    loop {
        every.tick().await;
        let store = collector.store();
        match store
            .enforce_retention(retention.max_age, retention.max_bytes)
            .await
        {
            Ok(deleted) => {
                if deleted > 0 {
                    info!(deleted, "retention: old events deleted");
                }
                match store.totals().await {
                    Ok((count, bytes)) => collector.metrics().retention(deleted, count, bytes),
                    Err(error) => warn!(%error, "cannot count stored events"),
                }
            }
            Err(error) => warn!(%error, "retention failed; retrying in a minute"),
        }
    }
}

/// A collector in this process on `listener` (the agent's standalone mode,
/// the demo, tests): store, services and server, stopped by [`Embedded::stop`].
#[derive(Debug)]
pub struct Embedded {
    address: std::net::SocketAddr,
    store: crate::store::Store,
    metrics: std::sync::Arc<crate::metrics::CollectorMetrics>,
    collector: Collector,
    tokens: Tokens,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Result<(), ServeError>>,
    http_stop: tokio::sync::watch::Sender<bool>,
    http: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
    sinks: Vec<tokio::task::JoinHandle<()>>,
}

#[derive(Debug, thiserror::Error)]
pub enum EmbeddedError {
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error("cannot read the listening address: {0}")]
    Address(std::io::Error),
}

impl Embedded {
    /// Opens `database` (SQLite path or `postgres://` URL) and serves on
    /// `listener`.
    pub async fn start(
        database: &str,
        listener: tokio::net::TcpListener,
        config: ServerConfig,
    ) -> Result<Self, EmbeddedError> {
        let address = listener.local_addr().map_err(EmbeddedError::Address)?;
        let store = crate::store::Store::open(database).await?;
        let metrics = std::sync::Arc::new(crate::metrics::CollectorMetrics::new());
        let collector =
            Collector::start_with(store.clone(), std::sync::Arc::clone(&metrics), config.limits).await?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let tokens = config.tokens.clone();
        let task = tokio::spawn(serve(collector.clone(), listener, config, async move {
            let _ = stopped.await;
        }));
        Ok(Self {
            address,
            store,
            metrics,
            collector,
            tokens,
            stop,
            task,
            http_stop: tokio::sync::watch::channel(false).0,
            http: None,
            sinks: Vec::new(),
        })
    }

    /// The JSON API and the web pages over this collector, without
    /// probes or metrics, for a listener that has its own.
    pub fn api_router(&self) -> axum::Router {
        crate::http::api_routes(
            crate::http::Api::new(self.collector.clone(), self.tokens.clone()),
            true,
        )
    }

    /// Also delivers stored events to `webhooks`, until [`Embedded::stop`].
    pub async fn start_webhooks(&mut self, webhooks: &crate::webhook::Webhooks) {
        self.sinks
            .extend(crate::webhook::start(webhooks, &self.collector).await);
    }

    /// Also writes each stored kill of a pod's process as a Kubernetes
    /// Event, until [`Embedded::stop`].
    pub async fn start_kube_events(&mut self, events: &crate::kube_events::KubeEvents) {
        self.sinks
            .push(crate::kube_events::start(events, &self.collector).await);
    }

    /// Also serves the HTTP listener (metrics, probes, the JSON API and
    /// the web pages, with the same tokens) on `listener`, until [`Embedded::stop`].
    pub fn serve_http(&mut self, listener: tokio::net::TcpListener) {
        let api = crate::http::Api::new(self.collector.clone(), self.tokens.clone());
        let router = crate::http::router(std::sync::Arc::clone(&self.metrics), Some(api), true);
        let mut stopped = self.http_stop.subscribe();
        self.http = Some(tokio::spawn(crate::http::serve(listener, router, async move {
            let _ = stopped.wait_for(|stop| *stop).await;
        })));
    }

    pub fn address(&self) -> std::net::SocketAddr {
        self.address
    }

    /// Its metrics (also served by `oomlens-collector serve`).
    pub fn metrics(&self) -> &crate::metrics::CollectorMetrics {
        &self.metrics
    }

    /// `http://ADDRESS`, for clients.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.address)
    }

    /// Stops serving (open streams end) and closes the store.
    pub async fn stop(self) -> Result<(), ServeError> {
        for sink in &self.sinks {
            sink.abort();
        }
        let _ = self.stop.send(());
        let _ = self.http_stop.send(true);
        let served = match self.task.await {
            Ok(result) => result,
            // The server task panicked: surface it here.
            Err(error) => std::panic::resume_unwind(error.into_panic()),
        };
        if let Some(http) = self.http {
            match http.await {
                Ok(Err(error)) => tracing::warn!(%error, "HTTP endpoint failed"),
                Ok(Ok(())) => {}
                Err(error) => std::panic::resume_unwind(error.into_panic()),
            }
        }
        self.store.close().await;
        served
    }
}
