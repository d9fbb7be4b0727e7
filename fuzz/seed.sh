#!/usr/bin/env bash
# Fills fuzz/corpus/<target>/ with seeds from the committed test data (the corpus directory is
# not committed). Usage: fuzz/seed.sh [target...]   (default: every target)
set -euo pipefail
cd "$(dirname "$0")"
data=../tests/data
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(gguf safetensors tokenizer)
for t in "${targets[@]}"; do
    mkdir -p "corpus/$t"
    case "$t" in
        gguf)
            cp "$data"/malformed/gguf/*.gguf "$data"/models/*.gguf "corpus/$t/"
            ;;
        safetensors)
            # Shards in different directories share names, so name each seed by its path.
            find "$data/malformed/safetensors" "$data/safetensors" -name '*.safetensors' -size -1024k |
                while read -r f; do
                    cp "$f" "corpus/$t/$(echo "${f#"$data"/}" | tr / _)"
                done
            ;;
        tokenizer)
            ;; # its input is a structured description; libFuzzer starts it from nothing
        *)
            echo "unknown target $t" >&2
            exit 1
            ;;
    esac
    chmod -R u+w "corpus/$t"
    echo "corpus/$t: $(ls "corpus/$t" | wc -l) seeds"
done
