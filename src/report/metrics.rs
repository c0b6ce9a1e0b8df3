//! Prometheus metrics for `GET /metrics`, in the text exposition format.
//!
//! Counters and histograms live in memory for the life of the process (Prometheus expects
//! them to reset on restart); what is deployed now is read from the state at scrape time.
//! A handful of series do not justify a metrics library.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::time::Duration;

use crate::store::{Hold, Pause};
use crate::util::lock;

/// Upper bounds (seconds) for rollout and step durations.
const BUCKETS: [f64; 12] = [
    0.1, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0,
];

type Labels = Vec<(&'static str, String)>;

#[derive(Default)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    sum: f64,
    count: u64,
}

impl Histogram {
    fn observe(&mut self, seconds: f64) {
        for (i, bound) in BUCKETS.iter().enumerate() {
            if seconds <= *bound {
                self.counts[i] += 1;
            }
        }
        self.sum += seconds;
        self.count += 1;
    }
}

#[derive(Default)]
pub(crate) struct Metrics {
    deploys: Mutex<BTreeMap<Labels, u64>>,
    rollout_seconds: Mutex<BTreeMap<Labels, Histogram>>,
    step_seconds: Mutex<BTreeMap<Labels, Histogram>>,
    deliveries: Mutex<BTreeMap<Labels, u64>>,
    poll_errors: Mutex<BTreeMap<Labels, u64>>,
    in_progress: Mutex<BTreeMap<Labels, i64>>,
}

impl Metrics {
    pub(crate) fn rollout_started(&self, service: &str) {
        *lock(&self.in_progress)
            .entry(vec![("service", service.to_string())])
            .or_default() = 1;
    }

    pub(crate) fn rollout_finished(
        &self,
        service: &str,
        environment: &str,
        outcome: &str,
        took: Duration,
    ) {
        *lock(&self.in_progress)
            .entry(vec![("service", service.to_string())])
            .or_default() = 0;
        *lock(&self.deploys)
            .entry(vec![
                ("service", service.to_string()),
                ("environment", environment.to_string()),
                ("outcome", outcome.to_string()),
            ])
            .or_default() += 1;
        lock(&self.rollout_seconds)
            .entry(vec![
                ("service", service.to_string()),
                ("outcome", outcome.to_string()),
            ])
            .or_default()
            .observe(took.as_secs_f64());
    }

    pub(crate) fn step(&self, service: &str, step: &str, took: Duration) {
        lock(&self.step_seconds)
            .entry(vec![
                ("service", service.to_string()),
                ("step", step.to_string()),
            ])
            .or_default()
            .observe(took.as_secs_f64());
    }

    pub(crate) fn delivery(&self, event: &str, result: &str) {
        *lock(&self.deliveries)
            .entry(vec![
                ("event", event.to_string()),
                ("result", result.to_string()),
            ])
            .or_default() += 1;
    }

    pub(crate) fn poll_error(&self, service: &str) {
        *lock(&self.poll_errors)
            .entry(vec![("service", service.to_string())])
            .or_default() += 1;
    }

    /// The exposition text. `deployed` is (service, environment, image, tag, digest) of
    /// what each service runs, for the info metric; `restrained`, per service, a digest
    /// held back and a pause of automation.
    pub(crate) fn render(
        &self,
        version: &str,
        uptime: Duration,
        deployed: &[[&str; 5]],
        restrained: &[(&str, Option<&Hold>, Option<&Pause>)],
    ) -> String {
        let mut out = String::new();
        header(&mut out, "hoist_build_info", "gauge", "hoist's version.");
        let _ = writeln!(out, "hoist_build_info{{version=\"{}\"}} 1", escape(version));
        header(
            &mut out,
            "hoist_uptime_seconds",
            "gauge",
            "Seconds since hoist serve started.",
        );
        let _ = writeln!(out, "hoist_uptime_seconds {:.3}", uptime.as_secs_f64());

        header(
            &mut out,
            "hoist_deployed_info",
            "gauge",
            "The digest each service runs, as hoist last recorded it.",
        );
        for [service, environment, image, tag, digest] in deployed {
            let _ = writeln!(
                out,
                "hoist_deployed_info{{service=\"{}\",environment=\"{}\",image=\"{}\",tag=\"{}\",digest=\"{}\"}} 1",
                escape(service),
                escape(environment),
                escape(image),
                escape(tag),
                escape(digest)
            );
        }
        restraints(&mut out, restrained);
        counter(
            &mut out,
            "hoist_deploys_total",
            "Rollouts by service, environment and outcome.",
            &lock(&self.deploys),
        );
        histogram(
            &mut out,
            "hoist_rollout_duration_seconds",
            "How long rollouts took.",
            &lock(&self.rollout_seconds),
        );
        histogram(
            &mut out,
            "hoist_step_duration_seconds",
            "How long each rollout step took.",
            &lock(&self.step_seconds),
        );
        counter(
            &mut out,
            "hoist_webhook_deliveries_total",
            "GitHub webhook deliveries by event and result.",
            &lock(&self.deliveries),
        );
        counter(
            &mut out,
            "hoist_poll_errors_total",
            "Failed registry polls by service.",
            &lock(&self.poll_errors),
        );
        header(
            &mut out,
            "hoist_rollout_in_progress",
            "gauge",
            "1 while a rollout of the service runs.",
        );
        for (labels, value) in lock(&self.in_progress).iter() {
            let _ = writeln!(
                out,
                "hoist_rollout_in_progress{} {value}",
                format_labels(labels, None)
            );
        }
        out
    }
}

/// Held-back digests and paused automation: since when (Unix time), with why in labels.
fn restraints(out: &mut String, restrained: &[(&str, Option<&Hold>, Option<&Pause>)]) {
    let seconds = |ms: i64| ms as f64 / 1000.0;
    header(
        out,
        "hoist_held_back_since_seconds",
        "gauge",
        "Since when (Unix time) automation holds back a digest whose rollout failed by its own fault, with the step that failed.",
    );
    for (service, hold, _) in restrained {
        if let Some(h) = hold {
            let _ = writeln!(
                out,
                "hoist_held_back_since_seconds{{service=\"{}\",digest=\"{}\",step=\"{}\"}} {:.3}",
                escape(service),
                escape(&h.digest),
                escape(h.step.as_deref().unwrap_or("")),
                seconds(h.since)
            );
        }
    }
    header(
        out,
        "hoist_automation_paused_since_seconds",
        "gauge",
        "Since when (Unix time) an operator has paused automation of the service, by whom, and until what (resume, or the track moving).",
    );
    for (service, _, pause) in restrained {
        if let Some(p) = pause {
            let _ = writeln!(
                out,
                "hoist_automation_paused_since_seconds{{service=\"{}\",by=\"{}\",until=\"{}\"}} {:.3}",
                escape(service),
                escape(&p.by),
                if p.until_resumed {
                    "resume"
                } else {
                    "track_moves"
                },
                seconds(p.since)
            );
        }
    }
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

fn counter(out: &mut String, name: &str, help: &str, series: &BTreeMap<Labels, u64>) {
    header(out, name, "counter", help);
    for (labels, value) in series {
        let _ = writeln!(out, "{name}{} {value}", format_labels(labels, None));
    }
}

fn histogram(out: &mut String, name: &str, help: &str, series: &BTreeMap<Labels, Histogram>) {
    header(out, name, "histogram", help);
    for (labels, h) in series {
        for (i, bound) in BUCKETS.iter().enumerate() {
            let _ = writeln!(
                out,
                "{name}_bucket{} {}",
                format_labels(labels, Some(&bound.to_string())),
                h.counts[i]
            );
        }
        let _ = writeln!(
            out,
            "{name}_bucket{} {}",
            format_labels(labels, Some("+Inf")),
            h.count
        );
        let _ = writeln!(
            out,
            "{name}_sum{} {:.6}",
            format_labels(labels, None),
            h.sum
        );
        let _ = writeln!(
            out,
            "{name}_count{} {}",
            format_labels(labels, None),
            h.count
        );
    }
}

fn format_labels(labels: &Labels, le: Option<&str>) -> String {
    let mut parts: Vec<String> = labels
        .iter()
        .map(|(k, v)| format!("{k}=\"{}\"", escape(v)))
        .collect();
    if let Some(le) = le {
        parts.push(format!("le=\"{le}\""));
    }
    if parts.is_empty() {
        String::new()
    } else {
        format!("{{{}}}", parts.join(","))
    }
}

/// Label values escape backslash, double quote and newline.
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_the_text_format() {
        let m = Metrics::default();
        m.rollout_started("web");
        m.step("web", "health", Duration::from_millis(1500));
        m.rollout_finished("web", "stage", "succeeded", Duration::from_secs(7));
        m.delivery("package", "queued");
        m.poll_error("web");
        let hold = Hold {
            digest: "sha256:bad".into(),
            step: Some("health".into()),
            reason: "not healthy".into(),
            since: 1_700_000_000_500,
            deploy_id: Some(3),
        };
        let pause = Pause {
            by: "api rollback".into(),
            reason: "rolled back by an operator".into(),
            since: 1_700_000_001_000,
            track_digest: None,
            until_resumed: false,
        };
        let text = m.render(
            "0.1.0",
            Duration::from_secs(3),
            &[["web", "stage", "r/web", "v2", "sha256:ab"]],
            &[("web", Some(&hold), Some(&pause)), ("api", None, None)],
        );
        for line in [
            "hoist_deploys_total{service=\"web\",environment=\"stage\",outcome=\"succeeded\"} 1",
            "hoist_rollout_duration_seconds_bucket{service=\"web\",outcome=\"succeeded\",le=\"5\"} 0",
            "hoist_rollout_duration_seconds_bucket{service=\"web\",outcome=\"succeeded\",le=\"10\"} 1",
            "hoist_rollout_duration_seconds_count{service=\"web\",outcome=\"succeeded\"} 1",
            "hoist_step_duration_seconds_bucket{service=\"web\",step=\"health\",le=\"2\"} 1",
            "hoist_webhook_deliveries_total{event=\"package\",result=\"queued\"} 1",
            "hoist_poll_errors_total{service=\"web\"} 1",
            "hoist_rollout_in_progress{service=\"web\"} 0",
            "hoist_deployed_info{service=\"web\",environment=\"stage\",image=\"r/web\",tag=\"v2\",digest=\"sha256:ab\"} 1",
            "# TYPE hoist_rollout_duration_seconds histogram",
            "hoist_held_back_since_seconds{service=\"web\",digest=\"sha256:bad\",step=\"health\"} 1700000000.500",
            "hoist_automation_paused_since_seconds{service=\"web\",by=\"api rollback\",until=\"track_moves\"} 1700000001.000",
        ] {
            assert!(text.contains(line), "missing {line}\n{text}");
        }
        assert!(!text.contains("service=\"api\",digest"), "{text}");
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
