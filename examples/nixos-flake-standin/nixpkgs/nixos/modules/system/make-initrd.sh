# Builder of the stand-in initrd (runs under the host's /bin/sh, no sandbox).
# Inputs: $busybox (store path), $stage1Path (the /init script),
# $kernelModules (module names; dependencies are added from modules.dep).
phase() {
    echo "kdevweb-standin initrd: == $1 =="
    if [ -n "$NIX_LOG_FD" ]; then echo "@nix {\"action\":\"setPhase\",\"phase\":\"$1\"}" >&2; fi
}

# resolve MODDIR DEST RELPATH: copy a module and its dependencies (first),
# decompressing .ko.xz/.ko.zst/.ko.gz, and append it to DEST/load-order.
resolve() {
    case "$seen" in *" $3 "*) return 0 ;; esac
    seen="$seen$3 "
    local deps d ko
    deps=$(grep "^$3:" "$1/modules.dep" | cut -d: -f2-)
    for d in $deps; do resolve "$1" "$2" "$d"; done
    ko=$(echo "$3" | sed -E 's/\.(xz|zst|gz)$//')
    mkdir -p "$2/$(dirname "$ko")"
    case "$3" in
        *.xz) xz -dc "$1/$3" > "$2/$ko" ;;
        *.zst) zstd -dcq "$1/$3" > "$2/$ko" ;;
        *.gz) gzip -dc "$1/$3" > "$2/$ko" ;;
        *) cp "$1/$3" "$2/$ko" ;;
    esac
    echo "$ko" >> "$2/load-order"
}

phase unpackPhase
root=$PWD/root
mkdir -p "$root/bin" "$root/lib/modules" "$root/proc" "$root/sys" "$root/dev" "$root/newroot" "$root/tmp"
cp "$busybox/bin/busybox" "$root/bin/busybox"
cp "$stage1Path" "$root/init"
chmod 0755 "$root/init" "$root/bin/busybox"

phase buildPhase
echo "kernel modules wanted: $kernelModules"
for dir in /lib/modules/*; do
    version=$(basename "$dir")
    if [ ! -f "$dir/modules.dep" ]; then
        echo "skipping $dir: no modules.dep"
        continue
    fi
    dest=$root/lib/modules/$version
    mkdir -p "$dest"
    : > "$dest/load-order"
    seen=" "
    for name in $kernelModules; do
        rel=$(grep -E "^([^:]*/)?$name\.ko(\.xz|\.zst|\.gz)?:" "$dir/modules.dep" | head -n 1 | cut -d: -f1)
        if [ -z "$rel" ]; then
            if grep -q "/$name\.ko\$" "$dir/modules.builtin" 2>/dev/null; then
                echo "$version: $name is built in"
            else
                echo "$version: $name not found, skipping"
            fi
            continue
        fi
        resolve "$dir" "$dest" "$rel"
    done
    echo "$version: load order: $(tr '\n' ' ' < "$dest/load-order")"
done

phase installPhase
mkdir -p "$out"
cd "$root"
find . -exec touch -h -d @1 {} +
find . -print0 | LC_ALL=C sort -z | cpio -o -H newc -R 0:0 --null --reproducible --quiet | gzip -9n > "$out/initrd"
echo "initrd: $(wc -c < "$out/initrd") bytes"
