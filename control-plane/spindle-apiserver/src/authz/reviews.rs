//! authorization.k8s.io/v1 access reviews (SelfSubjectAccessReview, SubjectAccessReview,
//! LocalSubjectAccessReview, SelfSubjectRulesReview) and authentication.k8s.io
//! SelfSubjectReview: create-only kinds that store nothing and answer with the request
//! and its status (`kubectl auth can-i`, `can-i --list`, `auth whoami`). Creating one
//! is authorized like any create, by the layer in front.

use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{json, Map, Value};

use super::attributes::Attributes;
use super::index::aggregate;
use super::rules::PolicyRule;
use crate::auth::User;
use crate::rest::json_response;
use crate::status::{ApiError, ApiResult};
use crate::AppState;

const AUTHZ: &str = "authorization.k8s.io";
const AUTHN: &str = "authentication.k8s.io";

/// A review path: the group, version, kind, and the namespace of a local review.
pub struct ReviewPath {
    group: &'static str,
    version: String,
    kind: &'static str,
    namespace: Option<String>,
}

/// Whether `path` names one of the review resources.
pub fn route(path: &str) -> Option<ReviewPath> {
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (group, version, rest) = match segs.as_slice() {
        ["apis", AUTHZ, v @ "v1", rest @ ..] => (AUTHZ, *v, rest),
        ["apis", AUTHN, v @ ("v1" | "v1beta1"), rest @ ..] => (AUTHN, *v, rest),
        _ => return None,
    };
    let (kind, namespace) = match (group, rest) {
        (AUTHZ, ["selfsubjectaccessreviews"]) => ("SelfSubjectAccessReview", None),
        (AUTHZ, ["subjectaccessreviews"]) => ("SubjectAccessReview", None),
        (AUTHZ, ["selfsubjectrulesreviews"]) => ("SelfSubjectRulesReview", None),
        (AUTHZ, ["namespaces", ns, "localsubjectaccessreviews"]) => {
            ("LocalSubjectAccessReview", Some(ns.to_string()))
        }
        (AUTHN, ["selfsubjectreviews"]) => ("SelfSubjectReview", None),
        _ => return None,
    };
    Some(ReviewPath {
        group,
        version: version.to_string(),
        kind,
        namespace,
    })
}

fn text(v: &Value, p: &str) -> String {
    v.pointer(p)
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string()
}

/// The request's attributes from a review's spec.
fn spec_attributes(spec: &Value, kind: &str) -> ApiResult<Attributes> {
    let res = spec.get("resourceAttributes").filter(|v| !v.is_null());
    let non = spec.get("nonResourceAttributes").filter(|v| !v.is_null());
    match (res, non) {
        (Some(r), None) => Ok(Attributes {
            verb: text(r, "/verb"),
            resource_request: true,
            group: text(r, "/group"),
            version: text(r, "/version"),
            resource: text(r, "/resource"),
            subresource: text(r, "/subresource"),
            namespace: text(r, "/namespace"),
            name: text(r, "/name"),
            path: String::new(),
        }),
        (None, Some(n)) => Ok(Attributes {
            verb: text(n, "/verb"),
            path: text(n, "/path"),
            ..Attributes::default()
        }),
        _ => Err(ApiError::new(
            422,
            "Invalid",
            format!("{kind}.{AUTHZ} \"\" is invalid: spec.resourceAttributes: Invalid value: \"null\": exactly one of nonResourceAttributes or resourceAttributes must be specified"),
        )),
    }
}

fn access_status(st: &AppState, user: &User, a: &Attributes) -> Value {
    let d = st.authz.authorize(user, a);
    let mut s = Map::new();
    s.insert("allowed".into(), json!(d.allowed));
    if !d.reason.is_empty() {
        s.insert("reason".into(), json!(d.reason));
    }
    Value::Object(s)
}

/// A rule as SelfSubjectRulesReview lists it.
fn resource_rule(r: &PolicyRule) -> Value {
    let mut v = json!({"verbs": r.verbs, "apiGroups": r.api_groups, "resources": r.resources});
    if !r.resource_names.is_empty() {
        v["resourceNames"] = json!(r.resource_names);
    }
    v
}

/// Answer a review.
pub fn handle(st: &AppState, user: &User, p: &ReviewPath, body: &Value) -> ApiResult<Response> {
    let spec = body.get("spec").cloned().unwrap_or_else(|| json!({}));
    let status = match p.kind {
        "SelfSubjectAccessReview" => access_status(st, user, &spec_attributes(&spec, p.kind)?),
        "SubjectAccessReview" | "LocalSubjectAccessReview" => {
            let a = spec_attributes(&spec, p.kind)?;
            if let Some(ns) = &p.namespace {
                if !a.resource_request || a.namespace != *ns {
                    return Err(ApiError::bad_request(format!(
                        "spec.resourceAttributes.namespace must match namespace: {ns}"
                    )));
                }
            }
            let subject = User {
                name: text(&spec, "/user"),
                groups: spec
                    .get("groups")
                    .and_then(|g| serde_json::from_value(g.clone()).ok())
                    .unwrap_or_default(),
            };
            if subject.name.is_empty() && subject.groups.is_empty() {
                return Err(ApiError::new(422, "Invalid", format!("{}.{AUTHZ} \"\" is invalid: spec.user: Invalid value: \"\": at least one of user or group must be specified", p.kind)));
            }
            access_status(st, &subject, &a)
        }
        "SelfSubjectRulesReview" => {
            let ns = text(&spec, "/namespace");
            let (rules, errors) = st.authz.rules_for(user, &ns);
            let (res, non): (Vec<&PolicyRule>, Vec<&PolicyRule>) =
                rules.iter().partition(|r| r.non_resource_urls.is_empty());
            let mut s = json!({
                "resourceRules": res.into_iter().map(resource_rule).collect::<Vec<_>>(),
                "nonResourceRules": non.into_iter().map(|r| json!({"verbs": r.verbs, "nonResourceURLs": r.non_resource_urls})).collect::<Vec<_>>(),
                "incomplete": !errors.is_empty(),
            });
            if !errors.is_empty() {
                s["evaluationError"] = json!(aggregate(&errors));
            }
            s
        }
        _ => {
            let mut info = json!({"username": user.name, "groups": user.groups});
            if user.groups.is_empty() {
                info.as_object_mut().map(|m| m.remove("groups"));
            }
            json!({"userInfo": info})
        }
    };
    let mut meta = json!({"creationTimestamp": null});
    if let Some(ns) = &p.namespace {
        meta["namespace"] = json!(ns);
    }
    let mut out = json!({
        "kind": p.kind,
        "apiVersion": format!("{}/{}", p.group, p.version),
        "metadata": meta,
    });
    if p.kind != "SelfSubjectReview" {
        out["spec"] = spec;
    }
    out["status"] = status;
    Ok(json_response(StatusCode::CREATED, &out, &[]))
}
