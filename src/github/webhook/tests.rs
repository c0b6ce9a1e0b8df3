//! GitHub's signature test vector, the payload decoders on trimmed deliveries, service
//! matching, and property tests over untrusted input.

use super::*;

const SECRET: &[u8] = b"It's a Secret to Everybody";
const BODY: &[u8] = b"Hello, World!";
const VECTOR: &str = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";

#[test]
fn githubs_documented_test_vector() {
    assert_eq!(sign(SECRET, BODY), VECTOR);
    assert_eq!(verify(SECRET, BODY, Some(VECTOR), None), Ok(()));
}

#[test]
fn refuses_every_kind_of_bad_signature() {
    use SignatureError::*;
    let cases: [(Option<&str>, Option<&str>, SignatureError); 7] = [
        (None, None, Missing),
        (None, Some("sha1=0123"), Sha1Only),
        (Some(&VECTOR[..40]), None, Malformed),
        (Some(&VECTOR.replace("sha256=", "sha1=")), None, Malformed),
        (Some(&VECTOR.replace('e', "z")), None, Malformed),
        (Some(&VECTOR.replace("757107", "757108")), None, Mismatch),
        (Some(""), None, Malformed),
    ];
    for (sig256, sig1, want) in cases {
        assert_eq!(verify(SECRET, BODY, sig256, sig1), Err(want), "{sig256:?}");
    }
    assert_eq!(
        verify(SECRET, b"Hello, World?", Some(VECTOR), None),
        Err(Mismatch)
    );
    assert_eq!(
        verify(b"another secret", BODY, Some(VECTOR), None),
        Err(Mismatch)
    );
}

fn service(track: &str) -> ServiceConfig {
    let text = format!(
        "[[services]]\nname = \"web\"\nenvironment = \"stage\"\ncompose_project = \"p\"\nimage = \"ghcr.io/acme/web\"\ntrack = \"{track}\"\nhost = \"a.test\"\nport = 80\ngithub_repository = \"acme/web\"\n"
    );
    crate::config::Config::parse(
        &text,
        std::path::Path::new("t"),
        crate::config::Secrets::Load,
    )
    .unwrap()
    .services
    .remove(0)
}

#[test]
fn reads_the_trigger_events() {
    let push = br#"{"ref":"refs/heads/main","after":"abc","deleted":false,"repository":{"full_name":"acme/web"}}"#;
    assert_eq!(
        parse("push", push).unwrap(),
        Event::Source {
            repository: "acme/web".into(),
            reference: Reference::Branch("main".into()),
            sha: Some("abc".into()),
        }
    );
    let deleted =
        br#"{"ref":"refs/heads/main","deleted":true,"repository":{"full_name":"acme/web"}}"#;
    assert!(matches!(parse("push", deleted).unwrap(), Event::Ignored(_)));
    let run = br#"{"action":"completed","workflow_run":{"conclusion":"failure","head_branch":"main"},"repository":{"full_name":"acme/web"}}"#;
    assert!(
        matches!(parse("workflow_run", run).unwrap(), Event::Ignored(r) if r.contains("failure"))
    );
    let release = br#"{"action":"published","release":{"tag_name":"v1.4.0","draft":false},"repository":{"full_name":"acme/web"}}"#;
    assert!(
        matches!(parse("release", release).unwrap(), Event::Source { reference: Reference::Tag(t), .. } if t == "v1.4.0")
    );
    let digest = format!("sha256:{}", "a".repeat(64));
    let package = format!(
        r#"{{"action":"published","registry_package":{{"package_type":"CONTAINER","package_version":{{"package_url":"ghcr.io/acme/web:v2:","container_metadata":{{"tag":{{"name":"v2","digest":"{digest}"}}}}}}}},"repository":{{"full_name":"acme/web"}}}}"#
    );
    assert_eq!(
        parse("registry_package", package.as_bytes()).unwrap(),
        Event::Package {
            repository: "acme/web".into(),
            image: Some(Repository::parse("ghcr.io/acme/web").unwrap()),
            tag: "v2".into(),
            digest: Some(Digest::parse(&digest).unwrap()),
        }
    );
    assert!(matches!(
        parse("issues", br#"{"action":"opened"}"#).unwrap(),
        Event::Ignored(_)
    ));
    assert!(parse("push", b"{not json").is_err());
    assert!(parse("push", br#"{"ref":5}"#).is_err());
}

#[test]
fn matches_services_by_repository_and_track() {
    let main = service("main");
    let source = |repo: &str, r: Reference| Event::Source {
        repository: repo.into(),
        reference: r,
        sha: None,
    };
    assert!(concerns(&main, &source("acme/web", Reference::Branch("main".into()))).is_ok());
    assert!(concerns(&main, &source("acme/web", Reference::Branch("dev".into()))).is_err());
    assert!(
        concerns(
            &main,
            &source("acme/other", Reference::Branch("main".into()))
        )
        .is_err()
    );
    let semver = service("semver:^1.4");
    assert!(
        concerns(
            &semver,
            &source("acme/web", Reference::Tag("v1.5.0".into()))
        )
        .is_ok()
    );
    assert!(
        concerns(
            &semver,
            &source("acme/web", Reference::Tag("v2.0.0".into()))
        )
        .is_err()
    );
    assert!(
        concerns(
            &semver,
            &source("acme/web", Reference::Tag("v1.6.0-rc.1".into()))
        )
        .is_err()
    );
    let package = |image: &str| Event::Package {
        repository: "acme/web".into(),
        image: Repository::parse(image).ok(),
        tag: "main".into(),
        digest: None,
    };
    assert!(concerns(&main, &package("ghcr.io/acme/web")).is_ok());
    assert!(concerns(&main, &package("ghcr.io/acme/worker")).is_err());
}

mod fuzz {
    //! Property tests over the untrusted input: signatures and payloads of any shape
    //! never panic, and only the exact signature of the exact body is accepted.
    use super::super::*;
    use proptest::prelude::*;

    const EVENTS: [&str; 8] = [
        "ping",
        "push",
        "workflow_run",
        "release",
        "package",
        "registry_package",
        "issues",
        "",
    ];

    /// JSON values nested a few levels, with the keys hoist reads among random ones.
    fn json() -> impl Strategy<Value = serde_json::Value> {
        let key = prop_oneof![
            Just("ref".to_string()),
            Just("deleted".to_string()),
            Just("action".to_string()),
            Just("repository".to_string()),
            Just("full_name".to_string()),
            Just("workflow_run".to_string()),
            Just("conclusion".to_string()),
            Just("head_branch".to_string()),
            Just("release".to_string()),
            Just("tag_name".to_string()),
            Just("draft".to_string()),
            Just("package".to_string()),
            Just("registry_package".to_string()),
            Just("package_type".to_string()),
            Just("package_version".to_string()),
            Just("package_url".to_string()),
            Just("container_metadata".to_string()),
            Just("tag".to_string()),
            Just("name".to_string()),
            Just("digest".to_string()),
            "[a-z_]{1,8}",
        ];
        let leaf = prop_oneof![
            Just(serde_json::Value::Null),
            any::<bool>().prop_map(serde_json::Value::Bool),
            any::<i64>().prop_map(|n| serde_json::json!(n)),
            prop_oneof![
                Just("refs/heads/main".to_string()),
                Just("refs/tags/v1.2.3".to_string()),
                Just("published".to_string()),
                Just("completed".to_string()),
                Just("success".to_string()),
                Just("CONTAINER".to_string()),
                Just("ghcr.io/acme/web:v2:".to_string()),
                Just(format!("sha256:{}", "a".repeat(64))),
                ".{0,40}",
            ]
            .prop_map(serde_json::Value::String),
        ];
        leaf.prop_recursive(4, 64, 8, move |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::Array),
                prop::collection::btree_map(key.clone(), inner, 0..8)
                    .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

        #[test]
        fn arbitrary_bytes_never_panic(event in prop::sample::select(&EVENTS[..]), body in prop::collection::vec(any::<u8>(), 0..512)) {
            let _ = parse(event, &body);
        }

        #[test]
        fn structured_payloads_never_panic(event in prop::sample::select(&EVENTS[..]), value in json()) {
            let body = value.to_string();
            if let Ok(parsed) = parse(event, body.as_bytes()) {
                let service = super::service("semver:^1");
                let _ = concerns(&service, &parsed);
            }
        }

        #[test]
        fn any_signature_header_is_refused_unless_exact(
            secret in prop::collection::vec(any::<u8>(), 0..64),
            body in prop::collection::vec(any::<u8>(), 0..256),
            header in ".{0,80}",
        ) {
            let good = sign(&secret, &body);
            let verdict = verify(&secret, &body, Some(&header), None);
            prop_assert_eq!(verdict.is_ok(), header.trim() == good);
            prop_assert!(verify(&secret, &body, Some(&good), None).is_ok());
        }

        #[test]
        fn changing_any_byte_breaks_the_signature(
            body in prop::collection::vec(any::<u8>(), 1..256),
            index in any::<prop::sample::Index>(),
            flip in 1u8..=255,
        ) {
            let good = sign(b"secret", &body);
            let mut changed = body.clone();
            let i = index.index(changed.len());
            changed[i] ^= flip;
            prop_assert_eq!(verify(b"secret", &changed, Some(&good), None), Err(SignatureError::Mismatch));
        }
    }
}
