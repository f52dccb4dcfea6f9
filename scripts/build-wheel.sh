#!/usr/bin/env bash
# Builds the speedscape wheel into target/wheels/ and checks it: the release binary linked by zig
# for glibc 2.28 (maturin --zig --compatibility manylinux_2_28), with the micro model, config.toml's
# defaults and the exporter (models/export.py, models/requirements.txt) as data under
# <prefix>/share/speedscape/. Checks: the version is Cargo.toml's, `auditwheel show` finds it
# consistent with manylinux_2_28 or older, and it is at most 40 MB. Prints the wheel's path last.
# A cold build is a full release build (minutes); target/ is shared with cargo's own builds.
set -euo pipefail
cd "$(dirname "$0")/.."
tools=$(scripts/wheel-tools.sh)
export PATH="$tools/bin:$PATH"
version=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -1)
[ -n "$version" ] || { echo "build-wheel: no version in Cargo.toml" >&2; exit 1; }

# The data, staged where pyproject.toml's `data` points (maturin does not follow symlinked folders).
stage=target/wheel-data
share="$stage/data/share/speedscape"
rm -rf "$stage"
mkdir -p "$share/models"
cp -R models/micro "$share/models/micro"
cp models/export.py models/requirements.txt "$share/models/"
cp config.toml "$share/config.toml"

rm -rf target/wheels
start=$SECONDS
maturin build --release --zig --compatibility manylinux_2_28 --out target/wheels >&2
echo "build-wheel: maturin took $((SECONDS - start)) s" >&2
shopt -s nullglob
wheels=(target/wheels/speedscape-*.whl)
[ "${#wheels[@]}" = 1 ] || { echo "build-wheel: expected one wheel in target/wheels, found: ${wheels[*]:-none}" >&2; exit 1; }
wheel=${wheels[0]}
name=$(basename "$wheel")

# The version: the file name's and the metadata's are Cargo.toml's.
case "$name" in
  "speedscape-$version-"*) ;;
  *) echo "build-wheel: $name is not version $version (Cargo.toml)" >&2; exit 1 ;;
esac
meta=$(python3 -c 'import sys, zipfile; z = zipfile.ZipFile(sys.argv[1]); print(next(z.read(n).decode() for n in z.namelist() if n.endswith(".dist-info/METADATA")))' "$wheel")
grep -qx "Version: $version" <<<"$meta" || { echo "build-wheel: METADATA's version is not $version" >&2; exit 1; }

# The platform: what auditwheel finds the binary consistent with, 2.28 or older.
show=$(auditwheel show "$wheel")
echo "$show" >&2
tag=$(grep -oE 'manylinux_2_[0-9]+_x86_64' <<<"$show" | head -1)
minor=${tag#manylinux_2_}; minor=${minor%_x86_64}
if [ -z "$tag" ] || [ "$minor" -gt 28 ]; then
  echo "build-wheel: auditwheel says ${tag:-no manylinux tag}; manylinux_2_28 or older is required (Ubuntu 20.04 / Debian 11 GPU boxes)" >&2
  exit 1
fi
case "$name" in
  *manylinux_2_28_x86_64*|*manylinux_2_2[0-7]_x86_64*|*manylinux_2_1[0-9]_x86_64*|*manylinux2014_x86_64*) ;;
  *) echo "build-wheel: $name is not tagged manylinux_2_28 or older" >&2; exit 1 ;;
esac

# The size, and the data inside.
size=$(stat -c %s "$wheel")
limit=$((40 * 1024 * 1024))
[ "$size" -le "$limit" ] || { echo "build-wheel: $name is $size bytes, over the 40 MB limit" >&2; exit 1; }
for f in models/micro/unet/model.onnx models/export.py models/requirements.txt config.toml; do
  python3 -c 'import sys, zipfile; sys.exit(0 if sys.argv[2] in zipfile.ZipFile(sys.argv[1]).namelist() else 1)' \
    "$wheel" "speedscape-$version.data/data/share/speedscape/$f" \
    || { echo "build-wheel: $name lacks share/speedscape/$f" >&2; exit 1; }
done
echo "build-wheel: $name: $((size / 1024)) KiB, auditwheel: $tag" >&2
echo "$wheel"
