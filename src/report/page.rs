//! The `/status` page for browsers: one card per environment, a row per service, colours
//! for the state, relative times, refreshed every 5 s by the browser. Server-rendered HTML
//! with inline CSS: no JavaScript, no build step.

use std::fmt::Write as _;

use crate::image::short_hex;
use crate::report::status::{Document, LastRollout, ServiceView, State};

pub(crate) fn render(doc: &Document) -> String {
    let now = doc.generated_at;
    let mut environments: Vec<&str> = Vec::new();
    for s in &doc.services {
        if !environments.contains(&s.environment.as_str()) {
            environments.push(&s.environment);
        }
    }
    let mut body = String::new();
    for env in environments {
        let _ = write!(body, "<section class=\"env\"><h2>{}</h2>", escape(env));
        for s in doc.services.iter().filter(|s| s.environment == env) {
            service(&mut body, s, now);
        }
        body.push_str("</section>");
    }
    let uptime = doc
        .uptime_s
        .map(|u| format!(" · up {}", duration(u.saturating_mul(1000))))
        .unwrap_or_default();
    format!(
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="refresh" content="5">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>hoist status</title>
<style>{STYLE}</style></head>
<body><header><h1>hoist</h1><span class="meta">v{version}{uptime} · refreshed every 5 s</span></header>
<main>{body}</main></body></html>
"#,
        version = escape(&doc.version),
    )
}

/// One card: the head, then a row per fact known about the service.
fn service(out: &mut String, s: &ServiceView, now: i64) {
    head(out, s);
    deployment_rows(out, s, now);
    automation_rows(out, s, now);
    if let Some(r) = &s.last_rollout {
        last_rollout_row(out, r, now);
    }
    if let Some(from) = &s.promote_from {
        row(out, "promoted from", &escape(from));
    }
    polling_rows(out, s, now);
    out.push_str("</dl></article>");
}

/// The name, the state badge and the health.
fn head(out: &mut String, s: &ServiceView) {
    let state = s.state.as_str();
    let state_text = match (&s.state, &s.step) {
        (State::Rolling, Some(step)) => format!("rolling · {step}"),
        _ => state.to_string(),
    };
    let health_class = match s.health.as_str() {
        "healthy" | "running" => "ok",
        "starting" => "warn",
        _ => "bad",
    };
    let _ = write!(
        out,
        "<article class=\"service {state}\"><div class=\"head\"><h3>{name}</h3>\
         <span class=\"badge {state}\">{state_text}</span>\
         <span class=\"health {health_class}\">{health}</span></div><dl>",
        name = escape(&s.name),
        state_text = escape(&state_text),
        health = escape(&s.health),
    );
}

/// Where it is served, its image, what hoist deployed and what Docker runs.
fn deployment_rows(out: &mut String, s: &ServiceView, now: i64) {
    row(
        out,
        "host",
        &format!("<a href=\"https://{0}\">{0}</a>", escape(&s.host)),
    );
    row(
        out,
        "image",
        &format!(
            "{} <span class=\"dim\">tracks {}</span>",
            escape(&s.image),
            escape(&s.track)
        ),
    );
    let deployed = match (&s.digest, &s.tag) {
        (Some(d), tag) => format!(
            "<code>{}</code>{}",
            short(d),
            tag.as_ref()
                .map(|t| format!(" ({})", escape(t)))
                .unwrap_or_default()
        ),
        (None, _) => "<span class=\"dim\">nothing recorded yet</span>".into(),
    };
    row(out, "deployed", &deployed);
    if let Some(at) = s.deployed_at {
        let by = s
            .deployed_by
            .as_ref()
            .map(|b| format!(" by {}", escape(b)))
            .unwrap_or_default();
        row(out, "since", &format!("{}{by}", relative(at, now)));
    }
    if s.running_digest.is_some() && s.running_digest != s.digest {
        let note = if s.digest.is_some() {
            " <span class=\"dim\">(not what hoist recorded)</span>"
        } else {
            ""
        };
        row(
            out,
            "running",
            &format!(
                "<code>{}</code>{note}",
                short(s.running_digest.as_deref().unwrap_or_default())
            ),
        );
    }
    if let Some(c) = &s.container {
        row(out, "container", &escape(c));
    }
    if let Some(p) = &s.previous_digest {
        row(out, "previous", &format!("<code>{}</code>", short(p)));
    }
}

/// A digest held back beside what serves, and paused automation: what, why, since when.
fn automation_rows(out: &mut String, s: &ServiceView, now: i64) {
    if let Some(h) = &s.held_back {
        row(
            out,
            "held back",
            &format!(
                "<code>{}</code> {} · failed{}: {} <span class=\"dim\">(automation skips it until the track moves on)</span>",
                short(&h.digest),
                relative(h.since, now),
                h.step
                    .as_deref()
                    .map(|st| format!(" at {}", escape(st)))
                    .unwrap_or_default(),
                escape(&h.reason)
            ),
        );
    }
    if let Some(p) = &s.paused {
        let until = if p.until_resumed {
            "until resumed"
        } else {
            "until the track moves or it is resumed"
        };
        row(
            out,
            "automation",
            &format!(
                "paused {} by {}: {} <span class=\"dim\">({until})</span>",
                relative(p.since, now),
                escape(&p.by),
                escape(&p.reason)
            ),
        );
    }
}

fn last_rollout_row(out: &mut String, r: &LastRollout, now: i64) {
    let when = r.finished_at.unwrap_or(r.started_at);
    let mut text = format!(
        "<span class=\"outcome {0}\">#{1} {0}</span> {2} · {3}",
        r.outcome.as_str(),
        r.id,
        relative(when, now),
        escape(&r.trigger)
    );
    if let Some(e) = &r.error {
        let _ = write!(text, "<pre>{}</pre>", escape(e));
    }
    row(out, "last rollout", &text);
}

/// The registry polling and the watch window, when there are.
fn polling_rows(out: &mut String, s: &ServiceView, now: i64) {
    if let Some(interval) = s.poll_interval_s {
        let mut text = format!("every {}", duration(interval.saturating_mul(1000)));
        if let Some(last) = s.last_poll {
            let _ = write!(text, " · last {}", relative(last, now));
        }
        if let Some(next) = s.next_poll {
            let _ = write!(text, " · next {}", relative(next, now));
        }
        if let Some(e) = &s.last_poll_error {
            let _ = write!(text, "<pre class=\"bad\">{}</pre>", escape(e));
        }
        row(out, "polling", &text);
    }
    if let Some(until) = s.watching_until {
        row(
            out,
            "watching",
            &format!(
                "the registry for a new image until {}",
                relative(until, now)
            ),
        );
    }
}

fn row(out: &mut String, key: &str, value_html: &str) {
    let _ = write!(out, "<dt>{key}</dt><dd>{value_html}</dd>");
}

fn short(digest: &str) -> String {
    escape(short_hex(digest))
}

/// "3 min ago", "in 40 s".
pub(crate) fn relative(at_ms: i64, now_ms: i64) -> String {
    let delta = now_ms - at_ms;
    let text = duration(delta.unsigned_abs());
    if delta >= 0 {
        format!("{text} ago")
    } else {
        format!("in {text}")
    }
}

fn duration(ms: u64) -> String {
    let s = ms / 1000;
    match s {
        0..=59 => format!("{s} s"),
        60..=3599 => format!("{} min", s / 60),
        3600..=172_799 => format!("{} h", s / 3600),
        _ => format!("{} days", s / 86_400),
    }
}

fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

const STYLE: &str = "
:root{--ok:#1a7f37;--warn:#9a6700;--bad:#cf222e;--info:#0969da;--dim:#656d76;--line:#d0d7de}
*{box-sizing:border-box}body{margin:0;font:14px/1.45 system-ui,-apple-system,Segoe UI,sans-serif;color:#1f2328;background:#f6f8fa}
header{display:flex;align-items:baseline;gap:12px;padding:14px 24px;background:#fff;border-bottom:1px solid var(--line)}
h1{margin:0;font-size:20px}.meta,.dim{color:var(--dim)}
main{display:flex;flex-wrap:wrap;gap:20px;padding:20px 24px;align-items:flex-start}
.env{flex:1 1 420px;min-width:320px}.env h2{margin:0 0 10px;font-size:15px;text-transform:uppercase;letter-spacing:.06em;color:var(--dim)}
.service{background:#fff;border:1px solid var(--line);border-left:5px solid var(--ok);border-radius:6px;padding:12px 16px;margin-bottom:14px}
.service.queued{border-left-color:var(--info)}.service.rolling{border-left-color:var(--warn)}.service.failed{border-left-color:var(--bad)}.service.paused{border-left-color:var(--dim)}
.head{display:flex;align-items:center;gap:10px;flex-wrap:wrap}.head h3{margin:0;font-size:16px;flex:1}
.badge{padding:1px 8px;border-radius:10px;font-size:12px;color:#fff;background:var(--ok)}
.badge.queued{background:var(--info)}.badge.rolling{background:var(--warn)}.badge.failed{background:var(--bad)}.badge.paused{background:var(--dim)}
.health::before{content:'●';margin-right:4px}.health.ok{color:var(--ok)}.health.warn{color:var(--warn)}.health.bad{color:var(--bad)}
dl{display:grid;grid-template-columns:max-content 1fr;gap:2px 14px;margin:10px 0 0}dt{color:var(--dim)}dd{margin:0;overflow-wrap:anywhere}
code{font:12px ui-monospace,SFMono-Regular,Menlo,monospace;background:#eff1f3;padding:1px 4px;border-radius:4px}
pre{white-space:pre-wrap;font:12px ui-monospace,monospace;background:#fff1f0;border-radius:4px;padding:6px;margin:4px 0 0}
.outcome.succeeded,.outcome.noop{color:var(--ok)}.outcome.paused,.outcome.resumed{color:var(--dim)}.outcome.failed,.outcome.rolled_back,.outcome.interrupted{color:var(--bad)}.outcome.running{color:var(--warn)}
a{color:var(--info)}
";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_times() {
        assert_eq!(relative(0, 5_000), "5 s ago");
        assert_eq!(relative(0, 180_000), "3 min ago");
        assert_eq!(relative(10_000, 0), "in 10 s");
        assert_eq!(relative(0, 3 * 86_400_000), "3 days ago");
    }

    #[test]
    fn escapes_everything_from_outside() {
        assert_eq!(escape("<script>\"&'"), "&lt;script&gt;&quot;&amp;&#39;");
    }

    #[test]
    fn page_is_byte_identical_to_the_pinned_one() {
        assert_eq!(
            render(&crate::report::example::example()),
            include_str!("testdata/status.html")
        );
    }
}
