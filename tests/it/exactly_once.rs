//! Exactly once without an idempotency key, against the real binaries: an
//! approved purchase with its receipt is made once, its receipt attached
//! once, and the owner told once — whether Fiken's answer is lost after it
//! committed, comes after the worker's timeout, or the worker is killed
//! while it waits for it.

use std::time::Duration;

use serde_json::{Value, json};
use shared::engine::review::APPROVE_ACTION;
use shared::job::{Job, WorkerJob};
use tests::fake::accounting::WriteFault;
use tests::fake::openai::Scripted;
use tests::{
    ACME, FIXTURE_CHANNEL, REVIEW_CHANNEL, ServiceSettings, TestEnv, TestOptions, fixture,
    receipt_id, receipt_pdf, run_test_with,
};

/// Recovery waits out the killed worker's heartbeats and the hold.
const RECOVERY: Duration = Duration::from_secs(90);

/// Runs a test with the gateway a process, workers started by the test,
/// services that ride out faults, and Fiken calls that time out after 2 s.
async fn fault_test(test: impl AsyncFnOnce(&mut TestEnv)) {
    let options = TestOptions {
        worker_later: true,
        gateway_process: true,
        settings: ServiceSettings {
            accounting_timeout_secs: 2,
            ..ServiceSettings::riding_out_faults()
        },
        ..TestOptions::default()
    };
    run_test_with(options, test).await;
}

/// The owner sends a PDF receipt; Book-E files the purchase with it;
/// Review-E has no concerns. Returns the card's Approve value once the card
/// and both notes are posted (and taken).
async fn proposed(t: &TestEnv) -> String {
    let pdf = receipt_pdf();
    let url = t
        .slack
        .add_file("kvittering.pdf", pdf.clone(), "application/pdf");
    let args = json!({"merchant": "Clas Ohlson", "receipt": receipt_id(&pdf), "body": {
        "date": "2026-11-20", "kind": "cash_purchase", "paid": true, "currency": "NOK",
        "paymentAccount": "1920:10001",
        "lines": [{"description": "Kontorrekvisita", "netPrice": 40000, "vat": 10000,
                   "account": "6800", "vatType": "HIGH"}]}});
    t.openai.script([
        Scripted::tool_call("register_purchase", &args.to_string()),
        Scripted::Text("Sendt til godkjenning.".into()),
    ]);
    t.openai.script_for(
        "Review-E",
        [Scripted::Text(
            r#"{"verdict": "approve", "notes": "Ok."}"#.into(),
        )],
    );
    let mut event: Value =
        serde_json::from_str(&fixture("slack/event_callback.message.json")).unwrap();
    event["event"]["subtype"] = json!("file_share");
    event["event"]["text"] = json!("Registrer kvitteringen");
    event["event"]["files"] = json!([{"id": "F01", "name": "kvittering.pdf",
        "mimetype": "application/pdf", "url_private": url}]);
    assert_eq!(t.post_slack_event(&event.to_string()).await, 200);
    t.wait_for_cards(1).await;
    t.wait_until("Book-E's reply and Review-E's note", || async {
        t.slack.posted_in(FIXTURE_CHANNEL) == 1 && t.slack.posted_in(REVIEW_CHANNEL) == 1
    })
    .await;
    t.slack.take_posted();
    t.slack.take_cards().remove(0).approve_value()
}

/// Waits until the proposal is executed and the owner told; asserts one
/// purchase with one attachment, the receipt's bytes, one notice, and how
/// each step ended.
async fn executed_once(t: &TestEnv, outcomes: &[&str]) {
    t.wait_until_within("the proposal executed", RECOVERY, || async {
        t.proposals().await.iter().any(|(_, s)| s == "executed")
    })
    .await;
    t.wait_idle_within(RECOVERY).await;
    let purchases = t.accounting.purchases(ACME);
    assert_eq!(purchases.len(), 1, "{purchases:?}");
    assert_eq!(
        purchases[0]["purchaseAttachments"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    let uploads = t.accounting.uploads(ACME);
    assert_eq!(uploads.len(), 1);
    assert_eq!(uploads[0].bytes, receipt_pdf());
    let told = t.slack.take_texts();
    assert_eq!(told.len(), 1, "the owner is told once: {told:?}");
    assert!(told[0].contains("approved and carried out"), "{told:?}");
    assert_eq!(t.slack.take_updates().len(), 1);
    let ended: Vec<String> =
        t.db.event_payloads("automate_e.proposal.step_finished.v1")
            .await
            .iter()
            .map(|p| p["outcome"].as_str().unwrap().to_owned())
            .collect();
    assert_eq!(ended, outcomes);
}

/// The POSTs to Fiken's purchases and their attachments.
fn posts(t: &TestEnv) -> Vec<String> {
    t.accounting
        .take_requests()
        .into_iter()
        .filter(|r| r.method == "POST")
        .map(|r| r.uri)
        .collect()
}

#[tokio::test]
async fn a_purchase_whose_answer_is_lost_after_it_was_made_is_not_made_again() {
    fault_test(async |t| {
        let _worker = t.start_worker_process(&[]).await;
        let approve = proposed(t).await;
        t.accounting.fault_next_write(WriteFault::CommitThenDrop);
        assert_eq!(t.click("W222", APPROVE_ACTION, &approve).await, 200);
        executed_once(t, &["confirmed", "created"]).await;
        assert_eq!(
            posts(t).len(),
            2,
            "the purchase and its upload, each sent once"
        );
    })
    .await;
}

#[tokio::test]
async fn a_purchase_answered_after_the_timeout_is_found_in_the_books_not_sent_again() {
    fault_test(async |t| {
        let _worker = t.start_worker_process(&[]).await;
        let approve = proposed(t).await;
        t.accounting
            .fault_next_write(WriteFault::CommitThenAnswerAfter(Duration::from_secs(6)));
        assert_eq!(t.click("W222", APPROVE_ACTION, &approve).await, 200);
        executed_once(t, &["confirmed", "created"]).await;
        assert_eq!(posts(t).len(), 2);
    })
    .await;
}

#[tokio::test]
async fn a_purchase_still_at_work_when_the_client_gave_up_is_not_sent_again() {
    fault_test(async |t| {
        let _worker = t.start_worker_process(&[]).await;
        let approve = proposed(t).await;
        // Fiken makes it 4 s after the request, 2 s after the client gave
        // up and found nothing in the books.
        t.accounting
            .fault_next_write(WriteFault::CommitAfter(Duration::from_secs(4)));
        assert_eq!(t.click("W222", APPROVE_ACTION, &approve).await, 200);
        executed_once(t, &["confirmed", "created"]).await;
        assert_eq!(posts(t).len(), 2);
    })
    .await;
}

#[tokio::test]
async fn an_upload_whose_answer_is_lost_is_not_attached_twice() {
    fault_test(async |t| {
        let _worker = t.start_worker_process(&[]).await;
        let approve = proposed(t).await;
        // The purchase goes through; the upload's answer is lost.
        t.accounting
            .fault_next_write(WriteFault::CommitThenAnswerAfter(Duration::ZERO));
        t.accounting.fault_next_write(WriteFault::CommitThenDrop);
        assert_eq!(t.click("W222", APPROVE_ACTION, &approve).await, 200);
        executed_once(t, &["created", "confirmed"]).await;
        assert_eq!(posts(t).len(), 2);
    })
    .await;
}

#[tokio::test]
async fn a_purchase_refused_before_it_was_made_is_sent_again_once() {
    fault_test(async |t| {
        let _worker = t.start_worker_process(&[]).await;
        let approve = proposed(t).await;
        t.accounting.fault_next_write(WriteFault::Fail(503));
        assert_eq!(t.click("W222", APPROVE_ACTION, &approve).await, 200);
        executed_once(t, &["created", "created"]).await;
        let posts = posts(t);
        assert_eq!(
            posts.len(),
            3,
            "the purchase twice (the first not made), the upload once"
        );
        assert_eq!(posts[0], posts[1]);
    })
    .await;
}

#[tokio::test]
async fn a_worker_killed_while_fiken_holds_the_post_leaves_one_purchase() {
    fault_test(async |t| {
        let doomed = t.start_worker_process(&[]).await;
        let approve = proposed(t).await;
        // Fiken makes the purchase but does not answer before the kill.
        t.accounting
            .fault_next_write(WriteFault::CommitThenAnswerAfter(Duration::from_secs(60)));
        assert_eq!(t.click("W222", APPROVE_ACTION, &approve).await, 200);
        t.wait_until("the purchase made", || async {
            t.accounting.purchases(ACME).len() == 1
        })
        .await;
        doomed.kill().await;
        assert!(
            t.db.event_payloads("automate_e.proposal.step_finished.v1")
                .await
                .is_empty(),
            "killed while waiting for Fiken's answer"
        );
        let _next = t.start_worker_process(&[]).await;
        executed_once(t, &["confirmed", "created"]).await;
    })
    .await;
}

#[tokio::test]
async fn an_executed_proposal_run_again_writes_nothing() {
    fault_test(async |t| {
        let _worker = t.start_worker_process(&[]).await;
        let approve = proposed(t).await;
        assert_eq!(t.click("W222", APPROVE_ACTION, &approve).await, 200);
        executed_once(t, &["created", "created"]).await;
        assert_eq!(posts(t).len(), 2);
        // An operator replays its execution (a job run twice).
        let (id, _) = t.proposals().await.remove(0);
        let job = Job::new(
            t.db.tenant_id(ACME).await.into(),
            "",
            WorkerJob::ExecuteV1 {
                proposal_id: id.into(),
            },
        );
        let json = serde_json::to_value(&job).unwrap();
        t.queue
            .replay(
                shared::job::QueueName::Worker,
                &json,
                format!("execute-{id}~again"),
            )
            .await
            .unwrap();
        t.wait_idle_within(RECOVERY).await;
        assert_eq!(t.accounting.purchases(ACME).len(), 1);
        assert_eq!(t.accounting.uploads(ACME).len(), 1);
        assert!(posts(t).is_empty(), "nothing sent again");
        assert!(
            t.slack.take_texts().is_empty(),
            "the owner is not told again"
        );
    })
    .await;
}
