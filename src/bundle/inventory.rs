//! Inventory files: the list of blobs a store holds, written on the offline side so the
//! connected side can make a delta bundle against it.
use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;

use super::format::Base;
use super::plan::BaseSet;
use crate::digest::Digest;
use crate::error::{Error, IoContext, Result};
use crate::store::Store;

pub const FIRST_LINE: &str = "# ocibundle inventory v1";

/// The inventory text of a store: every blob, sorted, with its size.
pub fn render(store: &Store) -> Result<String> {
    let mut lines = Vec::new();
    for entry in std::fs::read_dir(store.blobs_dir()).at(store.blobs_dir())? {
        let entry = entry.at(store.blobs_dir())?;
        let name = entry.file_name().to_string_lossy().to_string();
        let Ok(d) = format!("sha256:{name}").parse::<Digest>() else { continue };
        let len = entry.metadata().at(entry.path())?.len();
        lines.push(format!("{d} {len}"));
    }
    lines.sort();
    let mut out = String::from(FIRST_LINE);
    out.push('\n');
    for l in lines {
        out.push_str(&l);
        out.push('\n');
    }
    Ok(out)
}

pub fn is_inventory(path: &Path) -> Result<bool> {
    let f = std::fs::File::open(path).at(path)?;
    let mut head = vec![0u8; FIRST_LINE.len()];
    let n = f.take(FIRST_LINE.len() as u64).read(&mut head).at(path)?;
    Ok(n == head.len() && head == FIRST_LINE.as_bytes())
}

pub fn read(path: &Path) -> Result<BaseSet> {
    let data = crate::limits::read_file_capped(path, crate::limits::INVENTORY)?;
    let mut digests = BTreeSet::new();
    for (i, line) in BufReader::new(&data[..]).lines().enumerate() {
        let line = line.at(path)?;
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let d = line.split_whitespace().next().unwrap_or("");
        let d: Digest = d.parse().map_err(|_| Error::Other(format!("{}: line {}: not a blob digest", path.display(), i + 1)))?;
        digests.insert(d);
    }
    Ok(BaseSet { base: Base { kind: "inventory".into(), id: Digest::of(&data).hex().to_string() }, digests })
}
