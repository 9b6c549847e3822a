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
        }
    }

    #[test]
    fn exact_channel_wins_over_wildcard() {
        let routes = [route("*", "book-e"), route("C1", "review-e")];
        assert_eq!(pick(&routes, "C1").unwrap().character, "review-e");
        assert_eq!(pick(&routes, "C2").unwrap().character, "book-e");
    }

    #[test]
    fn no_route_means_unrouted() {
        let routes = [route("C1", "book-e")];
        assert!(pick(&routes, "C2").is_none());
        assert!(pick(&[], "C2").is_none());
    }
}
