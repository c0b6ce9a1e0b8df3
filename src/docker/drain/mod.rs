//! The drain cord: how hoist takes a container out of Traefik's pool before stopping it,
//! without needing anything from the image.
//!
//! Traefik routes a container that has a Docker healthcheck only while it is `healthy`, and
//! re-reads containers on every `health_status` event. So every container hoist manages
//! gets a healthcheck that runs hoist's own statically linked binary, bind-mounted read-only
//! at `/hoist` from `<state.dir>/drain` (works in `FROM scratch` images: no shell, no curl):
//!
//! ```text
//! /hoist/hoist probe [--http PORT/PATH | --shell CMD | -- CMD ARGS...]
//! ```
//!
//! The probe fails as soon as a marker file `/hoist/cut/<container id>` exists ("the cord is
//! cut"); otherwise it checks the app (HTTP GET on `health_path`, or the image's own
//! HEALTHCHECK command), trying again for up to [`TOLERANCE`] when the app fails, so that a
//! hiccup of the app never fails a probe. Docker then needs only one failed probe
//! ([`RETRIES`]): to drain a container hoist writes its marker, the next probe (within the
//! service's `cord_interval`) fails at once, Docker marks the container unhealthy, Traefik
//! drops it, and only then is it stopped. Markers are named by container id, so a new
//! container is never born drained.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

use bollard::models::HealthConfig;

use crate::config::ServiceConfig;

/// Where the drain directory appears inside containers.
pub const MOUNT_POINT: &str = "/hoist";
/// How long the probe keeps trying an app that fails before it fails itself.
pub const TOLERANCE: Duration = Duration::from_secs(2);
/// Docker's limit on one probe: the tolerance and a last attempt's own time.
pub const TIMEOUT: Duration = Duration::from_secs(4);
/// Failed probes before Docker says unhealthy: one, since the probe itself tolerates the
/// app's hiccups and a cut cord must take effect at the next probe.
pub const RETRIES: i64 = 1;
/// How long each attempt at the app may take.
const ATTEMPT: Duration = Duration::from_millis(1500);
/// Between attempts at a failing app.
const RETRY_PAUSE: Duration = Duration::from_millis(250);

#[derive(Debug, thiserror::Error)]
#[error("drain directory {}: {action}: {source}", path.display())]
pub struct CordError {
    path: PathBuf,
    action: &'static str,
    source: std::io::Error,
}

/// The drain directory on the host.
#[derive(Debug, Clone)]
pub struct Cord {
    dir: PathBuf,
}

impl Cord {
    pub fn new(state_dir: &Path) -> Self {
        Cord {
            dir: state_dir.join("drain"),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn err(&self, action: &'static str, source: std::io::Error) -> CordError {
        CordError {
            path: self.dir.clone(),
            action,
            source,
        }
    }

    /// Makes sure the directory exists and holds a copy of the running hoist binary as the
    /// probe. The copy is replaced atomically when it differs, so a probe that runs at that
    /// moment sees either the old or the new binary, never half a file.
    pub fn prepare(&self) -> Result<(), CordError> {
        use std::os::unix::fs::PermissionsExt;
        if let Some(state_dir) = self.dir.parent() {
            std::fs::create_dir_all(state_dir).map_err(|e| self.err("create", e))?;
        }
        for dir in [self.dir.clone(), self.dir.join("cut")] {
            match std::fs::create_dir(&dir) {
                Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => {
                    return Err(self.err("create", e));
                }
                _ => {}
            }
            let opened = self.open_dir(&dir)?;
            if let Some(state_dir) = self.dir.parent() {
                crate::owner::like_dir(state_dir, &dir);
            }
            // On the open directory, not the path: nothing swapped in meanwhile is changed.
            opened
                .set_permissions(std::fs::Permissions::from_mode(0o755))
                .map_err(|e| self.err("set permissions", e))?;
        }
        let exe = std::env::current_exe().map_err(|e| self.err("find own binary", e))?;
        let probe = self.dir.join("hoist");
        if same_file(&exe, &probe) {
            return Ok(());
        }
        let tmp = self.dir.join(format!(".hoist.{}", std::process::id()));
        let _ = std::fs::remove_file(&tmp);
        // A hard link costs nothing; across filesystems, copy.
        if std::fs::hard_link(&exe, &tmp).is_err() {
            std::fs::copy(&exe, &tmp).map_err(|e| self.err("copy probe", e))?;
            std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755))
                .map_err(|e| self.err("set probe permissions", e))?;
        }
        // The probe keeps its owner: it may be a hard link to the installed binary.
        std::fs::rename(&tmp, &probe).map_err(|e| self.err("install probe", e))
    }

    /// Opens `dir` (the drain directory or its `cut`), refusing a symlink: root hoist would
    /// otherwise chmod and write into whatever it points at.
    fn open_dir(&self, dir: &Path) -> Result<std::fs::File, CordError> {
        use std::os::unix::fs::MetadataExt;
        let refuse = |what: &str| {
            self.err(
                "refused",
                std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    format!(
                        "{} is {what}, not a directory; hoist does not follow it (remove it and hoist creates the directory)",
                        dir.display()
                    ),
                ),
            )
        };
        let link = std::fs::symlink_metadata(dir).map_err(|e| self.err("inspect", e))?;
        if link.file_type().is_symlink() {
            return Err(refuse("a symlink"));
        }
        if !link.is_dir() {
            return Err(refuse("a file"));
        }
        let opened = std::fs::File::open(dir).map_err(|e| self.err("open", e))?;
        let meta = opened.metadata().map_err(|e| self.err("inspect", e))?;
        if (meta.dev(), meta.ino()) != (link.dev(), link.ino()) {
            return Err(refuse("replaced while hoist opened it"));
        }
        Ok(opened)
    }

    fn marker(&self, container_id: &str) -> PathBuf {
        self.dir.join("cut").join(container_id)
    }

    /// Cuts the cord: the container's probes fail from now on.
    pub fn cut(&self, container_id: &str) -> Result<(), CordError> {
        self.open_dir(&self.dir)?;
        self.open_dir(&self.dir.join("cut"))?;
        // A new file only: a marker already there (the cord is cut) is left as it is, and
        // a symlink planted at its name is not followed.
        let created = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(self.marker(container_id));
        match created {
            Ok(mut file) => file
                .write_all(b"drained by hoist\n")
                .map_err(|e| self.err("cut cord", e)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
            Err(e) => Err(self.err("cut cord", e)),
        }
    }

    /// Restores the cord (no-op when it was not cut).
    pub fn restore(&self, container_id: &str) -> Result<(), CordError> {
        match std::fs::remove_file(self.marker(container_id)) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(self.err("restore cord", e)),
        }
    }

    pub fn is_cut(&self, container_id: &str) -> bool {
        self.marker(container_id).exists()
    }

    /// Every cut-cord marker, one per container whose cord was cut (recovery drops those of
    /// containers that no longer exist).
    pub fn markers(&self) -> Vec<String> {
        std::fs::read_dir(self.dir.join("cut"))
            .map(|entries| {
                entries
                    .filter_map(|e| e.ok()?.file_name().into_string().ok())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The bind mount every managed container needs (`HostConfig.Binds` syntax).
    pub fn bind(&self) -> String {
        format!("{}:{MOUNT_POINT}:ro", self.dir.display())
    }
}

/// The same inode, or the same bytes.
fn same_file(a: &Path, b: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    let (Ok(ma), Ok(mb)) = (std::fs::metadata(a), std::fs::metadata(b)) else {
        return false;
    };
    if ma.dev() == mb.dev() && ma.ino() == mb.ino() {
        return true;
    }
    ma.len() == mb.len() && matches!((std::fs::read(a), std::fs::read(b)), (Ok(x), Ok(y)) if x == y)
}

/// The healthcheck hoist gives a service's containers. `image_check` is the image's own
/// HEALTHCHECK, used when the service has no `health_path`.
pub fn healthcheck(service: &ServiceConfig, image_check: Option<&HealthConfig>) -> HealthConfig {
    let mut test = vec![
        "CMD".to_string(),
        format!("{MOUNT_POINT}/hoist"),
        "probe".to_string(),
    ];
    if let Some(path) = &service.health_path {
        test.push("--http".into());
        test.push(format!("{}{path}", service.port));
    } else if let Some(image_test) = image_check.and_then(|h| h.test.as_ref()) {
        match image_test.split_first() {
            Some((kind, rest)) if kind == "CMD" && !rest.is_empty() => {
                test.push("--".into());
                test.extend(rest.iter().cloned());
            }
            Some((kind, rest)) if kind == "CMD-SHELL" && !rest.is_empty() => {
                test.push("--shell".into());
                test.push(rest.join(" "));
            }
            _ => {}
        }
    }
    HealthConfig {
        test: Some(test),
        interval: Some(nanos(service.cord_interval)),
        timeout: Some(nanos(TIMEOUT)),
        retries: Some(RETRIES),
        start_period: Some(nanos(service.health_timeout)),
        start_interval: None,
    }
}

/// Whether a container's healthcheck is hoist's probe (so cutting its cord will drain it).
pub fn is_fitted(check: Option<&HealthConfig>, binds: &[String], cord: &Cord) -> bool {
    let probe = format!("{MOUNT_POINT}/hoist");
    let check_ok = check
        .and_then(|h| h.test.as_ref())
        .is_some_and(|t| t.len() >= 3 && t[0] == "CMD" && t[1] == probe && t[2] == "probe");
    let mount_ok = binds.iter().any(|b| {
        let mut parts = b.split(':');
        let source = parts.next().unwrap_or_default();
        let target = parts.next().unwrap_or_default();
        target == MOUNT_POINT && Path::new(source) == cord.dir()
    });
    check_ok && mount_ok
}

fn nanos(d: Duration) -> i64 {
    i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)
}

/// `hoist probe ...`, run by Docker inside the container. Returns the exit code: 0 healthy,
/// 1 not. Plain std and no runtime: it runs every second in every managed container.
pub fn probe_main(args: &[String]) -> i32 {
    let id = own_container_id();
    let cut = || {
        let cut = id
            .as_ref()
            .is_some_and(|id| marker_present(Path::new(MOUNT_POINT), id));
        if let (true, Some(id)) = (cut, &id) {
            println!("hoist: draining (cord cut for {})", &id[..id.len().min(12)]);
        }
        cut
    };
    if cut() {
        return 1;
    }
    // A failing app is tried again for up to TOLERANCE: one bad answer of the app is not a
    // failed probe. A cord cut meanwhile fails the probe at once.
    // Docker keeps what a probe prints: one line for the last answer, and how many tries
    // it took, not a line per try.
    let clock = std::time::Instant::now();
    let mut failures = 0;
    loop {
        let (code, said) = check_app(args, ATTEMPT.min(TOLERANCE.saturating_sub(clock.elapsed())));
        if code == 0 {
            if let Some(said) = said {
                println!("{said}");
            }
            if failures > 0 {
                println!("hoist: the app failed {failures} time(s), then answered");
            }
            return 0;
        }
        failures += 1;
        if clock.elapsed() + RETRY_PAUSE >= TOLERANCE {
            if let Some(said) = said {
                println!("{said}");
            }
            if failures > 1 {
                println!(
                    "hoist: the app failed {failures} times over {:.1}s",
                    clock.elapsed().as_secs_f64()
                );
            }
            return code;
        }
        std::thread::sleep(RETRY_PAUSE);
        if cut() {
            return 1;
        }
    }
}

/// One check of the app: 0 healthy, and what an HTTP check saw (a command prints its own).
/// HTTP checks give up after `budget`.
fn check_app(args: &[String], budget: Duration) -> (i32, Option<String>) {
    let budget = budget.max(Duration::from_millis(100));
    match args.first().map(String::as_str) {
        Some("--http") => match args.get(1).and_then(|a| parse_http_target(a)) {
            Some((port, path)) => {
                let (code, said) = http_probe(port, &path, budget);
                (code, Some(said))
            }
            None => (
                1,
                Some("hoist probe: --http wants PORT/PATH, e.g. 8000/healthz".into()),
            ),
        },
        Some("--shell") => (
            run(&["/bin/sh".to_string(), "-c".to_string(), args[1..].join(" ")]),
            None,
        ),
        Some("--") => (run(&args[1..]), None),
        None => (0, None),
        Some(other) => (1, Some(format!("hoist probe: unknown argument {other}"))),
    }
}

fn parse_http_target(arg: &str) -> Option<(u16, String)> {
    let slash = arg.find('/')?;
    let port = arg[..slash].parse().ok()?;
    Some((port, arg[slash..].to_string()))
}

fn marker_present(mount: &Path, id: &str) -> bool {
    let cut = mount.join("cut");
    if id.len() == 64 {
        return cut.join(id).exists();
    }
    // Only the short id is known (hostname fallback): match by prefix.
    std::fs::read_dir(cut).is_ok_and(|entries| {
        entries
            .filter_map(Result::ok)
            .any(|e| e.file_name().to_string_lossy().starts_with(id))
    })
}

/// The container's own id. Docker bind-mounts `/etc/hostname` from
/// `<data-root>/containers/<id>/hostname`, which `/proc/self/mountinfo` shows; the hostname
/// (the short id unless the compose file sets one) is the fallback.
fn own_container_id() -> Option<String> {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    id_from_mountinfo(&mountinfo).or_else(|| {
        let host = std::fs::read_to_string("/etc/hostname").ok()?;
        let host = host.trim();
        (host.len() >= 12 && host.chars().all(|c| c.is_ascii_hexdigit())).then(|| host.to_string())
    })
}

fn id_from_mountinfo(mountinfo: &str) -> Option<String> {
    mountinfo.lines().find_map(|line| {
        let fields: Vec<&str> = line.split(' ').collect();
        if fields.get(4) != Some(&"/etc/hostname") {
            return None;
        }
        let root = fields.get(3)?;
        let after = &root[root.find("containers/")? + "containers/".len()..];
        let id = after.split('/').next()?;
        (id.len() == 64 && id.chars().all(|c| c.is_ascii_hexdigit())).then(|| id.to_string())
    })
}

fn http_probe(port: u16, path: &str, budget: Duration) -> (i32, String) {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let result = (|| -> std::io::Result<String> {
        let mut stream = TcpStream::connect_timeout(&addr, budget)?;
        stream.set_read_timeout(Some(budget))?;
        stream.set_write_timeout(Some(budget))?;
        write!(
            stream,
            "GET {path} HTTP/1.0\r\nHost: localhost\r\nUser-Agent: hoist-probe\r\nConnection: close\r\n\r\n"
        )?;
        let mut head = [0u8; 64];
        let n = stream.read(&mut head)?;
        Ok(String::from_utf8_lossy(&head[..n])
            .lines()
            .next()
            .unwrap_or_default()
            .to_string())
    })();
    match result {
        Ok(status_line) => {
            let code: u16 = status_line
                .split_whitespace()
                .nth(1)
                .and_then(|c| c.parse().ok())
                .unwrap_or(0);
            (
                i32::from(!(200..400).contains(&code)),
                format!("GET {path}: {status_line}"),
            )
        }
        Err(e) => (1, format!("GET http://127.0.0.1:{port}{path}: {e}")),
    }
}

fn run(command: &[String]) -> i32 {
    let Some((program, args)) = command.split_first() else {
        return 0;
    };
    match std::process::Command::new(program).args(args).status() {
        Ok(status) => status.code().unwrap_or(1),
        Err(e) => {
            println!("hoist probe: cannot run {program}: {e}");
            1
        }
    }
}

#[cfg(test)]
mod tests;
