//! revokd: finds leaked or shared video playback sessions in CloudFront access logs and
//! revokes them at the edge.
//!
//! Stages, one module each: [`source`] (logs from S3 or a directory) → [`analysis`]
//! (DataFusion SQL from `queries/`) → [`store`] (DynamoDB or embedded revocation list) →
//! [`enforcer`] (WAF rule group or file); [`run`] ties them into one run, [`daemon`] schedules
//! runs, [`cli`] is the command line.

pub mod analysis;
pub mod atomic_file;
pub mod aws;
pub mod cli;
pub mod config;
pub mod daemon;
pub mod enforcer;
pub mod geo;
pub mod memory;
pub mod ownership;
pub mod retry;
pub mod run;
pub mod session;
pub mod sim;
pub mod source;
pub mod store;
pub mod telemetry;
