//! Shared test helpers: registry processes, fixture images, the fault server, the fault proxy, running the CLI.
pub mod bundles;
pub mod cmd;
pub mod daemon;
pub mod docker;
pub mod fakereg;
pub mod faultproxy;
pub mod fixtures;
pub mod peers;
pub mod procfs;
pub mod registry;
pub mod signer;
