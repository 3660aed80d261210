//! The registry as a `copy::Sink`, what `push` copies into: each blob goes to every target
//! repository that needs it (skipped where present, mounted from the first repository that got
//! it, else uploaded, resumably), manifests by digest, and at the commit the tags, each read
//! back to serve the pushed digest. Nothing names an image before the commit: a push stopped
//! half-way leaves blobs and digest-named manifests behind, never a moved tag. `dry_run` asks
//! the same questions and writes nothing.
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::Read;
use std::sync::Mutex;

use super::{BlobOutcome, Registry, UploadState};
use crate::copy::{Plan, Sink};
use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::image::Descriptor;
use crate::reference::Reference;
use crate::source::Source;

/// What happened to each blob in each target repository (`registry/repository`, digest).
pub type Outcomes = HashMap<(String, Digest), BlobOutcome>;

pub struct RegistrySink<'a> {
    reg: &'a Registry,
    /// The target repositories of each blob and manifest, in the order images were planned.
    repos: BTreeMap<Digest, Vec<Reference>>,
    /// Each source reference's target name.
    targets: BTreeMap<String, Reference>,
    uploads: Option<&'a UploadState>,
    dry_run: bool,
    outcomes: &'a Mutex<Outcomes>,
    /// The manifests references point at, and their bytes once put (for the tags at the commit).
    entries: BTreeSet<Digest>,
    tagged: Mutex<BTreeMap<Digest, Vec<u8>>>,
    /// Target repositories that answered a manifest with `subject` with `OCI-Subject`: they
    /// offer the referrers API, so no fallback tag index is written there.
    referrers_api: Mutex<BTreeSet<String>>,
}

/// `registry/repository`: where a blob lives.
pub fn repo_key(r: &Reference) -> String {
    format!("{}/{}", r.registry, r.repository)
}

impl<'a> RegistrySink<'a> {
    /// A sink for `plan`'s images, each pushed as `targets` names it. `outcomes` is filled as
    /// blobs go, for the caller's report.
    pub fn new(reg: &'a Registry, plan: &Plan, targets: BTreeMap<String, Reference>, uploads: Option<&'a UploadState>, dry_run: bool, outcomes: &'a Mutex<Outcomes>) -> RegistrySink<'a> {
        let mut repos: BTreeMap<Digest, Vec<Reference>> = BTreeMap::new();
        let mut entries = BTreeSet::new();
        for img in &plan.images {
            let target = &targets[&img.reference];
            for d in img.manifests.iter().chain(&img.blobs) {
                let list = repos.entry(d.digest.clone()).or_default();
                if !list.iter().any(|r| repo_key(r) == repo_key(target)) {
                    list.push(target.clone());
                }
            }
            entries.insert(img.descriptor.digest.clone());
        }
        RegistrySink { reg, repos, targets, entries, uploads, dry_run, outcomes, tagged: Mutex::default(), referrers_api: Mutex::default() }
    }

    fn repos_of(&self, d: &Digest) -> &[Reference] {
        self.repos.get(d).map_or(&[], Vec::as_slice)
    }

    /// One blob into one repository: present, mounted from `holder`, or uploaded.
    fn put_one(&self, repo: &Reference, holder: Option<&Reference>, desc: &Descriptor, from: &dyn Source, progress: &(dyn Fn(u64) + Sync)) -> Result<BlobOutcome> {
        if self.reg.blob_exists(repo, &desc.digest)? {
            return Ok(BlobOutcome::Present);
        }
        if let Some(h) = holder
            && (self.dry_run || self.reg.mount_blob(repo, &desc.digest, &h.repository)?) {
            return Ok(BlobOutcome::Mounted);
        }
        if !self.dry_run {
            // Resumed uploads start from the verified stream, read up to where they resume.
            let open = |off: u64| -> Result<Box<dyn Read + Send + '_>> {
                let mut r = from.blob(desc)?;
                std::io::copy(&mut (&mut r).take(off), &mut std::io::sink()).map_err(|e| Error::from_read(&format!("{}: blob {}", from.name(), desc.digest), e))?;
                Ok(r)
            };
            self.reg.upload_blob(repo, desc, &open, self.uploads, progress)?;
        }
        Ok(BlobOutcome::Uploaded)
    }
}

impl Sink for RegistrySink<'_> {
    fn parallel(&self) -> bool {
        true
    }

    fn put_blob(&self, desc: &Descriptor, from: &dyn Source, progress: &(dyn Fn(u64) + Sync)) -> Result<bool> {
        let mut holder: Option<&Reference> = None;
        let mut sent = false;
        for repo in self.repos_of(&desc.digest) {
            let o = self.put_one(repo, holder, desc, from, progress)?;
            sent |= o == BlobOutcome::Uploaded;
            holder.get_or_insert(repo);
            self.outcomes.lock().unwrap().insert((repo_key(repo), desc.digest.clone()), o);
        }
        Ok(sent)
    }

    fn put_manifest(&self, desc: &Descriptor, bytes: &[u8]) -> Result<bool> {
        if self.entries.contains(&desc.digest) {
            self.tagged.lock().unwrap().insert(desc.digest.clone(), bytes.to_vec());
        }
        if self.dry_run {
            return Ok(true);
        }
        let by_digest = desc.digest.to_string();
        // A referrer (it names a `subject`) is put even when present: the answer says whether
        // the registry offers the referrers API.
        let referrer = crate::image::Manifest::parse(bytes.to_vec(), Some(&desc.media_type), &by_digest).is_ok_and(|m| m.subject.is_some());
        for repo in self.repos_of(&desc.digest) {
            if referrer {
                if self.reg.put_manifest_subject(repo, &desc.media_type, &desc.digest, bytes)? {
                    self.referrers_api.lock().unwrap().insert(repo_key(repo));
                }
            } else if self.reg.head_manifest(repo, &by_digest)?.as_ref() != Some(&desc.digest) {
                self.reg.put_manifest(repo, &by_digest, &desc.media_type, bytes)?;
            }
        }
        Ok(true)
    }

    fn commit(self: Box<Self>, refs: &[(String, Descriptor)]) -> Result<u64> {
        if self.dry_run {
            return Ok(0);
        }
        let tagged = self.tagged.lock().unwrap();
        for (name, entry) in refs {
            let target = &self.targets[name];
            let Some(tag) = &target.tag else { continue };
            let bytes = tagged.get(&entry.digest).expect("the entry's manifest was put before the commit");
            // What the tag must serve afterwards: the entry, or a merged referrers index.
            let mut want = entry.digest.clone();
            if let Some((subject, crate::referrers::Link::Index)) = crate::referrers::parse_tag(tag) {
                // The referrers index: a registry with the referrers API lists them itself;
                // else the fallback tag, merged with what the target lists there already.
                if self.referrers_api.lock().unwrap().contains(&repo_key(target)) || self.reg.referrers(target, &subject, None)?.is_some() {
                    continue;
                }
                let there = self.reg.manifest_if_any(target, tag)?;
                if let Some(merged) = crate::referrers::merge_index(bytes, there.as_ref(), &target.to_string())? {
                    self.reg.put_manifest(target, tag, crate::image::media::OCI_INDEX, &merged)?;
                    want = Digest::of(&merged);
                } else if there.as_ref().map(|m| &m.digest) != Some(&entry.digest) {
                    self.reg.put_manifest(target, tag, &entry.media_type, bytes)?;
                }
            } else if self.reg.head_manifest(target, tag)?.as_ref() != Some(&entry.digest) {
                self.reg.put_manifest(target, tag, &entry.media_type, bytes)?;
            }
            let got = self.reg.head_manifest(target, tag)?;
            if got.as_ref() != Some(&want) {
                return Err(Error::Other(format!(
                    "{target}: after the push the registry serves {} for it, not {}",
                    got.map(|d| d.to_string()).unwrap_or_else(|| "nothing".into()),
                    want
                )));
            }
        }
        Ok(0)
    }
}
