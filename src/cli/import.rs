//! `ocibundle import`: copy a bundle into the store, verifying every blob on the way in.
use std::path::{Path, PathBuf};

use clap::Args;
use ocibundle::bundle::Bundle;
use ocibundle::archive::Copied;
use ocibundle::transport::{self, Opened};
use ocibundle::Store;

#[derive(Args)]
pub struct ImportArgs {
    /// The bundle (or any of its volumes, or - for stdin); or docker-archive:FILE (what
    /// `docker save` / `podman save` write, many images per file); or oci:DIR[:REF] /
    /// oci-archive:FILE[:REF] (an OCI image layout, digests kept)
    #[arg(value_name = "FILE")]
    file: PathBuf,
    /// Print JSON
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    sign: super::SignArgs,
}

pub fn run(root: &Path, a: ImportArgs) -> anyhow::Result<i32> {
    let store = Store::open(root)?;
    gate(&store, &a)?;
    if a.file.to_str().is_some_and(transport::is_archive) {
        return match transport::open(&a.file)? {
            Opened::DockerArchive(ar) => import_docker_archive(&store, ar, a.json),
            Opened::Layout(l) => import_layout(&store, l, a.json),
            Opened::Bundle(_) => unreachable!("is_archive said it names an archive or layout"),
        };
    }
    let r = match super::stream_input(&a.file)? {
        Some((reader, name)) => match ocibundle::bundle::stream::open(reader, &name, &store.tmp_dir())? {
            ocibundle::bundle::stream::Opened::Walk(r) => ocibundle::bundle::stream::import(r, &name, &store)?,
            ocibundle::bundle::stream::Opened::Spooled(f) => {
                let mut b = Bundle::open(f.path())?;
                b.name = name;
                b.import(&store, !a.json)?
            }
        },
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

fn import_docker_archive(store: &Store, ar: ocibundle::archive::docker::DockerArchive, json: bool) -> anyhow::Result<i32> {
    let r = ocibundle::archive::docker::import(ar, store)?;
    let lines = r.images.iter().map(|i| format!("{} (image ID {}, manifest {})", i.reference, i.image_id, i.manifest));
    print_archive_import(&r, json, lines, &r.copied, &r.notes)
}

/// An archive import's report: the JSON document, or a line per image, the counts and the
/// notes (on stderr).
fn print_archive_import(doc: &impl serde::Serialize, json: bool, lines: impl Iterator<Item = String>, c: &Copied, notes: &[String]) -> anyhow::Result<i32> {
    if json {
        println!("{}", serde_json::to_string_pretty(doc)?);
        return Ok(0);
    }
    for l in lines {
        println!("{l}");
    }
    println!("imported {} blobs ({} bytes), {} already present ({} bytes)", c.blobs_imported, c.bytes_imported, c.blobs_present, c.bytes_present);
    for n in notes {
        eprintln!("note: {n}");
    }
    Ok(0)
}

fn import_layout(store: &Store, layout: ocibundle::archive::oci::Layout, json: bool) -> anyhow::Result<i32> {
    let r = ocibundle::archive::oci::import(layout, store)?;
    let lines = r.images.iter().map(|i| format!("{} ({})", i.reference, i.digest));
    print_archive_import(&r, json, lines, &r.copied, &r.notes)
}

/// `--key`/`--require-signed`: every image's signatures checked in the source before anything
/// is stored (a stream cannot be read twice, so it cannot be gated).
fn gate(store: &Store, a: &ImportArgs) -> anyhow::Result<()> {
    if a.sign.keys.is_empty() && !a.sign.require_signed {
        return Ok(());
    }
    if super::stream_input(&a.file)?.is_some() {
        anyhow::bail!("{}: signatures are checked in a file, not a stream (import the file itself with --key)", a.file.display());
    }
    let opened = transport::open(&a.file)?;
    let source = opened.source(Some(store));
    let images = source.refs()?;
    a.sign.gate(&*source, &images, &|n| n.to_string(), a.json)?;
    Ok(())
}
