//! Image reference parsing and the small string questions asked about them.

use std::net::IpAddr;

use oci_client::Reference;

use crate::ImageError;

/// An image string from a pod spec, parsed and normalised.
#[derive(Debug, Clone)]
pub(crate) struct ImageRef {
    /// As given by the user, for messages.
    pub given: String,
    pub reference: Reference,
    /// The fully qualified form; the cache is keyed by it so `hello` and
    /// `docker.io/library/hello:latest` share an entry.
    pub resolved: String,
}

impl ImageRef {
    pub fn parse(image: &str) -> Result<Self, ImageError> {
        let reference: Reference = image.parse().map_err(|e| {
            ImageError::InvalidReference(format!("invalid image name {image:?}: {e}"))
        })?;
        Ok(ImageRef {
            given: image.to_string(),
            resolved: reference.whole(),
            reference,
        })
    }

    /// The registry host the requests go to (`index.docker.io` for Docker Hub).
    pub fn registry(&self) -> &str {
        self.reference.resolve_registry()
    }
}

/// The tag of an image string, without validating the rest. `None` when the
/// string has no tag (it may still have a digest).
pub(crate) fn tag_of(image: &str) -> Option<&str> {
    let name = image.split('@').next().unwrap_or(image);
    // A ':' before the last '/' belongs to a registry port, not a tag.
    let last = name.rsplit('/').next().unwrap_or(name);
    last.split_once(':').map(|(_, tag)| tag)
}

pub(crate) fn has_digest(image: &str) -> bool {
    image.contains('@')
}

/// `registry/repository` of a reference string, i.e. without tag or digest.
pub(crate) fn repository_of(resolved: &str) -> String {
    let name = resolved.split('@').next().unwrap_or(resolved);
    match name.rfind('/') {
        Some(slash) => {
            let (head, last) = name.split_at(slash);
            let last = last.split(':').next().unwrap_or(last);
            format!("{head}{last}")
        }
        None => name.split(':').next().unwrap_or(name).to_string(),
    }
}

/// Whether `registry` (`host`, `host:port`, `[v6]:port`) is this machine.
/// Such registries are spoken to over plain HTTP: it is how a developer's
/// local registry runs, and nothing leaves the host.
pub(crate) fn is_loopback(registry: &str) -> bool {
    let host = host_of(registry);
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<IpAddr>()
            .map(|ip| ip.is_loopback())
            .unwrap_or(false)
}

/// The host part of `host[:port]`, with IPv6 brackets removed.
pub(crate) fn host_of(registry: &str) -> &str {
    if let Some(rest) = registry.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match registry.rsplit_once(':') {
        Some((host, port)) if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) => host,
        _ => registry,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalises_short_names() {
        let r = ImageRef::parse("hello").expect("parse");
        assert_eq!(r.resolved, "docker.io/library/hello:latest");
        assert_eq!(r.registry(), "index.docker.io");
        let r = ImageRef::parse("127.0.0.1:5000/demo/hello:v1").expect("parse");
        assert_eq!(r.resolved, "127.0.0.1:5000/demo/hello:v1");
        assert_eq!(r.registry(), "127.0.0.1:5000");
        let d = format!("ghcr.io/x/y@sha256:{}", "0".repeat(64));
        let r = ImageRef::parse(&d).expect("parse");
        assert_eq!(r.resolved, d);
    }

    #[test]
    fn rejects_bad_names() {
        for bad in ["", "Hello", "a b", "x@sha256:abc", "::"] {
            let err = ImageRef::parse(bad).expect_err(bad);
            assert_eq!(err.reason(), "InvalidImageName", "{bad}");
        }
    }

    #[test]
    fn tags() {
        assert_eq!(tag_of("hello"), None);
        assert_eq!(tag_of("hello:v1"), Some("v1"));
        assert_eq!(tag_of("localhost:5000/hello"), None);
        assert_eq!(tag_of("localhost:5000/hello:latest"), Some("latest"));
        assert_eq!(tag_of("x/y@sha256:00"), None);
        assert_eq!(tag_of("x/y:t@sha256:00"), Some("t"));
    }

    #[test]
    fn repositories() {
        assert_eq!(repository_of("localhost:5000/a/b:v1"), "localhost:5000/a/b");
        assert_eq!(repository_of("ghcr.io/a/b@sha256:00"), "ghcr.io/a/b");
        assert_eq!(repository_of("ghcr.io/a/b:t@sha256:00"), "ghcr.io/a/b");
        assert_eq!(repository_of("hello:v1"), "hello");
    }

    #[test]
    fn loopback_hosts() {
        for yes in [
            "localhost",
            "localhost:5000",
            "LOCALHOST:1",
            "127.0.0.1",
            "127.0.0.1:5000",
            "127.3.2.1:80",
            "[::1]:5000",
            "[::1]",
        ] {
            assert!(is_loopback(yes), "{yes}");
        }
        for no in [
            "ghcr.io",
            "index.docker.io",
            "10.0.0.1:5000",
            "localhost.example.com",
            "128.0.0.1",
            "[fe80::1]:5000",
        ] {
            assert!(!is_loopback(no), "{no}");
        }
    }
}
