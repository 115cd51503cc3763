//! Fleet load: a collector tier of `REPLICAS` (3) collector processes on
//! one PostgreSQL database, under the traffic of `AGENTS` (5,000) agents
//! and `SUBSCRIBERS` (50) subscribers, all simulated on loopback by this
//! program. Bounded: it stops by itself. Subscribers ask for histories
//! packed, as `oomlens watch` does (`PACKED_SUBSCRIBERS=0`: plain, as
//! other clients get them).
//!
//! Run: `OOMLENS_TEST_POSTGRES=postgres://… cargo bench -p oomlens-tests
//! --bench fleet_load` (the role must be able to CREATE DATABASE).
//!
//! 1. Connect: every agent opens its own connection and ingest stream to
//!    one replica (round robin), says hello and sends its first status
//!    report (`CONTAINERS`, 110, containers, as a node with 110 pods does).
//! 2. Steady (`STEADY_SECONDS`, 30): status reports every 5 s from every
//!    agent, staggered, and `WARNINGS_PER_SECOND` (10) warnings across the
//!    fleet. Reported: each replica's CPU and RSS, PostgreSQL's CPU,
//!    warnings heard per subscriber, and `Top` through every replica,
//!    checked to be the fleet's 20 fullest containers wherever their
//!    agents are connected.
//! 3. Storm: `STORM_RATE` (1,000) kills a second for `STORM_SECONDS` (10),
//!    each with 60 s of 10 Hz history, from agents all over the fleet,
//!    while the status reports go on. Reported: the rate sent and
//!    acknowledged (each ack means stored durably), ack latency, fan-out
//!    to every subscriber (count, latency from the agent's send, lag),
//!    CPU and RSS, PostgreSQL's size per million kills, and that every
//!    kill is stored exactly once.
//!
//! Traffic is encoded before the clock starts and subscribers decode only
//! what they count (ids), so the figures are the collectors' and
//! PostgreSQL's, though all share this machine's cores with the load.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use oomlens_common::client::ClientConfig;
use oomlens_common::units::saturating_u64;
use oomlens_proto::preencoded::Preencoded;
use oomlens_proto::v1::{
    AgentHello, Container, ContainerMemoryStatus, ContainerStatusReport, IngestAck, IngestRequest,
    MemoryHistory, MemorySample, MemoryWarning, OomEvent, Pod, SubscribeRequest, TopRequest, ingest_request,
};
use oomlens_tests::collector::CollectorProcess;
use prost_types::Timestamp;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

fn setting(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// What the agents' senders and the subscribers share: when each kill
/// was sent, and what came back.
#[derive(Default)]
struct Tally {
    sent: Mutex<HashMap<String, Instant>>,
    acks: Mutex<Vec<Duration>>,
    ack_errors: Mutex<Vec<String>>,
    last_ack: Mutex<Option<Instant>>,
}

impl Tally {
    fn sent_at(&self, id: &str) -> Option<Instant> {
        self.sent
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(id)
            .copied()
    }
}

/// What one simulated agent is told to send.
enum Send {
    Status,
    Warning(Preencoded),
    Kill(String, Preencoded),
}

fn now() -> Timestamp {
    let since = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    Timestamp {
        seconds: i64::try_from(since.as_secs()).unwrap_or(i64::MAX),
        nanos: i32::try_from(since.subsec_nanos()).unwrap_or(0),
    }
}

fn index(n: u64) -> usize {
    usize::try_from(n).expect("fits memory")
}

fn node(agent: u64) -> String {
    format!("node-{agent:05}")
}

/// Agent `agent`'s report: `containers` containers, 200–260 MiB of a
/// 512 MiB limit, except one container of the last 20 agents, at 95%+
/// (the fleet's fullest, which `Top` must find wherever they connect).
fn status_report(agent: u64, agents: u64, containers: u64) -> ContainerStatusReport {
    let time = now();
    ContainerStatusReport {
        containers: (0..containers)
            .map(|c| {
                let fullest = c == 0 && agent + 20 >= agents;
                let working_set = if fullest {
                    (486 << 20) + (agent + 20 - agents) * (1 << 20)
                } else {
                    (200 << 20) + ((agent * 7 + c * 13) % 60) * (1 << 20)
                };
                ContainerMemoryStatus {
                    node: node(agent),
                    time: Some(time),
                    pod: Some(Pod {
                        uid: format!("{agent:05}-{c:03}-uid"),
                        name: Some(format!("app-{c}-{agent:05}")),
                        namespace: Some(format!("team-{}", c % 25)),
                        ..Pod::default()
                    }),
                    container: Some(Container {
                        id: format!("{agent:05}{c:03}cafe"),
                        name: Some("app".into()),
                        ..Container::default()
                    }),
                    cgroup: format!("/kubepods/burstable/pod{agent:05}-{c:03}/{agent:05}{c:03}cafe"),
                    working_set_bytes: working_set,
                    limit_bytes: Some(512 << 20),
                    growth_bytes_per_second: 0.0,
                    seconds_to_limit: None,
                }
            })
            .collect(),
    }
}

/// A pseudo-random number from `x` (splitmix64): the samples' noise, so
/// that the stored histories compress as real ones do, not as a ramp.
fn noise(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Kill `n` on `agent`, its history packed as an agent sends it to a
/// collector that reads packed histories.
fn kill(agent: u64, n: u64) -> OomEvent {
    let time = now();
    OomEvent {
        id: oomlens_proto::event_id(&node(agent), "fleet-load", n),
        node: Some(node(agent)),
        time: Some(time),
        scope: 1,
        constraint: 1,
        pod: Some(Pod {
            uid: format!("{agent:05}-{n}-uid"),
            name: Some(format!("app-{n}-{agent:05}")),
            namespace: Some(format!("team-{}", n % 25)),
            ..Pod::default()
        }),
        history: Some(MemoryHistory {
            cgroup: format!("/kubepods/burstable/pod{agent:05}-{n}/c"),
            samples: (0..600u64)
                .map(|i| MemorySample {
                    time: Some(Timestamp {
                        seconds: time.seconds - 60 + i64::try_from(i / 10).unwrap_or(0),
                        nanos: i32::try_from((i % 10) * 100_000_000 + noise(i) % 4_000_000).unwrap_or(0),
                    }),
                    working_set_bytes: Some(100_000_000 + i * 91_111 + noise(n * 1000 + i) % (256 << 10)),
                    usage_bytes: Some(110_000_000 + i * 91_111 + noise(n * 1000 + i) % (256 << 10)),
                    anon_bytes: Some(
                        90_000_000 + (i / 10) * 811_111 + noise(n * 1000 + i / 10) % (256 << 10),
                    ),
                    file_bytes: Some(10_000_000),
                    shmem_bytes: Some(0),
                    limit_bytes: Some(268_435_456),
                    ..MemorySample::default()
                })
                .collect(),
            limit_bytes: Some(268_435_456),
            sample_interval_ms: 100,
            ..MemoryHistory::default()
        }),
        ..OomEvent::default()
    }
}

fn request(item: ingest_request::Item) -> Preencoded {
    Preencoded::of(&IngestRequest { item: Some(item) })
}

/// One agent: its connection and ingest stream, fed from `orders`.
async fn run_agent(
    agent: u64,
    endpoint: String,
    status: Preencoded,
    mut orders: mpsc::Receiver<Send>,
    tally: Arc<Tally>,
) -> Result<(), String> {
    let channel = ClientConfig {
        endpoint,
        ..ClientConfig::default()
    }
    .connect()
    .await
    .map_err(|e| format!("agent {agent}: {e}"))?;
    let mut grpc = tonic::client::Grpc::new(channel);
    let (stream, items) = mpsc::channel::<Preencoded>(64);
    let hello = request(ingest_request::Item::Hello(AgentHello {
        node: node(agent),
        agent_version: "fleet-load".into(),
        ..AgentHello::default()
    }));
    stream.send(hello).await.map_err(|_| "closed")?;
    stream.send(status.clone()).await.map_err(|_| "closed")?;
    grpc.ready().await.map_err(|e| format!("agent {agent}: {e}"))?;
    let codec = tonic_prost::ProstCodec::<Preencoded, IngestAck>::default();
    let path = tonic::codegen::http::uri::PathAndQuery::from_static("/oomlens.v1.IngestService/Ingest");
    let mut acks = grpc
        .streaming(tonic::Request::new(ReceiverStream::new(items)), path, codec)
        .await
        .map_err(|e| format!("agent {agent}: {e}"))?
        .into_inner();
    let ack_tally = Arc::clone(&tally);
    tokio::spawn(async move {
        loop {
            match acks.message().await {
                Ok(Some(ack)) => {
                    let at = Instant::now();
                    if let Some(sent) = ack_tally.sent_at(&ack.id) {
                        ack_tally
                            .acks
                            .lock()
                            .unwrap_or_else(PoisonError::into_inner)
                            .push(at - sent);
                        *ack_tally.last_ack.lock().unwrap_or_else(PoisonError::into_inner) = Some(at);
                    }
                }
                Ok(None) => return,
                Err(status) => {
                    ack_tally
                        .ack_errors
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .push(status.message().to_owned());
                    return;
                }
            }
        }
    });
    tokio::spawn(async move {
        while let Some(order) = orders.recv().await {
            let item = match order {
                Send::Status => status.clone(),
                Send::Warning(warning) => warning,
                Send::Kill(id, event) => {
                    tally
                        .sent
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .insert(id, Instant::now());
                    event
                }
            };
            if stream.send(item).await.is_err() {
                return;
            }
        }
    });
    Ok(())
}

/// Only what a subscriber counts: prost skips the rest of each message
/// without decoding it.
#[derive(Clone, PartialEq, prost::Message)]
struct CountedItem {
    #[prost(message, optional, tag = "1")]
    event: Option<IdOnly>,
    #[prost(message, optional, tag = "2")]
    warning: Option<IdOnly>,
    #[prost(message, optional, tag = "3")]
    lagged: Option<LaggedCount>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct IdOnly {
    #[prost(string, tag = "1")]
    id: String,
}

#[derive(Clone, PartialEq, prost::Message)]
struct LaggedCount {
    #[prost(uint64, tag = "1")]
    missed: u64,
}

#[derive(Default)]
struct Heard {
    events: u64,
    warnings: u64,
    missed: u64,
    latencies: Vec<Duration>,
}

async fn run_subscriber(endpoint: String, packed: bool, tally: Arc<Tally>, heard: Arc<Mutex<Heard>>) {
    let channel = ClientConfig {
        endpoint,
        ..ClientConfig::default()
    }
    .connect()
    .await
    .expect("a subscriber connects");
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.expect("ready");
    let codec = tonic_prost::ProstCodec::<SubscribeRequest, CountedItem>::default();
    let path = tonic::codegen::http::uri::PathAndQuery::from_static("/oomlens.v1.EventService/Subscribe");
    let request = SubscribeRequest {
        include_warnings: true,
        ..SubscribeRequest::default()
    };
    let mut request = tonic::Request::new(request);
    if packed {
        oomlens_proto::history::say_packed(request.metadata_mut());
    }
    let mut items = grpc
        .server_streaming(request, path, codec)
        .await
        .expect("subscribe")
        .into_inner();
    while let Ok(Some(item)) = items.message().await {
        let at = Instant::now();
        let mut heard = heard.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(event) = item.event {
            heard.events += 1;
            if let Some(sent) = tally.sent_at(&event.id) {
                heard.latencies.push(at - sent);
            }
        } else if item.warning.is_some() {
            heard.warnings += 1;
        } else if let Some(lagged) = item.lagged {
            heard.missed += lagged.missed;
        }
    }
}

/// CPU seconds (user + system) and resident KiB of a process.
fn cpu_and_rss(pid: u32) -> (f64, u64, u64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after_name = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // utime and stime are the 14th and 15th fields, 12th and 13th after the name.
    let ticks: u64 = fields
        .get(11..13)
        .map_or(0, |f| f.iter().filter_map(|v| v.parse::<u64>().ok()).sum());
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kib = |key: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    };
    (ticks as f64 / clock_ticks(), kib("VmRSS:"), kib("VmHWM:"))
}

/// /proc counts CPU time in USER_HZ, 100 on every architecture Linux
/// runs Kubernetes on.
fn clock_ticks() -> f64 {
    100.0
}

/// CPU seconds of every `postgres` process.
fn postgres_cpu() -> f64 {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return 0.0;
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == "postgres")
        })
        .map(|pid| cpu_and_rss(pid).0)
        .sum()
}

/// CPU of the replicas and PostgreSQL over a phase.
struct Usage {
    started: Instant,
    replicas: Vec<f64>,
    postgres: f64,
}

impl Usage {
    fn start(pids: &[u32]) -> Self {
        Self {
            started: Instant::now(),
            replicas: pids.iter().map(|p| cpu_and_rss(*p).0).collect(),
            postgres: postgres_cpu(),
        }
    }

    fn report(&self, phase: &str, pids: &[u32]) {
        let seconds = self.started.elapsed().as_secs_f64();
        for (i, (pid, before)) in pids.iter().zip(&self.replicas).enumerate() {
            let (cpu, rss, peak) = cpu_and_rss(*pid);
            println!(
                "{phase}: replica {i}: {:.0}% of a core, RSS {:.0} MiB (peak {:.0} MiB)",
                (cpu - before) / seconds * 100.0,
                rss as f64 / 1024.0,
                peak as f64 / 1024.0
            );
        }
        println!(
            "{phase}: PostgreSQL (all its processes): {:.0}% of a core",
            (postgres_cpu() - self.postgres) / seconds * 100.0
        );
    }
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let at = usize::try_from(saturating_u64(((sorted.len() - 1) as f64 * p).round())).unwrap_or(usize::MAX);
    sorted[at.min(sorted.len() - 1)].as_secs_f64() * 1e3
}

fn main() {
    let Ok(url) = std::env::var("OOMLENS_TEST_POSTGRES") else {
        println!(
            "fleet_load: skipped: set OOMLENS_TEST_POSTGRES to a PostgreSQL server the role can CREATE DATABASE on"
        );
        return;
    };
    let agents = setting("AGENTS", 5_000);
    let containers = setting("CONTAINERS", 110);
    let replicas = setting("REPLICAS", 3);
    let subscribers = setting("SUBSCRIBERS", 50);
    // As `oomlens watch` does: histories packed, a third of the bytes.
    let packed_subscribers = setting("PACKED_SUBSCRIBERS", 1) == 1;
    let steady_seconds = setting("STEADY_SECONDS", 30);
    let warnings_per_second = setting("WARNINGS_PER_SECOND", 10);
    let storm_rate = setting("STORM_RATE", 1_000);
    let storm_seconds = setting("STORM_SECONDS", 10);
    // Each process holds a connection per agent (and PostgreSQL's).
    let wanted_files = agents + subscribers + 1024;
    let (_, hard) =
        nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE).expect("rlimit");
    if hard < wanted_files {
        println!(
            "fleet_load: skipped: {agents} agents need {wanted_files} open files, the hard limit is {hard}"
        );
        return;
    }
    nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE, hard, hard)
        .expect("raise the open-file limit");

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let database = oomlens_tests::faults::fresh_database(&url, "bench_fleet").await;
        let logs = tempfile::tempdir().expect("tempdir");
        let tier: Vec<CollectorProcess> = (0..replicas)
            .map(|i| {
                let dir = logs.path().join(format!("replica-{i}"));
                std::fs::create_dir_all(&dir).expect("log dir");
                // Each agent's "connected" line is routine at this scale.
                CollectorProcess::start_with_env(&database, &dir, &[("OOMLENS_LOG", "warn")])
            })
            .collect();
        let pids: Vec<u32> = tier.iter().filter_map(CollectorProcess::pid).collect();
        let endpoints: Vec<String> = tier.iter().map(CollectorProcess::endpoint).collect();
        let tally = Arc::new(Tally::default());

        // Subscribers first: they hear everything from now on.
        let hearing: Vec<Arc<Mutex<Heard>>> = (0..subscribers).map(|_| Arc::default()).collect();
        for (s, heard) in hearing.iter().enumerate() {
            let endpoint = endpoints[s % endpoints.len()].clone();
            tokio::spawn(run_subscriber(
                endpoint,
                packed_subscribers,
                Arc::clone(&tally),
                Arc::clone(heard),
            ));
        }

        // 1. Connect.
        println!(
            "fleet_load: {agents} agents × {containers} containers, {replicas} replicas on one PostgreSQL, {subscribers} subscribers ({})",
            if packed_subscribers { "histories packed" } else { "histories plain" }
        );
        let encode_started = Instant::now();
        let statuses: Vec<Preencoded> = (0..agents)
            .map(|a| request(ingest_request::Item::Status(status_report(a, agents, containers))))
            .collect();
        let status_bytes = statuses[0].0.len();
        let usage = Usage::start(&pids);
        let started = Instant::now();
        let mut orders = Vec::new();
        let mut connecting = tokio::task::JoinSet::new();
        let gate = Arc::new(tokio::sync::Semaphore::new(64));
        for (a, status) in (0..agents).zip(statuses) {
            let (order, received) = mpsc::channel(32);
            orders.push(order);
            let endpoint = endpoints[index(a % replicas)].clone();
            let tally = Arc::clone(&tally);
            let gate = Arc::clone(&gate);
            connecting.spawn(async move {
                let _permit = gate.acquire_owned().await;
                run_agent(a, endpoint, status, received, tally).await
            });
        }
        let mut failed = 0;
        while let Some(done) = connecting.join_next().await {
            if let Ok(Err(why)) = done {
                if failed == 0 {
                    println!("connect: an agent failed: {why}");
                }
                failed += 1;
            }
        }
        println!(
            "connect: {} agents connected in {:.1} s ({failed} failed), first report sent ({} containers, {:.1} KiB each; encoded in {:.1} s beforehand)",
            agents - failed,
            started.elapsed().as_secs_f64(),
            containers,
            status_bytes as f64 / 1024.0,
            (started - encode_started).as_secs_f64(),
        );
        usage.report("connect", &pids);

        // Status reports every 5 s from every agent, staggered, for as
        // long as the benchmark runs.
        let orders = Arc::new(orders);
        let reporting = {
            let orders = Arc::clone(&orders);
            tokio::spawn(async move {
                let slot = Duration::from_secs(5) / u32::try_from(orders.len().max(1)).unwrap_or(u32::MAX);
                let mut tick = tokio::time::interval(slot.max(Duration::from_micros(100)));
                let mut missed = 0u64;
                for a in (0..orders.len()).cycle() {
                    tick.tick().await;
                    if orders[a].try_send(Send::Status).is_err() {
                        missed += 1;
                    }
                    if a == 0 && missed > 0 {
                        println!("status: {missed} reports could not be queued (an agent's stream is full)");
                        missed = 0;
                    }
                }
            })
        };

        // 2. Steady.
        let usage = Usage::start(&pids);
        let mut warnings_sent = 0u64;
        let steady = Instant::now();
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        while steady.elapsed() < Duration::from_secs(steady_seconds) {
            tick.tick().await;
            for _ in 0..warnings_per_second.div_ceil(10) {
                let a = warnings_sent * 7919 % agents;
                let warning = request(ingest_request::Item::Warning(MemoryWarning {
                    id: format!("{}/warn/{warnings_sent}", node(a)),
                    node: node(a),
                    time: Some(now()),
                    cgroup: format!("/kubepods/burstable/pod{a:05}-000/{a:05}000cafe"),
                    working_set_bytes: 480 << 20,
                    limit_bytes: 512 << 20,
                    ..MemoryWarning::default()
                }));
                if orders[index(a)].try_send(Send::Warning(warning)).is_ok() {
                    warnings_sent += 1;
                }
            }
        }
        let steady_elapsed = steady.elapsed().as_secs_f64();
        println!(
            "steady: {steady_elapsed:.0} s: status reports {:.0}/s ({:.0} containers/s, {:.1} MiB/s), warnings {:.1}/s",
            agents as f64 / 5.0,
            (agents * containers) as f64 / 5.0,
            (agents as f64 / 5.0) * status_bytes as f64 / (1024.0 * 1024.0),
            warnings_sent as f64 / steady_elapsed,
        );
        usage.report("steady", &pids);
        tokio::time::sleep(Duration::from_secs(1)).await;
        let warnings_heard: Vec<u64> = hearing
            .iter()
            .map(|h| h.lock().unwrap_or_else(PoisonError::into_inner).warnings)
            .collect();
        println!(
            "steady: warnings heard per subscriber: min {} max {} of {warnings_sent} sent",
            warnings_heard.iter().min().copied().unwrap_or(0),
            warnings_heard.iter().max().copied().unwrap_or(0),
        );
        // Top through every replica: the 20 fullest containers are one on
        // each of the last 20 agents, whichever replica they talk to.
        let expected: Vec<String> = (agents.saturating_sub(20)..agents).rev().map(node).collect();
        for (i, endpoint) in endpoints.iter().enumerate() {
            let mut client = ClientConfig {
                endpoint: endpoint.clone(),
                ..ClientConfig::default()
            }
            .event_client()
            .await
            .expect("connect for Top");
            let mut latencies = Vec::new();
            let mut shown = Vec::new();
            for _ in 0..5 {
                let asked = Instant::now();
                let top = client.top(TopRequest::default()).await.expect("Top").into_inner();
                latencies.push(asked.elapsed());
                shown = top.containers.iter().map(|c| c.node.clone()).collect();
                // Past the one-second reuse of the shared reports.
                tokio::time::sleep(Duration::from_millis(1100)).await;
            }
            latencies.sort();
            println!(
                "steady: Top through replica {i}: p50 {:.0} ms, max {:.0} ms; the fleet's 20 fullest: {}",
                percentile(&latencies, 0.5),
                percentile(&latencies, 1.0),
                if shown == expected { "yes".to_owned() } else { format!("NO, shown {shown:?}") }
            );
        }

        // 3. Storm.
        let total = storm_rate * storm_seconds;
        let encode_started = Instant::now();
        let kills: Vec<(u64, String, Preencoded)> = (0..total)
            .map(|n| {
                let a = n * 7919 % agents;
                let mut event = kill(a, n);
                oomlens_proto::history::pack(event.history.as_mut().expect("a history"));
                (a, event.id.clone(), request(ingest_request::Item::Event(event)))
            })
            .collect();
        let kill_bytes = kills[0].2.0.len();
        println!(
            "storm: {total} kills of {:.1} KiB (600 samples, packed) encoded in {:.1} s",
            kill_bytes as f64 / 1024.0,
            encode_started.elapsed().as_secs_f64()
        );
        let usage = Usage::start(&pids);
        let storm = Instant::now();
        let mut tick = tokio::time::interval(Duration::from_millis(10));
        let per_tick = (storm_rate / 100).max(1);
        let mut queue_full = 0u64;
        let mut kills = kills.into_iter();
        'storm: loop {
            tick.tick().await;
            for _ in 0..per_tick {
                let Some((a, id, event)) = kills.next() else {
                    break 'storm;
                };
                if orders[index(a)].send(Send::Kill(id, event)).await.is_err() {
                    queue_full += 1;
                }
            }
        }
        let sending = storm.elapsed().as_secs_f64();
        println!(
            "storm: {total} kills sent in {sending:.1} s = {:.0}/s{}",
            total as f64 / sending,
            if queue_full > 0 { format!(" ({queue_full} could not be sent)") } else { String::new() }
        );
        // Acks, bounded.
        let deadline = Instant::now() + Duration::from_secs(180);
        let acked = loop {
            let acked = tally.acks.lock().unwrap_or_else(PoisonError::into_inner).len() as u64;
            if acked >= total || Instant::now() > deadline || !tally.ack_errors.lock().unwrap_or_else(PoisonError::into_inner).is_empty() {
                break acked;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let last_ack = tally.last_ack.lock().unwrap_or_else(PoisonError::into_inner).unwrap_or(storm);
        let storing = (last_ack - storm).as_secs_f64();
        let mut acks = tally.acks.lock().unwrap_or_else(PoisonError::into_inner).clone();
        acks.sort();
        println!(
            "storm: {acked} of {total} acked (stored durably) by {storing:.1} s = {:.0} kills/s ({:.1} MiB/s); ack latency p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms",
            acked as f64 / storing,
            acked as f64 * kill_bytes as f64 / storing / (1024.0 * 1024.0),
            percentile(&acks, 0.5),
            percentile(&acks, 0.99),
            percentile(&acks, 1.0),
        );
        for error in tally.ack_errors.lock().unwrap_or_else(PoisonError::into_inner).iter().take(3) {
            println!("storm: an ingest stream failed: {error}");
        }
        usage.report("storm", &pids);
        // Fan-out: each subscriber hears every kill. One that lagged is
        // told how many items it missed, then hears the kills among them
        // from the store: it is done only when it has heard them all.
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let done = hearing.iter().all(|h| {
                h.lock().unwrap_or_else(PoisonError::into_inner).events >= acked
            });
            if done || Instant::now() > deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let mut latencies = Vec::new();
        let (mut fewest, mut most, mut missed) = (u64::MAX, 0, 0);
        for heard in &hearing {
            let heard = heard.lock().unwrap_or_else(PoisonError::into_inner);
            fewest = fewest.min(heard.events);
            most = most.max(heard.events);
            missed += heard.missed;
            latencies.extend(&heard.latencies);
        }
        latencies.sort();
        println!(
            "storm: fan-out to {subscribers} subscribers: each heard {fewest}–{most} of {acked} kills ({missed} reported missed in all); send → subscriber p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms",
            percentile(&latencies, 0.5),
            percentile(&latencies, 0.99),
            percentile(&latencies, 1.0),
        );
        reporting.abort();

        let pool = sqlx::PgPool::connect(&database).await.expect("connect to the benchmark database");
        let (stored, distinct, table, whole): (i64, i64, i64, i64) = sqlx::query_as(
            "SELECT COUNT(*), COUNT(DISTINCT id), pg_total_relation_size('events'), pg_database_size(current_database()) FROM events",
        )
        .fetch_one(&pool)
        .await
        .expect("sizes");
        pool.close().await;
        let per_kill = table as f64 / stored.max(1) as f64;
        println!(
            "storm: stored {stored} rows for {total} kills ({distinct} distinct ids: {}); events table {:.0} MiB = {:.1} KiB per kill = {:.1} GiB per million kills; database {:.0} MiB",
            if stored == distinct && u64::try_from(stored).unwrap_or(0) == acked { "each acked kill exactly once" } else { "NOT exactly once" },
            table as f64 / (1024.0 * 1024.0),
            per_kill / 1024.0,
            per_kill * 1e6 / (1024.0 * 1024.0 * 1024.0),
            whole as f64 / (1024.0 * 1024.0),
        );
        drop(tier);
    });
}
