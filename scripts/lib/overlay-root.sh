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
# Debian packages unpacked (never installed) by scripts/setup: the kernel images of those headers,
# `linux-image-KVER/`, and real-world module packages such as `v4l2loopback-dkms/`.
OVR_DEBIAN_DEPS=${OVR_DEBIAN_DEPS:-$(realpath -m "$(dirname "${BASH_SOURCE[0]}")/../../.deps/debian")}
# The in-tree modules a kernel package ships (with every module they depend on): what the
# real-world DKMS modules of the tests need (v4l2loopback needs videodev). Arch's packages ship the
# whole tree; thousands of unused modules would only slow every transaction down.
OVR_KERNEL_MODULES=${OVR_KERNEL_MODULES:-videodev}

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
# pacman DB starts empty, the dkms tree starts empty, the hook directories start empty (none of the
# host's hooks run), the hooks of HOOKS_DIR (see ovr_install_hooks) and the hook binary HOOK_BIN are
# installed (both empty: neither is, the dkms-hook package will be), and, when DKMS is given, that
# dkms script replaces /usr/sbin/dkms inside the root.
ovr_prepare() {
    local root=$1 hooks=$2 bin=$3 dkms=${4:-}
    rm -rf "$root/usr/lib/modules" "$root/var/lib/dkms" "$root/var/lib/pacman" "$root/etc/pacman.d" \
        "$root/usr/share/libalpm/hooks" || return 1
    mkdir -p "$root/usr/lib/modules" "$root/var/lib/dkms" "$root/var/lib/pacman" \
        "$root/var/cache/pacman/pkg" "$root/var/log" "$root/etc/pacman.d/gnupg" "$root/etc/pacman.d/hooks" \
        "$root/usr/share/libalpm/hooks" || return 1
    cat >"$root/etc/pacman.conf" <<'CONF'
[options]
Architecture = auto
SigLevel = Never
LocalFileSigLevel = Never
CONF
    ovr_link_system_hookdir "$root" || return 1
    if [[ -n $hooks ]]; then
        ovr_install_hooks "$hooks" "$root/etc/pacman.d/hooks" "$root/usr/share/libalpm/hooks" || return 1
    fi
    if [[ -n $bin ]]; then
        # The front and, where the package puts it, the whole program built beside it.
        install -m 0755 "$bin" "$root/usr/bin/dkms-hook" || return 1
        install -Dm 0755 "$(dirname "$bin")/dkms-hook-full" "$root/usr/lib/dkms-hook/dkms-hook-full" || return 1
    fi
    if [[ -n $dkms ]]; then
        install -m 0755 "$dkms" "$root/usr/sbin/dkms" || return 1
    fi
}

# ovr_bare_root ROOT: ROOT as pacstrap prepares a new root before its first `pacman --root ROOT`:
# an empty directory with only pacman's database, cache, log and gnupg directories (and the test
# pacman.conf). No overlay: nothing of this machine is in it.
ovr_bare_root() {
    local root=$1
    mkdir -p "$root/var/lib/pacman" "$root/var/cache/pacman/pkg" "$root/var/log" "$root/etc/pacman.d/gnupg" ||
        return 1
    cat >"$root/etc/pacman.conf" <<'CONF'
[options]
Architecture = auto
SigLevel = Never
LocalFileSigLevel = Never
CONF
}

# ovr_package_hooks PKGFILE DIR: the hook files PKGFILE installs in /etc/pacman.d/hooks/, copied
# into DIR (which becomes a machine's hook directory as that package leaves it).
ovr_package_hooks() {
    local pkg=$1 dir=$2 tmp
    tmp=$(mktemp -d) || return 1
    bsdtar -xf "$pkg" -C "$tmp" etc/pacman.d/hooks || { rm -rf "$tmp"; return 1; }
    mkdir -p "$dir" && cp "$tmp"/etc/pacman.d/hooks/*.hook "$dir"/ || { rm -rf "$tmp"; return 1; }
    rm -rf "$tmp"
}

# ovr_system_hookdir: the packages' hook directory this pacman reads below --root (libalpm's
# SYSHOOKDIR, /usr/share/libalpm/hooks on Arch), without the trailing slash.
ovr_system_hookdir() {
    local dirs
    dirs=$(pacman --config /dev/null -v 2>/dev/null | sed -n 's/^Hook Dirs *: *//p')
    [[ -n $dirs ]] || { ovr_die "pacman -v names no hook directories"; return 1; }
    dirs=${dirs%% *}
    printf '%s\n' "${dirs%/}"
}

# ovr_link_system_hookdir ROOT: where this pacman was built with another packages' hook directory
# than Arch's (the project-local pacman in .deps), that directory in ROOT becomes a relative link to
# ROOT/usr/share/libalpm/hooks, so the hooks a package installs there run as they do on Arch.
ovr_link_system_hookdir() {
    local root=$1 sys
    sys=$(ovr_system_hookdir) || return 1
    [[ $sys == /usr/share/libalpm/hooks ]] && return 0
    rm -rf "${root:?}$sys" && mkdir -p "$(dirname "$root$sys")" "$root/usr/share/libalpm/hooks" &&
        ln -sr "$root/usr/share/libalpm/hooks" "$root$sys"
}

# ovr_install_hooks HOOKS_DIR USER_DIR SYSTEM_DIR: the hooks of HOOKS_DIR where the package puts
# them: the guard (10-*) into SYSTEM_DIR (the root's /usr/share/libalpm/hooks), the others into
# USER_DIR (/etc/pacman.d/hooks, which pacman reads for every --root). An empty SYSTEM_DIR leaves
# the guard out.
ovr_install_hooks() {
    local hooks=$1 user=$2 system=$3 hook
    mkdir -p "$user" || return 1
    for hook in "$hooks"/*.hook; do
        case ${hook##*/} in
        10-dkms-guard.hook) [[ -z $system ]] || install -D -m 0644 "$hook" "$system/${hook##*/}" || return 1 ;;
        *) install -m 0644 "$hook" "$user/" || return 1 ;;
        esac
    done
}

# ovr_pacman ROOT ARGS...: the real pacman on ROOT. --hookdir is not prefixed with --root (pacman
# treats it as configuration, like --config and --gpgdir), so it is given as a host path.
ovr_pacman() {
    local root=$1
    shift
    ovr_pacman_hookdir "$root" "$root/etc/pacman.d/hooks" "$@"
}

# ovr_pacman_hookdir ROOT HOOKDIR ARGS...: ovr_pacman with HOOKDIR as the user hook directory, e.g.
# a directory outside ROOT, as pacstrap's `pacman --root NEWROOT` reads the machine's
# /etc/pacman.d/hooks.
ovr_pacman_hookdir() {
    local root=$1 hookdir=$2
    shift 2
    pacman --root "$root" --dbpath "$root/var/lib/pacman" --config "$root/etc/pacman.conf" \
        --hookdir "$hookdir" --cachedir "$root/var/cache/pacman/pkg" \
        --logfile "$root/var/log/pacman.log" --gpgdir "$root/etc/pacman.d/gnupg" \
        --noconfirm --color never "$@"
}

# --- The boot check: does the kernel load what pacman and dkms-hook left in the root? -----------
#
# A kernel of the root is booted under QEMU (KVM where it works, else TCG) with an initramfs made
# from the root itself: busybox and the root's usr/lib/modules/KVER as pacman and dkms-hook left it.
# Its init loads modules with modprobe and prints what became of them on the serial console, one
# `boot-check: …` line each, then powers off. Nothing of the host's boot is used or changed.

# How long one boot may take (seconds), and how long the KVM probe waits before it gives up.
OVR_BOOT_TIMEOUT=${OVR_BOOT_TIMEOUT:-300}
OVR_KVM_PROBE_TIMEOUT=${OVR_KVM_PROBE_TIMEOUT:-10}
# The kernel command line of every boot: the serial console, quiet, power off on a panic.
OVR_BOOT_CMDLINE="console=ttyS0 panic=-1 loglevel=1"

# _ovr_busybox: the static busybox for the initramfs (busybox-static on Debian).
_ovr_busybox() {
    local bb
    bb=$(command -v busybox) || { ovr_die "busybox not found: run scripts/setup"; return 1; }
    # A dynamically linked busybox finds no C library in the initramfs.
    if ldd "$bb" >/dev/null 2>&1; then
        ovr_die "$bb is linked dynamically: install busybox-static"
        return 1
    fi
    printf '%s\n' "$bb"
}

# _ovr_cpio DIR INIT ARCHIVE: makes DIR an initramfs (busybox as /bin/busybox, the text INIT as
# /init) and packs it into ARCHIVE (newc cpio, owned by root).
_ovr_cpio() {
    local dir=$1 init=$2 archive=$3 bb
    bb=$(_ovr_busybox) || return 1
    mkdir -p "$dir/bin" "$dir/proc" "$dir/sys" "$dir/dev" || return 1
    install -m 0755 "$bb" "$dir/bin/busybox" && printf '%s' "$init" >"$dir/init" && chmod 0755 "$dir/init" || return 1
    (cd "$dir" && bsdtar --format newc --uid 0 --gid 0 -cf "$archive" .)
}

# _ovr_qemu ACCEL VMLINUZ INITRAMFS TIMEOUT: boots VMLINUZ with INITRAMFS, the serial console on
# stdout; QEMU's exit status, 124 when TIMEOUT seconds ran out.
_ovr_qemu() {
    local accel=$1 vmlinuz=$2 initramfs=$3 limit=$4
    command -v qemu-system-x86_64 >/dev/null || { ovr_die "qemu-system-x86_64 not found: run scripts/setup"; return 1; }
    timeout --kill-after=5 "$limit" qemu-system-x86_64 -accel "$accel" -m 512 -nodefaults -display none \
        -serial stdio -no-reboot -kernel "$vmlinuz" -initrd "$initramfs" -append "$OVR_BOOT_CMDLINE" </dev/null
}

# ovr_qemu_accel VMLINUZ: prints `kvm` when KVM boots VMLINUZ to an init that answers within
# OVR_KVM_PROBE_TIMEOUT seconds, else `tcg` (no usable /dev/kvm, or QEMU aborts on KVM — some hosts
# refuse an MSR — or the guest hangs there); why TCG goes to stderr.
ovr_qemu_accel() {
    local vmlinuz=$1 work rc why
    if [[ ! -c /dev/kvm || ! -w /dev/kvm ]]; then
        echo "boot-check: no usable /dev/kvm: using TCG" >&2
        echo tcg
        return 0
    fi
    work=$(mktemp -d) || return 1
    _ovr_cpio "$work/initramfs" $'#!/bin/busybox sh\n/bin/busybox echo "boot-check: kvm works"\n/bin/busybox poweroff -f\n' \
        "$work/probe.cpio" || { rm -rf "$work"; return 1; }
    _ovr_qemu kvm "$vmlinuz" "$work/probe.cpio" "$OVR_KVM_PROBE_TIMEOUT" >"$work/console" 2>&1
    rc=$?
    if grep -aq '^boot-check: kvm works' "$work/console"; then
        echo kvm
    else
        why="qemu exit $rc"
        ((rc == 124)) && why="no answer within $OVR_KVM_PROBE_TIMEOUT s"
        echo "boot-check: KVM does not work here ($why: $(grep -av '^\s*$' "$work/console" | tail -n 1 | tr -d '\r' | cut -c1-160)): using TCG" >&2
        echo tcg
    fi
    rm -rf "$work"
}

# The init of the boot check's initramfs: loads each module of /boot-check.modules, then prints
# the kernel, each modprobe's result, /proc/modules, each module's file (as modules.dep names it)
# with its sha256, its sysfs version and srcversion, the /dev/video* devices and the kernel log
# from the first load on; then powers off.
_OVR_BOOT_INIT='#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
say() { echo "boot-check: $*"; }
kver=$(uname -r)
say "kernel $kver"
echo "boot-check: loading modules" >/dev/kmsg
for m in $(cat /boot-check.modules); do
    if out=$(modprobe "$m" 2>&1); then
        say "modprobe $m ok"
    else
        say "modprobe $m failed:" $out
    fi
done
while IFS= read -r line; do say "proc-modules $line"; done </proc/modules
for m in $(cat /boot-check.modules); do
    file=$(sed -n "s|^\([^:]*/$m\.ko[^:/]*\):.*|\1|p" "/lib/modules/$kver/modules.dep" | head -n 1)
    sum=
    [ -n "$file" ] && sum=$(sha256sum "/lib/modules/$kver/$file" | cut -d " " -f 1)
    sys=/sys/module/$(echo "$m" | tr - _)
    say "module $m file=$file sha256=$sum version=$(cat "$sys/version" 2>/dev/null) srcversion=$(cat "$sys/srcversion" 2>/dev/null)"
done
for d in /dev/video*; do [ -e "$d" ] && say "device $d"; done
dmesg | sed -n "/boot-check: loading modules/,\$p" | while IFS= read -r line; do say "log $line"; done
say done
poweroff -f
'

# _ovr_decompress_modules DIR: busybox's modprobe loads plain modules only, so the compressed ones
# below DIR (`*.ko.zst`, `*.ko.xz`, `*.ko.gz`, as Arch's kernels and dkms ship them) are
# decompressed in place, and DIR/modules.dep names them so: the kernel gets the bytes kmod's
# modprobe would have decompressed for it.
_ovr_decompress_modules() {
    local dir=$1 file
    while IFS= read -r -d '' file; do
        case $file in
        *.zst) zstd -q -d --rm "$file" ;;
        *.xz) xz -d "$file" ;;
        *.gz) gzip -d "$file" ;;
        esac || { ovr_die "cannot decompress $file"; return 1; }
    done < <(find "$dir" -type f \( -name '*.ko.zst' -o -name '*.ko.xz' -o -name '*.ko.gz' \) -print0)
    [[ ! -f $dir/modules.dep ]] || sed -i -E 's/\.ko\.(zst|xz|gz)(:| |$)/.ko\2/g' "$dir/modules.dep"
}

# ovr_boot_check ROOT KVER MODULE...: boots ROOT's kernel KVER (usr/lib/modules/KVER/vmlinuz) with an
# initramfs of busybox and ROOT's usr/lib/modules/KVER as it is (the kernel's own modules, what dkms
# installed, modules.dep of the last depmod; not build/ or source/), loads each MODULE (a .ko name)
# with modprobe and prints the guest's `boot-check: …` lines, after one `boot-check: qemu …` line
# (accelerator, exit status, seconds). The accelerator is OVR_QEMU_ACCEL, else ovr_qemu_accel's.
# Status: 0 every module loaded, 1 one did not, 2 the boot did not complete (then the end of the
# console follows, as `boot-check: console …` lines).
ovr_boot_check() {
    local root=$1 kver=$2 accel work entry rc start seconds
    shift 2
    local moddir="$root/usr/lib/modules/$kver"
    [[ -f $moddir/vmlinuz ]] || { ovr_die "no kernel image at $moddir/vmlinuz"; return 2; }
    accel=${OVR_QEMU_ACCEL:-$(ovr_qemu_accel "$moddir/vmlinuz")}
    work=$(mktemp -d) || return 2
    mkdir -p "$work/initramfs/lib/modules/$kver" || return 2
    for entry in "$moddir"/*; do
        case ${entry##*/} in build | source) continue ;; esac
        cp -a "$entry" "$work/initramfs/lib/modules/$kver/" || { rm -rf "$work"; return 2; }
    done
    _ovr_decompress_modules "$work/initramfs/lib/modules/$kver" || { rm -rf "$work"; return 2; }
    printf '%s\n' "$@" >"$work/initramfs/boot-check.modules"
    _ovr_cpio "$work/initramfs" "$_OVR_BOOT_INIT" "$work/initramfs.cpio" || { rm -rf "$work"; return 2; }
    start=$(date +%s%N)
    _ovr_qemu "$accel" "$moddir/vmlinuz" "$work/initramfs.cpio" "$OVR_BOOT_TIMEOUT" >"$work/console" 2>&1
    rc=$?
    seconds=$((($(date +%s%N) - start) / 10000000))
    printf 'boot-check: qemu accel=%s exit=%s seconds=%d.%02d\n' "$accel" "$rc" $((seconds / 100)) $((seconds % 100))
    tr -d '\r' <"$work/console" | grep -a '^boot-check: '
    if ! tr -d '\r' <"$work/console" | grep -aqx 'boot-check: done'; then
        tr -d '\r' <"$work/console" | grep -av '^boot-check: ' | tail -n 30 | sed 's/^/boot-check: console /'
        rc=2
    elif grep -aq '^boot-check: modprobe .* failed' "$work/console"; then
        rc=1
    else
        rc=0
    fi
    rm -rf "$work"
    return "$rc"
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
    [[ -d $stage/etc ]] && entries+=(etc)
    for d in bin sbin lib lib64; do
        [[ -L $stage/$d ]] && entries+=("$d")
    done
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

# pkg_stub OUT NAME VERSION: a package without files (e.g. `dkms`, which the `*-dkms` and dkms-hook
# packages depend on; the root already has the real dkms from the host).
pkg_stub() {
    local stage
    stage=$(pkg_stage) || return 1
    pkg_write "$1" "$stage" "$2" "$2" "$3"
    rm -rf "$stage"
}

# pkg_base OUT: a stand-in for Arch's `filesystem` and `bash`, what a new root has after the first
# packages of `pacstrap ROOT base`: the usr-merge links (bin, sbin, lib, lib64 -> usr/...) and a
# static busybox as usr/bin/sh (and usr/bin/bash), so hooks that run /bin/sh work; nothing else.
pkg_base() {
    local stage bb
    bb=$(_ovr_busybox) || return 1
    stage=$(pkg_stage) || return 1
    mkdir -p "$stage/usr/bin" "$stage/usr/lib" && install -m 0755 "$bb" "$stage/usr/bin/busybox" || return 1
    ln -s busybox "$stage/usr/bin/sh" && ln -s busybox "$stage/usr/bin/bash" || return 1
    ln -s usr/bin "$stage/bin" && ln -s usr/bin "$stage/sbin" && ln -s usr/lib "$stage/lib" &&
        ln -s usr/lib "$stage/lib64" || return 1
    pkg_write "$1" "$stage" filesystem filesystem 1-1
    rm -rf "$stage"
}

# pkg_tree OUT NAME VERSION DIR: a package holding a copy of DIR's files (usr/, etc/).
pkg_tree() {
    local stage
    stage=$(pkg_stage) || return 1
    cp -a "$4/." "$stage/" || return 1
    pkg_write "$1" "$stage" "$2" "$2" "$3"
    rm -rf "$stage"
}

# pkg_debian OUT NAME VERSION DEB...: a package NAME holding the files of the Debian packages DEB
# (unpacked by scripts/setup below OVR_DEBIAN_DEPS), laid out as Arch lays out its packages: what
# Debian puts in /bin, /sbin and /lib goes below usr/ (Arch's /bin, /sbin and /lib are links into
# usr/, which a package must not replace). E.g. the real dracut: `pkg_debian OUT dracut 059-4
# dracut-core cpio`.
pkg_debian() {
    local out=$1 name=$2 version=$3 stage deb d
    shift 3
    stage=$(pkg_stage) || return 1
    for deb; do
        [[ -d $OVR_DEBIAN_DEPS/$deb ]] || { ovr_die "$OVR_DEBIAN_DEPS/$deb is missing: run scripts/setup"; return 1; }
        cp -a "$OVR_DEBIAN_DEPS/$deb/." "$stage/" || return 1
    done
    for d in bin sbin lib; do
        if [[ -d $stage/$d && ! -L $stage/$d ]]; then
            mkdir -p "$stage/usr/bin" "$stage/usr/lib"
            case $d in
            lib) cp -a "$stage/lib/." "$stage/usr/lib/" ;;
            *) cp -a "$stage/$d/." "$stage/usr/bin/" ;;
            esac
            rm -rf "${stage:?}/$d"
        fi
    done
    if [[ -d $stage/usr/sbin ]]; then
        cp -a "$stage/usr/sbin/." "$stage/usr/bin/" && rm -rf "$stage/usr/sbin" || return 1
    fi
    rm -rf "$stage/usr/share/doc" "$stage/usr/share/man" "$stage/usr/share/lintian"
    pkg_write "$out" "$stage" "$name" "$name" "$version"
    rm -rf "$stage"
}

# _ovr_module_closure MODDIR NAME...: the files (relative to MODDIR) of the in-tree modules NAME
# that the kernel has (a kernel built without one, like Debian's cloud kernel without video
# drivers, simply lacks it) and of every module they depend on (modinfo's `depends`), found below
# MODDIR/kernel.
_ovr_module_closure() {
    local dir=$1 name file dep
    shift
    local -A path=() seen=()
    local todo=()
    while IFS= read -r file; do
        name=${file##*/}
        name=${name%%.ko*}
        path[${name//-/_}]=$file
    done < <(cd "$dir" && find kernel -name '*.ko*')
    for name; do
        [[ -n ${path[${name//-/_}]:-} ]] && todo+=("$name")
    done
    while ((${#todo[@]})); do
        name=${todo[0]//-/_}
        todo=("${todo[@]:1}")
        [[ -n ${seen[$name]:-} ]] && continue
        seen[$name]=1
        file=${path[$name]:-}
        [[ -n $file ]] || { ovr_die "no in-tree module $name below $dir/kernel"; return 1; }
        printf '%s\n' "$file"
        IFS=, read -ra dep <<<"$(modinfo -F depends "$dir/$file")"
        todo+=("${dep[@]}")
    done
}

# pkg_kernel OUT NAME VERSION KVER [zst]: an Arch-style kernel package made from Debian's kernel
# image of KVER (unpacked by scripts/setup below OVR_DEBIAN_DEPS), laid out as Arch's `linux` package:
# usr/lib/modules/KVER/{vmlinuz,pkgbase,modules.order,modules.builtin,modules.builtin.modinfo}
# and the kernel's own modules below kernel/ (those of OVR_KERNEL_MODULES and their dependencies),
# with `zst` compressed as Arch ships them (`kernel/…/NAME.ko.zst`; modules.order keeps the `.ko`
# names the kernel build wrote). Nothing goes to /boot: installing the package never touches the
# host's boot.
pkg_kernel() {
    local out=$1 name=$2 version=$3 kver=$4 compress=${5:-} stage m image file files
    image="$OVR_DEBIAN_DEPS/linux-image-$kver"
    [[ -f $image/boot/vmlinuz-$kver && -d $image/lib/modules/$kver/kernel ]] ||
        { ovr_die "no Debian kernel image at $image: run scripts/setup"; return 1; }
    stage=$(pkg_stage) || return 1
    m="$stage/usr/lib/modules/$kver"
    mkdir -p "$m/kernel" || return 1
    install -m 0644 "$image/boot/vmlinuz-$kver" "$m/vmlinuz" || return 1
    echo "$name" >"$m/pkgbase"
    for file in modules.order modules.builtin modules.builtin.modinfo; do
        install -m 0644 "$image/lib/modules/$kver/$file" "$m/$file" || return 1
    done
    # shellcheck disable=SC2086 # a list of module names
    files=$(_ovr_module_closure "$image/lib/modules/$kver" $OVR_KERNEL_MODULES) || { rm -rf "$stage"; return 1; }
    while IFS= read -r file; do
        [[ -z $file ]] || install -D -m 0644 "$image/lib/modules/$kver/$file" "$m/$file" || return 1
        if [[ -n $file && $compress == zst ]]; then
            zstd -q --rm -19 "$m/$file" || return 1
        fi
    done <<<"$files"
    pkg_write "$out" "$stage" "$name" "$name" "$version"
    rm -rf "$stage"
}

# pkg_headers OUT NAME PKGBASE VERSION KVER [HEADER]: an Arch-style headers package owning
# usr/lib/modules/KVER/build/ as a real directory: a copy of Debian's /usr/src/linux-headers-KVER.
# Its relative symlinks that leave the tree (scripts, tools -> ../../lib/linux-kbuild-6.1/...) are
# made absolute so they resolve from the new place; its Makefile already includes the shared
# -common tree by absolute path, which stays on the (overlaid) host. HEADER, when given, is added as
# build/include/linux/HEADER: the same kernel rebuilt with a changed interface.
pkg_headers() {
    local out=$1 name=$2 base=$3 version=$4 kver=$5 header=${6:-} stage src build link rel target abs
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
    # HEADER: the same kernel rebuilt with a changed interface, as build/include/linux/HEADER.
    if [[ -n $header ]]; then
        mkdir -p "$build/include/linux" &&
            printf '/* %s %s: an interface older modules do not know */\n' "$name" "$version" \
                >"$build/include/linux/$header" || return 1
    fi
    pkg_write "$out" "$stage" "$name" "$base" "$version"
    rm -rf "$stage"
}

# pkg_dkms OUT PKGNAME VERSION SRC MODNAME MODVER: a *-dkms package (no .install file) with SRC's
# files in usr/src/MODNAME-MODVER/. In every file @MODVER@ becomes MODVER and @PKGREL@ the pkgrel
# of VERSION, so one source directory serves several versions.
# Any further arguments are more `depends` (e.g. `nvidia-utils=590-1`).
pkg_dkms() {
    local out=$1 name=$2 version=$3 src=$4 mod=$5 modver=$6 stage dest
    stage=$(pkg_stage) || return 1
    dest="$stage/usr/src/$mod-$modver"
    mkdir -p "$stage/usr/src" && cp -r "$src" "$dest" || return 1
    find "$dest" -type f -exec sed -i -e "s/@MODVER@/$modver/g" -e "s/@PKGREL@/${version##*-}/g" {} + || return 1
    pkg_write "$out" "$stage" "$name" "$name" "$version" dkms "${@:7}"
    rm -rf "$stage"
}

# _pkg_enterable DIR: whether other users may enter DIR (its mode has o+x).
_pkg_enterable() {
    [[ $(stat -c %A "$1") == *[xt] ]]
}

# _pkg_reachable PATH: whether other users can reach PATH: it and every directory above it let them in.
_pkg_reachable() {
    local p
    p=$(realpath -m "$1")
    while [[ $p != / ]]; do
        _pkg_enterable "$p" || return 1
        p=$(dirname "$p")
    done
}

# _pkg_expose PATH...: inside a private mount namespace, makes each PATH reachable by other users at
# its own path (e.g. the Rust toolchain below root's 0700 home): the outermost directory on the way
# that they cannot enter is covered with an empty tmpfs of mode 0755, and PATH is mounted back below
# it. Nothing else below the covered directory is visible; nothing changes outside the namespace.
_pkg_expose() {
    local stash path dir part i=0 hidden=() parts
    stash=$(mktemp -d) || return 1
    for path; do
        path=$(realpath "$path") || return 1
        _pkg_reachable "$path" && continue
        mkdir "$stash/$i" && mount --bind "$path" "$stash/$i" || return 1
        hidden+=("$path")
        i=$((i + 1))
    done
    i=0
    for path in "${hidden[@]}"; do
        dir=
        IFS=/ read -ra parts <<<"${path#/}"
        for part in "${parts[@]}"; do
            dir+=/$part
            [[ -d $dir ]] || break
            if ! _pkg_enterable "$dir"; then
                mount -t tmpfs -o mode=0755 tmpfs "$dir" || return 1
                break
            fi
        done
        mkdir -p "$path" && mount --move "$stash/$i" "$path" || return 1
        i=$((i + 1))
    done
    rmdir "$stash"/* "$stash" 2>/dev/null
    return 0
}

# The makepkg.conf of the project's pacman build (Debian), else the system's (Arch).
_pkg_makepkg_conf() {
    local conf
    conf=$(dirname "${BASH_SOURCE[0]}")/../../.deps/pacman-build/makepkg.conf
    [[ -f $conf ]] || conf=/etc/makepkg.conf
    realpath "$conf"
}

# pkg_builder DIR CARGO_HOME COMMAND...: runs COMMAND (makepkg) in DIR as the unprivileged user
# nobody (makepkg refuses root), in a private mount namespace where nobody can reach DIR, makepkg,
# the Rust toolchain (cargo, rustup's home), the directories of LD_LIBRARY_PATH and PKG_CONFIG_PATH
# (the project's libalpm), and CARGO_HOME (default DIR/.cargo), which keeps the crates cargo fetches.
# DIR must be readable by nobody, and writable when COMMAND writes. Run by another user than root,
# COMMAND simply runs as that user.
pkg_builder() {
    local dir=$1 cargo_home=${2:-$1/.cargo} makepkg conf cargo rustup_home entry entries paths
    shift 2
    dir=$(realpath "$dir") || return 1
    makepkg=$(command -v makepkg) || { ovr_die "makepkg not found: run scripts/setup"; return 1; }
    conf=$(_pkg_makepkg_conf) || { ovr_die "no makepkg.conf: run scripts/setup"; return 1; }
    rustup_home=${RUSTUP_HOME:-$HOME/.rustup}
    if ((EUID != 0)); then
        (cd "$dir" && MAKEPKG_CONF=$conf PKGEXT=.pkg.tar.zst "$@")
        return
    fi
    mkdir -p "$cargo_home" && chown nobody "$cargo_home" || return 1
    cargo_home=$(realpath "$cargo_home")
    paths=("$dir" "$cargo_home" "$(dirname "$(realpath "$makepkg")")" "$(dirname "$conf")")
    if cargo=$(command -v cargo); then
        paths+=("$(dirname "$cargo")")
        [[ -d $rustup_home ]] && paths+=("$rustup_home")
    fi
    IFS=: read -ra entries <<<"${LD_LIBRARY_PATH:-}:${PKG_CONFIG_PATH:-}"
    for entry in "${entries[@]}"; do
        [[ -d $entry ]] && paths+=("$entry")
    done
    # shellcheck disable=SC2016 # expanded by the inner bash
    PKG_DIR=$dir PKG_RUSTUP_HOME=$rustup_home PKG_CARGO_HOME=$cargo_home PKG_MAKEPKG_CONF=$conf \
        unshare --mount --propagation private bash -c '
            . "$0" && _pkg_expose "${@:2:$1}" || exit 1
            shift "$(($1 + 1))"
            cd "$PKG_DIR" && exec runuser -u nobody -- env HOME="$PKG_DIR" PATH="$PATH" \
                LD_LIBRARY_PATH="${LD_LIBRARY_PATH:-}" PKG_CONFIG_PATH="${PKG_CONFIG_PATH:-}" \
                RUSTUP_HOME="$PKG_RUSTUP_HOME" CARGO_HOME="$PKG_CARGO_HOME" MAKEPKG_CONF="$PKG_MAKEPKG_CONF" \
                PKGEXT=.pkg.tar.zst "$@"' "${BASH_SOURCE[0]}" "${#paths[@]}" "${paths[@]}" "$@"
}

# pkg_run_makepkg DIR [CARGO_HOME]: builds the PKGBUILD in DIR (owned by nobody) with pkg_builder.
# Dependencies are not checked (-d): they are the target root's business, not the build host's.
pkg_run_makepkg() {
    pkg_builder "$1" "${2:-}" makepkg -d --noconfirm
}

# pkg_srcinfo PKGBUILD: what `makepkg --printsrcinfo` prints for PKGBUILD (run in a copy of it).
pkg_srcinfo() {
    local dir rc
    dir=$(mktemp -d) && chmod 0755 "$dir" && cp "$1" "$dir/PKGBUILD" || return 1
    ((EUID != 0)) || chown -R nobody "$dir" || return 1
    pkg_builder "$dir" "" makepkg --printsrcinfo
    rc=$?
    rm -rf "$dir"
    return "$rc"
}

# pkg_makepkg OUT DIR: builds the PKGBUILD in DIR with the real makepkg as nobody (pkg_run_makepkg),
# in a copy of DIR below OUT; prints the path of each package.
pkg_makepkg() {
    local out=$1 dir=$2 build file
    out=$(realpath -m "$out")
    build=$out/makepkg.$(basename "$dir")
    rm -rf "$build" && mkdir -p "$build" && cp -r "$dir"/. "$build"/ && chown -R nobody "$build" || return 1
    pkg_run_makepkg "$build" >&2 || return 1
    for file in "$build"/*.pkg.tar.zst; do
        mv "$file" "$out/" && printf '%s/%s\n' "$out" "$(basename "$file")"
    done
    rm -rf "$build"
}

# pkg_dkms_hook OUT REPO [CARGO_HOME]: the dkms-hook package, built as its README says from a clean
# clone of REPO's HEAD (git clone, scripts/dist, makepkg in packaging/arch as nobody); prints the
# package's path. CARGO_HOME keeps the crates makepkg fetches for the next build.
pkg_dkms_hook() {
    local out=$1 repo=$2 cargo_home=${3:-} build clone file
    out=$(realpath -m "$out")
    build=$out/makepkg.dkms-hook
    clone=$build/dkms-hook
    rm -rf "$build" && mkdir -p "$build" || return 1
    # --no-hardlinks: the clone is handed to nobody, and hard links would hand over REPO's objects.
    git clone --quiet --no-hardlinks "$repo" "$clone" >&2 || return 1
    echo "building dkms-hook $(git -C "$clone" log -1 --format='%h (%s)') from a clean clone" >&2
    (cd "$clone" && bash scripts/dist >/dev/null) || return 1
    chown -R nobody "$build" || return 1
    pkg_run_makepkg "$clone/packaging/arch" "${cargo_home:-$build/cargo-home}" >&2 || return 1
    for file in "$clone"/packaging/arch/dkms-hook-[0-9]*.pkg.tar.zst; do
        [[ -f $file ]] || { ovr_die "makepkg wrote no dkms-hook package"; return 1; }
        mv "$file" "$out/" && printf '%s/%s\n' "$out" "$(basename "$file")"
    done
    rm -rf "$build"
}
