# tests/lib/verify.sh -- check what `skopeo copy docker://... dir:DIR` wrote.
#
# skopeo's dir: transport (Directory Transport Version 1.1) writes:
#   version                 "Directory Transport Version: 1.1"
#   manifest.json           the top-level manifest exactly as served: an image
#                           manifest, or with --all from a list, the index /
#                           manifest list itself
#   HEX.manifest.json       with --all: each per-platform manifest, by digest
#   HEX                     every blob (configs and layers), by digest
# so everything except `version` can be checked against its sha256.

# verify_dir_digests DIR [EXPECTED_DIGEST]: every blob and per-instance
# manifest matches its name; manifest.json's sha256 equals EXPECTED_DIGEST
# (what the registry reports, e.g. from registry_manifest_head); every
# manifest's config and layers are present with the declared size; each
# gzip layer decompresses to its config's diff_id.  Prints every mismatch
# to stderr and returns 1 if there was any.
verify_dir_digests() {
  local dir=$1 expect=${2:-} f base hex actual top errs=0 d size
  _verr() { echo "verify $dir: $*" >&2; errs=$((errs + 1)); }
  [ -f "$dir/manifest.json" ] || { _verr "no manifest.json"; return 1; }
  grep -qx 'Directory Transport Version: 1.1' "$dir/version" 2>/dev/null ||
    _verr "missing or unexpected version file"

  for f in "$dir"/*; do
    base=${f##*/}
    case $base in
      manifest.json | version) continue ;;
      *.manifest.json) hex=${base%.manifest.json} ;;
      *) hex=$base ;;
    esac
    if ! [[ $hex =~ ^[0-9a-f]{64}$ ]]; then _verr "unexpected file $base"; continue; fi
    actual=$(sha256sum <"$f" | cut -c1-64)
    [ "$actual" = "$hex" ] || _verr "$base: content has sha256 $actual"
  done

  top=sha256:$(sha256sum <"$dir/manifest.json" | cut -c1-64)
  [ -z "$expect" ] || [ "$top" = "$expect" ] ||
    _verr "manifest.json is $top, expected $expect"

  jq -e 'type == "object"' "$dir/manifest.json" >/dev/null 2>&1 ||
    { _verr "manifest.json is not a JSON object"; return 1; }
  if jq -e 'has("manifests")' "$dir/manifest.json" >/dev/null; then
    # An index / manifest list: only written when copied with --all, so
    # every instance must be there.
    while read -r d size; do
      f=$dir/${d#sha256:}.manifest.json
      if [ ! -f "$f" ]; then _verr "instance $d missing (copied without --all?)"; continue; fi
      [ "$(stat -c %s "$f")" = "$size" ] || _verr "instance $d: size $(stat -c %s "$f") != $size"
      _verify_image "$dir" "$f"
    done < <(jq -r '.manifests[] | "\(.digest) \(.size)"' "$dir/manifest.json")
  else
    _verify_image "$dir" "$dir/manifest.json"
  fi
  [ "$errs" -eq 0 ]
}

# _verify_image DIR MANIFEST: (helper; uses the caller's _verr) config and
# layers present with declared sizes, layer contents match rootfs.diff_ids.
_verify_image() {
  local dir=$1 m=$2 d size mt i=0 cfg diff got f
  while read -r d size mt; do
    f=$dir/${d#sha256:}
    if [ ! -f "$f" ]; then _verr "${m##*/}: blob $d missing"; continue; fi
    [ "$(stat -c %s "$f")" = "$size" ] || _verr "${m##*/}: blob $d size $(stat -c %s "$f") != $size"
  done < <(jq -r '(.config, .layers[]) | "\(.digest) \(.size) \(.mediaType)"' "$m")

  cfg=$dir/$(jq -r '.config.digest | ltrimstr("sha256:")' "$m")
  [ -f "$cfg" ] || return 0
  while read -r d mt; do
    diff=$(jq -r --argjson i "$i" '.rootfs.diff_ids[$i] // "none"' "$cfg")
    f=$dir/${d#sha256:}
    [ -f "$f" ] || { i=$((i + 1)); continue; } # already reported missing
    case $mt in
      *gzip) got=sha256:$(gzip -dc <"$f" 2>/dev/null | sha256sum | cut -c1-64) ;;
      *tar) got=sha256:$(sha256sum <"$f" | cut -c1-64) ;;
      *) got=$diff ;; # other compressions: not checked here
    esac
    [ "$got" = "$diff" ] || _verr "${m##*/}: layer $i $d uncompresses to $got, config says $diff"
    i=$((i + 1))
  done < <(jq -r '.layers[] | "\(.digest) \(.mediaType)"' "$m")
}
