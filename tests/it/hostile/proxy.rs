//! A recording proxy on 127.0.0.1, named in every proxy variable of the environment: token
//! requests to loopback endpoints never pass through it (it would see the Basic header and the
//! refresh token), while a request to a host elsewhere does (the environment is honoured). A
//! proxy variable that is not a URL is a configuration error.

use crate::fake_endpoint::{FakeEndpoint, Reply};
use crate::harness::{Home, finish};
use crate::oauth_server::{OauthServer, clients};

fn with_proxy(home: &Home, args: &[&str], proxy: &str) -> tokio::process::Command {
    let mut cmd = home.command(args);
    for var in [
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "ALL_PROXY",
        "http_proxy",
        "https_proxy",
        "all_proxy",
    ] {
        cmd.env(var, proxy);
    }
    cmd
}

#[tokio::test]
async fn loopback_token_traffic_never_goes_through_a_proxy() {
    let server = OauthServer::start().await;
    let recorder = FakeEndpoint::start(Reply::json(502, "{}")).await;
    let proxy = recorder.token_url().replace("/token", "");
    let home = Home::new(&server, "");
    home.append_config(
        "[providers.far]\ntoken_url = \"http://tokens.example.invalid/token\"\n\
         client_id = \"far-client\"\nclient_secret_env = \"TW_TEST_CC_SECRET\"\n\
         allow_insecure_http = true\n",
    );
    let minted = server
        .mint(clients::BASIC_ID, "openid offline_access api:read")
        .await;
    home.add("near", "basic", &minted.refresh_token).await;

    let run = finish(with_proxy(&home, &["refresh", "near"], &proxy), "").await;
    assert_eq!(run.code, Some(0), "{run:?}");
    assert_eq!(server.stats().await.refresh_ok, 1);
    assert_eq!(recorder.requests(), 0, "the proxy saw loopback traffic");

    // Elsewhere, the environment's proxy is used: the control that the recorder would have seen.
    home.add("far-cred", "far", "rt-far-canary-0123456789")
        .await;
    let run = finish(with_proxy(&home, &["refresh", "far-cred"], &proxy), "").await;
    assert_eq!(run.code, Some(1), "{run:?}");
    assert_eq!(recorder.requests(), 1, "{run:?}");
    assert!(recorder.bodies()[0].contains("grant_type=refresh_token"));

    // NO_PROXY is honoured beside it.
    let mut cmd = with_proxy(&home, &["refresh", "far-cred"], &proxy);
    cmd.env("NO_PROXY", ".invalid");
    let run = finish(cmd, "").await;
    assert_eq!(run.code, Some(1), "{run:?}");
    assert_eq!(recorder.requests(), 1, "NO_PROXY: not proxied");

    let run = finish(
        with_proxy(&home, &["refresh", "near"], "http://user:pw-canary@[bad"),
        "",
    )
    .await;
    assert_eq!(run.code, Some(2), "{run:?}");
    assert_eq!(run.stderr.lines().count(), 1, "{run:?}");
    assert!(run.stderr.contains("is not a usable proxy URL"), "{run:?}");
    assert!(!run.all().contains("pw-canary"), "{run:?}");
}
