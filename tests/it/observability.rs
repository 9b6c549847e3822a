//! What ops see: one trace from the webhook through the job into the
//! worker and back to the delivery, exported over OTLP; JSON log lines that
//! carry its trace id and never the message text or a secret; Prometheus
//! metrics of the turn.

use std::collections::HashSet;

use tests::fake::openai::Scripted;
use tests::fake::otlp::ExportedSpan;
use tests::signing::slack_signature;
use tests::{
    LLM_API_KEY, SLACK_BOT_TOKEN, SLACK_SIGNING_SECRET, TestOptions, fixture, run_test_with,
};

/// The span of the (imagined) ingress in front of the gateway.
const INGRESS_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const INGRESS_SPAN: &str = "00f067aa0ba902b7";

/// The text of `slack/event_callback.message.json`.
const MESSAGE_TEXT: &str = "Hello World!";

#[tokio::test]
async fn one_trace_runs_from_the_webhook_through_the_worker_to_the_delivery() {
    run_test_with(
        TestOptions {
            gateway_process: true,
            worker_later: true,
            collect_traces: true,
            // The imagined ingress is trusted to set it.
            gateway_env: &[("AE_TRUST_INBOUND_TRACEPARENT", "true")],
            ..Default::default()
        },
        async |t| {
            let worker = t.start_worker_process(&[]).await;
            t.openai.script([Scripted::Text("Svaret.".into())]);

            let body = fixture("slack/event_callback.message.json");
            let ts = chrono::Utc::now().timestamp().to_string();
            let traceparent = format!("00-{INGRESS_TRACE}-{INGRESS_SPAN}-01");
            let response = t
                .post_slack_event_with(
                    &body,
                    &ts,
                    &slack_signature(SLACK_SIGNING_SECRET, &ts, &body),
                    &[("traceparent", &traceparent)],
                )
                .await;
            assert_eq!(response.status(), 200);
            t.wait_for_posts(1).await;
            t.wait_idle().await;
            assert_eq!(t.slack.take_texts(), ["Svaret."]);

            let collector = t.collector.clone().expect("collecting traces");
            let job_spans = |service: &str| {
                collector
                    .spans()
                    .into_iter()
                    .filter(|s| s.service == service && s.name == "job")
                    .collect::<Vec<ExportedSpan>>()
            };
            t.wait_until("the worker's and the delivery's job spans", || async {
                !job_spans("worker").is_empty() && !job_spans("gateway").is_empty()
            })
            .await;
            let spans = collector.spans();
            let ids_of = |service: &str| -> HashSet<String> {
                spans
                    .iter()
                    .filter(|s| s.service == service)
                    .map(|s| s.span_id.clone())
                    .collect()
            };
            let (gateway_ids, worker_ids) = (ids_of("gateway"), ids_of("worker"));

            // The gateway continued the ingress's trace ...
            let webhook = spans
                .iter()
                .find(|s| s.service == "gateway" && s.name == "webhook")
                .unwrap_or_else(|| panic!("no webhook span in {spans:#?}"));
            assert_eq!(webhook.trace_id, INGRESS_TRACE);
            assert_eq!(webhook.parent_span_id, INGRESS_SPAN);
            // ... the worker's turn is a child of a gateway span in that trace ...
            let turn = &job_spans("worker")[0];
            assert_eq!(turn.trace_id, INGRESS_TRACE, "{spans:#?}");
            assert!(
                gateway_ids.contains(&turn.parent_span_id),
                "the turn's parent is a gateway span: {spans:#?}"
            );
            // ... and the reply's delivery is a child of the worker's turn.
            let delivery = &job_spans("gateway")[0];
            assert_eq!(delivery.trace_id, INGRESS_TRACE);
            assert!(
                worker_ids.contains(&delivery.parent_span_id),
                "the delivery's parent is a worker span: {spans:#?}"
            );

            // JSON log lines of both services carry the trace id, and nothing a
            // log must not hold.
            for (service, log) in [
                ("gateway", t.gateway_process().log()),
                ("worker", worker.log()),
            ] {
                let lines: Vec<serde_json::Value> = log
                    .lines()
                    .map(|line| {
                        serde_json::from_str(line).unwrap_or_else(|e| {
                            panic!("{service} logged a non-JSON line ({e}): {line}")
                        })
                    })
                    .collect();
                assert!(
                    lines
                        .iter()
                        .any(|line| line["span"]["trace_id"] == INGRESS_TRACE
                            || line["spans"].as_array().is_some_and(|spans| spans
                                .iter()
                                .any(|s| s["trace_id"] == INGRESS_TRACE))),
                    "no {service} log line carries the trace id:\n{log}"
                );
                for secret in [
                    MESSAGE_TEXT,
                    SLACK_BOT_TOKEN,
                    SLACK_SIGNING_SECRET,
                    LLM_API_KEY,
                ] {
                    assert!(!log.contains(secret), "{service} logged {secret:?}:\n{log}");
                }
            }

            // The turn shows in both services' metrics.
            let gateway_metrics = t.metrics_of(&t.gateway_admin_url).await;
            for expected in [
                r#"automate_e_messages_total{channel="slack",outcome="accepted"} 1"#,
                r#"automate_e_replies_delivered_total{channel="slack"} 1"#,
                r#"automate_e_queue_depth{queue="worker"} 0"#,
                r#"automate_e_job_seconds_bucket{kind="deliver",le="+Inf"} 1"#,
            ] {
                assert!(
                    gateway_metrics.contains(expected),
                    "gateway metrics lack {expected}:\n{gateway_metrics}"
                );
            }
            let worker_metrics = t.metrics_of(&worker.url).await;
            for expected in [
                r#"automate_e_job_seconds_bucket{kind="turn",le="+Inf"} 1"#,
                r#"automate_e_llm_call_seconds_count 1"#,
                r#"automate_e_llm_tokens_total{direction="input"}"#,
            ] {
                assert!(
                    worker_metrics.contains(expected),
                    "worker metrics lack {expected}:\n{worker_metrics}"
                );
            }

            let status = worker.terminate(std::time::Duration::from_secs(15)).await;
            assert!(status.success(), "worker exited with {status}");
        },
    )
    .await;
}

#[tokio::test]
async fn a_traceparent_from_the_internet_is_not_continued_unless_trusted() {
    run_test_with(
        TestOptions {
            gateway_process: true,
            collect_traces: true,
            ..Default::default()
        },
        async |t| {
            t.openai.script([Scripted::Text("Svaret.".into())]);
            let body = fixture("slack/event_callback.message.json");
            let ts = chrono::Utc::now().timestamp().to_string();
            let traceparent = format!("00-{INGRESS_TRACE}-{INGRESS_SPAN}-01");
            let response = t
                .post_slack_event_with(
                    &body,
                    &ts,
                    &slack_signature(SLACK_SIGNING_SECRET, &ts, &body),
                    &[("traceparent", &traceparent)],
                )
                .await;
            assert_eq!(response.status(), 200);
            t.wait_for_posts(1).await;
            t.wait_idle().await;
            assert_eq!(t.slack.take_texts(), ["Svaret."]);
            let collector = t.collector.clone().expect("collecting traces");
            t.wait_until("the webhook's span", || async {
                collector.spans().iter().any(|s| s.name == "webhook")
            })
            .await;
            let spans = collector.spans();
            let webhook = spans.iter().find(|s| s.name == "webhook").unwrap();
            assert_ne!(webhook.trace_id, INGRESS_TRACE, "a trace of its own");
            assert_ne!(webhook.parent_span_id, INGRESS_SPAN);
            assert!(
                spans.iter().all(|s| s.trace_id != INGRESS_TRACE),
                "{spans:#?}"
            );
        },
    )
    .await;
}
