//! Sources as the command line names them, in skopeo's words: `docker-archive:FILE`,
//! `oci:DIR[:REF]`, `oci-archive:FILE[:REF]`, else a bundle file (any of its volumes). `open`
//! turns the name into one opened `Source`, so every command that reads images (import, bundle,
//! size, export, push) takes every format, and a new format is one more arm here.
use std::path::Path;

use crate::archive::docker::DockerArchive;
use crate::archive::oci::Layout;
use crate::bundle::Bundle;
use crate::error::Result;
use crate::source::{BundleOverStore, Source};
use crate::store::Store;

/// An opened source of images, whatever its format.
pub enum Opened {
    Bundle(Bundle),
    DockerArchive(DockerArchive),
    Layout(Layout),
}

/// Whether `spec` names an archive or layout rather than a bundle file.
pub fn is_archive(spec: &str) -> bool {
    ["docker-archive:", "oci:", "oci-archive:"].iter().any(|p| spec.starts_with(p))
}

/// `PATH[:REF]`: the reference is what follows the first `:` after the last `/`.
pub fn split_layout_arg(rest: &str) -> (&str, Option<&str>) {
    let from = rest.rfind('/').map_or(0, |i| i + 1);
    match rest[from..].find(':') {
        Some(i) => (&rest[..from + i], Some(&rest[from + i + 1..])),
        None => (rest, None),
    }
}

/// Opens what `spec` names; everything untrusted in it (archive members, index.json, the
/// bundle's index) is checked here, every blob later as it is read.
pub fn open(spec: &Path) -> Result<Opened> {
    let Some(spec) = spec.to_str().filter(|s| is_archive(s)) else { return Ok(Opened::Bundle(Bundle::open(spec)?)) };
    if let Some(file) = spec.strip_prefix("docker-archive:") {
        return Ok(Opened::DockerArchive(DockerArchive::open(Path::new(file))?));
    }
    for (prefix, archive) in [("oci:", false), ("oci-archive:", true)] {
        if let Some(rest) = spec.strip_prefix(prefix) {
            let (path, only) = split_layout_arg(rest);
            return Ok(Opened::Layout(Layout::open(Path::new(path), archive, only)?));
        }
    }
    unreachable!("is_archive lists the prefixes above")
}

impl Opened {
    /// The source to read: a bundle reads what a delta left out from `store`; archives and
    /// layouts are whole by themselves.
    pub fn source<'a>(&'a self, store: Option<&'a Store>) -> Box<dyn Source + 'a> {
        match self {
            Opened::Bundle(b) => Box::new(BundleOverStore { bundle: b, store }),
            Opened::DockerArchive(a) => Box::new(a),
            Opened::Layout(l) => Box::new(l),
        }
    }

    /// A format 2 delta bundle: gives it the chunks it leaves to its base, cut from `store`'s
    /// own layers (one error naming a base layer the store lacks). Nothing to do otherwise.
    pub fn attach_base(&self, store: &Store) -> Result<()> {
        match self {
            Opened::Bundle(b) if !b.index.base_layers.is_empty() => crate::bundle::base::attach(b, store),
            _ => Ok(()),
        }
    }

    /// What the user should know about how images were named (archives and layouts).
    pub fn notes(&self) -> &[String] {
        match self {
            Opened::Bundle(_) => &[],
            Opened::DockerArchive(a) => &a.notes,
            Opened::Layout(l) => &l.notes,
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn layout_arguments_split_at_the_tag() {
        assert_eq!(super::split_layout_arg("/srv/img:v1"), ("/srv/img", Some("v1")));
        assert_eq!(super::split_layout_arg("/srv/img"), ("/srv/img", None));
        assert_eq!(super::split_layout_arg("rel:v1.2"), ("rel", Some("v1.2")));
    }
}
