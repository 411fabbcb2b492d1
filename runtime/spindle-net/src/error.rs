use std::path::PathBuf;

/// Everything that can go wrong while building, checking or removing a pod's
/// network sandbox.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// The [`NetConfig`](crate::NetConfig) cannot describe a working network.
    #[error("invalid network config: {0}")]
    Config(String),

    /// A CNI plugin binary is absent; the message names the package because
    /// that is the only fix.
    #[error(
        "CNI plugin `{plugin}` not found (or not executable) at {}: install the Debian package \
         containernetworking-plugins (apt-get install containernetworking-plugins) or point \
         cni_bin_dir at a directory holding the standard CNI plugins",
        path.display()
    )]
    PluginMissing { plugin: String, path: PathBuf },

    /// A plugin is too old for the CNI spec version the config is written in.
    #[error(
        "CNI plugin `{plugin}` does not support CNI spec version {wanted} (it supports {supported}): \
         install containernetworking-plugins 1.0 or newer"
    )]
    PluginVersion {
        plugin: String,
        wanted: String,
        supported: String,
    },

    /// A host tool the plugins shell out to is missing from `PATH`.
    #[error("`{tool}` not found in PATH ({path}); the CNI plugins need it: install the Debian package {package}")]
    ToolMissing {
        tool: &'static str,
        package: &'static str,
        path: String,
    },

    /// The pod UID cannot be a CNI container ID or a netns name.
    #[error("invalid pod uid {0:?}: must be non-empty, at most 200 characters, start with a letter or digit and contain only letters, digits, '_', '.' and '-'")]
    InvalidUid(String),

    /// A pod field cannot be passed to the plugins in CNI_ARGS.
    #[error("invalid pod {field} {value:?}: must not contain ';' or '='")]
    InvalidPodField { field: &'static str, value: String },

    /// A port mapping the portmap plugin cannot apply.
    #[error("invalid port mapping {mapping}: {reason}")]
    InvalidPortMapping { mapping: String, reason: String },

    /// A plugin reported failure. `code` and `msg` come from the plugin's
    /// JSON error (CNI spec "Error" object); when the plugin printed no
    /// parseable error, `code` is `None` and `msg` holds its stderr.
    #[error("CNI {command} of plugin `{plugin}` for pod {uid} failed{}: {msg}{}",
        code.map(|c| format!(" (code {c})")).unwrap_or_default(),
        if details.is_empty() { String::new() } else { format!(" ({details})") })]
    Plugin {
        plugin: String,
        command: &'static str,
        uid: String,
        code: Option<u32>,
        msg: String,
        details: String,
    },

    /// A plugin did not finish in time (for example stuck on the xtables lock);
    /// it has been killed.
    #[error("CNI {command} of plugin `{plugin}` for pod {uid} timed out after {secs}s")]
    PluginTimeout {
        plugin: String,
        command: &'static str,
        uid: String,
        secs: u64,
    },

    /// A plugin succeeded but its output is not a usable CNI result.
    #[error(
        "CNI {command} of plugin `{plugin}` for pod {uid} returned an unusable result: {reason}"
    )]
    BadResult {
        plugin: String,
        command: &'static str,
        uid: String,
        reason: String,
    },

    /// Creating, entering or removing a network namespace failed.
    #[error("network namespace {}: {op}: {source}", path.display())]
    Netns {
        path: PathBuf,
        op: &'static str,
        #[source]
        source: std::io::Error,
    },

    /// Any other file-system operation (config, records, plugin spawn).
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
}

impl NetError {
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        NetError::Io {
            context: context.into(),
            source,
        }
    }

    pub(crate) fn netns(path: &std::path::Path, op: &'static str, source: std::io::Error) -> Self {
        NetError::Netns {
            path: path.to_path_buf(),
            op,
            source,
        }
    }
}
