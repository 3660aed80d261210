//! The bundle: one file (or volume set) carrying every blob of a set of images once.
//! Format spec: docs/design.md, "Bundle format".
pub mod base;
pub mod chunked;
pub mod format;
pub mod inventory;
pub mod packcache;
pub mod plan;
pub mod reader;
pub mod rebuild;
pub mod stream;
pub mod volumes;
pub mod writer;

pub use plan::{plan, BaseSet, BundlePlan};
pub use reader::Bundle;
pub use volumes::Target;

use std::path::Path;

use crate::error::Result;

/// What a delta is made against: an older bundle (everything it carries or requires) or an
/// inventory file written by `store inventory` on the offline side.
pub fn load_base(path: &Path) -> Result<BaseSet> {
    if inventory::is_inventory(path)? {
        return inventory::read(path);
    }
    let b = Bundle::open(path)?;
    let digests = b.index.entries.iter().map(|e| e.digest.clone()).chain(b.index.requires.iter().map(|r| r.digest.clone())).collect();
    Ok(BaseSet { base: format::Base { kind: "bundle".into(), id: b.index.bundle_id.to_string() }, digests })
}
