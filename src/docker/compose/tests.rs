//! Compose naming and what keeps a container from having a twin.

use super::*;
use bollard::models::{
    ContainerConfig, ContainerInspectResponse, EndpointSettings, HostConfig, NetworkSettings,
};

#[test]
fn recognises_compose_naming() {
    assert_eq!(
        naming("shop_web_1", "shop", "web"),
        Some(Naming::Underscore)
    );
    assert_eq!(naming("shop-web-12", "shop", "web"), Some(Naming::Dash));
    assert_eq!(naming("my-web", "shop", "web"), None);
    assert_eq!(naming("shop_web_", "shop", "web"), None);
}

/// A container compose started from the v1 image: its env and CMD are partly the image's,
/// its hostname is Docker's default (the short id).
fn compose_container() -> Container {
    let old_id = format!("{}{}", "abcdef012345", "0".repeat(52));
    Container::from(ContainerInspectResponse {
        id: Some(old_id),
        name: Some("/shop_web_1".into()),
        config: Some(ContainerConfig {
            hostname: Some("abcdef012345".into()),
            env: Some(vec![
                "PATH=/bin".into(),
                "DEMO_VERSION=v1".into(),
                "DB=postgres://db".into(),
            ]),
            cmd: Some(vec!["/demo".into()]),
            labels: Some(HashMap::from([
                ("com.docker.compose.project".into(), "shop".into()),
                (NUMBER.into(), "1".into()),
                ("org.opencontainers.image.version".into(), "v1".into()),
                ("traefik.enable".into(), "true".into()),
            ])),
            ..Default::default()
        }),
        host_config: Some(HostConfig {
            network_mode: Some("shop_web".into()),
            binds: Some(vec!["/var/lib/hoist/drain:/hoist:ro".into()]),
            masked_paths: Some(vec!["/proc/kcore".into()]),
            ..Default::default()
        }),
        network_settings: Some(NetworkSettings {
            networks: Some(HashMap::from([
                (
                    "shop_web".into(),
                    EndpointSettings {
                        aliases: Some(vec!["web".into(), "abcdef012345".into()]),
                        ip_address: Some("172.18.0.2".into()),
                        ..Default::default()
                    },
                ),
                ("shop_db".into(), EndpointSettings::default()),
            ])),
            ..Default::default()
        }),
        ..Default::default()
    })
}

#[test]
fn a_compose_container_can_have_a_twin() {
    assert!(side_by_side_blockers(&compose_container(), "shop", "web").is_empty());
}
