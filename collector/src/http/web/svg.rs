//! Charts as inline SVG, drawn on the server: no script, no external
//! asset. Colours come from classes in app.css (light and dark); every
//! chart carries its numbers in an `aria-label` and the page repeats them
//! in text. Pure.

use std::fmt::Write as _;

use oomlens_common::render::{LAYER_NAMES, sample_layers};
use oomlens_common::units::{human_bytes, saturating_u64};
use oomlens_proto::v1::MemoryHistory;

use super::html::escape;

fn millis(t: Option<&prost_types::Timestamp>) -> Option<i64> {
    t.map(|t| t.seconds.saturating_mul(1000) + i64::from(t.nanos / 1_000_000))
}

/// (ms since the first sample, working set, usage) of the full-rate samples.
fn points(history: &MemoryHistory) -> Vec<(i64, u64, Option<u64>)> {
    let start = history.samples.iter().find_map(|s| millis(s.time.as_ref()));
    history
        .samples
        .iter()
        .filter_map(|s| {
            let t = millis(s.time.as_ref())? - start?;
            Some((t, s.working_set_bytes?, s.usage_bytes))
        })
        .collect()
}

/// The top of the y scale: the limit or the highest value, whichever is
/// larger, with a little room above.
fn scale(limit: Option<u64>, values: impl Iterator<Item = u64>) -> f64 {
    let high = values.chain(limit).max().unwrap_or(1).max(1);
    high as f64 * 1.05
}

/// `x,y x,y …` for a polyline's or polygon's `points`.
fn point_list(points: &[(f64, f64)]) -> String {
    let mut list = String::with_capacity(points.len() * 12);
    for (i, (x, y)) in points.iter().enumerate() {
        if i > 0 {
            list.push(' ');
        }
        tenths(&mut list, *x);
        list.push(',');
        tenths(&mut list, *y);
    }
    list
}

/// `value` to one decimal, as `{:.1}` but through integers: the kill
/// list draws 50 sparklines of 600 points, and float formatting with a
/// precision was a third of its time.
fn tenths(out: &mut String, value: f64) {
    // Far beyond any coordinate drawn; not finite (no data) draws as 0.
    let scaled = if value.is_finite() {
        (value * 10.0).round().clamp(-1e15, 1e15)
    } else {
        0.0
    };
    #[allow(clippy::cast_possible_truncation)] // clamped above
    let scaled = scaled as i64;
    if scaled < 0 {
        out.push('-');
    }
    let magnitude = scaled.unsigned_abs();
    let _ = write!(out, "{}.{}", magnitude / 10, magnitude % 10);
}

fn polyline(class: &str, points: &[(f64, f64)]) -> String {
    format!("<polyline class=\"{class}\" points=\"{}\"/>", point_list(points))
}

/// The plot area the two big charts share: bytes up (0 to `top`), time
/// across (0 to `span` ms), labelled bytes on the left.
struct Frame {
    width: f64,
    height: f64,
    top: f64,
    span: f64,
}

impl Frame {
    const LEFT: f64 = 64.0;
    const RIGHT: f64 = 8.0;
    const BOTTOM: f64 = 24.0;
    const TOP: f64 = 8.0;

    fn x(&self, t: i64) -> f64 {
        Self::LEFT + t as f64 / self.span * (self.width - Self::LEFT - Self::RIGHT)
    }

    fn y(&self, bytes: u64) -> f64 {
        let plot = self.height - Self::BOTTOM - Self::TOP;
        Self::TOP + plot - bytes as f64 / self.top * plot
    }

    /// Gridlines labelled at 0, a half and the whole of the scale.
    fn grid(&self, svg: &mut String) {
        for fraction in [0.0, 0.5, 1.0 / 1.05] {
            let bytes = saturating_u64(self.top * fraction);
            let gy = self.y(bytes);
            let _ = write!(
                svg,
                "<line class=\"grid\" x1=\"{}\" y1=\"{gy:.1}\" x2=\"{:.1}\" y2=\"{gy:.1}\"/>\
                 <text class=\"axis\" x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
                Self::LEFT,
                self.width - Self::RIGHT,
                Self::LEFT - 6.0,
                gy + 4.0,
                human_bytes(bytes)
            );
        }
    }

    /// The limit as a dashed line across, when there is one.
    fn limit(&self, svg: &mut String, limit: Option<u64>) {
        if let Some(limit) = limit {
            let ly = self.y(limit);
            let _ = write!(
                svg,
                "<line class=\"limit\" x1=\"{}\" y1=\"{ly:.1}\" x2=\"{:.1}\" y2=\"{ly:.1}\"/>",
                Self::LEFT,
                self.width - Self::RIGHT
            );
        }
    }
}

/// A small line of the working set before the kill, for the kill list;
/// empty when the event has no samples.
pub(super) fn sparkline(history: Option<&MemoryHistory>, limit: Option<u64>) -> String {
    const W: f64 = 120.0;
    const H: f64 = 24.0;
    let Some(history) = history else {
        return String::new();
    };
    let points = points(history);
    let (Some(first), Some(last)) = (points.first(), points.last()) else {
        return String::new();
    };
    let span = (last.0 - first.0).max(1) as f64;
    let top = scale(limit, points.iter().map(|p| p.1));
    let xy: Vec<(f64, f64)> = points
        .iter()
        .map(|(t, ws, _)| (*t as f64 / span * W, H - *ws as f64 / top * H))
        .collect();
    let peak = points.iter().map(|p| p.1).max().unwrap_or(0);
    let mut label = format!(
        "working set {} to {}, peak {}",
        human_bytes(first.1),
        human_bytes(last.1),
        human_bytes(peak)
    );
    let mut limit_line = String::new();
    if let Some(limit) = limit {
        let y = H - limit as f64 / top * H;
        let _ = write!(
            limit_line,
            "<line class=\"limit\" x1=\"0\" y1=\"{y:.1}\" x2=\"{W}\" y2=\"{y:.1}\"/>"
        );
        let _ = write!(label, ", limit {}", human_bytes(limit));
    }
    format!(
        "<svg class=\"spark\" viewBox=\"0 0 {W} {H}\" width=\"{W}\" height=\"{H}\" role=\"img\" aria-label=\"{}\">{limit_line}{}</svg>",
        escape(&label),
        polyline("ws", &xy)
    )
}

/// The memory before the kill: working set and usage over the full-rate
/// samples, the limit as a line, bytes on the y axis and seconds before the
/// kill on the x axis. None without samples.
pub(super) fn memory_chart(history: &MemoryHistory, limit: Option<u64>) -> Option<String> {
    const W: f64 = 720.0;
    const H: f64 = 240.0;
    let points = points(history);
    let last = points.last()?;
    let span = last.0.max(1) as f64;
    let frame = Frame {
        width: W,
        height: H,
        top: scale(limit, points.iter().flat_map(|p| [Some(p.1), p.2]).flatten()),
        span,
    };
    let (x, y) = (|t| frame.x(t), |bytes| frame.y(bytes));
    let mut svg = format!(
        "<svg class=\"chart\" viewBox=\"0 0 {W} {H}\" role=\"img\" aria-label=\"{}\">",
        escape(&chart_label(history, limit, &points))
    );
    frame.grid(&mut svg);
    let seconds = span / 1000.0;
    for half in [0, 1, 2] {
        let t = last.0 * half / 2;
        let before = seconds - seconds * f64::from(u8::try_from(half).unwrap_or(0)) / 2.0;
        let _ = write!(
            svg,
            "<text class=\"axis\" x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>",
            x(t),
            H - 6.0,
            if before < 0.05 {
                "kill".to_owned()
            } else {
                format!("-{before:.0}s")
            }
        );
    }
    frame.limit(&mut svg, limit);
    let usage: Vec<(f64, f64)> = points
        .iter()
        .filter_map(|(t, _, u)| Some((x(*t), y((*u)?))))
        .collect();
    if !usage.is_empty() {
        svg.push_str(&polyline("usage", &usage));
    }
    let ws: Vec<(f64, f64)> = points.iter().map(|(t, w, _)| (x(*t), y(*w))).collect();
    svg.push_str(&polyline("ws", &ws));
    svg.push_str("</svg>");
    Some(svg)
}

fn chart_label(history: &MemoryHistory, limit: Option<u64>, points: &[(i64, u64, Option<u64>)]) -> String {
    // The samples' highest may be the kernel's own at the kill, above the
    // history's recorded peak.
    let peak = history
        .peak_working_set_bytes
        .into_iter()
        .chain(points.iter().map(|p| p.1))
        .max()
        .unwrap_or(0);
    let seconds = points.last().map_or(0, |p| p.0) / 1000;
    let mut label = format!(
        "Working set over the {seconds} s before the kill ({} samples), peak {}",
        points.len(),
        human_bytes(peak)
    );
    if let Some(limit) = limit {
        let _ = write!(label, ", limit {}", human_bytes(limit));
    }
    label
}

/// What the memory held before the kill, layer on layer (anon, kernel,
/// shmem, page cache) over the samples that carry `memory.stat`; None
/// with fewer than two of them.
pub(super) fn layers_chart(history: &MemoryHistory, limit: Option<u64>) -> Option<String> {
    const W: f64 = 720.0;
    const H: f64 = 200.0;
    let start = history.samples.iter().find_map(|s| millis(s.time.as_ref()))?;
    let points: Vec<(i64, [u64; 4])> = history
        .samples
        .iter()
        .filter_map(|s| Some((millis(s.time.as_ref())? - start, sample_layers(s)?)))
        .collect();
    if points.len() < 2 {
        return None;
    }
    let frame = Frame {
        width: W,
        height: H,
        top: scale(limit, points.iter().map(|(_, l)| l.iter().sum::<u64>())),
        span: points.last().map_or(1, |p| p.0).max(1) as f64,
    };
    let (x, y) = (|t| frame.x(t), |bytes| frame.y(bytes));
    let last = points.last().map(|(_, l)| *l).unwrap_or_default();
    let label = LAYER_NAMES
        .iter()
        .zip(last)
        .map(|(name, bytes)| format!("{name} {}", human_bytes(bytes)))
        .collect::<Vec<_>>()
        .join(", ");
    let mut svg = format!(
        "<svg class=\"chart layers\" viewBox=\"0 0 {W} {H}\" role=\"img\" aria-label=\"{}\">",
        escape(&format!(
            "What the memory held at the last sample before the kill: {label}"
        ))
    );
    frame.grid(&mut svg);
    // Each layer: its upper edge left to right, its lower edge back.
    for (layer, class) in ["anon", "kernel", "shmem", "cache"].iter().enumerate() {
        let below = |l: &[u64; 4]| l[..layer].iter().sum::<u64>();
        let mut outline: Vec<(f64, f64)> = points
            .iter()
            .map(|(t, l)| (x(*t), y(below(l) + l[layer])))
            .collect();
        outline.extend(points.iter().rev().map(|(t, l)| (x(*t), y(below(l)))));
        let _ = write!(
            svg,
            "<polygon class=\"layer {class}\" points=\"{}\"/>",
            point_list(&outline)
        );
    }
    frame.limit(&mut svg, limit);
    svg.push_str("</svg>");
    Some(svg)
}

/// Horizontal bars of counts, largest first as given: (label, count).
pub(super) fn bars(rows: &[(String, u64)]) -> String {
    const ROW: f64 = 22.0;
    const W: f64 = 640.0;
    const LABEL: f64 = 220.0;
    let most = rows.iter().map(|r| r.1).max().unwrap_or(1).max(1) as f64;
    let height = ROW * rows.len() as f64 + 4.0;
    let mut svg = format!(
        "<svg class=\"bars\" viewBox=\"0 0 {W} {height}\" role=\"img\" aria-label=\"{}\">",
        escape(
            &rows
                .iter()
                .map(|(label, count)| format!("{label}: {count}"))
                .collect::<Vec<_>>()
                .join(", ")
        )
    );
    for (i, (label, count)) in rows.iter().enumerate() {
        let top = i as f64 * ROW + 2.0;
        let width = (W - LABEL - 48.0) * *count as f64 / most;
        let _ = write!(
            svg,
            "<text class=\"axis\" x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>\
             <rect class=\"bar\" x=\"{LABEL}\" y=\"{top:.1}\" width=\"{width:.1}\" height=\"{:.1}\"/>\
             <text class=\"axis\" x=\"{:.1}\" y=\"{:.1}\">{count}</text>",
            LABEL - 6.0,
            top + 15.0,
            escape(label),
            ROW - 6.0,
            LABEL + width + 4.0,
            top + 15.0
        );
    }
    svg.push_str("</svg>");
    svg
}

/// Kills over time, one strip per group: a column per interval, all
/// strips on one scale. The counts are also in the label, for screen
/// readers, and in the table beside it.
pub(super) fn timeline(rows: &[(String, Vec<u64>)], from: &str, to: &str) -> String {
    const ROW: f64 = 26.0;
    const W: f64 = 640.0;
    const LABEL: f64 = 160.0;
    let buckets = rows.iter().map(|r| r.1.len()).max().unwrap_or(0).max(1);
    let most = rows
        .iter()
        .flat_map(|r| r.1.iter().copied())
        .max()
        .unwrap_or(1)
        .max(1) as f64;
    let height = ROW * rows.len() as f64 + 18.0;
    let step = (W - LABEL - 8.0) / buckets as f64;
    let label = rows
        .iter()
        .map(|(name, counts)| {
            format!(
                "{name}: {}",
                counts.iter().map(u64::to_string).collect::<Vec<_>>().join(" ")
            )
        })
        .collect::<Vec<_>>()
        .join("; ");
    let mut svg = format!(
        "<svg class=\"timeline\" viewBox=\"0 0 {W} {height}\" role=\"img\" aria-label=\"{}\">",
        escape(&format!("kills per interval from {from} to {to}: {label}"))
    );
    for (i, (name, counts)) in rows.iter().enumerate() {
        let base = i as f64 * ROW + ROW - 4.0;
        let _ = write!(
            svg,
            "<text class=\"axis\" x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
            LABEL - 6.0,
            base - 4.0,
            escape(name)
        );
        for (j, &count) in counts.iter().enumerate().filter(|(_, c)| **c > 0) {
            let h = (ROW - 6.0) * count as f64 / most;
            let _ = write!(
                svg,
                "<rect class=\"cell\" x=\"{:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{h:.1}\"><title>{count}</title></rect>",
                LABEL + j as f64 * step,
                base - h,
                (step - 1.0).max(1.0)
            );
        }
    }
    let axis = rows.len() as f64 * ROW + 14.0;
    let _ = write!(
        svg,
        "<text class=\"axis\" x=\"{LABEL}\" y=\"{axis:.1}\">{}</text>\
         <text class=\"axis\" x=\"{:.1}\" y=\"{axis:.1}\" text-anchor=\"end\">{}</text></svg>",
        escape(from),
        W - 8.0,
        escape(to)
    );
    svg
}

#[cfg(test)]
mod tests {
    use super::*;
    use oomlens_proto::v1::MemorySample;
    use prost_types::Timestamp;

    #[test]
    fn coordinates_are_written_as_format_writes_them_to_one_decimal() {
        for i in -20_000..20_000 {
            let value = f64::from(i) * 0.0731 + 0.003;
            // Away from ties, where the two may round either way.
            if ((value * 10.0).fract().abs() - 0.5).abs() < 1e-6 {
                continue;
            }
            let mut ours = String::new();
            tenths(&mut ours, value);
            let theirs = format!("{value:.1}");
            assert_eq!(
                ours,
                theirs
                    .strip_prefix("-0.0")
                    .map_or(theirs.clone(), |_| "0.0".into()),
                "{value}"
            );
        }
        let mut odd = String::new();
        tenths(&mut odd, f64::NAN);
        assert_eq!(odd, "0.0");
        assert_eq!(point_list(&[(1.25, 30.0), (640.06, 0.0)]).split(' ').count(), 2);
    }

    fn history(n: usize) -> MemoryHistory {
        MemoryHistory {
            samples: (0..n)
                .map(|i| MemorySample {
                    time: Some(Timestamp {
                        seconds: 1_000 + i64::try_from(i / 10).unwrap(),
                        nanos: i32::try_from(i % 10).unwrap() * 100_000_000,
                    }),
                    working_set_bytes: Some((1u64 << 20) * (i as u64 + 1) / n as u64),
                    usage_bytes: Some(2 << 20),
                    ..MemorySample::default()
                })
                .collect(),
            ..MemoryHistory::default()
        }
    }

    #[test]
    fn a_chart_has_a_point_per_sample_and_says_its_numbers() {
        let svg = memory_chart(&history(40), Some(4 << 20)).unwrap();
        let ws = svg.split("class=\"ws\" points=\"").nth(1).unwrap();
        let ws = &ws[..ws.find('"').unwrap()];
        assert_eq!(ws.split(' ').count(), 40);
        assert!(svg.contains("(40 samples)"), "{svg}");
        assert!(svg.contains("limit 4Mi"), "{svg}");
        assert!(svg.contains("class=\"limit\""));
        assert!(svg.contains(">kill</text>"));
        assert_eq!(memory_chart(&MemoryHistory::default(), None), None);
    }

    #[test]
    fn layers_stack_with_a_polygon_each_and_say_the_last_values() {
        let mut h = history(10);
        for sample in &mut h.samples {
            sample.anon_bytes = Some(3 << 20);
            sample.file_bytes = Some(2 << 20);
            sample.shmem_bytes = Some(1 << 20);
        }
        let svg = layers_chart(&h, Some(8 << 20)).unwrap();
        assert_eq!(svg.matches("<polygon class=\"layer ").count(), 4);
        assert!(
            svg.contains("anon 3Mi, kernel 0B, shmem/tmpfs 1Mi, page cache 1Mi"),
            "{svg}"
        );
        assert_eq!(
            layers_chart(&history(10), None),
            None,
            "no memory.stat, no layers"
        );
    }

    #[test]
    fn sparklines_and_bars_escape_their_labels() {
        assert!(sparkline(Some(&history(5)), None).contains("<polyline class=\"ws\""));
        assert_eq!(sparkline(None, None), "");
        let svg = bars(&[("<b>ns</b>".to_owned(), 3), ("b".to_owned(), 1)]);
        assert!(svg.contains("&lt;b&gt;ns&lt;/b&gt;"));
        assert!(!svg.contains("<b>"));
        assert_eq!(svg.matches("<rect").count(), 2);
    }

    #[test]
    fn a_timeline_has_a_column_per_busy_interval_and_says_its_counts() {
        let svg = timeline(
            &[
                ("shop".to_owned(), vec![0, 3, 1]),
                ("<b>db</b>".to_owned(), vec![2, 0, 0]),
            ],
            "10:00",
            "13:00",
        );
        assert_eq!(svg.matches("<rect").count(), 3, "{svg}");
        assert!(svg.contains("aria-label=\"kills per interval from 10:00 to 13:00: shop: 0 3 1; &lt;b&gt;db&lt;/b&gt;: 2 0 0\""), "{svg}");
        assert!(!svg.contains("<b>"), "{svg}");
    }
}
