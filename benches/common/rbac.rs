//! The RBAC side of the api bench: a cluster with many Roles and RoleBindings, and a
//! user (a client certificate signed by the cluster CA) whose rights come from one of
//! them.

use std::path::Path;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::rbac::v1::{PolicyRule, Role, RoleBinding, RoleRef, Subject};
use kube::api::{ObjectMeta, PostParams};
use kube::{Api, Client};

pub const USER: &str = "bench-user";

fn role(name: &str, resources: &[&str], verbs: &[&str]) -> Role {
    let s = |l: &[&str]| l.iter().map(|x| x.to_string()).collect();
    Role {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..Default::default()
        },
        rules: Some(vec![PolicyRule {
            api_groups: Some(vec![String::new()]),
            resources: Some(s(resources)),
            verbs: s(verbs),
            ..Default::default()
        }]),
    }
}

fn binding(name: &str, role: &str, user: &str) -> RoleBinding {
    RoleBinding {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..Default::default()
        },
        role_ref: RoleRef {
            api_group: "rbac.authorization.k8s.io".into(),
            kind: "Role".into(),
            name: role.into(),
        },
        subjects: Some(vec![Subject {
            api_group: Some("rbac.authorization.k8s.io".into()),
            kind: "User".into(),
            name: user.into(),
            ..Default::default()
        }]),
    }
}

/// `n` Roles and RoleBindings for `n` other users in `default`, then the bench user's
/// own (ConfigMaps: create, get), created last so that its lookups meet a full index.
pub async fn populate(client: &Client, n: usize) -> anyhow::Result<()> {
    let roles: Api<Role> = Api::namespaced(client.clone(), "default");
    let bindings: Api<RoleBinding> = Api::namespaced(client.clone(), "default");
    let pp = PostParams::default();
    futures::stream::iter(0..n)
        .map(|i| {
            let (roles, bindings, pp) = (roles.clone(), bindings.clone(), pp.clone());
            async move {
                let r = format!("other-{i}");
                roles
                    .create(&pp, &role(&r, &["configmaps", "secrets"], &["get", "list"]))
                    .await?;
                bindings
                    .create(&pp, &binding(&r, &r, &format!("user-{i}")))
                    .await?;
                anyhow::Ok(())
            }
        })
        .buffer_unordered(16)
        .try_collect::<Vec<()>>()
        .await?;
    roles
        .create(&pp, &role("bench", &["configmaps"], &["create", "get"]))
        .await?;
    bindings
        .create(&pp, &binding("bench", "bench", USER))
        .await?;
    Ok(())
}

/// A client for [`USER`]: a fresh key and certificate (CN=bench-user) signed by the
/// server's CA in `data`, in a copy of the admin's kubeconfig. Waits until the user's
/// binding has reached the authorizer.
pub async fn user_client(data: &Path, work: &Path) -> anyhow::Result<Client> {
    let tls = data.join("server/tls");
    let ca_pem = std::fs::read_to_string(tls.join("server-ca.crt"))?;
    let ca_key = rcgen::KeyPair::from_pem(&std::fs::read_to_string(tls.join("server-ca.key"))?)?;
    let issuer = rcgen::Issuer::from_ca_cert_pem(&ca_pem, ca_key)?;
    let key = rcgen::KeyPair::generate()?;
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new())?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, USER);
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    let cert = params.signed_by(&key, &issuer)?;
    let (crt_path, key_path) = (work.join("bench-user.crt"), work.join("bench-user.key"));
    std::fs::write(&crt_path, cert.pem())?;
    std::fs::write(&key_path, key.serialize_pem())?;
    let mut kc = kube::config::Kubeconfig::read_from(data.join("kubeconfig.yaml"))?;
    for a in &mut kc.auth_infos {
        if let Some(info) = a.auth_info.as_mut() {
            info.client_certificate_data = None;
            info.client_key_data = None;
            info.client_certificate = Some(crt_path.display().to_string());
            info.client_key = Some(key_path.display().to_string());
        }
    }
    let client =
        Client::try_from(kube::Config::from_custom_kubeconfig(kc, &Default::default()).await?)?;
    let api: Api<k8s_openapi::api::core::v1::ConfigMap> =
        Api::namespaced(client.clone(), "default");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while let Err(e) = api.get_opt("none").await {
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "{USER} never allowed: {e}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    Ok(client)
}
