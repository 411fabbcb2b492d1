//! Decodes Kubernetes protobuf request bodies into JSON.
