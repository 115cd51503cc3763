//! A memory hog for tests: joins a cgroup, then allocates (and touches)
//! memory at a fixed rate, prints when it starts and stops growing, and
//! holds its memory until killed or its hold time ends.
//!
//! `oomlens-memhog --cgroup DIR --rate-mib 20 --total-mib 100 --hold-secs 2`
//!
//! `--mode pipes` fills pipes instead (64 KiB of unread data in each):
//! kernel memory charged to the cgroup that no process's RSS shows.
//!
//! `--mode stream` is a busy neighbour for benchmarks: it writes through
//! `--total-mib` (more than the last-level cache) a cache line at a time,
//! over and over, for `--hold-secs`.

use std::io::Write as _;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

fn now_ms() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis())
}

fn main() {
    let mut cgroup = None;
    let mut rate_mib = 20.0f64;
    let mut total_mib = 100u64;
    let mut hold_secs = 1.0f64;
    let mut mode = String::from("grow");
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--cgroup" => cgroup = Some(value),
            "--rate-mib" => rate_mib = value.parse().expect("--rate-mib"),
            "--total-mib" => total_mib = value.parse().expect("--total-mib"),
            "--hold-secs" => hold_secs = value.parse().expect("--hold-secs"),
            "--mode" => mode = value,
            other => panic!("unknown flag {other}"),
        }
    }
    if let Some(dir) = cgroup {
        std::fs::write(format!("{dir}/cgroup.procs"), std::process::id().to_string())
            .unwrap_or_else(|e| panic!("joining {dir}: {e}"));
    }
    let mut out = std::io::stdout();
    writeln!(out, "started {}", now_ms()).expect("stdout");
    out.flush().expect("stdout");

    if mode == "stream" {
        stream(total_mib, Duration::from_secs_f64(hold_secs));
        return;
    }
    if mode == "pipes" {
        fill_pipes(total_mib);
        writeln!(out, "grown {}", now_ms()).expect("stdout");
        out.flush().expect("stdout");
        std::thread::sleep(Duration::from_secs_f64(hold_secs));
        return;
    }
    // 1 MiB chunks, each page written so it is really resident.
    const CHUNK: usize = 1 << 20;
    let start = Instant::now();
    let mut held: Vec<Vec<u8>> = Vec::new();
    for i in 0..total_mib {
        let due = Duration::from_secs_f64(i as f64 / rate_mib);
        if let Some(wait) = due.checked_sub(start.elapsed()) {
            std::thread::sleep(wait);
        }
        let mut chunk = vec![0u8; CHUNK];
        for page in chunk.chunks_mut(4096) {
            page[0] = 1;
        }
        held.push(chunk);
    }
    writeln!(out, "grown {}", now_ms()).expect("stdout");
    out.flush().expect("stdout");
    std::thread::sleep(Duration::from_secs_f64(hold_secs));
    std::hint::black_box(&held);
}

/// Fills pipes with 64 KiB each, kept open and unread, until `total_mib`
/// is held in them (or the kernel kills the process).
fn fill_pipes(total_mib: u64) {
    use nix::sys::resource::{Resource, setrlimit};
    let wanted_pipes = total_mib * 16 + 64;
    setrlimit(Resource::RLIMIT_NOFILE, wanted_pipes * 2, wanted_pipes * 2).expect("raise RLIMIT_NOFILE");
    let block = vec![b'x'; 64 << 10];
    let mut held = Vec::new();
    let mut written = 0u64;
    while written < total_mib << 20 {
        let (reader, writer) = nix::unistd::pipe2(nix::fcntl::OFlag::O_NONBLOCK).expect("pipe2");
        loop {
            match nix::unistd::write(&writer, &block) {
                Ok(n) => written += n as u64,
                Err(nix::errno::Errno::EAGAIN) => break,
                Err(e) => panic!("write to a pipe: {e}"),
            }
        }
        held.push((reader, writer));
    }
    std::hint::black_box(&held);
}

/// Writes through `total_mib` one cache line at a time until `hold` ends:
/// keeps the last-level cache full of its own lines.
fn stream(total_mib: u64, hold: Duration) {
    let len = usize::try_from(total_mib << 20).expect("a buffer that fits");
    let mut buffer = vec![0u8; len];
    let start = Instant::now();
    while start.elapsed() < hold {
        for at in (0..len).step_by(64) {
            buffer[at] = buffer[at].wrapping_add(1);
        }
        std::hint::black_box(&buffer);
    }
}
