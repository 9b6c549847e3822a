//! Fake Accounting API: Fiken API v2, checked against Fiken's own document
//! (`characters/apis/fiken.yaml`, as a strict server reads requests) and
//! keeping books per company — contacts, purchases and their attachments,
//! sales, invoices — so a read after a write is real. A request the
//! document (or Fiken's documented rules) refuses gets Fiken's 400 and is
//! noted as a refusal: a product bug. Creates answer 201 with a `Location`
//! and no body, lists page with Fiken's headers, and a write can be made to
//! fail the ways a network fails (committed and the answer lost).

use std::collections::BTreeMap;
use std::future::IntoFuture;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use axum::{Json, Router};
use serde_json::{Value, json};
use shared::openapi::{ApiSpec, Operation, RequestParts};

use super::Refusals;

/// A request the product made.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordedRequest {
    /// HTTP method.
    pub method: String,
    /// Path and query.
    pub uri: String,
    /// Bearer token sent.
    pub bearer: Option<String>,
    /// JSON body, if any.
    pub body: Option<Value>,
    /// When it arrived.
    pub at: std::time::Instant,
}

/// A file uploaded as an attachment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upload {
    /// The purchase (or sale, invoice) it documents.
    pub parent: i64,
    /// The form's `filename`.
    pub filename: String,
    /// The file part's type.
    pub content_type: String,
    /// Its bytes.
    pub bytes: Vec<u8>,
}

/// How the next write goes wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteFault {
    /// Made, then the connection drops before the answer.
    CommitThenDrop,
    /// Made, then answered only after this long (past the client's
    /// timeout, or while its worker is killed).
    CommitThenAnswerAfter(Duration),
    /// Held this long, then made and answered: a server still at work when
    /// the client gave up.
    CommitAfter(Duration),
    /// Not made; answered with this status.
    Fail(u16),
}

/// One company's books.
#[derive(Debug, Default)]
struct Books {
    contacts: Vec<Value>,
    purchases: Vec<Value>,
    sales: Vec<Value>,
    invoices: Vec<Value>,
    uploads: Vec<Upload>,
}

#[derive(Default)]
struct Inner {
    books: BTreeMap<String, Books>,
    next_id: i64,
    requests: Vec<RecordedRequest>,
    faults: std::collections::VecDeque<WriteFault>,
    /// Answers for the next requests the document accepts, instead of the
    /// books': (status, body).
    answers: std::collections::VecDeque<(u16, String)>,
}

/// The fake Accounting API.
#[derive(Clone)]
pub struct FakeAccounting {
    inner: Arc<Mutex<Inner>>,
    spec: Arc<ApiSpec>,
    token: String,
    refusals: Refusals,
    /// Base URL to configure as `accounting.base_url` (`…/api/v2`).
    pub base_url: String,
}

/// Fiken's document, read once.
fn fiken() -> Arc<ApiSpec> {
    static SPEC: std::sync::OnceLock<Arc<ApiSpec>> = std::sync::OnceLock::new();
    SPEC.get_or_init(|| {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../characters/apis/fiken.yaml");
        let text = std::fs::read_to_string(path).expect("read Fiken's document");
        Arc::new(
            ApiSpec::from_yaml(&text)
                .expect("Fiken's document parses")
                .strict_requests(),
        )
    })
    .clone()
}

/// The bank accounts every company has.
pub fn bank_accounts() -> Value {
    json!([
        {"bankAccountId": 2747365, "name": "Driftskonto", "accountCode": "1920:10001",
         "bankAccountNumber": "15030000001", "type": "normal", "reconciledBalance": 123450,
         "reconciledDate": "2026-11-23", "inactive": false},
        {"bankAccountId": 2747366, "name": "Skattetrekk", "accountCode": "1920:10002",
         "bankAccountNumber": "15030000002", "type": "tax_deduction", "reconciledBalance": 2500000,
         "reconciledDate": "2026-11-23", "inactive": false}
    ])
}

/// The bank balances every company reports.
pub fn bank_balances() -> Value {
    json!([
        {"source": "BANK", "bankAccountId": 2747365, "bankAccountCode": "1920:10001", "date": "2026-11-23", "amount": 123450},
        {"source": "BANK", "bankAccountId": 2747366, "bankAccountCode": "1920:10002", "date": "2026-11-23", "amount": 2500000}
    ])
}

impl FakeAccounting {
    /// Starts the fake; only `token` is accepted.
    pub async fn start(token: &str) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the Accounting API fake");
        Self::start_on(listener, token)
    }

    /// Starts the fake on `listener` (the sandbox's fixed address).
    pub fn start_on(listener: tokio::net::TcpListener, token: &str) -> Self {
        let mut fake = Self {
            inner: Arc::new(Mutex::new(Inner {
                next_id: 3_458_100,
                ..Default::default()
            })),
            spec: fiken(),
            token: token.to_owned(),
            refusals: Refusals::default(),
            base_url: String::new(),
        };
        let router = Router::new()
            .route("/{*path}", any(handle))
            .with_state(fake.clone());
        let addr = listener.local_addr().expect("the fake's address");
        tokio::spawn(axum::serve(listener, router).into_future());
        fake.base_url = format!("http://{addr}/api/v2");
        fake
    }

    /// Requests refused because Fiken would refuse them.
    pub fn refusals(&self) -> &Refusals {
        &self.refusals
    }

    /// Answers the next request the document accepts with this status and
    /// body instead (a write so answered is not made).
    pub fn respond_next(&self, status: u16, body: String) {
        self.inner.lock().unwrap().answers.push_back((status, body));
    }

    /// Makes the next write (a POST) go wrong.
    pub fn fault_next_write(&self, fault: WriteFault) {
        self.inner.lock().unwrap().faults.push_back(fault);
    }

    /// Adds a contact to `company`'s books; its id.
    pub fn add_contact(&self, company: &str, contact: Value) -> i64 {
        let mut inner = self.inner.lock().unwrap();
        let id = next_id(&mut inner);
        let mut contact = contact;
        contact["contactId"] = json!(id);
        inner
            .books
            .entry(company.to_owned())
            .or_default()
            .contacts
            .push(contact);
        id
    }

    /// Adds a purchase (a `purchaseResult`) to `company`'s books; its id.
    pub fn add_purchase(&self, company: &str, purchase: Value) -> i64 {
        let mut inner = self.inner.lock().unwrap();
        let id = next_id(&mut inner);
        let mut purchase = purchase;
        purchase["purchaseId"] = json!(id);
        if purchase.get("purchaseAttachments").is_none() {
            purchase["purchaseAttachments"] = json!([]);
        }
        inner
            .books
            .entry(company.to_owned())
            .or_default()
            .purchases
            .push(purchase);
        id
    }

    /// `company`'s purchases, as Fiken lists them.
    pub fn purchases(&self, company: &str) -> Vec<Value> {
        self.with_books(company, |b| b.purchases.clone())
    }

    /// `company`'s contacts.
    pub fn contacts(&self, company: &str) -> Vec<Value> {
        self.with_books(company, |b| b.contacts.clone())
    }

    /// `company`'s invoices.
    pub fn invoices(&self, company: &str) -> Vec<Value> {
        self.with_books(company, |b| b.invoices.clone())
    }

    /// The files uploaded to `company`'s books.
    pub fn uploads(&self, company: &str) -> Vec<Upload> {
        self.with_books(company, |b| b.uploads.clone())
    }

    /// Everything written to `company`'s books: contacts, purchases,
    /// sales, invoices and uploads, counted.
    pub fn writes(&self, company: &str) -> usize {
        self.with_books(company, |b| {
            b.contacts.len()
                + b.purchases.len()
                + b.sales.len()
                + b.invoices.len()
                + b.uploads.len()
        })
    }

    fn with_books<T>(&self, company: &str, read: impl FnOnce(&Books) -> T) -> T {
        let inner = self.inner.lock().unwrap();
        read(inner.books.get(company).unwrap_or(&Books::default()))
    }

    /// Takes the requests so far.
    pub fn take_requests(&self) -> Vec<RecordedRequest> {
        std::mem::take(&mut self.inner.lock().unwrap().requests)
    }
}

fn next_id(inner: &mut Inner) -> i64 {
    inner.next_id += 1;
    inner.next_id
}

/// Fiken's error answer.
fn error(status: StatusCode, description: &str) -> Response {
    let error = status
        .canonical_reason()
        .unwrap_or("error")
        .to_lowercase()
        .replace(' ', "_");
    (
        status,
        Json(json!({"error": error, "error_description": description})),
    )
        .into_response()
}

async fn handle(
    State(fake): State<FakeAccounting>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let content_type = headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let json_body = serde_json::from_slice::<Value>(&body).ok();
    fake.inner.lock().unwrap().requests.push(RecordedRequest {
        at: std::time::Instant::now(),
        method: method.to_string(),
        uri: uri.to_string(),
        bearer: super::bearer(&headers),
        body: json_body.clone(),
    });
    if super::bearer(&headers).as_deref() != Some(fake.token.as_str()) {
        return error(
            StatusCode::UNAUTHORIZED,
            "Bearer token missing or not valid",
        );
    }
    let Some(path) = uri.path().strip_prefix("/api/v2") else {
        return error(StatusCode::NOT_FOUND, "no such resource");
    };
    let Some((op, params)) = fake.spec.route(method.as_str(), path) else {
        return error(StatusCode::NOT_FOUND, "no such resource");
    };
    let op = op.clone();
    let query: Vec<(String, String)> =
        serde_urlencoded::from_str(uri.query().unwrap_or_default()).unwrap_or_default();
    // The form of an upload, checked as its fields (the file as its name).
    let (form, file) = match op.body.as_ref().map(|b| b.media_type.as_str()) {
        Some("multipart/form-data") => match multipart(&content_type, &body) {
            Some(parts) => parts,
            None => return fake.refuse(&op, "the body is not a multipart form"),
        },
        _ => (None, None),
    };
    let checked = match &form {
        Some(form) => Some(form.clone()),
        None if body.is_empty() => None,
        None => match &json_body {
            Some(v) => Some(v.clone()),
            None => return fake.refuse(&op, "the body is not JSON"),
        },
    };
    let problems = fake.spec.check_request(
        &op,
        &RequestParts {
            path: params.clone(),
            query: &query,
            body: checked.as_ref(),
        },
    );
    if !problems.is_empty() {
        return fake.refuse(&op, &problems.join("; "));
    }
    let scripted = fake.inner.lock().unwrap().answers.pop_front();
    if let Some((status, body)) = scripted {
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        return (status, [("content-type", "application/json")], body).into_response();
    }
    let company = params.get("companySlug").cloned().unwrap_or_default();
    let fault = if method == Method::POST {
        fake.inner.lock().unwrap().faults.pop_front()
    } else {
        None
    };
    if let Some(WriteFault::Fail(status)) = fault {
        return error(
            StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            "scripted failure",
        );
    }
    let served = if let Some(WriteFault::CommitAfter(wait)) = fault {
        // The server goes on with the write when the client hangs up.
        let (fake, op) = (fake.clone(), op.clone());
        tokio::spawn(async move {
            tokio::time::sleep(wait).await;
            fake.serve(&op, &company, &params, &query, checked, file)
        })
        .await
        .expect("the write is served")
    } else {
        fake.serve(&op, &company, &params, &query, checked, file)
    };
    let response = match served {
        Ok(response) => response,
        Err(why) => return fake.refuse(&op, &why),
    };
    match fault {
        Some(WriteFault::CommitThenDrop) => {
            // Unwinding the handler closes the connection with no answer.
            std::panic::resume_unwind(Box::new("the connection drops"));
        }
        Some(WriteFault::CommitThenAnswerAfter(wait)) => {
            tokio::time::sleep(wait).await;
            response
        }
        _ => response,
    }
}

impl FakeAccounting {
    fn refuse(&self, op: &Operation, why: &str) -> Response {
        self.refusals.record(format!("Fiken {}: {why}", op.id));
        error(StatusCode::BAD_REQUEST, why)
    }

    /// Answers a request the document accepts, against the books; `Err`
    /// with why Fiken refuses it.
    fn serve(
        &self,
        op: &Operation,
        company: &str,
        params: &BTreeMap<String, String>,
        query: &[(String, String)],
        body: Option<Value>,
        file: Option<(String, Vec<u8>)>,
    ) -> Result<Response, String> {
        let mut inner = self.inner.lock().unwrap();
        let id = next_id(&mut inner);
        let books = inner.books.entry(company.to_owned()).or_default();
        let param = |name: &str| params.get(name).and_then(|v| v.parse::<i64>().ok());
        let location = |kind: &str, id: i64| {
            let url = format!("{}/companies/{company}/{kind}/{id}", self.base_url);
            (StatusCode::CREATED, [(axum::http::header::LOCATION, url)]).into_response()
        };
        let body = body.unwrap_or(Value::Null);
        Ok(match op.id.as_str() {
            "getBankAccounts" => page(bank_accounts().as_array().unwrap(), query),
            "getBankBalances" => page(bank_balances().as_array().unwrap(), query),
            "getContacts" => page(&listed(&books.contacts, query), query),
            "getPurchases" => page(&listed(&books.purchases, query), query),
            "getSales" => page(&listed(&books.sales, query), query),
            "getInvoices" => page(&listed(&books.invoices, query), query),
            "getPurchase" => one(&books.purchases, "purchaseId", param("purchaseId")),
            "getContact" => one(&books.contacts, "contactId", param("contactId")),
            "getPurchaseAttachments" => {
                match find(&books.purchases, "purchaseId", param("purchaseId")) {
                    Some(purchase) => Json(purchase["purchaseAttachments"].clone()).into_response(),
                    None => error(StatusCode::NOT_FOUND, "no such purchase"),
                }
            }
            "createContact" => {
                let mut contact = body;
                contact["contactId"] = json!(id);
                contact["createdDate"] = json!("2026-11-23");
                books.contacts.push(contact);
                location("contacts", id)
            }
            "createPurchase" => {
                let purchase = purchase_result(books, body, id)?;
                books.purchases.push(purchase);
                location("purchases", id)
            }
            "createInvoice" => {
                let invoice = invoice_result(books, body, id)?;
                books.invoices.push(invoice);
                location("invoices", id)
            }
            "createSale" => {
                let mut sale = body;
                sale["saleId"] = json!(id);
                books.sales.push(sale);
                location("sales", id)
            }
            "addAttachmentToPurchase" => {
                let purchase_id = param("purchaseId").unwrap_or_default();
                let (part_type, bytes) = file.ok_or("the form has no file")?;
                let named = body["filename"].as_str().unwrap_or_default().to_owned();
                let extension_ok = [".png", ".jpeg", ".jpg", ".gif", ".pdf"]
                    .iter()
                    .any(|e| named.to_lowercase().ends_with(e));
                if !extension_ok {
                    return Err(format!(
                        "filename `{named}` must end with .png, .jpeg, .jpg, .gif or .pdf"
                    ));
                }
                let flag = |name: &str| query.iter().any(|(k, v)| k == name && v == "true");
                if !flag("attachToPayment") && !flag("attachToSale") {
                    return Err(
                        "at least one of attachToPayment and attachToSale must be true".into(),
                    );
                }
                let purchase = books
                    .purchases
                    .iter_mut()
                    .find(|p| p["purchaseId"] == json!(purchase_id))
                    .ok_or("no such purchase")?;
                purchase["purchaseAttachments"]
                    .as_array_mut()
                    .expect("purchases list their attachments")
                    .push(json!({"identifier": id.to_string(), "type": "unspecified",
                                 "downloadUrl": format!("{}/files/{id}", self.base_url)}));
                books.uploads.push(Upload {
                    parent: purchase_id,
                    filename: named,
                    content_type: part_type,
                    bytes,
                });
                location(&format!("purchases/{purchase_id}/attachments"), id)
            }
            other => return Err(format!("the fake does not serve `{other}`")),
        })
    }
}

/// A purchase as Fiken keeps it, or why Fiken refuses it.
fn purchase_result(books: &Books, body: Value, id: i64) -> Result<Value, String> {
    let mut purchase = body;
    let supplier = purchase
        .as_object_mut()
        .and_then(|p| p.remove("supplierId"));
    match (purchase["kind"].as_str(), &supplier) {
        (Some("supplier"), None) => return Err("a supplier purchase needs supplierId".into()),
        (Some("cash_purchase"), Some(_)) => {
            return Err("a cash purchase has no supplierId".into());
        }
        _ => {}
    }
    if purchase["paid"] == json!(true) && purchase.get("paymentAccount").is_none() {
        return Err("a paid purchase needs paymentAccount".into());
    }
    if let Some(supplier) = supplier {
        let contact = books
            .contacts
            .iter()
            .find(|c| c["contactId"] == supplier)
            .ok_or_else(|| format!("no contact {supplier}"))?;
        purchase["supplier"] = contact.clone();
    }
    for field in ["paymentAccount", "paymentDate", "kid"] {
        purchase.as_object_mut().map(|p| p.remove(field));
    }
    let mut line_id = id * 10;
    for line in purchase["lines"].as_array_mut().into_iter().flatten() {
        line_id += 1;
        line["lineId"] = json!(line_id);
    }
    purchase["purchaseId"] = json!(id);
    purchase["purchaseAttachments"] = json!([]);
    purchase["deleted"] = json!(false);
    Ok(purchase)
}

/// An invoice as Fiken keeps it, or why Fiken refuses it.
fn invoice_result(books: &Books, body: Value, id: i64) -> Result<Value, String> {
    let customer = books
        .contacts
        .iter()
        .find(|c| c["contactId"] == body["customerId"])
        .ok_or_else(|| format!("no contact {}", body["customerId"]))?
        .clone();
    let lines = body["lines"].as_array().cloned().unwrap_or_default();
    let sum = |field: &str| lines.iter().filter_map(|l| l[field].as_i64()).sum::<i64>();
    let mut invoice = body;
    invoice.as_object_mut().map(|i| i.remove("customerId"));
    invoice["invoiceId"] = json!(id);
    invoice["invoiceNumber"] = json!(10_000 + id % 1000);
    invoice["customer"] = customer;
    invoice["net"] = json!(sum("net"));
    invoice["vat"] = json!(sum("vat"));
    invoice["settled"] = json!(false);
    Ok(invoice)
}

fn find<'a>(items: &'a [Value], id_field: &str, id: Option<i64>) -> Option<&'a Value> {
    items
        .iter()
        .find(|i| Some(&i[id_field]) == id.map(Value::from).as_ref())
}

fn one(items: &[Value], id_field: &str, id: Option<i64>) -> Response {
    match find(items, id_field, id) {
        Some(item) => Json(item.clone()).into_response(),
        None => error(StatusCode::NOT_FOUND, "no such resource"),
    }
}

/// The items a list's query filters keep: `X` equal, `XLe`/`XLt`/`XGe`/
/// `XGt` compared (dates compare as text); a contact id is the item's
/// supplier's or customer's.
fn listed(items: &[Value], query: &[(String, String)]) -> Vec<Value> {
    items
        .iter()
        .filter(|item| {
            query.iter().all(|(name, wanted)| {
                if ["page", "pageSize", "sortBy"].contains(&name.as_str()) {
                    return true;
                }
                for (suffix, keep) in [
                    (
                        "Le",
                        std::cmp::Ordering::is_le as fn(std::cmp::Ordering) -> bool,
                    ),
                    ("Lt", std::cmp::Ordering::is_lt),
                    ("Ge", std::cmp::Ordering::is_ge),
                    ("Gt", std::cmp::Ordering::is_gt),
                ] {
                    if let Some(field) = name.strip_suffix(suffix)
                        && item.get(field).is_some()
                    {
                        return text(&item[field]).is_some_and(|v| keep(v.as_str().cmp(wanted)));
                    }
                }
                let value = match name.as_str() {
                    "contactId" => item["supplier"]["contactId"]
                        .as_i64()
                        .or(item["customer"]["contactId"].as_i64())
                        .map(Value::from),
                    "customerId" => item["customer"]["contactId"].as_i64().map(Value::from),
                    field => item.get(field).cloned(),
                };
                value.as_ref().and_then(text).is_some_and(|v| &v == wanted)
            })
        })
        .cloned()
        .collect()
}

fn text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Null => None,
        other => Some(other.to_string()),
    }
}

/// One page of `items` with Fiken's paging headers (page 0, 25 a page
/// unless asked).
fn page(items: &[Value], query: &[(String, String)]) -> Response {
    let number = |name: &str, default: usize| {
        query
            .iter()
            .find(|(k, _)| k == name)
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or(default)
    };
    let (page, size) = (number("page", 0), number("pageSize", 25).max(1));
    let pages = items.len().div_ceil(size).max(1);
    let shown: Vec<Value> = items.iter().skip(page * size).take(size).cloned().collect();
    let headers = [
        ("Fiken-Api-Page", page.to_string()),
        ("Fiken-Api-Page-Size", size.to_string()),
        ("Fiken-Api-Page-Count", pages.to_string()),
        ("Fiken-Api-Result-Count", items.len().to_string()),
    ];
    let mut response = Json(shown).into_response();
    for (name, value) in headers {
        response.headers_mut().insert(
            axum::http::HeaderName::from_static(match name {
                "Fiken-Api-Page" => "fiken-api-page",
                "Fiken-Api-Page-Size" => "fiken-api-page-size",
                "Fiken-Api-Page-Count" => "fiken-api-page-count",
                _ => "fiken-api-result-count",
            }),
            axum::http::HeaderValue::from_str(&value).expect("a number is a header value"),
        );
    }
    response
}

/// A `multipart/form-data` body: its text fields as an object (the file
/// part as its file name, as the document's check sees it), and the file
/// part's type and bytes; `None` when it is not one.
#[allow(clippy::type_complexity)]
fn multipart(
    content_type: &str,
    body: &[u8],
) -> Option<(Option<Value>, Option<(String, Vec<u8>)>)> {
    let boundary = content_type
        .strip_prefix("multipart/form-data")?
        .split(';')
        .find_map(|p| p.trim().strip_prefix("boundary="))?
        .trim_matches('"');
    let delimiter = format!("--{boundary}");
    let mut fields = serde_json::Map::new();
    let mut file = None;
    let mut rest = body;
    loop {
        let start = find_bytes(rest, delimiter.as_bytes())? + delimiter.len();
        rest = &rest[start..];
        if rest.starts_with(b"--") {
            break;
        }
        rest = rest.strip_prefix(b"\r\n")?;
        let headers_end = find_bytes(rest, b"\r\n\r\n")?;
        let headers = std::str::from_utf8(&rest[..headers_end]).ok()?;
        let content = &rest[headers_end + 4..];
        let end = find_bytes(content, format!("\r\n{delimiter}").as_bytes())?;
        let value = &content[..end];
        rest = &content[end + 2..];
        let disposition = headers
            .lines()
            .find(|l| l.to_lowercase().starts_with("content-disposition"))?;
        let attribute = |name: &str| {
            disposition
                .split(';')
                .find_map(|p| p.trim().strip_prefix(&format!("{name}=")))
                .map(|v| v.trim_matches('"').to_owned())
        };
        let name = attribute("name")?;
        match attribute("filename") {
            Some(filename) => {
                let part_type = headers
                    .lines()
                    .find_map(|l| {
                        l.split_once(':')
                            .filter(|(k, _)| k.trim().eq_ignore_ascii_case("content-type"))
                    })
                    .map(|(_, v)| v.trim().to_owned())
                    .unwrap_or_default();
                fields.insert(name, json!(filename));
                file = Some((part_type, value.to_vec()));
            }
            None => {
                fields.insert(name, json!(String::from_utf8_lossy(value)));
            }
        }
    }
    Some((Some(Value::Object(fields)), file))
}

fn find_bytes(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}
