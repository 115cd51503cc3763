//! The collector's HTTP listener: Prometheus metrics and the probes, the
//! read-only JSON API for tools that do not speak gRPC (docs/api.md,
//! described by docs/api/openapi.json), and the web pages (docs/web.md).
//!
//! The API answers through the same `EventService` the gRPC clients use,
//! so filters, page and byte bounds, subscriber limits and resume by
//! cursor behave the same on both; it admits the same read tokens.

use std::sync::Arc;

use axum::Router;
use axum::http::{StatusCode, header};
use axum::routing::get;

use crate::auth::Tokens;
use crate::metrics::CollectorMetrics;
use crate::service::{Collector, Events};

mod api;
pub mod params;
mod tls;
mod web;

pub use tls::{ServedOverTls, TlsListener};

/// The JSON API's state: the query service and who may read.
#[derive(Debug, Clone)]
pub struct Api {
    events: Events,
    tokens: Tokens,
}

impl Api {
    pub fn new(collector: Collector, tokens: Tokens) -> Self {
        Self {
            events: Events::new(collector),
            tokens,
        }
    }
}

/// What the caller presented: the `Authorization` header, or else the web
/// login cookie as if it were one (so that the pages' own requests, and
/// an `EventSource`, which cannot set headers, are admitted as well).
fn credentials(headers: &axum::http::HeaderMap) -> Option<Vec<u8>> {
    if let Some(value) = headers.get(header::AUTHORIZATION) {
        return Some(value.as_bytes().to_vec());
    }
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == web::COOKIE)
        .map(|(_, token)| format!("Bearer {token}").into_bytes())
}

/// `/metrics`, `/healthz` and `/readyz`; with `api` the `/api/v1/` routes,
/// and with `web` as well the pages. Ready while the store can write: it is open before this is
/// served, and not ready from a failed write until a probe write commits
/// (agents keep their events meanwhile; a Kubernetes Service stops sending
/// them here).
pub fn router(metrics: Arc<CollectorMetrics>, api: Option<Api>, web: bool) -> Router {
    let ready = Arc::clone(&metrics);
    let probes = Router::new()
        .route(
            "/metrics",
            get(move || {
                let metrics = Arc::clone(&metrics);
                async move {
                    (
                        [(
                            header::CONTENT_TYPE,
                            "application/openmetrics-text; version=1.0.0; charset=utf-8",
                        )],
                        metrics.encode(),
                    )
                }
            }),
        )
        .route("/healthz", get(|| async { "ok\n" }))
        .route(
            "/readyz",
            get(move || {
                let ready = Arc::clone(&ready);
                async move {
                    if ready.store_writable() {
                        (StatusCode::OK, "ready\n")
                    } else {
                        (
                            StatusCode::SERVICE_UNAVAILABLE,
                            "not ready: the event store cannot write\n",
                        )
                    }
                }
            }),
        );
    match api {
        Some(api) => probes.merge(api_routes(api, web)),
        None => probes,
    }
}

/// The `/api/v1/` routes and, with `web`, the pages, without the probes:
/// for a listener that has its own (the standalone agent's).
pub fn api_routes(api: Api, web: bool) -> Router {
    if web {
        api::routes(api.clone()).merge(web::routes(api))
    } else {
        api::routes(api)
    }
}

/// Serves `router` on `listener` until `shutdown`; open event streams end
/// when the collector closes.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await
}

/// Serves `router` over TLS on `listener` until `shutdown`: the web
/// address with the collector's certificate.
pub async fn serve_tls(
    listener: TlsListener,
    router: Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router.layer(axum::Extension(ServedOverTls)))
        .with_graceful_shutdown(shutdown)
        .await
}
