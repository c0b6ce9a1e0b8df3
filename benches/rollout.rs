//! Rollout benchmark, side by side in one run, through the real Traefik at 100 req/s with
//! slow requests in flight: a plain `docker compose up -d` recreate, the docker-rollout
//! method (compose `--scale 2 --no-recreate`, wait healthy, stop and remove the old
//! container without draining) and hoist, each for several rollouts v1<->v2 of the same
//! compose service. Then the Docker engine's CPU per managed container at idle, for
//! hoist's drain cord at each probe interval and for no healthcheck.
//!
//! Run: `scripts/setup && cargo bench --features test-support --bench rollout`
//!
//! hoist's overhead = a rollout's total time minus the pull step and minus every wait on
//! the outside world the journal records (health, Traefik confirmation, the cord taking
//! effect, the configured drain, the app stopping), shown with and without the Docker
//! engine's own time to create, start and remove containers (`engine`).
// Test code: a panic is how a test fails; its helpers are `pub` inside a private module, and a
// scenario reads best in one piece.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::disallowed_methods,
    clippy::too_many_lines,
    unreachable_pub
)]

#[path = "../tests/support/mod.rs"]
mod support;

use std::process::Output;
use std::time::{Duration, Instant};

use support::hoist::{Fixture, Options};
use support::load::LoadReport;
use support::project::Project;

/// Rollouts per method, and of hoist at each other cord interval.
const ROLLOUTS: usize = 6;
const ROLLOUTS_PER_INTERVAL: usize = 4;
const STEPS: [&str; 7] = [
    "resolve", "pull", "start", "health", "switch", "drain", "record",
];
const SERVING: Duration = Duration::from_secs(60);
/// Between rollouts, as deploys are spaced in life: Traefik's 2 s throttle after the previous
/// rollout's last routing change has passed, so no rollout waits out another's.
const SPACING: Duration = Duration::from_secs(3);
/// Managed containers measured at idle, and for how long.
const IDLE_CONTAINERS: usize = 5;
const IDLE_WINDOW: Duration = Duration::from_secs(30);
/// The cord intervals measured: hoist's rollout time and the engine's idle CPU.
const INTERVALS: [&str; 4] = ["1s", "2s", "3s", "5s"];

/// One method's rollouts: wall time each, and the load through Traefik meanwhile.
struct Method {
    name: &'static str,
    walls: Vec<Duration>,
    load: LoadReport,
}

#[tokio::main(flavor = "multi_thread", worker_threads = 4)]
async fn main() {
    let f = Fixture::start(with_cord("1s")).await;
    // hoist first: its journal gives the per-step table.
    let hoist = run_method(&f, "hoist", ROLLOUTS, |f, tag| {
        Box::pin(hoist_rollout(f, tag))
    })
    .await;
    let recreate = run_method(&f, "compose recreate", ROLLOUTS, |f, tag| {
        Box::pin(compose_recreate(f, tag))
    })
    .await;
    let rollout = run_method(&f, "docker-rollout method", ROLLOUTS, |f, tag| {
        Box::pin(docker_rollout(f, tag))
    })
    .await;

    println!(
        "\nrollout benchmark: {ROLLOUTS} rollouts v1<->v2 per method, {}s apart, 100 req/s \
         through {} (every 10th request held 300 ms), hoist with drain 1s, cord_interval 1s \
         and traefik.api_url\n",
        SPACING.as_secs(),
        support::traefik::describe()
    );
    println!(
        "| method | requests | failed | wall per rollout, median | max |\n|---|---|---|---|---|"
    );
    for m in [&recreate, &rollout, &hoist] {
        println!(
            "| {} | {} | {} | {} ms | {} ms |",
            m.name,
            m.load.sent,
            m.load.failed,
            median(&m.walls).as_millis(),
            m.walls.iter().max().unwrap().as_millis()
        );
    }
    for m in [&recreate, &rollout, &hoist] {
        println!("\n{}: {}", m.name, m.load);
    }
    print_hoist_steps(&f).await;
    print_intervals(&f, &hoist).await;
}

fn with_cord(interval: &'static str) -> Options {
    Options {
        cord_interval: interval,
        ..Options::default()
    }
}

/// Runs [`ROLLOUTS`] rollouts under a fresh load, alternating v2 and v1.
async fn run_method<F>(f: &Fixture, name: &'static str, rollouts: usize, roll: F) -> Method
where
    F: for<'a> Fn(
        &'a Fixture,
        &'static str,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + 'a>>,
{
    let load = f.load();
    let start = if f.running_image().ends_with(&f.digests["v1"]) || is_tag(f, "v1") {
        "v1"
    } else {
        "v2"
    };
    load.wait_until_serving(start, SERVING).await.unwrap();
    let mut walls = Vec::new();
    let mut current = start;
    for _ in 0..rollouts {
        tokio::time::sleep(SPACING).await;
        let next = if current == "v1" { "v2" } else { "v1" };
        let clock = Instant::now();
        roll(f, next).await;
        load.wait_until_serving(next, SERVING)
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        walls.push(clock.elapsed());
        current = next;
    }
    Method {
        name,
        walls,
        load: load.stop().await,
    }
}

fn is_tag(f: &Fixture, tag: &str) -> bool {
    f.running_image() == format!("{}:{tag}", f.repo)
}

async fn hoist_rollout(f: &Fixture, tag: &'static str) {
    f.deploy(tag).await.assert_code(0);
}

/// The operator's old deploy: the new image in .env, then `docker compose up -d`.
async fn compose_recreate(f: &Fixture, tag: &'static str) {
    std::fs::write(
        f.project.env_file(),
        format!("WEB_IMAGE={}\n", f.pinned(tag)),
    )
    .unwrap();
    compose_ok(f, &["up", "-d"]);
}

/// docker-rollout v0.13's method: scale to twice with `--no-recreate`, wait until the new
/// containers are healthy, then stop and remove the old ones (no draining).
async fn docker_rollout(f: &Fixture, tag: &'static str) {
    let old = f.project.running_of("web");
    std::fs::write(
        f.project.env_file(),
        format!("WEB_IMAGE={}\n", f.pinned(tag)),
    )
    .unwrap();
    let twice = format!("web={}", old.len() * 2);
    compose_ok(
        f,
        &[
            "up",
            "-d",
            "--no-deps",
            "--no-recreate",
            "--scale",
            &twice,
            "web",
        ],
    );
    let new: Vec<String> = f
        .project
        .running_of("web")
        .into_iter()
        .filter(|id| !old.contains(id))
        .collect();
    assert!(!new.is_empty(), "compose started no new container");
    // docker-rollout polls `docker inspect` once a second.
    let deadline = Instant::now() + SERVING;
    while !new.iter().all(|id| health(id) == "healthy") {
        assert!(Instant::now() < deadline, "new containers never healthy");
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let mut stop = vec!["stop"];
    stop.extend(old.iter().map(String::as_str));
    docker_ok(&stop);
    let mut rm = vec!["rm"];
    rm.extend(old.iter().map(String::as_str));
    docker_ok(&rm);
}

fn health(id: &str) -> String {
    let out = support::images::docker(&["inspect", "-f", "{{.State.Health.Status}}", id]);
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn compose_ok(f: &Fixture, args: &[&str]) -> Output {
    let out = f
        .project
        .compose_command(args)
        .env("DOCKER_CONFIG", f.docker_config_dir())
        .output()
        .expect("compose");
    assert!(
        out.status.success(),
        "compose {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn docker_ok(args: &[&str]) {
    let out = support::images::docker(args);
    assert!(
        out.status.success(),
        "docker {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn median(values: &[Duration]) -> Duration {
    let mut sorted = values.to_vec();
    sorted.sort_unstable();
    sorted[sorted.len() / 2]
}

/// hoist's per-step timings from its journal, and its overhead.
async fn print_hoist_steps(f: &Fixture) {
    // Only hoist's rollouts are in hoist's journal.
    let mut history = f.history().await;
    history.reverse();
    println!("\nhoist's steps (ms, from the journal):");
    print!("{:>3}", "#");
    for s in STEPS {
        print!(" {s:>8}");
    }
    println!(
        " {:>8} {:>8} {:>8} {:>9} {:>9}",
        "total", "waited", "engine", "overhead", "own"
    );
    let mut columns: Vec<Vec<i64>> = vec![Vec::new(); STEPS.len() + 5];
    for (i, d) in history.iter().enumerate() {
        let steps = d["steps"].as_array().unwrap();
        let ms = |name: &str, field: &str| {
            steps
                .iter()
                .find(|s| s["step"] == name)
                .and_then(|s| s[field].as_i64())
                .unwrap_or(0)
        };
        let total = d["finished_at"].as_i64().unwrap() - d["started_at"].as_i64().unwrap();
        let waited: i64 = STEPS.iter().map(|s| ms(s, "waited_ms")).sum();
        let engine: i64 = STEPS.iter().map(|s| ms(s, "engine_ms")).sum();
        let overhead = total - ms("pull", "duration_ms") - waited;
        let mut row: Vec<i64> = STEPS.iter().map(|s| ms(s, "duration_ms")).collect();
        row.extend([total, waited, engine, overhead, overhead - engine]);
        print!("{:>3}", i + 1);
        for v in &row {
            print!(" {v:>8}");
        }
        println!();
        for (c, v) in columns.iter_mut().zip(row) {
            c.push(v);
        }
    }
    print!("med");
    for c in &mut columns {
        c.sort_unstable();
        print!(" {:>8}", c.get(c.len() / 2).copied().unwrap_or(0));
    }
    println!(
        "\nwaited = health + Traefik + cord + drain + app stop; engine = Docker creating, \
         starting and removing containers; own = overhead - engine (target < 100 ms)"
    );
}

/// Per cord interval: hoist's rollout time through Traefik (own fixture each) and the
/// Docker engine's idle CPU per container, against no healthcheck at all.
async fn print_intervals(f: &Fixture, at_1s: &Method) {
    let drain = f.state.path().join("state").join("drain");
    assert!(
        drain.join("hoist").exists(),
        "hoist's probe is installed by then"
    );
    let baseline = idle_cpu(f, &drain, None).await;
    let mut rows = Vec::new();
    for interval in INTERVALS {
        let (walls, failed) = if interval == "1s" {
            (at_1s.walls.clone(), at_1s.load.failed)
        } else {
            let g = Fixture::start(with_cord(interval)).await;
            let m = run_method(&g, "hoist", ROLLOUTS_PER_INTERVAL, |g, tag| {
                Box::pin(hoist_rollout(g, tag))
            })
            .await;
            (m.walls, m.load.failed)
        };
        let cpu = idle_cpu(f, &drain, Some(interval)).await;
        rows.push((interval, walls, failed, cpu));
    }
    println!(
        "\nhoist by cord_interval ({IDLE_CONTAINERS} idle containers, {}s each, engine = dockerd, \
         containerd, shims, runc; no healthcheck: {baseline:.2} % of a core in all):",
        IDLE_WINDOW.as_secs()
    );
    println!(
        "| cord_interval | rollout, median | max | failed requests | idle engine CPU per container |\n|---|---|---|---|---|"
    );
    for (interval, walls, failed, cpu) in rows {
        println!(
            "| {interval} | {:.1} s | {:.1} s | {failed} | {:.2} % of a core |",
            median(&walls).as_secs_f64(),
            walls.iter().max().unwrap().as_secs_f64(),
            (cpu - baseline) / IDLE_CONTAINERS as f64
        );
    }
}

/// Engine CPU in % of one core while [`IDLE_CONTAINERS`] idle containers run with hoist's
/// probe every `interval` (or no healthcheck).
async fn idle_cpu(f: &Fixture, drain: &std::path::Path, interval: Option<&str>) -> f64 {
    let project = Project::new("idle");
    let healthcheck = match interval {
        None => "    healthcheck:\n      disable: true\n".to_string(),
        Some(i) => format!(
            "    healthcheck:\n      test: [\"CMD\", \"/hoist/hoist\", \"probe\", \"--http\", \"8000/healthz\"]\n      interval: {i}\n      timeout: 4s\n      retries: 1\n"
        ),
    };
    project.write_compose(&format!(
        "services:\n  idle:\n    image: {}\n    volumes:\n      - \"{}:/hoist:ro\"\n{healthcheck}",
        f.pinned("v1"),
        drain.display()
    ));
    project.compose_ok(&["up", "-d", "--scale", &format!("idle={IDLE_CONTAINERS}")]);
    // Let the containers settle (first probes, start-up) before measuring.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let before = engine_ticks();
    let clock = Instant::now();
    tokio::time::sleep(IDLE_WINDOW).await;
    let used = engine_ticks() - before;
    let elapsed = clock.elapsed().as_secs_f64();
    drop(project);
    #[allow(clippy::cast_precision_loss)]
    let seconds = used as f64 / ticks_per_second();
    100.0 * seconds / elapsed
}

/// utime + stime, with those of reaped children (runc, exec'd probes' setup), of the
/// engine's processes, in clock ticks.
fn engine_ticks() -> u64 {
    let mut total = 0;
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let comm = &stat[open + 1..close];
        if !(comm == "dockerd" || comm.starts_with("containerd") || comm == "runc") {
            continue;
        }
        let fields: Vec<&str> = stat[close + 2..].split(' ').collect();
        // After the comm: state is field 0, utime 11, stime 12, cutime 13, cstime 14.
        total += fields[11..=14]
            .iter()
            .map(|v| v.parse::<i64>().unwrap_or(0).max(0) as u64)
            .sum::<u64>();
    }
    total
}

fn ticks_per_second() -> f64 {
    let out = std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .expect("getconf");
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or(100.0)
}
