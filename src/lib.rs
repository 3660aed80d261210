//! ocibundle: carry container images across an air gap, daemonless.
//!
//! `registry` pulls manifests and blobs over the OCI distribution API into the content-addressed
//! `store` (an OCI image layout), verifying every byte against its digest on the way in.
pub mod archive;
pub mod bundle;
pub mod cancel;
pub mod chunk;
pub mod codec;
pub mod copy;
pub mod digest;
pub mod error;
pub mod export;
pub mod fetch;
pub mod graph;
pub mod image;
pub mod limits;
pub mod litter;
pub mod lock;
pub mod mapped;
pub mod media;
pub mod pool;
pub mod progress;
pub mod push;
pub mod reference;
pub mod referrers;
pub mod registry;
pub mod signature;
pub mod source;
pub mod store;
pub mod transport;
pub mod validate;
pub mod writeback;

pub use digest::{DiffId, Digest};
pub use error::{Error, Result};
pub use reference::{Platform, Reference};
pub use store::Store;
