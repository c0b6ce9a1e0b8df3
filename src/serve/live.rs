//! The running config and the context built from it, swapped whole when a SIGHUP reload
//! applies a new config. Each request, registry check and rollout takes a snapshot
//! ([`Live::now`]) and keeps it to its end, so a reload never changes a rollout halfway.

use std::sync::{Arc, PoisonError, RwLock};

use crate::context::Context;

#[derive(Clone)]
pub(crate) struct Live {
    current: Arc<RwLock<Context>>,
}

impl Live {
    pub(crate) fn new(ctx: Context) -> Live {
        Live {
            current: Arc::new(RwLock::new(ctx)),
        }
    }

    /// The context as of now: cheap (handles and an `Arc` of the config).
    pub(crate) fn now(&self) -> Context {
        self.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// From now on, new snapshots see `ctx`; snapshots already taken keep theirs.
    pub(crate) fn replace(&self, ctx: Context) {
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = ctx;
    }
}
