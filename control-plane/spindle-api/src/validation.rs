//! Kubernetes-style defaulting and validation per kind, on the JSON form of objects.
//!
//! Messages follow Kubernetes' field errors (`Required value`, `Invalid value: …`,
//! `Unsupported value: …`) so users see what they would see on a real cluster.

use serde::Serialize;
use serde_json::{json, Map, Value};

/// One field error, as it appears in `details.causes` of a 422 `Invalid` Status.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct FieldError {
    /// `FieldValueInvalid`, `FieldValueRequired`, `FieldValueNotSupported`, ...
    pub reason: String,
    /// The message without the field path, e.g. `Required value`.
    pub message: String,
    /// Dotted field path, e.g. `spec.template.metadata.labels`.
    pub field: String,
}

impl FieldError {
    pub fn invalid_type(path: &str, msg: String) -> Self {
        FieldError {
            reason: "FieldValueTypeInvalid".into(),
            message: msg,
            field: path.into(),
        }
    }
    pub fn required(field: &str) -> Self {
        FieldError {
            reason: "FieldValueRequired".into(),
            message: "Required value".into(),
            field: field.into(),
        }
    }
    /// A required value with the reason Kubernetes gives ("Required value: <detail>").
    pub fn required_because(field: &str, detail: &str) -> Self {
        FieldError {
            message: format!("Required value: {detail}"),
            ..FieldError::required(field)
        }
    }
    pub fn invalid(field: &str, value: &Value, detail: &str) -> Self {
        FieldError {
            reason: "FieldValueInvalid".into(),
            message: format!("Invalid value: {}: {detail}", go_value(value)),
            field: field.into(),
        }
    }
    pub fn not_supported(field: &str, value: &Value, allowed: &[&str]) -> Self {
        let allowed: Vec<String> = allowed.iter().map(|a| format!("\"{a}\"")).collect();
        FieldError {
            reason: "FieldValueNotSupported".into(),
            message: format!(
                "Unsupported value: {}: supported values: {}",
                go_value(value),
                allowed.join(", ")
            ),
            field: field.into(),
        }
    }
    pub fn duplicate(field: &str, value: &Value) -> Self {
        FieldError {
            reason: "FieldValueDuplicate".into(),
            message: format!("Duplicate value: {}", go_value(value)),
            field: field.into(),
        }
    }
    pub fn forbidden(field: &str, detail: &str) -> Self {
        FieldError {
            reason: "FieldValueForbidden".into(),
            message: format!("Forbidden: {detail}"),
            field: field.into(),
        }
    }
    /// `field: message`, as in the Status message.
    pub fn display(&self) -> String {
        if self.field.is_empty() {
            self.message.clone()
        } else {
            format!("{}: {}", self.field, self.message)
        }
    }
}

/// Values printed the way Go's `%#v`-ish field errors show them.
fn go_value(v: &Value) -> String {
    match v {
        Value::String(s) => format!("\"{s}\""),
        Value::Object(m) => {
            let parts: Vec<String> = m
                .iter()
                .map(|(k, v)| format!("\"{k}\":{}", go_value(v)))
                .collect();
            format!("map[string]string{{{}}}", parts.join(", "))
        }
        Value::Array(a) if !a.is_empty() && a.iter().all(Value::is_string) => {
            let parts: Vec<String> = a.iter().map(go_value).collect();
            format!("[]string{{{}}}", parts.join(", "))
        }
        other => other.to_string(),
    }
}

// ---------------------------------------------------------------------------
// name and syntax checks

fn is_dns1123_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

fn is_dns1123_subdomain(s: &str) -> bool {
    !s.is_empty() && s.len() <= 253 && s.split('.').all(is_dns1123_label)
}

const LABEL_MSG: &str = "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')";
const SUBDOMAIN_MSG: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";

fn is_qualified_name_part(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
        && s.as_bytes()
            .first()
            .is_some_and(|b| b.is_ascii_alphanumeric())
        && s.as_bytes()
            .last()
            .is_some_and(|b| b.is_ascii_alphanumeric())
}

/// Label and annotation keys: `[prefix/]name`.
pub fn is_qualified_name(s: &str) -> bool {
    match s.split_once('/') {
        Some((prefix, name)) => is_dns1123_subdomain(prefix) && is_qualified_name_part(name),
        None => is_qualified_name_part(s),
    }
}

pub fn is_label_value(s: &str) -> bool {
    s.is_empty() || is_qualified_name_part(s)
}

/// Kubernetes resource.Quantity syntax: a signed decimal number with an optional
/// binary-SI (Ki…Ei), decimal-SI (n u m k M G T P E) or exponent suffix.
pub fn is_quantity(s: &str) -> bool {
    let b = s.as_bytes();
    let mut i = 0;
    if i < b.len() && (b[i] == b'+' || b[i] == b'-') {
        i += 1;
    }
    let start = i;
    while i < b.len() && b[i].is_ascii_digit() {
        i += 1;
    }
    let int_digits = i - start;
    let mut frac_digits = 0;
    if i < b.len() && b[i] == b'.' {
        i += 1;
        let fs = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        frac_digits = i - fs;
    }
    if int_digits + frac_digits == 0 {
        return false;
    }
    let suffix = &s[i..];
    matches!(
        suffix,
        "" | "Ki"
            | "Mi"
            | "Gi"
            | "Ti"
            | "Pi"
            | "Ei"
            | "n"
            | "u"
            | "m"
            | "k"
            | "M"
            | "G"
            | "T"
            | "P"
            | "E"
    ) || (suffix.len() > 1 && (suffix.starts_with('e') || suffix.starts_with('E')) && {
        let rest = &suffix[1..];
        let rest = rest.strip_prefix(['+', '-']).unwrap_or(rest);
        !rest.is_empty() && rest.bytes().all(|c| c.is_ascii_digit())
    })
}

fn is_config_key(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
        && s != "."
        && s != ".."
}

fn idx(path: &str, i: usize) -> String {
    format!("{path}[{i}]")
}

fn get<'a>(v: &'a Value, path: &str) -> Option<&'a Value> {
    let mut cur = v;
    for p in path.split('.') {
        cur = cur.get(p)?;
    }
    Some(cur)
}

fn str_at<'a>(v: &'a Value, path: &str) -> Option<&'a str> {
    get(v, path)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
}

// ---------------------------------------------------------------------------
// metadata

/// How names of a kind are checked.
#[derive(Clone, Copy, Debug)]
pub enum NameRule {
    Subdomain,
    Label,
}

pub fn validate_metadata(
    obj: &Value,
    namespaced: bool,
    rule: NameRule,
    errs: &mut Vec<FieldError>,
) {
    let meta = obj.get("metadata").cloned().unwrap_or(Value::Null);
    match meta.get("name").and_then(Value::as_str) {
        None | Some("") => {
            if meta
                .get("generateName")
                .and_then(Value::as_str)
                .unwrap_or("")
                .is_empty()
            {
                errs.push(FieldError::required_because(
                    "metadata.name",
                    "name or generateName is required",
                ));
            }
        }
        Some(name) => {
            let (ok, msg) = match rule {
                NameRule::Subdomain => (is_dns1123_subdomain(name), SUBDOMAIN_MSG),
                NameRule::Label => (is_dns1123_label(name), LABEL_MSG),
            };
            if !ok {
                errs.push(FieldError::invalid("metadata.name", &json!(name), msg));
            }
        }
    }
    if namespaced {
        match meta.get("namespace").and_then(Value::as_str) {
            None | Some("") => errs.push(FieldError::required("metadata.namespace")),
            Some(ns) if !is_dns1123_label(ns) => errs.push(FieldError::invalid(
                "metadata.namespace",
                &json!(ns),
                LABEL_MSG,
            )),
            _ => {}
        }
    }
    validate_labels(meta.get("labels"), "metadata.labels", errs);
    if let Some(ann) = meta.get("annotations").and_then(Value::as_object) {
        let mut total = 0;
        for (k, v) in ann {
            if !is_qualified_name(k) {
                errs.push(FieldError::invalid("metadata.annotations", &json!(k), "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character"));
            }
            total += k.len() + v.as_str().map_or(0, str::len);
        }
        if total > 256 * 1024 {
            errs.push(FieldError {
                reason: "FieldValueTooLong".into(),
                message: "Too long: must have at most 262144 bytes".into(),
                field: "metadata.annotations".into(),
            });
        }
    }
}

fn validate_labels(labels: Option<&Value>, field: &str, errs: &mut Vec<FieldError>) {
    let Some(labels) = labels.and_then(Value::as_object) else {
        return;
    };
    for (k, v) in labels {
        if !is_qualified_name(k) {
            errs.push(FieldError::invalid(field, &json!(k), "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')"));
        }
        let vs = v.as_str().unwrap_or("");
        if !is_label_value(vs) {
            errs.push(FieldError::invalid(field, v, "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')"));
        }
    }
}

// ---------------------------------------------------------------------------
// selectors and pod templates

/// Does a LabelSelector (JSON) select this label map?
pub fn selector_matches(selector: &Value, labels: &Map<String, Value>) -> bool {
    if let Some(ml) = selector.get("matchLabels").and_then(Value::as_object) {
        for (k, v) in ml {
            if labels.get(k) != Some(v) {
                return false;
            }
        }
    }
    if let Some(exprs) = selector.get("matchExpressions").and_then(Value::as_array) {
        for e in exprs {
            let key = e.get("key").and_then(Value::as_str).unwrap_or("");
            let values: Vec<&str> = e
                .get("values")
                .and_then(Value::as_array)
                .map(|a| a.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            let have = labels.get(key).and_then(Value::as_str);
            let ok = match e.get("operator").and_then(Value::as_str).unwrap_or("") {
                "In" => have.is_some_and(|h| values.contains(&h)),
                "NotIn" => !have.is_some_and(|h| values.contains(&h)),
                "Exists" => have.is_some(),
                "DoesNotExist" => have.is_none(),
                _ => false,
            };
            if !ok {
                return false;
            }
        }
    }
    true
}

fn selector_is_empty(sel: &Value) -> bool {
    sel.get("matchLabels")
        .and_then(Value::as_object)
        .is_none_or(|m| m.is_empty())
        && sel
            .get("matchExpressions")
            .and_then(Value::as_array)
            .is_none_or(|a| a.is_empty())
}

fn validate_label_selector(sel: &Value, field: &str, errs: &mut Vec<FieldError>) {
    validate_labels(
        sel.get("matchLabels"),
        &format!("{field}.matchLabels"),
        errs,
    );
    if let Some(exprs) = sel.get("matchExpressions").and_then(Value::as_array) {
        for (i, e) in exprs.iter().enumerate() {
            let f = format!("{field}.matchExpressions[{i}]");
            let op = e.get("operator").and_then(Value::as_str).unwrap_or("");
            let nvals = e
                .get("values")
                .and_then(Value::as_array)
                .map_or(0, Vec::len);
            match op {
                "In" | "NotIn" if nvals == 0 => errs.push(FieldError::required_because(
                    &format!("{f}.values"),
                    "must be specified when `operator` is 'In' or 'NotIn'",
                )),
                "Exists" | "DoesNotExist" if nvals > 0 => errs.push(FieldError::forbidden(
                    &format!("{f}.values"),
                    "may not be specified when `operator` is 'Exists' or 'DoesNotExist'",
                )),
                "In" | "NotIn" | "Exists" | "DoesNotExist" => {}
                other => errs.push(FieldError::not_supported(
                    &format!("{f}.operator"),
                    &json!(other),
                    &["In", "NotIn", "Exists", "DoesNotExist"],
                )),
            }
        }
    }
}

/// Workload: selector required, non-empty, and must select the template's labels.
fn validate_workload(
    obj: &Value,
    errs: &mut Vec<FieldError>,
    restart_policies: &[&str],
    selector_required: bool,
) {
    let spec = obj.get("spec").cloned().unwrap_or(Value::Null);
    if let Some(r) = spec.get("replicas") {
        if r.as_i64().is_some_and(|r| r < 0) {
            errs.push(FieldError::invalid(
                "spec.replicas",
                r,
                "must be greater than or equal to 0",
            ));
        }
    }
    let tpl_labels = spec
        .pointer("/template/metadata/labels")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    match spec.get("selector") {
        None | Some(Value::Null) if selector_required => {
            errs.push(FieldError::required("spec.selector"))
        }
        Some(sel) if !sel.is_null() => {
            validate_label_selector(sel, "spec.selector", errs);
            if selector_is_empty(sel) {
                errs.push(FieldError::invalid(
                    "spec.selector",
                    sel,
                    "empty selector is invalid for deployment",
                ));
            } else if !selector_matches(sel, &tpl_labels) {
                errs.push(FieldError::invalid(
                    "spec.template.metadata.labels",
                    &Value::Object(tpl_labels.clone()),
                    "`selector` does not match template `labels`",
                ));
            }
        }
        _ => {}
    }
    match spec.get("template") {
        None | Some(Value::Null) => errs.push(FieldError::required("spec.template")),
        Some(t) => {
            validate_labels(
                t.pointer("/metadata/labels"),
                "spec.template.metadata.labels",
                errs,
            );
            validate_pod_spec(
                t.get("spec").unwrap_or(&Value::Null),
                "spec.template.spec",
                errs,
                restart_policies,
            );
        }
    }
}

const RESTART_ANY: &[&str] = &["Always", "OnFailure", "Never"];

fn validate_resources(res: &Value, field: &str, errs: &mut Vec<FieldError>) {
    for part in ["limits", "requests"] {
        if let Some(m) = res.get(part).and_then(Value::as_object) {
            for (k, v) in m {
                let f = format!("{field}.{part}[{k}]");
                let ok = match v {
                    Value::String(s) => is_quantity(s),
                    Value::Number(_) => true,
                    _ => false,
                };
                if !ok {
                    errs.push(FieldError::invalid(&f, v, "quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'"));
                } else if v.as_str().is_some_and(|s| s.starts_with('-')) {
                    errs.push(FieldError::invalid(
                        &f,
                        v,
                        "must be greater than or equal to 0",
                    ));
                }
            }
        }
    }
}

fn validate_port(v: &Value, field: &str, errs: &mut Vec<FieldError>) {
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

fn validate_protocol(c: &Value, field: &str, errs: &mut Vec<FieldError>) {
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

fn validate_pod_spec(
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
fn validate_host_path(hp: &Value, field: &str, errs: &mut Vec<FieldError>) {
    let path = hp.get("path").and_then(Value::as_str).unwrap_or("");
    if path.is_empty() {
        errs.push(FieldError::required(&format!("{field}.path")));
        return;
    }
    if path.split('/').any(|step| step == "..") {
        errs.push(FieldError::invalid(
            &format!("{field}.path"),
            &json!(path),
            "must not contain '..'",
        ));
    }
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

// ---------------------------------------------------------------------------
// per-kind entry points

/// Validate an object of `kind` (the Kubernetes kind name) in JSON form.
pub fn validate(kind: &str, namespaced: bool, obj: &Value) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let rule = match kind {
        "Namespace" | "Service" => NameRule::Label,
        _ => NameRule::Subdomain,
    };
    validate_metadata(obj, namespaced, rule, &mut errs);
    match kind {
        "Pod" => validate_pod_spec(
            obj.get("spec").unwrap_or(&Value::Null),
            "spec",
            &mut errs,
            RESTART_ANY,
        ),
        "Deployment" | "ReplicaSet" | "DaemonSet" | "StatefulSet" => {
            validate_workload(obj, &mut errs, &["Always"], true)
        }
        "Job" => {
            validate_workload(obj, &mut errs, &["OnFailure", "Never"], false);
            if obj.pointer("/spec/template/spec/restartPolicy").is_none() {
                errs.push(FieldError::required("spec.template.spec.restartPolicy"));
            }
        }
        "CronJob" => {
            if str_at(obj, "spec.schedule").is_none() {
                errs.push(FieldError::required("spec.schedule"));
            }
            match obj.pointer("/spec/jobTemplate/spec/template/spec") {
                Some(s) => validate_pod_spec(
                    s,
                    "spec.jobTemplate.spec.template.spec",
                    &mut errs,
                    &["OnFailure", "Never"],
                ),
                None => errs.push(FieldError::required(
                    "spec.jobTemplate.spec.template.spec.containers",
                )),
            }
        }
        "Service" => validate_service(obj, &mut errs),
        "PodDisruptionBudget" => validate_disruption_budget(obj, &mut errs),
        "ConfigMap" | "Secret" => {
            for part in ["data", "binaryData", "stringData"] {
                if let Some(m) = obj.get(part).and_then(Value::as_object) {
                    for k in m.keys() {
                        if !is_config_key(k) {
                            errs.push(FieldError::invalid(&format!("{part}[{k}]"), &json!(k), "a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', regex used for validation is '[-._a-zA-Z0-9]+')"));
                        }
                    }
                }
            }
        }
        _ => {}
    }
    errs
}

/// A PodDisruptionBudget's spec: at most one of minAvailable and maxUnavailable, each a
/// non-negative number or a percentage of at most 100 %.
fn validate_disruption_budget(obj: &Value, errs: &mut Vec<FieldError>) {
    let Some(spec) = obj.get("spec") else {
        return;
    };
    let min = spec.get("minAvailable").filter(|v| !v.is_null());
    let max = spec.get("maxUnavailable").filter(|v| !v.is_null());
    if min.is_some() && max.is_some() {
        errs.push(FieldError::invalid(
            "spec",
            spec,
            "minAvailable and maxUnavailable cannot be both set",
        ));
    }
    for (name, v) in [("minAvailable", min), ("maxUnavailable", max)] {
        let Some(v) = v else { continue };
        let field = format!("spec.{name}");
        match v {
            Value::Number(n) if n.as_i64().is_some_and(|n| n >= 0) => {}
            Value::Number(_) => {
                errs.push(FieldError::invalid(
                    &field,
                    v,
                    "must be greater than or equal to 0",
                ));
            }
            Value::String(s) => match s.strip_suffix('%').map(str::parse::<i64>) {
                Some(Ok(p)) if (0..=100).contains(&p) => {}
                Some(Ok(p)) if p > 100 => {
                    errs.push(FieldError::invalid(&field, v, "must not be greater than 100%"))
                }
                Some(Ok(_)) => errs.push(FieldError::invalid(
                    &field,
                    v,
                    "must be greater than or equal to 0",
                )),
                _ => errs.push(FieldError::invalid(
                    &field,
                    v,
                    "a valid percent string must be a numeric string followed by an ending '%' (e.g. '1%',  or '93%', regex used for validation is '[0-9]+%')",
                )),
            },
            _ => errs.push(FieldError::invalid(
                &field,
                v,
                "must be an integer or percentage (e.g '5%')",
            )),
        }
    }
    if let Some(p) = spec
        .get("unhealthyPodEvictionPolicy")
        .filter(|v| !v.is_null())
    {
        if !matches!(p.as_str(), Some("IfHealthyBudget" | "AlwaysAllow")) {
            errs.push(FieldError::not_supported(
                "spec.unhealthyPodEvictionPolicy",
                p,
                &["AlwaysAllow", "IfHealthyBudget"],
            ));
        }
    }
}

fn validate_service(obj: &Value, errs: &mut Vec<FieldError>) {
    let spec = obj.get("spec").cloned().unwrap_or(Value::Null);
    let ty = spec
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or("ClusterIP");
    if !["ClusterIP", "NodePort", "LoadBalancer", "ExternalName"].contains(&ty) {
        errs.push(FieldError::not_supported(
            "spec.type",
            &json!(ty),
            &["ClusterIP", "ExternalName", "LoadBalancer", "NodePort"],
        ));
    }
    let ports = spec
        .get("ports")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let headless = spec.get("clusterIP").and_then(Value::as_str) == Some("None");
    if ports.is_empty() && ty != "ExternalName" && !headless {
        errs.push(FieldError::required("spec.ports"));
    }
    if ty == "ExternalName" && str_at(&spec, "externalName").is_none() {
        errs.push(FieldError::required("spec.externalName"));
    }
    let mut names = Vec::new();
    let mut seen_ports: Vec<(i64, &str)> = Vec::new();
    for (i, p) in ports.iter().enumerate() {
        let f = format!("spec.ports[{i}]");
        // Two entries for one port and protocol would program the same proxy rule twice.
        let key = (
            p.get("port").and_then(Value::as_i64).unwrap_or(0),
            p.get("protocol").and_then(Value::as_str).unwrap_or("TCP"),
        );
        if seen_ports.contains(&key) {
            errs.push(duplicate_service_port(&f, key));
        }
        seen_ports.push(key);
        validate_port(
            p.get("port").unwrap_or(&Value::Null),
            &format!("{f}.port"),
            errs,
        );
        validate_protocol(p, &format!("{f}.protocol"), errs);
        if let Some(tp) = p.get("targetPort") {
            match tp {
                Value::Number(_) => validate_port(tp, &format!("{f}.targetPort"), errs),
                Value::String(s) if !s.is_empty() && !is_dns1123_label(s) => errs.push(
                    FieldError::invalid(&format!("{f}.targetPort"), tp, LABEL_MSG),
                ),
                _ => {}
            }
        }
        if let Some(np) = p.get("nodePort").and_then(Value::as_i64) {
            if np != 0 && !(30000..=32767).contains(&np) {
                errs.push(FieldError::invalid(&format!("{f}.nodePort"), &json!(np), "provided port is not in the valid range. The range of valid ports is 30000-32767"));
            }
        }
        let name = p.get("name").and_then(Value::as_str).unwrap_or("");
        if ports.len() > 1 && name.is_empty() {
            errs.push(FieldError::required(&format!("{f}.name")));
        }
        if !name.is_empty() {
            if names.contains(&name.to_string()) {
                errs.push(FieldError::duplicate(&format!("{f}.name"), &json!(name)));
            }
            names.push(name.to_string());
        }
    }
}

/// Kubernetes' duplicate-port error, which prints the key it compared (a ServicePort with
/// only protocol and port set) in Go syntax.
fn duplicate_service_port(field: &str, (port, protocol): (i64, &str)) -> FieldError {
    FieldError {
        reason: "FieldValueDuplicate".into(),
        message: format!(
            "Duplicate value: core.ServicePort{{Name:\"\", Protocol:\"{protocol}\", AppProtocol:(*string)(nil), Port:{port}, TargetPort:intstr.IntOrString{{Type:0, IntVal:0, StrVal:\"\"}}, NodePort:0}}"
        ),
        field: field.into(),
    }
}

/// Whether a Service is an ExternalName one (which has no cluster IPs).
pub fn is_external_name(svc: &Value) -> bool {
    svc.pointer("/spec/type").and_then(Value::as_str) == Some("ExternalName")
}

/// The addresses a Service holds: `spec.clusterIPs`, or `spec.clusterIP` alone as older
/// clients send it.
pub fn cluster_ips(svc: &Value) -> Vec<&str> {
    let ips: Vec<&str> = svc
        .pointer("/spec/clusterIPs")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    if !ips.is_empty() {
        return ips;
    }
    svc.pointer("/spec/clusterIP")
        .and_then(Value::as_str)
        .filter(|ip| !ip.is_empty())
        .into_iter()
        .collect()
}

/// What an update of a Service may not change (Kubernetes' `ValidateServiceUpdate`): its
/// cluster IPs, once set. Only a change to or from ExternalName (which has none) may. A
/// changed address would move the proxy's rules to any address at all, host traffic
/// included, without the range check and reservation that creation does.
pub fn validate_service_update(old: &Value, new: &Value) -> Vec<FieldError> {
    if is_external_name(old) || is_external_name(new) {
        return Vec::new();
    }
    let (old_ips, new_ips) = (cluster_ips(old), cluster_ips(new));
    let shown = Value::from(new_ips.clone());
    let mut errs = Vec::new();
    if !old_ips.is_empty() && new_ips.is_empty() {
        errs.push(FieldError::invalid(
            "spec.clusterIPs[0]",
            &shown,
            "primary clusterIP can not be unset",
        ));
    }
    for (i, (o, n)) in old_ips.iter().zip(&new_ips).enumerate() {
        if o != n {
            errs.push(FieldError::invalid(
                &format!("spec.clusterIPs[{i}]"),
                &shown,
                "may not change once set",
            ));
        }
    }
    if let (Some(first), Some(single)) = (
        new_ips.first(),
        new.pointer("/spec/clusterIP").and_then(Value::as_str),
    ) {
        if !single.is_empty() && single != *first {
            errs.push(FieldError::invalid(
                "spec.clusterIPs",
                &shown,
                "first value must match `clusterIP`",
            ));
        }
    }
    errs
}

// ---------------------------------------------------------------------------
// defaulting

fn obj_mut<'a>(v: &'a mut Value, key: &str) -> Option<&'a mut Map<String, Value>> {
    let m = v.as_object_mut()?;
    let e = m.entry(key.to_string()).or_insert_with(|| json!({}));
    if e.is_null() {
        *e = json!({});
    }
    e.as_object_mut()
}

fn set_default(m: &mut Map<String, Value>, key: &str, val: Value) {
    match m.get(key) {
        None | Some(Value::Null) => {
            m.insert(key.to_string(), val);
        }
        _ => {}
    }
}

fn default_containers(list: Option<&mut Value>) {
    let Some(items) = list.and_then(Value::as_array_mut) else {
        return;
    };
    for c in items {
        let Some(c) = c.as_object_mut() else { continue };
        let image = c
            .get("image")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        // Kubernetes: no tag or :latest means Always, a pinned tag or digest IfNotPresent.
        let last = image.rsplit('/').next().unwrap_or("");
        let pinned = image.contains('@') || (last.contains(':') && !last.ends_with(":latest"));
        set_default(
            c,
            "imagePullPolicy",
            json!(if pinned { "IfNotPresent" } else { "Always" }),
        );
        set_default(c, "terminationMessagePath", json!("/dev/termination-log"));
        set_default(c, "terminationMessagePolicy", json!("File"));
        set_default(c, "resources", json!({}));
        if let Some(ports) = c.get_mut("ports").and_then(Value::as_array_mut) {
            for p in ports.iter_mut().filter_map(Value::as_object_mut) {
                set_default(p, "protocol", json!("TCP"));
            }
        }
    }
}

fn default_pod_spec(spec: &mut Value, restart: &str) {
    let Some(m) = spec.as_object_mut() else {
        return;
    };
    set_default(m, "restartPolicy", json!(restart));
    set_default(m, "terminationGracePeriodSeconds", json!(30));
    set_default(m, "dnsPolicy", json!("ClusterFirst"));
    set_default(m, "schedulerName", json!("default-scheduler"));
    set_default(m, "securityContext", json!({}));
    default_containers(m.get_mut("initContainers"));
    default_containers(m.get_mut("containers"));
}

fn default_template(obj: &mut Value, restart: &str) {
    if let Some(spec) = obj.pointer_mut("/spec/template/spec") {
        default_pod_spec(spec, restart);
    }
}

/// Apply Kubernetes' defaults for `kind` (after uid and name are set).
pub fn default_object(kind: &str, obj: &mut Value) {
    match kind {
        "Pod" => {
            if let Some(spec) = obj.get_mut("spec") {
                default_pod_spec(spec, "Always");
            }
        }
        "Deployment" => {
            if let Some(spec) = obj_mut(obj, "spec") {
                set_default(spec, "replicas", json!(1));
                set_default(spec, "revisionHistoryLimit", json!(10));
                set_default(spec, "progressDeadlineSeconds", json!(600));
                set_default(spec, "strategy", json!({"type": "RollingUpdate"}));
                if let Some(st) = spec.get_mut("strategy").and_then(Value::as_object_mut) {
                    set_default(st, "type", json!("RollingUpdate"));
                    if st.get("type") == Some(&json!("RollingUpdate")) {
                        set_default(st, "rollingUpdate", json!({}));
                        if let Some(ru) = st.get_mut("rollingUpdate").and_then(Value::as_object_mut)
                        {
                            set_default(ru, "maxSurge", json!("25%"));
                            set_default(ru, "maxUnavailable", json!("25%"));
                        }
                    }
                }
            }
            default_template(obj, "Always");
        }
        "ReplicaSet" => {
            if let Some(spec) = obj_mut(obj, "spec") {
                set_default(spec, "replicas", json!(1));
            }
            default_template(obj, "Always");
        }
        "DaemonSet" => {
            if let Some(spec) = obj_mut(obj, "spec") {
                set_default(spec, "revisionHistoryLimit", json!(10));
                set_default(
                    spec,
                    "updateStrategy",
                    json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1, "maxSurge": 0}}),
                );
            }
            default_template(obj, "Always");
        }
        "StatefulSet" => {
            if let Some(spec) = obj_mut(obj, "spec") {
                set_default(spec, "replicas", json!(1));
                set_default(spec, "podManagementPolicy", json!("OrderedReady"));
                set_default(spec, "revisionHistoryLimit", json!(10));
                set_default(
                    spec,
                    "updateStrategy",
                    json!({"type": "RollingUpdate", "rollingUpdate": {"partition": 0}}),
                );
                set_default(
                    spec,
                    "persistentVolumeClaimRetentionPolicy",
                    json!({"whenDeleted": "Retain", "whenScaled": "Retain"}),
                );
            }
            default_template(obj, "Always");
        }
        "Job" => default_job(obj),
        "CronJob" => {
            if let Some(spec) = obj_mut(obj, "spec") {
                set_default(spec, "concurrencyPolicy", json!("Allow"));
                set_default(spec, "suspend", json!(false));
                set_default(spec, "successfulJobsHistoryLimit", json!(3));
                set_default(spec, "failedJobsHistoryLimit", json!(1));
            }
            if let Some(spec) = obj.pointer_mut("/spec/jobTemplate/spec") {
                if let Some(m) = spec.as_object_mut() {
                    set_default(m, "backoffLimit", json!(6));
                    set_default(m, "completionMode", json!("NonIndexed"));
                    set_default(m, "suspend", json!(false));
                }
            }
            if let Some(spec) = obj.pointer_mut("/spec/jobTemplate/spec/template/spec") {
                default_pod_spec(spec, "Never");
            }
        }
        "Service" => {
            if let Some(spec) = obj_mut(obj, "spec") {
                set_default(spec, "type", json!("ClusterIP"));
                set_default(spec, "sessionAffinity", json!("None"));
                let external_name = spec.get("type") == Some(&json!("ExternalName"));
                if !external_name {
                    set_default(spec, "internalTrafficPolicy", json!("Cluster"));
                    set_default(spec, "ipFamilyPolicy", json!("SingleStack"));
                    set_default(spec, "ipFamilies", json!(["IPv4"]));
                }
                if let Some(ports) = spec.get_mut("ports").and_then(Value::as_array_mut) {
                    for p in ports.iter_mut().filter_map(Value::as_object_mut) {
                        set_default(p, "protocol", json!("TCP"));
                        if let Some(port) = p.get("port").cloned() {
                            set_default(p, "targetPort", port);
                        }
                    }
                }
            }
        }
        "Secret" => {
            if let Some(m) = obj.as_object_mut() {
                set_default(m, "type", json!("Opaque"));
                // stringData is write-only: it lands in data, base64-encoded, as on Kubernetes.
                if let Some(Value::Object(sd)) = m.remove("stringData") {
                    use base64::Engine;
                    let data = m.entry("data").or_insert_with(|| json!({}));
                    if data.is_null() {
                        *data = json!({});
                    }
                    if let Some(d) = data.as_object_mut() {
                        for (k, v) in sd {
                            let raw = v.as_str().unwrap_or("").as_bytes().to_vec();
                            d.insert(
                                k,
                                json!(base64::engine::general_purpose::STANDARD.encode(raw)),
                            );
                        }
                    }
                }
            }
        }
        "Namespace" => {
            let name = obj
                .pointer("/metadata/name")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            if let Some(meta) = obj_mut(obj, "metadata") {
                if let Some(labels) = obj_mut_map(meta, "labels") {
                    labels.insert("kubernetes.io/metadata.name".into(), json!(name));
                }
            }
            if let Some(spec) = obj_mut(obj, "spec") {
                set_default(spec, "finalizers", json!(["kubernetes"]));
            }
            if let Some(status) = obj_mut(obj, "status") {
                set_default(status, "phase", json!("Active"));
            }
        }
        _ => {}
    }
}

fn obj_mut_map<'a>(m: &'a mut Map<String, Value>, key: &str) -> Option<&'a mut Map<String, Value>> {
    let e = m.entry(key.to_string()).or_insert_with(|| json!({}));
    if e.is_null() {
        *e = json!({});
    }
    e.as_object_mut()
}

fn default_job(obj: &mut Value) {
    let uid = obj
        .pointer("/metadata/uid")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let name = obj
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let manual = obj
        .pointer("/spec/manualSelector")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    if let Some(spec) = obj_mut(obj, "spec") {
        set_default(spec, "parallelism", json!(1));
        set_default(spec, "completions", json!(1));
        set_default(spec, "backoffLimit", json!(6));
        set_default(spec, "completionMode", json!("NonIndexed"));
        set_default(spec, "suspend", json!(false));
        set_default(spec, "podReplacementPolicy", json!("TerminatingOrFailed"));
        // Like the Kubernetes Job strategy: a generated selector on the job's uid unless
        // the user asked to manage it.
        if !manual && !uid.is_empty() && spec.get("selector").is_none_or(Value::is_null) {
            spec.insert(
                "selector".into(),
                json!({"matchLabels": {"batch.kubernetes.io/controller-uid": uid}}),
            );
            if let Some(tmeta) = spec
                .get_mut("template")
                .and_then(|t| obj_mut(t, "metadata"))
            {
                if let Some(labels) = obj_mut_map(tmeta, "labels") {
                    for (k, v) in [
                        ("batch.kubernetes.io/controller-uid", &uid),
                        ("batch.kubernetes.io/job-name", &name),
                        ("controller-uid", &uid),
                        ("job-name", &name),
                    ] {
                        labels.insert(k.into(), json!(v));
                    }
                }
            }
        }
    }
    default_template(obj, "Never");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities() {
        for ok in [
            "1", "100m", "1.5Gi", "128Mi", "0.5", "1e3", "2E-2", ".5", "+1k",
        ] {
            assert!(is_quantity(ok), "{ok}");
        }
        for bad in ["", "lots", "1Gb", "1.2.3", "Mi", "1 Gi", "e3"] {
            assert!(!is_quantity(bad), "{bad}");
        }
    }

    #[test]
    fn volume_sources_and_host_paths() {
        let pod = |vols: Value| json!({"metadata":{"name":"p","namespace":"default"},"spec":{"containers":[{"name":"c","image":"i"}],"volumes":vols}});
        let errs = validate(
            "Pod",
            true,
            &pod(json!([{"name":"x","hostPath":{"path":"/srv"},"configMap":{"name":"c"}}])),
        );
        let shown: Vec<String> = errs.iter().map(FieldError::display).collect();
        assert_eq!(
            shown,
            ["spec.volumes[0].configMap: Forbidden: may not specify more than 1 volume type"]
        );
        let errs = validate(
            "Pod",
            true,
            &pod(json!([{"name":"x","hostPath":{"path":"/a/../etc","type":"Bogus"}}])),
        );
        let shown: Vec<String> = errs.iter().map(FieldError::display).collect();
        assert_eq!(shown, [
            "spec.volumes[0].hostPath.path: Invalid value: \"/a/../etc\": must not contain '..'",
            "spec.volumes[0].hostPath.type: Unsupported value: \"Bogus\": supported values: \"\", \"BlockDevice\", \"CharDevice\", \"Directory\", \"DirectoryOrCreate\", \"File\", \"FileOrCreate\", \"Socket\"",
        ]);
        let ok = pod(
            json!([{"name":"x","hostPath":{"path":"/srv/..data","type":"DirectoryOrCreate"}},{"name":"y","emptyDir":{},"hostPath":null}]),
        );
        assert!(validate("Pod", true, &ok).is_empty());
    }

    #[test]
    fn service_ports_and_cluster_ips() {
        let svc = json!({"metadata":{"name":"s","namespace":"default"},"spec":{"ports":[
            {"name":"a","port":53,"protocol":"UDP"},{"name":"b","port":53,"protocol":"TCP"},{"name":"c","port":53,"protocol":"UDP"}]}});
        let shown: Vec<String> = validate("Service", true, &svc)
            .iter()
            .map(FieldError::display)
            .collect();
        assert_eq!(shown, ["spec.ports[2]: Duplicate value: core.ServicePort{Name:\"\", Protocol:\"UDP\", AppProtocol:(*string)(nil), Port:53, TargetPort:intstr.IntOrString{Type:0, IntVal:0, StrVal:\"\"}, NodePort:0}"]);

        let old = json!({"spec":{"clusterIP":"10.43.0.5","clusterIPs":["10.43.0.5"]}});
        assert!(validate_service_update(&old, &old).is_empty());
        let moved = json!({"spec":{"clusterIP":"8.8.8.8","clusterIPs":["8.8.8.8"]}});
        let shown: Vec<String> = validate_service_update(&old, &moved)
            .iter()
            .map(FieldError::display)
            .collect();
        assert_eq!(
            shown,
            ["spec.clusterIPs[0]: Invalid value: []string{\"8.8.8.8\"}: may not change once set"]
        );
        let only_single = json!({"spec":{"clusterIP":"8.8.8.8","clusterIPs":["10.43.0.5"]}});
        assert_eq!(validate_service_update(&old, &only_single).len(), 1);
        let external = json!({"spec":{"type":"ExternalName","externalName":"x.example"}});
        assert!(validate_service_update(&old, &external).is_empty());
    }

    #[test]
    fn names() {
        assert!(is_dns1123_subdomain("web.example-1"));
        assert!(!is_dns1123_subdomain("Web"));
        assert!(!is_dns1123_label("a.b"));
        assert!(is_qualified_name("app.kubernetes.io/name"));
        assert!(!is_qualified_name("-bad"));
    }

    #[test]
    fn selector_must_match_template() {
        let d = json!({"metadata":{"name":"web","namespace":"default"},"spec":{"selector":{"matchLabels":{"app":"web"}},"template":{"metadata":{"labels":{"app":"other"}},"spec":{"containers":[{"name":"c","image":"nginx"}]}}}});
        let errs = validate("Deployment", true, &d);
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert_eq!(errs[0].field, "spec.template.metadata.labels");
        assert!(errs[0]
            .message
            .contains("`selector` does not match template `labels`"));
    }

    #[test]
    fn disruption_budgets() {
        let pdb =
            |spec: Value| json!({"metadata": {"name": "p", "namespace": "default"}, "spec": spec});
        let fields = |spec: Value| -> Vec<String> {
            validate("PodDisruptionBudget", true, &pdb(spec))
                .into_iter()
                .map(|e| e.field)
                .collect()
        };
        for ok in [
            json!({"minAvailable": 2}),
            json!({"maxUnavailable": "25%"}),
            json!({"minAvailable": "100%", "unhealthyPodEvictionPolicy": "AlwaysAllow"}),
            json!({}),
        ] {
            assert!(fields(ok.clone()).is_empty(), "{ok}");
        }
        assert_eq!(
            fields(json!({"minAvailable": 1, "maxUnavailable": 1})),
            ["spec"]
        );
        assert_eq!(fields(json!({"minAvailable": -1})), ["spec.minAvailable"]);
        assert_eq!(
            fields(json!({"maxUnavailable": "120%"})),
            ["spec.maxUnavailable"]
        );
        assert_eq!(
            fields(json!({"maxUnavailable": "half"})),
            ["spec.maxUnavailable"]
        );
        assert_eq!(
            fields(json!({"minAvailable": 1, "unhealthyPodEvictionPolicy": "Sometimes"})),
            ["spec.unhealthyPodEvictionPolicy"]
        );
    }

    #[test]
    fn placement_rules() {
        let p = |spec: Value| {
            let mut spec = spec;
            spec["containers"] = json!([{"name": "c", "image": "x"}]);
            json!({"metadata": {"name": "p", "namespace": "default"}, "spec": spec})
        };
        let fields = |spec: Value| -> Vec<String> {
            validate("Pod", true, &p(spec))
                .into_iter()
                .map(|e| e.field)
                .collect()
        };
        let ok = json!({
            "affinity": {"podAntiAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": [{"labelSelector": {}, "topologyKey": "kubernetes.io/hostname"}],
                "preferredDuringSchedulingIgnoredDuringExecution": [{"weight": 100, "podAffinityTerm": {"topologyKey": "zone"}}]}},
            "topologySpreadConstraints": [{"maxSkew": 1, "topologyKey": "zone", "whenUnsatisfiable": "DoNotSchedule", "minDomains": 2}]
        });
        assert!(fields(ok).is_empty());
        let bad = json!({
            "affinity": {"podAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": [{"labelSelector": {}}],
                "preferredDuringSchedulingIgnoredDuringExecution": [{"weight": 0, "podAffinityTerm": {"topologyKey": "zone"}}]}},
            "topologySpreadConstraints": [
                {"maxSkew": 0, "topologyKey": "zone", "whenUnsatisfiable": "DoNotSchedule"},
                {"maxSkew": 1, "topologyKey": "zone", "whenUnsatisfiable": "DoNotSchedule"},
                {"maxSkew": 1, "topologyKey": "", "whenUnsatisfiable": "Later", "minDomains": 1, "nodeTaintsPolicy": "Sometimes"}]
        });
        assert_eq!(
            fields(bad),
            [
                "spec.affinity.podAffinity.requiredDuringSchedulingIgnoredDuringExecution[0].topologyKey",
                "spec.affinity.podAffinity.preferredDuringSchedulingIgnoredDuringExecution[0].weight",
                "spec.topologySpreadConstraints[0].maxSkew",
                "spec.topologySpreadConstraints[1].{topologyKey, whenUnsatisfiable}",
                "spec.topologySpreadConstraints[2].topologyKey",
                "spec.topologySpreadConstraints[2].whenUnsatisfiable",
                "spec.topologySpreadConstraints[2].nodeTaintsPolicy",
                "spec.topologySpreadConstraints[2].minDomains",
            ]
        );
    }

    #[test]
    fn bad_name_quantity_and_port() {
        let p = json!({"metadata":{"name":"Bad_Name","namespace":"default"},"spec":{"containers":[{"name":"c","image":"x","ports":[{"containerPort":70000}],"resources":{"limits":{"memory":"lots"}}}]}});
        let errs = validate("Pod", true, &p);
        let fields: Vec<&str> = errs.iter().map(|e| e.field.as_str()).collect();
        assert!(fields.contains(&"metadata.name"), "{fields:?}");
        assert!(
            fields.contains(&"spec.containers[0].ports[0].containerPort"),
            "{fields:?}"
        );
        assert!(
            fields.contains(&"spec.containers[0].resources.limits[memory]"),
            "{fields:?}"
        );
    }

    #[test]
    fn deployment_defaults() {
        let mut d = json!({"metadata":{"name":"web"},"spec":{"selector":{"matchLabels":{"a":"b"}},"template":{"spec":{"containers":[{"name":"c","image":"nginx:1.25","ports":[{"containerPort":80}]}]}}}});
        default_object("Deployment", &mut d);
        assert_eq!(d.pointer("/spec/replicas"), Some(&json!(1)));
        assert_eq!(
            d.pointer("/spec/strategy/rollingUpdate/maxSurge"),
            Some(&json!("25%"))
        );
        assert_eq!(
            d.pointer("/spec/template/spec/containers/0/imagePullPolicy"),
            Some(&json!("IfNotPresent"))
        );
        assert_eq!(
            d.pointer("/spec/template/spec/containers/0/ports/0/protocol"),
            Some(&json!("TCP"))
        );
        assert_eq!(
            d.pointer("/spec/template/spec/restartPolicy"),
            Some(&json!("Always"))
        );
    }
}
