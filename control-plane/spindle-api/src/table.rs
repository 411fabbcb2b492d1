//! Server-side `kubectl get` tables: column definitions and row cells per kind.
//!
//! kubectl has no client-side printers for built-in kinds any more: it prints whatever cells
//! the server sends, verbatim. So every rule here (what "Status" of a pod says, how ages are
//! rounded, where `<none>` appears) follows the real apiserver's printers, because users and
//! scripts compare against what a real cluster shows.
//!
//! The apiserver always renders the wide (priority 1) cells and lets kubectl hide them, so
//! [`cells`] always returns one value per column of [`columns`].

use chrono::{DateTime, Utc};
use serde_json::Value;

/// One `columnDefinitions` entry of a `meta.k8s.io/v1` Table.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Column {
    pub name: &'static str,
    #[serde(rename = "type")]
    pub type_: &'static str,
    pub format: &'static str,
    pub description: &'static str,
    pub priority: i32,
}

const NONE: &str = "<none>";
const UNKNOWN: &str = "<unknown>";

const DESC_NAME: &str = "Name must be unique within a namespace. Is required when creating resources, although some resources may allow a client to request the generation of an appropriate name automatically. Name is primarily intended for creation idempotence and configuration definition. Cannot be updated. More info: https://kubernetes.io/docs/concepts/overview/working-with-objects/names#names";
const DESC_CREATED: &str = "CreationTimestamp is a timestamp representing the server time when this object was created. It is not guaranteed to be set in happens-before order across separate operations. Clients may not set this value. It is represented in RFC3339 form and is in UTC.\n\nPopulated by the system. Read-only. Null for lists. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#metadata";
const DESC_CONTAINERS: &str = "Names of each container in the template.";
const DESC_IMAGES: &str = "Images referenced by each container in the template.";
const DESC_SELECTOR: &str = "A label query over pods that should match the replica count. It must match the pod template's labels.";

const fn col(name: &'static str, type_: &'static str, description: &'static str) -> Column {
    Column {
        name,
        type_,
        format: "",
        description,
        priority: 0,
    }
}

const fn wide(name: &'static str, type_: &'static str, description: &'static str) -> Column {
    Column {
        name,
        type_,
        format: "",
        description,
        priority: 1,
    }
}

const NAME: Column = Column {
    name: "Name",
    type_: "string",
    format: "name",
    description: DESC_NAME,
    priority: 0,
};
const AGE: Column = col("Age", "string", DESC_CREATED);
const CONTAINERS: Column = wide("Containers", "string", DESC_CONTAINERS);
const IMAGES: Column = wide("Images", "string", DESC_IMAGES);
const SELECTOR: Column = wide("Selector", "string", DESC_SELECTOR);

/// The kinds that have a printer of their own; everything else gets the default table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Printer {
    Pod,
    Namespace,
    Node,
    Service,
    Endpoints,
    EndpointSlice,
    ConfigMap,
    Secret,
    ServiceAccount,
    Event,
    Deployment,
    ReplicaSet,
    DaemonSet,
    StatefulSet,
    Job,
    CronJob,
    Lease,
    PodDisruptionBudget,
    Default,
}

fn printer(group: &str, kind: &str) -> Printer {
    match (group, kind) {
        ("", "Pod") => Printer::Pod,
        ("", "Namespace") => Printer::Namespace,
        ("", "Node") => Printer::Node,
        ("", "Service") => Printer::Service,
        ("", "Endpoints") => Printer::Endpoints,
        ("discovery.k8s.io", "EndpointSlice") => Printer::EndpointSlice,
        ("", "ConfigMap") => Printer::ConfigMap,
        ("", "Secret") => Printer::Secret,
        ("", "ServiceAccount") => Printer::ServiceAccount,
        // events.k8s.io Events are the same stored objects as core Events, and the apiserver
        // prints both with one printer.
        ("" | "events.k8s.io", "Event") => Printer::Event,
        ("apps", "Deployment") => Printer::Deployment,
        ("apps", "ReplicaSet") => Printer::ReplicaSet,
        ("apps", "DaemonSet") => Printer::DaemonSet,
        ("apps", "StatefulSet") => Printer::StatefulSet,
        ("batch", "Job") => Printer::Job,
        ("batch", "CronJob") => Printer::CronJob,
        ("coordination.k8s.io", "Lease") => Printer::Lease,
        ("policy", "PodDisruptionBudget") => Printer::PodDisruptionBudget,
        _ => Printer::Default,
    }
}

/// Column definitions for a kind (group "" for core). Unknown kinds get the apiserver's default
/// table: Name and "Created At".
pub fn columns(group: &str, kind: &str) -> Vec<Column> {
    match printer(group, kind) {
        Printer::Pod => vec![
            NAME,
            col("Ready", "string", "The aggregate readiness state of this pod for accepting traffic."),
            col("Status", "string", "The aggregate status of the containers in this pod."),
            // A string, not an integer: it carries "(5m ago)" once a container has restarted.
            col("Restarts", "string", "The number of times the containers in this pod have been restarted and when the last container in this pod has restarted."),
            AGE,
            wide("IP", "string", "podIP address allocated to the pod. Routable at least within the cluster. Empty if not yet allocated."),
            wide("Node", "string", "NodeName indicates in which node this pod is scheduled."),
            wide("Nominated Node", "string", "nominatedNodeName is set only when this pod preempts other pods on the node."),
            wide("Readiness Gates", "string", "If specified, all readiness gates will be evaluated for pod readiness."),
        ],
        Printer::Namespace => vec![
            NAME,
            col("Status", "string", "The status of the namespace"),
            AGE,
        ],
        Printer::Node => vec![
            NAME,
            col("Status", "string", "The status of the node"),
            col("Roles", "string", "The roles of the node"),
            AGE,
            col("Version", "string", "Kubelet Version reported by the node."),
            wide("Internal-IP", "string", "List of addresses reachable to the node."),
            wide("External-IP", "string", "List of addresses reachable to the node."),
            wide("OS-Image", "string", "OS Image reported by the node from /etc/os-release."),
            wide("Kernel-Version", "string", "Kernel Version reported by the node from 'uname -r'."),
            wide("Container-Runtime", "string", "ContainerRuntime Version reported by the node through runtime remote API."),
        ],
        Printer::Service => vec![
            NAME,
            col("Type", "string", "type determines how the Service is exposed."),
            col("Cluster-IP", "string", "clusterIP is the IP address of the service."),
            col("External-IP", "string", "externalIPs is a list of IP addresses for which nodes in the cluster will also accept traffic for this service."),
            col("Port(s)", "string", "The list of ports that are exposed by this service."),
            AGE,
            wide("Selector", "string", "Route service traffic to pods with label keys and values matching this selector."),
        ],
        Printer::Endpoints => vec![
            NAME,
            col("Endpoints", "string", "The set of all endpoints is the union of all subsets."),
            AGE,
        ],
        Printer::EndpointSlice => vec![
            NAME,
            col("AddressType", "string", "addressType specifies the type of address carried by this EndpointSlice."),
            col("Ports", "string", "ports specifies the list of network ports exposed by each endpoint in this slice."),
            col("Endpoints", "string", "endpoints is a list of unique endpoints in this slice."),
            AGE,
        ],
        // The apiserver declares these counts as "string" yet sends numbers; we declare what
        // the cells hold, which kubectl prints identically.
        Printer::ConfigMap => vec![
            NAME,
            col("Data", "integer", "Data contains the configuration data."),
            AGE,
        ],
        Printer::Secret => vec![
            NAME,
            col("Type", "string", "Used to facilitate programmatic handling of secret data."),
            col("Data", "integer", "Data contains the secret data."),
            AGE,
        ],
        Printer::ServiceAccount => vec![
            NAME,
            col("Secrets", "integer", "Secrets is a list of the secrets in the same namespace that pods running using this ServiceAccount are allowed to use."),
            AGE,
        ],
        Printer::Event => vec![
            col("Last Seen", "string", "The time at which the most recent occurrence of this event was recorded."),
            col("Type", "string", "Type of this event (Normal, Warning), new types could be added in the future"),
            col("Reason", "string", "This should be a short, machine understandable string that gives the reason for the transition into the object's current status."),
            col("Object", "string", "The object that this event is about."),
            wide("Subobject", "string", "If referring to a piece of an object instead of an entire object, this string should contain a valid JSON/Go field access statement."),
            wide("Source", "string", "The component reporting this event."),
            col("Message", "string", "A human-readable description of the status of this operation."),
            wide("First Seen", "string", "The time at which the event was first recorded."),
            wide("Count", "integer", "The number of times this event has occurred."),
            Column {
                priority: 1,
                ..NAME
            },
        ],
        Printer::Deployment => vec![
            NAME,
            col("Ready", "string", "Number of the pod with ready state"),
            col("Up-to-date", "integer", "Total number of non-terminating pods targeted by this deployment that have the desired template spec."),
            col("Available", "integer", "Total number of available non-terminating pods targeted by this deployment."),
            AGE,
            CONTAINERS,
            IMAGES,
            SELECTOR,
        ],
        Printer::ReplicaSet => vec![
            NAME,
            col("Desired", "integer", "Replicas is the number of desired pods."),
            col("Current", "integer", "Replicas is the most recently observed number of non-terminating pods."),
            col("Ready", "integer", "The number of non-terminating pods targeted by this ReplicaSet with a Ready Condition."),
            AGE,
            CONTAINERS,
            IMAGES,
            SELECTOR,
        ],
        Printer::DaemonSet => vec![
            NAME,
            col("Desired", "integer", "The total number of nodes that should be running the daemon pod."),
            col("Current", "integer", "The number of nodes that are running at least 1 daemon pod and are supposed to run the daemon pod."),
            col("Ready", "integer", "The number of nodes that should be running the daemon pod and have one or more of the daemon pod running with a Ready Condition."),
            col("Up-to-date", "integer", "The total number of nodes that are running updated daemon pod"),
            col("Available", "integer", "The number of nodes that should be running the daemon pod and have one or more of the daemon pod running and available."),
            col("Node Selector", "string", "NodeSelector is a selector which must be true for the pod to fit on a node."),
            AGE,
            CONTAINERS,
            IMAGES,
            SELECTOR,
        ],
        Printer::StatefulSet => vec![
            NAME,
            col("Ready", "string", "Number of the pod with ready state"),
            AGE,
            CONTAINERS,
            IMAGES,
        ],
        Printer::Job => vec![
            NAME,
            col("Status", "string", "Status of the job."),
            col("Completions", "string", "The number of pods which reached phase Succeeded."),
            col("Duration", "string", "Time required to complete the job."),
            AGE,
            CONTAINERS,
            IMAGES,
            SELECTOR,
        ],
        Printer::CronJob => vec![
            NAME,
            col("Schedule", "string", "The schedule in Cron format, see https://en.wikipedia.org/wiki/Cron."),
            col("Timezone", "string", "The time zone name for the given schedule."),
            // Declared boolean by the apiserver, which nevertheless sends "True"/"False"/"<unset>".
            col("Suspend", "boolean", "This flag tells the controller to suspend subsequent executions."),
            col("Active", "integer", "A list of pointers to currently running jobs."),
            col("Last Schedule", "string", "Information when was the last time the job was successfully scheduled."),
            AGE,
            CONTAINERS,
            IMAGES,
            SELECTOR,
        ],
        Printer::Lease => vec![
            NAME,
            col("Holder", "string", "holderIdentity contains the identity of the holder of a current lease."),
            AGE,
        ],
        Printer::PodDisruptionBudget => vec![
            NAME,
            col("Min Available", "string", "The minimum number of pods that must be available."),
            col("Max Unavailable", "string", "The maximum number of pods that may be unavailable."),
            col("Allowed Disruptions", "integer", "Calculated number of pods that may be disrupted at this time."),
            AGE,
        ],
        Printer::Default => vec![NAME, col("Created At", "date", DESC_CREATED)],
    }
}

/// One row's cells, one per column of [`columns`] for the same kind, wide ones included.
pub fn cells(group: &str, kind: &str, obj: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let o = Obj(obj);
    let mut row = match printer(group, kind) {
        Printer::Pod => pod_cells(o, now),
        Printer::Namespace => vec![o.name(), o.str_(&["status", "phase"]).into(), o.age(now)],
        Printer::Node => node_cells(o, now),
        Printer::Service => service_cells(o, now),
        Printer::Endpoints => vec![o.name(), endpoints_cell(o).into(), o.age(now)],
        Printer::EndpointSlice => endpoint_slice_cells(o, now),
        Printer::ConfigMap => {
            let data = o.map_len(&["data"]) + o.map_len(&["binaryData"]);
            vec![o.name(), data.into(), o.age(now)]
        }
        Printer::Secret => {
            let type_ = non_empty_or(o.str_(&["type"]), "Opaque");
            vec![
                o.name(),
                type_.into(),
                o.map_len(&["data"]).into(),
                o.age(now),
            ]
        }
        Printer::ServiceAccount => {
            vec![o.name(), o.list(&["secrets"]).len().into(), o.age(now)]
        }
        Printer::Event => event_cells(o, group, now),
        Printer::Deployment => {
            let (names, images) = containers(o.at(&["spec", "template", "spec"]));
            vec![
                o.name(),
                format!(
                    "{}/{}",
                    o.int(&["status", "readyReplicas"]),
                    o.int_or(&["spec", "replicas"], 1)
                )
                .into(),
                o.int(&["status", "updatedReplicas"]).into(),
                o.int(&["status", "availableReplicas"]).into(),
                o.age(now),
                names.into(),
                images.into(),
                // Deployments alone print an empty selector as "" rather than "<none>".
                label_selector(o.at(&["spec", "selector"])).into(),
            ]
        }
        Printer::ReplicaSet => {
            let (names, images) = containers(o.at(&["spec", "template", "spec"]));
            vec![
                o.name(),
                o.int_or(&["spec", "replicas"], 1).into(),
                o.int(&["status", "replicas"]).into(),
                o.int(&["status", "readyReplicas"]).into(),
                o.age(now),
                names.into(),
                images.into(),
                format_label_selector(o.at(&["spec", "selector"])).into(),
            ]
        }
        Printer::DaemonSet => {
            let (names, images) = containers(o.at(&["spec", "template", "spec"]));
            vec![
                o.name(),
                o.int(&["status", "desiredNumberScheduled"]).into(),
                o.int(&["status", "currentNumberScheduled"]).into(),
                o.int(&["status", "numberReady"]).into(),
                o.int(&["status", "updatedNumberScheduled"]).into(),
                o.int(&["status", "numberAvailable"]).into(),
                format_labels(o.at(&["spec", "template", "spec", "nodeSelector"])).into(),
                o.age(now),
                names.into(),
                images.into(),
                format_label_selector(o.at(&["spec", "selector"])).into(),
            ]
        }
        Printer::StatefulSet => {
            let (names, images) = containers(o.at(&["spec", "template", "spec"]));
            vec![
                o.name(),
                format!(
                    "{}/{}",
                    o.int(&["status", "readyReplicas"]),
                    o.int_or(&["spec", "replicas"], 1)
                )
                .into(),
                o.age(now),
                names.into(),
                images.into(),
            ]
        }
        Printer::Job => job_cells(o, now),
        Printer::CronJob => cron_job_cells(o, now),
        Printer::Lease => vec![
            o.name(),
            o.str_(&["spec", "holderIdentity"]).into(),
            o.age(now),
        ],
        Printer::PodDisruptionBudget => vec![
            o.name(),
            int_or_string(o.at(&["spec", "minAvailable"])).into(),
            int_or_string(o.at(&["spec", "maxUnavailable"])).into(),
            o.int(&["status", "disruptionsAllowed"]).into(),
            o.age(now),
        ],
        Printer::Default => vec![o.name(), created_at(o).into()],
    };
    // A short or long row makes kubectl misprint every later column, so never send one.
    let want = columns(group, kind).len();
    debug_assert_eq!(
        row.len(),
        want,
        "{group}/{kind} row does not match its columns"
    );
    row.resize(want, Value::String(String::new()));
    row
}

/// Kubernetes' `HumanDuration` of the time since `creation_timestamp`, or `<unknown>` when the
/// timestamp is missing or not RFC 3339.
pub fn human_age(creation_timestamp: Option<&str>, now: DateTime<Utc>) -> String {
    match creation_timestamp.and_then(parse_time) {
        Some(t) => human_duration(now.signed_duration_since(t)),
        None => UNKNOWN.to_string(),
    }
}

/// `k8s.io/apimachinery/pkg/util/duration.HumanDuration`: precise while small, coarser as it
/// grows, so a column of ages stays narrow.
fn human_duration(d: chrono::Duration) -> String {
    // Go truncates fractional seconds toward zero; so does integer division here.
    let seconds = d.num_milliseconds() / 1000;
    // Clocks a second apart are "now"; anything further in the future is a bad timestamp.
    if seconds < -1 {
        return "<invalid>".to_string();
    }
    if seconds < 0 {
        return "0s".to_string();
    }
    if seconds < 60 * 2 {
        return format!("{seconds}s");
    }
    let minutes = seconds / 60;
    if minutes < 10 {
        let s = seconds % 60;
        return if s == 0 {
            format!("{minutes}m")
        } else {
            format!("{minutes}m{s}s")
        };
    }
    if minutes < 60 * 3 {
        return format!("{minutes}m");
    }
    let hours = minutes / 60;
    if hours < 8 {
        let m = minutes % 60;
        return if m == 0 {
            format!("{hours}h")
        } else {
            format!("{hours}h{m}m")
        };
    }
    if hours < 48 {
        return format!("{hours}h");
    }
    let days = hours / 24;
    if hours < 24 * 8 {
        let h = hours % 24;
        return if h == 0 {
            format!("{days}d")
        } else {
            format!("{days}d{h}h")
        };
    }
    if hours < 24 * 365 * 2 {
        return format!("{days}d");
    }
    let years = days / 365;
    if hours < 24 * 365 * 8 {
        let dy = days % 365;
        return if dy == 0 {
            format!("{years}y")
        } else {
            format!("{years}y{dy}d")
        };
    }
    format!("{years}y")
}

fn parse_time(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// An IntOrString as the printers show it; "N/A" when unset.
fn int_or_string(o: Obj<'_>) -> String {
    match o.0 {
        Value::Number(n) => n.to_string(),
        Value::String(s) => s.clone(),
        _ => "N/A".into(),
    }
}

/// Read-only, panic-free access to an object in Kubernetes JSON form: anything missing or of
/// the wrong JSON type reads as empty, which is what Go's zero values give the real printers.
#[derive(Clone, Copy)]
struct Obj<'a>(&'a Value);

static NULL: Value = Value::Null;

impl<'a> Obj<'a> {
    fn at(self, path: &[&str]) -> Obj<'a> {
        let mut v = self.0;
        for key in path {
            v = v.get(*key).unwrap_or(&NULL);
        }
        Obj(v)
    }

    fn has(self, path: &[&str]) -> bool {
        !self.at(path).0.is_null()
    }

    fn str_(self, path: &[&str]) -> &'a str {
        self.at(path).0.as_str().unwrap_or("")
    }

    fn int_or(self, path: &[&str], default: i64) -> i64 {
        let v = self.at(path).0;
        v.as_i64()
            .or_else(|| v.as_f64().map(|f| f as i64))
            .unwrap_or(default)
    }

    fn int(self, path: &[&str]) -> i64 {
        self.int_or(path, 0)
    }

    fn bool_(self, path: &[&str]) -> Option<bool> {
        self.at(path).0.as_bool()
    }

    fn list(self, path: &[&str]) -> &'a [Value] {
        self.at(path).0.as_array().map(Vec::as_slice).unwrap_or(&[])
    }

    fn map_len(self, path: &[&str]) -> usize {
        self.at(path).0.as_object().map_or(0, |m| m.len())
    }

    fn time(self, path: &[&str]) -> Option<DateTime<Utc>> {
        parse_time(self.str_(path))
    }

    fn name(self) -> Value {
        self.str_(&["metadata", "name"]).into()
    }

    fn age(self, now: DateTime<Utc>) -> Value {
        self.since(&["metadata", "creationTimestamp"], now).into()
    }

    fn since(self, path: &[&str], now: DateTime<Utc>) -> String {
        let ts = self.str_(path);
        human_age((!ts.is_empty()).then_some(ts), now)
    }

    /// Whether `status.conditions` holds a condition of this type with status "True".
    fn condition_true(self, type_: &str) -> bool {
        self.list(&["status", "conditions"]).iter().any(|c| {
            let c = Obj(c);
            c.str_(&["type"]) == type_ && c.str_(&["status"]) == "True"
        })
    }
}

fn non_empty_or<'a>(s: &'a str, default: &'a str) -> &'a str {
    if s.is_empty() {
        default
    } else {
        s
    }
}

fn pod_cells(o: Obj, now: DateTime<Utc>) -> Vec<Value> {
    let status = o.at(&["status"]);
    let init_specs = o.list(&["spec", "initContainers"]);
    // Sidecars (init containers that restart "Always") keep running beside the app containers,
    // so the apiserver counts them in READY and RESTARTS.
    let is_sidecar = |name: &str| {
        init_specs.iter().any(|c| {
            let c = Obj(c);
            c.str_(&["name"]) == name && c.str_(&["restartPolicy"]) == "Always"
        })
    };
    let mut total = o.list(&["spec", "containers"]).len();
    total += init_specs
        .iter()
        .filter(|c| Obj(c).str_(&["restartPolicy"]) == "Always")
        .count();

    let phase = status.str_(&["phase"]);
    let mut reason = non_empty_or(status.str_(&["reason"]), phase).to_string();
    if status.list(&["conditions"]).iter().any(|c| {
        let c = Obj(c);
        c.str_(&["type"]) == "PodScheduled" && c.str_(&["reason"]) == "SchedulingGated"
    }) {
        reason = "SchedulingGated".to_string();
    }

    let mut ready = 0usize;
    let mut restarts = 0i64;
    let mut last_restart: Option<DateTime<Utc>> = None;
    let mut sidecar_restarts = 0i64;
    let mut sidecar_last_restart: Option<DateTime<Utc>> = None;
    let later = |a: Option<DateTime<Utc>>, b: Option<DateTime<Utc>>| a.max(b);

    let init_statuses = status.list(&["initContainerStatuses"]);
    let mut initializing = false;
    for (i, c) in init_statuses.iter().enumerate() {
        let c = Obj(c);
        let finished = c.time(&["lastState", "terminated", "finishedAt"]);
        restarts += c.int(&["restartCount"]);
        last_restart = later(last_restart, finished);
        let sidecar = is_sidecar(c.str_(&["name"]));
        if sidecar {
            sidecar_restarts += c.int(&["restartCount"]);
            sidecar_last_restart = later(sidecar_last_restart, finished);
        }
        let terminated = c.at(&["state", "terminated"]);
        let waiting_reason = c.str_(&["state", "waiting", "reason"]);
        if terminated.has(&[]) && terminated.int(&["exitCode"]) == 0 {
            continue;
        }
        if sidecar && c.bool_(&["started"]) == Some(true) {
            if c.bool_(&["ready"]) == Some(true) {
                ready += 1;
            }
            continue;
        }
        reason = if terminated.has(&[]) {
            match terminated.str_(&["reason"]) {
                "" if terminated.int(&["signal"]) != 0 => {
                    format!("Init:Signal:{}", terminated.int(&["signal"]))
                }
                "" => format!("Init:ExitCode:{}", terminated.int(&["exitCode"])),
                r => format!("Init:{r}"),
            }
        } else if !waiting_reason.is_empty() && waiting_reason != "PodInitializing" {
            format!("Init:{waiting_reason}")
        } else {
            format!("Init:{i}/{}", init_specs.len())
        };
        initializing = true;
        break;
    }

    // An Initialized pod whose init container restarted is still running its app containers,
    // and those are what the user wants to see.
    if !initializing || o.condition_true("Initialized") {
        restarts = sidecar_restarts;
        last_restart = sidecar_last_restart;
        let mut has_running = false;
        // Walked backwards so that the first container's state wins the STATUS column.
        for c in status.list(&["containerStatuses"]).iter().rev() {
            let c = Obj(c);
            restarts += c.int(&["restartCount"]);
            last_restart = later(
                last_restart,
                c.time(&["lastState", "terminated", "finishedAt"]),
            );
            let waiting_reason = c.str_(&["state", "waiting", "reason"]);
            let terminated = c.at(&["state", "terminated"]);
            if !waiting_reason.is_empty() {
                reason = waiting_reason.to_string();
            } else if terminated.has(&[]) {
                reason = match terminated.str_(&["reason"]) {
                    "" if terminated.int(&["signal"]) != 0 => {
                        format!("Signal:{}", terminated.int(&["signal"]))
                    }
                    "" => format!("ExitCode:{}", terminated.int(&["exitCode"])),
                    r => r.to_string(),
                };
            } else if c.bool_(&["ready"]) == Some(true) && c.has(&["state", "running"]) {
                has_running = true;
                ready += 1;
            }
        }
        // One container finished while another still serves: the pod as a whole is running.
        if reason == "Completed" && has_running {
            reason = if o.condition_true("Ready") {
                "Running".to_string()
            } else {
                "NotReady".to_string()
            };
        }
    }

    if o.has(&["metadata", "deletionTimestamp"]) {
        if status.str_(&["reason"]) == "NodeLost" {
            reason = "Unknown".to_string();
        } else if phase != "Succeeded" && phase != "Failed" {
            reason = "Terminating".to_string();
        }
    }

    let restarts = match last_restart {
        Some(t) => format!("{restarts} ({} ago)", human_duration(now - t)),
        None => restarts.to_string(),
    };

    let ip = status
        .list(&["podIPs"])
        .first()
        .map(|p| Obj(p).str_(&["ip"]))
        .filter(|ip| !ip.is_empty())
        .unwrap_or_else(|| status.str_(&["podIP"]));

    let gates = o.list(&["spec", "readinessGates"]);
    let readiness_gates = if gates.is_empty() {
        NONE.to_string()
    } else {
        let conditions = status.list(&["conditions"]);
        let passed = gates
            .iter()
            .filter(|g| {
                let want = Obj(g).str_(&["conditionType"]);
                conditions
                    .iter()
                    .map(Obj)
                    .find(|c| c.str_(&["type"]) == want)
                    .is_some_and(|c| c.str_(&["status"]) == "True")
            })
            .count();
        format!("{passed}/{}", gates.len())
    };

    vec![
        o.name(),
        format!("{ready}/{total}").into(),
        reason.into(),
        restarts.into(),
        o.age(now),
        non_empty_or(ip, NONE).into(),
        non_empty_or(o.str_(&["spec", "nodeName"]), NONE).into(),
        non_empty_or(status.str_(&["nominatedNodeName"]), NONE).into(),
        readiness_gates.into(),
    ]
}

fn node_cells(o: Obj, now: DateTime<Utc>) -> Vec<Value> {
    // Only the Ready condition speaks for the node; pressure conditions are left to describe.
    let ready = o
        .list(&["status", "conditions"])
        .iter()
        .rev()
        .map(Obj)
        .find(|c| c.str_(&["type"]) == "Ready");
    let mut status = match ready {
        Some(c) if c.str_(&["status"]) == "True" => "Ready".to_string(),
        Some(_) => "NotReady".to_string(),
        None => "Unknown".to_string(),
    };
    if o.bool_(&["spec", "unschedulable"]) == Some(true) {
        status.push_str(",SchedulingDisabled");
    }

    let mut roles: Vec<&str> = o
        .at(&["metadata", "labels"])
        .0
        .as_object()
        .into_iter()
        .flatten()
        .filter_map(|(k, v)| {
            if let Some(role) = k.strip_prefix("node-role.kubernetes.io/") {
                (!role.is_empty()).then_some(role)
            } else if k == "kubernetes.io/role" {
                v.as_str().filter(|r| !r.is_empty())
            } else {
                None
            }
        })
        .collect();
    roles.sort_unstable();
    roles.dedup();
    let roles = if roles.is_empty() {
        NONE.to_string()
    } else {
        roles.join(",")
    };

    let address = |type_: &str| {
        o.list(&["status", "addresses"])
            .iter()
            .map(Obj)
            .find(|a| a.str_(&["type"]) == type_)
            .map_or(NONE, |a| a.str_(&["address"]))
    };
    let info = o.at(&["status", "nodeInfo"]);
    vec![
        o.name(),
        status.into(),
        roles.into(),
        o.age(now),
        info.str_(&["kubeletVersion"]).into(),
        address("InternalIP").into(),
        address("ExternalIP").into(),
        non_empty_or(info.str_(&["osImage"]), UNKNOWN).into(),
        non_empty_or(info.str_(&["kernelVersion"]), UNKNOWN).into(),
        non_empty_or(info.str_(&["containerRuntimeVersion"]), UNKNOWN).into(),
    ]
}

fn service_cells(o: Obj, now: DateTime<Utc>) -> Vec<Value> {
    let spec = o.at(&["spec"]);
    // The apiserver defaults the type, so a missing one means ClusterIP.
    let type_ = non_empty_or(spec.str_(&["type"]), "ClusterIP");
    let cluster_ip = spec
        .list(&["clusterIPs"])
        .first()
        .and_then(Value::as_str)
        .filter(|ip| !ip.is_empty())
        .unwrap_or_else(|| non_empty_or(spec.str_(&["clusterIP"]), NONE));

    let external_ips: Vec<&str> = spec
        .list(&["externalIPs"])
        .iter()
        .filter_map(Value::as_str)
        .collect();
    let external = match type_ {
        "ClusterIP" | "NodePort" if external_ips.is_empty() => NONE.to_string(),
        "ClusterIP" | "NodePort" => external_ips.join(","),
        "LoadBalancer" => {
            let mut ingress: Vec<&str> = o
                .list(&["status", "loadBalancer", "ingress"])
                .iter()
                .map(|i| {
                    let i = Obj(i);
                    non_empty_or(i.str_(&["ip"]), i.str_(&["hostname"]))
                })
                .filter(|s| !s.is_empty())
                .collect();
            ingress.sort_unstable();
            ingress.dedup();
            ingress.extend(external_ips);
            if ingress.is_empty() {
                "<pending>".to_string()
            } else {
                ingress.join(",")
            }
        }
        "ExternalName" => spec.str_(&["externalName"]).to_string(),
        _ => UNKNOWN.to_string(),
    };

    let ports: Vec<String> = spec
        .list(&["ports"])
        .iter()
        .map(|p| {
            let p = Obj(p);
            let protocol = non_empty_or(p.str_(&["protocol"]), "TCP");
            match p.int(&["nodePort"]) {
                n if n > 0 => format!("{}:{n}/{protocol}", p.int(&["port"])),
                _ => format!("{}/{protocol}", p.int(&["port"])),
            }
        })
        .collect();
    let ports = if ports.is_empty() {
        NONE.to_string()
    } else {
        ports.join(",")
    };

    vec![
        o.name(),
        type_.into(),
        cluster_ip.into(),
        external.into(),
        ports.into(),
        o.age(now),
        format_labels(spec.at(&["selector"])).into(),
    ]
}

/// Up to three entries, then a count of the rest, so one busy object cannot widen the table.
fn list_with_more(items: impl Iterator<Item = String>, empty: &str) -> String {
    const MAX: usize = 3;
    let mut shown = Vec::with_capacity(MAX);
    let mut count = 0usize;
    for item in items {
        if shown.len() < MAX {
            shown.push(item);
        }
        count += 1;
    }
    if count > MAX {
        format!("{} + {} more...", shown.join(","), count - MAX)
    } else if shown.is_empty() {
        empty.to_string()
    } else {
        shown.join(",")
    }
}

fn join_host_port(host: &str, port: i64) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

fn endpoints_cell(o: Obj) -> String {
    let subsets = o.list(&["subsets"]);
    let items = subsets.iter().flat_map(|ss| {
        let ss = Obj(ss);
        let ips: Vec<&str> = ss
            .list(&["addresses"])
            .iter()
            .map(|a| Obj(a).str_(&["ip"]))
            .collect();
        let ports: Vec<i64> = ss
            .list(&["ports"])
            .iter()
            .map(|p| Obj(p).int(&["port"]))
            .collect();
        // Headless services may have no ports; then the addresses stand alone.
        if ports.is_empty() {
            ips.into_iter().map(str::to_string).collect::<Vec<_>>()
        } else {
            ports
                .iter()
                .flat_map(|port| ips.iter().map(move |ip| join_host_port(ip, *port)))
                .collect()
        }
    });
    list_with_more(items, NONE)
}

fn endpoint_slice_cells(o: Obj, now: DateTime<Utc>) -> Vec<Value> {
    let ports = o.list(&["ports"]).iter().map(|p| {
        let p = Obj(p);
        if p.has(&["port"]) {
            p.int(&["port"]).to_string()
        } else if let Some(name) = p.at(&["name"]).0.as_str() {
            name.to_string()
        } else {
            "*".to_string()
        }
    });
    let addresses = o.list(&["endpoints"]).iter().flat_map(|e| {
        Obj(e)
            .list(&["addresses"])
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_string)
    });
    vec![
        o.name(),
        o.str_(&["addressType"]).into(),
        list_with_more(ports, "<unset>").into(),
        list_with_more(addresses, "<unset>").into(),
        o.age(now),
    ]
}

fn event_cells(o: Obj, group: &str, now: DateTime<Utc>) -> Vec<Value> {
    // events.k8s.io/v1 renames the core fields; read whichever shape this object has.
    let v1 = group == "events.k8s.io";
    let pick = |core: &'static [&'static str], new: &'static [&'static str]| {
        if v1 {
            new
        } else {
            core
        }
    };
    let involved = o.at(pick(&["involvedObject"], &["regarding"]));
    let source = o.at(pick(&["source"], &["deprecatedSource"]));

    // Zero timestamps arrive as null or are left out; either way the next source stands in.
    let first_at = pick(&["firstTimestamp"], &["deprecatedFirstTimestamp"]);
    let first = if o.str_(first_at).is_empty() {
        o.since(&["eventTime"], now)
    } else {
        o.since(first_at, now)
    };
    let last_at = pick(&["lastTimestamp"], &["deprecatedLastTimestamp"]);
    let mut last = if o.str_(last_at).is_empty() {
        first.clone()
    } else {
        o.since(last_at, now)
    };
    let mut count = o.int(pick(&["count"], &["deprecatedCount"]));
    if o.has(&["series"]) {
        last = o.since(&["series", "lastObservedTime"], now);
        count = o.int(&["series", "count"]);
    } else if count == 0 {
        // Singleton events in the new API carry no count.
        count = 1;
    }

    let kind = involved.str_(&["kind"]).to_lowercase();
    let target = match involved.str_(&["name"]) {
        "" => kind,
        name => format!("{kind}/{name}"),
    };
    let component = non_empty_or(
        source.str_(&["component"]),
        o.str_(&["reportingController"]),
    );
    let host = non_empty_or(source.str_(&["host"]), o.str_(&["reportingInstance"]));
    let source = if host.is_empty() {
        component.to_string()
    } else {
        format!("{component}, {host}")
    };
    let message = o.str_(pick(&["message"], &["note"])).trim();

    vec![
        last.into(),
        o.str_(&["type"]).into(),
        o.str_(&["reason"]).into(),
        target.into(),
        involved.str_(&["fieldPath"]).into(),
        source.into(),
        message.into(),
        first.into(),
        count.into(),
        o.name(),
    ]
}

fn job_cells(o: Obj, now: DateTime<Utc>) -> Vec<Value> {
    // Terminal conditions outrank deletion, which outranks the transient ones.
    let status = if o.condition_true("Complete") {
        "Complete"
    } else if o.condition_true("Failed") {
        "Failed"
    } else if o.has(&["metadata", "deletionTimestamp"]) {
        "Terminating"
    } else if o.condition_true("Suspended") {
        "Suspended"
    } else if o.condition_true("FailureTarget") {
        "FailureTarget"
    } else if o.condition_true("SuccessCriteriaMet") {
        "SuccessCriteriaMet"
    } else {
        "Running"
    };

    let succeeded = o.int(&["status", "succeeded"]);
    let completions = if o.has(&["spec", "completions"]) {
        format!("{succeeded}/{}", o.int(&["spec", "completions"]))
    } else {
        match o.int(&["spec", "parallelism"]) {
            p if p > 1 => format!("{succeeded}/1 of {p}"),
            _ => format!("{succeeded}/1"),
        }
    };

    let duration = match (
        o.time(&["status", "startTime"]),
        o.time(&["status", "completionTime"]),
    ) {
        (None, _) => String::new(),
        (Some(start), None) => human_duration(now - start),
        (Some(start), Some(end)) => human_duration(end - start),
    };

    let (names, images) = containers(o.at(&["spec", "template", "spec"]));
    vec![
        o.name(),
        status.into(),
        completions.into(),
        duration.into(),
        o.age(now),
        names.into(),
        images.into(),
        format_label_selector(o.at(&["spec", "selector"])).into(),
    ]
}

fn cron_job_cells(o: Obj, now: DateTime<Utc>) -> Vec<Value> {
    let suspend = match o.bool_(&["spec", "suspend"]) {
        Some(true) => "True",
        Some(false) => "False",
        None => "<unset>",
    };
    let last_schedule = if !o.str_(&["status", "lastScheduleTime"]).is_empty() {
        o.since(&["status", "lastScheduleTime"], now)
    } else {
        NONE.to_string()
    };
    let job_spec = o.at(&["spec", "jobTemplate", "spec"]);
    let (names, images) = containers(job_spec.at(&["template", "spec"]));
    vec![
        o.name(),
        o.str_(&["spec", "schedule"]).into(),
        non_empty_or(o.str_(&["spec", "timeZone"]), NONE).into(),
        suspend.into(),
        o.list(&["status", "active"]).len().into(),
        last_schedule.into(),
        o.age(now),
        names.into(),
        images.into(),
        format_label_selector(job_spec.at(&["selector"])).into(),
    ]
}

/// Container names and images of a pod spec, each comma-joined.
fn containers(pod_spec: Obj) -> (String, String) {
    let list = pod_spec.list(&["containers"]);
    let names: Vec<&str> = list.iter().map(|c| Obj(c).str_(&["name"])).collect();
    let images: Vec<&str> = list.iter().map(|c| Obj(c).str_(&["image"])).collect();
    (names.join(","), images.join(","))
}

/// `labels.FormatLabels`: sorted `k=v` pairs, or `<none>`.
fn format_labels(map: Obj) -> String {
    let mut pairs: Vec<String> = map
        .0
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
        .collect();
    if pairs.is_empty() {
        return NONE.to_string();
    }
    pairs.sort_unstable();
    pairs.join(",")
}

/// `metav1.FormatLabelSelector`: the selector in label-query syntax, `<none>` when it selects
/// by nothing, `<error>` when it cannot be parsed.
fn format_label_selector(selector: Obj) -> String {
    match label_selector(selector) {
        s if s.is_empty() => NONE.to_string(),
        s => s,
    }
}

/// A LabelSelector in `kubectl get -l` syntax, requirements sorted by key as the apiserver does.
fn label_selector(selector: Obj) -> String {
    let mut reqs: Vec<(String, String)> = Vec::new();
    for (k, v) in selector
        .at(&["matchLabels"])
        .0
        .as_object()
        .into_iter()
        .flatten()
    {
        reqs.push((k.clone(), format!("{k}={}", v.as_str().unwrap_or(""))));
    }
    for e in selector.list(&["matchExpressions"]) {
        let e = Obj(e);
        let key = e.str_(&["key"]);
        let mut values: Vec<&str> = e
            .list(&["values"])
            .iter()
            .filter_map(Value::as_str)
            .collect();
        values.sort_unstable();
        let text = match e.str_(&["operator"]) {
            "In" => format!("{key} in ({})", values.join(",")),
            "NotIn" => format!("{key} notin ({})", values.join(",")),
            "Exists" => key.to_string(),
            "DoesNotExist" => format!("!{key}"),
            _ => return "<error>".to_string(),
        };
        reqs.push((key.to_string(), text));
    }
    reqs.sort_by(|a, b| a.0.cmp(&b.0));
    reqs.into_iter()
        .map(|(_, text)| text)
        .collect::<Vec<_>>()
        .join(",")
}

/// The default table's "Created At": RFC 3339 in UTC, Go's zero time when unset.
fn created_at(o: Obj) -> String {
    let raw = o.str_(&["metadata", "creationTimestamp"]);
    if raw.is_empty() {
        return "0001-01-01T00:00:00Z".to_string();
    }
    parse_time(raw).map_or_else(
        || raw.to_string(),
        |t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn now() -> DateTime<Utc> {
        parse_time("2024-05-01T12:00:00Z").expect("valid test time")
    }

    fn ago(secs: i64) -> String {
        (now() - chrono::Duration::seconds(secs)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    }

    const KINDS: &[(&str, &str)] = &[
        ("", "Pod"),
        ("", "Namespace"),
        ("", "Node"),
        ("", "Service"),
        ("", "Endpoints"),
        ("discovery.k8s.io", "EndpointSlice"),
        ("", "ConfigMap"),
        ("", "Secret"),
        ("", "ServiceAccount"),
        ("", "Event"),
        ("events.k8s.io", "Event"),
        ("apps", "Deployment"),
        ("apps", "ReplicaSet"),
        ("apps", "DaemonSet"),
        ("apps", "StatefulSet"),
        ("batch", "Job"),
        ("batch", "CronJob"),
        ("coordination.k8s.io", "Lease"),
        ("policy", "PodDisruptionBudget"),
        ("example.com", "Widget"),
    ];

    fn realistic(group: &str, kind: &str) -> Value {
        let meta = json!({"name": "x", "namespace": "default", "creationTimestamp": ago(300),
            "labels": {"app": "web", "node-role.kubernetes.io/control-plane": ""}});
        let template = json!({"metadata": {"labels": {"app": "web"}}, "spec": {
            "nodeSelector": {"kubernetes.io/os": "linux"},
            "containers": [{"name": "web", "image": "nginx:1.25"}, {"name": "log", "image": "busybox"}]}});
        let selector = json!({"matchLabels": {"app": "web"},
            "matchExpressions": [{"key": "tier", "operator": "In", "values": ["b", "a"]}]});
        let mut o = match (group, kind) {
            ("", "Pod") => pod_running(),
            ("", "Namespace") => json!({"status": {"phase": "Active"}}),
            ("", "Node") => json!({"spec": {}, "status": {
                "conditions": [{"type": "Ready", "status": "True"}],
                "addresses": [{"type": "InternalIP", "address": "10.0.0.2"}],
                "nodeInfo": {"kubeletVersion": "v1.33.0", "osImage": "Debian", "kernelVersion": "6.1",
                    "containerRuntimeVersion": "spindle://0.1"}}}),
            ("", "Service") => json!({"spec": {"type": "NodePort", "clusterIP": "10.96.0.10",
                "clusterIPs": ["10.96.0.10"], "selector": {"app": "web"},
                "ports": [{"port": 80, "nodePort": 30080, "protocol": "TCP"}]}}),
            ("", "Endpoints") => json!({"subsets": [{"addresses": [{"ip": "10.1.0.5"}],
                "ports": [{"port": 80}]}]}),
            ("discovery.k8s.io", "EndpointSlice") => json!({"addressType": "IPv4",
                "ports": [{"port": 80, "name": "http"}],
                "endpoints": [{"addresses": ["10.1.0.5"]}]}),
            ("", "ConfigMap") => json!({"data": {"a": "1"}, "binaryData": {"b": "AA=="}}),
            ("", "Secret") => json!({"type": "Opaque", "data": {"a": "MQ=="}}),
            ("", "ServiceAccount") => json!({"secrets": [{"name": "t"}]}),
            ("", "Event") => json!({"involvedObject": {"kind": "Pod", "name": "web-1",
                "fieldPath": "spec.containers{web}"}, "reason": "Pulled", "type": "Normal",
                "message": "pulled\n", "source": {"component": "kubelet", "host": "n1"},
                "firstTimestamp": ago(600), "lastTimestamp": ago(60), "count": 3}),
            ("events.k8s.io", "Event") => json!({"regarding": {"kind": "Pod", "name": "web-1"},
                "reason": "Scheduled", "type": "Normal", "note": "assigned",
                "eventTime": ago(30), "reportingController": "spindle-scheduler"}),
            ("apps", "Deployment") | ("apps", "ReplicaSet") | ("apps", "StatefulSet") => {
                json!({"spec": {"replicas": 3, "selector": selector, "template": template},
                    "status": {"replicas": 3, "readyReplicas": 2, "updatedReplicas": 3,
                        "availableReplicas": 2}})
            }
            ("apps", "DaemonSet") => json!({"spec": {"selector": selector, "template": template},
                "status": {"desiredNumberScheduled": 2, "currentNumberScheduled": 2,
                    "numberReady": 1, "updatedNumberScheduled": 2, "numberAvailable": 1}}),
            ("batch", "Job") => json!({"spec": {"completions": 1, "template": template,
                "selector": {"matchLabels": {"batch.kubernetes.io/controller-uid": "u"}}},
                "status": {"succeeded": 1, "startTime": ago(200), "completionTime": ago(100),
                    "conditions": [{"type": "Complete", "status": "True"}]}}),
            ("batch", "CronJob") => json!({"spec": {"schedule": "*/5 * * * *", "suspend": false,
                "jobTemplate": {"spec": {"template": template}}},
                "status": {"active": [{"name": "j"}], "lastScheduleTime": ago(120)}}),
            ("coordination.k8s.io", "Lease") => json!({"spec": {"holderIdentity": "node-1"}}),
            ("policy", "PodDisruptionBudget") => json!({"spec": {"maxUnavailable": "25%"},
                "status": {"disruptionsAllowed": 1}}),
            _ => json!({}),
        };
        if let Some(m) = o.as_object_mut() {
            m.insert("metadata".into(), meta);
        }
        o
    }

    fn pod_running() -> Value {
        json!({"metadata": {"name": "web", "creationTimestamp": ago(300)},
            "spec": {"nodeName": "n1", "containers": [{"name": "web"}]},
            "status": {"phase": "Running", "podIP": "10.1.0.5", "podIPs": [{"ip": "10.1.0.5"}],
                "conditions": [{"type": "Ready", "status": "True"}],
                "containerStatuses": [{"name": "web", "ready": true, "restartCount": 0,
                    "state": {"running": {"startedAt": ago(290)}}}]}})
    }

    fn check_types(cols: &[Column], row: &[Value], what: &str) {
        assert_eq!(cols.len(), row.len(), "{what}: {row:?}");
        for (c, v) in cols.iter().zip(row) {
            match c.type_ {
                "integer" => assert!(v.is_i64() || v.is_u64(), "{what} {}: {v}", c.name),
                _ => assert!(v.is_string(), "{what} {}: {v}", c.name),
            }
        }
    }

    #[test]
    fn table_rows_match_columns_for_every_kind() {
        for (group, kind) in KINDS {
            let cols = columns(group, kind);
            assert_eq!(
                cols[0].name,
                if *kind == "Event" {
                    "Last Seen"
                } else {
                    "Name"
                }
            );
            let odd = json!({"metadata": 1, "spec": "s", "status": [], "subsets": {}, "ports": [1, null],
                "involvedObject": 3, "endpoints": [{"addresses": [7]}]});
            for obj in [
                json!({}),
                json!(null),
                json!([1]),
                odd,
                realistic(group, kind),
            ] {
                let row = cells(group, kind, &obj, now());
                check_types(&cols, &row, &format!("{group}/{kind} {obj}"));
            }
        }
    }

    #[test]
    fn table_realistic_rows() {
        let row = |g: &str, k: &str| cells(g, k, &realistic(g, k), now());
        assert_eq!(
            row("", "Pod"),
            vec![
                json!("x"),
                json!("1/1"),
                json!("Running"),
                json!("0"),
                json!("5m"),
                json!("10.1.0.5"),
                json!("n1"),
                json!("<none>"),
                json!("<none>")
            ]
        );
        assert_eq!(row("apps", "Deployment")[1], json!("2/3"));
        assert_eq!(row("apps", "Deployment")[7], json!("app=web,tier in (a,b)"));
        assert_eq!(
            row("apps", "ReplicaSet")[1..4],
            [json!(3), json!(3), json!(2)]
        );
        assert_eq!(row("apps", "DaemonSet")[6], json!("kubernetes.io/os=linux"));
        assert_eq!(
            row("apps", "StatefulSet")[3..],
            [json!("web,log"), json!("nginx:1.25,busybox")]
        );
        assert_eq!(
            row("batch", "Job")[1..4],
            [json!("Complete"), json!("1/1"), json!("100s")]
        );
        assert_eq!(
            row("batch", "CronJob")[1..6],
            [
                json!("*/5 * * * *"),
                json!("<none>"),
                json!("False"),
                json!(1),
                json!("2m")
            ]
        );
        assert_eq!(row("", "ConfigMap")[1], json!(2));
        assert_eq!(row("", "Secret")[1..3], [json!("Opaque"), json!(1)]);
        assert_eq!(row("", "Endpoints")[1], json!("10.1.0.5:80"));
        assert_eq!(
            row("discovery.k8s.io", "EndpointSlice")[1..4],
            [json!("IPv4"), json!("80"), json!("10.1.0.5")]
        );
        assert_eq!(
            row("", "Node")[1..6],
            [
                json!("Ready"),
                json!("control-plane"),
                json!("5m"),
                json!("v1.33.0"),
                json!("10.0.0.2")
            ]
        );
        assert_eq!(row("", "Node")[6], json!("<none>"));
        assert_eq!(row("coordination.k8s.io", "Lease")[1], json!("node-1"));
        assert_eq!(
            row("policy", "PodDisruptionBudget"),
            vec![
                json!("x"),
                json!("N/A"),
                json!("25%"),
                json!(1),
                json!("5m")
            ]
        );
        assert_eq!(
            row("", "Event"),
            vec![
                json!("60s"),
                json!("Normal"),
                json!("Pulled"),
                json!("pod/web-1"),
                json!("spec.containers{web}"),
                json!("kubelet, n1"),
                json!("pulled"),
                json!("10m"),
                json!(3),
                json!("x")
            ]
        );
        let ev = row("events.k8s.io", "Event");
        assert_eq!(ev[0], json!("30s"));
        assert_eq!(ev[3], json!("pod/web-1"));
        assert_eq!(ev[5], json!("spindle-scheduler"));
        assert_eq!(ev[6], json!("assigned"));
        assert_eq!(ev[8], json!(1));
        assert_eq!(
            row("example.com", "Widget"),
            vec![json!("x"), json!(ago(300))]
        );
        assert_eq!(
            cells("x", "Y", &json!({}), now())[1],
            json!("0001-01-01T00:00:00Z")
        );
    }

    fn pod_status(pod: Value) -> String {
        cells("", "Pod", &pod, now())[2]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    fn pod_with(containers: Value) -> Value {
        json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c"}]},
            "status": {"phase": "Pending", "containerStatuses": containers}})
    }

    #[test]
    fn table_pod_status() {
        assert_eq!(pod_status(pod_running()), "Running");
        assert_eq!(
            pod_status(pod_with(json!([{"name": "c", "ready": false,
                "state": {"waiting": {"reason": "ContainerCreating"}}}]))),
            "ContainerCreating"
        );
        let crash = pod_with(json!([{"name": "c", "ready": false, "restartCount": 4,
            "state": {"waiting": {"reason": "CrashLoopBackOff"}},
            "lastState": {"terminated": {"exitCode": 1, "finishedAt": ago(150)}}}]));
        assert_eq!(pod_status(crash.clone()), "CrashLoopBackOff");
        assert_eq!(cells("", "Pod", &crash, now())[3], json!("4 (2m30s ago)"));

        let mut done = pod_with(json!([{"name": "c", "ready": false,
            "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}}]));
        done["status"]["phase"] = json!("Succeeded");
        assert_eq!(pod_status(done.clone()), "Completed");
        // A finished pod being deleted keeps its final status.
        done["metadata"]["deletionTimestamp"] = json!(ago(1));
        assert_eq!(pod_status(done), "Completed");

        assert_eq!(
            pod_status(pod_with(json!([{"name": "c",
                "state": {"terminated": {"exitCode": 137, "signal": 9}}}]))),
            "Signal:9"
        );
        assert_eq!(
            pod_status(pod_with(
                json!([{"name": "c", "state": {"terminated": {"exitCode": 2}}}])
            )),
            "ExitCode:2"
        );

        let init = json!({"metadata": {"name": "p"},
            "spec": {"initContainers": [{"name": "i"}], "containers": [{"name": "c"}]},
            "status": {"phase": "Pending",
                "initContainerStatuses": [{"name": "i", "state": {"running": {}}}],
                "containerStatuses": [{"name": "c", "state": {"waiting": {"reason": "PodInitializing"}}}]}});
        assert_eq!(pod_status(init.clone()), "Init:0/1");
        let mut init_crash = init.clone();
        init_crash["status"]["initContainerStatuses"][0]["state"] =
            json!({"waiting": {"reason": "CrashLoopBackOff"}});
        assert_eq!(pod_status(init_crash), "Init:CrashLoopBackOff");
        let mut init_err = init;
        init_err["status"]["initContainerStatuses"][0]["state"] =
            json!({"terminated": {"exitCode": 1, "reason": "Error"}});
        assert_eq!(pod_status(init_err), "Init:Error");

        let mut terminating = pod_running();
        terminating["metadata"]["deletionTimestamp"] = json!(ago(5));
        assert_eq!(pod_status(terminating.clone()), "Terminating");
        terminating["status"]["reason"] = json!("NodeLost");
        assert_eq!(pod_status(terminating), "Unknown");

        // One container done, another still serving: Running or NotReady by the Ready condition.
        let mut mixed = json!({"metadata": {"name": "p"},
            "spec": {"containers": [{"name": "a"}, {"name": "b"}]},
            "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "False"}],
                "containerStatuses": [
                    {"name": "a", "ready": false, "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}},
                    {"name": "b", "ready": true, "state": {"running": {}}}]}});
        assert_eq!(pod_status(mixed.clone()), "NotReady");
        mixed["status"]["conditions"][0]["status"] = json!("True");
        assert_eq!(pod_status(mixed.clone()), "Running");
        assert_eq!(cells("", "Pod", &mixed, now())[1], json!("1/2"));

        assert_eq!(
            pod_status(json!({"status": {"phase": "Pending"}})),
            "Pending"
        );
        assert_eq!(
            pod_status(json!({"status": {"phase": "Pending",
                "conditions": [{"type": "PodScheduled", "status": "False", "reason": "SchedulingGated"}]}})),
            "SchedulingGated"
        );
    }

    #[test]
    fn table_pod_sidecars_and_wide() {
        let pod = json!({"metadata": {"name": "p"},
            "spec": {"initContainers": [{"name": "proxy", "restartPolicy": "Always"}],
                "containers": [{"name": "c"}],
                "readinessGates": [{"conditionType": "example.com/lb"}]},
            "status": {"phase": "Running", "nominatedNodeName": "n2",
                "conditions": [{"type": "Ready", "status": "True"},
                    {"type": "example.com/lb", "status": "True"}],
                "initContainerStatuses": [{"name": "proxy", "started": true, "ready": true,
                    "restartCount": 1, "state": {"running": {}},
                    "lastState": {"terminated": {"exitCode": 1, "finishedAt": ago(3600)}}}],
                "containerStatuses": [{"name": "c", "ready": true, "restartCount": 0,
                    "state": {"running": {}}}]}});
        let row = cells("", "Pod", &pod, now());
        assert_eq!(
            row[1..4],
            [json!("2/2"), json!("Running"), json!("1 (60m ago)")]
        );
        assert_eq!(
            row[5..],
            [json!("<none>"), json!("<none>"), json!("n2"), json!("1/1")]
        );
    }

    #[test]
    fn table_node_status() {
        let node = json!({"metadata": {"name": "n1", "labels": {"kubernetes.io/role": "worker",
                "node-role.kubernetes.io/control-plane": ""}},
            "spec": {"unschedulable": true},
            "status": {"conditions": [{"type": "MemoryPressure", "status": "False"},
                {"type": "Ready", "status": "True"}]}});
        let row = cells("", "Node", &node, now());
        assert_eq!(row[1], json!("Ready,SchedulingDisabled"));
        assert_eq!(row[2], json!("control-plane,worker"));
        assert_eq!(
            row[7..],
            [json!("<unknown>"), json!("<unknown>"), json!("<unknown>")]
        );
        let not_ready = json!({"status": {"conditions": [{"type": "Ready", "status": "Unknown"}]}});
        assert_eq!(cells("", "Node", &not_ready, now())[1], json!("NotReady"));
        assert_eq!(
            cells("", "Node", &json!({}), now())[1..3],
            [json!("Unknown"), json!("<none>")]
        );
    }

    #[test]
    fn table_service_ports_and_ips() {
        let svc = |spec: Value, status: Value| {
            cells(
                "",
                "Service",
                &json!({"metadata": {"name": "s"}, "spec": spec, "status": status}),
                now(),
            )
        };
        let row = svc(
            json!({"clusterIP": "10.96.0.1", "ports": [{"port": 80, "protocol": "TCP"},
                {"port": 53, "protocol": "UDP"}, {"port": 443}]}),
            json!({}),
        );
        assert_eq!(
            row[1..5],
            [
                json!("ClusterIP"),
                json!("10.96.0.1"),
                json!("<none>"),
                json!("80/TCP,53/UDP,443/TCP")
            ]
        );
        assert_eq!(row[6], json!("<none>"));
        let row = svc(
            json!({"type": "NodePort", "clusterIPs": ["10.96.0.2"], "selector": {"b": "2", "a": "1"},
                "ports": [{"port": 80, "nodePort": 30080, "protocol": "TCP"}]}),
            json!({}),
        );
        assert_eq!(row[4], json!("80:30080/TCP"));
        assert_eq!(row[6], json!("a=1,b=2"));
        let row = svc(json!({"type": "LoadBalancer", "ports": []}), json!({}));
        assert_eq!(
            row[2..5],
            [json!("<none>"), json!("<pending>"), json!("<none>")]
        );
        let row = svc(
            json!({"type": "LoadBalancer", "externalIPs": ["1.1.1.1"]}),
            json!({"loadBalancer": {"ingress": [{"ip": "5.6.7.8"}, {"hostname": "lb.example.com"}]}}),
        );
        assert_eq!(row[3], json!("5.6.7.8,lb.example.com,1.1.1.1"));
        let row = svc(
            json!({"type": "ExternalName", "externalName": "db.example.com"}),
            json!({}),
        );
        assert_eq!(row[3], json!("db.example.com"));
    }

    #[test]
    fn table_endpoints_truncate() {
        let eps = json!({"subsets": [{"addresses": [{"ip": "10.0.0.1"}, {"ip": "10.0.0.2"},
            {"ip": "fd00::3"}, {"ip": "10.0.0.4"}, {"ip": "10.0.0.5"}], "ports": [{"port": 80}]}]});
        assert_eq!(
            cells("", "Endpoints", &eps, now())[1],
            json!("10.0.0.1:80,10.0.0.2:80,[fd00::3]:80 + 2 more...")
        );
        assert_eq!(
            cells("", "Endpoints", &json!({}), now())[1],
            json!("<none>")
        );
        let headless = json!({"subsets": [{"addresses": [{"ip": "10.0.0.1"}]}]});
        assert_eq!(
            cells("", "Endpoints", &headless, now())[1],
            json!("10.0.0.1")
        );
    }

    #[test]
    fn table_event_from_the_new_api_through_core() {
        let ev = json!({"metadata": {"name": "e"}, "involvedObject": {"kind": "Node"},
            "firstTimestamp": null, "lastTimestamp": null, "eventTime": ago(45),
            "series": {"count": 4, "lastObservedTime": ago(10)},
            "reportingComponent": "", "reportingInstance": "n1", "source": {}});
        let row = cells("", "Event", &ev, now());
        assert_eq!(row[0], json!("10s"));
        assert_eq!(row[3], json!("node"));
        assert_eq!(row[5], json!(", n1"));
        assert_eq!(row[7..], [json!("45s"), json!(4), json!("e")]);
    }

    #[test]
    fn table_job_status() {
        let job = |status: Value, spec: Value| {
            cells(
                "batch",
                "Job",
                &json!({"spec": spec, "status": status}),
                now(),
            )
        };
        let row = job(json!({"startTime": ago(30)}), json!({"parallelism": 3}));
        assert_eq!(
            row[1..4],
            [json!("Running"), json!("0/1 of 3"), json!("30s")]
        );
        let row = job(
            json!({"conditions": [{"type": "Suspended", "status": "True"}]}),
            json!({"completions": 5}),
        );
        assert_eq!(row[1..4], [json!("Suspended"), json!("0/5"), json!("")]);
        let row = job(
            json!({"conditions": [{"type": "Failed", "status": "True"}]}),
            json!({}),
        );
        assert_eq!(row[1..3], [json!("Failed"), json!("0/1")]);
    }

    #[test]
    fn table_human_age() {
        let at = |secs: i64| human_age(Some(&ago(secs)), now());
        assert_eq!(at(0), "0s");
        assert_eq!(at(-1), "0s");
        assert_eq!(at(-5), "<invalid>");
        assert_eq!(at(5), "5s");
        assert_eq!(at(119), "119s");
        assert_eq!(at(120), "2m");
        assert_eq!(at(150), "2m30s");
        assert_eq!(at(599), "9m59s");
        assert_eq!(at(600), "10m");
        assert_eq!(at(3 * 3600 - 1), "179m");
        assert_eq!(at(3 * 3600), "3h");
        assert_eq!(at(3 * 3600 + 25 * 60), "3h25m");
        assert_eq!(at(8 * 3600), "8h");
        assert_eq!(at(47 * 3600 + 59 * 60), "47h");
        assert_eq!(at(48 * 3600), "2d");
        assert_eq!(at(3 * 86400 + 5 * 3600), "3d5h");
        assert_eq!(at(8 * 86400), "8d");
        assert_eq!(at(400 * 86400), "400d");
        assert_eq!(at(2 * 365 * 86400), "2y");
        assert_eq!(at(3 * 365 * 86400 + 10 * 86400), "3y10d");
        assert_eq!(at(9 * 365 * 86400), "9y");
        assert_eq!(human_age(None, now()), "<unknown>");
        assert_eq!(human_age(Some(""), now()), "<unknown>");
        assert_eq!(human_age(Some("yesterday"), now()), "<unknown>");
        assert_eq!(human_age(Some("2024-05-01T11:59:58.500000Z"), now()), "1s");
    }

    #[test]
    fn table_columns_serialize_like_the_apiserver() {
        let cols = serde_json::to_value(columns("", "Pod")).unwrap_or_default();
        assert_eq!(cols[0]["name"], json!("Name"));
        assert_eq!(cols[0]["type"], json!("string"));
        assert_eq!(cols[0]["format"], json!("name"));
        assert_eq!(cols[5]["priority"], json!(1));
        let default = columns("example.com", "Widget");
        assert_eq!(default[1].name, "Created At");
        assert_eq!(default[1].type_, "date");
    }
}
