//! Arbitrary bytes through every parser the agent exposes to untrusted
//! input: the kmsg record parser, the saved-log line splitter and the OOM
//! report state machine, and event assembly.
#![no_main]

use libfuzzer_sys::fuzz_target;
use oomlens_agent::event::{NodeContext, event_from_report};
use oomlens_agent::kmsg::parse_record;
use oomlens_agent::logtext::reports_from_text;

fuzz_target!(|data: &[u8]| {
    for chunk in data.split(|&b| b == 0) {
        let _ = parse_record(chunk);
    }
    let text = String::from_utf8_lossy(data);
    let (reports, _) = reports_from_text(&text, 2024);
    let ctx = NodeContext::default();
    for (i, report) in reports.iter().enumerate() {
        let _ = event_from_report(report, &ctx, i as u64);
    }
});
