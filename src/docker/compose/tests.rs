//! Compose naming and building a new container from a running one.

use super::*;
use bollard::models::{
    ContainerConfig, ContainerInspectResponse, HostConfig, ImageInspect, NetworkSettings,
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
    assert_eq!(numbered_name(Naming::Dash, "shop", "web", 3), "shop-web-3");
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
fn new_container_keeps_compose_settings_and_takes_new_image_defaults() {
    let old = compose_container();
    let old_image = LocalImage::from(ImageInspect {
        config: Some(ImageConfig {
            env: Some(vec!["PATH=/bin".into(), "DEMO_VERSION=v1".into()]),
            cmd: Some(vec!["/demo".into()]),
            labels: Some(HashMap::from([(
                "org.opencontainers.image.version".into(),
                "v1".into(),
            )])),
            ..Default::default()
        }),
        ..Default::default()
    });
    let traefik = BTreeMap::from([("traefik.enable".to_string(), "true".to_string())]);
    let new = build(Template {
        old: &old,
        old_image: Some(&old_image),
        image: "r/web@sha256:x",
        traefik_labels: &traefik,
        healthcheck: HealthConfig::default(),
        name: "shop_web_2".into(),
        number: 2,
        deploy_id: 7,
    });
    let body = new.body;
    assert_eq!(body.hostname, None);
    assert_eq!(body.env, Some(vec!["DB=postgres://db".to_string()]));
    assert_eq!(body.cmd, None, "the new image's CMD applies");
    let labels = body.labels.unwrap();
    assert_eq!(labels[NUMBER], "2");
    assert_eq!(labels[DEPLOY_LABEL], "7");
    assert!(!labels.contains_key("org.opencontainers.image.version"));
    let host = body.host_config.unwrap();
    assert_eq!(host.binds.unwrap(), vec!["/var/lib/hoist/drain:/hoist:ro"]);
    assert_eq!(host.masked_paths, None);
    let endpoints = body.networking_config.unwrap().endpoints_config.unwrap();
    assert_eq!(endpoints["shop_web"].aliases, Some(vec!["web".to_string()]));
    assert_eq!(endpoints["shop_web"].ip_address, None);
    assert_eq!(new.extra_networks.len(), 1);
    assert_eq!(new.extra_networks[0].0, "shop_db");
}
