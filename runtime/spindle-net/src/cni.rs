//! Invoking CNI plugins the way the CNI spec (and libcni, which containerd
//! and CRI-O use) does: one process per plugin and command, parameters in
//! `CNI_*` environment variables, the network config on stdin, the result or
//! a JSON error on stdout.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use serde_json::{json, Map, Value};
use tokio::io::AsyncWriteExt;
use tokio::process::Command;

use crate::NetError;

/// The spec version our configs are written in. Plugins 1.0+ speak it;
/// older ones fail [`check_version`] with a clear error instead of producing
/// results in a format we would misread.
pub(crate) const CNI_VERSION: &str = "1.0.0";

/// Upper bound for one plugin call. Plugins wait on the xtables lock
/// (`iptables -w`) without a limit; a wedged lock must not hang pod start
/// forever.
const PLUGIN_TIMEOUT: Duration = Duration::from_secs(60);

/// The spec commands we use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Cmd {
    Add,
    Del,
    Check,
}

impl Cmd {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Cmd::Add => "ADD",
            Cmd::Del => "DEL",
            Cmd::Check => "CHECK",
        }
    }
}

/// Everything that is the same for all plugin calls of one operation on
/// one pod.
pub(crate) struct Invocation<'a> {
    pub bin_dir: &'a Path,
    pub path_env: &'a str,
    pub uid: &'a str,
    /// Empty on DEL when the namespace is already gone: the spec allows it,
    /// and the plugins then release IPAM state without touching interfaces.
    pub netns: &'a str,
    pub ifname: &'a str,
    pub cni_args: &'a str,
}

/// The stdin config of one plugin of a list, built as libcni's
/// `buildOneConfig` does: the plugin's own object plus the list's `name` and
/// `cniVersion`, the previous result, and the runtime config restricted to
/// the capabilities the plugin declares.
pub(crate) fn plugin_config(
    list: &Value,
    plugin: &Value,
    prev_result: Option<&Value>,
    runtime: &Map<String, Value>,
) -> Value {
    let mut conf = plugin.as_object().cloned().unwrap_or_default();
    conf.insert(
        "name".into(),
        list.get("name").cloned().unwrap_or(Value::Null),
    );
    conf.insert(
        "cniVersion".into(),
        list.get("cniVersion")
            .cloned()
            .unwrap_or_else(|| json!(CNI_VERSION)),
    );
    if let Some(prev) = prev_result {
        conf.insert("prevResult".into(), prev.clone());
    }
    let caps = plugin.get("capabilities").and_then(Value::as_object);
    let wanted: Map<String, Value> = runtime
        .iter()
        .filter(|(k, _)| {
            caps.is_some_and(|c| c.get(k.as_str()).and_then(Value::as_bool) == Some(true))
        })
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    if !wanted.is_empty() {
        conf.insert("runtimeConfig".into(), Value::Object(wanted));
    }
    Value::Object(conf)
}

/// The `type` of a plugin object, which is also its binary's file name.
pub(crate) fn plugin_type(plugin: &Value) -> &str {
    plugin.get("type").and_then(Value::as_str).unwrap_or("")
}

/// Runs one plugin. Returns the parsed stdout for a successful ADD (the
/// result), `None` for DEL and CHECK (which print nothing on success).
pub(crate) async fn exec(
    inv: &Invocation<'_>,
    cmd: Cmd,
    config: &Value,
) -> Result<Option<Value>, NetError> {
    let plugin = plugin_type(config).to_string();
    let bin = plugin_path(inv.bin_dir, &plugin)?;
    let stdin =
        serde_json::to_vec(config).map_err(|e| NetError::io("serialising CNI config", e.into()))?;

    let mut child = Command::new(&bin)
        .env("CNI_COMMAND", cmd.as_str())
        .env("CNI_CONTAINERID", inv.uid)
        .env("CNI_NETNS", inv.netns)
        .env("CNI_IFNAME", inv.ifname)
        .env("CNI_ARGS", inv.cni_args)
        .env("CNI_PATH", inv.bin_dir)
        // The plugins exec iptables, which lives in sbin: not always on the
        // agent's PATH (systemd units, minimal containers).
        .env("PATH", inv.path_env)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| NetError::io(format!("running CNI plugin {}", bin.display()), e))?;
    if let Some(mut pipe) = child.stdin.take() {
        // A plugin that exits before reading everything closes the pipe; its
        // exit status and error output below say why, so EPIPE is not the
        // error to report.
        let _ = pipe.write_all(&stdin).await;
    }
    let output = match tokio::time::timeout(PLUGIN_TIMEOUT, child.wait_with_output()).await {
        Ok(r) => {
            r.map_err(|e| NetError::io(format!("waiting for CNI plugin {}", bin.display()), e))?
        }
        // Dropping the future drops the child, which kill_on_drop kills.
        Err(_) => {
            return Err(NetError::PluginTimeout {
                plugin,
                command: cmd.as_str(),
                uid: inv.uid.to_string(),
                secs: PLUGIN_TIMEOUT.as_secs(),
            })
        }
    };

    if !output.status.success() {
        return Err(plugin_error(&plugin, cmd, inv.uid, &output));
    }
    if cmd != Cmd::Add {
        return Ok(None);
    }
    let result: Value =
        serde_json::from_slice(&output.stdout).map_err(|e| NetError::BadResult {
            plugin: plugin.clone(),
            command: cmd.as_str(),
            uid: inv.uid.to_string(),
            reason: format!(
                "not JSON ({e}): {}",
                String::from_utf8_lossy(&output.stdout).trim()
            ),
        })?;
    if !result.is_object() {
        return Err(NetError::BadResult {
            plugin,
            command: cmd.as_str(),
            uid: inv.uid.to_string(),
            reason: "not a JSON object".into(),
        });
    }
    Ok(Some(result))
}

/// Turns a failed plugin run into an error carrying the plugin's own message:
/// the spec's error object (`code`, `msg`, `details`) from stdout, else the
/// process's stderr and exit status.
fn plugin_error(plugin: &str, cmd: Cmd, uid: &str, output: &std::process::Output) -> NetError {
    let parsed: Option<Value> = serde_json::from_slice(&output.stdout).ok();
    let (code, msg, details) = match parsed.as_ref().and_then(Value::as_object) {
        Some(obj) if obj.contains_key("msg") || obj.contains_key("code") => (
            obj.get("code")
                .and_then(Value::as_u64)
                .and_then(|c| u32::try_from(c).ok()),
            obj.get("msg")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string(),
            obj.get("details")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string(),
        ),
        _ => {
            let stderr = String::from_utf8_lossy(&output.stderr);
            let stdout = String::from_utf8_lossy(&output.stdout);
            let text = if stderr.trim().is_empty() {
                stdout
            } else {
                stderr
            };
            (
                None,
                format!("{} ({})", text.trim(), output.status),
                String::new(),
            )
        }
    };
    NetError::Plugin {
        plugin: plugin.to_string(),
        command: cmd.as_str(),
        uid: uid.to_string(),
        code,
        msg,
        details,
    }
}

/// The binary of plugin `name`, which must be an executable file in `dir`.
pub(crate) fn plugin_path(dir: &Path, name: &str) -> Result<PathBuf, NetError> {
    use std::os::unix::fs::PermissionsExt;
    // A type with a path separator would escape the plugin directory.
    let path = dir.join(name);
    let ok = !name.is_empty()
        && !name.contains('/')
        && std::fs::metadata(&path)
            .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0);
    if ok {
        Ok(path)
    } else {
        Err(NetError::PluginMissing {
            plugin: name.to_string(),
            path,
        })
    }
}

/// Asks a plugin which spec versions it supports (the spec's VERSION
/// command) and fails unless ours is among them. Blocking; used once at
/// start-up.
pub(crate) fn check_version(dir: &Path, name: &str, path_env: &str) -> Result<(), NetError> {
    let bin = plugin_path(dir, name)?;
    let mut child = std::process::Command::new(&bin)
        .env("CNI_COMMAND", "VERSION")
        .env("CNI_PATH", dir)
        .env("PATH", path_env)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| NetError::io(format!("running CNI plugin {}", bin.display()), e))?;
    if let Some(mut pipe) = child.stdin.take() {
        use std::io::Write;
        let _ = pipe.write_all(json!({ "cniVersion": CNI_VERSION }).to_string().as_bytes());
    }
    let output = child
        .wait_with_output()
        .map_err(|e| NetError::io(format!("waiting for CNI plugin {}", bin.display()), e))?;
    let info: Value = serde_json::from_slice(&output.stdout).unwrap_or(Value::Null);
    let supported: Vec<&str> = info
        .get("supportedVersions")
        .and_then(Value::as_array)
        .map(|v| v.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    if output.status.success() && supported.contains(&CNI_VERSION) {
        return Ok(());
    }
    Err(NetError::PluginVersion {
        plugin: name.to_string(),
        wanted: CNI_VERSION.to_string(),
        supported: if supported.is_empty() {
            format!(
                "unknown: {}",
                String::from_utf8_lossy(&output.stdout).trim()
            )
        } else {
            supported.join(", ")
        },
    })
}

/// The pod's IPv4 address and gateway from a CNI result: the first IPv4
/// entry of `ips` on the sandbox interface `ifname` (any IPv4 entry if the
/// result does not say which interface).
pub(crate) fn pod_ipv4(
    result: &Value,
    ifname: &str,
) -> Option<(std::net::Ipv4Addr, Option<std::net::Ipv4Addr>)> {
    let interfaces = result.get("interfaces").and_then(Value::as_array);
    let on_pod_if = |entry: &Value| -> bool {
        let Some(idx) = entry.get("interface").and_then(Value::as_u64) else {
            return true;
        };
        let iface = usize::try_from(idx)
            .ok()
            .and_then(|i| interfaces.and_then(|ifs| ifs.get(i)));
        iface.is_some_and(|i| {
            i.get("name").and_then(Value::as_str) == Some(ifname)
                && i.get("sandbox")
                    .and_then(Value::as_str)
                    .is_some_and(|s| !s.is_empty())
        })
    };
    result
        .get("ips")?
        .as_array()?
        .iter()
        .filter(|e| on_pod_if(e))
        .find_map(|e| {
            let addr = e.get("address")?.as_str()?;
            let net: ipnet::Ipv4Net = addr.parse().ok()?;
            let gw = e
                .get("gateway")
                .and_then(Value::as_str)
                .and_then(|g| g.parse().ok());
            Some((net.addr(), gw))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plugin_config_injects_list_fields_and_filters_capabilities() {
        let list = json!({"cniVersion": "1.0.0", "name": "net", "plugins": []});
        let plugin = json!({"type": "portmap", "capabilities": {"portMappings": true}});
        let mut rt = Map::new();
        rt.insert("portMappings".into(), json!([{"hostPort": 80}]));
        rt.insert("bandwidth".into(), json!({}));
        let prev = json!({"ips": []});
        let conf = plugin_config(&list, &plugin, Some(&prev), &rt);
        assert_eq!(conf["name"], "net");
        assert_eq!(conf["cniVersion"], "1.0.0");
        assert_eq!(conf["prevResult"], prev);
        assert_eq!(
            conf["runtimeConfig"],
            json!({"portMappings": [{"hostPort": 80}]})
        );

        let bridge = json!({"type": "bridge"});
        let conf = plugin_config(&list, &bridge, None, &rt);
        assert!(conf.get("runtimeConfig").is_none());
        assert!(conf.get("prevResult").is_none());
    }

    #[test]
    fn pod_ipv4_picks_the_sandbox_interface() {
        let result = json!({
            "cniVersion": "1.0.0",
            "interfaces": [
                {"name": "br0", "mac": "aa"},
                {"name": "veth1", "mac": "bb"},
                {"name": "eth0", "mac": "cc", "sandbox": "/run/netns/x"}
            ],
            "ips": [
                {"address": "10.0.0.1/24", "interface": 0},
                {"address": "fd00::5/64", "interface": 2},
                {"address": "10.0.0.5/24", "gateway": "10.0.0.1", "interface": 2}
            ]
        });
        let (ip, gw) = pod_ipv4(&result, "eth0").expect("an address");
        assert_eq!(ip, std::net::Ipv4Addr::new(10, 0, 0, 5));
        assert_eq!(gw, Some(std::net::Ipv4Addr::new(10, 0, 0, 1)));
        assert!(pod_ipv4(&json!({"ips": []}), "eth0").is_none());
    }

    #[test]
    fn plugin_path_rejects_escapes_and_missing_binaries() {
        let dir = std::env::temp_dir();
        assert!(matches!(
            plugin_path(&dir, "../bin/sh"),
            Err(NetError::PluginMissing { .. })
        ));
        assert!(matches!(
            plugin_path(&dir, ""),
            Err(NetError::PluginMissing { .. })
        ));
        let err = plugin_path(Path::new("/nonexistent"), "bridge").expect_err("missing");
        assert!(
            err.to_string().contains("containernetworking-plugins"),
            "{err}"
        );
    }
}
