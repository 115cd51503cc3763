//! The kernel's own numbers at a kill as the last point of the killed
//! cgroup's memory curve. Samples 100 ms apart miss a climb that takes
//! less: four real kills filled 32Mi between two samples at about 330Ki,
//! and the curve alone showed no climb at all.

use std::borrow::Cow;

use oomlens_proto::v1::{BreakdownSource, MemoryBreakdown, MemoryHistory, MemorySample, OomEvent};

/// The kill comes at most this long after the history's last sample
/// (the agent samples every 100 ms and keeps sampling a cgroup for a
/// while after its kill); later than that, the point is not believed.
const MAX_AFTER_LAST_SAMPLE_MS: i64 = 60_000;

/// Whether `path` names the cgroup the kernel reported as `oom_memcg`.
pub fn same_cgroup(path: &str, oom_memcg: Option<&str>) -> bool {
    let trim = |p: &str| p.trim_end_matches('/').to_owned();
    oom_memcg.is_some_and(|m| !path.is_empty() && trim(path) == trim(m))
}

/// The limited cgroup's breakdown from the kernel's report, if it printed
/// one for that cgroup.
fn reported_breakdown(event: &OomEvent) -> Option<&MemoryBreakdown> {
    event
        .breakdown
        .as_ref()
        .filter(|b| b.source == BreakdownSource::KernelReport as i32)
        .filter(|b| same_cgroup(&b.cgroup, event.oom_memcg.as_deref()))
}

/// The limited cgroup's usage at the kill (the report's `memory: usage`),
/// in bytes; None when absent or past any machine's memory.
fn usage_at_kill(event: &OomEvent) -> Option<u64> {
    event
        .memcg_usage
        .as_ref()?
        .usage_kb?
        .checked_mul(1024)
        .filter(|b| (1..=crate::limits::MAX_PLAUSIBLE_BYTES).contains(b))
}

/// The limited cgroup's working set at the kill: its usage less the
/// inactive page cache the kernel could have dropped.
pub fn working_set_at_kill(event: &OomEvent) -> Option<u64> {
    let inactive_file = reported_breakdown(event)
        .and_then(|b| b.inactive_file_bytes)
        .unwrap_or(0);
    Some(usage_at_kill(event)?.saturating_sub(inactive_file))
}

/// The kill as one more sample of `history`: when the history is of the
/// limited cgroup, the kernel gave its usage, and the kill came after the
/// last sample, within a minute. The layers come from the report's stats when it has them.
pub fn kill_sample(event: &OomEvent, history: &MemoryHistory) -> Option<MemorySample> {
    if !same_cgroup(&history.cgroup, event.oom_memcg.as_deref()) {
        return None;
    }
    let time = event.time?;
    // Just after the last sample: a kill time past the samples by more
    // than the agent's window (a clock jump, a corrupt event) would
    // squash the whole curve into the chart's first column.
    let last = history.samples.last()?.time?;
    let after_ms = (time.seconds - last.seconds)
        .saturating_mul(1000)
        .saturating_add(i64::from(time.nanos - last.nanos) / 1_000_000);
    if !(0..=MAX_AFTER_LAST_SAMPLE_MS).contains(&after_ms)
        || (time.seconds, time.nanos) <= (last.seconds, last.nanos)
    {
        return None;
    }
    let breakdown = reported_breakdown(event);
    let shmem = breakdown.and_then(|b| b.shmem_bytes);
    Some(MemorySample {
        time: Some(time),
        working_set_bytes: working_set_at_kill(event),
        usage_bytes: usage_at_kill(event),
        anon_bytes: breakdown.and_then(|b| b.anon_bytes),
        // A sample's file bytes count shmem too.
        file_bytes: breakdown
            .and_then(|b| b.page_cache_bytes)
            .map(|cache| cache.saturating_add(shmem.unwrap_or(0))),
        shmem_bytes: shmem,
        kernel_bytes: breakdown.and_then(|b| b.kernel_bytes),
        limit_bytes: history.limit_bytes,
        ..MemorySample::default()
    })
    .filter(|s| s.working_set_bytes.is_some())
}

/// `history` with the kill appended as its last sample when
/// [`kill_sample`] has one.
pub fn through_kill<'a>(event: &OomEvent, history: &'a MemoryHistory) -> Cow<'a, MemoryHistory> {
    match kill_sample(event, history) {
        Some(sample) => {
            let mut extended = history.clone();
            extended.samples.push(sample);
            Cow::Owned(extended)
        }
        None => Cow::Borrowed(history),
    }
}

#[cfg(test)]
mod tests {
    use oomlens_proto::v1::MemcgUsage;
    use prost_types::Timestamp;

    use super::*;

    fn sample(seconds: i64, working_set: u64) -> MemorySample {
        MemorySample {
            time: Some(Timestamp { seconds, nanos: 0 }),
            working_set_bytes: Some(working_set),
            ..MemorySample::default()
        }
    }

    fn kill(at: i64, usage_kb: u64, breakdown: Option<MemoryBreakdown>) -> (OomEvent, MemoryHistory) {
        let event = OomEvent {
            time: Some(Timestamp {
                seconds: at,
                nanos: 0,
            }),
            oom_memcg: Some("/kubepods/pod1/c1".into()),
            memcg_usage: Some(MemcgUsage {
                usage_kb: Some(usage_kb),
                ..MemcgUsage::default()
            }),
            breakdown,
            ..OomEvent::default()
        };
        let history = MemoryHistory {
            cgroup: "/kubepods/pod1/c1/".into(),
            samples: vec![sample(10, 1 << 20), sample(11, 1 << 20)],
            limit_bytes: Some(32 << 20),
            ..MemoryHistory::default()
        };
        (event, history)
    }

    #[test]
    fn the_kill_ends_the_curve_less_the_inactive_cache() {
        let breakdown = MemoryBreakdown {
            cgroup: "/kubepods/pod1/c1".into(),
            source: BreakdownSource::KernelReport as i32,
            anon_bytes: Some(24 << 20),
            page_cache_bytes: Some(8 << 20),
            inactive_file_bytes: Some(6 << 20),
            shmem_bytes: Some(0),
            ..MemoryBreakdown::default()
        };
        let (event, history) = kill(12, 32 * 1024, Some(breakdown));
        let extended = through_kill(&event, &history);
        let last = extended.samples.last().unwrap();
        assert_eq!(extended.samples.len(), 3);
        assert_eq!(last.working_set_bytes, Some(26 << 20));
        assert_eq!(last.usage_bytes, Some(32 << 20));
        assert_eq!(
            (last.anon_bytes, last.file_bytes),
            (Some(24 << 20), Some(8 << 20))
        );
    }

    #[test]
    fn nothing_is_added_for_another_cgroup_an_earlier_time_or_no_usage() {
        let (event, mut history) = kill(12, 32 * 1024, None);
        history.cgroup = "/kubepods/pod1".into();
        assert!(matches!(through_kill(&event, &history), Cow::Borrowed(_)));
        let (event, history) = kill(11, 32 * 1024, None);
        assert!(
            kill_sample(&event, &history).is_none(),
            "not after the last sample"
        );
        let (mut event, history) = kill(12, 32 * 1024, None);
        event.memcg_usage = None;
        assert!(kill_sample(&event, &history).is_none());
        // Without the report's stats: the usage, no layers.
        let (event, history) = kill(12, 32 * 1024, None);
        let sample = kill_sample(&event, &history).unwrap();
        assert_eq!(sample.working_set_bytes, Some(32 << 20));
        assert_eq!(sample.anon_bytes, None);
    }
}
