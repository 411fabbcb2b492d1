//! The calls the agent makes to containerd.

use std::path::Path;
use std::sync::Arc;

use containerd_client::services::v1::container::Runtime;
use containerd_client::services::v1::snapshots::snapshots_client::SnapshotsClient;
use containerd_client::services::v1::snapshots::{
    CommitSnapshotRequest, MountsRequest, PrepareSnapshotRequest, RemoveSnapshotRequest,
    StatSnapshotRequest,
};
use containerd_client::services::v1::{
    containers_client::ContainersClient, content_client::ContentClient, diff_client::DiffClient,
    images_client::ImagesClient, leases_client::LeasesClient, tasks_client::TasksClient,
    version_client::VersionClient, ApplyRequest, CloseIoRequest, Container, CreateContainerRequest,
    CreateImageRequest, CreateRequest as CreateLeaseRequest, CreateTaskRequest,
    DeleteContainerRequest, DeleteProcessRequest, DeleteResourceRequest, DeleteTaskRequest,
    ExecProcessRequest, Image, InfoRequest, KillRequest, ListContainersRequest, ResizePtyRequest,
    Resource, StartRequest, UpdateImageRequest, WaitRequest, WriteAction, WriteContentRequest,
};
use containerd_client::tonic::transport::Channel;
use containerd_client::tonic::Request;
use containerd_client::types::{Descriptor, Mount};
use sha2::{Digest, Sha256};
use spindle_image::{Blob, ContainerImage};
use tokio::io::AsyncReadExt;

use crate::io::Fifos;
use crate::{Error, Result};

const RUNTIME: &str = "io.containerd.runc.v2";
const SPEC_TYPE: &str = "types.containerd.io/opencontainers/runtime-spec/1/Spec";
const PROCESS_TYPE: &str = "types.containerd.io/opencontainers/runtime-spec/1/Process";

/// A connection to containerd, scoped to one containerd namespace. Cheap to clone.
#[derive(Clone)]
pub struct Containerd {
    channel: Channel,
    namespace: String,
    snapshotter: String,
    /// Imports of the same layers must not race to commit the same snapshot.
    import_lock: Arc<tokio::sync::Mutex<()>>,
}

/// A container to create and start.
pub struct RunSpec<'a> {
    pub id: &'a str,
    /// The image record's name (the resolved reference).
    pub image: &'a str,
    /// The snapshot of the image's top layer, from [`Containerd::import`].
    pub chain_id: &'a str,
    /// The OCI runtime spec, from [`crate::spec::build`].
    pub spec: Vec<u8>,
    pub fifos: &'a Fifos,
    pub terminal: bool,
}

/// An extra process in a running container.
pub struct ExecSpec<'a> {
    pub container: &'a str,
    pub exec_id: &'a str,
    /// From [`crate::spec::encode_process`].
    pub process: Vec<u8>,
    pub fifos: &'a Fifos,
    pub terminal: bool,
}

/// How a task or exec ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Exited {
    pub status: u32,
}

fn descriptor(b: &Blob) -> Descriptor {
    Descriptor {
        media_type: b.media_type.clone(),
        digest: b.digest.clone(),
        size: b.size as i64,
        annotations: Default::default(),
    }
}

/// One layer as the image config names it: its diff ID (the digest of its
/// uncompressed tar) and the chain ID of the snapshot holding it and every layer below.
#[derive(Clone, Debug, PartialEq, Eq)]
struct LayerId {
    diff_id: String,
    chain_id: String,
}

/// The layers of an image config: diff IDs and the chain IDs built from them.
fn layer_ids(config: &[u8]) -> Result<Vec<LayerId>> {
    let v: serde_json::Value = serde_json::from_slice(config)
        .map_err(|e| Error::Invalid(format!("image config is not JSON: {e}")))?;
    let diff_ids = v["rootfs"]["diff_ids"]
        .as_array()
        .ok_or_else(|| Error::Invalid("image config has no rootfs.diff_ids".into()))?;
    let mut layers: Vec<LayerId> = Vec::with_capacity(diff_ids.len());
    for d in diff_ids {
        let diff_id = d
            .as_str()
            .ok_or_else(|| {
                Error::Invalid(format!(
                    "image config has a diff ID {d} that is not a string"
                ))
            })?
            .to_string();
        let chain_id = match layers.last() {
            None => diff_id.clone(),
            Some(below) => format!(
                "sha256:{}",
                hex::encode(Sha256::digest(
                    format!("{} {diff_id}", below.chain_id).as_bytes()
                ))
            ),
        };
        layers.push(LayerId { diff_id, chain_id });
    }
    Ok(layers)
}

/// The label of a committed snapshot whose content Spindle unpacked and verified: its
/// value is the snapshot's chain ID. A snapshot by that name without it (made by
/// anyone else, or by a Spindle that did not verify) is not reused, since a chain ID
/// is only a claim of the image config until the unpacked layer matched its diff ID.
const VERIFIED_LABEL: &str = "spindle.dev/verified-chain-id";

/// The name of the committed snapshot holding the layers up to `chain_id`, once
/// verified. Spindle before verification committed them under the bare chain ID; those
/// can never be removed while a layer above has one as its parent (containerd refuses
/// to remove a snapshot with children), so they are not reused nor removed but left
/// out: a new name per chain is unpacked again, and the old ones are dropped from the
/// image's lease ([`Containerd::release_unverified`]) for containerd's collector.
fn snapshot_name(chain_id: &str) -> String {
    format!("spindle-verified/{chain_id}")
}

/// RFC 3339 in UTC, as containerd's `gc.expire` label wants it.
fn rfc3339(t: std::time::SystemTime) -> String {
    chrono::DateTime::<chrono::Utc>::from(t).to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// How many times the kernel's OOM killer acted in a container's cgroup (v1 or v2).
/// Read before the task is deleted: runc removes the cgroup with it.
pub fn oom_kills(cgroups_path: &str) -> u64 {
    let rel = cgroups_path.trim_start_matches('/');
    let v1 = Path::new("/sys/fs/cgroup/memory")
        .join(rel)
        .join("memory.oom_control");
    let v2 = Path::new("/sys/fs/cgroup").join(rel).join("memory.events");
    for p in [v1, v2] {
        if let Ok(text) = std::fs::read_to_string(&p) {
            return text
                .lines()
                .find_map(|l| l.strip_prefix("oom_kill "))
                .and_then(|n| n.trim().parse().ok())
                .unwrap_or(0);
        }
    }
    0
}

impl Containerd {
    /// Connects to containerd's socket; every call is in `namespace`.
    pub async fn connect(socket: &Path, namespace: &str) -> Result<Containerd> {
        let channel =
            containerd_client::connect(socket)
                .await
                .map_err(|source| Error::Connect {
                    socket: socket.display().to_string(),
                    source,
                })?;
        Ok(Containerd {
            channel,
            namespace: namespace.to_string(),
            snapshotter: "overlayfs".into(),
            import_lock: Arc::new(tokio::sync::Mutex::new(())),
        })
    }

    fn req<T>(&self, msg: T) -> Request<T> {
        let mut r = Request::new(msg);
        if let Ok(v) = self.namespace.parse() {
            r.metadata_mut().insert("containerd-namespace", v);
        }
        r
    }

    fn leased<T>(&self, msg: T, lease: &str) -> Request<T> {
        let mut r = self.req(msg);
        if let Ok(v) = lease.parse() {
            r.metadata_mut().insert("containerd-lease", v);
        }
        r
    }

    /// containerd's version string.
    pub async fn version(&self) -> Result<String> {
        let v = VersionClient::new(self.channel.clone())
            .version(())
            .await
            .map_err(|e| Error::rpc("version", e))?
            .into_inner();
        Ok(v.version)
    }

    /// Makes the image present in containerd: blobs in the content store, layers
    /// unpacked into snapshots, an image record named `name`. Returns the snapshot of
    /// the top layer ([`snapshot_name`]), the parent of each container's snapshot. Everything is held by a
    /// lease named after the manifest, so containerd's garbage collector keeps it.
    pub async fn import(&self, name: &str, img: &ContainerImage) -> Result<String> {
        let _held = self.import_lock.lock().await;
        let config = tokio::fs::read(&img.config.path)
            .await
            .map_err(|e| Error::Io(format!("reading {}", img.config.path.display()), e))?;
        let ids = layer_ids(&config)?;
        if ids.len() != img.layers.len() {
            return Err(Error::Invalid(format!(
                "image {name} lists {} diff IDs for {} layers",
                ids.len(),
                img.layers.len()
            )));
        }
        let lease = format!(
            "spindle-image-{}",
            img.manifest.digest.trim_start_matches("sha256:")
        );
        match LeasesClient::new(self.channel.clone())
            .create(self.req(CreateLeaseRequest {
                id: lease.clone(),
                labels: Default::default(),
            }))
            .await
        {
            Ok(_) => {}
            Err(s) if s.code() == containerd_client::tonic::Code::AlreadyExists => {}
            Err(s) => return Err(Error::rpc("creating the image lease", s)),
        }
        for blob in std::iter::once(&img.manifest)
            .chain([&img.config])
            .chain(&img.layers)
        {
            self.write_blob(blob, &lease).await?;
        }
        let mut parent = String::new();
        for (layer, id) in img.layers.iter().zip(&ids) {
            let name = snapshot_name(&id.chain_id);
            if !self.verified_snapshot(&name, &id.chain_id).await? {
                self.release_unverified(&lease, &id.chain_id).await?;
                self.unpack_layer(layer, id, &name, &parent, &lease).await?;
            }
            parent = name;
        }
        let image = Image {
            name: name.to_string(),
            target: Some(descriptor(&img.manifest)),
            ..Default::default()
        };
        let mut images = ImagesClient::new(self.channel.clone());
        if let Err(s) = images
            .create(self.req(CreateImageRequest {
                image: Some(image.clone()),
                source_date_epoch: None,
            }))
            .await
        {
            if s.code() != containerd_client::tonic::Code::AlreadyExists {
                return Err(Error::rpc(format!("creating image {name}"), s));
            }
            images
                .update(self.req(UpdateImageRequest {
                    image: Some(image),
                    update_mask: None,
                    source_date_epoch: None,
                }))
                .await
                .map_err(|s| Error::rpc(format!("updating image {name}"), s))?;
        }
        Ok(parent)
    }

    /// Whether the committed snapshot `name` exists and was verified as `chain_id` when
    /// it was unpacked ([`VERIFIED_LABEL`]). One that exists unverified (only someone
    /// with containerd's socket makes one by that name) is removed, so the layer is
    /// unpacked again; if it cannot be (a container or a layer still sits on it), the
    /// import fails rather than run on content nobody checked.
    async fn verified_snapshot(&self, name: &str, chain_id: &str) -> Result<bool> {
        let mut snapshots = SnapshotsClient::new(self.channel.clone());
        let info = match snapshots
            .stat(self.req(StatSnapshotRequest {
                snapshotter: self.snapshotter.clone(),
                key: name.to_string(),
            }))
            .await
        {
            Ok(r) => r.into_inner().info.unwrap_or_default(),
            Err(s) if s.code() == containerd_client::tonic::Code::NotFound => return Ok(false),
            Err(s) => return Err(Error::rpc(format!("reading snapshot {name}"), s)),
        };
        if info.labels.get(VERIFIED_LABEL).map(String::as_str) == Some(chain_id) {
            return Ok(true);
        }
        tracing::warn!(
            snapshot = name,
            "removing a snapshot whose content was not verified"
        );
        snapshots
            .remove(self.req(RemoveSnapshotRequest {
                snapshotter: self.snapshotter.clone(),
                key: name.to_string(),
            }))
            .await
            .map_err(|s| {
                Error::rpc(
                    format!("snapshot {name} was not unpacked from verified content; removing it"),
                    s,
                )
            })?;
        Ok(false)
    }

    /// Drops from `lease` the snapshot an earlier Spindle committed under the bare
    /// `chain_id` (see [`snapshot_name`]), so containerd's collector removes it once
    /// nothing else (a container's snapshot above it) refers to it.
    async fn release_unverified(&self, lease: &str, chain_id: &str) -> Result<()> {
        let released = LeasesClient::new(self.channel.clone())
            .delete_resource(self.req(DeleteResourceRequest {
                id: lease.to_string(),
                resource: Some(Resource {
                    id: chain_id.to_string(),
                    r#type: format!("snapshots/{}", self.snapshotter),
                }),
            }))
            .await;
        match released {
            Ok(_) => Ok(()),
            Err(s) if s.code() == containerd_client::tonic::Code::NotFound => Ok(()),
            Err(s) => Err(Error::rpc(format!("releasing snapshot {chain_id}"), s)),
        }
    }

    /// Applies `layer` onto `parent` in a new snapshot and commits it as `name`, labelled
    /// with the layer's chain ID, only if the uncompressed content is the diff ID the config claims (as
    /// containerd's unpacker checks): otherwise a config could name another image's
    /// layer and plant its own files under that layer's chain ID, for every image
    /// built on it.
    async fn unpack_layer(
        &self,
        layer: &Blob,
        id: &LayerId,
        name: &str,
        parent: &str,
        lease: &str,
    ) -> Result<()> {
        let chain_id = &id.chain_id;
        let mut snapshots = SnapshotsClient::new(self.channel.clone());
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        let key = format!("extract-{nanos}-{chain_id}");
        let mounts = snapshots
            .prepare(self.leased(
                PrepareSnapshotRequest {
                    snapshotter: self.snapshotter.clone(),
                    key: key.clone(),
                    parent: parent.to_string(),
                    labels: Default::default(),
                },
                lease,
            ))
            .await
            .map_err(|s| {
                Error::rpc(
                    format!("preparing a snapshot for layer {}", layer.digest),
                    s,
                )
            })?
            .into_inner()
            .mounts;
        let applied = DiffClient::new(self.channel.clone())
            .apply(self.leased(
                ApplyRequest {
                    diff: Some(descriptor(layer)),
                    mounts,
                    payloads: Default::default(),
                    sync_fs: false,
                },
                lease,
            ))
            .await;
        let verified = match applied {
            Err(s) => Err(Error::rpc(format!("unpacking layer {}", layer.digest), s)),
            Ok(r) => {
                let digest = r.into_inner().applied.map(|d| d.digest).unwrap_or_default();
                if digest == id.diff_id {
                    Ok(())
                } else {
                    Err(Error::Invalid(format!(
                        "wrong diff id calculated on extraction {:?}: layer {} unpacks to {digest:?}",
                        id.diff_id, layer.digest
                    )))
                }
            }
        };
        if let Err(e) = verified {
            let _ = snapshots
                .remove(self.req(RemoveSnapshotRequest {
                    snapshotter: self.snapshotter.clone(),
                    key,
                }))
                .await;
            return Err(e);
        }
        snapshots
            .commit(self.leased(
                CommitSnapshotRequest {
                    snapshotter: self.snapshotter.clone(),
                    name: name.to_string(),
                    key,
                    labels: [(VERIFIED_LABEL.to_string(), chain_id.to_string())].into(),
                },
                lease,
            ))
            .await
            .map_err(|s| Error::rpc(format!("committing layer {}", layer.digest), s))?;
        Ok(())
    }

    /// Streams one blob into the content store unless it is there already.
    async fn write_blob(&self, blob: &Blob, lease: &str) -> Result<()> {
        let mut content = ContentClient::new(self.channel.clone());
        if content
            .info(self.req(InfoRequest {
                digest: blob.digest.clone(),
            }))
            .await
            .is_ok()
        {
            return Ok(());
        }
        let mut file = tokio::fs::File::open(&blob.path)
            .await
            .map_err(|e| Error::Io(format!("opening {}", blob.path.display()), e))?;
        let (tx, rx) = tokio::sync::mpsc::channel::<WriteContentRequest>(4);
        let reference = format!("spindle-{}", blob.digest);
        let (digest, total) = (blob.digest.clone(), blob.size as i64);
        let path = blob.path.clone();
        let producer = tokio::spawn(async move {
            let mut offset = 0i64;
            let mut buf = vec![0u8; 1 << 20];
            loop {
                let n = file
                    .read(&mut buf)
                    .await
                    .map_err(|e| Error::Io(format!("reading {}", path.display()), e))?;
                if n == 0 {
                    break;
                }
                let msg = WriteContentRequest {
                    action: WriteAction::Write as i32,
                    r#ref: reference.clone(),
                    total,
                    expected: digest.clone(),
                    offset,
                    data: buf[..n].to_vec(),
                    labels: Default::default(),
                };
                offset += n as i64;
                if tx.send(msg).await.is_err() {
                    return Ok(());
                }
            }
            let _ = tx
                .send(WriteContentRequest {
                    action: WriteAction::Commit as i32,
                    r#ref: reference,
                    total,
                    expected: digest,
                    offset,
                    data: Vec::new(),
                    labels: Default::default(),
                })
                .await;
            Ok::<(), Error>(())
        });
        let what = format!("writing blob {} to the content store", blob.digest);
        let stream = tokio_stream::wrappers::ReceiverStream::new(rx);
        let result = async {
            let mut responses = content
                .write(self.leased(stream, lease))
                .await?
                .into_inner();
            while responses.message().await?.is_some() {}
            Ok::<(), containerd_client::tonic::Status>(())
        }
        .await;
        let produced = producer
            .await
            .map_err(|e| Error::Invalid(format!("{what}: {e}")))?;
        match result {
            Ok(()) => {}
            Err(s) if s.code() == containerd_client::tonic::Code::AlreadyExists => {}
            Err(s) => return Err(Error::rpc(what, s)),
        }
        produced
    }

    /// Creates the container (with its snapshot) and starts its task; returns the pid.
    pub async fn run(&self, spec: RunSpec<'_>) -> Result<u32> {
        // Until the container record refers to it, a fresh snapshot is garbage to
        // containerd's collector (which runs after every removal): a short lease holds
        // it in between, as containerd's own client does.
        let lease = format!("spindle-run-{}", spec.id);
        let expire = std::time::SystemTime::now() + std::time::Duration::from_secs(3600);
        let expire = rfc3339(expire);
        let mut leases = LeasesClient::new(self.channel.clone());
        match leases
            .create(self.req(CreateLeaseRequest {
                id: lease.clone(),
                labels: [("containerd.io/gc.expire".to_string(), expire)].into(),
            }))
            .await
        {
            Ok(_) => {}
            Err(s) if s.code() == containerd_client::tonic::Code::AlreadyExists => {}
            Err(s) => return Err(Error::rpc("creating the container's lease", s)),
        }
        let created = self.create_container(&spec, &lease).await;
        let _ = leases
            .delete(self.req(containerd_client::services::v1::DeleteRequest {
                id: lease,
                sync: false,
            }))
            .await;
        let mounts = created?;
        let mut tasks = TasksClient::new(self.channel.clone());
        tasks
            .create(self.req(CreateTaskRequest {
                container_id: spec.id.to_string(),
                rootfs: mounts,
                stdin: Fifos::path_str(spec.fifos.stdin.as_ref()),
                stdout: Fifos::path_str(Some(&spec.fifos.stdout)),
                stderr: Fifos::path_str(spec.fifos.stderr.as_ref()),
                terminal: spec.terminal,
                ..Default::default()
            }))
            .await
            .map_err(|s| Error::rpc("creating the task", s))?;
        let started = tasks
            .start(self.req(StartRequest {
                container_id: spec.id.to_string(),
                exec_id: String::new(),
            }))
            .await
            .map_err(|s| Error::rpc("starting the task", s))?;
        Ok(started.into_inner().pid)
    }

    /// The container's snapshot (under `lease`) and its record; returns the rootfs mounts.
    async fn create_container(&self, spec: &RunSpec<'_>, lease: &str) -> Result<Vec<Mount>> {
        let mut snapshots = SnapshotsClient::new(self.channel.clone());
        let mounts: Vec<Mount> = match snapshots
            .prepare(self.leased(
                PrepareSnapshotRequest {
                    snapshotter: self.snapshotter.clone(),
                    key: spec.id.to_string(),
                    parent: spec.chain_id.to_string(),
                    labels: Default::default(),
                },
                lease,
            ))
            .await
        {
            Ok(r) => r.into_inner().mounts,
            Err(s) if s.code() == containerd_client::tonic::Code::AlreadyExists => {
                snapshots
                    .mounts(self.req(MountsRequest {
                        snapshotter: self.snapshotter.clone(),
                        key: spec.id.to_string(),
                    }))
                    .await
                    .map_err(|s| Error::rpc("reading the container's snapshot", s))?
                    .into_inner()
                    .mounts
            }
            Err(s) => return Err(Error::rpc("preparing the container's snapshot", s)),
        };
        let container = Container {
            id: spec.id.to_string(),
            image: spec.image.to_string(),
            runtime: Some(Runtime {
                name: RUNTIME.into(),
                options: None,
            }),
            spec: Some(prost_types::Any {
                type_url: SPEC_TYPE.into(),
                value: spec.spec.clone(),
            }),
            snapshotter: self.snapshotter.clone(),
            snapshot_key: spec.id.to_string(),
            ..Default::default()
        };
        ContainersClient::new(self.channel.clone())
            .create(self.leased(
                CreateContainerRequest {
                    container: Some(container),
                },
                lease,
            ))
            .await
            .map_err(|s| Error::rpc("creating the container", s))?;
        Ok(mounts)
    }

    /// Waits for the task (`exec_id` empty) or an exec process to exit.
    pub async fn wait(&self, id: &str, exec_id: &str) -> Result<Exited> {
        let r = TasksClient::new(self.channel.clone())
            .wait(self.req(WaitRequest {
                container_id: id.to_string(),
                exec_id: exec_id.to_string(),
            }))
            .await
            .map_err(|s| Error::rpc("waiting for the task", s))?;
        Ok(Exited {
            status: r.into_inner().exit_status,
        })
    }

    /// Sends a signal to the task (all its processes with `all`) or an exec process.
    pub async fn kill(&self, id: &str, exec_id: &str, signal: i32, all: bool) -> Result<()> {
        TasksClient::new(self.channel.clone())
            .kill(self.req(KillRequest {
                container_id: id.to_string(),
                exec_id: exec_id.to_string(),
                signal: signal as u32,
                all,
            }))
            .await
            .map_err(|s| Error::rpc("signalling the task", s))?;
        Ok(())
    }

    /// Removes the task (killing it if it still runs), the container and its snapshot.
    /// Parts already gone are fine.
    pub async fn remove(&self, id: &str) -> Result<()> {
        let mut tasks = TasksClient::new(self.channel.clone());
        let deleted = tasks
            .delete(self.req(DeleteTaskRequest {
                container_id: id.to_string(),
            }))
            .await;
        if let Err(s) = deleted {
            match s.code() {
                containerd_client::tonic::Code::NotFound => {}
                // Still running (or being stopped): kill and wait, then delete.
                _ => {
                    let _ = self.kill(id, "", libc::SIGKILL, true).await;
                    let _ =
                        tokio::time::timeout(std::time::Duration::from_secs(10), self.wait(id, ""))
                            .await;
                    match tasks
                        .delete(self.req(DeleteTaskRequest {
                            container_id: id.to_string(),
                        }))
                        .await
                    {
                        Ok(_) => {}
                        Err(s) if s.code() == containerd_client::tonic::Code::NotFound => {}
                        Err(s) => return Err(Error::rpc(format!("deleting task {id}"), s)),
                    }
                }
            }
        }
        match ContainersClient::new(self.channel.clone())
            .delete(self.req(DeleteContainerRequest { id: id.to_string() }))
            .await
        {
            Ok(_) => {}
            Err(s) if s.code() == containerd_client::tonic::Code::NotFound => {}
            Err(s) => return Err(Error::rpc(format!("deleting container {id}"), s)),
        }
        match SnapshotsClient::new(self.channel.clone())
            .remove(self.req(RemoveSnapshotRequest {
                snapshotter: self.snapshotter.clone(),
                key: id.to_string(),
            }))
            .await
        {
            Ok(_) => Ok(()),
            Err(s) if s.code() == containerd_client::tonic::Code::NotFound => Ok(()),
            Err(s) => Err(Error::rpc(format!("removing snapshot {id}"), s)),
        }
    }

    /// IDs of the containers in this namespace.
    pub async fn containers(&self) -> Result<Vec<String>> {
        let r = ContainersClient::new(self.channel.clone())
            .list(self.req(ListContainersRequest {
                filters: Vec::new(),
            }))
            .await
            .map_err(|s| Error::rpc("listing containers", s))?;
        Ok(r.into_inner()
            .containers
            .into_iter()
            .map(|c| c.id)
            .collect())
    }

    /// Starts an exec process in a running container; returns its pid.
    pub async fn exec(&self, spec: ExecSpec<'_>) -> Result<u32> {
        let mut tasks = TasksClient::new(self.channel.clone());
        tasks
            .exec(self.req(ExecProcessRequest {
                container_id: spec.container.to_string(),
                stdin: Fifos::path_str(spec.fifos.stdin.as_ref()),
                stdout: Fifos::path_str(Some(&spec.fifos.stdout)),
                stderr: Fifos::path_str(spec.fifos.stderr.as_ref()),
                terminal: spec.terminal,
                spec: Some(prost_types::Any {
                    type_url: PROCESS_TYPE.into(),
                    value: spec.process,
                }),
                exec_id: spec.exec_id.to_string(),
            }))
            .await
            .map_err(|s| Error::rpc("creating the exec process", s))?;
        let started = tasks
            .start(self.req(StartRequest {
                container_id: spec.container.to_string(),
                exec_id: spec.exec_id.to_string(),
            }))
            .await
            .map_err(|s| Error::rpc("starting the exec process", s))?;
        Ok(started.into_inner().pid)
    }

    /// Removes an exited exec process.
    pub async fn delete_exec(&self, id: &str, exec_id: &str) -> Result<()> {
        match TasksClient::new(self.channel.clone())
            .delete_process(self.req(DeleteProcessRequest {
                container_id: id.to_string(),
                exec_id: exec_id.to_string(),
            }))
            .await
        {
            Ok(_) => Ok(()),
            Err(s) if s.code() == containerd_client::tonic::Code::NotFound => Ok(()),
            Err(s) => Err(Error::rpc("deleting the exec process", s)),
        }
    }

    /// Sets the size of a process's terminal.
    pub async fn resize(&self, id: &str, exec_id: &str, width: u32, height: u32) -> Result<()> {
        TasksClient::new(self.channel.clone())
            .resize_pty(self.req(ResizePtyRequest {
                container_id: id.to_string(),
                exec_id: exec_id.to_string(),
                width,
                height,
            }))
            .await
            .map_err(|s| Error::rpc("resizing the terminal", s))?;
        Ok(())
    }

    /// Closes a process's stdin (end of input).
    pub async fn close_stdin(&self, id: &str, exec_id: &str) -> Result<()> {
        TasksClient::new(self.channel.clone())
            .close_io(self.req(CloseIoRequest {
                container_id: id.to_string(),
                exec_id: exec_id.to_string(),
                stdin: true,
            }))
            .await
            .map_err(|s| Error::rpc("closing stdin", s))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_dates() {
        let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_795_000_000);
        assert_eq!(rfc3339(t), "2026-11-18T11:06:40Z");
        assert_eq!(rfc3339(std::time::UNIX_EPOCH), "1970-01-01T00:00:00Z");
    }

    #[test]
    fn chain_ids_follow_the_oci_rule() {
        let config = br#"{"rootfs":{"type":"layers","diff_ids":["sha256:aa","sha256:bb"]}}"#;
        let ids = layer_ids(config).expect("ids");
        assert_eq!(ids[0].chain_id, "sha256:aa");
        assert_eq!(ids[1].diff_id, "sha256:bb");
        let want = hex::encode(Sha256::digest(b"sha256:aa sha256:bb"));
        assert_eq!(ids[1].chain_id, format!("sha256:{want}"));
        assert!(layer_ids(b"{}").is_err());
        assert!(layer_ids(br#"{"rootfs":{"diff_ids":["sha256:aa",7]}}"#).is_err());
    }
}
