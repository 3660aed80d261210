//! gzip decompression: ISA-L when present at build and run time, flate2 (zlib-rs) otherwise.
//!
//! [`GzDecoder`] reads like `flate2::read::MultiGzDecoder`: every member of a multi-member
//! stream, each member's CRC32 and ISIZE checked, any bytes after a member read as the next
//! member's header (so trailing garbage is an error). Both backends fail the same way: an
//! `InvalidData` error with one of the messages below, repeated by every later read. ISA-L is
//! reached through the C shim src/codec/gunzip_isal.c (compiled by build.rs only when the ISA-L header
//! is installed), which loads libisal.so.2 with dlopen: without it the binary still starts and
//! uses flate2. `OCIBUNDLE_GUNZIP=zlib-rs` forces flate2. Why and how fast: docs/design.md,
//! "gzip decompression".
use std::io::{self, Read};

const BAD_HEADER: &str = "gzip: invalid member header";
const TOO_LONG: &str = "gzip: member header field longer than 65535 bytes";
const BAD_CHECKSUM: &str = "gzip: checksum mismatch (CRC32 or size of a member, or its header CRC)";
const BAD_DATA: &str = "gzip: corrupt deflate data";
const TRUNCATED: &str = "gzip: truncated: the input ends inside a gzip member";

fn invalid(msg: &'static str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

/// The two ways to inflate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Backend {
    Isal,
    ZlibRs,
}

impl Backend {
    fn name(self) -> &'static str {
        match self {
            Backend::Isal => "isa-l",
            Backend::ZlibRs => "zlib-rs",
        }
    }
}

fn isal_available() -> bool {
    #[cfg(have_isal)]
    return isal::available();
    #[cfg(not(have_isal))]
    false
}

/// The backend a new decoder uses: ISA-L if it was built in and loads, unless
/// `OCIBUNDLE_GUNZIP=zlib-rs`.
fn chosen() -> Backend {
    let forced = std::env::var_os("OCIBUNDLE_GUNZIP").is_some_and(|v| v == "zlib-rs");
    if !forced && isal_available() { Backend::Isal } else { Backend::ZlibRs }
}

/// What [`GzDecoder::new`] will use in this process: `"isa-l"` or `"zlib-rs"`.
pub fn backend() -> &'static str {
    chosen().name()
}

/// A multi-member gzip decoder (see the module docs).
pub struct GzDecoder<R: Read>(Inner<R>);

#[allow(clippy::large_enum_variant)] // one decoder per layer: its size does not matter
enum Inner<R: Read> {
    Flate(Flate<R>),
    #[cfg(have_isal)]
    Isal(isal::Decoder<R>),
}

impl<R: Read> GzDecoder<R> {
    pub fn new(inner: R) -> Self {
        Self::with_backend(inner, chosen()).unwrap_or_else(|inner| Self(Inner::Flate(Flate::new(inner))))
    }

    /// A decoder on `backend`, or `inner` back when that backend cannot run here.
    pub(crate) fn with_backend(inner: R, backend: Backend) -> Result<Self, R> {
        match backend {
            Backend::ZlibRs => Ok(Self(Inner::Flate(Flate::new(inner)))),
            #[cfg(have_isal)]
            Backend::Isal => isal::Decoder::new(inner).map(|d| Self(Inner::Isal(d))),
            #[cfg(not(have_isal))]
            Backend::Isal => Err(inner),
        }
    }

    /// The backend this decoder uses: `"isa-l"` or `"zlib-rs"`.
    pub fn backend(&self) -> &'static str {
        match &self.0 {
            Inner::Flate(_) => Backend::ZlibRs.name(),
            #[cfg(have_isal)]
            Inner::Isal(_) => Backend::Isal.name(),
        }
    }
}

impl<R: Read> Read for GzDecoder<R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        match &mut self.0 {
            Inner::Flate(d) => d.read(out),
            #[cfg(have_isal)]
            Inner::Isal(d) => d.read(out),
        }
    }
}

/// flate2's MultiGzDecoder with its errors turned into this module's (it reports truncation as
/// `UnexpectedEof` and bad data as `InvalidInput`, and reads `Ok(0)` after a checksum error).
struct Flate<R: Read> {
    d: flate2::read::MultiGzDecoder<R>,
    failed: Option<&'static str>,
}

impl<R: Read> Flate<R> {
    fn new(inner: R) -> Self {
        Flate { d: flate2::read::MultiGzDecoder::new(inner), failed: None }
    }
}

impl<R: Read> Read for Flate<R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if let Some(m) = self.failed {
            return Err(invalid(m));
        }
        self.d.read(out).map_err(|e| {
            let m = match e.kind() {
                io::ErrorKind::UnexpectedEof => TRUNCATED,
                io::ErrorKind::InvalidInput => match e.to_string().as_str() {
                    "invalid gzip header" => BAD_HEADER,
                    "gzip header field too long" => TOO_LONG,
                    "corrupt gzip stream does not have a matching checksum" => BAD_CHECKSUM,
                    _ => BAD_DATA,
                },
                _ => return e, // the inner reader's own error
            };
            self.failed = Some(m);
            invalid(m)
        })
    }
}

/// The longest FNAME or FCOMMENT a header may carry (flate2's limit).
const MAX_FIELD: usize = 65535;

/// The length of the gzip member header at the start of `b`, `None` until all of it is
/// there. Checks what flate2 checks: magic, method 8, no reserved flag, name and comment
/// at most 65535 bytes, the header CRC16 when present.
pub(super) fn header_len(b: &[u8]) -> Result<Option<usize>, &'static str> {
    const FHCRC: u8 = 2;
    const FEXTRA: u8 = 4;
    const FNAME: u8 = 8;
    const FCOMMENT: u8 = 16;
    const FRESERVED: u8 = 0xe0;
    if b.len() < 10 {
        return Ok(None);
    }
    if b[..3] != [0x1f, 0x8b, 8] || b[3] & FRESERVED != 0 {
        return Err(BAD_HEADER);
    }
    let flags = b[3];
    let mut n = 10;
    if flags & FEXTRA != 0 {
        let Some(x) = b.get(n..n + 2) else { return Ok(None) };
        n += 2 + usize::from(u16::from_le_bytes([x[0], x[1]]));
    }
    for flag in [FNAME, FCOMMENT] {
        if flags & flag != 0 {
            let rest = b.get(n..).unwrap_or_default();
            match rest.iter().take(MAX_FIELD + 1).position(|&c| c == 0) {
                Some(i) => n += i + 1,
                None if rest.len() > MAX_FIELD => return Err(TOO_LONG),
                None => return Ok(None),
            }
        }
    }
    if flags & FHCRC != 0 {
        let Some(x) = b.get(n..n + 2) else { return Ok(None) };
        let mut crc = flate2::Crc::new();
        crc.update(&b[..n]);
        if crc.sum() as u16 != u16::from_le_bytes([x[0], x[1]]) {
            return Err(BAD_CHECKSUM);
        }
        n += 2;
    }
    Ok((n <= b.len()).then_some(n))
}

#[cfg(have_isal)]
mod isal {
    //! The ISA-L path: the gzip header is parsed here, ISA-L inflates the body and checks the
    //! trailer; the caller's buffer is ISA-L's output (it buffers small outputs itself).
    use super::{BAD_CHECKSUM, BAD_DATA, TRUNCATED, header_len, invalid};
    use std::ffi::{c_int, c_void};
    use std::io::{self, Read};
    use std::ptr::NonNull;

    unsafe extern "C" {
        fn obi_isal_available() -> c_int;
        fn obi_inflate_new() -> *mut c_void;
        fn obi_inflate_free(state: *mut c_void);
        fn obi_inflate_reset(state: *mut c_void);
        fn obi_inflate_step(
            state: *mut c_void,
            input: *const u8,
            in_len: usize,
            consumed: *mut usize,
            out: *mut u8,
            out_len: usize,
            produced: *mut usize,
        ) -> c_int;
    }
    // Statuses of obi_inflate_step (src/codec/gunzip_isal.c).
    const OK: c_int = 0;
    const NEED_INPUT: c_int = 1;
    const MEMBER_END: c_int = 2;
    const BAD_CHECKSUM_STATUS: c_int = -2;

    /// Input buffer: holds any header flate2 accepts (under 200 KiB); 1 MiB measured no faster.
    const IN_BUF: usize = 512 << 10;

    pub(super) fn available() -> bool {
        // SAFETY: no arguments; the shim loads the library once, thread-safely.
        unsafe { obi_isal_available() != 0 }
    }

    /// One ISA-L `inflate_state` (opaque, owned).
    struct State(NonNull<c_void>);

    // SAFETY: the state is heap memory that only `&mut self` methods touch.
    unsafe impl Send for State {}

    impl Drop for State {
        fn drop(&mut self) {
            // SAFETY: allocated by obi_inflate_new, freed once.
            unsafe { obi_inflate_free(self.0.as_ptr()) }
        }
    }

    impl State {
        fn new() -> Option<Self> {
            // SAFETY: returns a fresh state or NULL.
            NonNull::new(unsafe { obi_inflate_new() }).map(State)
        }

        fn reset(&mut self) {
            // SAFETY: a live state.
            unsafe { obi_inflate_reset(self.0.as_ptr()) }
        }

        /// Inflates from `input` into `out`: (status, bytes consumed, bytes produced).
        fn step(&mut self, input: &[u8], out: &mut [u8]) -> (c_int, usize, usize) {
            let (mut used, mut made) = (0, 0);
            // SAFETY: both slices are valid for their lengths; the shim reads at most in_len
            // bytes, writes at most out_len bytes, and keeps neither pointer past the call.
            let status = unsafe {
                obi_inflate_step(self.0.as_ptr(), input.as_ptr(), input.len(), &mut used, out.as_mut_ptr(), out.len(), &mut made)
            };
            (status, used, made)
        }
    }

    enum Phase {
        Header { first: bool },
        Body,
        Done,
    }

    enum Stop {
        Bad(&'static str),
        Io(io::Error),
    }

    pub(crate) struct Decoder<R> {
        inner: R,
        state: State,
        buf: Box<[u8]>,
        pos: usize,
        end: usize,
        eof: bool,
        phase: Phase,
        failed: Option<&'static str>,
    }

    impl<R: Read> Decoder<R> {
        pub(super) fn new(inner: R) -> Result<Self, R> {
            let Some(state) = State::new() else { return Err(inner) };
            let buf = vec![0; IN_BUF].into_boxed_slice();
            Ok(Decoder { inner, state, buf, pos: 0, end: 0, eof: false, phase: Phase::Header { first: true }, failed: None })
        }

        fn run(&mut self, out: &mut [u8]) -> Result<usize, Stop> {
            loop {
                match self.phase {
                    Phase::Done => return Ok(0),
                    Phase::Header { first } => match header_len(&self.buf[self.pos..self.end]).map_err(Stop::Bad)? {
                        Some(n) => {
                            self.pos += n;
                            self.phase = Phase::Body;
                        }
                        None if !self.eof => self.fill()?,
                        None if !first && self.pos == self.end => self.phase = Phase::Done,
                        None => return Err(Stop::Bad(TRUNCATED)),
                    },
                    Phase::Body => {
                        let (status, used, made) = self.state.step(&self.buf[self.pos..self.end], out);
                        self.pos += used;
                        match status {
                            MEMBER_END => {
                                self.state.reset();
                                self.phase = Phase::Header { first: false };
                            }
                            OK if used > 0 || made > 0 => {}
                            OK | NEED_INPUT if self.eof => return Err(Stop::Bad(TRUNCATED)),
                            OK | NEED_INPUT => self.fill()?,
                            BAD_CHECKSUM_STATUS => return Err(Stop::Bad(BAD_CHECKSUM)),
                            _ => return Err(Stop::Bad(BAD_DATA)),
                        }
                        if made > 0 {
                            return Ok(made);
                        }
                    }
                }
            }
        }

        /// Reads more input after what is buffered (moving it to the front when at the end).
        fn fill(&mut self) -> Result<(), Stop> {
            if self.pos == self.end {
                (self.pos, self.end) = (0, 0);
            } else if self.end == self.buf.len() {
                self.buf.copy_within(self.pos..self.end, 0);
                (self.pos, self.end) = (0, self.end - self.pos);
            }
            if self.end == self.buf.len() {
                return Err(Stop::Bad(BAD_DATA)); // ISA-L took nothing from a full buffer
            }
            loop {
                match self.inner.read(&mut self.buf[self.end..]) {
                    Ok(0) => self.eof = true,
                    Ok(n) => self.end += n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(Stop::Io(e)),
                }
                return Ok(());
            }
        }
    }

    impl<R: Read> Read for Decoder<R> {
        fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
            if let Some(m) = self.failed {
                return Err(invalid(m));
            }
            if out.is_empty() {
                return Ok(0);
            }
            self.run(out).map_err(|stop| match stop {
                Stop::Io(e) => e,
                Stop::Bad(m) => {
                    self.failed = Some(m);
                    invalid(m)
                }
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::Compression;
    use std::io::Write;

    /// The backends to test: ISA-L only when built in (else skipped with a note); built in but
    /// not loadable is a failure, since the header's package depends on the library's.
    fn backends() -> Vec<Backend> {
        if !cfg!(have_isal) {
            thread_local!(static NOTED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) });
            if !NOTED.replace(true) {
                eprintln!("note: built without ISA-L (no ISA-L header, or OCIBUNDLE_NO_ISAL=1): ISA-L variants skipped");
            }
            return vec![Backend::ZlibRs];
        }
        assert!(isal_available(), "built with ISA-L but libisal.so.2 does not load");
        vec![Backend::ZlibRs, Backend::Isal]
    }

    /// `len` deterministic bytes: 4 KiB runs, alternately random and repetitive text.
    fn data(len: usize, seed: u64) -> Vec<u8> {
        let mut x = seed | 1;
        let text = b"usr/lib/x86_64-linux-gnu/libcudart.so.12 \0\0\0\0 ";
        (0..len)
            .map(|i| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                if (i >> 12) % 2 == 0 { x as u8 } else { text[i % text.len()] }
            })
            .collect()
    }

    fn gz(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), Compression::default());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    /// A member with every optional header field (FEXTRA, FNAME, FCOMMENT, FHCRC), built by
    /// hand; `hcrc_delta` != 0 spoils the header CRC.
    fn full_member(data: &[u8], name_len: usize, hcrc_delta: u16) -> Vec<u8> {
        let mut m = vec![0x1f, 0x8b, 8, 2 | 4 | 8 | 16, 0, 0, 0, 0, 0, 3, 5, 0];
        m.extend_from_slice(b"extra");
        m.extend(std::iter::repeat_n(b'n', name_len));
        m.extend_from_slice(b"\0comment\0");
        let mut crc = flate2::Crc::new();
        crc.update(&m);
        m.extend_from_slice(&(crc.sum() as u16).wrapping_add(hcrc_delta).to_le_bytes());
        let mut e = flate2::write::DeflateEncoder::new(m, Compression::default());
        e.write_all(data).unwrap();
        let mut m = e.finish().unwrap();
        let mut crc = flate2::Crc::new();
        crc.update(data);
        m.extend_from_slice(&crc.sum().to_le_bytes());
        m.extend_from_slice(&(data.len() as u32).to_le_bytes());
        m
    }

    /// A reader handing out one byte per call: headers, bodies and trailers split everywhere.
    struct Trickle<'a>(&'a [u8]);

    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = self.0.len().min(buf.len()).min(1);
            buf[..n].copy_from_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            Ok(n)
        }
    }

    /// What `backend` decodes from `input` reading `chunk` bytes at a time, and the error that
    /// ended it (checked to repeat on the next read).
    fn decode<R: Read>(backend: Backend, input: R, chunk: usize) -> (Vec<u8>, Option<io::Error>) {
        let mut d = GzDecoder::with_backend(input, backend).ok().expect("backend available");
        assert_eq!(d.backend(), backend.name());
        let (mut out, mut buf) = (Vec::new(), vec![0; chunk]);
        loop {
            match d.read(&mut buf) {
                Ok(0) => return (out, None),
                Ok(n) => out.extend_from_slice(&buf[..n]),
                Err(e) => {
                    let again = d.read(&mut buf).expect_err("an error repeats");
                    assert_eq!(again.to_string(), e.to_string());
                    return (out, Some(e));
                }
            }
        }
    }

    /// What bare flate2 MultiGzDecoder makes of `input`: the output and whether it failed.
    fn flate2_outcome(input: &[u8]) -> (Vec<u8>, bool) {
        let mut out = Vec::new();
        let failed = flate2::read::MultiGzDecoder::new(input).read_to_end(&mut out).is_err();
        (out, failed)
    }

    fn assert_fails(input: &[u8], msg: &str, case: &str) {
        assert!(flate2_outcome(input).1, "{case}: MultiGzDecoder accepts it");
        for b in backends() {
            let (_, err) = decode(b, input, 1 << 16);
            let err = err.unwrap_or_else(|| panic!("{case}: {b:?} accepted it"));
            assert_eq!(err.kind(), io::ErrorKind::InvalidData, "{case}: {b:?}");
            assert_eq!(err.to_string(), msg, "{case}: {b:?}");
        }
    }

    #[test]
    fn round_trip_sizes() {
        for len in [0, 1, 100 << 10, 20 << 20] {
            let plain = data(len, len as u64);
            let z = gz(&plain);
            for b in backends() {
                let (out, err) = decode(b, &z[..], 1 << 20);
                assert!(err.is_none(), "{b:?} {len}: {err:?}");
                assert!(out == plain, "{b:?} {len}: output differs");
            }
        }
    }

    #[test]
    fn concatenated_members() {
        let parts = [data(1000, 1), data(0, 2), data(300 << 10, 3)];
        let members: Vec<Vec<u8>> = parts.iter().map(|p| gz(p)).collect();
        for n in [2, 3] {
            let input = members[..n].concat();
            let plain = parts[..n].concat();
            assert_eq!(flate2_outcome(&input), (plain.clone(), false));
            for b in backends() {
                let (out, err) = decode(b, &input[..], 7777);
                assert!(err.is_none(), "{b:?} {n} members: {err:?}");
                assert!(out == plain, "{b:?} {n} members: output differs");
            }
        }
    }

    #[test]
    fn all_header_fields_and_split_input() {
        let plain = data(100 << 10, 4);
        let input = [full_member(&plain, 300, 0), gz(b"second")].concat();
        let want = [&plain[..], b"second"].concat();
        assert_eq!(flate2_outcome(&input), (want.clone(), false));
        for b in backends() {
            let (out, err) = decode(b, &input[..], 1 << 16);
            assert!(err.is_none() && out == want, "{b:?}: {err:?}");
            let (out, err) = decode(b, Trickle(&input), 1 << 16);
            assert!(err.is_none() && out == want, "{b:?}, one input byte per read: {err:?}");
        }
    }

    #[test]
    fn tiny_output_buffers() {
        let plain = [data(100 << 10, 5), data(3000, 6)].concat();
        let input = [gz(&plain[..100 << 10]), gz(&plain[100 << 10..])].concat();
        for b in backends() {
            let (out, err) = decode(b, &input[..], 1);
            assert!(err.is_none(), "{b:?}: {err:?}");
            assert!(out == plain, "{b:?}: output differs when read 1 byte at a time");
        }
    }

    #[test]
    fn bad_trailer_is_an_error() {
        let z = gz(&data(100 << 10, 7));
        let len = z.len();
        for (at, what) in [(len - 8, "CRC32"), (len - 5, "CRC32"), (len - 4, "ISIZE"), (len - 1, "ISIZE")] {
            let mut bad = z.clone();
            bad[at] ^= 0x01;
            assert_fails(&bad, BAD_CHECKSUM, &format!("flipped {what} byte"));
            assert_fails(&[gz(b"first member"), bad].concat(), BAD_CHECKSUM, &format!("flipped {what} byte, 2nd member"));
        }
    }

    #[test]
    fn bad_deflate_data_is_an_error() {
        let z = gz(&data(100 << 10, 8));
        for at in [10, 11, 12, 100, z.len() / 3, z.len() / 2, z.len() - 20, z.len() - 9] {
            let mut bad = z.clone();
            bad[at] ^= 0x55;
            assert!(flate2_outcome(&bad).1, "byte {at}: MultiGzDecoder accepts it");
            for b in backends() {
                let (_, err) = decode(b, &bad[..], 1 << 16);
                let err = err.unwrap_or_else(|| panic!("flipped byte {at}: {b:?} accepted it"));
                assert_eq!(err.kind(), io::ErrorKind::InvalidData, "byte {at}: {b:?}");
                let m = err.to_string();
                assert!([BAD_DATA, BAD_CHECKSUM, TRUNCATED, BAD_HEADER].contains(&m.as_str()), "byte {at}: {b:?}: {m}");
            }
        }
    }

    #[test]
    fn truncation_is_an_error() {
        let z = gz(&data(100 << 10, 9));
        let named = full_member(b"named", 50, 0);
        let two = [gz(b"one"), z.clone()].concat();
        let l = z.len();
        let cases: [(&[u8], &str); 11] = [
            (&[], "empty input"),
            (&z[..5], "mid-header"),
            (&z[..10], "header only"),
            (&named[..40], "mid-name"),
            (&z[..l / 2], "mid-data"),
            (&z[..l - 9], "end of deflate data"),
            (&z[..l - 8], "no trailer"),
            (&z[..l - 5], "mid-trailer"),
            (&z[..l - 1], "1 byte short"),
            (&two[..gz(b"one").len() + 4], "mid-header of member 2"),
            (&two[..two.len() - 3], "mid-trailer of member 2"),
        ];
        for (input, case) in cases {
            assert_fails(input, TRUNCATED, case);
        }
    }

    #[test]
    fn trailing_bytes_fail_like_multigzdecoder() {
        let plain = data(50 << 10, 10);
        let z = gz(&plain);
        let cases: [(&[u8], &str); 4] = [(&[0; 3], TRUNCATED), (&[0; 512], BAD_HEADER), (b"garbage after it", BAD_HEADER), (&[0x1f, 0x8b, 8, 0, 0], TRUNCATED)];
        for (tail, msg) in cases {
            let input = [&z[..], tail].concat();
            assert_eq!(flate2_outcome(&input), (plain.clone(), true), "tail {tail:?}");
            for b in backends() {
                let (out, err) = decode(b, &input[..], 1 << 16);
                assert!(out == plain, "{b:?}, tail {tail:?}: output differs");
                assert_eq!(err.map(|e| e.to_string()).as_deref(), Some(msg), "{b:?}, tail {tail:?}");
            }
        }
    }

    #[test]
    fn bad_headers_fail_like_multigzdecoder() {
        let z = gz(b"hello");
        let mut reserved = z.clone();
        reserved[3] |= 0x20;
        let mut method = z.clone();
        method[2] = 7;
        let mut magic = z.clone();
        magic[1] = 0x8c;
        assert_fails(&reserved, BAD_HEADER, "reserved flag");
        assert_fails(&method, BAD_HEADER, "method 7");
        assert_fails(&magic, BAD_HEADER, "bad magic");
        assert_fails(&full_member(b"x", 10, 1), BAD_CHECKSUM, "bad header CRC");
        assert_fails(&full_member(b"x", 70_000, 0), TOO_LONG, "name of 70000 bytes");
        let longest = full_member(b"x", 65535, 0);
        assert_eq!(flate2_outcome(&longest), (b"x".to_vec(), false));
        for b in backends() {
            assert_eq!(decode(b, &longest[..], 100).0, b"x", "{b:?}: name of 65535 bytes");
        }
    }

    #[test]
    fn backend_names_and_send() {
        fn send<T: Send>() {}
        send::<GzDecoder<std::fs::File>>();
        let forced = std::env::var_os("OCIBUNDLE_GUNZIP").is_some_and(|v| v == "zlib-rs");
        let want = if cfg!(have_isal) && !forced { "isa-l" } else { "zlib-rs" };
        assert_eq!(backend(), want);
        assert_eq!(GzDecoder::new(&b""[..]).backend(), want);
    }
}
