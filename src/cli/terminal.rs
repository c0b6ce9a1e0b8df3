//! A rollout's steps drawn on a terminal as they happen.

use std::io::Write;
use std::sync::Mutex;
use std::time::Duration;

use crate::report::text::format_ms;
use crate::rollout::{Observer, Step};

/// Renders steps on a terminal: one line per step, a live line for long waits.
#[derive(Default)]
pub(super) struct Terminal {
    live: Mutex<bool>,
}

impl Terminal {
    fn line(&self, text: &str, live: bool) {
        let mut is_live = crate::util::lock(&self.live);
        let mut err = std::io::stderr().lock();
        if *is_live {
            let _ = write!(err, "\r\x1b[2K");
        }
        let _ = if live {
            write!(err, "{text}")
        } else {
            writeln!(err, "{text}")
        };
        let _ = err.flush();
        *is_live = live;
    }
}

impl Observer for Terminal {
    fn started(&self, step: Step) {
        self.line(&format!("  {step:<8} …"), true);
    }
    fn progress(&self, step: Step, message: &str) {
        let message: String = message.chars().take(100).collect();
        self.line(&format!("  {step:<8} … {message}"), true);
    }
    fn finished(&self, step: Step, elapsed: Duration, result: Result<&str, &str>) {
        let (mark, text) = match result {
            Ok(t) => ("✓", t),
            Err(t) => ("✗", t),
        };
        let ms = i64::try_from(elapsed.as_millis()).unwrap_or(i64::MAX);
        self.line(
            &format!("{mark} {step:<8} {:>6}  {text}", format_ms(ms)),
            false,
        );
    }
}
