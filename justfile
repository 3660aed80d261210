# Task runner for ocibundle: https://github.com/casey/just
# `just` is not packaged in Debian 12: install it with `cargo install just`.
# Every recipe only calls a script, so the scripts work without `just` too.

# list the recipes
default:
    @just --list

# install missing test tools (Debian, as root), then cargo test --all-targets ARGS
test *ARGS:
    scripts/test.sh {{ARGS}}

# the quick start: private registry, 3 sample images, fetch, ls, fsck, re-fetch, skopeo inspect
demo:
    scripts/demo.sh

# fetch benchmark on the full corpus (ocibundle vs skopeo vs curl floor; ~3 GB in /tmp)
bench *ARGS:
    benches/fetch.sh {{ARGS}}

# fetch benchmark on the small corpus (~50 MB, about a minute)
bench-small *ARGS:
    benches/fetch.sh --small {{ARGS}}

# bundle benchmark on the full corpus (bundle/verify/import/size vs tar -cf, delta figure)
bench-bundle *ARGS:
    benches/bundle.sh {{ARGS}}

# format 2 benchmark on the full corpus layout (sizes, cold/warm write, delta, restores, RSS)
bench-chunks *ARGS:
    benches/chunks.sh {{ARGS}}

# exact rebuild of one big layer on 1 core vs all cores (zlib replay seams; OLD_BIN=... goes beside)
bench-seams *ARGS:
    benches/seams.sh {{ARGS}}

# export benchmark (docker-archive / OCI layout vs podman save, skopeo, tar -x; full: ~40 GB in /tmp, root)
bench-export *ARGS:
    benches/export.sh {{ARGS}}

# push benchmark on the full corpus (ocibundle push --from BUNDLE vs skopeo copy per image)
bench-push *ARGS:
    benches/push.sh {{ARGS}}

# every benchmark, full corpus
bench-all:
    benches/fetch.sh
    benches/bundle.sh
    benches/push.sh
    benches/export.sh
