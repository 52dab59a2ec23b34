# shellcheck shell=bash
# The minimal root filesystem of the project's images, sourced by scripts/images.sh and run by
# docker/*.Dockerfile, so an image built either way has the same layout.
#
# rootfs_libraries BINARY: the absolute path of every shared object BINARY loads, as ldd resolves
# them on this machine (the dynamic loader included, the vDSO excluded), sorted; nothing for a
# static binary. Fails when ldd cannot resolve one.
rootfs_libraries() {
  local text
  if ! text=$(ldd "$1" 2>&1); then
    [[ $text == *"not a dynamic executable"* ]] && return 0
    printf 'rootfs: ldd %s failed: %s\n' "$1" "$text" >&2
    return 1
  fi
  if [[ $text == *"not found"* ]]; then
    printf 'rootfs: ldd cannot resolve every library of %s:\n%s\n' "$1" "$text" >&2
    return 1
  fi
  awk '$2 == "=>" && $3 ~ /^\// {print $3} $1 ~ /^\// {print $1}' <<<"$text" | LC_ALL=C sort -u
}

# rootfs_assemble BINARY NAME DIR: fills the empty folder DIR with
#   /usr/local/bin/NAME                     BINARY (the image's entrypoint)
#   <each path rootfs_libraries prints>     the library itself (symbolic links followed)
#   /etc/ssl/certs/ca-certificates.crt      this machine's CA bundle
#   /etc/nsswitch.conf                      files for users and groups, `hosts: files dns`
#   /etc/passwd, /etc/group                 root (0) and nonroot (65532)
#   /tmp                                    mode 1777
# Modes are set explicitly (umask differs by machine); everything is meant to be owned by 0:0.
rootfs_assemble() {
  local binary=$1 name=$2 dir=$3 ca=/etc/ssl/certs/ca-certificates.crt lib libs
  [[ -f $ca ]] || { printf 'rootfs: no CA bundle at %s (install ca-certificates)\n' "$ca" >&2; return 1; }
  libs=$(rootfs_libraries "$binary") || return 1
  mkdir -p "$dir/usr/local/bin" "$dir/etc/ssl/certs" "$dir/tmp"
  install -m 0755 "$binary" "$dir/usr/local/bin/$name"
  for lib in $libs; do
    mkdir -p "$dir$(dirname "$lib")"
    install -m 0755 "$(readlink -f "$lib")" "$dir$lib"
  done
  install -m 0644 "$ca" "$dir/etc/ssl/certs/ca-certificates.crt"
  printf 'passwd: files\ngroup: files\nhosts: files dns\n' >"$dir/etc/nsswitch.conf"
  printf 'root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n' >"$dir/etc/passwd"
  printf 'root:x:0:\nnonroot:x:65532:\n' >"$dir/etc/group"
  chmod 0644 "$dir/etc/nsswitch.conf" "$dir/etc/passwd" "$dir/etc/group"
  find "$dir" -type d -exec chmod 0755 {} +
  chmod 1777 "$dir/tmp"
}
