//! A container's resources as the node uses them: limits for the runtimes (bytes,
//! millicores), emptyDir sizes, and the downward API's `resourceFieldRef` values. Every
//! quantity is read exactly, with spindle-meta's [`Quantity`], as the kubelet reads it.

use k8s_openapi::api::core::v1::Container;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity as ApiQuantity;
use spindle_meta::Quantity;

use crate::env::ConfigError;

fn exact(q: &ApiQuantity) -> Option<Quantity> {
    Quantity::try_from(q).ok()
}

/// A quantity of bytes (memory, storage), rounded up; `None` when it is not a
/// quantity or is negative.
pub fn bytes(q: &ApiQuantity) -> Option<u64> {
    u64::try_from(exact(q)?.value()).ok()
}

/// A CPU quantity in millicores, rounded up and at least 1.
pub fn millicores(q: &ApiQuantity) -> Option<u64> {
    u64::try_from(exact(q)?.as_millis()).ok().map(|m| m.max(1))
}

/// The memory limit (bytes) and CPU limit (millicores) of the container.
pub fn limits(c: &Container) -> (Option<u64>, Option<u64>) {
    let l = c.resources.as_ref().and_then(|r| r.limits.as_ref());
    let mem = l.and_then(|l| l.get("memory")).and_then(bytes);
    let cpu = l.and_then(|l| l.get("cpu")).and_then(millicores);
    (mem, cpu)
}

/// The container's CPU request in millicores.
pub fn requested_cpu(c: &Container) -> Option<u64> {
    c.resources
        .as_ref()
        .and_then(|r| r.requests.as_ref())
        .and_then(|r| r.get("cpu"))
        .and_then(millicores)
}

/// A container resource (limits.cpu, requests.memory, ...) divided by `divisor`, rounded
/// up, as the downward API reports it: CPU in millicores over the divisor's millicores,
/// anything else in whole units over the divisor's (the kubelet's
/// convertResourceCPUToString and convertResourceMemoryToString). A divisor of zero or
/// none is 1.
pub fn field_value(
    container: &Container,
    resource: &str,
    divisor: Option<&ApiQuantity>,
) -> Result<String, ConfigError> {
    let (which, name) = resource
        .split_once('.')
        .ok_or_else(|| ConfigError(format!("unsupported resource {resource:?}")))?;
    let res = container.resources.as_ref();
    let q = match which {
        "limits" => res.and_then(|r| r.limits.as_ref()),
        "requests" => res.and_then(|r| r.requests.as_ref()),
        _ => None,
    }
    .and_then(|m| m.get(name));
    let parse = |q: &ApiQuantity| {
        exact(q).ok_or_else(|| ConfigError(format!("invalid quantity {:?}", q.0)))
    };
    // An unset limit reads as the node's allocatable; we report 0 (unlimited) for want
    // of a cheaper answer, which callers treat as "no limit".
    let value = q.map(parse).transpose()?.unwrap_or_default();
    let divisor = divisor
        .map(parse)
        .transpose()?
        .filter(|d| !d.is_zero())
        .unwrap_or_else(|| Quantity::from_value(1, spindle_meta::quantity::Format::DecimalSI));
    let (n, d) = if name == "cpu" {
        (value.as_millis(), divisor.as_millis())
    } else {
        (value.value(), divisor.value())
    };
    Ok(ceil_div(i128::from(n), i128::from(d)).to_string())
}

/// `n / d` rounded up (`d` is positive: a divisor is never negative in a valid pod; a
/// negative one is taken as its size).
fn ceil_div(n: i128, d: i128) -> i128 {
    let d = d.abs().max(1);
    let q = n / d;
    if n % d > 0 {
        q + 1
    } else {
        q
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(s: &str) -> ApiQuantity {
        ApiQuantity(s.to_string())
    }

    fn container(limits: &[(&str, &str)], requests: &[(&str, &str)]) -> Container {
        let map = |kv: &[(&str, &str)]| {
            kv.iter()
                .map(|(k, v)| (k.to_string(), q(v)))
                .collect::<std::collections::BTreeMap<_, _>>()
        };
        Container {
            name: "c".into(),
            resources: Some(k8s_openapi::api::core::v1::ResourceRequirements {
                limits: Some(map(limits)),
                requests: Some(map(requests)),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn quantities() {
        assert_eq!(millicores(&q("100m")), Some(100));
        assert_eq!(bytes(&q("64Mi")), Some(64 << 20));
        assert_eq!(bytes(&q("1G")), Some(1_000_000_000));
        assert_eq!(millicores(&q("2")), Some(2000));
        assert_eq!(bytes(&q("x")), None);
        // A fraction of a millicore still gets one; a fraction of a byte rounds up.
        assert_eq!(millicores(&q("100u")), Some(1));
        assert_eq!(bytes(&q("1.5")), Some(2));
    }

    /// Every valid suffix is a limit: `1Pi` (and `1Ei`, `1P`, `1E`) used to read as no
    /// limit at all.
    #[test]
    fn large_suffixes_are_limits() {
        let c = container(&[("memory", "1Pi"), ("cpu", "1k")], &[]);
        assert_eq!(limits(&c), (Some(1 << 50), Some(1_000_000)));
        assert_eq!(bytes(&q("1Ei")), Some(1 << 60));
        assert_eq!(bytes(&q("2P")), Some(2_000_000_000_000_000));
        assert_eq!(bytes(&q("1E")), Some(1_000_000_000_000_000_000));
        assert_eq!(limits(&container(&[], &[])), (None, None));
    }

    #[test]
    fn downward_api_values_as_the_kubelet_writes_them() {
        let c = container(
            &[("memory", "1Pi"), ("cpu", "1500m")],
            &[("memory", "100M"), ("cpu", "250m")],
        );
        let v = |r: &str, d: Option<&str>| field_value(&c, r, d.map(q).as_ref()).expect(r);
        assert_eq!(v("limits.memory", None), "1125899906842624");
        assert_eq!(v("limits.memory", Some("1Mi")), "1073741824");
        assert_eq!(v("limits.memory", Some("1Gi")), "1048576");
        assert_eq!(v("limits.cpu", None), "2");
        assert_eq!(v("limits.cpu", Some("1m")), "1500");
        assert_eq!(v("requests.cpu", Some("100m")), "3");
        assert_eq!(v("requests.memory", Some("1Mi")), "96");
        assert_eq!(v("requests.memory", Some("0")), "100000000");
        assert_eq!(v("limits.ephemeral-storage", None), "0");
        assert!(field_value(&c, "limits.memory", Some(&q("x"))).is_err());
        assert!(field_value(&c, "memory", None).is_err());
    }
}
