//! What a rollout reports as it goes: progress for an [`Observer`] (a terminal, the status
//! page), and the [`Clocks`] that keep a step's waiting apart from hoist's own work.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::image::Digest;
use crate::store::Step;

/// Receives progress, for a terminal or a status page. Log lines are written regardless.
pub(crate) trait Observer: Send + Sync {
    /// After `resolve`, when there is something to deploy: the tag (if any) and digest.
    fn planned(&self, _tag: Option<&str>, _digest: &Digest) {}
    fn started(&self, _step: Step) {}
    fn progress(&self, _step: Step, _message: &str) {}
    fn finished(&self, _step: Step, _elapsed: Duration, _result: Result<&str, &str>) {}
}

/// An observer that only relies on the log lines.
pub(crate) struct Quiet;
impl Observer for Quiet {}

/// Time a step spends outside hoist's own work, kept apart in the journal so that hoist's
/// overhead can be told from the waits it is told to make.
#[derive(Debug, Default)]
pub(crate) struct Clocks {
    /// Waiting on the outside world: the app getting healthy, Traefik, the cord taking
    /// effect, the configured drain, the app stopping.
    waited: Mutex<Duration>,
    /// The Docker engine creating, starting and removing containers.
    engine: Mutex<Duration>,
}

impl Clocks {
    fn add(counter: &Mutex<Duration>, d: Duration) {
        *crate::util::lock(counter) += d;
    }

    pub(super) fn take(&self) -> (Duration, Duration) {
        let take = |m: &Mutex<Duration>| std::mem::take(&mut *crate::util::lock(m));
        (take(&self.waited), take(&self.engine))
    }
}

/// What a step reports to: progress for the observer, and its [`Clocks`].
#[derive(Clone, Copy)]
pub(crate) struct Scope<'a> {
    observer: &'a dyn Observer,
    step: Step,
    clocks: &'a Clocks,
}

impl<'a> Scope<'a> {
    pub(crate) fn new(observer: &'a dyn Observer, step: Step, clocks: &'a Clocks) -> Self {
        Scope {
            observer,
            step,
            clocks,
        }
    }

    pub(crate) fn progress(&self, message: &str) {
        self.observer.progress(self.step, message);
    }

    /// Runs `work`, counting its time as waiting on the outside world.
    pub(crate) async fn wait<T>(&self, work: impl Future<Output = T>) -> T {
        let clock = Instant::now();
        let out = work.await;
        Clocks::add(&self.clocks.waited, clock.elapsed());
        out
    }

    /// Runs `work`, counting its time as the Docker engine's.
    pub(crate) async fn engine<T>(&self, work: impl Future<Output = T>) -> T {
        let clock = Instant::now();
        let out = work.await;
        Clocks::add(&self.clocks.engine, clock.elapsed());
        out
    }
}
