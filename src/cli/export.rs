//! `ocibundle export`: restore images from a bundle or the store as a docker-archive, an OCI
//! layout or an OCI archive.
use std::path::{Path, PathBuf};

use anyhow::bail;
use clap::Args;
use ocibundle::bundle::Bundle;
use ocibundle::export::{self, ExportOptions, Format};
use ocibundle::source::{BundleOverStore, Source};
use ocibundle::{Platform, Store};

use super::fetch::{collect_refs, ImageArgs};

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
}

#[derive(Args)]
pub struct ExportArgs {
    #[command(flatten)]
    target: Target,
    /// Read images from this bundle (any of its volumes) instead of the store
    #[arg(long, value_name = "BUNDLE")]
    from: Option<PathBuf>,
    #[command(flatten)]
    images: ImageArgs,
    /// Every image in the source
    #[arg(long, conflicts_with_all = ["refs", "images"])]
    all: bool,
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
    let opts = ExportOptions { format, output: (!stdout).then_some(output), platform, platform_given, force: a.force, jobs, progress: !a.json && !stdout };

    let store = Store::open_existing(root).ok();
    let bundle = a.from.as_deref().map(Bundle::open).transpose()?;
    let over;
    let source: &dyn Source = match (&bundle, &store) {
        (Some(b), s) => {
            over = BundleOverStore { bundle: b, store: s.as_ref() };
            &over
        }
        (None, Some(s)) => s,
        (None, None) => bail!("no store at {} (fetch or import images first, or pass --from BUNDLE)", root.display()),
    };
    let names: Vec<String> = if a.all {
        source.refs()?.into_iter().map(|(n, _)| n).collect()
    } else {
        collect_refs(&a.images.refs, a.images.images.as_deref())?.iter().map(|r| r.to_string()).collect()
    };
    if names.is_empty() {
        bail!("the {} holds no images", source.name());
    }
    let report = export::export(source, &names, &opts)?;
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
