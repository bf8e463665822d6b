package main

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// Two hosts: the test VM, whose root lacks CAP_SYS_RESOURCE (FULL =
// 000001fffeffffff), and one that withholds nothing (000001ffffffffff).
const (
	exampleHost capSet = 0x000001fffeffffff
	fullHost    capSet = 0x000001ffffffffff
	netRaw      capSet = 1 << 13
)

// testNames is a nameLookup over fixed account files: alice (1000) has
// primary group alice (1000) and is in netadm (1001).
func testNames() *nameLookup {
	files := map[string]string{
		"/test/passwd": "root:x:0:0:root:/root:/bin/sh\nalice:x:1000:1000::/home/alice:/bin/sh\n",
		"/test/group":  "root:x:0:\nalice:x:1000:\nnetadm:x:1001:alice\n",
	}
	return &nameLookup{
		passwdPath: "/test/passwd", groupPath: "/test/group",
		read: func(path string, max int64) ([]byte, error) { return []byte(files[path]), nil },
	}
}

var (
	rootCaller  = capCaller{UID: 0, GID: 0}
	aliceCaller = capCaller{UID: 1000, GID: 1000, Groups: []int{1001}}
)

func mustParseGrants(t *testing.T, text string) *grantFile {
	t.Helper()
	g, err := parseGrants("capability.toml", []byte(text))
	if err != nil {
		t.Fatalf("parse grants %q: %v", text, err)
	}
	return g
}

// TestPolicyAcceptanceTable runs every row of spec/capabilities.md §8 that
// the policy decides (rows 22–26 are file and admin-command rows, tested in
// grants_test.go and capability_cmd_test.go), on both hosts.
func TestPolicyAcceptanceTable(t *testing.T) {
	const (
		empty   = ""
		aliceNR = "[users]\nalice = [\"CAP_NET_RAW\"]\n"
	)
	fullMinus := func(c capSet) func(capSet) capSet { return func(f capSet) capSet { return f &^ c } }
	fixed := func(s capSet) func(capSet) capSet { return func(capSet) capSet { return s } }
	same := func(f capSet) capSet { return f }
	type row struct {
		name   string
		caller capCaller
		cfg    config
		grants string
		flags  capFlags
		want   func(full capSet) capSet
		nnp    bool
		warn   func(full capSet) []string
		err    string
	}
	rows := []row{
		{name: "1 root defaults", caller: rootCaller, want: same},
		{name: "2 root drop net_raw", caller: rootCaller, flags: capFlags{DropCaps: []string{"CAP_NET_RAW"}}, want: fullMinus(netRaw)},
		{name: "3 root drop all", caller: rootCaller, flags: capFlags{DropCaps: []string{"all"}}, want: fixed(0)},
		{name: "4 root no-privs", caller: rootCaller, flags: capFlags{NoPrivs: true}, want: fixed(0), nnp: true},
		{name: "5 root no-privs keep-privs", caller: rootCaller, flags: capFlags{NoPrivs: true, KeepPrivs: true}, want: fixed(0), nnp: true},
		{name: "6 root config no", caller: rootCaller, cfg: config{rootDefaultCapabilities: "no"}, want: fixed(0), nnp: true},
		{name: "7 root config no add net_raw", caller: rootCaller, cfg: config{rootDefaultCapabilities: "no"},
			flags: capFlags{AddCaps: []string{"net_raw"}}, want: fixed(netRaw), nnp: true},
		{name: "8 root config no keep-privs", caller: rootCaller, cfg: config{rootDefaultCapabilities: "no"},
			flags: capFlags{KeepPrivs: true}, want: same},
		{name: "9 root config file", caller: rootCaller, cfg: config{rootDefaultCapabilities: "file"},
			grants: "[users]\nroot = [\"CAP_NET_RAW\"]\n", want: fixed(netRaw)},
		{name: "10 root add sys_resource", caller: rootCaller, flags: capFlags{AddCaps: []string{"sys_resource"}}, want: same,
			warn: func(f capSet) []string {
				if f.has(24) {
					return nil
				}
				return []string{"capability not available on this host: CAP_SYS_RESOURCE"}
			}},
		{name: "11 alice nothing", caller: aliceCaller, grants: empty, want: fixed(0), nnp: true},
		{name: "12 alice ungranted", caller: aliceCaller, grants: empty, flags: capFlags{AddCaps: []string{"net_raw"}},
			want: fixed(0), nnp: true, warn: func(capSet) []string { return []string{"not authorized to add capability: CAP_NET_RAW"} }},
		{name: "13 alice ungranted strict", caller: aliceCaller, cfg: config{strictCapabilities: true}, grants: empty,
			flags: capFlags{AddCaps: []string{"net_raw"}}, err: "not authorized to add capability: CAP_NET_RAW"},
		{name: "14 alice granted", caller: aliceCaller, grants: aliceNR, flags: capFlags{AddCaps: []string{"NET_RAW"}},
			want: fixed(netRaw), nnp: true},
		{name: "15 alice partly granted", caller: aliceCaller, grants: aliceNR, flags: capFlags{AddCaps: []string{"net_raw,chown"}},
			want: fixed(netRaw), nnp: true, warn: func(capSet) []string { return []string{"not authorized to add capability: CAP_CHOWN"} }},
		{name: "16 alice user and group grants", caller: aliceCaller,
			grants: aliceNR + "\n[groups]\nnetadm = [\"CAP_NET_BIND_SERVICE\"]\n",
			flags:  capFlags{AddCaps: []string{"cap_net_bind_service,NET_RAW"}}, want: fixed(0x2400), nnp: true},
		{name: "17 alice add then drop", caller: aliceCaller, grants: aliceNR,
			flags: capFlags{AddCaps: []string{"net_raw"}, DropCaps: []string{"net_raw"}}, want: fixed(0), nnp: true},
		{name: "18 alice unknown names", caller: aliceCaller, grants: empty,
			flags: capFlags{AddCaps: []string{"foo"}, DropCaps: []string{"bar"}}, want: fixed(0), nnp: true,
			warn: func(capSet) []string {
				return []string{"won't add unknown capability: CAP_FOO", "won't drop unknown capability: CAP_BAR"}
			}},
		{name: "19 alice keep-privs", caller: aliceCaller, grants: aliceNR, flags: capFlags{KeepPrivs: true},
			err: "--keep-privs requires root privileges"},
		{name: "19b alice keep-privs with no-privs", caller: aliceCaller, flags: capFlags{KeepPrivs: true, NoPrivs: true},
			err: "--keep-privs requires root privileges"},
		{name: "20 alice add all", caller: aliceCaller, grants: aliceNR, flags: capFlags{AddCaps: []string{"all"}},
			want: fixed(netRaw), nnp: true,
			warn: func(f capSet) []string {
				return []string{"not authorized to add capability: " + (f &^ netRaw).String()}
			}},
		{name: "21 alice no-privs add", caller: aliceCaller, grants: aliceNR,
			flags: capFlags{NoPrivs: true, AddCaps: []string{"net_raw"}}, want: fixed(netRaw), nnp: true},

		// Beyond the table.
		{name: "root file mode leaves withheld grants out silently", caller: rootCaller,
			cfg:    config{rootDefaultCapabilities: "file"},
			grants: "[users]\nroot = [\"CAP_NET_RAW\", \"CAP_SYS_RESOURCE\"]\n[groups]\nroot = [\"CAP_CHOWN\"]\n",
			want:   func(f capSet) capSet { return (netRaw | 1<<24 | 1) & f }},
		{name: "root file mode keep-privs gives FULL", caller: rootCaller, cfg: config{rootDefaultCapabilities: "file"},
			flags: capFlags{KeepPrivs: true}, want: same},
		{name: "root no-privs then add", caller: rootCaller, flags: capFlags{NoPrivs: true, AddCaps: []string{"chown"}},
			want: fixed(1), nnp: true},
		{name: "root repeated flags accumulate, drop beats add", caller: rootCaller, cfg: config{rootDefaultCapabilities: "no"},
			flags: capFlags{AddCaps: []string{"chown", "net_raw", "kill"}, DropCaps: []string{"kill", "all,foo"}},
			want:  fixed(0), nnp: true,
			warn: func(capSet) []string { return []string{"won't drop unknown capability: CAP_FOO"} }},
		{name: "root warning order", caller: rootCaller, cfg: config{rootDefaultCapabilities: "no"},
			flags: capFlags{AddCaps: []string{"foo,sys_resource,baz,foo"}, DropCaps: []string{"bar"}},
			want:  func(f capSet) capSet { return f & (1 << 24) }, nnp: true,
			warn: func(f capSet) []string {
				w := []string{"won't add unknown capability: CAP_FOO", "won't add unknown capability: CAP_BAZ",
					"won't drop unknown capability: CAP_BAR"}
				if !f.has(24) {
					w = append(w, "capability not available on this host: CAP_SYS_RESOURCE")
				}
				return w
			}},
		{name: "alice granted but withheld by the host", caller: aliceCaller,
			grants: "[users]\nalice = [\"CAP_SYS_RESOURCE\", \"CAP_NET_RAW\"]\n",
			flags:  capFlags{AddCaps: []string{"sys_resource,net_raw,chown,foo"}, DropCaps: []string{"bar"}},
			want:   func(f capSet) capSet { return (netRaw | 1<<24) & f }, nnp: true,
			warn: func(f capSet) []string {
				w := []string{"won't add unknown capability: CAP_FOO", "won't drop unknown capability: CAP_BAR",
					"not authorized to add capability: CAP_CHOWN"}
				if !f.has(24) {
					w = append(w, "capability not available on this host: CAP_SYS_RESOURCE")
				}
				return w
			}},
		{name: "alice ungranted and withheld is only unauthorized", caller: aliceCaller, grants: empty,
			flags: capFlags{AddCaps: []string{"sys_resource"}}, want: fixed(0), nnp: true,
			warn: func(capSet) []string { return []string{"not authorized to add capability: CAP_SYS_RESOURCE"} }},
		{name: "alice primary group counts", caller: aliceCaller, grants: "[groups]\nalice = [\"CAP_KILL\"]\n",
			flags: capFlags{AddCaps: []string{"kill"}}, want: fixed(1 << 5), nnp: true},
		{name: "alice grants without a request give nothing", caller: aliceCaller, grants: aliceNR, want: fixed(0), nnp: true},
		{name: "alice strict with everything granted runs", caller: aliceCaller, cfg: config{strictCapabilities: true},
			grants: aliceNR, flags: capFlags{AddCaps: []string{"net_raw"}}, want: fixed(netRaw), nnp: true},
		{name: "bad root_default_capabilities", caller: rootCaller, cfg: config{rootDefaultCapabilities: "some"},
			err: `root_default_capabilities must be "full", "file" or "no", not "some"`},
		{name: "bad root_default_capabilities with no-privs", caller: rootCaller,
			cfg: config{rootDefaultCapabilities: "No"}, flags: capFlags{NoPrivs: true},
			err: `root_default_capabilities must be "full", "file" or "no", not "No"`},
	}
	for _, host := range []capSet{exampleHost, fullHost} {
		for _, r := range rows {
			t.Run(host.hex()+"/"+r.name, func(t *testing.T) {
				cfg := r.cfg
				g := mustParseGrants(t, r.grants)
				in := capPolicyInput{
					Caller: r.caller, Config: &cfg, Flags: r.flags, Last: 40, Host: host,
					Grants: func() (capSet, error) { return grantsFor(r.caller.UID, r.caller.gids(), g, testNames()) },
				}
				d, err := decideCaps(in)
				if r.err != "" {
					if err == nil || err.Error() != r.err {
						t.Fatalf("error = %v, want %q", err, r.err)
					}
					if classOf(err) != ePolicy && classOf(err) != eConfig {
						t.Errorf("class = %s", classOf(err))
					}
					return
				}
				if err != nil {
					t.Fatal(err)
				}
				if want := r.want(host); d.Set != want {
					t.Errorf("set = %s, want %s", d.Set.hex(), want.hex())
				}
				if d.NoNewPrivs != r.nnp {
					t.Errorf("NNP = %v, want %v", d.NoNewPrivs, r.nnp)
				}
				var wantWarn []string
				if r.warn != nil {
					wantWarn = r.warn(host)
				}
				if !reflect.DeepEqual(d.Warnings, wantWarn) {
					t.Errorf("warnings = %q, want %q", d.Warnings, wantWarn)
				}
			})
		}
	}
}

// The spec's example values for the host that lacks CAP_SYS_RESOURCE.
func TestPolicyExampleHostValues(t *testing.T) {
	d, err := decideCaps(capPolicyInput{Caller: rootCaller, Config: &config{}, Last: 40, Host: exampleHost})
	if err != nil || d.Set.hex() != "000001fffeffffff" {
		t.Fatalf("row 1: %s, %v", d.Set.hex(), err)
	}
	d, _ = decideCaps(capPolicyInput{Caller: rootCaller, Config: &config{}, Last: 40, Host: exampleHost,
		Flags: capFlags{DropCaps: []string{"CAP_NET_RAW"}}})
	if d.Set.hex() != "000001fffeffdfff" {
		t.Fatalf("row 2: %s", d.Set.hex())
	}
	g := mustParseGrants(t, "[users]\nalice = [\"CAP_NET_RAW\"]\n")
	d, _ = decideCaps(capPolicyInput{Caller: aliceCaller, Config: &config{}, Last: 40, Host: exampleHost,
		Flags:  capFlags{AddCaps: []string{"all"}},
		Grants: func() (capSet, error) { return grantsFor(1000, aliceCaller.gids(), g, testNames()) }})
	if len(d.Warnings) != 1 {
		t.Fatalf("row 20 warnings %q", d.Warnings)
	}
	names := strings.Split(strings.TrimPrefix(d.Warnings[0], "not authorized to add capability: "), ",")
	if len(names) != 39 || names[0] != "CAP_CHOWN" || strings.Contains(d.Warnings[0], "CAP_SYS_RESOURCE") ||
		strings.Contains(d.Warnings[0], "CAP_NET_RAW") ||
		!strings.Contains(d.Warnings[0], "CAP_NET_ADMIN,CAP_IPC_LOCK") {
		t.Fatalf("row 20 warning names %d: %q", len(names), d.Warnings[0])
	}
}

// The grant file is read for every non-root run and for root only in
// "file" mode; its errors then stop the run and otherwise never matter.
func TestPolicyReadsGrantsOnlyWhenNeeded(t *testing.T) {
	broken := failf(eConfig, "capability.toml: must be owned by root")
	for _, tc := range []struct {
		name   string
		caller capCaller
		cfg    config
		flags  capFlags
		reads  bool
	}{
		{"root full", rootCaller, config{rootDefaultCapabilities: "full"}, capFlags{AddCaps: []string{"net_raw"}}, false},
		{"root default", rootCaller, config{}, capFlags{}, false},
		{"root no", rootCaller, config{rootDefaultCapabilities: "no"}, capFlags{AddCaps: []string{"net_raw"}}, false},
		{"root file keep-privs", rootCaller, config{rootDefaultCapabilities: "file"}, capFlags{KeepPrivs: true}, false},
		{"root file no-privs", rootCaller, config{rootDefaultCapabilities: "file"}, capFlags{NoPrivs: true}, false},
		{"root file", rootCaller, config{rootDefaultCapabilities: "file"}, capFlags{}, true},
		{"user without flags", aliceCaller, config{}, capFlags{}, true},
		{"user no-privs", aliceCaller, config{}, capFlags{NoPrivs: true}, true},
		{"user keep-privs is refused first", aliceCaller, config{}, capFlags{KeepPrivs: true}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			called := false
			cfg := tc.cfg
			_, err := decideCaps(capPolicyInput{Caller: tc.caller, Config: &cfg, Flags: tc.flags, Last: 40, Host: fullHost,
				Grants: func() (capSet, error) { called = true; return 0, broken }})
			if called != tc.reads {
				t.Fatalf("grant file read = %v, want %v", called, tc.reads)
			}
			if tc.reads && !errors.Is(err, broken) {
				t.Fatalf("error = %v, want the grant-file error", err)
			}
			if !tc.reads && tc.flags.KeepPrivs && tc.caller.UID != 0 {
				if err == nil || classOf(err) != ePolicy {
					t.Fatalf("error = %v", err)
				}
			} else if !tc.reads && err != nil {
				t.Fatalf("unexpected error %v", err)
			}
		})
	}
}

// FULL, `all` and every set stay within 0..L and H, also for a kernel with
// capabilities beyond the 41 named ones.
func TestPolicyNewerKernel(t *testing.T) {
	host := capsUpTo(42) &^ (1 << 24)
	d, err := decideCaps(capPolicyInput{Caller: rootCaller, Config: &config{}, Last: 42, Host: host | 1<<50})
	if err != nil || d.Set != host {
		t.Fatalf("root FULL = %s, %v", d.Set.hex(), err)
	}
	d, _ = decideCaps(capPolicyInput{Caller: aliceCaller, Config: &config{}, Last: 42, Host: host,
		Flags:  capFlags{AddCaps: []string{"all"}},
		Grants: func() (capSet, error) { return capsUpTo(40), nil }})
	if d.Set != capsUpTo(40)&host || !reflect.DeepEqual(d.Warnings, []string{"not authorized to add capability: CAP_41,CAP_42"}) {
		t.Fatalf("user all: %s %q", d.Set.hex(), d.Warnings)
	}
	// On an older kernel (L = 39) CAP_CHECKPOINT_RESTORE is known but not available.
	d, _ = decideCaps(capPolicyInput{Caller: rootCaller, Config: &config{rootDefaultCapabilities: "no"}, Last: 39,
		Host: capsUpTo(39), Flags: capFlags{AddCaps: []string{"checkpoint_restore,bpf"}}})
	if d.Set != 1<<39 || !reflect.DeepEqual(d.Warnings, []string{"capability not available on this host: CAP_CHECKPOINT_RESTORE"}) {
		t.Fatalf("old kernel: %s %q", d.Set.hex(), d.Warnings)
	}
	if _, err := decideCaps(capPolicyInput{Caller: rootCaller, Config: &config{}, Last: 64}); classOf(err) != eInternal {
		t.Fatalf("L = 64 accepted: %v", err)
	}
}

// The production Grants: the grant file through the reader, then grantsFor
// over the real gid and the supplementary groups.
func TestCallerGrantsFunc(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, grantFileName)
	os.WriteFile(path, []byte("[users]\nalice = [\"CAP_NET_RAW\"]\n[groups]\nalice = [\"CAP_KILL\"]\nnetadm = [\"CAP_CHOWN\"]\n"), 0o644)
	g, err := callerGrantsFunc(aliceCaller, path, plainReader, testNames())()
	if err != nil || g != netRaw|1<<5|1 {
		t.Fatalf("%s %v", g.hex(), err)
	}
	g, err = callerGrantsFunc(capCaller{UID: 1000, GID: 1001}, path, plainReader, testNames())()
	if err != nil || g != netRaw|1 {
		t.Fatalf("%s %v", g.hex(), err)
	}
	os.WriteFile(path, []byte("[users]\nalice = [\"CAP_NET_RAW\"\n"), 0o644)
	if _, err := callerGrantsFunc(aliceCaller, path, plainReader, testNames())(); err == nil ||
		err.Error() != path+":2: unterminated array" || !strings.HasPrefix(errorLine(err), "FATAL: ") {
		t.Fatalf("malformed: %v", err)
	}
}
