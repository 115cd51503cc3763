//! Recognises the kernel lines that make up an OOM report, one line at a
//! time, for every format still in the field (2.6.32 to 6.x). Pure: no state.
//! A line here is the kernel's message alone; saved logs' prefixes are
//! stripped by [`crate::logtext`].

use super::fields::{KillFields, kill_fields, leading_int, paren_comm, valid_comm};

/// One line of an OOM report, with the values it carries.
#[derive(Debug, Clone, PartialEq)]
pub enum OomLine<'a> {
    /// `COMM invoked oom-killer: gfp_mask=..., order=N, oom_score_adj=N`
    Trigger(TriggerLine<'a>),
    /// `CPU: 0 UID: 0 PID: 2061 Comm: tail ...` (or without UID on older
    /// kernels; `Pid: 2061, comm: tail` on 2.6.32): names the trigger's pid.
    CpuInfo { pid: i32, comm: &'a str },
    /// `memory: usage NkB, limit NkB, failcnt N` and its `memory+swap:`,
    /// `swap:` and `kmem:` siblings.
    MemcgCounter(MemcgCounter),
    /// Pre-4.19: `Task in /A killed as a result of limit of /B` (`B` is
    /// `host` for a whole-node OOM on some vendor kernels). 3.10 prints it
    /// in two pieces, which arrive apart when interrupted: `limit_memcg` is
    /// then None here and comes with [`OomLine::LimitOf`].
    TaskIn {
        task_memcg: &'a str,
        limit_memcg: Option<&'a str>,
    },
    /// The second piece of a split `Task in` line: `as a result of limit
    /// of /B`.
    LimitOf { limit_memcg: &'a str },
    /// `Memory cgroup stats for /A:`, with a pre-4.19 kernel's stats
    /// (`cache:32KB rss:…`) on the same line.
    StatsFor { memcg: &'a str, inline: Option<&'a str> },
    /// One `key value` line of the stats dump.
    Stat { key: &'a str, value: u64 },
    /// The task table's column header: `[  pid  ]   uid  tgid total_vm ...`.
    TasksHeader(Vec<&'a str>),
    /// One task table row: `[   2061]     0  2061     8869 ... tail`.
    TaskRow { values: Vec<&'a str>, name: &'a str },
    /// 4.19+: `oom-kill:constraint=...,task=...,pid=N,uid=N`.
    Summary(Summary<'a>),
    /// Pre-5.1: `PREFIX: Kill process N (comm) score N or sacrifice child`
    /// (`kill process ... or a child` on 2.6.32): the task chosen, whose
    /// child may be the one killed.
    ChooseVictim(ChooseLine<'a>),
    /// `[PREFIX: ]Killed process N (comm) total-vm:...`: the kill itself.
    Kill(KillLine<'a>),
    /// `Tasks in /A are going to be killed due to memory.oom.group set`.
    GroupKill { memcg: &'a str },
    /// `Out of memory and no killable processes...`: no kill follows.
    NoKillable,
    /// `oom_reaper: reaped process N (comm), now anon-rss:...`: after a
    /// kill, not a kill.
    Reaped { pid: i32 },
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct TriggerLine<'a> {
    pub comm: &'a str,
    pub gfp_mask: Option<&'a str>,
    pub order: Option<i32>,
    pub oom_score_adj: Option<i32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CounterKind {
    Memory,
    MemorySwap,
    Swap,
    Kmem,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemcgCounter {
    pub kind: CounterKind,
    pub usage_kb: Option<u64>,
    pub limit_kb: Option<u64>,
    pub failcnt: Option<u64>,
}

/// The `oom-kill:` summary line.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Summary<'a> {
    /// `CONSTRAINT_MEMCG`, `CONSTRAINT_NONE`, `CONSTRAINT_CPUSET`,
    /// `CONSTRAINT_MEMORY_POLICY`.
    pub constraint: Option<&'a str>,
    pub nodemask: Option<&'a str>,
    /// The cpuset of the *invoking* task, not the victim's.
    pub cpuset: Option<&'a str>,
    pub mems_allowed: Option<String>,
    pub oom_memcg: Option<&'a str>,
    pub task_memcg: Option<&'a str>,
    /// `global_oom` flag (5.x+ global kills).
    pub global_oom: bool,
    pub task: Option<&'a str>,
    pub pid: Option<i32>,
    pub uid: Option<u32>,
}

/// The task the kernel chose (pre-5.1).
#[derive(Debug, Clone, PartialEq)]
pub struct ChooseLine<'a> {
    /// `Memory cgroup out of memory`, `Out of memory`, ...: the reason.
    pub prefix: &'a str,
    pub pid: i32,
    pub comm: &'a str,
    pub score: Option<i64>,
}

/// The values of a `Killed process` line.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct KillLine<'a> {
    /// Text before `Killed process`: `Memory cgroup out of memory`,
    /// `Out of memory`, `Out of memory (oom_kill_allocating_task)`, or empty
    /// (pre-5.1 kernels print the reason on the `Kill process` line).
    pub prefix: &'a str,
    pub pid: i32,
    pub comm: &'a str,
    pub fields: KillFields,
}

impl KillLine<'_> {
    /// The kill text says a memory cgroup ran out.
    pub fn says_memcg(&self) -> bool {
        says_memcg(self.prefix)
    }
}

/// A reason text naming a memory cgroup.
pub fn says_memcg(prefix: &str) -> bool {
    prefix.starts_with("Memory cgroup out of memory")
}

/// A reason text naming the whole system.
pub fn says_global(prefix: &str) -> bool {
    prefix.starts_with("Out of memory")
}

/// Cheap pre-filter: can this line start or complete an OOM report? Lines
/// failing it are ignored when no report is open, which keeps the parser's
/// cost per ordinary record to one pass over its bytes.
pub fn may_start_report(text: &str) -> bool {
    // A task table row: kept for the report whose anchor follows it.
    if text.starts_with('[') {
        return true;
    }
    // One pass for the letters that begin every anchor, then a look at
    // each hit: cheaper than several substring searches on the hot path.
    let bytes = text.as_bytes();
    memchr::memchr3_iter(b'K', b'k', b'T', bytes).any(|at| match bytes[at] {
        b'K' => bytes[at..].starts_with(b"Kill"),
        b'k' => {
            (at >= 4 && bytes[at - 4..].starts_with(b"oom-kill"))
                || bytes[at..].starts_with(b"kill process")
                || bytes[at..].starts_with(b"killed as a result of limit")
        }
        _ => bytes[at..].starts_with(b"Task in ") || bytes[at..].starts_with(b"Tasks in "),
    })
}

static TRIGGER: std::sync::LazyLock<memchr::memmem::Finder<'static>> =
    std::sync::LazyLock::new(|| memchr::memmem::Finder::new(" invoked oom-killer: "));
static KILLED: std::sync::LazyLock<memchr::memmem::Finder<'static>> =
    std::sync::LazyLock::new(|| memchr::memmem::Finder::new("Killed process "));
static KILL: std::sync::LazyLock<memchr::memmem::Finder<'static>> =
    std::sync::LazyLock::new(|| memchr::memmem::Finder::new("ill process "));
static LIMIT_OF: &str = " killed as a result of limit of ";

/// Classifies one kernel message. None: not part of an OOM report.
pub fn classify(text: &str) -> Option<OomLine<'_>> {
    let text = text.trim_end();
    let first = *text.as_bytes().first()?;
    match first {
        b'[' => classify_table(text),
        b'o' => {
            if let Some(rest) = text.strip_prefix("oom-kill:") {
                return Some(OomLine::Summary(parse_summary(rest)));
            }
            if let Some(rest) = text.strip_prefix("oom_reaper: reaped process ") {
                return Some(OomLine::Reaped {
                    pid: leading_int(rest)?,
                });
            }
            classify_general(text).or_else(|| classify_stat(text))
        }
        b'm' | b'k' | b's' if text.contains(": usage ") => {
            classify_counter(text).or_else(|| classify_general(text))
        }
        b'C' if text.starts_with("CPU: ") => classify_cpu(text),
        b'P' if text.starts_with("Pid: ") => classify_old_cpu(text),
        b'T' => classify_task_in(text).or_else(|| classify_general(text)),
        // A pasted log that lost the `Task in ` words.
        b'/' => classify_task_in(text).or_else(|| classify_general(text)),
        b'a' | b' ' if text.trim_start().starts_with("as a result of limit of ") => Some(OomLine::LimitOf {
            limit_memcg: text.trim_start()["as a result of limit of ".len()..].trim(),
        }),
        _ => classify_general(text).or_else(|| classify_stat(text)),
    }
}

fn classify_stat(text: &str) -> Option<OomLine<'_>> {
    let (key, value) = super::memstat::stat_line(text)?;
    Some(OomLine::Stat { key, value })
}

fn classify_task_in(text: &str) -> Option<OomLine<'_>> {
    if let Some(rest) = text.strip_prefix("Tasks in ") {
        let memcg = rest.strip_suffix(" are going to be killed due to memory.oom.group set")?;
        return Some(OomLine::GroupKill { memcg });
    }
    let rest = text.strip_prefix("Task in ").unwrap_or(text);
    if !rest.starts_with('/') {
        return None;
    }
    if let Some((task, limit)) = rest.split_once(LIMIT_OF) {
        return Some(OomLine::TaskIn {
            task_memcg: task,
            limit_memcg: Some(limit.trim()),
        });
    }
    // 3.10's first piece: `Task in /A killed`.
    let task = text.strip_prefix("Task in ")?.strip_suffix(" killed")?;
    Some(OomLine::TaskIn {
        task_memcg: task,
        limit_memcg: None,
    })
}

fn classify_general(text: &str) -> Option<OomLine<'_>> {
    // Kill, victim-choice, no-killable and stats lines all begin with one of
    // these letters; any other line can only be a trigger. Checking that
    // first keeps the many other lines of a report (stack, registers,
    // memcg stats) to a single search.
    let first = text.as_bytes()[0];
    if matches!(first, b'M' | b'O' | b'K') {
        if let Some(at) = KILLED.find(text.as_bytes()) {
            let prefix = text[..at].trim_end().trim_end_matches(':');
            if !is_kill_prefix(prefix) {
                return None;
            }
            return parse_kill(prefix, &text[at + 15..]).map(OomLine::Kill);
        }
        if let Some(at) = KILL.find(text.as_bytes())
            && at > 0
            && matches!(text.as_bytes()[at - 1], b'K' | b'k')
        {
            let prefix = text[..at - 1].trim_end().trim_end_matches(':');
            if prefix.is_empty() || !is_kill_prefix(prefix) {
                return None;
            }
            let rest = &text[at + 12..];
            let pid = leading_int(rest)?;
            let (comm, after) = paren_comm(rest, &[") score "])?;
            let score = after.strip_prefix(" score ").and_then(leading_int);
            return Some(OomLine::ChooseVictim(ChooseLine {
                prefix,
                pid,
                comm,
                score,
            }));
        }
        if text.starts_with("Out of memory and no killable processes") {
            return Some(OomLine::NoKillable);
        }
        if let Some(rest) = text.strip_prefix("Memory cgroup stats for ") {
            // Pre-4.19 kernels print the stats on the same line after ": ".
            let (memcg, inline) = match rest.split_once(": ") {
                Some((memcg, inline)) => (memcg, Some(inline)),
                None => (rest, None),
            };
            return Some(OomLine::StatsFor {
                memcg: memcg.trim_end_matches(':'),
                inline,
            });
        }
    }
    // A comm never starts with a space; stack frames always do. The memory
    // stats dump (most of a v1 report) has no colon at all.
    if first == b' ' || memchr::memchr(b':', text.as_bytes()).is_none() {
        return None;
    }
    let at = TRIGGER.find(text.as_bytes())?;
    Some(OomLine::Trigger(parse_trigger(&text[..at], &text[at + 21..])))
}

/// The kernel prefixes a kill line with the reason; anything else before
/// `Killed process` is some other message quoting it.
fn is_kill_prefix(prefix: &str) -> bool {
    prefix.is_empty() || says_memcg(prefix) || says_global(prefix)
}

fn parse_trigger<'a>(comm: &'a str, rest: &'a str) -> TriggerLine<'a> {
    let mut trigger = TriggerLine {
        comm,
        ..Default::default()
    };
    // `gfp_mask=0xcc0(GFP_KERNEL), order=0, oom_score_adj=0`; the mask's
    // flag list may itself contain `|` but never `, `.
    for field in rest.split(", ") {
        match field.split_once('=') {
            Some(("gfp_mask", v)) => trigger.gfp_mask = Some(v),
            Some(("order", v)) => trigger.order = v.parse().ok(),
            Some(("oom_score_adj", v)) => trigger.oom_score_adj = v.parse().ok(),
            _ => {}
        }
    }
    trigger
}

fn classify_cpu(text: &str) -> Option<OomLine<'_>> {
    let pid_at = text.find(" PID: ")?;
    let rest = &text[pid_at + 6..];
    let pid = leading_int(rest)?;
    let comm_at = rest.find(" Comm: ")?;
    let comm_rest = &rest[comm_at + 7..];
    // The comm is followed by taint info (" Not tainted", " Tainted: ...").
    let end = [" Not tainted", " Tainted:"]
        .iter()
        .find_map(|m| comm_rest.find(m))
        .unwrap_or(comm_rest.len());
    Some(OomLine::CpuInfo {
        pid,
        comm: &comm_rest[..end],
    })
}

/// 2.6.32: `Pid: 14095, comm: mruby Not tainted 2.6.32-...`.
fn classify_old_cpu(text: &str) -> Option<OomLine<'_>> {
    let rest = text.strip_prefix("Pid: ")?;
    let pid = leading_int(rest)?;
    let comm_rest = &rest[rest.find(", comm: ")? + 8..];
    let end = [" Not tainted", " Tainted:"]
        .iter()
        .find_map(|m| comm_rest.find(m))
        .unwrap_or(comm_rest.len());
    Some(OomLine::CpuInfo {
        pid,
        comm: &comm_rest[..end],
    })
}

fn classify_counter(text: &str) -> Option<OomLine<'_>> {
    let (name, rest) = text.split_once(": usage ")?;
    let kind = match name {
        "memory" => CounterKind::Memory,
        "memory+swap" => CounterKind::MemorySwap,
        "swap" => CounterKind::Swap,
        "kmem" => CounterKind::Kmem,
        _ => return None,
    };
    let mut counter = MemcgCounter {
        kind,
        usage_kb: None,
        limit_kb: None,
        failcnt: None,
    };
    counter.usage_kb = rest.split(',').next().and_then(super::fields::kb_value);
    for field in rest.split(", ").skip(1) {
        if let Some(v) = field.strip_prefix("limit ") {
            counter.limit_kb = super::fields::kb_value(v);
        } else if let Some(v) = field.strip_prefix("failcnt ") {
            counter.failcnt = v.trim().parse().ok();
        }
    }
    Some(OomLine::MemcgCounter(counter))
}

fn classify_table(text: &str) -> Option<OomLine<'_>> {
    let close = text.find(']')?;
    let inside = text[1..close].trim();
    let rest = &text[close + 1..];
    if inside == "pid" {
        let columns: Vec<&str> = rest.split_whitespace().collect();
        return (columns.last() == Some(&"name")).then_some(OomLine::TasksHeader(columns));
    }
    inside.parse::<i32>().ok()?;
    // Values are right-aligned numbers; the name is the rest of the line
    // after the last number (a comm may contain spaces).
    let mut values = vec![&text[1..close]];
    let mut remaining = rest;
    loop {
        let trimmed = remaining.trim_start();
        let token_end = trimmed.find(' ').unwrap_or(trimmed.len());
        let token = &trimmed[..token_end];
        let numeric = !token.is_empty()
            && token
                .bytes()
                .enumerate()
                .all(|(i, b)| b.is_ascii_digit() || (i == 0 && b == b'-'))
            && token != "-";
        if !numeric || token_end == trimmed.len() {
            values[0] = values[0].trim();
            return Some(OomLine::TaskRow {
                values,
                name: trimmed,
            });
        }
        values.push(token);
        remaining = &trimmed[token_end..];
    }
}

fn parse_summary(rest: &str) -> Summary<'_> {
    let mut summary = Summary::default();
    // The key of the field the line ends in, which may be cut: a value
    // followed by a comma is whole even when the rest is gone.
    let cut_key = rest
        .rsplit(',')
        .next()
        .and_then(|last| last.split_once('='))
        .map(|(key, _)| key);
    let mut last_key = "";
    for field in rest.split(',') {
        match field.split_once('=') {
            Some((key, value)) => {
                last_key = key;
                match key {
                    "constraint" => summary.constraint = Some(value),
                    "nodemask" => summary.nodemask = Some(value),
                    "cpuset" => summary.cpuset = Some(value),
                    "mems_allowed" => summary.mems_allowed = Some(value.to_owned()),
                    "oom_memcg" => summary.oom_memcg = Some(value),
                    "task_memcg" => summary.task_memcg = Some(value),
                    "task" => summary.task = Some(value).filter(|t| valid_comm(t)),
                    "pid" => summary.pid = value.parse().ok(),
                    "uid" => summary.uid = value.parse().ok(),
                    _ => {}
                }
            }
            None if field == "global_oom" => summary.global_oom = true,
            // `mems_allowed=0,2` is printed as a list: its later elements
            // arrive as bare fields.
            None if last_key == "mems_allowed" && field.bytes().all(|b| b.is_ascii_digit() || b == b'-') => {
                if let Some(mems) = summary.mems_allowed.as_mut() {
                    mems.push(',');
                    mems.push_str(field);
                }
            }
            None => {}
        }
    }
    // A line cut short (a paste, a log shipper's limit) ends in a value
    // that may itself be cut: the kernel always ends with `uid=N`.
    if summary.uid.is_none()
        && let Some(cut_key) = cut_key
    {
        match cut_key {
            "oom_memcg" => summary.oom_memcg = None,
            "task_memcg" => summary.task_memcg = None,
            "task" => summary.task = None,
            "pid" => summary.pid = None,
            _ => {}
        }
    }
    summary
}

fn parse_kill<'a>(prefix: &'a str, rest: &'a str) -> Option<KillLine<'a>> {
    let pid = leading_int(rest)?;
    let (comm, tail) = paren_comm(
        rest,
        &[") total-vm:", "), UID", ") vsz:", "), total-vm:", ") total-vm"],
    )?;
    // RHEL 6 prints `Killed process N, UID U, (comm) total-vm:...`: the
    // fields before the name count too.
    let before = &rest[..rest.find('(').unwrap_or(0)];
    let mut fields = kill_fields(tail);
    if fields.uid.is_none() {
        fields.uid = kill_fields(before).uid;
    }
    Some(KillLine {
        prefix,
        pid,
        comm,
        fields,
    })
}

#[cfg(test)]
#[path = "lines_tests.rs"]
mod tests;
