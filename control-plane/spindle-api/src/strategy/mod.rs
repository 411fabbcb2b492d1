//! Each kind's behaviour, in one module per kind or family, as kube-apiserver's
//! `registry/<group>/<kind>/strategy.go` (RESTCreateStrategy, RESTUpdateStrategy,
//! RESTDeleteStrategy): defaults, validation, what the server sets on create, what an
//! update keeps or may not change, graceful deletion, and the work done outside the
//! object (allocations, emptying a namespace). The REST path in the API server calls
//! these through the registry entry and never asks which kind it holds.

mod apps;
mod autoscaling;
mod batch;
mod certificates;
mod config;
mod controller_revision;
mod namespace;
mod node;
mod plain;
mod pod;
mod policy;
mod priority_class;
mod quota;
mod rbac;
mod replication_controller;
mod service;
mod service_account;
mod storage;

pub use apps::{Workload, DAEMON_SETS, DEPLOYMENTS, REPLICA_SETS, STATEFUL_SETS};
pub use autoscaling::HorizontalPodAutoscalers;
pub use batch::{CronJobs, JOBS};
pub use certificates::CertificateSigningRequests;
pub use config::{ConfigMaps, Secrets};
pub use controller_revision::ControllerRevisions;
pub use namespace::Namespaces;
pub use node::Nodes;
pub use plain::Plain;
pub use pod::{qos_class, Pods};
pub use policy::PodDisruptionBudgets;
pub use priority_class::PriorityClasses;
pub use quota::{LimitRanges, ResourceQuotas};
pub use rbac::{Bindings, Roles, CLUSTER_ROLES, CLUSTER_ROLE_BINDINGS, ROLES, ROLE_BINDINGS};
pub use replication_controller::ReplicationControllers;
pub use service::Services;
pub use service_account::ServiceAccounts;
pub use storage::{PersistentVolumeClaims, PersistentVolumes, StorageClasses};

use serde_json::{Map, Value};

use crate::validation::{FieldError, NameRule};

/// Work on creation or update that needs the API server's allocators; the server
/// implements each (its `alloc` module), the strategy only says which one applies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Allocation {
    /// A Service's cluster IPs and node ports (kube-apiserver's Service REST storage).
    ServiceAddresses,
    /// A Node's pod CIDR (Kubernetes' node IPAM controller).
    NodePodCidr,
}

/// What deleting an object does besides finalizers and owner references.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnDelete {
    /// Nothing more: finalizers and garbage collection, as for every kind.
    Propagate,
    /// The namespace turns Terminating and everything in it is removed before it.
    EmptyNamespace,
}

/// A subresource a kind serves besides `status` and `scale` (which the registry entry
/// declares), as discovery lists it.
#[derive(Clone, Copy, Debug)]
pub struct Subresource {
    pub name: &'static str,
    pub group: &'static str,
    pub version: &'static str,
    pub kind: &'static str,
    pub verbs: &'static [&'static str],
    /// A connection the API server upgrades and proxies to the node (kube-apiserver's
    /// `rest.Connecter`: exec, attach, portforward), not a request the REST path answers.
    pub connect: bool,
}

/// The authenticated user behind a request, for kinds that record who asked
/// (CertificateSigningRequests).
#[derive(Clone, Copy, Debug)]
pub struct UserInfo<'a> {
    pub name: &'a str,
    pub uid: &'a str,
    pub groups: &'a [String],
}

/// One kind's behaviour. Every method has the behaviour of a kind without rules of its
/// own, so a strategy says only what is particular to its kind.
pub trait Strategy: Send + Sync {
    /// How `metadata.name` is checked.
    fn name_rule(&self) -> NameRule {
        NameRule::Subdomain
    }

    /// Kubernetes' defaults (`SetDefaults_*`), applied after name and uid are set and
    /// before validation, on creation and on every update.
    fn default(&self, _obj: &mut Value) {}

    /// The kind's own validation (metadata is validated for every kind by the caller).
    fn validate(&self, _obj: &Value, _errs: &mut Vec<FieldError>) {}

    /// `metadata.generation` starts at 1 and is bumped when anything outside metadata
    /// and status changes.
    fn tracks_generation(&self) -> bool {
        false
    }

    /// Server-set parts of a new object beyond metadata (the initial status above all).
    fn prepare_for_create(&self, _obj: &mut Map<String, Value>) {}

    /// What a new object records of the user who creates it (after
    /// [`Strategy::prepare_for_create`]).
    fn set_requestor(&self, _obj: &mut Map<String, Value>, _user: &UserInfo<'_>) {}

    /// What an update through a subresource (`status`, or one the kind lists in
    /// [`Strategy::subresources`] that updates the object, such as a CSR's `approval`)
    /// takes from the stored object, after the generic status split for `status`.
    fn prepare_for_subresource_update(&self, _sub: &str, _old: &Value, _new: &mut Value) {}

    /// What an update through the subresource `sub` may not change.
    fn validate_subresource_update(
        &self,
        _sub: &str,
        _old: &Value,
        _new: &Value,
        _errs: &mut Vec<FieldError>,
    ) {
    }

    /// What an update of the main resource takes from the stored object (after the
    /// stored status has been kept for kinds with a status subresource).
    fn prepare_for_update(&self, _old: &Value, _new: &mut Value) {}

    /// What an update may not change.
    fn validate_update(&self, _old: &Value, _new: &Value, _errs: &mut Vec<FieldError>) {}

    /// The allocation done on creation (and on update where the allocator says so).
    fn allocation(&self) -> Option<Allocation> {
        None
    }

    /// Seconds a deletion waits before the object goes (kube-apiserver's
    /// CheckGracefulDelete); `requested` is the client's gracePeriodSeconds.
    fn grace_period(&self, _obj: &Value, _requested: Option<i64>) -> i64 {
        0
    }

    fn on_delete(&self) -> OnDelete {
        OnDelete::Propagate
    }

    /// Whether a deletion that removes the object at once answers with the object, as
    /// kube-apiserver's storage does for kinds that set `ReturnDeletedObject` (pods,
    /// services, namespaces, service accounts); other kinds answer with a `Success`
    /// Status naming what was deleted, so a client can tell it is gone.
    fn returns_deleted_object(&self) -> bool {
        false
    }

    fn subresources(&self) -> &'static [Subresource] {
        &[]
    }

    /// Whether DELETE on the collection is served. kube-apiserver's storage of a few
    /// kinds (namespaces) does not offer it: the verb is absent from discovery and the
    /// request gets 405.
    fn deletes_collections(&self) -> bool {
        true
    }
}

/// Replace the status of a new object: clients do not set a status on creation.
pub(crate) fn reset_status(obj: &mut Map<String, Value>, status: Value) {
    obj.insert("status".into(), status);
}

/// The empty status a new object of most kinds with a status subresource starts with.
pub(crate) fn empty_status(obj: &mut Map<String, Value>) {
    reset_status(obj, Value::Object(Map::new()));
}

/// `spec.selector` may not change once set (Deployment, ReplicaSet, Job...).
pub(crate) fn selector_immutable(old: &Value, new: &Value, errs: &mut Vec<FieldError>) {
    let (o, n) = (old.pointer("/spec/selector"), new.pointer("/spec/selector"));
    if o != n {
        errs.push(FieldError::invalid(
            "spec.selector",
            n.unwrap_or(&Value::Null),
            "field is immutable",
        ));
    }
}
