//! A minimal one-pass tar writer for archives we generate: regular files with known sizes,
//! fixed owner, mode and mtime (so the same input gives the same bytes).
use std::io::{self, Read, Write};

pub struct TarWriter<W: Write> {
    out: W,
    pub written: u64,
}

impl<W: Write> TarWriter<W> {
    pub fn new(out: W) -> Self {
        TarWriter { out, written: 0 }
    }

    /// Continues an archive whose first `written` bytes the sink already holds.
    pub fn at(out: W, written: u64) -> Self {
        TarWriter { out, written }
    }

    /// The header of a regular file (fixed owner, mode and mtime).
    pub fn header(path: &str, size: u64) -> io::Result<[u8; 512]> {
        let mut h = tar::Header::new_gnu();
        h.set_path(path)?;
        h.set_size(size);
        h.set_mode(0o644);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        h.set_entry_type(tar::EntryType::Regular);
        h.set_cksum();
        Ok(*h.as_bytes())
    }

    fn pad(&mut self, size: u64) -> io::Result<()> {
        let rem = (512 - size % 512) % 512;
        if rem > 0 {
            self.out.write_all(&[0u8; 512][..rem as usize])?;
            self.written += rem;
        }
        Ok(())
    }

    /// Adds a file from memory.
    pub fn add_bytes(&mut self, path: &str, data: &[u8]) -> io::Result<()> {
        self.out.write_all(&Self::header(path, data.len() as u64)?)?;
        self.out.write_all(data)?;
        self.written += 512 + data.len() as u64;
        self.pad(data.len() as u64)
    }

    /// Adds a file of exactly `size` bytes from a reader (an error if it gives more or less).
    pub fn add_reader(&mut self, path: &str, size: u64, r: &mut dyn Read) -> io::Result<()> {
        self.out.write_all(&Self::header(path, size)?)?;
        self.written += 512;
        let n = io::copy(&mut r.take(size), &mut self.out)?;
        if n != size {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, format!("{path}: {n} of {size} bytes")));
        }
        // Reading on to the end lets a verifying reader check the digest (and a longer source
        // shows itself) before the entry counts as written.
        if r.read(&mut [0u8; 1])? != 0 {
            return Err(io::Error::new(io::ErrorKind::InvalidData, format!("{path}: more than {size} bytes")));
        }
        self.written += n;
        self.pad(size)
    }

    /// Adds a file from another file (the kernel copies when both ends are files).
    pub fn add_file(&mut self, path: &str, f: &mut std::fs::File, size: u64) -> io::Result<()>
    where
        W: AsFile,
    {
        self.out.write_all(&Self::header(path, size)?)?;
        self.written += 512;
        let n = self.out.copy_from(f, size)?;
        if n != size {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, format!("{path}: {n} of {size} bytes")));
        }
        self.written += n;
        self.pad(size)
    }

    /// The sink, without finishing the archive (to abort it).
    pub fn into_inner(self) -> W {
        self.out
    }

    /// Adds a file whose size is known only once written: a placeholder header, the data `f`
    /// writes (returning its length), then the real header written over the placeholder.
    /// Needs a sink that can rewrite earlier bytes (a file, not a pipe).
    pub fn add_streaming(&mut self, path: &str, f: &mut dyn FnMut(&mut W) -> io::Result<u64>) -> io::Result<u64>
    where
        W: AsFile,
    {
        let start = self.written;
        self.out.write_all(&[0u8; 512])?;
        self.written += 512;
        let n = f(&mut self.out)?;
        self.written += n;
        self.out.write_at_offset(start, &Self::header(path, n)?)?;
        self.pad(n)?;
        Ok(n)
    }

    /// Writes the end-of-archive blocks (the sink stays inside: see `into_inner`).
    pub fn end(&mut self) -> io::Result<()> {
        self.out.write_all(&[0u8; 1024])?;
        self.written += 1024;
        self.out.flush()
    }

    /// Writes the end-of-archive blocks and returns the sink.
    pub fn finish(mut self) -> io::Result<W> {
        self.end()?;
        Ok(self.out)
    }
}

/// Sinks that can take a file's bytes efficiently, and (files only) rewrite earlier bytes.
pub trait AsFile: Write {
    fn copy_from(&mut self, f: &mut std::fs::File, size: u64) -> io::Result<u64>;
    fn write_at_offset(&mut self, offset: u64, data: &[u8]) -> io::Result<()>;
    fn seekable(&self) -> bool;
}

impl AsFile for std::fs::File {
    fn copy_from(&mut self, f: &mut std::fs::File, size: u64) -> io::Result<u64> {
        // std uses copy_file_range for File -> File.
        io::copy(&mut f.take(size), self)
    }
    fn write_at_offset(&mut self, offset: u64, data: &[u8]) -> io::Result<()> {
        std::os::unix::fs::FileExt::write_all_at(self, data, offset)
    }
    fn seekable(&self) -> bool {
        true
    }
}

impl AsFile for io::Stdout {
    fn copy_from(&mut self, f: &mut std::fs::File, size: u64) -> io::Result<u64> {
        io::copy(&mut f.take(size), self)
    }
    fn write_at_offset(&mut self, _: u64, _: &[u8]) -> io::Result<()> {
        Err(io::Error::new(io::ErrorKind::Unsupported, "cannot rewrite a pipe"))
    }
    fn seekable(&self) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn tar_crate_reads_what_we_write() {
        let mut w = TarWriter::new(Vec::new());
        w.add_bytes("a.json", b"{}").unwrap();
        w.add_reader("blobs/sha256/x", 600, &mut &vec![7u8; 600][..]).unwrap();
        let bytes = w.finish().unwrap();
        assert_eq!(bytes.len() % 512, 0);
        let mut ar = tar::Archive::new(&bytes[..]);
        let names: Vec<(String, u64)> = ar.entries().unwrap().map(|e| {
            let e = e.unwrap();
            (e.path().unwrap().to_string_lossy().to_string(), e.size())
        }).collect();
        assert_eq!(names, vec![("a.json".to_string(), 2), ("blobs/sha256/x".to_string(), 600)]);
        let mut short = TarWriter::new(Vec::new());
        assert!(short.add_reader("x", 10, &mut &b"abc"[..]).is_err());
    }
}
