//! Owns the tar archives of the mutation test: members written by hand (plain ustar, so every
//! header's place and fields are known), and the checksum fix that lets a mutated header get past
//! the reader's checksum test to the code behind it.

/// One member: `kind` is the typeflag (`b'0'` file, `b'2'` symlink, `b'5'` directory, `b'x'` PAX,
/// `b'L'` GNU long name, or anything a mutation puts there).
#[derive(Clone, Debug)]
pub struct Member {
    pub name: String,
    pub kind: u8,
    pub link: String,
    pub data: Vec<u8>,
}

impl Member {
    pub fn file(name: &str, data: Vec<u8>) -> Member {
        Member { name: name.into(), kind: b'0', link: String::new(), data }
    }
    pub fn dir(name: &str) -> Member {
        Member { name: name.into(), kind: b'5', link: String::new(), data: Vec::new() }
    }
    pub fn symlink(name: &str, target: &str) -> Member {
        Member { name: name.into(), kind: b'2', link: target.into(), data: Vec::new() }
    }
}

fn octal(field: &mut [u8], v: u64) {
    let s = format!("{v:0w$o}", w = field.len() - 1);
    let s = &s.as_bytes()[s.len().saturating_sub(field.len() - 1)..];
    field[..s.len()].copy_from_slice(s);
    field[s.len()] = 0;
}

/// Writes the checksum of a 512-byte header (the field itself counted as spaces).
pub fn fix_checksum(h: &mut [u8]) {
    h[148..156].fill(b' ');
    let sum: u64 = h[..512].iter().map(|&b| b as u64).sum();
    let s = format!("{sum:06o}\0 ");
    h[148..156].copy_from_slice(s.as_bytes());
}

fn header(m: &Member) -> [u8; 512] {
    let mut h = [0u8; 512];
    // Names longer than the field are cut without a NUL: a mutation of its own.
    let n = m.name.as_bytes();
    h[..n.len().min(100)].copy_from_slice(&n[..n.len().min(100)]);
    octal(&mut h[100..108], if m.kind == b'5' { 0o755 } else { 0o644 });
    octal(&mut h[108..116], 0);
    octal(&mut h[116..124], 0);
    octal(&mut h[124..136], m.data.len() as u64);
    octal(&mut h[136..148], 1_700_000_000);
    h[156] = m.kind;
    let l = m.link.as_bytes();
    h[157..157 + l.len().min(100)].copy_from_slice(&l[..l.len().min(100)]);
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    fix_checksum(&mut h);
    h
}

/// The archive's bytes and the offset of every member's header.
pub fn build(members: &[Member]) -> (Vec<u8>, Vec<usize>) {
    let mut out = Vec::new();
    let mut headers = Vec::new();
    for m in members {
        headers.push(out.len());
        out.extend_from_slice(&header(m));
        out.extend_from_slice(&m.data);
        out.resize(out.len().div_ceil(512) * 512, 0);
    }
    out.resize(out.len() + 1024, 0);
    (out, headers)
}

/// Re-checksums every block that looks like a ustar header, wherever a mutation moved it.
pub fn fix_all_checksums(data: &mut [u8]) {
    for at in (0..data.len().saturating_sub(511)).step_by(512) {
        if &data[at + 257..at + 262] == b"ustar" {
            fix_checksum(&mut data[at..at + 512]);
        }
    }
}
