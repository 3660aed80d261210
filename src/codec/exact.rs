//! PLACEHOLDER until the exact-rebuild codec lands: plain tars only.
use std::io::{Read, Write};

use crate::error::{Error, Result};

pub enum Rebuild {
    Plain,
}

impl Rebuild {
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.push(0);
    }
    pub fn decode(b: &[u8], what: &str) -> Result<Rebuild> {
        match b {
            [0] => Ok(Rebuild::Plain),
            _ => Err(Error::Other(format!("{what}: unknown rebuild record"))),
        }
    }
    pub fn side_bytes(&self) -> u64 {
        0
    }
}

pub struct Analysis {
    pub rebuild: Option<Rebuild>,
    pub producer: String,
    pub why_not: Option<String>,
}

pub fn analyze(r: &mut dyn Read, plain: &mut dyn FnMut(&[u8]) -> Result<()>, what: &str) -> Result<Analysis> {
    let mut buf = vec![0u8; 1 << 20];
    let n = r.read(&mut buf).map_err(|e| Error::Other(format!("{what}: {e}")))?;
    if crate::codec::Compression::sniff(&buf[..n]) != crate::codec::Compression::Plain {
        return Ok(Analysis { rebuild: None, producer: "compressed".into(), why_not: Some("no exact rebuild yet".into()) });
    }
    plain(&buf[..n])?;
    loop {
        let n = r.read(&mut buf).map_err(|e| Error::Other(format!("{what}: {e}")))?;
        if n == 0 {
            break;
        }
        plain(&buf[..n])?;
    }
    Ok(Analysis { rebuild: Some(Rebuild::Plain), producer: "plain".into(), why_not: None })
}

pub fn rebuild(rec: &Rebuild, plain: &mut dyn Read, out: &mut dyn Write, what: &str) -> Result<u64> {
    match rec {
        Rebuild::Plain => std::io::copy(plain, out).map_err(|e| Error::Other(format!("{what}: {e}"))),
    }
}
