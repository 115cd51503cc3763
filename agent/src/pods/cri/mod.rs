//! Pod and container names from the container runtime, over CRI
//! (runtime.v1 on the runtime's unix socket): containerd at
//! `/run/containerd/containerd.sock`, CRI-O at `/var/run/crio/crio.sock`.
//!
//! [`CriCache`] (pure) keeps what the runtime listed, and keeps a container
//! for a grace period after it disappears: a container killed by the OOM
//! killer is often removed before its kill record is read. [`CriResolver`]
//! is the task that owns the client and the cache, refreshes on a timer and
//! whenever asked about a container it does not know.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use hyper_util::rt::TokioIo;
use tokio::sync::{mpsc, oneshot};
use tonic::transport::{Channel, Endpoint, Uri};
use tracing::{debug, info, warn};

/// Code generated from `proto/runtime/v1/api.proto`.
#[allow(
    missing_docs,
    unreachable_pub,
    clippy::all,
    clippy::pedantic,
    missing_debug_implementations
)]
pub mod runtime {
    tonic::include_proto!("runtime.v1");
}

use runtime::runtime_service_client::RuntimeServiceClient;

mod report;

/// Default sockets, tried in order when none is configured.
pub const DEFAULT_SOCKETS: &[&str] = &["/run/containerd/containerd.sock", "/var/run/crio/crio.sock"];

/// The kubelet's annotation with a container's restart count.
const RESTART_COUNT: &str = "io.kubernetes.container.restartCount";

#[derive(Debug, thiserror::Error)]
pub enum CriError {
    #[error("cannot reach the container runtime at {socket}: {source}")]
    Connect {
        socket: PathBuf,
        source: tonic::transport::Error,
    },
    #[error("the container runtime at {socket} failed {call}: {status}")]
    Call {
        socket: PathBuf,
        call: &'static str,
        status: Box<tonic::Status>,
    },
}

/// What the runtime says about one container.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ContainerInfo {
    pub id: String,
    pub name: String,
    pub image: String,
    pub pod_uid: String,
    pub pod_name: String,
    pub namespace: String,
    pub restart_count: Option<u32>,
    /// Host pid of the container's main process (from the verbose status).
    pub main_pid: Option<i32>,
    pub running: bool,
    pub labels: HashMap<String, String>,
}

/// A CRI client on a unix socket.
#[derive(Debug, Clone)]
pub struct CriClient {
    socket: PathBuf,
    client: RuntimeServiceClient<Channel>,
}

impl CriClient {
    /// Connects to the runtime; fails with a clear error when the socket
    /// is missing or does not speak CRI.
    pub async fn connect(socket: &Path) -> Result<Self, CriError> {
        let path = socket.to_path_buf();
        // The URI is required by tonic but unused: the connector dials the socket.
        let endpoint = Endpoint::from_static("http://[::1]:50051").connect_timeout(Duration::from_secs(2));
        let dial = path.clone();
        let channel =
            endpoint
                .connect_with_connector(tower::service_fn(move |_: Uri| {
                    let dial = dial.clone();
                    async move {
                        Ok::<_, std::io::Error>(TokioIo::new(tokio::net::UnixStream::connect(dial).await?))
                    }
                }))
                .await
                .map_err(|source| CriError::Connect {
                    socket: path.clone(),
                    source,
                })?;
        let mut client = Self {
            socket: path,
            client: RuntimeServiceClient::new(channel),
        };
        let version = client.version().await?;
        info!(socket = %client.socket.display(), runtime = %version, "connected to the container runtime (CRI)");
        Ok(client)
    }

    fn call_error(&self, call: &'static str, status: tonic::Status) -> CriError {
        CriError::Call {
            socket: self.socket.clone(),
            call,
            status: Box::new(status),
        }
    }

    /// `name version` of the runtime.
    pub async fn version(&mut self) -> Result<String, CriError> {
        let reply = self
            .client
            .version(runtime::VersionRequest { version: "v1".into() })
            .await
            .map_err(|s| self.call_error("Version", s))?
            .into_inner();
        Ok(format!("{} {}", reply.runtime_name, reply.runtime_version))
    }

    /// Every container the runtime knows, with its pod.
    pub async fn list(&mut self) -> Result<Vec<ContainerInfo>, CriError> {
        let sandboxes = self
            .client
            .list_pod_sandbox(runtime::ListPodSandboxRequest {})
            .await
            .map_err(|s| self.call_error("ListPodSandbox", s))?
            .into_inner()
            .items;
        let pods: HashMap<String, runtime::PodSandboxMetadata> = sandboxes
            .into_iter()
            .filter_map(|s| Some((s.id, s.metadata?)))
            .collect();
        let containers = self
            .client
            .list_containers(runtime::ListContainersRequest {})
            .await
            .map_err(|s| self.call_error("ListContainers", s))?
            .into_inner()
            .containers;
        Ok(containers
            .into_iter()
            .map(|c| {
                let pod = pods.get(&c.pod_sandbox_id).cloned().unwrap_or_default();
                ContainerInfo {
                    name: c.metadata.map(|m| m.name).unwrap_or_default(),
                    image: c.image.map(|i| i.image).unwrap_or_default(),
                    pod_uid: pod.uid,
                    pod_name: pod.name,
                    namespace: pod.namespace,
                    restart_count: c.annotations.get(RESTART_COUNT).and_then(|v| v.parse().ok()),
                    main_pid: None,
                    running: c.state == runtime::ContainerState::ContainerRunning as i32,
                    labels: c.labels,
                    id: c.id,
                }
            })
            .collect())
    }

    /// The container's state now and its main pid, from the verbose status.
    pub async fn status(&mut self, id: &str) -> Result<ContainerNow, CriError> {
        let reply = self
            .client
            .container_status(runtime::ContainerStatusRequest {
                container_id: id.to_owned(),
                verbose: true,
            })
            .await
            .map_err(|s| self.call_error("ContainerStatus", s))?
            .into_inner();
        let running = reply
            .status
            .is_some_and(|s| s.state == runtime::ContainerState::ContainerRunning as i32);
        Ok(ContainerNow {
            running,
            main_pid: main_pid_from_info(&reply.info),
        })
    }
}

/// What the runtime says of a container now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ContainerNow {
    pub running: bool,
    pub main_pid: Option<i32>,
}

/// containerd and CRI-O report the main pid as `{"pid": N, ...}` in
/// `info["info"]`.
pub fn main_pid_from_info(info: &HashMap<String, String>) -> Option<i32> {
    let json: serde_json::Value = serde_json::from_str(info.get("info")?).ok()?;
    json.get("pid")?
        .as_i64()
        .and_then(|p| i32::try_from(p).ok())
        .filter(|p| *p > 0)
}

#[derive(Debug)]
struct Entry {
    info: ContainerInfo,
    gone_at: Option<Instant>,
}

/// What the runtime listed, kept for `grace` after a container disappears.
#[derive(Debug)]
pub struct CriCache {
    entries: HashMap<String, Entry>,
    grace: Duration,
}

impl CriCache {
    pub fn new(grace: Duration) -> Self {
        Self {
            entries: HashMap::new(),
            grace,
        }
    }

    /// Applies a fresh listing: new containers are added, known ones
    /// updated (keeping their main pid), missing ones start their grace
    /// period, and those past it are dropped. Returns the ids that are new
    /// and running (their main pid is worth fetching).
    pub fn apply(&mut self, listing: Vec<ContainerInfo>, now: Instant) -> Vec<String> {
        let mut seen = std::collections::HashSet::new();
        let mut new_running = Vec::new();
        for mut info in listing {
            seen.insert(info.id.clone());
            match self.entries.get_mut(&info.id) {
                Some(entry) => {
                    info.main_pid = info.main_pid.or(entry.info.main_pid);
                    entry.info = info;
                    entry.gone_at = None;
                }
                None => {
                    if info.running {
                        new_running.push(info.id.clone());
                    }
                    self.entries
                        .insert(info.id.clone(), Entry { info, gone_at: None });
                }
            }
        }
        for (id, entry) in &mut self.entries {
            if !seen.contains(id) && entry.gone_at.is_none() {
                entry.gone_at = Some(now);
                entry.info.running = false;
            }
        }
        let grace = self.grace;
        self.entries
            .retain(|_, e| e.gone_at.is_none_or(|at| now.duration_since(at) < grace));
        new_running
    }

    pub fn set_main_pid(&mut self, id: &str, pid: Option<i32>) {
        if let Some(entry) = self.entries.get_mut(id) {
            entry.info.main_pid = pid.or(entry.info.main_pid);
        }
    }

    pub fn get(&self, id: &str) -> Option<&ContainerInfo> {
        self.entries.get(id).map(|e| &e.info)
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// A container's identity and, when asked right after a kill, whether it
/// still runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    pub info: ContainerInfo,
    /// The runtime's state at the time of the request (None: unknown).
    pub running_now: Option<bool>,
}

/// A request to the resolver task, made through [`CriHandle`].
#[derive(Debug)]
pub struct Request {
    container_id: String,
    reply: oneshot::Sender<Option<Resolved>>,
}

/// The pipeline's way to the resolver task.
#[derive(Debug, Clone)]
pub struct CriHandle {
    requests: mpsc::Sender<Request>,
}

impl CriHandle {
    /// The container's identity (refreshing the listing first if it is not
    /// known) and its state now. None: unknown to the runtime.
    pub async fn resolve(&self, container_id: &str) -> Option<Resolved> {
        let (reply, answer) = oneshot::channel();
        self.requests
            .send(Request {
                container_id: container_id.to_owned(),
                reply,
            })
            .await
            .ok()?;
        answer.await.ok().flatten()
    }
}

/// The task owning the CRI client and cache.
#[derive(Debug)]
pub struct CriResolver {
    client: CriClient,
    cache: CriCache,
    refresh: Duration,
}

impl CriResolver {
    pub fn new(client: CriClient, grace: Duration, refresh: Duration) -> Self {
        Self {
            client,
            cache: CriCache::new(grace),
            refresh,
        }
    }

    pub fn channel() -> (CriHandle, mpsc::Receiver<Request>) {
        let (requests, receiver) = mpsc::channel(64);
        (CriHandle { requests }, receiver)
    }

    async fn refresh_now(&mut self) {
        match self.client.list().await {
            Ok(listing) => {
                for id in self.cache.apply(listing, Instant::now()) {
                    match self.client.status(&id).await {
                        Ok(now) => self.cache.set_main_pid(&id, now.main_pid),
                        Err(error) => debug!(%error, "no main pid"),
                    }
                }
            }
            Err(error) => warn!(%error, "listing containers failed; names may be missing"),
        }
    }

    async fn answer(&mut self, request: Request) {
        let Request { container_id, reply } = request;
        if self.cache.get(&container_id).is_none() {
            self.refresh_now().await;
        }
        let running_now = match self.client.status(&container_id).await {
            Ok(now) => {
                self.cache.set_main_pid(&container_id, now.main_pid);
                Some(now.running)
            }
            // Removed already: it did not survive.
            Err(CriError::Call { status, .. }) if status.code() == tonic::Code::NotFound => Some(false),
            Err(error) => {
                debug!(%error, "container status unavailable");
                None
            }
        };
        let resolved = self
            .cache
            .get(&container_id)
            .cloned()
            .map(|info| Resolved { info, running_now });
        let _ = reply.send(resolved);
    }

    /// Runs until `shutdown`.
    pub async fn run(
        mut self,
        mut requests: mpsc::Receiver<Request>,
        shutdown: impl std::future::Future<Output = ()>,
    ) {
        let mut ticker = tokio::time::interval(self.refresh);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                _ = ticker.tick() => self.refresh_now().await,
                Some(request) = requests.recv() => self.answer(request).await,
                () = &mut shutdown => break,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(id: &str, running: bool) -> ContainerInfo {
        ContainerInfo {
            id: id.into(),
            name: format!("c-{id}"),
            running,
            ..ContainerInfo::default()
        }
    }

    #[test]
    fn cache_keeps_gone_containers_for_the_grace_period() {
        let mut cache = CriCache::new(Duration::from_secs(120));
        let t0 = Instant::now();
        assert_eq!(cache.apply(vec![info("a", true), info("b", false)], t0), ["a"]);
        cache.set_main_pid("a", Some(42));
        // Listed again: updated, main pid kept, not new.
        assert!(
            cache
                .apply(vec![info("a", true), info("b", false)], t0)
                .is_empty()
        );
        assert_eq!(cache.get("a").and_then(|c| c.main_pid), Some(42));
        // "a" disappears: still resolvable, no longer running.
        cache.apply(vec![info("b", false)], t0 + Duration::from_secs(1));
        assert_eq!(
            cache.get("a").map(|c| (c.name.as_str(), c.running)),
            Some(("c-a", false))
        );
        cache.apply(vec![info("b", false)], t0 + Duration::from_secs(200));
        assert!(cache.get("a").is_none());
        assert_eq!(cache.len(), 1);
    }

    #[test]
    fn main_pid_from_runtime_info() {
        let info = HashMap::from([(
            "info".to_owned(),
            r#"{"sandboxID":"x","pid":4242,"runtimeSpec":{}}"#.to_owned(),
        )]);
        assert_eq!(main_pid_from_info(&info), Some(4242));
        let info = HashMap::from([("info".to_owned(), r#"{"pid":0}"#.to_owned())]);
        assert_eq!(main_pid_from_info(&info), None);
        assert_eq!(main_pid_from_info(&HashMap::new()), None);
    }
}
