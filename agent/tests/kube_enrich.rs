//! Kubernetes API enrichment on recorded API objects: the pod store is
//! driven directly with watcher events (as kube-rs's own store tests do),
//! and owner lookups go to kube-rs's client over a mock service that
//! answers like an API server and counts the requests.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use http::{Request, Response};
use k8s_openapi::api::core::v1::Pod;
use kube::client::Body;
use kube::runtime::reflector::store::Writer;
use kube::runtime::watcher;
use oomlens_agent::pods::kube::{KubeEnricher, pod_facts};
use oomlens_proto::v1 as pb;

const API_ID: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
const SIDECAR_ID: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

/// A Deployment's pod as the API serves it (trimmed to the fields read and
/// the ones the schema requires), with a native sidecar and an init
/// container.
fn deployment_pod() -> Pod {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": "api-7d9f8b6c5-x2x9q",
            "namespace": "shop",
            "uid": "8a1b7c6d-1111-2222-3333-444455556666",
            "ownerReferences": [{
                "apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "api-7d9f8b6c5",
                "uid": "5e0f2a9c-0000-4000-8000-000000000001", "controller": true, "blockOwnerDeletion": true
            }]
        },
        "spec": {
            "nodeName": "node-a",
            "initContainers": [
                {"name": "migrate", "image": "registry.example/shop/migrate:1",
                 "resources": {"limits": {"memory": "64Mi"}}},
                {"name": "log-shipper", "image": "registry.example/shop/shipper:2", "restartPolicy": "Always",
                 "resources": {"limits": {"memory": "32Mi"}, "requests": {"memory": "16Mi"}}}
            ],
            "containers": [
                {"name": "api", "image": "registry.example/shop/api:1.2.3",
                 "resources": {"limits": {"memory": "256Mi", "cpu": "500m"}, "requests": {"memory": "128Mi"}}},
                {"name": "proxy", "image": "registry.example/mesh/proxy:1",
                 "resources": {"limits": {"memory": "64Mi"}, "requests": {"memory": "32Mi"}}}
            ]
        },
        "status": {
            "containerStatuses": [
                {"name": "api", "containerID": format!("containerd://{API_ID}"), "image": "registry.example/shop/api:1.2.3",
                 "imageID": "sha256:1", "ready": true, "restartCount": 3},
                {"name": "proxy", "containerID": "containerd://cccc", "image": "registry.example/mesh/proxy:1",
                 "imageID": "sha256:2", "ready": true, "restartCount": 0}
            ],
            "initContainerStatuses": [
                {"name": "log-shipper", "containerID": format!("containerd://{SIDECAR_ID}"), "image": "registry.example/shop/shipper:2",
                 "imageID": "sha256:3", "ready": true, "restartCount": 0}
            ]
        }
    }))
    .expect("a valid pod")
}

/// A CronJob's pod: owned by a Job.
fn job_pod() -> Pod {
    serde_json::from_value(serde_json::json!({
        "metadata": {
            "name": "backup-28911234-abcde", "namespace": "ops", "uid": "0330b2c1-a15b-4cdd-b5e5-72d4a90bee82",
            "ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job", "name": "backup-28911234",
                                 "uid": "5e0f2a9c-0000-4000-8000-000000000002", "controller": true}]
        },
        "spec": {"containers": [{"name": "backup", "resources": {"limits": {"memory": "1Gi"}}}]}
    }))
    .expect("a valid pod")
}

/// A client whose API server answers owner lookups from recorded objects.
fn mock_client(requests: Arc<AtomicUsize>) -> kube::Client {
    let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    tokio::spawn(async move {
        while let Some((request, send)) = handle.next_request().await {
            requests.fetch_add(1, Ordering::SeqCst);
            let path = request.uri().path().to_owned();
            let (status, body) = match path.as_str() {
                "/apis/apps/v1/namespaces/shop/replicasets/api-7d9f8b6c5" => (
                    200,
                    serde_json::json!({
                        "apiVersion": "apps/v1", "kind": "ReplicaSet",
                        "metadata": {"name": "api-7d9f8b6c5", "namespace": "shop", "ownerReferences": [{
                            "apiVersion": "apps/v1", "kind": "Deployment", "name": "api",
                            "uid": "5e0f2a9c-0000-4000-8000-000000000003", "controller": true}]},
                        "spec": {"selector": {"matchLabels": {"app": "api"}}}
                    }),
                ),
                "/apis/batch/v1/namespaces/ops/jobs/backup-28911234" => (
                    200,
                    serde_json::json!({
                        "apiVersion": "batch/v1", "kind": "Job",
                        "metadata": {"name": "backup-28911234", "namespace": "ops", "ownerReferences": [{
                            "apiVersion": "batch/v1", "kind": "CronJob", "name": "backup",
                            "uid": "5e0f2a9c-0000-4000-8000-000000000004", "controller": true}]},
                        "spec": {"template": {}}
                    }),
                ),
                _ => (
                    404,
                    serde_json::json!({
                        "apiVersion": "v1", "kind": "Status", "status": "Failure",
                        "message": format!("{path} not found"), "reason": "NotFound", "code": 404
                    }),
                ),
            };
            let response = Response::builder()
                .status(status)
                .body(Body::from(serde_json::to_vec(&body).expect("json")))
                .expect("response");
            send.send_response(response);
        }
    });
    kube::Client::new(service, "default")
}

fn event_for(uid: &str, container_id: &str) -> pb::OomEvent {
    pb::OomEvent {
        pod: Some(pb::Pod {
            uid: uid.into(),
            ..pb::Pod::default()
        }),
        container: Some(pb::Container {
            id: container_id.into(),
            ..pb::Container::default()
        }),
        ..pb::OomEvent::default()
    }
}

#[test]
fn facts_of_a_recorded_pod() {
    let facts = pod_facts(&deployment_pod());
    assert_eq!(
        (facts.name.as_str(), facts.namespace.as_str()),
        ("api-7d9f8b6c5-x2x9q", "shop")
    );
    assert_eq!(facts.owner, Some(("ReplicaSet".into(), "api-7d9f8b6c5".into())));
    // Regular containers only: 256Mi + 64Mi, 128Mi + 32Mi.
    assert_eq!(facts.memory_limit, Some(320 << 20));
    assert_eq!(facts.memory_request, Some(160 << 20));
    assert_eq!(facts.containers["api"].role, pb::ContainerRole::Main);
    assert_eq!(facts.containers["migrate"].role, pb::ContainerRole::Init);
    assert_eq!(facts.containers["log-shipper"].role, pb::ContainerRole::Sidecar);
    assert_eq!(facts.container_ids[API_ID], "api");
    // A pod with a container without a limit has no pod-level sum.
    let mut no_limit = deployment_pod();
    if let Some(spec) = no_limit.spec.as_mut() {
        spec.containers[1].resources = None;
    }
    assert_eq!(pod_facts(&no_limit).memory_limit, None);
}

#[tokio::test]
async fn events_get_workloads_limits_and_roles() {
    let requests = Arc::new(AtomicUsize::new(0));
    let client = mock_client(Arc::clone(&requests));
    let mut writer: Writer<Pod> = Writer::default();
    writer.apply_watcher_event(&watcher::Event::Apply(deployment_pod()));
    writer.apply_watcher_event(&watcher::Event::Apply(job_pod()));
    let enricher = KubeEnricher::new(writer.as_reader(), client);

    // The container is found by its runtime id even without a name (no CRI).
    let mut event = event_for("8a1b7c6d-1111-2222-3333-444455556666", API_ID);
    enricher.enrich(&mut event).await;
    let pod = event.pod.as_ref().expect("pod");
    assert_eq!(
        (pod.name.as_deref(), pod.namespace.as_deref()),
        (Some("api-7d9f8b6c5-x2x9q"), Some("shop"))
    );
    assert_eq!(
        pod.owner.as_ref().map(|o| (o.kind.as_str(), o.name.as_str())),
        Some(("Deployment", "api"))
    );
    assert_eq!(pod.memory_limit_bytes, Some(320 << 20));
    let container = event.container.as_ref().expect("container");
    assert_eq!(container.name.as_deref(), Some("api"));
    assert_eq!(container.role, pb::ContainerRole::Main as i32);
    assert_eq!(
        (container.memory_limit_bytes, container.memory_request_bytes),
        (Some(256 << 20), Some(128 << 20))
    );
    assert_eq!(event.identity_source, pb::IdentitySource::KubernetesApi as i32);

    let mut sidecar = event_for("8a1b7c6d-1111-2222-3333-444455556666", SIDECAR_ID);
    enricher.enrich(&mut sidecar).await;
    assert_eq!(
        sidecar.container.as_ref().map(|c| c.role),
        Some(pb::ContainerRole::Sidecar as i32)
    );
    assert_eq!(
        requests.load(Ordering::SeqCst),
        1,
        "the ReplicaSet's owner is cached"
    );

    let mut backup = event_for("0330b2c1-a15b-4cdd-b5e5-72d4a90bee82", "dddd");
    enricher.enrich(&mut backup).await;
    let owner = backup.pod.as_ref().and_then(|p| p.owner.as_ref()).expect("owner");
    assert_eq!((owner.kind.as_str(), owner.name.as_str()), ("CronJob", "backup"));

    // A pod the API does not know leaves the event as it was.
    let mut unknown = event_for("ffffffff-0000-0000-0000-000000000000", "eeee");
    enricher.enrich(&mut unknown).await;
    assert_eq!(unknown.identity_source, pb::IdentitySource::Unspecified as i32);
    assert_eq!(unknown.pod.as_ref().and_then(|p| p.name.clone()), None);
}

#[tokio::test]
async fn a_failed_owner_lookup_reports_the_controller_itself() {
    let requests = Arc::new(AtomicUsize::new(0));
    let client = mock_client(Arc::clone(&requests));
    let enricher = KubeEnricher::new(Writer::<Pod>::default().as_reader(), client);
    // The API answers 404 (a deleted ReplicaSet, or no RBAC for it).
    let owner = enricher.workload("shop", "ReplicaSet", "gone-123").await;
    assert_eq!(owner, Some(("ReplicaSet".into(), "gone-123".into())));
    assert_eq!(requests.load(Ordering::SeqCst), 1);
    // Controllers that own pods directly need no lookup.
    assert_eq!(
        enricher.workload("db", "StatefulSet", "db").await,
        Some(("StatefulSet".into(), "db".into()))
    );
    assert_eq!(requests.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn the_reflector_lists_this_nodes_pods_by_field_selector() {
    let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let selectors = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let seen = Arc::clone(&selectors);
    tokio::spawn(async move {
        while let Some((request, send)) = handle.next_request().await {
            let query = request.uri().query().unwrap_or_default().to_owned();
            seen.lock().expect("lock").push(query.clone());
            let body = if query.contains("watch=true") {
                // An empty watch: the watcher reconnects later, the store keeps the list.
                Vec::new()
            } else {
                serde_json::to_vec(&serde_json::json!({
                    "apiVersion": "v1", "kind": "PodList",
                    "metadata": {"resourceVersion": "1"},
                    "items": [serde_json::to_value(deployment_pod()).expect("pod json")]
                }))
                .expect("json")
            };
            send.send_response(
                Response::builder()
                    .status(200)
                    .body(Body::from(body))
                    .expect("response"),
            );
        }
    });
    let (enricher, reflector) = KubeEnricher::start(kube::Client::new(service, "default"), "node-a");
    let task = tokio::spawn(reflector);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while enricher.pod("8a1b7c6d-1111-2222-3333-444455556666").is_none() {
        assert!(
            std::time::Instant::now() < deadline,
            "the reflector never listed the pod"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    task.abort();
    let queries = selectors.lock().expect("lock").clone();
    assert!(
        queries
            .iter()
            .all(|q| q.contains("fieldSelector=spec.nodeName%3Dnode-a")),
        "every request is scoped to the node: {queries:?}"
    );
}
