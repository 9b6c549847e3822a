//! The harness cleans up after every test, whatever ends it: a panic, a
//! timeout, a service that stops on its own.

use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::FutureExt;
use shared::ids::{InboxId, TenantId};
use shared::job::{Job, WorkerJob};
use tests::{TestEnv, TestOptions, run_test_with};

/// Where a test kept its state: its database and its Redis key prefix.
#[derive(Clone, Default)]
struct Traces(Arc<Mutex<Option<(String, String)>>>);

impl Traces {
    /// Notes `t`'s database and prefix, after giving both something to hold.
    async fn leave(&self, t: &TestEnv) {
        let job = Job::new(
            TenantId::new_v7(),
            "",
            WorkerJob::TurnV1 {
                inbox_id: InboxId::new_v7(),
            },
        );
        t.queue.enqueue(job).await.expect("enqueue a job");
        *self.0.lock().unwrap() = Some((t.db.name().to_owned(), t.redis_namespace().to_owned()));
    }

    /// Asserts the database is gone and no key with the prefix is left.
    async fn assert_cleaned_up(&self) {
        let (database, namespace) = self.0.lock().unwrap().clone().expect("the test ran");
        let admin = sqlx::PgPool::connect(&tests::db::admin_url())
            .await
            .unwrap();
        let exists: bool =
            sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
                .bind(&database)
                .fetch_one(&admin)
                .await
                .unwrap();
        assert!(!exists, "database {database} was left behind");
        let mut redis = redis::Client::open(tests::redis_url())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap();
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{namespace}:*"))
            .query_async(&mut redis)
            .await
            .unwrap();
        assert!(keys.is_empty(), "Redis keys left behind: {keys:?}");
    }
}

/// Runs a failing test; returns its panic message.
async fn failure_of(options: TestOptions, test: impl AsyncFnOnce(&mut TestEnv)) -> String {
    let failed = AssertUnwindSafe(run_test_with(options, test))
        .catch_unwind()
        .await
        .expect_err("the test fails");
    failed
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| failed.downcast_ref::<&str>().map(|s| (*s).to_owned()))
        .unwrap_or_default()
}

#[tokio::test]
async fn a_test_that_panics_leaves_no_database_and_no_redis_keys_behind() {
    let traces = Traces::default();
    let message = failure_of(TestOptions::default(), async |t| {
        traces.leave(t).await;
        panic!("on purpose");
    })
    .await;
    assert_eq!(message, "on purpose");
    traces.assert_cleaned_up().await;
}

#[tokio::test]
async fn a_test_that_outlasts_its_time_fails_and_cleans_up() {
    let traces = Traces::default();
    let options = TestOptions {
        timeout: Some(Duration::from_millis(500)),
        ..Default::default()
    };
    let message = failure_of(options, async |t| {
        traces.leave(t).await;
        std::future::pending::<()>().await;
    })
    .await;
    assert_eq!(message, "the test timed out after 500ms");
    traces.assert_cleaned_up().await;
}

#[tokio::test]
async fn a_service_that_stops_while_the_test_runs_fails_it_and_cleans_up() {
    let traces = Traces::default();
    let message = failure_of(TestOptions::default(), async |t| {
        traces.leave(t).await;
        t.spawn_service(async { anyhow::bail!("the service gave up") });
        std::future::pending::<()>().await;
    })
    .await;
    assert_eq!(message, "a service stopped while the test ran");
    traces.assert_cleaned_up().await;
}
