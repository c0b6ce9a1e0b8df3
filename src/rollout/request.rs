//! What an operator's deploy or rollback asks for, decided once for the command line and
//! the admin API.

use crate::image::{Digest, ImageError};
use crate::rollout::Target;
use crate::store::{Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub(crate) enum TargetError {
    #[error("give a tag or a digest, not both")]
    TagAndDigest,
    #[error(transparent)]
    Digest(ImageError),
}

/// A deploy's target: the tag or the digest asked for, else the tracked tag. The tag's
/// grammar is left to the resolve step, which refuses a bad one with a journal entry.
pub(crate) fn deploy_target(
    tag: Option<String>,
    digest: Option<&str>,
) -> Result<Target, TargetError> {
    match (tag, digest) {
        (Some(_), Some(_)) => Err(TargetError::TagAndDigest),
        (Some(tag), None) => Ok(Target::Tag(tag)),
        (None, Some(d)) => Digest::parse(d)
            .map(Target::Digest)
            .map_err(TargetError::Digest),
        (None, None) => Ok(Target::Track),
    }
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum RollbackError {
    #[error("{service} has no previous digest recorded")]
    NoPrevious { service: String },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Digest(#[from] ImageError),
}

/// A rollback's target: the digest `service` ran before the one it runs now.
pub(crate) fn rollback_target(store: &Store, service: &str) -> Result<Target, RollbackError> {
    let previous = store
        .service_state(service)?
        .and_then(|state| state.previous_digest)
        .ok_or_else(|| RollbackError::NoPrevious {
            service: service.to_string(),
        })?;
    Ok(Target::Digest(Digest::parse(&previous)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deploy_targets() {
        let d = format!("sha256:{}", "ab".repeat(32));
        assert!(matches!(deploy_target(None, None), Ok(Target::Track)));
        assert!(matches!(deploy_target(Some("v2".into()), None), Ok(Target::Tag(t)) if t == "v2"));
        assert!(matches!(deploy_target(None, Some(&d)), Ok(Target::Digest(x)) if x.as_str() == d));
        assert_eq!(
            deploy_target(Some("v2".into()), Some(&d))
                .unwrap_err()
                .to_string(),
            "give a tag or a digest, not both"
        );
        assert_eq!(
            deploy_target(None, Some("sha256:xyz"))
                .unwrap_err()
                .to_string(),
            "`sha256:xyz` is not a digest of the form sha256:<64 hex digits>"
        );
    }
}
