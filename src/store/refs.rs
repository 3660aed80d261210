//! The store's `index.json`: one descriptor per reference, updated under a lock, atomically.
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::Store;
use crate::error::{Error, Result};
use crate::image::{media, Descriptor};
use crate::limits;

pub const ANNOTATION_REF_NAME: &str = "org.opencontainers.image.ref.name";
/// The full image name containerd (and Docker >= 25) keep in an index.json entry.
pub const ANNOTATION_CONTAINERD_NAME: &str = "io.containerd.image.name";
/// Set when one platform was picked from an index: the index it came from (also stored).
pub const ANNOTATION_INDEX_DIGEST: &str = "io.ocibundle.index.digest";

/// The index a reference's platform was picked from, as its annotation names it (none when
/// it has none; an error when the annotation is not a digest).
pub fn picked_from(desc: &Descriptor) -> Result<Option<crate::digest::Digest>> {
    desc.annotations.as_ref().and_then(|a| a.get(ANNOTATION_INDEX_DIGEST)).map(|d| d.parse()).transpose()
}

/// A stored reference and the descriptor it points at.
#[derive(Clone, Debug)]
pub struct RefEntry {
    pub name: String,
    pub descriptor: Descriptor,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct IndexJson {
    schema_version: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    media_type: Option<String>,
    manifests: Vec<Descriptor>,
}

pub(super) fn write_index(store: &Store, entries: &[RefEntry]) -> Result<()> {
    let mut sorted: Vec<&RefEntry> = entries.iter().collect();
    sorted.sort_by(|a, b| a.name.cmp(&b.name));
    let index = IndexJson {
        schema_version: 2,
        media_type: Some(media::OCI_INDEX.to_string()),
        manifests: sorted.iter().map(|e| e.descriptor.clone()).collect(),
    };
    let mut bytes = serde_json::to_vec_pretty(&index).map_err(|e| Error::Other(e.to_string()))?;
    bytes.push(b'\n');
    store.write_atomic(&store.index_path(), &bytes)
}

impl Store {
    /// The references in `index.json`. Entries without a ref name are kept under their digest.
    pub fn refs(&self) -> Result<Vec<RefEntry>> {
        let path = self.index_path();
        let bytes = limits::read_file_capped(&path, limits::INDEX_JSON)?;
        let index: IndexJson = limits::parse_json(&bytes, &path.display().to_string())?;
        Ok(index
            .manifests
            .into_iter()
            .map(|d| RefEntry {
                name: d.annotations.as_ref().and_then(|a| a.get(ANNOTATION_REF_NAME)).cloned().unwrap_or_else(|| d.digest.to_string()),
                descriptor: d,
            })
            .collect())
    }

    /// Points each named reference at its descriptor (replacing an older entry of that name).
    /// Call only after every blob the descriptors reach is stored: refs are the commit.
    pub fn set_refs(&self, updates: &[(String, Descriptor)]) -> Result<()> {
        let _lock = self.lock_file("index.lock", true)?;
        let mut map: BTreeMap<String, RefEntry> = self.refs()?.into_iter().map(|e| (e.name.clone(), e)).collect();
        for (name, desc) in updates {
            let mut desc = desc.clone();
            desc.annotations.get_or_insert_with(BTreeMap::new).insert(ANNOTATION_REF_NAME.to_string(), name.clone());
            map.insert(name.clone(), RefEntry { name: name.clone(), descriptor: desc });
        }
        let entries: Vec<RefEntry> = map.into_values().collect();
        self.sync_blobs_dir()?;
        write_index(self, &entries)
    }

    /// Removes the named references (gc: referrers whose subject is gone).
    pub fn remove_refs(&self, names: &[String]) -> Result<()> {
        let _lock = self.lock_file("index.lock", true)?;
        let entries: Vec<RefEntry> = self.refs()?.into_iter().filter(|e| !names.contains(&e.name)).collect();
        write_index(self, &entries)
    }

    /// Looks up one reference by its full name.
    pub fn get_ref(&self, name: &str) -> Result<Option<RefEntry>> {
        Ok(self.refs()?.into_iter().find(|e| e.name == name))
    }
}
