use super::*;

fn labels_of(method: Method, path: &str, content_type: Option<&str>) -> Option<RequestLabels> {
    let reg = Registry::new();
    let (path, query) = path.split_once('?').unwrap_or((path, ""));
    let a = Attributes::from_request(&method, path, query.contains("watch=true"));
    let mut headers = HeaderMap::new();
    if let Some(ct) = content_type {
        headers.insert(header::CONTENT_TYPE, ct.parse().expect("header"));
    }
    labels(&reg, &a, &method, &headers, Some(query))
}

fn short(l: &RequestLabels) -> (&str, &str, &str, &str, &str, &str) {
    (
        l.verb,
        l.dry_run,
        l.group,
        l.resource,
        l.subresource.as_ref(),
        l.scope,
    )
}

#[test]
fn verbs_and_scopes_are_kubes() {
    let cases = [
        (
            Method::GET,
            "/api/v1/namespaces/d/pods",
            None,
            ("LIST", "", "", "pods", "", "namespace"),
        ),
        (
            Method::GET,
            "/api/v1/pods?watch=true",
            None,
            ("WATCH", "", "", "pods", "", "cluster"),
        ),
        (
            Method::GET,
            "/api/v1/nodes/n1",
            None,
            ("GET", "", "", "nodes", "", "resource"),
        ),
        (
            Method::POST,
            "/apis/apps/v1/namespaces/d/deployments?dryRun=All",
            None,
            ("POST", "All", "apps", "deployments", "", "namespace"),
        ),
        (
            Method::PATCH,
            "/apis/apps/v1/namespaces/d/deployments/x",
            Some("application/apply-patch+yaml"),
            ("APPLY", "", "apps", "deployments", "", "namespace"),
        ),
        (
            Method::PATCH,
            "/api/v1/namespaces/d/pods/p/status",
            Some("application/merge-patch+json"),
            ("PATCH", "", "", "pods", "status", "namespace"),
        ),
        (
            Method::PUT,
            "/apis/apps/v1/namespaces/d/deployments/x/scale",
            None,
            ("PUT", "", "apps", "deployments", "scale", "namespace"),
        ),
        (
            Method::POST,
            "/api/v1/namespaces/d/pods/p/exec",
            None,
            ("CONNECT", "", "", "pods", "exec", "namespace"),
        ),
        (
            Method::DELETE,
            "/api/v1/namespaces/d/configmaps",
            None,
            ("DELETECOLLECTION", "", "", "configmaps", "", "namespace"),
        ),
        (
            Method::GET,
            "/apis/apps/v1",
            None,
            ("GET", "", "", "", "/apis/apps/v1", ""),
        ),
    ];
    for (method, path, ct, want) in cases {
        let l = labels_of(method.clone(), path, ct).unwrap_or_else(|| panic!("{method} {path}"));
        assert_eq!(short(&l), want, "{method} {path}");
        assert_eq!(
            (l.component, l.version.is_empty()),
            ("apiserver", want.3.is_empty())
        );
    }
}

#[test]
fn made_up_resources_are_not_counted() {
    for path in [
        "/api/v1/namespaces/d/nothings",
        "/apis/nope.example/v1/widgets",
        "/api/v1/namespaces/d/pods/p/nonsense",
        "/apis/apps/v2/deployments",
    ] {
        assert!(labels_of(Method::GET, path, None).is_none(), "{path}");
    }
}
