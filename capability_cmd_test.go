package main

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

type testCmd struct {
	env            *capCmdEnv
	stdout, stderr *bytes.Buffer
	drops          int
}

// newTestCmd runs the commands as root on a temporary <sysconfdir>/minirun
// with the accounts of testNames (users root, alice; groups root, alice,
// netadm) on the example host that lacks CAP_SYS_RESOURCE.
func newTestCmd(t *testing.T) *testCmd {
	tc := &testCmd{stdout: &bytes.Buffer{}, stderr: &bytes.Buffer{}}
	tc.env = &capCmdEnv{
		dir: t.TempDir(), stdout: tc.stdout, stderr: tc.stderr, realUID: 0,
		read: plainReader, names: testNames(),
		host:           func() (int, capSet, error) { return 40, exampleHost, nil },
		dropPrivileges: func() error { tc.drops++; return nil },
	}
	return tc
}

func (tc *testCmd) run(args ...string) error {
	tc.stdout.Reset()
	tc.stderr.Reset()
	tc.env.names = testNames() // a fresh cache per command, as in the binary
	return tc.env.run(args)
}

func (tc *testCmd) path() string { return filepath.Join(tc.env.dir, grantFileName) }

func (tc *testCmd) file(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile(tc.path())
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	return string(b)
}

func (tc *testCmd) write(t *testing.T, text string) {
	t.Helper()
	if err := os.WriteFile(tc.path(), []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
}

// Acceptance rows 25 and 26.
func TestCapabilityAddRows25And26(t *testing.T) {
	tc := newTestCmd(t)
	tc.write(t, "")
	tc.env.realUID = 1000
	err := tc.run("add", "--user", "alice", "net_raw")
	if err == nil || err.Error() != "capability add requires root privileges" || classOf(err) != ePerm {
		t.Fatalf("row 25: %v", err)
	}
	if tc.file(t) != "" || tc.stdout.Len()+tc.stderr.Len() != 0 {
		t.Fatalf("row 25 touched the file %q or printed %q %q", tc.file(t), tc.stdout, tc.stderr)
	}

	tc.env.realUID = 0
	if err := tc.run("add", "--user", "alice", "net_raw"); err != nil {
		t.Fatal(err)
	}
	if tc.stdout.Len()+tc.stderr.Len() != 0 {
		t.Fatalf("row 26 first run printed %q %q", tc.stdout, tc.stderr)
	}
	const want = "[users]\nalice = [\"CAP_NET_RAW\"]\n"
	if got := tc.file(t); got != want {
		t.Fatalf("row 26 file %q", got)
	}
	st1, _ := os.Stat(tc.path())
	time.Sleep(10 * time.Millisecond)
	if err := tc.run("add", "--user", "alice", "net_raw"); err != nil {
		t.Fatal(err)
	}
	if tc.stderr.String() != "WARNING: CAP_NET_RAW already assigned to user alice\n" || tc.stdout.Len() != 0 {
		t.Fatalf("row 26 second run: %q %q", tc.stdout, tc.stderr)
	}
	st2, _ := os.Stat(tc.path())
	if tc.file(t) != want || !st2.ModTime().Equal(st1.ModTime()) {
		t.Fatal("no-op add rewrote the file")
	}
	if os.Geteuid() == 0 {
		sys := st2.Sys().(*syscall.Stat_t)
		if st2.Mode().Perm() != 0o644 || sys.Uid != 0 || sys.Gid != 0 {
			t.Fatalf("file %v %d:%d", st2.Mode(), sys.Uid, sys.Gid)
		}
	}
}

func TestCapabilityAddDrop(t *testing.T) {
	tc := newTestCmd(t)
	steps := []struct {
		args []string
		err  string
		warn string
		file string
	}{
		{[]string{"add", "-u", "alice", "cap_chown, NET_RAW"}, "", "", "[users]\nalice = [\"CAP_CHOWN\", \"CAP_NET_RAW\"]\n"},
		{[]string{"add", "kill,net_raw", "--user", "alice"}, "", "WARNING: CAP_NET_RAW already assigned to user alice\n",
			"[users]\nalice = [\"CAP_CHOWN\", \"CAP_KILL\", \"CAP_NET_RAW\"]\n"},
		{[]string{"add", "--group=netadm", "--", "net_bind_service"}, "", "",
			"[users]\nalice = [\"CAP_CHOWN\", \"CAP_KILL\", \"CAP_NET_RAW\"]\n\n[groups]\nnetadm = [\"CAP_NET_BIND_SERVICE\"]\n"},
		{[]string{"drop", "-u", "alice", "kill,sys_time,mknod"}, "",
			"WARNING: CAP_SYS_TIME not assigned to user alice\nWARNING: CAP_MKNOD not assigned to user alice\n",
			"[users]\nalice = [\"CAP_CHOWN\", \"CAP_NET_RAW\"]\n\n[groups]\nnetadm = [\"CAP_NET_BIND_SERVICE\"]\n"},
		{[]string{"drop", "-g", "netadm", "net_bind_service"}, "", "", "[users]\nalice = [\"CAP_CHOWN\", \"CAP_NET_RAW\"]\n"},
		{[]string{"drop", "-g", "netadm", "all"}, "", "WARNING: no capabilities assigned to group netadm\n",
			"[users]\nalice = [\"CAP_CHOWN\", \"CAP_NET_RAW\"]\n"},
		{[]string{"drop", "--user", "alice", "ALL"}, "", "", ""},
		// Errors change nothing.
		{[]string{"add", "net_raw"}, "exactly one of --user or --group is required", "", ""},
		{[]string{"add", "-u", "alice", "-g", "netadm", "net_raw"}, "exactly one of --user or --group is required", "", ""},
		{[]string{"add", "-u", "alice", "--user", "alice", "net_raw"}, "exactly one of --user or --group is required", "", ""},
		{[]string{"add", "-u", "alice"}, "no capability given", "", ""},
		{[]string{"add", "-u", "alice", ","}, "no capability given", "", ""},
		{[]string{"add", "-u", "alice", "chown", "kill"},
			"no capability given: expected one comma-separated list, got 2 arguments", "", ""},
		{[]string{"add", "-u", "alice", "foo,net_raw,bar,foo"}, "unknown capability: CAP_FOO,CAP_BAR", "", ""},
		{[]string{"drop", "-u", "alice", "CAP_"}, "unknown capability: CAP_", "", ""},
		{[]string{"add", "-u", "mallory", "net_raw"}, "user does not exist: mallory", "", ""},
		{[]string{"add", "-g", "wheel", "net_raw"}, "group does not exist: wheel", "", ""},
		{[]string{"add", "-g", "alice:x", "net_raw"}, "group does not exist: alice:x", "", ""},
		{[]string{"add", "-u", "", "net_raw"}, "user does not exist: ", "", ""},
		{[]string{"drop", "-u", "mallory", "net_raw"}, "user does not exist: mallory", "", ""},
		{[]string{"add", "--bogus", "-u", "alice", "net_raw"}, "capability add: flag provided but not defined: -bogus", "", ""},
		{[]string{"add", "-u"}, "capability add: flag needs an argument: -u", "", ""},
		// all in add means the 41 named capabilities, whatever the host.
		{[]string{"add", "-g", "root", "all"}, "", "", "[groups]\nroot = [" + quotedNames(namedCaps()) + "]\n"},
		{[]string{"add", "-g", "root", "all"}, "", "#41", "[groups]\nroot = [" + quotedNames(namedCaps()) + "]\n"},
	}
	for i, s := range steps {
		err := tc.run(s.args...)
		switch {
		case s.err == "" && err != nil:
			t.Fatalf("step %d %q: %v", i, s.args, err)
		case s.err != "" && (err == nil || err.Error() != s.err):
			t.Fatalf("step %d %q: error %v, want %q", i, s.args, err, s.err)
		case s.err != "" && classOf(err) != eUsage:
			t.Fatalf("step %d: class %s", i, classOf(err))
		}
		if s.warn == "#41" { // one warning per named capability
			if n := strings.Count(tc.stderr.String(), " already assigned to group root\n"); n != 41 {
				t.Fatalf("step %d: %d warnings: %q", i, n, tc.stderr)
			}
		} else if tc.stderr.String() != s.warn {
			t.Fatalf("step %d %q: stderr %q, want %q", i, s.args, tc.stderr, s.warn)
		}
		if tc.stdout.Len() != 0 {
			t.Fatalf("step %d printed %q", i, tc.stdout)
		}
		if got := tc.file(t); got != s.file {
			t.Fatalf("step %d %q: file\n%q\nwant\n%q", i, s.args, got, s.file)
		}
	}
}

func quotedNames(s capSet) string {
	var q []string
	for _, n := range s.names() {
		q = append(q, `"`+n+`"`)
	}
	return strings.Join(q, ", ")
}

// An entry for an account that no longer exists can still be dropped.
func TestCapabilityDropDeletedAccount(t *testing.T) {
	tc := newTestCmd(t)
	tc.write(t, "[users]\nghost = [\"CAP_KILL\", \"CAP_CHOWN\"]\nalice = [\"CAP_KILL\"]\n")
	if err := tc.run("drop", "-u", "ghost", "kill"); err != nil {
		t.Fatal(err)
	}
	if err := tc.run("drop", "-u", "ghost", "mknod"); err != nil || tc.stderr.String() != "WARNING: CAP_MKNOD not assigned to user ghost\n" {
		t.Fatalf("%v %q", err, tc.stderr)
	}
	if err := tc.run("drop", "-u", "ghost", "all"); err != nil {
		t.Fatal(err)
	}
	if got := tc.file(t); got != "[users]\nalice = [\"CAP_KILL\"]\n" {
		t.Fatalf("file %q", got)
	}
	if err := tc.run("drop", "-u", "ghost", "all"); err == nil || err.Error() != "user does not exist: ghost" {
		t.Fatalf("second drop: %v", err)
	}
}

func TestCapabilityList(t *testing.T) {
	tc := newTestCmd(t)
	tc.env.realUID = 1000 // list needs no privileges
	if err := tc.run("list"); err != nil || tc.stdout.Len() != 0 {
		t.Fatalf("missing file: %v %q", err, tc.stdout)
	}
	tc.write(t, "[groups]\nnetadm = [\"CAP_NET_BIND_SERVICE\"]\nalice = [\"kill\"]\n[users]\nzed = [\"CAP_CHOWN\"]\n"+
		"alice = [\"CAP_NET_RAW\", \"CAP_CHOWN\"]\n\"esc\\u001b[31m\" = [\"CAP_KILL\"]\n")
	for _, c := range []struct {
		args []string
		out  string
	}{
		{[]string{"list"}, "user alice: CAP_CHOWN,CAP_NET_RAW\nuser esc\\x1b[31m: CAP_KILL\nuser zed: CAP_CHOWN\n" +
			"group alice: CAP_KILL\ngroup netadm: CAP_NET_BIND_SERVICE\n"},
		{[]string{"list", "alice"}, "user alice: CAP_CHOWN,CAP_NET_RAW\ngroup alice: CAP_KILL\n"},
		{[]string{"list", "netadm"}, "group netadm: CAP_NET_BIND_SERVICE\n"},
		{[]string{"list", "nobody"}, ""},
	} {
		drops := tc.drops
		if err := tc.run(c.args...); err != nil || tc.stdout.String() != c.out || tc.stderr.Len() != 0 {
			t.Errorf("%q: %v\n%q\nwant\n%q", c.args, err, tc.stdout, c.out)
		}
		if tc.drops != drops+1 {
			t.Errorf("%q did not drop privileges", c.args)
		}
	}
	if err := tc.run("list", "a", "b"); err == nil || classOf(err) != eUsage {
		t.Errorf("two names: %v", err)
	}
	// An insecure or malformed file is fatal even when nothing matches.
	tc.env.read = func(p string, max int64) ([]byte, error) { return nil, failf(eConfig, "%s: must be owned by root", p) }
	if err := tc.run("list", "nobody"); err == nil || err.Error() != tc.path()+": must be owned by root" {
		t.Errorf("insecure: %v", err)
	}
	tc.env.read = plainReader
	tc.write(t, "[users]\nalice = [\"CAP_FOO\"]\n")
	if err := tc.run("list", "nobody"); err == nil || err.Error() != tc.path()+":2: unknown capability: CAP_FOO" {
		t.Errorf("malformed: %v", err)
	}
}

func TestCapabilityAvail(t *testing.T) {
	tc := newTestCmd(t)
	tc.env.realUID = 1000
	if err := tc.run("avail"); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSuffix(tc.stdout.String(), "\n"), "\n")
	if len(lines) != 41 {
		t.Fatalf("%d rows", len(lines))
	}
	for c, line := range lines {
		yes := "yes"
		if c == 24 {
			yes = "no"
		}
		if want := fmt.Sprintf("%2d %-22s %-3s %s", c, capNames[c], yes, capDescriptions[c]); line != want {
			t.Errorf("row %d %q, want %q", c, line, want)
		}
	}
	if lines[13] != "13 CAP_NET_RAW            yes Open raw and packet sockets; bind to any address for transparent proxying." {
		t.Errorf("spec example row: %q", lines[13])
	}
	if lines[24] != "24 CAP_SYS_RESOURCE       no  Exceed resource limits, disk quotas and reserved filesystem space." {
		t.Errorf("withheld row: %q", lines[24])
	}
	if tc.drops != 1 {
		t.Error("avail did not drop privileges")
	}
	all := tc.stdout.String()
	if err := tc.run("avail", "ALL"); err != nil || tc.stdout.String() != all {
		t.Errorf("avail all differs: %v", err)
	}
	if err := tc.run("avail", "net_raw, CAP_CHOWN,net_raw,sys_resource"); err != nil ||
		tc.stdout.String() != lines[0]+"\n"+lines[13]+"\n"+lines[24]+"\n" {
		t.Errorf("avail CAPS: %v %q", err, tc.stdout)
	}
	if err := tc.run("avail", "net_raw,foo"); err == nil || err.Error() != "unknown capability: CAP_FOO" {
		t.Errorf("unknown: %v", err)
	}
	// A kernel newer than minirun: its extra capabilities are documented too.
	tc.env.host = func() (int, capSet, error) { return 42, capsUpTo(42), nil }
	if err := tc.run("avail"); err != nil {
		t.Fatal(err)
	}
	lines = strings.Split(strings.TrimSuffix(tc.stdout.String(), "\n"), "\n")
	if len(lines) != 43 || lines[42] != fmt.Sprintf("42 %-22s yes %s", "CAP_42", unnamedCapDescription) {
		t.Errorf("newer kernel: %d rows, last %q", len(lines), lines[len(lines)-1])
	}
	// An older kernel: names above L are documented as unavailable.
	tc.env.host = func() (int, capSet, error) { return 39, capsUpTo(39), nil }
	if err := tc.run("avail", "checkpoint_restore"); err != nil ||
		!strings.HasPrefix(tc.stdout.String(), "40 CAP_CHECKPOINT_RESTORE no ") {
		t.Errorf("older kernel: %v %q", err, tc.stdout)
	}
}

// capabilityCommand itself, on the real host: avail needs no grant file.
func TestCapabilityCommandAvailOnHost(t *testing.T) {
	r, w, _ := os.Pipe()
	saved := os.Stdout
	os.Stdout = w
	err := capabilityCommand([]string{"avail", "net_raw,sys_resource"}, t.TempDir())
	os.Stdout = saved
	w.Close()
	out, _ := io.ReadAll(r)
	if err != nil {
		t.Fatal(err)
	}
	last, _ := lastCap()
	h, _ := hostAvailable(last)
	yes := map[bool]string{true: "yes", false: "no "}
	want := "13 CAP_NET_RAW            " + yes[h.has(13)] + " " + capDescriptions[13] + "\n" +
		"24 CAP_SYS_RESOURCE       " + yes[h.has(24)] + " " + capDescriptions[24] + "\n"
	if string(out) != want {
		t.Fatalf("got %q, want %q", out, want)
	}
}

func TestCapabilityHelpAndUsage(t *testing.T) {
	tc := newTestCmd(t)
	tc.env.realUID = 1000 // help needs no privileges
	for _, args := range [][]string{{"--help"}, {"-h"}, {"help"}} {
		if err := tc.run(args...); err != nil || !strings.Contains(tc.stdout.String(), "Usage: minirun capability COMMAND") ||
			!strings.Contains(tc.stdout.String(), tc.path()) {
			t.Errorf("%q: %v %q", args, err, tc.stdout)
		}
	}
	for _, cmd := range []string{"add", "drop", "list", "avail", "import"} {
		for _, h := range []string{"--help", "-h", "-help"} {
			if err := tc.run(cmd, h); err != nil || !strings.HasPrefix(tc.stdout.String(), "Usage: minirun capability "+cmd) {
				t.Errorf("%s %s: %v %q", cmd, h, err, tc.stdout)
			}
		}
	}
	for _, args := range [][]string{{}, {"frobnicate"}, {"import"}, {"import", "a", "b"}, {"avail", "a", "b"}} {
		tc.env.realUID = 0
		if err := tc.run(args...); err == nil || classOf(err) != eUsage {
			t.Errorf("%q: %v", args, err)
		}
	}
}

func TestCapabilityImport(t *testing.T) {
	tc := newTestCmd(t)
	tc.write(t, "[users]\nalice = [\"CAP_KILL\"]\n")
	src := t.TempDir()
	put := func(name, text string) string {
		p := filepath.Join(src, name)
		os.WriteFile(p, []byte(text), 0o644)
		return p
	}
	good := put("good.json", `{
	"users": {
		"alice": ["CAP_NET_RAW", "cap_chown"],
		"mallory": ["CAP_SYS_ADMIN"],
		"root": null
	},
	"groups": {
		"netadm": ["CAP_NET_BIND_SERVICE"],
		"wheel": ["CAP_SYS_ADMIN"]
	}
}`)
	tc.env.realUID = 1000
	if err := tc.run("import", good); err == nil || err.Error() != "capability import requires root privileges" {
		t.Fatalf("non-root: %v", err)
	}
	tc.env.realUID = 0
	if err := tc.run("import", good); err != nil {
		t.Fatal(err)
	}
	if tc.stderr.String() != "WARNING: skipping user mallory: user does not exist\nWARNING: skipping group wheel: group does not exist\n" {
		t.Fatalf("warnings %q", tc.stderr)
	}
	const merged = "[users]\nalice = [\"CAP_CHOWN\", \"CAP_KILL\", \"CAP_NET_RAW\"]\n\n[groups]\nnetadm = [\"CAP_NET_BIND_SERVICE\"]\n"
	if got := tc.file(t); got != merged {
		t.Fatalf("file %q", got)
	}
	// Importing again changes nothing and does not rewrite the file.
	st1, _ := os.Stat(tc.path())
	time.Sleep(10 * time.Millisecond)
	if err := tc.run("import", good); err != nil {
		t.Fatal(err)
	}
	if st2, _ := os.Stat(tc.path()); !st2.ModTime().Equal(st1.ModTime()) {
		t.Fatal("no-op import rewrote the file")
	}
	// Files that import nothing.
	for _, text := range []string{"", " \n\t", "{}", `{"users": {}, "groups": {}}`, `{"users": null}`} {
		if err := tc.run("import", put("empty.json", text)); err != nil || tc.file(t) != merged {
			t.Errorf("%q: %v", text, err)
		}
	}
	// Errors: nothing is written.
	link := filepath.Join(src, "link.json")
	os.Symlink(good, link)
	big := put("big.json", `{"users":{}}`+strings.Repeat(" ", 1<<20))
	for _, c := range []struct{ path, want string }{
		{put("e1.json", "{\n\"users\": {\"alice\": [\"CAP_FOO\"]}}"), ":2: unknown capability: CAP_FOO"},
		{put("e2.json", `{"users": {"alice": ["all"]}}`), ":1: unknown capability: CAP_ALL"},
		{put("e3.json", "{\n\n\"admins\": {}}"), `:3: unknown key "admins": only "users" and "groups" are allowed`},
		{put("e4.json", `{"Users": {}}`), `:1: unknown key "Users": only "users" and "groups" are allowed`},
		{put("e5.json", `{"users": []}`), ":1: users and groups must be objects"},
		{put("e6.json", `{"users": {"alice": "CAP_NET_RAW"}}`), ":1: capabilities must be an array of strings"},
		{put("e7.json", `{"users": {"alice": [13]}}`), ":1: capabilities must be an array of strings"},
		{put("e8.json", `{"users": {"alice": [["CAP_KILL"]]}}`), ":1: capabilities must be an array of strings"},
		{put("e9.json", `{"users": {"alice": [], "alice": []}}`), `:1: duplicate name "alice"`},
		{put("e10.json", `{"users": {}, "users": {}}`), `:1: duplicate key "users"`},
		{put("e11.json", `["users"]`), `:1: top level must be an object with "users" and "groups"`},
		{put("e12.json", `{"users": {}} {}`), ":1: unexpected data after the JSON object"},
		{put("e13.json", "{\n\"users\": {\n\"alice\": [\"CAP_KILL\",]}}"), ":3: invalid character ']' looking for beginning of value"},
		{put("e14.json", `{"users": {"alice": ["CAP_KILL"]`), ":1: unexpected end of JSON"},
		{put("e15.json", "{\"users\": "+strings.Repeat("[", 100000)), ":1: users and groups must be objects"},
		{link, ": symbolic link not allowed"},
		{src, ": not a regular file"},
		{big, ": larger than 1 MiB"},
	} {
		err := tc.run("import", c.path)
		if err == nil || err.Error() != c.path+c.want {
			t.Errorf("%s: %v, want %q", filepath.Base(c.path), err, c.path+c.want)
		}
		if got := tc.file(t); got != merged {
			t.Fatalf("%s changed the file to %q", filepath.Base(c.path), got)
		}
	}
}

// Two admins adding at the same time: both grants survive, every time.
func TestCapabilityConcurrentAdds(t *testing.T) {
	for round := 0; round < 20; round++ {
		dir := t.TempDir()
		var wg sync.WaitGroup
		errs := make([]error, 2)
		for i, args := range [][]string{{"add", "--user", "alice", "net_raw"}, {"add", "--group", "netadm", "chown"}} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				env := &capCmdEnv{dir: dir, stdout: io.Discard, stderr: io.Discard, read: plainReader, names: testNames()}
				errs[i] = env.run(args)
			}()
		}
		wg.Wait()
		if errs[0] != nil || errs[1] != nil {
			t.Fatal(errs)
		}
		b, _ := os.ReadFile(filepath.Join(dir, grantFileName))
		if want := "[users]\nalice = [\"CAP_NET_RAW\"]\n\n[groups]\nnetadm = [\"CAP_CHOWN\"]\n"; string(b) != want {
			t.Fatalf("round %d: %q", round, b)
		}
	}
}

// FuzzCapabilityJSON: Apptainer capability.json input never panics, errors
// are classed with the file and line, and what is accepted holds only
// known capabilities.
func FuzzCapabilityJSON(f *testing.F) {
	for _, s := range []string{"", "{}", `{"users": {"alice": ["CAP_NET_RAW"]}, "groups": {"g": null}}`,
		`{"users": {"alice": ["CAP_FOO"]}}`, `{"users": [[[[`, `{"users": {}} x`, "{\n\"admins\": 1}"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		users, groups, err := parseCapabilityJSON("F", data)
		if err != nil {
			if classOf(err) != eConfig || !strings.HasPrefix(err.Error(), "F:") || users != nil || groups != nil {
				t.Fatalf("error %q class %s", err, classOf(err))
			}
			return
		}
		for _, m := range []map[string]capSet{users, groups} {
			for name, set := range m {
				if set == 0 || set&^namedCaps() != 0 {
					t.Fatalf("%q = %s", name, set.hex())
				}
			}
		}
	})
}
