//! A real registry per test: Debian's `docker-registry` (distribution 2.8) on a free
//! loopback port with its own storage, optionally behind htpasswd auth. Killed on drop.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

pub struct TestRegistry {
    child: Option<Child>,
    /// `127.0.0.1:PORT`
    pub addr: String,
    pub auth: Option<(String, String)>,
    config: PathBuf,
    dir: TempDir,
}

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().expect("local addr").port()
}

impl TestRegistry {
    pub async fn start() -> TestRegistry {
        Self::launch(None).await
    }

    pub async fn start_with_auth(user: &str, password: &str) -> TestRegistry {
        Self::launch(Some((user.to_string(), password.to_string()))).await
    }

    async fn launch(auth: Option<(String, String)>) -> TestRegistry {
        let binary = which("docker-registry").unwrap_or_else(|| {
            panic!("docker-registry is not installed: `apt-get install docker-registry` (the tests need a real registry)")
        });
        let dir = tempfile::Builder::new()
            .prefix("hoist-registry-")
            .tempdir()
            .expect("temp dir");
        let addr = format!("127.0.0.1:{}", free_port());
        let mut config = format!(
            "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {addr}\n",
            dir.path().join("data").display()
        );
        if let Some((user, password)) = &auth {
            let out = Command::new("htpasswd")
                .args(["-Bbn", user, password])
                .output()
                .expect("htpasswd (apache2-utils) must be installed");
            assert!(out.status.success(), "htpasswd failed: {out:?}");
            let file = dir.path().join("htpasswd");
            std::fs::write(&file, &out.stdout).expect("write htpasswd");
            config.push_str(&format!(
                "auth:\n  htpasswd:\n    realm: hoist-test\n    path: {}\n",
                file.display()
            ));
        }
        let config_path = dir.path().join("config.yml");
        std::fs::write(&config_path, config).expect("write registry config");
        let mut registry = TestRegistry {
            child: None,
            addr,
            auth,
            config: config_path,
            dir,
        };
        registry.spawn(&binary).await;
        registry
    }

    async fn spawn(&mut self, binary: &PathBuf) {
        let child = Command::new(binary)
            .args(["serve", &self.config.display().to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start docker-registry");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(15);
        let client = reqwest::Client::new();
        loop {
            if let Ok(r) = client.get(format!("http://{}/v2/", self.addr)).send().await
                && (r.status().is_success() || r.status() == 401)
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "registry on {} did not come up",
                self.addr
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// `127.0.0.1:PORT/<path>`
    pub fn repo(&self, path: &str) -> String {
        format!("{}/{path}", self.addr)
    }

    /// A Docker client config directory logged in to this registry (for `docker push`),
    /// so tests never touch the user's own `~/.docker/config.json`.
    pub fn docker_config_dir(&self) -> PathBuf {
        let dir = self.dir.path().join("docker-client");
        std::fs::create_dir_all(&dir).expect("client config dir");
        let auths = match &self.auth {
            Some((user, password)) => {
                use base64::Engine as _;
                let token =
                    base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
                format!(r#"{{"auths":{{"{}":{{"auth":"{token}"}}}}}}"#, self.addr)
            }
            None => "{}".to_string(),
        };
        std::fs::write(dir.join("config.json"), auths).expect("client config");
        dir
    }

    /// Simulates an outage.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Brings the registry back after [`stop`](Self::stop), same port and storage.
    pub async fn restart(&mut self) {
        self.stop();
        let binary = which("docker-registry").expect("docker-registry");
        self.spawn(&binary).await;
    }
}

impl Drop for TestRegistry {
    fn drop(&mut self) {
        self.stop();
    }
}

pub fn which(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join(program))
            .find(|p| p.is_file())
    })
}
