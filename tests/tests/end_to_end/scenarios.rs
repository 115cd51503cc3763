//! The kills the run makes: the hogs' scripts, and the pods, containers
//! and plain cgroup they run in, up to the storm's start gun.

use std::collections::HashMap;
use std::io::Write as _;
use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::time::Duration;

use oomlens_proto::v1::{QosClass, Scope};
use oomlens_tests::containerd::Containerd;
use oomlens_tests::containerd::cri::runtime_service_client::RuntimeServiceClient;
use oomlens_tests::{ScratchTree, pod_and_container_ids};
use tonic::transport::Channel;

use crate::wait_until;

/// Feeds 1 MiB every 50 ms (20 MiB/s) until the reader dies: the climb to
/// a 32 MiB limit takes about 1.6 s, several samples at 10 Hz.
const FEED: &str = "while head -c 1048576 /dev/zero; do usleep 50000; done";

/// The storm's hog: `tail` (the main process) holds 2 MiB of its 8 MiB
/// while the feeder waits for the start gun; then 3.5 MiB, a 300 ms pause
/// (sampled: the history shows the climb through two thirds of the
/// limit; a pause of one sampling interval was missed when a sampler pass
/// came late under the storm), and 3.5 MiB more, which the limit stops.
/// Few steps and no process per step after the gun: the kills bunch up.
fn storm_hog(gun_port: u16) -> String {
    format!(
        "mkfifo /feed; ( head -c 2097152 /dev/zero; \
         until wget -q -O /dev/null http://127.0.0.1:{gun_port}/; do usleep 100000; done; \
         head -c 3670016 /dev/zero; usleep 300000; head -c 8388608 /dev/zero ) > /feed & exec tail /feed"
    )
}

/// `tail` buffers an endless line: it is the hog, and the main process
/// (exec) reading the feed through a FIFO.
fn main_process_hog(wait: &str, feed: &str) -> String {
    format!("{wait}; mkfifo /feed; ( {feed} ) > /feed & exec tail /feed")
}

/// The hog is a child of the shell, which lives on after the kill.
fn child_hog(wait: &str) -> String {
    format!("{wait}; ( {FEED} ) | tail; sleep 1000")
}

const LIMIT: u64 = 32 << 20;
const STORM_LIMIT: u64 = 8 << 20;
const STORM_PODS: usize = 4;
const STORM_CONTAINERS_PER_POD: usize = 5;
pub(crate) const STORM: usize = STORM_PODS * STORM_CONTAINERS_PER_POD;

/// Answers every waiting `wget` at once when triggered: the storm's start.
struct StartGun {
    port: u16,
    waiting: std::sync::Arc<std::sync::Mutex<Vec<std::net::TcpStream>>>,
}

impl StartGun {
    fn new() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let waiting = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let queue = std::sync::Arc::clone(&waiting);
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                queue.lock().unwrap().push(stream);
            }
        });
        Self { port, waiting }
    }

    fn waiting(&self) -> usize {
        self.waiting.lock().unwrap().len()
    }

    fn fire(&self) {
        for mut stream in self.waiting.lock().unwrap().drain(..) {
            let _ = stream.write_all(b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n");
        }
    }
}

/// The expected facts of one kill.
#[derive(Debug)]
pub(crate) struct Expected {
    pub(crate) scope: Scope,
    pub(crate) pod: Option<(String, String)>,
    pub(crate) container: Option<String>,
    pub(crate) qos: Option<QosClass>,
    pub(crate) silent: Option<bool>,
    /// The limit the climb ran into.
    pub(crate) limit: u64,
}

/// The plain (non-Kubernetes) cgroup, named as systemd names a service's.
pub(crate) const PLAIN: &str = "batch-report.service";

/// What the run expects once its kills are under way.
pub(crate) struct Kills {
    /// Each kill by container id (the plain cgroup's by its path).
    pub(crate) expected: HashMap<String, Expected>,
    pub(crate) storm_ids: Vec<String>,
    pub(crate) plain_path: String,
}

/// Starts every scenario, waits for the plain cgroup's kill and for the
/// storm's containers at the start gun, and fires it.
pub(crate) async fn start(
    containerd: &mut Containerd,
    cri: &mut RuntimeServiceClient<Channel>,
    memory: &ScratchTree,
    ns: impl Fn(&str) -> String,
) -> Kills {
    let mut expected: HashMap<String, Expected> = HashMap::new();
    let wait = "sleep 2";

    // A container's main process at its own limit (burstable).
    let (uid, _) = pod_and_container_ids();
    let pod = containerd
        .run_pod(
            cri,
            "api-0",
            &ns("shop"),
            &uid,
            &format!("kubepods/burstable/pod{uid}"),
        )
        .await
        .unwrap();
    let id = containerd
        .run_container(
            cri,
            &pod,
            "api",
            &main_process_hog(wait, FEED),
            Some(i64::try_from(LIMIT).unwrap()),
        )
        .await
        .unwrap();
    expected.insert(
        id.clone(),
        Expected {
            scope: Scope::ContainerLimit,
            pod: Some(("api-0".into(), ns("shop"))),
            container: Some("api".into()),
            qos: Some(QosClass::Burstable),
            silent: Some(false),
            limit: LIMIT,
        },
    );
    // A child while the container lives on (besteffort): silent.
    let (uid, _) = pod_and_container_ids();
    let pod = containerd
        .run_pod(
            cri,
            "worker-0",
            &ns("jobs"),
            &uid,
            &format!("kubepods/besteffort/pod{uid}"),
        )
        .await
        .unwrap();
    let id = containerd
        .run_container(
            cri,
            &pod,
            "worker",
            &child_hog(wait),
            Some(i64::try_from(LIMIT).unwrap()),
        )
        .await
        .unwrap();
    expected.insert(
        id,
        Expected {
            scope: Scope::ContainerLimit,
            pod: Some(("worker-0".into(), ns("jobs"))),
            container: Some("worker".into()),
            qos: Some(QosClass::Besteffort),
            silent: Some(true),
            limit: LIMIT,
        },
    );
    // A container under a pod-level limit (guaranteed; set as the kubelet does).
    let (uid, _) = pod_and_container_ids();
    let pod_cgroup = format!("kubepods/pod{uid}");
    memory.create(&pod_cgroup);
    memory.limit(&pod_cgroup, LIMIT);
    let pod = containerd
        .run_pod(cri, "db-0", &ns("db"), &uid, &pod_cgroup)
        .await
        .unwrap();
    let id = containerd
        .run_container(cri, &pod, "db", &main_process_hog(wait, FEED), None)
        .await
        .unwrap();
    expected.insert(
        id,
        Expected {
            scope: Scope::PodLimit,
            pod: Some(("db-0".into(), ns("db"))),
            container: Some("db".into()),
            qos: Some(QosClass::Guaranteed),
            silent: Some(false),
            limit: LIMIT,
        },
    );
    // A plain cgroup, not Kubernetes: a systemd-service-shaped one, which
    // the agent follows with --include-other-cgroups. `tail` is alone in
    // it (fed from here at the same 20 MiB/s), so the kernel has one
    // process to kill; it starts with the containers' hogs.
    let plain = PLAIN;
    let plain_dir = memory.create(plain);
    memory.limit(plain, LIMIT);
    let plain_path = memory.kernel_path(plain);
    let plain_hog = std::thread::spawn(move || {
        let mut tail = Command::new("/bin/busybox")
            .args(["sh", "-c", "echo $$ > \"$1/cgroup.procs\" && exec tail", "sh"])
            .arg(&plain_dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let mut feed = tail.stdin.take().unwrap();
        std::thread::sleep(Duration::from_secs(2));
        let chunk = vec![0u8; 1 << 20];
        while feed.write_all(&chunk).is_ok() {
            std::thread::sleep(Duration::from_millis(50));
        }
        tail.wait().unwrap()
    });
    expected.insert(
        plain_path.clone(),
        Expected {
            scope: Scope::OtherCgroup,
            pod: None,
            container: None,
            qos: None,
            silent: None,
            limit: LIMIT,
        },
    );

    // The storm: 20 containers in 4 pods, each waiting for the start gun.
    let gun = StartGun::new();
    let mut storm_ids = Vec::new();
    for p in 0..STORM_PODS {
        let (uid, _) = pod_and_container_ids();
        let name = format!("storm-{p}");
        let pod = containerd
            .run_pod(
                cri,
                &name,
                &ns("storm"),
                &uid,
                &format!("kubepods/besteffort/pod{uid}"),
            )
            .await
            .unwrap();
        for c in 0..STORM_CONTAINERS_PER_POD {
            let container = format!("hog-{c}");
            let id = containerd
                .run_container(
                    cri,
                    &pod,
                    &container,
                    &storm_hog(gun.port),
                    Some(i64::try_from(STORM_LIMIT).unwrap()),
                )
                .await
                .unwrap();
            storm_ids.push(id.clone());
            expected.insert(
                id,
                Expected {
                    scope: Scope::ContainerLimit,
                    pod: Some((name.clone(), ns("storm"))),
                    container: Some(container),
                    qos: Some(QosClass::Besteffort),
                    silent: Some(false),
                    limit: STORM_LIMIT,
                },
            );
        }
    }
    assert!(
        !plain_hog.join().unwrap().success(),
        "the plain cgroup's hog was killed"
    );
    // Every storm container waits at the gun, sampled at rest, before it fires.
    wait_until(
        "the storm's containers at the start gun",
        Duration::from_secs(60),
        || gun.waiting() >= STORM,
    );
    std::thread::sleep(Duration::from_millis(1500));
    gun.fire();
    Kills {
        expected,
        storm_ids,
        plain_path,
    }
}
