//! Fault tests with real gateway and worker processes (the binaries), their
//! Postgres and Redis behind proxies the tests take away: every message the
//! gateway acknowledged is answered exactly once, in order per conversation.

use std::time::Duration;

use tests::fake::openai::Scripted;
use tests::load::SlackLoad;
use tests::{ServiceSettings, TestEnv, TestOptions, run_test_with};

/// Recovery waits out heartbeats (15 s), leases and backoff.
const RECOVERY: Duration = Duration::from_secs(90);

const LOAD: SlackLoad = SlackLoad {
    conversations: 6,
    per_conversation: 4,
};

/// Runs a fault test: the gateway a process, the workers started by the
/// test, services that ride out faults, and a model that echoes.
async fn fault_test(test: impl AsyncFnOnce(&mut TestEnv)) {
    let options = TestOptions {
        worker_later: true,
        gateway_process: true,
        settings: ServiceSettings::riding_out_faults(),
        ..Default::default()
    };
    run_test_with(options, async |t| {
        t.openai.when_empty(Scripted::Echo);
        test(t).await;
    })
    .await;
}

async fn wait_all_answered(t: &TestEnv, load: SlackLoad) {
    t.wait_until_within("every reply posted", RECOVERY, || async {
        t.slack.posted_count() >= load.total()
    })
    .await;
    t.wait_idle_within(RECOVERY).await;
}

#[tokio::test]
async fn a_worker_killed_mid_turn_under_load_loses_and_repeats_nothing() {
    fault_test(async |t| {
        t.openai.set_latency(Duration::from_millis(400));
        let doomed = t.start_worker_process(&[("AE_CONCURRENCY", "4")]).await;
        let survivor = t.start_worker_process(&[("AE_CONCURRENCY", "4")]).await;
        LOAD.post_all(t).await;
        let doomed_leases = format!("turns-{}-", doomed.pid());
        t.wait_until("the doomed worker running a turn", || async {
            t.db.lease_holders()
                .await
                .iter()
                .any(|holder| holder.starts_with(&doomed_leases))
        })
        .await;
        doomed.kill().await;

        wait_all_answered(t, LOAD).await;
        LOAD.assert_answered_once_in_order(t).await;
        assert_eq!(
            t.openai.max_concurrent_per_conversation(),
            1,
            "one turn at a time per conversation"
        );
        drop(survivor);
    })
    .await;
}

#[tokio::test]
async fn redis_restarting_empty_under_load_loses_nothing() {
    fault_test(async |t| {
        t.openai.set_latency(Duration::from_millis(200));
        let _worker = t.start_worker_process(&[]).await;
        LOAD.post_round(t, 0).await;
        LOAD.post_round(t, 1).await;

        // Redis goes away and comes back empty, as a restart without persistence.
        let redis = t.redis_proxy.as_ref().unwrap();
        redis.set_up(false);
        assert!(t.jobs_in_redis().await > 0, "Redis held jobs when it went");
        t.wipe_redis().await;
        let resend = async {
            LOAD.post_round(t, 2).await;
            LOAD.post_round(t, 3).await;
        };
        let restart = async {
            tokio::time::sleep(Duration::from_secs(2)).await;
            redis.set_up(true);
        };
        tokio::join!(resend, restart);

        wait_all_answered(t, LOAD).await;
        LOAD.assert_answered_once_in_order(t).await;
    })
    .await;
}

#[tokio::test]
async fn a_failing_model_delays_but_loses_and_repeats_nothing() {
    fault_test(async |t| {
        t.openai.script([
            Scripted::Error(500),
            Scripted::RateLimited(1),
            Scripted::Hang(Duration::from_secs(3)),
            Scripted::Error(503),
            Scripted::Error(502),
            Scripted::RateLimited(2),
        ]);
        let _worker = t.start_worker_process(&[]).await;
        LOAD.post_all(t).await;

        wait_all_answered(t, LOAD).await;
        LOAD.assert_answered_once_in_order(t).await;
        assert_eq!(
            t.db.count("dead_jobs").await,
            0,
            "transient failures are retried, not dead-lettered"
        );
    })
    .await;
}

#[tokio::test]
async fn postgres_unreachable_for_a_while_loses_nothing() {
    fault_test(async |t| {
        t.openai.set_latency(Duration::from_millis(200));
        let _worker = t.start_worker_process(&[]).await;
        LOAD.post_round(t, 0).await;
        LOAD.post_round(t, 1).await;

        let postgres = t.postgres_proxy.as_ref().unwrap();
        postgres.set_up(false);
        let resend = async { LOAD.post_round(t, 2).await + LOAD.post_round(t, 3).await };
        let back = async {
            tokio::time::sleep(Duration::from_secs(3)).await;
            postgres.set_up(true);
        };
        let (refused, ()) = tokio::join!(resend, back);
        assert!(
            refused > 0,
            "the gateway refused messages it could not record"
        );

        wait_all_answered(t, LOAD).await;
        LOAD.assert_answered_once_in_order(t).await;
    })
    .await;
}

/// Starts a worker with `grace_ms` of shutdown grace, sends it `load` with
/// a slow model, SIGTERMs it while every turn is running and asserts it
/// exits 0; returns how long it took to stop.
async fn sigterm_mid_turn(t: &TestEnv, load: SlackLoad, grace_ms: &str) -> Duration {
    t.openai.set_latency(Duration::from_millis(1500));
    let worker = t
        .start_worker_process(&[("AE_SHUTDOWN_GRACE_MS", grace_ms)])
        .await;
    load.post_all(t).await;
    t.wait_until("every turn running", || async {
        t.openai.request_count() >= load.total()
    })
    .await;
    let stopped = std::time::Instant::now();
    let status = worker.terminate(Duration::from_secs(15)).await;
    assert!(status.success(), "worker exited with {status}");
    stopped.elapsed()
}

#[tokio::test]
async fn sigterm_finishes_running_turns_within_the_grace_period_and_exits_zero() {
    fault_test(async |t| {
        let load = SlackLoad {
            conversations: 4,
            per_conversation: 1,
        };
        let stopped_in = sigterm_mid_turn(t, load, "10000").await;
        assert!(
            stopped_in < Duration::from_secs(10),
            "stopped in {stopped_in:?}, past the grace period"
        );
        // The turns were finished, not abandoned: no other worker is running.
        t.wait_until("every reply posted", || async {
            t.slack.posted_count() >= load.total()
        })
        .await;
        t.wait_idle().await;
        load.assert_answered_once_in_order(t).await;
        assert_eq!(t.openai.request_count(), load.total(), "no turn ran twice");
    })
    .await;
}

#[tokio::test]
async fn sigterm_hands_back_turns_that_outlast_the_grace_period() {
    fault_test(async |t| {
        let load = SlackLoad {
            conversations: 2,
            per_conversation: 1,
        };
        let stopped_in = sigterm_mid_turn(t, load, "200").await;
        assert!(
            stopped_in < Duration::from_millis(1200),
            "the worker did not wait for the model past its grace period"
        );
        assert_eq!(t.slack.posted_count(), 0, "nothing answered yet");

        let _next = t.start_worker_process(&[]).await;
        t.openai.set_latency(Duration::ZERO);
        wait_all_answered(t, load).await;
        load.assert_answered_once_in_order(t).await;
    })
    .await;
}
