//! How long a proposal waits for a reviewer, and what is due when: a
//! reminder in the card's thread at half its window, an escalation at three
//! quarters, expiry at the end.

use chrono::{DateTime, Duration, Utc};

/// The window where a tenant sets none for the tool.
pub const DEFAULT_REVIEW_HOURS: i32 = 72;

/// A waiting proposal's window and what was done in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReviewClock {
    /// When it started waiting.
    pub requested_at: DateTime<Utc>,
    /// When it expires.
    pub deadline: DateTime<Utc>,
    /// Whether the reviewers were reminded.
    pub reminded: bool,
    /// Whether it was escalated.
    pub escalated: bool,
}

/// What a waiting proposal needs now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReviewDue {
    /// Remind the reviewers in the card's thread.
    Remind,
    /// Ask the escalation reviewers (and remind, if that was missed).
    Escalate,
    /// Close it: the card updated, the owner told.
    Expire,
}

impl ReviewDue {
    /// Short name, for job keys and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Remind => "remind",
            Self::Escalate => "escalate",
            Self::Expire => "expire",
        }
    }
}

impl ReviewClock {
    /// The clock of a proposal's stored columns; `None` before it waits.
    pub fn of(
        requested_at: Option<DateTime<Utc>>,
        deadline: Option<DateTime<Utc>>,
        reminded_at: Option<DateTime<Utc>>,
        escalated_at: Option<DateTime<Utc>>,
    ) -> Option<Self> {
        Some(Self {
            requested_at: requested_at?,
            deadline: deadline?,
            reminded: reminded_at.is_some(),
            escalated: escalated_at.is_some(),
        })
    }

    /// What is due at `now`, the latest stage first.
    pub fn due(&self, now: DateTime<Utc>) -> Option<ReviewDue> {
        let window = self.deadline - self.requested_at;
        let at = |fraction: i32| self.requested_at + window * fraction / 4;
        if now >= self.deadline {
            Some(ReviewDue::Expire)
        } else if !self.escalated && now >= at(3) {
            Some(ReviewDue::Escalate)
        } else if !self.reminded && !self.escalated && now >= at(2) {
            Some(ReviewDue::Remind)
        } else {
            None
        }
    }
}

/// The window of a proposal requested at `now` that waits `hours`.
pub fn window(now: DateTime<Utc>, hours: i32) -> (DateTime<Utc>, DateTime<Utc>) {
    (now, now + Duration::hours(i64::from(hours)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_waiting_proposal_is_reminded_then_escalated_then_expired() {
        let start = DateTime::<Utc>::from_timestamp(1_800_000_000, 0).unwrap();
        let (requested_at, deadline) = window(start, 8);
        let clock = ReviewClock {
            requested_at,
            deadline,
            reminded: false,
            escalated: false,
        };
        let after = |hours: i64| start + Duration::hours(hours);
        assert_eq!(clock.due(after(3)), None);
        assert_eq!(clock.due(after(4)), Some(ReviewDue::Remind));
        assert_eq!(
            clock.due(after(6)),
            Some(ReviewDue::Escalate),
            "a missed reminder too"
        );
        assert_eq!(clock.due(after(8)), Some(ReviewDue::Expire));
        let reminded = ReviewClock {
            reminded: true,
            ..clock
        };
        assert_eq!(reminded.due(after(5)), None);
        assert_eq!(reminded.due(after(7)), Some(ReviewDue::Escalate));
        let escalated = ReviewClock {
            escalated: true,
            ..reminded
        };
        assert_eq!(escalated.due(after(7)), None);
        assert_eq!(escalated.due(after(9)), Some(ReviewDue::Expire));
        assert_eq!(ReviewClock::of(None, Some(deadline), None, None), None);
    }
}
