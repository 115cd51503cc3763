//! Why a kill happened, and what the limit should be: a pure function of
//! the event (its scope, its memory history and the kernel's numbers).
//!
//! The verdicts, in the order they are tried:
//! - `node_pressure`: the node (or its allocatable cgroup) ran out, not the
//!   container: raising the container's limit would not have helped.
//! - from what the cgroup was charged for at the kill (the event's
//!   breakdown), when one layer is at least half of it:
//!   `tmpfs_full` (shmem: a memory-backed volume or shared memory; no
//!   recommended limit, a restart does not free it), `kernel_memory`
//!   (slab, sockets, page tables, stacks), `page_cache_pressure` (page
//!   cache, with at least a quarter of it dirty or under writeback; no
//!   recommended limit, more memory is not the fix). An anon-dominated
//!   charge goes on.
//! - `pod_limit`: the pod's limit (not a container's) was hit and the
//!   containers' shares at the kill are known: the reasoning says which
//!   held what.
//! - `insufficient_data`: too few samples to say more than the kernel did.
//! - `spike`: the working set climbed from well below the limit to the
//!   limit within a few seconds.
//! - `leak_suspected`: steady growth across the whole history (a good
//!   straight-line fit with a clear upward slope).
//! - `limit_too_low`: the working set sat near the limit (a plateau) before
//!   the kill: the workload needs more than it is given.
//!
//! For container- and pod-limit kills the recommended limit is the peak
//! working set plus headroom, rounded up to a clean Mi/Gi value. Numbers
//! no machine has (a counter's "unlimited", a corrupt event) give no
//! recommendation rather than a wrong one.

use oomlens_common::kill_point::{kill_sample, working_set_at_kill};
use oomlens_proto::v1::{Analysis, Constraint, MemoryHistory, OomEvent, Scope, Verdict};

use oomlens_common::units::{human_bytes, quantity, saturating_u64};

const MIB: u64 = 1024 * 1024;
const GIB: u64 = 1024 * MIB;

pub use oomlens_common::limits::MAX_PLAUSIBLE_BYTES;

/// Tunables, with the defaults the collector uses.
#[derive(Debug, Clone, Copy)]
pub struct Rules {
    /// Headroom over the peak working set for the recommended limit.
    pub headroom: f64,
    /// Fewer samples than this: insufficient data.
    pub min_samples: usize,
    /// A climb from below `spike_from` of the limit to the limit within
    /// `spike_window_s` is a spike.
    pub spike_from: f64,
    pub spike_window_s: f64,
    /// Leak: history at least this long, fit at least this good, and a rise
    /// of at least `leak_min_rise` of the limit over it.
    pub leak_min_span_s: f64,
    pub leak_min_r2: f64,
    pub leak_min_rise: f64,
    /// Plateau: at least this long above 90 % of the limit.
    pub plateau_s: f64,
    /// A layer of the breakdown (anon, page cache, shmem, kernel) at least
    /// this share of the charge names the cause.
    pub layer_dominant: f64,
    /// Page cache pressure: at least this share of the page cache dirty or
    /// under writeback.
    pub unwritten_share: f64,
}

impl Default for Rules {
    fn default() -> Self {
        Self {
            headroom: 0.25,
            min_samples: 5,
            spike_from: 0.5,
            spike_window_s: 5.0,
            leak_min_span_s: 20.0,
            leak_min_r2: 0.9,
            leak_min_rise: 0.3,
            plateau_s: 3.0,
            layer_dominant: 0.5,
            unwritten_share: 0.25,
        }
    }
}

/// A working-set series: (seconds, bytes), oldest first.
fn series(history: &MemoryHistory) -> Vec<(f64, f64)> {
    let seconds = |t: &prost_types::Timestamp| t.seconds as f64 + f64::from(t.nanos) / 1e9;
    let mut points: Vec<(f64, f64)> = history
        .buckets
        .iter()
        .filter_map(|b| Some((seconds(b.time.as_ref()?), b.working_set_last_bytes as f64)))
        .collect();
    let first_sample = history
        .samples
        .iter()
        .find_map(|s| s.time.as_ref().map(seconds))
        .unwrap_or(f64::INFINITY);
    // Buckets summarise what is older than the samples; never overlap them.
    points.retain(|(t, _)| *t < first_sample);
    points.extend(
        history
            .samples
            .iter()
            .filter_map(|s| Some((seconds(s.time.as_ref()?), s.working_set_bytes? as f64))),
    );
    points.sort_by(|a, b| a.0.total_cmp(&b.0));
    points
}

/// Least-squares slope (bytes/s) and R² of a series.
fn linear_fit(points: &[(f64, f64)]) -> (f64, f64) {
    let n = points.len() as f64;
    let mean_t = points.iter().map(|p| p.0).sum::<f64>() / n;
    let mean_y = points.iter().map(|p| p.1).sum::<f64>() / n;
    let (mut stt, mut sty, mut syy) = (0.0, 0.0, 0.0);
    for (t, y) in points {
        stt += (t - mean_t).powi(2);
        sty += (t - mean_t) * (y - mean_y);
        syy += (y - mean_y).powi(2);
    }
    if stt == 0.0 || syy == 0.0 {
        return (0.0, 0.0);
    }
    let slope = sty / stt;
    (slope, (sty * sty) / (stt * syy))
}

/// Rounds up to a value people write in a manifest: multiples of 16Mi up
/// to 256Mi, 64Mi up to 1Gi, 256Mi up to 4Gi, 512Mi up to 16Gi, then 1Gi.
/// None when that is past `u64` (it once wrapped to 0).
pub fn clean_limit(bytes: u64) -> Option<u64> {
    let step = match bytes {
        b if b <= 256 * MIB => 16 * MIB,
        b if b <= GIB => 64 * MIB,
        b if b <= 4 * GIB => 256 * MIB,
        b if b <= 16 * GIB => 512 * MIB,
        _ => GIB,
    };
    bytes.div_ceil(step).max(1).checked_mul(step)
}

/// Kilobytes from the kernel's report as bytes; None past `u64`.
fn kb_bytes(kb: u64) -> Option<u64> {
    kb.checked_mul(1024)
}

/// The verdict and recommendation for `event`, and how what Kubernetes
/// shows compares with the kill.
pub fn analyse(event: &OomEvent, rules: &Rules) -> Analysis {
    let mut analysis = judge(event, rules);
    let (status_match, status_reasoning) = status::compare(event);
    analysis.status_match = status_match as i32;
    analysis.status_reasoning = status_reasoning;
    analysis
}

fn judge(event: &OomEvent, rules: &Rules) -> Analysis {
    let scope = Scope::try_from(event.scope).unwrap_or(Scope::Unknown);
    let constraint = Constraint::try_from(event.constraint).unwrap_or(Constraint::Unspecified);
    if matches!(scope, Scope::NodeOom | Scope::NodeAllocatable) || constraint == Constraint::Global {
        return node_pressure(event, scope);
    }
    let history = event.history.as_ref();
    let limit = history
        .and_then(|h| h.limit_bytes)
        .or_else(|| event.container.as_ref().and_then(|c| c.memory_limit_bytes))
        .or_else(|| {
            event
                .memcg_usage
                .as_ref()
                .and_then(|u| u.limit_kb)
                .and_then(kb_bytes)
        })
        // Past any machine's memory: no limit at all.
        .filter(|l| *l <= MAX_PLAUSIBLE_BYTES);
    let mut points = history.map(series).unwrap_or_default();
    let sampled_peak = history
        .and_then(|h| h.peak_working_set_bytes)
        .into_iter()
        .chain(points.iter().map(|p| saturating_u64(p.1)))
        .max();
    // The kernel's own number at the kill ends the curve: samples 100 ms
    // apart miss a climb that takes less (a real kill's 32Mi came in 86 ms
    // after a sample at 332Ki, which read as "no sudden climb").
    let at_kill = working_set_at_kill(event);
    if let Some(kill) = history.and_then(|h| kill_sample(event, h))
        && let (Some(t), Some(bytes)) = (kill.time, kill.working_set_bytes)
    {
        points.push((t.seconds as f64 + f64::from(t.nanos) / 1e9, bytes as f64));
    }
    let (peak, peak_what) = match (sampled_peak, at_kill) {
        (Some(sampled), Some(kill)) if kill > sampled => (Some(kill), PEAK_AT_KILL),
        (None, Some(kill)) => (Some(kill), PEAK_AT_KILL),
        (sampled, _) => (sampled, "peak working set"),
    };
    let by_layer = event.breakdown.as_ref().and_then(|b| {
        // The kernel's "memory: usage" line is of the limited cgroup.
        let charged_at_kill = (event.oom_memcg.as_deref() == Some(b.cgroup.as_str()))
            .then(|| event.memcg_usage.as_ref()?.usage_kb)
            .flatten()
            .map(|kb| kb.saturating_mul(1024));
        causes::layer_verdict(b, &event.memory_volumes, limit, charged_at_kill, rules)
    });
    // More memory is not the fix for these.
    let recommends = matches!(scope, Scope::ContainerLimit | Scope::PodLimit)
        && !matches!(
            by_layer.as_ref().map(|(v, _)| *v),
            Some(Verdict::TmpfsFull | Verdict::PageCachePressure)
        );
    let (verdict, reasoning) = by_layer
        .or_else(|| causes::pod_limit(event, scope, limit))
        .unwrap_or_else(|| classify(&points, limit, history, rules));
    let mut analysis = Analysis {
        verdict: verdict as i32,
        reasoning,
        recommended_limit_bytes: None,
        recommendation_reasoning: None,
        ..Analysis::default()
    };
    if recommends && let Some((peak, recommended)) = recommendation(peak, limit, rules) {
        let wanted = saturating_u64(peak as f64 * (1.0 + rules.headroom));
        let mut why = format!(
            "{peak_what} {} + {:.0}% headroom = {}, rounded up to {}",
            human_bytes(peak),
            rules.headroom * 100.0,
            human_bytes(wanted),
            quantity(recommended)
        );
        if let Some(limit) = limit {
            why.push_str(&format!("; the current limit is {}", quantity(limit)));
        }
        if verdict == Verdict::LeakSuspected {
            why.push_str("; a leak only dies later with a higher limit: fix the growth first");
        }
        analysis.recommended_limit_bytes = Some(recommended);
        analysis.recommendation_reasoning = Some(why);
    }
    analysis
}

/// "0.4 s" reads as nothing for a climb between two samples: under a
/// second in milliseconds.
fn duration_words(seconds: f64) -> String {
    if seconds < 1.0 {
        format!("{:.0} ms", (seconds * 1e3).max(1.0))
    } else {
        format!("{seconds:.1} s")
    }
}

const PEAK_AT_KILL: &str = "working set at the kill (the kernel's report)";

/// The peak and the limit to recommend, when both are believable: a
/// peak of nothing, or of more than any machine has, gives no advice.
fn recommendation(peak: Option<u64>, limit: Option<u64>, rules: &Rules) -> Option<(u64, u64)> {
    let peak = peak.filter(|p| (1..=MAX_PLAUSIBLE_BYTES).contains(p))?;
    let wanted = saturating_u64(peak as f64 * (1.0 + rules.headroom));
    // Above the current limit, or the advice changes nothing; `limit` is
    // at most MAX_PLAUSIBLE_BYTES, so `+ 1` cannot overflow.
    let floor = limit.map_or(0, |l| l + 1);
    let recommended = clean_limit(wanted.max(floor))?;
    (recommended <= MAX_PLAUSIBLE_BYTES).then_some((peak, recommended))
}

fn node_pressure(event: &OomEvent, scope: Scope) -> Analysis {
    let mut reasoning = match scope {
        Scope::NodeAllocatable => "the pods on this node together reached the node's allocatable memory; \
             the victim was chosen among all of them"
            .to_owned(),
        _ => "the whole node ran out of memory; the victim was chosen among all processes".to_owned(),
    };
    if let Some(node) = &event.node_memory {
        if let (Some(available), Some(total)) = (node.mem_available_bytes, node.mem_total_bytes) {
            reasoning.push_str(&format!(
                "; MemAvailable {} of {}",
                human_bytes(available),
                human_bytes(total)
            ));
        }
        if let Some(full) = node.pressure_full_avg10 {
            reasoning.push_str(&format!("; memory pressure full avg10 {full:.1}%"));
        }
    }
    reasoning.push_str(
        "; a higher container limit would not have prevented it: \
         look at requests (scheduling) and the node's reserved memory",
    );
    Analysis {
        verdict: Verdict::NodePressure as i32,
        reasoning,
        recommended_limit_bytes: None,
        recommendation_reasoning: None,
        ..Analysis::default()
    }
}

fn classify(
    points: &[(f64, f64)],
    limit: Option<u64>,
    history: Option<&MemoryHistory>,
    rules: &Rules,
) -> (Verdict, String) {
    let Some(limit) = limit.filter(|l| *l > 0) else {
        return (
            Verdict::InsufficientData,
            "no memory limit known for the killed cgroup".to_owned(),
        );
    };
    if points.len() < rules.min_samples {
        return (
            Verdict::InsufficientData,
            format!(
                "{} memory samples before the kill (at least {} needed); the cgroup may have \
                 started just before it died",
                points.len(),
                rules.min_samples
            ),
        );
    }
    let limit_f = limit as f64;
    let (last_t, last_y) = points[points.len() - 1];
    let span = last_t - points[0].0;
    // Spike: the last sample below `spike_from` of the limit is recent.
    if let Some(low) = points.iter().rposition(|p| p.1 < limit_f * rules.spike_from) {
        // Where the climb began: walk back while memory was still lower.
        let mut start = low;
        while start > 0 && points[start - 1].1 < points[start].1 {
            start -= 1;
        }
        let (low_t, low_y) = points[start];
        let climb_s = last_t - low_t;
        let climb_ok = last_t - points[low].0 <= rules.spike_window_s;
        if climb_ok && last_y >= limit_f * 0.8 {
            return (
                Verdict::Spike,
                format!(
                    "working set climbed from {} ({:.0}% of the {} limit) to {} in {}",
                    human_bytes(saturating_u64(low_y)),
                    low_y / limit_f * 100.0,
                    human_bytes(limit),
                    human_bytes(saturating_u64(last_y)),
                    duration_words(climb_s)
                ),
            );
        }
    }
    let above_90 = history.and_then(|h| h.seconds_above_90pct).unwrap_or(0.0);
    let (slope, r2) = linear_fit(points);
    let rise = last_y - points[0].1;
    if span >= rules.leak_min_span_s
        && r2 >= rules.leak_min_r2
        && slope > 0.0
        && rise >= limit_f * rules.leak_min_rise
    {
        return (
            Verdict::LeakSuspected,
            format!(
                "working set grew steadily by {} over {:.0} s ({}/s, straight-line fit R² {:.2}) \
                 until it reached the {} limit",
                human_bytes(saturating_u64(rise)),
                span,
                human_bytes(saturating_u64(slope)),
                r2,
                human_bytes(limit)
            ),
        );
    }
    if above_90 >= rules.plateau_s {
        return (
            Verdict::LimitTooLow,
            format!(
                "working set stayed above 90% of the {} limit for {:.1} s before the kill: \
                 the workload needs more memory than it is given",
                human_bytes(limit),
                above_90
            ),
        );
    }
    // No clear shape: the kill came at the end of ordinary growth.
    (
        Verdict::LimitTooLow,
        format!(
            "working set reached the {} limit after {:.0} s of history without a sudden climb or a \
             steady leak ({}/s overall)",
            human_bytes(limit),
            span,
            human_bytes(saturating_u64(slope.max(0.0)))
        ),
    )
}

mod causes;
pub mod status;
#[cfg(test)]
mod tests;
