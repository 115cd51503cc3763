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
        let slot = &mut columns[column_of(*t, t0, t1, width)];
        *slot = Some(slot.map_or(*ws, |v| v.max(*ws)));
    }
    fill_forward(&mut columns);
    let axis = Axis::new(top, limit, rows);
    let mut lines = Vec::with_capacity(rows + 2);
    for row in (1..=rows).rev() {
        let threshold = axis.level(row);
        let limit_row = axis.limit_row;
        let mut line = axis.row_start(row);
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
    lines.extend(footer(width, t1 - t0));
    lines
}

/// Width of the value labels left of a chart.
pub(super) const LABEL_WIDTH: usize = 7;

/// The column of time `t` in a chart from `t0` to `t1`, `width` wide.
pub(super) fn column_of(t: f64, t0: f64, t1: f64, width: usize) -> usize {
    let x = if t1 > t0 {
        usize::try_from(saturating_u64(
            ((t - t0) / (t1 - t0) * (width - 1) as f64).round(),
        ))
        .unwrap_or(usize::MAX)
    } else {
        width - 1
    };
    x.min(width - 1)
}

/// A column with no sample repeats the previous one: memory did not vanish
/// between samples.
pub(super) fn fill_forward<T: Copy>(columns: &mut [Option<T>]) {
    let mut previous = None;
    for column in columns {
        match column {
            Some(v) => previous = Some(*v),
            None => *column = previous,
        }
    }
}

/// The vertical scale of a chart: `rows` rows up to `top`, the limit's row
/// marked.
pub(super) struct Axis {
    top: u64,
    limit: Option<u64>,
    rows: usize,
    pub(super) limit_row: Option<usize>,
}

impl Axis {
    pub(super) fn new(top: u64, limit: Option<u64>, rows: usize) -> Self {
        let limit_row = limit.map(|l| {
            let row = saturating_u64(((l as f64 / top as f64) * rows as f64).ceil());
            usize::try_from(row).unwrap_or(usize::MAX)
        });
        Self {
            top,
            limit,
            rows,
            limit_row,
        }
    }

    /// The value at the middle of `row`'s band (rows count from 1 at the
    /// bottom).
    pub(super) fn level(&self, row: usize) -> f64 {
        self.top as f64 * (row as f64 - 0.5) / self.rows as f64
    }

    /// The row's label and the axis: the top's value on the top row, the
    /// limit's on its row.
    pub(super) fn row_start(&self, row: usize) -> String {
        let label = if row == self.rows {
            human_bytes(self.top)
        } else if Some(row) == self.limit_row && self.limit != Some(self.top) {
            human_bytes(self.limit.unwrap_or(0))
        } else {
            String::new()
        };
        format!("{label:>LABEL_WIDTH$} ┤")
    }
}

/// The time axis under a chart spanning `span_s` seconds up to the kill.
pub(super) fn footer(width: usize, span_s: f64) -> [String; 2] {
    let span = format!("-{span_s:.0}s");
    [
        format!("{:>LABEL_WIDTH$} └{}", "0", "─".repeat(width)),
        format!(
            "{:>LABEL_WIDTH$}  {span}{}kill",
            "",
            " ".repeat(width.saturating_sub(span.len() + 4))
        ),
    ]
}
