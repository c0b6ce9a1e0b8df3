//! The command line: parses arguments, loads the config, runs a command and maps the
//! result to an exit code (0 done, 1 failed or rolled back, 2 bad usage or config).

pub mod check;
pub mod client;

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Mutex;
use std::time::Duration;

use clap::{Parser, Subcommand};

use crate::cli::client::{Client, ClientError};
use crate::config::{self, Config, ConfigError, Secrets, ServiceConfig};
use crate::context::Context;
use crate::docker::compose;
use crate::docker::drain::{self, Cord};
use crate::docker::engine::Engine;
use crate::image::Digest;
use crate::report::page;
use crate::report::status;
use crate::rollout::recover;
use crate::rollout::{self, Observer, Quiet, Request, Step, Target};
use crate::serve::Daemon;
use crate::serve::promotion;
use crate::serve::systemd::Unit;
use crate::store::{Deploy, Outcome, Store};
use crate::traefik;

#[derive(Parser, Debug)]
#[command(
    name = "hoist",
    version,
    about = "Pull-based zero-downtime deploys of Docker Compose services behind Traefik"
)]
pub struct Cli {
    /// Configuration file.
    #[arg(long, short, global = true, env = "HOIST_CONFIG", default_value = config::DEFAULT_PATH)]
    pub config: PathBuf,
    /// A running `hoist serve` to go through (default: `server.listen`, if one answers
    /// there; otherwise the CLI does the work itself).
    #[arg(long, global = true, env = "HOIST_URL")]
    pub url: Option<String>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Validate the configuration and report every problem; check that each secret can be
    /// read.
    ///
    /// A secret file in the unit's credentials directory (/run/credentials/hoist.service/,
    /// which exists only while the unit runs) is checked at the source the unit's
    /// LoadCredential= line names. Exit code 0: all good; 2: a problem or a secret that
    /// cannot be read.
    CheckConfig {
        /// The unit file (drop-ins in <PATH>.d/ included) whose credentials to check
        /// [default: /etc/systemd/system/hoist.service, if installed].
        #[arg(long, value_name = "PATH")]
        unit: Option<PathBuf>,
    },
    /// What runs where, its health, and what hoist is doing.
    Status {
        #[arg(long)]
        json: bool,
    },
    /// Print the compose YAML (labels, healthcheck, volume) a service's containers need.
    Labels { service: String },
    /// Roll a service to its tracked tag, another tag, or an exact digest.
    Deploy {
        service: String,
        #[arg(long, conflicts_with = "digest")]
        tag: Option<String>,
        #[arg(long)]
        digest: Option<String>,
    },
    /// Roll a service back to the digest it ran before, through the same steps.
    Rollback { service: String },
    /// Show the deploy journal with per-step timings.
    History {
        service: Option<String>,
        #[arg(long)]
        json: bool,
        #[arg(long, default_value_t = 20)]
        limit: usize,
    },
    /// Deploy the digest the service's `promote_from` service runs now.
    Promote { service: String },
    /// Recover rollouts interrupted by a crash (also done before every deploy).
    Recover,
    /// Run the daemon: webhooks, registry polling, promotions, the deploy queue.
    Serve,
}

/// Exit codes, as documented.
const FAILED: u8 = 1;
const USAGE: u8 = 2;

impl Command {
    /// Whether the command reads the config's secrets. The others work where the secret
    /// files cannot be read, such as a server before its unit runs. (`status` and
    /// `history` read them after all when they go through a daemon: [`with_tokens`].)
    fn secrets(&self) -> Secrets {
        match self {
            Command::CheckConfig { .. }
            | Command::Labels { .. }
            | Command::Status { .. }
            | Command::History { .. } => Secrets::Skip,
            Command::Deploy { .. }
            | Command::Rollback { .. }
            | Command::Promote { .. }
            | Command::Recover
            | Command::Serve => Secrets::Load,
        }
    }
}

pub fn main(args: Vec<String>) -> ExitCode {
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { USAGE } else { 0 });
        }
    };
    // The daemon logs plain lines even when started from a terminal.
    let terminal = std::io::stderr().is_terminal() && !matches!(cli.command, Command::Serve);
    init_tracing(terminal);
    if let Command::CheckConfig { unit } = &cli.command {
        return ExitCode::from(check_config(&cli.config, unit.as_deref()));
    }
    let config = match Config::load(&cli.config, cli.command.secrets()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(USAGE);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(FAILED);
        }
    };
    let path = cli.config;
    match runtime.block_on(run(cli.command, config, &path, cli.url, terminal)) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(FAILED)
        }
    }
}

fn init_tracing(terminal: bool) {
    // On a terminal the progress renderer tells the story; log lines are for warnings.
    let default = if terminal { "warn" } else { "info" };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(terminal)
        .try_init();
}

/// `check-config`: the config's problems, then every secret, each named with its key path.
/// Exit 0 only when the config is valid and every secret (and unit credential) readable.
fn check_config(path: &Path, unit: Option<&Path>) -> u8 {
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
            (true, config.secret_sources)
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

async fn run(
    command: Command,
    config: Config,
    path: &Path,
    url: Option<String>,
    terminal: bool,
) -> anyhow::Result<u8> {
    match command {
        // `main` runs it before loading the config, whose problems it reports itself.
        Command::CheckConfig { unit } => Ok(check_config(path, unit.as_deref())),
        Command::Labels { service } => labels(&config, &service).await,
        Command::Status { json } => {
            let doc = match daemon(&config, url.as_deref()).await? {
                Some(client) => {
                    let Some(client) = with_tokens(client, path) else {
                        return Ok(USAGE);
                    };
                    eprintln!("(from hoist serve at {})", client.url());
                    client.status().await?
                }
                None => {
                    let ctx = Context::open(config).await?;
                    serde_json::to_value(status::document(&ctx, None).await)?
                }
            };
            if json {
                println!("{}", serde_json::to_string_pretty(&doc)?);
            } else {
                print!("{}", format_status(&doc));
            }
            Ok(0)
        }
        Command::Deploy {
            service,
            tag,
            digest,
        } => {
            let Some(s) = find_service(&config, &service).cloned() else {
                return Ok(USAGE);
            };
            let target = match (tag, digest) {
                (Some(tag), _) => Target::Tag(tag),
                (_, Some(d)) => match Digest::parse(&d) {
                    Ok(d) => Target::Digest(d),
                    Err(e) => {
                        eprintln!("error: --digest: {e}");
                        return Ok(USAGE);
                    }
                },
                _ => Target::Track,
            };
            if let Some(client) = acting_daemon(&config, url.as_deref()).await? {
                let body = match &target {
                    Target::Tag(t) => serde_json::json!({ "tag": t }),
                    Target::Digest(d) => serde_json::json!({ "digest": d.as_str() }),
                    Target::Track => serde_json::json!({}),
                };
                return remote(&client, &s.name, "deploy", body).await;
            }
            let ctx = Context::open(config).await?;
            deploy(&ctx, &s, target, "manual", terminal).await
        }
        Command::Rollback { service } => {
            let Some(s) = find_service(&config, &service).cloned() else {
                return Ok(USAGE);
            };
            if let Some(client) = acting_daemon(&config, url.as_deref()).await? {
                return remote(&client, &s.name, "rollback", serde_json::json!({})).await;
            }
            let ctx = Context::open(config).await?;
            let previous = ctx
                .store
                .service_state(&s.name)?
                .and_then(|st| st.previous_digest);
            let Some(previous) = previous else {
                eprintln!(
                    "error: {service} has no previous digest recorded; nothing to roll back to"
                );
                return Ok(FAILED);
            };
            let digest = Digest::parse(&previous)?;
            deploy(&ctx, &s, Target::Digest(digest), "rollback", terminal).await
        }
        Command::History {
            service,
            json,
            limit,
        } => {
            if let Some(s) = &service
                && find_service(&config, s).is_none()
            {
                return Ok(USAGE);
            }
            let deploys = match daemon(&config, url.as_deref()).await? {
                Some(client) => {
                    let Some(client) = with_tokens(client, path) else {
                        return Ok(USAGE);
                    };
                    client.deploys(service.as_deref(), limit).await?
                }
                None => Store::open(&config.state.dir)?.deploys(service.as_deref(), limit)?,
            };
            if json {
                println!("{}", serde_json::to_string_pretty(&deploys)?);
            } else if deploys.is_empty() {
                println!("no rollouts recorded yet");
            } else {
                for d in &deploys {
                    print!("{}", format_deploy(d));
                }
            }
            Ok(0)
        }
        Command::Promote { service } => {
            let Some(s) = find_service(&config, &service).cloned() else {
                return Ok(USAGE);
            };
            if s.promote_from.is_none() {
                eprintln!("error: {service} has no promote_from; nothing to promote from");
                return Ok(USAGE);
            }
            if let Some(client) = acting_daemon(&config, url.as_deref()).await? {
                return remote(&client, &s.name, "promote", serde_json::json!({})).await;
            }
            let ctx = Context::open(config).await?;
            let (digest, _) = match promotion::candidate(&ctx, &s).await {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("error: {e}");
                    return Ok(FAILED);
                }
            };
            let trigger = promotion::job(&s, digest.clone(), "manual").trigger;
            deploy(&ctx, &s, Target::Digest(digest), &trigger, terminal).await
        }
        Command::Serve => {
            let daemon = Daemon::build(config).await?;
            daemon.run(shutdown_signal()).await?;
            Ok(0)
        }
        Command::Recover => {
            let ctx = Context::open(config).await?;
            for s in &ctx.config.services {
                let _lock = crate::rollout::lock::ServiceLock::acquire(
                    &ctx.config.state.dir,
                    &s.name,
                    "hoist recover",
                )?;
                recover::service(&ctx, s).await?;
            }
            println!("no interrupted rollouts left");
            Ok(0)
        }
    }
}

/// The daemon to go through: `--url` (which must answer), else one answering at
/// `server.listen`, else none (the CLI works on its own).
async fn daemon(config: &Config, url: Option<&str>) -> anyhow::Result<Option<Client>> {
    match url {
        Some(u) => {
            let client = Client::new(u, config);
            anyhow::ensure!(
                client.reachable().await,
                "no hoist serve answers at {u} (--url)"
            );
            Ok(Some(client))
        }
        None => {
            let client = Client::new(&Client::default_url(config), config);
            Ok(client.reachable().await.then_some(client))
        }
    }
}

/// `client` with the config's tokens, for commands that read the config without secrets
/// ([`Command::secrets`]) but go through a daemon, which may want its read token. `None`
/// after printing why the secrets cannot be read.
fn with_tokens(client: Client, path: &Path) -> Option<Client> {
    match Config::load(path, Secrets::Load) {
        Ok(config) => Some(Client::new(client.url(), &config)),
        Err(e) => {
            eprintln!("error: {e}");
            None
        }
    }
}

/// A daemon whose admin routes this CLI can use, for deploy, rollback and promote.
async fn acting_daemon(config: &Config, url: Option<&str>) -> anyhow::Result<Option<Client>> {
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

/// Asks the daemon for a rollout and follows it to its end.
async fn remote(
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
    let to = d.to_digest.as_deref().map_or("-", short_digest);
    match d.outcome {
        Outcome::Succeeded => println!("{service} deployed {to} (deploy #{})", d.id),
        Outcome::Noop => println!(
            "{service} already runs {to}; nothing to do (deploy #{})",
            d.id
        ),
        outcome => {
            println!(
                "{service} {}: {} step failed (deploy #{})",
                outcome.as_str().replace('_', " "),
                d.step.as_deref().unwrap_or("-"),
                d.id
            );
            if let Some(e) = &d.error {
                eprintln!("error: {e}");
            }
        }
    }
    Ok(if matches!(d.outcome, Outcome::Succeeded | Outcome::Noop) {
        0
    } else {
        FAILED
    })
}

fn short_digest(d: &str) -> &str {
    let hex = d.trim_start_matches("sha256:");
    hex.get(..12).unwrap_or(hex)
}

/// The compact table of `hoist status`.
fn format_status(doc: &serde_json::Value) -> String {
    let now = doc["generated_at"]
        .as_i64()
        .unwrap_or_else(crate::store::now_ms);
    let text = |v: &serde_json::Value| v.as_str().unwrap_or("-").to_string();
    let mut rows = vec![[
        "SERVICE".to_string(),
        "ENV".into(),
        "STATE".into(),
        "HEALTH".into(),
        "DEPLOYED".into(),
        "SINCE".into(),
        "BY".into(),
        "LAST ROLLOUT".into(),
    ]];
    let mut errors = Vec::new();
    for s in doc["services"].as_array().into_iter().flatten() {
        let state = match (s["state"].as_str(), s["step"].as_str()) {
            (Some("rolling"), Some(step)) => format!("rolling:{step}"),
            (state, _) => state.unwrap_or("-").to_string(),
        };
        let deployed = match (s["digest"].as_str(), s["tag"].as_str()) {
            (Some(d), Some(t)) => format!("{t}@{}", short_digest(d)),
            (Some(d), None) => short_digest(d).to_string(),
            _ => "-".into(),
        };
        let since = s["deployed_at"]
            .as_i64()
            .map_or("-".into(), |at| page::relative(at, now));
        let last = &s["last_rollout"];
        let last_text = match last["id"].as_i64() {
            Some(id) => format!("#{id} {}", text(&last["outcome"])),
            None => "-".into(),
        };
        if let Some(e) = last["error"].as_str()
            && matches!(
                last["outcome"].as_str(),
                Some("failed" | "rolled_back" | "interrupted")
            )
        {
            errors.push(format!(
                "{}: {}",
                text(&s["name"]),
                e.lines().next().unwrap_or(e)
            ));
        }
        if let Some(e) = s["last_poll_error"].as_str() {
            errors.push(format!("{}: poll: {e}", text(&s["name"])));
        }
        rows.push([
            text(&s["name"]),
            text(&s["environment"]),
            state,
            text(&s["health"]),
            deployed,
            since,
            text(&s["deployed_by"]),
            last_text,
        ]);
    }
    let widths: Vec<usize> = (0..8)
        .map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for r in &rows {
        let line: Vec<String> = r
            .iter()
            .zip(&widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    for e in errors {
        out.push_str(&format!("! {e}\n"));
    }
    out
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

async fn deploy(
    ctx: &Context,
    s: &ServiceConfig,
    target: Target,
    trigger: &str,
    terminal: bool,
) -> anyhow::Result<u8> {
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
    let to = report.to.as_ref().map_or("-", Digest::short);
    match report.outcome {
        Outcome::Succeeded => println!("{} deployed {} (deploy #{})", s.name, to, report.deploy_id),
        Outcome::Noop => println!(
            "{} already runs {}; nothing to do (deploy #{})",
            s.name, to, report.deploy_id
        ),
        outcome => {
            println!(
                "{} {}: {} step failed (deploy #{})",
                s.name,
                outcome.as_str().replace('_', " "),
                report.failed_step.map_or("-", Step::as_str),
                report.deploy_id
            );
            if let Some(e) = &report.error {
                eprintln!("error: {e}");
            }
        }
    }
    Ok(if report.succeeded() { 0 } else { FAILED })
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
        .config?
        .healthcheck
}

fn format_deploy(d: &Deploy) -> String {
    let when = humantime::format_rfc3339_seconds(
        std::time::UNIX_EPOCH + Duration::from_millis(u64::try_from(d.started_at).unwrap_or(0)),
    );
    let total = d
        .finished_at
        .map(|f| format!("{:.1}s", (f - d.started_at) as f64 / 1000.0))
        .unwrap_or_else(|| "-".into());
    let short = |digest: &Option<String>| {
        digest
            .as_deref()
            .map(|d| {
                d.trim_start_matches("sha256:")
                    .get(..12)
                    .unwrap_or(d)
                    .to_string()
            })
            .unwrap_or_else(|| "?".into())
    };
    let mut out = format!(
        "#{:<5} {:<14} {:<8} {:<12} {}  {:<10} target {}  {} -> {}  {}\n",
        d.id,
        d.service,
        d.environment,
        d.outcome.as_str(),
        when,
        d.trigger,
        d.target,
        short(&d.from_digest),
        short(&d.to_digest),
        total
    );
    if !d.steps.is_empty() {
        let steps: Vec<String> = d
            .steps
            .iter()
            .map(|s| {
                format!(
                    "{}{} {}",
                    if s.ok { "" } else { "✗" },
                    s.step,
                    format_ms(s.duration_ms)
                )
            })
            .collect();
        out.push_str(&format!("       {}\n", steps.join(" · ")));
    }
    if let Some(e) = &d.error {
        for (i, line) in e.lines().enumerate() {
            out.push_str(&format!(
                "       {}{line}\n",
                if i == 0 { "error: " } else { "  " }
            ));
        }
    }
    out
}

fn format_ms(ms: i64) -> String {
    if ms < 1000 {
        format!("{ms}ms")
    } else {
        format!("{:.1}s", ms as f64 / 1000.0)
    }
}

/// Renders steps on a terminal: one line per step, a live line for long waits.
#[derive(Default)]
struct Terminal {
    live: Mutex<bool>,
}

impl Terminal {
    fn line(&self, text: &str, live: bool) {
        let mut is_live = self.live.lock().unwrap_or_else(|e| e.into_inner());
        let mut err = std::io::stderr().lock();
        if *is_live {
            let _ = write!(err, "\r\x1b[2K");
        }
        let _ = if live {
            write!(err, "{text}")
        } else {
            writeln!(err, "{text}")
        };
        let _ = err.flush();
        *is_live = live;
    }
}

impl Observer for Terminal {
    fn started(&self, step: Step) {
        self.line(&format!("  {step:<8} …"), true);
    }
    fn progress(&self, step: Step, message: &str) {
        let message: String = message.chars().take(100).collect();
        self.line(&format!("  {step:<8} … {message}"), true);
    }
    fn finished(&self, step: Step, elapsed: Duration, result: Result<&str, &str>) {
        let (mark, text) = match result {
            Ok(t) => ("✓", t),
            Err(t) => ("✗", t),
        };
        let ms = i64::try_from(elapsed.as_millis()).unwrap_or(i64::MAX);
        self.line(
            &format!("{mark} {step:<8} {:>6}  {text}", format_ms(ms)),
            false,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::StepRecord;

    #[test]
    fn history_lines_show_outcome_steps_and_errors() {
        let step = |name: &str, ms: i64, ok: bool| StepRecord {
            step: name.into(),
            started_at: 0,
            duration_ms: ms,
            waited_ms: 0,
            engine_ms: 0,
            ok,
            detail: None,
        };
        let d = Deploy {
            id: 7,
            service: "web-stage".into(),
            environment: "stage".into(),
            trigger: "poll".into(),
            target: "main".into(),
            from_image: None,
            from_digest: Some(format!("sha256:{}", "a".repeat(64))),
            to_image: None,
            to_tag: Some("main".into()),
            to_digest: Some(format!("sha256:{}", "b".repeat(64))),
            outcome: Outcome::RolledBack,
            step: Some("health".into()),
            error: Some("not healthy after 60s\nlast probe: exit 1".into()),
            old_container: None,
            new_container: None,
            pid: None,
            started_at: 1_700_000_000_000,
            finished_at: Some(1_700_000_065_400),
            steps: vec![step("resolve", 12, true), step("health", 60_001, false)],
        };
        let text = format_deploy(&d);
        assert_eq!(
            text,
            "#7     web-stage      stage    rolled_back  2023-11-14T22:13:20Z  poll       \
             target main  aaaaaaaaaaaa -> bbbbbbbbbbbb  65.4s\n       \
             resolve 12ms · ✗health 60.0s\n       \
             error: not healthy after 60s\n         \
             last probe: exit 1\n"
        );
        let d = Deploy {
            outcome: Outcome::Running,
            from_digest: None,
            to_digest: None,
            finished_at: None,
            error: None,
            steps: vec![],
            ..d.clone()
        };
        assert_eq!(
            format_deploy(&d),
            "#7     web-stage      stage    running      2023-11-14T22:13:20Z  poll       \
             target main  ? -> ?  -\n"
        );
        assert!(
            text.starts_with("#7     web-stage      stage    rolled_back"),
            "{text}"
        );
        assert!(
            text.contains("aaaaaaaaaaaa -> bbbbbbbbbbbb  65.4s"),
            "{text}"
        );
        assert!(text.contains("resolve 12ms · ✗health 60.0s"), "{text}");
        assert!(
            text.contains("error: not healthy after 60s\n         last probe: exit 1"),
            "{text}"
        );
    }

    #[test]
    fn status_table_lists_services_and_problems() {
        let doc = serde_json::json!({
            "generated_at": 1_000_000,
            "services": [{
                "name": "web-stage", "environment": "stage", "state": "rolling", "step": "drain",
                "health": "healthy", "digest": format!("sha256:{}", "c".repeat(64)), "tag": "main",
                "deployed_at": 820_000, "deployed_by": "poll",
                "last_rollout": {"id": 3, "outcome": "rolled_back", "error": "boom\nmore"},
                "last_poll_error": "registry ghcr.io is rate limiting hoist (HTTP 429)"
            }]
        });
        let text = format_status(&doc);
        let mut lines = text.lines();
        assert!(
            lines.next().unwrap().starts_with("SERVICE    ENV    STATE"),
            "{text}"
        );
        let row = lines.next().unwrap();
        for cell in [
            "web-stage",
            "rolling:drain",
            "main@cccccccccccc",
            "3 min ago",
            "poll",
            "#3 rolled_back",
        ] {
            assert!(row.contains(cell), "{cell} missing in {row}");
        }
        assert!(text.contains("! web-stage: boom\n"), "{text}");
        assert!(
            text.contains("! web-stage: poll: registry ghcr.io is rate limiting"),
            "{text}"
        );
    }

    #[test]
    fn status_table_and_json_are_byte_identical_to_the_pinned_ones() {
        let doc = serde_json::to_value(status::example()).unwrap();
        assert_eq!(
            format_status(&doc),
            include_str!("../report/testdata/status.txt")
        );
        assert_eq!(
            serde_json::to_string_pretty(&doc).unwrap(),
            include_str!("../report/testdata/status.json")
        );
    }
}
