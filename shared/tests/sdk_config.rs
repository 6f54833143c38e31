//! Where the SDK takes its region and credentials from: in a Lambda sandbox, the environment the
//! runtime sets; elsewhere (an operator running klarna-ops), the usual chains, profiles included.
//! One test in this process, because it changes the environment.

use aws_sdk_dynamodb::config::ProvideCredentials;

#[tokio::test]
async fn lambda_takes_the_runtime_environment_and_operators_keep_their_profiles() {
    let dir = std::env::temp_dir().join(format!("sdk-config-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("config");
    std::fs::write(
        &config,
        "[profile operator]\nregion = ap-south-1\naws_access_key_id = AKIDOPERATOR\n\
         aws_secret_access_key = generated-at-test-time\n",
    )
    .unwrap();
    std::env::set_var("AWS_CONFIG_FILE", &config);
    std::env::set_var("AWS_SHARED_CREDENTIALS_FILE", dir.join("none"));
    std::env::set_var("AWS_PROFILE", "operator");
    for v in [
        "AWS_REGION",
        "AWS_DEFAULT_REGION",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_LAMBDA_FUNCTION_NAME",
    ] {
        std::env::remove_var(v);
    }

    // An operator's machine: the named profile.
    let sdk = shared::aws::sdk_config().await;
    assert_eq!(sdk.region().map(|r| r.as_ref()), Some("ap-south-1"));
    let creds = sdk
        .credentials_provider()
        .expect("a credentials provider")
        .provide_credentials()
        .await
        .expect("credentials from the profile");
    assert_eq!(creds.access_key_id(), "AKIDOPERATOR");

    // A Lambda sandbox: the runtime's region and the execution role's session credentials.
    std::env::set_var("AWS_LAMBDA_FUNCTION_NAME", "klarna-webhook");
    std::env::set_var("AWS_REGION", "eu-north-1");
    std::env::set_var("AWS_ACCESS_KEY_ID", "ASIATESTROLEKEY");
    std::env::set_var("AWS_SECRET_ACCESS_KEY", "generated-at-test-time");
    std::env::set_var("AWS_SESSION_TOKEN", "session-of-the-role");
    let sdk = shared::aws::sdk_config().await;
    assert_eq!(sdk.region().map(|r| r.as_ref()), Some("eu-north-1"));
    let creds = sdk
        .credentials_provider()
        .expect("a credentials provider")
        .provide_credentials()
        .await
        .expect("credentials from the environment");
    assert_eq!(creds.access_key_id(), "ASIATESTROLEKEY");
    assert_eq!(creds.session_token(), Some("session-of-the-role"));
    let _ = std::fs::remove_dir_all(&dir);
}
