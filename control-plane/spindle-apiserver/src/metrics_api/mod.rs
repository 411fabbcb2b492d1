//! The resource metrics API, `metrics.k8s.io/v1beta1` (NodeMetrics and PodMetrics), served
//! by the API server itself as metrics-server serves it behind an APIService: each
//! request reads the nodes' agents' Summary API (`/stats/summary`, [`scrape`]) over the
//! same authenticated connection `nodes/proxy` uses, and answers with metrics-server's
//! objects ([`objects`]): CPU in nanocores averaged over the agent's sampling window,
//! memory as the working set. Authorization is ordinary RBAC on `pods` and `nodes` in
//! group `metrics.k8s.io` (the authorization layer runs before this); the default
//! `view`, `edit` and `admin` roles hold it through `system:aggregated-metrics-reader`.

mod objects;
mod scrape;

use std::collections::HashMap;

use axum::http::{Method, StatusCode};
use axum::response::Response;
use serde_json::{json, Value};

use crate::request::{Query, Target};
use crate::rest::{json_response, list_objects};
use crate::selectors::selectors;
use crate::status::{ApiError, ApiResult};
use crate::AppState;

pub const GROUP: &str = "metrics.k8s.io";
pub const VERSION: &str = "v1beta1";
const PREFIX: &str = "/apis/metrics.k8s.io/v1beta1/";

/// What a metrics request asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Request {
    Nodes(Option<String>),
    Pods {
        namespace: Option<String>,
        name: Option<String>,
    },
}

/// The request a path makes of the metrics API, if it is one.
pub fn route(path: &str) -> Option<Request> {
    let segs = crate::request::path_segments(path.strip_prefix(PREFIX)?);
    let segs: Vec<&str> = segs.iter().map(String::as_str).collect();
    let some = |s: &str| (!s.is_empty()).then(|| s.to_string());
    Some(match segs.as_slice() {
        ["nodes"] => Request::Nodes(None),
        ["nodes", name] => Request::Nodes(Some(some(name)?)),
        ["pods"] => Request::Pods {
            namespace: None,
            name: None,
        },
        ["namespaces", ns, "pods"] => Request::Pods {
            namespace: Some(some(ns)?),
            name: None,
        },
        ["namespaces", ns, "pods", name] => Request::Pods {
            namespace: Some(some(ns)?),
            name: Some(some(name)?),
        },
        _ => return None,
    })
}

pub async fn serve(st: &AppState, method: &Method, r: Request, q: &Query) -> ApiResult<Response> {
    if method != Method::GET {
        return Err(ApiError::method_not_supported(
            "the server does not allow this method on the requested resource",
        ));
    }
    let body = match r {
        Request::Nodes(name) => nodes(st, name, q).await?,
        Request::Pods { namespace, name } => pods(st, namespace, name, q).await?,
    };
    Ok(json_response(StatusCode::OK, &body, &[]))
}

fn target(st: &AppState, plural: &str, namespace: Option<String>) -> ApiResult<Target> {
    let kind = st
        .reg
        .by_resource("", "v1", plural)
        .cloned()
        .ok_or_else(|| ApiError::internal(format!("the {plural} kind is not registered")))?;
    Ok(Target {
        kind,
        namespace,
        name: None,
        sub: None,
    })
}

/// The objects of `plural` the request's label and field selectors match, with only
/// `name` if one is given.
async fn matching(
    st: &AppState,
    plural: &str,
    namespace: Option<String>,
    name: Option<&str>,
    q: &Query,
) -> ApiResult<Vec<Value>> {
    let t = target(st, plural, namespace)?;
    let sel = selectors(&t.kind, q)?;
    let (items, _, _) = list_objects(st, &t, &sel, None, None).await?;
    Ok(match name {
        Some(n) => items
            .into_iter()
            .filter(|o| o["metadata"]["name"] == n)
            .collect(),
        None => items,
    })
}

fn list(kind: &str, items: Vec<Value>) -> Value {
    json!({"kind": kind, "apiVersion": format!("{GROUP}/{VERSION}"), "metadata": {}, "items": items})
}

/// One object of a get: the only item, with its kind, or metrics-server's NotFound.
fn single(kind: &str, resource: &str, key: &str, mut items: Vec<Value>) -> ApiResult<Value> {
    let Some(mut item) = items.pop() else {
        return Err(ApiError::not_found(
            &format!("{resource}.{GROUP}"),
            GROUP,
            resource,
            key,
        ));
    };
    let mut out = serde_json::Map::new();
    out.insert("kind".into(), json!(kind));
    out.insert("apiVersion".into(), json!(format!("{GROUP}/{VERSION}")));
    if let Some(fields) = item.as_object_mut() {
        out.append(fields);
    }
    Ok(Value::Object(out))
}

async fn nodes(st: &AppState, name: Option<String>, q: &Query) -> ApiResult<Value> {
    let nodes = matching(st, "nodes", None, name.as_deref(), q).await?;
    let summaries = scrape::summaries(st, &nodes).await;
    let items: Vec<Value> = nodes
        .iter()
        .filter_map(|n| {
            let s = summaries.get(n["metadata"]["name"].as_str()?)?;
            objects::node_metrics(n, s)
        })
        .collect();
    match name {
        Some(n) => single("NodeMetrics", "nodemetrics", &n, items),
        None => Ok(list("NodeMetricsList", items)),
    }
}

async fn pods(
    st: &AppState,
    namespace: Option<String>,
    name: Option<String>,
    q: &Query,
) -> ApiResult<Value> {
    let pods = matching(st, "pods", namespace.clone(), name.as_deref(), q).await?;
    // Only the nodes these pods run on are asked.
    let wanted: std::collections::BTreeSet<&str> = pods
        .iter()
        .filter_map(|p| p["spec"]["nodeName"].as_str())
        .filter(|n| !n.is_empty())
        .collect();
    let mut nodes = Vec::new();
    for n in wanted {
        if let Ok(node) = crate::proxy::load_node(st, n).await {
            nodes.push(node);
        }
    }
    let summaries = scrape::summaries(st, &nodes).await;
    let stats: HashMap<(&str, &str), &Value> = summaries
        .values()
        .flat_map(|s| s["pods"].as_array().into_iter().flatten())
        .filter_map(|p| {
            let r = &p["podRef"];
            Some(((r["namespace"].as_str()?, r["name"].as_str()?), p))
        })
        .collect();
    let items: Vec<Value> = pods
        .iter()
        .filter_map(|p| {
            let m = &p["metadata"];
            let s = stats.get(&(m["namespace"].as_str()?, m["name"].as_str()?))?;
            (s["podRef"]["uid"] == m["uid"]).then_some(())?;
            objects::pod_metrics(p, s)
        })
        .collect();
    match name {
        Some(n) => single(
            "PodMetrics",
            "podmetrics",
            &format!("{}/{n}", namespace.unwrap_or_default()),
            items,
        ),
        None => Ok(list("PodMetricsList", items)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        assert_eq!(
            route("/apis/metrics.k8s.io/v1beta1/nodes"),
            Some(Request::Nodes(None))
        );
        assert_eq!(
            route("/apis/metrics.k8s.io/v1beta1/nodes/n1"),
            Some(Request::Nodes(Some("n1".into())))
        );
        assert_eq!(
            route("/apis/metrics.k8s.io/v1beta1/namespaces/a/pods/p"),
            Some(Request::Pods {
                namespace: Some("a".into()),
                name: Some("p".into())
            })
        );
        assert_eq!(
            route("/apis/metrics.k8s.io/v1beta1/pods"),
            Some(Request::Pods {
                namespace: None,
                name: None
            })
        );
        assert_eq!(route("/apis/metrics.k8s.io/v1beta1/services"), None);
        assert_eq!(route("/apis/metrics.k8s.io/v1beta1/nodes/a/b"), None);
        assert_eq!(route("/apis/metrics.k8s.io/v1beta1/namespaces//pods"), None);
    }
}
