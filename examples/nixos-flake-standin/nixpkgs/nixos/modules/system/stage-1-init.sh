#!/bin/busybox sh
# kdevweb nixos-flake stand-in: stage 1 (/init of the initrd).
#
# Imageless contract: mount proc/sys/devtmpfs, load the virtio/virtiofs/
# virtio_console (and ACPI button/evdev) modules carried for the running
# kernel version (/lib/modules/$(uname -r)/load-order, dependencies first),
# mount the root (tmpfs) and the virtiofs tags `store` (read-only, on
# /nix/store) and `modules` (on /lib/modules), then switch_root into the
# `init=` path from /proc/cmdline.
/bin/busybox mkdir -p /bin /proc /sys /dev /newroot /tmp
/bin/busybox mount -t proc proc /proc
/bin/busybox --install -s /bin
export PATH=/bin

mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev

log() {
    echo "kdevweb-standin stage-1: $*" > /dev/kmsg 2>/dev/null || echo "kdevweb-standin stage-1: $*"
}

fail() {
    log "FATAL: $*"
    log "emergency shell on ttyS0 (exit to power off)"
    sh -i < /dev/ttyS0 > /dev/ttyS0 2>&1
    poweroff -f
}

version=$(uname -r)
order=/lib/modules/$version/load-order
if [ -f "$order" ]; then
    n=0
    while read -r ko; do
        if insmod "/lib/modules/$version/$ko"; then n=$((n + 1)); else log "insmod $ko failed"; fi
    done < "$order"
    log "loaded $n modules for kernel $version"
else
    log "no modules for kernel $version in this initrd: assuming virtio, virtiofs and virtio_console are built in"
fi

# mount_fs FSTYPE OPTIONS DEVICE MOUNTPOINT (virtiofs devices may appear late: retry)
mount_fs() {
    mkdir -p "$4"
    tries=0
    while :; do
        if [ -n "$2" ]; then mount -t "$1" -o "$2" "$3" "$4"; else mount -t "$1" "$3" "$4"; fi && return 0
        tries=$((tries + 1))
        [ "$tries" -lt 20 ] || fail "cannot mount $3 ($1) on $4"
        sleep 0.25
    done
}

@bootMounts@
init=
for arg in $(cat /proc/cmdline); do
    case "$arg" in init=*) init=${arg#init=} ;; esac
done
[ -n "$init" ] || fail "no init= on the kernel command line"
[ -f "/newroot$init" ] || fail "init $init not found (is the store shared with tag 'store'?)"

mkdir -p /newroot/proc /newroot/sys /newroot/dev
mount --move /proc /newroot/proc
mount --move /sys /newroot/sys
mount --move /dev /newroot/dev
echo "kdevweb-standin stage-1: switching to $init" > /newroot/dev/kmsg
exec switch_root /newroot "$init"
