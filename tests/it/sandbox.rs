//! The sandbox `scripts/run-local` starts when no Fiken token or model key
//! is given: the spec-checking Accounting API fake as a server, with a demo
//! company whose purchases lack receipts, and a scripted model.

use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use tokio::process::Command;

#[tokio::test]
async fn the_sandbox_serves_a_demo_company_in_fiken_and_a_scripted_model() {
    shared::telemetry::install_crypto_provider();
    let (port, model_port) = (tests::process::free_port(), tests::process::free_port());
    let _sandbox = Command::new(tests::process::binary("fiken-sandbox"))
        .env("AE_SANDBOX__ADDR", format!("127.0.0.1:{port}"))
        .env("AE_SANDBOX__TOKEN", "sandbox-test-token")
        .env("AE_SANDBOX__MODEL_ADDR", format!("127.0.0.1:{model_port}"))
        .env("AE_SANDBOX__MODEL_KEY", "sandbox-test-key")
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

    // The scripted model reads the books once a turn, then says what it is.
    let completions = format!("http://127.0.0.1:{model_port}/v1/chat/completions");
    let tool = serde_json::json!([{"type": "function", "function": {
        "name": "list_purchases_without_receipt", "description": "Purchases without receipt.",
        "parameters": {"type": "object", "properties": {}}}}]);
    let ask = |messages: Value| {
        http.post(&completions)
            .bearer_auth("sandbox-test-key")
            .json(&serde_json::json!({"model": "sandbox", "messages": messages, "tools": tool}))
            .send()
    };
    let first: Value =
        ask(serde_json::json!([{"role": "user", "content": "Mangler det kvitteringer?"}]))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
    let call = &first["choices"][0]["message"]["tool_calls"][0];
    assert_eq!(
        call["function"]["name"], "list_purchases_without_receipt",
        "{first}"
    );
    let second: Value = ask(serde_json::json!([
        {"role": "user", "content": "Mangler det kvitteringer?"},
        {"role": "assistant", "content": null, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": call["id"], "content": "[{\"purchaseId\": 1}]"}
    ]))
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    let text = second["choices"][0]["message"]["content"]
        .as_str()
        .unwrap_or_default();
    assert!(text.contains("scripted sandbox model"), "{second}");
    assert!(
        text.contains("purchaseId"),
        "it reports what the books answered: {text}"
    );
}
