//! The store alone, and `oomlens-agent run --standalone`, on a full disk.

use super::*;

/// The store alone on a full disk: a write it reports stored is committed
/// (it survives a reopen), a failed one leaves no transaction open (the
/// next writes work as soon as there is room, from every pooled
/// connection).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_store_on_a_full_disk_reports_stored_only_what_it_committed() {
    let mut disk = tmpfs_or_skip!("4m");
    let path = disk.path().join("events.db").display().to_string();
    let store = Store::open(&path).await.unwrap();
    let mut stored = Vec::new();
    let mut next = 0u64;
    let mut batch = || {
        let events: Vec<OomEvent> = (next..next + 4).map(synthetic).collect();
        next += 4;
        events
    };
    let mut insert = async |store: &Store, events: Vec<OomEvent>| -> bool {
        match store.insert_batch(&events).await {
            Ok(results) => {
                for (event, result) in events.iter().zip(results) {
                    assert!(matches!(result, Inserted::Stored(_)));
                    stored.push(event.id.clone());
                }
                true
            }
            Err(_) => false,
        }
    };
    for _ in 0..5 {
        assert!(insert(&store, batch()).await);
    }
    disk.fill();
    let mut failed = 0;
    for _ in 0..20 {
        if !insert(&store, batch()).await {
            failed += 1;
        }
    }
    assert!(failed > 0, "the full disk made writes fail");
    disk.free();
    // More rounds than pooled connections: none is left in a transaction.
    for _ in 0..8 {
        assert!(
            insert(&store, batch()).await,
            "writes work again once there is room"
        );
    }
    store.close().await;
    let store = Store::open(&path).await.unwrap();
    for id in &stored {
        assert!(
            store.get(id).await.unwrap().is_some(),
            "{id} reported stored, gone"
        );
    }
    assert_eq!(
        store.totals().await.unwrap().0,
        i64::try_from(stored.len()).unwrap()
    );
    store.close().await;
}

/// `oomlens-agent run --standalone` with its database on a filesystem
/// that fills while it runs and real kernel OOM kills happen: the embedded
/// collector acknowledges nothing it did not commit, the agent keeps the
/// kills spooled and delivers them, without a restart, once there is room
/// again. (A standalone agent or a collector cannot start on a full disk:
/// SQLite cannot create the WAL index; it exits with the error.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standalone_agent_on_a_full_disk_loses_nothing_acknowledged() {
    require_real_kernel!();
    let mut disk = tmpfs_or_skip!("64m");
    let database = disk.path().join("oomlens.db").display().to_string();
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("agent");
    let spool_dir = state.join("spool");
    let agent = StandaloneAgent {
        state: state.clone(),
        database: database.clone(),
        port: free_port(),
        log: dir.path().join("agent.log"),
    };
    let tree = ScratchTree::new(&unique("oomlens-faults"));
    let kills: Vec<String> = (0..3).map(|i| format!("kill{i}")).collect();
    let kill_paths: Vec<String> = kills.iter().map(|k| tree.kernel_path(k)).collect();

    // Healthy: what the last run spooled is delivered.
    spool_events(&spool_dir, 0..40).await;
    let mut running = agent.start();
    agent.wait_spool(&spool_dir, 0).await;
    let log = || std::fs::read_to_string(&agent.log).unwrap();

    // Started afresh: SQLite removed its write-ahead log at the clean stop,
    // so the kills' commits below need new blocks. (A log kept from before
    // could hold them in blocks it already has: then they are committed,
    // and rightly acknowledged, on the full disk.)
    agent.stop(&mut running);
    let mut running = agent.start();
    wait_for("the restarted agent", Duration::from_secs(30), || {
        count(&log(), "reading the kernel log") == 2
    })
    .await;

    // The disk fills; kills happen: they wait in the spool.
    disk.fill();
    for kill in &kills {
        oom_kill_in(&tree, kill);
    }
    agent.wait_spool(&spool_dir, kills.len()).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        spool_files(&spool_dir),
        kills.len(),
        "nothing acknowledged while the disk is full"
    );

    // Room again: delivered without a restart, and the embedded
    // collector's next probe finds it can write.
    disk.free();
    agent.wait_spool(&spool_dir, 0).await;
    wait_for("the probe", Duration::from_secs(30), || {
        count(&log(), CAN_WRITE) == 1
    })
    .await;
    agent.stop(&mut running);
    assert_eq!(count(&log(), CANNOT_WRITE), 1, "{}", log());
    assert_eq!(count(&log(), CAN_WRITE), 1, "{}", log());

    // After the restart (the store reopened): each event once.
    let store = Store::open(&database).await.unwrap();
    for id in ids(0..40) {
        assert!(store.get(&id).await.unwrap().is_some(), "{id} not stored");
    }
    let (page, _) = store.query(None, 1000, None).await.unwrap();
    for path in &kill_paths {
        let stored = page
            .iter()
            .filter(|e| e.event.oom_memcg.as_deref() == Some(path.as_str()))
            .count();
        assert_eq!(stored, 1, "the kill in {path} stored once");
    }
    let ours = page
        .iter()
        .filter(|e| {
            e.event.node.as_deref() == Some(NODE)
                || kill_paths.iter().any(|p| e.event.oom_memcg.as_deref() == Some(p))
        })
        .count();
    assert_eq!(ours, 40 + kills.len(), "nothing stored twice");
    store.close().await;
}

struct StandaloneAgent {
    state: PathBuf,
    database: String,
    port: u16,
    log: PathBuf,
}

impl StandaloneAgent {
    fn start(&self) -> Child {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        Command::new(oomlens_tests::agent_binary())
            .args([
                "run",
                "--standalone",
                "--listen",
                &format!("127.0.0.1:{}", self.port),
            ])
            .args(["--database", &self.database])
            .args(["--state-dir", &self.state.display().to_string()])
            .args(["--metrics-listen", "", "--cri-socket", "none", "--no-sampler"])
            .args(["--output", "json"])
            .env("OOMLENS_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start oomlens-agent")
    }

    fn stop(&self, child: &mut Child) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(oomlens_tests::kernel_pid(child.id())),
            nix::sys::signal::Signal::SIGTERM,
        );
        let status = child.wait().unwrap();
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        assert!(
            status.success(),
            "the agent exits cleanly on SIGTERM: {status}\n{log}"
        );
    }

    /// Waits until `events` are spooled.
    async fn wait_spool(&self, spool: &Path, events: usize) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while spool_files(spool) != events {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            assert!(
                Instant::now() < deadline,
                "not {events} events in the spool:\n{log}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

fn spool_files(spool: &Path) -> usize {
    std::fs::read_dir(spool)
        .map(|entries| {
            entries
                .flatten()
                .filter(|e| e.file_name().to_string_lossy().ends_with(".event"))
                .count()
        })
        .unwrap_or(0)
}

/// Spools events as a previous run of the agent would have left them.
async fn spool_events(spool: &Path, range: std::ops::Range<u64>) {
    let metrics = AgentMetrics::new();
    let spool = SharedSpool::open(spool, 256 << 20, metrics.spool.clone()).unwrap();
    for n in range {
        spool.append(synthetic(n)).await.unwrap();
    }
}
