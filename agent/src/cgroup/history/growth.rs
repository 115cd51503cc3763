//! Growth maths: the working set's least-squares slope, and the cheap
//! end-to-end growth the hot check runs with every usage sample.

use super::{Fine, History};

impl History {
    /// Growth between the oldest and newest sample of the last
    /// `window_ms`, bytes per second: cheap enough for every usage sample
    /// (it walks back only over the window, no regression). Exact when full
    /// samples are at least `window_ms` apart, as they are for a cgroup
    /// that is not hot; closer ones only shift which page-cache size the
    /// window's oldest sample is taken with.
    pub fn short_growth(&self, window_ms: u64) -> Option<f64> {
        let last = self.fine.back()?;
        let first = self
            .fine
            .iter()
            .rev()
            .take_while(|f| f.t_ms + window_ms >= last.t_ms)
            .last()?;
        let dt_ms = last.t_ms.checked_sub(first.t_ms).filter(|&d| d > 0)?;
        // The two latest full samples' page-cache sizes are kept at hand:
        // the ring of full samples is another allocation, and so another
        // page to touch, with every usage sample.
        let inactive_at = |t_ms: u64| {
            if t_ms >= self.last_full_ms {
                self.inactive_file
            } else {
                self.previous_inactive_file
            }
        };
        let working_set = |f: &Fine| f.usage.saturating_sub(inactive_at(f.t_ms));
        let grown = working_set(last) as f64 - working_set(first) as f64;
        Some(grown * 1000.0 / dt_ms as f64)
    }

    /// Working-set slope over the last `window_ms` before the latest sample.
    pub fn recent_growth(&self, window_ms: u64) -> Option<f64> {
        let last = self.fine.back()?.t_ms;
        // Newest first, stepping back through the full samples alongside
        // for each sample's inactive file size: called with every full
        // sample of every cgroup, so no search per point.
        let mut full = self.full.iter().rev().peekable();
        slope(
            self.fine
                .iter()
                .rev()
                .take_while(|f| f.t_ms + window_ms >= last)
                .map(|f| {
                    while full.next_if(|x| x.t_ms > f.t_ms).is_some() {}
                    let inactive = full.peek().map_or(0, |x| x.inactive_file);
                    (f.t_ms as f64 / 1000.0, f.usage.saturating_sub(inactive) as f64)
                }),
        )
    }
}

/// Least-squares slope of y over x; None with fewer than two distinct x.
pub fn slope(points: impl Iterator<Item = (f64, f64)>) -> Option<f64> {
    // One pass, no allocation (it runs with every full sample). Both axes
    // are shifted by the first point: Unix-time abscissae and byte counts
    // in the gigabytes would otherwise lose the slope to rounding.
    let mut points = points.peekable();
    let &(x0, y0) = points.peek()?;
    let (mut n, mut sx, mut sy, mut sxx, mut sxy) = (0.0, 0.0, 0.0, 0.0, 0.0);
    for (x, y) in points {
        let (dx, dy) = (x - x0, y - y0);
        n += 1.0;
        sx += dx;
        sy += dy;
        sxx += dx * dx;
        sxy += dx * dy;
    }
    let denominator = n * sxx - sx * sx;
    (n >= 2.0 && denominator > 0.0).then(|| (n * sxy - sx * sy) / denominator)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cgroup::history::Windows;
    use crate::cgroup::history::tests::full;

    #[test]
    fn recent_growth_uses_each_samples_own_inactive_file() {
        // Usage climbs 2 MiB/s while the page cache shrinks 1 MiB/s: the
        // working set climbs 3 MiB/s. Each usage sample's working set must
        // use the full sample at or before it, not the latest.
        let mut history = History::new(Windows::default());
        let base = 1_700_000_000_000u64;
        let mib = 1u64 << 20;
        for i in 0..=300u64 {
            let t = base + i * 100;
            let usage = 100 * mib + i * 2 * mib / 10;
            if i % 10 == 0 {
                let inactive = 50 * mib - i * mib / 10;
                history.record_full(t, &full(usage, inactive, None));
            } else {
                history.record_usage(t, usage);
            }
        }
        // Within a second the inactive size is the last full sample's, so
        // the slope over whole seconds is the working set's.
        let growth = history.recent_growth(10_000).expect("growth");
        assert!((growth - 3.0 * mib as f64).abs() < 0.05 * mib as f64, "{growth}");
        // The same points, computed point by point.
        let brute = slope(
            history
                .fine
                .iter()
                .filter(|f| f.t_ms + 10_000 >= base + 30_000)
                .map(|f| (f.t_ms as f64 / 1000.0, history.working_set(f) as f64)),
        )
        .expect("slope");
        assert!((growth - brute).abs() < 1e-6 * brute, "{growth} vs {brute}");
    }

    #[test]
    fn slope_edge_cases() {
        assert_eq!(slope([(1.0, 5.0)].into_iter()), None);
        assert_eq!(slope([(1.0, 5.0), (1.0, 6.0)].into_iter()), None);
        assert_eq!(
            slope([(1_700_000_000.0, 0.0), (1_700_000_002.0, 10.0)].into_iter()),
            Some(5.0)
        );
        // A 1 KiB/s climb at 64 GiB, over Unix-time seconds: the shifts keep
        // it from being lost to rounding.
        let climb = (0..600).map(|i| {
            (
                1_700_000_000.0 + f64::from(i) / 10.0,
                68_719_476_736.0 + f64::from(i) * 102.4,
            )
        });
        let growth = slope(climb).expect("slope");
        assert!((growth - 1024.0).abs() < 1e-3, "{growth}");
    }
}
