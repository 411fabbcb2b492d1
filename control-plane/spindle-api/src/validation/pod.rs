//! A pod's spec, as a Pod or a workload's template: containers, resources, ports,
//! volumes and placement rules.

use serde_json::{json, Value};

use spindle_meta::Quantity;

use super::{idx, is_dns1123_label, FieldError, LABEL_MSG};

pub(crate) const RESTART_ANY: &[&str] = &["Always", "OnFailure", "Never"];

fn validate_resources(res: &Value, field: &str, errs: &mut Vec<FieldError>) {
    for part in ["limits", "requests"] {
        if let Some(m) = res.get(part).and_then(Value::as_object) {
            for (k, v) in m {
                let f = format!("{field}.{part}[{k}]");
                let parsed = match v {
                    Value::String(s) => Quantity::parse(s),
                    Value::Number(n) => Quantity::parse(&n.to_string()),
                    other => Quantity::parse(&other.to_string()),
                };
                match parsed {
                    Err(e) => errs.push(FieldError::invalid(&f, v, &e.to_string())),
                    Ok(q) if q.is_negative() => errs.push(FieldError::invalid(
                        &f,
                        v,
                        "must be greater than or equal to 0",
                    )),
                    Ok(_) => {}
                }
            }
        }
    }
}

pub(crate) fn validate_port(v: &Value, field: &str, errs: &mut Vec<FieldError>) {
    match v.as_i64() {
        Some(p) if (1..=65535).contains(&p) => {}
        Some(_) => errs.push(FieldError::invalid(
            field,
            v,
            "must be between 1 and 65535, inclusive",
        )),
        None => errs.push(FieldError::required(field)),
    }
}

pub(crate) fn validate_protocol(c: &Value, field: &str, errs: &mut Vec<FieldError>) {
    if let Some(p) = c.get("protocol") {
        if !matches!(p.as_str(), Some("TCP" | "UDP" | "SCTP")) {
            errs.push(FieldError::not_supported(field, p, &["SCTP", "TCP", "UDP"]));
        }
    }
}

fn validate_containers(
    list: Option<&Value>,
    field: &str,
    required: bool,
    errs: &mut Vec<FieldError>,
    names: &mut Vec<String>,
) {
    let items = list.and_then(Value::as_array).cloned().unwrap_or_default();
    if required && items.is_empty() {
        errs.push(FieldError::required(field));
    }
    for (i, c) in items.iter().enumerate() {
        let f = idx(field, i);
        match c.get("name").and_then(Value::as_str) {
            None | Some("") => errs.push(FieldError::required(&format!("{f}.name"))),
            Some(n) => {
                if !is_dns1123_label(n) {
                    errs.push(FieldError::invalid(
                        &format!("{f}.name"),
                        &json!(n),
                        LABEL_MSG,
                    ));
                }
                if names.iter().any(|x| x == n) {
                    errs.push(FieldError::duplicate(&format!("{f}.name"), &json!(n)));
                }
                names.push(n.to_string());
            }
        }
        if c.get("image")
            .and_then(Value::as_str)
            .unwrap_or("")
            .trim()
            .is_empty()
        {
            errs.push(FieldError::required(&format!("{f}.image")));
        }
        if let Some(ports) = c.get("ports").and_then(Value::as_array) {
            for (j, p) in ports.iter().enumerate() {
                let pf = format!("{f}.ports[{j}]");
                validate_port(
                    p.get("containerPort").unwrap_or(&Value::Null),
                    &format!("{pf}.containerPort"),
                    errs,
                );
                if let Some(hp) = p.get("hostPort") {
                    if hp.as_i64().is_some_and(|h| h != 0) {
                        validate_port(hp, &format!("{pf}.hostPort"), errs);
                    }
                }
                validate_protocol(p, &format!("{pf}.protocol"), errs);
            }
        }
        if let Some(res) = c.get("resources") {
            validate_resources(res, &format!("{f}.resources"), errs);
        }
        if let Some(env) = c.get("env").and_then(Value::as_array) {
            for (j, e) in env.iter().enumerate() {
                if e.get("name")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .is_empty()
                {
                    errs.push(FieldError::required(&format!("{f}.env[{j}].name")));
                }
            }
        }
        if let Some(mounts) = c.get("volumeMounts").and_then(Value::as_array) {
            for (j, m) in mounts.iter().enumerate() {
                if let Some(sub) = m.get("subPath").and_then(Value::as_str) {
                    validate_local_descending_path(
                        sub,
                        &format!("{f}.volumeMounts[{j}].subPath"),
                        errs,
                    );
                }
            }
        }
        if let Some(p) = c.get("imagePullPolicy") {
            if !matches!(p.as_str(), Some("Always" | "IfNotPresent" | "Never")) {
                errs.push(FieldError::not_supported(
                    &format!("{f}.imagePullPolicy"),
                    p,
                    &["Always", "IfNotPresent", "Never"],
                ));
            }
        }
    }
}

pub(crate) fn validate_pod_spec(
    spec: &Value,
    field: &str,
    errs: &mut Vec<FieldError>,
    restart_policies: &[&str],
) {
    let mut names = Vec::new();
    validate_containers(
        spec.get("initContainers"),
        &format!("{field}.initContainers"),
        false,
        errs,
        &mut names,
    );
    validate_containers(
        spec.get("containers"),
        &format!("{field}.containers"),
        true,
        errs,
        &mut names,
    );
    if let Some(rp) = spec.get("restartPolicy") {
        if !rp.as_str().is_some_and(|s| restart_policies.contains(&s)) {
            errs.push(FieldError::not_supported(
                &format!("{field}.restartPolicy"),
                rp,
                restart_policies,
            ));
        }
    }
    if let Some(vols) = spec.get("volumes").and_then(Value::as_array) {
        let mut seen = Vec::new();
        for (i, v) in vols.iter().enumerate() {
            let f = format!("{field}.volumes[{i}].name");
            match v.get("name").and_then(Value::as_str) {
                None | Some("") => errs.push(FieldError::required(&f)),
                Some(n) if seen.contains(&n) => errs.push(FieldError::duplicate(&f, &json!(n))),
                Some(n) if !is_dns1123_label(n) => {
                    errs.push(FieldError::invalid(&f, &json!(n), LABEL_MSG))
                }
                Some(n) => seen.push(n),
            }
            validate_volume_source(v, &format!("{field}.volumes[{i}]"), errs);
        }
    }
    validate_placement_rules(spec, field, errs);
    if let Some(t) = spec.get("terminationGracePeriodSeconds") {
        if t.as_i64().is_some_and(|t| t < 0) {
            errs.push(FieldError::invalid(
                &format!("{field}.terminationGracePeriodSeconds"),
                t,
                "must be greater than or equal to 0",
            ));
        }
    }
}

/// The members of a Volume that name its source, in the order Kubernetes'
/// `validateVolumeSource` checks them (the second one found is the one reported).
const VOLUME_SOURCES: &[&str] = &[
    "emptyDir",
    "hostPath",
    "gitRepo",
    "gcePersistentDisk",
    "awsElasticBlockStore",
    "secret",
    "nfs",
    "iscsi",
    "glusterfs",
    "flexVolume",
    "persistentVolumeClaim",
    "rbd",
    "cinder",
    "cephfs",
    "quobyte",
    "downwardAPI",
    "fc",
    "azureFile",
    "vsphereVolume",
    "photonPersistentDisk",
    "portworxVolume",
    "azureDisk",
    "storageos",
    "projected",
    "scaleIO",
    "configMap",
    "csi",
    "ephemeral",
    "image",
];

/// hostPath types Kubernetes defines, sorted as its "supported values" list prints them.
const HOST_PATH_TYPES: &[&str] = &[
    "",
    "BlockDevice",
    "CharDevice",
    "Directory",
    "DirectoryOrCreate",
    "File",
    "FileOrCreate",
    "Socket",
];

/// One source per volume: the agent acts on every source it finds, so a hostPath with a
/// configMap beside it would have the configMap's stale-file cleanup run over a host
/// directory. Kubernetes refuses the second source; so do we, with its words.
fn validate_volume_source(vol: &Value, field: &str, errs: &mut Vec<FieldError>) {
    let mut found = 0;
    for src in VOLUME_SOURCES {
        if vol.get(*src).is_none_or(Value::is_null) {
            continue;
        }
        found += 1;
        if found > 1 {
            errs.push(FieldError::forbidden(
                &format!("{field}.{src}"),
                "may not specify more than 1 volume type",
            ));
        }
    }
    if let Some(hp) = vol.get("hostPath").filter(|h| !h.is_null()) {
        validate_host_path(hp, &format!("{field}.hostPath"), errs);
    }
}

/// Kubernetes' `validateHostPathVolumeSource`: a path, without `..` steps, and a known type.
pub(super) fn validate_host_path(hp: &Value, field: &str, errs: &mut Vec<FieldError>) {
    let path = hp.get("path").and_then(Value::as_str).unwrap_or("");
    if path.is_empty() {
        errs.push(FieldError::required(&format!("{field}.path")));
        return;
    }
    validate_no_backsteps(path, &format!("{field}.path"), errs);
    if let Some(ty) = hp.get("type").filter(|t| !t.is_null()) {
        if !ty.as_str().is_some_and(|t| HOST_PATH_TYPES.contains(&t)) {
            errs.push(FieldError::not_supported(
                &format!("{field}.type"),
                ty,
                HOST_PATH_TYPES,
            ));
        }
    }
}

/// Kubernetes' `validatePathNoBacksteps`: no `..` step anywhere in the path.
pub(super) fn validate_no_backsteps(path: &str, field: &str, errs: &mut Vec<FieldError>) {
    if path.split('/').any(|step| step == "..") {
        errs.push(FieldError::invalid(
            field,
            &json!(path),
            "must not contain '..'",
        ));
    }
}

/// Kubernetes' `validateLocalDescendingPath` (a volumeMount's subPath): relative, and
/// never climbing out of the volume. The agent refuses such a path too, but only when
/// the container starts; kube-apiserver refuses the pod at once.
fn validate_local_descending_path(path: &str, field: &str, errs: &mut Vec<FieldError>) {
    if path.starts_with('/') {
        errs.push(FieldError::invalid(
            field,
            &json!(path),
            "must be a relative path",
        ));
    }
    validate_no_backsteps(path, field, errs);
}

/// Pod (anti-)affinity terms and topology spread constraints, which the scheduler would
/// otherwise have to guess about: every term needs a topology key, weights are 1-100,
/// skews positive.
fn validate_placement_rules(spec: &Value, field: &str, errs: &mut Vec<FieldError>) {
    let key_required = |f: String, errs: &mut Vec<FieldError>| {
        errs.push(FieldError::required_because(&f, "can not be empty"));
    };
    for kind in ["podAffinity", "podAntiAffinity"] {
        let Some(rules) = spec.pointer(&format!("/affinity/{kind}")) else {
            continue;
        };
        let base = format!("{field}.affinity.{kind}");
        let required = rules
            .get("requiredDuringSchedulingIgnoredDuringExecution")
            .and_then(Value::as_array);
        for (i, t) in required.into_iter().flatten().enumerate() {
            if t.get("topologyKey")
                .and_then(Value::as_str)
                .unwrap_or("")
                .is_empty()
            {
                key_required(
                    format!(
                        "{base}.requiredDuringSchedulingIgnoredDuringExecution[{i}].topologyKey"
                    ),
                    errs,
                );
            }
        }
        let preferred = rules
            .get("preferredDuringSchedulingIgnoredDuringExecution")
            .and_then(Value::as_array);
        for (i, w) in preferred.into_iter().flatten().enumerate() {
            let f = format!("{base}.preferredDuringSchedulingIgnoredDuringExecution[{i}]");
            if let Some(weight) = w.get("weight") {
                if !weight.as_i64().is_some_and(|n| (1..=100).contains(&n)) {
                    errs.push(FieldError::invalid(
                        &format!("{f}.weight"),
                        weight,
                        "must be in the range 1-100",
                    ));
                }
            }
            if w.pointer("/podAffinityTerm/topologyKey")
                .and_then(Value::as_str)
                .unwrap_or("")
                .is_empty()
            {
                key_required(format!("{f}.podAffinityTerm.topologyKey"), errs);
            }
        }
    }
    let constraints = spec
        .get("topologySpreadConstraints")
        .and_then(Value::as_array);
    let mut seen: Vec<(&str, &str)> = Vec::new();
    for (i, c) in constraints.into_iter().flatten().enumerate() {
        let f = format!("{field}.topologySpreadConstraints[{i}]");
        let skew = c.get("maxSkew").unwrap_or(&Value::Null);
        if skew.as_i64().is_none_or(|n| n <= 0) {
            errs.push(FieldError::invalid(
                &format!("{f}.maxSkew"),
                skew,
                "must be greater than zero",
            ));
        }
        let key = c.get("topologyKey").and_then(Value::as_str).unwrap_or("");
        if key.is_empty() {
            key_required(format!("{f}.topologyKey"), errs);
        }
        let when = c.get("whenUnsatisfiable").unwrap_or(&Value::Null);
        let when_s = when.as_str().unwrap_or("");
        if !matches!(when_s, "DoNotSchedule" | "ScheduleAnyway") {
            errs.push(FieldError::not_supported(
                &format!("{f}.whenUnsatisfiable"),
                when,
                &["DoNotSchedule", "ScheduleAnyway"],
            ));
        } else if seen.contains(&(key, when_s)) {
            errs.push(FieldError::duplicate(
                &format!("{f}.{{topologyKey, whenUnsatisfiable}}"),
                &json!(format!("{{{key}, {when_s}}}")),
            ));
        } else {
            seen.push((key, when_s));
        }
        for policy in ["nodeAffinityPolicy", "nodeTaintsPolicy"] {
            if let Some(v) = c.get(policy).filter(|v| !v.is_null()) {
                if !matches!(v.as_str(), Some("Honor" | "Ignore")) {
                    errs.push(FieldError::not_supported(
                        &format!("{f}.{policy}"),
                        v,
                        &["Honor", "Ignore"],
                    ));
                }
            }
        }
        if let Some(md) = c.get("minDomains").filter(|v| !v.is_null()) {
            if md.as_i64().is_none_or(|n| n <= 0) {
                errs.push(FieldError::invalid(
                    &format!("{f}.minDomains"),
                    md,
                    "must be greater than zero",
                ));
            } else if when_s != "DoNotSchedule" {
                errs.push(FieldError::invalid(
                    &format!("{f}.minDomains"),
                    md,
                    &format!(
                        "can only use minDomains if whenUnsatisfiable=DoNotSchedule, not {when_s}"
                    ),
                ));
            }
        }
    }
}
