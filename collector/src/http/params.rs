//! The HTTP API's query strings, parsed into the same requests the gRPC
//! `EventService` takes. Pure: no I/O, the clock passed in.
//!
//! Unknown parameters are errors rather than ignored: a misspelt
//! `namespce=prod` must not quietly return every namespace's kills. An
//! empty value is the same as the parameter left out, as an HTML form
//! sends its empty fields.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use oomlens_common::units::parse_duration;
use oomlens_proto::json::JsonEnum;
use oomlens_proto::time::parse_rfc3339;
use oomlens_proto::v1::{
    Constraint, EventFilter, GroupBy, QueryRequest, Scope, SubscribeRequest, SummaryRequest, TopRequest,
    Verdict,
};
use prost_types::Timestamp;

/// The most events one page may ask for (the gRPC `Query` cap).
pub const MAX_PAGE: u32 = 1000;

/// A query parameter the API cannot use; answered with 400.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("query parameter `{name}`: {problem}")]
pub struct ParamError {
    pub name: String,
    pub problem: String,
}

fn error(name: &str, problem: impl Into<String>) -> ParamError {
    ParamError {
        name: name.to_owned(),
        problem: problem.into(),
    }
}

/// The decoded `name=value` pairs of a query string, in order.
struct Pairs(Vec<(String, String)>);

impl Pairs {
    fn parse(query: Option<&str>, allowed: &[&str]) -> Result<Self, ParamError> {
        let pairs: Vec<(String, String)> = form_urlencoded::parse(query.unwrap_or("").as_bytes())
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        if let Some((name, _)) = pairs.iter().find(|(name, _)| !allowed.contains(&name.as_str())) {
            return Err(error(
                name,
                format!("unknown parameter; this endpoint takes {}", allowed.join(", ")),
            ));
        }
        Ok(Self(pairs))
    }

    /// The non-empty values of a parameter.
    fn values(&self, name: &str) -> Vec<&str> {
        self.0
            .iter()
            .filter(|(n, v)| n == name && !v.is_empty())
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// Every value of a repeatable parameter.
    // Result for symmetry with the other readers: `?` at every call.
    #[allow(clippy::unnecessary_wraps)]
    fn all(&self, name: &str) -> Result<Vec<String>, ParamError> {
        Ok(self.values(name).into_iter().map(str::to_owned).collect())
    }

    /// The value of a parameter given at most once.
    fn one(&self, name: &str) -> Result<Option<&str>, ParamError> {
        let mut values = self.values(name).into_iter();
        let first = values.next();
        if values.next().is_some() {
            return Err(error(name, "given more than once"));
        }
        if first.is_some_and(|v| v.trim() != v) {
            return Err(error(name, "remove the spaces around the value"));
        }
        Ok(first)
    }

    fn flag(&self, name: &str) -> Result<bool, ParamError> {
        match self.one(name)? {
            None | Some("false" | "0") => Ok(false),
            Some("true" | "1") => Ok(true),
            Some(other) => Err(error(name, format!("{other:?} is not true or false"))),
        }
    }

    fn words<E: JsonEnum>(&self, name: &str, choices: &str) -> Result<Vec<i32>, ParamError> {
        self.all(name)?
            .into_iter()
            .map(|word| {
                E::from_word(&word)
                    .map(Into::into)
                    .ok_or_else(|| error(name, format!("unknown value {word:?}; use {choices}")))
            })
            .collect()
    }

    fn limit(&self, name: &str, max: u32) -> Result<u32, ParamError> {
        match self.one(name)? {
            None => Ok(0),
            Some(text) => match text.parse::<u32>() {
                Ok(n) if (1..=max).contains(&n) => Ok(n),
                _ => Err(error(name, format!("{text:?} is not a number from 1 to {max}"))),
            },
        }
    }

    /// An RFC 3339 time, or a duration before `now` (`30m`, `7d`).
    fn time(&self, name: &str, now: SystemTime) -> Result<Option<Timestamp>, ParamError> {
        let Some(text) = self.one(name)? else {
            return Ok(None);
        };
        if let Some((seconds, nanos)) = parse_rfc3339(text) {
            return Ok(Some(Timestamp {
                seconds,
                // Below 10^9: fits.
                nanos: i32::try_from(nanos).unwrap_or(0),
            }));
        }
        let age = parse_duration(text).map_err(|_| {
            error(
                name,
                format!("{text:?} is neither an RFC 3339 time nor a duration like 30m, 6h or 7d"),
            )
        })?;
        let at = now
            .checked_sub(age)
            .unwrap_or(UNIX_EPOCH)
            .duration_since(UNIX_EPOCH)
            .unwrap_or(Duration::ZERO);
        Ok(Some(Timestamp {
            seconds: i64::try_from(at.as_secs()).unwrap_or(i64::MAX),
            nanos: i32::try_from(at.subsec_nanos()).unwrap_or(0),
        }))
    }

    fn filter(&self, now: SystemTime) -> Result<Option<EventFilter>, ParamError> {
        let filter = EventFilter {
            since: self.time("since", now)?,
            until: self.time("until", now)?,
            nodes: self.all("node")?,
            namespaces: self.all("namespace")?,
            pods: self.all("pod")?,
            containers: self.all("container")?,
            scopes: self.words::<Scope>(
                "scope",
                "container_limit, pod_limit, node_allocatable, node_oom, cpuset, mempolicy, \
                 other_cgroup or unknown",
            )?,
            constraints: self.words::<Constraint>("constraint", "memcg, global, cpuset or mempolicy")?,
            workloads: self.all("workload")?,
            silent_only: self.flag("silent")?,
            verdicts: self.words::<Verdict>(
                "verdict",
                "limit_too_low, leak_suspected, spike, node_pressure, insufficient_data, tmpfs_full, \
                 page_cache_pressure, kernel_memory or pod_limit",
            )?,
        };
        Ok((filter != EventFilter::default()).then_some(filter))
    }
}

const FILTER: &[&str] = &[
    "since",
    "until",
    "node",
    "namespace",
    "pod",
    "container",
    "scope",
    "constraint",
    "workload",
    "silent",
    "verdict",
];

fn with_filter(extra: &[&'static str]) -> Vec<&'static str> {
    FILTER.iter().chain(extra).copied().collect()
}

/// `GET /api/v1/events`: the filter, `limit` and `page_token`.
pub fn query(query: Option<&str>, now: SystemTime) -> Result<QueryRequest, ParamError> {
    let pairs = Pairs::parse(query, &with_filter(&["limit", "page_token"]))?;
    Ok(QueryRequest {
        filter: pairs.filter(now)?,
        page_size: pairs.limit("limit", MAX_PAGE)?,
        page_token: pairs.one("page_token")?.unwrap_or("").to_owned(),
    })
}

/// `GET /api/v1/stream`: the filter, `warnings` and a `cursor` (the
/// `Last-Event-ID` header, which an `EventSource` sends when it
/// reconnects, wins over it).
pub fn subscribe(
    query: Option<&str>,
    last_event_id: Option<&str>,
    now: SystemTime,
) -> Result<SubscribeRequest, ParamError> {
    let pairs = Pairs::parse(query, &with_filter(&["cursor", "warnings"]))?;
    let cursor = match last_event_id.map(str::trim).filter(|id| !id.is_empty()) {
        Some(id) => id.to_owned(),
        None => pairs.one("cursor")?.unwrap_or("").to_owned(),
    };
    Ok(SubscribeRequest {
        filter: pairs.filter(now)?,
        cursor,
        include_warnings: pairs.flag("warnings")?,
    })
}

/// `GET /api/v1/summary`: the filter and `group_by`.
pub fn summary(query: Option<&str>, now: SystemTime) -> Result<SummaryRequest, ParamError> {
    let pairs = Pairs::parse(query, &with_filter(&["group_by"]))?;
    let group_by = match pairs.one("group_by")? {
        None | Some("scope") => GroupBy::Scope,
        Some("namespace") => GroupBy::Namespace,
        Some("node") => GroupBy::Node,
        Some("workload") => GroupBy::Workload,
        Some(other) => {
            return Err(error(
                "group_by",
                format!("unknown value {other:?}; use scope, namespace, node or workload"),
            ));
        }
    };
    Ok(SummaryRequest {
        filter: pairs.filter(now)?,
        group_by: group_by.into(),
        bucket_seconds: 0,
    })
}

/// `GET /api/v1/top`: `node`, `namespace` and `limit`.
pub fn top(query: Option<&str>) -> Result<TopRequest, ParamError> {
    let pairs = Pairs::parse(query, &["node", "namespace", "limit"])?;
    Ok(TopRequest {
        nodes: pairs.all("node")?,
        namespaces: pairs.all("namespace")?,
        limit: pairs.limit("limit", MAX_PAGE)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(seconds)
    }

    #[test]
    fn filters_repeat_and_combine() {
        let request = query(
            Some("namespace=shop&namespace=pay%20ments&scope=pod_limit&silent=true&limit=5&page_token=abc&verdict=tmpfs_full"),
            at(1_000_000),
        )
        .unwrap();
        let filter = request.filter.unwrap();
        assert_eq!(filter.namespaces, ["shop", "pay ments"]);
        assert_eq!(filter.scopes, [Scope::PodLimit as i32]);
        assert_eq!(filter.verdicts, [Verdict::TmpfsFull as i32]);
        assert!(filter.silent_only);
        assert_eq!(request.page_size, 5);
        assert_eq!(request.page_token, "abc");
    }

    #[test]
    fn no_parameters_mean_no_filter_and_the_default_page() {
        let request = query(None, at(0)).unwrap();
        assert_eq!(request.filter, None);
        assert_eq!(request.page_size, 0);
        assert_eq!(request.page_token, "");
    }

    #[test]
    fn empty_values_are_parameters_left_out() {
        let request = query(Some("namespace=&pod=&since=&limit=&scope=&silent="), at(0)).unwrap();
        assert_eq!(request.filter, None);
        assert_eq!(request.page_size, 0);
    }

    #[test]
    fn times_are_rfc3339_or_an_age() {
        let request = query(
            Some("since=2h&until=2024-06-25T12:05:31.5%2B02:00"),
            at(1_000_000),
        )
        .unwrap();
        let filter = request.filter.unwrap();
        assert_eq!(filter.since.unwrap().seconds, 1_000_000 - 7200);
        let until = filter.until.unwrap();
        assert_eq!((until.seconds, until.nanos), (1_719_309_931, 500_000_000));
    }

    #[test]
    fn mistakes_name_the_parameter() {
        let cases = [
            ("namespce=prod", "namespce"),
            ("limit=0", "limit"),
            ("limit=1001", "limit"),
            ("limit=ten", "limit"),
            ("limit=1&limit=2", "limit"),
            ("scope=POD_LIMIT", "scope"),
            ("since=yesterday", "since"),
            ("silent=maybe", "silent"),
            ("limit=%205", "limit"),
        ];
        for (text, name) in cases {
            let error = query(Some(text), at(0)).unwrap_err();
            assert_eq!(error.name, name, "{text}: {error}");
        }
        assert_eq!(summary(Some("group_by=pod"), at(0)).unwrap_err().name, "group_by");
        assert_eq!(top(Some("scope=node_oom")).unwrap_err().name, "scope");
    }

    #[test]
    fn the_last_event_id_header_wins_over_the_cursor_parameter() {
        let request = subscribe(Some("cursor=7&warnings=1"), Some("42"), at(0)).unwrap();
        assert_eq!(request.cursor, "42");
        assert!(request.include_warnings);
        let request = subscribe(Some("cursor=7"), None, at(0)).unwrap();
        assert_eq!(request.cursor, "7");
        let request = subscribe(Some("cursor=7"), Some(""), at(0)).unwrap();
        assert_eq!(request.cursor, "7");
    }

    #[test]
    fn summaries_group_by_words() {
        assert_eq!(
            summary(Some("group_by=workload&node=n1"), at(0))
                .unwrap()
                .group_by,
            GroupBy::Workload as i32
        );
        assert_eq!(summary(None, at(0)).unwrap().group_by, GroupBy::Scope as i32);
    }
}
