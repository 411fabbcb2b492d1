//! The one table of kinds.

use k8s_openapi::api::{
    apps, autoscaling, batch, certificates, coordination, core, discovery, policy, rbac,
    scheduling, storage,
};
use k8s_openapi::Resource;
use schemars::{Schema, SchemaGenerator};
use serde_json::Value;

use crate::conversion::{self, Conversion};
use crate::printers::{Printed, Printer};
use crate::strategy::{self, Strategy};
use crate::validation::{validate_metadata, FieldError};

/// Where the replica count and selector of a scalable kind live, for the `scale` subresource.
#[derive(Clone, Copy, Debug)]
pub struct ScalePaths {
    pub spec_replicas: &'static str,
    pub status_replicas: &'static str,
    /// JSON pointer to the selector in the object: a LabelSelector
    /// (`matchLabels`/`matchExpressions`), or a plain label map when `map_selector`.
    pub selector: &'static str,
    pub map_selector: bool,
}

/// One served kind. Everything per kind is data or a plain function pointer; the REST
/// path in the API server is the same code for all of them.
#[derive(Clone)]
pub struct Kind {
    pub group: &'static str,
    pub version: &'static str,
    pub kind: &'static str,
    pub list_kind: &'static str,
    pub plural: &'static str,
    pub singular: &'static str,
    pub short_names: &'static [&'static str],
    pub categories: &'static [&'static str],
    pub namespaced: bool,
    /// Has a `status` subresource: writes to the main resource keep the stored status and
    /// writes to `/status` keep everything else.
    pub status_subresource: bool,
    pub scale: Option<ScalePaths>,
    /// Field selector labels beyond metadata.name/metadata.namespace.
    pub field_labels: &'static [&'static str],
    /// The JSON schema of the k8s-openapi type, for OpenAPI and field checks.
    pub schema: fn(&mut SchemaGenerator) -> Schema,
    /// Name of the schema in `components/schemas` (e.g. `io.k8s.api.apps.v1.Deployment`).
    pub schema_name: fn() -> String,
    /// Deserialize into the k8s-openapi type: catches type errors with their field path.
    pub typed_check: fn(&Value) -> Result<(), FieldError>,
    /// The kind's behaviour: defaults, validation, create/update/delete rules.
    pub strategy: &'static dyn Strategy,
    /// The `kubectl get` table (columns and cells together).
    pub printer: &'static Printer,
    /// For a version served but not stored: how its objects convert to and from the
    /// storage version. Everything between the request body and the response (strategy,
    /// admission, printer, store) sees the storage version.
    pub conversion: Option<&'static Conversion>,
}

impl Kind {
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// `deployments.apps`, or `pods` for the core group, as Kubernetes names resources in
    /// error messages.
    pub fn qualified_plural(&self) -> String {
        if self.group.is_empty() {
            self.plural.to_string()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }

    /// Apply the kind's defaults (after uid and name are set).
    pub fn default_object(&self, obj: &mut Value) {
        self.strategy.default(obj);
    }

    /// Validate an object of this kind: its metadata, then the kind's own rules.
    pub fn validate(&self, obj: &Value) -> Vec<FieldError> {
        let mut errs = Vec::new();
        validate_metadata(obj, self.namespaced, self.strategy.name_rule(), &mut errs);
        self.strategy.validate(obj, &mut errs);
        errs
    }

    /// Whether the kind serves the named subresource of its strategy (binding, log...).
    pub fn serves(&self, subresource: &str) -> bool {
        self.strategy
            .subresources()
            .iter()
            .any(|s| s.name == subresource)
    }

    /// Whether the kind's strategy lists the named subresource with `verb` (a CSR's
    /// `approval` is read and updated like the object itself).
    pub fn serves_verb(&self, subresource: &str, verb: &str) -> bool {
        self.strategy
            .subresources()
            .iter()
            .any(|s| s.name == subresource && !s.connect && s.verbs.contains(&verb))
    }

    /// Whether the kind serves the named subresource at all: `status` and `scale` as its
    /// entry declares them, the others as its strategy lists them.
    pub fn has_subresource(&self, subresource: &str) -> bool {
        match subresource {
            "status" => self.status_subresource,
            "scale" => self.scale.is_some(),
            other => self.serves(other),
        }
    }

    /// Whether the named subresource is a connection proxied to the node (a pod's exec,
    /// attach, portforward) rather than a request the REST path answers.
    pub fn connects(&self, subresource: &str) -> bool {
        self.strategy
            .subresources()
            .iter()
            .any(|s| s.name == subresource && s.connect)
    }

    /// `Deployment.apps`, or `Pod` for the core group (the prefix of Invalid messages).
    pub fn qualified_kind(&self) -> String {
        if self.group.is_empty() {
            self.kind.to_string()
        } else {
            format!("{}.{}", self.kind, self.group)
        }
    }
}

fn schema_of<K: schemars::JsonSchema>(g: &mut SchemaGenerator) -> Schema {
    g.subschema_for::<K>()
}

fn schema_name_of<K: schemars::JsonSchema>() -> String {
    K::schema_name().into_owned()
}

fn typed_check_of<K: serde::de::DeserializeOwned>(v: &Value) -> Result<(), FieldError> {
    // Deserialised from a borrow of the value: a copy of the object per write was a
    // visible share of the update path.
    match serde_path_to_error::deserialize::<_, K>(v) {
        Ok(_) => Ok(()),
        Err(e) => {
            let path = e.path().to_string();
            let path = if path == "." { String::new() } else { path };
            Err(FieldError::invalid_type(&path, e.inner().to_string()))
        }
    }
}

struct Opts {
    short_names: &'static [&'static str],
    categories: &'static [&'static str],
    status: bool,
    scale: Option<ScalePaths>,
    field_labels: &'static [&'static str],
    strategy: &'static dyn Strategy,
    conversion: Option<&'static Conversion>,
}

const NONE: Opts = Opts {
    short_names: &[],
    categories: &[],
    status: false,
    scale: None,
    field_labels: &[],
    strategy: &strategy::Plain,
    conversion: None,
};

const POD_FIELDS: &[&str] = &[
    "spec.nodeName",
    "spec.restartPolicy",
    "spec.schedulerName",
    "spec.serviceAccountName",
    "spec.hostNetwork",
    "status.phase",
    "status.podIP",
    "status.nominatedNodeName",
];
const EVENT_FIELDS: &[&str] = &[
    "involvedObject.kind",
    "involvedObject.namespace",
    "involvedObject.name",
    "involvedObject.uid",
    "involvedObject.apiVersion",
    "involvedObject.resourceVersion",
    "involvedObject.fieldPath",
    "reason",
    "reportingComponent",
    "source",
    "type",
];

const REPLICAS_SCALE: ScalePaths = ScalePaths {
    spec_replicas: "/spec/replicas",
    status_replicas: "/status/replicas",
    selector: "/spec/selector",
    map_selector: false,
};

/// A ReplicationController's selector is a plain label map.
const RC_SCALE: ScalePaths = ScalePaths {
    map_selector: true,
    ..REPLICAS_SCALE
};

fn entry<K>(plural_singular: &'static str, namespaced: bool, o: Opts) -> Kind
where
    K: Resource
        + k8s_openapi::ListableResource
        + schemars::JsonSchema
        + serde::de::DeserializeOwned
        + Printed,
{
    Kind {
        group: K::GROUP,
        version: K::VERSION,
        kind: K::KIND,
        list_kind: K::LIST_KIND,
        plural: K::URL_PATH_SEGMENT,
        singular: plural_singular,
        short_names: o.short_names,
        categories: o.categories,
        namespaced,
        status_subresource: o.status,
        scale: o.scale,
        field_labels: o.field_labels,
        schema: schema_of::<K>,
        schema_name: schema_name_of::<K>,
        typed_check: typed_check_of::<K>,
        strategy: o.strategy,
        printer: K::PRINTER,
        conversion: o.conversion,
    }
}

/// All kinds Spindle serves.
#[derive(Clone)]
pub struct Registry {
    kinds: Vec<Kind>,
}

impl Default for Registry {
    fn default() -> Self {
        Self::new()
    }
}

impl Registry {
    pub fn new() -> Self {
        const ALL: &[&str] = &["all"];
        let kinds = vec![
            entry::<core::v1::Namespace>(
                "namespace",
                false,
                Opts {
                    strategy: &strategy::Namespaces,
                    short_names: &["ns"],
                    status: true,
                    field_labels: &["status.phase"],
                    ..NONE
                },
            ),
            entry::<core::v1::Node>(
                "node",
                false,
                Opts {
                    strategy: &strategy::Nodes,
                    short_names: &["no"],
                    status: true,
                    field_labels: &["spec.unschedulable"],
                    ..NONE
                },
            ),
            entry::<core::v1::Pod>(
                "pod",
                true,
                Opts {
                    strategy: &strategy::Pods,
                    short_names: &["po"],
                    categories: ALL,
                    status: true,
                    field_labels: POD_FIELDS,
                    ..NONE
                },
            ),
            entry::<core::v1::Service>(
                "service",
                true,
                Opts {
                    strategy: &strategy::Services,
                    short_names: &["svc"],
                    categories: ALL,
                    status: true,
                    ..NONE
                },
            ),
            entry::<core::v1::Endpoints>(
                "endpoints",
                true,
                Opts {
                    short_names: &["ep"],
                    ..NONE
                },
            ),
            entry::<core::v1::ConfigMap>(
                "configmap",
                true,
                Opts {
                    strategy: &strategy::ConfigMaps,
                    short_names: &["cm"],
                    ..NONE
                },
            ),
            entry::<core::v1::Secret>(
                "secret",
                true,
                Opts {
                    strategy: &strategy::Secrets,
                    field_labels: &["type"],
                    ..NONE
                },
            ),
            entry::<core::v1::ServiceAccount>(
                "serviceaccount",
                true,
                Opts {
                    strategy: &strategy::ServiceAccounts,
                    short_names: &["sa"],
                    ..NONE
                },
            ),
            entry::<core::v1::Event>(
                "event",
                true,
                Opts {
                    short_names: &["ev"],
                    field_labels: EVENT_FIELDS,
                    ..NONE
                },
            ),
            entry::<core::v1::LimitRange>(
                "limitrange",
                true,
                Opts {
                    strategy: &strategy::LimitRanges,
                    short_names: &["limits"],
                    ..NONE
                },
            ),
            entry::<core::v1::ResourceQuota>(
                "resourcequota",
                true,
                Opts {
                    strategy: &strategy::ResourceQuotas,
                    short_names: &["quota"],
                    status: true,
                    ..NONE
                },
            ),
            entry::<core::v1::PersistentVolume>(
                "persistentvolume",
                false,
                Opts {
                    strategy: &strategy::PersistentVolumes,
                    short_names: &["pv"],
                    status: true,
                    ..NONE
                },
            ),
            entry::<core::v1::PersistentVolumeClaim>(
                "persistentvolumeclaim",
                true,
                Opts {
                    strategy: &strategy::PersistentVolumeClaims,
                    short_names: &["pvc"],
                    status: true,
                    ..NONE
                },
            ),
            entry::<core::v1::ReplicationController>(
                "replicationcontroller",
                true,
                Opts {
                    strategy: &strategy::ReplicationControllers,
                    short_names: &["rc"],
                    categories: ALL,
                    status: true,
                    scale: Some(RC_SCALE),
                    field_labels: &["status.replicas"],
                    ..NONE
                },
            ),
            entry::<apps::v1::Deployment>(
                "deployment",
                true,
                Opts {
                    strategy: &strategy::DEPLOYMENTS,
                    short_names: &["deploy"],
                    categories: ALL,
                    status: true,
                    scale: Some(REPLICAS_SCALE),
                    ..NONE
                },
            ),
            entry::<apps::v1::ReplicaSet>(
                "replicaset",
                true,
                Opts {
                    strategy: &strategy::REPLICA_SETS,
                    short_names: &["rs"],
                    categories: ALL,
                    status: true,
                    scale: Some(REPLICAS_SCALE),
                    field_labels: &["status.replicas"],
                    ..NONE
                },
            ),
            entry::<apps::v1::DaemonSet>(
                "daemonset",
                true,
                Opts {
                    strategy: &strategy::DAEMON_SETS,
                    short_names: &["ds"],
                    categories: ALL,
                    status: true,
                    ..NONE
                },
            ),
            entry::<apps::v1::ControllerRevision>(
                "controllerrevision",
                true,
                Opts {
                    strategy: &strategy::ControllerRevisions,
                    ..NONE
                },
            ),
            entry::<apps::v1::StatefulSet>(
                "statefulset",
                true,
                Opts {
                    strategy: &strategy::STATEFUL_SETS,
                    short_names: &["sts"],
                    categories: ALL,
                    status: true,
                    scale: Some(REPLICAS_SCALE),
                    ..NONE
                },
            ),
            entry::<autoscaling::v2::HorizontalPodAutoscaler>(
                "horizontalpodautoscaler",
                true,
                Opts {
                    strategy: &strategy::HorizontalPodAutoscalers,
                    short_names: &["hpa"],
                    categories: ALL,
                    status: true,
                    ..NONE
                },
            ),
            // Served as v1 too (what `kubectl autoscale` before 1.33 writes), stored as v2.
            entry::<autoscaling::v1::HorizontalPodAutoscaler>(
                "horizontalpodautoscaler",
                true,
                Opts {
                    strategy: &strategy::HorizontalPodAutoscalers,
                    short_names: &["hpa"],
                    categories: ALL,
                    status: true,
                    conversion: Some(&conversion::HPA_V1),
                    ..NONE
                },
            ),
            entry::<batch::v1::Job>(
                "job",
                true,
                Opts {
                    strategy: &strategy::JOBS,
                    categories: ALL,
                    status: true,
                    field_labels: &["status.successful"],
                    ..NONE
                },
            ),
            entry::<batch::v1::CronJob>(
                "cronjob",
                true,
                Opts {
                    strategy: &strategy::CronJobs,
                    short_names: &["cj"],
                    categories: ALL,
                    status: true,
                    ..NONE
                },
            ),
            entry::<certificates::v1::CertificateSigningRequest>(
                "certificatesigningrequest",
                false,
                Opts {
                    strategy: &strategy::CertificateSigningRequests,
                    short_names: &["csr"],
                    status: true,
                    field_labels: &["spec.signerName"],
                    ..NONE
                },
            ),
            entry::<coordination::v1::Lease>("lease", true, NONE),
            entry::<discovery::v1::EndpointSlice>("endpointslice", true, NONE),
            entry::<policy::v1::PodDisruptionBudget>(
                "poddisruptionbudget",
                true,
                Opts {
                    strategy: &strategy::PodDisruptionBudgets,
                    short_names: &["pdb"],
                    status: true,
                    ..NONE
                },
            ),
            entry::<rbac::v1::Role>(
                "role",
                true,
                Opts {
                    strategy: &strategy::ROLES,
                    ..NONE
                },
            ),
            entry::<rbac::v1::ClusterRole>(
                "clusterrole",
                false,
                Opts {
                    strategy: &strategy::CLUSTER_ROLES,
                    ..NONE
                },
            ),
            entry::<rbac::v1::RoleBinding>(
                "rolebinding",
                true,
                Opts {
                    strategy: &strategy::ROLE_BINDINGS,
                    ..NONE
                },
            ),
            entry::<rbac::v1::ClusterRoleBinding>(
                "clusterrolebinding",
                false,
                Opts {
                    strategy: &strategy::CLUSTER_ROLE_BINDINGS,
                    ..NONE
                },
            ),
            entry::<storage::v1::StorageClass>(
                "storageclass",
                false,
                Opts {
                    strategy: &strategy::StorageClasses,
                    short_names: &["sc"],
                    ..NONE
                },
            ),
            // After storage, as kube-apiserver's discovery orders the groups.
            entry::<scheduling::v1::PriorityClass>(
                "priorityclass",
                false,
                Opts {
                    strategy: &strategy::PriorityClasses,
                    short_names: &["pc"],
                    ..NONE
                },
            ),
        ];
        Registry { kinds }
    }

    pub fn kinds(&self) -> &[Kind] {
        &self.kinds
    }

    /// Find a kind by group, version and plural as they appear in a URL.
    pub fn by_resource(&self, group: &str, version: &str, plural: &str) -> Option<&Kind> {
        self.kinds
            .iter()
            .find(|k| k.group == group && k.version == version && k.plural == plural)
    }

    pub fn by_kind(&self, api_version: &str, kind: &str) -> Option<&Kind> {
        self.kinds
            .iter()
            .find(|k| k.api_version() == api_version && k.kind == kind)
    }

    /// Group-versions in discovery order (core first).
    pub fn group_versions(&self) -> Vec<(&'static str, &'static str)> {
        let mut out: Vec<(&str, &str)> = Vec::new();
        for k in &self.kinds {
            if !out.contains(&(k.group, k.version)) {
                out.push((k.group, k.version));
            }
        }
        out
    }

    pub fn kinds_in(&self, group: &str, version: &str) -> impl Iterator<Item = &Kind> {
        let (g, v) = (group.to_string(), version.to_string());
        self.kinds
            .iter()
            .filter(move |k| k.group == g && k.version == v)
    }
}

#[cfg(test)]
mod tests {
    use super::Registry;

    #[test]
    fn only_pods_and_nodes_connect_to_the_node() {
        let reg = Registry::new();
        for k in reg.kinds() {
            let connects: Vec<&str> = [
                "attach",
                "binding",
                "exec",
                "log",
                "portforward",
                "proxy",
                "status",
            ]
            .into_iter()
            .filter(|s| k.connects(s))
            .collect();
            let want: &[&str] = match k.kind {
                "Pod" => &["attach", "exec", "portforward"],
                "Node" => &["proxy"],
                _ => &[],
            };
            assert_eq!(connects, want, "{}", k.kind);
        }
    }

    /// kube-apiserver's storages that set ReturnDeletedObject, among the kinds served.
    #[test]
    fn deletions_return_the_object_for_the_kinds_kube_apiserver_does() {
        let reg = Registry::new();
        let mut returning: Vec<&str> = reg
            .kinds()
            .iter()
            .filter(|k| k.strategy.returns_deleted_object())
            .map(|k| k.plural)
            .collect();
        returning.sort_unstable();
        assert_eq!(
            returning,
            ["namespaces", "pods", "serviceaccounts", "services"]
        );
    }
}
