//! A real containerd (Debian's package) for end-to-end tests, with its
//! CRI plugin, started from a config in a temporary directory: its root,
//! state, socket and runc's state all live there. No registry: the image
//! (static busybox) is built by hand as an OCI layout and imported with
//! `ctr`. Pods are created through CRI, as the kubelet does, with
//! kubelet-style cgroup parents under a scratch cgroup of the test's own,
//! and removed (with every cgroup containerd made) when dropped.
//! Pitfalls behind the config: ../shared/DESIGN.md.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use hyper_util::rt::TokioIo;
use tonic::transport::{Channel, Endpoint, Uri};

/// The test-only CRI client (pod lifecycle calls).
#[allow(
    missing_docs,
    unreachable_pub,
    clippy::all,
    clippy::pedantic,
    missing_debug_implementations
)]
pub mod cri {
    tonic::include_proto!("runtime.v1");
}

use cri::runtime_service_client::RuntimeServiceClient;

/// The image every test container runs: static busybox.
pub const IMAGE: &str = "oomlens.local/busybox:1";

/// Why containerd cannot run here, if it cannot.
pub fn containerd_unavailable() -> Option<String> {
    if let Some(reason) = crate::real_kernel_unavailable() {
        return Some(reason);
    }
    for (tool, package) in [
        ("containerd", "containerd"),
        ("ctr", "containerd"),
        ("runc", "runc"),
    ] {
        if crate::find_program(tool).is_none() {
            return Some(format!(
                "needs {tool} (Debian package {package}; .ci/run installs it)"
            ));
        }
    }
    if !Path::new("/bin/busybox").exists() {
        return Some("needs a static /bin/busybox (Debian package busybox-static)".into());
    }
    None
}

fn sh(script: &str, dir: &Path) -> Result<String, String> {
    let output = Command::new("sh")
        .arg("-c")
        .arg(script)
        .current_dir(dir)
        .output()
        .map_err(|e| e.to_string())?;
    if !output.status.success() {
        return Err(format!(
            "`{script}` failed: {}",
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
}

/// Writes an OCI image layout with one layer holding /bin/busybox, and
/// returns the tarball's path.
fn build_image(dir: &Path) -> Result<PathBuf, String> {
    let script = format!(
        r#"set -e
mkdir -p rootfs/bin layout/blobs/sha256
cp /bin/busybox rootfs/bin/busybox
tar -C rootfs -cf layer.tar bin
gzip -n -c layer.tar > layer.tar.gz
blob() {{ d=$(sha256sum "$1" | cut -d' ' -f1); cp "$1" layout/blobs/sha256/$d; echo $d; }}
DIFF=$(sha256sum layer.tar | cut -d' ' -f1)
LAYER=$(blob layer.tar.gz); LSIZE=$(stat -c%s layer.tar.gz)
printf '{{"architecture":"amd64","os":"linux","config":{{"Cmd":["/bin/busybox","sleep","1000000"]}},"rootfs":{{"type":"layers","diff_ids":["sha256:%s"]}}}}' $DIFF > config.json
CFG=$(blob config.json); CSIZE=$(stat -c%s config.json)
printf '{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:%s","size":%s}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"sha256:%s","size":%s}}]}}' $CFG $CSIZE $LAYER $LSIZE > manifest.json
MAN=$(blob manifest.json); MSIZE=$(stat -c%s manifest.json)
printf '{{"schemaVersion":2,"manifests":[{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:%s","size":%s,"annotations":{{"io.containerd.image.name":"{IMAGE}","org.opencontainers.image.ref.name":"1"}},"platform":{{"architecture":"amd64","os":"linux"}}}}]}}' $MAN $MSIZE > layout/index.json
echo '{{"imageLayoutVersion":"1.0.0"}}' > layout/oci-layout
tar -C layout -cf image.tar .
"#
    );
    sh(&script, dir)?;
    Ok(dir.join("image.tar"))
}

/// A running containerd; stopped, and everything it made removed, on drop.
#[derive(Debug)]
pub struct Containerd {
    dir: tempfile::TempDir,
    child: Child,
    pub socket: PathBuf,
    /// The scratch cgroup (same name under every v1 controller) that the
    /// test's kubepods trees live under.
    pub scratch: String,
    sandboxes: Vec<String>,
}

impl Containerd {
    /// Starts containerd and imports the test image.
    pub fn start(scratch: &str) -> Result<Self, String> {
        // containerd's shims daemonize; as a subreaper this process adopts
        // them when they are orphaned and reaps them on drop, instead of
        // leaving zombies where PID 1 does not reap.
        let _ = nix::sys::prctl::set_child_subreaper(true);
        let dir = tempfile::Builder::new()
            .prefix("oomlens-containerd-")
            .tempdir()
            .map_err(|e| e.to_string())?;
        let root = dir.path();
        let socket = root.join("containerd.sock");
        let config = format!(
            r#"version = 2
root = "{root}/root"
state = "{root}/state"
[grpc]
  address = "{socket}"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{IMAGE}"
  # root here lacks CAP_SYS_RESOURCE: runc cannot set -998 otherwise.
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        Root = "{root}/runc"
"#,
            root = root.display(),
            socket = socket.display()
        );
        std::fs::write(root.join("config.toml"), config).map_err(|e| e.to_string())?;
        let log = std::fs::File::create(root.join("containerd.log")).map_err(|e| e.to_string())?;
        // Niced (nice execs containerd, same pid): its work and its shims'
        // (tearing down killed containers) must not starve the memory hogs
        // of a storm on a two-core machine.
        let child = Command::new("nice")
            .args(["-n", "10", "containerd"])
            .arg("--config")
            .arg(root.join("config.toml"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| format!("containerd: {e}"))?;
        let containerd = Self {
            dir,
            child,
            socket,
            scratch: scratch.to_owned(),
            sandboxes: Vec::new(),
        };
        let deadline = Instant::now() + Duration::from_secs(15);
        while !containerd.socket.exists() {
            if Instant::now() > deadline {
                return Err(format!("containerd did not start: {}", containerd.log()));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let image = build_image(containerd.dir.path())?;
        sh(
            &format!(
                "ctr -a '{}' -n k8s.io images import '{}'",
                containerd.socket.display(),
                image.display()
            ),
            containerd.dir.path(),
        )?;
        Ok(containerd)
    }

    /// containerd's own log, for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("containerd.log")).unwrap_or_default()
    }

    pub async fn client(&self) -> Result<RuntimeServiceClient<Channel>, String> {
        let socket = self.socket.clone();
        let channel = Endpoint::from_static("http://[::1]:50051")
            .connect_with_connector(tower::service_fn(move |_: Uri| {
                let socket = socket.clone();
                async move {
                    Ok::<_, std::io::Error>(TokioIo::new(tokio::net::UnixStream::connect(socket).await?))
                }
            }))
            .await
            .map_err(|e| format!("connecting to containerd: {e}"))?;
        Ok(RuntimeServiceClient::new(channel))
    }

    /// Runs a pod sandbox as the kubelet would (host network, no CNI) with
    /// the kubelet's labels, under `cgroup_parent` (relative to the scratch
    /// cgroup, e.g. `kubepods/burstable/pod<uid>`).
    pub async fn run_pod(
        &mut self,
        client: &mut RuntimeServiceClient<Channel>,
        name: &str,
        namespace: &str,
        uid: &str,
        cgroup_parent: &str,
    ) -> Result<(String, cri::PodSandboxConfig), String> {
        let config = cri::PodSandboxConfig {
            metadata: Some(cri::PodSandboxMetadata {
                name: name.into(),
                uid: uid.into(),
                namespace: namespace.into(),
                attempt: 0,
            }),
            labels: HashMap::from([
                ("io.kubernetes.pod.name".into(), name.into()),
                ("io.kubernetes.pod.namespace".into(), namespace.into()),
                ("io.kubernetes.pod.uid".into(), uid.into()),
            ]),
            linux: Some(cri::LinuxPodSandboxConfig {
                cgroup_parent: format!("/{}/{cgroup_parent}", self.scratch),
                security_context: Some(cri::LinuxSandboxSecurityContext {
                    namespace_options: Some(cri::NamespaceOption {
                        network: cri::NamespaceMode::Node as i32,
                        pid: cri::NamespaceMode::Container as i32,
                        ipc: cri::NamespaceMode::Pod as i32,
                    }),
                }),
            }),
            ..cri::PodSandboxConfig::default()
        };
        let id = client
            .run_pod_sandbox(cri::RunPodSandboxRequest {
                config: Some(config.clone()),
                runtime_handler: String::new(),
            })
            .await
            .map_err(|e| format!("RunPodSandbox: {e}\n{}", self.log()))?
            .into_inner()
            .pod_sandbox_id;
        self.sandboxes.push(id.clone());
        Ok((id, config))
    }

    /// Creates and starts a container running `script` under busybox sh.
    pub async fn run_container(
        &self,
        client: &mut RuntimeServiceClient<Channel>,
        sandbox: &(String, cri::PodSandboxConfig),
        name: &str,
        script: &str,
        memory_limit: Option<i64>,
    ) -> Result<String, String> {
        let pod = sandbox.1.metadata.clone().unwrap_or_default();
        let config = cri::ContainerConfig {
            metadata: Some(cri::ContainerMetadata {
                name: name.into(),
                attempt: 0,
            }),
            image: Some(cri::ImageSpec { image: IMAGE.into() }),
            command: vec!["/bin/busybox".into(), "sh".into(), "-c".into(), script.into()],
            labels: HashMap::from([
                ("io.kubernetes.container.name".into(), name.into()),
                ("io.kubernetes.pod.name".into(), pod.name.clone()),
                ("io.kubernetes.pod.namespace".into(), pod.namespace.clone()),
                ("io.kubernetes.pod.uid".into(), pod.uid.clone()),
            ]),
            annotations: HashMap::from([("io.kubernetes.container.restartCount".into(), "0".into())]),
            linux: Some(cri::LinuxContainerConfig {
                resources: Some(cri::LinuxContainerResources {
                    memory_limit_in_bytes: memory_limit.unwrap_or(0),
                    ..cri::LinuxContainerResources::default()
                }),
            }),
            ..cri::ContainerConfig::default()
        };
        let id = client
            .create_container(cri::CreateContainerRequest {
                pod_sandbox_id: sandbox.0.clone(),
                config: Some(config),
                sandbox_config: Some(sandbox.1.clone()),
            })
            .await
            .map_err(|e| format!("CreateContainer: {e}\n{}", self.log()))?
            .into_inner()
            .container_id;
        client
            .start_container(cri::StartContainerRequest {
                container_id: id.clone(),
            })
            .await
            .map_err(|e| format!("StartContainer: {e}\n{}", self.log()))?;
        Ok(id)
    }

    /// Stops and removes every pod this test ran.
    pub async fn remove_pods(&mut self, client: &mut RuntimeServiceClient<Channel>) {
        for id in std::mem::take(&mut self.sandboxes) {
            let _ = client
                .stop_pod_sandbox(cri::StopPodSandboxRequest {
                    pod_sandbox_id: id.clone(),
                })
                .await;
            let _ = client
                .remove_pod_sandbox(cri::RemovePodSandboxRequest { pod_sandbox_id: id })
                .await;
        }
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(crate::kernel_pid(self.child.id())),
            nix::sys::signal::Signal::SIGTERM,
        );
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        // Reap the shims adopted as subreaper (they exit with their pods).
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
            match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(50));
                }
                Ok(WaitStatus::StillAlive) | Err(_) => break,
                Ok(_) => {}
            }
        }
        // containerd made the kubepods tree under every controller.
        if let Ok(controllers) = std::fs::read_dir("/sys/fs/cgroup") {
            for controller in controllers.flatten() {
                let tree = controller.path().join(&self.scratch);
                if tree.exists() {
                    crate::remove_tree(&tree);
                }
            }
        }
        // Overlay mounts of leftover snapshots would keep the temp dir busy.
        let _ = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "grep -o '{}[^ ]*' /proc/mounts | sort -r | xargs -r -n1 umount -l",
                self.dir.path().display()
            ))
            .status();
    }
}
