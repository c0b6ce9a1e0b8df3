//! The command line: parses arguments, loads the config, runs a command and maps the
//! result to an exit code (0 done, 1 failed or rolled back, 2 bad usage or config).
//! [`commands`] has a function per command; [`remote`] goes through a running daemon;
//! [`terminal`] draws a rollout's steps as they happen.

pub mod check;
pub mod client;
mod commands;
mod remote;
mod terminal;

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::cli::commands::Invocation;
use crate::config::{self, Config, Secrets};
use crate::report::text::Ended;

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
    /// Stop automation (polls, webhooks, watch windows, automatic promotion) from
    /// deploying to a service until `hoist resume`. Deploys by hand still run.
    Pause {
        service: String,
        /// Why, for the status page and the journal.
        #[arg(long)]
        reason: Option<String>,
    },
    /// Let automation deploy to a service again, after `hoist pause`, a rollback or a
    /// deploy by hand of something other than its track.
    Resume { service: String },
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
    /// `history` read them after all when they go through a daemon: [`remote::source`].)
    fn secrets(&self) -> Secrets {
        match self {
            Command::CheckConfig { .. }
            | Command::Labels { .. }
            | Command::Status { .. }
            | Command::History { .. } => Secrets::Skip,
            Command::Deploy { .. }
            | Command::Rollback { .. }
            | Command::Promote { .. }
            | Command::Pause { .. }
            | Command::Resume { .. }
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
        return ExitCode::from(commands::check_config(&cli.config, unit.as_deref()));
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
    let invocation = Invocation {
        config,
        path: &cli.config,
        url: cli.url,
        terminal,
    };
    match runtime.block_on(commands::run(cli.command, invocation)) {
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

/// Tells how a rollout ended (on stderr, why it failed); its exit code.
fn ended(end: &Ended, error: Option<&str>) -> u8 {
    println!("{end}");
    if end.outcome.is_success() {
        return 0;
    }
    if let Some(e) = error {
        eprintln!("error: {e}");
    }
    FAILED
}
