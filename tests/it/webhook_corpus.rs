//! Invariant 7 at scale (DESIGN.md §5): a generated, deterministic corpus of
//! more than 10,000 malformed, forged, replayed and oversized webhook requests,
//! sent over real HTTP to the real gateway. Every request is answered (the
//! gateway never panics or hangs), each with exactly the status its case must
//! get, and afterwards nothing is enqueued, recorded or posted.
//!
//! `e2e_slack_rejects` has the hand-written cases; this is the generated,
//! large version. Statuses come from the gateway's edges
//! (`gateway/src/http/`): signature, secret and timestamp failures are 401,
//! malformed bodies 400, bodies over `slack.max_body_bytes` 413 (checked
//! before any signature), other methods 405. A few authentic, well-formed
//! requests the gateway deliberately acknowledges and ignores (unknown Slack
//! event types, Telegram update kinds that do not parse, clicks it does not
//! handle) are tagged 200: for them the proof is that nothing is enqueued.
//!
//! The corpus is tables, a row a category: how many requests, the status each
//! must get, how to make one. [`SLACK_ATTACKS`] and [`TELEGRAM_ATTACKS`] forge
//! or replay authentic requests; the rows of [`EVENT_BODIES`],
//! [`INTERACTIVITY_BODIES`] and [`TELEGRAM_BODIES`] are sent as an authentic
//! sender would (signed now, or with the right secret), many of them an
//! authentic body with one of a list of JSON [`Edits`] made.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};
use reqwest::Method;
use reqwest::header::HeaderValue;
use serde_json::{Value, json};
use sha2::Sha256;
use shared::engine::review::{APPROVE_ACTION, REJECT_ACTION, action_value, reject_modal};
use shared::ids::ProposalId;
use shared::job::QueueName;
use tests::signing::slack_signature;
use tests::{FIXTURE_TEAM, SLACK_SIGNING_SECRET, TELEGRAM_SECRET, TestEnv, fixture, run_test};

/// Seed of the corpus: the same requests on every run.
const SEED: u64 = 0x7E57_C0DE_5EED_0007;
/// Requests in flight at once.
const CONCURRENCY: usize = 32;
/// Longest one request may take before it counts as not answered.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(20);
/// The corpus must be at least this large.
const MIN_CORPUS: usize = 10_000;

const EVENTS: &str = "/slack/events";
const INTERACTIVITY: &str = "/slack/interactivity";
const TELEGRAM: &str = "/telegram/webhook";

const SLACK_SIGNATURE: &str = "x-slack-signature";
const SLACK_TIMESTAMP: &str = "x-slack-request-timestamp";
const TELEGRAM_SECRET_HEADER: &str = "x-telegram-bot-api-secret-token";
/// Content types.
const JSON: &str = "application/json";
const FORM: &str = "application/x-www-form-urlencoded";

/// Slack fixtures that the gateway would record and enqueue if authentic.
const SLACK_MESSAGES: [&str; 3] = [
    "slack/event_callback.message.json",
    "slack/event_callback.app_mention.json",
    "slack/event_callback.message.thread_reply.json",
];
/// Telegram fixtures that the gateway would record and enqueue if authentic.
const TELEGRAM_MESSAGES: [&str; 2] = [
    "telegram/update.message.private_command.json",
    "telegram/update.message.supergroup_topic_reply.json",
];

// Lists in one string (words, JSON texts, timestamps) are space-separated.
// The tables are laid out by hand: a row a line, or a block.

/// Timestamps that are not a Slack timestamp (never an `i64`); NOW is now.
#[rustfmt::skip]
const NON_NUMERIC_TIMESTAMPS: [&str; 16] = [
    "", "abc", "now", "NaN", "Infinity", "1.5", "1e9", "0x6553f100", "1_700_000_000", "-", "+",
    "99999999999999999999", "-99999999999999999999", "1700000000abc", "NOW.5", "NOWz",
];
/// Signed timestamps far from now, at the ends of `i64`.
const EXTREME_TIMESTAMPS: &str = "-4611686018427387904 -9223372036854775 9223372036854775807 0";
/// Signed timestamps below `now - i64::MAX`: slack-morphism 2.31's
/// `validate_ts` computes `(now - ts).abs()`, which overflows (a panic in a
/// debug build), so the gateway must refuse them before it gets there.
const OVERFLOWING_TIMESTAMPS: &str =
    "-9223372036854775808 -9223372036854775807 -9223372036854775000";
/// JSON of no type a webhook field has.
const WRONG_VALUES: &str = r#"null true 17 -1.5 [] ["x",1] {} {"id":"T111"}"#;

/// JSON edits, one chosen per body: one of its pointers ("" is the whole
/// body) gets one of its JSON texts, or loses its key if they are [`REMOVE`].
type Edits = [(&'static str, &'static str)];
const REMOVE: &str = "(remove)";

/// Not a push event: a field missing or of the wrong type, or another body.
#[rustfmt::skip]
const WRONG_PUSHES: &Edits = &[
    ("/team_id /api_app_id /event_id", WRONG_VALUES),
    ("/event_time", "null true [] {} 1000000000000000000 -1000000000000000000"),
    ("/type /team_id /api_app_id /event /event_id /event_time", REMOVE),
    ("/type", r#"null 5 "EVENT_CALLBACK" "event-callback" "" ["event_callback"]"#),
    ("", r#"null true 0 -1 "event_callback" [] [{"type":"event_callback"}] {}"#),
    ("", concat!(r#"{"type":"url_verification"} {"type":"url_verification","token":"x"} "#,
        r#"{"type":"url_verification","challenge":17} {"type":"url_verification","challenge":[]} "#,
        r#"{"type":"url_verification","challenge":true} {"type":"url_verification","challenge":{}}"#)),
];
/// A push whose event is not a message the gateway reads: ignored.
#[rustfmt::skip]
const UNKNOWN_EVENTS: &Edits = &[
    ("/event", r#"{"type":"zz_5eed0007","user":"W111","text":"hi","channel":"C111"}"#),
    ("/event", r#"{"type":"message","user":"W111","text":"hi","channel":"C111","ts":1596183880}"#),
    ("/event", r#"{"type":"message","user":["W111"],"text":"hi","channel":"C111","ts":"1.2"}"#),
    ("/event", WRONG_VALUES),
];
#[rustfmt::skip]
const WRONG_PAYLOADS: &Edits = &[
    ("", WRONG_VALUES),
    ("/type", r#""zz_5eed0007" "block_action" "BLOCK_ACTIONS""#),
    ("/type /team /api_app_id /container /trigger_id", REMOVE),
    ("/team /trigger_id /actions /container /user", "5 true -0.5"),
];
/// Clicks the gateway does not act on: ignored.
#[rustfmt::skip]
const IGNORED_CLICKS: &Edits = &[
    ("/actions/0/action_id", r#""other.5eed" "other.review" "proposal.approve.other""#),
    ("/actions/0/value", REMOVE),
    ("/user", REMOVE),
];
#[rustfmt::skip]
const NOT_UPDATES: &Edits = &[
    ("/update_id", REMOVE),
    ("/update_id", r#"null "900000001" -1 4294967296 1.5 true [1] {}"#),
    ("", r#"null true 1 "update" [] [{"update_id":1}] {}"#),
];
/// An update id and no update kind that parses (teloxide's
/// `UpdateKind::Error`): ignored.
#[rustfmt::skip]
const UNPARSED_UPDATES: &Edits = &[
    ("/message /edited_message /channel_post /callback_query /my_chat_member /zz_5eed0007",
        r#"5 "x" [] {} null {"message_id":"x"} {"chat":5,"text":"hi"}"#),
    ("/update_id", "1 900000001 4294967295"),
];

/// Ids of a Slack message holding a NUL character (Postgres cannot store
/// one): the message is ignored, never a 500.
#[rustfmt::skip]
const NUL_IDS: &Edits = &[
    ("/team_id /event_id /event/channel /event/user /event/ts /event/user_team /event/thread_ts",
        r#""\u0000" "T111\u0000" "\u0000C111" "1596183880.0042\u0000""#),
];
/// Fields of a click holding a NUL character: refused.
#[rustfmt::skip]
const NUL_CLICKS: &Edits = &[
    ("/user/id /user/name /channel/id /team/id /actions/0/value /actions/0/action_id /trigger_id /container/message_ts",
        r#""\u0000" "W222\u0000" "\u0000x""#),
];
/// String fields of each endpoint's authentic body that get a lone UTF-16
/// surrogate (`\ud800`), which no UTF-8 text holds.
const SURROGATE_FIELDS_EVENTS: &str =
    "/team_id /event_id /event/channel /event/user /event/ts /event/text /event/team";
const SURROGATE_FIELDS_CLICKS: &str = "/user/id /channel/id /team/id /actions/0/value /trigger_id";

/// A request's headers (but the content type) and body.
type Request = (Vec<Header>, Vec<u8>);
/// Makes a forged or replayed request of a timestamp of now and an authentic
/// body of the endpoint.
type Attack = fn(&mut Corpus, &str, &str) -> Request;
type Attacks = [(&'static str, usize, Attack)];

/// Forgeries and replays for /slack/events (a quarter as many for
/// /slack/interactivity): all 401.
#[rustfmt::skip]
const SLACK_ATTACKS: &Attacks = &[
    ("forged: no signature", 300, |_, ts, body| (vec![header(SLACK_TIMESTAMP, ts)], body.into())),
    ("forged: no timestamp", 200, |_, ts, body| (vec![header(SLACK_SIGNATURE, sign(ts, body))], body.into())),
    ("forged: no headers", 100, |_, _, body| (Vec::new(), body.into())),
    ("forged: random signature", 400, |c, ts, body| slack(ts, format!("v0={}", c.rng.hex(64)), body)),
    ("forged: another secret", 500, |c, ts, body| {
        let secret = match c.rng.below(4) { 0 => c.rng.hex(32), _ => c.near_miss(SLACK_SIGNING_SECRET) };
        slack(ts, slack_signature(&secret, ts, body), body)
    }),
    ("forged: wrong base string", 200, |c, ts, body| {
        let base = c.rng.word("v0:TSBODY v1:TS:BODY TS:BODY BODY v0:TS:BODY\n");
        slack(ts, hmac_v0(base.replace("TS", ts).replace("BODY", body).as_bytes()), body)
    }),
    ("forged: one byte flipped after signing", 600, |c, ts, body| {
        let at = c.rng.below(body.len());
        let (headers, mut body) = signed(ts, body);
        body[at] ^= c.rng.between(1, 255) as u8;
        (headers, body)
    }),
    ("forged: body cut or extended after signing", 200, |c, ts, body| {
        let (headers, mut body) = signed(ts, body);
        match c.rng.below(2) {
            0 => body.truncate(c.rng.below(body.len())),
            _ => body.extend(c.rng.text(20).into_bytes()),
        }
        (headers, body)
    }),
    ("forged: signature of another timestamp", 200, |c, ts, body| {
        let sent_at = ts.parse::<i64>().expect("a timestamp") - c.rng.between(1, 60);
        slack(sent_at.to_string(), sign(ts, body), body)
    }),
    ("forged: wrong v0= prefix or case", 300, |c, ts, body| {
        let form = c.rng.word("v1=HEX V0=HEX v0:HEX HEX v0=v0=HEX sha256=HEX v0=UPPER SIG,SIG v0\t=HEX");
        let signature = sign(ts, body);
        let forged = form.replace("HEX", &signature[3..]).replace("UPPER", &signature[3..].to_uppercase());
        slack(ts, forged.replace("SIG", &signature), body)
    }),
    ("forged: signature hex of wrong length or not hex", 300, |c, ts, body| {
        let (signature, at) = (sign(ts, body), 3 + c.rng.below(64));
        let forged = match c.rng.below(3) {
            0 => signature[..at].to_owned(),
            1 => format!("{signature}{}", c.rng.hex(at % 8 + 1)),
            _ => format!("{}g{}", &signature[..at], &signature[at + 1..]),
        };
        slack(ts, forged, body)
    }),
    ("forged: non-ASCII signature or timestamp header", 100, |c, ts, body| {
        // Header values that are not visible ASCII (obs-text) read as missing.
        let mut values = [ts.as_bytes().to_vec(), sign(ts, body).into_bytes()];
        let value = &mut values[c.rng.below(2)];
        value.insert(c.rng.below(value.len() + 1), c.rng.next() as u8 | 0x80);
        let [ts, signature] = values;
        slack(ts, signature, body)
    }),
    ("replayed: signed, timestamp older than 5 minutes", 500, |c, _, body| {
        signed(&(c.now - c.rng.between(320, c.now)).to_string(), body)
    }),
    ("replayed: signed, timestamp in the future", 300, |c, _, body| {
        signed(&(c.now + c.rng.between(400, 10_000_000_000)).to_string(), body)
    }),
    ("replayed: signed, timestamp not a number", 300, |c, _, body| {
        signed(&c.rng.pick(&NON_NUMERIC_TIMESTAMPS).replace("NOW", &c.now.to_string()), body)
    }),
    // A body of exactly the limit is read (the limit is not off by one).
    ("at the limit: unsigned", 12, |c, ts, _| (vec![header(SLACK_TIMESTAMP, ts)], c.at_the_limit())),
];

/// Secret headers other than the right one on authentic updates: all 401.
#[rustfmt::skip]
const TELEGRAM_ATTACKS: &Attacks = &[
    ("secret: missing", 300, |_, _, body| (Vec::new(), body.into())),
    ("secret: wrong", 400, |c, _, body| {
        let text = c.rng.text(64).replace(|x: char| !x.is_ascii_graphic(), "x");
        let secrets = [c.rng.hex(32), String::new(), format!("{}{text}", c.rng.visible())];
        (secret(&secrets[c.rng.below(3)]), body.into())
    }),
    ("secret: near miss", 700, |c, _, body| match c.rng.below(9) {
        0 => (secret([TELEGRAM_SECRET.as_bytes(), &[c.rng.next() as u8 | 0x80]].concat()), body.into()),
        _ => (secret(c.near_miss(TELEGRAM_SECRET)), body.into()),
    }),
    ("secret: right secret, wrong header", 100, |c, _, body| {
        let name = *c.rng.pick(&["authorization", "x-telegram-bot-api-secret", "x-telegram-secret-token"]);
        let prefix = if name == "authorization" { "Bearer " } else { "" };
        (vec![header(name, format!("{prefix}{TELEGRAM_SECRET}"))], body.into())
    }),
];

/// Bodies sent as an authentic sender would (signed now, or with the right
/// secret): category, how many, the status each must get, the body.
type Bodies = [(&'static str, usize, u16, fn(&mut Corpus) -> Vec<u8>)];

#[rustfmt::skip]
const EVENT_BODIES: &Bodies = &[
    ("signed: truncated JSON", 600, 400, |c| c.truncated(EVENTS).into()),
    ("signed: random text", 400, 400, |c| c.rng.text(400).into()),
    // Verified on the raw body as UTF-8 text: not UTF-8 is not authentic.
    ("signed: not UTF-8", 100, 401, |c| c.rng.non_utf8(400)),
    ("signed: wrong JSON types or shape", 600, 400, |c| c.edited(EVENTS, WRONG_PUSHES)),
    ("signed: deeply nested JSON", 200, 400, |c| {
        let event = concat!(r#"{"type":"event_callback","team_id":"T111","api_app_id":"A111","#,
            r#""event_id":"Ev1","event_time":1596183880,"event":{"type":"message","x":NESTED}}"#);
        c.deep_json(Some(event), 30_000).into()
    }),
    ("signed: empty body", 50, 400, |_| Vec::new()),
    ("signed: unknown push type", 200, 400, |c| c.edited(EVENTS, &[("/type", r#""zz_5eed" "zz_push""#)])),
    ("ignored (200): signed, unknown event type", 300, 200, |c| c.edited(EVENTS, UNKNOWN_EVENTS)),
    ("ignored (200): signed, app_rate_limited", 50, 200, |c| {
        json!({"token": "x", "type": "app_rate_limited", "team_id": FIXTURE_TEAM,
            "minute_rate_limited": c.now - 60, "api_app_id": "A111"}).to_string().into()
    }),
    ("ignored (200): signed, url_verification", 50, 200, |c| {
        json!({"type": "url_verification", "token": "x", "challenge": c.rng.text(60)}).to_string().into()
    }),
    ("ignored (200): signed, an id holding NUL", 300, 200, |c| c.edited(EVENTS, NUL_IDS)),
    ("signed: a lone surrogate in a string", 200, 400, |c| c.lone_surrogate(EVENTS, SURROGATE_FIELDS_EVENTS)),
    ("at the limit: signed, malformed", 3, 400, Corpus::at_the_limit),
];

#[rustfmt::skip]
const INTERACTIVITY_BODIES: &Bodies = &[
    ("signed: form without payload", 300, 400, Corpus::form_without_payload),
    ("signed: payload not JSON", 300, 400, |c| match c.rng.below(2) {
        0 => form(&c.rng.text(200)).into(),
        _ => form(&c.truncated(INTERACTIVITY)).into(),
    }),
    ("signed: payload of the wrong shape", 300, 400, |c| c.edited(INTERACTIVITY, WRONG_PAYLOADS)),
    // Form-encoding triples the size: stay under the body limit.
    ("signed: deeply nested payload", 100, 400, |c| form(&c.deep_json(None, 5_000)).into()),
    ("signed: not UTF-8", 50, 401, |c| [b"payload=".as_slice(), &c.rng.non_utf8(200)].concat()),
    ("signed: click with a malformed reference", 200, 400, |c| {
        let reference = c.malformed_reference();
        form(&c.click_payload(&reference)).into()
    }),
    ("signed: click on an unknown proposal", 100, 400, |c| c.authentic_body(INTERACTIVITY).into()),
    ("signed: reject reason for a bad reference", 50, 400, |c| {
        let reference = match c.rng.below(2) { 0 => c.malformed_reference(), _ => c.unknown_reference() };
        let reason = format!("no {}", c.rng.text(30));
        c.reject_submission(&reference, true, &reason)
    }),
    ("signed: a field holding NUL", 200, 400, |c| c.edited(INTERACTIVITY, NUL_CLICKS)),
    ("signed: a lone surrogate in a string", 100, 400, |c| c.lone_surrogate(INTERACTIVITY, SURROGATE_FIELDS_CLICKS)),
    ("ignored (200): signed, an interaction not acted on", 100, 200, |c| {
        // Our modal with a blank reason (asks again), another modal, or a click.
        let (reference, blank) = (c.unknown_reference(), *c.rng.pick(&["", "   "]));
        match c.rng.below(4) {
            0 => c.reject_submission(&reference, true, blank),
            1 => c.reject_submission(&reference, false, "a reason"),
            _ => c.edited(INTERACTIVITY, IGNORED_CLICKS),
        }
    }),
    ("at the limit: signed, malformed", 3, 400, Corpus::at_the_limit),
];

#[rustfmt::skip]
const TELEGRAM_BODIES: &Bodies = &[
    ("right secret: truncated JSON", 500, 400, |c| c.truncated(TELEGRAM).into()),
    ("right secret: random text", 300, 400, |c| c.rng.text(400).into()),
    ("right secret: not UTF-8", 100, 400, |c| c.rng.non_utf8(400)),
    ("right secret: deeply nested JSON", 100, 400, |c| {
        c.deep_json(Some(r#"{"update_id":1,"message":NESTED}"#), 30_000).into()
    }),
    ("right secret: empty body", 50, 400, |_| Vec::new()),
    ("right secret: not an update", 400, 400, |c| c.edited(TELEGRAM, NOT_UPDATES)),
    ("ignored (200): right secret, update kind that does not parse", 300, 200, |c| {
        let update = json!({"update_id": c.rng.between(1, i64::from(u32::MAX))});
        c.edit(update, UNPARSED_UPDATES).to_string().into()
    }),
    ("at the limit: malformed, right secret", 3, 400, Corpus::at_the_limit),
];

/// xorshift64*: a small deterministic generator, enough to spread the cases.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `0..n`.
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    /// Uniform in `lo..=hi`.
    fn between(&mut self, lo: i64, hi: i64) -> i64 {
        lo + (self.next() % (hi - lo + 1) as u64) as i64
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }

    /// One of these space-separated words.
    fn word<'a>(&mut self, words: &'a str) -> &'a str {
        let at = self.below(words.split(' ').count());
        words.split(' ').nth(at).expect("a word")
    }

    /// One of these space-separated JSON texts, parsed.
    fn json(&mut self, texts: &str) -> Value {
        serde_json::from_str(self.word(texts)).expect("JSON")
    }

    fn hex(&mut self, len: usize) -> String {
        let digits = std::iter::repeat_with(|| format!("{:016x}", self.next()));
        digits.take(len.div_ceil(16)).collect::<String>()[..len].to_owned()
    }

    /// 1..=max characters: printable ASCII, more JSON and form syntax, some Unicode.
    fn text(&mut self, max: usize) -> String {
        let extra = "{}[]\":,\\&=%+æøå€Ω🧾\u{202e}\u{feff}".chars();
        let chars: Vec<char> = (' '..='~').chain(extra).collect();
        (0..=self.below(max)).map(|_| *self.pick(&chars)).collect()
    }

    /// A printable ASCII character that is not a space (no header trimming).
    fn visible(&mut self) -> char {
        char::from(b'!' + self.below(94) as u8)
    }

    /// Random bytes that are never valid UTF-8.
    fn non_utf8(&mut self, max: usize) -> Vec<u8> {
        let mut bytes: Vec<u8> = (0..=self.below(max)).map(|_| self.next() as u8).collect();
        let at = self.below(bytes.len());
        bytes[at] = 0xFF;
        bytes
    }
}

type Header = (&'static str, HeaderValue);

fn header(name: &'static str, value: impl AsRef<[u8]>) -> Header {
    let value = HeaderValue::from_bytes(value.as_ref());
    (name, value.expect("a valid header value"))
}

fn secret(value: impl AsRef<[u8]>) -> Vec<Header> {
    vec![header(TELEGRAM_SECRET_HEADER, value)]
}

fn slack_headers(ts: impl AsRef<[u8]>, sig: impl AsRef<[u8]>) -> Vec<Header> {
    vec![header(SLACK_TIMESTAMP, ts), header(SLACK_SIGNATURE, sig)]
}

/// A Slack request with these timestamp and signature headers.
fn slack(ts: impl AsRef<[u8]>, signature: impl AsRef<[u8]>, body: &str) -> Request {
    (slack_headers(ts, signature), body.into())
}

/// A Slack request signed correctly at `ts`.
fn signed(ts: &str, body: impl Into<Vec<u8>>) -> Request {
    let body = body.into();
    (slack_headers(ts, sign(ts, &body)), body)
}

/// Slack's signature of `body` at `ts`: `tests::signing` for text, the same
/// HMAC over the raw bytes for a body that is not UTF-8.
fn sign(ts: &str, body: impl AsRef<[u8]>) -> String {
    match std::str::from_utf8(body.as_ref()) {
        Ok(text) => slack_signature(SLACK_SIGNING_SECRET, ts, text),
        Err(_) => hmac_v0(&[format!("v0:{ts}:").as_bytes(), body.as_ref()].concat()),
    }
}

/// `v0=` + HMAC-SHA256 of any base string under the gateway's signing secret.
fn hmac_v0(base: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(SLACK_SIGNING_SECRET.as_bytes()).expect("a key");
    mac.update(base);
    format!("v0={}", hex::encode(mac.finalize().into_bytes()))
}

/// An interactivity form body with this payload, as Slack sends it.
fn form(payload: &impl ToString) -> String {
    serde_urlencoded::to_string([("payload", payload.to_string())]).expect("form body")
}

/// The body that carries `json` to `path`: in a form for interactivity.
fn body_of(path: &str, json: &Value) -> String {
    match path {
        INTERACTIVITY => form(json),
        _ => json.to_string(),
    }
}

/// One request of the corpus and the status it must get.
struct Case {
    category: &'static str,
    method: Method,
    path: &'static str,
    headers: Vec<Header>,
    body: Arc<[u8]>,
    expect: u16,
}

impl Case {
    /// The exact request (up to 240 bytes of body), for a mismatch report.
    fn describe(&self) -> String {
        let (method, path, headers, body) = (&self.method, self.path, &self.headers, &self.body);
        let (category, size) = (self.category, body.len());
        let shown = String::from_utf8_lossy(&body[..size.min(240)]);
        format!("{method} {path} [{category}] headers {headers:?} body ({size} bytes) {shown:?}")
    }
}

struct Corpus {
    rng: Rng,
    now: i64,
    body_limit: usize,
    slack_messages: Vec<Value>,
    telegram_messages: Vec<Value>,
    block_actions: Value,
    cases: Vec<Case>,
}

impl Corpus {
    fn new(body_limit: usize) -> Self {
        let parse = |name: &&str| -> Value { serde_json::from_str(&fixture(name)).unwrap() };
        Self {
            rng: Rng(SEED),
            now: chrono::Utc::now().timestamp(),
            body_limit,
            slack_messages: SLACK_MESSAGES.iter().map(parse).collect(),
            telegram_messages: TELEGRAM_MESSAGES.iter().map(parse).collect(),
            block_actions: parse(&"slack/block_actions.json"),
            cases: Vec::new(),
        }
    }

    fn build(mut self) -> Vec<Case> {
        let extremes = format!("{EXTREME_TIMESTAMPS} {OVERFLOWING_TIMESTAMPS}");
        for (path, share) in [(EVENTS, 1), (INTERACTIVITY, 4)] {
            for ts in extremes.split(' ') {
                let (headers, body) = signed(ts, self.authentic_body(path));
                let category = "replayed: signed, extreme timestamp";
                self.post(category, path, headers, body.into(), 401);
            }
            self.attacks(path, SLACK_ATTACKS, share);
        }
        self.attacks(TELEGRAM, TELEGRAM_ATTACKS, 1);
        self.authentic(EVENTS, EVENT_BODIES);
        self.authentic(INTERACTIVITY, INTERACTIVITY_BODIES);
        self.authentic(TELEGRAM, TELEGRAM_BODIES);
        for (path, n) in [(EVENTS, 150), (INTERACTIVITY, 50), (TELEGRAM, 100)] {
            self.oversized(path, n);
        }
        for _ in 0..50 {
            // An authentic request, but for the method.
            let path = *self.rng.pick(&[EVENTS, INTERACTIVITY, TELEGRAM]);
            let method = self.rng.word("GET PUT DELETE PATCH");
            let body = self.authentic_body(path).into_bytes();
            self.post("wrong method", path, Vec::new(), body.into(), 405);
            let case = self.cases.last_mut().expect("a case");
            case.method = method.parse().expect("a method");
        }
        // Interleave endpoints and categories.
        let mut cases = self.cases;
        for i in (1..cases.len()).rev() {
            cases.swap(i, self.rng.below(i + 1));
        }
        cases
    }

    /// A POST with the endpoint's content type.
    fn post(
        &mut self,
        category: &'static str,
        path: &'static str,
        headers: Vec<Header>,
        body: Arc<[u8]>,
        expect: u16,
    ) {
        let content_type = if path == INTERACTIVITY { FORM } else { JSON };
        let mut headers = [vec![header("content-type", content_type)], headers].concat();
        // The gateway answers these without reading the whole body; hyper
        // then closes the connection, without always saying so in the
        // response. Ask for that up front, or the client may reuse a
        // connection that is closing for an unrelated case.
        if matches!(expect, 405 | 413) {
            headers.push(header("connection", "close"));
        }
        let method = Method::POST;
        self.cases.push(Case {
            category,
            method,
            path,
            headers,
            body,
            expect,
        });
    }

    /// `rows` of attacks on authentic bodies of `path`, `1/share` as many as
    /// they say: all 401.
    fn attacks(&mut self, path: &'static str, rows: &Attacks, share: usize) {
        for &(category, count, attack) in rows {
            for _ in 0..count / share {
                let (ts, body) = (self.fresh_ts(), self.authentic_body(path));
                let (headers, body) = attack(self, &ts, &body);
                self.post(category, path, headers, body.into(), 401);
            }
        }
    }

    /// Each row's bodies, signed now or with the right secret.
    fn authentic(&mut self, path: &'static str, rows: &Bodies) {
        for &(category, count, expect, make) in rows {
            for _ in 0..count {
                let body = make(self);
                let (headers, body) = match path {
                    TELEGRAM => (secret(TELEGRAM_SECRET), body),
                    _ => signed(&self.fresh_ts(), body),
                };
                self.post(category, path, headers, body.into(), expect);
            }
        }
    }

    /// Bodies over the limit, whatever the headers say: 413.
    fn oversized(&mut self, path: &'static str, n: usize) {
        // Authentic bodies padded with white space (still valid) to one byte
        // over the limit or more. Only a few, shared by the cases: HMAC over
        // 256 KiB is slow in a debug build.
        let mut bodies = Vec::new();
        for over in [1, 2 + self.rng.below(1 << 16), 2 + self.rng.below(1 << 16)] {
            let mut body = self.authentic_body(path);
            body.push_str(&" ".repeat(self.body_limit + over - body.len()));
            let (headers, body) = signed(&self.fresh_ts(), body);
            bodies.push((Arc::<[u8]>::from(body), headers));
        }
        for _ in 0..n {
            let (body, signed) = self.rng.pick(&bodies).clone();
            let forged = slack_headers(self.fresh_ts(), format!("v0={}", self.rng.hex(64)));
            let (category, headers) = match (path, self.rng.below(3)) {
                (TELEGRAM, 0) => ("oversized: right secret", secret(TELEGRAM_SECRET)),
                (TELEGRAM, 1) => ("oversized: wrong secret", secret(self.rng.hex(20))),
                (TELEGRAM, _) => ("oversized: no secret", Vec::new()),
                (_, 0) => ("oversized: signed", signed),
                (_, 1) => ("oversized: forged", forged),
                _ => ("oversized: unsigned", Vec::new()),
            };
            self.post(category, path, headers, body, 413);
        }
    }

    /// `value` with one of `edits` made.
    fn edit(&mut self, mut value: Value, edits: &Edits) -> Value {
        let &(pointers, texts) = self.rng.pick(edits);
        let pointer = self.rng.word(pointers);
        let (parent, key) = pointer.rsplit_once('/').unwrap_or_default();
        let parent = value.pointer_mut(parent).expect("the pointer's parent");
        match (pointer, texts) {
            ("", _) => *parent = self.rng.json(texts),
            (_, REMOVE) => {
                parent.as_object_mut().expect("an object").remove(key);
            }
            _ => parent[key] = self.rng.json(texts),
        }
        value
    }

    /// What the endpoint would act on (record, enqueue, decide) if it were
    /// authentic: a user message, or a click on a proposal that does not exist.
    fn authentic_json(&mut self, path: &str) -> Value {
        match path {
            EVENTS => self.slack_message(),
            INTERACTIVITY => {
                let reference = self.unknown_reference();
                self.click_payload(&reference)
            }
            _ => self.telegram_message(),
        }
    }

    fn authentic_body(&mut self, path: &str) -> String {
        let json = self.authentic_json(path);
        body_of(path, &json)
    }

    /// An authentic body of `path` with one of `edits` made.
    fn edited(&mut self, path: &str, edits: &Edits) -> Vec<u8> {
        let json = self.authentic_json(path);
        body_of(path, &self.edit(json, edits)).into()
    }

    /// An authentic body of `path` whose string at one of `pointers` holds a
    /// lone surrogate (written into the JSON text: no Rust string holds one).
    fn lone_surrogate(&mut self, path: &str, pointers: &str) -> Vec<u8> {
        const MARK: &str = "LONE-SURROGATE-5EED";
        let mut json = self.authentic_json(path);
        *json
            .pointer_mut(self.rng.word(pointers))
            .expect("the field") = json!(MARK);
        let surrogate = *self.rng.pick(&[r"\ud800", r"\udfff", r"x\ud83dy"]);
        let text = json.to_string().replace(MARK, surrogate);
        match path {
            INTERACTIVITY => form(&text).into(),
            _ => text.into(),
        }
    }

    /// The JSON of an authentic body of `path` cut short (never valid).
    fn truncated(&mut self, path: &str) -> String {
        let json = self.authentic_json(path).to_string();
        let chars = self.rng.below(json.chars().count());
        json.chars().take(chars).collect()
    }

    /// A timestamp well inside Slack's five minutes for the whole run.
    fn fresh_ts(&mut self) -> String {
        (self.now - self.rng.between(0, 60)).to_string()
    }

    /// A Slack user message of the routed team (random text, ids and ts).
    fn slack_message(&mut self) -> Value {
        let mut message = self.rng.pick(&self.slack_messages).clone();
        let ts = self.rng.between(1_500_000_000, self.now);
        message["event"]["ts"] = json!(format!("{ts}.{:06}", self.rng.below(999_999)));
        message["event"]["text"] = json!(format!("Pay invoice {}", self.rng.text(120)));
        message["event_id"] = json!(format!("Ev{}", self.rng.hex(12).to_uppercase()));
        message["team_id"] = json!(FIXTURE_TEAM);
        message
    }

    /// A Telegram message update (random text and ids).
    fn telegram_message(&mut self) -> Value {
        let mut update = self.rng.pick(&self.telegram_messages).clone();
        update["update_id"] = json!(self.rng.between(1, i64::from(u32::MAX)));
        update["message"]["message_id"] = json!(self.rng.between(1, 1_000_000));
        update["message"]["text"] = json!(format!("Send invoice {}", self.rng.text(120)));
        update
    }

    /// A click on Approve or Reject with this proposal reference.
    fn click_payload(&mut self, reference: &str) -> Value {
        let mut payload = self.block_actions.clone();
        payload["actions"][0]["action_id"] = json!(self.rng.pick(&[APPROVE_ACTION, REJECT_ACTION]));
        payload["actions"][0]["value"] = json!(reference);
        payload["user"]["id"] = json!(self.rng.word("W111 W222 W333 U999"));
        payload["trigger_id"] = json!(format!("{}.{}", self.rng.hex(6), self.rng.hex(6)));
        payload
    }

    fn unknown_reference(&mut self) -> String {
        let id = ProposalId::from(uuid::Uuid::from_u64_pair(self.rng.next(), self.rng.next()));
        action_value(id, &self.rng.hex(64))
    }

    fn malformed_reference(&mut self) -> String {
        let id = uuid::Uuid::from_u64_pair(self.rng.next(), self.rng.next());
        let len = self.rng.below(64);
        match self.rng.below(6) {
            0 => self.rng.text(40),
            1 => String::new(),
            2 => id.to_string(),
            3 => format!("not-a-uuid:{}", self.rng.hex(64)),
            4 => format!("{id}:{}", self.rng.hex(len)),
            _ => format!("{id}:{}zz", self.rng.hex(62)),
        }
    }

    /// A secret close to `real` (a character changed, dropped, added or
    /// swapped, cut short, upper case, doubled), never `real` itself.
    fn near_miss(&mut self, real: &str) -> String {
        loop {
            let mut secret = real.as_bytes().to_vec();
            let (at, c) = (self.rng.below(real.len()), self.rng.visible() as u8);
            match self.rng.below(7) {
                0 => secret[at] = c,
                1 => {
                    secret.remove(at);
                }
                2 => secret.insert(self.rng.below(real.len() + 1), c),
                3 => secret.truncate(at),
                4 => secret.make_ascii_uppercase(),
                5 => secret.extend_from_slice(real.as_bytes()),
                _ => secret.swap(at, (at + 1) % real.len()),
            }
            if secret != real.as_bytes() {
                return String::from_utf8(secret).expect("an ASCII secret");
            }
        }
    }

    /// JSON nested deeper than serde_json's limit of 128, in `wrapper` half the time.
    fn deep_json(&mut self, wrapper: Option<&str>, max_depth: i64) -> String {
        let depth = self.rng.between(129, max_depth) as usize;
        let nested = match self.rng.below(3) {
            0 => format!("{}{}", "[".repeat(depth), "]".repeat(depth)),
            1 => format!("{}1{}", "{\"a\":".repeat(depth), "}".repeat(depth)),
            _ => "[{\"a\":".repeat(depth),
        };
        match wrapper {
            Some(wrapper) if self.rng.below(2) == 0 => wrapper.replace("NESTED", &nested),
            _ => nested,
        }
    }

    /// Malformed, of exactly the body limit: read, not refused as too large.
    fn at_the_limit(&mut self) -> Vec<u8> {
        format!("{{{}", "a".repeat(self.body_limit - 1)).into()
    }

    /// A form body without a `payload` field.
    fn form_without_payload(&mut self) -> Vec<u8> {
        let json = self.block_actions.to_string();
        let renamed = [(self.rng.word("Payload payload_ PAYLOAD p json"), &json)];
        let renamed = serde_urlencoded::to_string(renamed).expect("a form");
        let body = match self.rng.below(4) {
            0 => self.rng.text(200),
            1 => String::new(),
            2 => renamed,
            _ => json,
        };
        let form: BTreeMap<String, String> = serde_urlencoded::from_str(&body).unwrap_or_default();
        assert!(!form.contains_key("payload"), "{body:?} has a payload");
        body.into()
    }

    /// A submitted reject-reason modal (form body), as `TestEnv::submit_modal` builds it.
    fn reject_submission(&mut self, metadata: &str, ours: bool, reason: &str) -> Vec<u8> {
        let mut view = serde_json::to_value(reject_modal(
            ProposalId::from(uuid::Uuid::nil()),
            &"0".repeat(64),
        ))
        .unwrap();
        view["private_metadata"] = json!(metadata);
        if !ours {
            view["callback_id"] = json!(format!("other_{}", self.rng.hex(4)));
        }
        view["id"] = json!("VFAKE1");
        view["team_id"] = json!(FIXTURE_TEAM);
        view["hash"] = json!("156772938.1827394");
        let input = json!({"type": "plain_text_input", "value": reason});
        view["state"] = json!({"values": {"reason": {"reason_input": input}}});
        let (user, team) = ("W222", FIXTURE_TEAM);
        let user = json!({"id": user, "username": user, "name": user, "team_id": team});
        let team = json!({"id": team, "domain": "workspace-domain"});
        let payload = json!({"type": "view_submission", "team": team, "user": user, "api_app_id": "A111",
            "token": "verification_token", "trigger_id": "111.222.submit", "view": view});
        form(&payload).into()
    }
}

/// What the gateway answered: status and body, or why there was no answer.
type Answer = Result<(u16, String), String>;

async fn send(http: reqwest::Client, url: String, case: &Case) -> Answer {
    let mut request = http.request(case.method.clone(), url);
    for (name, value) in &case.headers {
        request = request.header(*name, value.clone());
    }
    // The whole chain of causes: "error sending request" alone says little.
    let error = |e: reqwest::Error| {
        let chain = std::iter::successors(Some(&e as &dyn std::error::Error), |e| e.source());
        let causes: Vec<String> = chain.map(|cause| cause.to_string()).collect();
        causes.join(": ")
    };
    let request = request.timeout(REQUEST_TIMEOUT).body(case.body.to_vec());
    let response = request.send().await.map_err(error)?;
    let status = response.status().as_u16();
    Ok((status, response.text().await.map_err(error)?))
}

/// Sends every case, `CONCURRENCY` at a time; answers in case order.
async fn send_all(t: &TestEnv, cases: &Arc<Vec<Case>>) -> Vec<Answer> {
    let permits = Arc::new(tokio::sync::Semaphore::new(CONCURRENCY));
    let mut senders = Vec::with_capacity(cases.len());
    for i in 0..cases.len() {
        let (http, cases, permits) = (t.http.clone(), Arc::clone(cases), Arc::clone(&permits));
        let url = format!("{}{}", t.gateway_url, cases[i].path);
        senders.push(tokio::spawn(async move {
            let _permit = permits.acquire().await.expect("semaphore open");
            send(http, url, &cases[i]).await
        }));
    }
    let mut answers = Vec::with_capacity(cases.len());
    for sender in senders {
        answers.push(sender.await.expect("sender task"));
    }
    answers
}

/// Why an answer is wrong for its case, if it is.
fn mismatch(case: &Case, answer: &Answer) -> Option<String> {
    let (status, body) = match answer {
        Err(e) => return Some(format!("no answer ({e})")),
        Ok(answer) => answer,
    };
    let (want, shown) = (case.expect, body.chars().take(200).collect::<String>());
    if *status != want {
        return Some(format!("got {status}, want {want} (body {shown:?})"));
    }
    let code = match status {
        400 => "bad_request",
        401 => "unauthorized",
        _ => return None,
    };
    let error: Option<Value> = serde_json::from_str(body).ok();
    let given = error.as_ref().and_then(|e| e["code"].as_str());
    (given != Some(code)).then(|| format!("{status} without {{\"code\": \"{code}\"}}: {body:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_generated_corpus_of_bad_webhooks_is_rejected_and_nothing_is_enqueued() {
    let started = Instant::now();
    // The raw HMAC (for bodies that are not UTF-8) signs as tests::signing does.
    let (ts, body) = ("1700000000", "{\"a\":1}");
    let raw = hmac_v0(format!("v0:{ts}:{body}").as_bytes());
    assert_eq!(raw, slack_signature(SLACK_SIGNING_SECRET, ts, body));
    run_test(async |t| {
        let body_limit = gateway::GatewayConfig::default().slack.max_body_bytes;
        let cases = Arc::new(Corpus::new(body_limit).build());
        assert!(cases.len() >= MIN_CORPUS, "corpus of {}", cases.len());

        let mut per_category: BTreeMap<(&str, &str, u16), usize> = BTreeMap::new();
        for case in cases.iter() {
            let key = (case.path, case.category, case.expect);
            *per_category.entry(key).or_default() += 1;
        }
        let (built, size) = (started.elapsed(), cases.len());
        let seed = format!("seed {SEED:#x}, body limit {body_limit} bytes");
        eprintln!("webhook corpus: {size} requests ({seed}), built in {built:?}");
        for ((path, category, expect), count) in &per_category {
            eprintln!("  {count:>5}  {path:<21} {expect}  {category}");
        }

        let sending = Instant::now();
        let answers = send_all(t, &cases).await;
        let (answered, took) = (answers.len(), sending.elapsed());
        eprintln!("webhook corpus: {answered} answers in {took:?}");

        let mut wrong: BTreeMap<(&str, &str), usize> = BTreeMap::new();
        let mut examples = Vec::new();
        for (case, answer) in cases.iter().zip(&answers) {
            if let Some(why) = mismatch(case, answer) {
                *wrong.entry((case.path, case.category)).or_default() += 1;
                if examples.len() < 8 {
                    examples.push(format!("{why}\n    request: {}", case.describe()));
                }
            }
        }
        let (count, examples) = (wrong.values().sum::<usize>(), examples.join("\n  "));
        assert!(
            wrong.is_empty(),
            "{count} of {size} requests got the wrong answer; per category: {wrong:#?}\nfirst ones:\n  {examples}"
        );

        // Still alive and still serving.
        let health = t.http.get(format!("{}/healthz", t.gateway_url)).send();
        let health = health.await;
        assert_eq!(health.expect("gateway answers /healthz").status(), 200);
        // Anything accepted by mistake would show within moments (presence, turn).
        tokio::time::sleep(Duration::from_millis(300)).await;

        // Nothing recorded, enqueued or posted.
        for table in ["inbox", "outbox", "events", "proposals"] {
            assert_eq!(t.db.count(table).await, 0, "rows in {table}");
        }
        for queue in [QueueName::Worker, QueueName::Delivery] {
            let depth = t.queue.depth(queue).await.expect("queue depth");
            let queued = depth.backlog() + depth.delayed;
            assert_eq!(queued, 0, "{queue:?} queue: {depth:?}");
        }
        assert_eq!(t.slack.posted_count(), 0, "Slack posts");
        assert!(t.slack.cards().is_empty(), "Slack review cards");
        assert!(t.slack.updates().is_empty(), "Slack card updates");
        assert!(t.slack.ephemerals().is_empty(), "Slack ephemerals");
        assert!(t.slack.views().is_empty(), "Slack modals");
        assert_eq!(t.telegram.post_count(), 0, "Telegram posts");
        assert_eq!(t.telegram.chat_actions(), 0, "Telegram typing");
        assert_eq!(t.discord.post_count(), 0, "Discord posts");
        assert!(t.openai.requests().is_empty(), "model calls");
    })
    .await;
    eprintln!("webhook corpus: done in {:?}", started.elapsed());
}

/// [`OVERFLOWING_TIMESTAMPS`] on their own, one request at a time: each is
/// answered 401 and nothing is recorded.
#[tokio::test]
async fn a_signed_timestamp_near_i64_min_is_answered_401() {
    run_test(async |t| {
        let body = fixture("slack/event_callback.message.json");
        let mut unanswered = Vec::new();
        for ts in OVERFLOWING_TIMESTAMPS.split(' ') {
            let signature = slack_signature(SLACK_SIGNING_SECRET, ts, &body);
            let request = t.http.post(format!("{}{EVENTS}", t.gateway_url));
            let request = request.header(SLACK_TIMESTAMP, ts);
            let request = request.header(SLACK_SIGNATURE, signature);
            match request.body(body.clone()).send().await {
                Ok(response) if response.status() == 401 => {}
                other => unanswered.push(format!("{ts}: {other:?}")),
            }
        }
        assert!(unanswered.is_empty(), "not answered 401: {unanswered:#?}");
        assert_eq!(t.db.count("inbox").await, 0);
    })
    .await;
}
