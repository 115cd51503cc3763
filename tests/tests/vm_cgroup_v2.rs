//! Real cgroup v2 and a real whole-node OOM, in a small VM under QEMU's
//! software emulation (the host has memory on cgroup v1 only, and a
//! node-wide OOM on the host is off limits).
//!
//! One boot runs every scenario with the agent in standalone mode
//! (`oomlens-agent run --standalone`: an embedded collector with its SQLite
//! store; JSON events also on stdout) and prints on the serial console both
//! the agent's events and what the store answers to `oomlens events`:
//! 1. a container at its own `memory.max` (systemd-driver kubepods path),
//! 2. a pod-level limit, 3. `memory.oom.group` with three processes,
//! 4. `memory.high` throttling before the kill (pressure in the history),
//! 5. a limit on `kubepods` itself (node allocatable), 6. the whole node
//!    running out of memory.
//!
//! Skips, saying why, where QEMU or busybox are missing. Never hangs: QEMU
//! is killed after a host-side timeout.

use std::time::{Duration, Instant};

use oomlens_proto::json::{event_from_json, event_to_json_line};
use oomlens_proto::time::unix_ms;
use oomlens_proto::v1::{BreakdownSource, OomEvent, Scope, Verdict};
use oomlens_tests::vm;

const MEMHOG: &str = env!("CARGO_BIN_EXE_oomlens-memhog");

const POD1: &str = "11111111_1111_4111_8111_111111111111";
const POD2: &str = "22222222_2222_4222_8222_222222222222";
const POD3: &str = "33333333_3333_4333_8333_333333333333";
const POD4: &str = "44444444_4444_4444_8444_444444444444";
const POD5: &str = "55555555_5555_4555_8555_555555555555";
const POD6: &str = "66666666_6666_4666_8666_666666666666";

fn id(c: char) -> String {
    std::iter::repeat_n(c, 64).collect()
}

/// The guest's /init: builds the kubepods tree on cgroup v2, runs the
/// agent, then each scenario.
fn init_script() -> String {
    let (c1, c2, c3, c4, c5, c6) = (id('a'), id('b'), id('c'), id('d'), id('e'), id('f'));
    format!(
        r#"#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t tmpfs tmpfs /tmp
mount -t cgroup2 cgroup2 /sys/fs/cgroup
echo -1000 > /proc/self/oom_score_adj
say() {{ echo "OOMLENS $* t=$(cut -d' ' -f1 /proc/uptime)"; }}
enable() {{ echo +memory > "$1/cgroup.subtree_control"; }}
R=/sys/fs/cgroup
enable $R
K=$R/kubepods.slice
B=$K/kubepods-burstable.slice
E=$K/kubepods-besteffort.slice
mkdir -p $B $E $R/system.slice/hog.service
enable $K; enable $B; enable $E
# As systemd does with memory accounting on: services are memory cgroups.
enable $R/system.slice
P1=$B/kubepods-burstable-pod{POD1}.slice; C1=$P1/cri-containerd-{c1}.scope
P2=$B/kubepods-burstable-pod{POD2}.slice; C2=$P2/cri-containerd-{c2}.scope
P3=$B/kubepods-burstable-pod{POD3}.slice; C3=$P3/cri-containerd-{c3}.scope
P5=$B/kubepods-burstable-pod{POD5}.slice; C5=$P5/cri-containerd-{c5}.scope
P4=$E/kubepods-besteffort-pod{POD4}.slice; C4=$P4/cri-containerd-{c4}.scope
P6=$B/kubepods-burstable-pod{POD6}.slice; C6=$P6/cri-containerd-{c6}.scope
for p in $P1 $P2 $P3 $P4 $P5 $P6; do mkdir $p; enable $p; done
mkdir $C1 $C2 $C3 $C4 $C5 $C6
echo 32M > $C1/memory.max
echo 32M > $P2/memory.max
echo 32M > $C3/memory.max; echo 1 > $C3/memory.oom.group
echo 32M > $C5/memory.max
echo 32M > $C6/memory.max

ip link set lo up
/oomlens-agent run --standalone --listen 127.0.0.1:7460 --output json --state-dir /tmp/state \
  --metrics-listen "" --node-name oomlens-vm --log-format json > /tmp/events.jsonl 2> /tmp/agent.log &
AGENT=$!
sleep 3
say "agent started"
hog() {{ sh -c "echo 0 > /proc/self/oom_score_adj; exec /oomlens-memhog --cgroup $1 --rate-mib $2 --total-mib $3 --hold-secs 60" > /dev/null 2>&1; }}
events() {{ tr '\n' ' ' < $1/memory.events; }}

hog $C1 40 200; say "scenario1 exit=$? events: $(events $C1)"
sleep 1
hog $C2 40 200; say "scenario2 exit=$? events: $(events $P2)"
sleep 1
for n in 1 2; do sh -c "echo 0 > /proc/self/oom_score_adj; echo \$\$ > $C3/cgroup.procs; exec sleep 600" & done
sleep 1
hog $C3 40 200; say "scenario3 exit=$? events: $(events $C3)"
sleep 1
# Throttled at memory.high for 5 s (pressure builds), then released into memory.max.
echo 8M > $C5/memory.high
(sleep 5; echo max > $C5/memory.high) &
hog $C5 16 200; say "scenario4 exit=$? events: $(events $C5)"
sleep 1
echo 48M > $K/memory.max
hog $C4 40 200; say "scenario5 exit=$? events: $(events $K)"
echo max > $K/memory.max
sleep 1
# A memory-backed volume filled to the container's limit.
mkdir -p /tmp/vol6; mount -t tmpfs -o size=64m tmpfs /tmp/vol6
sh -c "echo 0 > /proc/self/oom_score_adj; echo \$\$ > $C6/cgroup.procs; exec dd if=/dev/zero of=/tmp/vol6/fill bs=1M count=64" > /dev/null 2>&1
say "scenario7 exit=$? events: $(events $C6)"
rm -f /tmp/vol6/fill; umount /tmp/vol6
sleep 1
say "scenario6 before: $(grep MemAvailable /proc/meminfo | tr -s ' ')"
hog $R/system.slice/hog.service 100 4000; say "scenario6 exit=$?"
sleep 4
/oomlens --collector http://127.0.0.1:7460 events --output json --limit 1000 > /tmp/stored.jsonl 2>&1
say "cli exit=$?"
kill -TERM $AGENT; wait $AGENT; say "agent exit=$?"
echo OOMLENS-STORED-BEGIN
cat /tmp/stored.jsonl
echo OOMLENS-STORED-END
echo OOMLENS-EVENTS-BEGIN
cat /tmp/events.jsonl
echo OOMLENS-EVENTS-END
echo OOMLENS-LOG-BEGIN
tail -n 60 /tmp/agent.log
echo OOMLENS-LOG-END
echo OOMLENS-DMESG-BEGIN
dmesg
echo OOMLENS-DMESG-END
poweroff -f
"#
    )
}

/// The kernel-style path of a scenario's container.
fn path_of(pod: &str, qos: &str, c: char) -> String {
    format!(
        "/kubepods.slice/kubepods-{qos}.slice/kubepods-{qos}-pod{pod}.slice/cri-containerd-{}.scope",
        id(c)
    )
}

struct Run {
    events: Vec<OomEvent>,
    console: String,
}

impl Run {
    fn dump(&self, events: &[&OomEvent]) -> String {
        let json: Vec<String> = events.iter().map(|e| event_to_json_line(e)).collect();
        let log = vm::section(&self.console, "LOG").join("\n");
        format!("events:\n{}\nagent log:\n{log}", json.join("\n"))
    }

    fn by_task(&self, path: &str) -> Vec<&OomEvent> {
        self.events
            .iter()
            .filter(|e| e.task_memcg.as_deref() == Some(path))
            .collect()
    }

    fn line(&self, prefix: &str) -> &str {
        self.console.lines().find(|l| l.starts_with(prefix)).unwrap_or("")
    }
}

#[test]
fn cgroup_v2_and_whole_node_ooms_in_a_vm() {
    if let Some(reason) = vm::vm_unavailable() {
        eprintln!("SKIPPED cgroup_v2_and_whole_node_ooms_in_a_vm: {reason}");
        return;
    }
    let cache = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("oomlens-vm");
    let kernel = match vm::kernel(&cache) {
        Ok(kernel) => kernel,
        Err(error) => panic!("cannot get the guest kernel: {error}"),
    };
    let agent = oomlens_tests::agent_binary();
    let cli = oomlens_tests::cli_binary();
    let initramfs = cache.join("initramfs.gz");
    vm::initramfs(
        &initramfs,
        &[&agent, &cli, std::path::Path::new(MEMHOG)],
        &init_script(),
    )
    .expect("initramfs");
    let started = Instant::now();
    let console = vm::boot(&kernel, &initramfs, 320, Duration::from_secs(280)).expect("the VM ran");
    eprintln!("VM run took {:?}", started.elapsed());
    for line in console.lines().filter(|l| l.starts_with("OOMLENS ")) {
        eprintln!("{line}");
    }
    let events: Vec<OomEvent> = vm::section(&console, "EVENTS")
        .into_iter()
        .filter(|l| l.starts_with('{'))
        .map(|l| event_from_json(l).unwrap_or_else(|e| panic!("bad event line {l}: {e}")))
        .collect();
    let stored: Vec<OomEvent> = vm::section(&console, "STORED")
        .into_iter()
        .filter(|l| l.starts_with('{'))
        .map(|l| event_from_json(l).unwrap_or_else(|e| panic!("bad stored line {l}: {e}")))
        .collect();
    let run = Run { events, console };
    // Standalone: every event the agent printed is in its embedded store,
    // analysed, and the CLI reads it back.
    assert!(
        run.line("OOMLENS cli exit=").starts_with("OOMLENS cli exit=0 "),
        "oomlens events failed in the guest:\n{}\nconsole:\n{}",
        vm::section(&run.console, "STORED").join("\n"),
        run.console
    );
    let mut printed: Vec<&str> = run.events.iter().map(|e| e.id.as_str()).collect();
    let mut in_store: Vec<&str> = stored.iter().map(|e| e.id.as_str()).collect();
    printed.sort_unstable();
    in_store.sort_unstable();
    assert_eq!(printed, in_store, "the store holds exactly the printed events");
    assert!(
        stored.iter().all(|e| e.analysis.is_some()),
        "every stored event is analysed"
    );
    assert!(
        stored
            .iter()
            .filter(|e| e.scope == Scope::NodeOom as i32)
            .all(|e| e
                .analysis
                .as_ref()
                .is_some_and(|a| a.verdict == Verdict::NodePressure as i32)),
        "node OOMs are judged node pressure"
    );
    assert!(
        run.line("OOMLENS agent exit=")
            .starts_with("OOMLENS agent exit=0 "),
        "the agent did not stop cleanly:\n{}",
        run.console
    );

    // 1. Container at its own memory.max.
    let c1 = path_of(POD1, "burstable", 'a');
    let found = run.by_task(&c1);
    let dump = run.dump(&found);
    assert_eq!(found.len(), 1, "scenario 1: {dump}");
    let e = found[0];
    assert_eq!(e.scope, Scope::ContainerLimit as i32, "{dump}");
    assert_eq!(
        e.pod.as_ref().map(|p| p.uid.as_str()),
        Some("11111111-1111-4111-8111-111111111111"),
        "{dump}"
    );
    let history = e.history.as_ref().unwrap_or_else(|| panic!("no history: {dump}"));
    let kill_ms = e.time.as_ref().map(unix_ms).expect("time");
    let last_second = history
        .samples
        .iter()
        .filter(|s| s.time.as_ref().is_some_and(|t| unix_ms(t) + 1000 >= kill_ms))
        .count();
    assert!(
        last_second >= 10,
        "{last_second} samples in the last second: {dump}"
    );
    assert!(
        history.peak_working_set_bytes.is_some_and(|p| p > 24 << 20),
        "no climb: {dump}"
    );
    // The kernel's memory.stat dump (one /dev/kmsg record with embedded
    // newlines on cgroup v2) gives what filled the memory: anonymous.
    let breakdown = e
        .breakdown
        .as_ref()
        .unwrap_or_else(|| panic!("no breakdown: {dump}"));
    assert_eq!(breakdown.source, BreakdownSource::KernelReport as i32, "{dump}");
    assert!(breakdown.anon_bytes.is_some_and(|a| a > 24 << 20), "{dump}");
    assert!(breakdown.kernel_bytes.is_some(), "{dump}");
    assert!(
        run.line("OOMLENS scenario1").contains("oom_kill 1"),
        "memory.events: {}",
        run.line("OOMLENS scenario1")
    );

    // 2. Pod-level limit.
    let c2 = path_of(POD2, "burstable", 'b');
    let found = run.by_task(&c2);
    let dump = run.dump(&found);
    assert_eq!(found.len(), 1, "scenario 2: {dump}");
    assert_eq!(found[0].scope, Scope::PodLimit as i32, "{dump}");
    assert!(found[0].oom_memcg_history.is_some(), "the pod's history: {dump}");
    assert_eq!(
        found[0].limited_containers.first().map(|c| c.cgroup.as_str()),
        Some(c2.as_str()),
        "who held the pod's memory: {dump}"
    );
    let judged = stored
        .iter()
        .find(|e| e.id == found[0].id)
        .and_then(|e| e.analysis.as_ref());
    assert_eq!(
        judged.map(|a| a.verdict),
        Some(Verdict::PodLimit as i32),
        "{dump}"
    );

    // 3. memory.oom.group: every process of the group, each once.
    let c3 = path_of(POD3, "burstable", 'c');
    let found = run.by_task(&c3);
    let dump = run.dump(&found);
    let mut pids: Vec<i32> = found.iter().filter_map(|e| e.victim.as_ref()?.pid).collect();
    pids.sort_unstable();
    pids.dedup();
    assert_eq!(
        found.len(),
        3,
        "three processes killed, each reported once: {dump}"
    );
    assert_eq!(pids.len(), 3, "{dump}");
    assert!(found.iter().all(|e| e.group_kill), "{dump}");

    // 4. memory.high throttling: pressure shows in the history before the kill.
    let c5 = path_of(POD5, "burstable", 'e');
    let found = run.by_task(&c5);
    let dump = run.dump(&found);
    assert_eq!(found.len(), 1, "scenario 4: {dump}");
    let history = found[0].history.as_ref().unwrap_or_else(|| panic!("{dump}"));
    assert!(
        history
            .samples
            .iter()
            .any(|s| s.pressure_some_avg10.is_some_and(|p| p > 0.0)),
        "no memory pressure in the history: {dump}"
    );

    // 5. Limit on kubepods: node allocatable.
    let c4 = path_of(POD4, "besteffort", 'd');
    let found = run.by_task(&c4);
    let dump = run.dump(&found);
    assert_eq!(found.len(), 1, "scenario 5: {dump}");
    assert_eq!(found[0].scope, Scope::NodeAllocatable as i32, "{dump}");
    assert_eq!(found[0].oom_memcg.as_deref(), Some("/kubepods.slice"), "{dump}");

    // 7. A tmpfs filled to the container's limit: the report's own
    // memory.stat (cgroup v2) says shmem, and the verdict says tmpfs.
    let c6 = path_of(POD6, "burstable", 'f');
    let found = run.by_task(&c6);
    let dump = run.dump(&found);
    assert_eq!(found.len(), 1, "scenario 7: {dump}");
    let breakdown = found[0]
        .breakdown
        .as_ref()
        .unwrap_or_else(|| panic!("no breakdown: {dump}"));
    assert_eq!(breakdown.source, BreakdownSource::KernelReport as i32, "{dump}");
    assert!(breakdown.shmem_bytes.is_some_and(|s| s > 24 << 20), "{dump}");
    assert!(breakdown.anon_bytes.is_some_and(|a| a < 8 << 20), "{dump}");
    let judged = stored
        .iter()
        .find(|e| e.id == found[0].id)
        .and_then(|e| e.analysis.as_ref());
    assert_eq!(
        judged.map(|a| a.verdict),
        Some(Verdict::TmpfsFull as i32),
        "{dump}"
    );

    // 6. The whole node ran out of memory.
    let found: Vec<&OomEvent> = run
        .events
        .iter()
        .filter(|e| e.scope == Scope::NodeOom as i32)
        .collect();
    let dump = run.dump(&found);
    assert!(
        !found.is_empty(),
        "no node OOM: {}",
        run.dump(&run.events.iter().collect::<Vec<_>>())
    );
    let node = found[0]
        .node_memory
        .as_ref()
        .unwrap_or_else(|| panic!("no node view: {dump}"));
    assert!(
        node.mem_available_bytes.is_some() && node.pressure_some_avg10.is_some(),
        "{dump}"
    );
    assert_eq!(
        found[0].task_memcg.as_deref(),
        Some("/system.slice/hog.service"),
        "{dump}"
    );
    assert_eq!(found[0].systemd_unit.as_deref(), Some("hog.service"), "{dump}");
    // No cgroup's limit was hit (#14: it was "/"), so no cgroup's stats.
    assert_eq!(found[0].oom_memcg.as_deref(), None, "{dump}");
    assert_eq!(found[0].breakdown, None, "{dump}");

    // 7. The post-mortem parser reads the guest's own kernel log (`dmesg`)
    // as the live agent read /dev/kmsg: the same kills, the same places.
    let dmesg = vm::section(&run.console, "DMESG").join("\n");
    if let Some(dir) = std::env::var_os("OOMLENS_SAVE_VM_DMESG") {
        std::fs::write(std::path::Path::new(&dir).join("vm-dmesg.txt"), &dmesg).expect("save dmesg");
    }
    let parsed = oomlens_agent::postmortem::events_from_text(&dmesg, 2026);
    let key = |e: &OomEvent| {
        (
            e.victim.as_ref().and_then(|v| v.pid),
            e.constraint,
            e.oom_memcg.clone(),
            e.task_memcg.clone(),
        )
    };
    let mut live: Vec<_> = run.events.iter().map(key).collect();
    let mut post_mortem: Vec<_> = parsed.iter().map(key).collect();
    live.sort();
    post_mortem.sort();
    // Kills the agent placed by evidence (none here: every report was
    // whole) would have paths only it knows; the log alone must agree.
    assert_eq!(post_mortem, live, "dmesg:\n{dmesg}");
}
