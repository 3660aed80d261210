//! Shared test helpers: registry processes, fixture images, the fault server, running the CLI.
pub mod bundles;
pub mod cmd;
pub mod daemon;
pub mod docker;
pub mod fakereg;
pub mod fixtures;
pub mod peers;
pub mod procfs;
pub mod registry;
