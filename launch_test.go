package main

import (
	"bytes"
	"errors"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

func TestParseBindSpec(t *testing.T) {
	tests := []struct {
		in      string
		want    bindSpec
		wantErr bool
	}{
		{in: "/data", want: bindSpec{src: "/data", dst: "/data", writable: true}},
		{in: "/data:/mnt", want: bindSpec{src: "/data", dst: "/mnt", writable: true}},
		{in: "/data:/mnt:ro", want: bindSpec{src: "/data", dst: "/mnt"}},
		{in: "/data:/mnt:rw", want: bindSpec{src: "/data", dst: "/mnt", writable: true}},
		{in: "rel:/mnt", want: bindSpec{src: "rel", dst: "/mnt", writable: true}},
		{in: "/data::ro", want: bindSpec{src: "/data", dst: "/data"}},
		{in: "", wantErr: true},
		{in: ":/mnt", wantErr: true},
		{in: "/data:/mnt:rx", wantErr: true},
		{in: "/a:/b:ro:x", wantErr: true},
		{in: "/data:mnt", wantErr: true},
		{in: "/data:/mnt/../etc", wantErr: true},
		{in: "/data:/mnt/", wantErr: true},
		{in: "/data:/", wantErr: true},
		{in: "/data:/proc", wantErr: true},
		{in: "/data:/proc/sys/kernel", wantErr: true},
		{in: "/data:/sys/x", wantErr: true},
		{in: "/data:/dev/null", wantErr: true},
		{in: "/data:/devices", want: bindSpec{src: "/data", dst: "/devices", writable: true}},
		{in: "/da\x00ta:/mnt", wantErr: true},
	}
	for _, tt := range tests {
		got, err := parseBindSpec(tt.in)
		if tt.wantErr {
			if err == nil || classOf(err) != eUsage {
				t.Errorf("parseBindSpec(%q) = %+v, %v; want an E_USAGE error", tt.in, got, err)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("parseBindSpec(%q) = %+v, %v; want %+v", tt.in, got, err, tt.want)
		}
	}
}

func FuzzBindSpec(f *testing.F) {
	for _, s := range []string{"/a", "/a:/b", "/a:/b:ro", "/a:/proc/x", "a:b:c:d", "/a:/b/../c", ":"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		b, err := parseBindSpec(s)
		if err != nil {
			return
		}
		if !strings.HasPrefix(b.dst, "/") || reservedDest(b.dst) || path.Clean(b.dst) != b.dst ||
			strings.ContainsRune(s, 0) {
			t.Fatalf("accepted bad bind %q: %+v", s, b)
		}
		if len(s) > 1000 {
			return // the canonical form may exceed the length limit
		}
		mode := "rw"
		if !b.writable {
			mode = "ro"
		}
		again, err := parseBindSpec(b.src + ":" + b.dst + ":" + mode)
		if err != nil || again != b {
			t.Fatalf("round trip of %q: %+v, %v", s, again, err)
		}
	})
}

func TestScrubEnviron(t *testing.T) {
	clean, changed, err := scrubEnviron([]string{"A=1", "GODEBUG=inittrace=1", "B", "A=2", "GOTRACEBACK=none", "C=3"})
	if err != nil || !changed {
		t.Fatalf("changed=%v err=%v", changed, err)
	}
	if want := []string{"A=1", "C=3"}; !reflect.DeepEqual(clean, want) {
		t.Fatalf("clean = %q, want %q", clean, want)
	}
	// The runtime itself puts GOTRACEBACK=none into a setuid process's
	// environment: that alone must not ask for a re-exec (it would loop).
	if _, changed, _ := scrubEnviron([]string{"A=1", "GOTRACEBACK=none"}); changed {
		t.Fatal("GOTRACEBACK=none alone asked for a re-exec")
	}
	if _, changed, _ := scrubEnviron([]string{"A=1", "GOTRACEBACK=crash"}); !changed {
		t.Fatal("GOTRACEBACK=crash did not ask for a re-exec")
	}
	big := make([]string, maxEnvEntries+1)
	for i := range big {
		big[i] = "X=1"
	}
	if _, _, err := scrubEnviron(big); classOf(err) != eUsage {
		t.Fatalf("too many entries: %v", err)
	}
	if _, _, err := scrubEnviron([]string{"X=" + strings.Repeat("x", maxEnvBytes)}); classOf(err) != eUsage {
		t.Fatalf("too large: %v", err)
	}
}

func FuzzEnvScan(f *testing.F) {
	f.Add("A=1\x00GOGC=1\x00B\x00A=2")
	f.Fuzz(func(t *testing.T, raw string) {
		clean, _, err := scrubEnviron(strings.Split(raw, "\x00"))
		if err != nil {
			return
		}
		seen := map[string]bool{}
		for _, kv := range clean {
			name, _, ok := strings.Cut(kv, "=")
			if !ok || name == "" || strings.HasPrefix(name, "GO") || seen[name] {
				t.Fatalf("scrubbed environment kept %q", kv)
			}
			seen[name] = true
		}
	})
}

func TestPayloadEnv(t *testing.T) {
	user := account{name: "alice", home: "/home/alice"}
	caller := []string{"FOO=bar", "PATH=/evil", "HOME=/tmp/x", "USER=mallory", "LD_LIBRARY_PATH=/x",
		"GOFLAGS=x", "MINIRUN_ENCRYPTION_PASSPHRASE=secret", "APPTAINER_ENCRYPTION_PEM_PATH=/k.pem", "LANG=C.UTF-8", "LC_ALL=C", "SLURM_JOB_ID=7"}
	env := payloadEnv(caller, user, false, []string{"EXTRA=1", "FOO=baz"})
	want := map[string]string{"FOO": "baz", "PATH": containerPath, "HOME": "/home/alice", "USER": "alice",
		"LOGNAME": "alice", "LANG": "C.UTF-8", "LC_ALL": "C", "SLURM_JOB_ID": "7", "EXTRA": "1"}
	got := map[string]string{}
	for _, kv := range env {
		k, v, _ := strings.Cut(kv, "=")
		if _, dup := got[k]; dup {
			t.Errorf("duplicate %s", k)
		}
		got[k] = v
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("payloadEnv = %v\nwant %v", got, want)
	}
	clean := payloadEnv(caller, user, true, nil)
	for _, kv := range clean {
		if strings.HasPrefix(kv, "FOO=") || strings.HasPrefix(kv, "SLURM_") {
			t.Errorf("--cleanenv kept %q", kv)
		}
	}
	if v, _ := lookEnv(clean, "LANG"); v != "C.UTF-8" {
		t.Errorf("--cleanenv dropped LANG: %q", clean)
	}
}

func TestCheckEnvFlag(t *testing.T) {
	for _, ok := range []string{"A=1", "_x=", "A1=a=b"} {
		if err := checkEnvFlag(ok); err != nil {
			t.Errorf("%q: %v", ok, err)
		}
	}
	for _, bad := range []string{"A", "1A=x", "=x", "A-B=1", "MINIRUN_X=1", "A=" + strings.Repeat("x", maxEnvLength)} {
		if err := checkEnvFlag(bad); classOf(err) != eUsage {
			t.Errorf("%q: got %v, want E_USAGE", bad, err)
		}
	}
}

func TestEscapeText(t *testing.T) {
	for in, want := range map[string]string{
		"plain /path": "plain /path",
		"a\nb":        `a\x0ab`,
		"\x1b[31mred": `\x1b[31mred`,
		"bad\xffutf8": `bad\xffutf8`,
		"grüße":       "grüße",
	} {
		if got := escapeText(in); got != want {
			t.Errorf("escapeText(%q) = %q, want %q", in, got, want)
		}
	}
	if line := errorLine(failf(eImage, "image %s: bad", "x\ny")); line != `ERROR: image x\x0ay: bad` {
		t.Errorf("errorLine = %q", line)
	}
	if line := errorLine(failf(eConfig, "f:1: bad")); !strings.HasPrefix(line, "FATAL: ") {
		t.Errorf("config errors are FATAL: %q", line)
	}
}

func TestParseLaunch(t *testing.T) {
	o, err := parseLaunch("exec", []string{"-B", "/a,/b:/c:ro", "--bind", "/d", "--pid", "--hostname", "box", "img", "--pid", "-x", "y"})
	if err != nil {
		t.Fatal(err)
	}
	if o.image != "img" || !reflect.DeepEqual(o.args, []string{"--pid", "-x", "y"}) || !o.pid || !o.uts || len(o.binds) != 3 {
		t.Fatalf("parsed %+v", o)
	}
	for _, bad := range [][]string{{}, {"img"}, {"--nosuch", "img", "x"}, {"--env", "MINIRUN_X=1", "img", "x"},
		{"--pwd", "rel", "img", "x"}, {"--hostname", "a/b", "img", "x"}} {
		if _, err := parseLaunch("exec", bad); classOf(err) != eUsage {
			t.Errorf("parseLaunch(%q) = %v, want E_USAGE", bad, err)
		}
	}
	if o, err := parseLaunch("run", []string{"img"}); err != nil || len(o.args) != 0 {
		t.Errorf("run without args: %v", err)
	}
}

// readProcFile reads whole files past its first buffer and refuses one over
// the limit instead of truncating it.
func TestReadProcFile(t *testing.T) {
	want, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	got, err := readProcFile("/proc/self/mountinfo", 4<<20)
	if err != nil || len(got) == 0 || !bytes.HasPrefix(got, want[:bytes.IndexByte(want, '\n')+1]) {
		t.Fatalf("mountinfo: %v, %d bytes", err, len(got))
	}
	big := bytes.Repeat([]byte("0123456789abcdef"), 100<<10/16+3)
	p := filepath.Join(t.TempDir(), "big")
	if err := os.WriteFile(p, big, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, limit := range []int64{int64(len(big)), int64(len(big)) + 1, 1 << 20} {
		if got, err := readProcFile(p, limit); err != nil || !bytes.Equal(got, big) {
			t.Errorf("limit %d: %v, %d of %d bytes", limit, err, len(got), len(big))
		}
	}
	if _, err := readProcFile(p, int64(len(big))-1); classOf(err) != eResource {
		t.Errorf("one byte over the limit: %v, want E_RESOURCE", err)
	}
	if _, err := readProcFile(filepath.Join(t.TempDir(), "missing"), 10); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("missing file: %v", err)
	}
}

// A parse error still carries its class when --debug came first.
func TestDebugAsked(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want bool
	}{
		{[]string{"--debug", "--bogus", "img"}, true},
		{[]string{"-d", "img"}, true},
		{[]string{"--debug=true", "img"}, true},
		{[]string{"--bogus", "img"}, false},
		{[]string{"img", "--", "-d"}, false},
		{[]string{"--debug=false", "img"}, false},
	} {
		if got := debugAsked(tc.args); got != tc.want {
			t.Errorf("debugAsked(%q) = %v, want %v", tc.args, got, tc.want)
		}
	}
}

// TestAsCallerFsuid: fn runs with the caller's fsuid, and the thread has
// root's back afterwards, also when fn panics (the launch goes on using it).
func TestAsCallerFsuid(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to change the filesystem uid (CI runs as root)")
	}
	fsuid := func() int { u, _ := unix.SetfsuidRetUid(-1); return u } // -1 changes nothing
	for _, c := range []struct {
		name string
		fn   func() error
	}{
		{"returns", func() error { return nil }},
		{"panics", func() error { panic("boom") }},
	} {
		t.Run(c.name, func(t *testing.T) {
			type result struct {
				inside, after int
				err           error
			}
			done := make(chan result)
			go func() { // asCaller locks the thread it runs on: not the test's
				var r result
				r.err = asCaller(caller{uid: 65534, gid: 65534}, func() error {
					r.inside = fsuid()
					return c.fn()
				})
				r.after = fsuid()
				done <- r
			}()
			r := <-done
			if r.inside != 65534 || r.after != 0 {
				t.Errorf("fsuid %d inside, %d after; want 65534 and 0", r.inside, r.after)
			}
			if (c.name == "panics") != (r.err != nil) {
				t.Errorf("error %v", r.err)
			}
		})
	}
}

// FuzzArgv: the launch's argument vector (NUL-separated in the input).
// Options end at IMAGE or at "--"; what follows IMAGE is the payload's, word
// for word, whatever it looks like; the limits hold for what is accepted.
func FuzzArgv(f *testing.F) {
	for _, s := range []string{
		"img\x00/bin/true", "-B\x00/a,/b:/c:ro\x00--pid\x00img\x00--pid\x00-x",
		"--\x00-img\x00-v", "--env\x00A=1\x00-e\x00img\x00sh\x00--\x00-c", "--hostname=box\x00img\x00x",
		"--add-caps\x00net_raw\x00--drop-caps=all\x00img\x00ping", "-pid=false\x00img\x00--\x00x",
	} {
		f.Add(byte(0), s)
	}
	f.Fuzz(func(t *testing.T, which byte, input string) {
		cmd := []string{"exec", "run", "shell"}[int(which)%3]
		args := strings.Split(input, "\x00")
		for _, a := range args {
			// -h and --help print the usage and exit the process.
			name, _, _ := strings.Cut(strings.TrimLeft(a, "-"), "=")
			if strings.HasPrefix(a, "-") && (name == "h" || name == "help") {
				return
			}
		}
		var o *options
		var err error
		sifCheckAlloc(t, 1<<20+uint64(16*len(input)), func() { o, err = parseLaunch(cmd, args) })
		if err != nil {
			if classOf(err) != eUsage {
				t.Fatalf("parseLaunch(%q, %q): error not E_USAGE: %v", cmd, args, err)
			}
			return
		}
		at := len(args) - len(o.args) - 1 // where IMAGE was
		if at < 0 || args[at] != o.image || !slices.Equal(args[at+1:], o.args) {
			t.Fatalf("parseLaunch(%q, %q): image %q, payload %q: not IMAGE and the words after it", cmd, args, o.image, o.args)
		}
		// A "--" ends the options, unless it is the value of the option
		// before it (--hostname --).
		if end := slices.Index(args, "--"); end >= 0 && end < at && at != end+1 &&
			(end == 0 || !strings.HasPrefix(args[end-1], "-") || strings.Contains(args[end-1], "=")) {
			t.Fatalf("parseLaunch(%q, %q): read %q after \"--\" as options", cmd, args, args[end+1:at])
		}
		if cmd == "exec" && len(o.args) == 0 {
			t.Fatalf("exec accepted without a command: %q", args)
		}
		if len(o.binds) > maxBinds || len(o.env) > maxEnvFlags {
			t.Fatalf("limits: %d binds, %d --env", len(o.binds), len(o.env))
		}
		for _, b := range o.binds {
			if !strings.HasPrefix(b.dst, "/") || reservedDest(b.dst) || path.Clean(b.dst) != b.dst {
				t.Fatalf("accepted bind %+v", b)
			}
		}
	})
}

// FuzzMountinfo: procOptionsIn reads a mountinfo table (the kernel escapes
// space, tab, newline and backslash in names as \ooo). Only the procfs at
// exactly /proc counts, and only its hidepid=, subset= and gid= options come
// out: they become mount data, so nothing else may.
func FuzzMountinfo(f *testing.F) {
	f.Add([]byte("22 1 0:21 / /proc rw,nosuid,nodev,noexec,relatime shared:12 - proc proc rw,hidepid=invisible,gid=27\n" +
		"25 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw\n"))
	f.Add([]byte("30 1 0:5 / /pro\\143 rw - proc proc rw,hidepid=2\n31 1 0:6 / /proc rw - tmpfs tmpfs rw,gid=5\n"))
	f.Add([]byte("40 1 0:7 / /proc rw shared:3 master:2 - proc proc rw,subset=pid,hidepid=1,,gid=9,x=1\n"))
	f.Fuzz(func(t *testing.T, info []byte) {
		var got string
		sifCheckAlloc(t, 64<<10+uint64(32*len(info)), func() { got = procOptionsIn(info) })
		if got == "" {
			return
		}
		// A NUL cannot come from the kernel, and would make mount(2) refuse
		// the data (the syscall wrapper rejects it): it cannot add an option.
		if strings.ContainsAny(got, " \t\n") {
			t.Fatalf("options %q contain a separator", got)
		}
		for _, opt := range strings.Split(got, ",") {
			if !strings.HasPrefix(opt, "hidepid=") && !strings.HasPrefix(opt, "subset=") && !strings.HasPrefix(opt, "gid=") {
				t.Fatalf("option %q passed on from %q", opt, info)
			}
		}
		found := false
		for _, line := range strings.Split(string(info), "\n") {
			fields := strings.Fields(line)
			if i := slices.Index(fields, "-"); len(fields) > 4 && fields[4] == "/proc" && i > 0 && i+1 < len(fields) && fields[i+1] == "proc" {
				found = true
			}
		}
		if !found {
			t.Fatalf("options %q from a table without a procfs at /proc: %q", got, info)
		}
	})
}

func TestProcOptionsIn(t *testing.T) {
	for _, tc := range []struct{ info, want string }{
		{"22 1 0:21 / /proc rw,nosuid shared:12 - proc proc rw,hidepid=invisible,gid=27\n", "hidepid=invisible,gid=27"},
		{"22 1 0:21 / /proc rw - proc proc rw\n", ""},
		{"30 1 0:5 / /pro\\143 rw - proc proc rw,hidepid=2\n", ""},                              // an escaped name is not /proc
		{"31 1 0:6 / /proc rw - tmpfs tmpfs rw,gid=5\n", ""},                                    // not a procfs
		{"40 1 0:7 / /proc rw shared:3 master:2 - proc proc rw,subset=pid,x=1\n", "subset=pid"}, // optional fields
		{"41 1 0:7 / /proc/sys rw - proc proc rw,hidepid=2\n42 1 0:8 / /proc rw - proc proc rw,hidepid=1\n", "hidepid=1"},
	} {
		if got := procOptionsIn([]byte(tc.info)); got != tc.want {
			t.Errorf("procOptionsIn(%q) = %q, want %q", tc.info, got, tc.want)
		}
	}
	// An option it cannot make sense of is passed on, not dropped: a procfs
	// mounted without the host's hidepid= would show more than the host's.
	// With a NUL in it the mount is refused, so the launch fails closed.
	odd := "0 0 0 0 /proc 0 - proc 0 hidepid=2\x00x"
	if got := procOptionsIn([]byte(odd)); got != "hidepid=2\x00x" {
		t.Errorf("procOptionsIn(%q) = %q, want the option as it is", odd, got)
	}
	if _, err := unix.BytePtrFromString("hidepid=2\x00x"); err == nil {
		t.Error("mount data with a NUL would reach the kernel")
	}
}
