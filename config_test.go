// config_test.go tests config.go: the trust checks on real files in a
// root-owned temporary tree (runs as root, as CI does), the minirun.toml
// parser, the shipped etc/ files, and the FuzzConfigTOML target.
package main

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"runtime"
	"strings"
	"testing"
	"time"

	toml "github.com/pelletier/go-toml/v2"
	"golang.org/x/sys/unix"
)

// trustedTempDir makes a fresh directory whose every ancestor passes R5
// (root-owned, not group/other-writable). /tmp and /var/tmp are 1777 and fail
// by design, so it uses /run (root 0755 on the test machines) or, failing
// that, the module directory.
func trustedTempDir(t *testing.T) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to own the test tree; CI runs as root")
	}
	wd, _ := os.Getwd()
	for _, base := range []string{"/run", wd} {
		if !chainTrusted(base) {
			continue
		}
		dir, err := os.MkdirTemp(base, "minirun-config-test-")
		if err != nil {
			continue
		}
		t.Cleanup(func() { os.RemoveAll(dir) })
		if err := os.Chmod(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		return dir
	}
	t.Fatal("no root-owned, non-writable directory chain for test files (tried /run and the module directory)")
	return ""
}

func chainTrusted(dir string) bool {
	for p := dir; ; p = filepath.Dir(p) {
		var st unix.Stat_t
		if unix.Lstat(p, &st) != nil || st.Mode&unix.S_IFMT != unix.S_IFDIR || st.Uid != 0 || st.Mode&0o022 != 0 {
			return false
		}
		if p == "/" {
			return true
		}
	}
}

func writeFile(t *testing.T, path string, data []byte, mode os.FileMode) {
	t.Helper()
	if err := os.WriteFile(path, data, mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, mode); err != nil { // umask-proof
		t.Fatal(err)
	}
}

func mkdir(t *testing.T, path string, mode os.FileMode) {
	t.Helper()
	if err := os.Mkdir(path, mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, mode); err != nil {
		t.Fatal(err)
	}
}

// setACL writes a POSIX access ACL (the xattr's binary form) giving uid an
// extra rw entry; the kernel then shows the mask (rw) as the group bits.
func setACL(path string, uid uint32) error {
	const undefined = 0xffffffff
	entries := [][3]uint32{
		{0x01, 6, undefined}, // USER_OBJ rw
		{0x02, 6, uid},       // USER uid rw
		{0x04, 4, undefined}, // GROUP_OBJ r
		{0x10, 6, undefined}, // MASK rw
		{0x20, 4, undefined}, // OTHER r
	}
	buf := binary.LittleEndian.AppendUint32(nil, 2)
	for _, e := range entries {
		buf = binary.LittleEndian.AppendUint16(buf, uint16(e[0]))
		buf = binary.LittleEndian.AppendUint16(buf, uint16(e[1]))
		buf = binary.LittleEndian.AppendUint32(buf, e[2])
	}
	return unix.Setxattr(path, "system.posix_acl_access", buf, 0)
}

func TestReadTrustedFile(t *testing.T) {
	base := trustedTempDir(t)
	content := []byte("allow_setuid = false\n")

	tests := []struct {
		name string
		// setup builds the tree under dir and returns the path to read and
		// the path the error must name.
		setup   func(t *testing.T, dir string) (path, blamed string)
		maxSize int64
		reason  string // "" means success
	}{
		{"good 0644", func(t *testing.T, d string) (string, string) {
			writeFile(t, d+"/f.toml", content, 0o644)
			return d + "/f.toml", ""
		}, 64 << 10, ""},
		{"good 0400 in nested dirs", func(t *testing.T, d string) (string, string) {
			mkdir(t, d+"/etc", 0o755)
			mkdir(t, d+"/etc/minirun", 0o700)
			writeFile(t, d+"/etc/minirun/f.toml", content, 0o400)
			return d + "/etc/minirun/f.toml", ""
		}, 64 << 10, ""},
		{"owned by uid 1001", func(t *testing.T, d string) (string, string) {
			writeFile(t, d+"/f.toml", content, 0o644)
			os.Chown(d+"/f.toml", 1001, 0)
			return d + "/f.toml", d + "/f.toml"
		}, 64 << 10, "must be owned by root"},
		{"group-writable", func(t *testing.T, d string) (string, string) {
			writeFile(t, d+"/f.toml", content, 0o664)
			return d + "/f.toml", d + "/f.toml"
		}, 64 << 10, "must not be writable by group or others"},
		{"world-writable", func(t *testing.T, d string) (string, string) {
			writeFile(t, d+"/f.toml", content, 0o646)
			return d + "/f.toml", d + "/f.toml"
		}, 64 << 10, "must not be writable by group or others"},
		{"symlink to a safe root file", func(t *testing.T, d string) (string, string) {
			writeFile(t, d+"/real.toml", content, 0o644)
			os.Symlink(d+"/real.toml", d+"/f.toml")
			return d + "/f.toml", d + "/f.toml"
		}, 64 << 10, "symbolic link not allowed"},
		{"symlinked directory", func(t *testing.T, d string) (string, string) {
			mkdir(t, d+"/real", 0o755)
			writeFile(t, d+"/real/f.toml", content, 0o644)
			os.Symlink(d+"/real", d+"/link")
			return d + "/link/f.toml", d + "/link"
		}, 64 << 10, "symbolic link not allowed"},
		{"directory writable by others", func(t *testing.T, d string) (string, string) {
			mkdir(t, d+"/minirun", 0o757)
			writeFile(t, d+"/minirun/f.toml", content, 0o644)
			return d + "/minirun/f.toml", d + "/minirun"
		}, 64 << 10, "must not be writable by group or others"},
		{"directory writable by group", func(t *testing.T, d string) (string, string) {
			mkdir(t, d+"/minirun", 0o775)
			writeFile(t, d+"/minirun/f.toml", content, 0o644)
			return d + "/minirun/f.toml", d + "/minirun"
		}, 64 << 10, "must not be writable by group or others"},
		{"directory sticky 1777", func(t *testing.T, d string) (string, string) {
			mkdir(t, d+"/minirun", 0o1777)
			writeFile(t, d+"/minirun/f.toml", content, 0o644)
			return d + "/minirun/f.toml", d + "/minirun"
		}, 64 << 10, "must not be writable by group or others"},
		{"directory owned by uid 1001", func(t *testing.T, d string) (string, string) {
			mkdir(t, d+"/minirun", 0o755)
			writeFile(t, d+"/minirun/f.toml", content, 0o644)
			os.Chown(d+"/minirun", 1001, 1001)
			return d + "/minirun/f.toml", d + "/minirun"
		}, 64 << 10, "must be owned by root"},
		{"hard link", func(t *testing.T, d string) (string, string) {
			writeFile(t, d+"/f.toml", content, 0o644)
			os.Link(d+"/f.toml", d+"/other")
			return d + "/f.toml", d + "/f.toml"
		}, 64 << 10, "has 2 hard links"},
		{"exactly the size limit", func(t *testing.T, d string) (string, string) {
			writeFile(t, d+"/f.toml", bytes.Repeat([]byte("#"), 64<<10), 0o644)
			return d + "/f.toml", ""
		}, 64 << 10, ""},
		{"one byte too large", func(t *testing.T, d string) (string, string) {
			writeFile(t, d+"/f.toml", bytes.Repeat([]byte("#"), 64<<10+1), 0o644)
			return d + "/f.toml", d + "/f.toml"
		}, 64 << 10, "larger than 64 KiB"},
		{"too large for a 1 MiB cap", func(t *testing.T, d string) (string, string) {
			writeFile(t, d+"/f.toml", bytes.Repeat([]byte("#"), 1<<20+1), 0o644)
			return d + "/f.toml", d + "/f.toml"
		}, 1 << 20, "larger than 1 MiB"},
		{"FIFO", func(t *testing.T, d string) (string, string) {
			if err := unix.Mkfifo(d+"/f.toml", 0o644); err != nil {
				t.Fatal(err)
			}
			return d + "/f.toml", d + "/f.toml"
		}, 64 << 10, "not a regular file"},
		{"socket", func(t *testing.T, d string) (string, string) {
			l, err := net.Listen("unix", d+"/f.toml")
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { l.Close() })
			return d + "/f.toml", d + "/f.toml"
		}, 64 << 10, "not a regular file"},
		{"directory instead of file", func(t *testing.T, d string) (string, string) {
			mkdir(t, d+"/f.toml", 0o755)
			return d + "/f.toml", d + "/f.toml"
		}, 64 << 10, "not a regular file"},
		{"file instead of directory", func(t *testing.T, d string) (string, string) {
			writeFile(t, d+"/minirun", content, 0o644)
			return d + "/minirun/f.toml", d + "/minirun"
		}, 64 << 10, "not a directory"},
		{"relative path", func(t *testing.T, d string) (string, string) {
			return "etc/minirun/f.toml", "etc/minirun/f.toml"
		}, 64 << 10, "path is not absolute and clean"},
		{"unclean path", func(t *testing.T, d string) (string, string) {
			writeFile(t, d+"/f.toml", content, 0o644)
			return d + "/./f.toml", d + "/./f.toml"
		}, 64 << 10, "path is not absolute and clean"},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := filepath.Join(base, fmt.Sprint(i))
			mkdir(t, dir, 0o755)
			path, blamed := tc.setup(t, dir)

			// A FIFO or device must never block the read: bound every case.
			type result struct {
				data []byte
				err  error
			}
			done := make(chan result, 1)
			go func() {
				data, err := readTrustedFile(path, tc.maxSize)
				done <- result{data, err}
			}()
			var r result
			select {
			case r = <-done:
			case <-time.After(5 * time.Second):
				t.Fatal("readTrustedFile blocked")
			}

			if tc.reason == "" {
				if r.err != nil {
					t.Fatalf("unexpected error: %v", r.err)
				}
				want, _ := os.ReadFile(path)
				if !bytes.Equal(r.data, want) {
					t.Fatalf("read %d bytes, want %d", len(r.data), len(want))
				}
				return
			}
			if r.err == nil {
				t.Fatalf("accepted; want %q", tc.reason)
			}
			if classOf(r.err) != eConfig || errors.Is(r.err, fs.ErrNotExist) {
				t.Errorf("class %s (not-exist %v), want E_CONFIG", classOf(r.err), errors.Is(r.err, fs.ErrNotExist))
			}
			if want := blamed + ": " + tc.reason; r.err.Error() != want {
				t.Errorf("error %q, want %q", r.err, want)
			}
		})
	}
}

func TestReadTrustedFileACL(t *testing.T) {
	dir := trustedTempDir(t)
	path := dir + "/capability.toml"
	writeFile(t, path, []byte("[users]\n"), 0o644)
	if _, err := readTrustedFile(path, 64<<10); err != nil {
		t.Fatalf("before the ACL: %v", err)
	}
	if err := setACL(path, 1001); err != nil {
		t.Fatalf("set ACL u:1001:rw on %s: %v", path, err)
	}
	_, err := readTrustedFile(path, 64<<10)
	if err == nil || err.Error() != path+": must not be writable by group or others" {
		t.Fatalf("ACL u:1001:rw: got %v", err)
	}
}

func TestReadTrustedFileMissing(t *testing.T) {
	dir := trustedTempDir(t)
	for _, path := range []string{dir + "/absent.toml", dir + "/absent/minirun.toml"} {
		_, err := readTrustedFile(path, 64<<10)
		if !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("%s: got %v, want fs.ErrNotExist", path, err)
		}
	}
}

// The real /tmp is sticky 1777: R5 refuses anything below it.
func TestReadTrustedFileUnderTmp(t *testing.T) {
	var st unix.Stat_t
	if unix.Stat("/tmp", &st) != nil || st.Mode&0o1777 != 0o1777 {
		t.Skip("/tmp is not sticky 1777 here")
	}
	dir := t.TempDir() // under $TMPDIR, normally /tmp
	if !strings.HasPrefix(dir, "/tmp/") {
		dir, _ = os.MkdirTemp("/tmp", "minirun-config-test-")
		t.Cleanup(func() { os.RemoveAll(dir) })
	}
	os.Chmod(dir, 0o755)
	writeFile(t, dir+"/f.toml", []byte{}, 0o644)
	_, err := readTrustedFile(dir+"/f.toml", 64<<10)
	if err == nil || err.Error() != "/tmp: must not be writable by group or others" {
		t.Fatalf("got %v", err)
	}
}

// A file that grows past the cap after fstat is refused: readBounded stops
// one byte past maxSize whatever the size hint said.
func TestReadBoundedGrowth(t *testing.T) {
	var p [2]int
	if err := unix.Pipe2(p[:], unix.O_CLOEXEC); err != nil {
		t.Fatal(err)
	}
	defer unix.Close(p[0])
	go func() {
		unix.Write(p[1], bytes.Repeat([]byte("x"), 200))
		unix.Close(p[1])
	}()
	_, err := readBounded(p[0], "/etc/minirun/minirun.toml", 10, 100)
	if err == nil || err.Error() != "/etc/minirun/minirun.toml: larger than 100 bytes" || classOf(err) != eConfig {
		t.Fatalf("got %v", err)
	}
}

func TestLoadConfig(t *testing.T) {
	sysconf := trustedTempDir(t)
	got, err := loadConfig(sysconf)
	if err != nil || !reflect.DeepEqual(got, defaultConfig()) {
		t.Fatalf("missing file: %+v, %v; want defaults", got, err)
	}
	mkdir(t, sysconf+"/minirun", 0o755)
	got, err = loadConfig(sysconf)
	if err != nil || !reflect.DeepEqual(got, defaultConfig()) {
		t.Fatalf("missing file in existing dir: %+v, %v; want defaults", got, err)
	}

	path := sysconf + "/minirun/minirun.toml"
	writeFile(t, path, []byte("# site\nmount_dev = \"host\"\n"), 0o644)
	want := defaultConfig()
	want.mountDev = "host"
	if got, err = loadConfig(sysconf); err != nil || !reflect.DeepEqual(got, want) {
		t.Fatalf("good file: %+v, %v", got, err)
	}

	writeFile(t, path, []byte("\n\nmount_dev = \"hots\"\n"), 0o644)
	_, err = loadConfig(sysconf)
	if err == nil || !strings.HasPrefix(err.Error(), path+":3: mount_dev: ") || classOf(err) != eConfig {
		t.Fatalf("bad value: %v", err)
	}

	writeFile(t, path, []byte("mount_dev = \"host\"\n"), 0o664)
	_, err = loadConfig(sysconf)
	if err == nil || err.Error() != path+": must not be writable by group or others" {
		t.Fatalf("insecure file: %v", err)
	}

	writeFile(t, path, bytes.Repeat([]byte("#"), 64<<10+1), 0o644)
	_, err = loadConfig(sysconf)
	if err == nil || err.Error() != path+": larger than 64 KiB" {
		t.Fatalf("large file: %v", err)
	}
}

const testConfigName = "/etc/minirun/minirun.toml"

// A file setting every key to a non-default value, with its expected result.
const everyKeyTOML = `# every key, none at its default
allow_setuid = false
root_default_capabilities = "file"
strict_capabilities = true
allow_container = ["sif", "encrypted"]
limit_container_owners = ["root", "alice", "1001"]
limit_container_groups = ["hpc"]
limit_container_paths = ["/srv/images", "/opt/containers"]
user_writable_images = "sealed-copy"
sealed_copy_max_mib = 512
encrypted_backend = "memory"
memory_backend_max_mib = 0
kdf_max_memory_mib = 4096
kdf_max_pbkdf2_iterations = 1_000
shared_loop_devices = false
max_loop_devices = 1048576
max_loop_per_user = 0
allow_namespaces = [
  "net",   # trailing comments and commas are fine
  'pid',
]
mount_dev = "host"
mount_home = false
mount_tmp = false
"mount_cwd" = false
bind_path = ["/etc/localtime", "/scratch:/mnt/scratch", "/data:/data:ro", "/:/host:rw"]
`

func everyKeyConfig() config {
	return config{
		allowSetuid:             false,
		rootDefaultCapabilities: "file",
		strictCapabilities:      true,
		allowContainer:          []string{"sif", "encrypted"},
		limitContainerOwners:    []string{"root", "alice", "1001"},
		limitContainerGroups:    []string{"hpc"},
		limitContainerPaths:     []string{"/srv/images", "/opt/containers"},
		userWritableImages:      "sealed-copy",
		sealedCopyMaxMiB:        512,
		encryptedBackend:        "memory",
		memoryBackendMaxMiB:     0,
		kdfMaxMemoryMiB:         4096,
		kdfMaxPBKDF2Iterations:  1000,
		sharedLoopDevices:       false,
		maxLoopDevices:          1048576,
		maxLoopPerUser:          0,
		allowNamespaces:         []string{"net", "pid"},
		mountDev:                "host",
		mountHome:               false,
		mountTmp:                false,
		mountCwd:                false,
		bindPath:                []string{"/etc/localtime", "/scratch:/mnt/scratch", "/data:/data:ro", "/:/host:rw"},
	}
}

func TestParseConfigAccepts(t *testing.T) {
	tests := []struct {
		name string
		text string
		want func(*config)
	}{
		{"empty", "", func(*config) {}},
		{"comments and blank lines", "# nothing\n\n   \n# set\r\n", func(*config) {}},
		{"every key", everyKeyTOML, func(c *config) { *c = everyKeyConfig() }},
		{"empty list clears a default", "allow_container = []\n", func(c *config) { c.allowContainer = nil }},
		{"empty list stays empty", "bind_path = []\n", func(*config) {}},
		{"integer forms", "max_loop_devices = 0x10\nmax_loop_per_user = +3\n", func(c *config) { c.maxLoopDevices, c.maxLoopPerUser = 16, 3 }},
		{"CRLF", "mount_dev = \"host\"\r\nmount_tmp = false\r\n", func(c *config) { c.mountDev, c.mountTmp = "host", false }},
		{"brackets and commas in strings and comments", "bind_path = [\"/a[[b,{c\", '/x]]'] # [[[,,,\n", func(c *config) { c.bindPath = []string{"/a[[b,{c", "/x]]"} }},
		{"multi-line strings", "root_default_capabilities = \"\"\"no\"\"\"\nmount_dev = '''host'''\n", func(c *config) { c.rootDefaultCapabilities, c.mountDev = "no", "host" }},
		{"256 entries", "limit_container_groups = [" + listOf(256) + "]\n", func(c *config) { c.limitContainerGroups = strings.Split(listPlain(256), ",") }},
		{"64 binds", "bind_path = [" + bindsOf(64) + "]\n", func(c *config) { c.bindPath = strings.Split(bindsPlain(64), ",") }},
		{"upper bounds", "sealed_copy_max_mib = 1048576\nmemory_backend_max_mib = 1048576\nkdf_max_pbkdf2_iterations = 4294967295\nmax_loop_per_user = 1048576\n",
			func(c *config) {
				c.sealedCopyMaxMiB, c.memoryBackendMaxMiB, c.kdfMaxPBKDF2Iterations, c.maxLoopPerUser = 1<<20, 1<<20, 1<<32-1, 1<<20
			}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			want := defaultConfig()
			tc.want(&want)
			got, err := parseConfig(testConfigName, []byte(tc.text))
			if err != nil {
				t.Fatalf("error: %v", err)
			}
			if !reflect.DeepEqual(got, want) {
				t.Fatalf("got  %+v\nwant %+v", got, want)
			}
		})
	}
}

func listOf(n int) string {
	q := make([]string, n)
	for i := range q {
		q[i] = fmt.Sprintf("%q", fmt.Sprint("g", i))
	}
	return strings.Join(q, ", ")
}

func listPlain(n int) string {
	q := make([]string, n)
	for i := range q {
		q[i] = fmt.Sprint("g", i)
	}
	return strings.Join(q, ",")
}

func bindsOf(n int) string {
	q := make([]string, n)
	for i := range q {
		q[i] = fmt.Sprintf("%q", fmt.Sprint("/b", i))
	}
	return strings.Join(q, ", ")
}

func bindsPlain(n int) string {
	q := make([]string, n)
	for i := range q {
		q[i] = fmt.Sprint("/b", i)
	}
	return strings.Join(q, ",")
}

func TestParseConfigRejects(t *testing.T) {
	tests := []struct {
		name string
		text string
		want string // the whole message after "<name>:"
	}{
		{"unknown key", "allow_setuid = true\nallow_suid = true\n", `2: unknown key "allow_suid"`},
		{"case variant of a key", "\nALLOW_SETUID = false\n", `2: unknown key "ALLOW_SETUID"`},
		{"table", "[minirun]\nallow_setuid = true\n", `1: tables are not allowed (minirun.toml is one flat table)`},
		{"array of tables", "[[grant]]\n", `1: nested arrays or tables are not allowed (minirun.toml is one flat table)`},
		{"dotted key", "\n\nmount_dev.x = 1\n", `3: dotted keys are not allowed`},
		{"inline table", "mount_dev = {x = 1}\n", `1: mount_dev must be a string`},
		{"duplicate key", "mount_tmp = true\n# again\nmount_tmp = true\n", `3: key mount_tmp is already defined`},
		{"duplicate key, quoted", "mount_tmp = true\n\"mount_tmp\" = false\n", `2: key mount_tmp is already defined`},
		{"syntax error: unterminated string", "allow_setuid = true\n\n\nmount_dev = \"host\n", ``},
		{"syntax error: missing value", "mount_dev =\n", ``},
		{"syntax error: lone CR", "mount_tmp = true\rmount_home = true\n", ``},
		{"syntax error: bare word", "\nmount_dev = host\n", ``},
		{"integer out of int64", "max_loop_devices = 9223372036854775808\n", ``},
		{"BOM", "\xef\xbb\xbfallow_setuid = true\n", `1: byte order mark not allowed`},
		{"NUL", "allow_setuid = true\nmount_dev = \"ho\x00st\"\n", `2: NUL byte not allowed`},
		{"invalid UTF-8", "# ok\n# caf\xe9\n", `2: invalid UTF-8`},
		{"deep arrays", "bind_path = " + strings.Repeat("[", 10000) + strings.Repeat("]", 10000) + "\n", `1: nested arrays or tables are not allowed (minirun.toml is one flat table)`},
		{"two levels", "\nbind_path = [[\"/a\"]]\n", `2: nested arrays or tables are not allowed (minirun.toml is one flat table)`},
		{"too many entries before parsing", "bind_path = [" + bindsOf(300) + "]\n", `1: more than 256 entries in one list`},
		{"257 entries", "limit_container_groups = [" + listOf(257) + "]\n", `1: limit_container_groups: 257 entries, at most 256 allowed`},
		{"65 binds", "bind_path = [" + bindsOf(65) + "]\n", `1: bind_path: 65 entries, at most 64 allowed`},
		{"long string", "limit_container_paths = [\"/" + strings.Repeat("a", 4096) + "\"]\n", `1: limit_container_paths: entry 1 is longer than 4096 bytes`},
		{"control character", `limit_container_paths = ["/srv/\u001b[31m"]` + "\n", `1: limit_container_paths: entry "/srv/\x1b[31m" contains a control character`},
		{"escaped NUL", `bind_path = ["/a\u0000"]`, `1: bind_path: entry "/a\x00" contains a control character`},
		{"bind relative source", `bind_path = ["/ok", "data:/data"]`, `1: bind_path: "data:/data" is not SRC[:DST[:ro|rw]]: the source must be an absolute, clean path`},
		{"bind relative destination", `bind_path = ["/data:data"]`, `1: bind_path: "/data:data" is not SRC[:DST[:ro|rw]]: the destination must be an absolute, clean path`},
		{"bind unclean", `bind_path = ["/data/../etc"]`, `1: bind_path: "/data/../etc" is not SRC[:DST[:ro|rw]]: the source must be an absolute, clean path`},
		{"bind empty destination", `bind_path = ["/data:"]`, `1: bind_path: "/data:" is not SRC[:DST[:ro|rw]]: the destination must be an absolute, clean path`},
		{"bind empty destination with option", `bind_path = ["/data::ro"]`, `1: bind_path: "/data::ro" is not SRC[:DST[:ro|rw]]: the destination must be an absolute, clean path`},
		{"bind bad option", `bind_path = ["/a:/b:rx"]`, `1: bind_path: "/a:/b:rx" is not SRC[:DST[:ro|rw]]: the option must be ro or rw`},
		{"bind four parts", `bind_path = ["/a:/b:ro:x"]`, `1: bind_path: "/a:/b:ro:x" is not SRC[:DST[:ro|rw]]: too many ':'`},
		{"path relative", `limit_container_paths = ["srv/images"]`, `1: limit_container_paths: "srv/images" is not an absolute, clean path`},
		{"path trailing slash", `limit_container_paths = ["/srv/images/"]`, `1: limit_container_paths: "/srv/images/" is not an absolute, clean path`},
		{"path dot-dot", `limit_container_paths = ["/srv/../etc"]`, `1: limit_container_paths: "/srv/../etc" is not an absolute, clean path`},
		{"owner empty", `limit_container_owners = [""]`, `1: limit_container_owners: "" is not a valid user or group name`},
		{"owner dash", `limit_container_owners = ["-x"]`, `1: limit_container_owners: "-x" is not a valid user or group name`},
		{"group colon", `limit_container_groups = ["a:b"]`, `1: limit_container_groups: "a:b" is not a valid user or group name`},
		{"group space", `limit_container_groups = ["a b"]`, `1: limit_container_groups: "a b" is not a valid user or group name`},
		{"duplicate list entry", `allow_container = ["sif", "dir", "sif"]`, `1: allow_container: "sif" is listed twice`},
		{"bad container kind", `allow_container = ["sif", "ext3"]`, `1: allow_container: "ext3" is not one of "sif", "squashfs", "dir", "encrypted"`},
		{"container kind case", `allow_container = ["SIF"]`, `1: allow_container: "SIF" is not one of "sif", "squashfs", "dir", "encrypted"`},
		{"bad namespace", `allow_namespaces = ["user"]`, `1: allow_namespaces: "user" is not one of "pid", "ipc", "uts", "net"`},
		{"bad root caps", "\nroot_default_capabilities = \"all\"", `2: root_default_capabilities: "all" is not one of "full", "file", "no"`},
		{"bad writable", `user_writable_images = "deny"`, `1: user_writable_images: "deny" is not one of "allow", "sealed-copy", "refuse"`},
		{"bad backend", `encrypted_backend = "dm_crypt"`, `1: encrypted_backend: "dm_crypt" is not one of "auto", "dm-crypt", "memory"`},
		{"bad mount_dev", `mount_dev = ""`, `1: mount_dev: "" is not one of "minimal", "host"`},
		{"negative", "\n\n\nmax_loop_per_user = -1", `4: max_loop_per_user: -1 is out of range 0 to 1048576`},
		{"sealed copy too big", `sealed_copy_max_mib = 1048577`, `1: sealed_copy_max_mib: 1048577 is out of range 0 to 1048576`},
		{"memory backend too big", `memory_backend_max_mib = 1048577`, `1: memory_backend_max_mib: 1048577 is out of range 0 to 1048576`},
		{"kdf memory too big", `kdf_max_memory_mib = 4097`, `1: kdf_max_memory_mib: 4097 is out of range 0 to 4096`},
		{"pbkdf2 too big", `kdf_max_pbkdf2_iterations = 4294967296`, `1: kdf_max_pbkdf2_iterations: 4294967296 is out of range 0 to 4294967295`},
		{"loop devices too many", `max_loop_devices = 1048577`, `1: max_loop_devices: 1048577 is out of range 0 to 1048576`},
		{"too large", strings.Repeat("#", 64<<10+1), ` larger than 64 KiB`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := parseConfig(testConfigName, []byte(tc.text))
			if err == nil {
				t.Fatal("accepted")
			}
			if classOf(err) != eConfig {
				t.Errorf("class %s, want E_CONFIG", classOf(err))
			}
			msg := err.Error()
			if strings.ContainsAny(msg, "\n\r") {
				t.Errorf("message is not one line: %q", msg)
			}
			if tc.want == "" { // go-toml's wording; only the line is ours to check
				return
			}
			if want := testConfigName + ":" + tc.want; msg != want {
				t.Errorf("got  %q\nwant %q", msg, want)
			}
		})
	}
}

// Syntax errors carry the line go-toml found them on.
func TestParseConfigSyntaxLine(t *testing.T) {
	tests := []struct {
		text string
		line int
	}{
		{"allow_setuid = true\n\n\nmount_dev = \"host\n", 4},
		{"mount_dev =\n", 1},
		{"\nmount_dev = host\n", 2},
		{"mount_tmp = true\n\nmount_home = tru\n", 3},
		{"# a\n# b\nmax_loop_devices = 9223372036854775808\n", 3},
		{"bind_path = [\n  \"/a\",\n  \"/b\"\n", 3},
	}
	for _, tc := range tests {
		_, err := parseConfig(testConfigName, []byte(tc.text))
		prefix := fmt.Sprintf("%s:%d: ", testConfigName, tc.line)
		if err == nil || !strings.HasPrefix(err.Error(), prefix) || classOf(err) != eConfig {
			t.Errorf("%q: got %v, want prefix %q", tc.text, err, prefix)
		}
	}
}

// Each key with a value of the wrong TOML type names the key, its type and line.
func TestParseConfigWrongType(t *testing.T) {
	wrong := map[string][]string{
		"a boolean":           {`"true"`, `1`, `["x"]`, `1.0`},
		"a string":            {`true`, `1`, `["full"]`, `1979-05-27`},
		"an integer":          {`"1"`, `1.5`, `true`, `[1]`},
		"an array of strings": {`"sif"`, `[1]`, `["sif", 2]`, `true`, `[true]`},
	}
	for _, p := range configKeyTypes {
		key, typ := p.key, p.val
		for _, v := range wrong[typ] {
			text := "# header\n\n" + key + " = " + v + "\n"
			_, err := parseConfig(testConfigName, []byte(text))
			want := fmt.Sprintf("%s:3: %s must be %s", testConfigName, key, typ)
			if err == nil || err.Error() != want {
				t.Errorf("%s = %s: got %v, want %q", key, v, err, want)
			}
		}
	}
}

func TestParseConfigDeepArraysFast(t *testing.T) {
	for _, text := range [][]byte{
		[]byte("bind_path = " + strings.Repeat("[", 10000) + strings.Repeat("]", 10000)),
		[]byte("bind_path = " + strings.Repeat("[", 64<<10-12)),
		[]byte("bind_path = " + strings.Repeat("{a=", 10000)),
	} {
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		start := time.Now()
		_, err := parseConfig(testConfigName, text)
		elapsed := time.Since(start)
		runtime.ReadMemStats(&after)
		if err == nil || !strings.Contains(err.Error(), "nested arrays or tables are not allowed") {
			t.Errorf("got %v", err)
		}
		if elapsed > 50*time.Millisecond {
			t.Errorf("took %v", elapsed)
		}
		if alloc := after.TotalAlloc - before.TotalAlloc; alloc > 64<<10 {
			t.Errorf("allocated %d bytes", alloc)
		}
	}
}

// The shipped etc/minirun.toml documents exactly the compiled-in defaults:
// as shipped it parses to them, and with every setting uncommented too.
func TestShippedConfigFile(t *testing.T) {
	data, err := os.ReadFile("etc/minirun.toml")
	if err != nil {
		t.Fatal(err)
	}
	got, err := parseConfig("etc/minirun.toml", data)
	if err != nil || !reflect.DeepEqual(got, defaultConfig()) {
		t.Fatalf("as shipped: %+v, %v", got, err)
	}
	var out []string
	seen := map[string]bool{}
	for _, line := range strings.Split(string(data), "\n") {
		if key, _, ok := strings.Cut(strings.TrimPrefix(line, "#"), " = "); ok && strings.HasPrefix(line, "#") && configKeyType(key) != "" {
			line = line[1:]
			seen[key] = true
		}
		out = append(out, line)
	}
	for _, p := range configKeyTypes {
		if !seen[p.key] {
			t.Errorf("etc/minirun.toml does not document %s", p.key)
		}
	}
	got, err = parseConfig("etc/minirun.toml", []byte(strings.Join(out, "\n")))
	if err != nil || !reflect.DeepEqual(got, defaultConfig()) {
		t.Fatalf("uncommented: %+v, %v", got, err)
	}
}

// The grant template is all comments: it grants nothing and is no TOML table.
func TestShippedCapabilityFile(t *testing.T) {
	data, err := os.ReadFile("etc/capability.toml")
	if err != nil {
		t.Fatal(err)
	}
	var doc map[string]any
	if err := toml.Unmarshal(data, &doc); err != nil || len(doc) != 0 {
		t.Fatalf("template parses to %v, %v; want an empty document", doc, err)
	}
	for _, want := range []string{"# [users]", "# alice = [\"CAP_NET_RAW\"]", "# [groups]"} {
		if !bytes.Contains(data, []byte(want)) {
			t.Errorf("template lacks %q", want)
		}
	}
}

// formatConfig writes c as canonical TOML (every key, DESIGN.md order) with
// go-toml's encoder, an implementation independent of the parser's checks.
func formatConfig(c config) ([]byte, error) {
	list := func(s []string) *[]string {
		if s == nil {
			s = []string{}
		}
		return &s
	}
	raw := rawConfig{
		AllowSetuid:             &c.allowSetuid,
		RootDefaultCapabilities: &c.rootDefaultCapabilities,
		StrictCapabilities:      &c.strictCapabilities,
		AllowContainer:          list(c.allowContainer),
		LimitContainerOwners:    list(c.limitContainerOwners),
		LimitContainerGroups:    list(c.limitContainerGroups),
		LimitContainerPaths:     list(c.limitContainerPaths),
		UserWritableImages:      &c.userWritableImages,
		SealedCopyMaxMiB:        &c.sealedCopyMaxMiB,
		EncryptedBackend:        &c.encryptedBackend,
		MemoryBackendMaxMiB:     &c.memoryBackendMaxMiB,
		KDFMaxMemoryMiB:         &c.kdfMaxMemoryMiB,
		KDFMaxPBKDF2Iterations:  &c.kdfMaxPBKDF2Iterations,
		SharedLoopDevices:       &c.sharedLoopDevices,
		MaxLoopDevices:          &c.maxLoopDevices,
		MaxLoopPerUser:          &c.maxLoopPerUser,
		AllowNamespaces:         list(c.allowNamespaces),
		MountDev:                &c.mountDev,
		MountHome:               &c.mountHome,
		MountTmp:                &c.mountTmp,
		MountCwd:                &c.mountCwd,
		BindPath:                list(c.bindPath),
	}
	return toml.Marshal(raw)
}

func TestFormatConfigRoundTrip(t *testing.T) {
	for _, c := range []config{defaultConfig(), everyKeyConfig()} {
		text, err := formatConfig(c)
		if err != nil {
			t.Fatal(err)
		}
		got, err := parseConfig("canonical", text)
		if err != nil || !reflect.DeepEqual(got, c) {
			t.Fatalf("%s\nre-parsed to %+v, %v", text, got, err)
		}
	}
}

// checkConfigInvariants states what every accepted config satisfies.
func checkConfigInvariants(c config) error {
	enums := []struct {
		v       string
		allowed []string
	}{
		{c.rootDefaultCapabilities, []string{"full", "file", "no"}},
		{c.userWritableImages, []string{"allow", "sealed-copy", "refuse"}},
		{c.encryptedBackend, []string{"auto", "dm-crypt", "memory"}},
		{c.mountDev, []string{"minimal", "host"}},
	}
	for _, e := range enums {
		if !containsString(e.allowed, e.v) {
			return fmt.Errorf("enum value %q", e.v)
		}
	}
	for _, n := range []int64{c.sealedCopyMaxMiB, c.memoryBackendMaxMiB, c.kdfMaxMemoryMiB, c.kdfMaxPBKDF2Iterations, c.maxLoopDevices, c.maxLoopPerUser} {
		if n < 0 || n > maxPBKDF2Iters {
			return fmt.Errorf("number %d", n)
		}
	}
	if c.kdfMaxMemoryMiB > maxKDFMemoryMiB {
		return fmt.Errorf("kdf memory %d", c.kdfMaxMemoryMiB)
	}
	for _, s := range c.allowContainer {
		if !containsString([]string{"sif", "squashfs", "dir", "encrypted"}, s) {
			return fmt.Errorf("container kind %q", s)
		}
	}
	for _, s := range c.allowNamespaces {
		if !containsString([]string{"pid", "ipc", "uts", "net"}, s) {
			return fmt.Errorf("namespace %q", s)
		}
	}
	for _, p := range c.limitContainerPaths {
		if !isCleanAbsPath(p) {
			return fmt.Errorf("path %q", p)
		}
	}
	for _, b := range c.bindPath {
		parts := strings.Split(b, ":")
		if len(parts) > 3 || !isCleanAbsPath(parts[0]) || (len(parts) > 1 && !isCleanAbsPath(parts[1])) ||
			(len(parts) > 2 && parts[2] != "ro" && parts[2] != "rw") {
			return fmt.Errorf("bind %q", b)
		}
	}
	lists := [][]string{c.allowContainer, c.limitContainerOwners, c.limitContainerGroups, c.limitContainerPaths, c.allowNamespaces, c.bindPath}
	for _, l := range lists {
		if len(l) > maxConfigList || (l != nil && len(l) == 0) {
			return fmt.Errorf("list of %d", len(l))
		}
		for _, s := range l {
			if len(s) > maxConfigString || hasControl(s) {
				return fmt.Errorf("entry %q", s)
			}
		}
	}
	if len(c.bindPath) > maxConfigBinds {
		return fmt.Errorf("%d binds", len(c.bindPath))
	}
	return nil
}

func FuzzConfigTOML(f *testing.F) {
	shipped, _ := os.ReadFile("etc/minirun.toml")
	for _, s := range []string{
		"",
		everyKeyTOML,
		string(shipped),
		"allow_setuid = true\nallow_setuid = false\n",
		"bind_path = " + strings.Repeat("[", 10000),
		"\xef\xbb\xbfmount_dev = \"host\"",
		"mount_dev = \"ho\x00st\"",
		"allow_container = [\"sif\", 1]",
		"[users]\nalice = [\"CAP_NET_RAW\"]\n",
		"mount_dev = \"\"\"host\"\"\"\nbind_path = ['''/a''', \"/b:/c\"]",
		"ALLOW_SETUID = false",
		"mount_dev.x = 1",
		"max_loop_devices = 0x7fffffffffffffff",
		"bind_path = [\"/caf\\u00e9\", \"/a\\\"b:/c\\\\d\", '/x y']\nlimit_container_owners = [\"\ufeff\", \"\u00e9\"]",
		"limit_container_paths = [\"/srv/images\", \"/srv/images2\"]\nkdf_max_memory_mib = 0o777",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) > configFileMaxSize {
			// Oversized input is refused up front; fuzzing it adds nothing.
			return
		}
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		c, err := parseConfig(testConfigName, data)
		runtime.ReadMemStats(&after)
		if alloc := after.TotalAlloc - before.TotalAlloc; alloc > 1<<20 {
			t.Fatalf("allocated %d bytes for %d input bytes", alloc, len(data))
		}
		if err != nil {
			if classOf(err) != eConfig {
				t.Fatalf("class %s: %v", classOf(err), err)
			}
			if msg := err.Error(); !strings.HasPrefix(msg, testConfigName+":") || strings.ContainsAny(msg, "\n\r") {
				t.Fatalf("message %q", msg)
			}
			return
		}
		if err := checkConfigInvariants(c); err != nil {
			t.Fatalf("accepted config breaks an invariant: %v", err)
		}
		text, err := formatConfig(c)
		if err != nil {
			t.Fatalf("format: %v", err)
		}
		again, err := parseConfig("canonical", text)
		if err != nil {
			t.Fatalf("canonical form rejected: %v\n%s", err, text)
		}
		if !reflect.DeepEqual(again, c) {
			t.Fatalf("canonical form re-parses differently:\n%+v\n%+v", c, again)
		}
	})
}
