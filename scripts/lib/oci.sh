# shellcheck shell=bash
# OCI image archives without a container daemon, sourced by scripts/peers.sh (the test node's pause
# and workload images) and scripts/images.sh (the project's images).
#
# oci_archive [--gzip] [--user USER] [--env K=V]... [--label K=V]... OUT REF ROOTFS ENTRYPOINT_JSON
#
# Packs the folder ROOTFS as a one-layer OCI image and writes OUT: an OCI image layout packed as
# tar, the format `ctr images import` and `skopeo copy oci-archive:OUT ...` read. REF is the full
# image name (registry/repository:tag), recorded in index.json as `io.containerd.image.name` (the
# name containerd gives the image) and its tag as `org.opencontainers.image.ref.name`.
#   --gzip     compress the layer (media type ...tar+gzip); the config's diff_id stays the digest
#              of the uncompressed tar, as the image spec requires
#   --user     the config's User (for example 65532:65532)
#   --env      the config's Env, in order (default: PATH=/bin)
#   --label    the config's Labels, sorted by key
# Deterministic: entries sorted by name, mtime 0, owner 0:0, gzip without name or time, and the
# JSON written in a fixed key order, so the same inputs give the same digests. File modes are
# taken from ROOTFS as they are: set them explicitly before calling (umask differs by machine).
# Temporary files go to OCI_WORK_DIR (default: the folder of OUT).

# _oci_json_str S: S as a JSON string literal. Only printable text is expected (names, versions,
# URLs, paths); a control character is refused rather than escaped.
_oci_json_str() {
  local s=$1
  if [[ $s == *[[:cntrl:]]* ]]; then
    printf 'oci_archive: refusing a control character in %q\n' "$s" >&2
    return 1
  fi
  s=${s//\\/\\\\}
  s=${s//\"/\\\"}
  printf '"%s"' "$s"
}

# _oci_blob DIR FILE: moves FILE into DIR's blob store; prints "DIGEST SIZE".
_oci_blob() {
  local digest size
  digest=$(sha256sum "$2" | cut -d' ' -f1)
  size=$(stat -c %s "$2")
  mv "$2" "$1/blobs/sha256/$digest"
  printf '%s %s\n' "$digest" "$size"
}

oci_archive() {
  local gzip=0 user="" envs=() labels=()
  while (($#)); do
    case $1 in
      --gzip) gzip=1; shift ;;
      --user) user=$2; shift 2 ;;
      --env) envs+=("$2"); shift 2 ;;
      --label) labels+=("$2"); shift 2 ;;
      --) shift; break ;;
      -*) printf 'oci_archive: unknown option %s\n' "$1" >&2; return 1 ;;
      *) break ;;
    esac
  done
  (($# == 4)) || { printf 'oci_archive: usage: oci_archive [options] OUT REF ROOTFS ENTRYPOINT_JSON\n' >&2; return 1; }
  local out=$1 ref=$2 rootfs=$3 entrypoint=$4
  ((${#envs[@]})) || envs=("PATH=/bin")
  local arch
  case $(uname -m) in
    x86_64) arch=amd64 ;;
    aarch64) arch=arm64 ;;
    *) arch=$(uname -m) ;;
  esac

  local d
  d=$(mktemp -d "${OCI_WORK_DIR:-$(dirname "$out")}/oci.XXXXXX")
  mkdir -p "$d/blobs/sha256"
  local diff_id layer_digest layer_size layer_type config_digest config_size manifest_digest manifest_size
  tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -C "$rootfs" -cf "$d/layer.tar" .
  diff_id=$(sha256sum "$d/layer.tar" | cut -d' ' -f1)
  if ((gzip)); then
    gzip -n -9 "$d/layer.tar"
    read -r layer_digest layer_size < <(_oci_blob "$d" "$d/layer.tar.gz")
    layer_type=application/vnd.oci.image.layer.v1.tar+gzip
  else
    read -r layer_digest layer_size < <(_oci_blob "$d" "$d/layer.tar")
    layer_type=application/vnd.oci.image.layer.v1.tar
  fi

  local e sep="" env_json="" label_json="" user_json=""
  for e in "${envs[@]}"; do env_json+="$sep$(_oci_json_str "$e")" || return 1; sep=","; done
  if ((${#labels[@]})); then
    sep=""
    while IFS= read -r e; do
      label_json+="$sep$(_oci_json_str "${e%%=*}"):$(_oci_json_str "${e#*=}")" || return 1
      sep=","
    done < <(printf '%s\n' "${labels[@]}" | LC_ALL=C sort)
    label_json=",\"Labels\":{$label_json}"
  fi
  [[ -z $user ]] || user_json=",\"User\":$(_oci_json_str "$user")"
  printf '{"architecture":"%s","os":"linux","config":{"Entrypoint":%s,"Env":[%s]%s%s,"WorkingDir":"/"},"rootfs":{"type":"layers","diff_ids":["sha256:%s"]}}' \
    "$arch" "$entrypoint" "$env_json" "$label_json" "$user_json" "$diff_id" >"$d/config.json"
  read -r config_digest config_size < <(_oci_blob "$d" "$d/config.json")
  printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:%s","size":%s},"layers":[{"mediaType":"%s","digest":"sha256:%s","size":%s}]}' \
    "$config_digest" "$config_size" "$layer_type" "$layer_digest" "$layer_size" >"$d/manifest.json"
  read -r manifest_digest manifest_size < <(_oci_blob "$d" "$d/manifest.json")
  printf '{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:%s","size":%s,"annotations":{"io.containerd.image.name":%s,"org.opencontainers.image.ref.name":%s}}]}' \
    "$manifest_digest" "$manifest_size" "$(_oci_json_str "$ref")" "$(_oci_json_str "${ref##*:}")" >"$d/index.json"
  printf '{"imageLayoutVersion":"1.0.0"}' >"$d/oci-layout"
  tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -C "$d" -cf "$out.tmp" oci-layout index.json blobs
  mv "$out.tmp" "$out"
  rm -rf "$d"
}
