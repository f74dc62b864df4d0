//! Adapters: the traits for each outside world and the driver that runs a core node on them.

pub mod traits;

pub use traits::*;
