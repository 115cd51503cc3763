//! The report state machine on random and real sequences of lines.

use super::*;
use crate::oom::report::{Anchor, ReportConstraint};
use proptest::prelude::*;

/// Real report lines, as building blocks for random sequences.
const FRAGMENTS: &[&str] = &[
    "tail invoked oom-killer: gfp_mask=0xcc0(GFP_KERNEL), order=0, oom_score_adj=0",
    "CPU: 0 UID: 0 PID: 2061 Comm: tail Not tainted 6.18.44 #1",
    "memory: usage 32768kB, limit 32768kB, failcnt 19",
    "memory+swap: usage 32768kB, limit 9007199254740988kB, failcnt 0",
    "Task in /kubepods/pod1/abc killed as a result of limit of /kubepods/pod1",
    "Memory cgroup stats for /oomlens:",
    "Tasks state (memory values in pages):",
    "[  pid  ]   uid  tgid total_vm      rss pgtables_bytes swapents oom_score_adj name",
    "[   2061]     0  2061     8869     8524   118784        0             0 tail",
    "oom-kill:constraint=CONSTRAINT_MEMCG,nodemask=(null),cpuset=/,mems_allowed=0,oom_memcg=/a,task_memcg=/a/b,task=tail,pid=2061,uid=0",
    "oom-kill:constraint=CONSTRAINT_NONE,nodemask=(null),cpuset=/,mems_allowed=0,global_oom,task_memcg=/,task=x,pid=1,uid=0",
    "Memory cgroup out of memory: Kill process 2061 (tail) score 1000 or sacrifice child",
    "Memory cgroup out of memory: Killed process 2061 (tail) total-vm:35476kB, anon-rss:32512kB, file-rss:1584kB, shmem-rss:0kB, UID:0 pgtables:116kB oom_score_adj:0",
    "Out of memory: Killed process 7 (x) total-vm:1kB, anon-rss:1kB, file-rss:0kB, shmem-rss:0kB",
    "Killed process 9 (y), UID 5, total-vm:1kB, anon-rss:1kB, file-rss:0kB",
    "Tasks in /a are going to be killed due to memory.oom.group set",
    "Out of memory and no killable processes...",
    "oom_reaper: reaped process 2061 (tail), now anon-rss:0kB, file-rss:0kB, shmem-rss:0kB",
    " dump_stack_lvl+0x57/0x80",
    "anon 33390592\nfile 0\nshmem 4096\nkernel 163840",
    "total_rss 33415168",
    "Memory cgroup stats for /a: cache:32KB rss:524188KB shmem:0KB",
];

fn line_strategy() -> impl Strategy<Value = (String, bool, Option<u8>, Option<u64>)> {
    let text = prop_oneof![
        4 => proptest::sample::select(FRAGMENTS).prop_map(str::to_owned),
        // Real fragments cut or extended at random: truncated kernel lines.
        2 => (proptest::sample::select(FRAGMENTS), 0usize..200, "\\PC{0,12}").prop_map(|(f, cut, tail)| {
            let cut = f.char_indices().map(|(i, _)| i).nth(cut).unwrap_or(f.len());
            format!("{}{tail}", &f[..cut])
        }),
        1 => "\\PC{0,120}",
    ];
    (
        text,
        any::<bool>(),
        proptest::option::of(0u8..3),
        proptest::option::of(0u64..5_000_000),
    )
}

/// An anchor: a line that alone names a kill.
fn is_anchor(text: &str) -> bool {
    match lines::classify(text) {
        Some(OomLine::Kill(_) | OomLine::ChooseVictim(_) | OomLine::TaskIn { .. }) => true,
        Some(OomLine::Summary(s)) => s.pid.is_some(),
        _ => false,
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 600, ..ProptestConfig::default() })]

    #[test]
    fn no_line_sequence_panics_and_reports_need_anchors(lines in proptest::collection::vec(line_strategy(), 0..80)) {
        let mut parser = Parser::new();
        let callers = ["T1", "T2", "C0"];
        let mut kill_lines = 0u64;
        let mut anchors = 0u64;
        let mut reports = Vec::new();
        for (seq, (text, from_kernel, caller, ts)) in lines.iter().enumerate() {
            if *from_kernel && matches!(lines::classify(text), Some(OomLine::Kill(_))) {
                kill_lines += 1;
            }
            if *from_kernel && is_anchor(text) {
                anchors += 1;
            }
            parser.push(&InputLine {
                text,
                from_kernel: *from_kernel,
                caller: caller.map(|c| callers[usize::from(c)]),
                host: None,
                stamp: Stamp { seq: Some(seq as u64), monotonic_us: *ts, ..Stamp::default() },
            });
            reports.extend(std::iter::from_fn(|| parser.next_report()));
        }
        parser.finish();
        reports.extend(std::iter::from_fn(|| parser.next_report()));
        prop_assert!(!parser.has_open_reports());
        // Every report comes from a kernel anchor line, never from nothing;
        // every kill line makes exactly one report (duplicates in a group
        // are dropped, never invented).
        prop_assert!(reports.len() as u64 <= anchors, "{} reports from {anchors} anchors", reports.len());
        let by_kill = reports.iter().filter(|r| r.anchor == Anchor::Kill).count() as u64;
        prop_assert_eq!(by_kill + parser.stats().duplicate_kills, kill_lines);
    }

    #[test]
    fn classify_never_panics(text in "\\PC{0,200}") {
        let _ = lines::classify(&text);
        let _ = lines::may_start_report(&text);
    }
}

fn kernel(us: u64, text: &str) -> InputLine<'_> {
    InputLine {
        text,
        from_kernel: true,
        caller: None,
        host: None,
        stamp: Stamp {
            seq: Some(us),
            monotonic_us: Some(us),
            ..Stamp::default()
        },
    }
}

fn run(lines: &[&str]) -> Vec<OomReport> {
    let mut parser = Parser::new();
    for (at, text) in lines.iter().enumerate() {
        parser.push(&kernel(at as u64, text));
    }
    parser.finish();
    std::iter::from_fn(|| parser.next_report()).collect()
}

#[test]
fn a_report_waits_for_its_group_then_settles_on_time() {
    let mut parser = Parser::new();
    parser.push(&kernel(10, FRAGMENTS[0]));
    parser.push(&kernel(20, FRAGMENTS[12]));
    assert!(parser.next_report().is_none(), "held for a possible group kill");
    assert_eq!(parser.oldest_open_seq(), Some(10));
    parser.push(&kernel(20 + KILL_SETTLE_US + 1, "eth0: link up"));
    let report = parser.next_report().expect("settled");
    assert_eq!(report.victim.pid, Some(2061));
    assert_eq!(parser.oldest_open_seq(), None);
    // A report that never reaches a kill is abandoned after a while.
    parser.push(&kernel(5_000_000, FRAGMENTS[0]));
    parser.push(&kernel(5_000_000 + ABANDON_US + 1, "eth0: link up"));
    assert_eq!(parser.stats().abandoned, 1);
    assert!(!parser.has_open_reports());
}

#[test]
fn a_filtered_log_keeps_its_summaries_joined_to_their_kills() {
    // `grep oom` keeps the summary and the kill line, not the header.
    let reports = run(&[
        "oom-kill:constraint=CONSTRAINT_MEMCG,nodemask=(null),cpuset=/,mems_allowed=0,oom_memcg=/k/p1,task_memcg=/k/p1/c1,task=a,pid=11,uid=7",
        "Memory cgroup out of memory: Killed process 11 (a) total-vm:1kB, anon-rss:1kB, file-rss:0kB, shmem-rss:0kB",
        "oom-kill:constraint=CONSTRAINT_MEMCG,nodemask=(null),cpuset=/,mems_allowed=0,oom_memcg=/k/p2,task_memcg=/k/p2/c2,task=b,pid=22,uid=8",
        // Its kill line was cut: the summary alone is the kill.
    ]);
    assert_eq!(reports.len(), 2);
    assert_eq!(
        (reports[0].victim.pid, reports[0].victim.uid),
        (Some(11), Some(7))
    );
    assert_eq!(reports[0].task_memcg(), Some("/k/p1/c1"));
    assert_eq!(reports[1].anchor, Anchor::Summary);
    assert_eq!(
        (reports[1].victim.pid, reports[1].victim.comm.as_deref()),
        (Some(22), Some("b"))
    );
    assert_eq!(reports[1].oom_memcg(), Some("/k/p2"));
    // A kill line pasted before its summary is still one kill.
    let reports = run(&[
        "Out of memory: Killed process 5 (x) total-vm:1kB, anon-rss:1kB, file-rss:0kB, shmem-rss:0kB",
        "oom-kill:constraint=CONSTRAINT_NONE,nodemask=(null),cpuset=/,mems_allowed=0,global_oom,task_memcg=/user.slice,task=x,pid=5,uid=1000",
    ]);
    assert_eq!(reports.len(), 1);
    assert_eq!(reports[0].task_memcg(), Some("/user.slice"));
    assert_eq!(reports[0].oom_memcg(), None, "a global OOM hit no cgroup's limit");
}

#[test]
fn old_kernels_name_the_child_killed_and_the_limit() {
    let reports = run(&[
        "Task in /kubepods/podx/c killed as a result of limit of /kubepods/podx/c",
        "[ pid ]   uid  tgid total_vm      rss nr_ptes swapents oom_score_adj name",
        "[24572]     0 24572     2925      679      10        0          -998 sh",
        "[28438]  1000 28438  5063909   119961    1661   136409          -998 java",
        "Memory cgroup out of memory: Kill process 24572 (sh) score 0 or sacrifice child",
        "Killed process 28438 (java) total-vm:20255636kB, anon-rss:466160kB, file-rss:13684kB",
    ]);
    assert_eq!(reports.len(), 1);
    let report = &reports[0];
    assert_eq!(report.constraint(), ReportConstraint::Memcg);
    assert_eq!(
        (report.victim.pid, report.victim.uid, report.victim.oom_score_adj),
        (Some(28438), Some(1000), Some(-998)),
        "the child, with uid and oom_score_adj from its task table row"
    );
    assert_eq!(report.oom_memcg(), Some("/kubepods/podx/c"));
    // The Task in line alone is still a kill, of an unknown process.
    let reports = run(&[
        "Task in /agent killed as a result of limit of /agent",
        "memory: usage 1kB, limit 1kB, failcnt 1",
    ]);
    assert_eq!(reports.len(), 1);
    assert_eq!((reports[0].victim.pid, reports[0].anchor), (None, Anchor::TaskIn));
    // A vendor kernel's whole-node OOM: the limit of `host`.
    let reports = run(&["Task in /user.slice killed as a result of limit of host"]);
    assert_eq!(reports[0].constraint(), ReportConstraint::Global);
    assert_eq!(
        (reports[0].oom_memcg(), reports[0].task_memcg()),
        (None, Some("/user.slice"))
    );
}

#[test]
fn fragments_and_headers_alone_are_no_kill() {
    let mut parser = Parser::explaining();
    for (at, text) in [
        "java invoked oom-killer: gfp_mask=0xd0, order=0, oom_score_adj=0",
        "Memory cgroup stats for /kubepods/burstable:",
        "oom_reaper: reaped process 2061 (tail), now anon-rss:0kB, file-rss:0kB, shmem-rss:0kB",
    ]
    .iter()
    .enumerate()
    {
        parser.push(&kernel(at as u64, text));
    }
    parser.finish();
    assert!(parser.next_report().is_none());
    let reasons: Vec<Unused> = std::iter::from_fn(|| parser.next_unused())
        .map(|u| u.why)
        .collect();
    assert!(reasons.contains(&Unused::NoKill), "{reasons:?}");
    assert!(reasons.contains(&Unused::AfterKill), "{reasons:?}");
}

#[test]
fn the_stats_dump_becomes_the_reports_memstat_in_each_shape() {
    // cgroup v2 in /dev/kmsg: one record with embedded newlines.
    let reports = run(&[
        "tail invoked oom-killer: gfp_mask=0xcc0(GFP_KERNEL), order=0, oom_score_adj=0",
        "Memory cgroup stats for /a:",
        "anon 33390592\nfile 8192\nshmem 4096\nkernel 163840\n",
        "[  pid  ]   uid  tgid total_vm      rss pgtables_bytes swapents oom_score_adj name",
        "[   2061]     0  2061     8869     8524   118784        0             0 tail",
        // Not stats: after the task table.
        "anon 1",
        "oom-kill:constraint=CONSTRAINT_MEMCG,nodemask=(null),cpuset=/,mems_allowed=0,oom_memcg=/a,task_memcg=/a,task=tail,pid=2061,uid=0",
        "Memory cgroup out of memory: Killed process 2061 (tail) total-vm:35476kB, anon-rss:32512kB, file-rss:1584kB, shmem-rss:0kB, UID:0 pgtables:116kB oom_score_adj:0",
    ]);
    let stat = reports[0].memstat.as_ref().expect("stats");
    let b = stat.breakdown(None);
    assert_eq!(
        (b.anon, b.page_cache, b.shmem, b.kernel),
        (Some(33_390_592), Some(4096), Some(4096), Some(163_840))
    );
    // A report with no stats dump has none; lines like stats outside a
    // report are nothing.
    let reports = run(&[
        "anon 5",
        "Memory cgroup out of memory: Killed process 2061 (tail) total-vm:35476kB, anon-rss:32512kB, file-rss:1584kB, shmem-rss:0kB, UID:0 pgtables:116kB oom_score_adj:0",
        "anon 6",
    ]);
    assert_eq!(reports[0].memstat, None);
    // Before 4.19: on the stats line itself.
    let reports = run(&[
        "java invoked oom-killer: gfp_mask=0xd0, order=0, oom_score_adj=-998",
        "Task in /kubepods/podx/c killed as a result of limit of /kubepods/podx/c",
        "Memory cgroup stats for /kubepods/podx/c: cache:32KB rss:524188KB shmem:8KB",
        "Memory cgroup out of memory: Kill process 28438 (java) score 1000 or sacrifice child",
        "Killed process 28438 (java) total-vm:20255636kB, anon-rss:466160kB, file-rss:13684kB",
    ]);
    let b = reports[0].memstat.as_ref().expect("stats").breakdown(None);
    assert_eq!(
        (b.anon, b.page_cache, b.shmem),
        (Some(524_188 * 1024), Some(24 * 1024), Some(8 * 1024))
    );
}

/// The live reader closes a report at its kill line when no
/// `memory.oom.group` can follow; a group's victim (printed before the
/// group's line) waits for the members, and each is reported as a member.
#[test]
fn a_kill_no_group_can_follow_is_reported_at_its_kill_line() {
    let summary = "oom-kill:constraint=CONSTRAINT_MEMCG,nodemask=(null),cpuset=/,mems_allowed=0,oom_memcg=/a,task_memcg=/a/b,task=tail,pid=2061,uid=0";
    let asked = std::cell::RefCell::new(Vec::new());
    let mut parser = Parser::new();
    for (at, text) in [FRAGMENTS[0], summary, FRAGMENTS[12]].iter().enumerate() {
        parser.push(&kernel(at as u64, text));
        parser.flush_complete_kills(|task, oom| {
            asked
                .borrow_mut()
                .push((task.map(str::to_owned), oom.map(str::to_owned)));
            true
        });
    }
    let report = parser.next_report().expect("reported at the kill line");
    assert_eq!(report.victim.pid, Some(2061));
    // Asked once, at the kill, with the summary's cgroups.
    assert_eq!(
        asked.into_inner(),
        [(Some("/a/b".to_owned()), Some("/a".to_owned()))]
    );

    // A group may follow: the victim waits, its group joins it, and the
    // report closes only after the quiet pause, whole.
    let mut parser = Parser::new();
    let group = [
        FRAGMENTS[0],
        summary,
        "Memory cgroup out of memory: Killed process 2061 (tail) total-vm:1kB, anon-rss:1kB, file-rss:0kB, shmem-rss:0kB, UID:0 pgtables:4kB oom_score_adj:0",
        "Tasks in /a are going to be killed due to memory.oom.group set",
        "Memory cgroup out of memory: Killed process 2062 (sh) total-vm:1kB, anon-rss:1kB, file-rss:0kB, shmem-rss:0kB, UID:0 pgtables:4kB oom_score_adj:0",
    ];
    for (at, text) in group.iter().enumerate() {
        parser.push(&kernel(at as u64, text));
        // Unsure before the group line, and never closed once it came.
        parser.flush_complete_kills(|_, _| false);
        assert!(parser.next_report().is_none(), "closed early at line {at}");
    }
    parser.flush_killed();
    let reports: Vec<OomReport> = std::iter::from_fn(|| parser.next_report()).collect();
    let members: Vec<(Option<i32>, Option<&str>)> = reports
        .iter()
        .map(|r| (r.victim.pid, r.group_memcg.as_deref()))
        .collect();
    assert_eq!(members, [(Some(2061), Some("/a")), (Some(2062), Some("/a"))]);
}
