//! Layers of a docker-archive: decompressing a layer (through `codec`, checked against its
//! diff_id) into its reserved place in the archive file or, when it does not fit there, into a
//! spool file.
use std::fs::File;
use std::io::{BufReader, BufWriter, Seek, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::AtomicBool;

use crate::codec::{self, hint, Compression};
use crate::digest::DiffId;
use crate::error::{Error, IoContext, Result};
use crate::image::Descriptor;
use crate::source::Source;

/// One layer to write, once per diff_id; `image` names it in messages.
#[derive(Clone)]
pub(super) struct Layer {
    pub desc: Descriptor,
    pub diff_id: DiffId,
    pub image: String,
}

impl Layer {
    pub fn what(&self) -> String {
        format!("{}: layer {}", self.image, self.desc.digest)
    }
}

/// The uncompressed size the blob announces (see `codec::hint`), read from its first and last
/// bytes. Only a hint: the writer checks it against what decompression gives and copes when it
/// is wrong.
/// A source without local access gives no hint: its layers are spooled.
pub(super) fn size_hint(source: &dyn Source, desc: &Descriptor) -> Result<Option<u64>> {
    // Content below the layer knows its tar's size exactly.
    if let Some((size, _)) = source.layer_tar(desc)? {
        return Ok(Some(size));
    }
    let Some(local) = source.local() else { return Ok(None) };
    let c = desc.size;
    let head = local.read_at(desc, 0, c.min(hint::HEAD) as usize)?;
    let tail = if Compression::sniff(&head) == Compression::Gzip && c >= hint::HEAD {
        local.read_at(desc, c.saturating_sub(hint::TAIL), c.min(hint::TAIL) as usize)?
    } else {
        Vec::new()
    };
    Ok(hint::size_hint(c, &head, &tail))
}

/// Decompresses one layer (gzip, zstd or plain, told apart by their magic bytes) into `out`,
/// checking the result against the diff_id; returns its size. The compressed blob is checked
/// against its own digest too (the source's verified stream, read to its end), so a blob that
/// no longer matches its name fails even when it still inflates to the right tar.
pub(super) fn decompress_into(source: &dyn Source, layer: &Layer, stop: &AtomicBool, out: &mut dyn Write) -> Result<u64> {
    // A layer held below the layer (a format 2 bundle) gives its tar with no gzip at all, as a
    // stream that checks itself against the diff_id at its end: copied as it is (not sniffed
    // and hashed again, which cost a third of the export's CPU).
    if let Some((_, mut tar)) = source.layer_tar(&layer.desc)? {
        return codec::pump(&mut tar, &layer.what(), stop, out, &mut |_| {});
    }
    let mut src = BufReader::with_capacity(1 << 20, source.blob(&layer.desc)?);
    codec::inflate_checked(&mut src, &layer.diff_id, &layer.what(), stop, out)
}

/// Decompresses one layer into an unnamed spool file in `dir` (whatever ends the process, the
/// kernel frees it), rewound for the writer.
pub(super) fn spool_layer(source: &dyn Source, layer: &Layer, dir: &Path, stop: &AtomicBool) -> Result<(File, u64)> {
    let file = tempfile::tempfile_in(dir).at(dir)?;
    let mut out = BufWriter::with_capacity(1 << 20, file);
    let size = decompress_into(source, layer, stop, &mut out)?;
    let file = finish_spool(out, dir, &layer.what())?;
    Ok((file, size))
}

/// Flushes a spool file (a full disk may first show here) and rewinds it; errors name `what`,
/// the layer, as every other export error does.
fn finish_spool(out: BufWriter<File>, dir: &Path, what: &str) -> Result<File> {
    let mut file = out.into_inner().map_err(|e| Error::Other(format!("{what}: writing a spool file in {}: {}", dir.display(), e.error())))?;
    file.seek(std::io::SeekFrom::Start(0)).at(dir)?;
    Ok(file)
}

/// A layer's reserved place in the archive file: `cap` bytes from `start`. Writes go there
/// (positioned, so every worker writes its own place at once) until they would pass its end;
/// then what was written moves to a spool file and the rest follows it there.
pub(super) struct Region<'a> {
    file: &'a File,
    start: u64,
    cap: u64,
    pos: u64,
    drop_behind: crate::writeback::DropBehind,
    spill: Option<BufWriter<File>>,
    spool_dir: &'a Path,
}

/// Where a layer ended up.
pub(super) enum Placed {
    /// In its place, `size` bytes.
    InPlace(u64),
    /// In a spool file (rewound), `size` bytes: the hint was wrong.
    Spilled(File, u64),
}

impl<'a> Region<'a> {
    pub fn new(file: &'a File, start: u64, cap: u64, spool_dir: &'a Path) -> Region<'a> {
        Region { file, start, cap, pos: 0, drop_behind: crate::writeback::DropBehind::at(start), spill: None, spool_dir }
    }

    fn start_spill(&mut self) -> std::io::Result<()> {
        let mut spool = BufWriter::with_capacity(1 << 20, tempfile::tempfile_in(self.spool_dir)?);
        let mut buf = vec![0u8; 1 << 20];
        let mut done = 0;
        while done < self.pos {
            let n = (self.pos - done).min(buf.len() as u64) as usize;
            self.file.read_exact_at(&mut buf[..n], self.start + done)?;
            spool.write_all(&buf[..n])?;
            done += n as u64;
        }
        self.spill = Some(spool);
        Ok(())
    }

    /// Decompresses `layer` into this place (or a spool when it does not fit exactly).
    pub fn fill(mut self, source: &dyn Source, layer: &Layer, stop: &AtomicBool) -> Result<Placed> {
        let size = decompress_into(source, layer, stop, &mut self)?;
        if self.spill.is_none() && size == self.cap {
            return Ok(Placed::InPlace(size));
        }
        if self.spill.is_none() {
            self.start_spill().map_err(|e| Error::Other(format!("{}: spooling in {}: {e}", layer.what(), self.spool_dir.display())))?;
        }
        let file = finish_spool(self.spill.take().expect("spill"), self.spool_dir, &layer.what())?;
        Ok(Placed::Spilled(file, size))
    }
}

impl Write for Region<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.spill.is_none() && self.pos + buf.len() as u64 > self.cap {
            self.start_spill()?;
        }
        if let Some(s) = &mut self.spill {
            return s.write(buf);
        }
        self.file.write_all_at(buf, self.start + self.pos)?;
        self.pos += buf.len() as u64;
        self.drop_behind.kick_and_drop(self.file, self.start + self.pos);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        match &mut self.spill {
            Some(s) => s.flush(),
            None => Ok(()),
        }
    }
}
