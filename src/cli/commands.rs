//! One function per command. Each prints its result and returns the exit code; deploy,
//! rollback, promote, status and history go through a running daemon when one answers
//! ([`super::remote`]).

use std::path::Path;

use crate::cli::remote::{self, Source};
use crate::cli::terminal::Terminal;
use crate::cli::{Command, FAILED, USAGE, check, ended};
use crate::config::{self, Config, ConfigError, Secrets, ServiceConfig};
use crate::context::Context;
use crate::docker::compose;
use crate::docker::drain::{self, Cord};
use crate::docker::engine::Engine;
use crate::image::Digest;
use crate::report::status;
use crate::report::text::{self, Ended};
use crate::rollout::recover;
use crate::rollout::request::{self, RollbackError, TargetError};
use crate::rollout::{self, Observer, Quiet, Request, Step, Target};
use crate::serve::Daemon;
use crate::serve::automation::{self, Act};
use crate::serve::promotion;
use crate::serve::systemd::Unit;
use crate::store::Store;
use crate::traefik;

/// What a command runs with besides its own arguments.
pub(super) struct Invocation<'a> {
    pub config: Config,
    /// The config file, read again with its secrets by commands that go through a daemon.
    pub path: &'a Path,
    /// `--url`.
    pub url: Option<String>,
    /// Whether stderr is a terminal, where a rollout's steps are drawn as they happen.
    pub terminal: bool,
}

pub(super) async fn run(command: Command, inv: Invocation<'_>) -> anyhow::Result<u8> {
    match command {
        // `main` runs it before loading the config, whose problems it reports itself.
        Command::CheckConfig { unit } => Ok(check_config(inv.path, unit.as_deref())),
        Command::Labels { service } => labels(&inv.config, &service).await,
        Command::Status { json } => status(inv, json).await,
        Command::Deploy {
            service,
            tag,
            digest,
        } => deploy(inv, &service, tag, digest.as_deref()).await,
        Command::Rollback { service } => rollback(inv, &service).await,
        Command::History {
            service,
            json,
            limit,
        } => history(inv, service.as_deref(), json, limit).await,
        Command::Promote { service } => promote(inv, &service).await,
        Command::Pause { service, reason } => pause(inv, &service, reason).await,
        Command::Resume { service } => resume(inv, &service).await,
        Command::Serve => serve(inv.config, inv.path).await,
        Command::Recover => recover(inv.config).await,
    }
}

/// `check-config`: the config's problems, then every secret, each named with its key path.
/// Exit 0 only when the config is valid and every secret (and unit credential) readable.
pub(super) fn check_config(path: &Path, unit: Option<&Path>) -> u8 {
    let (valid, sources) = match Config::load(path, Secrets::Skip) {
        Ok(config) => {
            println!(
                "config OK: {} service(s): {}",
                config.services.len(),
                config
                    .services
                    .iter()
                    .map(|s| s.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            let env_files: Vec<String> = (config.services.iter())
                .filter_map(|s| s.env_file.as_ref())
                .filter_map(|t| crate::envfile::check(&t.path, &t.var).err())
                .map(|e| e.to_string())
                .collect();
            for e in &env_files {
                eprintln!("error: {e}");
            }
            (env_files.is_empty(), config.secret_sources)
        }
        Err(e) => {
            eprintln!("error: {e}");
            // With problems in the config, its secrets are still worth checking: every
            // problem at once.
            match e {
                ConfigError::Invalid { secret_sources, .. } => (false, secret_sources),
                _ => return USAGE,
            }
        }
    };
    let unit = match Unit::find(unit) {
        Ok(unit) => unit,
        Err(e) => {
            eprintln!("error: {e}");
            return USAGE;
        }
    };
    let findings = check::secrets(&sources, unit.as_ref());
    match &unit {
        _ if findings.is_empty() => println!("secrets: none configured"),
        Some(unit) => println!(
            "secrets, with the credentials {} loads:",
            unit.path.display()
        ),
        None => println!("secrets:"),
    }
    for f in &findings {
        println!("  {f}");
    }
    for warning in check::loose_modes(&sources, unit.as_ref()) {
        println!("warning: {warning}");
    }
    if unit.is_none()
        && let Some(note) = check::missing_unit_note(&findings, &sources)
    {
        println!("note: {note}");
    }
    let unreadable = findings.iter().filter(|f| !f.ok).count();
    if unreadable > 0 {
        eprintln!(
            "error: {unreadable} secret(s) or credential(s) unreadable or empty (✗ above){}",
            if valid {
                "; the config itself is valid"
            } else {
                ""
            }
        );
    }
    if valid && unreadable == 0 { 0 } else { USAGE }
}

async fn labels(config: &Config, name: &str) -> anyhow::Result<u8> {
    let Some(service) = find_service(config, name) else {
        return Ok(USAGE);
    };
    let cord = Cord::new(&config.state.dir);
    // Compose will mount the drain directory as soon as the operator runs `up`: have the
    // probe in place by then.
    if let Err(e) = cord.prepare() {
        eprintln!(
            "warning: {e}; run `hoist labels` as a user that can write {}",
            config.state.dir.display()
        );
    }
    // Without health_path the image's own HEALTHCHECK is wrapped: look it up if Docker
    // has the image.
    let image_check = if service.health_path.is_none() {
        image_healthcheck(config, service).await
    } else {
        None
    };
    let check = drain::healthcheck(service, image_check.as_ref());
    let labels = traefik::labels(service, &config.traefik);
    print!(
        "{}",
        compose::fragment(service, &labels, &check, &cord.bind())
    );
    Ok(0)
}

async fn image_healthcheck(
    config: &Config,
    service: &ServiceConfig,
) -> Option<bollard::models::HealthConfig> {
    let engine = Engine::connect(&config.docker).await.ok()?;
    let reference = match &service.track {
        config::Track::Tag(tag) => service.image.tagged(tag),
        config::Track::Semver(_) => return None,
    };
    engine
        .inspect_image(&reference)
        .await
        .ok()?
        .healthcheck()
        .cloned()
}

/// `status`: the daemon's document, else one built here, as a table or as JSON.
async fn status(inv: Invocation<'_>, json: bool) -> anyhow::Result<u8> {
    let doc = match remote::source(&inv.config, inv.url.as_deref(), inv.path).await? {
        Source::Daemon(client) => {
            eprintln!("(from hoist serve at {})", client.url());
            client.status().await?
        }
        Source::Local => {
            let ctx = Context::open(inv.config).await?;
            status::document(&ctx, None).await
        }
        Source::NoTokens => return Ok(USAGE),
    };
    if json {
        println!("{}", text::status_json(&doc)?);
    } else {
        print!("{}", text::format_status(&doc));
    }
    Ok(0)
}

async fn deploy(
    inv: Invocation<'_>,
    service: &str,
    tag: Option<String>,
    digest: Option<&str>,
) -> anyhow::Result<u8> {
    let Some(s) = find_service(&inv.config, service).cloned() else {
        return Ok(USAGE);
    };
    let target = match request::deploy_target(tag, digest) {
        Ok(target) => target,
        Err(TargetError::Digest(e)) => {
            eprintln!("error: --digest: {e}");
            return Ok(USAGE);
        }
        // Not both: clap refuses --tag with --digest.
        Err(e @ TargetError::TagAndDigest) => {
            eprintln!("error: {e}");
            return Ok(USAGE);
        }
    };
    if let Some(client) = remote::acting_daemon(&inv.config, inv.url.as_deref()).await? {
        let body = remote::deploy_body(&target);
        return remote::rollout(&client, &s.name, "deploy", body).await;
    }
    let ctx = Context::open(inv.config).await?;
    local_rollout(&ctx, &s, Act::Deploy, target, "manual", inv.terminal).await
}

async fn rollback(inv: Invocation<'_>, service: &str) -> anyhow::Result<u8> {
    let Some(s) = find_service(&inv.config, service).cloned() else {
        return Ok(USAGE);
    };
    if let Some(client) = remote::acting_daemon(&inv.config, inv.url.as_deref()).await? {
        let body = serde_json::json!({});
        return remote::rollout(&client, &s.name, "rollback", body).await;
    }
    let ctx = Context::open(inv.config).await?;
    let target = match request::rollback_target(&ctx.store, &s.name) {
        Ok(target) => target,
        Err(RollbackError::NoPrevious { .. }) => {
            eprintln!("error: {service} has no previous digest recorded; nothing to roll back to");
            return Ok(FAILED);
        }
        Err(e) => return Err(e.into()),
    };
    local_rollout(&ctx, &s, Act::Rollback, target, "rollback", inv.terminal).await
}

async fn history(
    inv: Invocation<'_>,
    service: Option<&str>,
    json: bool,
    limit: usize,
) -> anyhow::Result<u8> {
    if let Some(s) = service
        && find_service(&inv.config, s).is_none()
    {
        return Ok(USAGE);
    }
    let deploys = match remote::source(&inv.config, inv.url.as_deref(), inv.path).await? {
        Source::Daemon(client) => client.deploys(service, limit).await?,
        Source::Local => Store::open(&inv.config.state.dir)?.deploys(service, limit)?,
        Source::NoTokens => return Ok(USAGE),
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&deploys)?);
    } else if deploys.is_empty() {
        println!("no rollouts recorded yet");
    } else {
        for d in &deploys {
            print!("{}", text::format_deploy(d));
        }
    }
    Ok(0)
}

async fn promote(inv: Invocation<'_>, service: &str) -> anyhow::Result<u8> {
    let Some(s) = find_service(&inv.config, service).cloned() else {
        return Ok(USAGE);
    };
    if s.promote_from.is_none() {
        eprintln!("error: {service} has no promote_from; nothing to promote from");
        return Ok(USAGE);
    }
    if let Some(client) = remote::acting_daemon(&inv.config, inv.url.as_deref()).await? {
        let body = serde_json::json!({});
        return remote::rollout(&client, &s.name, "promote", body).await;
    }
    let ctx = Context::open(inv.config).await?;
    let (digest, _) = match promotion::candidate(&ctx, &s).await {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(FAILED);
        }
    };
    let job = promotion::job(&s, digest, "manual");
    local_rollout(
        &ctx,
        &s,
        Act::Promote,
        job.target,
        &job.trigger,
        inv.terminal,
    )
    .await
}

/// Who runs this command, for the journal: the user behind sudo, else the user.
fn operator_name() -> String {
    ["SUDO_USER", "USER", "LOGNAME"]
        .iter()
        .find_map(|k| std::env::var(k).ok().filter(|v| !v.is_empty()))
        .unwrap_or_else(|| "an unnamed user".to_string())
}

async fn pause(inv: Invocation<'_>, service: &str, reason: Option<String>) -> anyhow::Result<u8> {
    let Some(s) = find_service(&inv.config, service).cloned() else {
        return Ok(USAGE);
    };
    let who = operator_name();
    if let Some(client) = remote::acting_daemon(&inv.config, inv.url.as_deref()).await? {
        let body = serde_json::json!({ "reason": reason, "by": who });
        return remote::automation(&client, &s.name, "pause", body).await;
    }
    let store = Store::open(&inv.config.state.dir)?;
    let pause = automation::pause(&store, &s, &format!("pause by {who}"), reason.as_deref())?;
    println!(
        "{}: automation paused until `hoist resume {}` ({})",
        s.name, s.name, pause.reason
    );
    Ok(0)
}

async fn resume(inv: Invocation<'_>, service: &str) -> anyhow::Result<u8> {
    let Some(s) = find_service(&inv.config, service).cloned() else {
        return Ok(USAGE);
    };
    let who = operator_name();
    if let Some(client) = remote::acting_daemon(&inv.config, inv.url.as_deref()).await? {
        let body = serde_json::json!({ "by": who });
        return remote::automation(&client, &s.name, "resume", body).await;
    }
    let store = Store::open(&inv.config.state.dir)?;
    match automation::resume(&store, &s, &format!("resume by {who}"))? {
        Some(pause) => println!(
            "{}: automation resumed (it was paused by {}: {})",
            s.name, pause.by, pause.reason
        ),
        None => println!("{}: automation was not paused", s.name),
    }
    Ok(0)
}

async fn serve(config: Config, path: &Path) -> anyhow::Result<u8> {
    let daemon = Daemon::build(config, path).await?;
    daemon.run(shutdown_signal()).await?;
    Ok(0)
}

async fn recover(config: Config) -> anyhow::Result<u8> {
    let ctx = Context::open(config).await?;
    for s in &ctx.config.services {
        let _lock = recover::locked(&ctx, s, "hoist recover").await?;
    }
    println!("no interrupted rollouts left");
    Ok(0)
}

/// Resolves on SIGTERM (systemd, docker stop) or SIGINT (Ctrl-C).
async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "Cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        () = term => tracing::info!("SIGTERM received"),
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received"),
    }
}

fn find_service<'a>(config: &'a Config, name: &str) -> Option<&'a ServiceConfig> {
    match config.service(name) {
        Ok(s) => Some(s),
        Err(e) => {
            eprintln!("error: {e}");
            None
        }
    }
}

/// Runs a rollout in this process, drawing its steps when on a terminal; tells automation
/// what the operator did ([`automation::operator_rollout`]) and how it ended.
async fn local_rollout(
    ctx: &Context,
    s: &ServiceConfig,
    act: Act,
    target: Target,
    trigger: &str,
    terminal: bool,
) -> anyhow::Result<u8> {
    let pause_note = automation::operator_rollout(ctx, s, act, &target, trigger).await;
    if let Some(note) = &pause_note {
        eprintln!("{}: {note}", s.name);
    }
    let request = Request {
        target,
        trigger: trigger.to_string(),
        holder: format!("hoist {trigger} of {} (cli)", s.name),
    };
    let observer: Box<dyn Observer> = if terminal {
        Box::new(Terminal::default())
    } else {
        Box::new(Quiet)
    };
    let report = match rollout::run(ctx, s, &request, observer.as_ref()).await {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(FAILED);
        }
    };
    automation::rollout_ended(&ctx.store, s, &report, pause_note.as_deref());
    let end = Ended {
        service: &s.name,
        outcome: report.outcome,
        to: report.to.as_ref().map_or("-", Digest::short),
        step: report.failed_step.map_or("-", Step::as_str),
        deploy_id: report.deploy_id,
    };
    Ok(ended(&end, report.error.as_deref()))
}
