//! Owns the tests of docker-archive as a source (`import docker-archive:FILE`): archives written
//! by the real tools (skopeo, podman save -m) imported with their image IDs and diff_ids kept,
//! and hostile archives refused in one line with nothing stored.
mod direct;
mod hostile;
mod layouts;
mod real;

use crate::harness::cmd::{Env, s};

/// `import docker-archive:PATH --json` into `env`'s store.
fn import_json(env: &Env, archive: &std::path::Path) -> serde_json::Value {
    env.json(&["import", &format!("docker-archive:{}", s(archive))])
}

/// The references `store ls --json` lists.
fn stored_refs(env: &Env) -> Vec<String> {
    let v = env.json(&["store", "ls"]);
    let list = v["images"].as_array().unwrap_or_else(|| panic!("store ls --json: {v}"));
    list.iter().map(|r| r["reference"].as_str().unwrap().to_string()).collect()
}

/// `(reference, FIELD)` of every image an import report lists, sorted.
fn images_by(doc: &serde_json::Value, field: &str) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = doc["images"].as_array().unwrap_or_else(|| panic!("no images in {doc}")).iter().map(|i| (i["reference"].as_str().unwrap().to_string(), i[field].as_str().unwrap().to_string())).collect();
    v.sort();
    v
}
