//! kube-apiserver's metrics on the control plane's registry ([`spindle_metrics::CONTROL_PLANE`]):
//! `apiserver_request_total` and `apiserver_request_duration_seconds` with kube's labels
//! and buckets, recorded by a layer after authorization (as kube instruments its handlers,
//! so refused requests are not counted), and the storage latencies of [`storage`]. The
//! registry is served on `GET /metrics`, which RBAC guards like any path
//! (`system:monitoring`, `cluster-admin`).
//!
//! Label values are the registry's own `&'static str`s, so recording allocates nothing
//! and a caller cannot grow the families with made-up resources: requests for a resource
//! the registry does not serve, and paths that found nothing, are not counted (kube counts
//! only routes it installed).

pub mod storage;

use std::borrow::Cow;
use std::sync::LazyLock;
use std::time::Instant;

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use spindle_api::{Kind, Registry};
use spindle_metrics::{
    histogram, histogram_family, HistogramFamily, CONTROL_PLANE, REQUEST_BUCKETS,
};

use crate::authz::Attributes;
use crate::AppState;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    verb: &'static str,
    dry_run: &'static str,
    group: &'static str,
    version: &'static str,
    resource: &'static str,
    /// The subresource, or a non-resource request's path.
    subresource: Cow<'static, str>,
    scope: &'static str,
    component: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Code {
    code: u16,
}

struct RequestMetrics {
    total: Family<(RequestLabels, Code), Counter>,
    duration: HistogramFamily<RequestLabels>,
}

fn request_histogram() -> Histogram {
    histogram(REQUEST_BUCKETS)
}

static REQUESTS: LazyLock<RequestMetrics> = LazyLock::new(|| {
    RequestMetrics {
    total: CONTROL_PLANE.register(
        "apiserver_request",
        "Counter of apiserver requests broken out for each verb, dry run value, group, version, resource, scope, component, and HTTP response code",
        Family::default(),
    ),
    duration: CONTROL_PLANE.register(
        "apiserver_request_duration_seconds",
        "Response latency distribution in seconds for each verb, dry run value, group, version, resource, subresource, scope and component",
        histogram_family(request_histogram),
    ),
}
});

/// Register the API server's families at start (each is exposed once it has a series, as
/// client_golang's vectors are).
pub fn register() {
    LazyLock::force(&REQUESTS);
    LazyLock::force(&storage::DURATION);
}

/// `GET /metrics`: the control plane's registry.
pub(crate) async fn serve(headers: HeaderMap) -> Response {
    let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok());
    let (content_type, body) = CONTROL_PLANE.expose(accept);
    ([(header::CONTENT_TYPE, content_type)], body).into_response()
}

/// The instrumentation layer, after authorization (which leaves the request's
/// [`Attributes`] in its extensions): count the request and time it until its response
/// starts.
pub(crate) async fn instrument(State(st): State<AppState>, req: Request, next: Next) -> Response {
    let start = Instant::now();
    let labels = req
        .extensions()
        .get::<Attributes>()
        .and_then(|a| labels(&st.reg, a, req.method(), req.headers(), req.uri().query()));
    let resp = next.run(req).await;
    if let Some(l) = labels {
        record(l, resp.status(), start);
    }
    resp
}

fn record(labels: RequestLabels, status: StatusCode, start: Instant) {
    // A path that found nothing is not a route (resource requests were checked against
    // the registry before).
    if status == StatusCode::NOT_FOUND && labels.resource.is_empty() {
        return;
    }
    REQUESTS
        .duration
        .get_or_create(&labels)
        .observe(start.elapsed().as_secs_f64());
    REQUESTS
        .total
        .get_or_create(&(
            labels,
            Code {
                code: status.as_u16(),
            },
        ))
        .inc();
}

/// kube's labels for a request: the verb as its metrics spell it, the registry's names
/// for the resource; `None` for a resource the registry does not serve.
fn labels(
    reg: &Registry,
    a: &Attributes,
    method: &Method,
    headers: &HeaderMap,
    query: Option<&str>,
) -> Option<RequestLabels> {
    let dry_run = if dry_run_all(query) { "All" } else { "" };
    if !a.resource_request {
        return Some(RequestLabels {
            verb: method_verb(method),
            dry_run,
            group: "",
            version: "",
            resource: "",
            subresource: Cow::Owned(a.path.clone()),
            scope: "",
            component: "apiserver",
        });
    }
    let kind = reg.by_resource(&a.group, &a.version, &a.resource)?;
    let subresource = if a.subresource.is_empty() {
        ""
    } else {
        subresource_name(kind, &a.subresource)?
    };
    let verb = if kind.connects(subresource) {
        "CONNECT"
    } else {
        resource_verb(&a.verb, headers)
    };
    let scope = if !a.namespace.is_empty() {
        "namespace"
    } else if !a.name.is_empty() {
        "resource"
    } else {
        "cluster"
    };
    Some(RequestLabels {
        verb,
        dry_run,
        group: kind.group,
        version: kind.version,
        resource: kind.plural,
        subresource: Cow::Borrowed(subresource),
        scope,
        component: "apiserver",
    })
}

/// The registry's spelling of a subresource the kind serves.
fn subresource_name(kind: &Kind, sub: &str) -> Option<&'static str> {
    match sub {
        "status" if kind.status_subresource => Some("status"),
        "scale" if kind.scale.is_some() => Some("scale"),
        other => kind
            .strategy
            .subresources()
            .iter()
            .find(|s| s.name == other)
            .map(|s| s.name),
    }
}

/// kube's reported verbs: its installer's (`POST`, `PUT`, `LIST`, ...), `APPLY` for a
/// server-side apply.
fn resource_verb(verb: &str, headers: &HeaderMap) -> &'static str {
    match verb {
        "get" => "GET",
        "list" => "LIST",
        "watch" => "WATCH",
        "create" => "POST",
        "update" => "PUT",
        "patch" if is_apply(headers) => "APPLY",
        "patch" => "PATCH",
        "delete" => "DELETE",
        "deletecollection" => "DELETECOLLECTION",
        _ => "UNKNOWN",
    }
}

fn is_apply(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/apply-patch"))
}

fn method_verb(m: &Method) -> &'static str {
    match *m {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::OPTIONS => "OPTIONS",
        _ => "OTHER",
    }
}

/// `dryRun=All` in the query (the only dry-run value there is).
fn dry_run_all(query: Option<&str>) -> bool {
    query.is_some_and(|q| q.split('&').any(|p| p == "dryRun=All"))
}

#[cfg(test)]
mod tests;
