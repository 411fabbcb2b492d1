//! README claims about container pods that no other test would catch breaking
//! (issue 20, "Coverage holes"): the securityContext mapping and the `privileged`
//! refusal, env from Secrets, resources and envFrom, CreateContainerConfigError until
//! the Secret appears, SIGKILL after the grace period, and restartPolicy OnFailure.
//! The env, config-error and OnFailure checks run on Wasm pods too, since the README
//! gives them the same lifecycle. Real server and agent (its private containerd and
//! runc), a real docker-registry with the busybox image, kubectl. Two clusters, one per
//! test function: the second runs with `--allow-privileged`.

mod common;

use std::time::{Duration, Instant};

use common::{Cluster, Registry, KUBECTL_DEFAULT};

const WAIT: Duration = Duration::from_secs(90);
const PHASE: &str = "{.status.phase}";

/// The field `path` of the status of container `name` (`.state.waiting.reason`, ...).
fn cstatus(c: &Cluster, pod: &str, name: &str, path: &str) -> String {
    c.pod_field(pod, &status_path(name, path))
}

fn status_path(name: &str, path: &str) -> String {
    format!("{{.status.containerStatuses[?(@.name==\"{name}\")]{path}}}")
}

/// Waits until the pod is in `phase`; a failure shows its containers' statuses.
fn wait_phase(c: &Cluster, pod: &str, phase: &str) {
    let deadline = Instant::now() + WAIT;
    while c.pod_field(pod, PHASE) != phase {
        assert!(
            Instant::now() < deadline,
            "{pod} never {phase}: {}",
            c.pod_field(pod, "{.status.containerStatuses}")
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn logs(c: &Cluster, pod: &str, container: &str) -> String {
    c.ok(KUBECTL_DEFAULT, &["logs", pod, "-c", container])
}

/// Waits until the pod's only container waits with CreateContainerConfigError;
/// returns its message.
fn config_error(c: &Cluster, pod: &str) -> String {
    let waiting = "{.status.containerStatuses[0].state.waiting";
    c.wait_pod_field(
        pod,
        &format!("{waiting}.reason}}"),
        "CreateContainerConfigError",
        WAIT,
    );
    c.pod_field(pod, &format!("{waiting}.message}}"))
}

/// A pod of restartPolicy `policy` whose `containers` (YAML list items, indented by
/// two) run `image`; `extra` goes under `spec`.
fn pod(name: &str, policy: &str, extra: &str, containers: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\nspec:\n  restartPolicy: {policy}\n  terminationGracePeriodSeconds: 1\n{extra}  containers:\n{containers}"
    )
}

/// One container item of [`pod`]: busybox's `sh -c script`, then `more` (indented by
/// four).
fn sh(name: &str, image: &str, script: &str, more: &str) -> String {
    format!(
        "  - name: {name}\n    image: {image}\n    command: [\"sh\", \"-c\", {script:?}]\n{more}"
    )
}

/// One Wasm container item of [`pod`]: testbox with `args`, then `more`.
fn wasm(name: &str, image: &str, args: &str, more: &str) -> String {
    format!("  - name: {name}\n    image: {image}\n    args: [{args}]\n{more}")
}

/// The host pid of the task of container `id`, if containerd has one running.
fn task_pid(c: &Cluster, id: &str) -> Option<u32> {
    c.ctr(&["tasks", "ls"])
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|f| f.first() == Some(&id) && f.get(2) == Some(&"RUNNING"))
        .and_then(|f| f.get(1).and_then(|p| p.parse().ok()))
}

/// Whether `pid` is a live process (not gone, not a zombie awaiting its reaper).
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .map(|(_, rest)| rest.trim_start().chars().next())
        })
        .flatten()
        .is_some_and(|state| state != 'Z' && state != 'X')
}

/// CapEff of a root process with containerd CRI's default capabilities (CHOWN,
/// DAC_OVERRIDE, FOWNER, FSETID, KILL, SETGID, SETUID, SETPCAP, NET_BIND_SERVICE,
/// NET_RAW, SYS_CHROOT, MKNOD, AUDIT_WRITE, SETFCAP), less CHOWN (bit 0) and NET_RAW
/// (bit 13), plus IPC_LOCK (bit 14).
const CAPS_DROPPED_AND_ADDED: &str = "CapEff:\t00000000a80445fa";
/// Only NET_BIND_SERVICE (bit 10).
const CAPS_ONLY_BIND: &str = "CapEff:\t0000000000000400";

#[test]
fn security_context_env_and_config_errors() {
    let reg = Registry::start();
    let image = reg.push_busybox("tests/coverage-busybox:v1");
    let testbox = reg.push(&common::testbox("wasm32-wasip1"), "tests/testbox:cov1");
    let c = Cluster::with_agent("cov-ctr", &[]);

    // Pods whose config cannot be built yet, first: the sooner each fails once, the
    // shorter its back-off when its Secret appears.
    let token = "    env:\n    - name: TOKEN\n      valueFrom:\n        secretKeyRef: {name: late, key: token}\n";
    let key = "    env:\n    - name: KEY\n      valueFrom:\n        secretKeyRef: {name: partial, key: needed}\n";
    c.ok(
        KUBECTL_DEFAULT,
        &[
            "create",
            "secret",
            "generic",
            "partial",
            "--from-literal=other=x",
        ],
    );
    c.apply(&pod(
        "late",
        "Never",
        "",
        &sh("main", &image, "echo token=$TOKEN", token),
    ));
    c.apply(&pod(
        "partial",
        "Never",
        "",
        &sh("main", &image, "echo key=$KEY", key),
    ));
    c.apply(&pod(
        "wasm-partial",
        "Never",
        "",
        &wasm("main", &testbox, "env, KEY", key),
    ));
    c.apply(&pod(
        "from-absent",
        "Never",
        "",
        &sh(
            "main",
            &image,
            "true",
            "    envFrom:\n    - configMapRef: {name: absent}\n",
        ),
    ));
    c.apply(&pod(
        "priv",
        "Never",
        "",
        &sh(
            "main",
            &image,
            "true",
            "    securityContext: {privileged: true}\n",
        ),
    ));

    // The kubelet's words (makeEnvironmentVariables), as the container's waiting
    // message.
    assert_eq!(config_error(&c, "late"), "secret \"late\" not found");
    let missing_key = "couldn't find key needed in Secret default/partial";
    assert_eq!(config_error(&c, "partial"), missing_key);
    assert_eq!(config_error(&c, "wasm-partial"), missing_key);
    assert_eq!(
        config_error(&c, "from-absent"),
        "configmap \"absent\" not found"
    );
    // README: `privileged` is refused (CreateContainerConfigError) unless the agent
    // runs with --allow-privileged.
    assert_eq!(
        config_error(&c, "priv"),
        "privileged containers are not allowed on this node (the agent's --allow-privileged flag)"
    );
    // Once the Secret (or its key) is there, the retried containers start with it.
    c.ok(
        KUBECTL_DEFAULT,
        &[
            "create",
            "secret",
            "generic",
            "late",
            "--from-literal=token=t0ken",
        ],
    );
    c.ok(
        KUBECTL_DEFAULT,
        &[
            "patch",
            "secret",
            "partial",
            "-p",
            r#"{"data":{"needed":"a2V5LXZhbHVl"}}"#,
        ],
    );

    // env: secretKeyRef (one key missing but optional), resourceFieldRef with
    // divisors, envFrom a ConfigMap and a Secret with prefixes (and an optional
    // ConfigMap that does not exist), `$(VAR)` over a Secret's value.
    c.ok(
        KUBECTL_DEFAULT,
        &[
            "create",
            "secret",
            "generic",
            "creds",
            "--from-literal=user=alice",
            "--from-literal=pass=s3cret",
        ],
    );
    c.ok(
        KUBECTL_DEFAULT,
        &[
            "create",
            "configmap",
            "settings",
            "--from-literal=a=1",
            "--from-literal=b=two",
        ],
    );
    let env = r#"    resources:
      requests: {cpu: 250m, memory: 16Mi}
      limits: {cpu: 500m, memory: 64Mi}
    envFrom:
    - configMapRef: {name: settings}
      prefix: CFG_
    - secretRef: {name: creds}
      prefix: SEC_
    - configMapRef: {name: absent, optional: true}
    env:
    - name: SECRET_USER
      valueFrom:
        secretKeyRef: {name: creds, key: user}
    - name: MISSING_OPT
      valueFrom:
        secretKeyRef: {name: creds, key: nope, optional: true}
    - name: MEM_MI
      valueFrom:
        resourceFieldRef: {resource: limits.memory, divisor: 1Mi}
    - name: CPU_M
      valueFrom:
        resourceFieldRef: {resource: requests.cpu, divisor: 1m}
    - name: GREETING
      value: hi $(SECRET_USER)
"#;
    c.apply(&pod(
        "env",
        "Never",
        "",
        &sh(
            "main",
            &image,
            "env | grep -E '^(SECRET_USER|MISSING_OPT|MEM_MI|CPU_M|GREETING|CFG_|SEC_)' | sort",
            env,
        ),
    ));
    c.apply(&pod(
        "wasm-env",
        "Never",
        "",
        &wasm(
            "main",
            &testbox,
            "env, SECRET_USER, MEM_MI, CPU_M, GREETING, CFG_a, CFG_b, SEC_user, SEC_pass",
            env,
        ),
    ));

    // securityContext: the pod's user, group and supplementalGroups; per container
    // allowPrivilegeEscalation, readOnlyRootFilesystem, capabilities.
    let status = "grep -E '^(CapEff|NoNewPrivs):' /proc/self/status";
    let root = |more: &str| format!("    securityContext:\n      runAsUser: 0\n{more}");
    let containers = [
        sh("ids", &image, &format!("id; {status}"), ""),
        sh(
            "escalate",
            &image,
            status,
            "    securityContext: {allowPrivilegeEscalation: true}\n",
        ),
        sh(
            "no-escalate",
            &image,
            status,
            "    securityContext: {allowPrivilegeEscalation: false}\n",
        ),
        sh(
            "read-only",
            &image,
            "touch /rootfile 2>&1 || echo refused; touch /scratch/f && echo volume-writable",
            &format!(
                "{}    volumeMounts: [{{name: scratch, mountPath: /scratch}}]\n",
                root("      readOnlyRootFilesystem: true\n")
            ),
        ),
        sh(
            "writable",
            &image,
            "touch /rootfile && echo root-writable",
            &root(""),
        ),
        sh(
            "caps",
            &image,
            status,
            &root("      capabilities: {drop: [CHOWN, NET_RAW], add: [IPC_LOCK]}\n"),
        ),
        sh(
            "caps-min",
            &image,
            status,
            &root("      capabilities: {drop: [ALL], add: [NET_BIND_SERVICE]}\n"),
        ),
    ];
    c.apply(&pod(
        "sec",
        "Never",
        "  securityContext: {runAsUser: 1234, runAsGroup: 2345, supplementalGroups: [3456, 4567]}\n  volumes: [{name: scratch, emptyDir: {}}]\n",
        &containers.concat(),
    ));

    wait_phase(&c, "env", "Succeeded");
    assert_eq!(
        c.ok(KUBECTL_DEFAULT, &["logs", "env"]),
        "CFG_a=1\nCFG_b=two\nCPU_M=250\nGREETING=hi alice\nMEM_MI=64\nSECRET_USER=alice\nSEC_pass=s3cret\nSEC_user=alice\n"
    );
    wait_phase(&c, "wasm-env", "Succeeded");
    assert_eq!(
        c.ok(KUBECTL_DEFAULT, &["logs", "wasm-env"]),
        "SECRET_USER=alice\nMEM_MI=64\nCPU_M=250\nGREETING=hi alice\nCFG_a=1\nCFG_b=two\nSEC_user=alice\nSEC_pass=s3cret\n"
    );

    wait_phase(&c, "sec", "Succeeded");
    // containerd's CRI puts the primary group first among the supplementary ones.
    assert_eq!(
        logs(&c, "sec", "ids"),
        "uid=1234 gid=2345 groups=2345,3456,4567\nCapEff:\t0000000000000000\nNoNewPrivs:\t1\n"
    );
    assert_eq!(
        logs(&c, "sec", "escalate"),
        "CapEff:\t0000000000000000\nNoNewPrivs:\t0\n"
    );
    assert_eq!(
        logs(&c, "sec", "no-escalate"),
        "CapEff:\t0000000000000000\nNoNewPrivs:\t1\n"
    );
    assert_eq!(
        logs(&c, "sec", "read-only"),
        "touch: /rootfile: Read-only file system\nrefused\nvolume-writable\n"
    );
    assert_eq!(logs(&c, "sec", "writable"), "root-writable\n");
    assert_eq!(
        logs(&c, "sec", "caps"),
        format!("{CAPS_DROPPED_AND_ADDED}\nNoNewPrivs:\t1\n")
    );
    assert_eq!(
        logs(&c, "sec", "caps-min"),
        format!("{CAPS_ONLY_BIND}\nNoNewPrivs:\t1\n")
    );

    // The pods that waited for their Secret ran with it.
    for (name, want) in [
        ("late", "token=t0ken\n"),
        ("partial", "key=key-value\n"),
        ("wasm-partial", "KEY=key-value\n"),
    ] {
        wait_phase(&c, name, "Succeeded");
        assert_eq!(c.ok(KUBECTL_DEFAULT, &["logs", name]), want, "{name}");
    }
    // Still refused: nothing changed for them.
    for name in ["from-absent", "priv"] {
        assert_eq!(
            c.pod_field(name, "{.status.containerStatuses[0].state.waiting.reason}"),
            "CreateContainerConfigError",
            "{name}"
        );
    }
}

#[test]
fn grace_period_privileged_and_on_failure() {
    let reg = Registry::start();
    let image = reg.push_busybox("tests/coverage-busybox:v2");
    let testbox = reg.push(&common::testbox("wasm32-wasip1"), "tests/testbox:cov2");
    let c = Cluster::with_agent("cov-priv", &["--allow-privileged"]);

    // A container that ignores SIGTERM, to be deleted with a short grace period.
    c.apply(&pod(
        "stubborn",
        "Always",
        "",
        &sh(
            "main",
            &image,
            "trap 'echo got TERM' TERM; echo ready; while true; do sleep 1; done",
            "",
        ),
    ));
    // OnFailure: `flaky` fails once (exit 3) then succeeds; `done` succeeds at once.
    c.apply(&pod(
        "on-failure",
        "OnFailure",
        "  volumes: [{name: work, emptyDir: {}}]\n",
        &[
            sh(
                "flaky",
                &image,
                "if [ -e /work/ran ]; then echo second run; exit 0; fi; touch /work/ran; echo first run; exit 3",
                "    volumeMounts: [{name: work, mountPath: /work}]\n",
            ),
            sh("done", &image, "echo done", ""),
        ]
        .concat(),
    ));
    // The same policy for Wasm: `fails` always fails, `ok` succeeds.
    c.apply(&pod(
        "wasm-on-failure",
        "OnFailure",
        "",
        &[
            wasm("fails", &testbox, "exit, \"3\"", ""),
            wasm("ok", &testbox, "exit, \"0\"", ""),
        ]
        .concat(),
    ));
    // With --allow-privileged a privileged container runs, with every capability the
    // node has, no seccomp filter and escalation allowed.
    c.apply(&pod(
        "priv",
        "Never",
        "",
        &sh(
            "main",
            &image,
            "grep -E '^(CapEff|NoNewPrivs|Seccomp):' /proc/self/status",
            "    securityContext: {privileged: true}\n",
        ),
    ));

    // SIGTERM, then SIGKILL when the grace period is over, as the kubelet does.
    wait_phase(&c, "stubborn", "Running");
    let id = cstatus(&c, "stubborn", "main", ".containerID");
    let id = id
        .strip_prefix("containerd://")
        .unwrap_or_else(|| panic!("container ID {id:?}"))
        .to_string();
    let pid = task_pid(&c, &id).unwrap_or_else(|| panic!("no running task {id}"));
    assert!(alive(pid), "task {id}: pid {pid} is not alive");
    let grace = Duration::from_secs(5);
    let deleted = Instant::now();
    c.ok(
        KUBECTL_DEFAULT,
        &[
            "delete",
            "pod",
            "stubborn",
            "--grace-period=5",
            "--wait=false",
        ],
    );
    // The container saw SIGTERM and is still there, as is its pod.
    let deadline = Instant::now() + WAIT;
    while !logs(&c, "stubborn", "main").contains("got TERM") {
        assert!(
            Instant::now() < deadline,
            "SIGTERM never reached the container"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let seen = deleted.elapsed();
    assert!(
        alive(pid) && task_pid(&c, &id) == Some(pid),
        "the container died on SIGTERM ({seen:?} after the delete, grace {grace:?})"
    );
    assert!(
        !c.pod_field("stubborn", "{.metadata.deletionTimestamp}")
            .is_empty(),
        "the pod is not being deleted"
    );
    // Then it is killed, not before the grace period ends.
    let deadline = Instant::now() + WAIT;
    while alive(pid) {
        assert!(
            Instant::now() < deadline,
            "pid {pid} still alive {:?} after a delete with grace {grace:?}",
            deleted.elapsed()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let killed = deleted.elapsed();
    assert!(
        killed >= grace,
        "killed {killed:?} after the delete, within the grace period {grace:?}"
    );
    c.wait_for_output(
        &[
            "get",
            "pods",
            "--field-selector=metadata.name=stubborn",
            "-o",
            "name",
        ],
        "",
        WAIT,
    );
    assert_eq!(task_pid(&c, &id), None);
    assert_eq!(
        c.event_messages("involvedObject.name=stubborn,reason=Killing"),
        "Stopping container main"
    );

    // The privileged container: every capability the agent has (as this test, whose
    // child it is), unfiltered, as under containerd's CRI.
    wait_phase(&c, "priv", "Succeeded");
    let agent_caps = std::fs::read_to_string("/proc/self/status")
        .expect("own status")
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:\t").map(str::to_string))
        .expect("CapEff");
    assert_eq!(
        logs(&c, "priv", "main"),
        format!("CapEff:\t{agent_caps}\nNoNewPrivs:\t0\nSeccomp:\t0\n")
    );

    // OnFailure restarts the failed container once and not the one that succeeded.
    wait_phase(&c, "on-failure", "Succeeded");
    let on_failure = |name: &str, path: &str| cstatus(&c, "on-failure", name, path);
    let settled = [
        ("flaky", ".restartCount", "1"),
        ("flaky", ".lastState.terminated.exitCode", "3"),
        ("flaky", ".state.terminated.exitCode", "0"),
        ("flaky", ".state.terminated.reason", "Completed"),
        ("done", ".restartCount", "0"),
        ("done", ".state.terminated.reason", "Completed"),
    ];
    for (name, path, want) in settled {
        assert_eq!(on_failure(name, path), want, "{name}{path}");
    }
    assert_eq!(logs(&c, "on-failure", "flaky"), "second run\n");
    assert_eq!(
        c.ok(
            KUBECTL_DEFAULT,
            &["logs", "on-failure", "-c", "flaky", "--previous"]
        ),
        "first run\n"
    );

    // Wasm: the failing container is restarted, then backs off; the other is done.
    c.wait_pod_field(
        "wasm-on-failure",
        &status_path("fails", ".state.waiting.reason"),
        "CrashLoopBackOff",
        WAIT,
    );
    let wasm_status = |name: &str, path: &str| cstatus(&c, "wasm-on-failure", name, path);
    assert_eq!(wasm_status("fails", ".restartCount"), "1");
    assert_eq!(wasm_status("fails", ".lastState.terminated.exitCode"), "3");
    assert_eq!(wasm_status("ok", ".restartCount"), "0");
    assert_eq!(wasm_status("ok", ".state.terminated.reason"), "Completed");
    assert_eq!(c.pod_field("wasm-on-failure", PHASE), "Running");

    // A Succeeded pod stays so: nothing of it was restarted meanwhile.
    assert_eq!(c.pod_field("on-failure", PHASE), "Succeeded");
    for (name, path, want) in settled {
        assert_eq!(on_failure(name, path), want, "{name}{path}");
    }
}
