#!/bin/sh
# demo.sh PREFIX: the main job of minirun, shown step by step. Run by
# `make demo` after it installed minirun setuid-root into PREFIX.
set -eu
prefix=$1
minirun=$prefix/bin/minirun
work=$prefix/demo
here=$(cd "$(dirname "$0")" && pwd)

step() { printf '\n\033[1m== %s\033[0m\n$ %s\n' "$1" "$2"; }
caps() { # decode the container's capability sets for a human
	status=$(cat)
	eff=$(printf '%s\n' "$status" | sed -n 's/^CapEff:[[:space:]]*//p')
	nnp=$(printf '%s\n' "$status" | sed -n 's/^NoNewPrivs:[[:space:]]*//p')
	sets=$(printf '%s\n' "$status" | sed -n 's/^Cap\(Inh\|Prm\|Eff\|Bnd\|Amb\):[[:space:]]*//p' | sort -u | wc -l)
	same="all five sets equal"; [ "$sets" = 1 ] || same="SETS DIFFER"
	names=$(capsh --decode="$eff" | sed 's/^0x[0-9a-f]*=//')
	n=$(printf '%s' "$names" | tr ',' '\n' | grep -c . || true)
	[ "$n" -gt 6 ] && names="$(printf '%s' "$names" | cut -d, -f1-5),... ($n in all)"
	printf '   CapEff=%s (%s)  NoNewPrivs=%s\n   %s\n' "$eff" "$same" "$nnp" "${names:-(none)}"
}

echo "Building a busybox demo image in $work ..."
rm -rf "$work"; mkdir -p "$work"; chmod 755 "$work"
sh "$here/mkrootfs.sh" "$work/rootfs" >/dev/null
mksquashfs "$work/rootfs" "$work/demo.sqfs" -noappend -quiet -all-root >/dev/null
chmod 644 "$work/demo.sqfs"
img=$work/demo.sqfs
cd /

step "root: the container gets every capability this host allows (default root_default_capabilities = full)" \
	"minirun exec $img cat /proc/self/status"
"$minirun" exec "$img" cat /proc/self/status | caps

step "root drops CAP_NET_RAW: ping inside fails" "minirun exec --drop-caps CAP_NET_RAW $img ping -c1 127.0.0.1"
"$minirun" exec --drop-caps CAP_NET_RAW "$img" ping -c1 -W1 127.0.0.1 2>&1 | sed 's/^/   /' || true

step "root with --no-privs: nothing, and no_new_privs" "minirun exec --no-privs $img ..."
"$minirun" exec --no-privs "$img" cat /proc/self/status | caps

step "the administrator grants CAP_NET_RAW to user nobody" "minirun capability add --user nobody CAP_NET_RAW"
"$minirun" capability add --user nobody CAP_NET_RAW
"$minirun" capability list | sed 's/^/   /'

as_nobody() { setpriv --reuid=nobody --regid=nogroup --clear-groups env HOME=/ "$@"; }

step "nobody without --add-caps: no capabilities, ping fails" "minirun exec $img ping -c1 127.0.0.1"
as_nobody "$minirun" exec "$img" cat /proc/self/status | caps
as_nobody "$minirun" exec "$img" ping -c1 -W1 127.0.0.1 2>&1 | sed 's/^/   /' || true

step "nobody asks for the granted CAP_NET_RAW: ping works" "minirun exec --add-caps CAP_NET_RAW $img ping -c1 127.0.0.1"
as_nobody "$minirun" exec --add-caps CAP_NET_RAW "$img" cat /proc/self/status | caps
as_nobody "$minirun" exec --add-caps CAP_NET_RAW "$img" ping -c1 -W1 127.0.0.1 2>&1 | sed 's/^/   /'

step "nobody asks for CAP_SYS_ADMIN, which was not granted: a warning, and the container runs without it" \
	"minirun exec --add-caps CAP_NET_RAW,CAP_SYS_ADMIN $img id"
as_nobody "$minirun" exec --add-caps CAP_NET_RAW,CAP_SYS_ADMIN "$img" id 2>&1 | sed 's/^/   /'

step "bad input: one line, exit status 255" "minirun exec /etc/hostname true"
status=0; as_nobody "$minirun" exec /etc/hostname true 2>"$work/err" || status=$?
sed 's/^/   /' "$work/err"; echo "   exit status $status"

printf '\nDemo done. minirun is installed in %s; no loop device or mount is left:\n' "$prefix"
losetup -a | grep -c "$work" | sed 's/^/   loop devices on the demo image: /' || true
