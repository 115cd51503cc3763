//! The CRI client and resolver over real gRPC on a unix socket, against an
//! in-process runtime answering the CRI calls oomlens makes, with objects
//! shaped as containerd returns them (verbose info JSON with the pid, the
//! kubelet's restart-count annotation). The real-containerd tests live in
//! the tests crate.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use oomlens_agent::pods::cri::runtime::runtime_service_server::{RuntimeService, RuntimeServiceServer};
use oomlens_agent::pods::cri::runtime::*;
use oomlens_agent::pods::cri::{CriClient, CriResolver};
use tonic::{Request, Response, Status};

#[derive(Debug, Default)]
struct State {
    sandboxes: Vec<PodSandbox>,
    containers: Vec<Container>,
    pids: HashMap<String, i64>,
}

#[derive(Debug, Clone, Default)]
struct TestRuntime(Arc<Mutex<State>>);

impl TestRuntime {
    fn add(&self, pod: &str, namespace: &str, container_id: &str, name: &str, pid: i64) {
        let mut state = self.0.lock().expect("lock");
        let sandbox_id = format!("sb-{pod}");
        if !state.sandboxes.iter().any(|s| s.id == sandbox_id) {
            state.sandboxes.push(PodSandbox {
                id: sandbox_id.clone(),
                metadata: Some(PodSandboxMetadata {
                    name: pod.into(),
                    uid: format!("uid-{pod}"),
                    namespace: namespace.into(),
                    attempt: 0,
                }),
                ..PodSandbox::default()
            });
        }
        state.containers.push(Container {
            id: container_id.into(),
            pod_sandbox_id: sandbox_id,
            metadata: Some(ContainerMetadata {
                name: name.into(),
                attempt: 1,
            }),
            image: Some(ImageSpec {
                image: "registry.example/shop/api:1.2.3".into(),
            }),
            state: ContainerState::ContainerRunning as i32,
            annotations: HashMap::from([("io.kubernetes.container.restartCount".into(), "3".into())]),
            ..Container::default()
        });
        state.pids.insert(container_id.into(), pid);
    }

    fn remove(&self, container_id: &str) {
        let mut state = self.0.lock().expect("lock");
        state.containers.retain(|c| c.id != container_id);
        state.pids.remove(container_id);
    }
}

#[tonic::async_trait]
impl RuntimeService for TestRuntime {
    async fn version(&self, _: Request<VersionRequest>) -> Result<Response<VersionResponse>, Status> {
        Ok(Response::new(VersionResponse {
            version: "0.1.0".into(),
            runtime_name: "containerd".into(),
            runtime_version: "v1.7.24".into(),
            runtime_api_version: "v1".into(),
        }))
    }

    async fn list_pod_sandbox(
        &self,
        _: Request<ListPodSandboxRequest>,
    ) -> Result<Response<ListPodSandboxResponse>, Status> {
        Ok(Response::new(ListPodSandboxResponse {
            items: self.0.lock().expect("lock").sandboxes.clone(),
        }))
    }

    async fn list_containers(
        &self,
        _: Request<ListContainersRequest>,
    ) -> Result<Response<ListContainersResponse>, Status> {
        Ok(Response::new(ListContainersResponse {
            containers: self.0.lock().expect("lock").containers.clone(),
        }))
    }

    async fn container_status(
        &self,
        request: Request<ContainerStatusRequest>,
    ) -> Result<Response<ContainerStatusResponse>, Status> {
        let request = request.into_inner();
        let state = self.0.lock().expect("lock");
        let Some(pid) = state.pids.get(&request.container_id) else {
            return Err(Status::not_found(format!(
                "container {} not found",
                request.container_id
            )));
        };
        let info = if request.verbose {
            HashMap::from([(
                "info".into(),
                format!(r#"{{"sandboxID":"sb","pid":{pid},"runtimeType":"io.containerd.runc.v2"}}"#),
            )])
        } else {
            HashMap::new()
        };
        Ok(Response::new(ContainerStatusResponse {
            status: Some(ContainerStatus {
                id: request.container_id,
                state: ContainerState::ContainerRunning as i32,
                ..ContainerStatus::default()
            }),
            info,
        }))
    }
}

async fn serve(runtime: TestRuntime) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let socket = dir.path().join("containerd.sock");
    let listener = tokio::net::UnixListener::bind(&socket).expect("bind");
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(RuntimeServiceServer::new(runtime))
            .serve_with_incoming(tokio_stream::wrappers::UnixListenerStream::new(listener)),
    );
    (dir, socket)
}

#[tokio::test]
async fn resolves_names_refreshes_on_unknown_ids_and_keeps_removed_containers() {
    let runtime = TestRuntime::default();
    runtime.add("api-7d9f8b6c5-x2x9q", "shop", "c1", "api", 4242);
    let (_dir, socket) = serve(runtime.clone()).await;

    let mut client = CriClient::connect(&socket).await.expect("connect");
    assert_eq!(client.version().await.expect("version"), "containerd v1.7.24");
    let (handle, requests) = CriResolver::channel();
    let resolver = CriResolver::new(client, Duration::from_secs(120), Duration::from_secs(3600));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(resolver.run(requests, async {
        let _ = stopped.await;
    }));

    let c1 = handle.resolve("c1").await.expect("c1 known");
    assert_eq!(c1.info.name, "api");
    assert_eq!(
        (c1.info.pod_name.as_str(), c1.info.namespace.as_str()),
        ("api-7d9f8b6c5-x2x9q", "shop")
    );
    assert_eq!(c1.info.pod_uid, "uid-api-7d9f8b6c5-x2x9q");
    assert_eq!(c1.info.restart_count, Some(3));
    assert_eq!(c1.info.main_pid, Some(4242));
    assert_eq!(c1.running_now, Some(true));

    // A container started after the last listing is found on demand.
    runtime.add("worker-0", "jobs", "c2", "worker", 5151);
    let c2 = handle.resolve("c2").await.expect("c2 found by a refresh");
    assert_eq!(
        (c2.info.name.as_str(), c2.info.namespace.as_str()),
        ("worker", "jobs")
    );

    // A container removed (killed) before its kill is resolved: still named,
    // and known not to run any more.
    runtime.remove("c1");
    let gone = handle.resolve("c1").await.expect("kept for the grace period");
    assert_eq!(gone.info.name, "api");
    assert_eq!(gone.running_now, Some(false));

    assert!(handle.resolve("never-existed").await.is_none());
    let _ = stop.send(());
    task.await.expect("resolver");
}

#[tokio::test]
async fn a_missing_socket_is_a_clear_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let socket = dir.path().join("nothing.sock");
    let error = CriClient::connect(&socket).await.expect_err("no runtime there");
    let text = error.to_string();
    assert!(
        text.starts_with(&format!(
            "cannot reach the container runtime at {}",
            socket.display()
        )),
        "{text}"
    );
}
