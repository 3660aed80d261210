//! The one integration-test binary: real registry, real peer tools, in-process fault server.
mod harness;
mod fetch_real;
mod fetch_faults;
mod fetch_proxy;
mod store_cmds;
mod bundle;
mod export;
mod push;
mod full_disk;
mod credentials;
mod hostile_store;
mod litter;
mod archive_source;
mod matrix;
mod kill9;
mod mutation;
mod exact;
