#!/bin/sh
# mkrootfs.sh DIR: a small busybox root filesystem for tests and the demo.
# Needs busybox-static. Creates the mount points minirun requires (/proc,
# /sys, /dev, /tmp, /var/tmp), /etc/passwd and /etc/group, and a runscript.
set -eu
dir=$1
busybox=${BUSYBOX:-$(command -v busybox || echo /bin/busybox)}
[ -x "$busybox" ] || { echo "mkrootfs.sh: $busybox missing (apt-get install busybox-static)" >&2; exit 1; }
case $(ldd "$busybox" 2>&1) in
*"not a dynamic"*|*"statically linked"*) ;;
*) echo "mkrootfs.sh: $busybox is dynamically linked; the image needs busybox-static" >&2; exit 1 ;;
esac
rm -rf "$dir"
mkdir -p "$dir/bin" "$dir/sbin" "$dir/usr/bin" "$dir/usr/sbin" "$dir/etc" "$dir/proc" "$dir/sys" \
	"$dir/dev" "$dir/tmp" "$dir/var/tmp" "$dir/home" "$dir/root" "$dir/.singularity.d"
chmod 1777 "$dir/tmp" "$dir/var/tmp"
cp "$busybox" "$dir/bin/busybox"
for applet in $("$busybox" --list); do
	[ -e "$dir/bin/$applet" ] || ln -s busybox "$dir/bin/$applet"
done
printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' >"$dir/etc/passwd"
printf 'root:x:0:\nnogroup:x:65534:\n' >"$dir/etc/group"
: >"$dir/etc/resolv.conf"
: >"$dir/etc/hosts"
echo minirun-test >"$dir/MARKER"
cat >"$dir/.singularity.d/runscript" <<'RS'
#!/bin/sh
echo "runscript: $*"
RS
chmod 755 "$dir/.singularity.d/runscript"
