//! Which API write each kill makes: repeats of a kill (same pod,
//! container and reason) within [`SeriesRules::window`] of the previous
//! one join its Event as a series (`series.count`, shown by `kubectl
//! describe` as `(x5 over 10m)`), and each series is written at most once
//! per [`SeriesRules::min_interval`], later repeats waiting and coalescing
//! into one update. So a crash-looping pod makes one Event and a write
//! every half minute at most, not one per kill. Pure: time is passed in.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::body::{Occurrence, SeriesKey};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SeriesRules {
    /// A repeat this soon after the previous kill of its key joins the
    /// series; a later one starts a new Event (client-go's `finishTime`).
    pub window: Duration,
    /// The shortest time between two writes of one series.
    pub min_interval: Duration,
    /// Series tracked at once; the oldest are forgotten past this.
    pub max_series: usize,
}

impl Default for SeriesRules {
    fn default() -> Self {
        Self {
            window: Duration::from_secs(6 * 60),
            min_interval: Duration::from_secs(30),
            max_series: 10_000,
        }
    }
}

/// What to write now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Write {
    /// A new Event.
    Create(Occurrence),
    /// Bring the Event `name` to `count` kills, the latest `last`.
    Series {
        key: SeriesKey,
        name: String,
        namespace: String,
        count: u32,
        last: Occurrence,
    },
}

#[derive(Debug)]
struct Series {
    /// None until the Event is created.
    name: Option<String>,
    namespace: String,
    /// Kills seen; `written` of them are in the API.
    count: u32,
    written: u32,
    last: Occurrence,
    last_kill: Instant,
    last_write: Instant,
}

/// The series being tracked.
#[derive(Debug, Default)]
pub struct SeriesBook {
    rules: SeriesRules,
    series: HashMap<SeriesKey, Series>,
}

impl SeriesBook {
    pub fn new(rules: SeriesRules) -> Self {
        Self {
            rules,
            series: HashMap::new(),
        }
    }

    /// A kill seen at `now`: the write to make now, if any (None: it
    /// waits, coalesced, for [`SeriesBook::due`]).
    pub fn observe(&mut self, occurrence: Occurrence, now: Instant) -> Option<Write> {
        let key = occurrence.key();
        let window = self.rules.window;
        if let Some(series) = self.series.get_mut(&key)
            && series.name.is_some()
            && now.saturating_duration_since(series.last_kill) <= window
        {
            series.count = series.count.saturating_add(1);
            series.last = occurrence;
            series.last_kill = now;
            return self.write_if_due(&key, now);
        }
        if self.series.len() >= self.rules.max_series && !self.series.contains_key(&key) {
            self.forget_oldest();
        }
        self.series.insert(
            key,
            Series {
                name: None,
                namespace: occurrence.namespace.clone(),
                count: 1,
                written: 0,
                last: occurrence.clone(),
                last_kill: now,
                last_write: now,
            },
        );
        Some(Write::Create(occurrence))
    }

    fn write_if_due(&self, key: &SeriesKey, now: Instant) -> Option<Write> {
        let series = self.series.get(key)?;
        let name = series.name.clone()?;
        (series.count > series.written
            && now.saturating_duration_since(series.last_write) >= self.rules.min_interval)
            .then(|| Write::Series {
                key: key.clone(),
                name,
                namespace: series.namespace.clone(),
                count: series.count,
                last: series.last.clone(),
            })
    }

    /// Series updates that waited and may be written now; also forgets
    /// series that are over.
    pub fn due(&mut self, now: Instant) -> Vec<Write> {
        let window = self.rules.window;
        self.series.retain(|_, s| {
            s.count > s.written && s.name.is_some() || now.saturating_duration_since(s.last_kill) <= window
        });
        let keys: Vec<SeriesKey> = self.series.keys().cloned().collect();
        keys.iter()
            .filter_map(|key| self.write_if_due(key, now))
            .collect()
    }

    /// How long until the next waiting series update may be written.
    pub fn next_due(&self, now: Instant) -> Option<Duration> {
        self.series
            .values()
            .filter(|s| s.name.is_some() && s.count > s.written)
            .map(|s| (s.last_write + self.rules.min_interval).saturating_duration_since(now))
            .min()
    }

    /// A write went through (or the Event already existed): the series
    /// has an Event `name` holding `count` kills.
    pub fn written(&mut self, key: &SeriesKey, name: &str, count: u32, now: Instant) {
        if let Some(series) = self.series.get_mut(key) {
            series.name = Some(name.to_owned());
            series.written = series.written.max(count);
            series.last_write = now;
        }
    }

    /// The series' Event is gone (expired in the API, or never made): the
    /// next kill of the key starts a new one.
    pub fn forget(&mut self, key: &SeriesKey) {
        self.series.remove(key);
    }

    pub fn len(&self) -> usize {
        self.series.len()
    }

    pub fn is_empty(&self) -> bool {
        self.series.is_empty()
    }

    fn forget_oldest(&mut self) {
        if let Some(oldest) = self
            .series
            .iter()
            .min_by_key(|(_, s)| s.last_kill)
            .map(|(k, _)| k.clone())
        {
            self.series.remove(&oldest);
        }
    }
}

/// The collector-wide bound on API writes: a token bucket.
#[derive(Debug, Clone)]
pub struct WriteBudget {
    per_second: f64,
    burst: f64,
    tokens: f64,
    at: Instant,
}

impl WriteBudget {
    pub fn new(per_second: f64, burst: u32, now: Instant) -> Self {
        Self {
            per_second: per_second.max(0.001),
            burst: f64::from(burst.max(1)),
            tokens: f64::from(burst.max(1)),
            at: now,
        }
    }

    /// Takes one write; otherwise how long until one is free.
    pub fn take(&mut self, now: Instant) -> Result<(), Duration> {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.per_second).min(self.burst);
        self.at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - self.tokens) / self.per_second))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kube_events::body::Reason;

    fn kill(id: &str, pod: &str) -> Occurrence {
        Occurrence {
            event_id: id.to_owned(),
            namespace: "shop".to_owned(),
            pod: pod.to_owned(),
            pod_uid: Some("uid-1".to_owned()),
            container: Some("api".to_owned()),
            field_path: Some("spec.containers{api}".to_owned()),
            node: Some("node-a".to_owned()),
            reason: Reason::ContainerLimit,
            note: format!("kill {id}"),
            time: "2026-11-30T10:00:00.000000Z".to_owned(),
            series_count: 1,
        }
    }

    fn created(book: &mut SeriesBook, write: Option<Write>, now: Instant) -> String {
        let Some(Write::Create(occurrence)) = write else {
            panic!("expected a create, got {write:?}");
        };
        let name = occurrence.event_name();
        book.written(&occurrence.key(), &name, 1, now);
        name
    }

    #[test]
    fn a_crash_loop_makes_one_event_and_a_write_per_interval() {
        let rules = SeriesRules::default();
        let mut book = SeriesBook::new(rules);
        let t0 = Instant::now();
        let first = book_observe(&mut book, "a1", t0);
        let name = created(&mut book, first, t0);
        // Second kill 40 s later: past the interval, written at once.
        let t1 = t0 + Duration::from_secs(40);
        let write = book.observe(kill("a2", "api-1"), t1);
        let Some(Write::Series {
            count,
            name: n,
            last,
            key,
            ..
        }) = write
        else {
            panic!("{write:?}");
        };
        assert_eq!(
            (count, n.as_str(), last.event_id.as_str()),
            (2, name.as_str(), "a2")
        );
        book.written(&key, &n, count, t1);
        // Three more within 10 s: they wait and coalesce.
        for (i, id) in ["a3", "a4", "a5"].into_iter().enumerate() {
            let at = t1 + Duration::from_secs(3 * (i as u64 + 1));
            assert_eq!(book.observe(kill(id, "api-1"), at), None);
        }
        assert!(book.due(t1 + Duration::from_secs(20)).is_empty());
        assert_eq!(
            book.next_due(t1 + Duration::from_secs(20)),
            Some(Duration::from_secs(10))
        );
        let due = book.due(t1 + Duration::from_secs(30));
        assert_eq!(due.len(), 1, "{due:?}");
        let Write::Series { count, last, .. } = &due[0] else {
            panic!("{due:?}");
        };
        assert_eq!((*count, last.event_id.as_str()), (5, "a5"));
        book.written(&key, &name, 5, t1 + Duration::from_secs(30));
        assert!(book.due(t1 + Duration::from_secs(90)).is_empty());
    }

    fn book_observe(book: &mut SeriesBook, id: &str, now: Instant) -> Option<Write> {
        book.observe(kill(id, "api-1"), now)
    }

    #[test]
    fn a_repeat_after_the_window_starts_a_new_event_and_other_keys_are_separate() {
        let mut book = SeriesBook::new(SeriesRules::default());
        let t0 = Instant::now();
        let first = book_observe(&mut book, "a1", t0);
        created(&mut book, first, t0);
        let other = book.observe(kill("b1", "api-2"), t0);
        assert!(matches!(other, Some(Write::Create(_))));
        let mut child = kill("c1", "api-1");
        child.reason = Reason::ChildProcess;
        assert!(matches!(book.observe(child, t0), Some(Write::Create(_))));
        let later = t0 + Duration::from_secs(6 * 60 + 1);
        assert!(matches!(
            book_observe(&mut book, "a2", later),
            Some(Write::Create(_))
        ));
    }

    #[test]
    fn finished_series_are_forgotten_and_the_book_is_bounded() {
        let rules = SeriesRules {
            max_series: 3,
            ..SeriesRules::default()
        };
        let mut book = SeriesBook::new(rules);
        let t0 = Instant::now();
        for (i, pod) in ["p1", "p2", "p3", "p4"].into_iter().enumerate() {
            book.observe(kill(&format!("k{i}"), pod), t0 + Duration::from_secs(i as u64));
        }
        assert_eq!(book.len(), 3);
        assert!(book.due(t0 + Duration::from_secs(7 * 60)).is_empty());
        assert!(book.is_empty());
    }

    #[test]
    fn a_repeat_before_the_create_went_through_starts_afresh() {
        // The create failed (never `written`): nothing to patch.
        let mut book = SeriesBook::new(SeriesRules::default());
        let t0 = Instant::now();
        assert!(matches!(
            book_observe(&mut book, "a1", t0),
            Some(Write::Create(_))
        ));
        assert!(matches!(
            book_observe(&mut book, "a2", t0 + Duration::from_secs(1)),
            Some(Write::Create(_))
        ));
    }

    #[test]
    fn the_budget_refills_at_its_rate() {
        let t0 = Instant::now();
        let mut budget = WriteBudget::new(2.0, 3, t0);
        for _ in 0..3 {
            assert_eq!(budget.take(t0), Ok(()));
        }
        let wait = budget.take(t0).unwrap_err();
        assert!((wait.as_secs_f64() - 0.5).abs() < 1e-6, "{wait:?}");
        assert_eq!(budget.take(t0 + Duration::from_millis(500)), Ok(()));
        assert!(budget.take(t0 + Duration::from_millis(500)).is_err());
    }
}
