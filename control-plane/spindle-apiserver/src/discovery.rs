//! Discovery documents (legacy and aggregated v2/v2beta1), /version, and OpenAPI.

use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};
use spindle_api::{Kind, Registry};

use crate::rest::json_response;
use crate::status::ApiError;
use crate::AppState;

const VERBS_ALL: &[&str] = &[
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];

/// The verbs a kind serves on its main resource.
fn verbs(k: &Kind) -> Vec<&'static str> {
    VERBS_ALL
        .iter()
        .copied()
        .filter(|v| *v != "deletecollection" || k.strategy.deletes_collections())
        .collect()
}

/// Resources answered by their own routes instead of the store, so the registry does not
/// know them: the create-only reviews (`authz::reviews`, `sa_endpoints`) and the resource
/// metrics (`metrics_api`, which kube serves through metrics-server's APIService).
/// kube-apiserver lists them in discovery all the same; kubectl needs that to `kubectl
/// create -f` a review and to `kubectl top`.
struct Routed {
    group: &'static str,
    version: &'static str,
    plural: &'static str,
    kind: &'static str,
    namespaced: bool,
    verbs: &'static [&'static str],
}

const fn review(
    group: &'static str,
    plural: &'static str,
    kind: &'static str,
    namespaced: bool,
) -> Routed {
    Routed {
        group,
        version: "v1",
        plural,
        kind,
        namespaced,
        verbs: &["create"],
    }
}

const fn metrics(plural: &'static str, kind: &'static str, namespaced: bool) -> Routed {
    Routed {
        group: crate::metrics_api::GROUP,
        version: crate::metrics_api::VERSION,
        plural,
        kind,
        namespaced,
        verbs: &["get", "list"],
    }
}

const ROUTED: &[Routed] = &[
    review(
        "authentication.k8s.io",
        "selfsubjectreviews",
        "SelfSubjectReview",
        false,
    ),
    review(
        "authentication.k8s.io",
        "tokenreviews",
        "TokenReview",
        false,
    ),
    review(
        "authorization.k8s.io",
        "localsubjectaccessreviews",
        "LocalSubjectAccessReview",
        true,
    ),
    review(
        "authorization.k8s.io",
        "selfsubjectaccessreviews",
        "SelfSubjectAccessReview",
        false,
    ),
    review(
        "authorization.k8s.io",
        "selfsubjectrulesreviews",
        "SelfSubjectRulesReview",
        false,
    ),
    review(
        "authorization.k8s.io",
        "subjectaccessreviews",
        "SubjectAccessReview",
        false,
    ),
    metrics("nodes", "NodeMetrics", false),
    metrics("pods", "PodMetrics", true),
];

fn routed_in<'a>(group: &'a str, version: &'a str) -> impl Iterator<Item = &'static Routed> + 'a {
    ROUTED
        .iter()
        .filter(move |r| r.group == group && r.version == version)
}

/// The group versions served: the registry's, then the routed groups.
fn group_versions(reg: &Registry) -> Vec<(&'static str, &'static str)> {
    let mut out = reg.group_versions();
    for r in ROUTED {
        if !out.contains(&(r.group, r.version)) {
            out.push((r.group, r.version));
        }
    }
    out
}

/// Each group with its versions, the preferred (first registered) first, in discovery
/// order.
fn groups(reg: &Registry) -> Vec<(&'static str, Vec<&'static str>)> {
    let mut out: Vec<(&str, Vec<&str>)> = Vec::new();
    for (g, v) in group_versions(reg) {
        match out.iter_mut().find(|(name, _)| *name == g) {
            Some((_, versions)) => versions.push(v),
            None => out.push((g, vec![v])),
        }
    }
    out
}

/// An APIGroup's `versions` and `preferredVersion`.
fn group_json(g: &str, versions: &[&str]) -> Value {
    let gvs: Vec<Value> = versions
        .iter()
        .map(|v| json!({"groupVersion": format!("{g}/{v}"), "version": v}))
        .collect();
    json!({"name": g, "versions": gvs, "preferredVersion": gvs.first()})
}

/// Subresources per kind: (name, group, version, kind, verbs).
fn subresources(
    k: &Kind,
) -> Vec<(
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    Vec<&'static str>,
)> {
    let mut out = Vec::new();
    if k.status_subresource {
        out.push((
            "status",
            k.group,
            k.version,
            k.kind,
            vec!["get", "patch", "update"],
        ));
    }
    if k.scale.is_some() {
        out.push((
            "scale",
            "autoscaling",
            "v1",
            "Scale",
            vec!["get", "patch", "update"],
        ));
    }
    for s in k.strategy.subresources() {
        out.push((s.name, s.group, s.version, s.kind, s.verbs.to_vec()));
    }
    out
}

fn resource_list(reg: &Registry, group: &str, version: &str) -> Value {
    let mut resources = Vec::new();
    for k in reg.kinds_in(group, version) {
        let mut r = json!({
            "name": k.plural, "singularName": k.singular, "namespaced": k.namespaced, "kind": k.kind,
            "verbs": verbs(k),
        });
        if !k.short_names.is_empty() {
            r["shortNames"] = json!(k.short_names);
        }
        if !k.categories.is_empty() {
            r["categories"] = json!(k.categories);
        }
        resources.push(r);
        for (sub, g, v, kind, verbs) in subresources(k) {
            let mut s = json!({"name": format!("{}/{sub}", k.plural), "singularName": "", "namespaced": k.namespaced, "kind": kind, "verbs": verbs});
            if g != k.group || v != k.version {
                s["group"] = json!(g);
                s["version"] = json!(v);
            }
            resources.push(s);
        }
    }
    for r in routed_in(group, version) {
        resources.push(json!({"name": r.plural, "singularName": "", "namespaced": r.namespaced, "kind": r.kind, "verbs": r.verbs}));
    }
    let gv = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": resources})
}

fn aggregated(reg: &Registry, core: bool, api_version: &str) -> Value {
    let mut items = Vec::new();
    for (g, versions) in groups(reg) {
        if g.is_empty() != core {
            continue;
        }
        let versions: Vec<Value> = versions
            .into_iter()
            .map(|v| json!({"version": v, "freshness": "Current", "resources": aggregated_resources(reg, g, v)}))
            .collect();
        items.push(json!({"metadata": {"name": g}, "versions": versions}));
    }
    json!({"kind": "APIGroupDiscoveryList", "apiVersion": api_version, "metadata": {}, "items": items})
}

/// One group version's resources as aggregated discovery lists them.
fn aggregated_resources(reg: &Registry, g: &str, v: &str) -> Vec<Value> {
    let mut resources: Vec<Value> = reg
        .kinds_in(g, v)
        .map(|k| {
            let mut r = json!({
                "resource": k.plural, "responseKind": {"group": k.group, "version": k.version, "kind": k.kind},
                "scope": if k.namespaced { "Namespaced" } else { "Cluster" }, "singularResource": k.singular,
                "verbs": verbs(k),
                "subresources": subresources(k).into_iter().map(|(s, g, v, kind, verbs)| json!({"subresource": s, "responseKind": {"group": g, "version": v, "kind": kind}, "verbs": verbs})).collect::<Vec<_>>(),
            });
            if !k.short_names.is_empty() {
                r["shortNames"] = json!(k.short_names);
            }
            if !k.categories.is_empty() {
                r["categories"] = json!(k.categories);
            }
            r
        })
        .collect();
    resources.extend(routed_in(g, v).map(|r| {
        json!({
            "resource": r.plural, "responseKind": {"group": r.group, "version": r.version, "kind": r.kind},
            "scope": if r.namespaced { "Namespaced" } else { "Cluster" }, "singularResource": "",
            "verbs": r.verbs,
        })
    }));
    resources
}

/// Pick aggregated discovery when the client asks for it, in the version it asks for.
fn aggregated_version(headers: &HeaderMap) -> Option<&'static str> {
    let accept = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    for part in accept.split(',') {
        if part.contains("as=APIGroupDiscoveryList") && part.contains("g=apidiscovery.k8s.io") {
            if part.contains("v=v2beta1") {
                return Some("v2beta1");
            }
            if part.contains("v=v2") {
                return Some("v2");
            }
        }
    }
    None
}

fn aggregated_response(v: Value, version: &'static str) -> Response {
    let mut r = (StatusCode::OK, v.to_string()).into_response();
    let ct = format!("application/json;g=apidiscovery.k8s.io;v={version};as=APIGroupDiscoveryList");
    if let Ok(h) = HeaderValue::from_str(&ct) {
        r.headers_mut().insert(header::CONTENT_TYPE, h);
    }
    r
}

pub fn api(st: &AppState, headers: &HeaderMap, local_addr: &str) -> Response {
    if let Some(v) = aggregated_version(headers) {
        return aggregated_response(
            aggregated(&st.reg, true, &format!("apidiscovery.k8s.io/{v}")),
            v,
        );
    }
    json_response(
        StatusCode::OK,
        &json!({"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": local_addr}]}),
        &[],
    )
}

pub fn apis(st: &AppState, headers: &HeaderMap) -> Response {
    if let Some(v) = aggregated_version(headers) {
        return aggregated_response(
            aggregated(&st.reg, false, &format!("apidiscovery.k8s.io/{v}")),
            v,
        );
    }
    let groups: Vec<Value> = groups(&st.reg)
        .into_iter()
        .filter(|(g, _)| !g.is_empty())
        .map(|(g, versions)| group_json(g, &versions))
        .collect();
    json_response(
        StatusCode::OK,
        &json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}),
        &[],
    )
}

pub fn group(st: &AppState, group: &str) -> Response {
    let Some((_, versions)) = groups(&st.reg).into_iter().find(|(g, _)| *g == group) else {
        return ApiError::path_not_found().into_response();
    };
    let mut g = json!({"kind": "APIGroup", "apiVersion": "v1"});
    if let (Some(o), Value::Object(body)) = (g.as_object_mut(), group_json(group, &versions)) {
        o.extend(body);
    }
    json_response(StatusCode::OK, &g, &[])
}

pub fn group_version(st: &AppState, group: &str, version: &str) -> Response {
    if st.reg.kinds_in(group, version).next().is_none()
        && routed_in(group, version).next().is_none()
    {
        return ApiError::path_not_found().into_response();
    }
    json_response(StatusCode::OK, &resource_list(&st.reg, group, version), &[])
}

/// The Kubernetes version Spindle's API corresponds to (the k8s-openapi types it serves).
pub fn version() -> Response {
    json_response(
        StatusCode::OK,
        &json!({
            "major": "1", "minor": "33", "gitVersion": concat!("v1.33.0+spindle-", env!("CARGO_PKG_VERSION")),
            "gitCommit": "", "gitTreeState": "clean", "buildDate": "", "goVersion": "", "compiler": "rustc",
            "platform": format!("{}/{}", std::env::consts::OS, if cfg!(target_arch = "x86_64") { "amd64" } else { std::env::consts::ARCH }),
        }),
        &[],
    )
}

pub fn openapi_v2(st: &AppState, headers: &HeaderMap) -> Response {
    let etag = st.openapi.v2_etag();
    if headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        == Some(etag)
    {
        return StatusCode::NOT_MODIFIED.into_response();
    }
    let mut r = (StatusCode::OK, st.openapi.v2_protobuf().to_vec()).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/com.github.proto-openapi.spec.v2.v1.0+protobuf"),
    );
    if let Ok(h) = HeaderValue::from_str(etag) {
        r.headers_mut().insert(header::ETAG, h);
    }
    r
}

pub fn openapi_v3(st: &AppState, path: &str) -> Response {
    let rest = path
        .trim_start_matches("/openapi/v3")
        .trim_start_matches('/');
    if rest.is_empty() {
        return json_response(StatusCode::OK, st.openapi.v3_root(), &[]);
    }
    match st.openapi.v3_group_version(rest) {
        Some(doc) => json_response(StatusCode::OK, doc, &[]),
        None => ApiError::path_not_found().into_response(),
    }
}
