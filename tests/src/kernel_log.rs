//! Reading real kills back from the live kernel log, as the agent does.

use std::io::Read as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::Path;
use std::time::{Duration, Instant};

use oomlens_agent::kmsg::{KmsgItem, KmsgReader, parse_record};
use oomlens_agent::oom::{OomReport, Parser};

/// Reads the live log until a report satisfies `done` or `timeout` passes;
/// returns every report seen.
pub async fn reports_until(
    reader: &mut KmsgReader,
    parser: &mut Parser,
    timeout: Duration,
    done: impl Fn(&OomReport) -> bool,
) -> Vec<OomReport> {
    let deadline = Instant::now() + timeout;
    let mut reports = Vec::new();
    while Instant::now() < deadline {
        match tokio::time::timeout(Duration::from_millis(50), reader.next()).await {
            Ok(Ok(KmsgItem::Record(record))) => parser.push(&record.input_line()),
            Ok(Ok(_)) => {}
            Ok(Err(e)) => panic!("reading /dev/kmsg: {e}"),
            // A quiet log: reports that reached their kill go out.
            Err(_) => parser.flush_killed(),
        }
        while let Some(report) = parser.next_report() {
            let finished = done(&report);
            reports.push(report);
            if finished {
                return reports;
            }
        }
    }
    reports
}

/// The report of the kill at `memcg` (the limited cgroup), read from the
/// live log within `timeout`.
pub async fn kill_at(reader: &mut KmsgReader, memcg: &str, timeout: Duration) -> OomReport {
    let mut parser = Parser::new();
    let reports = reports_until(reader, &mut parser, timeout, |r| r.oom_memcg() == Some(memcg)).await;
    reports
        .into_iter()
        .find(|r| r.oom_memcg() == Some(memcg))
        .unwrap_or_else(|| panic!("no kill at {memcg} in the kernel log"))
}

/// The kernel rate-limits OOM reports to 10 per 5 s, counted in windows
/// that open with the first report after the last window ended. A storm
/// that starts inside a window opened by an earlier test's kills may
/// straddle its end and be reported in full. Waits until the window that
/// the last OOM report in the log opened has surely ended, so the next
/// report opens a fresh one; returns how long it waited.
pub fn wait_for_a_fresh_oom_report_window() -> Duration {
    const WINDOW_US: i64 = 5_000_000;
    const MARGIN_US: i64 = 300_000;
    let kmsg = Path::new("/dev/kmsg");
    let offset_us = oomlens_agent::clock::log_clock_offset_us(kmsg).expect("the kernel log's clock");
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NONBLOCK)
        .open(kmsg)
        .expect("open /dev/kmsg");
    let mut last_report_us = None;
    let mut buf = vec![0u8; 8192];
    loop {
        match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                if let Ok(record) = parse_record(&buf[..n])
                    && record.message.contains("invoked oom-killer")
                {
                    last_report_us = Some(record.timestamp_us);
                }
            }
            // Overwritten records: reading goes on from the oldest kept.
            Err(e) if e.raw_os_error() == Some(nix::libc::EPIPE) => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
            Err(e) => panic!("reading /dev/kmsg: {e}"),
        }
    }
    let Some(last_us) = last_report_us.and_then(|us| i64::try_from(us).ok()) else {
        return Duration::ZERO;
    };
    let now_us = i64::try_from(oomlens_agent::clock::monotonic_us()).expect("uptime") + offset_us;
    let wait_us = last_us + WINDOW_US + MARGIN_US - now_us;
    let wait = Duration::from_micros(u64::try_from(wait_us).unwrap_or(0));
    std::thread::sleep(wait);
    wait
}
