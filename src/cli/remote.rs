//! Going through a running `hoist serve`: finding it, reading from it with the config's
//! tokens, and asking it for a rollout that the CLI then follows to its end.

use std::path::Path;

use crate::cli::client::{Client, ClientError};
use crate::cli::{FAILED, USAGE, ended};
use crate::config::{Config, Secrets};
use crate::image::short_hex;
use crate::report::text::Ended;
use crate::rollout::Target;

/// The daemon to go through: `--url` (which must answer), else one answering at
/// `server.listen`, else none (the CLI works on its own).
async fn daemon(config: &Config, url: Option<&str>) -> anyhow::Result<Option<Client>> {
    match url {
        Some(u) => {
            let client = Client::new(u, config)?;
            anyhow::ensure!(
                client.reachable().await,
                "no hoist serve answers at {u} (--url)"
            );
            Ok(Some(client))
        }
        None => {
            let client = Client::new(&Client::default_url(config), config)?;
            Ok(client.reachable().await.then_some(client))
        }
    }
}

/// Where `status` and `history` read from.
pub(super) enum Source {
    /// A running daemon, asked with the config's read token.
    Daemon(Client),
    /// This process: no daemon answers.
    Local,
    /// A daemon answers, but the config's secrets cannot be read (said on stderr).
    NoTokens,
}

/// The daemon to read from, if one answers. The config was read without its secrets
/// ([`super::Command::secrets`]), so it is read again with them, for the daemon's read
/// token.
pub(super) async fn source(
    config: &Config,
    url: Option<&str>,
    path: &Path,
) -> anyhow::Result<Source> {
    let Some(client) = daemon(config, url).await? else {
        return Ok(Source::Local);
    };
    Ok(match Config::load(path, Secrets::Load) {
        Ok(config) => match Client::new(client.url(), &config) {
            Ok(client) => Source::Daemon(client),
            // No HTTP client can be built: said, like unreadable secrets.
            Err(e) => {
                eprintln!("error: {e}");
                Source::NoTokens
            }
        },
        Err(e) => {
            eprintln!("error: {e}");
            Source::NoTokens
        }
    })
}

/// A daemon whose admin routes this CLI can use, for deploy, rollback and promote.
pub(super) async fn acting_daemon(
    config: &Config,
    url: Option<&str>,
) -> anyhow::Result<Option<Client>> {
    match daemon(config, url).await? {
        Some(client) if client.can_act() => Ok(Some(client)),
        Some(client) => {
            eprintln!(
                "note: hoist serve runs at {}, but server.admin_token_file is not set; rolling out from this process",
                client.url()
            );
            Ok(None)
        }
        None => Ok(None),
    }
}

/// The admin API's deploy body for `target` (read back by
/// [`crate::rollout::request::deploy_target`]).
pub(super) fn deploy_body(target: &Target) -> serde_json::Value {
    match target {
        Target::Tag(t) => serde_json::json!({ "tag": t }),
        Target::Digest(d) => serde_json::json!({ "digest": d.as_str() }),
        Target::Track => serde_json::json!({}),
    }
}

/// Asks the daemon for a rollout and follows it to its end.
pub(super) async fn rollout(
    client: &Client,
    service: &str,
    action: &str,
    body: serde_json::Value,
) -> anyhow::Result<u8> {
    eprintln!("via hoist serve at {}", client.url());
    let before = client.last_deploy_id(service).await?;
    let answer = match client.act(service, action, body).await {
        Ok(a) => a,
        Err(ClientError::Refused {
            status, message, ..
        }) => {
            eprintln!("error: {message}");
            return Ok(if status == 404 || status == 400 {
                USAGE
            } else {
                FAILED
            });
        }
        Err(e) => return Err(e.into()),
    };
    eprintln!(
        "{service}: {action} {} ({})",
        answer["status"].as_str().unwrap_or("?"),
        answer["trigger"].as_str().unwrap_or("?")
    );
    let d = client
        .follow(service, before, |step| eprintln!("  {step} …"))
        .await?;
    let end = Ended {
        service,
        outcome: d.outcome,
        to: d.to_digest.as_deref().map_or("-", short_hex),
        step: d.step.as_deref().unwrap_or("-"),
        deploy_id: d.id,
    };
    Ok(ended(&end, d.error.as_deref()))
}

/// Asks the daemon to pause or resume automation of `service`, and says what it did.
pub(super) async fn automation(
    client: &Client,
    service: &str,
    action: &str,
    body: serde_json::Value,
) -> anyhow::Result<u8> {
    eprintln!("via hoist serve at {}", client.url());
    match client.act(service, action, body).await {
        Ok(answer) => {
            let text = |k: &str| answer[k].as_str().unwrap_or("?").to_string();
            match text("status").as_str() {
                "paused" => println!(
                    "{service}: automation paused until `hoist resume {service}` ({})",
                    text("reason")
                ),
                "resumed" => println!(
                    "{service}: automation resumed (it was paused by {})",
                    text("was_paused_by")
                ),
                other => println!("{service}: automation {other}"),
            }
            Ok(0)
        }
        Err(ClientError::Refused {
            status, message, ..
        }) => {
            eprintln!("error: {message}");
            Ok(if status == 404 || status == 400 {
                USAGE
            } else {
                FAILED
            })
        }
        Err(e) => Err(e.into()),
    }
}
