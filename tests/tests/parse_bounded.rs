//! `oomlens-agent parse` on a large log through a pipe: every kill in it is
//! found, and the process's peak memory does not grow with the input (a
//! 10 MB line, megabytes of NUL bytes as from `/dev/zero`, and 128 MiB of
//! ordinary lines). Runs anywhere; needs no root.

use std::io::Write as _;
use std::process::{Command, Stdio};
use std::time::Instant;

const REPORT: &str = "[  {T}.100000] worker invoked oom-killer: gfp_mask=0xcc0(GFP_KERNEL), order=0, oom_score_adj=0
[  {T}.100100] memory: usage 65536kB, limit 65536kB, failcnt 12
[  {T}.100200] oom-kill:constraint=CONSTRAINT_MEMCG,nodemask=(null),cpuset=/,mems_allowed=0,oom_memcg=/kubepods/burstable/pod8a1b7c6d-1111-2222-3333-444455556666/4f1c4f1c4f1c4f1c4f1c4f1c4f1c4f1c4f1c4f1c4f1c4f1c4f1c4f1c4f1c4f1c,task_memcg=/kubepods/burstable/pod8a1b7c6d-1111-2222-3333-444455556666/4f1c4f1c4f1c4f1c4f1c4f1c4f1c4f1c4f1c4f1c4f1c4f1c4f1c4f1c4f1c4f1c,task=worker,pid={P},uid=0
[  {T}.100300] Memory cgroup out of memory: Killed process {P} (worker) total-vm:70000kB, anon-rss:65000kB, file-rss:1000kB, shmem-rss:0kB, UID:0 pgtables:180kB oom_score_adj:0
";

/// Peak resident memory of a process so far, KiB.
fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        .expect("VmHWM")
}

#[test]
fn a_large_log_through_a_pipe_costs_bounded_memory() {
    let mut child = Command::new(oomlens_tests::agent_binary())
        .args(["parse", "--output", "json", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn parse");
    let pid = child.id();
    let mut stdin = child.stdin.take().expect("stdin");
    let started = Instant::now();
    let writer = std::thread::spawn(move || {
        let noise = "[  100.000000] eth0: renamed from veth1234567 and link is up, speed 1000 Mbps\n";
        let mut written = 0usize;
        let mut kills = 0u32;
        // A 10 MB line and 8 MB of NUL bytes first.
        stdin.write_all(&vec![b'x'; 10 << 20]).expect("write");
        stdin.write_all(b"\n").expect("write");
        stdin.write_all(&vec![0u8; 8 << 20]).expect("write");
        stdin.write_all(b"\n").expect("write");
        let mut chunk = String::with_capacity(1 << 20);
        while written < 128 << 20 {
            chunk.clear();
            while chunk.len() < (1 << 20) - 4096 {
                chunk.push_str(noise);
            }
            kills += 1;
            chunk.push_str(
                &REPORT
                    .replace("{T}", &(1000 + kills).to_string())
                    .replace("{P}", &(10_000 + kills).to_string()),
            );
            stdin.write_all(chunk.as_bytes()).expect("write");
            written += chunk.len();
        }
        (stdin, written, kills)
    });
    let stdout = child.stdout.take().expect("stdout");
    let reader = std::thread::spawn(move || {
        use std::io::BufRead as _;
        std::io::BufReader::new(stdout).lines().count()
    });
    let (stdin, written, kills) = writer.join().expect("writer");
    // Everything is written: the peak so far covers the whole stream but
    // the end.
    let peak = peak_rss_kib(pid);
    drop(stdin);
    let output = child.wait_with_output().expect("wait");
    let events = reader.join().expect("reader");
    let elapsed = started.elapsed();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert_eq!(events, kills as usize, "every kill found: {stderr}");
    assert!(stderr.contains("2 lines longer than 64 KiB were cut"), "{stderr}");
    eprintln!(
        "parsed {} MiB ({kills} kills) in {:.1} s ({:.0} MiB/s), peak RSS {} KiB",
        written >> 20,
        elapsed.as_secs_f64(),
        (written >> 20) as f64 / elapsed.as_secs_f64(),
        peak
    );
    assert!(
        peak < 64 * 1024,
        "peak RSS {peak} KiB for a {} MiB log",
        written >> 20
    );
}
