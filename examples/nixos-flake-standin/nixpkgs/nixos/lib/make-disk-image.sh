# Builder of the stand-in disk image (see make-disk-image.nix for the layout).
# Host tools only; no mount, no loop device, no root.
phase() {
    echo "kdevweb-standin: == $1 =="
    if [ -n "$NIX_LOG_FD" ]; then echo "@nix {\"action\":\"setPhase\",\"phase\":\"$1\"}" >&2; fi
}
die() { echo "make-disk-image stand-in: error: $*" >&2; exit 1; }

phase configurePhase
tools=
for d in $toolsDirs; do [ -x "$d/sbin/sfdisk" ] && tools=$d && break; done
[ -n "$tools" ] || die "sfdisk/mke2fs not found in any of: $toolsDirs (run scripts/setup: it copies them there for the Nix sandbox)"
SFDISK=$tools/sbin/sfdisk
MKE2FS=$tools/sbin/mke2fs
kernel=
for k in "$tools"/boot/vmlinuz-*; do
    v=${k##*/vmlinuz-}
    # a kernel whose modules the initrd carries (same rule as its builder)
    [ -f "/lib/modules/$v/modules.dep" ] && kernel=$k && version=$v
done
[ -n "$kernel" ] || die "no kernel in $tools/boot with modules in /lib/modules (run scripts/setup)"
mbr=
for m in /lib/syslinux/mbr/mbr.bin /usr/lib/syslinux/mbr/mbr.bin; do [ -f "$m" ] && mbr=$m && break; done
[ -z "$installBootLoader" ] || [ -n "$mbr" ] || die "syslinux's mbr.bin not found (Debian package syslinux-common)"
[ "$rootFsType" = ext4 ] || die "the root file system must be ext4 (fileSystems.\"/\".fsType = $rootFsType)"
echo "kernel $kernel ($version), initrd $toplevel/initrd, root $rootDevice ($rootFsType)"

phase buildPhase
# The root: the system closure (exportReferencesGraph lists it) in /nix/store.
root=$PWD/root
mkdir -p "$root/nix/store" "$root/proc" "$root/sys" "$root/dev" "$root/run" "$root/tmp" \
    "$root/etc" "$root/root" "$root/home" "$root/var/log" "$root/nix/var/nix/profiles"
grep '^/nix/store/' closure | grep -v '\.drv$' | sort -u > paths
while read -r p; do cp -a "$p" "$root/nix/store/"; done < paths
ln -s "$toplevel" "$root/nix/var/nix/profiles/system"
echo "closure: $(wc -l < paths) store paths, $(du -sm "$root" | cut -f1) MiB"

rootMiB=$(( $(du -sm "$root" | cut -f1) ))
if [ "$diskSize" = auto ]; then
    extra=${additionalSpace%M}
    diskSize=$(( bootMiB + 1 + rootMiB + rootMiB / 4 + extra ))
fi
rootStart=$(( 1 + bootMiB ))
rootSize=$(( diskSize - rootStart ))
[ "$rootSize" -gt "$rootMiB" ] || die "diskSize $diskSize MiB leaves $rootSize MiB for a root of $rootMiB MiB"
echo "disk $diskSize MiB: boot (FAT) 1..$rootStart MiB, root ($rootFsType) $rootStart..$diskSize MiB"

# Partition table: vda1 = root (what fileSystems."/" names), vda2 = the
# bootable FAT partition at 1 MiB that syslinux boots from.
truncate -s "${diskSize}M" disk.raw
printf 'label: dos\nlabel-id: 0x6b646576\nstart=%dMiB, size=%dMiB, type=83\nstart=1MiB, size=%dMiB, type=c, bootable\n' \
    "$rootStart" "$rootSize" "$bootMiB" | "$SFDISK" --no-reread --no-tell-kernel -q disk.raw
"$SFDISK" -l disk.raw

# Boot partition: FAT via mtools at its byte offset, kernel + initrd + config.
off=$(( 1024 * 1024 ))
cat > syslinux.cfg <<CFG
SERIAL 0 115200
DEFAULT nixos
PROMPT 0
TIMEOUT 1
LABEL nixos
  KERNEL /bzImage
  INITRD /initrd
  APPEND root=$rootDevice console=ttyS0,115200 init=$toplevel/init $kernelParams
CFG
export MTOOLS_SKIP_CHECK=1
# mtools converts names through iconv: glibc's gconv modules are under /lib
# in the sandbox, not where glibc looks (/usr/lib).
[ -d /lib/x86_64-linux-gnu/gconv ] && export GCONV_PATH=/lib/x86_64-linux-gnu/gconv
mformat -i "disk.raw@@$off" -T $(( bootMiB * 2048 )) -h 64 -s 32 -H 2048 -N 6b646576 -v NIXOS_BOOT ::
mcopy -i "disk.raw@@$off" "$kernel" ::/bzImage
mcopy -i "disk.raw@@$off" "$toplevel/initrd" ::/initrd
mcopy -i "disk.raw@@$off" syslinux.cfg ::/syslinux.cfg
if [ -n "$installBootLoader" ]; then
    syslinux --install --offset "$off" disk.raw
    dd if="$mbr" of=disk.raw bs=440 count=1 conv=notrunc status=none
    echo "bootloader: syslinux in partition 2, mbr.bin in the MBR"
else
    echo "installBootLoader = false: no boot loader (the image does not boot by itself)"
fi
mdir -i "disk.raw@@$off" ::/

# Root partition: ext4 made from the directory, written at its offset.
# Fixed UUID, hash seed and time: the same closure gives the same image.
E2FSPROGS_FAKE_TIME=1 "$MKE2FS" -q -F -t ext4 -L nixos -U 6b646576-7765-6200-0000-000000000001 -d "$root" -E "offset=$(( rootStart * 1024 * 1024 )),root_owner=0:0,hash_seed=6b646576-7765-6200-0000-000000000002" \
    disk.raw "${rootSize}M"

phase installPhase
mkdir -p "$out/nix-support"
if [ "$format" = qcow2 ]; then
    qemu-img convert -f raw -O qcow2 disk.raw "$out/$fileName"
else
    mv disk.raw "$out/$fileName"
fi
ln -s "$toplevel" "$out/toplevel"
echo "file $format $out/$fileName" > "$out/nix-support/hydra-build-products"
qemu-img info "$out/$fileName"
