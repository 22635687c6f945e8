#!/usr/bin/env bash
# images/trixie.sh {source|download|update} ... — Debian 13 (trixie) sources and .debs on a Debian 12 machine,
# for one command, without touching the machine's apt configuration:
#   images/trixie.sh source PKG[=VERSION] DEST     apt-get source into DEST (unpacked; .dsc and tarballs kept)
#   images/trixie.sh source-only PKG[=VERSION] DEST  the same without unpacking (--download-only)
#   images/trixie.sh download PKG[=VERSION]... DEST  the .debs (no dependencies) into DEST
#   images/trixie.sh update                        refresh the private package lists now
#   images/trixie.sh apt ARGS...                   apt-get ARGS with the same private setup (e.g. showsrc)
# apt runs with a private sources list (trixie + trixie-updates + trixie-security, deb and deb-src) and
# private state, cache and list directories under $AOCU_TRIXIE_CACHE (default $AOCU_IMAGE_CACHE/trixie-apt,
# i.e. images/out/cache/trixie-apt); the machine's /etc/apt sources, preferences and lists are not read or
# changed. apt verifies what it always verifies: the InRelease signature against the Debian archive keyring
# ($AOCU_TRIXIE_KEYRING, default /usr/share/keyrings/debian-archive-keyring.gpg, which has the trixie keys
# from debian-archive-keyring 2023.3+deb12u1 on), then the SHA-256 of every index and of every fetched file.
# Lists are refreshed when older than $AOCU_TRIXIE_MAX_AGE seconds (default 86400) or when a request misses.
set -euo pipefail

usage() { sed -n '2,8p' "$0" >&2; exit 2; }
[ $# -ge 1 ] || usage
here=$(cd "$(dirname "$0")" && pwd)
cache=${AOCU_TRIXIE_CACHE:-${AOCU_IMAGE_CACHE:-$here/out/cache}/trixie-apt}
MIRROR=${AOCU_DEBIAN_MIRROR:-http://deb.debian.org/debian}
SECURITY=${AOCU_DEBIAN_SECURITY:-http://deb.debian.org/debian-security}
KEYRING=${AOCU_TRIXIE_KEYRING:-/usr/share/keyrings/debian-archive-keyring.gpg}
max_age=${AOCU_TRIXIE_MAX_AGE:-86400}
for tool in apt-get gpgv flock; do
  command -v "$tool" >/dev/null || { echo "trixie.sh: '$tool' not found" >&2; exit 2; }
done
[ -r "$KEYRING" ] || { echo "trixie.sh: no archive keyring at $KEYRING (apt-get install debian-archive-keyring)" >&2; exit 2; }

mkdir -p "$cache"/{lists/partial,archives/partial,cache,etc/apt.conf.d,etc/preferences.d,etc/sources.list.d}
cache=$(cd "$cache" && pwd)
# Source lines change only with the mirror or keyring settings; rewriting them each run is harmless.
{
  for kind in deb deb-src; do
    echo "$kind [signed-by=$KEYRING] $MIRROR trixie main"
    echo "$kind [signed-by=$KEYRING] $MIRROR trixie-updates main"
    echo "$kind [signed-by=$KEYRING] $SECURITY trixie-security main"
  done
} > "$cache/etc/sources.list"
aptopt=(
  -o Dir::Etc="$cache/etc" -o Dir::Etc::SourceList="$cache/etc/sources.list"
  -o Dir::Etc::SourceParts="$cache/etc/sources.list.d" -o Dir::Etc::Parts="$cache/etc/apt.conf.d"
  -o Dir::Etc::Preferences="$cache/etc/preferences" -o Dir::Etc::PreferencesParts="$cache/etc/preferences.d"
  -o Dir::Etc::Trusted="$cache/etc/trusted.gpg" -o Dir::Etc::TrustedParts="$cache/etc/trusted.gpg.d"
  -o Dir::State::Lists="$cache/lists" -o Dir::Cache="$cache/cache" -o Dir::Cache::Archives="$cache/archives"
  -o Dir::Cache::pkgcache="" -o Dir::Cache::srcpkgcache="" -o Acquire::Languages=none
  -o APT::Architecture=amd64 -o APT::Architectures::=amd64 -o APT::Get::AllowUnauthenticated=false
  -o Acquire::AllowInsecureRepositories=false
)
# apt drops privileges to _apt for downloads, which cannot write to a root-owned private cache.
[ "$(id -u)" -eq 0 ] && aptopt+=(-o APT::Sandbox::User=root)

exec 9>"$cache/.lock"
flock 9  # one apt at a time per cache (lists and archives are shared between callers)

update() {
  echo "[trixie] apt-get update (private lists in $cache/lists)" >&2
  apt-get "${aptopt[@]}" update -qq >&2 || { echo "trixie.sh: apt-get update failed (network, mirror or signature)" >&2; exit 1; }
  touch "$cache/lists/.updated"
}
fresh() {
  [ -f "$cache/lists/.updated" ] && [ $(( $(date +%s) - $(stat -c %Y "$cache/lists/.updated") )) -lt "$max_age" ]
}
# run_apt CMD...: with fresh lists; a miss (e.g. a version that arrived after the last update) retries once
# after an update.
run_apt() {
  fresh || update
  "$@" && return 0
  echo "[trixie] retrying after a list refresh" >&2
  update
  "$@"
}

cmd=$1; shift
case "$cmd" in
  update) update ;;
  apt) run_apt apt-get "${aptopt[@]}" "$@" ;;  # any apt-get command against the private trixie lists
  source|source-only)
    [ $# -eq 2 ] || usage
    mkdir -p "$2"
    dest=$(cd "$2" && pwd)
    # The file list and SHA-256s come from the signed Sources index; apt-helper refuses a file whose hash
    # differs. (Some mirrors lack a .dsc whose tarballs they carry: the tarballs are then unpacked the way
    # dpkg-source does for format 3.0 (quilt), since their hashes are already checked.)
    uris=$(run_apt apt-get "${aptopt[@]}" -qq source --print-uris "$1")
    [ -n "$uris" ] || { echo "trixie.sh: no source package $1 in trixie" >&2; exit 1; }
    dsc=""
    while read -r uri file _size hash; do
      uri=${uri//\'/} file=${file//\'/}
      if [ -s "$dest/$file" ] && [ "SHA256:$(sha256sum "$dest/$file" | cut -d' ' -f1)" = "$hash" ]; then :
      elif ! /usr/lib/apt/apt-helper "${aptopt[@]}" download-file "$uri" "$dest/$file" "$hash" >/dev/null 2>"$dest/.err"; then
        case "$file" in
          *.dsc) echo "[trixie] $file not on the mirror; tarballs are hash-checked against the Sources index" >&2
                 rm -f "$dest/$file"; continue ;;
          *) cat "$dest/.err" >&2; rm -f "$dest/.err"; echo "trixie.sh: cannot fetch $uri" >&2; exit 1 ;;
        esac
      fi
      echo "[trixie] $file $hash" >&2
      case "$file" in *.dsc) dsc=$file ;; esac
    done <<< "$uris"
    rm -f "$dest/.err"
    [ "$cmd" = source-only ] && exit 0
    if [ -n "$dsc" ]; then
      (cd "$dest" && dpkg-source -q -x "$dsc" >&2)
    else
      orig=$(cd "$dest" && ls ./*.orig.tar.* | head -1) deb=$(cd "$dest" && ls ./*.debian.tar.* | head -1)
      name=${1%%=*} ver=${orig#./"${name}"_} ver=${ver%.orig.tar.*}
      src="$dest/$name-$ver"
      rm -rf "$src" && mkdir -p "$src"
      tar -xf "$dest/$orig" -C "$src" --strip-components=1
      tar -xf "$dest/$deb" -C "$src"
      if [ -f "$src/debian/patches/series" ]; then
        sed -e 's/#.*//' -e '/^[[:space:]]*$/d' "$src/debian/patches/series" | while read -r patch opt; do
          patch -s -d "$src" ${opt:--p1} -N -r - < "$src/debian/patches/$patch" ||
            { echo "trixie.sh: patch $patch does not apply" >&2; exit 1; }
        done
      fi
      echo "[trixie] unpacked $src" >&2
    fi
    ;;
  download)
    [ $# -ge 2 ] || usage
    dest=${*: -1}
    mkdir -p "$dest"
    dest=$(cd "$dest" && pwd)
    pkgs=("${@:1:$#-1}")
    run_apt bash -c 'cd "$1" && shift && exec apt-get "$@"' _ "$dest" "${aptopt[@]}" -qq download "${pkgs[@]}" >&2
    ;;
  *) usage ;;
esac
