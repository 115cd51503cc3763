//! The agent's health on HTTP: `/metrics` (Prometheus text format),
//! `/healthz` (the process serves), `/readyz` (see [`Readiness`]).
//!
//! Metrics belong to the components that count them: each defines its own
//! set (`kmsg::ReaderMetrics`, `pipeline::PipelineMetrics`,
//! `cgroup::SamplerMetrics`, `ship::ShipMetrics`, `pods::IdentityMetrics`)
//! and registers it into the one registry the app builds
//! ([`crate::app::AgentMetrics`]). A happening that is both logged and
//! counted is one type implementing [`Happening`], so its log line and its
//! counter cannot drift apart. Label values are enums or bounded sets.
//! Names and meanings are documented in docs/metrics.md.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use prometheus_client::registry::Registry;
use tracing::info;

/// Something that happened, logged and counted in one place.
pub trait Happening {
    /// The component's metrics it counts into.
    type Metrics;
    fn emit(self, metrics: &Self::Metrics);
}

/// What `/readyz` waits for: the kernel log is being read, the sampler
/// (when enabled) has scanned the cgroup tree, and the state directory
/// takes writes (the cursor, the spool: without them kills are only logged).
#[derive(Debug, Default)]
pub struct Readiness {
    kmsg: AtomicBool,
    sampler_enabled: AtomicBool,
    sampler_ready: AtomicBool,
    state_unwritable: AtomicBool,
    spool_unavailable: AtomicBool,
}

impl Readiness {
    pub fn set_kmsg_ready(&self) {
        self.kmsg.store(true, Ordering::Relaxed);
    }

    pub fn set_sampler_enabled(&self) {
        self.sampler_enabled.store(true, Ordering::Relaxed);
    }

    pub fn set_sampler_ready(&self) {
        self.sampler_ready.store(true, Ordering::Relaxed);
    }

    pub fn set_state_writable(&self, writable: bool) {
        self.state_unwritable.store(!writable, Ordering::Relaxed);
    }

    /// The spool could not be opened: not ready until a restart opens it.
    pub fn set_spool_unavailable(&self) {
        self.spool_unavailable.store(true, Ordering::Relaxed);
    }

    pub fn ready(&self) -> bool {
        self.kmsg.load(Ordering::Relaxed)
            && (!self.sampler_enabled.load(Ordering::Relaxed) || self.sampler_ready.load(Ordering::Relaxed))
            && !self.state_unwritable.load(Ordering::Relaxed)
            && !self.spool_unavailable.load(Ordering::Relaxed)
    }
}

/// The Prometheus text exposition of a registry.
pub fn encode(registry: &Registry) -> String {
    let mut text = String::new();
    // Writing into a String cannot fail.
    let _ = prometheus_client::encoding::text::encode(&mut text, registry);
    text
}

/// Routes added to the metrics listener once they exist: the embedded
/// collector's API and web pages in standalone mode, which starts after
/// the listener (so that probes answer from the first moment).
pub type LateRoutes = Arc<std::sync::OnceLock<axum::Router>>;

/// Serves `/metrics`, `/healthz` and `/readyz` on `listener`, and `late`
/// routes once set, until `shutdown` completes.
pub async fn serve(
    listener: tokio::net::TcpListener,
    registry: Arc<Registry>,
    readiness: Arc<Readiness>,
    late: LateRoutes,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use axum::http::{StatusCode, header};
    use axum::routing::get;
    let router = axum::Router::new()
        .route(
            "/metrics",
            get(move || {
                let registry = Arc::clone(&registry);
                async move {
                    (
                        [(
                            header::CONTENT_TYPE,
                            "application/openmetrics-text; version=1.0.0; charset=utf-8",
                        )],
                        encode(&registry),
                    )
                }
            }),
        )
        .route("/healthz", get(|| async { "ok\n" }))
        .route(
            "/readyz",
            get(move || {
                let readiness = Arc::clone(&readiness);
                async move {
                    if readiness.ready() {
                        (StatusCode::OK, "ready\n")
                    } else {
                        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
                    }
                }
            }),
        )
        .merge(late_fallback(late));
    if let Ok(addr) = listener.local_addr() {
        info!(%addr, "serving /metrics, /healthz and /readyz");
    }
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await
}

/// Serves only the `late` routes (the embedded collector's API and pages)
/// on `listener`, until `shutdown` completes.
pub async fn serve_late(
    listener: tokio::net::TcpListener,
    late: LateRoutes,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    if let Ok(addr) = listener.local_addr() {
        info!(%addr, "serving the embedded collector's JSON API and web pages");
    }
    axum::serve(listener, late_fallback(late))
        .with_graceful_shutdown(shutdown)
        .await
}

/// Answers from `late` once it is set, 404 before.
fn late_fallback(late: LateRoutes) -> axum::Router {
    use axum::http::StatusCode;
    use axum::response::IntoResponse as _;
    use tower::ServiceExt as _;
    axum::Router::new().fallback(move |request: axum::extract::Request| {
        let late = Arc::clone(&late);
        async move {
            match late.get() {
                Some(routes) => match routes.clone().oneshot(request).await {
                    Ok(response) => response,
                    Err(never) => match never {},
                },
                None => StatusCode::NOT_FOUND.into_response(),
            }
        }
    })
}

/// Binds the metrics listener, with the address in the error.
pub async fn bind(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| std::io::Error::new(e.kind(), format!("cannot listen on {addr} for metrics: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readiness_needs_the_log_and_the_sampler_when_enabled() {
        let readiness = Readiness::default();
        assert!(!readiness.ready());
        readiness.set_kmsg_ready();
        assert!(readiness.ready());
        readiness.set_sampler_enabled();
        assert!(!readiness.ready());
        readiness.set_sampler_ready();
        assert!(readiness.ready());
        readiness.set_state_writable(false);
        assert!(!readiness.ready(), "kills would only be logged");
        readiness.set_state_writable(true);
        assert!(readiness.ready());
        readiness.set_spool_unavailable();
        readiness.set_state_writable(true);
        assert!(
            !readiness.ready(),
            "a working cursor does not make up for no spool"
        );
    }
}
