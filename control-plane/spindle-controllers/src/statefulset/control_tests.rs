use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{PodCondition, PodStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::ObjectMeta;

use super::*;

const OLD: &str = "web-old";
const NEW: &str = "web-new";

fn params(replicas: i32) -> Params<'static> {
    Params {
        start: 0,
        replicas,
        monotonic: true,
        rolling: true,
        partition: 0,
        max_unavailable: 1,
        min_ready: 0,
        now: Timestamp::now(),
        current_revision: OLD,
        update_revision: NEW,
        deleting: false,
    }
}

fn pod(ordinal: i32, phase: &str, ready: bool, revision: &str) -> Arc<Pod> {
    let name = format!("web-{ordinal}");
    Arc::new(Pod {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            labels: Some(BTreeMap::from([
                (POD_NAME_LABEL.into(), name),
                (POD_INDEX_LABEL.into(), ordinal.to_string()),
                (REVISION_LABEL.into(), revision.into()),
            ])),
            ..Default::default()
        },
        spec: None,
        status: Some(PodStatus {
            phase: Some(phase.into()),
            conditions: Some(vec![PodCondition {
                type_: "Ready".into(),
                status: if ready { "True" } else { "False" }.into(),
                last_transition_time: Some(Time(Timestamp::now())),
                ..Default::default()
            }]),
            ..Default::default()
        }),
    })
}

fn running(ordinal: i32, revision: &str) -> Arc<Pod> {
    pod(ordinal, "Running", true, revision)
}

/// The pod writes of a plan, as "create N (update)" and "delete NAME why".
fn writes(steps: &[Step]) -> Vec<String> {
    steps
        .iter()
        .filter_map(|s| match s {
            Step::Create { ordinal, update } => Some(format!(
                "create {ordinal} {}",
                if *update { "new" } else { "old" }
            )),
            Step::Delete { pod, why } => Some(format!("delete {} {why:?}", pod.name_any())),
            _ => None,
        })
        .collect()
}

#[test]
fn ordered_ready_creates_one_pod_after_its_predecessors_are_ready() {
    let p = params(3);
    assert_eq!(writes(&plan(&p, &[])), ["create 0 new"]);
    let pending = [pod(0, "Pending", false, NEW)];
    assert!(writes(&plan(&p, &pending)).is_empty());
    let not_ready = [pod(0, "Running", false, NEW)];
    assert!(writes(&plan(&p, &not_ready)).is_empty());
    assert_eq!(writes(&plan(&p, &[running(0, NEW)])), ["create 1 new"]);
    assert_eq!(
        writes(&plan(&p, &[running(0, NEW), running(1, NEW)])),
        ["create 2 new"]
    );
    // A gap is filled in order: web-1 again before anything else.
    assert_eq!(
        writes(&plan(&p, &[running(0, NEW), running(2, NEW)])),
        ["create 1 new"]
    );
}

#[test]
fn parallel_creates_every_missing_pod_at_once() {
    let p = Params {
        monotonic: false,
        ..params(3)
    };
    assert_eq!(
        writes(&plan(&p, &[])),
        ["create 0 new", "create 1 new", "create 2 new"]
    );
}

#[test]
fn scale_down_goes_from_the_highest_ordinal_one_at_a_time() {
    let p = params(1);
    let pods = [running(0, NEW), running(1, NEW), running(2, NEW)];
    assert_eq!(writes(&plan(&p, &pods)), ["delete web-2 ScaleDown"]);
    // While web-2 terminates, web-1 waits.
    let mut dying = (*running(2, NEW)).clone();
    dying.metadata.deletion_timestamp = Some(Time(Timestamp::now()));
    let pods = [running(0, NEW), running(1, NEW), Arc::new(dying)];
    assert!(writes(&plan(&p, &pods)).is_empty());
    // Parallel deletes them together.
    let p = Params {
        monotonic: false,
        ..params(1)
    };
    let pods = [running(0, NEW), running(1, NEW), running(2, NEW)];
    assert_eq!(
        writes(&plan(&p, &pods)),
        ["delete web-2 ScaleDown", "delete web-1 ScaleDown"]
    );
}

#[test]
fn a_rolling_update_respects_the_partition() {
    let p = Params {
        partition: 2,
        ..params(3)
    };
    let old = [running(0, OLD), running(1, OLD), running(2, OLD)];
    assert_eq!(writes(&plan(&p, &old)), ["delete web-2 Update"]);
    let rolled = [running(0, OLD), running(1, OLD), running(2, NEW)];
    assert!(writes(&plan(&p, &rolled)).is_empty());
    // A deleted pod below the partition comes back at the current revision.
    assert_eq!(
        writes(&plan(&p, &[running(0, OLD), running(2, NEW)])),
        ["create 1 old"]
    );
    // Without a partition the update goes down from the top, one at a time.
    let p = params(3);
    assert_eq!(writes(&plan(&p, &rolled)), ["delete web-1 Update"]);
    // OnDelete: nothing is replaced.
    let p = Params {
        rolling: false,
        ..params(3)
    };
    assert!(writes(&plan(&p, &old)).is_empty());
}

#[test]
fn max_unavailable_bounds_the_pods_updated_together() {
    let p = Params {
        max_unavailable: 2,
        ..params(4)
    };
    let old = [
        running(0, OLD),
        running(1, OLD),
        running(2, OLD),
        running(3, OLD),
    ];
    assert_eq!(
        writes(&plan(&p, &old)),
        ["delete web-3 Update", "delete web-2 Update"]
    );
    // One unavailable already: one more may go.
    let p = Params {
        monotonic: false,
        ..p
    };
    let some_down = [
        running(0, OLD),
        pod(1, "Running", false, OLD),
        running(2, OLD),
        running(3, OLD),
    ];
    assert_eq!(writes(&plan(&p, &some_down)), ["delete web-3 Update"]);
}

#[test]
fn failed_pods_are_replaced_and_start_ordinals_are_honoured() {
    let p = params(2);
    let pods = [pod(0, "Failed", false, NEW), running(1, NEW)];
    assert_eq!(writes(&plan(&p, &pods)), ["delete web-0 Failed"]);
    let p = Params {
        start: 5,
        ..params(2)
    };
    assert_eq!(writes(&plan(&p, &[])), ["create 5 new"]);
    // web-0 is outside [5, 7): condemned, once 5 and 6 run.
    let pods = [running(0, NEW), running(5, NEW), running(6, NEW)];
    assert_eq!(writes(&plan(&p, &pods)), ["delete web-0 ScaleDown"]);
}

#[test]
fn a_deleted_set_changes_no_pod() {
    let p = Params {
        deleting: true,
        ..params(3)
    };
    assert!(plan(&p, &[]).is_empty());
}
