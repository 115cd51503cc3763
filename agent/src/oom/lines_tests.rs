//! Tests of the line classifier on lines of every era.

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
fn a_trigger_is_a_trigger_whatever_its_comm_starts_with() {
    for comm in [
        "alpha",
        "apt",
        "Task",
        "oom_x",
        "memcached",
        "kswapd0",
        "sh",
        "/bin/x",
        "Pid",
        "CPU",
    ] {
        let line = format!("{comm} invoked oom-killer: gfp_mask=0xcc0(GFP_KERNEL), order=0, oom_score_adj=0");
        assert!(matches!(classify(&line), Some(OomLine::Trigger(_))), "{line}");
    }
}

#[test]
fn kill_lines_of_every_era() {
    let modern = "Memory cgroup out of memory: Killed process 2061 (tail) total-vm:35476kB, anon-rss:32512kB, file-rss:1584kB, shmem-rss:0kB, UID:0 pgtables:116kB oom_score_adj:0";
    let Some(OomLine::Kill(k)) = classify(modern) else {
        panic!("kill")
    };
    assert!(k.says_memcg());
    assert_eq!((k.pid, k.comm, k.fields.uid), (2061, "tail", Some(0)));
    assert_eq!(
        (
            k.fields.total_vm_kb,
            k.fields.anon_rss_kb,
            k.fields.file_rss_kb,
            k.fields.shmem_rss_kb
        ),
        (Some(35476), Some(32512), Some(1584), Some(0))
    );
    assert_eq!(
        (k.fields.pgtables_kb, k.fields.oom_score_adj),
        (Some(116), Some(0))
    );

    let rhel = "Killed process 2542 (java), UID 1000, total-vm:5306232kB, anon-rss:2086600kB, file-rss:0kB, shmem-rss:0kB";
    let Some(OomLine::Kill(k)) = classify(rhel) else {
        panic!("kill")
    };
    assert_eq!(
        (k.prefix, k.pid, k.comm, k.fields.uid, k.fields.anon_rss_kb),
        ("", 2542, "java", Some(1000), Some(2086600))
    );
    assert_eq!(k.fields.pgtables_kb, None);

    let old = "Killed process 8123 (stress) total-vm:138620kB, anon-rss:131272kB, file-rss:0kB";
    let Some(OomLine::Kill(k)) = classify(old) else {
        panic!("kill")
    };
    assert_eq!(
        (k.comm, k.fields.shmem_rss_kb, k.fields.uid),
        ("stress", None, None)
    );

    let global = "Out of memory: Killed process 77 (my (odd) proc) total-vm:1kB, anon-rss:2kB, file-rss:3kB, shmem-rss:4kB, UID:5 pgtables:6kB oom_score_adj:-998";
    let Some(OomLine::Kill(k)) = classify(global) else {
        panic!("kill")
    };
    assert!(!k.says_memcg());
    assert_eq!(
        (k.comm, k.fields.uid, k.fields.oom_score_adj),
        ("my (odd) proc", Some(5), Some(-998))
    );

    let choose = "Memory cgroup out of memory: Kill process 8123 (stress) score 1000 or sacrifice child";
    assert_eq!(
        classify(choose),
        Some(OomLine::ChooseVictim(ChooseLine {
            prefix: "Memory cgroup out of memory",
            pid: 8123,
            comm: "stress",
            score: Some(1000)
        }))
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
            limit_memcg: Some("/kubepods/pod1")
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
