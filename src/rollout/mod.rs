//! A rollout: replacing the running container of a compose service with a new image, in
//! named steps that the journal, the logs and the CLI all report by the same words.
//!
//! ```text
//! resolve  target -> digest (registry); find the running container; refuse early
//! pull     image@digest
//! start    new container beside the old one (same config, same Traefik labels)
//! health   wait until Docker reports it healthy          -- fails: remove new, old untouched
//! switch   Traefik lists the new server                  -- fails: drain + remove new
//! drain    cut the old container's cord, wait until Traefik dropped it, wait `drain`,
//!          stop (stop_timeout), remove                   -- fails before stop: old restored
//! record   env file, current/previous digest, journal closed
//! ```
//!
//! Every step is entered in the journal before it acts, so that after a crash `recover`
//! knows how far a rollout got.

pub mod lock;
pub mod recover;
pub mod request;

use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::config::{ServiceConfig, Track};
use crate::context::Context;
use crate::docker::compose::{self, ServiceContainers, Template};
use crate::docker::drain::{self, CordError};
use crate::docker::engine::{ContainerStatus, EngineError, Health, short};
use crate::docker::service::{self, Running};
use crate::envfile::{self, EnvFileError};
use crate::fault;
use crate::image::{self, Digest, Repository};
use crate::registry::{RegistryError, Resolved};
use crate::rollout::lock::{LockError, ServiceLock};
use crate::store::{NewDeploy, Outcome, Resolution, StepRecord, StoreError, millis, now_ms};
use crate::traefik::{self, Confirmation, Routing, RoutingTimeout};

pub use crate::store::Step;

/// What to deploy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
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
pub struct Request {
    pub target: Target,
    /// Why this rollout happens, for the journal ("manual", "rollback", ...).
    pub trigger: String,
    /// Describes this process to whoever finds the service locked.
    pub holder: String,
}

/// Receives progress, for a terminal or a status page. Log lines are written regardless.
pub trait Observer: Send + Sync {
    /// After `resolve`, when there is something to deploy: the tag (if any) and digest.
    fn planned(&self, _tag: Option<&str>, _digest: &Digest) {}
    fn started(&self, _step: Step) {}
    fn progress(&self, _step: Step, _message: &str) {}
    fn finished(&self, _step: Step, _elapsed: Duration, _result: Result<&str, &str>) {}
}

/// An observer that only relies on the log lines.
pub struct Quiet;
impl Observer for Quiet {}

/// Time a step spends outside hoist's own work, kept apart in the journal so that hoist's
/// overhead can be told from the waits it is told to make.
#[derive(Debug, Default)]
pub struct Clocks {
    /// Waiting on the outside world: the app getting healthy, Traefik, the cord taking
    /// effect, the configured drain, the app stopping.
    waited: Mutex<Duration>,
    /// The Docker engine creating, starting and removing containers.
    engine: Mutex<Duration>,
}

impl Clocks {
    fn add(counter: &Mutex<Duration>, d: Duration) {
        *counter.lock().unwrap_or_else(|e| e.into_inner()) += d;
    }

    fn take(&self) -> (Duration, Duration) {
        let take =
            |m: &Mutex<Duration>| std::mem::take(&mut *m.lock().unwrap_or_else(|e| e.into_inner()));
        (take(&self.waited), take(&self.engine))
    }
}

/// What a step reports to: progress for the observer, and its [`Clocks`].
#[derive(Clone, Copy)]
pub struct Scope<'a> {
    observer: &'a dyn Observer,
    step: Step,
    clocks: &'a Clocks,
}

impl<'a> Scope<'a> {
    pub fn new(observer: &'a dyn Observer, step: Step, clocks: &'a Clocks) -> Self {
        Scope {
            observer,
            step,
            clocks,
        }
    }

    pub fn progress(&self, message: &str) {
        self.observer.progress(self.step, message);
    }

    /// Runs `work`, counting its time as waiting on the outside world.
    pub async fn wait<T>(&self, work: impl Future<Output = T>) -> T {
        let clock = Instant::now();
        let out = work.await;
        Clocks::add(&self.clocks.waited, clock.elapsed());
        out
    }

    /// Runs `work`, counting its time as the Docker engine's.
    pub async fn engine<T>(&self, work: impl Future<Output = T>) -> T {
        let clock = Instant::now();
        let out = work.await;
        Clocks::add(&self.clocks.engine, clock.elapsed());
        out
    }
}

/// How a rollout ended.
#[derive(Debug, Clone)]
pub struct Report {
    pub deploy_id: i64,
    pub service: String,
    pub outcome: Outcome,
    /// The step that failed, if one did.
    pub failed_step: Option<Step>,
    pub error: Option<String>,
    pub from: Option<Digest>,
    pub to: Option<Digest>,
}

impl Report {
    pub fn succeeded(&self) -> bool {
        self.outcome.is_success()
    }
}

/// Problems that keep a rollout from starting at all (nothing is journaled).
#[derive(Debug, thiserror::Error)]
pub enum RolloutError {
    #[error(transparent)]
    Lock(#[from] LockError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("recovering an interrupted rollout failed, so nothing was started: {0}")]
    Recover(#[from] recover::RecoverError),
}

/// Why a step failed.
#[derive(Debug, thiserror::Error)]
pub enum StepError {
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
    /// A check refused the rollout before anything was changed.
    #[error("{0}")]
    Refused(String),
    /// The new container did not become healthy.
    #[error("{0}")]
    Unhealthy(String),
}

/// What the resolve step decided.
struct Plan {
    resolved: Resolved,
    old: Running,
    containers: ServiceContainers,
}

/// A started new container.
struct Started {
    id: String,
    ip: Option<String>,
}

/// Runs one rollout of `service`, holding its lock; recovers interrupted rollouts of the
/// service first. Step failures are reported in the [`Report`], not as errors.
pub async fn run(
    ctx: &Context,
    service: &ServiceConfig,
    request: &Request,
    observer: &dyn Observer,
) -> Result<Report, RolloutError> {
    let _lock = ServiceLock::acquire(&ctx.config.state.dir, &service.name, &request.holder)?;
    recover::service(ctx, service).await?;
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
        from: Option<Digest>,
        to: Option<Digest>,
    ) -> Report {
        let (failed_step, error) = failed.map_or((None, None), |(s, e)| (Some(s), Some(e)));
        Report {
            deploy_id: self.id,
            service: self.service.name.clone(),
            outcome,
            failed_step,
            error,
            from,
            to,
        }
    }

    fn scope(&self, step: Step) -> Scope<'_> {
        Scope::new(self.observer, step, &self.clocks)
    }

    /// Takes the new container away again after a failed step.
    async fn withdraw(&self, new: &Started, step: Step) -> Result<(), StepError> {
        retire(self.ctx, self.service, &new.id, self.scope(step)).await
    }

    async fn execute(&self, target: &Target) -> Report {
        let plan = match self.timed(Step::Resolve, self.resolve(target)).await {
            Ok(plan) => plan,
            Err(e) => {
                return self.report(
                    Outcome::Failed,
                    Some((Step::Resolve, e.to_string())),
                    None,
                    None,
                );
            }
        };
        let from = plan.old.digest.clone();
        let to = Some(plan.resolved.digest.clone());
        if plan.old.digest.as_ref() == Some(&plan.resolved.digest) {
            return self.report(Outcome::Noop, None, from, to);
        }
        self.observer
            .planned(plan.resolved.tag.as_deref(), &plan.resolved.digest);
        let fail = |step: Step, outcome: Outcome, e: String| {
            self.report(outcome, Some((step, e)), from.clone(), to.clone())
        };

        if let Err(e) = self.timed(Step::Pull, self.pull(&plan)).await {
            return fail(Step::Pull, Outcome::Failed, e.to_string());
        }

        let new = match self.timed(Step::Start, self.start(&plan)).await {
            Ok(new) => new,
            Err(e) => {
                let cleanup = self.discard_created().await;
                return fail(Step::Start, Outcome::RolledBack, with_cleanup(e, cleanup));
            }
        };

        if let Err(e) = self.timed(Step::Health, self.health(&new)).await {
            let cleanup = self.withdraw(&new, Step::Health).await;
            return fail(Step::Health, Outcome::RolledBack, with_cleanup(e, cleanup));
        }

        if let Err(e) = self.timed(Step::Switch, self.switch(&new)).await {
            let cleanup = self.withdraw(&new, Step::Switch).await;
            return fail(Step::Switch, Outcome::RolledBack, with_cleanup(e, cleanup));
        }

        if let Err(e) = self.timed(Step::Drain, self.drain(&plan.old)).await {
            // The old container was not stopped: give it its cord back and withdraw the new.
            let restored = self.ctx.cord.restore(&plan.old.id).map_err(StepError::from);
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
        self.report(Outcome::Succeeded, None, from, to)
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

    async fn resolve(&self, target: &Target) -> Result<(Plan, String), StepError> {
        let ctx = self.ctx;
        let s = self.service;
        let resolved = match target {
            Target::Track => ctx.registry.resolve_track(&s.image, &s.track).await?,
            Target::Tag(tag) => {
                image::validate_tag(tag).map_err(|e| StepError::Refused(e.to_string()))?;
                Resolved {
                    tag: Some(tag.clone()),
                    digest: ctx.registry.resolve(&s.image, tag).await?,
                }
            }
            Target::Digest(digest) => {
                // A digest already on this machine needs no registry: a rollback must work
                // while the registry is down.
                let local = ctx.engine.inspect_image(&s.image.at(digest)).await.is_ok();
                if !local {
                    ctx.registry.resolve(&s.image, digest.as_str()).await?;
                }
                Resolved {
                    tag: None,
                    digest: digest.clone(),
                }
            }
        };

        let containers = service::containers(ctx.lookup(), s).await?;
        let old = service::single(ctx.lookup(), s, &containers)
            .await
            .map_err(|e| match e {
                service::CurrentError::Engine(e) => StepError::Engine(e),
                refusal => StepError::Refused(refusal.to_string()),
            })?;
        self.check_old(&old)?;

        if let Some(digest) = &old.digest {
            ctx.store
                .seed_current(&s.name, &s.image.to_string(), digest.as_str())?;
        }
        ctx.store.set_resolution(
            self.id,
            &Resolution {
                from_image: Some(&old.image),
                from_digest: old.digest.as_ref().map(Digest::as_str),
                to_image: &s.image.to_string(),
                to_tag: resolved.tag.as_deref(),
                to_digest: resolved.digest.as_str(),
                old_container: Some(&old.id),
            },
        )?;
        let what = match (&resolved.tag, target) {
            (Some(tag), Target::Track) if matches!(s.track, Track::Semver(_)) => {
                format!("{} picked tag {tag}", s.track)
            }
            (Some(tag), _) => format!("tag {tag}"),
            (None, _) => "digest".to_string(),
        };
        let detail = format!(
            "{what} -> {}; running: {} ({})",
            resolved.digest.short(),
            old.digest.as_ref().map_or("unknown digest", Digest::short),
            compose::container_name(&old.inspect),
        );
        Ok((
            Plan {
                resolved,
                old,
                containers,
            },
            detail,
        ))
    }

    /// Refuses what would cause an outage: a container that cannot have a twin, labels
    /// Traefik would not merge, or no cord to drain it by.
    fn check_old(&self, old: &Running) -> Result<(), StepError> {
        let s = self.service;
        let ctx = self.ctx;
        let name = compose::container_name(&old.inspect);
        let blockers =
            compose::side_by_side_blockers(&old.inspect, &s.compose_project, &s.compose_service);
        if !blockers.is_empty() {
            return Err(StepError::Refused(format!(
                "cannot run a second container of {} next to {name}: {}",
                s.name,
                blockers.join("; ")
            )));
        }
        let want = traefik::labels(s, &ctx.config.traefik);
        let labels = old
            .inspect
            .config
            .as_ref()
            .and_then(|c| c.labels.clone())
            .unwrap_or_default();
        let diff = traefik::diff(&labels, &want);
        if !diff.is_empty() {
            let lines: Vec<String> = diff.iter().map(ToString::to_string).collect();
            return Err(StepError::Refused(format!(
                "the running container {name} has different Traefik labels than hoist generates; \
                 Traefik would drop the router while both run (404 for everyone). \
                 Update the compose file with `hoist labels {}` and run `docker compose up -d`:\n{}",
                s.name,
                lines.join("\n")
            )));
        }
        if ip_missing(old, &ctx.config.traefik.network) {
            return Err(StepError::Refused(format!(
                "the running container {name} is not attached to the Traefik network `{}`",
                ctx.config.traefik.network
            )));
        }
        let binds = old
            .inspect
            .host_config
            .as_ref()
            .and_then(|h| h.binds.clone())
            .unwrap_or_default();
        let check = old
            .inspect
            .config
            .as_ref()
            .and_then(|c| c.healthcheck.as_ref());
        if !drain::is_fitted(check, &binds, &ctx.cord) {
            return Err(StepError::Refused(format!(
                "the running container {name} lacks hoist's drain healthcheck or the `{}` mount, so it \
                 could not leave Traefik's pool before stopping. Paste the output of `hoist labels {}` \
                 into the compose file and run `docker compose up -d`",
                ctx.cord.bind(),
                s.name
            )));
        }
        Ok(())
    }

    async fn pull(&self, plan: &Plan) -> Result<((), String), StepError> {
        let ctx = self.ctx;
        let repo = &self.service.image;
        let reference = repo.at(&plan.resolved.digest);
        if let Ok(image) = ctx.engine.inspect_image(&reference).await
            && has_digest(&image.repo_digests, repo, &plan.resolved.digest)
        {
            return Ok(((), format!("{reference} already present")));
        }
        let credentials = ctx.registry.credentials_for(repo);
        let mut last = Instant::now();
        ctx.engine
            .pull(&reference, credentials.as_ref(), repo.registry(), |line| {
                if last.elapsed() >= Duration::from_millis(200) {
                    last = Instant::now();
                    self.scope(Step::Pull).progress(line);
                }
            })
            .await?;
        let image = ctx.engine.inspect_image(&reference).await?;
        if !has_digest(&image.repo_digests, repo, &plan.resolved.digest) {
            return Err(StepError::Refused(format!(
                "the engine pulled {reference} but reports digests {:?}",
                image.repo_digests.unwrap_or_default()
            )));
        }
        Ok(((), format!("pulled {reference}")))
    }

    async fn start(&self, plan: &Plan) -> Result<(Started, String), StepError> {
        let ctx = self.ctx;
        let s = self.service;
        let reference = s.image.at(&plan.resolved.digest);
        let old_image = match plan.old.inspect.image.as_deref() {
            Some(id) => ctx
                .engine
                .inspect_image(id)
                .await
                .ok()
                .and_then(|i| i.config),
            None => None,
        };
        let new_image = ctx.engine.inspect_image(&reference).await?;
        let naming = compose::naming(
            &compose::container_name(&plan.old.inspect),
            &s.compose_project,
            &s.compose_service,
        )
        .ok_or_else(|| StepError::Refused("the running container has a custom name".into()))?;
        let number = plan.containers.next_number();
        let name = compose::numbered_name(naming, &s.compose_project, &s.compose_service, number);
        let labels = traefik::labels(s, &ctx.config.traefik);
        let new = compose::build(Template {
            old: &plan.old.inspect,
            old_image: old_image.as_ref(),
            image: &reference,
            traefik_labels: &labels,
            healthcheck: drain::healthcheck(
                s,
                new_image
                    .config
                    .as_ref()
                    .and_then(|c| c.healthcheck.as_ref()),
            ),
            name: name.clone(),
            number,
            deploy_id: self.id,
        });
        let scope = self.scope(Step::Start);
        let id = scope.engine(ctx.engine.create(&new.name, new.body)).await?;
        ctx.store.set_new_container(self.id, &id)?;
        fault::point("start:created");
        for (network, endpoint) in new.extra_networks {
            scope
                .engine(ctx.engine.connect_network(&network, &id, endpoint))
                .await?;
        }
        scope.engine(ctx.engine.start(&id)).await?;
        let inspect = ctx.engine.inspect(&id).await?;
        let ip = compose::ip_on(&inspect, &ctx.config.traefik.network);
        Ok((
            Started {
                id: id.clone(),
                ip: ip.clone(),
            },
            format!(
                "started {name} ({}) at {}",
                short(&id),
                ip.as_deref().unwrap_or("no address")
            ),
        ))
    }

    /// Creation may have failed after the container existed: find it by its journal label.
    async fn discard_created(&self) -> Result<(), StepError> {
        for c in created_by(self.ctx, self.service, self.id).await? {
            if let Some(id) = c.id {
                self.ctx.engine.remove(&id).await?;
            }
        }
        Ok(())
    }

    async fn health(&self, new: &Started) -> Result<((), String), StepError> {
        let scope = self.scope(Step::Health);
        scope.wait(self.await_healthy(new, scope)).await
    }

    async fn await_healthy(
        &self,
        new: &Started,
        scope: Scope<'_>,
    ) -> Result<((), String), StepError> {
        let ctx = self.ctx;
        let timeout = self.service.health_timeout;
        let clock = Instant::now();
        let mut last_report = Instant::now();
        loop {
            let inspect = match ctx.engine.inspect(&new.id).await {
                Ok(i) => i,
                Err(e) if e.is_not_found() => {
                    return Err(StepError::Unhealthy("the new container disappeared".into()));
                }
                Err(e) => return Err(e.into()),
            };
            let status = ContainerStatus::from_inspect(&inspect);
            if status.health == Health::Healthy {
                return Ok((
                    (),
                    format!("healthy after {:.1}s", clock.elapsed().as_secs_f64()),
                ));
            }
            if !status.running || status.restarting || inspect.restart_count.unwrap_or(0) > 0 {
                let logs = ctx.engine.logs_tail(&new.id, 20).await;
                return Err(StepError::Unhealthy(format!(
                    "the new container exited (code {}) before becoming healthy; last output:\n{}",
                    status.exit_code.unwrap_or(-1),
                    indent(&logs)
                )));
            }
            if clock.elapsed() >= timeout {
                return Err(StepError::Unhealthy(format!(
                    "not healthy after {}s (health: {}); last probe: {}",
                    timeout.as_secs(),
                    status.health.as_str(),
                    status.last_probe.as_deref().unwrap_or("none yet")
                )));
            }
            if last_report.elapsed() >= Duration::from_secs(1) {
                last_report = Instant::now();
                scope.progress(&format!(
                    "{} {:.0}s/{}s{}",
                    status.health.as_str(),
                    clock.elapsed().as_secs_f64(),
                    timeout.as_secs(),
                    status
                        .last_probe
                        .map(|p| format!(" (last probe: {p})"))
                        .unwrap_or_default()
                ));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    async fn switch(&self, new: &Started) -> Result<((), String), StepError> {
        let Some(ip) = &new.ip else {
            return Err(StepError::Refused(format!(
                "the new container has no address on the Traefik network `{}`",
                self.ctx.config.traefik.network
            )));
        };
        let url = Routing::server_url(ip, self.service.port);
        let how = self
            .scope(Step::Switch)
            .wait(
                self.ctx
                    .routing
                    .await_server(&self.service.name, &url, true),
            )
            .await?;
        Ok((
            (),
            match how {
                Confirmation::Api => format!("Traefik routes to {url}"),
                Confirmation::Waited => format!(
                    "waited {:.1}s for Traefik to route to {url} (no api_url)",
                    self.ctx.routing.settle_time().as_secs_f64()
                ),
            },
        ))
    }

    async fn drain(&self, old: &Running) -> Result<((), String), StepError> {
        let detail = take_out(
            self.ctx,
            self.service,
            &old.id,
            old.ip.as_deref(),
            self.scope(Step::Drain),
        )
        .await?;
        Ok(((), detail))
    }

    async fn record(&self, plan: &Plan) -> Result<((), String), StepError> {
        let detail = record_current(
            self.ctx,
            self.service,
            plan.resolved.tag.as_deref(),
            &plan.resolved.digest,
            self.id,
        )?;
        Ok(((), detail))
    }
}

/// Writes the env file and the service's current digest. Idempotent: recovery repeats it.
pub(crate) fn record_current(
    ctx: &Context,
    service: &ServiceConfig,
    tag: Option<&str>,
    digest: &Digest,
    deploy_id: i64,
) -> Result<String, StepError> {
    let reference = service.image.at(digest);
    let mut detail = format!("{} now runs {reference}", service.name);
    if let Some(target) = &service.env_file {
        envfile::set(&target.path, &target.var, &reference)?;
        detail.push_str(&format!(
            "; {}={} in {}",
            target.var,
            digest.short(),
            target.path.display()
        ));
    }
    fault::point("record:env-written");
    ctx.store.set_current(
        &service.name,
        &service.image.to_string(),
        tag,
        digest.as_str(),
        Some(deploy_id),
    )?;
    Ok(detail)
}

/// Takes a serving container out of Traefik's pool, lets in-flight requests finish, then
/// stops and removes it: cut its cord, wait until Docker reports it unhealthy, wait until
/// Traefik dropped it, wait the service's `drain`, stop with `stop_timeout`, remove.
pub(crate) async fn take_out(
    ctx: &Context,
    service: &ServiceConfig,
    id: &str,
    ip: Option<&str>,
    scope: Scope<'_>,
) -> Result<String, StepError> {
    ctx.cord.cut(id)?;
    fault::point("drain:cut");
    let clock = Instant::now();
    // Enough for RETRIES failed probes even if each one times out, plus scheduling slack.
    let patience =
        (drain::INTERVAL + drain::TIMEOUT) * drain::RETRIES as u32 + Duration::from_secs(5);
    let left_pool = scope.wait(async {
        loop {
        match ctx.engine.status(id).await? {
            None => break,
            Some(s) if !s.running || s.health != Health::Healthy => break,
            Some(_) if clock.elapsed() > patience => {
                return Err(StepError::Refused(format!(
                    "container {} still reports healthy {}s after its cord was cut; is {} mounted?",
                    short(id),
                    patience.as_secs(),
                    ctx.cord.bind()
                )));
            }
            Some(_) => {}
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        }
        Ok::<(), StepError>(())
    });
    left_pool.await?;
    let unhealthy_after = clock.elapsed();
    scope.progress(&format!("{} left the pool; waiting for Traefik", short(id)));
    let how = match ip {
        Some(ip) => {
            let url = Routing::server_url(ip, service.port);
            scope
                .wait(ctx.routing.await_server(&service.name, &url, false))
                .await?
        }
        None => {
            scope
                .wait(tokio::time::sleep(ctx.routing.settle_time()))
                .await;
            Confirmation::Waited
        }
    };
    scope.progress(&format!(
        "letting in-flight requests finish ({}s)",
        service.drain.as_secs()
    ));
    scope.wait(tokio::time::sleep(service.drain)).await;
    scope
        .wait(ctx.engine.stop(id, service.stop_timeout))
        .await?;
    fault::point("drain:stopped");
    scope.engine(ctx.engine.remove(id)).await?;
    ctx.cord.restore(id)?;
    Ok(format!(
        "{} unhealthy after {:.1}s, {} Traefik, drained {}s, stopped and removed",
        short(id),
        unhealthy_after.as_secs_f64(),
        match how {
            Confirmation::Api => "confirmed gone from",
            Confirmation::Waited => "waited out",
        },
        service.drain.as_secs()
    ))
}

/// Withdraws a new container after a failed step. If it may be in Traefik's pool (healthy),
/// it is taken out like an old one; otherwise Traefik never routed it and it is removed.
pub(crate) async fn retire(
    ctx: &Context,
    service: &ServiceConfig,
    id: &str,
    scope: Scope<'_>,
) -> Result<(), StepError> {
    let inspect = match ctx.engine.inspect(id).await {
        Ok(i) => i,
        Err(e) if e.is_not_found() => return Ok(()),
        Err(e) => return Err(e.into()),
    };
    let status = ContainerStatus::from_inspect(&inspect);
    if status.running && status.health == Health::Healthy {
        let ip = compose::ip_on(&inspect, &ctx.config.traefik.network);
        take_out(ctx, service, id, ip.as_deref(), scope).await?;
    } else {
        scope.engine(ctx.engine.remove(id)).await?;
        ctx.cord.restore(id)?;
    }
    tracing::info!(service = %service.name, container = short(id), "Removed the new container; the old one keeps serving");
    Ok(())
}

/// Containers of `service` created by journal entry `deploy_id`. Journal ids are only
/// unique within one state database, so the compose labels narrow the search to this
/// service (another hoist, e.g. a test, may use the same ids on the same engine).
pub(crate) async fn created_by(
    ctx: &Context,
    service: &ServiceConfig,
    deploy_id: i64,
) -> Result<Vec<bollard::models::ContainerSummary>, EngineError> {
    ctx.engine
        .containers_with_labels(&[
            (compose::PROJECT, &service.compose_project),
            (compose::SERVICE, &service.compose_service),
            (compose::DEPLOY_LABEL, &deploy_id.to_string()),
        ])
        .await
}

fn has_digest(repo_digests: &Option<Vec<String>>, repo: &Repository, digest: &Digest) -> bool {
    service::has_digests(repo_digests, repo).any(|d| &d == digest)
}

fn ip_missing(old: &Running, network: &str) -> bool {
    old.ip.is_none()
        && !old
            .inspect
            .network_settings
            .as_ref()
            .and_then(|n| n.networks.as_ref())
            .is_some_and(|n| n.contains_key(network))
}

fn with_cleanup(error: StepError, cleanup: Result<(), StepError>) -> String {
    match cleanup {
        Ok(()) => error.to_string(),
        Err(c) => format!("{error}; and cleaning up failed: {c}"),
    }
}

fn indent(text: &str) -> String {
    if text.is_empty() {
        return "    (no output)".into();
    }
    text.lines()
        .map(|l| format!("    {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}
