//! Core `v1` messages: the top-level kinds kubectl creates and the PodSpec
//! that workload kinds embed.

use k8s_pb::api::core::v1 as core;

use crate::json::{Obj, Res, ToJson};
use crate::DecodeError;

// ---- top-level kinds ------------------------------------------------------

impl ToJson for core::ConfigMap {
    fn to_json(&self) -> Res {
        let mut o = Obj::new();
        o.msg("metadata", &self.metadata)?
            .flag("immutable", self.immutable)
            .str_map("data", &self.data)
            .bytes_map("binaryData", &self.binary_data);
        Ok(o.finish())
    }
}

impl ToJson for core::Secret {
    fn to_json(&self) -> Res {
        let mut o = Obj::new();
        o.msg("metadata", &self.metadata)?
            .flag("immutable", self.immutable)
            .bytes_map("data", &self.data)
            .str_map("stringData", &self.string_data)
            .str("type", &self.r#type);
        Ok(o.finish())
    }
}

impl ToJson for core::Namespace {
    fn to_json(&self) -> Res {
        let mut o = Obj::new();
        o.msg("metadata", &self.metadata)?
            .msg("spec", &self.spec)?
            .msg("status", &self.status)?;
        Ok(o.finish())
    }
}

impl ToJson for core::NamespaceSpec {
    fn to_json(&self) -> Res {
        let mut o = Obj::new();
        o.strs("finalizers", &self.finalizers);
        Ok(o.finish())
    }
}

impl ToJson for core::NamespaceStatus {
    // Conditions are server-owned; a client never sets them on create.
    fn to_json(&self) -> Res {
        let mut o = Obj::new();
        o.str("phase", &self.phase);
        Ok(o.finish())
    }
}

impl ToJson for core::ServiceAccount {
    fn to_json(&self) -> Res {
        let mut o = Obj::new();
        o.msg("metadata", &self.metadata)?
            .msgs("secrets", &self.secrets)?
            .msgs("imagePullSecrets", &self.image_pull_secrets)?
            .flag(
                "automountServiceAccountToken",
                self.automount_service_account_token,
            );
        Ok(o.finish())
    }
}

impl ToJson for core::ObjectReference {
    fn to_json(&self) -> Res {
        let mut o = Obj::new();
        o.str("kind", &self.kind)
            .str("namespace", &self.namespace)
            .str("name", &self.name)
            .str("uid", &self.uid)
            .str("apiVersion", &self.api_version)
            .str("resourceVersion", &self.resource_version)
            .str("fieldPath", &self.field_path);
        Ok(o.finish())
    }
}

impl ToJson for core::LocalObjectReference {
    fn to_json(&self) -> Res {
        let mut o = Obj::new();
        o.str("name", &self.name);
        Ok(o.finish())
    }
}

impl ToJson for core::Service {
    // Status (load-balancer ingress) is server-owned and dropped.
    fn to_json(&self) -> Res {
        let mut o = Obj::new();
        o.msg("metadata", &self.metadata)?.msg("spec", &self.spec)?;
        Ok(o.finish())
    }
}

impl ToJson for core::ServiceSpec {
    fn to_json(&self) -> Res {
        let mut o = Obj::new();
        o.msgs("ports", &self.ports)?
            .str_map("selector", &self.selector)
            .str("clusterIP", &self.cluster_ip)
            .strs("clusterIPs", &self.cluster_ips)
            .str("type", &self.r#type)
            .strs("externalIPs", &self.external_ips)
            .str("sessionAffinity", &self.session_affinity)
            .str("loadBalancerIP", &self.load_balancer_ip)
            .strs(
                "loadBalancerSourceRanges",
                &self.load_balancer_source_ranges,
            )
            .str("externalName", &self.external_name)
            .str("externalTrafficPolicy", &self.external_traffic_policy)
            .num_nz("healthCheckNodePort", self.health_check_node_port)
            .flag_nz("publishNotReadyAddresses", self.publish_not_ready_addresses)
            .msg("sessionAffinityConfig", &self.session_affinity_config)?
            .strs("ipFamilies", &self.ip_families)
            .str_req("ipFamilyPolicy", &self.ip_family_policy)
            .flag(
                "allocateLoadBalancerNodePorts",
                self.allocate_load_balancer_node_ports,
            )
            .str_req("loadBalancerClass", &self.load_balancer_class)
            .str_req("internalTrafficPolicy", &self.internal_traffic_policy)
            .str_req("trafficDistribution", &self.traffic_distribution);
        Ok(o.finish())
    }
}

impl ToJson for core::ServicePort {
    fn to_json(&self) -> Res {
        let mut o = Obj::new();
        o.str("name", &self.name)
            .str("protocol", &self.protocol)
            .str_req("appProtocol", &self.app_protocol)
            .num("port", self.port)
            .int_or_str("targetPort", &self.target_port)
            .num_nz("nodePort", self.node_port);
        Ok(o.finish())
    }
}

impl ToJson for core::SessionAffinityConfig {
    fn to_json(&self) -> Res {
        let mut o = Obj::new();
        o.msg("clientIP", &self.client_ip)?;
        Ok(o.finish())
    }
}

impl ToJson for core::ClientIpConfig {
    fn to_json(&self) -> Res {
        let mut o = Obj::new();
        o.num("timeoutSeconds", self.timeout_seconds);
        Ok(o.finish())
    }
}

impl ToJson for core::Pod {
    // Status is server-owned and dropped.
    fn to_json(&self) -> Res {
        let mut o = Obj::new();
        o.msg("metadata", &self.metadata)?.msg("spec", &self.spec)?;
        Ok(o.finish())
    }
}

impl ToJson for core::ResourceQuota {
    // Status (used/hard) is server-owned and dropped.
    fn to_json(&self) -> Res {
        let mut o = Obj::new();
        o.msg("metadata", &self.metadata)?.msg("spec", &self.spec)?;
        Ok(o.finish())
    }
}

impl ToJson for core::ResourceQuotaSpec {
    fn to_json(&self) -> Res {
        let mut o = Obj::new();
        o.qty_map("hard", &self.hard)
            .strs("scopes", &self.scopes)
            .msg("scopeSelector", &self.scope_selector)?;
        Ok(o.finish())
    }
}

impl ToJson for core::ScopeSelector {
    fn to_json(&self) -> Res {
        let mut o = Obj::new();
        o.msgs("matchExpressions", &self.match_expressions)?;
        Ok(o.finish())
    }
}

impl ToJson for core::ScopedResourceSelectorRequirement {
    fn to_json(&self) -> Res {
        let mut o = Obj::new();
        o.str_req("scopeName", &self.scope_name)
            .str_req("operator", &self.operator)
            .strs("values", &self.values);
        Ok(o.finish())
    }
}

// ---- pod template and spec ------------------------------------------------

impl ToJson for core::PodTemplateSpec {
    fn to_json(&self) -> Res {
        let mut o = Obj::new();
        o.msg("metadata", &self.metadata)?.msg("spec", &self.spec)?;
        Ok(o.finish())
    }
}

impl ToJson for core::PodSpec {
    fn to_json(&self) -> Res {
        if !self.ephemeral_containers.is_empty() {
            return Err(DecodeError::UnsupportedField {
                field: "spec.ephemeralContainers".to_owned(),
            });
        }
        let mut o = Obj::new();
        o.msgs("volumes", &self.volumes)?
            .msgs("initContainers", &self.init_containers)?
            // Required in the JSON form, so present even when empty.
            .set("containers", serde_json::Value::Array(Vec::new()))
            .msgs("containers", &self.containers)?
            .str("restartPolicy", &self.restart_policy)
            .num(
                "terminationGracePeriodSeconds",
                self.termination_grace_period_seconds,
            )
            .num("activeDeadlineSeconds", self.active_deadline_seconds)
            .str("dnsPolicy", &self.dns_policy)
            .str_map("nodeSelector", &self.node_selector)
            .str("serviceAccountName", &self.service_account_name)
            .str("serviceAccount", &self.service_account)
            .flag(
                "automountServiceAccountToken",
                self.automount_service_account_token,
            )
            .str("nodeName", &self.node_name)
            .flag_nz("hostNetwork", self.host_network)
            .flag_nz("hostPID", self.host_pid)
            .flag_nz("hostIPC", self.host_ipc)
            .flag("shareProcessNamespace", self.share_process_namespace)
            .msg("securityContext", &self.security_context)?
            .msgs("imagePullSecrets", &self.image_pull_secrets)?
            .str("hostname", &self.hostname)
            .str("subdomain", &self.subdomain)
            .msg("affinity", &self.affinity)?
            .str("schedulerName", &self.scheduler_name)
            .msgs("tolerations", &self.tolerations)?
            .msgs("hostAliases", &self.host_aliases)?
            .str("priorityClassName", &self.priority_class_name)
            .num("priority", self.priority)
            .msg("dnsConfig", &self.dns_config)?
            .msgs("readinessGates", &self.readiness_gates)?
            .str_req("runtimeClassName", &self.runtime_class_name)
            .flag("enableServiceLinks", self.enable_service_links)
            .str_req("preemptionPolicy", &self.preemption_policy)
            .qty_map("overhead", &self.overhead)
            .msgs(
                "topologySpreadConstraints",
                &self.topology_spread_constraints,
            )?
            .flag("setHostnameAsFQDN", self.set_hostname_as_fqdn)
            .msg("os", &self.os)?
            .flag("hostUsers", self.host_users)
            .msgs("schedulingGates", &self.scheduling_gates)?
            .msgs("resourceClaims", &self.resource_claims)?
            .msg("resources", &self.resources)?
            .str_req("hostnameOverride", &self.hostname_override);
        Ok(o.finish())
    }
}

impl ToJson for core::Container {
    fn to_json(&self) -> Res {
        let mut o = Obj::new();
        o.str_req("name", &self.name)
            .str("image", &self.image)
            .strs("command", &self.command)
            .strs("args", &self.args)
            .str("workingDir", &self.working_dir)
            .msgs("ports", &self.ports)?
            .msgs("envFrom", &self.env_from)?
            .msgs("env", &self.env)?
            .msg("resources", &self.resources)?
            .msgs("resizePolicy", &self.resize_policy)?
            .str_req("restartPolicy", &self.restart_policy)
            .msgs("restartPolicyRules", &self.restart_policy_rules)?
            .msgs("volumeMounts", &self.volume_mounts)?
            .msgs("volumeDevices", &self.volume_devices)?
            .msg("livenessProbe", &self.liveness_probe)?
            .msg("readinessProbe", &self.readiness_probe)?
            .msg("startupProbe", &self.startup_probe)?
            .msg("lifecycle", &self.lifecycle)?
            .str("terminationMessagePath", &self.termination_message_path)
            .str("terminationMessagePolicy", &self.termination_message_policy)
            .str("imagePullPolicy", &self.image_pull_policy)
            .msg("securityContext", &self.security_context)?
            .flag_nz("stdin", self.stdin)
            .flag_nz("stdinOnce", self.stdin_once)
            .flag_nz("tty", self.tty);
        Ok(o.finish())
    }
}

impl ToJson for core::ContainerPort {
    fn to_json(&self) -> Res {
        let mut o = Obj::new();
        o.str("name", &self.name)
            .num_nz("hostPort", self.host_port)
            .num("containerPort", self.container_port)
            .str("protocol", &self.protocol)
            .str("hostIP", &self.host_ip);
        Ok(o.finish())
    }
}

impl ToJson for core::ContainerResizePolicy {
    fn to_json(&self) -> Res {
        let mut o = Obj::new();
        o.str_req("resourceName", &self.resource_name)
            .str_req("restartPolicy", &self.restart_policy);
        Ok(o.finish())
    }
}

impl ToJson for core::ContainerRestartRule {
    fn to_json(&self) -> Res {
        let mut o = Obj::new();
        o.str_req("action", &self.action)
            .msg("exitCodes", &self.exit_codes)?;
        Ok(o.finish())
    }
}

impl ToJson for core::ContainerRestartRuleOnExitCodes {
    fn to_json(&self) -> Res {
        let mut o = Obj::new();
        o.str_req("operator", &self.operator)
            .nums("values", &self.values);
        Ok(o.finish())
    }
}

impl ToJson for core::EnvVar {
    fn to_json(&self) -> Res {
        let mut o = Obj::new();
        o.str_req("name", &self.name)
            .str("value", &self.value)
            .msg("valueFrom", &self.value_from)?;
        Ok(o.finish())
    }
}

impl ToJson for core::EnvVarSource {
    fn to_json(&self) -> Res {
        let mut o = Obj::new();
        o.msg("fieldRef", &self.field_ref)?
            .msg("resourceFieldRef", &self.resource_field_ref)?
            .msg("configMapKeyRef", &self.config_map_key_ref)?
            .msg("secretKeyRef", &self.secret_key_ref)?
            .msg("fileKeyRef", &self.file_key_ref)?;
        Ok(o.finish())
    }
}

impl ToJson for core::ConfigMapKeySelector {
    fn to_json(&self) -> Res {
        let mut o = Obj::new();
        o.inline(&self.local_object_reference)?
            .str_req("key", &self.key)
            .flag("optional", self.optional);
        Ok(o.finish())
    }
}

impl ToJson for core::SecretKeySelector {
    fn to_json(&self) -> Res {
        let mut o = Obj::new();
        o.inline(&self.local_object_reference)?
            .str_req("key", &self.key)
            .flag("optional", self.optional);
        Ok(o.finish())
    }
}

impl ToJson for core::FileKeySelector {
    fn to_json(&self) -> Res {
        let mut o = Obj::new();
        o.str_req("volumeName", &self.volume_name)
            .str_req("path", &self.path)
            .str_req("key", &self.key)
            .flag("optional", self.optional);
        Ok(o.finish())
    }
}

impl ToJson for core::ObjectFieldSelector {
    fn to_json(&self) -> Res {
        let mut o = Obj::new();
        o.str("apiVersion", &self.api_version)
            .str_req("fieldPath", &self.field_path);
        Ok(o.finish())
    }
}

impl ToJson for core::ResourceFieldSelector {
    fn to_json(&self) -> Res {
        let mut o = Obj::new();
        o.str("containerName", &self.container_name)
            .str_req("resource", &self.resource)
            .qty("divisor", &self.divisor);
        Ok(o.finish())
    }
}

impl ToJson for core::EnvFromSource {
    fn to_json(&self) -> Res {
        let mut o = Obj::new();
        o.str("prefix", &self.prefix)
            .msg("configMapRef", &self.config_map_ref)?
            .msg("secretRef", &self.secret_ref)?;
        Ok(o.finish())
    }
}

impl ToJson for core::ConfigMapEnvSource {
    fn to_json(&self) -> Res {
        let mut o = Obj::new();
        o.inline(&self.local_object_reference)?
            .flag("optional", self.optional);
        Ok(o.finish())
    }
}

impl ToJson for core::SecretEnvSource {
    fn to_json(&self) -> Res {
        let mut o = Obj::new();
        o.inline(&self.local_object_reference)?
            .flag("optional", self.optional);
        Ok(o.finish())
    }
}

impl ToJson for core::ResourceRequirements {
    fn to_json(&self) -> Res {
        let mut o = Obj::new();
        o.qty_map("limits", &self.limits)
            .qty_map("requests", &self.requests)
            .msgs("claims", &self.claims)?;
        Ok(o.finish())
    }
}

impl ToJson for core::ResourceClaim {
    fn to_json(&self) -> Res {
        let mut o = Obj::new();
        o.str_req("name", &self.name).str("request", &self.request);
        Ok(o.finish())
    }
}

impl ToJson for core::PodResourceClaim {
    fn to_json(&self) -> Res {
        let mut o = Obj::new();
        o.str_req("name", &self.name)
            .str_req("resourceClaimName", &self.resource_claim_name)
            .str_req(
                "resourceClaimTemplateName",
                &self.resource_claim_template_name,
            );
        Ok(o.finish())
    }
}

impl ToJson for core::VolumeMount {
    fn to_json(&self) -> Res {
        let mut o = Obj::new();
        o.str_req("name", &self.name)
            .flag_nz("readOnly", self.read_only)
            .str_req("recursiveReadOnly", &self.recursive_read_only)
            .str_req("mountPath", &self.mount_path)
            .str("subPath", &self.sub_path)
            .str_req("mountPropagation", &self.mount_propagation)
            .str("subPathExpr", &self.sub_path_expr);
        Ok(o.finish())
    }
}

impl ToJson for core::VolumeDevice {
    fn to_json(&self) -> Res {
        let mut o = Obj::new();
        o.str_req("name", &self.name)
            .str_req("devicePath", &self.device_path);
        Ok(o.finish())
    }
}

// ---- volumes --------------------------------------------------------------

impl ToJson for core::Volume {
    fn to_json(&self) -> Res {
        let mut o = Obj::new();
        o.str_req("name", &self.name).inline(&self.volume_source)?;
        Ok(o.finish())
    }
}

impl ToJson for core::VolumeSource {
    fn to_json(&self) -> Res {
        // Dropping a volume type we do not convert would silently turn the
        // volume into something else, so refuse instead.
        let mut rest = self.clone();
        rest.host_path = None;
        rest.empty_dir = None;
        rest.secret = None;
        rest.persistent_volume_claim = None;
        rest.downward_api = None;
        rest.config_map = None;
        rest.projected = None;
        if rest != core::VolumeSource::default() {
            return Err(DecodeError::UnsupportedField {
                field: "volumes[] source (only hostPath, emptyDir, secret, \
                        persistentVolumeClaim, downwardAPI, configMap and projected \
                        are decoded)"
                    .to_owned(),
            });
        }
        let mut o = Obj::new();
        o.msg("hostPath", &self.host_path)?
            .msg("emptyDir", &self.empty_dir)?
            .msg("secret", &self.secret)?
            .msg("persistentVolumeClaim", &self.persistent_volume_claim)?
            .msg("downwardAPI", &self.downward_api)?
            .msg("configMap", &self.config_map)?
            .msg("projected", &self.projected)?;
        Ok(o.finish())
    }
}

impl ToJson for core::HostPathVolumeSource {
    fn to_json(&self) -> Res {
        let mut o = Obj::new();
        o.str_req("path", &self.path).str_req("type", &self.r#type);
        Ok(o.finish())
    }
}

impl ToJson for core::EmptyDirVolumeSource {
    fn to_json(&self) -> Res {
        let mut o = Obj::new();
        o.str("medium", &self.medium)
            .qty("sizeLimit", &self.size_limit);
        Ok(o.finish())
    }
}

impl ToJson for core::SecretVolumeSource {
    fn to_json(&self) -> Res {
        let mut o = Obj::new();
        o.str("secretName", &self.secret_name)
            .msgs("items", &self.items)?
            .num("defaultMode", self.default_mode)
            .flag("optional", self.optional);
        Ok(o.finish())
    }
}

impl ToJson for core::ConfigMapVolumeSource {
    fn to_json(&self) -> Res {
        let mut o = Obj::new();
        o.inline(&self.local_object_reference)?
            .msgs("items", &self.items)?
            .num("defaultMode", self.default_mode)
            .flag("optional", self.optional);
        Ok(o.finish())
    }
}

impl ToJson for core::KeyToPath {
    fn to_json(&self) -> Res {
        let mut o = Obj::new();
        o.str_req("key", &self.key)
            .str_req("path", &self.path)
            .num("mode", self.mode);
        Ok(o.finish())
    }
}

impl ToJson for core::PersistentVolumeClaimVolumeSource {
    fn to_json(&self) -> Res {
        let mut o = Obj::new();
        o.str_req("claimName", &self.claim_name)
            .flag_nz("readOnly", self.read_only);
        Ok(o.finish())
    }
}

impl ToJson for core::DownwardAPIVolumeSource {
    fn to_json(&self) -> Res {
        let mut o = Obj::new();
        o.msgs("items", &self.items)?
            .num("defaultMode", self.default_mode);
        Ok(o.finish())
    }
}

impl ToJson for core::DownwardAPIVolumeFile {
    fn to_json(&self) -> Res {
        let mut o = Obj::new();
        o.str_req("path", &self.path)
            .msg("fieldRef", &self.field_ref)?
            .msg("resourceFieldRef", &self.resource_field_ref)?
            .num("mode", self.mode);
        Ok(o.finish())
    }
}

impl ToJson for core::ProjectedVolumeSource {
    fn to_json(&self) -> Res {
        let mut o = Obj::new();
        o.msgs("sources", &self.sources)?
            .num("defaultMode", self.default_mode);
        Ok(o.finish())
    }
}

impl ToJson for core::VolumeProjection {
    fn to_json(&self) -> Res {
        if self.cluster_trust_bundle.is_some() || self.pod_certificate.is_some() {
            return Err(DecodeError::UnsupportedField {
                field: "projected volume source clusterTrustBundle/podCertificate".to_owned(),
            });
        }
        let mut o = Obj::new();
        o.msg("secret", &self.secret)?
            .msg("downwardAPI", &self.downward_api)?
            .msg("configMap", &self.config_map)?
            .msg("serviceAccountToken", &self.service_account_token)?;
        Ok(o.finish())
    }
}

impl ToJson for core::SecretProjection {
    fn to_json(&self) -> Res {
        let mut o = Obj::new();
        o.inline(&self.local_object_reference)?
            .msgs("items", &self.items)?
            .flag("optional", self.optional);
        Ok(o.finish())
    }
}

impl ToJson for core::ConfigMapProjection {
    fn to_json(&self) -> Res {
        let mut o = Obj::new();
        o.inline(&self.local_object_reference)?
            .msgs("items", &self.items)?
            .flag("optional", self.optional);
        Ok(o.finish())
    }
}

impl ToJson for core::DownwardAPIProjection {
    fn to_json(&self) -> Res {
        let mut o = Obj::new();
        o.msgs("items", &self.items)?;
        Ok(o.finish())
    }
}

impl ToJson for core::ServiceAccountTokenProjection {
    fn to_json(&self) -> Res {
        let mut o = Obj::new();
        o.str("audience", &self.audience)
            .num("expirationSeconds", self.expiration_seconds)
            .str_req("path", &self.path);
        Ok(o.finish())
    }
}

// ---- probes and lifecycle -------------------------------------------------

impl ToJson for core::Probe {
    fn to_json(&self) -> Res {
        let mut o = Obj::new();
        o.inline(&self.handler)?
            .num_nz("initialDelaySeconds", self.initial_delay_seconds)
            .num_nz("timeoutSeconds", self.timeout_seconds)
            .num_nz("periodSeconds", self.period_seconds)
            .num_nz("successThreshold", self.success_threshold)
            .num_nz("failureThreshold", self.failure_threshold)
            .num(
                "terminationGracePeriodSeconds",
                self.termination_grace_period_seconds,
            );
        Ok(o.finish())
    }
}

impl ToJson for core::ProbeHandler {
    fn to_json(&self) -> Res {
        let mut o = Obj::new();
        o.msg("exec", &self.exec)?
            .msg("httpGet", &self.http_get)?
            .msg("tcpSocket", &self.tcp_socket)?
            .msg("grpc", &self.grpc)?;
        Ok(o.finish())
    }
}

impl ToJson for core::ExecAction {
    fn to_json(&self) -> Res {
        let mut o = Obj::new();
        o.strs("command", &self.command);
        Ok(o.finish())
    }
}

impl ToJson for core::HttpGetAction {
    fn to_json(&self) -> Res {
        let mut o = Obj::new();
        o.str("path", &self.path)
            .int_or_str("port", &self.port)
            .str("host", &self.host)
            .str("scheme", &self.scheme)
            .msgs("httpHeaders", &self.http_headers)?;
        Ok(o.finish())
    }
}

impl ToJson for core::HttpHeader {
    fn to_json(&self) -> Res {
        let mut o = Obj::new();
        o.str_req("name", &self.name).str_req("value", &self.value);
        Ok(o.finish())
    }
}

impl ToJson for core::TcpSocketAction {
    fn to_json(&self) -> Res {
        let mut o = Obj::new();
        o.int_or_str("port", &self.port).str("host", &self.host);
        Ok(o.finish())
    }
}

impl ToJson for core::GrpcAction {
    fn to_json(&self) -> Res {
        let mut o = Obj::new();
        o.num("port", self.port).str_req("service", &self.service);
        Ok(o.finish())
    }
}

impl ToJson for core::Lifecycle {
    fn to_json(&self) -> Res {
        let mut o = Obj::new();
        o.msg("postStart", &self.post_start)?
            .msg("preStop", &self.pre_stop)?
            .str_req("stopSignal", &self.stop_signal);
        Ok(o.finish())
    }
}

impl ToJson for core::LifecycleHandler {
    fn to_json(&self) -> Res {
        let mut o = Obj::new();
        o.msg("exec", &self.exec)?
            .msg("httpGet", &self.http_get)?
            .msg("tcpSocket", &self.tcp_socket)?
            .msg("sleep", &self.sleep)?;
        Ok(o.finish())
    }
}

impl ToJson for core::SleepAction {
    fn to_json(&self) -> Res {
        let mut o = Obj::new();
        o.num("seconds", self.seconds);
        Ok(o.finish())
    }
}

// ---- security -------------------------------------------------------------

impl ToJson for core::SecurityContext {
    fn to_json(&self) -> Res {
        let mut o = Obj::new();
        o.msg("capabilities", &self.capabilities)?
            .flag("privileged", self.privileged)
            .msg("seLinuxOptions", &self.se_linux_options)?
            .msg("windowsOptions", &self.windows_options)?
            .num("runAsUser", self.run_as_user)
            .num("runAsGroup", self.run_as_group)
            .flag("runAsNonRoot", self.run_as_non_root)
            .flag("readOnlyRootFilesystem", self.read_only_root_filesystem)
            .flag("allowPrivilegeEscalation", self.allow_privilege_escalation)
            .str_req("procMount", &self.proc_mount)
            .msg("seccompProfile", &self.seccomp_profile)?
            .msg("appArmorProfile", &self.app_armor_profile)?;
        Ok(o.finish())
    }
}

impl ToJson for core::PodSecurityContext {
    fn to_json(&self) -> Res {
        let mut o = Obj::new();
        o.msg("seLinuxOptions", &self.se_linux_options)?
            .msg("windowsOptions", &self.windows_options)?
            .num("runAsUser", self.run_as_user)
            .num("runAsGroup", self.run_as_group)
            .flag("runAsNonRoot", self.run_as_non_root)
            .nums("supplementalGroups", &self.supplemental_groups)
            .str_req("supplementalGroupsPolicy", &self.supplemental_groups_policy)
            .num("fsGroup", self.fs_group)
            .msgs("sysctls", &self.sysctls)?
            .str_req("fsGroupChangePolicy", &self.fs_group_change_policy)
            .msg("seccompProfile", &self.seccomp_profile)?
            .msg("appArmorProfile", &self.app_armor_profile)?
            .str_req("seLinuxChangePolicy", &self.se_linux_change_policy);
        Ok(o.finish())
    }
}

impl ToJson for core::Capabilities {
    fn to_json(&self) -> Res {
        let mut o = Obj::new();
        o.strs("add", &self.add).strs("drop", &self.drop);
        Ok(o.finish())
    }
}

impl ToJson for core::SeLinuxOptions {
    fn to_json(&self) -> Res {
        let mut o = Obj::new();
        o.str("user", &self.user)
            .str("role", &self.role)
            .str("type", &self.r#type)
            .str("level", &self.level);
        Ok(o.finish())
    }
}

impl ToJson for core::SeccompProfile {
    fn to_json(&self) -> Res {
        let mut o = Obj::new();
        o.str_req("type", &self.r#type)
            .str_req("localhostProfile", &self.localhost_profile);
        Ok(o.finish())
    }
}

impl ToJson for core::AppArmorProfile {
    fn to_json(&self) -> Res {
        let mut o = Obj::new();
        o.str_req("type", &self.r#type)
            .str_req("localhostProfile", &self.localhost_profile);
        Ok(o.finish())
    }
}

impl ToJson for core::WindowsSecurityContextOptions {
    fn to_json(&self) -> Res {
        let mut o = Obj::new();
        o.str_req("gmsaCredentialSpecName", &self.gmsa_credential_spec_name)
            .str_req("gmsaCredentialSpec", &self.gmsa_credential_spec)
            .str_req("runAsUserName", &self.run_as_user_name)
            .flag("hostProcess", self.host_process);
        Ok(o.finish())
    }
}

impl ToJson for core::Sysctl {
    fn to_json(&self) -> Res {
        let mut o = Obj::new();
        o.str_req("name", &self.name).str_req("value", &self.value);
        Ok(o.finish())
    }
}

// ---- scheduling -----------------------------------------------------------

impl ToJson for core::Toleration {
    fn to_json(&self) -> Res {
        let mut o = Obj::new();
        o.str("key", &self.key)
            .str("operator", &self.operator)
            .str("value", &self.value)
            .str("effect", &self.effect)
            .num("tolerationSeconds", self.toleration_seconds);
        Ok(o.finish())
    }
}

impl ToJson for core::Affinity {
    fn to_json(&self) -> Res {
        let mut o = Obj::new();
        o.msg("nodeAffinity", &self.node_affinity)?
            .msg("podAffinity", &self.pod_affinity)?
            .msg("podAntiAffinity", &self.pod_anti_affinity)?;
        Ok(o.finish())
    }
}

impl ToJson for core::NodeAffinity {
    fn to_json(&self) -> Res {
        let mut o = Obj::new();
        o.msg(
            "requiredDuringSchedulingIgnoredDuringExecution",
            &self.required_during_scheduling_ignored_during_execution,
        )?
        .msgs(
            "preferredDuringSchedulingIgnoredDuringExecution",
            &self.preferred_during_scheduling_ignored_during_execution,
        )?;
        Ok(o.finish())
    }
}

impl ToJson for core::NodeSelector {
    fn to_json(&self) -> Res {
        let mut o = Obj::new();
        o.set("nodeSelectorTerms", serde_json::Value::Array(Vec::new()))
            .msgs("nodeSelectorTerms", &self.node_selector_terms)?;
        Ok(o.finish())
    }
}

impl ToJson for core::NodeSelectorTerm {
    fn to_json(&self) -> Res {
        let mut o = Obj::new();
        o.msgs("matchExpressions", &self.match_expressions)?
            .msgs("matchFields", &self.match_fields)?;
        Ok(o.finish())
    }
}

impl ToJson for core::NodeSelectorRequirement {
    fn to_json(&self) -> Res {
        let mut o = Obj::new();
        o.str_req("key", &self.key)
            .str_req("operator", &self.operator)
            .strs("values", &self.values);
        Ok(o.finish())
    }
}

impl ToJson for core::PreferredSchedulingTerm {
    fn to_json(&self) -> Res {
        let mut o = Obj::new();
        o.num("weight", self.weight)
            .msg("preference", &self.preference)?;
        Ok(o.finish())
    }
}

impl ToJson for core::PodAffinity {
    fn to_json(&self) -> Res {
        let mut o = Obj::new();
        o.msgs(
            "requiredDuringSchedulingIgnoredDuringExecution",
            &self.required_during_scheduling_ignored_during_execution,
        )?
        .msgs(
            "preferredDuringSchedulingIgnoredDuringExecution",
            &self.preferred_during_scheduling_ignored_during_execution,
        )?;
        Ok(o.finish())
    }
}

impl ToJson for core::PodAntiAffinity {
    fn to_json(&self) -> Res {
        let mut o = Obj::new();
        o.msgs(
            "requiredDuringSchedulingIgnoredDuringExecution",
            &self.required_during_scheduling_ignored_during_execution,
        )?
        .msgs(
            "preferredDuringSchedulingIgnoredDuringExecution",
            &self.preferred_during_scheduling_ignored_during_execution,
        )?;
        Ok(o.finish())
    }
}

impl ToJson for core::PodAffinityTerm {
    fn to_json(&self) -> Res {
        let mut o = Obj::new();
        o.msg("labelSelector", &self.label_selector)?
            .strs("namespaces", &self.namespaces)
            .str_req("topologyKey", &self.topology_key)
            .msg("namespaceSelector", &self.namespace_selector)?
            .strs("matchLabelKeys", &self.match_label_keys)
            .strs("mismatchLabelKeys", &self.mismatch_label_keys);
        Ok(o.finish())
    }
}

impl ToJson for core::WeightedPodAffinityTerm {
    fn to_json(&self) -> Res {
        let mut o = Obj::new();
        o.num("weight", self.weight)
            .msg("podAffinityTerm", &self.pod_affinity_term)?;
        Ok(o.finish())
    }
}

impl ToJson for core::TopologySpreadConstraint {
    fn to_json(&self) -> Res {
        let mut o = Obj::new();
        o.num("maxSkew", self.max_skew)
            .str_req("topologyKey", &self.topology_key)
            .str_req("whenUnsatisfiable", &self.when_unsatisfiable)
            .msg("labelSelector", &self.label_selector)?
            .num("minDomains", self.min_domains)
            .str_req("nodeAffinityPolicy", &self.node_affinity_policy)
            .str_req("nodeTaintsPolicy", &self.node_taints_policy)
            .strs("matchLabelKeys", &self.match_label_keys);
        Ok(o.finish())
    }
}

impl ToJson for core::HostAlias {
    fn to_json(&self) -> Res {
        let mut o = Obj::new();
        o.str_req("ip", &self.ip).strs("hostnames", &self.hostnames);
        Ok(o.finish())
    }
}

impl ToJson for core::PodDnsConfig {
    fn to_json(&self) -> Res {
        let mut o = Obj::new();
        o.strs("nameservers", &self.nameservers)
            .strs("searches", &self.searches)
            .msgs("options", &self.options)?;
        Ok(o.finish())
    }
}

impl ToJson for core::PodDnsConfigOption {
    fn to_json(&self) -> Res {
        let mut o = Obj::new();
        o.str("name", &self.name).str_req("value", &self.value);
        Ok(o.finish())
    }
}

impl ToJson for core::PodReadinessGate {
    fn to_json(&self) -> Res {
        let mut o = Obj::new();
        o.str_req("conditionType", &self.condition_type);
        Ok(o.finish())
    }
}

impl ToJson for core::PodOs {
    fn to_json(&self) -> Res {
        let mut o = Obj::new();
        o.str_req("name", &self.name);
        Ok(o.finish())
    }
}

impl ToJson for core::PodSchedulingGate {
    fn to_json(&self) -> Res {
        let mut o = Obj::new();
        o.str_req("name", &self.name);
        Ok(o.finish())
    }
}
