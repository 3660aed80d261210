//! `ocibundle import`: copy a bundle into the store, verifying every blob on the way in.
use std::path::{Path, PathBuf};

use clap::Args;
use ocibundle::bundle::Bundle;
use ocibundle::Store;

#[derive(Args)]
pub struct ImportArgs {
    /// The bundle (or any of its volumes, or - for stdin), or docker-archive:FILE (what
    /// `docker save` / `podman save` write, many images per file)
    #[arg(value_name = "FILE")]
    file: PathBuf,
    /// Print JSON
    #[arg(long)]
    json: bool,
}

pub fn run(root: &Path, a: ImportArgs) -> anyhow::Result<i32> {
    let store = Store::open(root)?;
    if let Some(archive) = a.file.to_str().and_then(|f| f.strip_prefix("docker-archive:")) {
        return import_docker_archive(&store, Path::new(archive), a.json);
    }
    let r = match super::stream_input(&a.file)? {
        Some((reader, name)) => ocibundle::bundle::stream::import(reader, &name, &store)?,
        None => Bundle::open(&a.file)?.import(&store, !a.json)?,
    };
    if a.json {
        println!("{}", serde_json::to_string_pretty(&r)?);
    } else {
        for i in &r.images {
            println!("{i}");
        }
        println!("imported {} blobs ({} bytes), {} already present ({} bytes)", r.blobs_imported, r.bytes_imported, r.blobs_present, r.bytes_present);
    }
    Ok(0)
}

fn import_docker_archive(store: &Store, path: &Path, json: bool) -> anyhow::Result<i32> {
    let r = ocibundle::archive::docker::import(path, store)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&r)?);
    } else {
        for i in &r.images {
            println!("{} (image ID {}, manifest {})", i.reference, i.image_id, i.manifest);
        }
        println!("imported {} blobs ({} bytes), {} already present ({} bytes)", r.blobs_imported, r.bytes_imported, r.blobs_present, r.bytes_present);
        for n in &r.notes {
            eprintln!("note: {n}");
        }
    }
    Ok(0)
}
