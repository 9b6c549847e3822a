//! Agents are character files: a new one acts with no code change, and a
//! scheduled agent runs once per period however many workers run.

use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{Timelike, Utc};
use tests::fake::openai::Scripted;
use tests::{
    FIXTURE_CHANNEL, FIXTURE_TEAM, ServiceSettings, TestEnv, TestOptions, fixture, run_test,
    run_test_with,
};

/// A copy of the repository's characters (and the APIs they call) in a
/// fresh temporary directory.
fn copy_characters() -> PathBuf {
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("../characters");
    let target = std::env::temp_dir().join(format!("ae-characters-{}", uuid::Uuid::now_v7()));
    std::fs::create_dir_all(target.join("apis")).unwrap();
    for api in std::fs::read_dir(source.join("apis")).unwrap() {
        let api = api.unwrap();
        std::fs::copy(api.path(), target.join("apis").join(api.file_name())).unwrap();
    }
    for entry in std::fs::read_dir(&source).unwrap() {
        let entry = entry.unwrap();
        let file = entry.path().join("character.toml");
        if file.is_file() {
            let dir = target.join(entry.file_name());
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::copy(&file, dir.join("character.toml")).unwrap();
        }
    }
    target
}

async fn acme(t: &TestEnv) -> uuid::Uuid {
    sqlx::query_scalar("SELECT id FROM tenants WHERE slug = 'acme'")
        .fetch_one(&t.db.owner)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_new_character_from_a_directory_answers_its_channel_without_code_changes() {
    run_test_with(
        TestOptions {
            worker_later: true,
            ..Default::default()
        },
        async |t| {
            let dir = copy_characters();
            std::fs::create_dir_all(dir.join("note-e")).unwrap();
            std::fs::write(
                dir.join("note-e/character.toml"),
                r#"
    name = "note-e"
    display_name = "Note-E"
    language = "en"
    persona = "You keep meeting notes for the company."

    [[triggers]]
    on = "chat"
    "#,
            )
            .unwrap();
            t.characters_dir = dir.clone();
            t.db.seed_route(acme(t).await, "slack", FIXTURE_TEAM, "CNOTES", "note-e")
                .await;
            t.start_worker().await;
            t.openai
                .script_for("Note-E", [Scripted::Text("Noted: budget meeting.".into())]);

            let body = fixture("slack/event_callback.message.json")
                .replace(FIXTURE_CHANNEL, "CNOTES")
                .replace("Hello World!", "Note the budget meeting");
            assert_eq!(t.post_slack_event(&body).await, 200);
            t.wait_for_posts(1).await;
            let posted = t.slack.take_posted();
            assert_eq!(posted.len(), 1);
            assert_eq!(
                (posted[0].channel.as_str(), posted[0].text.as_str()),
                ("CNOTES", "Noted: budget meeting.")
            );
            let request = t.openai.requests().last().unwrap().to_string();
            assert!(request.contains("You keep meeting notes"), "{request}");
            std::fs::remove_dir_all(dir).unwrap();
        },
    )
    .await;
}

#[tokio::test]
async fn report_e_runs_once_per_schedule_period_with_two_workers_running() {
    run_test_with(
        TestOptions {
            worker_later: true,
            ..Default::default()
        },
        async |t| {
            // Two periods a few seconds ahead, within the current minute.
            while Utc::now().second() > 50 {
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            let now = Utc::now();
            let (first, second) = (now.second() + 3, now.second() + 6);
            let cron = format!("{first},{second} {} {} * * *", now.minute(), now.hour());
            let dir = copy_characters();
            let file = dir.join("report-e/character.toml");
            let text = std::fs::read_to_string(&file).unwrap();
            assert!(
                text.contains("cron = \"0 0 7 * * Mon\""),
                "report-e's schedule"
            );
            std::fs::write(
                &file,
                text.replace("cron = \"0 0 7 * * Mon\"", &format!("cron = \"{cron}\"")),
            )
            .unwrap();
            t.characters_dir = dir.clone();
            t.db.seed_route(acme(t).await, "slack", FIXTURE_TEAM, "CREPORTS", "report-e")
                .await;
            t.openai
                .when_empty(Scripted::Text("Weekly summary.".into()));
            t.start_worker().await;
            t.start_worker().await;

            t.wait_for_posts(2).await;
            // Past both periods, two more ticks of each worker: nothing more.
            let ticks = t.counter("automate_e_trigger_ticks_total");
            t.wait_until("two more ticks of both workers", || async {
                t.counter("automate_e_trigger_ticks_total") >= ticks + 4
            })
            .await;
            t.wait_idle().await;
            let runs: Vec<(String, bool)> = sqlx::query_as(
                "SELECT reason->>'fire_at', finished_at IS NOT NULL FROM agent_runs \
             WHERE character = 'report-e' ORDER BY 1",
            )
            .fetch_all(&t.db.owner)
            .await
            .unwrap();
            assert_eq!(runs.len(), 2, "{runs:?}");
            assert!(runs.iter().all(|(_, finished)| *finished));
            assert_ne!(runs[0].0, runs[1].0, "one run per period");
            let posted = t.slack.take_posted();
            assert_eq!(
                posted
                    .iter()
                    .filter(|p| p.channel == "CREPORTS" && p.text == "Weekly summary.")
                    .count(),
                2,
                "{posted:?}"
            );
            assert_eq!(posted.len(), 2, "{posted:?}");
            let report_calls = t
                .openai
                .requests()
                .iter()
                .filter(|r| r.to_string().contains("Your name is Report-E."))
                .count();
            assert_eq!(report_calls, 2);
            std::fs::remove_dir_all(dir).unwrap();
        },
    )
    .await;
}

/// A copy of the characters with Probe-E: one read tool, no round limit
/// of its own, a schedule that fires once a few seconds from now, and a
/// route to its Slack channel `CPROBE`.
async fn probe_e_scheduled_soon(t: &mut TestEnv) -> PathBuf {
    while Utc::now().second() > 52 {
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let now = Utc::now();
    let cron = format!("{} {} {} * * *", now.second() + 3, now.minute(), now.hour());
    let dir = copy_characters();
    std::fs::create_dir_all(dir.join("probe-e")).unwrap();
    std::fs::write(
        dir.join("probe-e/character.toml"),
        format!(
            r#"
name = "probe-e"
display_name = "Probe-E"
language = "en"
persona = "You look things up for the company."
api = "fiken"

[[tools]]
name = "list_purchases"
description = "Registered purchases."
operation = "getPurchases"

[[triggers]]
on = "schedule"
cron = "{cron}"
task = "Look up the purchases."
"#
        ),
    )
    .unwrap();
    t.characters_dir = dir.clone();
    t.db.seed_route(acme(t).await, "slack", FIXTURE_TEAM, "CPROBE", "probe-e")
        .await;
    dir
}

/// The model requests Probe-E made.
fn probe_requests(t: &TestEnv) -> Vec<serde_json::Value> {
    t.openai
        .requests()
        .into_iter()
        .filter(|r| r.to_string().contains("Your name is Probe-E."))
        .collect()
}

#[tokio::test]
async fn a_run_whose_model_asks_for_more_calls_than_the_limit_answers_every_call() {
    run_test_with(
        TestOptions {
            worker_later: true,
            ..Default::default()
        },
        async |t| {
            let dir = probe_e_scheduled_soon(t).await;
            let nine = (0..9).map(|_| ("list_purchases".to_owned(), "{}".to_owned()));
            t.openai.script_for(
                "Probe-E",
                [
                    Scripted::ToolCalls(nine.collect()),
                    Scripted::Text("Nine looked at.".into()),
                ],
            );
            t.start_worker().await;
            t.wait_for_posts(1).await;
            let posted = t.slack.take_posted();
            assert_eq!(
                posted
                    .iter()
                    .map(|p| (p.channel.as_str(), p.text.as_str()))
                    .collect::<Vec<_>>(),
                [("CPROBE", "Nine looked at.")]
            );
            // Eight calls ran; the ninth was answered without running.
            assert_eq!(t.accounting.take_requests().len(), 8);
            let requests = probe_requests(t);
            assert_eq!(requests.len(), 2);
            let answers: Vec<String> = requests[1]["messages"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|m| m["role"] == "tool")
                .map(|m| m["content"].as_str().unwrap().to_owned())
                .collect();
            assert_eq!(answers.len(), 9, "{answers:?}");
            assert!(answers[8].contains("at most 8 tool calls"), "{answers:?}");
            std::fs::remove_dir_all(dir).unwrap();
        },
    )
    .await;
}

#[tokio::test]
async fn a_run_takes_the_workers_round_limit_when_its_character_sets_none() {
    run_test_with(
        TestOptions {
            worker_later: true,
            settings: ServiceSettings {
                max_tool_rounds: 2,
                ..Default::default()
            },
            ..Default::default()
        },
        async |t| {
            let dir = probe_e_scheduled_soon(t).await;
            t.openai
                .when_empty(Scripted::tool_call("list_purchases", "{}"));
            t.start_worker().await;
            t.wait_for_posts(1).await;
            let posted = t.slack.take_posted();
            assert_eq!(posted.len(), 1, "{posted:?}");
            assert_eq!(posted[0].text, shared::engine::turn::ROUND_LIMIT_REPLY);
            t.wait_idle().await;
            assert_eq!(probe_requests(t).len(), 2);
            assert_eq!(t.accounting.take_requests().len(), 1);
            std::fs::remove_dir_all(dir).unwrap();
        },
    )
    .await;
}

/// The tool results the model was sent, parsed.
fn tool_results(t: &TestEnv) -> Vec<serde_json::Value> {
    t.openai
        .requests()
        .iter()
        .flat_map(|r| r["messages"].as_array().cloned().unwrap_or_default())
        .filter(|m| m["role"] == "tool")
        .filter_map(|m| serde_json::from_str(m["content"].as_str()?).ok())
        .collect()
}

#[tokio::test]
async fn a_fact_book_e_learns_is_in_the_prompt_of_the_users_next_conversation() {
    run_test(async |t| {
        t.openai.script([
            Scripted::tool_call(
                "remember_fact",
                r#"{"fact": "Prefers amounts without VAT."}"#,
            ),
            Scripted::Text("Noted.".into()),
            Scripted::Text("Hello again.".into()),
        ]);
        let message = |ts: &str, text: &str| {
            fixture("slack/event_callback.message.json")
                .replace("1596183880.004200", ts)
                .replace("Hello World!", text)
        };
        assert_eq!(
            t.post_slack_event(&message("1700000000.000100", "Show amounts without VAT"))
                .await,
            200
        );
        t.wait_for_posts(1).await;
        assert_eq!(tool_results(t), [serde_json::json!({"remembered": true})]);
        assert_eq!(
            t.post_slack_event(&message("1700000100.000100", "Hi"))
                .await,
            200
        );
        t.wait_for_posts(2).await;
        let last = t.openai.requests().last().unwrap()["messages"][0]["content"]
            .as_str()
            .unwrap()
            .to_owned();
        assert!(
            last.contains("# What you know about the user\n- Prefers amounts without VAT."),
            "{last}"
        );
        t.slack.take_posted();
    })
    .await;
}

#[tokio::test]
async fn cost_e_reports_the_tenants_recorded_llm_usage_priced_from_the_table() {
    run_test(async |t| {
        t.db.seed_route(acme(t).await, "slack", FIXTURE_TEAM, "CCOSTS", "cost-e")
            .await;
        // One Book-E turn: one model call (the fake counts 120 + 30 tokens).
        t.openai.script([Scripted::Text("Hi.".into())]);
        assert_eq!(
            t.post_slack_event(&fixture("slack/event_callback.message.json"))
                .await,
            200
        );
        t.wait_for_posts(1).await;
        t.openai.script_for(
            "Cost-E",
            [
                Scripted::tool_call("usage_report", "{}"),
                Scripted::Text("Little spent so far.".into()),
            ],
        );
        let ask = fixture("slack/event_callback.message.json")
            .replace(FIXTURE_CHANNEL, "CCOSTS")
            .replace("1596183880.004200", "1700000200.000100")
            .replace("Hello World!", "What did we spend this month?");
        assert_eq!(t.post_slack_event(&ask).await, 200);
        t.wait_for_posts(2).await;

        // Book-E's call and Cost-E's first call were recorded before the report.
        let results = tool_results(t);
        assert_eq!(results.len(), 1, "{results:?}");
        let report = &results[0]["report"];
        assert_eq!(report["lines"][0]["model"], "gpt-test");
        assert_eq!(report["lines"][0]["calls"], 2);
        assert_eq!(report["lines"][0]["input_tokens"], 240);
        assert_eq!(report["lines"][0]["output_tokens"], 60);
        let expected = (240 * tests::TEST_INPUT_PRICE + 60 * tests::TEST_OUTPUT_PRICE) / 1_000_000;
        assert_eq!(report["total_micros"], expected);
        assert_eq!(report["tool_calls"], 0, "builtin calls are not API calls");
        t.slack.take_posted();
    })
    .await;
}

#[tokio::test]
async fn the_prompt_holds_only_the_characters_retained_history() {
    run_test_with(
        TestOptions {
            worker_later: true,
            ..Default::default()
        },
        async |t| {
            let dir = copy_characters();
            let file = dir.join("book-e/character.toml");
            let text = std::fs::read_to_string(&file).unwrap();
            assert!(text.contains("history_messages = 40"));
            std::fs::write(
                &file,
                text.replace("history_messages = 40", "history_messages = 2"),
            )
            .unwrap();
            t.characters_dir = dir.clone();
            t.start_worker().await;
            t.openai.when_empty(Scripted::Echo);
            let first =
                fixture("slack/event_callback.message.json").replace("Hello World!", "first words");
            assert_eq!(t.post_slack_event(&first).await, 200);
            t.wait_for_posts(1).await;
            for (n, words) in ["second words", "third words"].into_iter().enumerate() {
                let mut reply: serde_json::Value = serde_json::from_str(&fixture(
                    "slack/event_callback.message.thread_reply.json",
                ))
                .unwrap();
                reply["event"]["thread_ts"] = serde_json::json!("1596183880.004200");
                reply["event"]["ts"] = serde_json::json!(format!("1596183881.00010{n}"));
                reply["event_id"] = serde_json::json!(format!("EvRetained{n}"));
                reply["event"]["text"] = serde_json::json!(words);
                assert_eq!(t.post_slack_event(&reply.to_string()).await, 200);
                t.wait_for_posts(n + 2).await;
            }
            // The third turn sees the two newest earlier messages (the second
            // question and its answer), not the first question.
            let last = t.openai.requests().last().unwrap()["messages"].clone();
            let texts: Vec<String> = last
                .as_array()
                .unwrap()
                .iter()
                .skip(1)
                .map(|m| m["content"].as_str().unwrap_or_default().to_owned())
                .collect();
            assert_eq!(texts.len(), 3, "{texts:?}");
            assert!(texts[0].contains("second words"), "{texts:?}");
            assert!(texts[2].contains("third words"), "{texts:?}");
            assert!(
                texts.iter().all(|t| !t.contains("first words")),
                "{texts:?}"
            );
            t.slack.take_posted();
            std::fs::remove_dir_all(dir).unwrap();
        },
    )
    .await;
}
