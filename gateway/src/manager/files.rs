//! FileManager: fetches the files of an inbound message with its platform's
//! own credential (Slack `url_private` with the bot token, Telegram
//! `getFile`, Discord's CDN), only from the platform's file host and within
//! the size and count limits; keeps each file whose bytes are a PNG, JPEG,
//! GIF or PDF in Postgres under the tenant's row-level security; tells the
//! owner which files were not read and why; then queues the message's turn.

use std::time::Duration;

use sha2::{Digest, Sha256};
use shared::access::download::{self, DownloadError};
use shared::access::queue::JobQueue;
use shared::access::slack::SlackClient;
use shared::access::store::{InboxModel, Store, TenantStore};
use shared::access::telegram::TelegramClient;
use shared::engine::files::{READ_KINDS, kept_name, notice_unread, sniff};
use shared::event::Attachment;
use shared::ids::{InboxId, Platform, TenantId};
use shared::job::{Job, JobFailure, WorkerJob};
use shared::request::FileRef;

use super::page::UPLOAD_PREFIX;
use crate::config::FilesConfig;

/// Where files are fetched from.
#[derive(Debug, Clone)]
pub struct FileSources {
    /// Slack, with the bot token, when configured.
    pub slack: Option<SlackClient>,
    /// Telegram, when configured.
    pub telegram: Option<TelegramClient>,
    /// For Discord's CDN and Telegram's file URLs.
    pub http: reqwest::Client,
    /// Whether the chat page is on (its uploads wait in Redis).
    pub page: bool,
}

/// Fetches and keeps inbound files.
#[derive(Debug, Clone)]
pub struct FileManager {
    store: Store,
    queue: JobQueue,
    sources: FileSources,
    cfg: FilesConfig,
}

impl FileManager {
    /// A manager over the store, the queue and the platforms' file hosts.
    pub fn new(store: Store, queue: JobQueue, sources: FileSources, cfg: FilesConfig) -> Self {
        Self {
            store,
            queue,
            sources,
            cfg,
        }
    }

    /// Fetches the message's files not fetched yet, then queues its turn.
    /// A file the platform cannot serve now fails the job (retried, what
    /// was kept stays kept); one that will never be read is refused.
    pub async fn fetch(
        &self,
        tenant: TenantId,
        inbox_id: InboxId,
        traceparent: &str,
    ) -> Result<(), JobFailure> {
        let store = self.store.tenant(tenant);
        let msg = store.inbox_message(inbox_id).await?;
        if msg.processed_at.is_some() {
            return Ok(());
        }
        let mut files = msg.attachments.0.clone();
        let mut unavailable = None;
        for (i, file) in files.iter_mut().enumerate() {
            if !file.is_pending() {
                continue;
            }
            if i >= self.cfg.max_per_message {
                file.refused = Some(format!(
                    "only the first {} files of a message are read",
                    self.cfg.max_per_message
                ));
                continue;
            }
            match self.keep(&store, msg.platform, file).await {
                Ok(kept) => file.stored = Some(kept),
                Err(e) if e.is_retryable() => {
                    unavailable = Some(e);
                    break;
                }
                Err(e) => file.refused = Some(e.to_string()),
            }
        }
        if let Some(e) = unavailable {
            // What was kept stays kept; the rest is fetched on the retry.
            store.set_attachments(inbox_id, &files).await?;
            return Err(JobFailure::retryable(e, "Cannot fetch a message's file"));
        }
        self.go_on(&store, &msg, files, traceparent).await
    }

    /// After the last attempt: the files still not fetched are refused, and
    /// the turn goes on without them.
    pub async fn give_up(
        &self,
        tenant: TenantId,
        inbox_id: InboxId,
        traceparent: &str,
    ) -> Result<(), JobFailure> {
        let store = self.store.tenant(tenant);
        let msg = store.inbox_message(inbox_id).await?;
        if msg.processed_at.is_some() {
            return Ok(());
        }
        let mut files = msg.attachments.0.clone();
        for file in files.iter_mut().filter(|f| f.is_pending()) {
            file.refused = Some("the platform could not serve it".to_owned());
        }
        self.go_on(&store, &msg, files, traceparent).await
    }

    /// Records what became of the files, tells the owner which were not
    /// read, and queues the turn.
    async fn go_on(
        &self,
        store: &TenantStore,
        msg: &InboxModel,
        files: Vec<Attachment>,
        traceparent: &str,
    ) -> Result<(), JobFailure> {
        if !store.set_attachments(msg.id, &files).await? {
            return Ok(());
        }
        let unread: Vec<(&str, &str)> = files
            .iter()
            .filter_map(|f| Some((f.filename.as_str(), f.refused.as_deref()?)))
            .collect();
        if !unread.is_empty() {
            let notice = store
                .notify(
                    msg.conversation_id,
                    &format!("files-unread:{}", msg.id),
                    &notice_unread(&unread),
                )
                .await?;
            if let Some(outbox_id) = notice {
                self.queue
                    .deliver_outbox(store.tenant_id(), outbox_id, traceparent)
                    .await?;
            }
        }
        self.queue
            .enqueue(Job::new(
                store.tenant_id(),
                traceparent,
                WorkerJob::TurnV1 { inbox_id: msg.id },
            ))
            .await
            .map_err(|e| JobFailure::retryable(e, "Cannot enqueue the turn"))
    }

    /// Fetches one file and keeps it, when its bytes are a kind that is
    /// read.
    async fn keep(
        &self,
        store: &TenantStore,
        platform: Platform,
        file: &Attachment,
    ) -> Result<FileRef, Unread> {
        let max = self.cfg.max_bytes;
        if file.size_bytes.is_some_and(|size| size > max) {
            return Err(Unread::Download(DownloadError::TooLarge {
                limit_bytes: max,
            }));
        }
        let bytes = self
            .download(platform, &file.url)
            .await
            .map_err(Unread::Download)?;
        let kind = sniff(&bytes).ok_or(Unread::Kind)?;
        let kept = FileRef {
            sha256: hex::encode(Sha256::digest(&bytes)),
            filename: kept_name(&file.filename, kind),
            content_type: kind.content_type.to_owned(),
            size_bytes: bytes.len() as u64,
        };
        store
            .store_file(&kept, &bytes)
            .await
            .map_err(|e| Unread::Download(DownloadError::Unavailable(e.to_string())))?;
        Ok(kept)
    }

    async fn download(&self, platform: Platform, url: &str) -> Result<Vec<u8>, DownloadError> {
        let (max, timeout) = (
            self.cfg.max_bytes,
            Duration::from_secs(self.cfg.timeout_secs),
        );
        let sources = &self.sources;
        match platform {
            Platform::Slack => {
                let slack = sources.slack.as_ref().ok_or(DownloadError::NotAllowed)?;
                slack.download(url, max, timeout).await
            }
            Platform::Telegram => {
                let telegram = sources.telegram.as_ref().ok_or(DownloadError::NotAllowed)?;
                let file_id = url
                    .strip_prefix("telegram-file:")
                    .ok_or(DownloadError::NotAllowed)?;
                telegram
                    .download(&sources.http, file_id, max, timeout)
                    .await
            }
            Platform::Discord => {
                if !self
                    .cfg
                    .discord_base_urls
                    .iter()
                    .any(|base| download::is_under(url, base))
                {
                    return Err(DownloadError::NotAllowed);
                }
                download::fetch(&sources.http, url, None, max, timeout).await
            }
            Platform::Web => {
                let id = url
                    .strip_prefix(UPLOAD_PREFIX)
                    .filter(|_| sources.page)
                    .ok_or(DownloadError::NotAllowed)?;
                let bytes = self
                    .queue
                    .unstash(id)
                    .await
                    .map_err(|e| DownloadError::Unavailable(e.to_string()))?
                    .ok_or(DownloadError::Refused(410))?;
                if bytes.len() as u64 > max {
                    return Err(DownloadError::TooLarge { limit_bytes: max });
                }
                Ok(bytes)
            }
        }
    }
}

/// Why a file was not kept.
#[derive(Debug, thiserror::Error)]
enum Unread {
    #[error("{0}")]
    Download(DownloadError),
    #[error("it is not a {READ_KINDS} file")]
    Kind,
}

impl Unread {
    fn is_retryable(&self) -> bool {
        matches!(self, Self::Download(e) if e.is_retryable())
    }
}
