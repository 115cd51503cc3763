//! The spool's unit tests: reopening, corruption, thinning, private files.
use super::*;
use oomlens_proto::v1::{MemoryHistory, MemorySample};

fn event(id: &str, samples: usize) -> OomEvent {
    OomEvent {
        id: id.into(),
        history: Some(MemoryHistory {
            cgroup: "/kubepods/pod1/c1".into(),
            samples: (0..samples)
                .map(|i| MemorySample {
                    working_set_bytes: Some(i as u64 * 4096),
                    usage_bytes: Some(i as u64 * 4096 + 1),
                    ..MemorySample::default()
                })
                .collect(),
            ..MemoryHistory::default()
        }),
        ..OomEvent::default()
    }
}

#[test]
fn events_survive_a_reopen_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let mut spool = Spool::open(dir.path(), 1 << 20, SpoolMetrics::default()).unwrap();
    let a = spool.append(&event("a", 10)).unwrap();
    let b = spool.append(&event("b", 10)).unwrap();
    spool.remove(a).unwrap();
    drop(spool);
    let mut spool = Spool::open(dir.path(), 1 << 20, SpoolMetrics::default()).unwrap();
    assert_eq!(spool.pending(), vec![(b, "b".to_owned())]);
    assert_eq!(spool.read(b).unwrap().unwrap().id, "b");
    // New keys continue after the old ones.
    assert!(spool.append(&event("c", 1)).unwrap() > b);
}

#[test]
fn a_spool_that_cannot_be_created_yet_is_created_at_a_later_write() {
    let root = tempfile::tempdir().unwrap();
    let parent = root.path().join("state");
    fs::write(&parent, b"a file where the directory goes").unwrap();
    let mut spool = Spool::open(&parent.join("spool"), 1 << 20, SpoolMetrics::default()).unwrap();
    assert!(spool.is_empty());
    assert!(spool.append(&event("a", 1)).is_err());
    fs::remove_file(&parent).unwrap();
    let key = spool.append(&event("a", 1)).unwrap();
    assert_eq!(spool.pending(), vec![(key, "a".to_owned())]);
}

#[test]
fn a_corrupt_file_is_quarantined_and_the_rest_kept() {
    let dir = tempfile::tempdir().unwrap();
    let mut spool = Spool::open(dir.path(), 1 << 20, SpoolMetrics::default()).unwrap();
    let a = spool.append(&event("a", 10)).unwrap();
    let b = spool.append(&event("b", 10)).unwrap();
    drop(spool);
    // Flip a byte in the body of the first, truncate nothing else.
    let path = dir.path().join(format!("{a:020}.event"));
    let mut bytes = fs::read(&path).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    fs::write(&path, bytes).unwrap();
    fs::write(dir.path().join(".tmp-00000000000000000009"), b"half").unwrap();
    let spool = Spool::open(dir.path(), 1 << 20, SpoolMetrics::default()).unwrap();
    assert_eq!(spool.pending(), vec![(b, "b".to_owned())]);
    assert_eq!(spool.stats().corrupt, 1);
    assert!(dir.path().join("corrupt").join(format!("{a:020}.event")).exists());
    assert!(!dir.path().join(".tmp-00000000000000000009").exists());
    let error = decode_file(b"OOMLSPL1\x05\0\0\0\0\0\0\0ab").unwrap_err();
    assert!(error.contains("truncated"), "{error}");
}

/// A FIFO named like a spool file once hung the agent's start (a
/// plain open of a FIFO waits for a writer).
#[test]
fn a_fifo_or_link_in_the_spool_is_skipped_without_blocking() {
    let dir = tempfile::tempdir().unwrap();
    let mut spool = Spool::open(dir.path(), 1 << 20, SpoolMetrics::default()).unwrap();
    let a = spool.append(&event("a", 10)).unwrap();
    drop(spool);
    let fifo = dir.path().join(format!("{:020}.event", a + 1));
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let link = dir.path().join(format!("{:020}.event", a + 2));
    std::os::unix::fs::symlink(dir.path().join(format!("{a:020}.event")), &link).unwrap();
    let stale_fifo = dir.path().join(".tmp-00000000000000000099");
    nix::unistd::mkfifo(&stale_fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    // On another thread: a hang fails the test instead of wedging it.
    let path = dir.path().to_owned();
    let (done, opened) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ =
            done.send(Spool::open(&path, 1 << 20, SpoolMetrics::default()).map(|s| (s.pending(), s.next)));
    });
    let (pending, next) = opened
        .recv_timeout(std::time::Duration::from_secs(10))
        .expect("the spool opened without blocking on the FIFO")
        .unwrap();
    assert_eq!(pending, vec![(a, "a".to_owned())]);
    assert!(next > a + 2, "the FIFO's and the link's numbers are not reused");
    assert!(fifo.exists() && link.exists(), "left for the operator to look at");
    assert!(!stale_fifo.exists());
    // Read directly, a FIFO is an error, not a wait.
    let error = read_regular(&fifo).unwrap_err();
    assert_eq!(error.kind(), std::io::ErrorKind::InvalidData);
}

#[test]
fn the_spool_is_private_to_the_agent() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().unwrap();
    let spool_dir = dir.path().join("spool");
    // Made by an older version with the default mode.
    fs::create_dir(&spool_dir).unwrap();
    fs::set_permissions(&spool_dir, fs::Permissions::from_mode(0o755)).unwrap();
    let mut spool = Spool::open(&spool_dir, 1 << 20, SpoolMetrics::default()).unwrap();
    let key = spool.append(&event("a", 10)).unwrap();
    let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&spool_dir), 0o700);
    assert_eq!(mode(&spool.path(key)), 0o600);
    spool.reject(key);
    assert_eq!(mode(&spool_dir.join("rejected")), 0o700);
    let fresh = dir.path().join("fresh/spool");
    Spool::open(&fresh, 1 << 20, SpoolMetrics::default()).unwrap();
    assert_eq!(mode(&fresh), 0o700);
}

#[test]
fn a_full_spool_thins_histories_before_dropping_events() {
    let dir = tempfile::tempdir().unwrap();
    let one = encode_file(&event("x", 400)).len() as u64;
    // Room for two full events, not three.
    let mut spool = Spool::open(dir.path(), one * 2 + one / 2, SpoolMetrics::default()).unwrap();
    let a = spool.append(&event("a", 400)).unwrap();
    spool.append(&event("b", 400)).unwrap();
    spool.append(&event("c", 400)).unwrap();
    let stats = spool.stats();
    assert_eq!(stats.events, 3, "{stats:?}");
    assert_eq!(stats.dropped, 0);
    assert!(stats.thinned >= 1);
    assert!(stats.bytes <= one * 2 + one / 2);
    // The oldest kept its newest sample.
    let thinned = spool.read(a).unwrap().unwrap();
    let samples = &thinned.history.unwrap().samples;
    assert!(samples.len() < 400);
    assert_eq!(samples.last().unwrap().working_set_bytes, Some(399 * 4096));
    // With no room even for thinned events, the oldest go, counted.
    let mut tiny = Spool::open(&dir.path().join("tiny"), one, SpoolMetrics::default()).unwrap();
    for id in ["a", "b", "c"] {
        tiny.append(&event(id, 400)).unwrap();
    }
    assert!(tiny.stats().dropped >= 1);
    assert_eq!(tiny.pending().last().unwrap().1, "c");
}
