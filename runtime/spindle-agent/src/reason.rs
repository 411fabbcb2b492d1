//! The reasons a container status gives, as types: why a container waits
//! ([`Waiting`]), how a run ended ([`ExitReason`]), and why a runtime could not start or
//! reach a container ([`RuntimeError`]). Each renders to the exact string the kubelet
//! writes, since users and tools match on them.

use std::fmt;

/// `state.waiting.reason` of a container status.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Waiting {
    /// Init containers have not all completed yet.
    PodInitializing,
    /// Volumes, sandbox or image are being prepared (also while a volume or the pod's
    /// network cannot be set up: the kubelet keeps the pod there and retries).
    ContainerCreating,
    ErrImagePull,
    ImagePullBackOff,
    ErrImageNeverPull,
    InvalidImageName,
    /// The container's config cannot be built (a missing ConfigMap key, a refused
    /// securityContext).
    CreateContainerConfigError,
    /// The runtime could not create the container.
    CreateContainerError,
    CrashLoopBackOff,
}

impl Waiting {
    pub fn as_str(self) -> &'static str {
        match self {
            Waiting::PodInitializing => "PodInitializing",
            Waiting::ContainerCreating => "ContainerCreating",
            Waiting::ErrImagePull => "ErrImagePull",
            Waiting::ImagePullBackOff => "ImagePullBackOff",
            Waiting::ErrImageNeverPull => "ErrImageNeverPull",
            Waiting::InvalidImageName => "InvalidImageName",
            Waiting::CreateContainerConfigError => "CreateContainerConfigError",
            Waiting::CreateContainerError => "CreateContainerError",
            Waiting::CrashLoopBackOff => "CrashLoopBackOff",
        }
    }

    /// The reason of an image that could not be made present.
    pub fn of_image_error(e: &spindle_image::ImageError) -> Waiting {
        match e {
            spindle_image::ImageError::NeverPull(_) => Waiting::ErrImageNeverPull,
            spindle_image::ImageError::InvalidReference(_) => Waiting::InvalidImageName,
            _ => Waiting::ErrImagePull,
        }
    }
}

impl fmt::Display for Waiting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `state.terminated.reason` of a container status.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExitReason {
    Completed,
    Error,
    OOMKilled,
}

impl ExitReason {
    pub fn as_str(self) -> &'static str {
        match self {
            ExitReason::Completed => "Completed",
            ExitReason::Error => "Error",
            ExitReason::OOMKilled => "OOMKilled",
        }
    }

    /// A reason read back from a pod's status (an agent restarted), else what the exit
    /// code says.
    pub fn parse_or(reason: Option<&str>, code: i32) -> ExitReason {
        match reason {
            Some("Completed") => ExitReason::Completed,
            Some("Error") => ExitReason::Error,
            Some("OOMKilled") => ExitReason::OOMKilled,
            _ if code == 0 => ExitReason::Completed,
            _ => ExitReason::Error,
        }
    }
}

impl fmt::Display for ExitReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a runtime could not start, check or reach a container: the waiting reason the
/// container shows and the message for its status and event.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct RuntimeError {
    pub reason: Waiting,
    pub message: String,
}

impl RuntimeError {
    /// The container's config is refused (CreateContainerConfigError).
    pub fn config(message: impl Into<String>) -> Self {
        RuntimeError {
            reason: Waiting::CreateContainerConfigError,
            message: message.into(),
        }
    }

    /// The container could not be created (CreateContainerError).
    pub fn create(message: impl Into<String>) -> Self {
        RuntimeError {
            reason: Waiting::CreateContainerError,
            message: message.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_render_as_the_kubelet_writes_them() {
        assert_eq!(Waiting::CrashLoopBackOff.to_string(), "CrashLoopBackOff");
        assert_eq!(
            Waiting::CreateContainerConfigError.as_str(),
            "CreateContainerConfigError"
        );
        assert_eq!(ExitReason::OOMKilled.to_string(), "OOMKilled");
        assert_eq!(
            Waiting::of_image_error(&spindle_image::ImageError::NeverPull("x".into())),
            Waiting::ErrImageNeverPull
        );
    }

    #[test]
    fn restored_exit_reasons() {
        assert_eq!(
            ExitReason::parse_or(Some("OOMKilled"), 137),
            ExitReason::OOMKilled
        );
        assert_eq!(ExitReason::parse_or(None, 0), ExitReason::Completed);
        assert_eq!(ExitReason::parse_or(Some("Odd"), 1), ExitReason::Error);
    }
}
