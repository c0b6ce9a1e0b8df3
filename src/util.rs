//! Small helpers every layer may use.

/// Locks `m`, carrying on past a poisoned lock: the data behind hoist's mutexes (counters,
/// claimed ids, status) stays usable when a thread panicked while holding it.
pub(crate) fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The one way hoist builds an HTTP client: `reqwest::Client::new()` panics when the TLS
/// backend cannot be set up (clippy.toml bans it), so this returns why instead, with
/// reqwest's causes, for the caller to report where a request would have failed.
pub(crate) fn http_client(builder: reqwest::ClientBuilder) -> Result<reqwest::Client, String> {
    builder.build().map_err(|e| {
        let causes = std::iter::successors(Some(&e as &dyn std::error::Error), |e| e.source());
        let causes: Vec<String> = causes.map(ToString::to_string).collect();
        format!("cannot set up an HTTP client: {}", causes.join(": "))
    })
}

/// The `rel="next"` URL of an HTTP `Link` header (RFC 8288), as the registry pages tags
/// and GitHub pages webhook deliveries: `<URL>; rel="next", <URL>; rel="first"`.
pub(crate) fn next_link(headers: &reqwest::header::HeaderMap) -> Option<String> {
    let link = headers.get(reqwest::header::LINK)?.to_str().ok()?;
    link.split(',').find_map(|part| {
        let (url, params) = part.split_once(';')?;
        params.contains("rel=\"next\"").then(|| {
            url.trim()
                .trim_start_matches('<')
                .trim_end_matches('>')
                .to_string()
        })
    })
}

/// How many bytes of an outside value a log line, the journal or `/status` shows by default.
pub(crate) const SHOWN: usize = 200;

/// An outside value made safe to show: control characters, backslashes and other
/// characters a terminal or a log reader could take for layout (`\n`, `\r`, `\x1b`, U+2028,
/// bidi overrides) are written as Rust escapes (`\n`, `\u{1b}`), so a value can never start
/// a line of its own or colour one; the output stops after `max` bytes with `…`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Escaped<'a> {
    text: &'a str,
    max: usize,
}

/// `text` escaped and capped at [`SHOWN`] bytes, for `field = %escaped(x)` in a log line.
pub(crate) fn escaped(text: &str) -> Escaped<'_> {
    Escaped { text, max: SHOWN }
}

/// `text` escaped and capped at `max` bytes, as a `String` to store or show.
pub(crate) fn escape(text: &str, max: usize) -> String {
    Escaped { text, max }.to_string()
}

impl std::fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use std::fmt::Write as _;
        let mut written = 0;
        let mut piece = String::new();
        for c in self.text.chars() {
            piece.clear();
            // Quotes are harmless in a log line; everything escape_debug would escape
            // besides them is not.
            if c == '"' || c == '\'' {
                piece.push(c);
            } else {
                piece.extend(c.escape_debug());
            }
            if written + piece.len() > self.max {
                return f.write_char('…');
            }
            written += piece.len();
            f.write_str(&piece)?;
        }
        Ok(())
    }
}

/// Keeps log lines about refused requests to `per_second` a second per kind, so a flood
/// of bad requests cannot flood the log; the next line let through says how many were
/// left out since the last one.
#[derive(Debug)]
pub(crate) struct Throttle {
    per_second: u32,
    kinds: std::sync::Mutex<std::collections::HashMap<&'static str, Window>>,
}

#[derive(Debug)]
struct Window {
    start: std::time::Instant,
    logged: u32,
    suppressed: u64,
}

impl Throttle {
    pub(crate) fn new(per_second: u32) -> Throttle {
        Throttle {
            per_second,
            kinds: std::sync::Mutex::default(),
        }
    }

    /// `Some(n)` when a line of `kind` may be logged now, `n` being how many were left
    /// out before it; `None` when this one is to be left out.
    pub(crate) fn allow(&self, kind: &'static str) -> Option<u64> {
        self.allow_at(kind, std::time::Instant::now())
    }

    fn allow_at(&self, kind: &'static str, now: std::time::Instant) -> Option<u64> {
        let mut kinds = lock(&self.kinds);
        let w = kinds.entry(kind).or_insert(Window {
            start: now,
            logged: 0,
            suppressed: 0,
        });
        if now.saturating_duration_since(w.start) >= std::time::Duration::from_secs(1) {
            w.start = now;
            w.logged = 0;
        }
        if w.logged < self.per_second {
            w.logged += 1;
            Some(std::mem::take(&mut w.suppressed))
        } else {
            w.suppressed += 1;
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;

    #[test]
    fn escaped_values_cannot_start_a_line_or_colour_one() {
        let forged =
            "web\n2026-12-06T10:00:00Z  INFO hoist::rollout: Deployed\x1b[31m\r\u{2028}\u{202e}\\";
        let shown = escaped(forged).to_string();
        assert!(!shown.chars().any(|c| c.is_control()), "{shown:?}");
        assert_eq!(
            shown,
            r"web\n2026-12-06T10:00:00Z  INFO hoist::rollout: Deployed\u{1b}[31m\r\u{2028}\u{202e}\\"
        );
        assert_eq!(
            escaped(r#"say "hi", it's"#).to_string(),
            r#"say "hi", it's"#
        );
        assert_eq!(escaped("größe").to_string(), "größe");
    }

    #[test]
    fn escaped_values_are_capped_with_an_ellipsis() {
        assert_eq!(escape("abcdef", 6), "abcdef");
        assert_eq!(escape("abcdefg", 6), "abcdef…");
        // An escape is never cut in half, nor a character.
        assert_eq!(escape("abcd\n", 5), "abcd…");
        assert_eq!(escape("abcdé", 5), "abcd…");
        let long = "\x1b".repeat(100_000);
        assert!(escaped(&long).to_string().len() <= SHOWN + '…'.len_utf8());
    }

    #[test]
    fn a_throttle_lets_n_a_second_through_and_counts_the_rest() {
        let t = Throttle::new(2);
        let t0 = Instant::now();
        assert_eq!(t.allow_at("a", t0), Some(0));
        assert_eq!(t.allow_at("a", t0), Some(0));
        assert_eq!(t.allow_at("a", t0), None);
        assert_eq!(t.allow_at("a", t0 + Duration::from_millis(900)), None);
        assert_eq!(t.allow_at("b", t0), Some(0), "kinds are counted apart");
        let later = t0 + Duration::from_secs(1);
        assert_eq!(t.allow_at("a", later), Some(2));
        assert_eq!(t.allow_at("a", later), Some(0));
    }
}
