//! What a request asks to do, as an authorizer sees it (kube's RequestInfo and
//! authorizer.Attributes): parsed from the method and path alone, before routing, so a
//! caller without rights learns nothing about what exists.

use axum::http::Method;

use crate::auth::User;
use crate::status::{ApiError, StatusDetails};

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Attributes {
    pub verb: String,
    /// A resource request (`/api/...`, `/apis/<g>/<v>/...`), or a path (`/healthz`).
    pub resource_request: bool,
    pub group: String,
    pub version: String,
    pub resource: String,
    pub subresource: String,
    pub namespace: String,
    pub name: String,
    /// The request path, for non-resource requests.
    pub path: String,
}

/// Namespaces' own subresources: `/api/v1/namespaces/x/status` is about the namespace.
const NAMESPACE_SUBRESOURCES: [&str; 2] = ["status", "finalize"];

impl Attributes {
    /// kube's RequestInfoFactory: the verb from the method (and `watch`), the target from
    /// the path. `watch` is the `watch=true`/`watch=1` query parameter.
    pub fn from_request(method: &Method, path: &str, watch: bool) -> Attributes {
        let method_verb = method.as_str().to_ascii_lowercase();
        let non_resource = || Attributes {
            verb: method_verb.clone(),
            path: path.to_string(),
            ..Attributes::default()
        };
        let parts = crate::request::path_segments(path);
        let (group, version, mut rest) = match parts.first().map(String::as_str) {
            Some("api") if parts.len() >= 3 => ("", parts[1].clone(), &parts[2..]),
            Some("apis") if parts.len() >= 4 => (parts[1].as_str(), parts[2].clone(), &parts[3..]),
            _ => return non_resource(),
        };
        let mut verb = match *method {
            Method::POST => "create",
            Method::GET | Method::HEAD => "get",
            Method::PUT => "update",
            Method::PATCH => "patch",
            Method::DELETE => "delete",
            _ => "",
        }
        .to_string();
        if verb.is_empty() {
            return non_resource();
        }
        if rest.first().map(String::as_str) == Some("watch") {
            verb = "watch".into();
            rest = &rest[1..];
        }
        let mut namespace = String::new();
        if rest.first().map(String::as_str) == Some("namespaces") && rest.len() > 1 {
            namespace = rest[1].clone();
            if rest.len() > 2 && !NAMESPACE_SUBRESOURCES.contains(&rest[2].as_str()) {
                rest = &rest[2..];
            }
        }
        let at = |i: usize| rest.get(i).cloned().unwrap_or_default();
        let (resource, name, subresource) = (at(0), at(1), at(2));
        if name.is_empty() {
            match verb.as_str() {
                "get" if watch => verb = "watch".into(),
                "get" => verb = "list".into(),
                "delete" => verb = "deletecollection".into(),
                _ => {}
            }
        }
        Attributes {
            verb,
            resource_request: true,
            group: group.to_string(),
            version,
            resource,
            subresource,
            namespace,
            name,
            path: path.to_string(),
        }
    }

    /// `pods`, or `pods/log` with the subresource.
    pub fn full_resource(&self) -> String {
        if self.subresource.is_empty() {
            self.resource.clone()
        } else {
            format!("{}/{}", self.resource, self.subresource)
        }
    }

    /// kube's forbiddenMessage: what the user may not do.
    pub fn forbidden_message(&self, user: &str) -> String {
        if !self.resource_request {
            return format!("User {user:?} cannot {} path {:?}", self.verb, self.path);
        }
        let what = format!(
            "User {user:?} cannot {} resource {:?} in API group {:?}",
            self.verb,
            self.full_resource(),
            self.group
        );
        if self.namespace.is_empty() {
            format!("{what} at the cluster scope")
        } else {
            format!("{what} in the namespace {:?}", self.namespace)
        }
    }

    /// The 403 kube-apiserver answers (responsewriters.Forbidden with NewForbidden):
    /// `pods "x" is forbidden: User "jane" cannot ...[: reason]`.
    pub fn forbidden(&self, user: &User, reason: &str) -> ApiError {
        let mut err = self.forbidden_message(&user.name);
        if !reason.is_empty() {
            err = format!("{err}: {reason}");
        }
        forbidden_error(&self.group, &self.resource, &self.name, &err)
    }
}

/// apierrors.NewForbidden: `<resource>[.<group>] ["name"] is forbidden: <err>`, or
/// `forbidden: <err>` when no resource is named.
pub fn forbidden_error(group: &str, resource: &str, name: &str, err: &str) -> ApiError {
    let qualified = match (resource, group) {
        ("", _) => String::new(),
        (r, "") => r.to_string(),
        (r, g) => format!("{r}.{g}"),
    };
    let message = match (qualified.as_str(), name) {
        ("", _) => format!("forbidden: {err}"),
        (q, "") => format!("{q} is forbidden: {err}"),
        (q, n) => format!("{q} {n:?} is forbidden: {err}"),
    };
    ApiError::forbidden(message).with_details(StatusDetails::of(name, group, resource))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(method: Method, path: &str) -> Attributes {
        Attributes::from_request(&method, path, false)
    }

    #[test]
    fn verbs_and_targets_come_from_method_and_path() {
        let list = a(Method::GET, "/api/v1/namespaces/default/pods");
        assert_eq!(
            (
                list.verb.as_str(),
                list.resource.as_str(),
                list.namespace.as_str(),
                list.name.as_str()
            ),
            ("list", "pods", "default", "")
        );
        assert_eq!(
            Attributes::from_request(&Method::GET, "/api/v1/pods", true).verb,
            "watch"
        );
        assert_eq!(
            a(Method::GET, "/api/v1/watch/namespaces/a/pods").verb,
            "watch"
        );
        assert_eq!(
            a(Method::DELETE, "/api/v1/namespaces/a/pods").verb,
            "deletecollection"
        );
        assert_eq!(
            a(Method::PATCH, "/apis/apps/v1/namespaces/a/deployments/d").verb,
            "patch"
        );
        let log = a(Method::GET, "/api/v1/namespaces/a/pods/p/log");
        assert_eq!(
            (log.verb.as_str(), log.full_resource(), log.name.as_str()),
            ("get", "pods/log".into(), "p")
        );
        let ns = a(Method::DELETE, "/api/v1/namespaces/kube-system");
        assert_eq!(
            (
                ns.verb.as_str(),
                ns.resource.as_str(),
                ns.name.as_str(),
                ns.namespace.as_str()
            ),
            ("delete", "namespaces", "kube-system", "kube-system")
        );
        let fin = a(Method::PUT, "/api/v1/namespaces/x/finalize");
        assert_eq!(
            (fin.resource.as_str(), fin.subresource.as_str()),
            ("namespaces", "finalize")
        );
        let crb = a(
            Method::POST,
            "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings",
        );
        assert_eq!(
            (
                crb.group.as_str(),
                crb.verb.as_str(),
                crb.namespace.as_str()
            ),
            ("rbac.authorization.k8s.io", "create", "")
        );
        for path in ["/apis", "/apis/apps/v1", "/api/v1", "/healthz", "/version"] {
            let n = a(Method::GET, path);
            assert!(!n.resource_request, "{path}");
            assert_eq!((n.verb.as_str(), n.path.as_str()), ("get", path));
        }
    }

    #[test]
    fn forbidden_answers_in_kubernetes_words() {
        let jane = User {
            name: "jane".into(),
            groups: vec![],
        };
        let e = a(Method::GET, "/api/v1/namespaces/default/pods").forbidden(&jane, "");
        assert_eq!(
            e.message,
            r#"pods is forbidden: User "jane" cannot list resource "pods" in API group "" in the namespace "default""#
        );
        let e = a(Method::DELETE, "/api/v1/namespaces/default/pods/web").forbidden(&jane, "");
        assert_eq!(
            e.message,
            r#"pods "web" is forbidden: User "jane" cannot delete resource "pods" in API group "" in the namespace "default""#
        );
        let e = a(Method::GET, "/apis/apps/v1/deployments").forbidden(&jane, "");
        assert_eq!(
            e.message,
            r#"deployments.apps is forbidden: User "jane" cannot list resource "deployments" in API group "apps" at the cluster scope"#
        );
        let e = a(Method::GET, "/metrics").forbidden(&jane, "");
        assert_eq!(
            e.message,
            r#"forbidden: User "jane" cannot get path "/metrics""#
        );
        let body = a(Method::GET, "/api/v1/namespaces/d/pods/p/log")
            .forbidden(&jane, "")
            .status_body();
        assert_eq!(
            body["details"],
            serde_json::json!({"name": "p", "kind": "pods"})
        );
        assert_eq!(
            (body["code"].as_u64(), body["reason"].as_str()),
            (Some(403), Some("Forbidden"))
        );
    }
}
