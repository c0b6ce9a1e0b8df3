//! `hoist serve`: one process running the HTTP server, the pollers, the promotion loop and
//! the deploy queue, with one shutdown path.
//!
//! Start: open the context (Docker, state), recover interrupted rollouts, bind the
//! listener ([`Daemon::build`]); then serve until the shutdown future resolves
//! ([`Daemon::run`]). Shutdown: stop accepting requests and triggers, cancel watch windows,
//! let a running rollout finish within `server.shutdown_grace`, otherwise leave it to
//! recovery at the next start, and say which happened; then give the rollouts' GitHub
//! reports and notifications a bounded time, and say if it ran out.

pub(crate) mod http;
pub(crate) mod live;
pub(crate) mod poller;
pub(crate) mod promotion;
pub(crate) mod queue;
pub(crate) mod reload;
pub(crate) mod sweep;
pub(crate) mod systemd;

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio::net::TcpListener;
use tokio::task::{JoinHandle, JoinSet};
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::context::Context;
use crate::report::status::Status;
use crate::rollout::recover;
use crate::serve::http::App;
use crate::serve::live::Live;
use crate::serve::poller::Watches;
use crate::serve::queue::Queue;
use crate::store::deliveries::Deliveries;

/// How long GitHub reports and chat notifications get at shutdown, after the rollouts:
/// GitHub's result at its 10 s request timeout, and a notification's first retries. With
/// the default 60 s shutdown grace this stays within systemd's `TimeoutStopSec=90s`.
const REPORT_GRACE: Duration = Duration::from_secs(15);

pub(crate) struct Daemon {
    app: App,
    listener: TcpListener,
    /// The config file, checked again on SIGHUP.
    config_path: PathBuf,
}

impl Daemon {
    pub(crate) async fn build(config: Config, config_path: &Path) -> anyhow::Result<Daemon> {
        warn_about_loose_secrets(&config);
        let ctx = Context::open(config).await?;
        recover(&ctx, &ctx.config.services).await;
        let listen = ctx.config.server.listen;
        let listener = TcpListener::bind(listen)
            .await
            .with_context(|| format!("cannot listen on {listen} (server.listen)"))?;
        let status = Arc::new(Status::new(
            ctx.config.services.iter().map(|s| s.name.as_str()),
        ));
        let stop = CancellationToken::new();
        let metrics = Arc::new(crate::report::metrics::Metrics::default());
        let deliveries = Arc::new(
            Deliveries::open(ctx.store.clone())
                .context("cannot load the webhook deliveries seen so far")?,
        );
        let live = Live::new(ctx.clone());
        let queue = Queue::new(
            live.clone(),
            status.clone(),
            metrics.clone(),
            deliveries.clone(),
            stop.clone(),
        );
        Ok(Daemon {
            app: App {
                hooks: Arc::new(sweep::Hooks::open(&ctx.config, ctx.store.clone())),
                write_check: Arc::default(),
                deliveries,
                live,
                queue,
                watches: Watches::default(),
                status,
                metrics,
                intake: http::intake::Intake::default(),
                stop,
                refusals: Arc::new(crate::util::Throttle::new(http::REFUSALS_LOGGED_PER_SECOND)),
            },
            listener,
            config_path: config_path.to_path_buf(),
        })
    }

    /// Serves until `shutdown` resolves, then shuts down gracefully.
    pub(crate) async fn run(self, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
        let Daemon {
            app,
            listener,
            config_path,
        } = self;
        let addr = listener.local_addr()?;

        app.queue.restore();
        let mut background = JoinSet::new();
        // The pollers and the promotion loop run under the reloader, which restarts them
        // with each config it applies.
        background.spawn(reload::run(reload::listen(), config_path, app.clone()));
        background.spawn(app.deliveries.clone().run(app.stop.clone()));
        let mut server = serve(&app, listener);
        tracing::info!(%addr, services = app.live.now().config.services.len(), "Listening on http://{addr}");
        systemd::ready(&app.status.summary());
        // Pet the watchdog only once READY has been sent.
        background.spawn(systemd::watchdog(app.status.clone(), app.stop.clone()));

        let server_failed = tokio::select! {
            () = shutdown => None,
            result = &mut server => Some(result),
        };
        if let Some(result) = &server_failed {
            tracing::error!(
                ?result,
                "The HTTP server stopped unexpectedly; shutting down"
            );
        }
        shut_down(&app, server_failed.is_none().then_some(server)).await;
        background.shutdown().await;
        Ok(())
    }
}

/// The pollers, the promotion loop and the sweep of missed webhook deliveries for the
/// config in `ctx`, until `app.stop` or until the set is shut down (a reload starts new
/// ones, with the config's GitHub token and sweep interval).
fn spawn_automation(app: &App, ctx: &Context) -> JoinSet<()> {
    let mut background = JoinSet::new();
    for s in ctx
        .config
        .services
        .iter()
        .filter(|s| s.poll_interval.is_some())
    {
        background.spawn(poller::poll(
            ctx.clone(),
            app.queue.clone(),
            app.status.clone(),
            app.metrics.clone(),
            s.name.clone(),
            app.stop.clone(),
        ));
    }
    background.spawn(promotion::run(
        ctx.clone(),
        app.queue.clone(),
        app.stop.clone(),
    ));
    background.spawn(sweep::run(app.clone(), ctx.clone()));
    background
}

/// The HTTP server, until `app.stop`. Its limits are fixed for the process's life.
fn serve(app: &App, listener: TcpListener) -> JoinHandle<std::io::Result<()>> {
    let ctx = app.live.now();
    let server = &ctx.config.server;
    let limits = http::connections::Limits {
        max_connections: server.max_connections,
        header_timeout: server.header_timeout,
        idle_timeout: server.idle_timeout,
    };
    tokio::spawn(http::connections::serve(
        listener,
        http::router(app.clone()),
        limits,
        app.stop.clone(),
    ))
}

/// The one shutdown path: stop taking requests and triggers (which also cancels the watch
/// windows), let running rollouts finish within `server.shutdown_grace` or leave them to
/// recovery, then give their GitHub reports and notifications [`REPORT_GRACE`].
/// `server` is the HTTP server's task, unless it already ended.
async fn shut_down(app: &App, server: Option<JoinHandle<std::io::Result<()>>>) {
    let grace = app.live.now().config.server.shutdown_grace;
    tracing::info!(
        grace_s = grace.as_secs(),
        "Shutting down: no new requests or triggers; letting running rollouts finish"
    );
    systemd::stopping("shutting down");
    app.stop.cancel();
    app.intake.shutdown().await;
    if app.queue.shutdown(grace).await {
        tracing::info!("All rollouts finished; stopped");
    } else {
        tracing::warn!(
            grace_s = grace.as_secs(),
            rolling = %app.status.summary(),
            "The shutdown grace ran out during a rollout; it is left to recovery at the next start"
        );
    }
    if let Some(server) = server {
        let _ = server.await;
    }
    if let Err(e) = app.deliveries.flush() {
        tracing::warn!(error = %e, "Cannot record the last webhook deliveries");
    }
    if !app.queue.finish_reports(REPORT_GRACE).await {
        tracing::warn!(
            bound_s = REPORT_GRACE.as_secs(),
            "Stopping with GitHub reports or notifications still unsent: their time ran out"
        );
    }
    app.watches.shutdown().await;
}

/// Recovers interrupted rollouts of each service whose lock is free.
async fn recover(ctx: &Context, services: &[crate::config::ServiceConfig]) {
    for s in services {
        match recover::locked(ctx, s, "hoist serve (recovery)").await {
            Ok(_lock) => {}
            Err(recover::LockedError::Recover(e)) => {
                tracing::error!(service = %s.name, error = %e, "Recovery failed; the next rollout of this service will try again");
            }
            Err(recover::LockedError::Lock(e)) => {
                tracing::warn!(service = %s.name, error = %e, "Not recovering now");
            }
        }
    }
}

/// Secret files other users can read or write are worth a warning at every start.
fn warn_about_loose_secrets(config: &Config) {
    for source in &config.secret_sources {
        if let crate::secret::Origin::File(path) = &source.origin
            && let Some(why) = crate::secret::loose_mode(path)
        {
            tracing::warn!(key = %source.key, "Secret file open to other users: {why}");
        }
    }
}
