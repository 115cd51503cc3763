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

/// A straight line through a trend.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Fit {
    /// Bytes per second.
    pub slope: f64,
    /// How well the line explains the points (0 to 1; 0 for a flat line).
    pub r2: f64,
    /// Seconds between the first and last point.
    pub span_s: f64,
}

/// Least-squares slope of y over x; None with fewer than two distinct x.
pub fn slope(points: impl Iterator<Item = (f64, f64)>) -> Option<f64> {
    fit(points).map(|f| f.slope)
}

/// Least-squares line through the points; None with fewer than two
/// distinct x.
pub fn fit(points: impl Iterator<Item = (f64, f64)>) -> Option<Fit> {
    // One pass, no allocation (it runs with every full sample). Both axes
    // are shifted by the first point: Unix-time abscissae and byte counts
    // in the gigabytes would otherwise lose the slope to rounding.
    let mut points = points.peekable();
    let &(x0, y0) = points.peek()?;
    let (mut n, mut sx, mut sy, mut sxx, mut sxy, mut syy) = (0.0, 0.0, 0.0, 0.0, 0.0, 0.0);
    let mut last_dx = 0.0f64;
    for (x, y) in points {
        let (dx, dy) = (x - x0, y - y0);
        n += 1.0;
        sx += dx;
        sy += dy;
        sxx += dx * dx;
        sxy += dx * dy;
        syy += dy * dy;
        last_dx = dx;
    }
    let denominator = n * sxx - sx * sx;
    if n < 2.0 || denominator <= 0.0 {
        return None;
    }
    let covariance = n * sxy - sx * sy;
    let y_spread = n * syy - sy * sy;
    let r2 = if y_spread > 0.0 {
        (covariance * covariance / (denominator * y_spread)).clamp(0.0, 1.0)
    } else {
        0.0
    };
    Some(Fit {
        slope: covariance / denominator,
        r2,
        span_s: last_dx.abs(),
    })
}

impl History {
    /// The working set's trend over the 1-second buckets of the last
    /// `window_s` (up to the 15 minutes kept), from every `stride`-th
    /// bucket: the slow trend a leak shows, cheap enough to check with
    /// every full sample.
    /// The highest working set in the 1-second buckets of the last
    /// `window_s` before the last `recent_s` (None without any).
    pub fn max_working_set_before(&self, window_s: u32, recent_s: u32) -> Option<u64> {
        let last = self.coarse.back()?.t_s;
        self.coarse
            .iter()
            .rev()
            .skip_while(|b| b.t_s.saturating_add(recent_s) > last)
            .take_while(|b| b.t_s.saturating_add(window_s) >= last)
            .map(|b| u64::from(b.ws_max_kib) * 1024)
            .max()
    }

    pub fn long_trend(&self, window_s: u32, stride: usize) -> Option<Fit> {
        let last = self.coarse.back()?.t_s;
        fit(self
            .coarse
            .iter()
            .rev()
            .take_while(|b| b.t_s.saturating_add(window_s) >= last)
            .step_by(stride.max(1))
            .map(|b| (f64::from(b.t_s), f64::from(b.ws_last_kib) * 1024.0)))
    }
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
    fn a_slow_leak_is_a_clean_long_trend_and_a_sawtooth_is_not() {
        let mib = 1u64 << 20;
        let base = 1_700_000_000_000u64;
        // 1 MiB a minute for 15 minutes, one usage sample a second.
        let mut leak = History::new(Windows::default());
        for i in 0..=900u64 {
            leak.record_usage(base + i * 1000, 500 * mib + i * mib / 60);
        }
        let trend = leak.long_trend(900, 10).expect("trend");
        assert!(
            (trend.slope - mib as f64 / 60.0).abs() < 0.02 * mib as f64 / 60.0,
            "{trend:?}"
        );
        assert!(trend.r2 > 0.99 && trend.span_s >= 880.0, "{trend:?}");
        // A garbage collector's sawtooth: up 100 MiB over a minute, down.
        let mut sawtooth = History::new(Windows::default());
        for i in 0..=900u64 {
            sawtooth.record_usage(base + i * 1000, 500 * mib + (i % 60) * 100 * mib / 60);
        }
        let trend = sawtooth.long_trend(900, 10).expect("trend");
        assert!(trend.r2 < 0.1, "{trend:?}");
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
