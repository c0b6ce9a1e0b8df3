//! A rollout: replacing the running container of a compose service with a new image, in
//! named steps that the journal, the logs and the CLI all report by the same words.
//!
//! ```text
//! resolve  target -> digest (registry); find the N running containers and the compose
//!          project that created them; refuse early
//! pull     image@digest
//! start    the project's compose creates N new containers beside the old ones
//!          (`up -d --no-deps --no-recreate --scale service=2N`, the image in env_var)
//! health   wait until Docker reports all N healthy       -- fails: remove new, old untouched
//! switch   Traefik lists the new servers                 -- fails: drain + remove new
//! drain    cut the old containers' cords, wait until Traefik dropped them, wait `drain`,
//!          stop (their own stop signal and grace), remove -- fails before stop: old restored
//! record   env file, current/previous digest, journal closed
//! ```
//!
//! Every step is entered in the journal before it acts, so that after a crash `recover`
//! knows how far a rollout got.

mod definition;
pub(crate) mod lock;
mod observe;
mod preflight;
pub(crate) mod recover;
pub(crate) mod request;
mod steps;
mod withdraw;

use std::time::Instant;

use crate::config::ServiceConfig;
use crate::context::Context;
use crate::docker::drain::CordError;
use crate::docker::engine::EngineError;
use crate::docker::service::Running;
use crate::envfile::EnvFileError;
use crate::fault;
use crate::image::Digest;
use crate::registry::{RegistryError, Resolved};
use crate::rollout::lock::LockError;
use crate::store::{NewDeploy, Outcome, StepRecord, StoreError, millis, now_ms};
use crate::traefik::RoutingTimeout;
use withdraw::retire;

pub(crate) use crate::store::Step;
pub(crate) use observe::{Clocks, Observer, Quiet, Scope};

/// What to deploy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Target {
    /// The service's configured `track`.
    Track,
    Tag(String),
    Digest(Digest),
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Track => f.write_str("track"),
            Target::Tag(t) => f.write_str(t),
            Target::Digest(d) => write!(f, "{d}"),
        }
    }
}

#[derive(Debug, Clone)]
pub(crate) struct Request {
    pub target: Target,
    /// Why this rollout happens, for the journal ("manual", "rollback", ...).
    pub trigger: String,
    /// Describes this process to whoever finds the service locked.
    pub holder: String,
}

/// How a rollout ended.
#[derive(Debug, Clone)]
pub(crate) struct Report {
    pub deploy_id: i64,
    pub outcome: Outcome,
    /// The step that failed, if one did.
    pub failed_step: Option<Step>,
    pub error: Option<String>,
    pub to: Option<Digest>,
    /// The rollout failed because of the image it rolled to (it never became healthy or
    /// exited), not because of the registry, Docker, Traefik or the disk: the same digest
    /// would fail again.
    pub image_fault: bool,
}

impl Report {
    pub(crate) fn succeeded(&self) -> bool {
        self.outcome.is_success()
    }
}

/// Problems outside the steps: the service is locked or its recovery failed (nothing was
/// started), or the journal could not be written, at the start or after the steps ran.
#[derive(Debug, thiserror::Error)]
pub(crate) enum RolloutError {
    #[error(transparent)]
    Lock(#[from] LockError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("recovering an interrupted rollout failed, so nothing was started: {0}")]
    Recover(#[from] recover::RecoverError),
}

impl From<recover::LockedError> for RolloutError {
    fn from(e: recover::LockedError) -> Self {
        match e {
            recover::LockedError::Lock(e) => RolloutError::Lock(e),
            recover::LockedError::Recover(e) => RolloutError::Recover(e),
        }
    }
}

/// Why a step failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum StepError {
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Cord(#[from] CordError),
    #[error(transparent)]
    Routing(#[from] RoutingTimeout),
    #[error(transparent)]
    EnvFile(#[from] EnvFileError),
    /// The compose CLI could not be found or run, or refused the project.
    #[error("{0}")]
    Compose(String),
    /// A check refused to go on (in resolve, before anything was changed; later, what the
    /// failed step had changed is undone like for any other failure).
    #[error("{0}")]
    Refused(String),
    /// The new container did not become healthy.
    #[error("{0}")]
    Unhealthy(String),
}

impl StepError {
    /// Whether the image is to blame: its container never became healthy or exited. Every
    /// other failure (registry, Docker, Traefik, the disk, a refusal about the running
    /// container or the config) would not follow the digest to another attempt.
    pub(crate) fn is_the_images_fault(&self) -> bool {
        matches!(self, StepError::Unhealthy(_))
    }
}

/// What the resolve step decided.
struct Plan {
    resolved: Resolved,
    /// The running containers, lowest container-number first.
    old: Vec<Running>,
    definition: definition::Definition,
    /// Where Traefik routes the service's containers, from the running ones' labels.
    route: crate::traefik::Route,
}

impl Plan {
    fn old_ids(&self) -> Vec<String> {
        self.old.iter().map(|o| o.id.clone()).collect()
    }

    /// Nothing to do: every container runs the target, from the current definition.
    fn is_noop(&self) -> bool {
        !self.definition.drift
            && self
                .old
                .iter()
                .all(|o| o.digest.as_ref() == Some(&self.resolved.digest))
    }
}

/// A started new container.
struct Started {
    id: String,
    name: String,
    ip: Option<String>,
}

/// Runs one rollout of `service`, holding its lock; recovers interrupted rollouts of the
/// service first. Step failures are reported in the [`Report`], not as errors.
pub(crate) async fn run(
    ctx: &Context,
    service: &ServiceConfig,
    request: &Request,
    observer: &dyn Observer,
) -> Result<Report, RolloutError> {
    let _lock = recover::locked(ctx, service, &request.holder).await?;
    let target = match &request.target {
        Target::Track => service.track.to_string(),
        other => other.to_string(),
    };
    let id = ctx.store.begin_deploy(&NewDeploy {
        service: &service.name,
        environment: &service.environment,
        trigger: &request.trigger,
        target: &target,
    })?;
    tracing::info!(service = %service.name, deploy = id, target = %target, trigger = %request.trigger, "Deploying");
    let rollout = Rollout {
        ctx,
        service,
        id,
        observer,
        clocks: Clocks::default(),
    };
    let report = rollout.execute(&request.target).await;
    let error = report.error.as_deref();
    ctx.store.finish_deploy(id, report.outcome, error)?;
    match report.outcome {
        Outcome::Succeeded => tracing::info!(service = %service.name, deploy = id,
            digest = %report.to.as_ref().map(Digest::as_str).unwrap_or("-"), "Deployed"),
        Outcome::Noop => {
            tracing::info!(service = %service.name, deploy = id, "Already running the target; nothing to do")
        }
        outcome => tracing::warn!(service = %service.name, deploy = id, outcome = outcome.as_str(),
            step = report.failed_step.map(Step::as_str).unwrap_or("-"), error = error.unwrap_or("-"), "Rollout did not complete"),
    }
    Ok(report)
}

struct Rollout<'a> {
    ctx: &'a Context,
    service: &'a ServiceConfig,
    id: i64,
    observer: &'a dyn Observer,
    clocks: Clocks,
}

impl Rollout<'_> {
    fn report(
        &self,
        outcome: Outcome,
        failed: Option<(Step, String)>,
        to: Option<Digest>,
    ) -> Report {
        let (failed_step, error) = failed.map_or((None, None), |(s, e)| (Some(s), Some(e)));
        Report {
            deploy_id: self.id,
            outcome,
            failed_step,
            error,
            to,
            image_fault: false,
        }
    }

    fn scope(&self, step: Step) -> Scope<'_> {
        Scope::new(self.observer, step, &self.clocks)
    }

    /// Takes the new containers away again after a failed step.
    async fn withdraw(&self, new: &[Started], step: Step) -> Result<(), StepError> {
        for n in new {
            retire(self.ctx, self.service, &n.id, self.scope(step)).await?;
        }
        Ok(())
    }

    async fn execute(&self, target: &Target) -> Report {
        let plan = match self.timed(Step::Resolve, self.resolve(target)).await {
            Ok(plan) => plan,
            Err(e) => {
                return self.report(Outcome::Failed, Some((Step::Resolve, e.to_string())), None);
            }
        };
        let to = Some(plan.resolved.digest.clone());
        if plan.is_noop() {
            return self.report(Outcome::Noop, None, to);
        }
        self.observer
            .planned(plan.resolved.tag.as_deref(), &plan.resolved.digest);
        let fail = |step: Step, outcome: Outcome, e: String| {
            self.report(outcome, Some((step, e)), to.clone())
        };

        if let Err(e) = self.timed(Step::Pull, self.pull(&plan)).await {
            return fail(Step::Pull, Outcome::Failed, e.to_string());
        }

        let new = match self.timed(Step::Start, self.start(&plan)).await {
            Ok(new) => new,
            Err(e) => {
                let cleanup = self.discard_created(&plan).await;
                return fail(Step::Start, Outcome::RolledBack, with_cleanup(e, cleanup));
            }
        };

        if let Err(e) = self.timed(Step::Health, self.health(&new)).await {
            let image_fault = e.is_the_images_fault();
            let cleanup = self.withdraw(&new, Step::Health).await;
            return Report {
                image_fault,
                ..fail(Step::Health, Outcome::RolledBack, with_cleanup(e, cleanup))
            };
        }

        if let Err(e) = self
            .timed(Step::Switch, self.switch(&new, &plan.route))
            .await
        {
            let cleanup = self.withdraw(&new, Step::Switch).await;
            return fail(Step::Switch, Outcome::RolledBack, with_cleanup(e, cleanup));
        }

        if let Err(e) = self.timed(Step::Drain, self.drain(&plan)).await {
            // The old containers were not stopped: give them their cords back and withdraw
            // the new.
            let restored = plan
                .old
                .iter()
                .try_for_each(|o| self.ctx.cord.restore(&o.id))
                .map_err(StepError::from);
            let cleanup = self.withdraw(&new, Step::Drain).await;
            return fail(
                Step::Drain,
                Outcome::RolledBack,
                with_cleanup(e, restored.and(cleanup)),
            );
        }

        if let Err(e) = self.timed(Step::Record, self.record(&plan)).await {
            // The new version serves; only the bookkeeping failed. Say so loudly.
            return fail(
                Step::Record,
                Outcome::Failed,
                format!("the new version is serving, but recording it failed: {e}"),
            );
        }
        self.report(Outcome::Succeeded, None, to)
    }

    /// Enters `step` in the journal, runs it, and records its duration and result.
    async fn timed<T>(
        &self,
        step: Step,
        work: impl Future<Output = Result<(T, String), StepError>>,
    ) -> Result<T, StepError> {
        if let Err(e) = self.ctx.store.enter_step(self.id, step) {
            return Err(e.into());
        }
        fault::point(step.as_str());
        self.observer.started(step);
        self.clocks.take();
        let started_at = now_ms();
        let clock = Instant::now();
        let result = work.await;
        let elapsed = clock.elapsed();
        let (waited, engine) = self.clocks.take();
        let (ok, detail) = match &result {
            Ok((_, detail)) => (true, detail.clone()),
            Err(e) => (false, e.to_string()),
        };
        tracing::info!(service = %self.service.name, deploy = self.id, step = step.as_str(),
            ms = elapsed.as_millis() as u64, waited_ms = waited.as_millis() as u64, engine_ms = engine.as_millis() as u64, ok, "{detail}");
        self.observer
            .finished(step, elapsed, if ok { Ok(&detail) } else { Err(&detail) });
        self.ctx.store.record_step(
            self.id,
            &StepRecord {
                step: step.as_str().to_string(),
                started_at,
                duration_ms: millis(elapsed),
                waited_ms: millis(waited),
                engine_ms: millis(engine),
                ok,
                detail: Some(detail),
            },
        )?;
        result.map(|(value, _)| value)
    }
}

fn with_cleanup(error: StepError, cleanup: Result<(), StepError>) -> String {
    match cleanup {
        Ok(()) => error.to_string(),
        Err(c) => format!("{error}; and cleaning up failed: {c}"),
    }
}
