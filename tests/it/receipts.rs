//! Receipts and invoices, end to end against the spec-checking Fiken fake:
//! the owner's photo or PDF is fetched by the gateway with its platform's
//! credential, kept, shown to the model, bound to the proposal; once a
//! reviewer approves, Fiken gets exactly one purchase with exactly one
//! attachment. A supplier invoice (with a supplier new to the books) and a
//! sales invoice likewise. Files that cannot be read get a clear reply and
//! nothing is kept.

use serde_json::{Value, json};
use shared::engine::files::FileLink;
use shared::engine::review::{APPROVE_ACTION, RECEIPT_ACTION};
use tests::fake::openai::Scripted;
use tests::fake::slack::PostedCard;
use tests::{
    ACME, DISCORD_CHANNEL, REVIEW_CHANNEL, ServiceSettings, TestEnv, TestOptions, fixture,
    receipt_id, receipt_jpeg, receipt_pdf, run_test, run_test_with,
};

pub(crate) const REVIEW_E_OK: &str = r#"{"verdict": "approve", "notes": "Matches the receipt."}"#;

/// Fiken's `purchaseRequest` of a cash purchase paid by card.
pub(crate) fn cash_purchase() -> Value {
    json!({"date": "2026-11-20", "kind": "cash_purchase", "paid": true, "currency": "NOK",
           "paymentAccount": "1920:10001",
           "lines": [{"description": "Kontorrekvisita", "netPrice": 40000, "vat": 10000,
                      "account": "6800", "vatType": "HIGH"}]})
}

/// Fiken's `purchaseRequest` of a supplier invoice to pay later.
fn supplier_invoice() -> Value {
    json!({"date": "2026-11-20", "dueDate": "2026-12-04", "kind": "supplier", "paid": false,
           "identifier": "F-2291", "currency": "NOK",
           "lines": [{"description": "Skrivebordsstoler", "netPrice": 480000, "vat": 120000,
                      "account": "6540", "vatType": "HIGH"}]})
}

/// A Slack message from the owner (W111) in its own thread, sharing files
/// `(name, url_private, mimetype)`.
fn slack_message(ts: &str, text: &str, files: &[(&str, &str, &str)]) -> String {
    let mut event: Value =
        serde_json::from_str(&fixture("slack/event_callback.message.json")).unwrap();
    event["event_id"] = json!(format!("Ev{}", ts.replace('.', "")));
    event["event"]["ts"] = json!(ts);
    event["event"]["event_ts"] = json!(ts);
    event["event"]["text"] = json!(text);
    event["event"]["client_msg_id"] = json!(uuid::Uuid::new_v4().to_string());
    if !files.is_empty() {
        event["event"]["subtype"] = json!("file_share");
        event["event"]["files"] = files
            .iter()
            .enumerate()
            .map(|(i, (name, url, mimetype))| {
                json!({"id": format!("F0{i}"), "name": name, "mimetype": mimetype,
                       "url_private": url, "url_private_download": url})
            })
            .collect();
    }
    event.to_string()
}

/// The content parts of the last user message of the model's `n`-th request.
fn user_parts(t: &TestEnv, n: usize) -> Vec<Value> {
    t.openai.requests()[n]["messages"]
        .as_array()
        .unwrap()
        .iter()
        .rev()
        .find(|m| m["role"] == "user")
        .unwrap()["content"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// Waits for the one review card and Review-E's note in its thread; takes
/// both.
async fn one_card(t: &TestEnv) -> PostedCard {
    t.wait_for_cards(1).await;
    t.wait_until("Review-E's note", || async {
        t.slack.posted_in(REVIEW_CHANNEL) == 1
    })
    .await;
    let notes = t.slack.take_posted_in(REVIEW_CHANNEL);
    assert!(
        notes[0].text.starts_with("Review-E (no concerns)"),
        "{notes:?}"
    );
    let mut cards = t.slack.take_cards();
    assert_eq!(cards.len(), 1, "{cards:?}");
    cards.remove(0)
}

/// W222 approves the card; waits until it is executed and the card updated.
async fn approve(t: &TestEnv, card: &PostedCard) {
    let value = card.approve_value();
    assert_eq!(t.click("W222", APPROVE_ACTION, &value).await, 200);
    t.wait_for_proposal("executed").await;
    t.wait_idle().await;
    assert_eq!(t.slack.take_updates().len(), 1, "the card is updated once");
}

/// The card's Receipt button gives a reviewer, and only a reviewer, a link
/// that serves the file for ten minutes; a forged or stale link serves
/// nothing.
async fn assert_receipt_links(t: &TestEnv, card: &PostedCard, pdf: &[u8]) {
    let buttons = card.buttons();
    assert_eq!(buttons[2]["action_id"], RECEIPT_ACTION);
    let value = buttons[2]["value"].as_str().unwrap();
    assert_eq!(t.click("W999", RECEIPT_ACTION, value).await, 200);
    assert_eq!(t.click("W222", RECEIPT_ACTION, value).await, 200);
    t.wait_until("two answers", || async { t.slack.ephemerals().len() == 2 })
        .await;
    let mut told = t.slack.take_ephemerals();
    told.sort_by(|a, b| b.1.cmp(&a.1));
    assert_eq!(told[0].1, "W999");
    assert_eq!(told[0].2, "you are not a reviewer for this company");
    assert_eq!(told[1].1, "W222");
    let link = told[1]
        .2
        .split('<')
        .nth(1)
        .and_then(|l| l.split('|').next())
        .expect("a link")
        .to_owned();
    let response = reqwest::get(&link).await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/pdf");
    assert_eq!(response.headers()["cache-control"], "private, no-store");
    assert_eq!(response.bytes().await.unwrap().as_ref(), pdf);
    // Another reviewer's name, or another expiry within the window, breaks
    // the signature.
    let expires: i64 = link
        .split("expires=")
        .nth(1)
        .and_then(|e| e.split('&').next())
        .and_then(|e| e.parse().ok())
        .unwrap();
    for forged in [
        link.replace("slack%3AW222", "slack%3AW333"),
        link.replace(
            &format!("expires={expires}"),
            &format!("expires={}", expires - 1),
        ),
    ] {
        assert_eq!(
            reqwest::get(&forged).await.unwrap().status(),
            403,
            "{forged}"
        );
    }
    // A link signed with the key but expired serves nothing either.
    let (base, _) = link.split_once('?').unwrap();
    let (tenant, sha) = {
        let parts: Vec<&str> = base.rsplitn(3, '/').collect();
        (parts[1].to_owned(), parts[0].to_owned())
    };
    let stale = FileLink {
        tenant: uuid::Uuid::parse_str(&tenant).unwrap().into(),
        sha256: &sha,
        expires: chrono::Utc::now().timestamp() - 1,
        reviewer: "slack:W222",
    };
    let url = format!(
        "{base}?expires={}&reviewer=slack%3AW222&signature={}",
        stale.expires,
        stale.signature(tests::LINK_SECRET.as_bytes())
    );
    assert_eq!(reqwest::get(&url).await.unwrap().status(), 403);
}

/// How each step of the executed proposals ended, in order.
async fn step_outcomes(t: &TestEnv) -> Vec<String> {
    t.db.event_payloads("automate_e.proposal.step_finished.v1")
        .await
        .iter()
        .map(|p| p["outcome"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn a_photo_receipt_in_discord_becomes_one_purchase_with_the_photo_attached() {
    run_test(async |t| {
        let jpeg = receipt_jpeg(1);
        let url = t
            .discord
            .add_attachment(DISCORD_CHANNEL, "IMG_2041.JPG", jpeg.clone(), "image/jpeg");
        let receipt = receipt_id(&jpeg);
        let args = json!({"merchant": "Clas Ohlson", "body": cash_purchase(), "receipt": receipt});
        t.openai.script([
            Scripted::tool_call("register_purchase", &args.to_string()),
            Scripted::Text("Sendt til godkjenning.".into()),
        ]);
        t.openai
            .script_for("Review-E", [Scripted::Text(REVIEW_E_OK.into())]);
        let mut message: Value =
            serde_json::from_str(&fixture("discord/gateway.MESSAGE_CREATE.json")).unwrap();
        message["d"]["content"] = json!("Registrer denne kvitteringen");
        message["d"]["attachments"] = json!([{"id": "1100000000000000001", "filename": "IMG_2041.JPG",
            "size": jpeg.len(), "url": url, "proxy_url": url, "content_type": "image/jpeg"}]);
        t.discord_message_create(&message).await;
        let card = one_card(t).await;
        t.wait_for_discord_posts(1).await;
        assert_eq!(t.discord.take_posts()[0].content, "Sendt til godkjenning.");

        // The model was shown the photo itself, and its id for the tools.
        let parts = user_parts(t, 0);
        assert!(
            parts[0]["text"]
                .as_str()
                .unwrap()
                .contains(&format!("{receipt}: IMG_2041.jpg (image/jpeg, 3 KB)")),
            "{parts:?}"
        );
        assert_eq!(
            parts[1],
            json!({"type": "image_url", "image_url": {"url": tests::data_url("image/jpeg", &jpeg), "detail": "high"}})
        );
        // Review-E was shown it too.
        let reviewed = t
            .openai
            .requests()
            .into_iter()
            .find(|r| r["messages"][0]["content"].as_str().unwrap().contains("Review-E"))
            .expect("Review-E was asked");
        assert!(reviewed.to_string().contains(&tests::data_url("image/jpeg", &jpeg)));
        // The card shows the file; the approval binds its digest.
        let shown = card.blocks.to_string();
        assert!(shown.contains("*file*: IMG_2041.jpg (image/jpeg, 3 KB"), "{shown}");

        approve(t, &card).await;
        let purchases = t.accounting.purchases(ACME);
        assert_eq!(purchases.len(), 1);
        assert_eq!(purchases[0]["purchaseAttachments"].as_array().unwrap().len(), 1);
        let uploads = t.accounting.uploads(ACME);
        assert_eq!(uploads.len(), 1);
        assert_eq!(uploads[0].parent, purchases[0]["purchaseId"].as_i64().unwrap());
        assert_eq!(
            (uploads[0].filename.as_str(), uploads[0].content_type.as_str()),
            ("IMG_2041.jpg", "image/jpeg")
        );
        assert_eq!(uploads[0].bytes, jpeg);
        assert_eq!(step_outcomes(t).await, ["created", "created"]);
        // The owner hears it where they asked, once.
        t.wait_for_discord_posts(1).await;
        let told = t.discord.take_posts();
        assert_eq!(told.len(), 1);
        assert!(told[0].content.contains("approved and carried out"), "{told:?}");
        // The gateway fetched the photo once, from Discord's CDN.
        assert_eq!(t.discord.files.fetched().len(), 1);
    })
    .await;
}

#[tokio::test]
async fn a_pdf_receipt_in_slack_is_fetched_with_the_bot_token_and_attached_once() {
    run_test(async |t| {
        let pdf = receipt_pdf();
        let url = t.slack.add_file("kvittering.pdf", pdf.clone(), "application/pdf");
        let args = json!({"merchant": "Clas Ohlson", "body": cash_purchase(), "receipt": receipt_id(&pdf)});
        t.openai.script([
            Scripted::tool_call("register_purchase", &args.to_string()),
            Scripted::Text("Sendt til godkjenning.".into()),
        ]);
        t.openai
            .script_for("Review-E", [Scripted::Text(REVIEW_E_OK.into())]);
        let body = slack_message(
            "1596183880.004200",
            "Registrer kvitteringen",
            &[("kvittering.pdf", &url, "application/pdf")],
        );
        assert_eq!(t.post_slack_event(&body).await, 200);
        let card = one_card(t).await;
        t.wait_for_posts(1).await;
        assert_eq!(t.slack.take_texts(), ["Sendt til godkjenning."]);
        assert_eq!(
            user_parts(t, 0)[1],
            json!({"type": "file", "file": {"filename": "kvittering.pdf",
                   "file_data": tests::data_url("application/pdf", &pdf)}})
        );
        assert_receipt_links(t, &card, &pdf).await;

        approve(t, &card).await;
        assert_eq!(t.accounting.purchases(ACME).len(), 1);
        let uploads = t.accounting.uploads(ACME);
        assert_eq!(uploads.len(), 1);
        assert_eq!(uploads[0].bytes, pdf);
        t.wait_for_posts(1).await;
        let told = t.slack.take_texts();
        assert!(told[0].contains("approved and carried out"), "{told:?}");
        assert_eq!(t.slack.files.fetched().len(), 1);
    })
    .await;
}

#[tokio::test]
async fn a_photo_in_telegram_is_fetched_with_get_file_and_shown_to_the_model() {
    run_test(async |t| {
        let jpeg = receipt_jpeg(7);
        let file_id = t.telegram.add_file(&jpeg, "image/jpeg");
        t.openai.script([Scripted::Text(
            "Jeg ser en kvittering fra Rema 1000.".into(),
        )]);
        let mut update: Value =
            serde_json::from_str(&fixture("telegram/update.message.private_command.json")).unwrap();
        let message = update["message"].as_object_mut().unwrap();
        message.remove("text");
        message.remove("entities");
        message.insert("caption".into(), json!("Hva er dette?"));
        message.insert(
            "photo".into(),
            json!([{"file_id": file_id, "file_unique_id": "AQADb", "width": 800, "height": 1200,
                    "file_size": jpeg.len()}]),
        );
        let response = t
            .post_telegram_update(&update.to_string(), Some(tests::TELEGRAM_SECRET))
            .await;
        assert_eq!(response.status(), 200);
        t.wait_for_telegram_posts(1).await;
        t.wait_idle().await;
        assert_eq!(
            t.telegram.take_posts()[0].text,
            "Jeg ser en kvittering fra Rema 1000."
        );
        assert_eq!(
            user_parts(t, 0)[1]["image_url"]["url"],
            tests::data_url("image/jpeg", &jpeg)
        );
        assert_eq!(t.telegram.files.fetched(), ["photos/file_0.jpg"]);
    })
    .await;
}

#[tokio::test]
async fn a_supplier_invoice_finds_or_creates_its_supplier_once() {
    run_test(async |t| {
        for (n, ts) in ["1596183880.004201", "1596183880.004202"].into_iter().enumerate() {
            let pdf = [receipt_pdf(), format!("% invoice {n}\n").into_bytes()].concat();
            let url = t.slack.add_file("faktura.pdf", pdf.clone(), "application/pdf");
            let args = json!({"merchant": "Kontorland AS", "body": supplier_invoice(),
                "newContact": {"name": "Kontorland AS", "organizationNumber": "912345678", "supplier": true},
                "receipt": receipt_id(&pdf)});
            t.openai.script([
                Scripted::tool_call("register_purchase", &args.to_string()),
                Scripted::Text("Sendt til godkjenning.".into()),
            ]);
            t.openai
                .script_for("Review-E", [Scripted::Text(REVIEW_E_OK.into())]);
            let body = slack_message(ts, "Leverandørfaktura", &[("faktura.pdf", &url, "application/pdf")]);
            assert_eq!(t.post_slack_event(&body).await, 200);
            let card = one_card(t).await;
            t.wait_for_posts(1).await;
            t.slack.take_texts();
            let shown = card.blocks.to_string();
            assert!(shown.contains("*1. `createContact`*"), "{shown}");
            assert!(shown.contains("*supplierId*: the id step 1 creates"), "{shown}");
            let value = card.approve_value();
            assert_eq!(t.click("W222", APPROVE_ACTION, &value).await, 200);
            t.wait_until("executed", || async {
                t.proposals().await.iter().filter(|(_, s)| s == "executed").count() == n + 1
            })
            .await;
            t.wait_idle().await;
            t.slack.take_updates();
            t.wait_for_posts(1).await;
            t.slack.take_texts();
        }
        let contacts = t.accounting.contacts(ACME);
        assert_eq!(contacts.len(), 1, "the supplier is created once: {contacts:?}");
        let purchases = t.accounting.purchases(ACME);
        assert_eq!(purchases.len(), 2);
        for purchase in &purchases {
            assert_eq!(purchase["supplier"]["contactId"], contacts[0]["contactId"]);
            assert_eq!(purchase["kind"], "supplier");
            assert_eq!(purchase["purchaseAttachments"].as_array().unwrap().len(), 1);
        }
        assert_eq!(
            step_outcomes(t).await,
            ["created", "created", "created", "found", "created", "created"],
            "the second invoice finds the supplier the first created"
        );
    })
    .await;
}

#[tokio::test]
async fn a_sales_invoice_is_created_once_for_its_customer() {
    run_test(async |t| {
        let customer = t
            .accounting
            .add_contact(ACME, json!({"name": "Fjord Design AS", "customer": true}));
        let args = json!({"body": {"issueDate": "2026-11-23", "dueDate": "2026-12-07",
            "customerId": customer, "bankAccountCode": "1920:10001", "cash": false,
            "lines": [{"description": "Rådgivning november", "quantity": 10, "unitPrice": 120000,
                       "net": 1200000, "vat": 300000, "vatType": "HIGH", "incomeAccount": "3000"}]}});
        t.openai.script([
            Scripted::tool_call("register_sales_invoice", &args.to_string()),
            Scripted::Text("Fakturaen venter på godkjenning.".into()),
        ]);
        t.openai
            .script_for("Review-E", [Scripted::Text(REVIEW_E_OK.into())]);
        let body = slack_message("1596183880.004203", "Fakturer Fjord Design for november", &[]);
        assert_eq!(t.post_slack_event(&body).await, 200);
        let card = one_card(t).await;
        assert!(card.text.contains("15 000,00 kr"), "{}", card.text);
        t.wait_for_posts(1).await;
        t.slack.take_texts();
        approve(t, &card).await;
        let invoices = t.accounting.invoices(ACME);
        assert_eq!(invoices.len(), 1);
        assert_eq!(invoices[0]["customer"]["contactId"], customer);
        assert_eq!(invoices[0]["net"], 1_200_000);
        t.wait_for_posts(1).await;
        assert!(t.slack.take_texts()[0].contains("approved and carried out"));
    })
    .await;
}

#[tokio::test]
async fn files_too_large_of_a_refused_type_or_unreachable_get_a_clear_reply_and_are_not_kept() {
    let options = TestOptions {
        settings: ServiceSettings {
            max_file_bytes: 64 * 1024,
            ..ServiceSettings::default()
        },
        ..TestOptions::default()
    };
    run_test_with(options, async |t| {
        let big = t
            .slack
            .add_file("stor.jpg", receipt_jpeg(2).repeat(40), "image/jpeg");
        let zip = t
            .slack
            .add_file("kvittering.pdf", b"PK\x03\x04not a pdf".to_vec(), "application/pdf");
        let gone = format!("{}Fgone/borte.png", t.slack.files_base_url());
        t.openai
            .script([Scripted::Text("Jeg fikk ikke lest filene.".into())]);
        let body = slack_message(
            "1596183880.004204",
            "Her er kvitteringene",
            &[
                ("stor.jpg", &big, "image/jpeg"),
                ("kvittering.pdf", &zip, "application/pdf"),
                ("borte.png", &gone, "image/png"),
            ],
        );
        assert_eq!(t.post_slack_event(&body).await, 200);
        t.wait_for_posts(2).await;
        t.wait_idle().await;
        let told = t.slack.take_texts();
        assert_eq!(told.len(), 2, "{told:?}");
        assert_eq!(
            told[0],
            "I could not read these files: stor.jpg (larger than 64 KiB); kvittering.pdf (it is not a \
             PNG, JPEG, GIF or PDF file); borte.png (the platform refused it (HTTP 404)). Send \
             receipts as PNG, JPEG, GIF or PDF files of at most the size allowed."
        );
        assert_eq!(told[1], "Jeg fikk ikke lest filene.");
        assert_eq!(t.db.count("files").await, 0, "nothing kept");
        // One turn, without files to show, that knows what was not read.
        assert_eq!(t.openai.request_count(), 1);
        let last = t.openai.requests()[0]["messages"].as_array().unwrap().last().unwrap().clone();
        let content = last["content"].as_str().expect("text only");
        assert!(content.contains("- stor.jpg: not read (larger than"), "{content}");
        // The big file was not read past the limit.
        assert_eq!(t.slack.files.fetched().len(), 3);
    })
    .await;
}

#[tokio::test]
async fn kept_files_are_deleted_after_their_tenants_retention() {
    // No worker: its relay would race this test's own sweep for the file.
    let no_worker = TestOptions {
        worker_later: true,
        ..Default::default()
    };
    run_test_with(no_worker, async |t| {
        let acme = t.db.tenant_id(ACME).await;
        sqlx::query("UPDATE tenants SET file_retention_days = 30 WHERE id = $1")
            .bind(acme)
            .execute(&t.db.owner)
            .await
            .unwrap();
        let store = t.db.service_store().await;
        let tenant = store.tenant(acme.into());
        for seed in [1, 2] {
            let jpeg = receipt_jpeg(seed);
            let file = shared::request::FileRef {
                sha256: hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&jpeg)),
                filename: format!("r{seed}.jpg"),
                content_type: "image/jpeg".into(),
                size_bytes: jpeg.len() as u64,
            };
            tenant.store_file(&file, &jpeg).await.unwrap();
        }
        let days: Vec<i32> = sqlx::query_scalar(
            "SELECT extract(day FROM expires_at - created_at)::int FROM files ORDER BY filename",
        )
        .fetch_all(&t.db.owner)
        .await
        .unwrap();
        assert_eq!(days, [30, 30], "kept for the tenant's retention");
        // The first is past its retention.
        sqlx::query(
            "UPDATE files SET expires_at = now() - interval '1 second' WHERE filename = 'r1.jpg'",
        )
        .execute(&t.db.owner)
        .await
        .unwrap();
        let relay = worker::manager::relay::Relay::new(
            store.clone(),
            t.queue.clone(),
            worker::config::RelayConfig::default(),
        );
        assert_eq!(relay.sweep().await.unwrap().files_expired, 1);
        let kept: Vec<String> = sqlx::query_scalar("SELECT filename FROM files")
            .fetch_all(&t.db.owner)
            .await
            .unwrap();
        assert_eq!(kept, ["r2.jpg"]);
    })
    .await;
}
