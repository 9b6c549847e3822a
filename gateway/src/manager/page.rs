//! ChatPage: the gateway's own chat page (`web`) as a channel like the
//! others. What a page user writes goes through the same ingest (route,
//! members, limits, inbox, turn job); replies reach the page through the
//! outbox and delivery; review cards and decisions go through the review
//! desk. The page reads what it shows from Postgres, woken by the bell.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use chrono::Utc;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use shared::access::queue::JobQueue;
use shared::access::store::{PageLine, Store, TenantStore};
use shared::engine::member::PAGE_WORKSPACE;
use shared::engine::review::{PAGE_REVIEW_PREFIX, review_platform};
use shared::engine::route;
use shared::event::Attachment;
use shared::ids::Platform;
use shared::job::JobFailure;
use shared::proposal::DecisionRefusal;

use super::ingest::{InboundMessage, IngestManager, IngestOutcome};
use super::review_desk::ReviewDesk;
use crate::config::FilesConfig;

/// Rings whenever something the page shows changed here (a reply
/// delivered, a card shown or decided); pages also look every few seconds,
/// for what another gateway did.
#[derive(Debug, Clone)]
pub struct PageBell(Arc<tokio::sync::watch::Sender<u64>>);

impl Default for PageBell {
    fn default() -> Self {
        Self(Arc::new(tokio::sync::watch::channel(0).0))
    }
}

impl PageBell {
    /// Tells every open page to look again.
    pub fn ring(&self) {
        self.0.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Waits for the next ring.
    pub fn listen(&self) -> tokio::sync::watch::Receiver<u64> {
        self.0.subscribe()
    }
}

/// The prefix of an uploaded file's address: its bytes wait in Redis under
/// the id that follows, until the message's file fetch keeps them.
pub const UPLOAD_PREFIX: &str = "page-upload:";

/// How long an upload waits for its file fetch.
const UPLOAD_TTL: Duration = Duration::from_secs(3600);

/// Lines of a chat the page shows.
const PAGE_LINES: i64 = 200;

/// A file sent from the page.
#[derive(Debug, Deserialize)]
pub struct PageFile {
    pub name: String,
    /// Base64 of its bytes.
    pub data: String,
}

/// A message sent from the page.
#[derive(Debug, Deserialize)]
pub struct PageMessage {
    /// The page user writing.
    pub user: String,
    /// An id the page gives the message: a retried send is not recorded twice.
    pub id: uuid::Uuid,
    pub text: String,
    #[serde(default)]
    pub files: Vec<PageFile>,
}

/// Why a page request was refused.
#[derive(Debug, thiserror::Error)]
pub enum PageError {
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Failed(#[from] anyhow::Error),
}

/// What the page shows one owner and one reviewer.
#[derive(Debug, Serialize)]
pub struct PageView {
    pub scripted_model: bool,
    /// The owner's chat, oldest first.
    pub chat: Vec<PageLine>,
    /// Why there is no chat, when there is none.
    pub chat_note: Option<String>,
    /// The review cards, newest first.
    pub cards: Vec<Value>,
    /// The notes in the cards' threads (reminders), oldest first.
    pub card_notes: Vec<PageLine>,
    /// Why there are no cards, when there are none.
    pub review_note: Option<String>,
}

/// The chat page's use cases.
#[derive(Debug, Clone)]
pub struct ChatPage {
    store: Store,
    ingest: IngestManager,
    reviews: ReviewDesk,
    queue: JobQueue,
    bell: PageBell,
    files: FilesConfig,
    scripted_model: bool,
}

/// A page user id: 1 to 64 of letters, digits, `.`, `_` and `-`.
pub fn check_user(user: &str) -> Result<&str, PageError> {
    let ok = (1..=64).contains(&user.len())
        && user
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if ok {
        Ok(user)
    } else {
        Err(PageError::Invalid(
            "a page user is 1 to 64 of letters, digits, `.`, `_` and `-`".to_owned(),
        ))
    }
}

impl ChatPage {
    /// The page over the gateway's own managers.
    pub fn new(
        store: Store,
        ingest: IngestManager,
        reviews: ReviewDesk,
        queue: JobQueue,
        bell: PageBell,
        files: FilesConfig,
        scripted_model: bool,
    ) -> Self {
        Self {
            store,
            ingest,
            reviews,
            queue,
            bell,
            files,
            scripted_model,
        }
    }

    /// Waits for the next change here.
    pub fn listen(&self) -> tokio::sync::watch::Receiver<u64> {
        self.bell.listen()
    }

    /// Largest request the page may send: the files a message may carry,
    /// in base64, and its text.
    pub fn max_body_bytes(&self) -> usize {
        let files = self
            .files
            .max_bytes
            .saturating_mul(self.files.max_per_message as u64);
        usize::try_from(files / 3 * 4).unwrap_or(usize::MAX) + 256 * 1024
    }

    /// Records a message from the page like any platform's: its files wait
    /// in Redis for the file fetch, which reads and keeps them as it does
    /// Slack's or Telegram's.
    pub async fn send(&self, msg: PageMessage) -> Result<IngestOutcome, PageError> {
        let user = check_user(&msg.user)?;
        if msg.files.len() > self.files.max_per_message {
            return Err(PageError::Invalid(format!(
                "at most {} files a message",
                self.files.max_per_message
            )));
        }
        let mut attachments = Vec::new();
        for file in &msg.files {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(&file.data)
                .map_err(|_| PageError::Invalid(format!("`{}` is not base64", file.name)))?;
            if bytes.len() as u64 > self.files.max_bytes {
                return Err(PageError::Invalid(format!(
                    "`{}` is larger than {} bytes",
                    file.name, self.files.max_bytes
                )));
            }
            let id = self
                .queue
                .stash(&bytes, UPLOAD_TTL)
                .await
                .map_err(|e| PageError::Failed(e.into()))?;
            attachments.push(Attachment::announced(
                file.name.chars().take(255).collect(),
                format!("{UPLOAD_PREFIX}{id}"),
                None,
                Some(bytes.len() as u64),
            ));
        }
        let inbound = InboundMessage {
            platform: Platform::Web,
            workspace: PAGE_WORKSPACE.to_owned(),
            chat: user.to_owned(),
            thread: String::new(),
            message_id: msg.id.to_string(),
            delivery_id: None,
            author_id: user.to_owned(),
            author_team: None,
            author_roles: Vec::new(),
            text: msg.text,
            attachments,
            received_at: Utc::now(),
        };
        let outcome = self.ingest.accept(Platform::Web, Some(inbound)).await?;
        self.bell.ring();
        Ok(outcome)
    }

    /// A page user's decision on a card.
    pub async fn decide(
        &self,
        reviewer: &str,
        value: &str,
        approved: bool,
        reason: Option<&str>,
    ) -> Result<Option<DecisionRefusal>, PageError> {
        let reviewer = check_user(reviewer)?;
        if !approved && reason.is_none_or(|r| r.trim().is_empty()) {
            return Err(PageError::Invalid("a rejection needs a reason".to_owned()));
        }
        match self
            .reviews
            .decide_on_page(reviewer, value, approved, reason)
            .await
        {
            Ok(refused) => Ok(refused),
            Err(JobFailure::Permanent(e)) => Err(PageError::Invalid(e.to_string())),
            Err(e) => Err(PageError::Failed(e.into_error())),
        }
    }

    /// The company whose agent answers `owner` on the page.
    async fn company(&self, owner: &str) -> anyhow::Result<Option<TenantStore>> {
        let routes = self
            .ingest
            .routes()
            .routes(Platform::Web, PAGE_WORKSPACE, owner)
            .await?;
        Ok(route::pick(&routes, owner).map(|r| self.store.tenant(r.tenant_id)))
    }

    /// What `owner`'s chat and `reviewer`'s cards look like now. Cards are
    /// shown only to a reviewer of the owner's company.
    pub async fn view(&self, owner: &str, reviewer: &str) -> Result<PageView, PageError> {
        let (owner, reviewer) = (check_user(owner)?, check_user(reviewer)?);
        let mut view = PageView {
            scripted_model: self.scripted_model,
            chat: Vec::new(),
            chat_note: None,
            cards: Vec::new(),
            card_notes: Vec::new(),
            review_note: None,
        };
        let Some(store) = self.company(owner).await? else {
            view.chat_note = Some(format!(
                "No company routes the page's chats (worker admin route add <company> web {PAGE_WORKSPACE} '*')."
            ));
            return Ok(view);
        };
        view.chat = store
            .page_lines(owner, PAGE_LINES)
            .await
            .map_err(anyhow::Error::from)?;
        let policy = store.tenant_policy().await.map_err(anyhow::Error::from)?;
        let channel = policy
            .review_channel
            .filter(|c| review_platform(c) == Platform::Web);
        match channel {
            None => {
                view.review_note = Some(format!(
                    "The company reviews elsewhere (its review channel is not {PAGE_REVIEW_PREFIX}…)."
                ));
            }
            Some(_) if !policy.reviewers.contains(&format!("web:{reviewer}")) => {
                view.review_note = Some(format!("{reviewer} is not a reviewer of this company."));
            }
            Some(channel) => {
                view.cards = self
                    .reviews
                    .page_cards(&store, &channel)
                    .await
                    .map_err(|e| PageError::Failed(e.into_error()))?;
                view.card_notes = store
                    .page_lines(&channel, PAGE_LINES)
                    .await
                    .map_err(anyhow::Error::from)?;
            }
        }
        Ok(view)
    }
}
