//! Throughput of the record and OOM parsers, in memory, on one core.
//!
//! `cargo bench -p oomlens-agent --bench parse_throughput`
//!
//! 1. Records per second through `parse_record` + `Parser::push` for a
//!    stream where 1 record in 10,000 belongs to an OOM report (the rest are
//!    ordinary kernel chatter, taken from this machine's own log shapes).
//! 2. Microseconds to parse one complete OOM report (the 103-record report
//!    captured from this machine's kernel).
//! 3. Saved-log text through `LogReader` (`oomlens-agent parse`): syslog
//!    lines with hosts, one in 10,000 in an OOM report, in MiB/s and
//!    lines/s.

use std::hint::black_box;
use std::time::Instant;

use oomlens_agent::kmsg::parse_record;
use oomlens_agent::logtext::{LogReader, ReadItem};
use oomlens_agent::oom::Parser;

const CHATTER: &[&str] = &[
    "6,{seq},{ts},-;IPv6: ADDRCONF(NETDEV_CHANGE): veth3f2a1b: link becomes ready",
    "6,{seq},{ts},-;cni0: port 3(veth3f2a1b) entered forwarding state",
    "4,{seq},{ts},-;EXT4-fs (sda1): mounted filesystem with ordered data mode. Quota mode: none.",
    "6,{seq},{ts},-;audit: type=1400 audit(1719309931.123:412): apparmor=\"STATUS\" operation=\"profile_load\"",
    "5,{seq},{ts},-;kauditd_printk_skb: 12 callbacks suppressed",
    "6,{seq},{ts},-;eth0: renamed from tmp8c1f2",
    "3,{seq},{ts},-;nfs: server 10.0.0.5 not responding, still trying",
];

fn render(template: &str, seq: u64) -> Vec<u8> {
    template
        .replace("{seq}", &seq.to_string())
        .replace("{ts}", &(seq * 1000).to_string())
        .into_bytes()
}

fn oom_report() -> Vec<Vec<u8>> {
    let text = include_str!("../tests/fixtures/kmsg/linux-6.18-memcg-v1.kmsg");
    text.lines().map(|l| l.as_bytes().to_vec()).collect()
}

fn feed(parser: &mut Parser, raw: &[u8]) -> usize {
    let record = parse_record(raw).expect("valid record");
    parser.push(&record.input_line());
    let mut reports = 0;
    while parser.next_report().is_some() {
        reports += 1;
    }
    reports
}

fn main() {
    // `OOMLENS_BENCH_ONLY=report` (or `stream`, `text`) runs one part, for
    // a profiler.
    let only = std::env::var("OOMLENS_BENCH_ONLY").ok();
    let runs = |part: &str| only.as_deref().is_none_or(|o| o == part);
    let report = oom_report();
    // 1 in 10,000 records belongs to an OOM report.
    let total = 2_000_000usize;
    let mut stream = Vec::with_capacity(total);
    let mut seq = 0u64;
    while stream.len() < total {
        let chatter = 10_000 * report.len() - report.len();
        for i in 0..chatter {
            stream.push(render(CHATTER[i % CHATTER.len()], seq));
            seq += 1;
            if stream.len() + report.len() >= total {
                break;
            }
        }
        stream.extend(report.iter().cloned());
        if stream.len() >= total {
            break;
        }
    }
    let stream: Vec<Vec<u8>> = stream.into_iter().take(total).collect();

    for round in 0..3 {
        if !runs("stream") {
            break;
        }
        let mut parser = Parser::new();
        let start = Instant::now();
        let mut reports = 0;
        for raw in &stream {
            reports += feed(&mut parser, black_box(raw));
        }
        parser.finish();
        while parser.next_report().is_some() {
            reports += 1;
        }
        let elapsed = start.elapsed();
        println!(
            "stream round {round}: {} records in {:.3} s = {:.0} records/s ({reports} reports)",
            stream.len(),
            elapsed.as_secs_f64(),
            stream.len() as f64 / elapsed.as_secs_f64()
        );
    }

    let iterations = if runs("report") { 20_000 } else { 1 };
    let start = Instant::now();
    for _ in 0..iterations {
        let mut parser = Parser::new();
        let mut reports = 0;
        for raw in &report {
            reports += feed(&mut parser, black_box(raw));
        }
        parser.flush_killed();
        while parser.next_report().is_some() {
            reports += 1;
        }
        assert_eq!(reports, 1);
    }
    let per_report = start.elapsed().as_secs_f64() / f64::from(iterations) * 1e6;
    println!(
        "one complete OOM report ({} records): {per_report:.2} µs",
        report.len()
    );

    if !runs("text") {
        return;
    }
    // The same stream as a saved syslog file, as `parse` reads it.
    let mut text = String::new();
    for raw in &stream {
        let record = parse_record(raw).expect("valid record");
        text.push_str("Jun 25 10:05:31 node-a kernel: [");
        text.push_str(&format!(
            "{:>5}.{:06}] ",
            record.timestamp_us / 1_000_000,
            record.timestamp_us % 1_000_000
        ));
        text.push_str(&record.message);
        text.push('\n');
    }
    for round in 0..3 {
        let start = Instant::now();
        let mut reader = LogReader::new(black_box(text.as_bytes()), 2024);
        let mut reports = 0;
        while let Some(item) = reader.next_item() {
            if let ReadItem::Report(_) = item {
                reports += 1;
            }
        }
        let elapsed = start.elapsed().as_secs_f64();
        println!(
            "saved log round {round}: {:.0} MiB in {elapsed:.3} s = {:.0} MiB/s, {:.0} lines/s ({reports} reports)",
            text.len() as f64 / 1_048_576.0,
            text.len() as f64 / 1_048_576.0 / elapsed,
            stream.len() as f64 / elapsed
        );
    }
}
