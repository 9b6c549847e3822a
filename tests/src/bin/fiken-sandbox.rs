//! A local Fiken, and a scripted model, to try Automate-E with: the test
//! suite's Accounting API fake (every request checked against Fiken's own
//! document, books kept in memory) with a demo company whose purchases lack
//! receipts, and its OpenAI-compatible fake answering every turn with one
//! read of the books and a text that says it is scripted. `scripts/run-local`
//! starts it when no Fiken token or no model key is given.
//!
//! Settings (`AE_SANDBOX__…`): `addr` (Fiken, default `127.0.0.1:8095`),
//! `token` (default `sandbox-token`), `model_addr` (default
//! `127.0.0.1:8096`), `model_key` (default `sandbox-model-key`). Its books are
//! gone when it stops.

use serde::{Deserialize, Serialize};
use serde_json::json;
use tests::fake::accounting::FakeAccounting;
use tests::fake::openai::{FakeOpenAi, Scripted};

/// The demo company's slug (`tenants.accounting_company`).
const COMPANY: &str = "demo";

#[derive(Debug, Serialize, Deserialize)]
#[serde(default)]
struct SandboxConfig {
    addr: String,
    token: String,
    model_addr: String,
    model_key: String,
}

impl Default for SandboxConfig {
    fn default() -> Self {
        Self {
            addr: "127.0.0.1:8095".to_owned(),
            token: "sandbox-token".to_owned(),
            model_addr: "127.0.0.1:8096".to_owned(),
            model_key: "sandbox-model-key".to_owned(),
        }
    }
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(default)]
struct Settings {
    sandbox: SandboxConfig,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let settings: Settings = shared::config::load(&Settings::default(), None)?;
    let cfg = settings.sandbox;
    let listener = tokio::net::TcpListener::bind(&cfg.addr).await?;
    let fiken = FakeAccounting::start_on(listener, &cfg.token);
    seed(&fiken);
    let model = FakeOpenAi::start_on(
        tokio::net::TcpListener::bind(&cfg.model_addr).await?,
        &cfg.model_key,
    );
    model.when_empty(Scripted::SandboxBookkeeper);
    println!(
        "fiken-sandbox: Fiken API v2 at {} (bearer token {}), company `{COMPANY}`; \
         a scripted model at {}",
        fiken.base_url, cfg.token, model.base_url
    );
    tokio::signal::ctrl_c().await?;
    Ok(())
}

/// Suppliers, and purchases of theirs with no receipt attached yet.
fn seed(fiken: &FakeAccounting) {
    for (name, org) in [
        ("Adobe Systems Software Ireland", "IE6364992H"),
        ("Clas Ohlson AS", "937402198"),
        ("Telenor Norge AS", "976967631"),
    ] {
        let supplier = fiken.add_contact(
            COMPANY,
            json!({"name": name, "organizationNumber": org, "supplier": true, "customer": false,
                   "supplierNumber": 20001, "currency": "NOK", "language": "Norwegian",
                   "inactive": false}),
        );
        fiken.add_purchase(
            COMPANY,
            json!({"date": "2026-11-20", "kind": "supplier", "paid": true, "currency": "NOK",
                   "supplier": {"contactId": supplier, "name": name},
                   "lines": [{"description": format!("{name}: November"), "netPrice": 39900,
                              "vat": 9975, "account": "6810", "vatType": "HIGH"}]}),
        );
    }
}
