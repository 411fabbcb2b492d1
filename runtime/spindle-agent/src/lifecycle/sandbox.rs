//! The pod's sandbox and the runtime of each container: the pod's network (made when
//! its first networked container starts, removed with the pod) and the runtime an
//! image and the pod's `runtimeClassName` call for.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Pod;

use super::PodHandle;
use crate::podnet::{self, PodNet};
use crate::runtime::{Runtime, RuntimeError};
use crate::Agent;

/// The pod's network, set up on first use (see [`podnet`]).
pub(super) async fn ensure_net(
    agent: &Agent,
    h: &PodHandle,
    pod: &Pod,
) -> Result<Arc<PodNet>, String> {
    let mut slot = h.net.lock().await;
    if let Some(net) = slot.as_ref() {
        return Ok(net.clone());
    }
    if agent.stopping.load(Ordering::SeqCst) {
        return Err("the node agent is stopping".into());
    }
    let net = if podnet::is_host_network(pod) {
        PodNet::host(agent.node_ip)
    } else {
        let Some(network) = agent.net.get() else {
            return Err(format!(
                "this node has no pod network: {}",
                agent
                    .net_unavailable
                    .get()
                    .map(String::as_str)
                    .unwrap_or("not set up yet")
            ));
        };
        let names = agent.dns.get().map(|dns| {
            Arc::new(podnet::PodNames::new(
                dns.clone(),
                &h.namespace,
                &agent.opts.net.cluster_domain,
            )) as Arc<dyn spindle_wasm::NameResolver>
        });
        let resolv = match podnet::resolv_conf(
            pod,
            agent.opts.net.cluster_dns,
            &agent.opts.net.cluster_domain,
        ) {
            Some(text) => {
                let path = h.paths.resolv_conf();
                std::fs::create_dir_all(h.paths.dir())
                    .and_then(|()| std::fs::write(&path, text))
                    .map_err(|e| format!("writing the pod's resolv.conf: {e}"))?;
                Some(path)
            }
            None => None,
        };
        podnet::setup(network, pod, agent.pod_workers, names, resolv.as_deref()).await?
    };
    let net = Arc::new(net);
    h.shared().pod_ip = Some(net.ip.to_string());
    h.changed.notify_one();
    *slot = Some(net.clone());
    Ok(net)
}

/// Ends the pod's runtime and removes its sandbox.
pub(super) async fn release_net(agent: &Agent, h: &PodHandle) {
    let net = h.net.lock().await.take();
    let had_sandbox = net.as_ref().is_some_and(|n| n.sandbox.is_some());
    drop(net);
    if let (true, Some(network)) = (had_sandbox, agent.net.get()) {
        if let Err(e) = network.teardown(&h.uid).await {
            tracing::warn!(pod = %h.name, error = %e, "removing the pod's network failed");
        }
    }
}

/// The runtime for an image: its kind decides (a Wasm artifact runs in wasmtime, a
/// container image in containerd), and a pod's `runtimeClassName` may only narrow that
/// choice to the matching one.
pub(super) fn pick_runtime(
    agent: &Agent,
    pod: &Pod,
    img: &spindle_image::PulledImage,
) -> Result<Arc<dyn Runtime>, RuntimeError> {
    choose(agent, pod, img).map_err(RuntimeError::create)
}

fn choose(
    agent: &Agent,
    pod: &Pod,
    img: &spindle_image::PulledImage,
) -> Result<Arc<dyn Runtime>, String> {
    let class = pod
        .spec
        .as_ref()
        .and_then(|s| s.runtime_class_name.as_deref());
    let wasm = img.wasm().is_some();
    match class {
        None | Some("wasm") | Some("runc") | Some("containerd") => {}
        Some(other) => {
            return Err(format!(
                "RuntimeClass {other:?} is not known on this node (it offers wasm{})",
                if agent.containers.is_some() {
                    ", runc"
                } else {
                    ""
                }
            ))
        }
    }
    match (wasm, class) {
        (true, None | Some("wasm")) => Ok(agent.wasm.clone() as Arc<dyn Runtime>),
        (true, Some(c)) => Err(format!(
            "runtimeClassName {c} runs containers, and image {:?} is a Wasm artifact",
            img.image
        )),
        (false, Some("wasm")) => Err(format!(
            "runtimeClassName wasm runs Wasm, and image {:?} is a container image",
            img.image
        )),
        (false, _) => match &agent.containers {
            Some(c) => Ok(Arc::new(crate::containers::ContainerdRuntime(c.clone()))),
            None => Err(format!(
                "image {:?} is a container image and this node has no container runtime (containerd)",
                img.image
            )),
        },
    }
}
