# shellcheck shell=bash
# Overlay roots and hand-made Arch packages for real pacman transactions on a Debian host.
#
# Sourced by scripts/demo and, through `bash -c '. overlay-root.sh; FUNCTION ARGS'`, by the real tier
# (tests/real/). A root is an overlayfs view of the whole machine: every write lands in DIR/upper, so
# pacman, the hooks, dkms, make and gcc run for real without touching the host. Pacman runs hooks
# chrooted into the root, so /dev and /proc are mounted inside it too.
#
# Safety: the root has the host's /dev bind-mounted inside it. Never delete DIR while anything is
# mounted below it; ovr_destroy checks /proc/self/mountinfo first and refuses otherwise.

# The Debian header trees the kernel packages are made from live here (scripts/setup installs them).
OVR_DEBIAN_HEADERS=${OVR_DEBIAN_HEADERS:-/usr/src}

ovr_die() { printf 'overlay-root: error: %s\n' "$*" >&2; return 1; }

# Mount points at or below DIR, deepest first (from /proc/self/mountinfo, field 5).
ovr_mounts_below() {
    local dir
    dir=$(realpath -m "$1")
    awk -v d="$dir" '$5 == d || index($5, d "/") == 1 { print $5 }' /proc/self/mountinfo | sort -r
}

# ovr_mount DIR: DIR/root becomes an overlay of / (upper DIR/upper, work DIR/work) with /dev and
# /proc mounted inside, as pacman's chrooted hooks expect.
ovr_mount() {
    local dir=$1
    [[ $EUID -eq 0 ]] || { ovr_die "overlay roots need root"; return 1; }
    mkdir -p "$dir/upper" "$dir/work" "$dir/root" || return 1
    mount -t overlay overlay -o "lowerdir=/,upperdir=$dir/upper,workdir=$dir/work" "$dir/root" ||
        { ovr_die "cannot mount an overlay of / at $dir/root"; return 1; }
    mount --bind /dev "$dir/root/dev" &&
        mount --make-private "$dir/root/dev" &&
        mount -t proc proc "$dir/root/proc" ||
        { ovr_umount "$dir"; ovr_die "cannot mount /dev and /proc in $dir/root"; return 1; }
}

# ovr_umount DIR: unmounts everything below DIR, deepest first. Fails if anything stays mounted.
ovr_umount() {
    local dir=$1 m
    for m in $(ovr_mounts_below "$dir"); do
        umount "$m" 2>/dev/null || umount --lazy "$m" || true
    done
    [[ -z $(ovr_mounts_below "$dir") ]] || { ovr_die "still mounted below $dir"; return 1; }
}

# ovr_destroy DIR: unmount, then delete DIR (never while something is mounted below it).
ovr_destroy() {
    local dir=$1
    [[ -d $dir ]] || return 0
    ovr_umount "$dir" || return 1
    rm -rf --one-file-system "$dir"
}

# ovr_prepare ROOT HOOKS_DIR HOOK_BIN [DKMS]: an Arch-style starting point inside the overlay root.
# The Debian kernel layout goes (the kernel and headers packages will own usr/lib/modules/K), the
# pacman DB starts empty, the dkms tree starts empty, hooks and the hook binary are installed, and,
# when DKMS is given, that dkms script replaces /usr/sbin/dkms inside the root.
ovr_prepare() {
    local root=$1 hooks=$2 bin=$3 dkms=${4:-}
    rm -rf "$root/usr/lib/modules" "$root/var/lib/dkms" "$root/var/lib/pacman" "$root/etc/pacman.d" || return 1
    mkdir -p "$root/usr/lib/modules" "$root/var/lib/dkms" "$root/var/lib/pacman" \
        "$root/var/cache/pacman/pkg" "$root/var/log" "$root/etc/pacman.d/gnupg" "$root/etc/pacman.d/hooks" || return 1
    cat >"$root/etc/pacman.conf" <<'CONF'
[options]
Architecture = auto
SigLevel = Never
LocalFileSigLevel = Never
CONF
    cp "$hooks"/*.hook "$root/etc/pacman.d/hooks/" || return 1
    install -m 0755 "$bin" "$root/usr/bin/dkms-hook" || return 1
    if [[ -n $dkms ]]; then
        install -m 0755 "$dkms" "$root/usr/sbin/dkms" || return 1
    fi
}

# ovr_pacman ROOT ARGS...: the real pacman on ROOT. --hookdir is not prefixed with --root (pacman
# treats it as configuration, like --config and --gpgdir), so it is given as a host path.
ovr_pacman() {
    local root=$1
    shift
    pacman --root "$root" --dbpath "$root/var/lib/pacman" --config "$root/etc/pacman.conf" \
        --hookdir "$root/etc/pacman.d/hooks" --cachedir "$root/var/cache/pacman/pkg" \
        --logfile "$root/var/log/pacman.log" --gpgdir "$root/etc/pacman.d/gnupg" \
        --noconfirm --color never "$@"
}

# pkg_write OUT STAGE NAME PKGBASE VERSION [DEPENDS...]: writes STAGE/.PKGINFO and packs STAGE (its
# usr/ tree, and STAGE/.INSTALL as the install scriptlet if there is one) into
# OUT/NAME-VERSION-x86_64.pkg.tar.zst; prints the package path.
pkg_write() {
    local out=$1 stage=$2 name=$3 base=$4 version=$5 d file
    shift 5
    {
        printf 'pkgname = %s\npkgbase = %s\nxdata = pkgtype=pkg\npkgver = %s\n' "$name" "$base" "$version"
        printf 'pkgdesc = %s (dkms-hook test package)\nurl = https://example.invalid/\n' "$name"
        printf 'builddate = %s\npackager = dkms-hook tests\nsize = %s\narch = x86_64\nlicense = GPL-2.0-only\n' \
            "$(date +%s)" "$(du -sb --exclude=.PKGINFO "$stage" | cut -f1)"
        for d in "$@"; do printf 'depend = %s\n' "$d"; done
    } >"$stage/.PKGINFO"
    mkdir -p "$out" || return 1
    file="$(realpath "$out")/$name-$version-x86_64.pkg.tar.zst"
    local entries=(.PKGINFO)
    [[ -f $stage/.INSTALL ]] && entries+=(.INSTALL)
    [[ -d $stage/usr ]] && entries+=(usr)
    (cd "$stage" && bsdtar --zstd --uid 0 --gid 0 --uname root --gname root -cf "$file" "${entries[@]}") || return 1
    printf '%s\n' "$file"
}

# A fresh staging directory with root-owned, 0755 directories the way packages ship them.
pkg_stage() {
    local stage
    stage=$(mktemp -d) || return 1
    chmod 0755 "$stage"
    printf '%s\n' "$stage"
}

# pkg_stub OUT NAME VERSION: a package without files (e.g. `dkms`, which the hooks' `Depends = dkms`
# needs in the DB; the root already has the real dkms from the host).
pkg_stub() {
    local stage
    stage=$(pkg_stage) || return 1
    pkg_write "$1" "$stage" "$2" "$2" "$3"
    rm -rf "$stage"
}

# pkg_kernel OUT NAME VERSION KVER: an Arch-style kernel package for Debian's kernel KVER: it owns
# usr/lib/modules/KVER/{vmlinuz,pkgbase,modules.order,modules.builtin,kernel/}.
pkg_kernel() {
    local out=$1 name=$2 version=$3 kver=$4 stage m
    stage=$(pkg_stage) || return 1
    m="$stage/usr/lib/modules/$kver"
    mkdir -p "$m/kernel" || return 1
    echo "stand-in for the $kver kernel image" >"$m/vmlinuz"
    echo "$name" >"$m/pkgbase"
    echo "the in-tree modules of $kver would live here" >"$m/kernel/README"
    : >"$m/modules.order"
    : >"$m/modules.builtin"
    : >"$m/modules.builtin.modinfo"
    pkg_write "$out" "$stage" "$name" "$name" "$version"
    rm -rf "$stage"
}

# pkg_headers OUT NAME PKGBASE VERSION KVER: an Arch-style headers package owning
# usr/lib/modules/KVER/build/ as a real directory: a copy of Debian's /usr/src/linux-headers-KVER.
# Its relative symlinks that leave the tree (scripts, tools -> ../../lib/linux-kbuild-6.1/...) are
# made absolute so they resolve from the new place; its Makefile already includes the shared
# -common tree by absolute path, which stays on the (overlaid) host.
pkg_headers() {
    local out=$1 name=$2 base=$3 version=$4 kver=$5 stage src build link rel target abs
    src="$OVR_DEBIAN_HEADERS/linux-headers-$kver"
    [[ -f $src/Makefile ]] || { ovr_die "no Debian headers at $src: run scripts/setup"; return 1; }
    stage=$(pkg_stage) || return 1
    build="$stage/usr/lib/modules/$kver/build"
    mkdir -p "$stage/usr/lib/modules/$kver" && cp -a "$src" "$build" || return 1
    # include/config/ holds ~6,400 empty per-symbol stamp files that kbuild only reads through
    # $(wildcard ...): dropping them builds the same modules and saves seconds per install.
    find "$build/include/config" -maxdepth 1 -type f -empty -delete || return 1
    while IFS= read -r -d '' link; do
        rel=${link#"$build"/}
        target=$(readlink "$link")
        [[ $target == /* ]] && continue
        abs=$(realpath -m -s "$(dirname "$src/$rel")/$target")
        [[ $abs == "$src"/* ]] && continue
        ln -sfn "$abs" "$link" || return 1
    done < <(find "$build" -type l -print0)
    pkg_write "$out" "$stage" "$name" "$base" "$version"
    rm -rf "$stage"
}

# pkg_dkms OUT PKGNAME VERSION SRC MODNAME MODVER: a *-dkms package (no .install file) with SRC's
# files in usr/src/MODNAME-MODVER/. In every file @MODVER@ becomes MODVER and @PKGREL@ the pkgrel
# of VERSION, so one source directory serves several versions.
pkg_dkms() {
    local out=$1 name=$2 version=$3 src=$4 mod=$5 modver=$6 stage dest
    stage=$(pkg_stage) || return 1
    dest="$stage/usr/src/$mod-$modver"
    mkdir -p "$stage/usr/src" && cp -r "$src" "$dest" || return 1
    find "$dest" -type f -exec sed -i -e "s/@MODVER@/$modver/g" -e "s/@PKGREL@/${version##*-}/g" {} + || return 1
    pkg_write "$out" "$stage" "$name" "$name" "$version" dkms
    rm -rf "$stage"
}

# pkg_makepkg OUT DIR: builds the PKGBUILD in DIR with the real makepkg, as the unprivileged user
# `nobody` (makepkg refuses root) in a copy of DIR below OUT; prints the package path. Dependencies
# are not checked (-d): they are the target root's business, not the build host's.
pkg_makepkg() {
    local out=$1 dir=$2 build conf file
    build=$(realpath -m "$out")/makepkg.$(basename "$dir")
    rm -rf "$build" && mkdir -p "$build" && cp -r "$dir"/. "$build"/ && chown -R nobody "$build" || return 1
    conf=$(dirname "${BASH_SOURCE[0]}")/../../.deps/pacman-build/makepkg.conf
    [[ -f $conf ]] || conf=/etc/makepkg.conf
    (cd "$build" && runuser -u nobody -- env PATH="$PATH" LD_LIBRARY_PATH="${LD_LIBRARY_PATH:-}" \
        MAKEPKG_CONF="$(realpath "$conf")" PKGEXT=.pkg.tar.zst makepkg -d --noconfirm >&2) || return 1
    for file in "$build"/*.pkg.tar.zst; do
        mv "$file" "$(realpath "$out")/" && printf '%s/%s\n' "$(realpath "$out")" "$(basename "$file")"
    done
    rm -rf "$build"
}
