//! Errors of pulling and pushing images.
//!
//! Every message is complete on its own (it names the image and, where it
//! matters, the registry) because the node agent copies it verbatim into the
//! container's waiting message, where a Kubernetes user reads it.

use std::io;

/// Why an image could not be made present (or pushed).
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// The registry has no such repository, tag or digest.
    #[error("{0}")]
    NotFound(String),
    /// The registry refused the credentials (or their absence).
    #[error("{0}")]
    Unauthorized(String),
    /// The image exists but holds no WebAssembly this node can run.
    #[error("{0}")]
    NotWasm(String),
    /// `imagePullPolicy: Never` and the image is not cached.
    #[error("{0}")]
    NeverPull(String),
    /// The registry could not be reached or answered something unusable.
    #[error("{0}")]
    Registry(String),
    /// Reading or writing the node cache failed.
    #[error("{0}: {1}")]
    Io(String, #[source] io::Error),
    /// Downloaded bytes do not hash to the digest they were fetched by.
    #[error("{0}")]
    DigestMismatch(String),
    /// The image string is not a valid reference.
    #[error("{0}")]
    InvalidReference(String),
    /// An imagePullSecret could not be read.
    #[error("{0}")]
    InvalidPullSecret(String),
}

impl ImageError {
    /// The Kubernetes `reason` of the container's waiting state for this error.
    pub fn reason(&self) -> &'static str {
        match self {
            ImageError::NeverPull(_) => "ErrImageNeverPull",
            ImageError::InvalidReference(_) => "InvalidImageName",
            _ => "ErrImagePull",
        }
    }

    pub(crate) fn io(context: impl Into<String>, err: io::Error) -> Self {
        ImageError::Io(context.into(), err)
    }
}

/// The error and all its sources on one line: reqwest's own message ("error
/// sending request") hides the useful part (connection refused, TLS) in the
/// source chain.
pub(crate) fn chain(err: &dyn std::error::Error) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons() {
        assert_eq!(
            ImageError::NeverPull("x".into()).reason(),
            "ErrImageNeverPull"
        );
        assert_eq!(
            ImageError::InvalidReference("x".into()).reason(),
            "InvalidImageName"
        );
        assert_eq!(ImageError::NotWasm("x".into()).reason(), "ErrImagePull");
        assert_eq!(ImageError::NotFound("x".into()).reason(), "ErrImagePull");
    }
}
