# Every content-addressed object the bench corpus puts into a store, from
# corpus-manifest.json (make-corpus.sh). One line per unique digest:
#   KIND DIGEST REPO
# KIND is manifest | config | layer; REPO is a repository in the registry that
# holds it (images are "repo:tag"). Index images contribute the index, every
# child manifest and their configs and layers (fetch --all-platforms).
def repo: .ref | sub(":[^:/]*$"; "");
[ .images[] | repo as $r
  | ( {kind: "manifest", digest: .registry_digest, repo: $r},
      ( select(.config_digest) | {kind: "config", digest: .config_digest, repo: $r} ),
      ( (.layers // [])[] | {kind: "layer", digest, repo: $r} ),
      ( (.platforms // [])[]
        | {kind: "manifest", digest: .manifest_digest, repo: $r},
          {kind: "config", digest: .config_digest, repo: $r},
          (.layers[] | {kind: "layer", digest, repo: $r}) ) ) ]
| unique_by(.digest)[]
| "\(.kind) \(.digest) \(.repo)"
