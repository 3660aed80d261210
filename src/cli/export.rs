//! `ocibundle export`: restore images from a bundle or the store as a docker-archive, an OCI
//! layout or an OCI archive.
use std::path::{Path, PathBuf};

use anyhow::bail;
use clap::Args;
use ocibundle::export::{self, ExportOptions, Format};
use ocibundle::Platform;


#[derive(Args)]
#[group(id = "target", required = true, multiple = false)]
pub struct Target {
    /// One docker-archive tar with every image (`-` = stdout, e.g. into `docker load`)
    #[arg(long, value_name = "FILE", group = "target")]
    docker_archive: Option<PathBuf>,
    /// An OCI image layout directory (byte-identical blobs and manifests)
    #[arg(long, value_name = "DIR", group = "target")]
    oci_layout: Option<PathBuf>,
    /// An OCI image layout as one tar (`-` = stdout)
    #[arg(long, value_name = "FILE", group = "target")]
    oci_archive: Option<PathBuf>,
    /// An artifact's files, each layer as the file its title names, below DIR only
    #[arg(long, value_name = "DIR", group = "target")]
    files: Option<PathBuf>,
    /// An Ollama models directory (blobs/ and manifests/), for models from an Ollama-style registry
    #[arg(long, value_name = "DIR", group = "target")]
    ollama: Option<PathBuf>,
}

#[derive(Args)]
pub struct ExportArgs {
    #[command(flatten)]
    target: Target,
    #[command(flatten)]
    source: super::SourceArgs,
    /// Platform to export from multi-platform images (docker-archive; default: this machine's)
    #[arg(long, value_name = "OS/ARCH[/VARIANT]")]
    platform: Option<String>,
    /// Replace an existing output
    #[arg(long)]
    force: bool,
    /// Layers decompressed in parallel (default: number of cores)
    #[arg(long, value_name = "N")]
    jobs: Option<usize>,
    /// Print a JSON summary on stdout
    #[arg(long)]
    json: bool,
}

pub fn run(root: &Path, a: ExportArgs) -> anyhow::Result<i32> {
    if a.target.files.is_some() || a.target.ollama.is_some() {
        return run_files(root, &a);
    }
    let (format, output) = match (&a.target.docker_archive, &a.target.oci_layout, &a.target.oci_archive) {
        (Some(f), _, _) => (Format::DockerArchive, f.clone()),
        (_, Some(d), _) => (Format::OciLayout, d.clone()),
        (_, _, Some(f)) => (Format::OciArchive, f.clone()),
        _ => bail!("choose --docker-archive, --oci-layout or --oci-archive"),
    };
    let stdout = output.as_os_str() == "-";
    if stdout && format == Format::OciLayout {
        bail!("--oci-layout needs a directory, not -");
    }
    if stdout && a.json {
        bail!("--json cannot share stdout with the archive");
    }
    let platform_given = a.platform.is_some();
    let platform = match &a.platform {
        Some(p) => p.parse::<Platform>()?,
        None => Platform::host(),
    };
    let jobs = a.jobs.unwrap_or_else(|| std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2));
    let opts = ExportOptions { format, output: (!stdout).then_some(output), platform, platform_given, force: a.force, skip_non_images: a.source.all, jobs, progress: !a.json && !stdout };

    let sources = super::Sources::open(root, a.source.from.as_deref())?;
    let report = sources.with(|source| -> anyhow::Result<_> {
        let (names, leave) = super::selected_names(source, &a.source)?;
        Ok(export::export(source, &names, &leave, &opts)?)
    })?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else if !stdout {
        for i in &report.images {
            println!("{} {}", i.reference, i.image_id);
        }
        println!("wrote {} ({} bytes)", report.output, report.bytes);
    }
    Ok(0)
}

/// `--files DIR REF` and `--ollama DIR REF...`: artifacts as plain files.
fn run_files(root: &Path, a: &ExportArgs) -> anyhow::Result<i32> {
    let sources = super::Sources::open(root, a.source.from.as_deref())?;
    sources.with(|source| -> anyhow::Result<i32> {
        let (names, _) = super::selected_names(source, &a.source)?;
        // Files and models only: the signatures and SBOMs `select` brings along stay behind.
        let images: Vec<_> = export::select(source, &names)?.into_iter().filter(|(n, _)| !ocibundle::referrers::is_referrer_ref(n)).collect();
        if let Some(dir) = &a.target.files {
            let [(name, desc)] = images.as_slice() else {
                bail!("--files writes one artifact's files: name exactly one reference ({} given)", images.len());
            };
            let r = export::files::write_files(source, name, desc, dir, a.force)?;
            for s in &r.skipped {
                eprintln!("note: {name}: layer {s} has no title: left out");
            }
            if a.json {
                println!("{}", serde_json::to_string_pretty(&r)?);
            } else {
                for f in &r.files {
                    println!("{} {} {}", f.digest, f.size, f.path);
                }
                println!("wrote {} files ({} bytes) to {}", r.files.len(), r.bytes, r.output);
            }
        } else if let Some(dir) = &a.target.ollama {
            let models = export::files::write_ollama(source, &images, dir)?;
            if a.json {
                println!("{}", serde_json::to_string_pretty(&serde_json::json!({ "output": dir, "models": models }))?);
            } else {
                for m in &models {
                    println!("{} {} ({} blobs written, {} present, {} bytes)", m.reference, m.ollama_name, m.blobs_written, m.blobs_present, m.bytes);
                }
            }
        }
        Ok(0)
    })
}
