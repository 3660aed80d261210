//! A delta's chunks that the receiving store already holds in its own layers: the base layers
//! the bundle names are cut the way the writer cut them (their recipes from the analysis cache,
//! else split and cut here), and the chunks the bundle needs are copied into a spool file in the
//! store's temp dir (gone when dropped), each checked against its name when read.
use std::collections::{HashMap, HashSet};
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use sha2::Digest as _;

use super::rebuild::BaseChunks;
use super::Bundle;
use crate::chunk::analyze::{cut, walk, Analyzed, Cache};
use crate::error::{Error, Result};
use crate::image::Descriptor;
use crate::store::Store;

pub struct StoreChunks {
    file: tempfile::NamedTempFile,
    map: HashMap<[u8; 32], (u64, u32)>,
    name: String,
}

impl BaseChunks for StoreChunks {
    fn chunk(&self, sha: &[u8; 32], len: u32) -> Result<Option<Vec<u8>>> {
        let Some(&(at, n)) = self.map.get(sha) else { return Ok(None) };
        if n != len {
            return Ok(None);
        }
        let mut v = vec![0u8; n as usize];
        self.file.as_file().read_exact_at(&mut v, at).map_err(|e| Error::io(self.file.path(), e))?;
        if sha2::Sha256::digest(&v).as_slice() != sha {
            return Err(Error::Other(format!("{}: chunk {} from the store's base layers no longer hashes to its name", self.name, hex::encode(sha))));
        }
        Ok(Some(v))
    }
}

/// Gives `bundle` the chunks it leaves to its base, from `store`; nothing to do for a bundle
/// that carries every chunk it uses. A base layer the store lacks is one error naming it.
pub fn attach(bundle: &Bundle, store: &Store) -> Result<()> {
    let Some(chunks) = &bundle.chunks else { return Ok(()) };
    let mut needed: HashSet<[u8; 32]> = HashSet::new();
    for e in bundle.index.entries.iter().filter(|e| e.recipe.is_some()) {
        let layer = &e.recipe.as_ref().unwrap().layer;
        if let Some(r) = bundle.recipe(layer)? {
            needed.extend(r.chunks().filter(|(s, _)| !chunks.has(s)).map(|(s, _)| *s));
        }
    }
    if needed.is_empty() {
        return Ok(());
    }
    let name = bundle.name.clone();
    if bundle.index.base_layers.is_empty() {
        return Err(Error::Other(format!("{name}: {} chunk(s) its recipes name are not in the bundle, and it is not a delta (corrupt bundle)", needed.len())));
    }
    let file = tempfile::Builder::new().prefix("base-chunks-").tempfile_in(store.tmp_dir()).map_err(|e| Error::io(store.tmp_dir(), e))?;
    let mut map = HashMap::new();
    let mut at = 0u64;
    for r in &bundle.index.base_layers {
        if map.len() == needed.len() {
            break;
        }
        if !store.has_blob(&r.digest, Some(r.size)) {
            return Err(Error::Other(format!("{name}: delta bundle needs layer {} of its base, which the store {} lacks: import the base first", r.digest, store.root().display())));
        }
        let desc = Descriptor { media_type: crate::media::MediaType::Other("application/octet-stream".into()), digest: r.digest.clone(), size: r.size, platform: None, annotations: None };
        let recipe = match (Cache { store }).get(&desc) {
            Some(Analyzed::Recipe { recipe, .. }) => recipe,
            _ => cut(store, &desc)?,
        };
        let want: HashSet<usize> = recipe.chunks().enumerate().filter(|(_, (s, _))| needed.contains(*s) && !map.contains_key(*s)).map(|(i, _)| i).collect();
        if want.is_empty() {
            continue;
        }
        walk(store, &desc, &recipe, &want, &mut |sha, bytes| {
            if map.contains_key(sha) {
                return Ok(());
            }
            file.as_file().write_all_at(bytes, at).map_err(|e| Error::io(file.path(), e))?;
            map.insert(*sha, (at, bytes.len() as u32));
            at += bytes.len() as u64;
            Ok(())
        })?;
    }
    if map.len() < needed.len() {
        return Err(Error::Other(format!(
            "{name}: {} chunk(s) the delta leaves to its base are in none of its {} base layers in the store (was the base made from other images?)",
            needed.len() - map.len(),
            bundle.index.base_layers.len()
        )));
    }
    chunks.base.set(Arc::new(StoreChunks { file, map, name })).map_err(|_| Error::Other("base chunks attached twice".into()))?;
    Ok(())
}
