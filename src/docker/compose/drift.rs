//! Whether a service's compose definition changed since its running container was created,
//! remembered between asks: `/status` is asked for every few seconds (the page refreshes
//! every 5 s), and each fresh answer runs compose twice (`version`, `config --hash`), about
//! a tenth of a second of CPU per service. An answer is reused while the running container
//! and the project's files (their size and modification time) are the same, for at most
//! [`REUSE`] (files that a compose file includes are not watched).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use super::cli::{self, ComposeError, Project};
use crate::config::{ComposeConfig, ServiceConfig};
use crate::docker::inspect::Container;

/// The longest an answer is reused.
const REUSE: Duration = Duration::from_secs(60);

/// What an answer depends on.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Stamp {
    container: String,
    image: String,
    files: Vec<(PathBuf, Option<(SystemTime, u64)>)>,
}

/// One remembered answer: what it depended on, when it was found, and whether the
/// definition changed.
struct Answer {
    stamp: Stamp,
    at: Instant,
    changed: bool,
}

#[derive(Clone, Default)]
pub(crate) struct Drift {
    answers: Arc<Mutex<HashMap<String, Answer>>>,
}

impl Drift {
    /// [`cli::definition_changed`], reused while nothing it depends on changed.
    pub(crate) async fn changed(
        &self,
        compose: &ComposeConfig,
        docker_host: Option<&str>,
        s: &ServiceConfig,
        running: &Container,
    ) -> Result<bool, ComposeError> {
        let stamp = stamp(s, running);
        if let Some(stamp) = &stamp
            && let Some(answer) = crate::util::lock(&self.answers).get(&s.name)
            && answer.stamp == *stamp
            && answer.at.elapsed() < REUSE
        {
            return Ok(answer.changed);
        }
        let changed = cli::definition_changed(compose, docker_host, s, running).await?;
        if let Some(stamp) = stamp {
            let answer = Answer {
                stamp,
                at: Instant::now(),
                changed,
            };
            crate::util::lock(&self.answers).insert(s.name.clone(), answer);
        }
        Ok(changed)
    }
}

/// The running container and the project's files as they are now; `None` when the project
/// cannot be located (then nothing is remembered).
fn stamp(s: &ServiceConfig, running: &Container) -> Option<Stamp> {
    let project = Project::locate(&s.compose_project, running, &s.compose).ok()?;
    let mut paths = project.files.clone();
    paths.extend(project.env_file.clone());
    paths.push(project.working_dir.join(".env"));
    paths.extend(s.env_file.iter().map(|t| t.path.clone()));
    let files = paths
        .into_iter()
        .map(|path| {
            let seen = std::fs::metadata(&path)
                .ok()
                .and_then(|m| Some((m.modified().ok()?, m.len())));
            (path, seen)
        })
        .collect();
    Some(Stamp {
        container: running.id().to_string(),
        image: running.configured_image().to_string(),
        files,
    })
}
