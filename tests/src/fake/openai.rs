//! Fake OpenAI Chat Completions (`POST /v1/chat/completions`): refuses what
//! the API refuses (a body its document does not allow, a tool call without
//! its answer), answers from a script, records every request.

use std::collections::VecDeque;
use std::future::IntoFuture;
use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{Value, json};

/// One scripted model answer.
#[derive(Debug, Clone, PartialEq)]
pub enum Scripted {
    /// A plain text answer.
    Text(String),
    /// A request to call one tool with these JSON arguments.
    ToolCall {
        /// Tool name.
        name: String,
        /// Arguments (JSON text).
        arguments: String,
    },
    /// A request to call several tools at once: (name, JSON arguments).
    ToolCalls(Vec<(String, String)>),
    /// A call of a tool the request did not offer, as a model can
    /// hallucinate one (any other scripted call must be of an offered tool).
    UnofferedToolCall(String),
    /// An HTTP error status with an OpenAI error body.
    Error(u16),
    /// HTTP 429 with `Retry-After: <secs>`.
    RateLimited(u64),
    /// No answer for this long (longer than the client's timeout), then a
    /// text answer nobody reads.
    Hang(std::time::Duration),
    /// A text answer echoing the last user message: `echo: <text>`.
    Echo,
    /// A call of this tool (no arguments) when the user spoke last, an
    /// [`Self::Echo`] once the tool has answered: one tool per turn.
    ToolThenEcho(String),
    /// The sandbox's bookkeeper: lists the purchases without a receipt;
    /// when the owner sent a receipt, proposes attaching it to the first of
    /// them (`attach_receipt`, a write a reviewer decides on); otherwise,
    /// or after that, says what it did and that it is scripted.
    SandboxBookkeeper,
}

impl Scripted {
    /// A request to call `name` with `arguments` (JSON text).
    pub fn tool_call(name: &str, arguments: &str) -> Self {
        Self::ToolCall {
            name: name.to_owned(),
            arguments: arguments.to_owned(),
        }
    }
}

#[derive(Default)]
struct Inner {
    script: VecDeque<Scripted>,
    /// Scripted answers that called a tool the request did not offer.
    unoffered: Vec<String>,
    /// Scripts for named characters (matched in the system prompt).
    by_character: Vec<(String, VecDeque<Scripted>)>,
    requests: Vec<Arc<Received>>,
    attempts: Vec<super::PostAttempt>,
    calls: u64,
    /// Answer when nothing is scripted (default: a 500 error).
    when_empty: Option<Scripted>,
    /// Added before every answer.
    latency: std::time::Duration,
    /// Calls being answered right now, per conversation key (the first user
    /// message), and the most seen at once for any one key.
    in_flight: std::collections::HashMap<String, usize>,
    max_in_flight_per_key: usize,
    /// Calls being answered right now, and the most seen at once.
    in_flight_total: usize,
    max_in_flight_total: usize,
    /// `tools` arrays the API's document allowed, as sent and parsed: a
    /// character sends the same one with every call (Book-E's is 35 KB),
    /// checked and kept once.
    allowed_tools: Vec<(Box<str>, Arc<Value>)>,
}

/// A request as received. A `tools` array allowed before is not kept in
/// `body` but shared: the bench's thousands of requests would otherwise
/// each keep their own copy of the character's schemas.
struct Received {
    body: Value,
    tools: Option<Arc<Value>>,
}

impl Received {
    fn tools(&self) -> Option<&Value> {
        self.tools.as_deref().or_else(|| self.body.get("tools"))
    }

    /// The whole body, as sent.
    fn to_value(&self) -> Value {
        let mut body = self.body.clone();
        if let (Some(tools), Some(fields)) = (&self.tools, body.as_object_mut()) {
            fields.insert("tools".to_owned(), Value::clone(tools));
        }
        body
    }
}

/// The fake model endpoint.
#[derive(Clone)]
pub struct FakeOpenAi {
    inner: Arc<Mutex<Inner>>,
    /// Requests refused for breaking the API's rules.
    pub refusals: super::Refusals,
    api_key: String,
    /// Base URL to configure as `llm.base_url` (ends in `/v1`).
    pub base_url: String,
}

impl FakeOpenAi {
    /// Starts the fake; only `api_key` is accepted.
    pub async fn start(api_key: &str) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the model fake");
        Self::start_on(listener, api_key)
    }

    /// Starts the fake on `listener` (the sandbox's fixed address).
    pub fn start_on(listener: tokio::net::TcpListener, api_key: &str) -> Self {
        let mut fake = Self {
            inner: Arc::default(),
            refusals: super::Refusals::default(),
            api_key: api_key.to_owned(),
            base_url: String::new(),
        };
        let router = Router::new()
            .route("/v1/chat/completions", post(completions))
            .with_state(fake.clone());
        let addr = listener.local_addr().expect("the fake's address");
        tokio::spawn(axum::serve(listener, router).into_future());
        fake.base_url = format!("http://{addr}/v1");
        fake
    }

    /// Appends answers to the script.
    pub fn script(&self, answers: impl IntoIterator<Item = Scripted>) {
        self.inner.lock().unwrap().script.extend(answers);
    }

    /// Appends answers for requests from the character with this display
    /// name (found in the system prompt as "Your name is NAME.").
    pub fn script_for(&self, display_name: &str, answers: impl IntoIterator<Item = Scripted>) {
        let mut inner = self.inner.lock().unwrap();
        let key = format!("Your name is {display_name}.");
        match inner.by_character.iter_mut().find(|(k, _)| *k == key) {
            Some((_, queue)) => queue.extend(answers),
            None => inner
                .by_character
                .push((key, answers.into_iter().collect())),
        }
    }

    /// The answer given when nothing is scripted (instead of a 500).
    pub fn when_empty(&self, answer: Scripted) {
        self.inner.lock().unwrap().when_empty = Some(answer);
    }

    /// Waits this long before every answer.
    pub fn set_latency(&self, latency: std::time::Duration) {
        self.inner.lock().unwrap().latency = latency;
    }

    /// The most calls ever answered at once, all conversations together.
    pub fn max_concurrent(&self) -> usize {
        self.inner.lock().unwrap().max_in_flight_total
    }

    /// The most calls ever answered at once for one conversation (keyed by
    /// its first user message): 1 when turns never overlapped.
    pub fn max_concurrent_per_conversation(&self) -> usize {
        self.inner.lock().unwrap().max_in_flight_per_key
    }

    /// Every request body received so far.
    pub fn requests(&self) -> Vec<Value> {
        let inner = self.inner.lock().unwrap();
        inner.requests.iter().map(|r| r.to_value()).collect()
    }

    /// How many requests were received so far.
    pub fn request_count(&self) -> usize {
        self.inner.lock().unwrap().requests.len()
    }

    /// When each call was answered and what wait a 429 asked for, in order.
    pub fn attempts(&self) -> Vec<super::PostAttempt> {
        self.inner.lock().unwrap().attempts.clone()
    }

    /// Tool calls the script made that the request did not offer (a real
    /// model calls only the tools it is given): mistakes of the test.
    pub fn take_unoffered_calls(&self) -> Vec<String> {
        std::mem::take(&mut self.inner.lock().unwrap().unoffered)
    }

    /// Scripted answers not used yet.
    pub fn unused_script(&self) -> usize {
        let inner = self.inner.lock().unwrap();
        inner.script.len()
            + inner
                .by_character
                .iter()
                .map(|(_, q)| q.len())
                .sum::<usize>()
    }
}

fn error(status: StatusCode, message: &str, kind: &str) -> Response {
    (
        status,
        Json(json!({"error": {"message": message, "type": kind, "param": null, "code": null}})),
    )
        .into_response()
}

async fn completions(
    State(fake): State<FakeOpenAi>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    if super::bearer(&headers).as_deref() != Some(fake.api_key.as_str()) {
        return error(
            StatusCode::UNAUTHORIZED,
            "Incorrect API key provided.",
            "invalid_request_error",
        );
    }
    let request = match received(&fake, &headers, &body) {
        Ok(request) => Arc::new(request),
        Err((status, refusal)) => {
            fake.refusals
                .record(format!("POST /v1/chat/completions: {refusal}"));
            return error(status, &refusal, "invalid_request_error");
        }
    };
    let in_flight = InFlight::enter(&fake, conversation_key(&request.body));
    let latency = {
        let mut inner = fake.inner.lock().unwrap();
        inner.requests.push(Arc::clone(&request));
        inner.calls += 1;
        inner.latency
    };
    // A zero sleep would still wait for the timer's next millisecond.
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    let response = answer(&fake, &request);
    drop(in_flight);
    let response = match response {
        Answer::Now(response) => response,
        Answer::After(wait, response) => {
            tokio::time::sleep(wait).await;
            response
        }
    };
    fake.inner
        .lock()
        .unwrap()
        .attempts
        .push(attempt_of(&response));
    response
}

/// When `response` is given, and the wait it asks for if it is a 429.
fn attempt_of(response: &Response) -> super::PostAttempt {
    let retry_after = (response.status() == StatusCode::TOO_MANY_REQUESTS)
        .then(|| response.headers().get(axum::http::header::RETRY_AFTER))
        .flatten()
        .and_then(|v| v.to_str().ok()?.parse().ok())
        .map(std::time::Duration::from_secs);
    super::PostAttempt {
        at: std::time::Instant::now(),
        retry_after,
    }
}

/// A call being answered, counted per conversation until it is answered
/// or its client goes away (the handler is dropped).
struct InFlight {
    fake: FakeOpenAi,
    key: String,
}

impl InFlight {
    fn enter(fake: &FakeOpenAi, key: String) -> Self {
        let mut inner = fake.inner.lock().unwrap();
        let now = inner.in_flight.entry(key.clone()).or_default();
        *now += 1;
        let now = *now;
        inner.max_in_flight_per_key = inner.max_in_flight_per_key.max(now);
        inner.in_flight_total += 1;
        inner.max_in_flight_total = inner.max_in_flight_total.max(inner.in_flight_total);
        Self {
            fake: fake.clone(),
            key,
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut inner = self.fake.inner.lock().unwrap();
        inner.in_flight_total -= 1;
        if let Some(now) = inner.in_flight.get_mut(&self.key) {
            *now -= 1;
        }
    }
}

/// The first user message of a request: the same for every call of one
/// conversation (history starts with it).
fn conversation_key(body: &Value) -> String {
    body["messages"]
        .as_array()
        .and_then(|m| m.iter().find(|m| m["role"] == "user"))
        .and_then(|m| m["content"].as_str())
        .unwrap_or_default()
        .to_owned()
}

fn last_user_text(body: &Value) -> String {
    body["messages"]
        .as_array()
        .and_then(|m| m.iter().rev().find(|m| m["role"] == "user"))
        .and_then(|m| m["content"].as_str())
        .unwrap_or_default()
        .to_owned()
}

enum Answer {
    Now(Response),
    After(std::time::Duration, Response),
}

fn answer(fake: &FakeOpenAi, request: &Received) -> Answer {
    let body = &request.body;
    let mut inner = fake.inner.lock().unwrap();
    let id = format!("chatcmpl-fake{}", inner.calls);
    let system = body["messages"][0]["content"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let named = inner
        .by_character
        .iter_mut()
        .find(|(key, _)| system.contains(key.as_str()));
    let answer = match named {
        Some((_, queue)) => queue.pop_front(),
        None => inner.script.pop_front(),
    };
    let Some(answer) = answer.or_else(|| inner.when_empty.clone()) else {
        return Answer::Now(error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "the fake model has no scripted answer left",
            "server_error",
        ));
    };
    let offered: Vec<&str> = request
        .tools()
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|t| t["function"]["name"].as_str())
        .collect();
    let called: Vec<&str> = match &answer {
        Scripted::ToolCall { name, .. } | Scripted::ToolThenEcho(name) => vec![name.as_str()],
        Scripted::ToolCalls(calls) => calls.iter().map(|(name, _)| name.as_str()).collect(),
        _ => Vec::new(),
    };
    for name in called.into_iter().filter(|name| !offered.contains(name)) {
        inner
            .unoffered
            .push(format!("`{name}` called; offered: {offered:?}"));
    }
    let (answer, wait) = match answer {
        Scripted::Hang(wait) => (Scripted::Text("too late".into()), Some(wait)),
        Scripted::SandboxBookkeeper => (sandbox_bookkeeper(request), None),
        Scripted::ToolThenEcho(name) => {
            let last = body["messages"].as_array().and_then(|m| m.last());
            match last.filter(|m| m["role"] == "tool") {
                None => (Scripted::tool_call(&name, "{}"), None),
                Some(_) => (Scripted::Echo, None),
            }
        }
        other => (other, None),
    };
    let (message, finish) = match answer {
        Scripted::Text(text) => (
            json!({"role": "assistant", "content": text, "refusal": null}),
            "stop",
        ),
        Scripted::ToolCall { name, arguments } => (
            json!({"role": "assistant", "content": null, "refusal": null, "tool_calls": [
                {"id": format!("call_{}", inner.calls), "type": "function", "function": {"name": name, "arguments": arguments}}
            ]}),
            "tool_calls",
        ),
        Scripted::UnofferedToolCall(name) => (
            json!({"role": "assistant", "content": null, "refusal": null, "tool_calls": [
                {"id": format!("call_{}", inner.calls), "type": "function", "function": {"name": name, "arguments": "{}"}}
            ]}),
            "tool_calls",
        ),
        Scripted::ToolCalls(calls) => {
            let calls: Vec<Value> = calls
                .iter()
                .enumerate()
                .map(|(i, (name, arguments))| {
                    json!({
                        "id": format!("call_{}_{i}", inner.calls), "type": "function",
                        "function": {"name": name, "arguments": arguments}
                    })
                })
                .collect();
            (
                json!({"role": "assistant", "content": null, "refusal": null, "tool_calls": calls}),
                "tool_calls",
            )
        }
        Scripted::Echo => (
            json!({"role": "assistant", "content": format!("echo: {}", last_user_text(body)), "refusal": null}),
            "stop",
        ),
        Scripted::Error(status) => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            return Answer::Now(error(status, "scripted failure", "server_error"));
        }
        Scripted::RateLimited(secs) => {
            let mut response = error(
                StatusCode::TOO_MANY_REQUESTS,
                "Rate limit reached for requests",
                "requests",
            );
            response.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                axum::http::HeaderValue::from(secs),
            );
            return Answer::Now(response);
        }
        Scripted::Hang(_) | Scripted::ToolThenEcho(_) | Scripted::SandboxBookkeeper => {
            unreachable!("replaced above")
        }
    };
    let model = body["model"].clone();
    let response = Json(json!({
        "id": id,
        "object": "chat.completion",
        "created": 1_700_000_000,
        "model": model,
        "choices": [{"index": 0, "message": message, "finish_reason": finish, "logprobs": null}],
        "usage": {"prompt_tokens": 120, "completion_tokens": 30, "total_tokens": 150}
    }))
    .into_response();
    match wait {
        Some(wait) => Answer::After(wait, response),
        None => Answer::Now(response),
    }
}

/// `body` as received, or why the API would refuse it: not JSON, a body
/// its document does not allow, or a tool call left without its answer. A
/// `tools` array sent before, byte for byte, is neither parsed nor checked
/// again, and is shared.
fn received(
    fake: &FakeOpenAi,
    headers: &HeaderMap,
    bytes: &[u8],
) -> Result<Received, (StatusCode, String)> {
    let refused = |problem: String| (StatusCode::BAD_REQUEST, problem);
    let json = headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !json {
        return Err((
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "Content-Type must be application/json".to_owned(),
        ));
    }
    let not_json = |e: serde_json::Error| {
        refused(format!(
            "We could not parse the JSON body of your request. ({e})"
        ))
    };
    let mut fields: std::collections::BTreeMap<String, &serde_json::value::RawValue> =
        serde_json::from_slice(bytes).map_err(not_json)?;
    let sent_tools = fields.remove("tools");
    let known = sent_tools.and_then(|sent| {
        let allowed = &fake.inner.lock().unwrap().allowed_tools;
        allowed
            .iter()
            .find(|(text, _)| **text == *sent.get())
            .map(|(_, tools)| Arc::clone(tools))
    });
    let mut body = serde_json::Map::new();
    for (name, raw) in fields {
        body.insert(name, serde_json::from_str(raw.get()).map_err(not_json)?);
    }
    let new_tools = match (&known, sent_tools) {
        (None, Some(sent)) => {
            let tools: Value = serde_json::from_str(sent.get()).map_err(not_json)?;
            body.insert("tools".to_owned(), tools);
            Some(sent.get())
        }
        _ => None,
    };
    let mut body = Value::Object(body);
    let spec = super::spec(super::Api::OpenAi);
    if let Some((op, path)) = spec.route("POST", "/chat/completions") {
        let problems = spec.check_request(
            op,
            &shared::openapi::RequestParts {
                path,
                query: &[],
                body: Some(&body),
            },
        );
        if !problems.is_empty() {
            return Err(refused(problems.join("; ")));
        }
    }
    if let Some(refusal) = unanswered_tool_calls(&body["messages"]) {
        return Err(refused(refusal));
    }
    let tools = match (known, new_tools, body.as_object_mut()) {
        (Some(known), _, _) => Some(known),
        (None, Some(text), Some(fields)) => fields.remove("tools").map(|tools| {
            let tools = Arc::new(tools);
            let mut inner = fake.inner.lock().unwrap();
            if inner.allowed_tools.len() < 16 {
                inner.allowed_tools.push((text.into(), Arc::clone(&tools)));
            }
            tools
        }),
        _ => None,
    };
    Ok(Received { body, tools })
}

/// What the Chat Completions API answers (400) when the conversation breaks
/// its tool-call rule: every `tool_calls[].id` of an assistant message is
/// answered by exactly one `tool` message before the next assistant or user
/// message, and every `tool` message answers such a call.
pub fn unanswered_tool_calls(messages: &Value) -> Option<String> {
    let unanswered = |ids: &[String]| {
        format!(
            "An assistant message with 'tool_calls' must be followed by tool messages responding \
             to each 'tool_call_id'. The following tool_call_ids did not have response messages: {}",
            ids.join(", ")
        )
    };
    let mut pending: Vec<String> = Vec::new();
    for message in messages.as_array()? {
        match message["role"].as_str() {
            Some("tool") => {
                let id = message["tool_call_id"].as_str().unwrap_or_default();
                let Some(at) = pending.iter().position(|p| p == id) else {
                    return Some(
                        "Invalid parameter: messages with role 'tool' must be a response to a \
                         preceeding message with 'tool_calls'."
                            .to_owned(),
                    );
                };
                pending.remove(at);
            }
            role => {
                if !pending.is_empty() {
                    return Some(unanswered(&pending));
                }
                if role == Some("assistant") {
                    pending = message["tool_calls"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(|c| c["id"].as_str().map(str::to_owned))
                        .collect();
                }
            }
        }
    }
    (!pending.is_empty()).then(|| unanswered(&pending))
}

/// What the sandbox's scripted bookkeeper does next in a turn.
fn sandbox_bookkeeper(request: &Received) -> Scripted {
    const LIST: &str = "list_purchases_without_receipt";
    const ATTACH: &str = "attach_receipt";
    const SCRIPTED: &str = "(A scripted sandbox model answers here: set AE_LLM__BASE_URL and \
                            AE_LLM__API_KEY for a real one.)";
    let offered = request
        .tools()
        .and_then(Value::as_array)
        .is_some_and(|tools| tools.iter().any(|t| t["function"]["name"] == LIST));
    if !offered {
        // An agent without the books' tools: Review-E, asked for a verdict.
        return Scripted::Text(
            json!({"verdict": "flag", "notes": "The sandbox's scripted reviewer read nothing: a human decides."})
                .to_string(),
        );
    }
    let messages = request.body["messages"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let Some(last) = messages.last().filter(|m| m["role"] == "tool") else {
        return Scripted::tool_call(LIST, "{}");
    };
    let called = messages
        .iter()
        .rev()
        .find(|m| m["role"] == "assistant")
        .and_then(|m| m["tool_calls"][0]["function"]["name"].as_str())
        .unwrap_or_default()
        .to_owned();
    let answered = last["content"].as_str().unwrap_or_default();
    if called == ATTACH {
        return Scripted::Text(format!(
            "{SCRIPTED} I proposed attaching your receipt; a reviewer decides. The books said: {}",
            answered.chars().take(300).collect::<String>()
        ));
    }
    let receipt = messages
        .iter()
        .rev()
        .find(|m| m["role"] == "user")
        .map(|m| m["content"].to_string())
        .and_then(|text| {
            let at = text.find("receipt-")?;
            let id = text.get(at..at + "receipt-".len() + 12)?;
            id["receipt-".len()..]
                .chars()
                .all(|c| c.is_ascii_hexdigit())
                .then(|| id.to_owned())
        });
    let purchase = serde_json::from_str::<Value>(answered)
        .ok()
        .and_then(|v| v["items"].as_array()?.first()?["purchaseId"].as_i64());
    match (receipt, purchase) {
        (Some(receipt), Some(purchase)) => Scripted::tool_call(
            ATTACH,
            &json!({"purchaseId": purchase, "receipt": receipt}).to_string(),
        ),
        _ => Scripted::Text(format!(
            "{SCRIPTED} I asked the books with `{LIST}`; they answered: {}. Send a receipt \
             (a photo or a PDF) and I propose attaching it to the first of them.",
            answered.chars().take(400).collect::<String>()
        )),
    }
}
