//! `worker admin`: operators set up companies without SQL, as a login that
//! holds `automate_e_admin` (row-level security, settings only). Every
//! subcommand, its idempotence, and bad input refused before anything is
//! written.

use serde_json::Value;
use shared::access::store::Store;
use shared::ids::Platform;
use tests::db::TestDb;

/// A store connected as an operator's login granted `automate_e_admin`.
async fn operator(db: &TestDb) -> Store {
    // Roles are the cluster's: tests creating and granting the same one at
    // once may collide (a unique violation, a tuple updated concurrently).
    let mut attempts = 0;
    while let Err(e) = sqlx::raw_sql(
        "DO $$ BEGIN CREATE ROLE automate_e_test_operator LOGIN; \
         EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL; END $$; \
         GRANT automate_e_admin TO automate_e_test_operator;",
    )
    .execute(&db.owner)
    .await
    {
        attempts += 1;
        assert!(attempts < 10, "cannot make the operator's login: {e}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let pool = sqlx::PgPool::connect(&db.url_as("automate_e_test_operator"))
        .await
        .unwrap();
    Store::from_pool(pool)
}

async fn admin(store: &Store, line: &[&str]) -> anyhow::Result<String> {
    let args: Vec<String> = line.iter().map(|a| (*a).to_owned()).collect();
    worker::admin::command(store, &args).await
}

async fn ok(store: &Store, line: &[&str]) -> String {
    admin(store, line)
        .await
        .unwrap_or_else(|e| panic!("{line:?}: {e:#}"))
}

async fn show(store: &Store, slug: &str) -> Value {
    serde_json::from_str(&ok(store, &["tenant", "show", slug]).await).unwrap()
}

#[tokio::test]
async fn every_admin_command_sets_up_a_company_and_says_when_nothing_changes() {
    TestDb::run(async |db| {
        let ops = operator(db).await;
        let created = ok(&ops, &["tenant", "create", "acme", "Acme AS"]).await;
        assert!(created.starts_with("tenant acme created"), "{created}");
        let again = ok(&ops, &["tenant", "create", "acme", "Acme AS"]).await;
        assert!(again.starts_with("tenant acme exists"), "{again}");
        ok(&ops, &["tenant", "create", "beta"]).await;
        let list = ok(&ops, &["tenant", "list"]).await;
        assert_eq!(list.lines().count(), 3, "{list}");
        assert!(list.contains("acme") && list.contains("beta"), "{list}");

        let lines: [&[&str]; 20] = [
            &["tenant", "set", "acme", "brief", "A bakery in Bergen."],
            &["tenant", "set", "acme", "review-channel", "CREVIEW"],
            &["tenant", "set", "acme", "auto-approve-limit", "50000"],
            &["tenant", "set", "acme", "tokens-per-day", "unlimited"],
            &["tenant", "set", "acme", "user-per-minute", "10"],
            &["tenant", "set", "acme", "tenant-per-minute", "100"],
            &["tenant", "set", "acme", "accounting-company", "acme-as"],
            &["tenant", "set", "acme", "accounting-credential", "acme"],
            &[
                "tenant",
                "set",
                "acme",
                "accounting-url",
                "https://fiken.example/api/v2",
            ],
            &["tenant", "set", "acme", "file-retention-days", "3650"],
            &["route", "add", "acme", "slack", "T1", "*"],
            &["route", "add", "acme", "telegram", "bot", "*", "book-e"],
            &["route", "add", "acme", "telegram", "bot", "*", "review-e"],
            &["member", "add", "acme", "telegram", "user", "42", "kari"],
            &["member", "add", "acme", "slack", "user", "W2", "kari"],
            &["reviewer", "add", "acme", "W2", "--escalation"],
            &["route", "add", "acme", "web", "page", "*"],
            &["member", "add", "acme", "web", "user", "owner"],
            &["reviewer", "add", "acme", "web:boss"],
            &["window", "set", "acme", "pay_invoice", "168"],
        ];
        for line in lines {
            assert!(ok(&ops, line).await.ends_with(": done"), "{line:?}");
            assert!(
                ok(&ops, line).await.ends_with(": nothing to change"),
                "{line:?} again"
            );
        }
        let acme = show(&ops, "acme").await;
        assert_eq!(
            acme["routes"][1]["character"], "review-e",
            "a route moved to another agent"
        );
        assert_eq!(acme["brief"], "A bakery in Bergen.");
        assert_eq!(acme["review_channel"], "CREVIEW");
        assert_eq!(acme["auto_approve_limit_minor"], 50000);
        assert_eq!(acme["llm_tokens_per_day"], Value::Null);
        assert_eq!(acme["accounting_base_url"], "https://fiken.example/api/v2");
        assert_eq!(acme["routes"].as_array().unwrap().len(), 3);
        assert_eq!(acme["members"][0]["person"], "kari");
        assert_eq!(acme["reviewers"][0]["escalation"], true);
        let web_routes = db
            .service_store()
            .await
            .routes(Platform::Web, "page", "owner")
            .await
            .unwrap();
        assert_eq!(web_routes[0].channel, "*");
        assert_eq!(acme["review_windows"][0]["hours"], 168);
        // What the services see: the route and the members.
        let services = db.service_store().await;
        let routes = services.routes(Platform::Slack, "T1", "C9").await.unwrap();
        assert_eq!(routes[0].character, "book-e");
        let tenant = routes[0].tenant_id;
        assert!(
            services
                .tenant(tenant)
                .same_person("slack:W2", "telegram:42")
                .await
                .unwrap()
        );

        for line in [
            &["route", "remove", "acme", "telegram", "bot", "*"][..],
            &["member", "remove", "acme", "slack", "user", "W2"],
            &["reviewer", "remove", "acme", "W2"],
            &["reviewer", "remove", "acme", "web:boss"],
            &["route", "remove", "acme", "web", "page", "*"],
            &["window", "remove", "acme", "pay_invoice"],
            &["tenant", "set", "acme", "review-channel", "none"],
            &["tenant", "set", "acme", "tokens-per-day", "2000000"],
            &["tenant", "set", "acme", "user-per-minute", "default"],
        ] {
            assert!(ok(&ops, line).await.ends_with(": done"), "{line:?}");
            assert!(
                ok(&ops, line).await.ends_with(": nothing to change"),
                "{line:?}"
            );
        }
        let acme = show(&ops, "acme").await;
        assert_eq!(acme["routes"].as_array().unwrap().len(), 1);
        assert_eq!(
            acme["members"].as_array().unwrap().len(),
            2,
            "the page's owner stays"
        );
        assert!(acme["reviewers"].as_array().unwrap().is_empty());
        assert_eq!(acme["review_channel"], Value::Null);
        assert_eq!(acme["llm_tokens_per_day"], 2_000_000);
        assert_eq!(acme["user_per_minute"], Value::Null);
    })
    .await;
}

#[tokio::test]
async fn bad_input_is_refused_with_a_clear_error_and_nothing_is_written() {
    TestDb::run(async |db| {
        let ops = operator(db).await;
        ok(&ops, &["tenant", "create", "acme"]).await;
        ok(&ops, &["tenant", "create", "beta"]).await;
        ok(&ops, &["tenant", "set", "beta", "review-channel", "CBETA"]).await;
        ok(&ops, &["route", "add", "beta", "slack", "TB", "*"]).await;
        let before = show(&ops, "acme").await;
        let cases: [(&[&str], &str); 20] = [
            (&["tenant", "create", "Acme AS"], "a slug is"),
            (&["tenant", "create", "-acme"], "a slug is"),
            (&["tenant", "show", "nobody"], "no tenant `nobody`"),
            (
                &["tenant", "set", "acme", "colour", "red"],
                "no setting `colour`",
            ),
            (
                &["tenant", "set", "acme", "tokens-per-day", "-5"],
                "whole number",
            ),
            (
                &["tenant", "set", "acme", "user-per-minute", "0"],
                "1 or more",
            ),
            (
                &[
                    "tenant",
                    "set",
                    "acme",
                    "accounting-url",
                    "http://fiken.example",
                ],
                "https://",
            ),
            (
                &["tenant", "set", "acme", "accounting-company", "Acme AS"],
                "rule",
            ),
            (
                &["tenant", "set", "acme", "review-channel", "CBETA"],
                "another tenant's",
            ),
            (
                &["route", "add", "acme", "slack", "TB", "*"],
                "routed to another tenant",
            ),
            (
                &["route", "add", "acme", "matrix", "T1", "*"],
                "slack, discord, telegram or web",
            ),
            (
                &["route", "add", "acme", "slack", "T 1", "*"],
                "a workspace is",
            ),
            (
                &["route", "add", "acme", "slack", "T1", "*", "Book E"],
                "a character is",
            ),
            (
                &["member", "add", "acme", "discord", "team", "T1"],
                "a Discord role",
            ),
            (
                &["member", "add", "acme", "discord", "role", "R1", "kari"],
                "only a user",
            ),
            (&["reviewer", "add", "acme", "W1", "--boss"], "usage"),
            (&["reviewer", "add", "acme", "web:"], "a chat page user is"),
            (
                &["member", "add", "acme", "web", "team", "T1"],
                "a Slack team",
            ),
            (&["window", "set", "acme", "pay_invoice", "0"], "1 to 2160"),
            (&["window", "set", "acme", "Pay Invoice", "8"], "a tool is"),
        ];
        for (line, expected) in cases {
            let refused = admin(&ops, line)
                .await
                .expect_err(&format!("{line:?} is refused"));
            let said = format!("{refused:#}");
            assert!(said.contains(expected), "{line:?}: {said}");
        }
        assert!(format!("{:#}", admin(&ops, &["frobnicate"]).await.unwrap_err()).contains("usage"));
        assert_eq!(show(&ops, "acme").await, before, "nothing written");
    })
    .await;
}

#[tokio::test]
async fn an_operator_changes_settings_only_one_tenant_at_a_time() {
    TestDb::run(async |db| {
        let ops = operator(db).await;
        ok(&ops, &["tenant", "create", "acme"]).await;
        ok(&ops, &["tenant", "create", "beta"]).await;
        ok(&ops, &["route", "add", "beta", "slack", "TB", "*"]).await;
        let slugs = ops.tenant_slugs().await.unwrap();
        let acme = ops.tenant(slugs[0].0);
        // In acme's transaction beta's rows are out of sight and out of reach.
        let mut tx = acme.begin().await.unwrap();
        let seen: i64 = sqlx::query_scalar("SELECT count(*) FROM tenant_routes")
            .fetch_one(&mut *tx)
            .await
            .unwrap();
        assert_eq!(seen, 0);
        let moved = sqlx::query("UPDATE tenants SET name = 'taken' WHERE slug = 'beta'")
            .execute(&mut *tx)
            .await
            .unwrap();
        assert_eq!(moved.rows_affected(), 0);
        drop(tx);
        // Messages, events and proposals are not an operator's.
        for table in ["inbox", "events", "proposals", "outbox", "files"] {
            let refused = sqlx::query(&format!("SELECT count(*) FROM {table}"))
                .execute(ops.pool())
                .await
                .expect_err(table);
            assert!(
                refused.to_string().contains("permission denied"),
                "{table}: {refused}"
            );
        }
    })
    .await;
}
