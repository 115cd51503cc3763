//! The standard gRPC services: `grpc.health.v1.Health`, open to probes and
//! following the store's writability per service, and server reflection
//! (v1 and v1alpha), behind the read token like the events.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use oomlens_collector::auth::{Role, Tokens};
use oomlens_collector::server::{Embedded, ServerConfig};
use oomlens_common::client::ClientConfig;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_reflection::pb::v1::ServerReflectionRequest;
use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

const READ_TOKEN: &str = "read-token-0123456789";

async fn start() -> (Embedded, ClientConfig, tempfile::TempDir) {
    let mut tokens = Tokens::default();
    tokens.insert(READ_TOKEN, Role::Read);
    common::embedded(ServerConfig {
        tokens,
        ..ServerConfig::default()
    })
    .await
}

async fn status(health: &mut HealthClient<Channel>, service: &str) -> Result<i32, tonic::Code> {
    health
        .check(HealthCheckRequest {
            service: service.into(),
        })
        .await
        .map(|r| r.into_inner().status)
        .map_err(|s| s.code())
}

/// Waits for `service` to report `wanted` (the health task looks at the
/// store twice a second).
async fn until(health: &mut HealthClient<Channel>, service: &str, wanted: ServingStatus) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if status(health, service).await == Ok(wanted as i32) {
            return;
        }
        assert!(Instant::now() < deadline, "{service:?} never became {wanted:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_is_open_to_probes_and_follows_the_store_per_service() {
    let (server, config, _dir) = start().await;
    // No token: a Kubernetes gRPC probe sends none.
    let mut health = HealthClient::new(config.connect().await.unwrap());
    until(&mut health, "", ServingStatus::Serving).await;
    until(&mut health, "oomlens.v1.IngestService", ServingStatus::Serving).await;
    until(&mut health, "oomlens.v1.EventService", ServingStatus::Serving).await;
    assert_eq!(
        status(&mut health, "no.such.Service").await,
        Err(tonic::Code::NotFound)
    );

    // The store stops taking writes: no more ingest, reads go on.
    server.metrics().set_store_writable(false);
    until(&mut health, "oomlens.v1.IngestService", ServingStatus::NotServing).await;
    until(&mut health, "", ServingStatus::NotServing).await;
    assert_eq!(
        status(&mut health, "oomlens.v1.EventService").await,
        Ok(ServingStatus::Serving as i32)
    );
    server.metrics().set_store_writable(true);
    until(&mut health, "", ServingStatus::Serving).await;
    server.stop().await.unwrap();
}

fn with_token(
    channel: Channel,
    token: Option<&'static str>,
) -> ServerReflectionClient<InterceptedService<Channel, impl tonic::service::Interceptor>> {
    ServerReflectionClient::with_interceptor(channel, move |mut request: tonic::Request<()>| {
        if let Some(token) = token {
            request
                .metadata_mut()
                .insert("authorization", format!("Bearer {token}").parse().unwrap());
        }
        Ok(request)
    })
}

async fn list_services(
    client: &mut ServerReflectionClient<InterceptedService<Channel, impl tonic::service::Interceptor>>,
) -> Result<Vec<String>, tonic::Status> {
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut responses = client
        .server_reflection_info(tokio_stream::iter([request]))
        .await?
        .into_inner();
    let response = responses.message().await?.expect("a response");
    match response.message_response {
        Some(MessageResponse::ListServicesResponse(list)) => {
            Ok(list.service.into_iter().map(|s| s.name).collect())
        }
        other => panic!("not a service list: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reflection_lists_the_contract_for_readers_only() {
    let (server, config, _dir) = start().await;
    let channel = config.connect().await.unwrap();
    let refused = list_services(&mut with_token(channel.clone(), None))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unauthenticated, "{refused:?}");

    let mut services = list_services(&mut with_token(channel.clone(), Some(READ_TOKEN)))
        .await
        .unwrap();
    services.sort();
    for wanted in [
        "grpc.health.v1.Health",
        "oomlens.v1.EventService",
        "oomlens.v1.IngestService",
    ] {
        assert!(
            services.iter().any(|s| s == wanted),
            "{wanted} not in {services:?}"
        );
    }

    // And the schema of a message, for grpcurl's `describe`.
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::FileContainingSymbol("oomlens.v1.OomEvent".into())),
    };
    let mut responses = with_token(channel, Some(READ_TOKEN))
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .unwrap()
        .into_inner();
    match responses.message().await.unwrap().unwrap().message_response {
        Some(MessageResponse::FileDescriptorResponse(files)) => {
            assert!(!files.file_descriptor_proto.is_empty());
        }
        other => panic!("no descriptor for OomEvent: {other:?}"),
    }
    server.stop().await.unwrap();
}
