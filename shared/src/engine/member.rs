//! Whether the author of a message is one of the company's people, who alone
//! may talk to its agents.

use std::collections::HashSet;

use crate::ids::Platform;

use super::route::ANY_CHANNEL;

/// The workspace of Discord direct messages (no guild).
pub const DISCORD_DM_WORKSPACE: &str = "@dm";

/// The workspace of every Telegram chat (one bot).
pub const TELEGRAM_WORKSPACE: &str = "bot";

/// The workspace of every chat on the gateway's chat page.
pub const PAGE_WORKSPACE: &str = "page";

/// One tenant's members on one platform, as listed by its operators.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Members {
    /// Platform user ids.
    pub users: HashSet<String>,
    /// Slack teams whose every user is a member.
    pub teams: HashSet<String>,
    /// Discord guild roles whose every holder is a member.
    pub roles: HashSet<String>,
}

impl Members {
    /// Whether the tenant lists nobody on this platform.
    pub fn is_empty(&self) -> bool {
        self.users.is_empty() && self.teams.is_empty() && self.roles.is_empty()
    }
}

/// Who wrote a message, as far as membership is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Author<'a> {
    pub platform: Platform,
    /// The routed workspace (Slack team, Discord guild or [`DISCORD_DM_WORKSPACE`],
    /// [`TELEGRAM_WORKSPACE`]).
    pub workspace: &'a str,
    /// The platform's user id.
    pub user: &'a str,
    /// The author's own Slack team (differs from the workspace for a Slack
    /// Connect guest); `None` when the platform did not say.
    pub team: Option<&'a str>,
    /// The author's roles in the Discord guild.
    pub roles: &'a [String],
}

/// What membership decides about a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// One of the company's people.
    Member,
    /// Somebody else: not recorded, told once.
    NotAMember,
    /// A route open to anybody who finds the bot (every Telegram chat, every
    /// Discord DM) while the tenant lists no members on that platform.
    RouteNeedsMembers,
}

/// Decides whether `author`, writing where `route_channel` routes, is one of
/// the tenant's people. With members listed on the platform only they are;
/// with none, the routed place is the boundary: a channel, a group or a guild,
/// and for Slack the workspace's own team (not a Slack Connect guest).
pub fn admit(members: &Members, route_channel: &str, author: &Author<'_>) -> Admission {
    if !members.is_empty() {
        let listed = members.users.contains(author.user)
            || author.team.is_some_and(|t| members.teams.contains(t))
            || author.roles.iter().any(|r| members.roles.contains(r));
        return if listed {
            Admission::Member
        } else {
            Admission::NotAMember
        };
    }
    let open_to_anyone = route_channel == ANY_CHANNEL
        && match author.platform {
            Platform::Telegram | Platform::Web => true,
            Platform::Discord => author.workspace == DISCORD_DM_WORKSPACE,
            Platform::Slack => false,
        };
    if open_to_anyone {
        return Admission::RouteNeedsMembers;
    }
    if author.platform == Platform::Slack && author.team != Some(author.workspace) {
        return Admission::NotAMember;
    }
    Admission::Member
}

#[cfg(test)]
mod tests {
    use super::*;

    fn author<'a>(platform: Platform, workspace: &'a str, user: &'a str) -> Author<'a> {
        Author {
            platform,
            workspace,
            user,
            team: None,
            roles: &[],
        }
    }

    fn listing(users: &[&str], teams: &[&str], roles: &[&str]) -> Members {
        let set = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect();
        Members {
            users: set(users),
            teams: set(teams),
            roles: set(roles),
        }
    }

    #[test]
    fn routes_anybody_can_reach_need_a_member_list() {
        let none = Members::default();
        let telegram = author(Platform::Telegram, TELEGRAM_WORKSPACE, "42");
        assert_eq!(admit(&none, "*", &telegram), Admission::RouteNeedsMembers);
        assert_eq!(admit(&none, "-1001", &telegram), Admission::Member);
        let dm = author(Platform::Discord, DISCORD_DM_WORKSPACE, "7");
        assert_eq!(admit(&none, "*", &dm), Admission::RouteNeedsMembers);
        let guild = author(Platform::Discord, "G1", "7");
        assert_eq!(admit(&none, "*", &guild), Admission::Member);
        let listed = listing(&["42"], &[], &[]);
        assert_eq!(admit(&listed, "*", &telegram), Admission::Member);
        let stranger = author(Platform::Telegram, TELEGRAM_WORKSPACE, "43");
        assert_eq!(admit(&listed, "*", &stranger), Admission::NotAMember);
    }

    #[test]
    fn a_slack_connect_guest_is_not_the_workspaces_team() {
        let none = Members::default();
        let own = Author {
            team: Some("T1"),
            ..author(Platform::Slack, "T1", "U1")
        };
        assert_eq!(admit(&none, "*", &own), Admission::Member);
        let guest = Author {
            team: Some("T9"),
            ..own
        };
        assert_eq!(admit(&none, "*", &guest), Admission::NotAMember);
        let unknown = Author { team: None, ..own };
        assert_eq!(admit(&none, "C1", &unknown), Admission::NotAMember);
        let partner = listing(&[], &["T1", "T9"], &[]);
        assert_eq!(admit(&partner, "*", &guest), Admission::Member);
    }

    #[test]
    fn a_listed_role_or_user_is_a_member_and_nobody_else() {
        let roles = ["R-staff".to_owned()];
        let staff = Author {
            roles: &roles,
            ..author(Platform::Discord, "G1", "7")
        };
        let listed = listing(&["8"], &[], &["R-staff"]);
        assert_eq!(admit(&listed, "*", &staff), Admission::Member);
        assert_eq!(
            admit(&listed, "*", &author(Platform::Discord, "G1", "8")),
            Admission::Member
        );
        assert_eq!(
            admit(&listed, "C1", &author(Platform::Discord, "G1", "9")),
            Admission::NotAMember
        );
    }
}
