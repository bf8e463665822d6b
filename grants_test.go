package main

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	toml "github.com/pelletier/go-toml/v2"
)

// plainReader reads without the R5 ownership walk (config.go's job, tested
// there), so these tests work in any temporary directory.
func plainReader(path string, max int64) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	if int64(len(b)) > max {
		return nil, failf(eConfig, "%s: larger than 1 MiB", path)
	}
	return b, nil
}

// tomlOracle decodes with go-toml, an independent TOML 1.0 parser, into the
// same shape (empty entries dropped) so the two can be compared.
func tomlOracle(data []byte) (*grantFile, error) {
	var doc map[string]any
	if err := toml.Unmarshal(data, &doc); err != nil {
		return nil, err
	}
	g := newGrantFile()
	for table, v := range doc {
		dst := map[string]map[string]capSet{"users": g.Users, "groups": g.Groups}[table]
		m, ok := v.(map[string]any)
		if dst == nil || !ok {
			return nil, fmt.Errorf("oracle: unexpected %q", table)
		}
		for name, arr := range m {
			items, ok := arr.([]any)
			if !ok {
				return nil, fmt.Errorf("oracle: %q not an array", name)
			}
			var set capSet
			for _, it := range items {
				s, ok := it.(string)
				c, known := capByName(normaliseCapName(s))
				if !ok || !known {
					return nil, fmt.Errorf("oracle: bad item %v", it)
				}
				set |= capBit(c)
			}
			if set != 0 {
				dst[name] = set
			}
		}
	}
	return g, nil
}

func TestParseGrantsValid(t *testing.T) {
	const doc = `# minirun grants
[users]   # people
alice = ["CAP_CHOWN", 'cap_net_raw',]
"bob" = [ ]
'carol x' = [
  "kill", # signals
  "KILL",

  # nothing else
]
"d\u00e9" = ["chown"]
"tab\there" = ["chown"]
[ groups ]
netadm = ["CAP_NET_BIND_SERVICE"]
	hpc-2_x	=	["net_admin"]
`
	want := &grantFile{
		Users: map[string]capSet{"alice": 1 | netRaw, "carol x": 1 << 5, "dé": 1, "tab\there": 1},
		Groups: map[string]capSet{
			"netadm": 1 << 10, "hpc-2_x": 1 << 12,
		},
	}
	for _, variant := range []string{doc, strings.ReplaceAll(doc, "\n", "\r\n"), strings.TrimSuffix(doc, "\n")} {
		g, err := parseGrants("G", []byte(variant))
		if err != nil {
			t.Fatalf("%q: %v", variant, err)
		}
		if !reflect.DeepEqual(g, want) {
			t.Fatalf("got %+v, want %+v", g, want)
		}
		if o, err := tomlOracle([]byte(variant)); err != nil || !reflect.DeepEqual(o, want) {
			t.Fatalf("go-toml reads %+v, %v", o, err)
		}
	}
	for _, emptyDoc := range []string{"", "\n\n", "# only a comment\n", "[users]\n", "[users]\n[groups]\n", "  \t\n"} {
		g, err := parseGrants("G", []byte(emptyDoc))
		if err != nil || g.entries() != 0 {
			t.Fatalf("%q: %+v %v", emptyDoc, g, err)
		}
	}
}

// Every malformed file is refused with the file, the line and the reason.
func TestParseGrantsErrors(t *testing.T) {
	long := strings.Repeat("a", 257)
	var many strings.Builder
	many.WriteString("[users]\n")
	for i := 0; i <= maxGrantEntries; i++ {
		fmt.Fprintf(&many, "u%d = [\"chown\"]\n", i)
	}
	for _, tc := range []struct{ text, want string }{
		// Acceptance row 24 and its variant.
		{"[users]\nalice = [\"CAP_NET_RAW\"\n", "G:2: unterminated array"},
		{"[users]\nalice = [\"CAP_NET_RAW\"", "G:2: unterminated array"},
		{"[users]\nalice = [\"CAP_FOO\"]\n", "G:2: unknown capability: CAP_FOO"},
		{"[users]\nalice = [\n\"chown\",\n\"foo\"]\n", "G:4: unknown capability: CAP_FOO"},
		{"[users]\nalice = [\"\"]\n", "G:2: unknown capability: CAP_"},
		{"[users]\nalice = [\"all\"]\n", `G:2: "all" is not allowed in the grant file; list the capabilities`},
		{"[users]\nalice = [\" CAP_NET_RAW\"]\n", "G:2: unknown capability: CAP_ CAP_NET_RAW"},
		{"[users]\nalice = [\"CAP_NET_RAW,CAP_CHOWN\"]\n", "G:2: unknown capability: CAP_NET_RAW,CAP_CHOWN"},
		{"[users]\na = []\na = [\"chown\"]\n", "G:3: duplicate key a in [users]"},
		{"[users]\na = []\n\"a\" = []\n", "G:3: duplicate key a in [users]"},
		{"[users]\n[groups]\n[users]\n", "G:3: duplicate table [users]"},
		{"[admins]\n", "G:1: unknown table [admins]: only [users] and [groups] are allowed"},
		{"[Users]\n", "G:1: unknown table [Users]: only [users] and [groups] are allowed"},
		{"[users.alice]\n", "G:1: dotted keys are not allowed"},
		{"[users]\nalice.x = []\n", "G:2: dotted keys are not allowed"},
		{"alice = []\n", "G:1: key alice outside [users] or [groups]"},
		{"users = {}\n", "G:1: key users outside [users] or [groups]"},
		{"version = 1\n", "G:1: key version outside [users] or [groups]"},
		{"[users]\nuid = -1\n", "G:2: value of uid must be an array of capability names"},
		{"[users]\nalice = \"CAP_NET_RAW\"\n", "G:2: value of alice must be an array of capability names"},
		{"[users]\nalice = {a = 1}\n", "G:2: value of alice must be an array of capability names"},
		{"[users]\nalice = \n", "G:2: value of alice must be an array of capability names"},
		{"[users]\nalice = [1]\n", "G:2: array elements must be capability names in quotes"},
		{"[users]\nalice = [[\"chown\"]]\n", "G:2: array elements must be capability names in quotes"},
		{"[users]\nalice = " + strings.Repeat("[", 10000) + "\n", "G:2: array elements must be capability names in quotes"},
		{"[users]\nalice = [\"chown\" \"kill\"]\n", "G:2: expected ',' or ']' in the array opened on line 2"},
		{"[users]\nalice = [\"chown\",,]\n", "G:2: array elements must be capability names in quotes"},
		{"[users]\nalice = [\"chown\"\nbob = []\n", "G:3: expected ',' or ']' in the array opened on line 2"},
		{"[[users]]\n", "G:1: arrays of tables are not allowed"},
		{"[users\n", "G:1: expected ']' after the table name"},
		{"[]\n", "G:1: expected a key"},
		{"[users] x\n", "G:1: unexpected text after the value"},
		{"[users]\nalice = [] x\n", "G:2: unexpected text after the value"},
		{"[users]\nalice = [] bob = []\n", "G:2: unexpected text after the value"},
		{"[users]\nalice [\"chown\"]\n", "G:2: expected '=' after the key"},
		{"[users]\n= []\n", "G:2: expected a key"},
		{"[users]\nal ice = []\n", "G:2: expected '=' after the key"},
		{"[users]\nalice = [\"chown]\n", "G:2: unterminated string"},
		{"[users]\nalice = ['chown]\n", "G:2: unterminated string"},
		{"[users]\nalice = [\"\"\"chown\"\"\"]\n", "G:2: multi-line strings are not supported"},
		{"[users]\nalice = ['''chown''']\n", "G:2: multi-line strings are not supported"},
		{"[users]\n\"a\\x41\" = []\n", "G:2: invalid escape"},
		{"[users]\n\"a\\e\" = []\n", "G:2: invalid escape"},
		{"[users]\n\"a\\u00\" = []\n", "G:2: invalid escape"},
		{"[users]\n\"a\\u+041\" = []\n", "G:2: invalid escape"},
		{"[users]\n\"a\\uD800\" = []\n", "G:2: escape is not a Unicode scalar value"},
		{"[users]\n\"a\\U00110000\" = []\n", "G:2: escape is not a Unicode scalar value"},
		{"[users]\n\"a\x00\" = []\n", "G:2: control character in string"},
		{"[users]\n'a\x7f' = []\n", "G:2: control character in string"},
		{"[users]\nalice = [] # \x00\n", "G:2: control character in comment"},
		{"[users]\n\x00\n", "G:2: expected a key"},
		{"[users]\r\r\n", "G:1: unexpected text after the value"},
		{"\r[users]\n", "G:1: carriage return without line feed"},
		{"\xef\xbb\xbf[users]\n", "G:1: byte order mark not allowed"},
		{"[users]\n\nalice = [\"\xff\"]\n", "G:3: invalid UTF-8"},
		{"[users]\n" + long + " = []\n", "G:2: key longer than 256 bytes"},
		{"[users]\n\"" + long + "\" = []\n", "G:2: string longer than 256 bytes"},
		{"[users]\n'" + long + "' = []\n", "G:2: string longer than 256 bytes"},
		{"[users]\na = [\"" + long + "\"]\n", "G:2: string longer than 256 bytes"},
		{"[users]\na = [" + strings.Repeat("\"chown\",", 65) + "]\n", "G:2: more than 64 items in one array"},
		{many.String(), fmt.Sprintf("G:%d: more than 1024 entries", maxGrantEntries+2)},
		{strings.Repeat("#", maxGrantFileSize+1), "G: larger than 1 MiB"},
	} {
		g, err := parseGrants("G", []byte(tc.text))
		if err == nil {
			t.Errorf("%.60q accepted: %+v", tc.text, g)
			continue
		}
		if err.Error() != tc.want || classOf(err) != eConfig {
			t.Errorf("%.60q: error %q (%s), want %q", tc.text, err, classOf(err), tc.want)
		}
		if !strings.HasPrefix(errorLine(err), "FATAL: G") {
			t.Errorf("%.60q: printed as %q", tc.text, errorLine(err))
		}
	}
	// 64 items (with duplicates) and 1024 entries are still fine.
	if _, err := parseGrants("G", []byte("[users]\na = ["+strings.Repeat("\"chown\",", 64)+"]\n")); err != nil {
		t.Error(err)
	}
	lines := strings.Split(many.String(), "\n")
	if _, err := parseGrants("G", []byte(strings.Join(lines[:len(lines)-2], "\n"))); err != nil {
		t.Error(err)
	}
}

func TestGrantsCanonical(t *testing.T) {
	g, err := parseGrants("G", []byte(`[groups]
zeta = ["net_raw", "chown"]
netadm = ["CAP_NET_BIND_SERVICE"]
[users]
"bob smith" = ['kill']
alice = ["cap_net_raw", "CAP_CHOWN", "chown"]
"quo\"te\\\u0001\u007f\n" = ["kill"]
empty = []
`))
	if err != nil {
		t.Fatal(err)
	}
	want := `[users]
alice = ["CAP_CHOWN", "CAP_NET_RAW"]
"bob smith" = ["CAP_KILL"]
"quo\"te\\\u0001\u007F\n" = ["CAP_KILL"]

[groups]
netadm = ["CAP_NET_BIND_SERVICE"]
zeta = ["CAP_CHOWN", "CAP_NET_RAW"]
`
	if got := string(g.canonical()); got != want {
		t.Fatalf("canonical:\n%s\nwant:\n%s", got, want)
	}
	again, err := parseGrants("G", g.canonical())
	if err != nil || !reflect.DeepEqual(again, g) {
		t.Fatalf("canonical re-parses as %+v, %v", again, err)
	}
	for _, tc := range []struct {
		g    *grantFile
		want string
	}{
		{newGrantFile(), ""},
		{&grantFile{Users: map[string]capSet{"alice": netRaw}}, "[users]\nalice = [\"CAP_NET_RAW\"]\n"},
		{&grantFile{Groups: map[string]capSet{"g": 1, "x": 0}}, "[groups]\ng = [\"CAP_CHOWN\"]\n"},
	} {
		if got := string(tc.g.canonical()); got != tc.want {
			t.Errorf("canonical %q, want %q", got, tc.want)
		}
	}
}

func TestLoadGrants(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, grantFileName)
	g, err := loadGrants(path, plainReader)
	if err != nil || g.entries() != 0 {
		t.Fatalf("missing file: %+v %v", g, err)
	}
	insecure := failf(eConfig, "%s: must be owned by root", path)
	if _, err := loadGrants(path, func(string, int64) ([]byte, error) { return nil, insecure }); err != insecure {
		t.Fatalf("trust error not passed through: %v", err)
	}
	_, err = loadGrants(path, func(string, int64) ([]byte, error) { return nil, syscall.EIO })
	if classOf(err) != eConfig || !errors.Is(err, syscall.EIO) {
		t.Fatalf("read error: %v", err)
	}
	os.WriteFile(path, []byte("[users]\nalice = [\"CAP_FOO\"]\n"), 0o644)
	if _, err := loadGrants(path, plainReader); err == nil || err.Error() != path+":2: unknown capability: CAP_FOO" {
		t.Fatalf("err = %v", err)
	}
	var gotMax int64
	loadGrants(path, func(p string, max int64) ([]byte, error) { gotMax = max; return nil, fs.ErrNotExist })
	if gotMax != 1<<20 {
		t.Fatalf("grant file size cap %d", gotMax)
	}
}

func TestNameLookupFiles(t *testing.T) {
	passwd := "# comment alice:x:1000\n" +
		"+alice::1000:1000::/:/bin/sh\n" +
		"-bob::1001:1001::/:/bin/sh\n" +
		"broken line\n" +
		"alice:x:notanumber:1000::/:/bin/sh\n" +
		"alice:x:1000:1000::/home/alice\n" + // 6 fields
		"alice:x:1000:1000::/home/alice:/bin/sh\r\n" +
		"alias:x:1000:1000::/home/alice:/bin/sh\n" +
		"root:x:0:0::/root:/bin/sh\n" +
		"-x:x:5:5::/:/bin/sh\n" +
		"neg:x:-7:0::/:/bin/sh\n" +
		"nobody:x:4294967295:0::/:/bin/sh\n"
	group := "root:x:0:\nnetadm:x:1001:alice\n+nis:x:1002:\nnetadm2:x:1001:\n"
	files := map[string]string{"/p": passwd, "/g": group}
	reads := 0
	n := &nameLookup{passwdPath: "/p", groupPath: "/g",
		read: func(path string, max int64) ([]byte, error) {
			reads++
			if max != 16<<20 {
				t.Errorf("account file cap %d", max)
			}
			return []byte(files[path]), nil
		}}
	allOnes := ^uint32(0)
	uidMinus1 := int(allOnes) // (uid_t)-1; -1 where int has 32 bits
	for _, tc := range []struct {
		id    int
		group bool
		name  string
		found bool
	}{
		{1000, false, "alice", true}, {0, false, "root", true}, {1001, false, "", false}, {5, false, "", false},
		{-7, false, "", false}, {uidMinus1, false, "", false}, {3000, false, "", false},
		{1001, true, "netadm", true}, {1002, true, "", false}, {0, true, "root", true},
	} {
		var name string
		var found bool
		var err error
		if tc.group {
			name, found, err = n.groupName(tc.id)
		} else {
			name, found, err = n.userName(tc.id)
		}
		if err != nil || name != tc.name || found != tc.found {
			t.Errorf("id %d group=%v: %q %v %v", tc.id, tc.group, name, found, err)
		}
	}
	for _, tc := range []struct {
		name   string
		group  bool
		exists bool
	}{
		{"alice", false, true}, {"alias", false, true}, {"bob", false, false}, {"+alice", false, false},
		{"netadm", true, true}, {"nis", true, false}, {"alice", true, false}, {"", false, false},
	} {
		var ok bool
		var err error
		if tc.group {
			ok, err = n.groupExists(tc.name)
		} else {
			ok, err = n.userExists(tc.name)
		}
		if err != nil || ok != tc.exists {
			t.Errorf("exists(%q, group=%v) = %v %v", tc.name, tc.group, ok, err)
		}
	}
	if reads != 2 {
		t.Errorf("account files read %d times, want once each", reads)
	}
}

func TestNameLookupGetent(t *testing.T) {
	type call struct{ db, key string }
	var calls []call
	answers := map[call]struct {
		out    string
		status int
		err    error
	}{
		{"passwd", "3000"}:   {"ldapu:*:3000:3000:LDAP:/home/ldapu:/bin/sh\n", 0, nil},
		{"passwd", "3001"}:   {"", 2, nil},
		{"passwd", "3002"}:   {"a:*:3002:1::/:/bin/sh\nb:*:3002:1::/:/bin/sh\n", 0, nil},
		{"passwd", "3003"}:   {"other:*:3999:1::/:/bin/sh\n", 0, nil},
		{"passwd", "3004"}:   {"", 1, nil},
		{"passwd", "3005"}:   {"", 0, errors.New("timed out")},
		{"passwd", "3006"}:   {"bad:line\n", 0, nil},
		{"group", "4000"}:    {"ldapg:*:4000:ldapu\n", 0, nil},
		{"group", "ldapg"}:   {"ldapg:*:4000:ldapu\n", 0, nil},
		{"group", "nope"}:    {"", 2, nil},
		{"passwd", "ldapu"}:  {"ldapu:*:3000:3000:LDAP:/home/ldapu:/bin/sh", 0, nil},
		{"passwd", "liar"}:   {"root:x:0:0::/:/bin/sh\n", 0, nil},
		{"passwd", "broken"}: {"", 3, nil},
	}
	n := &nameLookup{passwdPath: "/p", groupPath: "/g",
		read: func(string, int64) ([]byte, error) { return nil, fs.ErrNotExist }, // no files: NSS only
		getent: func(db, key string) ([]byte, int, error) {
			calls = append(calls, call{db, key})
			a, ok := answers[call{db, key}]
			if !ok {
				t.Fatalf("unexpected getent %s %q", db, key)
			}
			return []byte(a.out), a.status, a.err
		}}
	for _, tc := range []struct {
		uid        int
		name       string
		found      bool
		unresolved bool
	}{
		{3000, "ldapu", true, false}, {3001, "", false, false}, {3002, "", false, true},
		{3003, "", false, true}, {3004, "", false, true}, {3005, "", false, true}, {3006, "", false, true},
	} {
		name, found, err := n.userName(tc.uid)
		if name != tc.name || found != tc.found || errors.Is(err, errNameUnresolved) != tc.unresolved {
			t.Errorf("uid %d: %q %v %v", tc.uid, name, found, err)
		}
	}
	if name, found, err := n.groupName(4000); name != "ldapg" || !found || err != nil {
		t.Errorf("gid 4000: %q %v %v", name, found, err)
	}
	for _, tc := range []struct {
		name       string
		group      bool
		exists     bool
		unresolved bool
	}{
		{"ldapg", true, true, false}, {"nope", true, false, false}, {"ldapu", false, true, false},
		{"liar", false, false, true}, {"broken", false, false, true},
	} {
		var ok bool
		var err error
		if tc.group {
			ok, err = n.groupExists(tc.name)
		} else {
			ok, err = n.userExists(tc.name)
		}
		if ok != tc.exists || errors.Is(err, errNameUnresolved) != tc.unresolved {
			t.Errorf("exists(%q) = %v %v", tc.name, ok, err)
		}
	}
	// Names that cannot be safely passed to getent never reach it.
	before := len(calls)
	for _, bad := range []string{"", "-s", "--help", "a b", "a:b", "a\tb", "a\nb", "a\x00b", "a\u00a0b", "a\u2028b",
		strings.Repeat("a", 257), "\xff"} {
		if ok, err := n.userExists(bad); ok || err != nil {
			t.Errorf("userExists(%q) = %v %v", bad, ok, err)
		}
		if ok, err := n.groupExists(bad); ok || err != nil {
			t.Errorf("groupExists(%q) = %v %v", bad, ok, err)
		}
	}
	if len(calls) != before {
		t.Errorf("getent called for invalid names: %v", calls[before:])
	}
}

func TestGrantsFor(t *testing.T) {
	g := mustParseGrants(t, `[users]
alice = ["CAP_NET_RAW"]
root = ["CAP_SYS_ADMIN"]
[groups]
netadm = ["CAP_NET_BIND_SERVICE"]
alice = ["CAP_KILL"]
root = ["CAP_CHOWN"]
`)
	for _, tc := range []struct {
		uid  int
		gids []int
		want capSet
	}{
		{1000, []int{1000, 1001}, netRaw | 1<<10 | 1<<5},
		{1000, []int{1000}, netRaw | 1<<5},
		{1000, nil, netRaw}, // setpriv --clear-groups and no primary group: user grant only
		{1000, []int{1001, 1001}, netRaw | 1<<10},
		{3000, []int{3000}, 0}, // no passwd entry, no getent: nothing
		{0, []int{0}, 1<<21 | 1},
	} {
		got, err := grantsFor(tc.uid, tc.gids, g, testNames())
		if err != nil || got != tc.want {
			t.Errorf("grantsFor(%d, %v) = %s %v, want %s", tc.uid, tc.gids, got.hex(), err, tc.want.hex())
		}
	}
	// An empty grant file needs no lookups at all.
	none := &nameLookup{read: func(string, int64) ([]byte, error) { t.Fatal("lookup for empty grants"); return nil, nil }}
	if got, err := grantsFor(1000, []int{1000}, newGrantFile(), none); got != 0 || err != nil {
		t.Fatal(got, err)
	}
	// Unresolvable ids are skipped (fail closed); untrustworthy files stop.
	flaky := testNames()
	flaky.getent = func(db, key string) ([]byte, int, error) { return nil, 0, errors.New("ldap down") }
	if got, err := grantsFor(1000, []int{1000, 5000, 1001}, g, flaky); got != netRaw|1<<10|1<<5 || err != nil {
		t.Errorf("unresolvable gid: %s %v", got.hex(), err)
	}
	insecure := failf(eConfig, "/etc/group: must not be writable by group or others")
	bad := testNames()
	bad.read = func(path string, max int64) ([]byte, error) {
		if path == "/test/group" {
			return nil, insecure
		}
		return testNames().read(path, max)
	}
	if _, err := grantsFor(1000, []int{1000}, g, bad); err != insecure {
		t.Errorf("insecure /etc/group: %v", err)
	}
}

// newGetent runs the program at getentProgram by absolute path with a clean
// environment, /dev/null stdin, the given credentials, and bounded output
// and time. A shell script stands in for getent.
func TestNewGetent(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to run the child with other credentials (CI runs as root)")
	}
	dir := t.TempDir()
	os.Chmod(dir, 0o755) // the child runs as nobody and must reach the script
	os.Chmod(filepath.Dir(dir), 0o755)
	script := filepath.Join(dir, "getent")
	os.WriteFile(script, []byte(`#!/bin/sh
case "$2" in
env) env | grep -v -e '^PWD=' -e '^SHLVL=' -e '^_=' | sort ;;
args) printf '%s|' "$0" "$@" ;;
id) echo "$(id -u):$(id -g):$(id -G)" ;;
stdin) readlink /proc/self/fd/0 ;;
stderr) echo noise >&2; echo out ;;
missing) exit 2 ;;
fail) exit 1 ;;
big) head -c 70000 /dev/zero ;;
slow) sleep 10 ;;
esac
`), 0o755)
	oldPath, oldTimeout := getentProgram, getentTimeout
	getentProgram, getentTimeout = script, 500*time.Millisecond
	defer func() { getentProgram, getentTimeout = oldPath, oldTimeout }()
	t.Setenv("LD_PRELOAD", "/evil.so")
	t.Setenv("GCONV_PATH", "/evil")

	run := newGetent(&syscall.Credential{Uid: 65534, Gid: 65534, Groups: []uint32{}})
	for _, tc := range []struct {
		key, out string
		status   int
		err      string
	}{
		{"env", "LC_ALL=C\nPATH=/usr/sbin:/usr/bin:/sbin:/bin\n", 0, ""}, // PWD etc. come from sh itself
		{"args", script + "|passwd|args|", 0, ""},
		{"id", "65534:65534:65534\n", 0, ""},
		{"stdin", "/dev/null\n", 0, ""},
		{"stderr", "out\n", 0, ""},
		{"missing", "", 2, ""},
		{"fail", "", 1, ""},
		{"big", "", 0, "output larger than 65536 bytes"},
		{"slow", "", 0, "timed out"},
	} {
		start := time.Now()
		out, status, err := run("passwd", tc.key)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%s: err %v, want %q", tc.key, err, tc.err)
			}
		} else if err != nil || string(out) != tc.out || status != tc.status {
			t.Errorf("%s: %q %d %v, want %q %d", tc.key, out, status, err, tc.out, tc.status)
		}
		if d := time.Since(start); d > 3*time.Second {
			t.Errorf("%s took %s", tc.key, d)
		}
	}
	// The real getent, through the lookup, for an account that exists.
	getentProgram = oldPath
	if _, err := os.Stat(getentProgram); err == nil {
		n := &nameLookup{passwdPath: "/nonexistent/passwd", groupPath: "/nonexistent/group", read: plainReader,
			getent: newGetent(nil)}
		if name, found, err := n.userName(0); name != "root" || !found || err != nil {
			t.Errorf("getent passwd 0: %q %v %v", name, found, err)
		}
		if ok, err := n.groupExists("no-such-group-minirun"); ok || err != nil {
			t.Errorf("getent group no-such: %v %v", ok, err)
		}
	}
}

func readGrantsFile(t *testing.T, dir string) *grantFile {
	t.Helper()
	g, err := loadGrants(filepath.Join(dir, grantFileName), plainReader)
	if err != nil {
		t.Fatal(err)
	}
	return g
}

func addUserGrant(dir, user string, c capSet) error {
	return updateGrants(dir, plainReader, func(g *grantFile) (bool, error) {
		if g.Users[user]&c == c {
			return false, nil
		}
		g.Users[user] |= c
		return true, nil
	})
}

// Racing writers, in goroutines, never lose an update, and a reader without
// the lock always sees a complete file.
func TestUpdateGrantsRace(t *testing.T) {
	dir := t.TempDir()
	const writers, rounds = 6, 8
	stop := make(chan struct{})
	readerDone := make(chan error)
	go func() {
		for {
			select {
			case <-stop:
				readerDone <- nil
				return
			default:
			}
			b, err := os.ReadFile(filepath.Join(dir, grantFileName))
			if err == nil {
				if _, err := parseGrants("G", b); err != nil {
					readerDone <- err
					return
				}
			}
		}
	}()
	var wg sync.WaitGroup
	errs := make(chan error, writers*rounds)
	for w := 0; w < writers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for r := 0; r < rounds; r++ {
				errs <- addUserGrant(dir, fmt.Sprintf("user%d", w), capBit(r))
			}
		}(w)
	}
	wg.Wait()
	close(stop)
	if err := <-readerDone; err != nil {
		t.Fatalf("reader saw a broken file: %v", err)
	}
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	g := readGrantsFile(t, dir)
	for w := 0; w < writers; w++ {
		if got := g.Users[fmt.Sprintf("user%d", w)]; got != capsUpTo(rounds-1) {
			t.Errorf("user%d = %s, want %s", w, got.hex(), capsUpTo(rounds-1).hex())
		}
	}
	assertOnlyGrantFiles(t, dir)
}

// The same with separate processes, which is how two admins race.
func TestUpdateGrantsRaceProcesses(t *testing.T) {
	if dir := os.Getenv("MINIRUN_TEST_GRANT_WRITER_DIR"); dir != "" {
		who := os.Getenv("MINIRUN_TEST_GRANT_WRITER")
		for r := 0; r < 20; r++ {
			if err := addUserGrant(dir, who, capBit(r)); err != nil {
				t.Fatal(err)
			}
		}
		return
	}
	dir := t.TempDir()
	var cmds []*exec.Cmd
	for _, who := range []string{"alice", "bob", "carol"} {
		cmd := exec.Command(os.Args[0], "-test.run=^TestUpdateGrantsRaceProcesses$", "-test.count=1")
		cmd.Env = append(os.Environ(), "MINIRUN_TEST_GRANT_WRITER_DIR="+dir, "MINIRUN_TEST_GRANT_WRITER="+who)
		cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		cmds = append(cmds, cmd)
	}
	for _, cmd := range cmds {
		if err := cmd.Wait(); err != nil {
			t.Fatal(err)
		}
	}
	g := readGrantsFile(t, dir)
	for _, who := range []string{"alice", "bob", "carol"} {
		if g.Users[who] != capsUpTo(19) {
			t.Errorf("%s = %s", who, g.Users[who].hex())
		}
	}
}

// assertOnlyGrantFiles checks that no temp file is left behind.
func assertOnlyGrantFiles(t *testing.T, dir string) {
	t.Helper()
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if e.Name() != grantFileName && e.Name() != grantFileName+".lock" {
			t.Errorf("stray file %s", e.Name())
		}
	}
}

func TestUpdateGrantsFileProperties(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("writes root:root files (CI runs as root)")
	}
	dir := t.TempDir()
	old := syscall.Umask(0o077)
	err := addUserGrant(dir, "alice", netRaw)
	syscall.Umask(old)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, grantFileName)
	b, _ := os.ReadFile(path)
	if string(b) != "[users]\nalice = [\"CAP_NET_RAW\"]\n" {
		t.Fatalf("content %q", b)
	}
	st, _ := os.Stat(path)
	sys := st.Sys().(*syscall.Stat_t)
	if st.Mode().Perm() != 0o644 || sys.Uid != 0 || sys.Gid != 0 {
		t.Fatalf("grant file %v uid %d gid %d", st.Mode(), sys.Uid, sys.Gid)
	}
	lst, _ := os.Stat(path + ".lock")
	if lst.Mode().Perm() != 0o600&^0o077 && lst.Mode().Perm() != 0o600 {
		t.Fatalf("lock mode %v", lst.Mode())
	}

	// No change: the file is not rewritten (same inode, same mtime).
	before, _ := os.Stat(path)
	time.Sleep(10 * time.Millisecond)
	if err := addUserGrant(dir, "alice", netRaw); err != nil {
		t.Fatal(err)
	}
	after, _ := os.Stat(path)
	if !after.ModTime().Equal(before.ModTime()) || after.Sys().(*syscall.Stat_t).Ino != before.Sys().(*syscall.Stat_t).Ino {
		t.Fatal("unchanged grants rewrote the file")
	}

	// A failing change and an oversized result leave the old bytes.
	boom := errors.New("boom")
	if err := updateGrants(dir, plainReader, func(g *grantFile) (bool, error) { g.Users["x"] = 1; return true, boom }); err != boom {
		t.Fatal(err)
	}
	err = updateGrants(dir, plainReader, func(g *grantFile) (bool, error) {
		for i := 0; i <= maxGrantEntries; i++ {
			g.Groups[fmt.Sprint("g", i)] = 1
		}
		return true, nil
	})
	if err == nil || classOf(err) != eResource {
		t.Fatalf("oversized grants: %v", err)
	}
	if b2, _ := os.ReadFile(path); !bytes.Equal(b2, b) {
		t.Fatalf("file changed to %q", b2)
	}

	// A crashed writer's temp file is removed by the next writer.
	stray := filepath.Join(dir, grantFileName+".tmp.deadbeef")
	os.WriteFile(stray, []byte("[users"), 0o644)
	if err := addUserGrant(dir, "bob", 1); err != nil {
		t.Fatal(err)
	}
	assertOnlyGrantFiles(t, dir)

	// A malformed current file stops the writer; nothing is replaced.
	os.WriteFile(path, []byte("[users]\nalice = [\"CAP_FOO\"]\n"), 0o644)
	if err := addUserGrant(dir, "carol", 1); err == nil || classOf(err) != eConfig {
		t.Fatalf("malformed file: %v", err)
	}
	if b, _ := os.ReadFile(path); string(b) != "[users]\nalice = [\"CAP_FOO\"]\n" {
		t.Fatalf("malformed file replaced: %q", b)
	}
}

func TestUpdateGrantsLockFileChecks(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to create files owned by others (CI runs as root)")
	}
	dir := t.TempDir()
	lock := filepath.Join(dir, grantFileName+".lock")
	os.WriteFile(lock, nil, 0o600)
	os.Chown(lock, 65534, 65534)
	if err := addUserGrant(dir, "alice", 1); err == nil || err.Error() != lock+": must be owned by root" {
		t.Fatalf("foreign lock: %v", err)
	}
	os.Remove(lock)
	os.Symlink(filepath.Join(dir, "elsewhere"), lock)
	if err := addUserGrant(dir, "alice", 1); err == nil || err.Error() != lock+": symbolic link not allowed" {
		t.Fatalf("symlink lock: %v", err)
	}
	if _, err := os.Lstat(filepath.Join(dir, "elsewhere")); err == nil {
		t.Fatal("followed the lock symlink")
	}
	os.Remove(lock)
	os.Mkdir(lock, 0o700)
	if err := addUserGrant(dir, "alice", 1); err == nil {
		t.Fatal("directory as lock accepted")
	}
	if _, err := os.Stat(filepath.Join(dir, grantFileName)); !os.IsNotExist(err) {
		t.Fatal("grant file written despite a bad lock")
	}
}

func FuzzGrantsTOML(f *testing.F) {
	for _, s := range []string{
		"", "[users]\nalice = [\"CAP_NET_RAW\"]\n",
		"[users]\nalice = [\"CAP_CHOWN\", 'cap_net_raw',]\n[groups]\nnetadm = [\n \"NET_BIND_SERVICE\", # c\n]\n",
		"[users]\nalice = [\"CAP_NET_RAW\"", "[users]\nalice = [\"CAP_FOO\"]\n", "[users]\n\"d\\u00e9\\n\" = [\"kill\"]\r\n",
		"[[users]]", "a = 1", "[users]\na = [[[[", "\xef\xbb\xbf", "[users]\na = []\na = []\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) > 64<<10 {
			return
		}
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		g, err := parseGrants("G", data)
		runtime.ReadMemStats(&after)
		if d := after.TotalAlloc - before.TotalAlloc; d > 1<<20 {
			t.Fatalf("parse of %d bytes allocated %d bytes", len(data), d)
		}
		if err != nil {
			if classOf(err) != eConfig || !strings.HasPrefix(err.Error(), "G:") || g != nil {
				t.Fatalf("error %q class %s", err, classOf(err))
			}
			return
		}
		if g.entries() > maxGrantEntries {
			t.Fatalf("%d entries", g.entries())
		}
		for _, m := range []map[string]capSet{g.Users, g.Groups} {
			for k, v := range m {
				if v == 0 || v&^namedCaps() != 0 || len(k) > maxGrantStringBytes || !utf8Valid(k) {
					t.Fatalf("entry %q = %s", k, v.hex())
				}
			}
		}
		canon := g.canonical()
		again, err := parseGrants("G", canon)
		if err != nil || !reflect.DeepEqual(again, g) {
			t.Fatalf("canonical %q re-parses as %+v, %v (from %+v)", canon, again, err, g)
		}
		if !bytes.Equal(again.canonical(), canon) {
			t.Fatalf("canonical form not stable: %q", canon)
		}
		// An independent TOML parser reads the same grants.
		o, err := tomlOracle(data)
		if err != nil || !reflect.DeepEqual(o, g) {
			t.Fatalf("go-toml disagrees on %q: %+v %v; minirun %+v", data, o, err, g)
		}
	})
}

func utf8Valid(s string) bool { return strings.ToValidUTF8(s, "\uFFFD") == s }
