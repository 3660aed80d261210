//! Owns the format-blind mutations: bit flips, bytes set to 0x00, 0xff or anything, truncation,
//! insertion, deletion, a range duplicated elsewhere, and integers with a history of breaking
//! length arithmetic written over any eight bytes.
use super::rng::Rng;

/// Lengths and offsets that sit on an edge: zero, one record, the caps, and the overflow values.
pub const U64S: &[u64] = &[
    0, 1, 47, 48, 63, 64, 511, 512, 0x7fff_ffff, 0xffff_ffff, 1 << 32, 1 << 62, 1 << 63, u64::MAX, u64::MAX - 47, u64::MAX - 63,
    4 << 20, (4 << 20) + 1, 256 << 20, (256 << 20) + 1,
];

/// One mutation of `data`, in place.
pub fn mutate(rng: &mut Rng, data: &mut Vec<u8>) {
    if data.is_empty() {
        let n = 1 + rng.below(16);
        data.extend(rng.bytes(n));
        return;
    }
    let at = rng.below(data.len());
    match rng.below(9) {
        0 => data[at] ^= 1 << rng.below(8),
        1 => data[at] = 0,
        2 => data[at] = 0xff,
        3 => data[at] = rng.next() as u8,
        4 => data.truncate(at),
        5 => {
            let n = 1 + rng.below(16);
            let ins = rng.bytes(n);
            data.splice(at..at, ins);
        }
        6 => {
            let len = (1 + rng.below(4096)).min(data.len() - at);
            let copy = data[at..at + len].to_vec();
            let to = rng.below(data.len() + 1);
            data.splice(to..to, copy);
        }
        7 => {
            let len = (1 + rng.below(512)).min(data.len() - at);
            data.drain(at..at + len);
        }
        _ => {
            let v = *rng.pick(U64S);
            let end = (at + 8).min(data.len());
            data[at..end].copy_from_slice(&v.to_le_bytes()[..end - at]);
        }
    }
}

/// One to three mutations.
pub fn mutate_some(rng: &mut Rng, data: &mut Vec<u8>) {
    for _ in 0..1 + rng.below(3) {
        mutate(rng, data);
    }
}
