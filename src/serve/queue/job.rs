//! What the queue is asked to do: a [`Job`] (target, trigger, a package event's claim),
//! how a waiting one is kept in the state database, and what became of a submission.

use crate::image::Digest;
use crate::rollout::Target;
use crate::serve::automation::Act;
use crate::store::PendingRow;
use crate::store::deliveries::DeliveryId;

/// A request to bring a service up to date.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Job {
    pub target: Target,
    /// For the journal: "webhook package (delivery 123)", "poll", "promote from web-stage".
    pub trigger: String,
    /// A package event's claim, checked against the registry before deploying anything.
    pub expect: Option<Expected>,
    /// The webhook delivery behind this job, whose outcome is recorded.
    pub delivery: Option<DeliveryId>,
    /// The commit sha or tag the image was built from, for GitHub's deployment record.
    pub git_ref: Option<String>,
    /// What an operator asked for (the admin API); `None`: automation's job, which
    /// `serve::automation` may turn down.
    pub operator: Option<Act>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Expected {
    pub tag: String,
    pub digest: Digest,
}

impl Job {
    pub(crate) fn new(target: Target, trigger: impl Into<String>) -> Job {
        Job {
            target,
            trigger: trigger.into(),
            expect: None,
            delivery: None,
            git_ref: None,
            operator: None,
        }
    }

    /// An operator's job: automation's restraints do not apply to it.
    pub(crate) fn operator(act: Act, target: Target, trigger: impl Into<String>) -> Job {
        Job {
            operator: Some(act),
            ..Job::new(target, trigger)
        }
    }

    pub(super) fn to_row(&self, service: &str) -> PendingRow {
        PendingRow {
            service: service.to_string(),
            target: match &self.target {
                Target::Track => "track".into(),
                Target::Tag(t) => format!("tag:{t}"),
                Target::Digest(d) => format!("digest:{d}"),
            },
            trigger: self.trigger.clone(),
            expect_tag: self.expect.as_ref().map(|e| e.tag.clone()),
            expect_digest: self.expect.as_ref().map(|e| e.digest.to_string()),
            delivery: self
                .delivery
                .as_ref()
                .map(|d| (d.hook.clone(), d.id.clone())),
        }
    }

    pub(super) fn from_row(row: &PendingRow) -> Option<Job> {
        let target = match row.target.split_once(':') {
            None if row.target == "track" => Target::Track,
            Some(("tag", t)) => Target::Tag(t.to_string()),
            Some(("digest", d)) => Target::Digest(Digest::parse(d).ok()?),
            _ => return None,
        };
        let expect = match (&row.expect_tag, &row.expect_digest) {
            (Some(tag), Some(d)) => Some(Expected {
                tag: tag.clone(),
                digest: Digest::parse(d).ok()?,
            }),
            _ => None,
        };
        Some(Job {
            target,
            operator: operator_act(&row.trigger),
            trigger: row.trigger.clone(),
            expect,
            delivery: row
                .delivery
                .clone()
                .map(|(hook, id)| DeliveryId { hook, id }),
            git_ref: None,
        })
    }
}

/// Whose a waiting job was, told by its trigger: the admin API names its own ("api deploy",
/// "api rollback", "promote from web-stage (api)"); everything else is automation's.
fn operator_act(trigger: &str) -> Option<Act> {
    match trigger {
        "api deploy" => Some(Act::Deploy),
        "api rollback" => Some(Act::Rollback),
        t if t.starts_with("promote from ") && t.ends_with(" (api)") => Some(Act::Promote),
        _ => None,
    }
}

/// What became of a submitted job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Submitted {
    /// A worker started on it.
    Started,
    /// It waits for the service's running rollout.
    Queued,
    /// It replaced an older waiting job.
    Replaced,
    /// The daemon is shutting down.
    Closed,
}

impl Submitted {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Submitted::Started => "started",
            Submitted::Queued => "queued",
            Submitted::Replaced => "queued (replaced an older trigger)",
            Submitted::Closed => "refused (shutting down)",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jobs_survive_the_pending_table() {
        let digest = Digest::parse(&format!("sha256:{}", "c".repeat(64))).unwrap();
        for job in [
            Job::new(Target::Track, "poll"),
            Job::operator(Act::Deploy, Target::Tag("v2".into()), "api deploy"),
            Job::operator(Act::Rollback, Target::Track, "api rollback"),
            Job::operator(Act::Promote, Target::Track, "promote from web (api)"),
            Job::new(Target::Track, "promote from web (automatic)"),
            Job {
                target: Target::Digest(digest.clone()),
                trigger: "webhook".into(),
                expect: Some(Expected {
                    tag: "v2".into(),
                    digest,
                }),
                delivery: Some(DeliveryId {
                    hook: "12".into(),
                    id: "72d3162e-cc78-11e3-81ab-4c9367dc0958".into(),
                }),
                git_ref: None,
                operator: None,
            },
        ] {
            assert_eq!(Job::from_row(&job.to_row("web")), Some(job));
        }
    }
}
