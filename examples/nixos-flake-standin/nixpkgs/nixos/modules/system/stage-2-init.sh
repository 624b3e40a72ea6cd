# kdevweb nixos-flake stand-in: stage 2 (the `init` of boot.json).
# Runs as PID 1 on the tmpfs root prepared by stage 1, with host busybox from
# the store. Sets up /etc from the system closure, mounts the remaining file
# systems, arranges shells on ttyS0 and hvc0 and ACPI power-button handling,
# then becomes busybox init.
busybox=@busybox@/bin/busybox
toplevel=@toplevel@
hostName=@hostName@
userName=@userName@
modules=@modules@
banner=@banner@

$busybox mkdir -p /bin
$busybox --install -s /bin
export PATH=/bin:/run/current-system/sw/bin

mkdir -p /proc /sys /dev /run /tmp /etc /root /home /var/log /var/run /mnt
mounted() { grep -q "^[^ ]* $1 " /proc/mounts 2>/dev/null; }
mounted /proc || mount -t proc proc /proc
mounted /sys || mount -t sysfs sysfs /sys
mounted /dev || mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts /dev/shm
mount -t devpts devpts /dev/pts
mount -t tmpfs -o mode=1777 tmpfs /dev/shm
chmod 1777 /tmp

log() { echo "kdevweb-standin stage-2: $*" > /dev/kmsg; }
log "system $toplevel"

ln -sfn "$toplevel" /run/current-system
ln -sfn "$toplevel" /run/booted-system
cp -R "$toplevel/etc/." /etc/
hostname "$hostName"
echo "$hostName" > /etc/hostname
mkdir -p "/home/$userName"

# mount_fs FSTYPE OPTIONS DEVICE MOUNTPOINT (best effort after boot)
mount_fs() {
    mkdir -p "$4"
    if [ -n "$2" ]; then mount -t "$1" -o "$2" "$3" "$4"; else mount -t "$1" "$3" "$4"; fi \
        || log "could not mount $3 ($1) on $4 (continuing)"
}
@lateMounts@
ready="$banner: $hostName ready (user $userName, modules: $modules)"
cat > /etc/profile <<PROFILE
export PATH=/bin:/run/current-system/sw/bin
export HOSTNAME=$hostName
PS1='[\\u@\\h:\\w]\\\$ '
echo "$ready"
PROFILE

{
    echo "::sysinit:/bin/hostname $hostName"
    echo "ttyS0::respawn:-/bin/sh"
    [ -e /dev/hvc0 ] && echo "hvc0::respawn:-/bin/sh"
    echo "::ctrlaltdel:/bin/poweroff -f"
    echo "::shutdown:/bin/sync"
} > /etc/inittab

# ACPI power button (QMP system_powerdown, virsh shutdown): busybox acpid
# reads /dev/input/event* (button + evdev modules, loaded in stage 1) and runs
# /etc/acpi/PWRF/00000080 for the power button.
mkdir -p /etc/acpi/PWRF
cat > /etc/acpi/PWRF/00000080 <<'ACPI'
#!/bin/sh
echo "kdevweb-standin: ACPI power button: powering off" > /dev/kmsg
sync
poweroff -f
ACPI
chmod 0755 /etc/acpi/PWRF/00000080
if ls /dev/input/event* > /dev/null 2>&1; then
    acpid -c /etc/acpi -l /var/log/acpid.log || log "acpid failed to start"
else
    log "no /dev/input/event* devices: the ACPI power button will not work"
fi

# The NIC: DHCP with busybox udhcpc in the background (a guest without a
# DHCP server still boots). An imageless guest loads virtio_net from the
# shared modules; a disk-image guest's initrd has loaded it already.
[ -n "$(ls /sys/class/net | grep -v '^lo$')" ] || modprobe virtio_net 2>/dev/null || true
cat > /etc/udhcpc.script <<'DHCP'
#!/bin/sh
case "$1" in
    bound|renew)
        ip addr flush dev "$interface"
        ip addr add "$ip/${mask:-24}" dev "$interface"
        [ -z "$router" ] || ip route add default via "${router%% *}" dev "$interface"
        : > /etc/resolv.conf
        for d in $dns; do echo "nameserver $d" >> /etc/resolv.conf; done
        echo "kdevweb-standin: $interface has $ip" > /dev/kmsg ;;
    deconfig) ip addr flush dev "$interface"; ip link set "$interface" up ;;
esac
DHCP
chmod 0755 /etc/udhcpc.script
ip link set lo up
for netif in $(ls /sys/class/net); do
    [ "$netif" = lo ] && continue
    ip link set "$netif" up
    udhcpc -b -S -i "$netif" -s /etc/udhcpc.script -t 5 -T 1 -p "/run/udhcpc.$netif.pid" > /dev/null 2>&1 \
        || log "udhcpc on $netif failed to start"
done

log "$ready"
exec /bin/init
