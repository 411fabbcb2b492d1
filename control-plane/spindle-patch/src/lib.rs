//! Patch semantics of the Kubernetes API over plain JSON values.
