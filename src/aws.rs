//! AWS SDK configuration shared by the DynamoDB store and the WAF enforcer.
//!
//! Credentials come from the default provider chain (environment, profile, SSO, instance or
//! task role) and are never logged. `region`/`endpoint` from the config override the
//! environment (`AWS_REGION`, `AWS_ENDPOINT_URL`), e.g. for an emulator.

use std::time::Duration;

use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region, SdkConfig};

/// One request to DynamoDB or WAF, answered or not: a connection that hangs without a reply
/// would otherwise hold the run, and every scheduled run after it, forever.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(30);
/// One call, its retries included.
const OPERATION_TIMEOUT: Duration = Duration::from_secs(90);

pub async fn sdk_config(region: Option<&str>, endpoint: Option<&str>) -> SdkConfig {
    sdk_config_timing_out(region, endpoint, ATTEMPT_TIMEOUT, OPERATION_TIMEOUT).await
}

async fn sdk_config_timing_out(region: Option<&str>, endpoint: Option<&str>, attempt: Duration, operation: Duration) -> SdkConfig {
    let timeouts = TimeoutConfig::builder()
        // The SDK's own default, which a timeout config of our own would otherwise drop.
        .connect_timeout(Duration::from_millis(3100))
        .operation_attempt_timeout(attempt)
        .operation_timeout(operation)
        .build();
    let mut loader = aws_config::defaults(BehaviorVersion::latest()).timeout_config(timeouts);
    if let Some(region) = region {
        loader = loader.region(Region::new(region.to_string()));
    }
    if let Some(endpoint) = endpoint {
        loader = loader.endpoint_url(endpoint);
    }
    loader.load().await
}

use aws_sdk_dynamodb::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};

/// An SDK error as a user should see it: the service's code and message, or for transport
/// failures the whole chain of causes (never credentials or request internals).
pub fn describe_error<E, R>(e: &SdkError<E, R>) -> String
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    match e {
        SdkError::ServiceError(s) => {
            let err = s.err();
            format!("{}: {}", err.code().unwrap_or("error"), err.message().unwrap_or("(no message)"))
        }
        other => DisplayErrorContext(other).to_string(),
    }
}

/// The service error code (e.g. `ResourceNotFoundException`), if the service answered.
pub fn error_code<E: ProvideErrorMetadata, R>(e: &SdkError<E, R>) -> Option<&str> {
    e.as_service_error().and_then(|s| s.code())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_service_that_accepts_and_never_answers_fails_the_call_instead_of_hanging_it() {
        // A listener that accepts connections and never replies.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let silent = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((socket, _)) = listener.accept().await {
                held.push(socket);
            }
        });
        let sdk = sdk_config_timing_out(Some("us-east-1"), Some(&endpoint), Duration::from_millis(300), Duration::from_secs(1)).await;
        let config = aws_sdk_dynamodb::config::Builder::from(&sdk)
            .credentials_provider(aws_sdk_dynamodb::config::Credentials::new("testing", "testing", None, None, "test"))
            .build();
        let client = aws_sdk_dynamodb::Client::from_conf(config);
        let call = client.describe_table().table_name("revocations").send();
        // Bounded here only so that a regression fails the test instead of hanging it.
        let result = tokio::time::timeout(Duration::from_secs(60), call).await.expect("the SDK's own timeout ends the call");
        let error = describe_error(&result.unwrap_err());
        assert!(error.to_lowercase().contains("timeout"), "{error}");
        silent.abort();
    }
}
