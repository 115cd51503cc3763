//! Event filters: the proto `EventFilter` checked against an event in
//! memory (live subscriptions) and turned into SQL (queries, backfill).
//! Both readings must agree; a test checks them against each other.

use oomlens_proto::v1::{EventFilter, OomEvent};

/// A value bound to a SQL placeholder.
#[derive(Debug, Clone, PartialEq)]
pub enum SqlValue {
    Text(String),
    Int(i64),
    Bytes(Vec<u8>),
    /// A NULL of a text column.
    Null,
}

/// SQL text with its bound values; placeholders are written by `mark`
/// (`?` for SQLite, `$n` for PostgreSQL).
#[derive(Debug)]
pub struct SqlWhere {
    pub clauses: Vec<String>,
    pub values: Vec<SqlValue>,
}

/// Placeholder style of a backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placeholders {
    Question,
    Dollar,
}

impl SqlWhere {
    pub fn new() -> Self {
        Self {
            clauses: Vec::new(),
            values: Vec::new(),
        }
    }

    /// Adds a value and returns its placeholder.
    pub fn bind(&mut self, style: Placeholders, value: SqlValue) -> String {
        self.values.push(value);
        match style {
            Placeholders::Question => "?".to_owned(),
            Placeholders::Dollar => format!("${}", self.values.len()),
        }
    }

    fn any_of(&mut self, style: Placeholders, column: &str, values: impl IntoIterator<Item = SqlValue>) {
        let marks: Vec<String> = values.into_iter().map(|v| self.bind(style, v)).collect();
        match marks.len() {
            0 => {}
            // Equality: planners match it to an index prefix for sure.
            1 => self.clauses.push(format!("{column} = {}", marks[0])),
            _ => self.clauses.push(format!("{column} IN ({})", marks.join(", "))),
        }
    }

    /// ` WHERE a AND b`, or nothing.
    pub fn sql(&self) -> String {
        if self.clauses.is_empty() {
            String::new()
        } else {
            format!(" WHERE {}", self.clauses.join(" AND "))
        }
    }
}

impl Default for SqlWhere {
    fn default() -> Self {
        Self::new()
    }
}

/// Kill time as Unix microseconds (0 when the event has none).
pub fn event_time_us(event: &OomEvent) -> i64 {
    event.time.as_ref().map_or(0, timestamp_us)
}

/// Unix microseconds, saturating: a time past what microseconds in an
/// `i64` can hold (year 294247) is the end of time, not a wrapped value
/// (a `since` far in the future once wrapped to the past and matched
/// every event).
pub fn timestamp_us(t: &prost_types::Timestamp) -> i64 {
    t.seconds
        .saturating_mul(1_000_000)
        .saturating_add(i64::from(t.nanos) / 1000)
}

/// The most values a filter may hold, all lists together. Each becomes a
/// bound SQL parameter (SQLite takes at most 32766 in one statement,
/// PostgreSQL 65535), and each is compared with every live event.
pub const MAX_FILTER_VALUES: usize = 1000;

/// Why a filter is refused (the caller's mistake: `INVALID_ARGUMENT`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the filter holds {values} values; at most {MAX_FILTER_VALUES} are allowed, all lists together")]
pub struct FilterTooLarge {
    pub values: usize,
}

/// Checks what a filter may hold before it reaches SQL or the live path.
pub fn check(filter: Option<&EventFilter>) -> Result<(), FilterTooLarge> {
    let Some(f) = filter else { return Ok(()) };
    let values = f.nodes.len()
        + f.namespaces.len()
        + f.pods.len()
        + f.containers.len()
        + f.workloads.len()
        + f.scopes.len()
        + f.constraints.len()
        + f.verdicts.len();
    if values > MAX_FILTER_VALUES {
        return Err(FilterTooLarge { values });
    }
    Ok(())
}

/// The indexed columns of an event, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventColumns {
    pub time_us: i64,
    pub node: String,
    pub namespace: Option<String>,
    pub pod: Option<String>,
    pub container: Option<String>,
    /// `Kind/name` of the owner workload.
    pub workload: Option<String>,
    pub scope: i64,
    pub constraint: i64,
    pub silent: i64,
    /// The collector's verdict; 0 without an analysis.
    pub verdict: i64,
}

impl EventColumns {
    pub fn of(event: &OomEvent) -> Self {
        let pod = event.pod.as_ref();
        Self {
            time_us: event_time_us(event),
            node: event.node.clone().unwrap_or_default(),
            namespace: pod.and_then(|p| p.namespace.clone()),
            pod: pod.and_then(|p| p.name.clone()),
            container: event.container.as_ref().and_then(|c| c.name.clone()),
            workload: pod
                .and_then(|p| p.owner.as_ref())
                .filter(|o| !o.name.is_empty())
                .map(|o| format!("{}/{}", o.kind, o.name)),
            scope: i64::from(event.scope),
            constraint: i64::from(event.constraint),
            silent: i64::from(event.silent == Some(true)),
            verdict: event.analysis.as_ref().map_or(0, |a| i64::from(a.verdict)),
        }
    }
}

/// Whether `event` passes `filter` (None passes everything).
pub fn matches(filter: Option<&EventFilter>, event: &OomEvent) -> bool {
    let Some(f) = filter else { return true };
    let c = EventColumns::of(event);
    let within = |list: &[String], value: &Option<String>| {
        list.is_empty() || value.as_ref().is_some_and(|v| list.iter().any(|l| l == v))
    };
    f.since.as_ref().is_none_or(|s| c.time_us >= timestamp_us(s))
        && f.until.as_ref().is_none_or(|u| c.time_us < timestamp_us(u))
        && (f.nodes.is_empty() || f.nodes.contains(&c.node))
        && within(&f.namespaces, &c.namespace)
        && within(&f.pods, &c.pod)
        && within(&f.containers, &c.container)
        && within(&f.workloads, &c.workload)
        && (f.scopes.is_empty() || f.scopes.iter().any(|s| i64::from(*s) == c.scope))
        && (f.constraints.is_empty() || f.constraints.iter().any(|s| i64::from(*s) == c.constraint))
        && (!f.silent_only || c.silent == 1)
        && (f.verdicts.is_empty() || f.verdicts.iter().any(|v| i64::from(*v) == c.verdict))
}

/// `filter` as SQL conditions on the `events` table.
pub fn to_sql(filter: Option<&EventFilter>, style: Placeholders) -> SqlWhere {
    let mut w = SqlWhere::new();
    let Some(f) = filter else { return w };
    if let Some(since) = &f.since {
        let mark = w.bind(style, SqlValue::Int(timestamp_us(since)));
        w.clauses.push(format!("time_us >= {mark}"));
    }
    if let Some(until) = &f.until {
        let mark = w.bind(style, SqlValue::Int(timestamp_us(until)));
        w.clauses.push(format!("time_us < {mark}"));
    }
    let text = |list: &[String]| list.iter().cloned().map(SqlValue::Text).collect::<Vec<_>>();
    w.any_of(style, "node", text(&f.nodes));
    w.any_of(style, "namespace", text(&f.namespaces));
    w.any_of(style, "pod", text(&f.pods));
    w.any_of(style, "container", text(&f.containers));
    w.any_of(style, "workload", text(&f.workloads));
    w.any_of(
        style,
        "scope",
        f.scopes
            .iter()
            .map(|s| SqlValue::Int(i64::from(*s)))
            .collect::<Vec<_>>(),
    );
    w.any_of(
        style,
        "constraint_kind",
        f.constraints
            .iter()
            .map(|s| SqlValue::Int(i64::from(*s)))
            .collect::<Vec<_>>(),
    );
    w.any_of(
        style,
        "verdict",
        f.verdicts
            .iter()
            .map(|v| SqlValue::Int(i64::from(*v)))
            .collect::<Vec<_>>(),
    );
    if f.silent_only {
        w.clauses.push("silent = 1".to_owned());
    }
    w
}

#[cfg(test)]
mod tests {
    use super::*;
    use oomlens_proto::v1::{Container, Pod, Scope, Workload};

    fn event(ns: &str, pod: &str, scope: Scope, secs: i64) -> OomEvent {
        OomEvent {
            id: format!("{ns}-{pod}-{secs}"),
            node: Some("node-a".into()),
            time: Some(prost_types::Timestamp {
                seconds: secs,
                nanos: 0,
            }),
            scope: scope as i32,
            pod: Some(Pod {
                uid: "u".into(),
                name: Some(pod.into()),
                namespace: Some(ns.into()),
                owner: Some(Workload {
                    kind: "Deployment".into(),
                    name: "api".into(),
                }),
                ..Pod::default()
            }),
            container: Some(Container {
                id: "c".into(),
                name: Some("app".into()),
                ..Container::default()
            }),
            ..OomEvent::default()
        }
    }

    #[test]
    fn in_memory_matching_follows_every_field() {
        let e = event("shop", "api-1", Scope::ContainerLimit, 100);
        let mut f = EventFilter::default();
        assert!(matches(Some(&f), &e));
        f.namespaces = vec!["shop".into()];
        f.workloads = vec!["Deployment/api".into()];
        f.scopes = vec![Scope::ContainerLimit as i32];
        assert!(matches(Some(&f), &e));
        f.since = Some(prost_types::Timestamp {
            seconds: 101,
            nanos: 0,
        });
        assert!(!matches(Some(&f), &e));
        f.since = None;
        f.pods = vec!["api-2".into()];
        assert!(!matches(Some(&f), &e));
        f.pods.clear();
        f.silent_only = true;
        assert!(!matches(Some(&f), &e));
        f.silent_only = false;
        // A verdict filter never matches an event without an analysis.
        f.verdicts = vec![oomlens_proto::v1::Verdict::Spike as i32];
        assert!(!matches(Some(&f), &e));
        let mut analysed = e.clone();
        analysed.analysis = Some(oomlens_proto::v1::Analysis {
            verdict: oomlens_proto::v1::Verdict::Spike as i32,
            ..Default::default()
        });
        assert!(matches(Some(&f), &analysed));
        let w = to_sql(Some(&f), Placeholders::Question);
        assert!(w.sql().ends_with(" AND verdict = ?"), "{}", w.sql());
    }

    #[test]
    fn sql_binds_every_value_in_order() {
        let f = EventFilter {
            namespaces: vec!["a".into(), "b".into()],
            scopes: vec![1],
            since: Some(prost_types::Timestamp { seconds: 2, nanos: 0 }),
            ..EventFilter::default()
        };
        let w = to_sql(Some(&f), Placeholders::Dollar);
        assert_eq!(
            w.sql(),
            " WHERE time_us >= $1 AND namespace IN ($2, $3) AND scope = $4"
        );
        assert_eq!(w.values[0], SqlValue::Int(2_000_000));
        let w = to_sql(Some(&f), Placeholders::Question);
        assert_eq!(
            w.sql(),
            " WHERE time_us >= ? AND namespace IN (?, ?) AND scope = ?"
        );
    }

    /// A `since` far in the future once overflowed `seconds * 10^6` into a
    /// negative time (every event matched; a debug build panicked).
    #[test]
    fn times_past_the_range_saturate_instead_of_wrapping() {
        let e = event("shop", "api-1", Scope::ContainerLimit, 100);
        let future = EventFilter {
            since: Some(prost_types::Timestamp {
                seconds: i64::MAX / 1000,
                nanos: 999_999_999,
            }),
            ..EventFilter::default()
        };
        assert!(!matches(Some(&future), &e));
        let w = to_sql(Some(&future), Placeholders::Question);
        assert_eq!(w.values[0], SqlValue::Int(i64::MAX));
        let past = EventFilter {
            until: Some(prost_types::Timestamp {
                seconds: i64::MIN / 1000,
                nanos: 0,
            }),
            ..EventFilter::default()
        };
        assert!(!matches(Some(&past), &e));
        assert_eq!(
            to_sql(Some(&past), Placeholders::Dollar).values[0],
            SqlValue::Int(i64::MIN)
        );
        // An event stamped at the end of time sorts last, not first.
        let mut late = e.clone();
        late.time = Some(prost_types::Timestamp {
            seconds: i64::MAX,
            nanos: 0,
        });
        assert_eq!(event_time_us(&late), i64::MAX);
    }

    #[test]
    fn filters_with_too_many_values_are_refused() {
        assert_eq!(check(None), Ok(()));
        let mut f = EventFilter {
            namespaces: vec!["a".into(); MAX_FILTER_VALUES],
            ..EventFilter::default()
        };
        assert_eq!(check(Some(&f)), Ok(()));
        f.scopes.push(1);
        let error = check(Some(&f)).unwrap_err();
        assert_eq!(
            error.to_string(),
            "the filter holds 1001 values; at most 1000 are allowed, all lists together"
        );
    }
}
