//! Everything a rollout needs, built once per process from the config: the Docker engine,
//! the registry client, the state store, Traefik routing and the drain cord. Passed by
//! reference; no global state, so two instances can live in one test process.

use std::sync::Arc;

use crate::config::Config;
use crate::docker::drain::{Cord, CordError};
use crate::docker::engine::{Engine, EngineError};
use crate::docker::service::Lookup;
use crate::registry::Registry;
use crate::store::{Store, StoreError};
use crate::traefik::Routing;

#[derive(Clone)]
pub(crate) struct Context {
    pub config: Arc<Config>,
    pub engine: Engine,
    pub registry: Arc<Registry>,
    pub store: Store,
    pub routing: Routing,
    pub cord: Cord,
    /// Remembered answers to "did the compose definition change?", for `/status`.
    pub drift: crate::docker::compose::drift::Drift,
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum ContextError {
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Cord(#[from] CordError),
}

impl Context {
    /// Where the services' containers are looked up.
    pub(crate) fn lookup(&self) -> Lookup<'_> {
        Lookup {
            engine: &self.engine,
            network: &self.config.traefik.network,
        }
    }

    /// Connects to Docker, opens the state and installs the probe binary.
    pub(crate) async fn open(config: Config) -> Result<Context, ContextError> {
        let engine = Engine::connect(&config.docker).await?;
        let store = Store::open(&config.state.dir)?;
        let cord = Cord::new(&config.state.dir);
        cord.prepare()?;
        Ok(Context {
            registry: Arc::new(Registry::new(&config)),
            routing: Routing::new(&config.traefik),
            config: Arc::new(config),
            engine,
            store,
            cord,
            drift: Default::default(),
        })
    }

    /// The same Docker connection, state and drain cord with a new config: a new registry
    /// client (its credentials) and Traefik routing. The caller keeps `state` and `docker`
    /// as they were (those need a restart).
    pub(crate) fn reconfigured(&self, config: Config) -> Context {
        Context {
            registry: Arc::new(Registry::new(&config)),
            routing: Routing::new(&config.traefik),
            config: Arc::new(config),
            engine: self.engine.clone(),
            store: self.store.clone(),
            cord: self.cord.clone(),
            drift: self.drift.clone(),
        }
    }
}
