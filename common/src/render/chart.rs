//! The working set before a kill, drawn with block characters.

use oomlens_proto::v1::MemoryHistory;

use crate::units::{human_bytes, saturating_u64};

/// A chart of the working set before the kill: `rows` lines of `width`
/// columns, time left to right, with the limit marked.
pub fn memory_chart(history: &MemoryHistory, width: usize, rows: usize) -> Vec<String> {
    let seconds = |t: &prost_types::Timestamp| t.seconds as f64 + f64::from(t.nanos) / 1e9;
    let mut points: Vec<(f64, u64)> = history
        .buckets
        .iter()
        .filter_map(|b| Some((seconds(b.time.as_ref()?), b.working_set_max_bytes)))
        .collect();
    let first_sample = history.samples.iter().find_map(|s| s.time.as_ref().map(seconds));
    if let Some(first) = first_sample {
        points.retain(|p| p.0 < first);
    }
    points.extend(
        history
            .samples
            .iter()
            .filter_map(|s| Some((seconds(s.time.as_ref()?), s.working_set_bytes?))),
    );
    points.sort_by(|a, b| a.0.total_cmp(&b.0));
    let (Some(first), Some(last)) = (points.first(), points.last()) else {
        return vec!["(no memory samples before the kill)".to_owned()];
    };
    let (t0, t1) = (first.0, last.0);
    let peak = points.iter().map(|p| p.1).max().unwrap_or(0);
    let limit = history.limit_bytes.filter(|l| *l > 0);
    let top = limit.unwrap_or(peak).max(peak).max(1);
    // Highest working set per column (a column with no sample repeats the
    // previous one: memory did not vanish between samples).
    let mut columns: Vec<Option<u64>> = vec![None; width];
    for (t, ws) in &points {
        let x = if t1 > t0 {
            let x = saturating_u64((((t - t0) / (t1 - t0)) * (width - 1) as f64).round());
            usize::try_from(x).unwrap_or(usize::MAX)
        } else {
            width - 1
        };
        let slot = &mut columns[x.min(width - 1)];
        *slot = Some(slot.map_or(*ws, |v| v.max(*ws)));
    }
    let mut previous = None;
    for column in &mut columns {
        match column {
            Some(v) => previous = Some(*v),
            None => *column = previous,
        }
    }
    let limit_row = limit.map(|l| {
        let row = saturating_u64(((l as f64 / top as f64) * rows as f64).ceil());
        usize::try_from(row).unwrap_or(usize::MAX)
    });
    let label_width = 7;
    let mut lines = Vec::with_capacity(rows + 2);
    for row in (1..=rows).rev() {
        let threshold = top as f64 * (row as f64 - 0.5) / rows as f64;
        let label = if row == rows {
            human_bytes(top)
        } else if Some(row) == limit_row && limit != Some(top) {
            human_bytes(limit.unwrap_or(0))
        } else {
            String::new()
        };
        let mut line = format!("{label:>label_width$} ┤");
        for value in &columns {
            let filled = value.is_some_and(|v| v as f64 >= threshold);
            line.push(match (filled, Some(row) == limit_row) {
                (true, _) => '█',
                (false, true) => '-',
                (false, false) => ' ',
            });
        }
        if Some(row) == limit_row {
            line.push_str(" limit");
        }
        lines.push(line.trim_end().to_owned());
    }
    lines.push(format!("{:>label_width$} └{}", "0", "─".repeat(width)));
    let span = format!("-{:.0}s", t1 - t0);
    lines.push(format!(
        "{:>label_width$}  {span}{}kill",
        "",
        " ".repeat(width.saturating_sub(span.len() + 4))
    ));
    lines
}
