//! `worker admin …`: operators set up companies without SQL. Each command
//! is checked before anything is written, idempotent (running it again
//! changes nothing and says so), and runs as the connecting login, which
//! should hold `automate_e_admin` (row-level security, one tenant per
//! transaction).

use anyhow::{Context, bail};
use shared::access::store::{MemberRow, Store, StoreError, TenantSetting, TenantStore};
use shared::ids::{Platform, TenantId};

/// Usage, printed for a command that is not one.
pub const USAGE: &str = "usage: worker admin
  tenant create <slug> [<name>]
  tenant list
  tenant show <slug>
  tenant set <slug> <setting> <value>     settings: name, brief, review-channel,
      auto-approve-limit (minor units), tokens-per-day (number | unlimited),
      user-per-minute, tenant-per-minute (number | default), accounting-company,
      accounting-credential, accounting-url (https://… | default), file-retention-days
      (review-channel, accounting-company, accounting-credential: `none` clears;
      a review-channel `web:<name>` is on the gateway's chat page)
  route add <slug> <slack|discord|telegram|web> <workspace> <channel | *> [<character>]
  route remove <slug> <platform> <workspace> <channel | *>
  member add <slug> <platform> <user|team|role> <id> [<person>]
  member remove <slug> <platform> <user|team|role> <id>
  reviewer add <slug> <slack user id | web:<page user>> [--escalation]
  reviewer remove <slug> <slack user id | web:<page user>>
  window set <slug> <tool | *> <hours>
  window remove <slug> <tool | *>";

/// Runs one admin command; what it did, for the operator.
pub async fn command(store: &Store, args: &[String]) -> anyhow::Result<String> {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    match args.as_slice() {
        ["tenant", "create", slug, rest @ ..] if rest.len() <= 1 => {
            let slug = check_slug(slug)?;
            let name = rest.first().copied().unwrap_or(slug);
            check_text("name", name, 200)?;
            if let Some(id) = find(store, slug).await? {
                return Ok(format!("tenant {slug} exists ({id})"));
            }
            let id = TenantId::from(uuid::Uuid::now_v7());
            let created = store
                .tenant(id)
                .create_tenant(slug, name)
                .await
                .map_err(|e| explain(e, "tenant create"))?;
            Ok(if created {
                format!("tenant {slug} created ({id})")
            } else {
                format!("tenant {slug} exists")
            })
        }
        ["tenant", "list"] => {
            let mut out = String::from("SLUG  ID\n");
            for (id, slug) in store.tenant_slugs().await? {
                out.push_str(&format!("{slug}  {id}\n"));
            }
            Ok(out.trim_end().to_owned())
        }
        ["tenant", "show", slug] => {
            let tenant = tenant(store, slug).await?;
            let shown = tenant.describe_tenant().await?;
            Ok(serde_json::to_string_pretty(&shown)?)
        }
        ["tenant", "set", slug, name, value] => {
            let setting = setting(name, value)?;
            change(store, slug, "set", async |tx| tx.set_tenant(&setting).await).await
        }
        [
            "route",
            verb @ ("add" | "remove"),
            slug,
            platform,
            workspace,
            channel,
            rest @ ..,
        ] => {
            let platform = check_platform(platform)?;
            check_id("workspace", workspace)?;
            if *channel != "*" {
                check_id("channel", channel)?;
            }
            match (*verb, rest) {
                ("add", []) | ("add", [_]) => {
                    let character = rest.first().copied().unwrap_or("book-e");
                    check_character(character)?;
                    change(store, slug, "route add", async |tx| {
                        tx.add_route(platform, workspace, channel, character).await
                    })
                    .await
                }
                ("remove", []) => {
                    change(store, slug, "route remove", async |tx| {
                        tx.remove_route(platform, workspace, channel).await
                    })
                    .await
                }
                _ => bail!("{USAGE}"),
            }
        }
        [
            "member",
            verb @ ("add" | "remove"),
            slug,
            platform,
            kind,
            value,
            rest @ ..,
        ] => {
            let platform = check_platform(platform)?;
            check_member_kind(platform, kind)?;
            check_id("member id", value)?;
            match (*verb, rest) {
                ("add", []) | ("add", [_]) => {
                    let person = rest.first().copied();
                    if let Some(person) = person {
                        if *kind != "user" {
                            bail!("only a user is a person; a {kind} names many");
                        }
                        check_text("person", person, 200)?;
                    }
                    let member = MemberRow {
                        platform,
                        kind,
                        value,
                        person,
                    };
                    change(store, slug, "member add", async |tx| {
                        tx.add_member(&member).await
                    })
                    .await
                }
                ("remove", []) => {
                    change(store, slug, "member remove", async |tx| {
                        tx.remove_member(platform, kind, value).await
                    })
                    .await
                }
                _ => bail!("{USAGE}"),
            }
        }
        ["reviewer", "add", slug, user, rest @ ..] if rest.len() <= 1 => {
            let (platform, user) = check_reviewer(user)?;
            let escalation = match rest {
                [] => false,
                ["--escalation"] => true,
                _ => bail!("{USAGE}"),
            };
            change(store, slug, "reviewer add", async |tx| {
                tx.add_reviewer(platform, user, escalation).await
            })
            .await
        }
        ["reviewer", "remove", slug, user] => {
            let (platform, user) = check_reviewer(user)?;
            change(store, slug, "reviewer remove", async |tx| {
                tx.remove_reviewer(platform, user).await
            })
            .await
        }
        ["window", "set", slug, tool, hours] => {
            check_tool(tool)?;
            let hours: i32 = hours
                .parse()
                .ok()
                .filter(|h| (1..=2160).contains(h))
                .with_context(|| format!("hours must be 1 to 2160, not `{hours}`"))?;
            change(store, slug, "window set", async |tx| {
                tx.set_review_window(tool, Some(hours)).await
            })
            .await
        }
        ["window", "remove", slug, tool] => {
            check_tool(tool)?;
            change(store, slug, "window remove", async |tx| {
                tx.set_review_window(tool, None).await
            })
            .await
        }
        _ => bail!("{USAGE}"),
    }
}

/// The tenant called `slug`, if any.
async fn find(store: &Store, slug: &str) -> anyhow::Result<Option<TenantId>> {
    Ok(store
        .tenant_slugs()
        .await?
        .into_iter()
        .find_map(|(id, s)| (s == slug).then_some(id)))
}

async fn tenant(store: &Store, slug: &str) -> anyhow::Result<TenantStore> {
    let slug = check_slug(slug)?;
    let id = find(store, slug)
        .await?
        .with_context(|| format!("no tenant `{slug}` (see `worker admin tenant list`)"))?;
    Ok(store.tenant(id))
}

/// Makes one change in a transaction of the tenant; says whether it
/// changed anything.
async fn change(
    store: &Store,
    slug: &str,
    what: &str,
    make: impl AsyncFnOnce(&mut shared::access::store::TenantTx) -> Result<bool, StoreError>,
) -> anyhow::Result<String> {
    let tenant = tenant(store, slug).await?;
    let mut tx = tenant.begin().await?;
    let changed = make(&mut tx).await.map_err(|e| explain(e, what))?;
    tx.commit().await?;
    Ok(if changed {
        format!("{what}: done")
    } else {
        format!("{what}: nothing to change")
    })
}

/// A database refusal, said as what it means.
fn explain(e: StoreError, what: &str) -> anyhow::Error {
    if let StoreError::Database(sqlx::Error::Database(db)) = &e {
        let reason = match (db.code().as_deref(), db.constraint()) {
            (Some("23505"), Some("tenant_routes_pkey")) => {
                "that chat is routed to another tenant already".to_owned()
            }
            (Some("23505"), Some("tenants_review_channel")) => {
                "that review channel is another tenant's".to_owned()
            }
            (Some("23505"), Some("tenants_slug_key")) => "that slug is taken".to_owned(),
            (Some("23514"), Some(check)) => format!("the value breaks the rule `{check}`"),
            (Some("42501"), _) => {
                "permission denied: connect as a login granted automate_e_admin".to_owned()
            }
            _ => return anyhow::Error::new(e).context(format!("{what} failed")),
        };
        return anyhow::anyhow!("{what}: {reason}");
    }
    anyhow::Error::new(e).context(format!("{what} failed"))
}

fn setting(name: &str, value: &str) -> anyhow::Result<TenantSetting> {
    use TenantSetting as S;
    let cleared = |v: &str| (v != "none").then(|| v.to_owned());
    let number = |v: &str| -> anyhow::Result<i64> {
        v.parse::<i64>()
            .ok()
            .filter(|n| *n >= 0)
            .with_context(|| format!("{name} must be a whole number of 0 or more, not `{v}`"))
    };
    let per_minute = |v: &str| -> anyhow::Result<Option<i32>> {
        if v == "default" {
            return Ok(None);
        }
        v.parse::<i32>()
            .ok()
            .filter(|n| *n >= 1)
            .map(Some)
            .with_context(|| format!("{name} must be 1 or more, or `default`, not `{v}`"))
    };
    Ok(match name {
        "name" => S::Name(check_text("name", value, 200)?.to_owned()),
        "brief" => S::Brief(check_text("brief", value, 4000)?.to_owned()),
        "review-channel" => {
            if value != "none" {
                check_id("review channel", value)?;
            }
            S::ReviewChannel(cleared(value))
        }
        "auto-approve-limit" => S::AutoApproveLimitMinor(number(value)?),
        "tokens-per-day" if value == "unlimited" => S::TokensPerDay(None),
        "tokens-per-day" => S::TokensPerDay(Some(number(value)?)),
        "user-per-minute" => S::UserPerMinute(per_minute(value)?),
        "tenant-per-minute" => S::TenantPerMinute(per_minute(value)?),
        "accounting-company" => S::AccountingCompany(cleared(value)),
        "accounting-credential" => S::AccountingCredential(cleared(value)),
        "accounting-url" if value == "default" => S::AccountingUrl(None),
        "accounting-url" => {
            if !value.starts_with("https://") || value.chars().any(char::is_whitespace) {
                bail!("accounting-url must be an https:// URL, or `default`");
            }
            S::AccountingUrl(Some(value.to_owned()))
        }
        "file-retention-days" => {
            let days = number(value)?;
            S::FileRetentionDays(
                i32::try_from(days)
                    .ok()
                    .filter(|d| *d >= 1)
                    .context("file-retention-days must be 1 or more")?,
            )
        }
        other => bail!("no setting `{other}`\n{USAGE}"),
    })
}

fn check_slug(slug: &str) -> anyhow::Result<&str> {
    let ok = (1..=63).contains(&slug.len())
        && slug.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && slug
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if !ok {
        bail!("a slug is 1 to 63 of a-z, 0-9 and `-`, starting with a letter or digit: `{slug}`");
    }
    Ok(slug)
}

fn check_platform(platform: &str) -> anyhow::Result<&str> {
    match platform {
        "slack" | "discord" | "telegram" | "web" => Ok(platform),
        other => bail!("a platform is slack, discord, telegram or web, not `{other}`"),
    }
}

/// A reviewer: a Slack user id, or `web:<user>` on the chat page.
fn check_reviewer(reviewer: &str) -> anyhow::Result<(Platform, &str)> {
    match reviewer.strip_prefix("web:") {
        Some(user) => Ok((Platform::Web, check_id("chat page user", user)?)),
        None => Ok((Platform::Slack, check_id("Slack user id", reviewer)?)),
    }
}

fn check_member_kind(platform: &str, kind: &str) -> anyhow::Result<()> {
    match (platform, kind) {
        (_, "user") | ("slack", "team") | ("discord", "role") => Ok(()),
        _ => bail!("a member is a user, a Slack team or a Discord role: not a {platform} `{kind}`"),
    }
}

/// A platform id: 1 to 64 visible ASCII characters.
fn check_id<'a>(what: &str, id: &'a str) -> anyhow::Result<&'a str> {
    if id.is_empty() || id.len() > 64 || !id.chars().all(|c| c.is_ascii_graphic()) || id == "*" {
        bail!("a {what} is 1 to 64 visible ASCII characters: `{id}`");
    }
    Ok(id)
}

fn check_text<'a>(what: &str, text: &'a str, max: usize) -> anyhow::Result<&'a str> {
    if text.trim().is_empty() || text.chars().count() > max || text.contains('\0') {
        bail!("a {what} is 1 to {max} characters");
    }
    Ok(text)
}

fn check_character(name: &str) -> anyhow::Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if !ok {
        bail!("a character is a directory name of characters/: a-z, 0-9 and `-`, not `{name}`");
    }
    Ok(())
}

fn check_tool(tool: &str) -> anyhow::Result<()> {
    let ok = tool == "*"
        || (tool.starts_with(|c: char| c.is_ascii_lowercase())
            && tool.len() <= 64
            && tool
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'));
    if !ok {
        bail!("a tool is a tool's name (a-z, 0-9, `_`) or `*`, not `{tool}`");
    }
    Ok(())
}
