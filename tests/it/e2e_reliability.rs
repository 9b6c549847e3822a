//! Nothing lost: Postgres is the system of record; the relay brings back
//! jobs that Redis lost.

use shared::access::queue::QueueName;
use tests::fake::openai::Scripted;
use tests::{TestEnv, TestOptions, fixture};

#[tokio::test]
async fn a_message_accepted_before_redis_lost_its_queue_is_answered_once() {
    let mut t = TestEnv::start_with(TestOptions {
        worker_later: true,
        relay_grace_ms: Some(0),
        ..Default::default()
    })
    .await;
    t.openai.script([Scripted::Text("Fortsatt her.".into())]);
    assert_eq!(
        t.post_slack_event(&fixture("slack/event_callback.message.json"))
            .await,
        200
    );
    let depth = t.queue.depth(QueueName::Worker).await.unwrap();
    assert_eq!(depth.backlog(), 1, "the accepted message's job is queued");

    // Redis restarts without persistence before any worker took the job.
    t.wipe_redis().await;
    assert_eq!(t.queue.depth(QueueName::Worker).await.unwrap().backlog(), 0);

    t.start_worker().await;
    t.wait_for_posts(1).await;
    t.wait_idle().await;
    assert_eq!(t.slack.take_posted()[0].text, "Fortsatt her.");
    assert_eq!(t.openai.requests().len(), 1, "one turn");
    t.finish().await;
}
