#!/usr/bin/env bash
# Regenerate the speech test clips in assets/speech/ with Debian's espeak-ng (apt-get install espeak-ng).
# espeak-ng writes 22.05 kHz mono 16-bit wav; the clips are kept at that native rate on purpose, so the
# tests also exercise resampling to 16 kHz.
set -euo pipefail
out="$(dirname "$0")/../assets/speech"
mkdir -p "$out"
espeak-ng -v en-us -s 150 -w "$out/en_male.wav" \
  "The quick brown fox jumps over the lazy dog. She sells sea shells by the sea shore."
espeak-ng -v en-us+f3 -s 160 -p 60 -w "$out/en_female.wav" \
  "Peter Piper picked a peck of pickled peppers, how many did he pick?"
espeak-ng -v de -s 150 -w "$out/de_male.wav" \
  "Guten Morgen! Heute scheint die Sonne, und wir gehen zusammen in den Park."
