// adversarial_test.go owns the adversarial suite of issue 5 (spec/security.md
// §4): every TestAdversarial* runs one group of the catalogue's attacks through
// the installed setuid binary, as the unprivileged test user (and as root where
// the attack is root's), asserts the exact safe outcome, and then checks the
// invariants INV-1…INV-8 (loop devices, host mounts, leftover processes, new
// root-owned files, host file checksums, Go crash text, kernel log). It reuses
// integration_test.go's setup (itIntegration), result type, error check and
// leak check; its own fixtures are hostile images, a static helper program and
// a second install whose admin files it may break.
package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	mrand "math/rand/v2"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// advHelperSrc is a small static program (stdlib only) copied into the host
// prefix and into the hostile image. It does what busybox cannot: raw
// ioctls, ptrace and /proc attacks with exact errnos, execve with argc 0 or
// a raw environment, and exec under resource limits, closed fds or a umask.
const advHelperSrc = `package main

import (
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"
	"unsafe"
)

func errText(e error) string {
	if e == nil {
		return "ok"
	}
	if en, ok := e.(syscall.Errno); ok {
		if en == 0 {
			return "ok"
		}
		return "errno " + strconv.Itoa(int(en)) + " (" + en.Error() + ")"
	}
	return e.Error()
}

func die(f string, a ...any) {
	fmt.Fprintf(os.Stderr, "advhelper: "+f+"\n", a...)
	os.Exit(121)
}

// execv runs PROG with the argv that follows it (argv may be empty).
func execv(args []string, env []string) {
	if len(args) < 1 {
		die("missing PROG")
	}
	err := syscall.Exec(args[0], args[1:], env)
	die("exec %s: %v", args[0], err)
}

var resources = map[string]int{"nofile": 7, "nproc": 6, "fsize": 1, "stack": 3, "as": 9, "core": 4}

func limit(s string) uint64 {
	if s == "inf" {
		return ^uint64(0)
	}
	n, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		die("bad limit %q", s)
	}
	return n
}

func main() {
	if len(os.Args) < 2 {
		die("usage: advhelper MODE ...")
	}
	args := os.Args[2:]
	switch os.Args[1] {
	case "tiocsti":
		// The same request with high bits set must be refused as well.
		for _, req := range []uintptr{0x5412, 0x100005412} {
			c := byte('Q')
			_, _, e := syscall.Syscall(syscall.SYS_IOCTL, 0, req, uintptr(unsafe.Pointer(&c)))
			fmt.Printf("tiocsti %#x: %s\n", req, errText(e))
		}
	case "open":
		for _, p := range args {
			fd, err := syscall.Open(p, syscall.O_RDONLY|syscall.O_NONBLOCK|syscall.O_CLOEXEC, 0)
			if err == nil {
				syscall.Close(fd)
			}
			fmt.Printf("open %s: %s\n", p, errText(err))
		}
	case "attack":
		attack(args[0])
	case "exec":
		execv(args, os.Environ())
	case "execenv":
		data, err := os.ReadFile(args[0])
		if err != nil {
			die("%v", err)
		}
		env := strings.Split(strings.TrimSuffix(string(data), "\x00"), "\x00")
		execv(args[1:], env)
	case "rlimit":
		res, ok := resources[args[0]]
		if !ok {
			die("unknown resource %q", args[0])
		}
		lim := syscall.Rlimit{Cur: limit(args[1]), Max: limit(args[2])}
		// syscall.Exec allocates. Under a small RLIMIT_AS the helper's own
		// heap may not map more address space, so it is grown (and the
		// memory given back to it) first: Go's runtime reserves over a
		// gigabyte at start, and a fresh arena after the limit is fatal.
		runtime.KeepAlive(make([]byte, 8<<20))
		runtime.GC()
		// The runtime starts its poller with the first timer, and the GC
		// just now may have its scavenger set one while this thread heads
		// for the exec: under RLIMIT_NOFILE 3 that epoll_create fails and
		// the helper's own crash text lands in the output being checked.
		// A timer set here starts the poller while there is room for it.
		time.AfterFunc(time.Hour, func() {})
		if err := syscall.Setrlimit(res, &lim); err != nil {
			die("setrlimit %s: %v", args[0], err)
		}
		execv(args[3:], os.Environ())
	case "close":
		for _, f := range strings.Split(args[0], ",") {
			n, _ := strconv.Atoi(f)
			syscall.Close(n)
		}
		execv(args[1:], os.Environ())
	case "fds":
		// Where this process's 0-2 point, written to a file opened after
		// the links were read.
		var b strings.Builder
		for fd := 0; fd <= 2; fd++ {
			l, err := os.Readlink("/proc/self/fd/" + strconv.Itoa(fd))
			if err != nil {
				l = "closed"
			}
			fmt.Fprintf(&b, "%d %s\n", fd, l)
		}
		if err := os.WriteFile(args[0], []byte(b.String()), 0o644); err != nil {
			die("%v", err)
		}
	case "umask":
		m, _ := strconv.ParseUint(args[0], 8, 32)
		syscall.Umask(int(m))
		execv(args[1:], os.Environ())
	default:
		die("unknown mode %q", os.Args[1])
	}
}

// attack tries, as whoever runs it, every way into process pid that
// spec/security.md A7 lists, printing one line per attempt:
// ALLOWED (the kernel let us in), DENIED (EPERM/EACCES), GONE or OTHER.
func attack(pid string) {
	runtime.LockOSThread()
	report := func(what string, e error) {
		switch {
		case e == nil || e == syscall.Errno(0):
			fmt.Println("ALLOWED", what)
		case e == syscall.EPERM || e == syscall.EACCES:
			fmt.Println("DENIED", what, errText(e))
		case e == syscall.ESRCH || e == syscall.ENOENT:
			fmt.Println("GONE", what, errText(e))
		default:
			fmt.Println("OTHER", what, errText(e))
		}
	}
	// open counts as a way in when the open succeeds, or for files whose
	// access check happens at read (syscall, io), when a read does: under
	// fs.suid_dumpable = 1 such files belong to the caller for the moment
	// between P0's setresuid and its PR_SET_DUMPABLE, but the read is still
	// refused while P0 holds capabilities the reader lacks.
	open := func(p string) {
		fd, err := syscall.Open(p, syscall.O_RDONLY|syscall.O_CLOEXEC|syscall.O_NONBLOCK, 0)
		if err == nil {
			if strings.HasSuffix(p, "/syscall") || strings.HasSuffix(p, "/io") {
				var b [256]byte
				_, err = syscall.Read(fd, b[:])
			}
			syscall.Close(fd)
		}
		report("open "+p, err)
	}
	const ptraceSeize = 0x4206
	tasks, _ := os.ReadDir("/proc/" + pid + "/task")
	for _, task := range tasks {
		tid, err := strconv.Atoi(task.Name())
		if err != nil {
			continue
		}
		_, _, e := syscall.RawSyscall6(syscall.SYS_PTRACE, ptraceSeize, uintptr(tid), 0, 0, 0, 0)
		report("ptrace-seize "+task.Name(), e)
		if e == 0 {
			syscall.RawSyscall6(syscall.SYS_PTRACE, syscall.PTRACE_DETACH, uintptr(tid), 0, 0, 0, 0)
		}
		_, _, e = syscall.RawSyscall6(syscall.SYS_PTRACE, syscall.PTRACE_ATTACH, uintptr(tid), 0, 0, 0, 0)
		report("ptrace-attach "+task.Name(), e)
		if e == 0 {
			var ws syscall.WaitStatus
			syscall.Wait4(tid, &ws, syscall.WALL, nil)
			syscall.RawSyscall6(syscall.SYS_PTRACE, syscall.PTRACE_DETACH, uintptr(tid), 0, 0, 0, 0)
		}
		for _, f := range []string{"mem", "environ", "auxv", "syscall"} {
			open("/proc/" + pid + "/task/" + task.Name() + "/" + f)
		}
	}
	for _, f := range []string{"mem", "environ", "auxv", "syscall", "io"} {
		open("/proc/" + pid + "/" + f)
	}
	// The descriptors themselves: a readlink or an open of /proc/PID/fd/N.
	// (Listing the numbers follows the directory's owner, the caller's for
	// that same moment; the links stay closed.)
	if names, err := os.ReadDir("/proc/" + pid + "/fd"); err == nil {
		for _, n := range names {
			_, err := os.Readlink("/proc/" + pid + "/fd/" + n.Name())
			if pe, ok := err.(*os.PathError); ok {
				err = pe.Err
			}
			report("readlink /proc/"+pid+"/fd/"+n.Name(), err)
			open("/proc/" + pid + "/fd/" + n.Name())
		}
	} else {
		if pe, ok := err.(*os.PathError); ok {
			err = pe.Err
		}
		report("list /proc/"+pid+"/fd", err)
	}
	var err error
	for _, d := range []string{"root", "cwd"} {
		fd, err := syscall.Open("/proc/"+pid+"/"+d+"/", syscall.O_RDONLY|syscall.O_DIRECTORY|syscall.O_CLOEXEC, 0)
		if err == nil {
			syscall.Close(fd)
		}
		report("open /proc/"+pid+"/"+d+"/", err)
	}
	_, err = os.Readlink("/proc/" + pid + "/exe")
	if pe, ok := err.(*os.PathError); ok {
		err = pe.Err
	}
	report("readlink /proc/"+pid+"/exe", err)
	nr := map[string]uintptr{"amd64": 310, "arm64": 270}[runtime.GOARCH]
	if nr != 0 {
		n, _ := strconv.Atoi(pid)
		var local [8]byte
		liov := syscall.Iovec{Base: &local[0], Len: 8}
		riov := struct{ base, len uintptr }{0x10000, 8}
		_, _, e := syscall.Syscall6(nr, uintptr(n), uintptr(unsafe.Pointer(&liov)), 1, uintptr(unsafe.Pointer(&riov)), 1, 0)
		if e == syscall.EFAULT {
			e = 0 // the permission check passed; only the address was bad
		}
		report("process_vm_readv", e)
	}
}
`

// advUser is a second unprivileged caller (nobody), for attacks that need
// one user to attack while another keeps working.
type advUser struct {
	name     string
	uid, gid uint32
	home     string
}

// advInstall is a second setuid install with its own compiled-in
// sysconfdir, whose admin files the tests break on purpose.
type advInstall struct {
	prefix string
	bin    string
	etc    string // the compiled-in sysconfdir
	dir    string // etc/minirun
}

type advEnv struct {
	*itEnv
	dir     string // root-owned 0755 under the integration prefix: hostile images
	work    string // user-owned scratch directory inside the user's home
	helper  string // static helper (host copy, 0755)
	hostile string // squashfs with setuid and file-capability binaries, device nodes, the helper
	secret  string // root 0600 squashfs whose /MARKER is "secret"
	e8      map[string]string
	other   advUser
	cfg     advInstall
	bins    []string // every setuid binary of ours, for the process check
}

var (
	advOnce sync.Once
	advErr  error
	adv     *advEnv
)

// advIntegration returns the adversarial fixtures (made once) and arms the
// invariant checks for t.
func advIntegration(t *testing.T) *advEnv {
	t.Helper()
	e := itIntegration(t)
	advOnce.Do(func() { adv, advErr = advSetup(e) })
	if advErr != nil {
		t.Fatalf("adversarial setup: %v", advErr)
	}
	advGuard(t, adv, true)
	return adv
}

// sub runs a subtest with both leak checks (integration_test.go's and ours).
func (a *advEnv) sub(t *testing.T, name string, fn func(t *testing.T)) {
	t.Helper()
	itSub(t, name, func(t *testing.T) {
		advGuard(t, a, false)
		fn(t)
	})
}

func advSetup(e *itEnv) (*advEnv, error) {
	start := time.Now()
	a := &advEnv{itEnv: e, dir: filepath.Join(e.prefix, "adv"), e8: map[string]string{}}
	if err := os.Mkdir(a.dir, 0o755); err != nil {
		return nil, err
	}
	os.Chmod(a.dir, 0o755)
	u := e.user

	// The user's scratch directory: cwd of user runs, home of symlinks,
	// FIFOs and sockets the user makes.
	a.work = filepath.Join(u.home, "adv-work-"+advRandHex(4))
	if err := os.Mkdir(a.work, 0o755); err != nil {
		return nil, err
	}
	itDirs = append(itDirs, a.work)
	if err := os.Chown(a.work, int(u.uid), int(u.gid)); err != nil {
		return nil, err
	}

	nobody, err := user.Lookup("nobody")
	if err != nil {
		return nil, fmt.Errorf("the second caller is nobody: %v", err)
	}
	uid, _ := strconv.ParseUint(nobody.Uid, 10, 32)
	gid, _ := strconv.ParseUint(nobody.Gid, 10, 32)
	a.other = advUser{name: "nobody", uid: uint32(uid), gid: uint32(gid), home: nobody.HomeDir}

	// The helper, built outside the module so go.mod does not steer it.
	src := filepath.Join(a.dir, "helper-src")
	if err := os.Mkdir(src, 0o755); err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(src, "go.mod"), []byte("module advhelper\n\ngo 1.22\n"), 0o644); err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(src, "main.go"), []byte(advHelperSrc), 0o644); err != nil {
		return nil, err
	}
	a.helper = filepath.Join(a.dir, "advhelper")
	cmd := exec.Command(itGoTool(), "build", "-trimpath", "-o", a.helper, ".")
	cmd.Dir = src
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOWORK=off", "GOFLAGS=-mod=mod")
	if out, err := cmd.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("build the helper: %v\n%s", err, out)
	}
	os.RemoveAll(src)
	if err := os.Chmod(a.helper, 0o755); err != nil {
		return nil, err
	}

	if err := a.makeHostileImage(); err != nil {
		return nil, err
	}
	if err := a.makeSmallImages(); err != nil {
		return nil, err
	}
	if err := a.makeConfigInstall(); err != nil {
		return nil, err
	}
	a.bins = []string{e.suid, e.nosuid, a.cfg.bin}
	fmt.Fprintf(os.Stderr, "adversarial setup took %v\n", time.Since(start).Round(time.Millisecond))
	return a, nil
}

// makeHostileImage builds, as root, the A5/E10/C10 image: the busybox root
// plus a 4755 root busybox, a 2755 one, a file-capability one, 0666 device
// nodes, the helper, and symlinks that point out of the image.
func (a *advEnv) makeHostileImage() error {
	root := filepath.Join(a.dir, "hostile-root")
	if out, err := exec.Command("sh", "testdata/mkrootfs.sh", root).CombinedOutput(); err != nil {
		return fmt.Errorf("mkrootfs.sh: %v\n%s", err, out)
	}
	bb := filepath.Join(root, "bin", "busybox")
	for _, d := range []string{"suid", "nodes"} {
		if err := os.Mkdir(filepath.Join(root, d), 0o755); err != nil {
			return err
		}
	}
	// Each copy is called busybox (its applet name comes from argv[0]).
	for _, c := range []struct {
		name string
		mode os.FileMode
	}{{"u", 0o755 | os.ModeSetuid}, {"g", 0o755 | os.ModeSetgid}, {"c", 0o755}} {
		if err := os.Mkdir(filepath.Join(root, "suid", c.name), 0o755); err != nil {
			return err
		}
		p := filepath.Join(root, "suid", c.name, "busybox")
		if err := itCopyFile(bb, p, 0o755); err != nil {
			return err
		}
		if err := os.Chmod(p, c.mode); err != nil {
			return err
		}
	}
	if out, err := exec.Command("setcap", "cap_setuid,cap_setgid,cap_dac_override,cap_sys_admin+ep", filepath.Join(root, "suid", "c", "busybox")).CombinedOutput(); err != nil {
		return fmt.Errorf("setcap (libcap2-bin): %v\n%s", err, out)
	}
	for _, n := range []struct {
		name         string
		mode         uint32
		major, minor uint32
	}{{"mem", unix.S_IFCHR, 1, 1}, {"null", unix.S_IFCHR, 1, 3}, {"sda", unix.S_IFBLK, 8, 0}} {
		p := filepath.Join(root, "nodes", n.name)
		if err := unix.Mknod(p, n.mode|0o666, int(unix.Mkdev(n.major, n.minor))); err != nil {
			return fmt.Errorf("mknod %s: %v", p, err)
		}
		if err := os.Chmod(p, 0o666); err != nil {
			return err
		}
	}
	if err := itCopyFile(a.helper, filepath.Join(root, "bin", "advhelper"), 0o755); err != nil {
		return err
	}
	for link, target := range map[string]string{"mnt": "/proc/sys/kernel", "linketc": "/etc"} {
		os.RemoveAll(filepath.Join(root, link))
		if err := os.Symlink(target, filepath.Join(root, link)); err != nil {
			return err
		}
	}
	a.hostile = filepath.Join(a.dir, "hostile.sqfs")
	if err := advSquash(root, a.hostile, 0o644); err != nil {
		return err
	}
	return os.RemoveAll(root)
}

// advSquash packs dir keeping owners, modes, device nodes and xattrs
// (file capabilities).
func advSquash(dir, dst string, mode os.FileMode) error {
	if out, err := exec.Command("mksquashfs", dir, dst, "-noappend", "-quiet", "-no-progress", "-xattrs").CombinedOutput(); err != nil {
		return fmt.Errorf("mksquashfs %s: %v\n%s", dir, err, out)
	}
	return os.Chmod(dst, mode)
}

// advTinyRoot makes a minimal busybox root with every mount point minirun
// needs and the given /MARKER.
func (a *advEnv) advTinyRoot(dir, marker string) error {
	for _, d := range []string{"bin", "etc", "proc", "sys", "dev", "tmp", "var/tmp", "home", "root"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			return err
		}
	}
	os.Chmod(filepath.Join(dir, "tmp"), 0o1777)
	if err := itCopyFile(filepath.Join(a.rootfs, "bin", "busybox"), filepath.Join(dir, "bin", "busybox"), 0o755); err != nil {
		return err
	}
	for _, app := range []string{"sh", "cat", "true", "touch", "ls", "echo", "id", "test", "grep", "sleep", "readlink", "env"} {
		if err := os.Symlink("busybox", filepath.Join(dir, "bin", app)); err != nil {
			return err
		}
	}
	files := map[string]string{"etc/passwd": "root:x:0:0:root:/root:/bin/sh\n", "etc/group": "root:x:0:\n",
		"etc/resolv.conf": "", "etc/hosts": "", "MARKER": marker + "\n"}
	for name, text := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(text), 0o644); err != nil {
			return err
		}
	}
	return nil
}

// makeSmallImages builds the secret image (C6/C8) and the E8 images whose
// own mount points are symlinks or files.
func (a *advEnv) makeSmallImages() error {
	base := filepath.Join(a.dir, "tiny-secret")
	if err := a.advTinyRoot(base, "secret"); err != nil {
		return err
	}
	a.secret = filepath.Join(a.dir, "secret.sqfs")
	if err := advSquash(base, a.secret, 0o600); err != nil {
		return err
	}
	os.RemoveAll(base)
	variants := []struct {
		name, path, target string // target "" makes a regular file
	}{
		{"proc-symlink-root", "proc", "/"},
		{"proc-symlink-kernel", "proc", "/proc/sys/kernel"},
		{"proc-regular-file", "proc", ""},
		{"sys-symlink-root", "sys", "/"},
		{"dev-symlink-etc", "dev", "/etc"},
		{"dev-regular-file", "dev", ""},
		{"tmp-symlink-root", "tmp", "/"},
		{"tmp-symlink-etc", "tmp", "/etc"},
		{"tmp-symlink-kernel", "tmp", "/proc/sys/kernel"},
		{"devnull-symlink-core-pattern", "dev/null", "/proc/sys/kernel/core_pattern"},
		{"resolv-symlink-sysrq", "etc/resolv.conf", "/proc/sysrq-trigger"},
	}
	var wg sync.WaitGroup
	errs := make([]error, len(variants))
	for i, v := range variants {
		root := filepath.Join(a.dir, "e8-"+v.name)
		if err := a.advTinyRoot(root, "e8"); err != nil {
			return err
		}
		p := filepath.Join(root, v.path)
		os.RemoveAll(p)
		var err error
		if v.target == "" {
			err = os.WriteFile(p, nil, 0o644)
		} else {
			err = os.Symlink(v.target, p)
		}
		if err != nil {
			return err
		}
		img := root + ".sqfs"
		a.e8[v.name] = img
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = advSquash(root, img, 0o644)
			os.RemoveAll(root)
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

// makeConfigInstall installs a second setuid binary whose sysconfdir is its
// own prefix's etc, so tests can make its admin files insecure.
func (a *advEnv) makeConfigInstall() error {
	p, err := itPrefixDir()
	if err != nil {
		return err
	}
	c := advInstall{prefix: p, bin: filepath.Join(p, "bin", "minirun"), etc: filepath.Join(p, "etc"), dir: filepath.Join(p, "etc", "minirun")}
	for _, d := range []string{"bin", "etc", "etc/minirun", "images", "images2"} {
		if err := os.Mkdir(filepath.Join(p, d), 0o755); err != nil {
			return err
		}
		os.Chmod(filepath.Join(p, d), 0o755)
	}
	built := c.bin + ".build"
	cmd := exec.Command(itGoTool(), "build", "-trimpath", "-ldflags", "-s -w -X main.sysconfdir="+c.etc, "-o", built, ".")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build: %v\n%s", err, out)
	}
	if err := os.Rename(built, c.bin); err != nil {
		return err
	}
	if err := os.Chown(c.bin, 0, 0); err != nil {
		return err
	}
	if err := os.Chmod(c.bin, 0o755|os.ModeSetuid); err != nil {
		return err
	}
	for _, d := range []string{"images", "images2"} {
		if err := itCopyFile(a.sqfs, filepath.Join(p, d, "x.sqfs"), 0o644); err != nil {
			return err
		}
	}
	a.cfg = c
	return nil
}

func advRandHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// --- running minirun ---

type advWho int

const (
	advAsRoot advWho = iota
	advAsUser
	advAsOther // nobody
)

func (w advWho) String() string {
	return [...]string{"root", "user", "nobody"}[w]
}

// advRun says how to start one minirun.
type advRun struct {
	who     advWho
	bin     string   // default: the integration setuid install
	argv0   string   // default: bin
	env     []string // added to the caller's base environment (later wins)
	dir     string   // default: /root, the user's scratch dir, or the image dir
	stdin   *os.File // default: /dev/null
	extra   []*os.File
	ctty    bool     // new session with stdin as controlling terminal
	wrap    []string // helper mode and its arguments; the helper then execs minirun
	rawArgv []string // non-nil: minirun's whole argv, even empty (through the helper)
	timeout time.Duration
}

// advTracked holds the process groups (= sessions for ctty runs) of every
// process this suite started, for the leftover-process invariant.
var advTracked struct {
	sync.Mutex
	pgids []int
}

func advTrack(pid int) {
	advTracked.Lock()
	advTracked.pgids = append(advTracked.pgids, pid)
	advTracked.Unlock()
}

func (a *advEnv) baseEnv(w advWho) []string {
	switch w {
	case advAsUser:
		return a.itEnv.baseEnv(itAsUser)
	case advAsOther:
		return []string{"HOME=" + a.other.home, "USER=" + a.other.name, "LOGNAME=" + a.other.name,
			"PATH=/usr/local/bin:/usr/bin:/bin", "LANG=C.UTF-8", "TERM=dumb"}
	}
	return a.itEnv.baseEnv(itAsRoot)
}

func (a *advEnv) command(ctx context.Context, o advRun, args ...string) *exec.Cmd {
	bin := o.bin
	if bin == "" {
		bin = a.suid
	}
	argv := append([]string{bin}, args...)
	if o.argv0 != "" {
		argv[0] = o.argv0
	}
	if o.rawArgv != nil {
		argv = o.rawArgv
		if len(o.wrap) == 0 {
			o.wrap = []string{"exec"}
		}
	}
	path := bin
	if len(o.wrap) > 0 {
		path = a.helper
		argv = append(append(append([]string{a.helper}, o.wrap...), bin), argv...)
	}
	cmd := exec.CommandContext(ctx, path)
	cmd.Args = argv
	cmd.Env = append(a.baseEnv(o.who), o.env...)
	cmd.Dir = o.dir
	if cmd.Dir == "" {
		cmd.Dir = map[advWho]string{advAsRoot: "/root", advAsUser: a.work, advAsOther: a.dir}[o.who]
	}
	sys := &syscall.SysProcAttr{Setpgid: !o.ctty, Setsid: o.ctty, Setctty: o.ctty, Ctty: 0}
	switch o.who {
	case advAsUser:
		sys.Credential = &syscall.Credential{Uid: a.user.uid, Gid: a.user.gid, Groups: a.user.groups}
	case advAsOther:
		sys.Credential = &syscall.Credential{Uid: a.other.uid, Gid: a.other.gid, Groups: []uint32{}}
	}
	cmd.SysProcAttr = sys
	if o.stdin != nil {
		cmd.Stdin = o.stdin
	}
	cmd.ExtraFiles = o.extra
	cmd.WaitDelay = time.Second
	return cmd
}

// advResult is integration_test.go's itResult plus how long the run took.
type advResult struct {
	itResult
	took time.Duration
	hung bool
}

// exec runs one minirun to completion; it never calls t (usable from any
// goroutine).
func (a *advEnv) exec(o advRun, args ...string) (advResult, error) {
	if o.timeout == 0 {
		o.timeout = 20 * time.Second
	}
	ctx, cancel := context.WithTimeout(context.Background(), o.timeout)
	defer cancel()
	cmd := a.command(ctx, o, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	start := time.Now()
	if err := cmd.Start(); err != nil {
		return advResult{}, err
	}
	advTrack(cmd.Process.Pid)
	err := cmd.Wait()
	r := advResult{took: time.Since(start), hung: ctx.Err() != nil}
	r.stdout, r.stderr = stdout.String(), stderr.String()
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee):
		ws := ee.Sys().(syscall.WaitStatus)
		if ws.Signaled() {
			r.code = 128 + int(ws.Signal())
		} else {
			r.code = ws.ExitStatus()
		}
	default:
		return r, err
	}
	return r, nil
}

func (a *advEnv) run(t *testing.T, o advRun, args ...string) advResult {
	t.Helper()
	r, err := a.exec(o, args...)
	if err != nil {
		t.Fatalf("start minirun %q as %v: %v", advShort(args), o.who, err)
	}
	if r.hung {
		t.Fatalf("minirun %q as %v did not finish within %v (hang)\n%v", advShort(args), o.who, o.timeout, r.itResult)
	}
	advNoCrash(t, r.itResult, args)
	return r
}

// advShort keeps huge argument vectors readable in messages.
func advShort(args []string) []string {
	out := make([]string, 0, min(len(args), 12))
	for i, s := range args {
		if i == 10 {
			out = append(out, fmt.Sprintf("…(%d arguments)", len(args)))
			break
		}
		if len(s) > 120 {
			s = s[:120] + fmt.Sprintf("…(%d bytes)", len(s))
		}
		out = append(out, s)
	}
	return out
}

// advCrashText is INV-7: text only a crashed Go program prints.
var advCrashText = regexp.MustCompile(`panic:|fatal error:|goroutine |SIGSEGV|(?m)^runtime:`)

func advNoCrash(t *testing.T, r itResult, args []string) {
	t.Helper()
	if advCrashText.MatchString(r.stderr) || advCrashText.MatchString(r.stdout) {
		t.Errorf("minirun %q printed Go crash text (INV-7):\n%v", advShort(args), r)
	}
}

// ok requires exit 0 and an empty stderr; it returns stdout.
func (a *advEnv) ok(t *testing.T, o advRun, args ...string) string {
	t.Helper()
	r := a.run(t, o, args...)
	if r.code != 0 || r.stderr != "" {
		t.Errorf("minirun %q as %v: want success with nothing on stderr\n%v", advShort(args), o.who, r.itResult)
	}
	return r.stdout
}

// advMarker is the payload of runs that must be refused: it leaves a file
// behind if it ever runs (host /tmp is bound into the container).
func advMarker(t *testing.T) (path string, payload []string) {
	path = "/tmp/adv-ran-" + advRandHex(6)
	t.Cleanup(func() {
		if _, err := os.Lstat(path); err == nil {
			t.Errorf("the payload of a run that had to be refused ran (%s exists)", path)
			os.Remove(path)
		}
	})
	return path, []string{"/bin/touch", path}
}

// refuse runs args and requires the safe refusal: exit 255, exactly one
// ERROR:/FATAL: line holding every fragment, nothing on stdout, no crash
// text, within 2 s. When classes are given, a second run with --debug
// must end in one of them (spec/security.md classes).
func (a *advEnv) refuse(t *testing.T, o advRun, args []string, classes []string, frags ...string) string {
	t.Helper()
	r := a.run(t, o, args...)
	line := itWantError(t, r.itResult, frags...)
	if r.took > 2*time.Second {
		t.Errorf("minirun %q as %v took %v to refuse (limit 2 s)", advShort(args), o.who, r.took)
	}
	if len(classes) > 0 {
		if got := a.classOf(t, o, args); got != "" && !slices.Contains(classes, got) {
			t.Errorf("minirun %q as %v: class %s, want %s (line %q)", advShort(args), o.who, got, strings.Join(classes, " or "), line)
		}
	}
	return line
}

var advClassRE = regexp.MustCompile(`\[(E_[A-Z]+)\]$`)

// classOf reruns args with --debug after the subcommand and returns the
// class printed after the error line ("" when the error came before --debug
// was parsed, e.g. a bad option).
func (a *advEnv) classOf(t *testing.T, o advRun, args []string) string {
	t.Helper()
	if len(args) == 0 || !slices.Contains([]string{"exec", "run", "shell"}, args[0]) {
		return ""
	}
	dbg := append([]string{args[0], "--debug"}, args[1:]...)
	r := a.run(t, o, dbg...)
	lines := strings.Split(strings.TrimRight(r.stderr, "\n"), "\n")
	if m := advClassRE.FindStringSubmatch(lines[len(lines)-1]); m != nil {
		return m[1]
	}
	return ""
}

// --- invariants (spec/security.md §4.1) ---

type advSnapshot struct {
	state     []string // loop devices of our images, host mount points (INV-1, INV-3)
	rootFiles map[string]bool
	sums      map[string]string
	klogBad   int
	tracked   int
}

// advNoise are root-owned entries other engineers' concurrent test runs
// create in shared directories; they say nothing about minirun.
var advNoise = regexp.MustCompile(`^(bench|go-build|go-link|gopath|Test|Fuzz|fuzz|bash_tool|h-|minirun-it-|minirun-capsit-|minirun-bench|minirun-demo|cryptsetup|runc|hsperfdata)`)

func (a *advEnv) hostState() []string {
	state := itHostState()
	files, _ := filepath.Glob("/sys/block/loop*/loop/backing_file")
	for _, f := range files {
		b, _ := os.ReadFile(f)
		backing := strings.TrimSpace(string(b))
		if strings.HasPrefix(backing, a.cfg.prefix+"/") {
			state = append(state, "loop "+filepath.Base(filepath.Dir(filepath.Dir(f)))+" "+backing)
		}
	}
	mi, _ := os.ReadFile("/proc/1/mountinfo")
	for _, line := range strings.Split(string(mi), "\n") {
		if f := strings.Fields(line); len(f) > 4 {
			state = append(state, "pid1-mount "+f[4])
		}
	}
	slices.Sort(state)
	return state
}

// rootFiles lists root-owned entries where minirun must never create one
// (S7): the user's home and scratch dir (deep), and the shared temporary and
// runtime directories (top level). In the shared ones only root-owned
// entries with a non-root group count: a setuid-root process creates files
// with the caller's gid (its fsgid), while the root-owned files other
// engineers' concurrent runs leave there are root:root.
func (a *advEnv) rootFiles() map[string]bool {
	m := map[string]bool{}
	var walk func(dir string, depth int)
	walk = func(dir string, depth int) {
		entries, _ := os.ReadDir(dir)
		for _, e := range entries {
			p := filepath.Join(dir, e.Name())
			var st syscall.Stat_t
			if syscall.Lstat(p, &st) != nil {
				continue
			}
			if st.Uid == 0 {
				m[p] = true
			}
			if depth > 0 && e.IsDir() {
				walk(p, depth-1)
			}
		}
	}
	walk(a.user.home, 4)
	for _, d := range []string{"/tmp", "/var/tmp", "/dev/shm", "/run", "/", "/root"} {
		entries, _ := os.ReadDir(d)
		for _, e := range entries {
			if advNoise.MatchString(e.Name()) {
				continue
			}
			var st syscall.Stat_t
			if p := filepath.Join(d, e.Name()); syscall.Lstat(p, &st) == nil && st.Uid == 0 && st.Gid != 0 {
				m[p] = true
			}
		}
	}
	return m
}

func (a *advEnv) checksums() map[string]string {
	m := map[string]string{}
	for _, f := range []string{"/etc/passwd", "/etc/shadow", "/etc/group",
		"/proc/sys/kernel/core_pattern", "/proc/sys/kernel/hostname", "/proc/sys/kernel/domainname"} {
		data, err := os.ReadFile(f)
		sum := sha256.Sum256(data)
		m[f] = fmt.Sprintf("%x %v", sum[:8], err)
	}
	// The binaries are large: any write changes size, mtime or ctime.
	for _, f := range []string{a.suid, a.cfg.bin} {
		var st syscall.Stat_t
		err := syscall.Stat(f, &st)
		m[f] = fmt.Sprintf("size %d mode %o uid %d mtime %v ctime %v %v", st.Size, st.Mode, st.Uid, st.Mtim, st.Ctim, err)
	}
	entries, _ := os.ReadDir(filepath.Join(a.prefix, "etc"))
	for _, e := range entries {
		m["sysconfdir entry "+e.Name()] = "present"
	}
	return m
}

// advKlogBad counts kernel log lines that mean a kernel bug or an extfs
// parse (INV-8, C3).
var advKlogRE = regexp.MustCompile(`BUG:|Oops|KASAN|general protection|cut here|EXT4-fs \(loop|XFS \(loop`)

func advKlogBad() int {
	size, err := syscall.Klogctl(10, nil) // SYSLOG_ACTION_SIZE_BUFFER
	if err != nil || size <= 0 {
		return 0
	}
	buf := make([]byte, size)
	n, err := syscall.Klogctl(3, buf) // SYSLOG_ACTION_READ_ALL
	if err != nil {
		return 0
	}
	return len(advKlogRE.FindAllIndex(buf[:n], -1))
}

// isMinirun says whether exe is one of our binaries or the reaper that a
// --pid init and its waiting parent become once the payload runs (reaper.go).
func (a *advEnv) isMinirun(exe string) bool {
	return slices.Contains(a.bins, exe) || strings.HasPrefix(exe, "/memfd:minirun-init")
}

// leftovers lists live processes started by this suite since tracked, or
// running one of our setuid binaries or the --pid reaper (INV-4).
func (a *advEnv) leftovers(since int) []string {
	advTracked.Lock()
	groups := map[int]bool{}
	for _, g := range advTracked.pgids[since:] {
		groups[g] = true
	}
	advTracked.Unlock()
	var out []string
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		stat, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		i := bytes.LastIndexByte(stat, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(string(stat[i+1:]))
		if len(f) < 4 || f[0] == "Z" || f[0] == "X" {
			continue
		}
		pgrp, _ := strconv.Atoi(f[2])
		sid, _ := strconv.Atoi(f[3])
		exe, _ := os.Readlink("/proc/" + e.Name() + "/exe")
		if groups[pgrp] || groups[sid] || a.isMinirun(exe) {
			out = append(out, fmt.Sprintf("pid %d (%s) pgrp %d: %s", pid, strings.TrimSpace(string(stat[:i+1])), pgrp, exe))
		}
	}
	return out
}

func (a *advEnv) snapshot(withKlog bool) advSnapshot {
	advTracked.Lock()
	n := len(advTracked.pgids)
	advTracked.Unlock()
	s := advSnapshot{state: a.hostState(), rootFiles: a.rootFiles(), sums: a.checksums(), klogBad: -1, tracked: n}
	if withKlog {
		s.klogBad = advKlogBad()
	}
	return s
}

// advGuard checks INV-1…INV-5 at the end of t against a baseline taken now
// (loop devices, mounts and processes get 2 s to settle), and INV-8 (the
// kernel log, slow to read) when full is set: once per top-level test.
func advGuard(t *testing.T, a *advEnv, full bool) {
	before := a.snapshot(full)
	t.Cleanup(func() { a.checkInvariants(t, before, 2*time.Second) })
}

// checkInvariants reports every broken invariant on t and says whether all held.
func (a *advEnv) checkInvariants(t *testing.T, before advSnapshot, settle time.Duration) bool {
	t.Helper()
	ok := true
	fail := func(format string, args ...any) {
		t.Helper()
		ok = false
		t.Errorf(format, args...)
	}
	deadline := time.Now().Add(settle)
	for {
		state, left := a.hostState(), a.leftovers(before.tracked)
		if slices.Equal(before.state, state) && len(left) == 0 {
			break
		}
		if time.Now().After(deadline) {
			if !slices.Equal(before.state, state) {
				fail("INV-1/INV-3: loop devices or host mounts changed after %v:\nonly before: %q\nonly after: %q",
					settle, itSetMinus(before.state, state), itSetMinus(state, before.state))
			}
			if len(left) > 0 {
				fail("INV-4: processes left behind after %v:\n%s", settle, strings.Join(left, "\n"))
				for _, l := range left { // do not let them poison later tests
					var pid int
					fmt.Sscanf(l, "pid %d", &pid)
					syscall.Kill(pid, syscall.SIGKILL)
				}
			}
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	var created []string
	for p := range a.rootFiles() {
		if !before.rootFiles[p] {
			created = append(created, p)
		}
	}
	if len(created) > 0 {
		slices.Sort(created)
		fail("INV-5/S7: new root-owned files outside /run/minirun: %q", created)
	}
	after := a.checksums()
	for k, v := range before.sums {
		if after[k] != v {
			fail("INV-5: %s changed (%s -> %s)", k, v, after[k])
		}
	}
	if before.klogBad < 0 {
		return ok
	}
	if n := advKlogBad(); n > before.klogBad {
		fail("INV-8: %d new kernel log lines matching %s (see dmesg)", n-before.klogBad, advKlogRE)
	}
	return ok
}

// --- shared fixtures for single tests ---

// scratch makes a root-owned 0755 directory under the integration prefix
// (where the loop-device check looks), removed when t ends.
func (a *advEnv) scratch(t *testing.T, name string) string {
	t.Helper()
	d, err := os.MkdirTemp(a.dir, name+"-")
	if err != nil {
		t.Fatal(err)
	}
	os.Chmod(d, 0o755)
	t.Cleanup(func() { os.RemoveAll(d) })
	return d
}

// userPath names an entry in the user's scratch directory, removed when t
// ends; callers make it and hand it to the user with chownUser.
func (a *advEnv) userPath(t *testing.T, name string) string {
	t.Helper()
	p := filepath.Join(a.work, name)
	t.Cleanup(func() { os.RemoveAll(p) })
	return p
}

func (a *advEnv) chownUser(t *testing.T, p string) {
	t.Helper()
	if err := os.Lchown(p, int(a.user.uid), int(a.user.gid)); err != nil {
		t.Fatal(err)
	}
}

func advWrite(t *testing.T, p string, data []byte, mode os.FileMode) {
	t.Helper()
	if err := os.WriteFile(p, data, mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(p, mode); err != nil {
		t.Fatal(err)
	}
}

// advStatusField returns the value of one /proc/PID/status line.
func advStatusField(status, name string) string {
	for _, line := range strings.Split(status, "\n") {
		if v, ok := strings.CutPrefix(line, name+":"); ok {
			return strings.Join(strings.Fields(v), " ")
		}
	}
	return "<missing>"
}

// --- Group C: image files and paths ---

// advSIF is the layout of the known-good SIF that the hostile ones mutate.
type advSIF struct {
	good              []byte
	table, total      int
	part, free        int // byte offsets of the partition descriptor and of an unused slot
	partOff, partSize int64
}

func advParseSIF(b []byte) (advSIF, error) {
	le := binary.LittleEndian
	s := advSIF{good: b, table: int(le.Uint64(b[96:])), total: int(le.Uint64(b[88:])), part: -1, free: -1}
	for i := 0; i < s.total; i++ {
		d := s.table + i*sifDescriptorSize
		switch {
		case b[d+4] == 1 && int32(le.Uint32(b[d:])) == sifDataPartition:
			s.part = d
		case b[d+4] == 0 && s.free < 0:
			s.free = d
		}
	}
	if s.part < 0 || s.free < 0 {
		return s, fmt.Errorf("siftool SIF: no partition or no free slot")
	}
	s.partOff, s.partSize = int64(le.Uint64(b[s.part+17:])), int64(le.Uint64(b[s.part+25:]))
	return s, nil
}

// mutate returns a copy of the good SIF changed by fn.
func (s advSIF) mutate(fn func(b []byte)) []byte {
	b := slices.Clone(s.good)
	fn(b)
	return b
}

func advPut64(b []byte, off int, v int64) { binary.LittleEndian.PutUint64(b[off:], uint64(v)) }
func advPut32(b []byte, off int, v int32) { binary.LittleEndian.PutUint32(b[off:], uint32(v)) }

// addDescriptor copies the partition descriptor into the free slot with a
// new ID and the given window and partition type.
func (s advSIF) addDescriptor(b []byte, off, size int64, parttype int32) {
	copy(b[s.free:s.free+sifDescriptorSize], b[s.part:s.part+sifDescriptorSize])
	advPut32(b, s.free+5, 77)
	advPut64(b, s.free+17, off)
	advPut64(b, s.free+25, size)
	advPut64(b, s.free+33, size)
	advPut32(b, s.free+205, parttype)
}

type advImageCase struct {
	name    string
	data    []byte
	classes []string
	frags   []string
}

// hostileImages builds the C1-C3 catalogue from the siftool SIF and the
// bare squashfs.
func (a *advEnv) hostileImages(t *testing.T) []advImageCase {
	t.Helper()
	good, err := os.ReadFile(a.sifTool)
	if err != nil {
		t.Fatal(err)
	}
	s, err := advParseSIF(good)
	if err != nil {
		t.Fatal(err)
	}
	sq, err := os.ReadFile(a.sqfs)
	if err != nil {
		t.Fatal(err)
	}
	n := int64(len(good))
	total := int64(s.total)
	img, pol := []string{"E_IMAGE"}, []string{"E_IMAGE", "E_POLICY"}
	random := func(size int) []byte { b := make([]byte, size); rand.Read(b); return b }
	withMagic := random(1 << 20)
	copy(withMagic[32:], sifMagic)
	copy(withMagic[42:], sifVersion)
	sb := func(off int, v uint64, width int) []byte { // a SIF whose squashfs superblock field is changed
		return s.mutate(func(b []byte) {
			p := int(s.partOff) + off
			if width == 2 {
				binary.LittleEndian.PutUint16(b[p:], uint16(v))
			} else {
				binary.LittleEndian.PutUint64(b[p:], v)
			}
		})
	}
	bare := func(size int, at int, magic []byte) []byte {
		b := make([]byte, size)
		copy(b[at:], magic)
		return b
	}
	twoPrim := func() []byte { // a second, disjoint PrimSys partition appended at the end
		b := s.mutate(func([]byte) {})
		pad := (4096 - len(b)%4096) % 4096
		off := int64(len(b) + pad)
		b = append(b, make([]byte, pad)...)
		b = append(b, good[s.partOff:s.partOff+s.partSize]...)
		s.addDescriptor(b, off, s.partSize, sifPartPrimSys)
		return b
	}
	cases := []advImageCase{
		// C1: truncation, random bytes, absurd header counts.
		{"empty", nil, img, nil},
		{"first-64-bytes", good[:64], img, nil},
		{"first-127-bytes", good[:127], img, nil},
		{"first-128-bytes", good[:128], img, nil},
		{"truncated-in-table", good[:s.table+100], img, nil},
		{"truncated-in-partition", good[:s.partOff+4096], img, nil},
		{"random-10MiB", random(10 << 20), img, nil},
		{"random-with-sif-magic", withMagic, img, nil},
		{"total--1", s.mutate(func(b []byte) { advPut64(b, 88, -1) }), img, nil},
		{"total-2^31", s.mutate(func(b []byte) { advPut64(b, 88, 1<<31) }), img, nil},
		{"total-2^40", s.mutate(func(b []byte) { advPut64(b, 88, 1<<40) }), img, nil},
		{"total-10000000", s.mutate(func(b []byte) { advPut64(b, 88, 10000000) }), img, nil},
		{"total-0", s.mutate(func(b []byte) { advPut64(b, 88, 0) }), img, nil},
		{"table-size-2^62", s.mutate(func(b []byte) { advPut64(b, 104, 1<<62) }), img, nil},
		{"table-size-not-x585", s.mutate(func(b []byte) { advPut64(b, 104, total*585+1) }), img, nil},
		{"free-above-total", s.mutate(func(b []byte) { advPut64(b, 80, total+1) }), img, nil},
		{"table-past-end", s.mutate(func(b []byte) { advPut64(b, 96, n+4096) }), img, nil},
		{"table-in-header", s.mutate(func(b []byte) { advPut64(b, 96, 64) }), img, nil},
		{"table-offset-negative", s.mutate(func(b []byte) { advPut64(b, 96, -4096) }), img, nil},
		{"version-02", s.mutate(func(b []byte) { copy(b[42:], "02\x00") }), img, nil},
		{"descriptor-used-2", s.mutate(func(b []byte) { b[s.part+4] = 2 }), img, nil},
		{"descriptor-id-0", s.mutate(func(b []byte) { advPut32(b, s.part+5, 0) }), img, nil},
		{"duplicate-id", s.mutate(func(b []byte) {
			s.addDescriptor(b, s.partOff, 0, sifPartData)
			advPut32(b, s.free+5, int32(binary.LittleEndian.Uint32(b[s.part+5:])))
		}), img, nil},
		{"padding-below-size", s.mutate(func(b []byte) { advPut64(b, s.part+33, s.partSize-1) }), img, nil},
		// C2: partition windows.
		{"part-offset-past-end", s.mutate(func(b []byte) { advPut64(b, s.part+17, n+4096) }), img, []string{"out of bounds"}},
		{"part-offset-negative", s.mutate(func(b []byte) { advPut64(b, s.part+17, -4096) }), img, []string{"out of bounds"}},
		{"part-offset-2^63-100", s.mutate(func(b []byte) { advPut64(b, s.part+17, 1<<63-100); advPut64(b, s.part+25, 200) }), img, []string{"out of bounds"}},
		{"part-size-0", s.mutate(func(b []byte) { advPut64(b, s.part+25, 0); advPut64(b, s.part+33, 0) }), img, nil},
		{"part-size-past-end", s.mutate(func(b []byte) { advPut64(b, s.part+25, n-s.partOff+1); advPut64(b, s.part+33, n) }), img, []string{"out of bounds"}},
		{"part-size-2^62", s.mutate(func(b []byte) { advPut64(b, s.part+25, 1<<62); advPut64(b, s.part+33, 1<<62) }), img, []string{"out of bounds"}},
		{"part-size-negative", s.mutate(func(b []byte) { advPut64(b, s.part+25, -1) }), img, []string{"out of bounds"}},
		{"part-in-header", s.mutate(func(b []byte) { advPut64(b, s.part+17, 0) }), img, []string{"out of bounds"}},
		{"part-in-table", s.mutate(func(b []byte) { advPut64(b, s.part+17, int64(s.table+585)) }), img, []string{"out of bounds"}},
		{"part-whole-file", s.mutate(func(b []byte) { advPut64(b, s.part+17, 0); advPut64(b, s.part+25, n); advPut64(b, s.part+33, n) }), img, []string{"out of bounds"}},
		{"overlap-one-block", s.mutate(func(b []byte) { s.addDescriptor(b, s.partOff+s.partSize-4096, 4096, sifPartData) }), img, []string{"overlap"}},
		{"overlap-same-window", s.mutate(func(b []byte) { s.addDescriptor(b, s.partOff, s.partSize, sifPartData) }), img, []string{"overlap"}},
		// C3: what the descriptor claims against what the bytes are.
		{"fstype-ext3", s.mutate(func(b []byte) { advPut32(b, s.part+201, sifFsExt3) }), pol, nil},
		{"fstype-immuobj", s.mutate(func(b []byte) { advPut32(b, s.part+201, sifFsImmuObj) }), pol, nil},
		{"fstype-raw", s.mutate(func(b []byte) { advPut32(b, s.part+201, sifFsRaw) }), pol, nil},
		{"fstype-gocryptfs", s.mutate(func(b []byte) { advPut32(b, s.part+201, sifFsGocryptfsSquashfs) }), pol, nil},
		{"fstype-99", s.mutate(func(b []byte) { advPut32(b, s.part+201, 99) }), img, nil},
		{"fstype-encrypted-but-squashfs", s.mutate(func(b []byte) { advPut32(b, s.part+201, sifFsEncryptedSquashfs) }), img, nil},
		{"fstype-encrypted-garbage-luks", s.mutate(func(b []byte) {
			advPut32(b, s.part+201, sifFsEncryptedSquashfs)
			rand.Read(b[s.partOff : s.partOff+4096])
			copy(b[s.partOff:], luksMagic)
		}), pol, nil},
		{"parttype-data-only", s.mutate(func(b []byte) { advPut32(b, s.part+205, sifPartData) }), img, nil},
		{"parttype-overlay-only", s.mutate(func(b []byte) { advPut32(b, s.part+205, sifPartOverlay) }), img, nil},
		{"parttype-99", s.mutate(func(b []byte) { advPut32(b, s.part+205, 99) }), img, nil},
		{"two-primsys", twoPrim(), img, nil},
		{"arch-s390x", s.mutate(func(b []byte) { copy(b[s.part+209:], "11\x00") }), img, nil},
		{"squashfs-claimed-ext4-data", s.mutate(func(b []byte) {
			copy(b[s.partOff:], make([]byte, 2048))
			binary.LittleEndian.PutUint16(b[s.partOff+1080:], 0xEF53)
		}), pol, nil},
		{"squashfs-claimed-luks-data", s.mutate(func(b []byte) { copy(b[s.partOff:], luksMagic) }), pol, nil},
		{"squashfs-bytes-used-past-partition", sb(40, uint64(s.partSize)+1, 8), img, nil},
		{"squashfs-bytes-used-2^63", sb(40, 1<<63, 8), img, nil},
		{"squashfs-block-log-0", sb(22, 0, 2), img, nil},
		{"squashfs-block-log-30", sb(22, 30, 2), img, nil},
		{"squashfs-compression-0", sb(20, 0, 2), img, nil},
		{"squashfs-compression-99", sb(20, 99, 2), img, nil},
		// C3: bare files of other filesystems.
		{"bare-ext4", bare(64<<10, 1080, []byte{0x53, 0xef}), pol, nil},
		{"bare-xfs", bare(64<<10, 0, []byte("XFSB")), pol, nil},
		{"bare-btrfs", bare(128<<10, 65600, []byte("_BHRfS_M")), pol, nil},
		{"bare-vfat", append(bare(64<<10, 0, []byte{0xeb, 0x3c, 0x90, 'm', 'k', 'f', 's', '.', 'f', 'a', 't'})[:510], append([]byte{0x55, 0xaa}, make([]byte, 64<<10)...)...), pol, nil},
		{"bare-iso9660", bare(64<<10, 32769, []byte("CD001")), pol, nil},
		{"bare-luks", bare(64<<10, 0, luksMagic), pol, nil},
		{"bare-squashfs-truncated", sq[:len(sq)/2], img, nil},
		{"bare-squashfs-bytes-used-huge", func() []byte {
			b := slices.Clone(sq)
			binary.LittleEndian.PutUint64(b[40:], uint64(len(b))*4)
			return b
		}(), img, nil},
	}
	return cases
}

// TestAdversarialHostileSIF is catalogue C1-C3: truncated, random, lying and
// overlapping SIFs and other filesystems' files, as the user and as root.
// Each is refused with one E_IMAGE (or, for a filesystem minirun will not
// mount, E_POLICY) line within 2 s, with no loop device left and no extfs
// message in the kernel log.
func TestAdversarialHostileSIF(t *testing.T) {
	a := advIntegration(t)
	dir := a.scratch(t, "hostile")
	for _, c := range a.hostileImages(t) {
		p := filepath.Join(dir, c.name)
		advWrite(t, p, c.data, 0o644)
		for _, who := range []advWho{advAsUser, advAsRoot} {
			a.sub(t, c.name+"/"+who.String(), func(t *testing.T) {
				_, payload := advMarker(t)
				a.refuse(t, advRun{who: who}, append([]string{"exec", p}, payload...), c.classes, c.frags...)
			})
		}
	}
}

// TestAdversarialUnreadableImages is catalogue C6/C7: images the caller
// cannot read, reached directly, through symlinks and /proc magic links,
// and things that are not image files at all (devices, FIFO, socket,
// directories, /proc files). Never a format error for something unreadable
// (that would prove a root read), never a hang.
func TestAdversarialUnreadableImages(t *testing.T) {
	a := advIntegration(t)
	perm, usage, notFile := []string{"E_PERM"}, []string{"E_USAGE"}, []string{"E_IMAGE", "E_PERM"}

	linkSecret := a.userPath(t, "link-secret")
	linkShadow := a.userPath(t, "link-shadow")
	linkZero := a.userPath(t, "link-zero")
	fifo := a.userPath(t, "fifo")
	sock := a.userPath(t, "sock")
	empty := a.userPath(t, "empty-dir")
	for p, target := range map[string]string{linkSecret: a.secret, linkShadow: "/etc/shadow", linkZero: "/dev/zero"} {
		if err := os.Symlink(target, p); err != nil {
			t.Fatal(err)
		}
		a.chownUser(t, p)
	}
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	a.chownUser(t, fifo)
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	a.chownUser(t, sock)
	if err := os.Mkdir(empty, 0o755); err != nil {
		t.Fatal(err)
	}
	a.chownUser(t, empty)
	secretUnder := filepath.Join(a.data, "secret-dir", "img.sqfs")
	if err := itCopyFile(a.sqfs, secretUnder, 0o644); err != nil {
		t.Fatal(err)
	}
	defer os.Remove(secretUnder)

	// fd 3 for the magic-link cases: a readable image, and the secret image
	// opened by root (what a leaked privileged descriptor would look like).
	goodFD, err := os.Open(a.sqfs)
	if err != nil {
		t.Fatal(err)
	}
	defer goodFD.Close()
	secretFD, err := os.Open(a.secret)
	if err != nil {
		t.Fatal(err)
	}
	defer secretFD.Close()
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer pr.Close()
	defer pw.Close()

	cases := []struct {
		name    string
		path    string
		o       advRun
		classes []string
		frags   []string
	}{
		{"etc-shadow", "/etc/shadow", advRun{}, perm, []string{"permission denied"}},
		{"secret-0600", a.secret, advRun{}, perm, []string{"permission denied"}},
		{"below-0700-dir", secretUnder, advRun{}, perm, []string{"permission denied"}},
		{"symlink-to-secret", linkSecret, advRun{}, perm, []string{"permission denied"}},
		{"symlink-to-shadow", linkShadow, advRun{}, perm, []string{"permission denied"}},
		{"run-minirun-dir", stateDir, advRun{}, perm, []string{"permission denied"}},
		{"proc-self-fd-readable", "/proc/self/fd/3", advRun{extra: []*os.File{goodFD}}, usage, []string{"magic link"}},
		{"proc-self-fd-root-opened-secret", "/proc/self/fd/3", advRun{extra: []*os.File{secretFD}}, usage, []string{"magic link"}},
		{"dev-fd-root-opened-secret", "/dev/fd/3", advRun{extra: []*os.File{secretFD}}, usage, []string{"magic link"}},
		{"proc-thread-self-fd", "/proc/thread-self/fd/3", advRun{extra: []*os.File{secretFD}}, usage, []string{"magic link"}},
		{"proc-self-root", "/proc/self/root" + a.sqfs, advRun{}, usage, []string{"magic link"}},
		{"proc-self-cwd", "/proc/self/cwd/../../.." + a.sqfs, advRun{}, usage, []string{"magic link"}},
		{"proc-self-fd-0-pipe", "/proc/self/fd/0", advRun{stdin: pr}, usage, []string{"magic link"}},
		{"dev-stdin-pipe", "/dev/stdin", advRun{stdin: pr}, usage, []string{"magic link"}},
		{"dev-zero", "/dev/zero", advRun{}, notFile, nil},
		{"symlink-to-dev-zero", linkZero, advRun{}, notFile, nil},
		{"dev-loop0", "/dev/loop0", advRun{}, notFile, nil},
		{"dev-ptmx", "/dev/ptmx", advRun{}, notFile, nil},
		{"dev-tty-without-ctty", "/dev/tty", advRun{}, notFile, nil},
		{"fifo-without-writer", fifo, advRun{}, notFile, nil},
		{"unix-socket", sock, advRun{}, notFile, nil},
		{"proc-self-mem", "/proc/self/mem", advRun{}, notFile, nil},
		{"proc-self-environ", "/proc/self/environ", advRun{}, notFile, nil},
		{"proc-1-mem", "/proc/1/mem", advRun{}, notFile, nil},
		{"sys-file", "/sys/kernel/uevent_seqnum", advRun{}, notFile, nil},
		{"directory-not-a-root", empty, advRun{}, []string{"E_IMAGE"}, nil},
		{"host-root-directory", "/", advRun{}, notFile, nil},
	}
	for _, c := range cases {
		for _, who := range []advWho{advAsUser, advAsRoot} {
			if who == advAsRoot && slices.Equal(c.classes, perm) {
				continue // root may read these; nothing to refuse
			}
			a.sub(t, c.name+"/"+who.String(), func(t *testing.T) {
				o := c.o
				o.who = who
				_, payload := advMarker(t)
				a.refuse(t, o, append([]string{"exec", c.path}, payload...), c.classes, c.frags...)
			})
		}
	}
}

// TestAdversarialSymlinkRace is catalogue C8: while the user's symlink is
// swapped (RENAME_EXCHANGE) between a readable image and root's 0600 one,
// every run prints the readable image's marker or is refused as a
// permission problem; the secret marker never appears.
func TestAdversarialSymlinkRace(t *testing.T) {
	a := advIntegration(t)
	link, other := a.userPath(t, "race-link"), a.userPath(t, "race-other")
	if err := os.Symlink(a.sqfs, link); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(a.secret, other); err != nil {
		t.Fatal(err)
	}
	a.chownUser(t, link)
	a.chownUser(t, other)
	stopSwapping := advSwapLoop(link, other)
	// At least 1000 runs, as the catalogue asks of race tests.
	var good, denied int
	for range 1000 {
		r := a.run(t, advRun{who: advAsUser}, "exec", link, "/bin/cat", "/MARKER")
		switch {
		case r.code == 0 && r.stdout == "minirun-test\n":
			good++
		case r.code == 255 && strings.Contains(r.stderr, "permission denied"):
			denied++
		default:
			t.Errorf("racing symlink: want the readable image's marker or a permission error\n%v", r.itResult)
		}
		if r.took > time.Second {
			t.Logf("slow run: %v", r.took)
		}
		if strings.Contains(r.stdout, "secret") {
			t.Fatalf("S1 broken: the user read root's 0600 image through a racing symlink\n%v", r.itResult)
		}
	}
	swaps := stopSwapping()
	t.Logf("%d runs read the readable image, %d were refused, %d swaps", good, denied, swaps)
	if good == 0 || denied == 0 {
		t.Errorf("%d readable and %d refused runs: the race was not exercised both ways", good, denied)
	}
}

// advSwapLoop swaps paths a and b (RENAME_EXCHANGE) at random short
// intervals until the returned function is called; that stops the racer
// and says how many swaps took place (calling it again is harmless).
func advSwapLoop(a, b string) (stop func() int64) {
	done := make(chan struct{})
	var swaps atomic.Int64
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			select {
			case <-done:
				return
			default:
			}
			if unix.Renameat2(unix.AT_FDCWD, a, unix.AT_FDCWD, b, unix.RENAME_EXCHANGE) == nil {
				swaps.Add(1)
			}
			time.Sleep(time.Duration(mrand.IntN(200)) * time.Microsecond)
		}
	})
	return sync.OnceValue(func() int64 { close(done); wg.Wait(); return swaps.Load() })
}

// TestAdversarialBinds is catalogue C10: bind sources the user cannot read
// or reaches through magic links, destinations outside the root or in the
// kernel filesystems, an image symlink out of the root as destination
// parent, too many binds and paths with separators. Every case is refused
// or lands inside the root; host files stay untouched.
func TestAdversarialBinds(t *testing.T) {
	a := advIntegration(t)
	share := filepath.Join(a.data, "share")
	linkRoot := a.userPath(t, "link-root")
	if err := os.Symlink("/root", linkRoot); err != nil {
		t.Fatal(err)
	}
	a.chownUser(t, linkRoot)
	colon := a.userPath(t, "a:b")
	if err := os.Mkdir(colon, 0o755); err != nil {
		t.Fatal(err)
	}
	a.chownUser(t, colon)
	secretFD, err := os.Open(filepath.Join(a.data, "secret-dir"))
	if err != nil {
		t.Fatal(err)
	}
	defer secretFD.Close()
	perm, usage := []string{"E_PERM"}, []string{"E_USAGE"}
	cases := []struct {
		name    string
		bind    []string
		o       advRun
		img     string
		classes []string
		frags   []string
	}{
		{"source-symlink-to-root-home", []string{linkRoot + ":/mnt"}, advRun{}, "", perm, []string{"permission denied"}},
		{"source-unreadable-dir", []string{filepath.Join(a.data, "secret-dir") + ":/mnt"}, advRun{}, "", perm, []string{"permission denied"}},
		{"source-unreadable-file", []string{filepath.Join(a.data, "secret-file") + ":/etc/hosts"}, advRun{}, "", perm, []string{"permission denied"}},
		{"source-state-dir", []string{stateDir + ":/mnt"}, advRun{}, "", perm, []string{"permission denied"}},
		{"source-proc-self-fd-root-opened", []string{"/proc/self/fd/3:/mnt"}, advRun{extra: []*os.File{secretFD}}, "", usage, []string{"magic link"}},
		{"source-proc-self-root", []string{"/proc/self/root/root:/mnt"}, advRun{}, "", usage, nil},
		{"source-device", []string{"/dev/null:/mnt/x"}, advRun{}, "", usage, nil},
		{"dest-dotdot-etc", []string{share + ":../../etc"}, advRun{}, "", usage, nil},
		{"dest-relative", []string{share + ":etc"}, advRun{}, "", usage, nil},
		{"dest-unclean", []string{share + ":/a/../../etc"}, advRun{}, "", usage, nil},
		{"dest-proc", []string{share + ":/proc/x"}, advRun{}, "", usage, nil},
		{"dest-proc-sys-kernel", []string{share + ":/proc/sys/kernel"}, advRun{}, "", usage, nil},
		{"dest-sys", []string{share + ":/sys/x"}, advRun{}, "", usage, nil},
		{"dest-dev-shm", []string{share + ":/dev/shm/x"}, advRun{}, "", usage, nil},
		{"dest-root", []string{share + ":/"}, advRun{}, "", usage, nil},
		{"dest-dir-over-file", []string{share + ":/etc/passwd"}, advRun{}, "", []string{"E_USAGE", "E_IMAGE"}, nil},
		{"dest-file-over-dir", []string{filepath.Join(a.data, "file") + ":/etc"}, advRun{}, "", []string{"E_USAGE", "E_IMAGE"}, nil},
		{"dest-parent-image-symlink-to-proc", []string{share + ":/mnt/adv"}, advRun{}, a.hostile, []string{"E_USAGE", "E_IMAGE"}, nil},
		{"dest-image-symlink-to-proc", []string{filepath.Join(a.data, "file") + ":/mnt/core_pattern"}, advRun{}, a.hostile, []string{"E_USAGE", "E_IMAGE"}, nil},
		{"65-binds", slices.Repeat([]string{share + ":/mnt/x"}, 65), advRun{}, "", usage, []string{"too many binds"}},
		{"path-with-colon", []string{colon + ":/mnt"}, advRun{}, "", usage, nil},
		{"four-fields", []string{share + ":/mnt:ro:extra"}, advRun{}, "", usage, nil},
		{"bad-option", []string{share + ":/mnt:rx"}, advRun{}, "", usage, nil},
		{"newline-in-path", []string{share + "\nFATAL: forged:/mnt"}, advRun{}, "", usage, nil},
		{"nul-free-empty-source", []string{":/mnt"}, advRun{}, "", usage, nil},
	}
	for _, c := range cases {
		a.sub(t, c.name, func(t *testing.T) {
			img := c.img
			if img == "" {
				img = a.sifTool
			}
			args := []string{"exec"}
			for _, b := range c.bind {
				args = append(args, "-B", b)
			}
			_, payload := advMarker(t)
			o := c.o
			o.who = advAsUser
			line := a.refuse(t, o, append(append(args, img), payload...), c.classes, c.frags...)
			if strings.ContainsAny(line, "\n\x1b") {
				t.Errorf("error line not escaped: %q", line)
			}
		})
	}
	// Binds that are allowed must land inside the root and stay there.
	// Through the image's /linketc -> /etc: refused, or bound inside the
	// image's /etc; never on the host's.
	a.sub(t, "dest-through-image-symlink-stays-in-image", func(t *testing.T) {
		r := a.run(t, advRun{who: advAsUser}, "exec", "-B", share+":/linketc/adv-share", a.hostile,
			"/bin/sh", "-c", "cat /etc/adv-share/inside")
		if r.code != 0 {
			itWantError(t, r.itResult)
		} else if r.stdout != "bound-dir\n" {
			t.Errorf("bind through the image's /linketc -> /etc symlink: %v", r.itResult)
		}
		if _, err := os.Lstat("/etc/adv-share"); err == nil {
			os.Remove("/etc/adv-share")
			t.Errorf("a bind through an image symlink created /etc/adv-share on the host")
		}
	})
	a.sub(t, "64-binds", func(t *testing.T) {
		args := []string{"exec"}
		for i := range 64 {
			args = append(args, "-B", fmt.Sprintf("%s:/mnt/b%d", share, i))
		}
		out := a.ok(t, advRun{who: advAsUser}, append(args, a.sifTool, "/bin/sh", "-c", "cat /mnt/b0/inside /mnt/b63/inside")...)
		if out != "bound-dir\nbound-dir\n" {
			t.Errorf("64 binds: %q", out)
		}
	})
	a.sub(t, "readonly-bind-is-readonly", func(t *testing.T) {
		out := a.ok(t, advRun{who: advAsUser}, "exec", "-B", share+":/mnt/s:ro", a.sifTool,
			"/bin/sh", "-c", "(echo x > /mnt/s/new) 2>/dev/null && echo wrote; echo done")
		if out != "done\n" {
			t.Errorf("write into a :ro bind: %q", out)
		}
	})
}

// --- Group A: credentials and capabilities ---

// TestAdversarialImageContents is catalogue A5 (and A1's image binaries): an
// image made by root with a 4755 root busybox, a 2755 one, a file-capability
// one and 0666 char 1:1, char 1:3 and block 8:0 nodes. The user's payload
// gains no id and no capability from them (nosuid + no_new_privs), and no
// node opens (nodev), in both process models; root's payload cannot open
// the nodes either.
func TestAdversarialImageContents(t *testing.T) {
	a := advIntegration(t)
	uid, gid := strconv.Itoa(int(a.user.uid)), strconv.Itoa(int(a.user.gid))
	for _, mode := range [][]string{nil, {"--pid"}} {
		name := "default"
		if mode != nil {
			name = "pid"
		}
		a.sub(t, name+"/user", func(t *testing.T) {
			o := advRun{who: advAsUser}
			exec := func(cmd ...string) string {
				return a.ok(t, o, append(append(append([]string{"exec"}, mode...), a.hostile), cmd...)...)
			}
			if out := exec("/suid/u/busybox", "id", "-u"); out != uid+"\n" {
				t.Errorf("4755 root busybox: euid %q, want %s", out, uid)
			}
			if out := exec("/suid/g/busybox", "id", "-g"); out != gid+"\n" {
				t.Errorf("2755 busybox: egid %q, want %s", out, gid)
			}
			status := exec("/suid/u/busybox", "cat", "/proc/self/status")
			if v := advStatusField(status, "Uid"); v != strings.Repeat(uid+" ", 3)+uid {
				t.Errorf("4755 root busybox: Uid %q", v)
			}
			status = exec("/suid/c/busybox", "cat", "/proc/self/status")
			for _, c := range []string{"CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"} {
				if v := advStatusField(status, c); v != "0000000000000000" {
					t.Errorf("file-capability busybox: %s = %s, want 0", c, v)
				}
			}
			if v := advStatusField(status, "NoNewPrivs"); v != "1" {
				t.Errorf("NoNewPrivs = %s", v)
			}
			out := exec("/bin/advhelper", "open", "/nodes/mem", "/nodes/null", "/nodes/sda")
			for _, n := range []string{"mem", "null", "sda"} {
				if !strings.Contains(out, "open /nodes/"+n+": errno 13 ") {
					t.Errorf("image device node %s: want EACCES (nodev), got %q", n, out)
				}
			}
		})
	}
	a.sub(t, "root", func(t *testing.T) {
		out := a.ok(t, advRun{who: advAsRoot}, "exec", a.hostile, "/bin/advhelper", "open", "/nodes/mem", "/nodes/sda")
		for _, n := range []string{"mem", "sda"} {
			if !strings.Contains(out, "open /nodes/"+n+": errno 13 ") {
				t.Errorf("root opening image node %s: want EACCES (nodev), got %q", n, out)
			}
		}
	})
}

// TestAdversarialRoles is catalogue A8: identity options and an invocation
// that mimics the PID-namespace init (argv[0] "minirun-init", fd 3 the
// binary, fd 4 a descriptor of /run/minirun, fd 5 a plan asking for root
// and every capability). All are refused or ordinary; nothing runs as root.
func TestAdversarialRoles(t *testing.T) {
	a := advIntegration(t)
	u := advRun{who: advAsUser}
	for _, flags := range [][]string{{"--uid", "0"}, {"--gid", "0"}, {"--uid", "4294967295"}, {"--uid", "-1"},
		{"--groups", "0"}, {"--netns", "/proc/1/ns/net"}, {"--userns", "9"}, {"--config", "/tmp/x"}, {"--grants", "/tmp/x"},
		{"--keep-privs"}, {"--writable"}, {"--overlay", "/tmp"}, {"--security", "seccomp:unconfined"}} {
		a.sub(t, strings.Join(flags, "="), func(t *testing.T) {
			_, payload := advMarker(t)
			args := append(append(append([]string{"exec"}, flags...), a.sifTool), payload...)
			line := a.refuse(t, u, args, []string{"E_USAGE", "E_POLICY"})
			if flags[0] == "--keep-privs" && !strings.Contains(line, "requires root") {
				t.Errorf("--keep-privs as a user: %q, want capabilities.md's 'requires root privileges'", line)
			}
		})
	}
	a.sub(t, "add-caps-not-granted", func(t *testing.T) {
		r := a.run(t, u, "exec", "--add-caps", "CAP_SYS_ADMIN,CAP_SETUID", a.sifTool, "/bin/cat", "/proc/self/status")
		if r.code != 0 || strings.Count(r.stderr, "\n") != 1 || !strings.HasPrefix(r.stderr, "WARNING: not authorized") {
			t.Errorf("ungranted --add-caps: want the run with one WARNING line\n%v", r.itResult)
		}
		if v := advStatusField(r.stdout, "CapEff"); v != "0000000000000000" {
			t.Errorf("ungranted --add-caps: CapEff = %s", v)
		}
	})

	plan := `{"UID":0,"GID":0,"Groups":[0],"Caps":1099511627775,"NNP":false,"Argv":["/bin/touch","/tmp/adv-ran-mimic"],"Env":[],"Pwd":"/","Cwd":"/","Home":"/root","Umask":0}` + "\n"
	mimic := func(t *testing.T, tokenFlags int, prefix []string, args ...string) advResult {
		t.Helper()
		self, err := os.Open(a.suid)
		if err != nil {
			t.Fatal(err)
		}
		defer self.Close()
		token, err := os.OpenFile(stateDir, tokenFlags|unix.O_DIRECTORY, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer token.Close()
		pr, pw, err := os.Pipe()
		if err != nil {
			t.Fatal(err)
		}
		defer pr.Close()
		pw.WriteString(plan)
		pw.Close()
		t.Cleanup(func() {
			if _, err := os.Lstat("/tmp/adv-ran-mimic"); err == nil {
				os.Remove("/tmp/adv-ran-mimic")
				t.Errorf("the mimicked init ran its plan")
			}
		})
		o := advRun{who: advAsUser, extra: []*os.File{self, token, pr}, argv0: "minirun-init", wrap: prefix}
		return a.run(t, o, args...)
	}
	for _, tok := range []struct {
		name  string
		flags int
	}{{"opath-token", unix.O_PATH}, {"rdonly-token-from-root", os.O_RDONLY}} {
		a.sub(t, "init-mimic/"+tok.name, func(t *testing.T) {
			r := mimic(t, tok.flags, nil)
			if r.code != 255 || strings.Contains(r.stderr, "init") || !strings.Contains(r.stderr, "Usage") {
				t.Errorf("init mimic without arguments: want the ordinary usage text and 255\n%v", r.itResult)
			}
			r = mimic(t, tok.flags, nil, "exec", a.sifTool, "/bin/cat", "/proc/self/status")
			if r.code != 0 || advStatusField(r.stdout, "CapEff") != "0000000000000000" || advStatusField(r.stdout, "Uid") != strings.Repeat(strconv.Itoa(int(a.user.uid))+" ", 3)+strconv.Itoa(int(a.user.uid)) {
				t.Errorf("init mimic with a launch: want an ordinary unprivileged run\n%v", r.itResult)
			}
		})
		// PID 1 of a fresh PID namespace, as a user can arrange through an
		// unprivileged user namespace (where the setuid bit is ignored).
		a.sub(t, "init-mimic-pid1/"+tok.name, func(t *testing.T) {
			if _, err := exec.LookPath("unshare"); err != nil {
				t.Fatalf("unshare (util-linux) is needed: %v", err)
			}
			r := mimic(t, tok.flags, []string{"exec", "/usr/bin/unshare", "unshare", "--user", "--map-root-user", "--pid", "--fork", a.helper, "exec"})
			if strings.Contains(r.stderr, "init:") || r.code == 0 {
				t.Errorf("init mimic as PID 1: want an ordinary refusal\n%v", r.itResult)
			}
		})
	}
}

// TestAdversarialPtrace is catalogue A7: the user stops their own minirun at
// random points of the setup (SIGSTOP) and tries PTRACE_SEIZE/ATTACH on
// every thread, opens /proc/<pid>/{mem,environ,auxv,syscall,io,fd,root,cwd},
// the per-thread files, readlink of exe and process_vm_readv. While the
// process still runs minirun every attempt must fail with EPERM/EACCES.
func TestAdversarialPtrace(t *testing.T) {
	a := advIntegration(t)
	// A6: once the --pid payload runs, P0 (the waiting parent) and the init
	// hold only the caller's ids, no capability, and stay non-dumpable.
	a.sub(t, "pid-mode-after-setup", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		cmd := a.command(ctx, advRun{who: advAsUser}, "exec", "--pid", a.sifTool, "/bin/sh", "-c", "echo up; exec sleep 3")
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		advTrack(cmd.Process.Pid)
		defer func() { cmd.Process.Kill(); cmd.Wait() }()
		if line, _ := bufio.NewReader(stdout).ReadString('\n'); line != "up\n" {
			t.Fatalf("payload did not start: %q", line)
		}
		pid := cmd.Process.Pid
		procs := append([]int{pid}, advChildren(pid)...)
		uid := strconv.Itoa(int(a.user.uid))
		checked := 0
		for _, p := range procs {
			if !a.isMinirun(advExe(p)) {
				continue
			}
			checked++
			status, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", p))
			if v := advStatusField(string(status), "Uid"); v != strings.Repeat(uid+" ", 3)+uid {
				t.Errorf("minirun process %d while the payload runs: Uid %s, want the caller's in all four", p, v)
			}
			for _, c := range []string{"CapPrm", "CapEff"} {
				if v := advStatusField(string(status), c); v != "0000000000000000" {
					t.Errorf("minirun process %d while the payload runs: %s %s", p, c, v)
				}
			}
			attack := exec.Command(a.helper, "attack", strconv.Itoa(p))
			attack.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: a.user.uid, Gid: a.user.gid, Groups: a.user.groups}}
			out, err := attack.Output()
			if err != nil {
				t.Fatalf("attack helper: %v", err)
			}
			for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
				if strings.HasPrefix(line, "ALLOWED") || strings.HasPrefix(line, "OTHER") {
					t.Errorf("minirun process %d (non-dumpable after the drop): %s", p, line)
				}
			}
		}
		if checked != 2 {
			t.Errorf("checked %d minirun processes among %v, want P0 and the init", checked, procs)
		}
	})
	// The catalogue's race tests run at least 1000 iterations, under each
	// fs.suid_dumpable value (it decides who may ptrace a process whose
	// credentials changed): 3 × 170 × 2 modes.
	const perSysctl = 170
	oldDumpable, err := os.ReadFile("/proc/sys/fs/suid_dumpable")
	if err != nil {
		t.Fatal(err)
	}
	defer os.WriteFile("/proc/sys/fs/suid_dumpable", oldDumpable, 0o644)
	inSetup, attempts, iterations := 0, 0, 0
	for i := range 3 * perSysctl {
		if i%perSysctl == 0 {
			if err := os.WriteFile("/proc/sys/fs/suid_dumpable", []byte(strconv.Itoa(i/perSysctl)), 0o644); err != nil {
				t.Fatalf("set fs.suid_dumpable: %v", err)
			}
		}
		for _, mode := range [][]string{nil, {"--pid"}} {
			iterations++
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			cmd := a.command(ctx, advRun{who: advAsUser}, append(append(append([]string{"exec"}, mode...), a.sifTool), "/bin/sleep", "2")...)
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			advTrack(cmd.Process.Pid)
			pid := cmd.Process.Pid
			time.Sleep(time.Duration(mrand.IntN(12000)) * time.Microsecond)
			syscall.Kill(pid, syscall.SIGSTOP)
			if advWaitStopped(pid) {
				// Once every thread is stopped the exe cannot change: it
				// tells whether the payload has replaced minirun.
				var targets []int
				if slices.Contains(a.bins, advExe(pid)) {
					targets = append(targets, pid)
				}
				for _, child := range advChildren(pid) { // the --pid init
					if slices.Contains(a.bins, advExe(child)) {
						syscall.Kill(child, syscall.SIGSTOP)
						if advWaitStopped(child) {
							targets = append(targets, child)
						}
					}
				}
				for _, target := range targets {
					attack := exec.Command(a.helper, "attack", strconv.Itoa(target))
					attack.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: a.user.uid, Gid: a.user.gid, Groups: a.user.groups}}
					out, err := attack.Output()
					if err != nil {
						t.Fatalf("attack helper: %v", err)
					}
					if !slices.Contains(a.bins, advExe(target)) {
						continue // it became the payload meanwhile (cannot happen while stopped)
					}
					inSetup++
					for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
						attempts++
						if strings.HasPrefix(line, "ALLOWED") || strings.HasPrefix(line, "OTHER") {
							t.Errorf("iteration %d %v, fs.suid_dumpable %d: the user got into a privileged minirun process %d (stopped in setup): %s", i, mode, i/perSysctl, target, line)
						}
					}
				}
			}
			syscall.Kill(pid, syscall.SIGKILL)
			cmd.Wait()
			cancel()
		}
	}
	t.Logf("%d iterations: %d stops landed inside minirun's setup; %d attempts, all refused", iterations, inSetup, attempts)
	if inSetup < iterations/20 {
		t.Errorf("only %d of %d stops landed in minirun's setup: the attack was not exercised", inSetup, iterations)
	}

}

// advWaitStopped waits until every thread of pid is stopped (or pid is
// gone) and says whether it stopped. A thread inside execve finishes it
// first, so afterwards the exe is final.
func advWaitStopped(pid int) bool {
	for range 500 {
		tasks, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
		if err != nil {
			return false
		}
		all := len(tasks) > 0
		for _, task := range tasks {
			stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/stat", pid, task.Name()))
			i := bytes.LastIndexByte(stat, ')')
			if err != nil || i < 0 || len(stat) < i+3 {
				all = false
				continue
			}
			switch stat[i+2] {
			case 'T', 't':
			case 'Z', 'X':
				if task.Name() == strconv.Itoa(pid) {
					return false
				}
			default:
				all = false
			}
		}
		if all {
			return true
		}
		time.Sleep(time.Millisecond)
	}
	return false
}

func advExe(pid int) string {
	exe, _ := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid))
	return exe
}

// advChildren lists the children of pid.
func advChildren(pid int) []int {
	var out []int
	tasks, _ := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	for _, task := range tasks {
		data, _ := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/children", pid, task.Name()))
		for _, f := range strings.Fields(string(data)) {
			if n, err := strconv.Atoi(f); err == nil {
				out = append(out, n)
			}
		}
	}
	return out
}

// --- Group B: grant and configuration files ---

// resetAdmin gives the breakable install an empty, secure configuration
// directory now and again when t ends.
func (a *advEnv) resetAdmin(t *testing.T) {
	t.Helper()
	c := a.cfg
	restore := func() {
		os.RemoveAll(c.dir)
		os.Remove(filepath.Join(c.prefix, "hardlink.toml"))
		os.Remove(filepath.Join(c.prefix, "safe.toml"))
		os.Mkdir(c.dir, 0o755)
		os.Chmod(c.dir, 0o755)
		os.Chown(c.dir, 0, 0)
		os.Chmod(c.etc, 0o755)
	}
	restore()
	t.Cleanup(restore)
}

// adminFile writes one admin file of the breakable install, root 0644.
func (a *advEnv) adminFile(t *testing.T, name, text string) string {
	t.Helper()
	p := filepath.Join(a.cfg.dir, name)
	advWrite(t, p, []byte(text), 0o644)
	return p
}

// advSetACL gives uid read-write through a POSIX ACL (what setfacl -m
// u:UID:rw does), written as the raw system.posix_acl_access xattr.
func advSetACL(p string, uid uint32) error {
	le := binary.LittleEndian
	buf := le.AppendUint32(nil, 2) // version
	entry := func(tag, perm uint16, id uint32) {
		buf = le.AppendUint16(buf, tag)
		buf = le.AppendUint16(buf, perm)
		buf = le.AppendUint32(buf, id)
	}
	const undefined = ^uint32(0)
	entry(0x01, 6, undefined) // user::rw-
	entry(0x02, 6, uid)       // user:UID:rw-
	entry(0x04, 4, undefined) // group::r--
	entry(0x10, 6, undefined) // mask::rw-
	entry(0x20, 4, undefined) // other::r--
	return unix.Setxattr(p, "system.posix_acl_access", buf, 0)
}

// TestAdversarialAdminFiles is catalogue B1-B4 on an install of its own:
// capability.toml and minirun.toml writable by others, owned by the user,
// given an ACL, symlinked, hard-linked, a FIFO or a directory; the config
// directory owned by the user, 1777, or a symlink; malformed grants; the
// --config/--grants flags. Every non-root run is refused with one FATAL/ERROR
// line (E_CONFIG) and runs nothing; root is unaffected by a bad grant file
// (capabilities.md §2) but not by a bad minirun.toml.
func TestAdversarialAdminFiles(t *testing.T) {
	a := advIntegration(t)
	c := a.cfg
	userFile := a.userPath(t, "evil.toml")
	advWrite(t, userFile, []byte("[users]\n"+a.user.name+" = [\"CAP_SYS_ADMIN\"]\n"), 0o644)
	a.chownUser(t, userFile)
	userDir := a.userPath(t, "evil-dir")
	os.Mkdir(userDir, 0o755)
	advWrite(t, filepath.Join(userDir, "capability.toml"), []byte("[users]\n"+a.user.name+" = [\"CAP_SYS_ADMIN\"]\n"), 0o644)
	a.chownUser(t, userDir)
	a.chownUser(t, filepath.Join(userDir, "capability.toml"))
	grant := "[users]\n" + a.user.name + " = [\"CAP_NET_RAW\"]\n"

	type setup func(t *testing.T, name string)
	write := func(text string) setup {
		return func(t *testing.T, name string) { a.adminFile(t, name, text) }
	}
	chmod := func(mode os.FileMode) setup {
		return func(t *testing.T, name string) {
			p := a.adminFile(t, name, grant)
			os.Chmod(p, mode)
		}
	}
	hpcGID := a.user.groups[len(a.user.groups)-1]
	cases := []struct {
		name  string
		setup setup
		dirs  bool // breaks the directory: both files and root are affected
	}{
		{"world-writable", chmod(0o666), false},
		{"group-writable", func(t *testing.T, name string) {
			p := a.adminFile(t, name, grant)
			os.Chown(p, 0, int(hpcGID))
			os.Chmod(p, 0o664)
		}, false},
		{"owned-by-user", func(t *testing.T, name string) {
			p := a.adminFile(t, name, grant)
			os.Chown(p, int(a.user.uid), int(a.user.gid))
		}, false},
		{"acl-user-rw", func(t *testing.T, name string) {
			p := a.adminFile(t, name, grant)
			if err := advSetACL(p, a.user.uid); err != nil {
				t.Fatalf("set a POSIX ACL on %s (tmpfs without ACLs?): %v", p, err)
			}
		}, false},
		{"symlink-to-user-file", func(t *testing.T, name string) {
			os.Symlink(userFile, filepath.Join(c.dir, name))
		}, false},
		{"symlink-to-root-file", func(t *testing.T, name string) {
			safe := filepath.Join(c.prefix, "safe.toml")
			advWrite(t, safe, []byte(""), 0o644)
			os.Symlink(safe, filepath.Join(c.dir, name))
		}, false},
		{"hard-linked", func(t *testing.T, name string) {
			p := a.adminFile(t, name, "")
			if err := os.Link(p, filepath.Join(c.prefix, "hardlink.toml")); err != nil {
				t.Fatal(err)
			}
		}, false},
		{"fifo", func(t *testing.T, name string) { syscall.Mkfifo(filepath.Join(c.dir, name), 0o644) }, false},
		{"directory", func(t *testing.T, name string) { os.Mkdir(filepath.Join(c.dir, name), 0o755) }, false},
		{"oversize-2MiB", write("#" + strings.Repeat("x", 2<<20) + "\n"), false},
		{"dir-owned-by-user", func(t *testing.T, name string) {
			a.adminFile(t, name, "")
			os.Chown(c.dir, int(a.user.uid), int(a.user.gid))
		}, true},
		{"dir-1777", func(t *testing.T, name string) {
			a.adminFile(t, name, "")
			os.Chmod(c.dir, 0o1777)
		}, true},
		{"dir-symlink-to-user-dir", func(t *testing.T, name string) {
			os.RemoveAll(c.dir)
			os.Symlink(userDir, c.dir)
		}, true},
		{"sysconfdir-group-writable", func(t *testing.T, name string) {
			a.adminFile(t, name, "")
			os.Chmod(c.etc, 0o775)
		}, true},
	}
	// B4: malformed grant files (minirun.toml has its own parser tests).
	malformed := map[string]string{
		"syntax-error":      "[users]\n" + a.user.name + " = [\"CAP_NET_RAW\"\n",
		"duplicate-key":     "[users]\n" + a.user.name + " = []\n" + a.user.name + " = [\"CAP_NET_RAW\"]\n",
		"duplicate-table":   "[users]\n[users]\n",
		"string-not-array":  "[users]\n" + a.user.name + " = \"CAP_NET_RAW\"\n",
		"cap-ALL":           "[users]\n" + a.user.name + " = [\"ALL\"]\n",
		"unknown-cap":       "[users]\n" + a.user.name + " = [\"CAP_FOO\"]\n",
		"deep-arrays":       "[users]\n" + a.user.name + " = " + strings.Repeat("[", 10000) + strings.Repeat("]", 10000) + "\n",
		"nul-byte":          "[users]\n" + a.user.name + " = [\"CAP_NET_RAW\x00\"]\n",
		"invalid-utf8":      "[users]\n\xff\xfe = [\"CAP_NET_RAW\"]\n",
		"bom":               "\xef\xbb\xbf[users]\n",
		"unknown-table":     "[admins]\n" + a.user.name + " = [\"CAP_NET_RAW\"]\n",
		"many-entries-65":   "[users]\n" + a.user.name + " = [" + strings.Repeat("\"CAP_NET_RAW\",", 65) + "]\n",
		"escape-in-capname": "[users]\n" + a.user.name + " = [\"CAP_NET_R\\u0041W\\n\"]\n",
	}
	for name, text := range malformed {
		cases = append(cases, struct {
			name  string
			setup setup
			dirs  bool
		}{"grants-" + name, func(t *testing.T, file string) {
			if file == "capability.toml" {
				a.adminFile(t, file, text)
			} else {
				t.Skip("malformed-grant cases apply to capability.toml only")
			}
		}, false})
	}
	for _, file := range []string{"capability.toml", "minirun.toml"} {
		for _, cs := range cases {
			if strings.HasPrefix(cs.name, "grants-") && file != "capability.toml" {
				continue
			}
			a.sub(t, file+"/"+cs.name, func(t *testing.T) {
				a.resetAdmin(t)
				cs.setup(t, file)
				_, payload := advMarker(t)
				o := advRun{who: advAsUser, bin: c.bin}
				start := time.Now()
				a.refuse(t, o, append([]string{"exec", "--add-caps", "CAP_SYS_ADMIN", a.sifTool}, payload...), []string{"E_CONFIG"})
				if d := time.Since(start); d > time.Second {
					t.Errorf("refusal took %v (limit 1 s)", d)
				}
				root := advRun{who: advAsRoot, bin: c.bin}
				if file == "capability.toml" && !cs.dirs {
					if out := a.ok(t, root, "exec", a.sifTool, "/bin/cat", "/MARKER"); out != "minirun-test\n" {
						t.Errorf("root with a bad grant file in full mode: %q", out)
					}
				} else {
					_, payload := advMarker(t)
					a.refuse(t, root, append([]string{"exec", a.sifTool}, payload...), []string{"E_CONFIG"})
				}
			})
		}
	}
	a.sub(t, "empty-grants-valid", func(t *testing.T) {
		a.resetAdmin(t)
		a.adminFile(t, "capability.toml", "")
		a.adminFile(t, "minirun.toml", "")
		out := a.ok(t, advRun{who: advAsUser, bin: c.bin}, "exec", a.sifTool, "/bin/cat", "/proc/self/status")
		if v := advStatusField(out, "CapEff"); v != "0000000000000000" {
			t.Errorf("empty grant file: CapEff %s", v)
		}
	})
	a.sub(t, "secure-grant-works", func(t *testing.T) {
		// The control: the same grant, installed correctly, is honoured.
		a.resetAdmin(t)
		a.adminFile(t, "capability.toml", grant)
		out := a.ok(t, advRun{who: advAsUser, bin: c.bin}, "exec", "--add-caps", "CAP_NET_RAW", a.sifTool, "/bin/cat", "/proc/self/status")
		if v := advStatusField(out, "CapEff"); v != "0000000000002000" {
			t.Errorf("a secure grant of CAP_NET_RAW: CapEff %s", v)
		}
	})
}

// TestAdversarialConfigPolicy is catalogue B6, C5 and C9 on the breakable
// install: settings that must stop a run (loop limit 0, image kinds, caller-
// writable images, path and owner allow-lists, namespaces, strict
// capabilities, no setuid) and an admin bind of a directory the user cannot
// read, which must not show its content.
func TestAdversarialConfigPolicy(t *testing.T) {
	a := advIntegration(t)
	c := a.cfg
	u := advRun{who: advAsUser, bin: c.bin}
	own := a.userPath(t, "mine.sqfs")
	if err := itCopyFile(a.sqfs, own, 0o644); err != nil {
		t.Fatal(err)
	}
	a.chownUser(t, own)
	worldWritable := filepath.Join(c.prefix, "images", "0666.sqfs")
	if err := itCopyFile(a.sqfs, worldWritable, 0o666); err != nil {
		t.Fatal(err)
	}
	defer os.Remove(worldWritable)
	allowed, outside := filepath.Join(c.prefix, "images", "x.sqfs"), filepath.Join(c.prefix, "images2", "x.sqfs")
	escape := filepath.Join(c.prefix, "images", "escape")
	os.Remove(escape)
	if err := os.Symlink(outside, escape); err != nil {
		t.Fatal(err)
	}
	defer os.Remove(escape)
	outsideFD, err := os.Open(outside)
	if err != nil {
		t.Fatal(err)
	}
	defer outsideFD.Close()
	secretName := "adv-secret-" + advRandHex(4)
	advWrite(t, filepath.Join("/root", secretName), []byte("root only\n"), 0o600)
	defer os.Remove(filepath.Join("/root", secretName))

	cases := []struct {
		name, config string
		args         []string
		o            advRun
		classes      []string
		frags        []string
	}{
		{"max-loop-per-user-0", "max_loop_per_user = 0\n", []string{a.sqfs}, u, []string{"E_RESOURCE"}, []string{"loop"}},
		{"max-loop-devices-0", "max_loop_devices = 0\n", []string{a.sqfs}, u, []string{"E_RESOURCE"}, []string{"loop"}},
		{"allow-container-sif-vs-squashfs", "allow_container = [\"sif\"]\n", []string{a.sqfs}, u, []string{"E_POLICY"}, nil},
		{"allow-container-sif-vs-dir", "allow_container = [\"sif\"]\n", []string{a.rootfs}, u, []string{"E_POLICY"}, nil},
		{"allow-container-squashfs-vs-sif", "allow_container = [\"squashfs\"]\n", []string{a.sifTool}, u, []string{"E_POLICY"}, nil},
		{"user-writable-refuse-own", "user_writable_images = \"refuse\"\n", []string{own}, u, []string{"E_POLICY"}, nil},
		{"user-writable-refuse-0666", "user_writable_images = \"refuse\"\n", []string{worldWritable}, u, []string{"E_POLICY"}, nil},
		{"limit-paths-outside", "limit_container_paths = [\"" + c.prefix + "/images\"]\n", []string{outside}, u, []string{"E_POLICY"}, nil},
		{"limit-paths-dotdot", "limit_container_paths = [\"" + c.prefix + "/images\"]\n", []string{c.prefix + "/images/../images2/x.sqfs"}, u, []string{"E_POLICY"}, nil},
		{"limit-paths-prefix-string", "limit_container_paths = [\"" + c.prefix + "/images\"]\n", []string{c.prefix + "/images2/x.sqfs"}, u, []string{"E_POLICY"}, nil},
		{"limit-paths-symlink-out", "limit_container_paths = [\"" + c.prefix + "/images\"]\n", []string{escape}, u, []string{"E_POLICY"}, nil},
		{"limit-paths-magic-link", "limit_container_paths = [\"" + c.prefix + "/images\"]\n", []string{"/proc/self/fd/3"}, advRun{who: advAsUser, bin: c.bin, extra: []*os.File{outsideFD}}, []string{"E_USAGE", "E_POLICY"}, nil},
		{"limit-owners-root", "limit_container_owners = [\"root\"]\n", []string{own}, u, []string{"E_POLICY"}, nil},
		{"limit-groups-root", "limit_container_groups = [\"root\"]\n", []string{own}, u, []string{"E_POLICY"}, nil},
		{"namespaces-none-net", "allow_namespaces = []\n", []string{"--net", a.sqfs}, u, []string{"E_POLICY"}, nil},
		{"namespaces-none-pid", "allow_namespaces = []\n", []string{"--pid", a.sqfs}, u, []string{"E_POLICY"}, nil},
		{"strict-capabilities", "strict_capabilities = true\n", []string{"--add-caps", "CAP_SYS_ADMIN", a.sqfs}, u, []string{"E_POLICY"}, []string{"not authorized"}},
		{"no-setuid-squashfs", "allow_setuid = false\n", []string{a.sqfs}, u, nil, nil},
	}
	for _, cs := range cases {
		a.sub(t, cs.name, func(t *testing.T) {
			a.resetAdmin(t)
			a.adminFile(t, "minirun.toml", cs.config)
			_, payload := advMarker(t)
			a.refuse(t, cs.o, append(append([]string{"exec"}, cs.args...), payload...), cs.classes, cs.frags...)
		})
	}
	// The controls: what the same settings allow still runs.
	for _, cs := range []struct{ name, config, img string }{
		{"limit-paths-inside", "limit_container_paths = [\"" + c.prefix + "/images\"]\n", allowed},
		{"limit-owners-root-root-image", "limit_container_owners = [\"root\"]\n", allowed},
		{"allow-container-sif-sif", "allow_container = [\"sif\"]\n", a.sifTool},
		{"user-writable-sealed-copy", "user_writable_images = \"sealed-copy\"\n", own},
	} {
		a.sub(t, "allowed/"+cs.name, func(t *testing.T) {
			a.resetAdmin(t)
			a.adminFile(t, "minirun.toml", cs.config)
			if out := a.ok(t, u, "exec", cs.img, "/bin/cat", "/MARKER"); out != "minirun-test\n" {
				t.Errorf("%s: %q", cs.name, out)
			}
		})
	}
	a.sub(t, "admin-bind-of-unreadable-dir", func(t *testing.T) {
		a.resetAdmin(t)
		a.adminFile(t, "minirun.toml", "bind_path = [\"/root:/mnt/adv\"]\n")
		r := a.run(t, u, "exec", a.sifTool, "/bin/sh", "-c", "ls -a /mnt/adv 2>/dev/null; cat /mnt/adv/"+secretName+" 2>/dev/null; true")
		if strings.Contains(r.stdout, secretName) || strings.Contains(r.stdout, "root only") {
			t.Errorf("an admin bind showed the user root's home:\n%v", r.itResult)
		}
	})
}

// --- Group E: lifecycle, resources, environment ---

// TestAdversarialEnvironment is catalogue E5 (and B3's variables): Go
// runtime variables, loader variables, fake programs first in PATH, TMPDIR
// and HOME on symlinks, MINIRUN_*/XDG_*/HOME pointing at evil grants,
// entries without '=', duplicates, huge and numerous variables.
func TestAdversarialEnvironment(t *testing.T) {
	a := advIntegration(t)
	u := advRun{who: advAsUser}
	a.sub(t, "godebug-inittrace", func(t *testing.T) {
		o := u
		o.env = []string{"GODEBUG=inittrace=1"}
		r := a.run(t, o, "exec", a.sifTool, "/bin/echo", "ok")
		if r.code != 0 || r.stdout != "ok\n" {
			t.Fatalf("GODEBUG=inittrace=1: want the payload to run\n%v", r.itResult)
		}
		seen := map[string]int{}
		for _, line := range strings.Split(strings.TrimSpace(r.stderr), "\n") {
			if line == "" {
				continue
			}
			f := strings.Fields(line)
			if len(f) < 2 || f[0] != "init" {
				t.Errorf("unexpected stderr line: %q", line)
				continue
			}
			seen[f[1]]++
		}
		for pkg, n := range seen {
			if n > 1 {
				t.Errorf("init trace of %s printed %d times: GODEBUG reached the re-executed process", pkg, n)
			}
		}
	})
	a.sub(t, "go-variables", func(t *testing.T) {
		o := u
		o.env = []string{"GODEBUG=gctrace=1,madvdontneed=0", "GOGC=1", "GOMEMLIMIT=1", "GOMAXPROCS=512", "GOTRACEBACK=crash", "GOFLAGS=-x", "GOROOT=/evil"}
		gc := regexp.MustCompile(`^gc \d+ @`)
		r := a.run(t, o, "exec", a.sifTool, "/bin/echo", "ok")
		if r.code != 0 || r.stdout != "ok\n" {
			t.Errorf("Go variables: want the payload to run\n%v", r.itResult)
		}
		for _, line := range strings.Split(strings.TrimSpace(r.stderr), "\n") {
			if line != "" && !gc.MatchString(line) {
				t.Errorf("unexpected stderr line: %q", line)
			}
		}
		_, payload := advMarker(t)
		r = a.run(t, o, append([]string{"exec", filepath.Join(a.dir, "no-such.sif")}, payload...)...)
		lines := strings.Split(strings.TrimSpace(r.stderr), "\n")
		if r.code != 255 || !strings.HasPrefix(lines[len(lines)-1], "ERROR: ") {
			t.Errorf("refused run with GOTRACEBACK=crash: want 255 and an ERROR line\n%v", r.itResult)
		}
		if env := itEnvMap(a.run(t, o, "exec", a.sifTool, "/bin/env").stdout); env["GOGC"] != "" || env["GODEBUG"] != "" || env["GOROOT"] != "" || env["PATH"] == "" {
			t.Errorf("GO* variables reached the payload: %v", env)
		}
	})
	a.sub(t, "loader-variables", func(t *testing.T) {
		o := u
		o.env = []string{"LD_PRELOAD=/nonexistent/evil.so", "LD_AUDIT=/nonexistent/audit.so", "LD_LIBRARY_PATH=/nonexistent", "LD_DEBUG=all"}
		if out := a.ok(t, o, "exec", a.sifTool, "/bin/echo", "ok"); out != "ok\n" {
			t.Errorf("loader variables: %q", out)
		}
	})
	a.sub(t, "fake-programs-in-path", func(t *testing.T) {
		// A group grant makes minirun look the group up (getent); a
		// program that ran would leave a marker.
		a.resetAdmin(t)
		a.adminFile(t, "capability.toml", "[groups]\nmrtestgrp = [\"CAP_NET_RAW\"]\n")
		fake := a.userPath(t, "fakebin")
		os.Mkdir(fake, 0o755)
		marker := a.userPath(t, "fake-ran")
		os.Mkdir(marker, 0o777)
		os.Chmod(marker, 0o777)
		for _, prog := range []string{"getent", "mount", "umount", "losetup", "mksquashfs", "unsquashfs", "cryptsetup", "modprobe",
			"sh", "id", "busybox", "ldconfig", "true", "cat", "env", "newuidmap", "newgidmap", "setcap", "getcap", "capsh"} {
			advWrite(t, filepath.Join(fake, prog), []byte("#!/bin/sh\ntouch "+marker+"/"+prog+"\nexit 0\n"), 0o755)
			a.chownUser(t, filepath.Join(fake, prog))
		}
		a.chownUser(t, fake)
		o := advRun{who: advAsUser, bin: a.cfg.bin, env: []string{"PATH=" + fake + ":/usr/local/bin:/usr/bin:/bin"}}
		out := a.ok(t, o, "exec", "--add-caps", "CAP_NET_RAW", a.sifTool, "/bin/cat", "/proc/self/status")
		if v := advStatusField(out, "CapEff"); v != "0000000000002000" {
			t.Errorf("group grant through a faked PATH: CapEff %s, want 0000000000002000", v)
		}
		if ran, _ := os.ReadDir(marker); len(ran) > 0 {
			t.Errorf("minirun ran programs found through the caller's PATH: %v", ran)
		}
	})
	a.sub(t, "tmpdir-home-symlinks", func(t *testing.T) {
		tmp, home := a.userPath(t, "tmplink"), a.userPath(t, "homelink")
		os.Symlink("/etc", tmp)
		os.Symlink("/root", home)
		a.chownUser(t, tmp)
		a.chownUser(t, home)
		etcBefore, rootBefore := advDirNames("/etc"), advDirNames("/root")
		o := u
		o.env = []string{"TMPDIR=" + tmp, "HOME=" + home, "XDG_RUNTIME_DIR=" + tmp, "TMP=" + tmp, "TEMP=" + tmp}
		env := itEnvMap(a.ok(t, o, "exec", a.sifTool, "/bin/env"))
		if env["HOME"] != a.user.home {
			t.Errorf("HOME inside = %q, want the caller's home %s", env["HOME"], a.user.home)
		}
		if !slices.Equal(etcBefore, advDirNames("/etc")) || !slices.Equal(rootBefore, advDirNames("/root")) {
			t.Errorf("a run with TMPDIR/HOME on symlinks changed /etc or /root")
		}
	})
	a.sub(t, "minirun-xdg-home-grants", func(t *testing.T) {
		evil := a.userPath(t, "evil-etc")
		os.MkdirAll(filepath.Join(evil, "minirun"), 0o755)
		grant := "[users]\n" + a.user.name + " = [\"CAP_SYS_ADMIN\"]\n"
		for _, f := range []string{"minirun/capability.toml", "minirun/minirun.toml", "capability.toml"} {
			text := grant
			if strings.HasSuffix(f, "minirun.toml") {
				text = "allow_setuid = true\nstrict_capabilities = false\nbind_path = [\"/root:/mnt/root\"]\n"
			}
			advWrite(t, filepath.Join(evil, f), []byte(text), 0o644)
		}
		filepath.Walk(evil, func(p string, _ os.FileInfo, _ error) error { a.chownUser(t, p); return nil })
		o := u
		o.dir = filepath.Join(evil, "minirun")
		o.env = []string{"MINIRUN_SYSCONFDIR=" + evil, "MINIRUN_CONFIG=" + evil + "/minirun/minirun.toml",
			"MINIRUN_GRANTS=" + evil + "/minirun/capability.toml", "MINIRUN_CAPABILITY_FILE=" + evil + "/capability.toml",
			"XDG_CONFIG_HOME=" + evil, "HOME=" + evil, "SINGULARITY_CONFIGDIR=" + evil, "APPTAINER_CONFIGDIR=" + evil}
		r := a.run(t, o, "exec", "--add-caps", "CAP_SYS_ADMIN", a.sifTool, "/bin/sh", "-c", "cat /proc/self/status; ls /mnt/root 2>/dev/null | head -1")
		if r.code != 0 || !strings.HasPrefix(r.stderr, "WARNING: not authorized") || strings.Count(r.stderr, "\n") != 1 {
			t.Errorf("evil grants in the environment: want the run with one 'not authorized' WARNING\n%v", r.itResult)
		}
		if v := advStatusField(r.stdout, "CapEff"); v != "0000000000000000" {
			t.Errorf("evil grants in the environment: CapEff %s", v)
		}
	})
	a.sub(t, "raw-environment", func(t *testing.T) {
		// Entries without '=', duplicates (getenv sees the first), an empty
		// name and a GO* name that forces the re-exec.
		envFile := a.userPath(t, "env")
		raw := append(a.baseEnv(advAsUser), "NOEQUALS", "DUP=first", "DUP=second", "=emptyname", "GODEBUG=inittrace=1")
		advWrite(t, envFile, []byte(strings.Join(raw, "\x00")+"\x00"), 0o644)
		o := u
		o.wrap = []string{"execenv", envFile}
		r := a.run(t, o, "exec", a.sifTool, "/bin/env")
		if r.code != 0 {
			t.Fatalf("raw environment: want the payload to run\n%v", r.itResult)
		}
		lines := strings.Split(r.stdout, "\n")
		if slices.Contains(lines, "NOEQUALS") || slices.Contains(lines, "DUP=second") || !slices.Contains(lines, "DUP=first") || slices.Contains(lines, "=emptyname") {
			t.Errorf("payload environment from a malformed one: %q", lines)
		}
	})
	a.sub(t, "100000-variables", func(t *testing.T) {
		o := u
		for i := range 100000 {
			o.env = append(o.env, "V"+strconv.Itoa(i)+"=1")
		}
		_, payload := advMarker(t)
		a.refuse(t, o, append([]string{"exec", a.sifTool}, payload...), []string{"E_USAGE"}, "environment")
	})
	big := func(name string) string { return name + "=" + strings.Repeat("x", 131071-len(name)-1) }
	a.sub(t, "variable-near-128KiB", func(t *testing.T) {
		o := u
		o.env = []string{big("BIG")}
		if out := a.ok(t, o, "exec", a.sifTool, "/bin/sh", "-c", "echo ${#BIG}"); out != strconv.Itoa(131071-4)+"\n" {
			t.Errorf("a 128 KiB variable inside: length %q", out)
		}
	})
	a.sub(t, "variables-over-1MiB", func(t *testing.T) {
		o := u
		for i := range 9 {
			o.env = append(o.env, big("BIG"+strconv.Itoa(i)))
		}
		_, payload := advMarker(t)
		a.refuse(t, o, append([]string{"exec", a.sifTool}, payload...), []string{"E_USAGE"}, "environment")
	})
}

func advDirNames(dir string) []string {
	entries, _ := os.ReadDir(dir)
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names
}

// TestAdversarialStdioAndLimits is catalogue E4: stdin, stdout, stderr closed
// singly and together (the payload must find /dev/null there, never an
// admin file, the image or a device), and resource limits from tiny to
// unlimited. Each run succeeds or is refused with one E_RESOURCE line; the
// payload gets the caller's limits and umask back. Limits too small for the
// Go runtime to start may end it before main (SIGSEGV, or the runtime's own
// "fatal error" on address space), which happens before anything privileged.
func TestAdversarialStdioAndLimits(t *testing.T) {
	a := advIntegration(t)
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer pr.Close()
	defer pw.Close()
	for _, closed := range []string{"0", "1", "2", "0,1,2"} {
		a.sub(t, "closed-"+closed, func(t *testing.T) {
			report := "/tmp/adv-fds-" + advRandHex(6)
			defer os.Remove(report)
			o := advRun{who: advAsUser, stdin: pr, wrap: []string{"close", closed}}
			r := a.run(t, o, "exec", a.hostile, "/bin/advhelper", "fds", report)
			if r.code != 0 {
				t.Fatalf("fds %s closed: want the payload to run\n%v", closed, r.itResult)
			}
			data, err := os.ReadFile(report)
			if err != nil {
				t.Fatalf("payload report: %v", err)
			}
			targets := map[string]string{}
			for _, line := range strings.Split(string(data), "\n") {
				if fd, target, ok := strings.Cut(line, " "); ok {
					targets[fd] = target
				}
			}
			for _, fd := range []string{"0", "1", "2"} {
				want := "pipe:"
				if strings.Contains(closed, fd) {
					want = "/dev/null"
				}
				if !strings.HasPrefix(targets[fd], want) {
					t.Errorf("fds %s closed: payload fd %s is %q, want %s…", closed, fd, targets[fd], want)
				}
			}
			r = a.run(t, o, "exec", filepath.Join(a.dir, "no-such.sif"), "/bin/true")
			if r.code != 255 {
				t.Errorf("fds %s closed, missing image: want 255\n%v", closed, r.itResult)
			}
		})
	}
	cases := []struct {
		name       string
		wrap       []string
		mode       []string
		payload    string // sh -c script; its output must equal want on success
		want       string
		mustRun    bool // the spec says the run must succeed (P0 raises soft limits)
		tolerateGo bool // may die inside the Go runtime before main
	}{
		{"nofile-soft-8", []string{"rlimit", "nofile", "8", "4096"}, nil, "ulimit -n", "8\n", true, false},
		{"nofile-hard-8", []string{"rlimit", "nofile", "8", "8"}, nil, "true", "", false, false},
		{"nofile-hard-3", []string{"rlimit", "nofile", "3", "3"}, nil, "true", "", false, false},
		{"fsize-soft-0", []string{"rlimit", "fsize", "0", "inf"}, nil, "ulimit -f", "0\n", true, false},
		{"fsize-hard-0", []string{"rlimit", "fsize", "0", "0"}, nil, "true", "", false, false},
		{"nproc-1", []string{"rlimit", "nproc", "1", "1"}, nil, "true", "", false, false},
		{"nproc-1-pid", []string{"rlimit", "nproc", "1", "1"}, []string{"--pid"}, "true", "", false, false},
		{"core-unlimited", []string{"rlimit", "core", "inf", "inf"}, nil, "ulimit -c", "unlimited\n", true, false},
		{"core-unlimited-pid", []string{"rlimit", "core", "inf", "inf"}, []string{"--pid"}, "ulimit -c", "unlimited\n", true, false},
		{"as-1000000KiB", []string{"rlimit", "as", "1024000000", "1024000000"}, nil, "true", "", true, false},
		{"as-100000KiB", []string{"rlimit", "as", "102400000", "102400000"}, nil, "true", "", false, true},
		{"stack-16KiB", []string{"rlimit", "stack", "16384", "16384"}, nil, "true", "", false, true},
		{"umask-027", []string{"umask", "027"}, nil, "umask", "0027\n", true, false},
		{"umask-027-pid", []string{"umask", "027"}, []string{"--pid"}, "umask", "0027\n", true, false},
	}
	for _, c := range cases {
		a.sub(t, c.name, func(t *testing.T) {
			o := advRun{who: advAsUser, wrap: c.wrap}
			args := append(append(append([]string{"exec"}, c.mode...), a.sifTool), "/bin/sh", "-c", c.payload)
			r, err := a.exec(o, args...)
			if err != nil || r.hung {
				t.Fatalf("%s: %v (hung %v)\n%v", c.name, err, r.hung, r.itResult)
			}
			goDeath := r.code == 128+int(syscall.SIGSEGV) && r.stderr == "" ||
				r.code == 2 && strings.HasPrefix(r.stderr, "fatal error: failed to reserve")
			switch {
			case c.tolerateGo && goDeath:
				t.Logf("%s: the Go runtime could not start (tolerated, before main): %v", c.name, r.itResult)
			case r.code == 0:
				if r.stdout != c.want || r.stderr != "" {
					t.Errorf("%s: the payload saw %q (want %q), stderr %q", c.name, r.stdout, c.want, r.stderr)
				}
			case c.mustRun:
				t.Errorf("%s: want success (minirun raises its own soft limits)\n%v", c.name, r.itResult)
			default:
				advNoCrash(t, r.itResult, args)
				itWantError(t, r.itResult)
				if got := a.classOf(t, o, args); got != "" && got != "E_RESOURCE" {
					t.Errorf("%s: refused with class %s, want E_RESOURCE\n%v", c.name, got, r.itResult)
				}
			}
			if _, err := os.Stat(filepath.Join(a.work, "core")); err == nil {
				os.Remove(filepath.Join(a.work, "core"))
				t.Errorf("%s: a core file appeared in the caller's directory", c.name)
			}
		})
	}
}

// TestAdversarialKill is catalogue E1: SIGKILL of minirun at random points of
// the setup (0-30 ms after start), in the default and the --pid model. Loop
// devices, mounts and processes are back to the baseline within 2 s of each
// kill.
func TestAdversarialKill(t *testing.T) {
	a := advIntegration(t)
	for _, mode := range [][]string{nil, {"--pid"}} {
		name, n := "default", 50
		if mode != nil {
			name, n = "pid", 25
		}
		a.sub(t, name, func(t *testing.T) {
			broken := 0
			base := a.snapshot(false)
			for i := range n {
				ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
				cmd := a.command(ctx, advRun{who: advAsUser}, append(append(append([]string{"exec"}, mode...), a.sifTool), "/bin/sleep", "5")...)
				if err := cmd.Start(); err != nil {
					t.Fatal(err)
				}
				advTrack(cmd.Process.Pid)
				delay := time.Duration(mrand.IntN(30000)) * time.Microsecond
				time.Sleep(delay)
				cmd.Process.Kill()
				cmd.Wait()
				cancel()
				if !a.checkInvariants(t, base, 2*time.Second) {
					t.Errorf("the invariants above were broken by SIGKILL %d, %v after start", i, delay)
					if broken++; broken == 3 {
						t.Fatalf("stopping after %d broken iterations", broken)
					}
					// Let the killed leftovers release their devices.
					for deadline := time.Now().Add(3 * time.Second); time.Now().Before(deadline) && !slices.Equal(base.state, a.hostState()); {
						time.Sleep(20 * time.Millisecond)
					}
				}
			}
		})
	}
}

// TestAdversarialStop is catalogue E2: the user leaves runs SIGSTOPped at
// random setup points; another user's runs keep succeeding in bounded time
// (no global lock is held across a wait the caller controls); killing the
// stopped runs frees everything.
func TestAdversarialStop(t *testing.T) {
	a := advIntegration(t)
	var stopped []*exec.Cmd
	defer func() {
		for _, c := range stopped {
			c.Process.Kill()
			c.Wait()
		}
	}()
	for range 10 {
		cmd := a.command(context.Background(), advRun{who: advAsUser}, "exec", a.sifTool, "/bin/true")
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		advTrack(cmd.Process.Pid)
		time.Sleep(time.Duration(mrand.IntN(15000)) * time.Microsecond)
		cmd.Process.Signal(syscall.SIGSTOP)
		stopped = append(stopped, cmd)
	}
	other := advRun{who: advAsOther, timeout: 10 * time.Second}
	for i := range 3 {
		for _, img := range []string{a.sifTool, a.sqfs} {
			r := a.run(t, other, "exec", img, "/bin/cat", "/MARKER")
			if r.code != 0 || r.stdout != "minirun-test\n" {
				t.Errorf("run %d by %s while the user's runs are stopped: want success\n%v", i, a.other.name, r.itResult)
			}
			if r.took > 5*time.Second {
				t.Errorf("run %d by %s took %v while the user's runs are stopped", i, a.other.name, r.took)
			}
		}
	}
	for _, c := range stopped {
		c.Process.Kill()
		c.Wait()
	}
	stopped = nil
}

// TestAdversarialConcurrent is catalogue E3: 64 simultaneous launches by the
// user (each succeeds or is refused with one line, none hangs), then, on the
// breakable install with loop sharing off and max_loop_per_user = 4, 12
// overlapping launches of which at most 4 may hold a loop device.
func TestAdversarialConcurrent(t *testing.T) {
	a := advIntegration(t)
	launch := func(n int, o advRun, args ...string) []advResult {
		results := make([]advResult, n)
		errs := make([]error, n)
		var wg sync.WaitGroup
		for i := range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				results[i], errs[i] = a.exec(o, args...)
			}()
		}
		wg.Wait()
		if err := errors.Join(errs...); err != nil {
			t.Fatal(err)
		}
		return results
	}
	a.sub(t, "64-at-once", func(t *testing.T) {
		for _, img := range []string{a.sifTool, a.sqfs, a.rootfs} {
			ok := 0
			for i, r := range launch(64, advRun{who: advAsUser, timeout: 30 * time.Second}, "exec", img, "/bin/sh", "-c", "echo ok") {
				switch {
				case r.hung:
					t.Errorf("%s launch %d hung", img, i)
				case r.code == 0 && r.stdout == "ok\n":
					ok++
				default:
					advNoCrash(t, r.itResult, nil)
					itWantError(t, r.itResult)
				}
			}
			t.Logf("%s: %d of 64 concurrent launches succeeded", filepath.Base(img), ok)
		}
	})
	a.sub(t, "per-user-loop-limit", func(t *testing.T) {
		a.resetAdmin(t)
		a.adminFile(t, "minirun.toml", "shared_loop_devices = false\nmax_loop_per_user = 4\n")
		ok, refused := 0, 0
		for i, r := range launch(12, advRun{who: advAsUser, bin: a.cfg.bin, timeout: 30 * time.Second}, "exec", a.sqfs, "/bin/sleep", "1.5") {
			switch {
			case r.hung:
				t.Errorf("launch %d hung", i)
			case r.code == 0:
				ok++
			default:
				advNoCrash(t, r.itResult, nil)
				if line := itWantError(t, r.itResult); !strings.Contains(strings.ToLower(line), "loop") {
					t.Errorf("launch %d refused for another reason than the loop limit: %q", i, line)
				}
				refused++
			}
		}
		if ok > 4 {
			t.Errorf("max_loop_per_user = 4, but %d overlapping launches of the user each held a loop device (%d refused)", ok, refused)
		}
	})
}

// TestAdversarialArguments is catalogue C11: argc 0 and an empty argv[0], a
// 128 KiB argument, 60 000 and 100 000 arguments, escapes and invalid UTF-8
// in paths, and "--": words after IMAGE (and after --) reach the payload
// verbatim and are never read as options.
func TestAdversarialArguments(t *testing.T) {
	a := advIntegration(t)
	u := advRun{who: advAsUser}
	a.sub(t, "argc-0", func(t *testing.T) {
		r := a.run(t, advRun{who: advAsUser, rawArgv: []string{}})
		itWantError(t, r.itResult, "argv")
	})
	a.sub(t, "argv0-empty", func(t *testing.T) {
		_, payload := advMarker(t)
		r := a.run(t, advRun{who: advAsUser, rawArgv: append([]string{"", "exec", a.sifTool}, payload...)})
		itWantError(t, r.itResult, "argv")
	})
	a.sub(t, "argument-128KiB", func(t *testing.T) {
		arg := strings.Repeat("y", 131071)
		if out := a.ok(t, u, "exec", a.sifTool, "/bin/sh", "-c", `echo ${#1}`, "sh", arg); out != "131071\n" {
			t.Errorf("a 128 KiB argument: %q", out)
		}
	})
	a.sub(t, "60000-arguments", func(t *testing.T) {
		args := append([]string{"exec", a.sifTool, "/bin/sh", "-c", `echo $#`, "sh"}, slices.Repeat([]string{"a"}, 60000)...)
		if out := a.ok(t, u, args...); out != "60000\n" {
			t.Errorf("60000 arguments: %q", out)
		}
	})
	a.sub(t, "100000-arguments", func(t *testing.T) {
		_, payload := advMarker(t)
		args := append(append([]string{"exec", a.sifTool}, payload...), slices.Repeat([]string{"a"}, 100000)...)
		a.refuse(t, u, args, []string{"E_USAGE"}, "too many arguments")
	})
	a.sub(t, "escapes-in-path", func(t *testing.T) {
		for _, p := range []string{"/nonexistent/\x1b[2J\x1b]0;pwned\x07\xff\xfe.sif", "/nonexistent/a\nERROR: forged line", "/nonexistent/\u202eevil"} {
			_, payload := advMarker(t)
			line := a.refuse(t, u, append([]string{"exec", p}, payload...), []string{"E_USAGE"})
			if strings.ContainsAny(line, "\x1b\x07\n\r") || !advUTF8Valid(line) {
				t.Errorf("error line carries raw control bytes or invalid UTF-8: %q", line)
			}
		}
	})
	a.sub(t, "double-dash", func(t *testing.T) {
		for _, c := range []struct {
			args []string
			want string
		}{
			{[]string{"exec", a.sifTool, "/bin/echo", "--", "--add-caps", "ALL", "--pid"}, "-- --add-caps ALL --pid\n"},
			{[]string{"exec", "--", a.sifTool, "/bin/echo", "x"}, "x\n"},
			{[]string{"run", a.sifTool, "--", "--keep-privs", "-B", "/:/x"}, "runscript: -- --keep-privs -B /:/x\n"},
			{[]string{"exec", a.sifTool, "/bin/sh", "-c", `printf '%s|' "$@"`, "sh", "a\nb", "", "--uid=0", "\xff"}, "a\nb||--uid=0|\xff|"},
		} {
			if out := a.ok(t, u, c.args...); out != c.want {
				t.Errorf("minirun %q: payload printed %q, want %q", c.args, out, c.want)
			}
		}
	})
	a.sub(t, "option-after-double-dash-image", func(t *testing.T) {
		// "--" ends the options: a following "--keep-privs" is the image name.
		_, payload := advMarker(t)
		a.refuse(t, u, append([]string{"exec", "--", "--keep-privs"}, payload...), []string{"E_USAGE"})
	})
}

func advUTF8Valid(s string) bool { return strings.ToValidUTF8(s, "\uFFFD") == s }

// TestAdversarialDescriptors is catalogue E6: descriptors the caller passes
// in (7 = /, 8 = /etc, 9 = root's mount namespace) do not reach the payload,
// the payload's cwd stays inside the root however often it goes up, and
// --pwd through /proc/self/fd is refused.
func TestAdversarialDescriptors(t *testing.T) {
	a := advIntegration(t)
	var extra []*os.File
	for _, p := range []string{"/", "/etc", "/proc/self/ns/mnt"} {
		f, err := os.Open(p)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		extra = append(extra, f)
	}
	o := advRun{who: advAsUser, extra: append([]*os.File{nil, nil, nil, nil}, extra...)}
	for _, mode := range [][]string{nil, {"--pid"}} {
		name := "default"
		if mode != nil {
			name = "pid"
		}
		a.sub(t, name, func(t *testing.T) {
			exec := func(args ...string) string {
				return a.ok(t, o, append(append(append([]string{"exec"}, mode...), a.sifTool), args...)...)
			}
			if out := exec("/bin/ls", "/proc/self/fd"); out != "0\n1\n2\n3\n" {
				t.Errorf("descriptors in the payload (ls's own is 3): %q, want 0-3", out)
			}
			out := exec("/bin/sh", "-c", "cd /tmp; for i in $(seq 20); do cd ..; done; pwd; cat ./MARKER; readlink /proc/self/cwd")
			if out != "/\nminirun-test\n/\n" {
				t.Errorf("cwd after 20 × cd ..: %q", out)
			}
			for _, pwd := range []string{"/proc/self/fd/7", "/proc/self/fd/8", "/proc/1/cwd", "/proc/self/root/etc"} {
				_, payload := advMarker(t)
				a.refuse(t, o, append(append(append([]string{"exec"}, mode...), "--pwd", pwd, a.sifTool), payload...), []string{"E_USAGE"})
			}
		})
	}
}

// TestAdversarialMountPoints is catalogue E8: images whose /proc, /sys, /dev
// or /tmp is a symlink (to /, /etc, /proc/sys/kernel) or a regular file are
// refused with one E_IMAGE "not a directory" line; an image /dev/null
// pointing at core_pattern and /etc/resolv.conf at sysrq-trigger change
// nothing on the host.
func TestAdversarialMountPoints(t *testing.T) {
	a := advIntegration(t)
	corePattern, _ := os.ReadFile("/proc/sys/kernel/core_pattern")
	for _, name := range []string{"proc-symlink-root", "proc-symlink-kernel", "proc-regular-file", "sys-symlink-root",
		"dev-symlink-etc", "dev-regular-file", "tmp-symlink-root", "tmp-symlink-etc", "tmp-symlink-kernel"} {
		for _, mode := range [][]string{nil, {"--contain"}, {"--pid"}} {
			a.sub(t, name+"/"+strings.Join(append([]string{"default"}, mode...), ""), func(t *testing.T) {
				_, payload := advMarker(t)
				args := append(append(append([]string{"exec"}, mode...), a.e8[name]), payload...)
				a.refuse(t, advRun{who: advAsUser}, args, []string{"E_IMAGE"}, "not a directory")
			})
		}
	}
	for _, name := range []string{"devnull-symlink-core-pattern", "resolv-symlink-sysrq"} {
		for _, who := range []advWho{advAsUser, advAsRoot} {
			a.sub(t, name+"/"+who.String(), func(t *testing.T) {
				r := a.run(t, advRun{who: who}, "exec", a.e8[name], "/bin/sh", "-c",
					"echo '|/tmp/adv-pwned' > /dev/null; echo x > /etc/resolv.conf; test -c /dev/null && echo chardev")
				if r.code != 0 {
					itWantError(t, r.itResult)
				}
				if got, _ := os.ReadFile("/proc/sys/kernel/core_pattern"); !bytes.Equal(got, corePattern) {
					os.WriteFile("/proc/sys/kernel/core_pattern", corePattern, 0o644)
					t.Errorf("host core_pattern changed to %q", got)
				}
			})
		}
	}
}

// TestAdversarialTIOCSTI is catalogue E10: with the caller's terminal as
// stdin and controlling terminal, ioctl(0, TIOCSTI) and the same request
// with high bits set fail in the payload, for the user and for root (whose
// CAP_SYS_ADMIN would pass the kernel's own check), in both models; nothing
// reaches the terminal. The helper run directly proves the test can see an
// injection.
func TestAdversarialTIOCSTI(t *testing.T) {
	a := advIntegration(t)
	try := func(t *testing.T, o advRun, args ...string) (string, string) {
		t.Helper()
		master, slave := advOpenPty(t)
		if o.who == advAsUser {
			os.Chown(slave.Name(), int(a.user.uid), int(a.user.gid))
		}
		o.stdin, o.ctty = slave, true
		r := a.run(t, o, args...)
		slave.Close()
		master.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
		buf := make([]byte, 4096)
		n, _ := master.Read(buf)
		master.Close()
		if r.code != 0 {
			t.Errorf("TIOCSTI run %q: want exit 0\n%v", advShort(args), r.itResult)
		}
		return r.stdout, string(buf[:n])
	}
	a.sub(t, "control-on-host", func(t *testing.T) {
		out, tty := try(t, advRun{who: advAsRoot, bin: a.helper}, "tiocsti")
		if !strings.Contains(out, "tiocsti 0x5412: ok") || !strings.Contains(tty, "Q") {
			t.Fatalf("the helper cannot inject on the host, so the test proves nothing: %q, terminal %q", out, tty)
		}
	})
	for _, who := range []advWho{advAsUser, advAsRoot} {
		for _, mode := range [][]string{nil, {"--pid"}} {
			name := who.String() + "/default"
			if mode != nil {
				name = who.String() + "/pid"
			}
			a.sub(t, name, func(t *testing.T) {
				out, tty := try(t, advRun{who: who}, append(append(append([]string{"exec"}, mode...), a.hostile), "/bin/advhelper", "tiocsti")...)
				for _, req := range []string{"0x5412", "0x100005412"} {
					if !strings.Contains(out, "tiocsti "+req+": errno 1 ") {
						t.Errorf("ioctl(0, %s) inside: want EPERM, got %q", req, out)
					}
				}
				if strings.Contains(tty, "Q") {
					t.Errorf("a character was injected into the caller's terminal: %q", tty)
				}
			})
		}
	}
}

// advOpenPty opens a pseudo-terminal pair without cgo.
func advOpenPty(t *testing.T) (master, slave *os.File) {
	t.Helper()
	m, err := os.OpenFile("/dev/ptmx", os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	var n int
	rc, err := m.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var ioErr error
	rc.Control(func(fd uintptr) {
		if ioErr = unix.IoctlSetPointerInt(int(fd), unix.TIOCSPTLCK, 0); ioErr == nil {
			n, ioErr = unix.IoctlGetInt(int(fd), unix.TIOCGPTN)
		}
	})
	if ioErr != nil {
		t.Fatal(ioErr)
	}
	s, err := os.OpenFile("/dev/pts/"+strconv.Itoa(n), os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	return m, s
}
