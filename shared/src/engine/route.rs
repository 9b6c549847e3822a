//! Chooses which tenant and agent a platform chat belongs to.

use crate::ids::TenantId;

/// A route from a platform workspace/channel to a tenant's agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// The channel this route covers, or [`ANY_CHANNEL`] for the whole workspace.
    pub channel: String,
    /// The tenant that owns the chat.
    pub tenant_id: TenantId,
    /// The character (agent) that answers in the chat.
    pub character: String,
    /// The tenant's own inbound limits.
    pub limits: TenantLimits,
}

/// A tenant's own inbound message limits; `None` uses the gateway's default.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TenantLimits {
    /// Messages per user and minute.
    pub user_per_minute: Option<u32>,
    /// Messages per tenant and minute.
    pub tenant_per_minute: Option<u32>,
}

impl TenantLimits {
    /// Limits as stored (positive integers or NULL).
    pub fn from_stored(user_per_minute: Option<i32>, tenant_per_minute: Option<i32>) -> Self {
        let positive = |v: Option<i32>| v.and_then(|v| u32::try_from(v).ok()).filter(|v| *v > 0);
        Self {
            user_per_minute: positive(user_per_minute),
            tenant_per_minute: positive(tenant_per_minute),
        }
    }
}

/// The channel value of a route that covers every channel of a workspace.
pub const ANY_CHANNEL: &str = "*";

/// Picks the route for `channel` among the routes of its workspace: an exact
/// channel route wins over the workspace-wide one; `None` means unrouted.
pub fn pick<'a>(routes: &'a [Route], channel: &str) -> Option<&'a Route> {
    routes
        .iter()
        .find(|r| r.channel == channel)
        .or_else(|| routes.iter().find(|r| r.channel == ANY_CHANNEL))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(channel: &str, character: &str) -> Route {
        Route {
            channel: channel.to_owned(),
            tenant_id: TenantId::from(uuid::Uuid::nil()),
            character: character.to_owned(),
            limits: TenantLimits::default(),
        }
    }

    #[test]
    fn exact_channel_wins_over_wildcard() {
        let routes = [route("*", "book-e"), route("C1", "review-e")];
        assert_eq!(pick(&routes, "C1").unwrap().character, "review-e");
        assert_eq!(pick(&routes, "C2").unwrap().character, "book-e");
    }

    #[test]
    fn stored_limits_keep_only_positive_values() {
        let limits = TenantLimits::from_stored(Some(5), Some(0));
        assert_eq!(limits.user_per_minute, Some(5));
        assert_eq!(limits.tenant_per_minute, None);
        assert_eq!(
            TenantLimits::from_stored(Some(-1), None),
            TenantLimits::default()
        );
    }

    #[test]
    fn no_route_means_unrouted() {
        let routes = [route("C1", "book-e")];
        assert!(pick(&routes, "C2").is_none());
        assert!(pick(&[], "C2").is_none());
    }
}
