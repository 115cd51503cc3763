//! What filled the memory, on real kills: a process filling a tmpfs charged
//! to its cgroup, and one growing anonymous memory, each killed at its
//! limit in a scratch v1 memory cgroup; the kernel's own stats dump in the
//! report, read back live from `/dev/kmsg`, gives the event's breakdown.
//!
//! Also the real page-cache kill captured on this machine
//! (agent/tests/fixtures/kmsg), judged from its kernel record.
//!
//! The live tests need root and the cgroup v1 memory controller; elsewhere
//! each prints why it skips. The tests share the kernel log, so they run one at
//! a time.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use oomlens_agent::event::event_from_report;
use oomlens_agent::kmsg::{KmsgReader, StartAt};
use oomlens_agent::pipeline::Enrichers;
use oomlens_collector::analysis::{Rules, analyse};
use oomlens_proto::v1::{BreakdownSource, MemoryBreakdown, OomEvent, Verdict};
use oomlens_tests::faults::Tmpfs;
use oomlens_tests::kernel_log::kill_at;
use oomlens_tests::{ScratchTree, pod_and_container_ids, require_real_kernel, run_hog, unique};

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const LIMIT: u64 = 32 << 20;
const MIB: u64 = 1 << 20;

/// A burstable pod's container cgroup in `tree`, limited to [`LIMIT`]:
/// the pod's uid, the cgroup's directory and its path as the kernel prints
/// it.
fn limited_container(tree: &ScratchTree) -> (String, PathBuf, String) {
    let (uid, container_id) = pod_and_container_ids();
    let container = format!("kubepods/burstable/pod{uid}/{container_id}");
    let dir = tree.create(&container);
    tree.limit(&container, LIMIT);
    let memcg = tree.kernel_path(&container);
    (uid, dir, memcg)
}

/// Runs `command` with `sh -c` inside `cgroup` until it exits; its status.
fn run_in(cgroup: &Path, command: &str) -> std::process::ExitStatus {
    Command::new("sh")
        .arg("-c")
        .arg(format!("echo $$ > \"$1/cgroup.procs\" && {command}"))
        .arg("sh")
        .arg(cgroup)
        .status()
        .expect("spawn sh")
}

/// The event of the kill at `memcg`, read from the live log.
async fn event_of_kill_at(reader: &mut KmsgReader, memcg: &str) -> OomEvent {
    let report = kill_at(reader, memcg, Duration::from_secs(15)).await;
    event_from_report(&report, &oomlens_tests::test_node(), 0)
}

fn breakdown(event: &OomEvent) -> &MemoryBreakdown {
    let json = oomlens_proto::json::event_to_json_line(event);
    let breakdown = event
        .breakdown
        .as_ref()
        .unwrap_or_else(|| panic!("no breakdown: {json}"));
    assert_eq!(breakdown.source, BreakdownSource::KernelReport as i32, "{json}");
    assert_eq!(
        Some(breakdown.cgroup.as_str()),
        event.oom_memcg.as_deref(),
        "{json}"
    );
    breakdown
}

#[tokio::test]
async fn a_tmpfs_filled_to_the_limit_shows_as_shmem() {
    require_real_kernel!();
    let _serial = SERIAL.lock().await;
    let tree = ScratchTree::new(&unique("oomlens-breakdown"));
    let (uid, dir, memcg) = limited_container(&tree);
    // Where the kubelet mounts an emptyDir with medium: Memory. Dropped
    // before the tree: its pages stay charged to the cgroup until the
    // files go.
    let volume = format!("var/lib/kubelet/pods/{uid}/volumes/kubernetes.io~empty-dir/cache");
    let tmpfs = Tmpfs::mount_at(&volume, "256m", "").unwrap_or_else(|why| panic!("{why}"));
    let fill = tmpfs.path().join("fill");

    let mut reader = KmsgReader::open("/dev/kmsg", StartAt::End).expect("open /dev/kmsg");
    let command = format!("exec dd if=/dev/zero of='{}' bs=1M count=256", fill.display());
    let status = tokio::task::spawn_blocking(move || run_in(&dir, &command))
        .await
        .expect("dd");
    assert!(!status.success(), "dd should be killed at the limit: {status:?}");

    let mut event = event_of_kill_at(&mut reader, &memcg).await;
    // The agent finds the pod's memory-backed volume in the host's mount
    // table and measures it.
    let enrichers = Enrichers {
        host_proc: Some("/proc".into()),
        ..Enrichers::default()
    };
    enrichers.enrich(&mut event).await;
    let json = oomlens_proto::json::event_to_json_line(&event);
    let [volume] = event.memory_volumes.as_slice() else {
        panic!("one memory volume: {json}");
    };
    assert_eq!(volume.name, "cache", "{json}");
    assert_eq!(volume.size_bytes, Some(256 * MIB), "{json}");
    assert!(volume.used_bytes.is_some_and(|u| u > LIMIT - 8 * MIB), "{json}");
    let b = breakdown(&event);
    let shmem = b.shmem_bytes.expect("shmem");
    assert!(shmem > LIMIT - 8 * MIB, "shmem {shmem}: {json}");
    assert!(b.anon_bytes.unwrap_or(0) < 8 * MIB, "{json}");
    assert!(b.page_cache_bytes.unwrap_or(0) < 8 * MIB, "{json}");
    let analysis = analyse(&event, &Rules::default());
    assert_eq!(
        analysis.verdict,
        Verdict::TmpfsFull as i32,
        "{}",
        analysis.reasoning
    );
    assert_eq!(analysis.recommended_limit_bytes, None);
    assert!(
        analysis.reasoning.contains("volume cache holds"),
        "{}",
        analysis.reasoning
    );
    std::fs::remove_file(&fill).expect("remove the tmpfs file");
    drop(tmpfs);
}

#[tokio::test]
async fn anonymous_growth_to_the_limit_shows_as_anon() {
    require_real_kernel!();
    let _serial = SERIAL.lock().await;
    let tree = ScratchTree::new(&unique("oomlens-breakdown"));
    let (_, dir, memcg) = limited_container(&tree);

    let mut reader = KmsgReader::open("/dev/kmsg", StartAt::End).expect("open /dev/kmsg");
    let (_, status) = tokio::task::spawn_blocking(move || run_hog(&dir))
        .await
        .expect("hog");
    assert!(!status.success());

    let event = event_of_kill_at(&mut reader, &memcg).await;
    let b = breakdown(&event);
    let json = oomlens_proto::json::event_to_json_line(&event);
    let anon = b.anon_bytes.expect("anon");
    assert!(anon > LIMIT - 8 * MIB, "anon {anon}: {json}");
    assert!(b.shmem_bytes.unwrap_or(0) < MIB, "{json}");
    // No layer but anon: the working-set curve decides, as before.
    let verdict = analyse(&event, &Rules::default()).verdict;
    assert!(
        ![
            Verdict::TmpfsFull,
            Verdict::KernelMemory,
            Verdict::PageCachePressure
        ]
        .iter()
        .any(|v| *v as i32 == verdict),
        "{verdict}"
    );
}

/// Pipes full of unread data: kernel memory, charged to the cgroup, that
/// no process's RSS shows (the kernel's `kmem: usage` line).
#[tokio::test]
async fn pipes_filled_to_the_limit_show_as_kernel_memory() {
    require_real_kernel!();
    let _serial = SERIAL.lock().await;
    let tree = ScratchTree::new(&unique("oomlens-breakdown"));
    let (_, dir, memcg) = limited_container(&tree);

    let mut reader = KmsgReader::open("/dev/kmsg", StartAt::End).expect("open /dev/kmsg");
    let hog = env!("CARGO_BIN_EXE_oomlens-memhog");
    let status = tokio::task::spawn_blocking(move || {
        Command::new(hog)
            .args(["--mode", "pipes", "--total-mib", "256", "--hold-secs", "5"])
            .arg("--cgroup")
            .arg(&dir)
            .stdout(std::process::Stdio::null())
            .status()
            .expect("spawn the hog")
    })
    .await
    .expect("hog");
    assert!(
        !status.success(),
        "the hog should be killed at the limit: {status:?}"
    );

    let event = event_of_kill_at(&mut reader, &memcg).await;
    let b = breakdown(&event);
    let json = oomlens_proto::json::event_to_json_line(&event);
    let kernel = b.kernel_bytes.expect("kernel");
    assert!(kernel > LIMIT / 2, "kernel {kernel}: {json}");
    assert!(b.anon_bytes.unwrap_or(0) < 8 * MIB, "{json}");
    let analysis = analyse(&event, &Rules::default());
    assert_eq!(
        analysis.verdict,
        Verdict::KernelMemory as i32,
        "{}: {json}",
        analysis.reasoning
    );
    eprintln!("kernel memory kill: {}", analysis.reasoning);
    let victim = event.victim.as_ref().expect("victim");
    assert!(
        victim.anon_rss_kb.unwrap_or(0) < 8 << 10,
        "the victim's RSS does not show it: {json}"
    );
}

/// The dirty page-cache kill captured here (`dd` to ext4 on a busy disk in
/// a 32Mi cgroup; see agent/tests/oom_fixtures.rs), judged: page cache held
/// the charge and most of it was dirty or under writeback, so the verdict
/// is page_cache_pressure, no limit is recommended, and the application's
/// heap (1.1Mi of anon) is not blamed.
#[test]
fn a_real_dirty_page_cache_kill_is_page_cache_pressure() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../agent/tests/fixtures/kmsg/linux-6.18-memcg-v1-dirty-page-cache.kmsg"
    );
    let text = std::fs::read_to_string(path).unwrap();
    let (reports, _) = oomlens_agent::logtext::reports_from_text(&text, 2026);
    assert_eq!(reports.len(), 1);
    let event = event_from_report(&reports[0], &oomlens_tests::test_node(), 0);
    let analysis = analyse(&event, &Rules::default());
    let json = oomlens_proto::json::event_to_json_line(&event);
    assert_eq!(
        analysis.verdict,
        Verdict::PageCachePressure as i32,
        "{}: {json}",
        analysis.reasoning
    );
    assert_eq!(analysis.recommended_limit_bytes, None, "{json}");
    for quoted in [
        "page cache held 30Mi of the 32Mi limit",
        "29Mi of it dirty or under writeback",
    ] {
        assert!(
            analysis.reasoning.contains(quoted),
            "{quoted}: {}",
            analysis.reasoning
        );
    }
}
