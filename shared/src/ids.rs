//! Identifier newtypes, so a conversation id can never be passed as a tenant
//! id, and the names of platforms and event types.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

macro_rules! uuid_id {
    ($(#[$doc:meta] $name:ident),+ $(,)?) => {$(
        #[$doc]
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, sqlx::Type)]
        #[sqlx(transparent)]
        #[serde(transparent)]
        pub struct $name(pub Uuid);

        impl $name {
            /// A new, time-ordered (UUIDv7) id.
            pub fn new_v7() -> Self {
                Self(Uuid::now_v7())
            }
        }

        impl From<Uuid> for $name {
            fn from(id: Uuid) -> Self {
                Self(id)
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                self.0.fmt(f)
            }
        }
    )+};
}

uuid_id!(
    /// A tenant: one company with its own books, routes and reviewers.
    TenantId,
    /// A conversation: one (tenant, platform, chat, thread).
    ConversationId,
    /// An accepted inbound message in the durable inbox.
    InboxId,
    /// A reply in the durable outbox.
    OutboxId,
    /// An event in the event log.
    EventId,
    /// A proposed write.
    ProposalId,
    /// One run of an agent for an event or a schedule period.
    AgentRunId,
);

/// What every event type starts with (`automate_e.<context>.<action>.v<N>`).
pub const EVENT_TYPE_PREFIX: &str = "automate_e.";

/// The chat platforms Automate-E talks on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Platform {
    /// Slack, through the Events API and the Web API.
    Slack,
    /// Discord, through the gateway WebSocket and REST.
    Discord,
    /// Telegram, through the Bot API.
    Telegram,
    /// The gateway's own chat page (`web.addr`).
    Web,
}

impl Platform {
    /// The name stored in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Slack => "slack",
            Self::Discord => "discord",
            Self::Telegram => "telegram",
            Self::Web => "web",
        }
    }

    /// Whether a thread is itself a chat with a globally unique id (Discord):
    /// then a message posted in a conversation's thread names the thread as
    /// its chat, and continues that conversation.
    pub fn threads_are_chats(self) -> bool {
        matches!(self, Self::Discord)
    }

    /// Parses the name stored in the database.
    pub fn parse(raw: &str) -> Option<Self> {
        match raw {
            "slack" => Some(Self::Slack),
            "discord" => Some(Self::Discord),
            "telegram" => Some(Self::Telegram),
            "web" => Some(Self::Web),
            _ => None,
        }
    }
}

/// Stored as its name (`slack`, …) in `text` columns.
impl sqlx::Type<sqlx::Postgres> for Platform {
    fn type_info() -> sqlx::postgres::PgTypeInfo {
        <&str as sqlx::Type<sqlx::Postgres>>::type_info()
    }

    fn compatible(ty: &sqlx::postgres::PgTypeInfo) -> bool {
        <&str as sqlx::Type<sqlx::Postgres>>::compatible(ty)
    }
}

impl sqlx::Encode<'_, sqlx::Postgres> for Platform {
    fn encode_by_ref(
        &self,
        buf: &mut sqlx::postgres::PgArgumentBuffer,
    ) -> Result<sqlx::encode::IsNull, sqlx::error::BoxDynError> {
        <&str as sqlx::Encode<sqlx::Postgres>>::encode(self.as_str(), buf)
    }
}

impl sqlx::Decode<'_, sqlx::Postgres> for Platform {
    fn decode(value: sqlx::postgres::PgValueRef<'_>) -> Result<Self, sqlx::error::BoxDynError> {
        let name = <&str as sqlx::Decode<sqlx::Postgres>>::decode(value)?;
        Self::parse(name).ok_or_else(|| format!("unknown platform `{name}`").into())
    }
}

impl std::fmt::Display for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
