package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"runtime"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// The name table must match the kernel's numbering (x/sys mirrors
// linux/capability.h), not just itself.
func TestCapNamesMatchKernelNumbers(t *testing.T) {
	want := map[string]int{
		"CAP_CHOWN": unix.CAP_CHOWN, "CAP_DAC_OVERRIDE": unix.CAP_DAC_OVERRIDE,
		"CAP_DAC_READ_SEARCH": unix.CAP_DAC_READ_SEARCH, "CAP_FOWNER": unix.CAP_FOWNER,
		"CAP_FSETID": unix.CAP_FSETID, "CAP_KILL": unix.CAP_KILL, "CAP_SETGID": unix.CAP_SETGID,
		"CAP_SETUID": unix.CAP_SETUID, "CAP_SETPCAP": unix.CAP_SETPCAP,
		"CAP_LINUX_IMMUTABLE": unix.CAP_LINUX_IMMUTABLE, "CAP_NET_BIND_SERVICE": unix.CAP_NET_BIND_SERVICE,
		"CAP_NET_BROADCAST": unix.CAP_NET_BROADCAST, "CAP_NET_ADMIN": unix.CAP_NET_ADMIN,
		"CAP_NET_RAW": unix.CAP_NET_RAW, "CAP_IPC_LOCK": unix.CAP_IPC_LOCK, "CAP_IPC_OWNER": unix.CAP_IPC_OWNER,
		"CAP_SYS_MODULE": unix.CAP_SYS_MODULE, "CAP_SYS_RAWIO": unix.CAP_SYS_RAWIO,
		"CAP_SYS_CHROOT": unix.CAP_SYS_CHROOT, "CAP_SYS_PTRACE": unix.CAP_SYS_PTRACE,
		"CAP_SYS_PACCT": unix.CAP_SYS_PACCT, "CAP_SYS_ADMIN": unix.CAP_SYS_ADMIN, "CAP_SYS_BOOT": unix.CAP_SYS_BOOT,
		"CAP_SYS_NICE": unix.CAP_SYS_NICE, "CAP_SYS_RESOURCE": unix.CAP_SYS_RESOURCE,
		"CAP_SYS_TIME": unix.CAP_SYS_TIME, "CAP_SYS_TTY_CONFIG": unix.CAP_SYS_TTY_CONFIG,
		"CAP_MKNOD": unix.CAP_MKNOD, "CAP_LEASE": unix.CAP_LEASE, "CAP_AUDIT_WRITE": unix.CAP_AUDIT_WRITE,
		"CAP_AUDIT_CONTROL": unix.CAP_AUDIT_CONTROL, "CAP_SETFCAP": unix.CAP_SETFCAP,
		"CAP_MAC_OVERRIDE": unix.CAP_MAC_OVERRIDE, "CAP_MAC_ADMIN": unix.CAP_MAC_ADMIN,
		"CAP_SYSLOG": unix.CAP_SYSLOG, "CAP_WAKE_ALARM": unix.CAP_WAKE_ALARM,
		"CAP_BLOCK_SUSPEND": unix.CAP_BLOCK_SUSPEND, "CAP_AUDIT_READ": unix.CAP_AUDIT_READ,
		"CAP_PERFMON": unix.CAP_PERFMON, "CAP_BPF": unix.CAP_BPF,
		"CAP_CHECKPOINT_RESTORE": unix.CAP_CHECKPOINT_RESTORE,
	}
	if len(capNames) != 41 || len(want) != 41 {
		t.Fatalf("%d names, want 41", len(capNames))
	}
	for name, n := range want {
		if got, ok := capByName(name); !ok || got != n {
			t.Errorf("%s = %d (%v), kernel says %d", name, got, ok, n)
		}
	}
	for i, d := range capDescriptions {
		if d == "" || !strings.HasSuffix(d, ".") {
			t.Errorf("description %d %q", i, d)
		}
	}
}

func TestCapSetFormatting(t *testing.T) {
	for _, tc := range []struct {
		set   capSet
		str   string
		hex   string
		names []string
	}{
		{0, "", "0000000000000000", nil},
		{1 << 13, "CAP_NET_RAW", "0000000000002000", []string{"CAP_NET_RAW"}},
		{1<<13 | 1<<10, "CAP_NET_BIND_SERVICE,CAP_NET_RAW", "0000000000002400", []string{"CAP_NET_BIND_SERVICE", "CAP_NET_RAW"}},
		{1<<40 | 1<<41 | 1<<63 | 1, "CAP_CHOWN,CAP_CHECKPOINT_RESTORE,CAP_41,CAP_63", "8000030000000001",
			[]string{"CAP_CHOWN", "CAP_CHECKPOINT_RESTORE", "CAP_41", "CAP_63"}},
		{exampleHost, "", "000001fffeffffff", nil},
	} {
		if tc.str != "" && tc.set.String() != tc.str {
			t.Errorf("%x String = %q, want %q", uint64(tc.set), tc.set.String(), tc.str)
		}
		if tc.set.hex() != tc.hex {
			t.Errorf("%x hex = %q, want %q", uint64(tc.set), tc.set.hex(), tc.hex)
		}
		if tc.names != nil && !reflect.DeepEqual(tc.set.names(), tc.names) {
			t.Errorf("%x names = %q", uint64(tc.set), tc.set.names())
		}
	}
	if capsUpTo(40) != fullHost || capsUpTo(-1) != 0 || capsUpTo(63) != ^capSet(0) || capsUpTo(0) != 1 {
		t.Fatal("capsUpTo")
	}
	if n := len(exampleHost.names()); n != 40 {
		t.Fatalf("example host has %d names", n)
	}
}

func TestParseCapList(t *testing.T) {
	for _, tc := range []struct {
		in      string
		named   capSet
		all     bool
		unknown []string
	}{
		{"", 0, false, nil},
		{",, ,\t,", 0, false, nil},
		{"net_raw", netRaw, false, nil},
		{"NET_RAW", netRaw, false, nil},
		{"cap_net_raw", netRaw, false, nil},
		{"CAP_NET_RAW", netRaw, false, nil},
		{"Cap_Net_Raw", netRaw, false, nil},
		{" \tnet_raw \t, chown", netRaw | 1, false, nil},
		{"net_raw,NET_RAW,cap_net_raw", netRaw, false, nil},
		{"all", 0, true, nil},
		{"ALL", 0, true, nil},
		{"cap_all", 0, true, nil},
		{"foo,all,bar,chown", 1, true, []string{"CAP_FOO", "CAP_BAR"}}, // every item is examined
		{"CAP_", 0, false, []string{"CAP_"}},
		{"cap_", 0, false, []string{"CAP_"}},
		{"41", 0, false, []string{"CAP_41"}},
		{"CAP_41", 0, false, []string{"CAP_41"}},
		{"13", 0, false, []string{"CAP_13"}},
		{"-1", 0, false, []string{"CAP_-1"}},
		{"CAP_NET_RAW\n", 0, false, []string{"CAP_NET_RAW\n"}},
		{"foo,FOO,cap_foo,bar", 0, false, []string{"CAP_FOO", "CAP_BAR"}},
		{"CAP_NET_RAШ", 0, false, []string{"CAP_NET_RAШ"}},     // Cyrillic look-alike
		{"cap_ſys_admin", 0, false, []string{"CAP_ſYS_ADMIN"}}, // long s must not fold to S
		{"net_admın", 0, false, []string{"CAP_NET_ADMıN"}},     // dotless i must not fold to I
		{"\xff", 0, false, []string{"CAP_\xff"}},
		{"checkpoint_restore,bpf", 1<<40 | 1<<39, false, nil},
	} {
		l := parseCapList(tc.in)
		if l.Named != tc.named || l.All != tc.all || !reflect.DeepEqual(l.Unknown, tc.unknown) {
			t.Errorf("parseCapList(%q) = %s %v %q, want %s %v %q", tc.in, l.Named.hex(), l.All, l.Unknown,
				tc.named.hex(), tc.all, tc.unknown)
		}
	}
	if l := parseCapLists([]string{"chown", "net_raw,foo", "all"}); l.Named != 1|netRaw || !l.All ||
		!reflect.DeepEqual(l.Unknown, []string{"CAP_FOO"}) {
		t.Errorf("repeated flags: %+v", l)
	}
	if l := parseCapList("all"); l.set(exampleHost) != exampleHost || l.set(namedCaps()) != capsUpTo(40) {
		t.Error("all does not resolve to the given set")
	}
	big := strings.Repeat("x,", 50000) + "net_raw"
	if l := parseCapList(big); l.Named != netRaw || len(l.Unknown) != 1 {
		t.Errorf("large list: %s %d unknown", l.Named.hex(), len(l.Unknown))
	}
}

// L from the kernel file, cross-checked with the PR_CAPBSET_READ probe.
func TestLastCap(t *testing.T) {
	b, err := os.ReadFile("/proc/sys/kernel/cap_last_cap")
	if err != nil {
		t.Fatal(err)
	}
	want, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	got, err := lastCap()
	if err != nil || got != want {
		t.Fatalf("lastCap = %d, %v; file says %d", got, err, want)
	}
	if _, err := unix.PrctlRetInt(unix.PR_CAPBSET_READ, uintptr(want+1), 0, 0, 0); err != unix.EINVAL {
		t.Fatalf("PR_CAPBSET_READ(L+1) = %v, want EINVAL", err)
	}
	if _, err := unix.PrctlRetInt(unix.PR_CAPBSET_READ, uintptr(want), 0, 0, 0); err != nil {
		t.Fatalf("PR_CAPBSET_READ(L) = %v", err)
	}
}

// Without the proc file, or with garbage in it, L comes from probing.
func TestLastCapFallback(t *testing.T) {
	want, err := lastCap()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	for _, content := range []string{"", "forty\n", "\n"} {
		p := filepath.Join(dir, "cap_last_cap")
		os.WriteFile(p, []byte(content), 0o644)
		if got, err := lastCapFrom(p); got != want || err != nil {
			t.Errorf("%q: %d %v, want %d", content, got, err, want)
		}
	}
	if got, err := lastCapFrom(filepath.Join(dir, "missing")); got != want || err != nil {
		t.Errorf("missing: %d %v", got, err)
	}
	for _, content := range []string{"64\n", "-1\n"} {
		p := filepath.Join(dir, "bad")
		os.WriteFile(p, []byte(content), 0o644)
		if _, err := lastCapFrom(p); err == nil || classOf(err) != eSystem {
			t.Errorf("%q accepted: %v", content, err)
		}
	}
}

// H equals CapBnd ∩ CapPrm of this process as /proc reports it, and capsh
// (libcap, an independent decoder) names the same capabilities.
func TestHostAvailable(t *testing.T) {
	last, err := lastCap()
	if err != nil {
		t.Fatal(err)
	}
	h, err := hostAvailable(last)
	if err != nil {
		t.Fatal(err)
	}
	status, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Fatal(err)
	}
	field := func(name string) capSet {
		for _, line := range strings.Split(string(status), "\n") {
			if v, ok := strings.CutPrefix(line, name+":\t"); ok {
				n, err := strconv.ParseUint(v, 16, 64)
				if err != nil {
					t.Fatal(err)
				}
				return capSet(n)
			}
		}
		t.Fatalf("no %s in /proc/self/status", name)
		return 0
	}
	want := field("CapBnd") & field("CapPrm")
	if h != want {
		t.Fatalf("hostAvailable = %s, /proc says %s", h.hex(), want.hex())
	}
	if os.Geteuid() == 0 {
		if err := requireLaunchCaps(h); err != nil {
			t.Fatalf("root lacks launch capabilities: %v", err)
		}
	}
	capsh, err := exec.LookPath("capsh")
	if err != nil {
		t.Skip("capsh (libcap2-bin) not installed; the /proc comparison above still ran")
	}
	out, err := exec.Command(capsh, "--decode="+h.hex()).Output()
	if err != nil {
		t.Fatal(err)
	}
	// capsh prints "0x...=cap_chown,cap_dac_override,..."
	_, list, _ := strings.Cut(strings.TrimSpace(string(out)), "=")
	if got := strings.ToUpper(list); got != h.String() {
		t.Fatalf("capsh decodes %s as %s, minirun as %s", h.hex(), got, h.String())
	}
}

func TestRequireLaunchCaps(t *testing.T) {
	if err := requireLaunchCaps(fullHost); err != nil {
		t.Fatal(err)
	}
	err := requireLaunchCaps(fullHost &^ (1 << unix.CAP_SETPCAP))
	if err == nil || err.Error() != "host does not let minirun hold CAP_SETPCAP" {
		t.Fatalf("err = %v", err)
	}
}

func TestCapsetData(t *testing.T) {
	for _, s := range []capSet{0, netRaw, exampleHost, 1<<63 | 1<<32 | 1<<31} {
		hdr, data := capsetData(s)
		if hdr.Version != unix.LINUX_CAPABILITY_VERSION_3 || hdr.Pid != 0 {
			t.Fatalf("header %+v", hdr)
		}
		e, p, i := setsFromCapData(data)
		if e != s || p != s || i != s {
			t.Fatalf("%s round-trips as e=%s p=%s i=%s", s.hex(), e.hex(), p.hex(), i.hex())
		}
	}
	// Read this thread's sets and compare with the kernel's own report.
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		t.Fatal(err)
	}
	if _, p, _ := setsFromCapData(data); os.Geteuid() == 0 && p == 0 {
		t.Fatal("root with an empty permitted set")
	}
}

func FuzzCapList(f *testing.F) {
	for _, s := range []string{"", "net_raw", "all", "CAP_ALL,foo", "cap_net_raw, NET_ADMIN ,,chown", "CAP_",
		"CAP_NET_RAW\n", "cap_ſys_admin", "41,-1", "\xff\xfe", strings.Repeat("a,", 100)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		l := parseCapList(s)
		if l.Named&^namedCaps() != 0 {
			t.Fatalf("named %s outside 0..40", l.Named.hex())
		}
		// Canonical form round-trips.
		if l.Named != 0 {
			r := parseCapList(l.Named.String())
			if r.Named != l.Named || r.All || r.Unknown != nil {
				t.Fatalf("%q: canonical %q re-parses as %+v", s, l.Named.String(), r)
			}
		}
		// Unknown names are normalised, distinct, and stay unknown.
		seen := map[string]bool{}
		for _, u := range l.Unknown {
			if seen[u] || !strings.HasPrefix(u, "CAP_") || u == "CAP_ALL" || strings.ContainsRune(u, ',') {
				t.Fatalf("%q: bad unknown name %q in %q", s, u, l.Unknown)
			}
			seen[u] = true
			if r := parseCapList(u); r.Named != 0 || r.All {
				t.Fatalf("%q: unknown %q parses as known", s, u)
			}
		}
		// The policy keeps every set within H whatever the lists say.
		d, err := decideCaps(capPolicyInput{Caller: rootCaller, Config: &config{}, Last: 40, Host: exampleHost,
			Flags: capFlags{AddCaps: []string{s}, DropCaps: []string{s}}})
		if err != nil || d.Set&^exampleHost != 0 {
			t.Fatalf("%q: root decision %s, %v", s, d.Set.hex(), err)
		}
		d, err = decideCaps(capPolicyInput{Caller: aliceCaller, Config: &config{}, Last: 40, Host: exampleHost,
			Flags: capFlags{AddCaps: []string{s}}, Grants: func() (capSet, error) { return netRaw | 1<<24, nil }})
		if err != nil || d.Set&^(netRaw) != 0 || !d.NoNewPrivs {
			t.Fatalf("%q: user decision %s, %v", s, d.Set.hex(), err)
		}
	})
}

// verifyCredentials (R13) accepts exactly the requested state and refuses,
// as E_INTERNAL, every way a credential change could have failed to take.
func TestVerifyCredentials(t *testing.T) {
	who := caller{uid: 1001, gid: 1002, groups: []int{1002, 27}}
	set := capSet(1 << 10)
	good := map[string]string{
		"Uid": "1001\t1001\t1001\t1001", "Gid": "1002\t1002\t1002\t1002", "Groups": "1002 27 ",
		"CapInh": "0000000000000400", "CapPrm": "0000000000000400", "CapEff": "0000000000000400",
		"CapBnd": "0000000000000400", "CapAmb": "0000000000000400", "NoNewPrivs": "1",
	}
	write := func(change map[string]string) string {
		var b strings.Builder
		b.WriteString("Name:\tminirun\n")
		for _, k := range []string{"Uid", "Gid", "Groups", "NoNewPrivs", "CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"} {
			v := good[k]
			if c, ok := change[k]; ok {
				v = c
			}
			b.WriteString(k + ":\t" + v + "\n")
		}
		p := filepath.Join(t.TempDir(), "status")
		if err := os.WriteFile(p, []byte(b.String()), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	if err := verifyCredentials(write(nil), who, set, true); err != nil {
		t.Fatalf("the requested state: %v", err)
	}
	for name, change := range map[string]map[string]string{
		"saved uid root":     {"Uid": "1001\t1001\t0\t1001"},
		"fs uid root":        {"Uid": "1001\t1001\t1001\t0"},
		"effective gid":      {"Gid": "1002\t0\t1002\t1002"},
		"extra group":        {"Groups": "1002 27 0"},
		"missing group":      {"Groups": "1002"},
		"other group":        {"Groups": "1002 28"},
		"effective cap left": {"CapEff": "0000000000200400"},
		"bounding set":       {"CapBnd": "000001ffffffffff"},
		"ambient missing":    {"CapAmb": "0000000000000000"},
		"inheritable":        {"CapInh": "0000000000000000"},
		"no_new_privs off":   {"NoNewPrivs": "0"},
		"field missing":      {"CapPrm": ""},
	} {
		if err := verifyCredentials(write(change), who, set, true); classOf(err) != eInternal {
			t.Errorf("%s: %v, want E_INTERNAL", name, err)
		}
	}
	if err := verifyCredentials(filepath.Join(t.TempDir(), "missing"), who, set, true); classOf(err) != eInternal {
		t.Errorf("unreadable status: %v, want E_INTERNAL", err)
	}
}

// runSeccomp runs a classic BPF seccomp program (the opcodes tiocstiFilter
// uses) over seccomp_data{nr, arch, ip, args[6]}, in the byte order the
// audit architecture says.
func runSeccomp(t *testing.T, prog []unix.SockFilter, audit, nr uint32, args [6]uint64) uint32 {
	t.Helper()
	data := make([]byte, 64)
	le := audit&0x40000000 != 0
	put32 := func(off int, v uint32) {
		for i := 0; i < 4; i++ {
			shift := 8 * i
			if !le {
				shift = 8 * (3 - i)
			}
			data[off+i] = byte(v >> shift)
		}
	}
	put32(0, nr)
	put32(4, audit)
	for i, a := range args {
		lo, hi := uint32(a), uint32(a>>32)
		if le {
			put32(16+8*i, lo)
			put32(20+8*i, hi)
		} else {
			put32(16+8*i, hi)
			put32(20+8*i, lo)
		}
	}
	get32 := func(off int) uint32 {
		var v uint32
		for i := 0; i < 4; i++ {
			shift := 8 * i
			if !le {
				shift = 8 * (3 - i)
			}
			v |= uint32(data[off+i]) << shift
		}
		return v
	}
	var acc uint32
	for pc := 0; pc < len(prog); pc++ {
		ins := prog[pc]
		switch ins.Code {
		case unix.BPF_LD | unix.BPF_W | unix.BPF_ABS:
			acc = get32(int(ins.K))
		case unix.BPF_JMP | unix.BPF_JEQ | unix.BPF_K:
			if acc == ins.K {
				pc += int(ins.Jt)
			} else {
				pc += int(ins.Jf)
			}
		case unix.BPF_RET | unix.BPF_K:
			return ins.K
		default:
			t.Fatalf("opcode %#x not expected in the filter", ins.Code)
		}
	}
	t.Fatal("the filter fell off its end")
	return 0
}

// TestTIOCSTIFilter runs the filter of every architecture minirun knows on
// what each kind of process there may call, and refuses the rest.
func TestTIOCSTIFilter(t *testing.T) {
	deny := unix.SECCOMP_RET_ERRNO | uint32(unix.EPERM)
	for _, entry := range tiocstiArches {
		goarch, arches := entry.goarch, entry.arches
		prog, err := tiocstiFilter(goarch)
		if err != nil || len(prog) > 255 {
			t.Fatalf("%s: %d instructions, %v", goarch, len(prog), err)
		}
		for _, a := range arches {
			for _, tc := range []struct {
				nr   uint32
				req  uint64
				want uint32
			}{
				{a.ioctl, unix.TIOCSTI, deny},
				{a.ioctl, 1<<32 | unix.TIOCSTI, deny}, // the kernel reads 32 bits of it
				{a.ioctl, unix.TIOCSTI << 32, unix.SECCOMP_RET_ALLOW},
				{a.ioctl, unix.TCGETS, unix.SECCOMP_RET_ALLOW},
				{a.ioctl + 1, unix.TIOCSTI, unix.SECCOMP_RET_ALLOW},
			} {
				if got := runSeccomp(t, prog, a.audit, tc.nr, [6]uint64{0, tc.req}); got != tc.want {
					t.Errorf("%s, audit arch %#x: syscall %d request %#x gives %#x, want %#x", goarch, a.audit, tc.nr, tc.req, got, tc.want)
				}
			}
		}
		// A process of an architecture the filter does not name is left alone.
		if got := runSeccomp(t, prog, 0x12345678, 16, [6]uint64{0, unix.TIOCSTI}); got != unix.SECCOMP_RET_ALLOW {
			t.Errorf("%s: unknown audit arch gives %#x", goarch, got)
		}
	}
	if _, err := tiocstiFilter(runtime.GOARCH); err != nil {
		t.Errorf("no TIOCSTI filter for the architecture the tests run on (%s)", runtime.GOARCH)
	}
	if _, err := tiocstiFilter("mips"); classOf(err) != eSystem {
		t.Errorf("an architecture without a filter: %v, want E_SYSTEM (refused)", err)
	}
}
