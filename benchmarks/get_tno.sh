#!/usr/bin/env bash
# Downloads the 25 TNO infrared/visible pairs of CDDFuse's test set (Zhaozixiang1228/MMIF-CDDFuse, test_img/TNO at
# a pinned commit) into DEST/TNO/ir and DEST/TNO/vi, each file checked against benchmarks/tno.sha256, so the bytes
# are the ones benchmarks/training.md scored.
#
#   bash benchmarks/get_tno.sh DEST        then: python benchmarks/realtime_quality.py --set tno=DEST/TNO ...
#
# TNO Image Fusion Dataset: A. Toet, figshare (CC BY 4.0); cite it and CDDFuse (CVPR 2023) when you report on it.
# Needs curl and network access to raw.githubusercontent.com (MAEFUSE_TNO_BASE replaces the address). An existing
# DEST/TNO is refused, and DEST/TNO appears only once every file has arrived and matched its checksum.
set -euo pipefail

if [[ $# -ne 1 ]]; then
    echo "usage: bash benchmarks/get_tno.sh DEST" >&2
    exit 2
fi
dest=$1
checksums=$(cd "$(dirname "$0")" && pwd)/tno.sha256
base=${MAEFUSE_TNO_BASE:-https://raw.githubusercontent.com/Zhaozixiang1228/MMIF-CDDFuse/fd8da1f39d8d403b7343e577bd5a30cba38c7b7b/test_img/TNO}
if [[ -e "$dest/TNO" ]]; then
    echo "error: $dest/TNO already exists: remove it or pick another DEST" >&2
    exit 1
fi
mkdir -p "$dest"
work=$(mktemp -d "$dest/.tno.XXXXXX")
trap 'rm -rf "$work"' EXIT
mkdir "$work/ir" "$work/vi"
count=0
while read -r _ file; do
    curl --fail --silent --show-error --location --retry 3 --output "$work/$file" "$base/$file"
    count=$((count + 1))
    printf '\r%d/50 files' "$count"
done < "$checksums"
echo
if ! (cd "$work" && sha256sum --check --quiet "$checksums"); then
    echo "error: the downloaded TNO files differ from benchmarks/tno.sha256: the source changed; nothing written" >&2
    exit 1
fi
chmod 755 "$work"
mv "$work" "$dest/TNO"
trap - EXIT
echo "wrote 25 TNO pairs to $dest/TNO"
