//! A device-grant provider that sends terminal escapes in its prompt, or a verification URI that
//! is not https: the user code is shown escaped (no byte a terminal acts on reaches the screen),
//! and a verification URI that is neither https nor loopback http is refused. Plus the units'
//! `LimitCORE=0` (the binary makes itself non-dumpable too; its unit test checks that).

use crate::fake_endpoint::{FakeEndpoint, Reply};
use crate::harness::{Home, Run};

async fn device_flow(verification_uri: &str, user_code: &str) -> Run {
    let device = FakeEndpoint::start(Reply::json(
        200,
        &serde_json::json!({
            "device_code": "dc-hostile-canary-0001",
            "user_code": user_code,
            "verification_uri": verification_uri,
            "expires_in": 60,
            "interval": 1,
        })
        .to_string(),
    ))
    .await;
    let tokens = FakeEndpoint::start(Reply::json(400, r#"{"error":"invalid_client"}"#)).await;
    let home = Home::with_token_url(&tokens.token_url(), "");
    home.append_to_provider(
        "basic",
        &format!(
            "device_authorization_url = \"{}\"",
            device.token_url().replace("/token", "/device")
        ),
    );
    let run = home
        .run(&["authorize", "tv", "--provider", "basic", "--device"], "")
        .await;
    assert_eq!(run.code, Some(1), "{run:?}");
    assert!(!run.all().contains('\u{1b}'), "a raw escape: {run:?}");
    assert!(!run.all().contains("dc-hostile-canary"), "{run:?}");
    run
}

#[tokio::test]
async fn the_device_prompt_is_escaped_and_its_uri_must_be_https() {
    let run = device_flow(
        "https://example.com/device",
        "WDJB\u{1b}]0;pwned\u{7}\u{1b}[2J-MJHT",
    )
    .await;
    assert!(
        run.stderr
            .contains("enter the code WDJB\\u{1b}]0;pwned\\u{7}\\u{1b}[2J-MJHT"),
        "{run:?}"
    );

    let run = device_flow("http://evil.example/device", "WDJB-MJHT").await;
    assert!(
        run.stderr
            .contains("verification_uri that is not an https URL"),
        "{run:?}"
    );
    assert!(!run.all().contains("evil.example/device\n"), "{run:?}");

    let run = device_flow("https://example.com/\u{1b}[2J", "WDJB-MJHT").await;
    assert!(
        run.stderr
            .contains("verification_uri that holds a control character"),
        "{run:?}"
    );
}

#[test]
fn both_units_forbid_core_dumps() {
    for unit in ["tokenwarden.service", "tokenwarden-once.service"] {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("systemd")
            .join(unit);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            text.lines().any(|l| l.trim() == "LimitCORE=0"),
            "{unit} lacks LimitCORE=0"
        );
    }
}
