//! Benchmarks, never part of the test run: `bash scripts/bench` (see
//! `BENCHMARKS.md`). The real `gateway` and `worker` binaries (release
//! builds) as processes on local Postgres and Redis, connected directly;
//! Slack, the model and the Accounting API are the test suite's fakes.
//!
//! `bench <scenario> [runs]` prints one JSON line per run:
//! - `turn`: turns through gateway → queue → worker → reply with an instant
//!   model and one read tool per turn: turns/s of one worker process, its ms
//!   per turn, and the end-to-end latency of turns sent one at a time;
//! - `concurrency`: a model that takes 2 s: turns in flight in one worker,
//!   turns/s, the worker's peak RSS;
//! - `ingest`: signed Slack webhooks into the durable inbox and the queue,
//!   no worker: acks/s and ack latency;
//! - `latency`: what the platform adds, one at a time with an instant model
//!   and tools: a message's webhook sent → its reply's `chat.postMessage`
//!   reaching Slack, and an Approve click's webhook sent → the execution's
//!   write (its `POST`, after the list read and the recorded intent)
//!   reaching the Accounting API (p50/p99 of each);
//! - `trips`: Postgres round trips and transactions per message, the
//!   gateway's and the worker's, read from the protocol by proxies;
//! - `growth`: the event store and proposals grown to 1k, 100k and 1M
//!   events: turn latency, the proposal queries and the usage report at
//!   each size, and turns in one conversation grown along (to 100k events).

use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::{Value, json};
use shared::engine::review::APPROVE_ACTION;
use shared::job::QueueName;
use tests::fake::openai::Scripted;
use tests::load::SlackLoad;
use tests::signing::slack_signature;
use tests::{SLACK_SIGNING_SECRET, TestEnv, TestOptions};

/// The gateway may take everything the load sends.
const GATEWAY_ENV: &[(&str, &str)] = &[
    ("AE_LIMITS__USER_PER_MINUTE", "100000000"),
    ("AE_LIMITS__TENANT_PER_MINUTE", "100000000"),
    ("AE_DELIVERY__CONCURRENCY", "64"),
    ("AE_DATABASE__MAX_CONNECTIONS", "20"),
];

/// Slack channels the ingest scenario's messages come from (a company's
/// agent listens in a handful; every message starts its own conversation).
const INGEST_CHANNELS: usize = 50;

/// The read tool the fake model calls once per turn.
const READ_TOOL: &str = "get_bank_balances";

#[tokio::main]
async fn main() {
    shared::telemetry::install_crypto_provider();
    let mut args = std::env::args().skip(1);
    let scenario = args.next().unwrap_or_default();
    let runs: usize = args
        .next()
        .map_or(1, |r| r.parse().expect("runs is a number"));
    for run in 1..=runs {
        let mut result = match scenario.as_str() {
            "turn" => turn(3000, 100).await,
            "concurrency" => concurrency(1500, 600).await,
            "ingest" => ingest(20_000, 64).await,
            "growth" => growth().await,
            "latency" => latency(200).await,
            "trips" => trips(200).await,
            other => {
                eprintln!(
                    "usage: bench turn|concurrency|ingest|growth|latency|trips [runs] (not {other:?})"
                );
                std::process::exit(2);
            }
        };
        result["scenario"] = json!(scenario);
        result["run"] = json!(run);
        println!("{result}");
    }
}

async fn start() -> TestEnv {
    TestEnv::start_with(TestOptions {
        gateway_process: true,
        worker_later: true,
        direct_connections: true,
        gateway_env: GATEWAY_ENV,
        ..Default::default()
    })
    .await
}

/// A worker process running `concurrency` jobs at once.
async fn start_worker(t: &TestEnv, concurrency: usize) -> tests::process::ServiceProcess {
    let concurrency = concurrency.to_string();
    t.start_worker_process(&[
        ("AE_CONCURRENCY", &concurrency),
        ("AE_LLM__TIMEOUT_SECS", "30"),
        ("AE_LEASE_TTL_MS", "30000"),
        ("AE_RELAY__GRACE_MS", "600000"),
        ("AE_DATABASE__MAX_CONNECTIONS", "40"),
    ])
    .await
}

/// Posts message 0 of conversations `range`, `parallel` at a time, each in
/// its own Slack channel or spread over `channels`; returns each
/// acknowledgement's latency.
async fn post_in(
    t: &TestEnv,
    range: std::ops::Range<usize>,
    parallel: usize,
    channels: Option<usize>,
) -> Vec<Duration> {
    post_messages(t, range.map(|c| (c, 0)), parallel, channels).await
}

/// Posts message `m` of conversation `c` for each `(c, m)`; `channels` as
/// in [`post_in`].
async fn post_messages(
    t: &TestEnv,
    messages: impl Iterator<Item = (usize, usize)>,
    parallel: usize,
    channels: Option<usize>,
) -> Vec<Duration> {
    let ts = chrono::Utc::now().timestamp().to_string();
    let signed: Vec<(String, String)> = messages
        .map(|(c, m)| {
            let mut event: Value = serde_json::from_str(&SlackLoad::event(c, m)).expect("event");
            let channel = channels.map_or(c, |n| c % n);
            event["event"]["channel"] = json!(format!("CB{channel:07}"));
            let body = event.to_string();
            let signature = slack_signature(SLACK_SIGNING_SECRET, &ts, &body);
            (body, signature)
        })
        .collect();
    futures::stream::iter(signed)
        .map(|(body, signature)| {
            let ts = ts.clone();
            async move {
                let sent = Instant::now();
                let response = t.post_slack_event_with(&body, &ts, &signature, &[]).await;
                assert_eq!(response.status(), 200, "the gateway acknowledges");
                sent.elapsed()
            }
        })
        .buffer_unordered(parallel)
        .collect()
        .await
}

/// Like [`post_in`], one channel per conversation: replies are paced per
/// channel, as Slack allows about one message a second in each.
async fn post(t: &TestEnv, range: std::ops::Range<usize>, parallel: usize) -> Vec<Duration> {
    post_in(t, range, parallel, None).await
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    #[expect(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss
    )]
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1000.0
}

/// Peak resident set size of a process, in MiB (`VmHWM`).
fn peak_rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0.0);
    kib / 1024.0
}

/// CPU seconds (user + system) used so far by the processes whose command
/// name is one of `names`, or whose pid is in `pids`.
fn cpu_seconds(names: &[&str], pids: &[u32]) -> f64 {
    let mut ticks = 0_u64;
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // pid (comm) state ... field 14 utime, 15 stime
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let comm = &stat[open + 1..close];
        if !pids.contains(&pid) && !names.contains(&comm) {
            continue;
        }
        let fields: Vec<&str> = stat[close + 2..].split(' ').collect();
        let field = |i: usize| {
            fields
                .get(i)
                .and_then(|f| f.parse::<u64>().ok())
                .unwrap_or(0)
        };
        ticks += field(11) + field(12);
    }
    #[expect(clippy::cast_precision_loss)]
    let seconds = ticks as f64 / 100.0;
    seconds
}

/// CPU seconds of each part of the system.
struct CpuUse {
    worker: f64,
    gateway: f64,
    postgres: f64,
    redis: f64,
    fakes_and_load: f64,
}

impl CpuUse {
    /// Now; `worker` is `None` when no worker runs.
    fn now(worker: Option<u32>, gateway: u32) -> Self {
        Self {
            worker: worker.map_or(0.0, |pid| cpu_seconds(&[], &[pid])),
            gateway: cpu_seconds(&[], &[gateway]),
            postgres: cpu_seconds(&["postgres"], &[]),
            redis: cpu_seconds(&["redis-server"], &[]),
            fakes_and_load: cpu_seconds(&[], &[std::process::id()]),
        }
    }

    /// CPU milliseconds per item (turn, webhook) spent by each part since
    /// `before`.
    #[expect(clippy::cast_precision_loss)]
    fn per_item_ms(&self, before: &Self, items: usize) -> Value {
        let ms =
            |now: f64, then: f64| ((now - then) * 1000.0 / items as f64 * 100.0).round() / 100.0;
        json!({
            "worker": ms(self.worker, before.worker),
            "gateway": ms(self.gateway, before.gateway),
            "postgres": ms(self.postgres, before.postgres),
            "redis": ms(self.redis, before.redis),
            "fakes_and_load": ms(self.fakes_and_load, before.fakes_and_load),
        })
    }
}

/// Turns of `n` queued conversations drained by one worker, then
/// `sequential` turns sent one after another.
async fn turn(n: usize, sequential: usize) -> Value {
    let t = start().await;
    t.openai
        .when_empty(Scripted::ToolThenEcho(READ_TOOL.into()));
    post(&t, 0..n, 32).await;
    let worker = start_worker(&t, 16).await;
    let gateway = t.gateway_process().pid();
    t.slack.wait_posted_total(1).await;
    let first = Instant::now();
    let cpu_before = CpuUse::now(Some(worker.pid()), gateway);
    t.slack.wait_posted_total(n).await;
    let drained = first.elapsed();
    let cpu = CpuUse::now(Some(worker.pid()), gateway).per_item_ms(&cpu_before, n - 1);
    #[expect(clippy::cast_precision_loss)]
    let turns_per_s = (n - 1) as f64 / drained.as_secs_f64();

    let mut latencies = Vec::with_capacity(sequential);
    for c in n..n + sequential {
        let sent = Instant::now();
        post(&t, c..c + 1, 1).await;
        t.slack.wait_posted_total(c + 1).await;
        latencies.push(sent.elapsed());
    }
    latencies.sort();
    let result = json!({
        "turns": n,
        "turns_per_s": turns_per_s,
        "ms_per_turn": 1000.0 / turns_per_s,
        "cpu_ms_per_turn": cpu,
        "model_calls": t.openai.request_count(),
        "sequential_turns": sequential,
        "sequential_p50_ms": percentile(&latencies, 0.5),
        "sequential_p99_ms": percentile(&latencies, 0.99),
        "worker_peak_rss_mib": peak_rss_mib(worker.pid()),
        "seq_scans": t.db.seq_scans().await,
    });
    stop(t, worker).await;
    result
}

/// `n` messages, then `n` decisions, each alone in the system.
async fn latency(n: usize) -> Value {
    let t = start().await;
    t.openai
        .when_empty(Scripted::ToolThenEcho(READ_TOOL.into()));
    let worker = start_worker(&t, 16).await;
    let mut posted = 0;
    let mut messages = Vec::with_capacity(n);
    // The first message warms the connections and caches up; not counted.
    for c in 0..=n {
        let sent = Instant::now();
        post(&t, c..c + 1, 1).await;
        posted += 1;
        t.slack.wait_posted_total(posted).await;
        let reached = t.slack.post_attempts().last().expect("the reply").at;
        if c > 0 {
            messages.push(reached.duration_since(sent));
        }
    }
    let mut decisions = Vec::with_capacity(n);
    for d in 0..=n {
        let args = json!({"merchant": "Kontorland", "body": {
            "date": "2026-11-20", "kind": "cash_purchase", "paid": true, "currency": "NOK",
            "paymentAccount": "1920:10001",
            "lines": [{"description": format!("Rekvisita {d}"), "netPrice": 400_000 + d,
                       "vat": 100_000, "account": "6800", "vatType": "HIGH"}]}});
        t.openai.script([
            Scripted::tool_call("register_purchase", &args.to_string()),
            Scripted::Text("Sendt til godkjenning.".into()),
        ]);
        t.openai.script_for(
            "Review-E",
            [Scripted::Text(
                r#"{"verdict": "approve", "notes": "Looks right."}"#.into(),
            )],
        );
        let c = n + 1 + d;
        post(&t, c..c + 1, 1).await;
        // The reply and Review-E's note, then nothing running.
        posted += 2;
        t.slack.wait_posted_total(posted).await;
        t.wait_idle().await;
        let card = t.slack.take_cards().pop().expect("a review card");
        t.accounting.take_requests();
        let sent = Instant::now();
        assert_eq!(
            t.click("W222", APPROVE_ACTION, &card.approve_value()).await,
            200
        );
        let reached = loop {
            let requests = t.accounting.take_requests();
            if let Some(write) = requests.iter().find(|r| r.method == "POST") {
                break write.at;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        };
        if d > 0 {
            decisions.push(reached.duration_since(sent));
        }
        // The owner's notice, and the card updated.
        posted += 1;
        t.slack.wait_posted_total(posted).await;
        t.wait_idle().await;
        t.slack.take_updates();
    }
    messages.sort();
    decisions.sort();
    let result = json!({
        "messages": n,
        "message_p50_ms": percentile(&messages, 0.5),
        "message_p99_ms": percentile(&messages, 0.99),
        "decisions": n,
        "decision_p50_ms": percentile(&decisions, 0.5),
        "decision_p99_ms": percentile(&decisions, 0.99),
    });
    stop(t, worker).await;
    result
}

/// Postgres round trips and transactions per message of `n` messages
/// answered one at a time (instant model, one read tool), the gateway's and
/// the worker's, counted by proxies that read the protocol; with what the
/// same processes do idle (sweeps, heartbeats) in as long, which is also in
/// the per-message numbers.
async fn trips(n: usize) -> Value {
    let t = TestEnv::start_with(TestOptions {
        gateway_process: true,
        worker_later: true,
        gateway_env: GATEWAY_ENV,
        ..Default::default()
    })
    .await;
    t.openai
        .when_empty(Scripted::ToolThenEcho(READ_TOOL.into()));
    let gateway = t.postgres_proxy.as_ref().expect("the gateway's proxy");
    let worker_proxy = t.counting_postgres_proxy().await;
    let worker_url = t.postgres_url_via(Some(&worker_proxy));
    let worker = t
        .start_worker_process(&[
            ("AE_CONCURRENCY", "16"),
            ("AE_LLM__TIMEOUT_SECS", "30"),
            ("AE_DATABASE__URL", &worker_url),
        ])
        .await;
    let traffic = || (gateway.traffic(), worker_proxy.traffic());
    // The first message warms the connections and caches up; not counted.
    post(&t, 0..1, 1).await;
    t.slack.wait_posted_total(1).await;
    t.wait_idle().await;
    let (gateway_before, worker_before) = traffic();
    let started = Instant::now();
    for c in 1..=n {
        post(&t, c..c + 1, 1).await;
        t.slack.wait_posted_total(c + 1).await;
    }
    t.wait_idle().await;
    let busy = started.elapsed();
    let (gateway_busy, worker_busy) = traffic();
    tokio::time::sleep(busy).await;
    let (gateway_idle, worker_idle) = traffic();
    #[expect(clippy::cast_precision_loss)]
    let per_message =
        |after: u64, before: u64| ((after - before) as f64 / n as f64 * 10.0).round() / 10.0;
    let result = json!({
        "messages": n,
        "gateway_round_trips": per_message(gateway_busy.round_trips, gateway_before.round_trips),
        "gateway_transactions": per_message(gateway_busy.transactions, gateway_before.transactions),
        "worker_round_trips": per_message(worker_busy.round_trips, worker_before.round_trips),
        "worker_transactions": per_message(worker_busy.transactions, worker_before.transactions),
        "idle_gateway_round_trips": per_message(gateway_idle.round_trips, gateway_busy.round_trips),
        "idle_worker_round_trips": per_message(worker_idle.round_trips, worker_busy.round_trips),
    });
    stop(t, worker).await;
    result
}

/// `n` conversations against a model that takes 2 s per call.
async fn concurrency(n: usize, worker_concurrency: usize) -> Value {
    let t = start().await;
    t.openai.when_empty(Scripted::Echo);
    t.openai.set_latency(Duration::from_secs(2));
    post(&t, 0..n, 32).await;
    let worker = start_worker(&t, worker_concurrency).await;
    let gateway = t.gateway_process().pid();
    t.slack.wait_posted_total(1).await;
    let first = Instant::now();
    let cpu_before = CpuUse::now(Some(worker.pid()), gateway);
    t.slack.wait_posted_total(n).await;
    let drained = first.elapsed();
    let cpu = CpuUse::now(Some(worker.pid()), gateway).per_item_ms(&cpu_before, n - 1);
    #[expect(clippy::cast_precision_loss)]
    let turns_per_s = (n - 1) as f64 / drained.as_secs_f64();
    let result = json!({
        "turns": n,
        "cpu_ms_per_turn": cpu,
        "model_latency_s": 2,
        "worker_concurrency": worker_concurrency,
        "max_in_flight": t.openai.max_concurrent(),
        "turns_per_s": turns_per_s,
        "worker_peak_rss_mib": peak_rss_mib(worker.pid()),
    });
    stop(t, worker).await;
    result
}

/// `n` signed webhooks, `parallel` connections at once, no worker.
async fn ingest(n: usize, parallel: usize) -> Value {
    let t = start().await;
    let gateway = t.gateway_process().pid();
    let cpu_before = CpuUse::now(None, gateway);
    let started = Instant::now();
    let mut latencies = post_in(&t, 0..n, parallel, Some(INGEST_CHANNELS)).await;
    let elapsed = started.elapsed();
    let cpu = CpuUse::now(None, gateway).per_item_ms(&cpu_before, n);
    latencies.sort();
    let queued = t
        .queue
        .depth(QueueName::Worker)
        .await
        .expect("depth")
        .backlog();
    let recorded = t.db.count("inbox").await;
    assert_eq!(queued, n as u64, "every acknowledged message is queued");
    assert_eq!(recorded, i64::try_from(n).unwrap(), "and in the inbox");
    #[expect(clippy::cast_precision_loss)]
    let result = json!({
        "webhooks": n,
        "parallel": parallel,
        "acks_per_s": n as f64 / elapsed.as_secs_f64(),
        "ack_p50_ms": percentile(&latencies, 0.5),
        "ack_p99_ms": percentile(&latencies, 0.99),
        "cpu_ms_per_webhook": cpu,
        "gateway_peak_rss_mib": peak_rss_mib(t.gateway_process().pid()),
    });
    t.finish().await;
    result
}

/// The worker's own measure of its turn jobs so far: (seconds, count),
/// from `automate_e_job_seconds{kind="turn"}` on its `/metrics`.
async fn worker_turn_seconds(t: &TestEnv, worker: &tests::process::ServiceProcess) -> (f64, f64) {
    let metrics = t.metrics_of(&worker.url).await;
    let value = |name: &str| {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name}{{kind=\"turn\"}} ")))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (
        value("automate_e_job_seconds_sum"),
        value("automate_e_job_seconds_count"),
    )
}

/// Where the long conversation of [`growth`] posts (past its other ones).
const LONG_CONVERSATION: usize = 999;

/// Turn latency, proposal queries and the usage report as the store grows.
async fn growth() -> Value {
    let t = start().await;
    t.openai
        .when_empty(Scripted::ToolThenEcho(READ_TOOL.into()));
    let worker = start_worker(&t, 16).await;
    let store = t.db.service_store().await;
    let tenant = t.db.tenant_id("acme").await;
    let tenant_store = store.tenant(shared::ids::TenantId(tenant));
    let mut sizes = Vec::new();
    let mut seeded = 0;
    let mut conversation = 0;
    // One long conversation too, grown with the store (a tenth of its
    // events): a turn in it reads only the end of its history.
    post(&t, LONG_CONVERSATION..LONG_CONVERSATION + 1, 1).await;
    let mut posted = 1;
    t.slack.wait_posted_total(posted).await;
    let long = t.db.last_conversation(tenant).await;
    let mut long_messages = 0;
    for (batch, size) in [1_000_i64, 100_000, 1_000_000].into_iter().enumerate() {
        t.db.seed_history(tenant, size - seeded, batch).await;
        t.db.seed_conversation(tenant, long, (size - seeded) / 10)
            .await;
        seeded = size;
        // Turn latency, one turn at a time: end to end, and the worker's
        // own time in the turn job.
        let (seconds_before, count_before) = worker_turn_seconds(&t, &worker).await;
        let mut turns = Vec::new();
        for _ in 0..50 {
            let sent = Instant::now();
            post(&t, conversation..conversation + 1, 1).await;
            conversation += 1;
            posted += 1;
            t.slack.wait_posted_total(posted).await;
            turns.push(sent.elapsed());
        }
        turns.sort();
        let (seconds, count) = worker_turn_seconds(&t, &worker).await;
        let worker_turn_ms = (seconds - seconds_before) * 1000.0 / (count - count_before);
        // Turns in the long conversation (replies there are paced at about
        // one a second), by the worker's own time in the turn job.
        for _ in 0..5 {
            long_messages += 1;
            let message = [(LONG_CONVERSATION, long_messages)].into_iter();
            post_messages(&t, message, 1, None).await;
            posted += 1;
            t.slack.wait_posted_total(posted).await;
        }
        let (long_seconds, long_count) = worker_turn_seconds(&t, &worker).await;
        let long_turn_ms = (long_seconds - seconds) * 1000.0 / (long_count - count);
        // The proposal queries of review and auto-approval.
        let timed = |samples: &mut Vec<Duration>| {
            samples.sort();
            percentile(samples, 0.5)
        };
        let proposal = t.db.any_proposal().await;
        let (mut pattern, mut by_id, mut by_message) = (Vec::new(), Vec::new(), Vec::new());
        let mut usage = Vec::new();
        for i in 0..200 {
            let started = Instant::now();
            tenant_store
                .executed_arguments("register_purchase", &format!("merchant-{}", i % 50), 20)
                .await
                .expect("pattern history");
            pattern.push(started.elapsed());
            let started = Instant::now();
            tenant_store.proposal(proposal).await.expect("a proposal");
            by_id.push(started.elapsed());
            let started = Instant::now();
            store
                .review_tenant(tests::REVIEW_CHANNEL)
                .await
                .expect("review channel tenant");
            by_message.push(started.elapsed());
            // Cost-E's usage report for the last 30 days (the seeded
            // history is older).
            let started = Instant::now();
            let now = chrono::Utc::now();
            tenant_store
                .recorded_usage(now - chrono::Duration::days(30), now)
                .await
                .expect("usage report");
            usage.push(started.elapsed());
        }
        sizes.push(json!({
            "events": t.db.count("events").await,
            "proposals": t.db.count("proposals").await,
            "turn_p50_ms": percentile(&turns, 0.5),
            "turn_p99_ms": percentile(&turns, 0.99),
            "worker_turn_job_mean_ms": worker_turn_ms,
            "long_conversation_events": t.db.stream_length(long).await,
            "long_conversation_turn_job_mean_ms": long_turn_ms,
            "pattern_history_p50_ms": timed(&mut pattern),
            "proposal_by_id_p50_ms": timed(&mut by_id),
            "review_channel_lookup_p50_ms": timed(&mut by_message),
            "usage_report_p50_ms": timed(&mut usage),
        }));
    }
    stop(t, worker).await;
    json!({ "sizes": sizes })
}

async fn stop(t: TestEnv, worker: tests::process::ServiceProcess) {
    let status = worker.terminate(Duration::from_secs(60)).await;
    assert!(status.success(), "worker exited with {status}");
    t.slack.take_posted();
    t.finish().await;
}
