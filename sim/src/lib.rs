//! The simulator: the production core under modelled worlds and injected faults.
//!
//! Two tiers run the same core: `cluster` (pure, single-threaded, virtual clock: fast enough for
//! property tests and seed sweeps) and, in the `turmoil` module, the real async driver over
//! turmoil's simulated network.

pub mod clock;
pub mod cluster;
pub mod fault;
pub mod invariants;
pub mod lease_model;
pub mod mongo_model;
pub mod rng;
pub mod scenario;
pub mod sweep;
pub mod trace;
pub mod turmoil_tier;
pub mod world;

pub use cluster::{Sim, SimConfig};
pub use fault::Fault;
pub use scenario::{Outcome, Scenario};
pub use sweep::{random_schedule, run_schedule, sweep, Schedule, SweepReport};
