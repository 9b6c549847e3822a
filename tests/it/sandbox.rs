//! The Fiken sandbox `scripts/run-local` starts when no Fiken token is
//! given: the spec-checking Accounting API fake as a server, with a demo
//! company whose purchases lack receipts.

use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use tokio::process::Command;

#[tokio::test]
async fn the_fiken_sandbox_serves_a_demo_company_whose_purchases_lack_receipts() {
    shared::telemetry::install_crypto_provider();
    let port = tests::process::free_port();
    let _sandbox = Command::new(tests::process::binary("fiken-sandbox"))
        .env("AE_SANDBOX__ADDR", format!("127.0.0.1:{port}"))
        .env("AE_SANDBOX__TOKEN", "sandbox-test-token")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("start fiken-sandbox");
    let http = reqwest::Client::new();
    let api = format!("http://127.0.0.1:{port}/api/v2/companies/demo");
    let get = |path: &str, token: &str| http.get(format!("{api}/{path}")).bearer_auth(token).send();
    let mut purchases = None;
    for _ in 0..200 {
        if let Ok(answer) = get("purchases", "sandbox-test-token").await {
            purchases = Some(answer);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let purchases = purchases.expect("the sandbox answers");
    assert_eq!(purchases.status(), 200);
    let purchases: Vec<Value> = purchases.json().await.unwrap();
    assert_eq!(purchases.len(), 3);
    assert!(
        purchases.iter().all(|p| p["purchaseAttachments"]
            .as_array()
            .is_some_and(Vec::is_empty)),
        "none has its receipt: {purchases:?}"
    );
    let contacts: Vec<Value> = get("contacts", "sandbox-test-token")
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(contacts.len(), 3);
    assert_eq!(get("purchases", "wrong").await.unwrap().status(), 401);
    // Fiken's document is enforced: a field it does not know is refused.
    let refused = http
        .post(format!("{api}/contacts"))
        .bearer_auth("sandbox-test-token")
        .json(&serde_json::json!({"name": "Ny leverandør", "colour": "red"}))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 400);
}
