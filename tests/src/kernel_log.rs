//! Reading real kills back from the live kernel log, as the agent does.

use std::time::{Duration, Instant};

use oomlens_agent::kmsg::{KmsgItem, KmsgReader};
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
