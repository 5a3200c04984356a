#!/usr/bin/env bash
# Seeds the corpus of the `config` fuzz target (fuzz/corpus/config, not kept in
# git) from the shipped configs and the README's config example, plus copies
# whose `${VAR}` secrets are `file:` references to the target's own directory,
# so the fuzzer starts from configs that load all the way through validation.
set -euo pipefail
cd "$(dirname "$0")/.."

corpus=fuzz/corpus/config
sandbox="${TMPDIR:-/tmp}/herald-fuzz-config"
mkdir -p "$corpus"
cp config/*.toml config/examples/*.toml "$corpus/"
# The README's sink example, with the [ingest] table it leaves out.
{
  printf '[ingest]\nlisten = ["0.0.0.0:9996"]\nallow = ["10.1.0.0/24"]\n\n'
  awk '/^```toml/ { keep = 1; next } /^```/ { keep = 0 } keep' README.md
} > "$corpus/readme.toml"
for file in config/examples/*.toml "$corpus/readme.toml"; do
  sed -e "s|\"\${[A-Za-z_]*URL}\"|\"file:$sandbox/url\"|" \
      -e "s|\"\${[A-Za-z_]*}\"|\"file:$sandbox/token\"|" \
      "$file" > "$corpus/file-$(basename "$file")"
done
echo "seeded $(ls "$corpus" | wc -l) files in $corpus"
