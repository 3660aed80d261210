//! `export`: restore images from a source (store or bundle) as a docker-archive, an OCI layout
//! or an OCI archive. Selection and output handling live here; each format has its own file.
mod docker_archive;
pub mod files;
mod layers;
mod oci;
pub mod tarw;

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::digest::Digest;
use crate::error::{Error, IoContext, Result};
use crate::graph;
use crate::image::{Descriptor, Manifest};
use crate::limits;
use crate::reference::Platform;
use crate::source::Source;

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Format {
    DockerArchive,
    OciLayout,
    OciArchive,
}

#[derive(Debug, Clone)]
pub struct ExportOptions {
    pub format: Format,
    /// `None` = stdout (archives only).
    pub output: Option<PathBuf>,
    /// The platform to export from multi-platform images (docker-archive), and whether the
    /// user chose it.
    pub platform: Platform,
    pub platform_given: bool,
    pub force: bool,
    /// docker-archive: leave out (with a note) what is not a container image (an artifact:
    /// model files, signatures) instead of refusing it; set for `--all`.
    pub skip_non_images: bool,
    pub jobs: usize,
    pub progress: bool,
}

#[derive(Debug, Serialize, Clone)]
pub struct ExportedImage {
    pub reference: String,
    /// Config digest (what docker and podman call the image ID).
    pub image_id: Digest,
    pub repo_tags: Vec<String>,
    pub platform: String,
    pub manifest_digest: Digest,
    pub layers: usize,
}

#[derive(Debug, Serialize)]
pub struct ExportReport {
    pub output: String,
    pub format: String,
    pub bytes: u64,
    pub images: Vec<ExportedImage>,
    /// Notes for the user (e.g. which platform was picked).
    #[serde(skip)]
    pub notes: Vec<String>,
}

/// Picks the named references from the source; an unknown one is an error listing what is there.
pub fn select(source: &dyn Source, names: &[String]) -> Result<Vec<(String, Descriptor)>> {
    let all = source.refs()?;
    let mut out = Vec::new();
    for n in names {
        match all.iter().find(|(r, _)| r == n) {
            Some(x) => out.push(x.clone()),
            None => {
                let have: Vec<&str> = all.iter().map(|(r, _)| r.as_str()).collect();
                let have = if have.is_empty() { "nothing".to_string() } else { have.join(", ") };
                return Err(Error::Other(format!("{n} is not in the {} (it holds: {have})", source.name())));
            }
        }
    }
    // Signatures, SBOMs and attestations travel with their images.
    crate::referrers::attach(source, &all, out)
}

/// Reads and parses a manifest or index from the source.
pub fn manifest(source: &dyn Source, desc: &Descriptor, what: &str) -> Result<Manifest> {
    Manifest::parse(source.read_small(desc, limits::MANIFEST)?, Some(&desc.media_type), what)
}

/// Every blob reachable from `desc` (the descriptor first, then depth-first), each once.
pub fn reachable(source: &dyn Source, name: &str, desc: &Descriptor) -> Result<Vec<Descriptor>> {
    let mut out: Vec<Descriptor> = Vec::new();
    graph::walk(desc, |d| {
        if !source.has(&d.digest) {
            return Err(Error::Other(format!("{name}: blob {} is missing from the {} (a delta bundle needs its base in the store)", d.digest, source.name())));
        }
        let mut clean = d.clone();
        clean.annotations = None;
        out.push(clean);
        graph::is_node(d).then(|| manifest(source, d, name)).transpose()
    })?;
    Ok(out)
}

/// Where the output goes: a temp name beside the final one, renamed on commit.
pub(crate) enum Output {
    File { file: File, tmp: PathBuf, fin: PathBuf, written: u64, drop_behind: crate::writeback::DropBehind },
    Stdout(io::Stdout),
}

impl Output {
    pub fn create(output: &Option<PathBuf>, force: bool) -> Result<Output> {
        let Some(fin) = output else { return Ok(Output::Stdout(io::stdout())) };
        refuse_existing(fin, force)?;
        let tmp = crate::litter::claim_temp(fin);
        let file = OpenOptions::new().read(true).write(true).create(true).truncate(true).open(&tmp).at(fin)?;
        Ok(Output::File { file, tmp, fin: fin.clone(), written: 0, drop_behind: crate::writeback::DropBehind::at(0) })
    }
    /// fsync and rename into place.
    pub fn commit(self) -> Result<()> {
        match self {
            Output::Stdout(mut s) => s.flush().map_err(|e| Error::io("stdout", e)),
            Output::File { file, tmp, fin, .. } => {
                file.sync_all().at(&tmp)?;
                drop(file);
                fs::rename(&tmp, &fin).at(&fin)?;
                Ok(())
            }
        }
    }
    /// The output file, for positioned writes (none for stdout).
    pub fn file(&self) -> Option<&File> {
        match self {
            Output::File { file, .. } => Some(file),
            Output::Stdout(_) => None,
        }
    }
    /// Carries on writing at `offset`, everything before it having been written in place.
    pub fn skip_to(&mut self, offset: u64) -> io::Result<()> {
        if let Output::File { file, written, drop_behind, .. } = self {
            io::Seek::seek(file, io::SeekFrom::Start(offset))?;
            *written = offset;
            *drop_behind = crate::writeback::DropBehind::at(offset);
        }
        Ok(())
    }
    pub fn abort(self) {
        if let Output::File { tmp, .. } = self {
            let _ = fs::remove_file(tmp);
        }
    }
}

impl Write for Output {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Output::File { file, written, drop_behind, .. } => {
                let n = file.write(buf)?;
                *written += n as u64;
                drop_behind.kick_and_drop(file, *written);
                Ok(n)
            }
            Output::Stdout(s) => s.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Output::File { file, .. } => file.flush(),
            Output::Stdout(s) => s.flush(),
        }
    }
}

impl tarw::AsFile for Output {
    fn copy_from(&mut self, f: &mut File, size: u64) -> io::Result<u64> {
        match self {
            Output::File { file, written, drop_behind, .. } => {
                let n = file.copy_from(f, size)?;
                *written += n;
                drop_behind.kick_and_drop(file, *written);
                Ok(n)
            }
            Output::Stdout(s) => s.copy_from(f, size),
        }
    }
    fn write_at_offset(&mut self, offset: u64, data: &[u8]) -> io::Result<()> {
        match self {
            Output::File { file, .. } => file.write_at_offset(offset, data),
            Output::Stdout(s) => s.write_at_offset(offset, data),
        }
    }
    fn seekable(&self) -> bool {
        matches!(self, Output::File { .. })
    }
}

pub(crate) fn refuse_existing(fin: &Path, force: bool) -> Result<()> {
    if fin.exists() && !force {
        return Err(Error::Other(format!("{} exists (use --force to replace it)", fin.display())));
    }
    Ok(())
}

/// Runs an export: the images `names` with the referrers the source holds for them, but for the
/// referrer references in `leave_out` (those a lock does not pin).
pub fn export(source: &dyn Source, names: &[String], leave_out: &[String], opts: &ExportOptions) -> Result<ExportReport> {
    let mut images = select(source, names)?;
    images.retain(|(n, _)| !leave_out.contains(n));
    match opts.format {
        Format::DockerArchive => {
            // A docker-archive holds container images only: referrers cannot go there.
            images.retain(|(n, _)| !crate::referrers::is_referrer_ref(n));
            docker_archive::write(source, &images, opts)
        }
        Format::OciLayout | Format::OciArchive => oci::write(source, &images, opts),
    }
}
