//! Recognises the kernel lines that make up an OOM report, one line at a
//! time, for every format still in the field (3.x to 6.x). Pure: no state.

/// One line of an OOM report, with the values it carries.
#[derive(Debug, Clone, PartialEq)]
pub enum OomLine<'a> {
    /// `COMM invoked oom-killer: gfp_mask=..., order=N, oom_score_adj=N`
    Trigger(TriggerLine<'a>),
    /// `CPU: 0 UID: 0 PID: 2061 Comm: tail ...` (or without UID on older
    /// kernels): names the trigger's pid.
    CpuInfo { pid: i32, comm: &'a str },
    /// `memory: usage NkB, limit NkB, failcnt N` and its `memory+swap:`,
    /// `swap:` and `kmem:` siblings.
    MemcgCounter(MemcgCounter),
    /// Pre-4.19: `Task in /A killed as a result of limit of /B`.
    TaskIn {
        task_memcg: &'a str,
        limit_memcg: &'a str,
    },
    /// `Memory cgroup stats for /A:` (the stats dump that follows is ignored).
    StatsFor { memcg: &'a str },
    /// The task table's column header: `[  pid  ]   uid  tgid total_vm ...`.
    TasksHeader(Vec<&'a str>),
    /// One task table row: `[   2061]     0  2061     8869 ... tail`.
    TaskRow { values: Vec<&'a str>, name: &'a str },
    /// 4.19+: `oom-kill:constraint=...,task=...,pid=N,uid=N`.
    Summary(Summary<'a>),
    /// Pre-5.1: `PREFIX: Kill process N (comm) score N or sacrifice child`.
    ChooseVictim {
        pid: i32,
        comm: &'a str,
        score: Option<i64>,
    },
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

/// The values of a `Killed process` line.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct KillLine<'a> {
    /// Text before `Killed process`: `Memory cgroup out of memory`,
    /// `Out of memory`, `Out of memory (oom_kill_allocating_task)`, or empty
    /// (pre-5.1 kernels print the reason on the `Kill process` line).
    pub prefix: &'a str,
    pub pid: i32,
    pub comm: &'a str,
    pub uid: Option<u32>,
    pub total_vm_kb: Option<u64>,
    pub anon_rss_kb: Option<u64>,
    pub file_rss_kb: Option<u64>,
    pub shmem_rss_kb: Option<u64>,
    pub pgtables_kb: Option<u64>,
    pub oom_score_adj: Option<i32>,
}

impl KillLine<'_> {
    /// The kill text says a memory cgroup ran out.
    pub fn says_memcg(&self) -> bool {
        self.prefix.starts_with("Memory cgroup out of memory")
    }
}

/// Cheap pre-filter: can this line start or complete an OOM report? Lines
/// failing it are ignored when no report is open, which keeps the parser's
/// cost per ordinary record to two substring searches.
pub fn may_start_report(text: &str) -> bool {
    // One pass for either letter, then a look at each hit: cheaper than
    // two substring searches on the hot path.
    let bytes = text.as_bytes();
    memchr::memchr2_iter(b'K', b'k', bytes).any(|at| match bytes[at] {
        b'K' => bytes[at..].starts_with(b"Kill"),
        _ => at >= 4 && bytes[at - 4..].starts_with(b"oom-kill"),
    })
}

static TRIGGER: std::sync::LazyLock<memchr::memmem::Finder<'static>> =
    std::sync::LazyLock::new(|| memchr::memmem::Finder::new(" invoked oom-killer: "));
static KILLED: std::sync::LazyLock<memchr::memmem::Finder<'static>> =
    std::sync::LazyLock::new(|| memchr::memmem::Finder::new("Killed process "));
static KILL: std::sync::LazyLock<memchr::memmem::Finder<'static>> =
    std::sync::LazyLock::new(|| memchr::memmem::Finder::new("Kill process "));

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
            classify_general(text)
        }
        b'm' | b'k' | b's' => classify_counter(text).or_else(|| classify_general(text)),
        b'C' if text.starts_with("CPU: ") => classify_cpu(text),
        b'T' => {
            if let Some(rest) = text.strip_prefix("Task in ") {
                let (task, limit) = rest.split_once(" killed as a result of limit of ")?;
                return Some(OomLine::TaskIn {
                    task_memcg: task,
                    limit_memcg: limit.trim(),
                });
            }
            if let Some(rest) = text.strip_prefix("Tasks in ") {
                let memcg = rest.strip_suffix(" are going to be killed due to memory.oom.group set")?;
                return Some(OomLine::GroupKill { memcg });
            }
            classify_general(text)
        }
        _ => classify_general(text),
    }
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
        if let Some(at) = KILL.find(text.as_bytes()) {
            let prefix = text[..at].trim_end().trim_end_matches(':');
            if !is_kill_prefix(prefix) || prefix.is_empty() {
                return None;
            }
            let rest = &text[at + 13..];
            let pid = leading_int(rest)?;
            let (comm, after) = paren_comm(rest, &[") score "])?;
            let score = after.strip_prefix(" score ").and_then(leading_int);
            return Some(OomLine::ChooseVictim { pid, comm, score });
        }
        if text.starts_with("Out of memory and no killable processes") {
            return Some(OomLine::NoKillable);
        }
        if let Some(rest) = text.strip_prefix("Memory cgroup stats for ") {
            // Pre-4.19 kernels print the stats on the same line after ": ".
            let memcg = rest.split(": ").next().unwrap_or(rest);
            return Some(OomLine::StatsFor {
                memcg: memcg.trim_end_matches(':'),
            });
        }
    }
    // A comm never starts with a space; stack frames always do.
    if first == b' ' {
        return None;
    }
    let at = TRIGGER.find(text.as_bytes())?;
    Some(OomLine::Trigger(parse_trigger(&text[..at], &text[at + 21..])))
}

/// The kernel prefixes a kill line with the reason; anything else before
/// `Killed process` is some other message quoting it.
fn is_kill_prefix(prefix: &str) -> bool {
    prefix.is_empty()
        || prefix.starts_with("Memory cgroup out of memory")
        || prefix.starts_with("Out of memory")
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
    counter.usage_kb = rest.split(',').next().and_then(kb_value);
    for field in rest.split(", ").skip(1) {
        if let Some(v) = field.strip_prefix("limit ") {
            counter.limit_kb = kb_value(v);
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
                    "task" => summary.task = Some(value),
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
    summary
}

fn parse_kill<'a>(prefix: &'a str, rest: &'a str) -> Option<KillLine<'a>> {
    let pid = leading_int(rest)?;
    let (comm, tail) = paren_comm(rest, &[") total-vm:", "), UID", ") vsz:", "), total-vm:"])?;
    let mut kill = KillLine {
        prefix,
        pid,
        comm,
        ..Default::default()
    };
    // Fields come as `key:NkB`, separated by ", " or " "; RHEL backports
    // print `, UID 0, total-vm:...`.
    let mut tokens = tail.split([',', ' ']).filter(|t| !t.is_empty()).peekable();
    while let Some(token) = tokens.next() {
        let (key, value) = match token.split_once(':') {
            Some((k, v)) if !v.is_empty() => (k, v),
            Some((k, _)) => (k, tokens.next().unwrap_or_default()),
            None => (
                token,
                tokens
                    .next_if(|t| t.bytes().all(|b| b.is_ascii_digit()))
                    .unwrap_or_default(),
            ),
        };
        match key {
            "UID" => kill.uid = value.parse().ok(),
            "total-vm" | "vsz" => kill.total_vm_kb = kb_value(value),
            "anon-rss" => kill.anon_rss_kb = kb_value(value),
            "file-rss" => kill.file_rss_kb = kb_value(value),
            "shmem-rss" => kill.shmem_rss_kb = kb_value(value),
            "pgtables" => kill.pgtables_kb = kb_value(value),
            "oom_score_adj" => kill.oom_score_adj = value.parse().ok(),
            _ => {}
        }
    }
    Some(kill)
}

/// Extracts `(comm)` after a pid: `1234 (my proc) total-vm...`. A comm may
/// contain spaces and parentheses, so the closing parenthesis is the one
/// followed by a known continuation, else the last one.
fn paren_comm<'a>(rest: &'a str, endings: &[&str]) -> Option<(&'a str, &'a str)> {
    let open = rest.find(" (")? + 2;
    let body = &rest[open..];
    let close = endings
        .iter()
        .filter_map(|e| body.find(e))
        .min()
        .or_else(|| body.rfind(')'))?;
    Some((&body[..close], &body[close + 1..]))
}

fn leading_int<T: std::str::FromStr>(text: &str) -> Option<T> {
    let text = text.trim_start();
    let end = text
        .bytes()
        .enumerate()
        .find(|&(i, b)| !(b.is_ascii_digit() || (i == 0 && b == b'-')))
        .map_or(text.len(), |(i, _)| i);
    text[..end].parse().ok()
}

fn kb_value(text: &str) -> Option<u64> {
    text.trim().strip_suffix("kB").unwrap_or(text.trim()).parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trigger_lines_of_every_era() {
        let Some(OomLine::Trigger(t)) =
            classify("tail invoked oom-killer: gfp_mask=0xcc0(GFP_KERNEL), order=0, oom_score_adj=0")
        else {
            panic!("trigger")
        };
        assert_eq!(
            (t.comm, t.gfp_mask, t.order, t.oom_score_adj),
            ("tail", Some("0xcc0(GFP_KERNEL)"), Some(0), Some(0))
        );
        // 4.4: numeric mask; 3.10: oom_adj as well; a comm with a space.
        let Some(OomLine::Trigger(t)) =
            classify("Web Content invoked oom-killer: gfp_mask=0x24201ca, order=0, oom_score_adj=-999")
        else {
            panic!("trigger")
        };
        assert_eq!((t.comm, t.oom_score_adj), ("Web Content", Some(-999)));
        let Some(OomLine::Trigger(t)) =
            classify("java invoked oom-killer: gfp_mask=0xd0, order=0, oom_adj=0, oom_score_adj=0")
        else {
            panic!("trigger")
        };
        assert_eq!((t.gfp_mask, t.oom_score_adj), (Some("0xd0"), Some(0)));
    }

    #[test]
    fn kill_lines_of_every_era() {
        let modern = "Memory cgroup out of memory: Killed process 2061 (tail) total-vm:35476kB, anon-rss:32512kB, file-rss:1584kB, shmem-rss:0kB, UID:0 pgtables:116kB oom_score_adj:0";
        let Some(OomLine::Kill(k)) = classify(modern) else {
            panic!("kill")
        };
        assert!(k.says_memcg());
        assert_eq!((k.pid, k.comm, k.uid), (2061, "tail", Some(0)));
        assert_eq!(
            (k.total_vm_kb, k.anon_rss_kb, k.file_rss_kb, k.shmem_rss_kb),
            (Some(35476), Some(32512), Some(1584), Some(0))
        );
        assert_eq!((k.pgtables_kb, k.oom_score_adj), (Some(116), Some(0)));

        let rhel = "Killed process 2542 (java), UID 1000, total-vm:5306232kB, anon-rss:2086600kB, file-rss:0kB, shmem-rss:0kB";
        let Some(OomLine::Kill(k)) = classify(rhel) else {
            panic!("kill")
        };
        assert_eq!(
            (k.prefix, k.pid, k.comm, k.uid, k.anon_rss_kb),
            ("", 2542, "java", Some(1000), Some(2086600))
        );
        assert_eq!(k.pgtables_kb, None);

        let old = "Killed process 8123 (stress) total-vm:138620kB, anon-rss:131272kB, file-rss:0kB";
        let Some(OomLine::Kill(k)) = classify(old) else {
            panic!("kill")
        };
        assert_eq!((k.comm, k.shmem_rss_kb, k.uid), ("stress", None, None));

        let global = "Out of memory: Killed process 77 (my (odd) proc) total-vm:1kB, anon-rss:2kB, file-rss:3kB, shmem-rss:4kB, UID:5 pgtables:6kB oom_score_adj:-998";
        let Some(OomLine::Kill(k)) = classify(global) else {
            panic!("kill")
        };
        assert!(!k.says_memcg());
        assert_eq!(
            (k.comm, k.uid, k.oom_score_adj),
            ("my (odd) proc", Some(5), Some(-998))
        );

        let choose = "Memory cgroup out of memory: Kill process 8123 (stress) score 1000 or sacrifice child";
        assert_eq!(
            classify(choose),
            Some(OomLine::ChooseVictim {
                pid: 8123,
                comm: "stress",
                score: Some(1000)
            })
        );
    }

    #[test]
    fn summary_lines() {
        let Some(OomLine::Summary(s)) = classify(
            "oom-kill:constraint=CONSTRAINT_MEMCG,nodemask=(null),cpuset=/,mems_allowed=0,oom_memcg=/a/b,task_memcg=/a/b/c,task=tail,pid=2061,uid=0",
        ) else {
            panic!("summary")
        };
        assert_eq!(s.constraint, Some("CONSTRAINT_MEMCG"));
        assert_eq!(
            (s.oom_memcg, s.task_memcg, s.task, s.pid, s.uid),
            (Some("/a/b"), Some("/a/b/c"), Some("tail"), Some(2061), Some(0))
        );
        assert!(!s.global_oom);
        let Some(OomLine::Summary(s)) = classify(
            "oom-kill:constraint=CONSTRAINT_NONE,nodemask=(null),cpuset=cri-containerd-1.scope,mems_allowed=0-1,4,global_oom,task_memcg=/system.slice/x.service,task=x,pid=9,uid=0",
        ) else {
            panic!("summary")
        };
        assert!(s.global_oom);
        assert_eq!(s.mems_allowed.as_deref(), Some("0-1,4"));
        assert_eq!(s.oom_memcg, None);
        assert_eq!(s.cpuset, Some("cri-containerd-1.scope"));
    }

    #[test]
    fn memcg_counters_and_tables() {
        assert_eq!(
            classify("memory: usage 32768kB, limit 32768kB, failcnt 19"),
            Some(OomLine::MemcgCounter(MemcgCounter {
                kind: CounterKind::Memory,
                usage_kb: Some(32768),
                limit_kb: Some(32768),
                failcnt: Some(19)
            }))
        );
        assert!(matches!(
            classify("swap: usage 0kB, limit 9007199254740988kB, failcnt 0"),
            Some(OomLine::MemcgCounter(MemcgCounter {
                kind: CounterKind::Swap,
                ..
            }))
        ));
        assert_eq!(
            classify("Task in /kubepods/pod1/abc killed as a result of limit of /kubepods/pod1"),
            Some(OomLine::TaskIn {
                task_memcg: "/kubepods/pod1/abc",
                limit_memcg: "/kubepods/pod1"
            })
        );
        let Some(OomLine::TasksHeader(cols)) = classify(
            "[  pid  ]   uid  tgid total_vm      rss rss_anon rss_file rss_shmem pgtables_bytes swapents oom_score_adj name",
        ) else {
            panic!("header")
        };
        assert_eq!(cols.len(), 11);
        let Some(OomLine::TaskRow { values, name }) = classify(
            "[   2061]     0  2061     8869     8524     8128      396         0   118784        0          -998 my worker",
        ) else {
            panic!("row")
        };
        assert_eq!(
            values,
            [
                "2061", "0", "2061", "8869", "8524", "8128", "396", "0", "118784", "0", "-998"
            ]
        );
        assert_eq!(name, "my worker");
        assert_eq!(
            classify("Tasks in /kubepods/burstable/pod1 are going to be killed due to memory.oom.group set"),
            Some(OomLine::GroupKill {
                memcg: "/kubepods/burstable/pod1"
            })
        );
    }

    #[test]
    fn decoys_are_not_kills() {
        for decoy in [
            "oom_reaper: reaped process 2061 (tail), now anon-rss:0kB, file-rss:0kB, shmem-rss:0kB",
            "Out of memory and no killable processes...",
            "Memory cgroup stats for /kubepods/burstable:",
            "app: Killed process pool after idle",
            "java.lang.OutOfMemoryError: Java heap space",
            "[drm] Initialized",
            "Killed process",
            "Out of memory: Killed process notapid (x)",
        ] {
            assert!(
                !matches!(
                    classify(decoy),
                    Some(OomLine::Kill(_) | OomLine::Trigger(_) | OomLine::Summary(_))
                ),
                "{decoy}"
            );
        }
        assert_eq!(
            classify("oom_reaper: reaped process 2061 (tail), now anon-rss:0kB"),
            Some(OomLine::Reaped { pid: 2061 })
        );
    }

    #[test]
    fn cpu_lines() {
        assert_eq!(
            classify("CPU: 0 UID: 0 PID: 2061 Comm: tail Not tainted 6.18.44 #1"),
            Some(OomLine::CpuInfo {
                pid: 2061,
                comm: "tail"
            })
        );
        assert_eq!(
            classify("CPU: 3 PID: 12 Comm: java Tainted: G           O    4.19.0"),
            Some(OomLine::CpuInfo {
                pid: 12,
                comm: "java"
            })
        );
    }
}
