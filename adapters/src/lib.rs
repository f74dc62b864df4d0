//! Adapters: one trait per outside world, the driver that runs a core node on them, and the
//! real backends (behind cargo features, so the simulator builds without them).

pub mod accept;
#[cfg(feature = "etcd")]
pub mod arbiter_etcd;
pub mod arbiters;
pub mod auth_codec;
#[cfg(feature = "cloud")]
pub mod cloud;
pub mod codec;
pub mod driver;
pub mod drop_log;
#[cfg(feature = "fs-sync")]
pub mod fs_sync;
pub mod journal;
#[cfg(feature = "lan")]
pub mod lan;
#[cfg(feature = "mariadb")]
pub mod mariadb;
#[cfg(feature = "mongo")]
pub mod mongo;
pub mod services_cmd;
pub mod store_file;
pub mod traits;
pub mod udp;
pub mod unconfigured;
pub mod witness_tcp;

pub use codec::{JsonCodec, MessageCodec};
pub use driver::{Backends, CommandRequest, Driver, DriverConfig, DriverHandle, DriverStats};
pub use traits::*;
pub use unconfigured::NotConfigured;
