//! The chat page (`web`) is a channel like the others: what the owner
//! writes there goes through ingest, the inbox, the turn, the proposal, the
//! review on the page and the execution; the reply and the card reach the
//! page. Driven over HTTP, and once in a real browser (headless Chromium).

use std::time::Duration;

use crate::browser::Browser;
use base64::Engine as _;
use fantoccini::Locator;
use futures::StreamExt;
use serde_json::{Value, json};
use tests::fake::openai::Scripted;
use tests::{
    ACME, PAGE_TOKEN, ServiceSettings, TestEnv, TestOptions, receipt_id, receipt_jpeg, run_test,
    run_test_with,
};

use crate::receipts::{REVIEW_E_OK, cash_purchase};

const OWNER: &str = "owner";
const REVIEWER: &str = "reviewer";

/// The cookie the page's link sets.
fn cookie() -> String {
    format!("ae_page={PAGE_TOKEN}")
}

async fn seed_page(t: &TestEnv) {
    let acme = t.db.tenant_id(ACME).await;
    t.db.seed_page(acme, OWNER, REVIEWER).await;
}

/// POSTs `body` to the page's `path` with its cookie.
async fn post(t: &TestEnv, path: &str, body: &Value) -> (u16, Value) {
    let response = t
        .http
        .post(format!("{}{path}", t.page_url))
        .header("cookie", cookie())
        .json(body)
        .send()
        .await
        .expect("page request");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

fn message(user: &str, text: &str, files: &Value) -> Value {
    json!({"user": user, "id": uuid::Uuid::new_v4(), "text": text, "files": files})
}

/// Reads the page's stream of views until one satisfies `wanted`.
async fn view_until(t: &TestEnv, what: &str, wanted: impl Fn(&Value) -> bool) -> Value {
    let response = t
        .http
        .get(format!(
            "{}/page/stream?owner={OWNER}&reviewer={REVIEWER}",
            t.page_url
        ))
        .header("cookie", cookie())
        .send()
        .await
        .expect("page stream");
    assert_eq!(response.status(), 200);
    let mut body = response.bytes_stream();
    let mut buffer = String::new();
    let mut seen = Value::Null;
    let read = async {
        while let Some(chunk) = body.next().await {
            buffer.push_str(&String::from_utf8_lossy(&chunk.expect("stream chunk")));
            while let Some(end) = buffer.find("\n\n") {
                let event: String = buffer.drain(..end + 2).collect();
                let data: String = event
                    .lines()
                    .filter_map(|l| l.strip_prefix("data: "))
                    .collect();
                if let Ok(view) = serde_json::from_str::<Value>(&data) {
                    if wanted(&view) {
                        return view;
                    }
                    seen = view;
                }
            }
        }
        panic!("the page's stream ended before {what}");
    };
    match tokio::time::timeout(Duration::from_secs(30), read).await {
        Ok(view) => view,
        Err(_) => panic!("the page never showed {what}; it last showed {seen}"),
    }
}

fn chat_says(view: &Value, text: &str) -> bool {
    view["chat"]
        .as_array()
        .is_some_and(|lines| lines.iter().any(|l| l["author"] == "" && l["text"] == text))
}

fn card_in(view: &Value, state: &str) -> bool {
    view["cards"]
        .as_array()
        .is_some_and(|cards| cards.iter().any(|c| c["state"] == state))
}

/// Whether Review-E's note is in the thread of the (only) card.
fn reviewed_by_review_e(view: &Value) -> bool {
    let thread = &view["cards"][0]["thread"];
    view["card_notes"].as_array().is_some_and(|notes| {
        notes.iter().any(|n| {
            &n["thread"] == thread
                && n["text"]
                    .as_str()
                    .unwrap_or_default()
                    .starts_with("Review-E (")
        })
    })
}

/// Book-E's answer to a receipt: register it, with the photo attached.
fn script_receipt(t: &TestEnv, jpeg: &[u8]) {
    let args =
        json!({"merchant": "Clas Ohlson", "body": cash_purchase(), "receipt": receipt_id(jpeg)});
    t.openai.script([
        Scripted::tool_call("register_purchase", &args.to_string()),
        Scripted::Text("Sendt til godkjenning.".into()),
    ]);
    t.openai
        .script_for("Review-E", [Scripted::Text(REVIEW_E_OK.into())]);
}

#[tokio::test]
async fn an_owner_sends_a_receipt_on_the_page_a_reviewer_approves_it_there_and_it_lands_once() {
    run_test(async |t| {
        seed_page(t).await;
        let jpeg = receipt_jpeg(7);
        script_receipt(t, &jpeg);
        let file = json!([{"name": "IMG_7.JPG",
                           "data": base64::engine::general_purpose::STANDARD.encode(&jpeg)}]);
        let sent = message(OWNER, "Registrer denne kvitteringen", &file);
        let (status, answer) = post(t, "/page/messages", &sent).await;
        assert_eq!((status, &answer["outcome"]), (200, &json!("accepted")));
        // The page's retry of the same message is not a second message.
        let (_, again) = post(t, "/page/messages", &sent).await;
        assert_eq!(again["outcome"], "duplicate");

        let view = view_until(t, "the reply, the card and Review-E's note", |v| {
            chat_says(v, "Sendt til godkjenning.")
                && card_in(v, "review_requested")
                && reviewed_by_review_e(v)
        })
        .await;
        let own = &view["chat"][0];
        assert_eq!(
            (&own["author"], &own["files"]),
            (&json!(OWNER), &json!(["IMG_7.JPG"]))
        );
        let card = &view["cards"][0];
        let writes = card["card"]["writes"].as_str().unwrap();
        assert!(
            writes.contains("*file*: IMG_7.jpg (image/jpeg, 3 KB"),
            "{writes}"
        );
        assert!(t.accounting.purchases(ACME).is_empty());

        // The owner is no reviewer; the reviewer's approval counts.
        let value = card["card"]["value"].clone();
        let (_, refused) = post(
            t,
            "/page/decisions",
            &json!({"reviewer": OWNER, "value": value, "approve": true}),
        )
        .await;
        assert_eq!(refused["decided"], false, "{refused}");
        let (status, decided) = post(
            t,
            "/page/decisions",
            &json!({"reviewer": REVIEWER, "value": value, "approve": true}),
        )
        .await;
        assert_eq!(
            (status, &decided["decided"]),
            (200, &json!(true)),
            "{decided}"
        );

        let view = view_until(t, "the write carried out", |v| {
            card_in(v, "executed")
                && v["chat"].as_array().is_some_and(|l| {
                    l.iter().any(|l| {
                        l["text"]
                            .as_str()
                            .unwrap_or_default()
                            .contains("approved and carried out")
                    })
                })
        })
        .await;
        assert_eq!(view["cards"][0]["decided_by"], "web:reviewer");
        let purchases = t.accounting.purchases(ACME);
        assert_eq!(purchases.len(), 1);
        let uploads = t.accounting.uploads(ACME);
        assert_eq!(uploads.len(), 1);
        assert_eq!(uploads[0].bytes, jpeg);
    })
    .await;
}

#[tokio::test]
async fn the_page_needs_its_token_and_hears_only_the_companys_people() {
    run_test(async |t| {
        seed_page(t).await;
        // Without the cookie, or with another token, nothing is served.
        let page = t.http.get(format!("{}/", t.page_url)).send().await.unwrap();
        assert_eq!(page.status(), 401);
        let wrong = t
            .http
            .get(format!("{}/?token=not-the-token", t.page_url))
            .send()
            .await
            .unwrap();
        assert_eq!(wrong.status(), 401);
        let sent = t
            .http
            .post(format!("{}/page/messages", t.page_url))
            .json(&message(OWNER, "hei", &json!([])))
            .send()
            .await
            .unwrap();
        assert_eq!(sent.status(), 401);
        // The link sets an HTTP-only, same-site cookie and leaves the address.
        let opened = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap()
            .get(format!("{}/?token={PAGE_TOKEN}", t.page_url))
            .send()
            .await
            .unwrap();
        assert_eq!(opened.status(), 303);
        let set = opened.headers()["set-cookie"].to_str().unwrap();
        assert!(
            set.contains("HttpOnly") && set.contains("SameSite=Strict"),
            "{set}"
        );
        // A form post from another site is not JSON: refused.
        let form = t
            .http
            .post(format!("{}/page/messages", t.page_url))
            .header("cookie", cookie())
            .header("content-type", "application/x-www-form-urlencoded")
            .body("user=owner&text=hei")
            .send()
            .await
            .unwrap();
        assert_eq!(form.status(), 415);

        // Somebody not listed is told, not heard; a bad name is refused.
        let (_, stranger) =
            post(t, "/page/messages", &message("stranger", "hei", &json!([]))).await;
        assert_eq!(stranger["outcome"], "not_a_member");
        let (status, _) = post(t, "/page/messages", &message("a b", "hei", &json!([]))).await;
        assert_eq!(status, 400);
        let too_many = Value::Array(vec![json!({"name": "a.pdf", "data": ""}); 6]);
        let (status, _) = post(t, "/page/messages", &message(OWNER, "hei", &too_many)).await;
        assert_eq!(status, 400);
        // A rejection needs a reason; a made-up card is refused.
        let (status, _) = post(
            t,
            "/page/decisions",
            &json!({"reviewer": REVIEWER, "value": "x:y", "approve": false}),
        )
        .await;
        assert_eq!(status, 400);
        let (status, _) = post(
            t,
            "/page/decisions",
            &json!({"reviewer": REVIEWER, "value": "not-a-card", "approve": true}),
        )
        .await;
        assert_eq!(status, 400);
        assert_eq!(t.db.count("inbox").await, 0);
        let view = view_until(t, "the stranger's notice", |_| true).await;
        assert_eq!(view["chat"], json!([]));
    })
    .await;
}

#[tokio::test]
async fn a_browser_chats_on_the_page_and_approves_a_write_that_lands_in_the_books() {
    run_test(async |t| {
        seed_page(t).await;
        let jpeg = receipt_jpeg(9);
        script_receipt(t, &jpeg);
        let receipt = std::env::temp_dir().join(format!("IMG_{}.JPG", uuid::Uuid::new_v4()));
        std::fs::write(&receipt, &jpeg).unwrap();

        let browser = Browser::start().await;
        let page = &browser.client;
        page.goto(&format!("{}/?token={PAGE_TOKEN}", t.page_url))
            .await
            .unwrap();
        let wait = || page.wait().at_most(Duration::from_secs(30));
        wait().for_element(Locator::Css("#compose")).await.unwrap();
        page.find(Locator::Css("#text"))
            .await
            .unwrap()
            .send_keys("Registrer denne kvitteringen")
            .await
            .unwrap();
        page.find(Locator::Css("#files"))
            .await
            .unwrap()
            .send_keys(receipt.to_str().unwrap())
            .await
            .unwrap();
        page.find(Locator::Css("#send")).await.unwrap().click().await.unwrap();

        let reply = browser
            .text_of(Locator::XPath(
                "//ol[@id='chat']/li[contains(@class,'agent') and contains(., 'Sendt til godkjenning.')]",
            ))
            .await;
        assert!(reply.contains("Book-E"));
        let own = browser.text_of(Locator::Css("#chat li.own")).await;
        assert!(own.contains("Registrer denne kvitteringen") && own.contains("IMG_"), "{own}");
        wait()
            .for_element(Locator::XPath(
                "//li[@data-state='review_requested']/div[@class='thread-note' and starts-with(., 'Review-E (')]",
            ))
            .await
            .unwrap();
        browser
            .click(Locator::Css(
                ".card[data-state='review_requested'] button.approve",
            ))
            .await;
        wait()
            .for_element(Locator::Css(".card[data-state='executed']"))
            .await
            .unwrap();
        // The banner is only for a scripted model; this one is the test's.
        let banner = page.find(Locator::Css("#banner")).await.unwrap();
        assert!(!banner.is_displayed().await.unwrap());
        browser.close().await;
        let _ = std::fs::remove_file(&receipt);

        let purchases = t.accounting.purchases(ACME);
        assert_eq!(purchases.len(), 1, "one purchase lands in the books");
        let uploads = t.accounting.uploads(ACME);
        assert_eq!(uploads.len(), 1);
        assert_eq!(uploads[0].bytes, jpeg);
    })
    .await;
}

#[tokio::test]
async fn the_sandbox_model_proposes_attaching_a_receipt_sent_on_the_page_to_a_purchase_lacking_one()
{
    let options = TestOptions {
        settings: ServiceSettings {
            scripted_model: true,
            ..Default::default()
        },
        ..Default::default()
    };
    run_test_with(options, async |t| {
        seed_page(t).await;
        let purchase = t.accounting.add_purchase(
            ACME,
            json!({"date": "2026-11-20", "kind": "cash_purchase", "paid": true, "currency": "NOK",
                   "paymentAccount": "1920:10001",
                   "lines": [{"description": "Telenor: November", "netPrice": 39900,
                              "vat": 9975, "account": "6900", "vatType": "HIGH"}]}),
        );
        t.openai.when_empty(Scripted::SandboxBookkeeper);

        // Text alone: it reads the books and says it is scripted.
        let (_, answer) = post(
            t,
            "/page/messages",
            &message(OWNER, "Hva mangler?", &json!([])),
        )
        .await;
        assert_eq!(answer["outcome"], "accepted");
        let view = view_until(t, "the scripted answer", |v| {
            v["chat"].as_array().is_some_and(|l| {
                l.iter().any(|l| {
                    l["text"]
                        .as_str()
                        .unwrap_or_default()
                        .contains("scripted sandbox model")
                })
            })
        })
        .await;
        assert!(
            view["chat"].to_string().contains("Telenor: November"),
            "{view}"
        );
        // The page says, at the top, that the model is scripted.
        assert_eq!(view["scripted_model"], true);

        // A receipt: a proposal to attach it, decided on the page.
        let jpeg = receipt_jpeg(3);
        let file = json!([{"name": "telenor.jpg",
                           "data": base64::engine::general_purpose::STANDARD.encode(&jpeg)}]);
        post(
            t,
            "/page/messages",
            &message(OWNER, "Her er kvitteringen", &file),
        )
        .await;
        let view = view_until(t, "the card", |v| card_in(v, "review_requested")).await;
        let card = &view["cards"][0]["card"];
        assert!(
            card["writes"]
                .as_str()
                .unwrap()
                .contains(&format!("/purchases/{purchase}/attachments")),
            "{card}"
        );
        let (_, decided) = post(
            t,
            "/page/decisions",
            &json!({"reviewer": REVIEWER, "value": card["value"], "approve": true}),
        )
        .await;
        assert_eq!(decided["decided"], true, "{decided}");
        view_until(t, "the write carried out", |v| card_in(v, "executed")).await;
        let uploads = t.accounting.uploads(ACME);
        assert_eq!(uploads.len(), 1);
        assert_eq!((uploads[0].parent, &uploads[0].bytes), (purchase, &jpeg));
    })
    .await;
}
