//! What the command line prints: the `hoist status` table, `hoist history` lines, how a
//! rollout ended, and step timings.

use std::fmt;
use std::time::Duration;

use crate::image::short_hex;
use crate::report::page;
use crate::report::status::{Document, ServiceView, State};
use crate::store::{Deploy, Outcome};

const COLUMNS: [&str; 8] = [
    "SERVICE",
    "ENV",
    "STATE",
    "HEALTH",
    "DEPLOYED",
    "SINCE",
    "BY",
    "LAST ROLLOUT",
];

/// The compact table of `hoist status`, then a line per problem.
pub(crate) fn format_status(doc: &Document) -> String {
    let mut rows = vec![COLUMNS.map(String::from)];
    let mut problems = Vec::new();
    let mut restraints = Vec::new();
    for s in &doc.services {
        rows.push(status_row(s, doc.generated_at));
        problems.extend(service_problems(s));
        restraints.extend(service_restraints(s, doc.generated_at));
    }
    let mut out = table(&rows);
    for p in problems {
        out.push_str(&format!("! {p}\n"));
    }
    for r in restraints {
        out.push_str(&format!("- {r}\n"));
    }
    out
}

/// Under the problems: a digest held back and paused automation, with why and since when.
fn service_restraints(s: &ServiceView, now: i64) -> Vec<String> {
    let mut lines = Vec::new();
    if let Some(h) = &s.held_back {
        lines.push(format!(
            "{}: holding back {} since {}: failed{}: {}",
            s.name,
            short_hex(&h.digest),
            page::relative(h.since, now),
            h.step
                .as_deref()
                .map(|st| format!(" at {st}"))
                .unwrap_or_default(),
            h.reason
        ));
    }
    if let Some(p) = &s.paused {
        let until = if p.until_resumed {
            "until resumed"
        } else {
            "until the track moves or it is resumed"
        };
        lines.push(format!(
            "{}: automation paused since {} by {} ({until}): {}",
            s.name,
            page::relative(p.since, now),
            p.by,
            p.reason
        ));
    }
    lines
}

/// `hoist status --json`: through a `Value`, whose keys are sorted, as it has always
/// printed them.
pub(crate) fn status_json(doc: &Document) -> serde_json::Result<String> {
    serde_json::to_string_pretty(&serde_json::to_value(doc)?)
}

fn status_row(s: &ServiceView, now: i64) -> [String; 8] {
    let state = match (s.state, &s.step) {
        (State::Rolling, Some(step)) => format!("rolling:{step}"),
        (state, _) => state.as_str().to_string(),
    };
    let deployed = match (&s.digest, &s.tag) {
        (Some(d), Some(t)) => format!("{t}@{}", short_hex(d)),
        (Some(d), None) => short_hex(d).to_string(),
        (None, _) => "-".into(),
    };
    let since = s
        .deployed_at
        .map_or("-".into(), |at| page::relative(at, now));
    let last = s
        .last_rollout
        .as_ref()
        .map_or("-".into(), |r| format!("#{} {}", r.id, r.outcome.as_str()));
    [
        s.name.clone(),
        s.environment.clone(),
        state,
        s.health.clone(),
        deployed,
        since,
        s.deployed_by.clone().unwrap_or_else(|| "-".into()),
        last,
    ]
}

/// Under the table: the first line of an unsuccessful last rollout's error, a compose
/// definition that changed since the containers were created, and the last poll's error.
fn service_problems(s: &ServiceView) -> Vec<String> {
    let mut problems = Vec::new();
    // A failure whose digest is held back is told by its own line (the old version
    // serves on; nothing to fix).
    let held = |id: i64| {
        s.held_back
            .as_ref()
            .is_some_and(|h| h.deploy_id == Some(id))
    };
    if let Some(r) = &s.last_rollout
        && let Some(e) = &r.error
        && r.outcome.is_finished()
        && !r.outcome.is_success()
        && !held(r.id)
    {
        problems.push(format!("{}: {}", s.name, e.lines().next().unwrap_or(e)));
    }
    if s.compose_changed {
        problems.push(format!(
            "{}: the compose definition changed since its containers were created; \
             `hoist deploy {}` rolls it out",
            s.name, s.name
        ));
    }
    if let Some(e) = &s.last_poll_error {
        problems.push(format!("{}: poll: {e}", s.name));
    }
    problems
}

/// Each column as wide as its widest cell, two spaces apart, no blanks at line ends.
fn table(rows: &[[String; 8]]) -> String {
    let widths: Vec<usize> = (0..8)
        .map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for r in rows {
        let line: Vec<String> = r
            .iter()
            .zip(&widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    out
}

/// One journal entry of `hoist history`: a summary line, its steps, its error.
pub(crate) fn format_deploy(d: &Deploy) -> String {
    let when = humantime::format_rfc3339_seconds(
        std::time::UNIX_EPOCH + Duration::from_millis(u64::try_from(d.started_at).unwrap_or(0)),
    );
    let total = d
        .finished_at
        .map(|f| format!("{:.1}s", (f - d.started_at) as f64 / 1000.0))
        .unwrap_or_else(|| "-".into());
    let short = |digest: &Option<String>| digest.as_deref().map_or("?", short_hex).to_string();
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
    if let Some(note) = &d.note {
        out.push_str(&format!("       note: {note}\n"));
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

pub(crate) fn format_ms(ms: i64) -> String {
    if ms < 1000 {
        format!("{ms}ms")
    } else {
        format!("{:.1}s", ms as f64 / 1000.0)
    }
}

/// How a rollout ended, in one line, the same whether it ran in the CLI or in the daemon.
pub(crate) struct Ended<'a> {
    pub service: &'a str,
    pub outcome: Outcome,
    /// The digest rolled to, shortened, or `-`.
    pub to: &'a str,
    /// The step that failed, or `-`.
    pub step: &'a str,
    pub deploy_id: i64,
}

impl fmt::Display for Ended<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (service, to, id) = (self.service, self.to, self.deploy_id);
        match self.outcome {
            Outcome::Succeeded => write!(f, "{service} deployed {to} (deploy #{id})"),
            Outcome::Noop => write!(
                f,
                "{service} already runs {to}; nothing to do (deploy #{id})"
            ),
            outcome => write!(
                f,
                "{service} {}: {} step failed (deploy #{id})",
                outcome.as_str().replace('_', " "),
                self.step
            ),
        }
    }
}

#[cfg(test)]
mod tests;
