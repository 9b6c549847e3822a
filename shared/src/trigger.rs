//! Why an agent runs when no chat message asked it to: an event on the
//! event store or a schedule period. Stored with each agent run, so a run
//! does what its trigger said when it fired, even if the character changed.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::character::PostTo;

/// The reason of one agent run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum RunReason {
    /// An event the agent subscribed to.
    Event {
        /// The event's id.
        event_id: uuid::Uuid,
        /// Its full type (`automate_e.proposal.review_requested.v1`).
        event_type: String,
        /// Its stream (`proposal-<uuid>`).
        stream: String,
        /// Its payload.
        payload: Value,
        /// What the agent is asked to do.
        task: String,
        /// Where the answer goes.
        post_to: PostTo,
    },
    /// A schedule period began.
    Schedule {
        /// The schedule, as written in the character file.
        cron: String,
        /// The fire time of the period.
        fire_at: DateTime<Utc>,
        /// What the agent is asked to do.
        task: String,
    },
}

impl RunReason {
    /// The key that makes a trigger run once per agent.
    pub fn dedupe_key(&self, agent: &str) -> String {
        match self {
            Self::Event { event_id, .. } => format!("{}{event_id}", event_key_prefix(agent)),
            Self::Schedule { cron, fire_at, .. } => {
                format!("schedule:{agent}:{cron}:{}", fire_at.to_rfc3339())
            }
        }
    }

    /// Where the answer goes.
    pub fn post_to(&self) -> PostTo {
        match self {
            Self::Event { post_to, .. } => *post_to,
            Self::Schedule { .. } => PostTo::AgentChannel,
        }
    }
}

/// The dedupe-key prefix of an agent's event runs; the event id follows.
pub fn event_key_prefix(agent: &str) -> String {
    format!("event:{agent}:")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_differ_by_agent_and_period() {
        let at = |s: &str| DateTime::parse_from_rfc3339(s).unwrap().to_utc();
        let schedule = |fire_at| RunReason::Schedule {
            cron: "0 0 7 * * Mon".into(),
            fire_at,
            task: "t".into(),
        };
        let monday = schedule(at("2026-11-23T07:00:00Z"));
        assert_eq!(
            monday.dedupe_key("report-e"),
            "schedule:report-e:0 0 7 * * Mon:2026-11-23T07:00:00+00:00"
        );
        assert_ne!(monday.dedupe_key("report-e"), monday.dedupe_key("cost-e"));
        assert_ne!(
            monday.dedupe_key("report-e"),
            schedule(at("2026-11-30T07:00:00Z")).dedupe_key("report-e")
        );
        let id = uuid::Uuid::nil();
        let event = RunReason::Event {
            event_id: id,
            event_type: "automate_e.proposal.review_requested.v1".into(),
            stream: "proposal-x".into(),
            payload: Value::Null,
            task: "t".into(),
            post_to: PostTo::ReviewThread,
        };
        assert_eq!(event.dedupe_key("review-e"), format!("event:review-e:{id}"));
        assert!(
            event
                .dedupe_key("review-e")
                .starts_with(&event_key_prefix("review-e"))
        );
    }
}
