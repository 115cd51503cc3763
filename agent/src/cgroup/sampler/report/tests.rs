use super::*;
use crate::cgroup::history::Windows;

const MIB: u64 = 1 << 20;
const BASE_MS: u64 = 1_700_000_000_000;

/// The first working set (and the seconds left before the limit) at which
/// a container climbing `rate` bytes/s from `start` under `limit`, sampled
/// at 10 Hz, is warned about.
fn first_warning(start: u64, rate: u64, limit: u64) -> Option<(u64, f64)> {
    let rules = WarningRules::default();
    let mut history = History::new(Windows::default());
    let mut t_ms = BASE_MS;
    let mut working_set = start;
    while working_set < limit {
        history.record_usage(t_ms, working_set);
        if warning_projection(&rules, &history, working_set, limit).is_some() {
            return Some((working_set, (limit - working_set) as f64 / rate as f64));
        }
        t_ms += 100;
        working_set += rate / 10;
    }
    None
}

#[test]
fn a_fast_climb_is_warned_from_half_the_limit() {
    // The case measured on a real container: 4 MB/s toward 128 MiB was
    // warned 3.4 s before the kill under the old rule (90% and 300 s).
    let (at, seconds_left) = first_warning(8 * MIB, 4_000_000, 128 * MIB).expect("a warning");
    assert!((64 * MIB..65 * MIB).contains(&at), "{at}");
    assert!(seconds_left > 16.0, "{seconds_left}");
}

/// 15 minutes of a leak of `per_minute` ending at `end` (one sample a
/// second), and the warning that history makes.
fn leak(end: u64, per_minute: u64, limit: u64) -> Option<Projection> {
    let mut history = History::new(Windows::default());
    for i in 0..=900u64 {
        history.record_usage(BASE_MS + i * 1000, end - (900 - i) * per_minute / 60);
    }
    warning_projection(&WarningRules::default(), &history, end, limit)
}

#[test]
fn a_slow_leak_is_warned_hours_ahead_on_its_long_trend() {
    // 1 MiB a minute under 1 GiB: at 700 MiB the limit is 5.4 hours away.
    let warning = leak(700 * MIB, MIB, 1024 * MIB).expect("a warning");
    assert!(warning.slow, "{warning:?}");
    assert!(
        (warning.seconds_to_limit / 3600.0 - 5.4).abs() < 0.1,
        "{warning:?}"
    );
    assert!(warning.trend_seconds >= 880, "{warning:?}");
    // At 600 MiB it is 7 hours away: past the slow horizon.
    assert_eq!(leak(600 * MIB, MIB, 1024 * MIB), None);
}

#[test]
fn a_sawtooth_and_a_plateau_are_not_warned() {
    let rules = WarningRules::default();
    let limit = 1024 * MIB;
    // A garbage collector's sawtooth: 700 to 818 MiB every minute, whose
    // upswings alone would reach the limit in minutes.
    for phase in [0u64, 20, 45, 59] {
        let mut sawtooth = History::new(Windows::default());
        let mut now = 0;
        for i in 0..=900u64 {
            now = 700 * MIB + ((i + phase) % 60) * 2 * MIB;
            sawtooth.record_usage(BASE_MS + i * 1000, now);
        }
        assert_eq!(
            warning_projection(&rules, &sawtooth, now, limit),
            None,
            "phase {phase}"
        );
    }
    let mut plateau = History::new(Windows::default());
    for i in 0..=900u64 {
        plateau.record_usage(BASE_MS + i * 1000, 1000 * MIB);
    }
    assert_eq!(warning_projection(&rules, &plateau, 1000 * MIB, limit), None);
}

#[test]
fn below_half_the_limit_nothing_is_warned() {
    let rules = WarningRules::default();
    let mut history = History::new(Windows::default());
    for i in 0..=600u64 {
        history.record_usage(BASE_MS + i * 100, 10 * MIB + i * MIB);
    }
    assert_eq!(
        warning_projection(&rules, &history, 500 * MIB, 1024 * MIB + MIB),
        None
    );
    // Top still ranks it by its projection.
    let projection = project(&rules, &history, 500 * MIB, 1024 * MIB).expect("a projection");
    assert!((projection.seconds_to_limit - 52.4).abs() < 0.5, "{projection:?}");
}
