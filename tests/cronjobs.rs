//! CronJobs end to end, as a user drives them with kubectl: Jobs created at the minute
//! with their deterministic names and the scheduled-time annotation, Forbid and Replace
//! at the next minute, history limits, `kubectl create job --from=cronjob/X`, the
//! columns of `get cronjobs`, and the 422s of bad input. No nodes: a Job nobody finishes
//! stays active, which is what the concurrency policies look at; finished Jobs are made
//! so through the status subresource, as a Job controller would.
//!
//! Everything shares one cluster and two minute boundaries, so the test lasts about two
//! minutes whatever it checks.

mod common;

use std::time::{Duration, Instant};

use common::{kubectls, Cluster, KUBECTL_DEFAULT as K};

/// A generous ceiling on waits that end at the next minute boundary.
const TICK: Duration = Duration::from_secs(100);

fn cronjob(name: &str, policy: &str, extra: &str) -> String {
    format!(
        r#"apiVersion: batch/v1
kind: CronJob
metadata:
  name: {name}
spec:
  schedule: "* * * * *"
  concurrencyPolicy: {policy}
{extra}  jobTemplate:
    metadata:
      labels: {{cron: {name}}}
    spec:
      template:
        spec:
          restartPolicy: Never
          containers:
          - name: c
            image: registry.local/none:v1
"#
    )
}

/// Poll `f` until it answers, or fail naming `what`.
fn wait_until<T>(c: &Cluster, what: &str, timeout: Duration, f: impl Fn() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: not within {timeout:?}\nserver log tail:\n{}",
            log_tail(c)
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

fn log_tail(c: &Cluster) -> String {
    let log = c.log();
    let cut = log.len().saturating_sub(4000);
    log.get(cut..).unwrap_or(&log).to_string()
}

/// The Jobs whose controller is the CronJob `owner`, sorted.
fn jobs(c: &Cluster, owner: &str) -> Vec<String> {
    let out = c.ok(
        K,
        &[
            "get", "jobs", "-o",
            "jsonpath={range .items[*]}{.metadata.name} {.metadata.ownerReferences[0].name}{\"\\n\"}{end}",
        ],
    );
    let mut v: Vec<String> = out
        .lines()
        .filter_map(|l| l.split_once(' '))
        .filter(|(_, o)| *o == owner)
        .map(|(j, _)| j.to_string())
        .collect();
    v.sort();
    v
}

/// The Jobs `owner` started on schedule (not the manual ones).
fn scheduled(c: &Cluster, owner: &str) -> Vec<String> {
    let prefix = format!("{owner}-");
    jobs(c, owner)
        .into_iter()
        .filter(|j| {
            j.strip_prefix(&prefix)
                .is_some_and(|m| m.parse::<i64>().is_ok())
        })
        .collect()
}

/// Messages of the events of `reason` about `name`.
fn events(c: &Cluster, name: &str, reason: &str) -> Vec<String> {
    let sel = format!("involvedObject.name={name},reason={reason}");
    let out = c.ok(
        K,
        &[
            "get",
            "events",
            "--field-selector",
            &sel,
            "-o",
            "jsonpath={range .items[*]}{.message}{\"\\n\"}{end}",
        ],
    );
    out.lines().map(str::to_string).collect()
}

/// `<type> <message>` of the events of `reason` about `name`.
fn typed_events(c: &Cluster, name: &str, reason: &str) -> Vec<String> {
    let sel = format!("involvedObject.name={name},reason={reason}");
    let out = c.ok(
        K,
        &[
            "get",
            "events",
            "--field-selector",
            &sel,
            "-o",
            "jsonpath={range .items[*]}{.type} {.message}{\"\\n\"}{end}",
        ],
    );
    out.lines().map(str::to_string).collect()
}

fn now_minute() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64 / 60)
        .unwrap_or(0)
}

fn field(c: &Cluster, kind_name: &str, path: &str) -> String {
    c.ok(K, &["get", kind_name, "-o", &format!("jsonpath={path}")])
        .trim()
        .to_string()
}

/// The minute (since the epoch) in a scheduled Job's name.
fn minute_of(job: &str) -> i64 {
    job.rsplit('-')
        .next()
        .and_then(|m| m.parse().ok())
        .unwrap_or_else(|| panic!("{job} is not named <cronjob>-<minute>"))
}

/// Mark a Job finished through its status subresource, as a Job controller would.
fn finish(c: &Cluster, job: &str, cond: &str, start: &str, end: &str) {
    let done = if cond == "Complete" {
        format!(r#","completionTime":"{end}""#)
    } else {
        String::new()
    };
    let patch = format!(
        r#"{{"status":{{"startTime":"{start}"{done},"conditions":[{{"type":"{cond}","status":"True","lastTransitionTime":"{end}"}}]}}}}"#
    );
    c.ok(
        K,
        &[
            "patch",
            "job",
            job,
            "--subresource=status",
            "--type=merge",
            "-p",
            &patch,
        ],
    );
}

#[test]
fn cronjobs_through_two_minute_boundaries() {
    let c = Cluster::start();
    // Both kubectls' `create cronjob`; the others need fields the command has no flag for.
    c.ok(
        K,
        &[
            "create",
            "cronjob",
            "every",
            "--image=registry.local/none:v1",
            "--schedule=* * * * *",
        ],
    );
    c.ok(
        common::KUBECTL_OLDEST,
        &[
            "create",
            "cronjob",
            "every-old",
            "--image=registry.local/none:v1",
            "--schedule=*/1 * * * *",
        ],
    );
    c.apply(&cronjob("forbid", "Forbid", ""));
    c.apply(&cronjob("replace", "Replace", ""));
    // Suspended: nothing is scheduled, but its history is still kept to the limits.
    c.apply(&cronjob(
        "hist",
        "Allow",
        "  suspend: true\n  successfulJobsHistoryLimit: 1\n  failedJobsHistoryLimit: 1\n",
    ));

    // Two CronJobs whose last run was years ago, as after a controller that was away
    // (the status subresource is how such a controller's record reads).
    c.apply(&cronjob("late", "Allow", ""));
    c.apply(&cronjob(
        "late-bounded",
        "Allow",
        "  startingDeadlineSeconds: 300\n",
    ));
    for cj in ["late", "late-bounded"] {
        c.ok(
            K,
            &[
                "patch",
                "cronjob",
                cj,
                "--subresource=status",
                "--type=merge",
                "-p",
                r#"{"status":{"lastScheduleTime":"2020-01-01T00:00:00Z"}}"#,
            ],
        );
    }

    // Defaults, as kube-apiserver sets them.
    assert_eq!(
        field(&c, "cronjob/every", "{.spec.concurrencyPolicy} {.spec.suspend} {.spec.successfulJobsHistoryLimit} {.spec.failedJobsHistoryLimit}"),
        "Allow false 3 1"
    );

    // Bad input: 422 with kube's words and field paths, from both kubectls.
    for k in kubectls() {
        let err = c.fails(
            k,
            &[
                "create",
                "cronjob",
                "bad",
                "--image=x",
                "--schedule=every minute",
            ],
        );
        assert!(
            err.contains(r#"spec.schedule: Invalid value: "every minute": expected exactly 5 fields, found 2: [every minute]"#),
            "{k}: {err}"
        );
        let err = c.fails(
            k,
            &[
                "create",
                "cronjob",
                "bad",
                "--image=x",
                "--schedule=CRON_TZ=UTC 0 * * * *",
            ],
        );
        assert!(
            err.contains("cannot use TZ or CRON_TZ in schedule, use timeZone field instead"),
            "{k}: {err}"
        );
        let err = c.fails(
            k,
            &[
                "create",
                "cronjob",
                &"n".repeat(53),
                "--image=x",
                "--schedule=@hourly",
            ],
        );
        assert!(
            err.contains("must be no more than 52 characters"),
            "{k}: {err}"
        );
    }
    let out = c.apply_stdin(
        K,
        &["apply", "-f", "-"],
        &cronjob("tz", "Sometimes", "  timeZone: Mars/Olympus\n"),
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains(
            r#"spec.timeZone: Invalid value: "Mars/Olympus": unknown time zone Mars/Olympus"#
        ),
        "{err}"
    );
    assert!(
        err.contains(r#"spec.concurrencyPolicy: Unsupported value: "Sometimes": supported values: "Allow", "Forbid", "Replace""#),
        "{err}"
    );

    // `create job --from=cronjob/X` (client-side in kubectl) runs at once: a Job owned by
    // the CronJob and marked manual (kubectl 1.27 leaves `controller` unset).
    for (k, job) in [(K, "manual-new"), (common::KUBECTL_OLDEST, "manual-old")] {
        c.ok(k, &["create", "job", job, "--from=cronjob/every"]);
        assert_eq!(
            field(
                &c,
                &format!("job/{job}"),
                "{.metadata.annotations.cronjob\\.kubernetes\\.io/instantiate} {.metadata.ownerReferences[0].kind}/{.metadata.ownerReferences[0].name}"
            ),
            "manual CronJob/every",
            "{k}"
        );
    }
    // The controller notices a Job it did not create, as kube does.
    wait_until(&c, "UnexpectedJob event", TICK, || {
        events(&c, "every", "UnexpectedJob")
            .iter()
            .any(|m| m == "Saw a job that the controller did not create or forgot: manual-new")
            .then_some(())
    });

    // History limits: three Complete and two Failed Jobs of `hist`; the oldest beyond
    // 1 and 1 are deleted, and the newest completion is lastSuccessfulTime.
    let hist_uid = field(&c, "cronjob/hist", "{.metadata.uid}");
    let finished = [
        (
            "hist-1",
            "Complete",
            "2026-01-01T00:01:00Z",
            "2026-01-01T00:01:30Z",
        ),
        (
            "hist-2",
            "Complete",
            "2026-01-01T00:02:00Z",
            "2026-01-01T00:02:30Z",
        ),
        (
            "hist-3",
            "Complete",
            "2026-01-01T00:03:00Z",
            "2026-01-01T00:03:30Z",
        ),
        (
            "hist-4",
            "Failed",
            "2026-01-01T00:04:00Z",
            "2026-01-01T00:04:30Z",
        ),
        (
            "hist-5",
            "Failed",
            "2026-01-01T00:05:00Z",
            "2026-01-01T00:05:30Z",
        ),
    ];
    for (name, cond, start, end) in finished {
        c.apply(&format!(
            r#"apiVersion: batch/v1
kind: Job
metadata:
  name: {name}
  labels: {{cron: hist}}
  ownerReferences:
  - {{apiVersion: batch/v1, kind: CronJob, name: hist, uid: {hist_uid}, controller: true}}
spec:
  template:
    spec:
      restartPolicy: Never
      containers:
      - {{name: c, image: registry.local/none:v1}}
"#
        ));
        finish(&c, name, cond, start, end);
    }
    wait_until(
        &c,
        "history pruned to one Complete and one Failed Job",
        TICK,
        || (jobs(&c, "hist") == ["hist-3", "hist-5"]).then_some(()),
    );
    let deleted = events(&c, "hist", "SuccessfulDelete");
    for gone in ["hist-1", "hist-2", "hist-4"] {
        assert!(
            deleted.contains(&format!("Deleted job {gone}")),
            "{deleted:?}"
        );
    }
    wait_until(&c, "lastSuccessfulTime", TICK, || {
        (field(&c, "cronjob/hist", "{.status.lastSuccessfulTime}") == "2026-01-01T00:03:30Z")
            .then_some(())
    });

    // More than 100 missed start times: only the latest runs, with kube's warning. With
    // startingDeadlineSeconds the look back ends at the deadline, so the same gap is a
    // few missed times, the latest runs, and no warning. (kube's MissSchedule event
    // cannot happen: the deadline also bounds the times looked at, kubernetes#111223.)
    for cj in ["late", "late-bounded"] {
        let run = wait_until(&c, &format!("{cj}'s catch-up run"), TICK, || {
            scheduled(&c, cj).first().cloned()
        });
        let m = minute_of(&run);
        assert!(
            m >= now_minute() - 2,
            "{cj} started {run}, not the latest missed time"
        );
        assert!(scheduled(&c, cj).len() <= 2, "{:?}", scheduled(&c, cj));
        assert!(events(&c, cj, "SuccessfulCreate").contains(&format!("Created job {run}")));
        let want = "Warning too many missed start times. Set or decrease .spec.startingDeadlineSeconds or check clock skew";
        if cj == "late" {
            wait_until(&c, "TooManyMissedTimes", TICK, || {
                (typed_events(&c, cj, "TooManyMissedTimes") == [want]).then_some(())
            });
        } else {
            // Recorded before the Job is created, had it been.
            assert_eq!(
                typed_events(&c, cj, "TooManyMissedTimes"),
                Vec::<String>::new()
            );
        }
    }

    // First minute boundary: one Job per CronJob, named by the scheduled minute, with
    // the scheduled time annotated and listed as active. (Each CronJob's own minute:
    // their creations may straddle a boundary.)
    let first = |cj: &str| {
        wait_until(&c, &format!("{cj}'s first scheduled Job"), TICK, || {
            scheduled(&c, cj).first().map(|j| minute_of(j))
        })
    };
    let m_every = first("every");
    let m_forbid = first("forbid");
    let m_replace = first("replace");
    first("every-old");
    let at = |m: i64| {
        k8s_openapi::jiff::Timestamp::from_second(m * 60)
            .expect("time")
            .to_string()
    };
    let job = format!("every-{m_every}");
    assert_eq!(
        field(
            &c,
            &format!("job/{job}"),
            "{.metadata.annotations.batch\\.kubernetes\\.io/cronjob-scheduled-timestamp} {.metadata.ownerReferences[0].name} {.metadata.ownerReferences[0].controller}"
        ),
        format!("{} every true", at(m_every))
    );
    wait_until(&c, "active and lastScheduleTime", TICK, || {
        let got = field(
            &c,
            "cronjob/every",
            "{.status.active[0].name} {.status.lastScheduleTime}",
        );
        (got == format!("{job} {}", at(m_every))).then_some(())
    });
    assert!(events(&c, "every", "SuccessfulCreate").contains(&format!("Created job {job}")));
    // `get cronjobs` as kubectl users know it, from both kubectls.
    for k in kubectls() {
        let table = c.ok(k, &["get", "cronjobs", "forbid"]);
        let mut lines = table.lines();
        let head: Vec<&str> = lines.next().unwrap_or("").split_whitespace().collect();
        assert_eq!(
            head,
            ["NAME", "SCHEDULE", "TIMEZONE", "SUSPEND", "ACTIVE", "LAST", "SCHEDULE", "AGE"],
            "{k}: {table}"
        );
        let row: Vec<&str> = lines.next().unwrap_or("").split_whitespace().collect();
        assert_eq!(
            &row[..8],
            ["forbid", "*", "*", "*", "*", "*", "<none>", "False"],
            "{k}: {table}"
        );
    }
    wait_until(&c, "ACTIVE column", TICK, || {
        let row = c.ok(K, &["get", "cronjob", "forbid", "--no-headers"]);
        (row.split_whitespace().nth(8) == Some("1")).then_some(())
    });

    // A Job that finishes leaves `active`, and its completion is the last success.
    finish(&c, &job, "Complete", &at(m_every), &at(m_every));
    wait_until(&c, "SawCompletedJob", TICK, || {
        events(&c, "every", "SawCompletedJob")
            .contains(&format!("Saw completed job: {job}, condition: Complete"))
            .then_some(())
    });
    wait_until(&c, "the finished Job left active", TICK, || {
        let active = field(&c, "cronjob/every", "{.status.active[*].name}");
        let success = field(&c, "cronjob/every", "{.status.lastSuccessfulTime}");
        (!active.contains(&job) && success == at(m_every)).then_some(())
    });

    // Second minute boundary. Forbid: the first run is still active, so no new Job.
    wait_until(&c, "JobAlreadyActive", TICK, || {
        events(&c, "forbid", "JobAlreadyActive")
            .iter()
            .any(|m| m == "Not starting job because prior execution is running and concurrency policy is Forbid")
            .then_some(())
    });
    assert_eq!(scheduled(&c, "forbid"), [format!("forbid-{m_forbid}")]);
    // Replace: the running Job is deleted and the next one started.
    let next = format!("replace-{}", m_replace + 1);
    wait_until(&c, "replaced", TICK, || {
        (scheduled(&c, "replace") == [next.clone()]).then_some(())
    });
    assert!(events(&c, "replace", "SuccessfulDelete")
        .contains(&format!("Deleted job replace-{m_replace}")));
    wait_until(&c, "replace's active", TICK, || {
        (field(&c, "cronjob/replace", "{.status.active[*].name}") == next).then_some(())
    });
    // Allow: the next run, beside the first and the manual ones.
    let second = format!("every-{}", m_every + 1);
    wait_until(&c, "second run", TICK, || {
        jobs(&c, "every").contains(&second).then_some(())
    });
    let every = jobs(&c, "every");
    assert_eq!(&every[..2], [job.clone(), second], "{every:?}");
    assert!(every.contains(&"manual-new".to_string()) && every.contains(&"manual-old".to_string()));

    // A restart neither skips nor doubles a run: the server is down across the next
    // boundary, and on its return the missed run starts, once.
    let mut c = c;
    c.stop();
    let missed = m_every + 2;
    let deadline = Instant::now() + TICK;
    while now_minute() < missed {
        assert!(
            Instant::now() < deadline,
            "the clock never reached minute {missed}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    c.launch();
    let third = format!("every-{missed}");
    wait_until(&c, "the run missed while down", TICK, || {
        scheduled(&c, "every").contains(&third).then_some(())
    });
    let runs = scheduled(&c, "every");
    assert_eq!(
        &runs[..3],
        [job, format!("every-{}", m_every + 1), third],
        "{runs:?}"
    );
}
