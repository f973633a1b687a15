//! AWS SDK configuration shared by the DynamoDB store and the WAF enforcer, and the same
//! credentials for the S3 log source.
//!
//! Credentials come from the default provider chain (environment, profile, SSO, instance or
//! task role) and are never logged. `region`/`endpoint` from the config override the
//! environment (`AWS_REGION`, `AWS_ENDPOINT_URL`), e.g. for an emulator.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region, SdkConfig};
use object_store::aws::AwsCredential;

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

/// An error and its causes on one line, each cause's first line only (the SDK's credential
/// errors put a list of every provider tried under a cause).
fn causes(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = String::new();
    let mut next = Some(e);
    while let Some(cause) = next {
        let line = cause.to_string();
        // "no credentials found in chain. Attempted:", then a line per provider.
        let line = line.lines().next().unwrap_or_default().trim_end_matches(':').trim_end_matches(" Attempted");
        if !text.ends_with(line) {
            if !text.is_empty() {
                text.push_str(": ");
            }
            text.push_str(line);
        }
        next = cause.source();
    }
    text
}

/// The service error code (e.g. `ResourceNotFoundException`), if the service answered.
pub fn error_code<E: ProvideErrorMetadata, R>(e: &SdkError<E, R>) -> Option<&str> {
    e.as_service_error().and_then(|s| s.code())
}

/// S3 requests (object_store) signed with the credentials the SDK clients use: the default
/// provider chain, shared profiles, SSO and `credential_process` included. object_store's
/// own lookup reads only the environment and the instance or task role, so an operator
/// whose credentials are in a profile had DynamoDB and WAF working and S3 failing on the
/// instance metadata service.
#[derive(Debug)]
pub struct S3Credentials {
    provider: aws_credential_types::provider::SharedCredentialsProvider,
    /// object_store asks before every request, and the chain may read files or call a
    /// service: the last credential, with its expiry if it has one.
    cached: tokio::sync::Mutex<Option<(Arc<AwsCredential>, Option<SystemTime>)>>,
}

/// Credentials are fetched again this long before they expire.
const REFRESH_BEFORE_EXPIRY: Duration = Duration::from_secs(300);

impl S3Credentials {
    pub fn new(provider: aws_credential_types::provider::SharedCredentialsProvider) -> Self {
        S3Credentials { provider, cached: tokio::sync::Mutex::new(None) }
    }
}

#[async_trait::async_trait]
impl object_store::CredentialProvider for S3Credentials {
    type Credential = AwsCredential;

    async fn get_credential(&self) -> object_store::Result<Arc<AwsCredential>> {
        use aws_credential_types::provider::ProvideCredentials;
        let mut cached = self.cached.lock().await;
        if let Some((credential, expiry)) = cached.as_ref()
            && expiry.is_none_or(|expiry| SystemTime::now() + REFRESH_BEFORE_EXPIRY < expiry)
        {
            return Ok(credential.clone());
        }
        let found = self.provider.provide_credentials().await.map_err(|e| object_store::Error::Generic {
            store: "S3",
            source: format!("no AWS credentials (environment, profile, SSO, or instance or task role): {}", causes(&e)).into(),
        })?;
        let credential = Arc::new(AwsCredential {
            key_id: found.access_key_id().to_string(),
            secret_key: found.secret_access_key().to_string(),
            token: found.session_token().map(str::to_string),
        });
        *cached = Some((credential.clone(), found.expiry()));
        Ok(credential)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Credentials that expire are fetched again before they do; static ones once.
    #[tokio::test]
    async fn s3_credentials_come_from_the_sdk_chain_and_are_fetched_again_before_they_expire() {
        use aws_credential_types::Credentials;
        use object_store::CredentialProvider;
        #[derive(Debug)]
        struct Counting(std::sync::atomic::AtomicU32, Option<SystemTime>);
        impl aws_credential_types::provider::ProvideCredentials for Counting {
            fn provide_credentials<'a>(&'a self) -> aws_credential_types::provider::future::ProvideCredentials<'a>
            where
                Self: 'a,
            {
                let n = self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let credentials = Credentials::new(format!("key{n}"), "secret", Some("token".into()), self.1, "test");
                aws_credential_types::provider::future::ProvideCredentials::ready(Ok(credentials))
            }
        }
        let lasting = S3Credentials::new(aws_credential_types::provider::SharedCredentialsProvider::new(Counting(0.into(), None)));
        for _ in 0..3 {
            let credential = lasting.get_credential().await.unwrap();
            assert_eq!((credential.key_id.as_str(), credential.token.as_deref()), ("key0", Some("token")));
        }
        let soon = Some(SystemTime::now() + Duration::from_secs(60));
        let expiring = S3Credentials::new(aws_credential_types::provider::SharedCredentialsProvider::new(Counting(0.into(), soon)));
        assert_eq!(expiring.get_credential().await.unwrap().key_id, "key0");
        assert_eq!(expiring.get_credential().await.unwrap().key_id, "key1", "within the refresh margin: fetched again");
    }

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
