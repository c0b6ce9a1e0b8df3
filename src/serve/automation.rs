//! Whether automation may deploy a digest to a service now: decided here, once, for the
//! registry poller, webhook deliveries, watch windows and automatic promotion; and what a
//! finished rollout or an operator changes about it.
//!
//! - **A failed digest is held back.** When a rollout fails because of its image (never
//!   healthy, exited: [`Report::image_fault`]), automation skips that digest for the
//!   service until what automation heads for (the track's digest, or for a promoted
//!   service its source's) is another one. An operator's deploy of it still runs, and one
//!   that succeeds releases the hold.
//! - **Other failures are retried with backoff** (registry, Docker, Traefik, the lock, the
//!   disk): automation waits 10 s after the first, doubling up to 10 min, and tries again.
//!   This part is the daemon's memory only; a restart tries at once.
//! - **The operator wins.** A rollback, or an operator's deploy of something other than
//!   what automation heads for, pauses automation of the service until that moves to a new
//!   digest or `hoist resume`; `hoist pause` pauses it until `hoist resume`.
//!
//! Holds and pauses live in the state database (a restart keeps them) and show in the
//! journal: a held-back digest in the failed rollout's note, a pause in the operator's
//! rollout's note or in a journal entry of its own, as is every resumption.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::config::ServiceConfig;
use crate::context::Context;
use crate::image::{Digest, short_hex};
use crate::rollout::{Report, Target};
use crate::store::{Hold, Outcome, Pause, Store, StoreError, millis, now_ms};
use crate::util::{SHOWN, escape};

/// The first wait after a failure that was not the image's fault; each next one doubles.
const BACKOFF_FIRST: Duration = Duration::from_secs(10);
const BACKOFF_MAX: Duration = Duration::from_secs(10 * 60);
/// How long an operator's rollout waits to learn what automation heads for.
const HEADING_PATIENCE: Duration = Duration::from_secs(5);

/// What an operator's rollout does, as far as automation is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Act {
    Deploy,
    Rollback,
    /// A promotion by hand deploys what automation would: it pauses nothing.
    Promote,
}

/// Why automation leaves a service alone now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Skip {
    Held(Hold),
    Paused(Pause),
    /// The last automatic rollout failed, not by the image's fault; retried after this.
    BackingOff {
        until_ms: i64,
        failures: u32,
    },
}

impl fmt::Display for Skip {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Skip::Held(h) => write!(
                f,
                "digest {} is held back: its rollout failed{} ({})",
                short_hex(&h.digest),
                h.step
                    .as_deref()
                    .map(|s| format!(" at {s}"))
                    .unwrap_or_default(),
                h.reason
            ),
            Skip::Paused(p) if p.until_resumed => {
                write!(
                    f,
                    "automation is paused by {} until resumed ({})",
                    p.by, p.reason
                )
            }
            Skip::Paused(p) => write!(
                f,
                "automation is paused by {} until the track moves or it is resumed ({})",
                p.by, p.reason
            ),
            Skip::BackingOff { until_ms, failures } => write!(
                f,
                "backing off after {failures} failed rollout(s) not caused by the image; next try in {} s",
                (until_ms - now_ms()).max(0) / 1000
            ),
        }
    }
}

/// The daemon's memory of failures that were not the image's fault, per service.
#[derive(Clone, Default)]
pub(crate) struct Automation {
    backoff: Arc<Mutex<HashMap<String, Backoff>>>,
}

#[derive(Debug, Clone, Copy)]
struct Backoff {
    failures: u32,
    /// Milliseconds since the Unix epoch.
    until_ms: i64,
}

impl Automation {
    /// Whether automation may deploy `digest`, what it heads for now, to `s`. Looking also
    /// ends a hold or a pause that `digest` shows to be over. `trigger` names the
    /// automation that asks (for the journal when a pause ends).
    pub(crate) fn admit(
        &self,
        store: &Store,
        s: &ServiceConfig,
        digest: &Digest,
        trigger: &str,
    ) -> Result<(), Skip> {
        stored_restraint(store, s, digest, trigger)?;
        let backoff = crate::util::lock(&self.backoff).get(&s.name).copied();
        match backoff {
            Some(b) if now_ms() < b.until_ms => Err(Skip::BackingOff {
                until_ms: b.until_ms,
                failures: b.failures,
            }),
            _ => Ok(()),
        }
    }

    /// After an automatic rollout (`None`: it could not start): a failure that was not
    /// the image's fault backs off; anything else starts afresh.
    pub(crate) fn automatic_rollout_ended(&self, service: &str, report: Option<&Report>) {
        let mut backoff = crate::util::lock(&self.backoff);
        let surroundings = report.is_none_or(|r| !r.succeeded() && !r.image_fault);
        if !surroundings {
            backoff.remove(service);
            return;
        }
        let failures = backoff.get(service).map_or(0, |b| b.failures) + 1;
        let wait = BACKOFF_FIRST
            .saturating_mul(2u32.saturating_pow(failures.saturating_sub(1).min(16)))
            .min(BACKOFF_MAX);
        tracing::info!(
            service,
            failures,
            retry_in_s = wait.as_secs(),
            "The rollout failed, not because of the image; automation tries again after a backoff"
        );
        backoff.insert(
            service.to_string(),
            Backoff {
                failures,
                until_ms: now_ms() + millis(wait),
            },
        );
    }
}

/// The stored part of [`Automation::admit`]: the hold and the pause.
fn stored_restraint(
    store: &Store,
    s: &ServiceConfig,
    digest: &Digest,
    trigger: &str,
) -> Result<(), Skip> {
    // Not knowing is not a reason to stand still: the rollout would report the broken
    // state database itself.
    let unknown = |e: StoreError| {
        tracing::warn!(service = %s.name, error = %e, "Cannot read whether automation is held back or paused; going ahead");
    };
    match store.hold(&s.name) {
        Ok(Some(hold)) if hold.digest == digest.as_str() => return Err(Skip::Held(hold)),
        Ok(Some(hold)) => {
            if store.clear_hold(&s.name).is_ok() {
                tracing::info!(service = %s.name, held = %hold.digest, digest = %digest,
                    "The track moved on from the held-back digest; releasing it");
            }
        }
        Ok(None) => {}
        Err(e) => unknown(e),
    }
    match store.pause(&s.name) {
        Ok(Some(pause)) if pause.until_resumed => Err(Skip::Paused(pause)),
        Ok(Some(pause)) => match pause.track_digest.as_deref() {
            Some(was) if was != digest.as_str() => {
                let note = format!(
                    "the track moved from {} to {}; automation resumes (paused by {})",
                    short_hex(was),
                    digest.short(),
                    pause.by
                );
                resumed(store, s, trigger, &note);
                Ok(())
            }
            Some(_) => Err(Skip::Paused(pause)),
            None => {
                let _ = store.set_pause_baseline(&s.name, digest.as_str());
                Err(Skip::Paused(Pause {
                    track_digest: Some(digest.to_string()),
                    ..pause
                }))
            }
        },
        Ok(None) => Ok(()),
        Err(e) => {
            unknown(e);
            Ok(())
        }
    }
}

fn resumed(store: &Store, s: &ServiceConfig, by: &str, note: &str) {
    match store.clear_pause(&s.name) {
        Ok(true) => {
            tracing::info!(service = %s.name, by, "Automation resumed: {note}");
            if let Err(e) = store.journal_event(&s.name, &s.environment, by, Outcome::Resumed, note)
            {
                tracing::warn!(service = %s.name, error = %e, "Cannot journal that automation resumed");
            }
        }
        Ok(false) => {}
        Err(e) => {
            tracing::warn!(service = %s.name, error = %e, "Cannot resume automation");
        }
    }
}

/// After any rollout of `s`, automatic or not: `pause_note` (from [`operator_rollout`]) on
/// its journal entry; a digest that failed by its image's fault is held back, one that
/// deployed is released, and the entry's note says so.
pub(crate) fn rollout_ended(
    store: &Store,
    s: &ServiceConfig,
    report: &Report,
    pause_note: Option<&str>,
) {
    if let Some(note) = pause_note {
        note_on(store, s, report.deploy_id, note);
    }
    hold_or_release(store, s, report);
}

fn hold_or_release(store: &Store, s: &ServiceConfig, report: &Report) {
    let Some(digest) = &report.to else {
        return;
    };
    let note = if report.image_fault {
        let reason = report.error.as_deref().unwrap_or("failed");
        let hold = Hold {
            digest: digest.to_string(),
            step: report.failed_step.map(|s| s.as_str().to_string()),
            reason: escape(reason.lines().next().unwrap_or(reason), SHOWN),
            since: now_ms(),
            deploy_id: Some(report.deploy_id),
        };
        if let Err(e) = store.set_hold(&s.name, &hold) {
            tracing::error!(service = %s.name, error = %e, "Cannot record the held-back digest; automation may try it again");
            return;
        }
        tracing::warn!(service = %s.name, digest = %digest, deploy = report.deploy_id,
            "Holding back this digest: it failed by its own fault, so automation will not deploy it again until the track moves on");
        format!(
            "digest {} held back: automation will not deploy it again until the track moves on",
            digest.short()
        )
    } else if report.succeeded()
        && matches!(store.hold(&s.name), Ok(Some(h)) if h.digest == digest.as_str())
    {
        let _ = store.clear_hold(&s.name);
        tracing::info!(service = %s.name, digest = %digest, "The held-back digest deployed; releasing it");
        format!("the hold on digest {} is released", digest.short())
    } else {
        return;
    };
    note_on(store, s, report.deploy_id, &note);
}

fn note_on(store: &Store, s: &ServiceConfig, deploy_id: i64, note: &str) {
    if let Err(e) = store.add_note(deploy_id, note) {
        tracing::warn!(service = %s.name, deploy = deploy_id, error = %e, "Cannot add a note to the journal entry");
    }
}

/// What automation heads for now: the track's digest in the registry, or for a promoted
/// service the digest its source runs as recorded. `None` when it cannot be told.
pub(crate) async fn heading(ctx: &Context, s: &ServiceConfig) -> Option<Digest> {
    match &s.promote_from {
        Some(from) => {
            let state = ctx.store.service_state(from).ok().flatten()?;
            Digest::parse(&state.digest).ok()
        }
        None => ctx
            .registry
            .resolve_track(&s.image, &s.track)
            .await
            .ok()
            .map(|r| r.digest),
    }
}

/// Before an operator's rollout of `target` to `s` (`by` is its trigger): a rollback, or
/// a deploy of something other than what automation heads for, pauses automation. Returns
/// the note for the rollout's journal entry ([`rollout_ended`]).
pub(crate) async fn operator_rollout(
    ctx: &Context,
    s: &ServiceConfig,
    act: Act,
    target: &Target,
    by: &str,
) -> Option<String> {
    if act == Act::Promote {
        return None;
    }
    // An explicit pause outlasts whatever the operator does meanwhile.
    if matches!(ctx.store.pause(&s.name), Ok(Some(p)) if p.until_resumed) {
        return None;
    }
    // A rollback must not wait on a registry that hangs (it needs none): past this, the
    // pause takes what automation heads for at its next look.
    let heading = tokio::time::timeout(HEADING_PATIENCE, heading(ctx, s))
        .await
        .ok()
        .flatten();
    let reason = if act == Act::Rollback {
        "rolled back by an operator".to_string()
    } else {
        let wanted = match target {
            Target::Digest(d) => Some(d.clone()),
            Target::Tag(t) => ctx.registry.resolve(&s.image, t).await.ok(),
            Target::Track => ctx
                .registry
                .resolve_track(&s.image, &s.track)
                .await
                .ok()
                .map(|r| r.digest),
        };
        if heading.is_some() && heading == wanted {
            return None;
        }
        let what = match target {
            Target::Track => format!("the track {}", s.track),
            Target::Tag(t) => format!("tag {}", escape(t, 64)),
            Target::Digest(d) => format!("digest {}", d.short()),
        };
        let heads = match (&s.promote_from, &heading) {
            (_, None) => "what automation would deploy is not known".to_string(),
            (Some(from), Some(h)) => format!("{from} runs {}", h.short()),
            (None, Some(h)) => format!("the track {} is at {}", s.track, h.short()),
        };
        format!("an operator deployed {what}; {heads}")
    };
    let pause = Pause {
        by: by.to_string(),
        reason,
        since: now_ms(),
        track_digest: heading.map(|d| d.to_string()),
        until_resumed: false,
    };
    if let Err(e) = ctx.store.set_pause(&s.name, &pause) {
        tracing::error!(service = %s.name, error = %e, "Cannot pause automation; it may undo this rollout");
        return None;
    }
    tracing::info!(service = %s.name, by, reason = %pause.reason,
        "Automation paused until the track moves to a new digest or `hoist resume`");
    Some(format!(
        "automation paused until the track moves to a new digest or `hoist resume`: {}",
        pause.reason
    ))
}

/// `hoist pause`: automation of `s` stops until `hoist resume`.
pub(crate) fn pause(
    store: &Store,
    s: &ServiceConfig,
    by: &str,
    reason: Option<&str>,
) -> Result<Pause, StoreError> {
    let pause = Pause {
        by: escape(by, 100),
        reason: reason.map_or_else(|| "paused by an operator".to_string(), |r| escape(r, SHOWN)),
        since: now_ms(),
        track_digest: None,
        until_resumed: true,
    };
    store.set_pause(&s.name, &pause)?;
    store.journal_event(
        &s.name,
        &s.environment,
        &pause.by,
        Outcome::Paused,
        &format!("automation paused until `hoist resume`: {}", pause.reason),
    )?;
    tracing::info!(service = %s.name, by = %pause.by, reason = %pause.reason, "Automation paused until `hoist resume`");
    Ok(pause)
}

/// `hoist resume`: automation of `s` goes on. Returns the pause it ended, if there was one.
pub(crate) fn resume(
    store: &Store,
    s: &ServiceConfig,
    by: &str,
) -> Result<Option<Pause>, StoreError> {
    let Some(pause) = store.pause(&s.name)? else {
        return Ok(None);
    };
    let by = escape(by, 100);
    let note = format!(
        "automation resumed (paused by {}: {})",
        pause.by, pause.reason
    );
    if store.clear_pause(&s.name)? {
        store.journal_event(&s.name, &s.environment, &by, Outcome::Resumed, &note)?;
        tracing::info!(service = %s.name, by = %by, "Automation resumed");
    }
    Ok(Some(pause))
}

#[cfg(test)]
mod tests;
