//! A provider that quotes every request back in its `error_description` (the Authorization header
//! and the form body): the client secret, in every form it was sent, never reaches standard error,
//! the log, `last_error`, the journal or the browser page of `authorize`, on every path that
//! carries provider text: refresh, revoke, the authorization code exchange, the device grant and
//! doctor's probe.

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

use crate::backends::journal_text;
use crate::fake_endpoint::{FakeEndpoint, Reply};
use crate::harness::{Home, Run, assert_no_secrets};
use crate::oauth_server::clients;

/// A client secret whose encoded forms differ from it (`+`, `/`, space, `&`, `=`).
const SECRET: &str = "echo+canary/secret &=9z";
const REFRESH_TOKEN: &str = "rt-echo-canary-3b7c1d";
const DEVICE_CODE: &str = "dc-echo-canary-8e2f4a";

/// Every form the secret leaves tokenwarden in, and the tokens: none may be shown.
fn canaries() -> Vec<String> {
    let form = |s: &str| url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
    vec![
        SECRET.to_owned(),
        form(SECRET),
        "echo%2Bcanary%2Fsecret%20%26%3D9z".to_owned(),
        STANDARD.encode(format!("{}:{SECRET}", clients::BASIC_ID)),
        STANDARD.encode(format!("{}:{}", form(clients::BASIC_ID), form(SECRET))),
        STANDARD.encode(format!("{}:{}", form(clients::POST_ID), form(SECRET))),
        // Pieces that survive no form: the words around the separators.
        "canary/secret".to_owned(),
        "canary%2Fsecret".to_owned(),
        REFRESH_TOKEN.to_owned(),
        DEVICE_CODE.to_owned(),
    ]
}

/// A home whose `basic` (HTTP Basic) and `post` (form body) clients hold [`SECRET`] and talk to
/// `echo` for tokens and revocations.
fn home(echo: &FakeEndpoint, extra_provider_lines: &str) -> Home {
    let home = Home::with_token_url(&echo.token_url(), "");
    std::fs::write(
        home.path().join("post-client.secret"),
        format!("{SECRET}\n"),
    )
    .unwrap();
    for provider in ["basic", "post"] {
        home.append_to_provider(
            provider,
            &format!(
                "revocation_url = \"{}\"\n{extra_provider_lines}",
                echo.token_url().replace("/token", "/revoke")
            ),
        );
    }
    home
}

async fn run(home: &Home, args: &[&str]) -> Run {
    let mut cmd = home.command(args);
    cmd.env("TW_TEST_BASIC_SECRET", SECRET);
    crate::harness::finish(cmd, "").await
}

/// The echo was seen (its text is in `what`, redacted) and nothing of the secret is anywhere.
fn assert_redacted(what: &str, text: &str) {
    assert!(
        text.contains("you sent") && text.contains("[redacted]"),
        "{what} does not show the redacted echo: {text}"
    );
    assert_no_secrets(what, text, &canaries());
}

#[tokio::test]
async fn refresh_revoke_and_doctor_blank_out_an_echoed_secret() {
    let echo = FakeEndpoint::start(Reply::Echo {
        status: 400,
        error: "invalid_grant",
    })
    .await;
    let home = home(&echo, "");
    for provider in ["basic", "post"] {
        let name = format!("echoed-{provider}");
        let mut cmd = home.command(&["add", &name, "--provider", provider]);
        cmd.env("TW_TEST_BASIC_SECRET", SECRET);
        let added = crate::harness::finish(cmd, REFRESH_TOKEN).await;
        assert_eq!(added.code, Some(0), "{added:?}");
        let refreshed = run(&home, &["refresh", &name]).await;
        assert_eq!(refreshed.code, Some(1), "{refreshed:?}");
        assert_redacted("refresh's output", &refreshed.all());
    }
    let db = home.db().await;
    let errors: Vec<(Option<String>,)> = sqlx::query_as("SELECT last_error FROM oauth_credential")
        .fetch_all(&db)
        .await
        .unwrap();
    for (error,) in &errors {
        assert_redacted("last_error", error.as_deref().unwrap_or_default());
    }
    assert_redacted("the journal", &journal_text(&db).await);

    let doctor = run(&home, &["doctor"]).await;
    assert_redacted("doctor's output", &doctor.all());

    // Revocation: the echo answers 400 invalid_grant, a refusal that is journaled.
    for provider in ["basic", "post"] {
        let revoked = run(&home, &["revoke", &format!("echoed-{provider}")]).await;
        assert_ne!(revoked.code, Some(0), "{revoked:?}");
        assert_redacted("revoke's output", &revoked.all());
    }
    let revocations: Vec<(Option<String>,)> = sqlx::query_as(
        "SELECT error_description FROM token_rotation WHERE outcome LIKE 'revocation%'",
    )
    .fetch_all(&db)
    .await
    .unwrap();
    assert_eq!(revocations.len(), 2, "{revocations:?}");
    for (description,) in &revocations {
        assert_redacted(
            "a revocation's journal row",
            description.as_deref().unwrap_or_default(),
        );
    }
    let everything = format!(
        "{}\n{:?}",
        journal_text(&db).await,
        sqlx::query_as::<_, (Option<String>,)>("SELECT last_error FROM oauth_credential")
            .fetch_all(&db)
            .await
            .unwrap()
    );
    assert_no_secrets("the database", &everything, &canaries());
}

#[tokio::test]
async fn the_authorization_code_exchange_blanks_out_an_echoed_secret_on_the_page_too() {
    let echo = FakeEndpoint::start(Reply::Echo {
        status: 400,
        error: "invalid_request",
    })
    .await;
    let home = home(
        &echo,
        // Never visited: the test plays the browser's return with a code of its own.
        "authorization_url = \"http://127.0.0.1:9/authorize\"",
    );
    let mut cmd = home.command(&["authorize", "coded", "--provider", "basic"]);
    cmd.env("TW_TEST_BASIC_SECRET", SECRET);
    let mut child = cmd.spawn().expect("spawn tokenwarden");
    let stderr = crate::hostile::drain_stderr(&mut child);
    let url = crate::hostile::first_line(&mut child).await;
    let url = url::Url::parse(&url).expect("authorize prints its URL first");
    let param = |name: &str| {
        url.query_pairs()
            .find(|(k, _)| k == name)
            .map_or_else(|| panic!("no {name} in {url}"), |(_, v)| v.into_owned())
    };
    let back = format!(
        "{}?code=code-canary-77&state={}",
        param("redirect_uri"),
        param("state")
    );
    let page = reqwest::get(&back).await.expect("the callback answers");
    assert_eq!(page.status(), reqwest::StatusCode::BAD_REQUEST);
    let page = page.text().await.unwrap();
    let done = crate::hostile::finish_child(child, stderr).await;
    assert_eq!(done.code, Some(1), "{done:?}");
    assert_redacted("the browser page", &page);
    assert_redacted("authorize's output", &done.all());
    assert!(!page.contains("code-canary-77") && !done.all().contains("code-canary-77"));
}

#[tokio::test]
async fn the_device_grant_blanks_out_an_echoed_secret_when_starting_and_polling() {
    let echo = FakeEndpoint::start(Reply::Echo {
        status: 400,
        error: "invalid_client",
    })
    .await;
    // Starting: the device endpoint itself echoes.
    let home = home(
        &echo,
        &format!(
            "device_authorization_url = \"{}\"",
            echo.token_url().replace("/token", "/device")
        ),
    );
    let started = run(
        &home,
        &["authorize", "dev", "--provider", "post", "--device"],
    )
    .await;
    assert_eq!(started.code, Some(1), "{started:?}");
    assert_redacted("the device start's output", &started.all());

    // Polling: a well-formed start, then the token endpoint echoes.
    let device = FakeEndpoint::start(Reply::json(
        200,
        &format!(
            r#"{{"device_code":"{DEVICE_CODE}","user_code":"WDJB-MJHT","verification_uri":"https://example.com/device","expires_in":60,"interval":1}}"#
        ),
    ))
    .await;
    let home = home_with_device(&echo, &device);
    let polled = tokio::time::timeout(
        Duration::from_secs(30),
        run(
            &home,
            &["authorize", "dev", "--provider", "basic", "--device"],
        ),
    )
    .await
    .expect("the refused poll ends the grant");
    assert_eq!(polled.code, Some(1), "{polled:?}");
    assert_redacted("the device poll's output", &polled.all());
}

fn home_with_device(echo: &FakeEndpoint, device: &FakeEndpoint) -> Home {
    home(
        echo,
        &format!(
            "device_authorization_url = \"{}\"",
            device.token_url().replace("/token", "/device")
        ),
    )
}
