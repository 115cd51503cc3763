//! The standard gRPC services tools and Kubernetes expect beside ours:
//! `grpc.health.v1.Health` and server reflection (v1 and v1alpha).
//!
//! Health is open to every caller: Kubernetes' gRPC probes and load
//! balancers send no token, and it tells nothing about the events. It says
//! `SERVING` for `oomlens.v1.EventService` while the server runs (stored
//! events can be read even when the store cannot write), and for
//! `oomlens.v1.IngestService` and the server as a whole (`""`) only while
//! the store can write, as `/readyz` does. Reflection describes the API, so
//! it takes a read token like the events do.

use std::sync::Arc;
use std::time::Duration;

use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

use crate::metrics::CollectorMetrics;

pub const INGEST_SERVICE: &str = "oomlens.v1.IngestService";
pub const EVENT_SERVICE: &str = "oomlens.v1.EventService";

/// How often the health service looks at the store's state.
const HEALTH_EVERY: Duration = Duration::from_millis(500);

/// The reflection services (v1, v1alpha) over the oomlens contract and the
/// health service's own.
pub fn reflection() -> Result<
    (
        tonic_reflection::server::v1::ServerReflectionServer<
            impl tonic_reflection::server::v1::ServerReflection,
        >,
        tonic_reflection::server::v1alpha::ServerReflectionServer<
            impl tonic_reflection::server::v1alpha::ServerReflection,
        >,
    ),
    tonic_reflection::server::Error,
> {
    let configure = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(oomlens_proto::v1::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    Ok((configure().build_v1()?, configure().build_v1alpha()?))
}

/// Keeps the health statuses in step with the store until `stopped`
/// completes; then reports every service not serving.
pub async fn report_health(
    reporter: HealthReporter,
    metrics: Arc<CollectorMetrics>,
    stopped: impl std::future::Future<Output = ()>,
) {
    reporter
        .set_service_status(EVENT_SERVICE, ServingStatus::Serving)
        .await;
    let mut last = None;
    let mut ticker = tokio::time::interval(HEALTH_EVERY);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::pin!(stopped);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            () = &mut stopped => break,
        }
        let writable = metrics.store_writable();
        if last == Some(writable) {
            continue;
        }
        last = Some(writable);
        let status = if writable {
            ServingStatus::Serving
        } else {
            ServingStatus::NotServing
        };
        reporter.set_service_status(INGEST_SERVICE, status).await;
        reporter.set_service_status("", status).await;
    }
    for service in ["", INGEST_SERVICE, EVENT_SERVICE] {
        reporter
            .set_service_status(service, ServingStatus::NotServing)
            .await;
    }
}
