//! SIGHUP (`systemctl reload hoist`): the config file is read and checked again. A valid
//! config is applied: new services, tracks, poll intervals, tokens, registries and Traefik
//! settings take effect for every request, poll and rollout that starts from then on, and
//! the pollers and the promotion loop restart with it. A rollout already running finishes
//! with the config it started with. An invalid config is logged with every problem and the
//! running one stays. SIGHUP never stops the daemon (its default action would).
//!
//! What the process was built around keeps its running value until a restart, with a
//! warning naming the key (as PostgreSQL does for its `postmaster` settings): the state
//! directory, the Docker connection, the listening address and the connection and rollout
//! limits.

use std::path::{Path, PathBuf};

use tokio::signal::unix::{Signal, SignalKind, signal};

use crate::config::{Config, ConfigError, Secrets, ServiceConfig};
use crate::serve::http::App;

/// Takes over SIGHUP from its default action (exit). Call before announcing readiness, so
/// that a SIGHUP sent from then on is never fatal.
pub(crate) fn listen() -> Option<Signal> {
    match signal(SignalKind::hangup()) {
        Ok(hangups) => Some(hangups),
        Err(e) => {
            tracing::error!(error = %e, "Cannot listen for SIGHUP; a SIGHUP would stop hoist");
            None
        }
    }
}

/// Runs the pollers and the promotion loop, and on each SIGHUP reloads the config at
/// `path` and restarts them with it, until `app.stop`.
pub(crate) async fn run(mut hangups: Option<Signal>, path: PathBuf, app: App) {
    let mut automation = super::spawn_automation(&app, &app.live.now());
    loop {
        tokio::select! {
            received = hangup(&mut hangups) => {
                if !received {
                    break;
                }
            }
            () = app.stop.cancelled() => break,
        }
        if let Some(config) = load(&path).await {
            apply(&app, config).await;
            // Pollers hold only their last look at the registry: stopping one mid-check
            // loses nothing, and a queued rollout is the queue's.
            automation.shutdown().await;
            automation = super::spawn_automation(&app, &app.live.now());
        }
    }
    automation.shutdown().await;
}

/// The next SIGHUP; false when there will be none.
async fn hangup(hangups: &mut Option<Signal>) -> bool {
    match hangups {
        Some(signal) => signal.recv().await.is_some(),
        None => std::future::pending().await,
    }
}

/// The config at `path`, or `None` after logging why it cannot be applied.
async fn load(path: &Path) -> Option<Config> {
    let checked = {
        let path = path.to_path_buf();
        tokio::task::spawn_blocking(move || Config::load(&path, Secrets::Load)).await
    };
    match checked {
        Ok(Ok(config)) => Some(config),
        Ok(Err(e)) => {
            log_problems(&e);
            None
        }
        Err(e) => {
            tracing::error!(error = %e, "SIGHUP received: checking the config failed; the running config stays");
            None
        }
    }
}

/// Makes `config` the running one: recovers services new to it, then swaps it in.
async fn apply(app: &App, mut config: Config) {
    let running = app.live.now();
    for key in keep_restart_only(&mut config, &running.config) {
        tracing::warn!(
            %key,
            "SIGHUP: {key} changed in the config; it keeps its running value until hoist restarts"
        );
    }
    super::warn_about_loose_secrets(&config);
    let added: Vec<ServiceConfig> = not_in(&config, &running.config).cloned().collect();
    let removed: Vec<String> = not_in(&running.config, &config)
        .map(|s| s.name.clone())
        .collect();
    let ctx = running.reconfigured(config);
    // A service that was configured before may have been left mid-rollout.
    super::recover(&ctx, &added).await;
    app.status
        .keep_only(ctx.config.services.iter().map(|s| s.name.as_str()));
    app.queue.reconfigure(&ctx);
    let services = ctx.config.services.len();
    app.live.replace(ctx);
    tracing::info!(
        services,
        added = %listed(added.iter().map(|s| s.name.as_str())),
        removed = %listed(removed.iter().map(String::as_str)),
        "SIGHUP received: the new config is applied; running rollouts finish with the one they started with"
    );
}

/// The services of `config` that `other` does not have.
fn not_in<'a>(config: &'a Config, other: &'a Config) -> impl Iterator<Item = &'a ServiceConfig> {
    config
        .services
        .iter()
        .filter(|s| !other.services.iter().any(|o| o.name == s.name))
}

/// `a,b,c` for a log field, `-` for none.
fn listed<'a>(names: impl Iterator<Item = &'a str>) -> String {
    let names: Vec<&str> = names.collect();
    if names.is_empty() {
        "-".to_string()
    } else {
        names.join(",")
    }
}

/// Puts back into `config` what only a restart can change, and names each key that differed.
fn keep_restart_only(config: &mut Config, running: &Config) -> Vec<&'static str> {
    let mut kept = Vec::new();
    let mut keep = |key: &'static str, changed: bool| {
        if changed {
            kept.push(key);
        }
    };
    keep("state.dir", config.state.dir != running.state.dir);
    keep("docker.host", config.docker.host != running.docker.host);
    let (new, old) = (&config.server, &running.server);
    keep("server.listen", new.listen != old.listen);
    keep("server.max_parallel", new.max_parallel != old.max_parallel);
    keep(
        "server.max_connections",
        new.max_connections != old.max_connections,
    );
    keep(
        "server.header_timeout",
        new.header_timeout != old.header_timeout,
    );
    keep("server.idle_timeout", new.idle_timeout != old.idle_timeout);
    config.state = running.state.clone();
    config.docker = running.docker.clone();
    config.server.listen = old.listen;
    config.server.max_parallel = old.max_parallel;
    config.server.max_connections = old.max_connections;
    config.server.header_timeout = old.header_timeout;
    config.server.idle_timeout = old.idle_timeout;
    kept
}

/// One line per problem, so that every problem is seen and none spans lines.
fn log_problems(e: &ConfigError) {
    match e {
        ConfigError::Invalid { path, problems, .. } => {
            tracing::warn!(
                config = %path.display(),
                problems = problems.len(),
                "SIGHUP received: the config has problems; the running config stays"
            );
            for p in problems {
                tracing::warn!(problem = ?p.to_string(), "Config problem");
            }
        }
        other => tracing::warn!(
            error = ?other.to_string(),
            "SIGHUP received: the config cannot be read; the running config stays"
        ),
    }
}
