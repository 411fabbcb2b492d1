//! The Job and CronJob tables.

use chrono::{DateTime, Utc};
use k8s_openapi::api::batch;

use super::apps::{CONTAINERS, IMAGES, SELECTOR};
use super::format::{containers, format_label_selector, non_empty_or};
use super::obj::{human_duration, Obj};
use super::{col, Column, Printer, AGE, NAME, NONE};

pub(super) static JOB: Printer = Printer::new(&[
    NAME,
    col("Status", "string", "Status of the job.", |o, _| {
        job_status(o).into()
    }),
    col(
        "Completions",
        "string",
        "The number of pods which reached phase Succeeded.",
        |o, _| completions(o).into(),
    ),
    col(
        "Duration",
        "string",
        "Time required to complete the job.",
        |o, now| duration(o, now).into(),
    ),
    AGE,
    CONTAINERS,
    IMAGES,
    SELECTOR,
]);

/// The job template's pod template, where a CronJob's CONTAINERS and IMAGES come from.
fn job_pod_spec(o: Obj) -> Obj {
    o.at(&["spec", "jobTemplate", "spec", "template", "spec"])
}

pub(super) static CRON_JOB: Printer = Printer::new(&[
    NAME,
    col(
        "Schedule",
        "string",
        "The schedule in Cron format, see https://en.wikipedia.org/wiki/Cron.",
        |o, _| o.str_(&["spec", "schedule"]).into(),
    ),
    col(
        "Timezone",
        "string",
        "The time zone name for the given schedule.",
        |o, _| non_empty_or(o.str_(&["spec", "timeZone"]), NONE).into(),
    ),
    // Declared boolean by the apiserver, which nevertheless sends "True"/"False"/"<unset>".
    col(
        "Suspend",
        "boolean",
        "This flag tells the controller to suspend subsequent executions.",
        |o, _| {
            match o.bool_(&["spec", "suspend"]) {
                Some(true) => "True",
                Some(false) => "False",
                None => "<unset>",
            }
            .into()
        },
    ),
    col(
        "Active",
        "integer",
        "A list of pointers to currently running jobs.",
        |o, _| o.list(&["status", "active"]).len().into(),
    ),
    col(
        "Last Schedule",
        "string",
        "Information when was the last time the job was successfully scheduled.",
        |o, now| {
            if o.str_(&["status", "lastScheduleTime"]).is_empty() {
                NONE.into()
            } else {
                o.since(&["status", "lastScheduleTime"], now).into()
            }
        },
    ),
    AGE,
    Column {
        cell: |o, _| containers(job_pod_spec(o)).0.into(),
        ..CONTAINERS
    },
    Column {
        cell: |o, _| containers(job_pod_spec(o)).1.into(),
        ..IMAGES
    },
    Column {
        cell: |o, _| {
            format_label_selector(o.at(&["spec", "jobTemplate", "spec", "selector"])).into()
        },
        ..SELECTOR
    },
]);

printed! {
    batch::v1::Job => JOB,
    batch::v1::CronJob => CRON_JOB,
}

/// Terminal conditions outrank deletion, which outranks the transient ones.
fn job_status(o: Obj) -> &'static str {
    if o.condition_true("Complete") {
        "Complete"
    } else if o.condition_true("Failed") {
        "Failed"
    } else if o.has(&["metadata", "deletionTimestamp"]) {
        "Terminating"
    } else if o.condition_true("Suspended") {
        "Suspended"
    } else if o.condition_true("FailureTarget") {
        "FailureTarget"
    } else if o.condition_true("SuccessCriteriaMet") {
        "SuccessCriteriaMet"
    } else {
        "Running"
    }
}

fn completions(o: Obj) -> String {
    let succeeded = o.int(&["status", "succeeded"]);
    if o.has(&["spec", "completions"]) {
        format!("{succeeded}/{}", o.int(&["spec", "completions"]))
    } else {
        match o.int(&["spec", "parallelism"]) {
            p if p > 1 => format!("{succeeded}/1 of {p}"),
            _ => format!("{succeeded}/1"),
        }
    }
}

fn duration(o: Obj, now: DateTime<Utc>) -> String {
    match (
        o.time(&["status", "startTime"]),
        o.time(&["status", "completionTime"]),
    ) {
        (None, _) => String::new(),
        (Some(start), None) => human_duration(now - start),
        (Some(start), Some(end)) => human_duration(end - start),
    }
}
