//! How fast replies may be posted into one chat, per each platform's
//! documented limits.

use std::time::Duration;

use crate::ids::Platform;

/// A per-chat sending pace: one message per `period`, with bursts of up to
/// `burst` messages after a quiet spell.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Pace {
    /// Time that replenishes one message.
    pub period: Duration,
    /// Messages that may go out back to back.
    pub burst: u32,
}

/// The pace for posting into `chat` on `platform`.
///
/// - Slack `chat.postMessage`: one message per second per channel, short bursts allowed.
/// - Discord: 5 messages per 5 seconds per channel, counted in a window
///   that opens with the first: one message every 1.05 s never puts a sixth
///   in a window (a burst of 5 at one a second would put 9 there).
/// - Telegram: about one message per second in a chat, and no more than 20
///   per minute in a group (groups have negative chat ids).
pub fn delivery_pace(platform: Platform, chat: &str) -> Pace {
    match platform {
        Platform::Slack => Pace {
            period: Duration::from_secs(1),
            burst: 2,
        },
        Platform::Discord => Pace {
            period: Duration::from_millis(1_050),
            burst: 1,
        },
        Platform::Telegram if chat.starts_with('-') => Pace {
            period: Duration::from_secs(3),
            burst: 1,
        },
        Platform::Telegram => Pace {
            period: Duration::from_secs(1),
            burst: 1,
        },
        // The page is ours: paced only against a runaway loop.
        Platform::Web => Pace {
            period: Duration::from_millis(100),
            burst: 10,
        },
    }
}

/// `per_minute` messages a minute, a full minute's worth at once.
pub fn per_minute(per_minute: u32) -> Pace {
    let per_minute = per_minute.max(1);
    Pace {
        period: Duration::from_secs(60) / per_minute,
        burst: per_minute,
    }
}

/// How often one user is told they are over an inbound limit.
pub const LIMIT_NOTICE_PACE: Pace = Pace {
    period: Duration::from_secs(60),
    burst: 1,
};

/// The answer to a message over an inbound rate limit.
pub const RATE_LIMITED_REPLY: &str = "You are sending messages faster than I can take them in, \
     so I skipped your last one. Please wait a minute and send it again.";

/// How often somebody who is not one of a tenant's people is told so.
pub const NOT_A_MEMBER_NOTICE_PACE: Pace = Pace {
    period: Duration::from_secs(3600),
    burst: 1,
};

/// What somebody who is not one of a tenant's people is told.
pub const NOT_A_MEMBER_REPLY: &str = "Sorry, I only work with the people of the company \
     this chat belongs to. If you are one of them, ask its administrator to add you.";

/// Longest `Retry-After` honoured by waiting inside one delivery attempt;
/// longer ones end the attempt and the job is retried later.
pub const MAX_INLINE_RETRY_AFTER: Duration = Duration::from_secs(30);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_minute_spreads_a_minute_and_bursts_it() {
        assert_eq!(
            per_minute(20),
            Pace {
                period: Duration::from_secs(3),
                burst: 20
            }
        );
        assert_eq!(per_minute(0), per_minute(1));
    }

    #[test]
    fn telegram_groups_are_paced_to_twenty_a_minute() {
        let group = delivery_pace(Platform::Telegram, "-1001234567890");
        assert_eq!(
            group,
            Pace {
                period: Duration::from_secs(3),
                burst: 1
            }
        );
        assert!(60 / group.period.as_secs() <= 20);
        assert_eq!(
            delivery_pace(Platform::Telegram, "111111111").period,
            Duration::from_secs(1)
        );
    }

    /// The most messages a pace lets out within `window` (half open): its
    /// burst at once, then one each period.
    fn most_in(pace: Pace, window: Duration) -> u32 {
        let after_burst = window.as_nanos().div_ceil(pace.period.as_nanos());
        pace.burst - 1 + u32::try_from(after_burst).unwrap()
    }

    #[test]
    fn discord_never_puts_a_sixth_message_in_a_five_second_window() {
        let pace = delivery_pace(Platform::Discord, "1");
        assert!(most_in(pace, Duration::from_secs(5)) <= 5);
        // Not more careful than it must be: 5 go out within 5 s and a bit.
        assert!(most_in(pace, Duration::from_millis(5_300)) >= 5);
        let bursting = Pace {
            period: Duration::from_secs(1),
            burst: 5,
        };
        assert_eq!(most_in(bursting, Duration::from_secs(5)), 9);
    }
}
