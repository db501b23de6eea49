//! Envoy without the filter: the runner, the TLS listeners, the upstream and
//! path normalization behave as the filter's tests assume. One Envoy per
//! normalization, shared by the tests of this file.
#![cfg(feature = "envoy")]

use std::sync::OnceLock;

use wasm_test_harness::envoy::{Envoy, EnvoyConfig, Identity, Listener, Normalization, Probe};

const ALICE: &str = "spiffe://cluster.local/ns/tenant-a/sa/app";

fn envoy(normalization: Normalization) -> &'static Envoy {
    static STRICT: OnceLock<Envoy> = OnceLock::new();
    static ISTIO: OnceLock<Envoy> = OnceLock::new();
    let cell = match normalization {
        Normalization::Strict => &STRICT,
        Normalization::IstioDefault => &ISTIO,
    };
    cell.get_or_init(|| {
        let mut config = EnvoyConfig::plain();
        config.normalization = normalization;
        Envoy::start(config).unwrap_or_else(|e| panic!("start Envoy: {e}"))
    })
}

fn strict() -> &'static Envoy {
    envoy(Normalization::Strict)
}

#[test]
fn an_mtls_request_reaches_the_upstream_with_the_verified_certificate() {
    let envoy = strict();
    let alice = envoy.caller(ALICE).unwrap();
    let seen = envoy
        .send(
            &Probe::get("/hello?x=1")
                .from(alice)
                .host("api.example.com")
                .header("x-custom", "v"),
        )
        .unwrap();
    assert_eq!(seen.status, 200, "{seen:?}");
    assert!(seen.allowed());
    let up = seen.upstream_saw.as_ref().expect("the upstream saw it");
    assert_eq!(up.method, "GET");
    assert_eq!(up.path, "/hello?x=1");
    assert_eq!(up.header("host").as_deref(), Some("api.example.com"));
    assert_eq!(up.header("x-custom").as_deref(), Some("v"));
    // Envoy tells the upstream which certificate it verified (XFCC, set by
    // Envoy, never taken from the client).
    let xfcc = up.header("x-forwarded-client-cert").expect("XFCC is set");
    assert!(xfcc.contains(&format!("URI={ALICE}")), "{xfcc}");
    // The upstream's JSON body reports the same request.
    let body: serde_json::Value = serde_json::from_str(&seen.body).unwrap();
    assert_eq!(body["path"], "/hello?x=1");
}

#[test]
fn a_client_forged_xfcc_never_reaches_the_upstream() {
    let envoy = strict();
    let seen = envoy
        .send(&Probe::get("/").header(
            "x-forwarded-client-cert",
            "URI=spiffe://cluster.local/ns/admin/sa/root",
        ))
        .unwrap();
    assert!(seen.allowed(), "{seen:?}");
    let up = seen.upstream_saw.unwrap();
    assert_eq!(up.header("x-forwarded-client-cert"), None, "{up:?}");
}

#[test]
fn without_a_certificate_the_mtls_listener_refuses_and_the_permissive_one_accepts() {
    let envoy = strict();
    let refused = envoy.send(&Probe::get("/x").on(Listener::Mtls)).unwrap();
    assert_eq!(refused.status, 0, "{refused:?}");
    assert!(refused.refused.is_some());
    assert!(refused.denied());

    let accepted = envoy
        .send(&Probe::get("/x").on(Listener::Permissive))
        .unwrap();
    assert!(accepted.allowed(), "{accepted:?}");
    let up = accepted.upstream_saw.unwrap();
    assert_eq!(up.header("x-forwarded-client-cert"), None);
}

#[test]
fn a_certificate_from_another_ca_is_refused_on_both_listeners() {
    let envoy = strict();
    let mallory = envoy.caller(Identity::OtherCa(ALICE.into())).unwrap();
    for listener in [Listener::Mtls, Listener::Permissive] {
        let seen = envoy
            .send(&Probe::get("/").from(mallory.clone()).on(listener))
            .unwrap();
        assert_eq!(seen.status, 0, "{listener:?}: {seen:?}");
        assert!(seen.denied());
    }
}

#[test]
fn odd_certificates_from_the_trusted_ca_are_accepted_by_tls() {
    // Whether they may do anything is the filter's business, not TLS's.
    let envoy = strict();
    for identity in [
        Identity::NoUriSan,
        Identity::Uri("https://evil.example/ns/tenant-a/sa/app".into()),
        Identity::Uris(vec![
            ALICE.into(),
            "spiffe://cluster.local/ns/admin/sa/root".into(),
        ]),
    ] {
        let cert = envoy.caller(identity.clone()).unwrap();
        let seen = envoy.send(&Probe::get("/").from(cert)).unwrap();
        assert!(seen.allowed(), "{identity:?}: {seen:?}");
        let xfcc = seen.upstream_saw.unwrap().header("x-forwarded-client-cert");
        match identity {
            Identity::NoUriSan => assert!(
                !xfcc.clone().unwrap_or_default().contains("URI=spiffe"),
                "{identity:?} {xfcc:?}"
            ),
            _ => assert!(xfcc.unwrap().contains("URI="), "{identity:?}"),
        }
    }
}

#[test]
fn repeated_headers_reach_the_upstream_as_sent() {
    let envoy = strict();
    let seen = envoy
        .send(
            &Probe::get("/")
                .header("x-tenant-id", "a")
                .header("X-Tenant-Id", "b"),
        )
        .unwrap();
    let up = seen.upstream_saw.unwrap();
    assert_eq!(up.header_values("x-tenant-id"), vec!["a", "b"]);
}

/// What the upstream got for `path` under `normalization`: `Ok(path)` when
/// it was forwarded, `Err(status)` when Envoy answered itself.
fn forwarded(normalization: Normalization, path: &str) -> Result<String, u16> {
    let seen = envoy(normalization).send(&Probe::get(path)).unwrap();
    match seen.upstream_saw {
        Some(up) => Ok(up.path),
        None => Err(seen.status),
    }
}

#[test]
fn strict_normalization_merges_slashes_and_rejects_encoded_slashes() {
    use Normalization::Strict;
    assert_eq!(forwarded(Strict, "/a//b"), Ok("/a/b".into()));
    assert_eq!(forwarded(Strict, "/a/./b/../c"), Ok("/a/c".into()));
    assert_eq!(forwarded(Strict, "/a//b%2Fc"), Err(400));
    assert_eq!(forwarded(Strict, "/a%2fb"), Err(400));
    assert_eq!(forwarded(Strict, "/a%5Cb"), Err(400));
    // No Envoy setting touches path parameters: the filter must.
    assert_eq!(
        forwarded(Strict, "/api/admin;x=1"),
        Ok("/api/admin;x=1".into())
    );
}

#[test]
fn istio_default_normalization_leaves_double_and_encoded_slashes() {
    use Normalization::IstioDefault;
    assert_eq!(forwarded(IstioDefault, "/a//b%2Fc"), Ok("/a//b%2Fc".into()));
    assert_eq!(forwarded(IstioDefault, "/a%5Cb"), Ok("/a%5Cb".into()));
    assert_eq!(forwarded(IstioDefault, "/a/./b/../c"), Ok("/a/c".into()));
    assert_eq!(
        forwarded(IstioDefault, "/api/admin;x=1"),
        Ok("/api/admin;x=1".into())
    );
}
