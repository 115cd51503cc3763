//! The pages, from the data the handlers fetched to HTML. Pure: every
//! string from an event goes through [`escape`].

use std::borrow::Cow;
use std::fmt::Write as _;

use oomlens_common::kill_point::through_kill;
use oomlens_common::render::{Style, facts, location};
use oomlens_common::units::{human_bytes, quantity};
use oomlens_proto::time::format_rfc3339;
use oomlens_proto::v1::{ContainerMemoryStatus, OomEvent, Scope, SummaryResponse, Verdict};

use super::html::{escape, page, query_value};
use super::svg;

/// The kill list's filters, as given in the URL (and echoed in the form).
#[derive(Debug, Clone, Default)]
pub(super) struct ListFilters {
    pub(super) namespace: String,
    pub(super) pod: String,
    pub(super) node: String,
    pub(super) scope: String,
    pub(super) verdict: String,
    pub(super) since: String,
}

impl ListFilters {
    /// The filters as query parameters (for the stream and the next page).
    pub(super) fn query(&self) -> String {
        [
            ("namespace", &self.namespace),
            ("pod", &self.pod),
            ("node", &self.node),
            ("scope", &self.scope),
            ("verdict", &self.verdict),
            ("since", &self.since),
        ]
        .iter()
        .filter(|(_, v)| !v.is_empty())
        .map(|(k, v)| format!("{k}={}", query_value(v)))
        .collect::<Vec<_>>()
        .join("&")
    }
}

fn time_text(event: &OomEvent) -> String {
    event.time.as_ref().map_or_else(
        || "time unknown".to_owned(),
        |t| {
            let text = format_rfc3339(t.seconds, 0);
            text.replace('T', " ")
        },
    )
}

fn word<E: oomlens_proto::json::JsonEnum>(value: i32) -> String {
    E::try_from(value)
        .ok()
        .and_then(E::word)
        .unwrap_or_else(|| "-".to_owned())
}

fn limit_of(event: &OomEvent) -> Option<u64> {
    event
        .container
        .as_ref()
        .and_then(|c| c.memory_limit_bytes)
        .or_else(|| event.history.as_ref().and_then(|h| h.limit_bytes))
        .or_else(|| {
            event
                .memcg_usage
                .as_ref()
                .and_then(|u| u.limit_kb.map(|kb| kb.saturating_mul(1024)))
        })
}

/// The id as used in URLs: the stored id, escaped (ids are hex, but an
/// agent could send anything).
fn id_path(event: &OomEvent) -> String {
    query_value(&event.id)
}

/// One row of the kill list (also served alone, for live updates).
pub(super) fn row(event: &OomEvent) -> String {
    let scope = word::<Scope>(event.scope);
    let verdict = event
        .analysis
        .as_ref()
        .map_or_else(|| "-".to_owned(), |a| word::<Verdict>(a.verdict));
    let limit = limit_of(event);
    // Through the kernel's figure at the kill, as on the kill's own page.
    let history = event.history.as_ref().map(|h| through_kill(event, h));
    let peak = history.as_ref().and_then(|h| {
        h.peak_working_set_bytes
            .into_iter()
            .chain(h.samples.iter().filter_map(|s| s.working_set_bytes))
            .max()
    });
    let silent = if event.silent == Some(true) {
        " <span class=\"flag\">silent</span>"
    } else {
        ""
    };
    format!(
        "<tr id=\"kill-{}\"><td><a href=\"/kills/{}\">{}</a></td><td class=\"scope {scope}\">{}</td>\
         <td>{}</td><td>{}{silent}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td>{}</td></tr>",
        escape(&event.id),
        id_path(event),
        escape(&time_text(event)),
        escape(&scope),
        escape(&verdict),
        escape(&location(event)),
        limit.map_or("-".to_owned(), human_bytes),
        peak.map_or("-".to_owned(), human_bytes),
        svg::sparkline(history.as_deref(), limit),
    )
}

/// Every word of an enum, in the contract's order.
fn words<E: oomlens_proto::json::JsonEnum>() -> Vec<String> {
    (1..)
        .map_while(|n| E::try_from(n).ok())
        .filter_map(E::word)
        .collect()
}

const PERIODS: &[(&str, &str)] = &[
    ("", "any time"),
    ("1h", "last hour"),
    ("6h", "last 6 hours"),
    ("1d", "last day"),
    ("7d", "last week"),
    ("30d", "last 30 days"),
];

fn select(name: &str, current: &str, options: &[(&str, &str)]) -> String {
    let mut html = format!("<select name=\"{name}\" id=\"f-{name}\">");
    for (value, label) in options {
        let selected = if *value == current { " selected" } else { "" };
        let _ = write!(html, "<option value=\"{value}\"{selected}>{label}</option>");
    }
    html.push_str("</select>");
    html
}

fn filter_form(filters: &ListFilters) -> String {
    let text = |name: &str, value: &str, label: &str| {
        format!(
            "<label for=\"f-{name}\">{label}</label><input id=\"f-{name}\" name=\"{name}\" value=\"{}\">",
            escape(value)
        )
    };
    let scope_words = words::<Scope>();
    let mut scopes: Vec<(&str, &str)> = vec![("", "any scope")];
    scopes.extend(scope_words.iter().map(|s| (s.as_str(), s.as_str())));
    let verdict_words = words::<Verdict>();
    let mut verdicts: Vec<(&str, &str)> = vec![("", "any verdict")];
    verdicts.extend(verdict_words.iter().map(|s| (s.as_str(), s.as_str())));
    format!(
        "<form class=\"filters\" method=\"get\" action=\"/\">{}{}{}\
         <label for=\"f-scope\">Scope</label>{}<label for=\"f-verdict\">Verdict</label>{}\
         <label for=\"f-since\">Time</label>{}\
         <button type=\"submit\">Filter</button></form>",
        text("namespace", &filters.namespace, "Namespace"),
        text("pod", &filters.pod, "Pod"),
        text("node", &filters.node, "Node"),
        select("scope", &filters.scope, &scopes),
        select("verdict", &filters.verdict, &verdicts),
        select("since", &filters.since, PERIODS),
    )
}

/// The kill list: filters, the rows, the next page, and (on the first
/// page) the stream that adds new kills live.
pub(super) fn list(
    filters: &ListFilters,
    events: &[OomEvent],
    next_page: Option<&str>,
    first_page: bool,
) -> String {
    let mut body = String::from("<h1>OOM kills</h1>");
    body.push_str(&filter_form(filters));
    let stream = if first_page {
        let query = filters.query();
        let filters_only = query
            .split('&')
            .filter(|p| !p.starts_with("since="))
            .collect::<Vec<_>>()
            .join("&");
        format!(
            " data-stream=\"/api/v1/stream{}{}\"",
            if filters_only.is_empty() { "" } else { "?" },
            escape(&filters_only)
        )
    } else {
        String::new()
    };
    let _ = write!(
        body,
        "<p class=\"status\"><span id=\"live\" role=\"status\">{}</span></p>\
         <div class=\"table\"><table><thead><tr><th>Time (UTC)</th><th>Scope</th><th>Verdict</th>\
         <th>Where</th><th>Limit</th><th>Peak</th><th>Working set before the kill</th></tr></thead>\
         <tbody id=\"kills\"{stream}>",
        if first_page { "" } else { "older kills" }
    );
    for event in events {
        body.push_str(&row(event));
    }
    body.push_str("</tbody></table></div>");
    if events.is_empty() {
        body.push_str("<p class=\"empty\">No kills match.</p>");
    }
    if let Some(token) = next_page {
        let query = filters.query();
        let _ = write!(
            body,
            "<p><a class=\"more\" href=\"/?{}{}page_token={}\">Older kills</a></p>",
            escape(&query),
            if query.is_empty() { "" } else { "&amp;" },
            escape(&query_value(token))
        );
    }
    page("OOM kills", "/", &body)
}

/// What scope means, for people.
fn scope_story(scope: i32) -> &'static str {
    match Scope::try_from(scope).unwrap_or(Scope::Unknown) {
        Scope::ContainerLimit => {
            "The container used all the memory its own limit allows; the kernel killed a process in it."
        }
        Scope::PodLimit => {
            "The pod's containers together used all the memory the pod's limit allows; the kernel killed a process in one of them."
        }
        Scope::NodeAllocatable => {
            "The node's pods together used all the memory the kubelet allots to pods (node allocatable)."
        }
        Scope::NodeOom => {
            "The whole node ran out of memory: the kernel killed whichever process it judged worst, which need not be the one that grew."
        }
        Scope::Cpuset => "The memory of the NUMA nodes the process may use (its cpuset) ran out.",
        Scope::Mempolicy => "The memory the process's memory policy allows ran out.",
        Scope::OtherCgroup => {
            "A memory cgroup outside Kubernetes (a systemd service or another container) reached its limit."
        }
        Scope::Unknown | Scope::Unspecified => "The kernel's report does not say which limit was hit.",
    }
}

/// One kill in full.
pub(super) fn kill(event: &OomEvent) -> String {
    let place = location(event);
    let mut body = format!(
        "<h1>OOM kill: {}</h1><p class=\"lede\">{} UTC on {} · <code>{}</code></p><p>{}</p>",
        escape(&place),
        escape(&time_text(event)),
        escape(event.node.as_deref().unwrap_or("an unknown node")),
        escape(&event.id),
        escape(scope_story(event.scope)),
    );
    if let Some(analysis) = &event.analysis {
        let _ = write!(
            body,
            "<section class=\"verdict\"><h2>Verdict: {}</h2><p>{}</p>",
            escape(&word::<Verdict>(analysis.verdict).replace('_', " ")),
            escape(&analysis.reasoning)
        );
        if let Some(mismatch) = &analysis.status_reasoning {
            let _ = write!(
                body,
                "<h3>What Kubernetes shows</h3><p class=\"mismatch\">{}</p>",
                escape(mismatch)
            );
        }
        if let Some(limit) = analysis.recommended_limit_bytes {
            let container = event
                .container
                .as_ref()
                .and_then(|c| c.name.as_deref())
                .unwrap_or("CONTAINER");
            let _ = write!(
                body,
                "<h3>Recommended limit: {}</h3><p>{}</p><pre class=\"yaml\"><code>containers:\n  - name: {}\n    resources:\n      limits:\n        memory: {}</code></pre>",
                quantity(limit),
                escape(analysis.recommendation_reasoning.as_deref().unwrap_or("")),
                escape(container),
                quantity(limit)
            );
        }
        body.push_str("</section>");
    }
    let limit = limit_of(event);
    // Each curve of the limited cgroup ends with the kernel's figure at the
    // kill: a climb between two samples shows.
    let ends_at_kill = "<p class=\"legend\">The last point is the kernel's own report at the kill.</p>";
    if let Some(history) = event.history.as_ref().map(|h| through_kill(event, h))
        && let Some(chart) = svg::memory_chart(&history, limit.or(history.limit_bytes))
    {
        let note = if matches!(history, Cow::Owned(_)) {
            ends_at_kill
        } else {
            ""
        };
        let _ = write!(
            body,
            "<section><h2>Memory before the kill</h2>{chart}\
             <p class=\"legend\"><span class=\"key ws\">working set</span> <span class=\"key usage\">usage</span> <span class=\"key limit\">limit</span></p>{note}</section>"
        );
    }
    // The limited cgroup's layers: its own history for a pod-level kill.
    let limited = event
        .oom_memcg_history
        .as_ref()
        .filter(|h| Some(h.cgroup.as_str()) == event.oom_memcg.as_deref())
        .or(event.history.as_ref())
        .map(|h| through_kill(event, h));
    if let Some(history) = &limited
        && let Some(chart) = svg::layers_chart(history, history.limit_bytes.or(limit))
    {
        let _ = write!(
            body,
            "<section><h2>What the memory held</h2>{chart}\
             <p class=\"legend\"><span class=\"key anon\">anon</span> <span class=\"key kernel\">kernel</span> \
             <span class=\"key shmem\">shmem/tmpfs</span> <span class=\"key cache\">page cache</span></p></section>"
        );
    }
    // A pod-level kill: the pod's own curve too.
    if let Some(pod_history) = event
        .oom_memcg_history
        .as_ref()
        .filter(|h| Some(h.cgroup.as_str()) != event.history.as_ref().map(|h| h.cgroup.as_str()))
        .map(|h| through_kill(event, h))
        && let Some(chart) = svg::memory_chart(&pod_history, pod_history.limit_bytes)
    {
        let _ = write!(
            body,
            "<section><h2>The limited cgroup ({})</h2>{chart}</section>",
            escape(&pod_history.cgroup)
        );
    }
    body.push_str("<section><h2>Details</h2><table class=\"facts\">");
    for (name, value) in facts(event, Style::PLAIN) {
        let _ = write!(
            body,
            "<tr><th scope=\"row\">{}</th><td>{}</td></tr>",
            escape(name),
            escape(&value)
        );
    }
    body.push_str("</table></section>");
    if !event.kernel_lines.is_empty() {
        body.push_str("<section><h2>Kernel log</h2><pre class=\"kernel\">");
        for line in &event.kernel_lines {
            if let Some(us) = line.monotonic_us {
                let _ = write!(body, "[{:>5}.{:06}] ", us / 1_000_000, us % 1_000_000);
            }
            body.push_str(&escape(&line.text));
            body.push('\n');
        }
        body.push_str("</pre></section>");
    }
    page(&format!("OOM kill: {place}"), "", &body)
}

/// Kill counts by one grouping, as bars and as a table.
pub(super) fn summary(group_by: &str, period: &str, until: &str, response: &SummaryResponse) -> String {
    let mut body =
        String::from("<h1>Summary</h1><form class=\"filters\" method=\"get\" action=\"/summary\">");
    if !until.is_empty() {
        let _ = write!(
            body,
            "<input type=\"hidden\" name=\"until\" value=\"{}\">",
            escape(until)
        );
    }
    let groups = [
        ("scope", "by scope"),
        ("namespace", "by namespace"),
        ("workload", "by workload"),
        ("node", "by node"),
    ];
    let _ = write!(
        body,
        "<label for=\"f-group_by\">Group</label>{}<label for=\"f-since\">Time</label>{}<button type=\"submit\">Show</button></form>",
        select("group_by", group_by, &groups),
        select("since", period, PERIODS)
    );
    let rows: Vec<(String, u64)> = response
        .groups
        .iter()
        .map(|g| {
            let key = if g.key.is_empty() {
                "(none)".to_owned()
            } else {
                g.key.clone()
            };
            (key, g.count)
        })
        .collect();
    let _ = write!(body, "<p>{} kills.</p>", response.total);
    if !rows.is_empty() {
        body.push_str(&svg::bars(&rows));
    }
    if let Some(start) = response
        .timeline_start
        .as_ref()
        .filter(|_| response.bucket_seconds > 0)
    {
        // The busiest groups, each as a strip over time.
        let strips: Vec<(String, Vec<u64>)> = response
            .groups
            .iter()
            .take(8)
            .map(|g| {
                let key = if g.key.is_empty() {
                    "(none)".to_owned()
                } else {
                    g.key.clone()
                };
                (key, g.timeline.clone())
            })
            .collect();
        let buckets = strips.iter().map(|s| s.1.len()).max().unwrap_or(0);
        let end = start.seconds + i64::from(response.bucket_seconds) * i64::try_from(buckets).unwrap_or(0);
        let when = |seconds: i64| {
            format_rfc3339(seconds, 0)
                .replace('T', " ")
                .trim_end_matches('Z')
                .to_owned()
        };
        let _ = write!(
            body,
            "<section><h2>Over time</h2><p>Kills per {} (UTC).</p>{}</section>",
            escape(&oomlens_common::units::human_seconds(f64::from(
                response.bucket_seconds
            ))),
            svg::timeline(&strips, &when(start.seconds), &when(end))
        );
    }
    body.push_str("<div class=\"table\"><table><thead><tr><th>Group</th><th>Kills</th><th>Silent</th><th>First (UTC)</th><th>Last (UTC)</th></tr></thead><tbody>");
    let time = |t: Option<&prost_types::Timestamp>| {
        t.map_or("-".to_owned(), |t| format_rfc3339(t.seconds, 0).replace('T', " "))
    };
    for g in &response.groups {
        let _ = write!(
            body,
            "<tr><td>{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td>{}</td><td>{}</td></tr>",
            escape(if g.key.is_empty() { "(none)" } else { &g.key }),
            g.count,
            g.silent,
            time(g.first.as_ref()),
            time(g.last.as_ref())
        );
    }
    body.push_str("</tbody></table></div>");
    page("Summary", "/summary", &body)
}

/// Live containers closest to their limits.
pub(super) fn top(containers: &[ContainerMemoryStatus]) -> String {
    let mut body = String::from(
        "<h1>Closest to their limits</h1><p>Live containers, from the agents' latest reports.</p>\
         <div class=\"table\"><table><thead><tr><th>Node</th><th>Where</th><th>Working set</th><th>Limit</th>\
         <th>Use</th><th>Growth</th><th>To the limit</th></tr></thead><tbody>",
    );
    for c in containers {
        let place = match (&c.pod, &c.container) {
            (Some(pod), container) => format!(
                "{}/{} {}",
                pod.namespace.as_deref().unwrap_or("?"),
                pod.name.as_deref().unwrap_or("?"),
                container.as_ref().and_then(|c| c.name.as_deref()).unwrap_or("")
            ),
            (None, _) => c.cgroup.clone(),
        };
        let limit = c.limit_bytes.unwrap_or(0);
        let used = if limit > 0 {
            format!("{:.0}%", c.working_set_bytes as f64 / limit as f64 * 100.0)
        } else {
            "-".to_owned()
        };
        let to_limit = match c.seconds_to_limit {
            Some(s) if s < 120.0 => format!("{s:.0} s"),
            Some(s) if s < 7200.0 => format!("{:.0} min", s / 60.0),
            Some(s) => format!("{:.1} h", s / 3600.0),
            None => "not growing".to_owned(),
        };
        let _ = write!(
            body,
            "<tr><td>{}</td><td>{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{used}</td>\
             <td class=\"num\">{}/s</td><td>{to_limit}</td></tr>",
            escape(&c.node),
            escape(place.trim()),
            human_bytes(c.working_set_bytes),
            c.limit_bytes.map_or("-".to_owned(), human_bytes),
            human_bytes(oomlens_common::units::saturating_u64(
                c.growth_bytes_per_second.max(0.0)
            )),
        );
    }
    body.push_str("</tbody></table></div>");
    if containers.is_empty() {
        body.push_str("<p class=\"empty\">No agent has reported containers with a limit.</p>");
    }
    page("Top", "/top", &body)
}

/// The login form (when the collector has tokens).
pub(super) fn login(next: &str, failed: bool) -> String {
    let message = if failed {
        "<p class=\"error\" role=\"alert\">That token is not a read or admin token of this collector.</p>"
    } else {
        ""
    };
    let body = format!(
        "<h1>Sign in</h1>{message}<form class=\"login\" method=\"post\" action=\"/login\">\
         <input type=\"hidden\" name=\"next\" value=\"{}\"><label for=\"token\">Read token</label>\
         <input id=\"token\" name=\"token\" type=\"password\" autocomplete=\"current-password\" required>\
         <button type=\"submit\">Sign in</button></form>\
         <p>A read or admin token from the collector's token file. It is kept in a cookie only this site can read.</p>",
        escape(next)
    );
    page("Sign in", "", &body)
}

/// An error page.
pub(super) fn error(title: &str, message: &str) -> String {
    page(
        title,
        "",
        &format!("<h1>{}</h1><p>{}</p>", escape(title), escape(message)),
    )
}
