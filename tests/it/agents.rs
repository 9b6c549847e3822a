//! Agents are character files: a new one acts with no code change, and a
//! scheduled agent runs once per period however many workers run.

use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{Timelike, Utc};
use tests::fake::openai::Scripted;
use tests::{FIXTURE_CHANNEL, FIXTURE_TEAM, TestEnv, TestOptions, fixture};

/// A copy of the repository's characters in a fresh temporary directory.
fn copy_characters() -> PathBuf {
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("../characters");
    let target = std::env::temp_dir().join(format!("ae-characters-{}", uuid::Uuid::now_v7()));
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
    let mut t = TestEnv::start_with(TestOptions {
        worker_later: true,
        ..Default::default()
    })
    .await;
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
    t.db.seed_route(acme(&t).await, "slack", FIXTURE_TEAM, "CNOTES", "note-e")
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
    t.finish().await;
}

#[tokio::test]
async fn report_e_runs_once_per_schedule_period_with_two_workers_running() {
    let mut t = TestEnv::start_with(TestOptions {
        worker_later: true,
        ..Default::default()
    })
    .await;
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
    t.db.seed_route(
        acme(&t).await,
        "slack",
        FIXTURE_TEAM,
        "CREPORTS",
        "report-e",
    )
    .await;
    t.openai
        .when_empty(Scripted::Text("Weekly summary.".into()));
    t.start_worker().await;
    t.start_worker().await;

    t.wait_for_posts(2).await;
    // Past both periods plus a few ticks of both workers: nothing more.
    tokio::time::sleep(Duration::from_secs(3)).await;
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
    t.finish().await;
}
