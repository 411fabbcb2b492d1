//! Registry credentials from `imagePullSecrets`.
//!
//! Keys are matched the way the kubelet's keyring does it: a key names a host
//! (optionally with port, `*` label globs and a repository path prefix), the
//! scheme and a `/v1/` or `/v2/` API suffix are ignored, and the most specific
//! matching key is tried first.

use base64::Engine;
use serde::Deserialize;
use std::collections::BTreeMap;

use crate::ImageError;

/// Credentials collected from a pod's imagePullSecrets.
#[derive(Clone, Default)]
pub struct PullSecrets {
    entries: Vec<Entry>,
}

#[derive(Clone)]
struct Entry {
    /// Lowercase `host[:port]`, labels may be `*` globs.
    host: String,
    /// Repository prefix the key is limited to; empty for the whole registry.
    path: String,
    username: String,
    password: String,
}

/// One `auths` value of a Docker config file.
#[derive(Deserialize)]
struct AuthEntry {
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
}

#[derive(Deserialize)]
struct DockerConfigJson {
    auths: BTreeMap<String, AuthEntry>,
}

impl PullSecrets {
    /// No credentials: every registry is accessed anonymously.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds the `.dockerconfigjson` of a `kubernetes.io/dockerconfigjson` secret.
    pub fn add_dockerconfigjson(&mut self, bytes: &[u8]) -> Result<(), ImageError> {
        let cfg: DockerConfigJson = serde_json::from_slice(bytes).map_err(|e| {
            ImageError::InvalidPullSecret(format!(
                "imagePullSecret .dockerconfigjson is not a Docker config with \"auths\": {e}"
            ))
        })?;
        self.add_auths(cfg.auths, ".dockerconfigjson")
    }

    /// Adds the `.dockercfg` of a legacy `kubernetes.io/dockercfg` secret (the
    /// registry map without the `auths` wrapper).
    pub fn add_dockercfg(&mut self, bytes: &[u8]) -> Result<(), ImageError> {
        let auths: BTreeMap<String, AuthEntry> = serde_json::from_slice(bytes).map_err(|e| {
            ImageError::InvalidPullSecret(format!(
                "imagePullSecret .dockercfg is not a map of registries to credentials: {e}"
            ))
        })?;
        self.add_auths(auths, ".dockercfg")
    }

    /// Whether no credentials were added.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn add_auths(
        &mut self,
        auths: BTreeMap<String, AuthEntry>,
        what: &str,
    ) -> Result<(), ImageError> {
        for (key, entry) in auths {
            let (username, password) = match (&entry.auth, entry.username, entry.password) {
                (Some(auth), _, _) if !auth.trim().is_empty() => decode_auth(auth.trim())
                    .ok_or_else(|| {
                        ImageError::InvalidPullSecret(format!(
                            "imagePullSecret {what}: the \"auth\" of {key:?} is not base64 of user:password"
                        ))
                    })?,
                (_, Some(user), Some(pass)) => (user, pass),
                // Identity tokens and empty entries carry nothing usable for
                // basic auth; skipping them keeps the other keys usable.
                _ => {
                    tracing::debug!(registry = %key, "pull secret entry without credentials skipped");
                    continue;
                }
            };
            let (host, path) = normalise_key(&key);
            if host.is_empty() {
                continue;
            }
            self.entries.push(Entry {
                host,
                path,
                username,
                password,
            });
        }
        Ok(())
    }

    /// Credentials for `registry` (as in the reference, e.g. `docker.io`,
    /// `127.0.0.1:5000`) and `repository`, best match first.
    pub(crate) fn lookup(&self, registry: &str, repository: &str) -> Vec<(String, String)> {
        let registry = canonical_host(&registry.to_ascii_lowercase());
        let mut found: Vec<(usize, bool, &Entry)> = self
            .entries
            .iter()
            .filter(|e| host_matches(&e.host, &registry) && path_matches(&e.path, repository))
            .map(|e| (e.path.len(), !e.host.contains('*'), e))
            .collect();
        // Longer repository prefixes and exact hosts are more specific; the
        // sort is stable so equal keys keep the order they were added in.
        found.sort_by_key(|f| std::cmp::Reverse((f.0, f.1)));
        let mut out: Vec<(String, String)> = Vec::new();
        for (_, _, e) in found {
            let pair = (e.username.clone(), e.password.clone());
            if !out.contains(&pair) {
                out.push(pair);
            }
        }
        out
    }
}

impl std::fmt::Debug for PullSecrets {
    /// Lists the registries only: the passwords must never reach a log.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.entries.iter().map(|e| {
                if e.path.is_empty() {
                    e.host.clone()
                } else {
                    format!("{}/{}", e.host, e.path)
                }
            }))
            .finish()
    }
}

fn decode_auth(auth: &str) -> Option<(String, String)> {
    let raw = base64::engine::general_purpose::STANDARD
        .decode(auth)
        .ok()?;
    let text = String::from_utf8(raw).ok()?;
    let (user, pass) = text.split_once(':')?;
    Some((user.to_string(), pass.to_string()))
}

/// `https://Host:443/v1/` → (`host:443`, ``); `host/org/` → (`host`, `org`).
fn normalise_key(key: &str) -> (String, String) {
    let key = key.trim();
    let key = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    let (host, path) = key.split_once('/').unwrap_or((key, ""));
    let path = path.trim_matches('/');
    // `/v1/` and `/v2/` are API versions from `docker login`, not repositories.
    let path = if path == "v1" || path == "v2" {
        ""
    } else {
        path
    };
    (canonical_host(&host.to_ascii_lowercase()), path.to_string())
}

/// Docker Hub is known under several names; references say `docker.io`.
fn canonical_host(host: &str) -> String {
    match host {
        "index.docker.io" | "registry-1.docker.io" | "registry.hub.docker.com" => {
            "docker.io".to_string()
        }
        other => other.to_string(),
    }
}

/// Host match with the kubelet's glob rules: same number of labels, each
/// label matching (`*` globs allowed), and the same port.
fn host_matches(pattern: &str, host: &str) -> bool {
    let (p_host, p_port) = split_port(pattern);
    let (h_host, h_port) = split_port(host);
    if p_port != h_port {
        return false;
    }
    let p_labels: Vec<&str> = p_host.split('.').collect();
    let h_labels: Vec<&str> = h_host.split('.').collect();
    p_labels.len() == h_labels.len()
        && p_labels
            .iter()
            .zip(&h_labels)
            .all(|(p, h)| glob_label(p, h))
}

fn split_port(host: &str) -> (&str, &str) {
    let bare = crate::reference::host_of(host);
    if bare.len() == host.len() {
        (host, "")
    } else {
        (bare, host.rsplit(':').next().unwrap_or(""))
    }
}

/// `*` matches any run of characters within one DNS label.
fn glob_label(pattern: &str, label: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern == label,
        Some((prefix, rest)) => {
            if !label.starts_with(prefix) {
                return false;
            }
            let tail = &label[prefix.len()..];
            (0..=tail.len())
                .filter(|i| tail.is_char_boundary(*i))
                .any(|i| glob_label(rest, &tail[i..]))
        }
    }
}

fn path_matches(prefix: &str, repository: &str) -> bool {
    prefix.is_empty()
        || repository == prefix
        || repository
            .strip_prefix(prefix)
            .is_some_and(|rest| rest.starts_with('/'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(s: &str) -> String {
        base64::engine::general_purpose::STANDARD.encode(s)
    }

    #[test]
    fn dockerconfigjson_key_forms() {
        let json = format!(
            r#"{{"auths": {{
                "registry.example.com": {{"auth": "{}"}},
                "https://other.example.com/v1/": {{"username": "bob", "password": "pw2"}},
                "https://index.docker.io/v1/": {{"auth": "{}", "email": "x@y"}},
                "localhost:5000": {{"username": "u", "password": "p", "auth": ""}},
                "https://ghcr.io/myorg": {{"auth": "{}"}},
                "ghcr.io": {{"auth": "{}"}},
                "*.corp.example": {{"auth": "{}"}},
                "token-only.example": {{"identitytoken": "abc"}}
            }}}}"#,
            b64("alice:pw1"),
            b64("hub:hubpw"),
            b64("org:orgpw"),
            b64("any:anypw"),
            b64("glob:globpw:with:colons"),
        );
        let mut s = PullSecrets::new();
        s.add_dockerconfigjson(json.as_bytes()).expect("parse");
        let one = |reg: &str, repo: &str| s.lookup(reg, repo).into_iter().next();
        let pair = |u: &str, p: &str| Some((u.to_string(), p.to_string()));

        assert_eq!(one("registry.example.com", "a/b"), pair("alice", "pw1"));
        assert_eq!(one("other.example.com", "x"), pair("bob", "pw2"));
        assert_eq!(one("docker.io", "library/hello"), pair("hub", "hubpw"));
        assert_eq!(one("localhost:5000", "demo/hello"), pair("u", "p"));
        // The port is part of the key.
        assert_eq!(one("localhost", "demo/hello"), None);
        assert_eq!(one("localhost:5001", "demo/hello"), None);
        // The repository prefix wins over the bare host, and only for its repos.
        assert_eq!(s.lookup("ghcr.io", "myorg/app").len(), 2);
        assert_eq!(one("ghcr.io", "myorg/app"), pair("org", "orgpw"));
        assert_eq!(one("ghcr.io", "myorgx/app"), pair("any", "anypw"));
        assert_eq!(
            one("a.corp.example", "r"),
            pair("glob", "globpw:with:colons")
        );
        assert_eq!(one("a.b.corp.example", "r"), None);
        assert_eq!(one("token-only.example", "r"), None);
        assert_eq!(one("unknown.example", "r"), None);
    }

    #[test]
    fn dockercfg_has_no_auths_wrapper() {
        let cfg = format!(
            r#"{{"https://registry.example.com": {{"auth": "{}", "email": "e"}}}}"#,
            b64("carol:pw")
        );
        let mut s = PullSecrets::new();
        s.add_dockercfg(cfg.as_bytes()).expect("parse");
        assert_eq!(
            s.lookup("registry.example.com", "x"),
            vec![("carol".to_string(), "pw".to_string())]
        );
    }

    #[test]
    fn bad_secrets_are_errors_without_leaking() {
        let mut s = PullSecrets::new();
        let err = s
            .add_dockerconfigjson(b"{\"nope\": 1}")
            .expect_err("no auths");
        assert!(err.to_string().contains("auths"), "{err}");
        let err = s
            .add_dockerconfigjson(br#"{"auths": {"r.example": {"auth": "not base64!"}}}"#)
            .expect_err("bad base64");
        assert!(err.to_string().contains("r.example"), "{err}");
        let err = s
            .add_dockerconfigjson(
                format!(
                    r#"{{"auths": {{"r.example": {{"auth": "{}"}}}}}}"#,
                    b64("nocolon")
                )
                .as_bytes(),
            )
            .expect_err("no colon");
        assert!(!err.to_string().contains("nocolon"), "{err}");
        assert!(s.is_empty());

        s.add_dockerconfigjson(
            br#"{"auths": {"r.example": {"username": "u", "password": "secret"}}}"#,
        )
        .expect("parse");
        let dbg = format!("{s:?}");
        assert!(
            dbg.contains("r.example") && !dbg.contains("secret"),
            "{dbg}"
        );
    }

    #[test]
    fn globs() {
        assert!(glob_label("*", "abc"));
        assert!(glob_label("a*c", "abbbc"));
        assert!(glob_label("eu*", "eu-west"));
        assert!(!glob_label("a*c", "abd"));
        assert!(host_matches("*.gcr.io", "eu.gcr.io"));
        assert!(!host_matches("*.gcr.io", "gcr.io"));
        assert!(host_matches("[::1]:5000", "[::1]:5000"));
    }
}
