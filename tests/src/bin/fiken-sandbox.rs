//! A local Fiken to try Automate-E with: the test suite's Accounting API
//! fake (every request checked against Fiken's own document, books kept in
//! memory) as a server, with a demo company whose purchases lack receipts.
//! `scripts/run-local` starts it when no Fiken token is given.
//!
//! Settings (`AE_SANDBOX__…`): `addr` (default `127.0.0.1:8095`), `token`
//! (default `sandbox-token`). Its books are gone when it stops.

use serde::{Deserialize, Serialize};
use serde_json::json;
use tests::fake::accounting::FakeAccounting;

/// The demo company's slug (`tenants.accounting_company`).
const COMPANY: &str = "demo";

#[derive(Debug, Serialize, Deserialize)]
#[serde(default)]
struct SandboxConfig {
    addr: String,
    token: String,
}

impl Default for SandboxConfig {
    fn default() -> Self {
        Self {
            addr: "127.0.0.1:8095".to_owned(),
            token: "sandbox-token".to_owned(),
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
    println!(
        "fiken-sandbox: Fiken API v2 at {} (bearer token {}), company `{COMPANY}`",
        fiken.base_url, cfg.token
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
