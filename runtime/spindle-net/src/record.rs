//! One JSON file per sandbox under `<state_dir>/sandboxes/`, so that after an
//! agent restart setup can return the existing sandbox and teardown can run
//! CNI DEL with what ADD was given (the role of libcni's result cache).

use std::io;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::NetError;

#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct Record {
    pub uid: String,
    pub namespace: String,
    pub name: String,
    pub netns_path: PathBuf,
    /// The network config list ADD ran with. DEL must see the same config
    /// (bridge, IPAM data dir) even if the agent's flags changed since.
    pub config: Value,
    /// The portMappings runtime config ADD ran with: the portmap plugin only
    /// removes its rules when DEL carries them again.
    pub port_mappings: Value,
    /// ADD results, absent while ADD is in progress (or crashed half-way:
    /// teardown then runs DEL without prevResult, which the spec allows).
    pub loopback_result: Option<Value>,
    pub result: Option<Value>,
    pub ip: Option<Ipv4Addr>,
    pub gateway: Option<Ipv4Addr>,
}

pub(crate) struct Records {
    dir: PathBuf,
}

impl Records {
    pub fn new(state_dir: &Path) -> Self {
        Records {
            dir: state_dir.join("sandboxes"),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn path(&self, uid: &str) -> PathBuf {
        self.dir.join(format!("{uid}.json"))
    }

    pub async fn exists(&self, uid: &str) -> bool {
        tokio::fs::try_exists(self.path(uid)).await.unwrap_or(false)
    }

    /// `Ok(None)` when there is no record; `Err` when there is one that
    /// cannot be read, so callers can still clean up by convention.
    pub async fn load(&self, uid: &str) -> Result<Option<Record>, NetError> {
        let path = self.path(uid);
        let bytes = match tokio::fs::read(&path).await {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(NetError::io(format!("reading {}", path.display()), e)),
        };
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| NetError::io(format!("parsing {}", path.display()), e.into()))
    }

    /// Writes atomically (temp file + rename) so a crash never leaves a
    /// half-written record that would block the pod's cleanup.
    pub async fn store(&self, rec: &Record) -> Result<(), NetError> {
        tokio::fs::create_dir_all(&self.dir)
            .await
            .map_err(|e| NetError::io(format!("creating {}", self.dir.display()), e))?;
        let path = self.path(&rec.uid);
        let tmp = self.dir.join(format!(".{}.json.tmp", rec.uid));
        let bytes = serde_json::to_vec_pretty(rec)
            .map_err(|e| NetError::io("serialising sandbox record", e.into()))?;
        tokio::fs::write(&tmp, bytes)
            .await
            .map_err(|e| NetError::io(format!("writing {}", tmp.display()), e))?;
        tokio::fs::rename(&tmp, &path).await.map_err(|e| {
            NetError::io(
                format!("renaming {} to {}", tmp.display(), path.display()),
                e,
            )
        })
    }

    pub async fn remove(&self, uid: &str) -> Result<(), NetError> {
        let path = self.path(uid);
        match tokio::fs::remove_file(&path).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(NetError::io(format!("removing {}", path.display()), e)),
        }
    }

    /// UIDs with a record, sorted.
    pub async fn uids(&self) -> io::Result<Vec<String>> {
        let mut out = Vec::new();
        let mut dir = match tokio::fs::read_dir(&self.dir).await {
            Ok(d) => d,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(out),
            Err(e) => return Err(e),
        };
        while let Some(entry) = dir.next_entry().await? {
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            // Temp files start with '.', which no valid uid does.
            if let Some(uid) = name.strip_suffix(".json").filter(|u| crate::valid_uid(u)) {
                out.push(uid.to_string());
            }
        }
        out.sort();
        Ok(out)
    }
}
