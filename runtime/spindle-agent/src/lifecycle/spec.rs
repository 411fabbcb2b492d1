//! A [`ContainerSpec`] from the pod and one of its containers: environment (ConfigMaps,
//! Secrets and the downward API read now), mounts (subPaths resolved again), argv,
//! limits and who the run is. Runs and Wasm execs are built here alike.

use std::sync::Arc;

use k8s_openapi::api::core::v1::{Container, Pod};
use sha2::{Digest, Sha256};

use super::PodHandle;
use crate::env::{self, ConfigError, Sources};
use crate::podnet::{self, PodNet};
use crate::resources;
use crate::runtime::{ContainerSpec, Mount, Output, RunMeta, RuntimeError, Security};
use crate::volumes::{self, PodVolumes};
use crate::Agent;

/// The container's environment and mounts as they are now.
pub(super) async fn env_and_mounts(
    agent: &Agent,
    h: &PodHandle,
    pod: &Pod,
    c: &Container,
    vols: &PodVolumes,
    pod_ip: &str,
) -> Result<(Vec<(String, String)>, Vec<Mount>), ConfigError> {
    let host_ip = agent.node_ip.to_string();
    let mut src = Sources::new(agent.client.clone(), &h.namespace);
    let env = env::build(pod, c, &mut src, pod_ip, &host_ip).await?;
    let mounts = volumes::container_mounts(pod, c, vols)?;
    Ok((env, mounts))
}

/// `command` and `args` expanded with the container's environment (`$(VAR)`), and the
/// argv of a Wasm run: the command (else the image's name as argv[0]) then the args.
/// A container image's entrypoint and cmd fill in what the pod leaves out instead.
pub(super) struct Argv {
    pub argv: Vec<String>,
    pub command: Option<Vec<String>>,
    pub args: Option<Vec<String>>,
}

pub(super) fn argv(c: &Container, env: &[(String, String)]) -> Argv {
    let lookup = |n: &str| env.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
    let expand = |v: &Option<Vec<String>>| {
        v.as_ref().map(|v| {
            v.iter()
                .map(|a| env::expand(a, &lookup))
                .collect::<Vec<_>>()
        })
    };
    let (command, args) = (expand(&c.command), expand(&c.args));
    let mut argv: Vec<String> = command.clone().unwrap_or_default();
    if argv.is_empty() {
        argv.push(c.image.clone().unwrap_or_default());
    }
    argv.extend(args.clone().unwrap_or_default());
    Argv {
        argv,
        command,
        args,
    }
}

/// The ID of one run of a container: unique per pod, container and run.
fn run_id(uid: &str, name: &str, run: i32) -> String {
    hex::encode(Sha256::digest(format!("{uid}/{name}/{run}")))
}

/// What a run and an exec share.
fn common(
    c: &Container,
    argv: Vec<String>,
    env: Vec<(String, String)>,
    mounts: Vec<Mount>,
    log: Output,
    net: Option<Arc<PodNet>>,
) -> ContainerSpec {
    let (memory_limit, cpu_millis) = resources::limits(c);
    ContainerSpec {
        argv,
        env,
        working_dir: c.working_dir.clone(),
        mounts,
        log,
        memory_limit,
        cpu_millis,
        ports: Vec::new(),
        net,
        stdin: None,
        as_command: false,
        meta: RunMeta::default(),
    }
}

/// What [`for_run`] needs beyond the pod and the container.
pub(super) struct RunParts {
    pub run: i32,
    pub env: Vec<(String, String)>,
    pub mounts: Vec<Mount>,
    pub log: Output,
    pub net: Option<Arc<PodNet>>,
}

/// The spec of run number `run` of container `c`.
pub(super) fn for_run(
    agent: &Agent,
    h: &PodHandle,
    pod: &Pod,
    c: &Container,
    parts: RunParts,
) -> ContainerSpec {
    let Argv {
        argv,
        command,
        args,
    } = argv(c, &parts.env);
    let host_network = podnet::is_host_network(pod);
    let mut spec = common(c, argv, parts.env, parts.mounts, parts.log, parts.net);
    spec.ports = c
        .ports
        .iter()
        .flatten()
        .filter(|p| p.protocol.as_deref().unwrap_or("TCP") == "TCP")
        .filter_map(|p| u16::try_from(p.container_port).ok())
        .collect();
    spec.meta = RunMeta {
        id: run_id(&h.uid, &c.name, parts.run),
        // As the kubelet: the node's name on the host network, else `spec.hostname`
        // (a StatefulSet pod's) or the pod's name.
        hostname: if host_network {
            agent.opts.node_name.clone()
        } else {
            pod.spec
                .as_ref()
                .and_then(|s| s.hostname.clone())
                .filter(|n| !n.is_empty())
                .unwrap_or_else(|| h.name.clone())
        },
        domain: pod
            .spec
            .as_ref()
            .and_then(|s| s.subdomain.as_deref())
            .filter(|d| !d.is_empty() && !host_network)
            .map(|d| format!("{d}.{}.svc.{}", h.namespace, agent.opts.net.cluster_domain)),
        paths: h.paths.clone(),
        pod: format!("{}_{}({})", h.name, h.namespace, h.uid),
        container: c.name.clone(),
        command,
        args,
        security: Security::of(pod, c),
        cpu_request_millis: resources::requested_cpu(c),
        host_network,
        tty: c.tty == Some(true),
        stdin: c.stdin == Some(true),
        stdin_once: c.stdin_once == Some(true),
    };
    spec
}

/// The spec of an exec into container `c` as a new instance (Wasm): the container's
/// environment, mounts, limits and the pod's network as they are now; the console sets
/// argv and I/O.
pub(crate) async fn for_exec(
    agent: &Agent,
    h: &PodHandle,
    c: &Container,
) -> Result<ContainerSpec, RuntimeError> {
    let pod = h.pod();
    let vols = h
        .vols
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone()
        .ok_or_else(|| RuntimeError::create("the pod's volumes are not ready"))?;
    let net = h.net.lock().await.clone();
    let pod_ip = h.shared().pod_ip.clone().unwrap_or_default();
    let (env, mounts) = env_and_mounts(agent, h, &pod, c, &vols, &pod_ip)
        .await
        .map_err(|e| RuntimeError::config(e.0))?;
    Ok(common(c, Vec::new(), env, mounts, Output::discard(), net))
}
