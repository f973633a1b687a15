//! AWS SDK configuration shared by the DynamoDB store and the WAF enforcer.
//!
//! Credentials come from the default provider chain (environment, profile, SSO, instance or
//! task role) and are never logged. `region`/`endpoint` from the config override the
//! environment (`AWS_REGION`, `AWS_ENDPOINT_URL`), e.g. for an emulator.

use aws_config::{BehaviorVersion, Region, SdkConfig};

pub async fn sdk_config(region: Option<&str>, endpoint: Option<&str>) -> SdkConfig {
    let mut loader = aws_config::defaults(BehaviorVersion::latest());
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
