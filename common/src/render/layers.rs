//! What the memory held before a kill, layer on layer (anon, kernel,
//! shmem, page cache), from the full samples of a history: one look shows
//! which layer grew.

use oomlens_proto::v1::{MemoryHistory, MemorySample};

use super::chart::{Axis, LABEL_WIDTH, column_of, fill_forward, footer};
use crate::units::human_bytes;

/// The layers, bottom up, with the character that draws each.
const LAYERS: [(&str, char); 4] = [
    ("anon", '█'),
    ("kernel", '▓'),
    ("shmem/tmpfs", '▒'),
    ("page cache", '░'),
];

/// The layers' names, bottom up, as [`sample_layers`] orders them.
pub const LAYER_NAMES: [&str; 4] = [LAYERS[0].0, LAYERS[1].0, LAYERS[2].0, LAYERS[3].0];

/// A sample's layers (anon, kernel, shmem, page cache without shmem), in
/// bytes; None without `memory.stat`.
pub fn sample_layers(sample: &MemorySample) -> Option<[u64; 4]> {
    let anon = sample.anon_bytes?;
    let shmem = sample.shmem_bytes.unwrap_or(0);
    let page_cache = sample.file_bytes.unwrap_or(0).saturating_sub(shmem);
    Some([anon, sample.kernel_bytes.unwrap_or(0), shmem, page_cache])
}

/// The stacked chart: `rows` lines of `width` columns, time left to right,
/// the limit marked, and a legend. None when fewer than two samples carry
/// `memory.stat` values (nothing to compare).
pub fn layers_chart(history: &MemoryHistory, width: usize, rows: usize) -> Option<Vec<String>> {
    let seconds = |s: &MemorySample| {
        s.time
            .as_ref()
            .map(|t| t.seconds as f64 + f64::from(t.nanos) / 1e9)
    };
    let points: Vec<(f64, [u64; 4])> = history
        .samples
        .iter()
        .filter_map(|s| Some((seconds(s)?, sample_layers(s)?)))
        .collect();
    if points.len() < 2 || width < 2 || rows == 0 {
        return None;
    }
    let (t0, t1) = (points[0].0, points[points.len() - 1].0);
    // The latest sample in each column.
    let mut columns: Vec<Option<[u64; 4]>> = vec![None; width];
    for (t, values) in &points {
        columns[column_of(*t, t0, t1, width)] = Some(*values);
    }
    fill_forward(&mut columns);
    let total = |v: &[u64; 4]| v.iter().fold(0u64, |sum, x| sum.saturating_add(*x));
    let peak = columns.iter().flatten().map(total).max().unwrap_or(0);
    let limit = history.limit_bytes.filter(|l| *l > 0);
    let top = limit.unwrap_or(peak).max(peak).max(1);
    let axis = Axis::new(top, limit, rows);
    let mut lines = Vec::with_capacity(rows + 3);
    for row in (1..=rows).rev() {
        // The layer at the middle of this row's band.
        let level = axis.level(row);
        let mut line = axis.row_start(row);
        for column in &columns {
            let mut below = 0.0;
            let mut drawn = if Some(row) == axis.limit_row { '-' } else { ' ' };
            if let Some(values) = column {
                for ((_, glyph), value) in LAYERS.iter().zip(values) {
                    let above = below + *value as f64;
                    if level < above {
                        drawn = *glyph;
                        break;
                    }
                    below = above;
                }
            }
            line.push(drawn);
        }
        if Some(row) == axis.limit_row {
            line.push_str(" limit");
        }
        lines.push(line.trim_end().to_owned());
    }
    lines.extend(footer(width, t1 - t0));
    // The legend carries each layer's value at the last sample: the
    // numbers are in text too.
    let last = points[points.len() - 1].1;
    let legend: Vec<String> = LAYERS
        .iter()
        .zip(last)
        .map(|((name, glyph), value)| format!("{glyph} {name} {}", human_bytes(value)))
        .collect();
    lines.push(format!("{:>LABEL_WIDTH$}  {}", "", legend.join("  ")));
    Some(lines)
}

#[cfg(test)]
mod tests {
    use prost_types::Timestamp;

    use super::*;

    const MIB: u64 = 1 << 20;

    fn sample(t: i64, anon: u64, shmem: u64) -> MemorySample {
        MemorySample {
            time: Some(Timestamp { seconds: t, nanos: 0 }),
            anon_bytes: Some(anon),
            file_bytes: Some(shmem + 2 * MIB),
            shmem_bytes: Some(shmem),
            kernel_bytes: Some(MIB),
            ..MemorySample::default()
        }
    }

    #[test]
    fn a_growing_tmpfs_shows_as_the_growing_layer() {
        let history = MemoryHistory {
            samples: (0..20)
                .map(|t| sample(t, 4 * MIB, u64::try_from(t).unwrap() * MIB))
                .collect(),
            limit_bytes: Some(32 * MIB),
            ..MemoryHistory::default()
        };
        let lines = layers_chart(&history, 20, 8).unwrap();
        let chart = lines.join("\n");
        // The bottom row is anon all along; shmem appears only to the right.
        let bottom = &lines[7];
        assert!(bottom.ends_with(&"█".repeat(20)), "{chart}");
        let middle = &lines[4];
        assert!(
            middle.contains('▒') && !middle.starts_with("        ┤▒"),
            "{chart}"
        );
        assert!(lines.last().unwrap().contains("▒ shmem/tmpfs 19Mi"), "{chart}");
        assert!(chart.contains(" limit"), "{chart}");
    }

    #[test]
    fn without_memory_stat_there_is_no_chart() {
        let history = MemoryHistory {
            samples: (0..5)
                .map(|t| MemorySample {
                    time: Some(Timestamp { seconds: t, nanos: 0 }),
                    working_set_bytes: Some(MIB),
                    ..MemorySample::default()
                })
                .collect(),
            ..MemoryHistory::default()
        };
        assert_eq!(layers_chart(&history, 20, 8), None);
    }
}
