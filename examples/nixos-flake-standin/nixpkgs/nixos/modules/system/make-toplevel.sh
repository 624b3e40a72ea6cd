# Builder of the stand-in system closure (runs under the host's /bin/sh, no
# sandbox). Lays out what an imageless NixOS toplevel has: boot.json, init,
# initrd, kernel (placeholder), etc/, sw/, plus etc/kdevweb-standin.json.
phase() {
    echo "kdevweb-standin: == $1 =="
    if [ -n "$NIX_LOG_FD" ]; then echo "@nix {\"action\":\"setPhase\",\"phase\":\"$1\"}" >&2; fi
}

phase configurePhase
echo "host name: $hostName"
echo "initrd: $initrd"
echo "packages: $(echo $packages | wc -w)"

if [ -n "$failBuild" ]; then
    phase buildPhase
    echo "kdevweb-standin: checking configuration"
    echo "kdevweb-standin: standin.failBuild = true is set (for example in the extra module)"
    echo "error: kdevweb-standin: failing the build on purpose because standin.failBuild = true" >&2
    exit 1
fi

phase buildPhase
# Test knobs (standin.logLines, standin.buildSeconds): volume and duration.
i=0
while [ "$i" -lt "${logLines:-0}" ]; do
    echo "kdevweb-standin: standin log line $i"
    i=$((i + 1))
done
if [ "${buildSeconds:-0}" -gt 0 ]; then
    echo "kdevweb-standin: sleeping ${buildSeconds} s (standin.buildSeconds)"
    sleep "$buildSeconds"
fi
mkdir -p "$out/etc" "$out/sw/bin" "$out/sw/share/kdevweb-standin" "$out/bin"
cp "$stage2Path" "$out/init"
chmod 0555 "$out/init"
ln -s "$busybox/bin/busybox" "$out/bin/busybox"
ln -s "$busybox/bin/busybox" "$out/sw/bin/busybox"
ln -s "$initrd/initrd" "$out/initrd"
cp "$bootJsonPath" "$out/boot.json"
cp "$kernelNotePath" "$out/kernel"
cp "$recordPath" "$out/etc/kdevweb-standin.json"
cp "$passwdPath" "$out/etc/passwd"
cp "$groupPath" "$out/etc/group"
echo "$hostName" > "$out/etc/hostname"
echo "x86_64-linux" > "$out/system"
echo "kdevweb-standin" > "$out/nixos-version"

# authorized keys: one line "user<TAB>json-list" per user
while IFS="$(printf '\t')" read -r user keys; do
    [ -n "$user" ] || continue
    mkdir -p "$out/etc/ssh/authorized_keys.d"
    echo "$keys" > "$out/etc/ssh/authorized_keys.d/$user.json"
done < "$authorizedKeysPath"

# environment.etc: "name<TAB>store path" per entry
while IFS="$(printf '\t')" read -r name path; do
    [ -n "$name" ] || continue
    mkdir -p "$(dirname "$out/etc/$name")"
    ln -s "$path" "$out/etc/$name"
done < "$etcEntriesPath"

phase installPhase
for p in $packages; do
    for f in "$p"/bin/* "$p"/share/kdevweb-standin/*; do
        [ -e "$f" ] || continue
        case "$f" in */bin/*) ln -sf "$f" "$out/sw/bin/" ;; *) ln -sf "$f" "$out/sw/share/kdevweb-standin/" ;; esac
    done
    echo "linked $(basename "$p")"
done
echo "system closure ready: $out"
