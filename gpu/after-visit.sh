#!/usr/bin/env bash
# After a GPU visit (on the development machine, from the repository root): unpack the visit's campaign.tar.gz into
# data/ and fit a bundled model from each dtype's layer sweep (the bundled GPU models, which the H200 sweeps feed,
# are rebuilt with `python -m neuralpower.models.bundle`).
#
#   bash gpu/after-visit.sh PATH/campaign.tar.gz
#
# The archive holds one folder, the GPU model's (gpu/visit.sh: data/h200 for an NVIDIA H200), with the datasets
# committed there before the visit and the visit's rows added; it replaces data/<that folder>'s files. Each
# data/<folder>/<executor>-<dtype>/layers.csv is fitted (`neuralpower fit --method all`) into the bundled model
# <folder>-<executor>-<dtype> (for example h200-torch-fp16); the DEFAULT is left as it is. Nothing is committed:
# review `git status`, run the tests, commit the data and the models.
#
# DATA, MODELS and NEURALPOWER (the command) may be set to run it elsewhere (the tests do); FIT_OPTIONS adds
# options to fit. Exits 2 with one line for an archive that is missing, unreadable or not one folder of
# relative paths.
set -u -o pipefail
DATA=${DATA:-data}
MODELS=${MODELS:-python/neuralpower/data/models}
NEURALPOWER=${NEURALPOWER:-neuralpower}
FIT_OPTIONS=${FIT_OPTIONS:-}
fail() { echo "after-visit: $*" >&2; exit 2; }

[ $# -eq 1 ] || fail "give the visit's archive: bash gpu/after-visit.sh PATH/campaign.tar.gz"
ARCHIVE=$1
[ -f "$ARCHIVE" ] || fail "$ARCHIVE: no such file"
MEMBERS=$(tar tzf "$ARCHIVE" 2>/dev/null) || fail "$ARCHIVE: not a readable .tar.gz"
[ -n "$MEMBERS" ] || fail "$ARCHIVE: empty archive"
if grep -qE '^/|(^|/)\.\.(/|$)' <<<"$MEMBERS"; then fail "$ARCHIVE: holds an absolute path or '..'"; fi
FOLDER=$(cut -d/ -f1 <<<"$MEMBERS" | sort -u)
[ "$(wc -l <<<"$FOLDER")" -eq 1 ] || fail "$ARCHIVE: holds more than one folder ($(tr '\n' ' ' <<<"$FOLDER"))"
case "$FOLDER" in *[!a-z0-9-]* | "") fail "$ARCHIVE: its folder '$FOLDER' is not a GPU model's folder name";; esac

mkdir -p "$DATA" "$MODELS"
tar xzf "$ARCHIVE" -C "$DATA" || fail "$ARCHIVE: could not be unpacked into $DATA"
echo "unpacked $ARCHIVE into $DATA/$FOLDER"

fitted=0
for sweep in "$DATA/$FOLDER"/*/layers.csv; do
  [ -f "$sweep" ] || continue
  name="$FOLDER-$(basename "$(dirname "$sweep")")"
  echo "fitting $sweep into the bundled model $name"
  # shellcheck disable=SC2086  # FIT_OPTIONS is a list of options
  if $NEURALPOWER fit "$sweep" --out "$MODELS/$name.json" --method all $FIT_OPTIONS \
      --description "Fit by gpu/after-visit.sh from $sweep ($(date -u +%Y-%m-%d))"; then
    fitted=$((fitted + 1))
  else
    echo "after-visit: $sweep: not fitted (see above); its data are kept" >&2
  fi
done
[ "$fitted" -gt 0 ] || fail "$DATA/$FOLDER: no layer sweep could be fitted"
# The default stays the bundled GPU model (h200-bf16), which the H200 sweeps feed: rebuild it from the new data.
echo "rebuild the bundled GPU models from the new data: python -m neuralpower.models.bundle; then update the README's figures"
