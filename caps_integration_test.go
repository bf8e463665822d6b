// caps_integration_test.go checks issue 3 end to end through a real setuid
// install: spec/capabilities.md §8 row by row, the admin commands, the grant
// file's trust checks, and a capability actually working (ping) in a container.
package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// capsITNames is spec §4's table, written out again here so that the tests
// do not trust minirun's own name list: index = capability number.
var capsITNames = [...]string{
	"CHOWN", "DAC_OVERRIDE", "DAC_READ_SEARCH", "FOWNER", "FSETID", "KILL",
	"SETGID", "SETUID", "SETPCAP", "LINUX_IMMUTABLE", "NET_BIND_SERVICE",
	"NET_BROADCAST", "NET_ADMIN", "NET_RAW", "IPC_LOCK", "IPC_OWNER",
	"SYS_MODULE", "SYS_RAWIO", "SYS_CHROOT", "SYS_PTRACE", "SYS_PACCT",
	"SYS_ADMIN", "SYS_BOOT", "SYS_NICE", "SYS_RESOURCE", "SYS_TIME",
	"SYS_TTY_CONFIG", "MKNOD", "LEASE", "AUDIT_WRITE", "AUDIT_CONTROL",
	"SETFCAP", "MAC_OVERRIDE", "MAC_ADMIN", "SYSLOG", "WAKE_ALARM",
	"BLOCK_SUSPEND", "AUDIT_READ", "PERFMON", "BPF", "CHECKPOINT_RESTORE",
}

const (
	capsITUser    = "mrtest2" // "alice": non-root, supplementary group mrcapgrp
	capsITOther   = "mrtest"  // a second non-root user, not in mrcapgrp
	capsITGroup   = "mrcapgrp"
	capsITNoPrime = "mrtest2-noprimary" // mrtest2 without its primary gid in getgroups()
	capsITPayload = `^(Cap(Inh|Prm|Eff|Bnd|Amb)|NoNewPrivs):`
)

// capsITEnv is the shared install: one build, one image, the test users.
type capsITEnv struct {
	prefix  string // root-owned 0755 directory under /run (not nosuid, not sticky)
	bin     string // PREFIX/bin/minirun, root:root 04755
	confDir string // PREFIX/etc/minirun
	grant   string // confDir/capability.toml
	config  string // confDir/minirun.toml
	image   string // bare squashfs of testdata/mkrootfs.sh
	last    int    // /proc/sys/kernel/cap_last_cap
	full    uint64 // FULL: CapBnd & CapPrm of this (root) process, bits 0..last
	users   map[string]capsITAccount
}

type capsITAccount struct {
	uid, gid uint32
	groups   []uint32
	home     string
}

var (
	capsITOnce   sync.Once
	capsITShared *capsITEnv
	capsITErr    error
)

// capsITSetup builds and installs minirun once for every TestCapsIntegration*.
func capsITSetup(t *testing.T) *capsITEnv {
	t.Helper()
	if os.Geteuid() != 0 || os.Getuid() != 0 {
		t.Skip("needs real root: installs a setuid-root minirun and creates test users (CI runs as root)")
	}
	capsITOnce.Do(func() { capsITShared, capsITErr = capsITInstall() })
	if capsITErr != nil {
		t.Fatalf("capability integration setup: %v", capsITErr)
	}
	return capsITShared
}

func capsITInstall() (*capsITEnv, error) {
	st, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return nil, err
	}
	if v, _ := capsITStatusField(string(st), "NoNewPrivs"); v != "0" {
		return nil, errors.New("this test process has no_new_privs set: the setuid bit would do nothing")
	}
	for _, tool := range []string{"mksquashfs", "busybox", "capsh", "useradd", "groupadd", "usermod", "losetup", "go"} {
		if _, err := exec.LookPath(tool); err != nil {
			return nil, fmt.Errorf("%s not found (run 'make deps'): %v", tool, err)
		}
	}
	e := &capsITEnv{users: map[string]capsITAccount{}}

	// Host facts, never hard-coded (spec §9).
	lastText, err := os.ReadFile("/proc/sys/kernel/cap_last_cap")
	if err != nil {
		return nil, err
	}
	if e.last, err = strconv.Atoi(strings.TrimSpace(string(lastText))); err != nil || e.last < 0 || e.last > 63 {
		return nil, fmt.Errorf("cap_last_cap %q", lastText)
	}
	bnd, err := capsITHexField(string(st), "CapBnd")
	if err != nil {
		return nil, err
	}
	prm, err := capsITHexField(string(st), "CapPrm")
	if err != nil {
		return nil, err
	}
	e.full = bnd & prm & (1<<(e.last+1) - 1)

	if err := capsITEnsureAccounts(); err != nil {
		return nil, err
	}
	for _, name := range []string{"root", capsITUser, capsITOther} {
		a, err := capsITLookupAccount(name)
		if err != nil {
			return nil, err
		}
		e.users[name] = a
	}
	np := e.users[capsITUser]
	np.groups = nil
	for _, g := range e.users[capsITUser].groups {
		if g != np.gid {
			np.groups = append(np.groups, g)
		}
	}
	e.users[capsITNoPrime] = np

	capsITRemoveStalePrefixes()
	if e.prefix, err = os.MkdirTemp("/run", "minirun-capsit-"); err != nil {
		return nil, err
	}
	if err := os.Chmod(e.prefix, 0o755); err != nil {
		return nil, err
	}
	// TestMain (integration_test.go) removes this prefix when the tests end;
	// if this process is killed first, a later run removes it once this
	// process is gone.
	if err := os.WriteFile(filepath.Join(e.prefix, "owner.pid"), []byte(strconv.Itoa(os.Getpid())), 0o644); err != nil {
		return nil, err
	}
	e.confDir = filepath.Join(e.prefix, "etc", "minirun")
	e.grant = filepath.Join(e.confDir, "capability.toml")
	e.config = filepath.Join(e.confDir, "minirun.toml")
	e.bin = filepath.Join(e.prefix, "bin", "minirun")
	e.image = filepath.Join(e.prefix, "img.sqfs")
	for _, d := range []string{filepath.Dir(e.bin), filepath.Join(e.prefix, "etc"), e.confDir} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, err
		}
		if err := os.Chmod(d, 0o755); err != nil {
			return nil, err
		}
	}

	// The configuration directory is compiled in.
	build := exec.Command("go", "build", "-trimpath", "-ldflags",
		"-s -w -X main.sysconfdir="+filepath.Join(e.prefix, "etc"), "-o", e.bin, ".")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("go build: %v\n%s", err, out)
	}
	if err := os.Chown(e.bin, 0, 0); err != nil {
		return nil, err
	}
	// After chown, which clears the setuid bit; syscall.Chmod because
	// os.FileMode spells setuid as os.ModeSetuid, not 04000.
	if err := syscall.Chmod(e.bin, 0o4755); err != nil {
		return nil, err
	}

	// The image: busybox rootfs whose runscript prints the payload's status
	// lines (so `run` is checked too), as a bare squashfs.
	rootfs := filepath.Join(e.prefix, "rootfs")
	if out, err := exec.Command("sh", "testdata/mkrootfs.sh", rootfs).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("mkrootfs.sh: %v\n%s", err, out)
	}
	runscript := "#!/bin/sh\nexec grep -E '" + capsITPayload + "' /proc/self/status\n"
	if err := os.WriteFile(filepath.Join(rootfs, ".singularity.d", "runscript"), []byte(runscript), 0o755); err != nil {
		return nil, err
	}
	if out, err := exec.Command("mksquashfs", rootfs, e.image, "-noappend", "-quiet", "-no-progress", "-all-root").CombinedOutput(); err != nil {
		return nil, fmt.Errorf("mksquashfs: %v\n%s", err, out)
	}
	if err := os.Chmod(e.image, 0o644); err != nil {
		return nil, err
	}
	if err := os.RemoveAll(rootfs); err != nil {
		return nil, err
	}
	return e, nil
}

// capsITEnsureAccounts creates the test users and group if missing. Another
// test file may create mrtest at the same moment, so "exists" after a
// failed useradd counts as success, and a busy lock is retried.
func capsITEnsureAccounts() error {
	ensure := func(exists []string, create ...string) error {
		var out []byte
		for try := 0; try < 20; try++ {
			if exec.Command(exists[0], exists[1:]...).Run() == nil {
				return nil
			}
			var err error
			if out, err = exec.Command(create[0], create[1:]...).CombinedOutput(); err == nil {
				return nil
			}
			time.Sleep(100 * time.Millisecond)
		}
		return fmt.Errorf("%s: %s", strings.Join(create, " "), out)
	}
	for _, u := range []string{capsITOther, capsITUser} {
		if err := ensure([]string{"id", "-u", u}, "useradd", "-m", "-U", "-s", "/bin/sh", u); err != nil {
			return err
		}
	}
	if err := ensure([]string{"getent", "group", capsITGroup}, "groupadd", capsITGroup); err != nil {
		return err
	}
	out, err := exec.Command("id", "-nG", capsITUser).Output()
	if err != nil {
		return fmt.Errorf("id -nG %s: %v", capsITUser, err)
	}
	if !capsITContains(strings.Fields(string(out)), capsITGroup) {
		return ensure([]string{"sh", "-c", "id -nG " + capsITUser + " | grep -qw " + capsITGroup},
			"usermod", "-aG", capsITGroup, capsITUser)
	}
	return nil
}

func capsITLookupAccount(name string) (capsITAccount, error) {
	var a capsITAccount
	ids := map[string]*uint32{"-u": &a.uid, "-g": &a.gid}
	for flag, dst := range ids {
		out, err := exec.Command("id", flag, name).Output()
		if err != nil {
			return a, fmt.Errorf("id %s %s: %v", flag, name, err)
		}
		v, err := strconv.ParseUint(strings.TrimSpace(string(out)), 10, 32)
		if err != nil {
			return a, err
		}
		*dst = uint32(v)
	}
	out, err := exec.Command("id", "-G", name).Output()
	if err != nil {
		return a, fmt.Errorf("id -G %s: %v", name, err)
	}
	for _, f := range strings.Fields(string(out)) {
		v, err := strconv.ParseUint(f, 10, 32)
		if err != nil {
			return a, err
		}
		a.groups = append(a.groups, uint32(v))
	}
	pw, err := exec.Command("getent", "passwd", name).Output()
	if err != nil {
		return a, fmt.Errorf("getent passwd %s: %v", name, err)
	}
	fields := strings.Split(strings.TrimSpace(string(pw)), ":")
	if len(fields) < 7 {
		return a, fmt.Errorf("getent passwd %s: %q", name, pw)
	}
	a.home = fields[5]
	if st, err := os.Stat(a.home); err != nil || !st.IsDir() {
		a.home = "/"
	}
	return a, nil
}

// capsITRemoveStalePrefixes deletes installs left by test processes that
// have exited (their owner.pid no longer runs).
func capsITRemoveStalePrefixes() {
	old, _ := filepath.Glob("/run/minirun-capsit-*")
	for _, dir := range old {
		pidText, err := os.ReadFile(filepath.Join(dir, "owner.pid"))
		if err != nil {
			continue
		}
		pid, err := strconv.Atoi(string(pidText))
		if err != nil || pid <= 0 {
			continue
		}
		if err := syscall.Kill(pid, 0); errors.Is(err, syscall.ESRCH) {
			os.RemoveAll(dir)
		}
	}
}

// capsITResult is one finished minirun process.
type capsITResult struct {
	stdout, stderr string
	code           int
}

// run starts the installed minirun as who ("root" or a test user) with a
// clean environment, in who's home directory.
func (e *capsITEnv) run(t *testing.T, who string, args ...string) capsITResult {
	t.Helper()
	cmd, out, errb, cancel := e.command(t, who, args...)
	defer cancel()
	err := cmd.Run()
	return capsITFinish(t, cmd, out, errb, err)
}

func (e *capsITEnv) command(t *testing.T, who string, args ...string) (*exec.Cmd, *bytes.Buffer, *bytes.Buffer, context.CancelFunc) {
	t.Helper()
	a, ok := e.users[who]
	if !ok {
		t.Fatalf("unknown test account %q", who)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	cmd := exec.CommandContext(ctx, e.bin, args...)
	name := strings.TrimSuffix(who, "-noprimary")
	cmd.Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "HOME=" + a.home, "USER=" + name, "LOGNAME=" + name, "LANG=C"}
	cmd.Dir = a.home
	if who != "root" {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: a.uid, Gid: a.gid, Groups: a.groups}}
	}
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	return cmd, &out, &errb, cancel
}

func capsITFinish(t *testing.T, cmd *exec.Cmd, out, errb *bytes.Buffer, err error) capsITResult {
	t.Helper()
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		t.Fatalf("%s: %v", strings.Join(cmd.Args, " "), err)
	}
	return capsITResult{stdout: out.String(), stderr: errb.String(), code: cmd.ProcessState.ExitCode()}
}

// capsITExec is the payload of spec §8.
func (e *capsITEnv) capsITExec(flags ...string) []string {
	return append(append(append([]string{"exec"}, flags...), e.image), "grep", "-E", capsITPayload, "/proc/self/status")
}

// configure writes minirun.toml and capability.toml, root:root 0644,
// replacing whatever node (symlink, directory, FIFO) a test left there.
func (e *capsITEnv) configure(t *testing.T, minirunTOML, grantTOML string) {
	t.Helper()
	if err := os.Chmod(e.confDir, 0o755); err != nil {
		t.Fatal(err)
	}
	for path, text := range map[string]string{e.config: minirunTOML, e.grant: grantTOML} {
		capsITWriteRootFile(t, path, text)
	}
	for _, stray := range []string{"elsewhere.toml", "hardlink.toml"} {
		os.Remove(filepath.Join(e.prefix, stray))
	}
}

func capsITWriteRootFile(t *testing.T, path, text string) {
	t.Helper()
	if err := os.RemoveAll(path); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(path, 0, 0); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatal(err)
	}
}

// capsITStatus is what the payload printed: the five sets and NoNewPrivs.
type capsITStatus struct {
	sets map[string]uint64 // CapInh, CapPrm, CapEff, CapBnd, CapAmb
	nnp  string
}

func capsITParseStatus(out string) (capsITStatus, error) {
	s := capsITStatus{sets: map[string]uint64{}}
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	if len(lines) != 6 {
		return s, fmt.Errorf("want the 6 status lines, got %q", out)
	}
	for _, f := range []string{"CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"} {
		v, err := capsITHexField(out, f)
		if err != nil {
			return s, err
		}
		s.sets[f] = v
	}
	var ok bool
	if s.nnp, ok = capsITStatusField(out, "NoNewPrivs"); !ok {
		return s, fmt.Errorf("no NoNewPrivs line in %q", out)
	}
	return s, nil
}

func capsITStatusField(status, key string) (string, bool) {
	for _, line := range strings.Split(status, "\n") {
		if v, ok := strings.CutPrefix(line, key+":"); ok {
			return strings.TrimSpace(v), true
		}
	}
	return "", false
}

func capsITHexField(status, key string) (uint64, error) {
	v, ok := capsITStatusField(status, key)
	if !ok || len(v) != 16 {
		return 0, fmt.Errorf("%s: want 16 hex digits in %q", key, status)
	}
	return strconv.ParseUint(v, 16, 64)
}

// capsITSet is the mask of names (with or without CAP_), from capsITNames.
func capsITSet(names ...string) uint64 {
	var m uint64
	for _, n := range names {
		i := capsITIndex(n)
		if i < 0 {
			panic("capsITSet: unknown " + n)
		}
		m |= 1 << i
	}
	return m
}

func capsITIndex(name string) int {
	for i, n := range capsITNames {
		if n == strings.TrimPrefix(name, "CAP_") {
			return i
		}
	}
	return -1
}

// capsITNameList renders a mask as minirun prints it, by number.
func capsITNameList(m uint64) string {
	var names []string
	for i := 0; i < 64; i++ {
		if m&(1<<i) == 0 {
			continue
		}
		if i < len(capsITNames) {
			names = append(names, "CAP_"+capsITNames[i])
		} else {
			names = append(names, "CAP_"+strconv.Itoa(i))
		}
	}
	return strings.Join(names, ",")
}

// capsITDecode asks libcap's capsh (independent of minirun) for the names
// in a mask, upper case, in its order (by number).
func capsITDecode(t *testing.T, m uint64) []string {
	t.Helper()
	out, err := exec.Command("capsh", fmt.Sprintf("--decode=0x%016x", m)).Output()
	if err != nil {
		t.Fatalf("capsh --decode=%016x: %v", m, err)
	}
	_, list, ok := strings.Cut(strings.TrimSpace(string(out)), "=")
	if !ok {
		t.Fatalf("capsh --decode=%016x printed %q", m, out)
	}
	if list == "" {
		return nil
	}
	return strings.Split(strings.ToUpper(list), ",")
}

func capsITContains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// capsITNoLeaks fails the test if it leaves a loop device on our image or
// a new mount in this (host) mount namespace. Autoclear detach and
// namespace teardown can trail the process exit briefly, hence the poll.
func capsITNoLeaks(t *testing.T, e *capsITEnv) {
	t.Helper()
	loopsBefore, mountsBefore := capsITLoops(t, e), capsITMounts(t)
	t.Cleanup(func() {
		var loops, mounts []string
		for try := 0; try < 40; try++ {
			loops = capsITNew(capsITLoops(t, e), loopsBefore)
			mounts = capsITNew(capsITMounts(t), mountsBefore)
			if len(loops) == 0 && len(mounts) == 0 {
				return
			}
			time.Sleep(50 * time.Millisecond)
		}
		t.Errorf("leaked loop devices %q and host mounts %q", loops, mounts)
	})
}

func capsITLoops(t *testing.T, e *capsITEnv) []string {
	out, err := exec.Command("losetup", "-a").Output()
	if err != nil {
		t.Fatalf("losetup -a: %v", err)
	}
	var ours []string
	for _, line := range strings.Split(string(out), "\n") {
		if strings.Contains(line, e.prefix) { // other suites' loops are not ours to judge
			ours = append(ours, line)
		}
	}
	return ours
}

func capsITMounts(t *testing.T) []string {
	data, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	var points []string
	for _, line := range strings.Split(string(data), "\n") {
		if f := strings.Fields(line); len(f) > 4 {
			points = append(points, f[4])
		}
	}
	return points
}

func capsITNew(now, before []string) []string {
	count := map[string]int{}
	for _, s := range before {
		count[s]++
	}
	var added []string
	for _, s := range now {
		if count[s] > 0 {
			count[s]--
			continue
		}
		added = append(added, s)
	}
	return added
}

// expand fills the placeholders of expected stderr lines: {G} grant file,
// {C} minirun.toml, {D} config directory, {ALL-NET_RAW} FULL minus
// CAP_NET_RAW as capsh names it, and {NA:X} the not-available warning for
// X if this host withholds X (else the line disappears).
func (e *capsITEnv) expand(t *testing.T, lines []string) []string {
	t.Helper()
	var out []string
	for _, l := range lines {
		if x, ok := strings.CutPrefix(l, "{NA:"); ok {
			x = strings.TrimSuffix(x, "}")
			if e.full&capsITSet(x) == 0 {
				out = append(out, "WARNING: capability not available on this host: CAP_"+x)
			}
			continue
		}
		l = strings.NewReplacer("{G}", e.grant, "{C}", e.config, "{D}", e.confDir).Replace(l)
		if strings.Contains(l, "{ALL-NET_RAW}") {
			l = strings.ReplaceAll(l, "{ALL-NET_RAW}", strings.Join(capsITDecode(t, e.full&^capsITSet("NET_RAW")), ","))
		}
		out = append(out, l)
	}
	return out
}

// checkStderr compares stderr with want line by line; a wanted line ending
// in "..." matches any line with that prefix.
func capsITCheckStderr(t *testing.T, got string, want []string) {
	t.Helper()
	var lines []string
	if got != "" {
		lines = strings.Split(strings.TrimSuffix(got, "\n"), "\n")
	}
	ok := len(lines) == len(want)
	for i := 0; ok && i < len(want); i++ {
		if p, isPrefix := strings.CutSuffix(want[i], "..."); isPrefix {
			ok = strings.HasPrefix(lines[i], p)
		} else {
			ok = lines[i] == want[i]
		}
	}
	if !ok {
		t.Errorf("stderr:\n%s\nwant lines:\n%s", got, strings.Join(want, "\n"))
	}
}

// checkSets asserts all five sets equal want and NoNewPrivs equals nnp, and
// decodes CapEff with capsh to compare the names independently.
func (e *capsITEnv) checkSets(t *testing.T, stdout string, want uint64, nnp string) {
	t.Helper()
	st, err := capsITParseStatus(stdout)
	if err != nil {
		t.Fatalf("payload output: %v", err)
	}
	for _, f := range []string{"CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"} {
		if st.sets[f] != want {
			t.Errorf("%s = %016x, want %016x (%s)", f, st.sets[f], want, capsITNameList(want))
		}
	}
	if st.nnp != nnp {
		t.Errorf("NoNewPrivs = %s, want %s", st.nnp, nnp)
	}
	var wantNames []string
	if want != 0 {
		wantNames = strings.Split(capsITNameList(want), ",")
		for i := range wantNames {
			wantNames[i] = strings.TrimPrefix(wantNames[i], "CAP_")
		}
	}
	var gotNames []string
	for _, n := range capsITDecode(t, st.sets["CapEff"]) {
		gotNames = append(gotNames, strings.TrimPrefix(n, "CAP_"))
	}
	if strings.Join(gotNames, ",") != strings.Join(wantNames, ",") {
		t.Errorf("capsh --decode of CapEff: %v, want %v", gotNames, wantNames)
	}
}

// capsITRow is one launch: who runs it with which files and flags, and what
// the container must show.
type capsITRow struct {
	name    string
	who     string
	config  string // minirun.toml
	grants  string // capability.toml ({U} is the user name)
	prepare func(t *testing.T, e *capsITEnv)
	flags   []string
	set     func(e *capsITEnv) uint64 // nil: payload must not run
	nnp     string
	stderr  []string // exact lines, see expand and capsITCheckStderr
	exit    int
}

func capsITFull(e *capsITEnv) uint64 { return e.full }

// capsITFullMinus is FULL without names.
func capsITFullMinus(names ...string) func(e *capsITEnv) uint64 {
	return func(e *capsITEnv) uint64 { return e.full &^ capsITSet(names...) }
}

// capsITOnly is names as far as the host has them.
func capsITOnly(names ...string) func(e *capsITEnv) uint64 {
	return func(e *capsITEnv) uint64 { return e.full & capsITSet(names...) }
}

var capsITNone = capsITOnly()

func (e *capsITEnv) runRow(t *testing.T, r capsITRow) {
	t.Helper()
	e.configure(t, r.config, strings.ReplaceAll(r.grants, "{U}", capsITUser))
	if r.prepare != nil {
		r.prepare(t, e)
	}
	res := e.run(t, r.who, e.capsITExec(r.flags...)...)
	if res.code != r.exit {
		t.Errorf("exit %d, want %d; stderr %q", res.code, r.exit, res.stderr)
	}
	capsITCheckStderr(t, res.stderr, e.expand(t, r.stderr))
	if r.set == nil {
		if res.stdout != "" {
			t.Errorf("payload ran: %q", res.stdout)
		}
		return
	}
	if res.code == 0 {
		e.checkSets(t, res.stdout, r.set(e), r.nnp)
	}
}

const (
	capsITNo     = "root_default_capabilities = \"no\"\n"
	capsITFile   = "root_default_capabilities = \"file\"\n"
	capsITStrict = "strict_capabilities = true\n"
	capsITRawU   = "[users]\n{U} = [\"CAP_NET_RAW\"]\n"
)

// TestCapsIntegrationAcceptance runs spec §8 rows 1-24 (25 and 26 are in
// TestCapsIntegrationAdmin) and the rules of §2-§4 behind them, through the
// setuid install, as root and as mrtest2 (the table's alice, with mrcapgrp as
// netadm). Warnings for withheld capabilities follow this host's FULL.
func TestCapsIntegrationAcceptance(t *testing.T) {
	e := capsITSetup(t)
	capsITNoLeaks(t, e)
	U := capsITUser
	rows := []capsITRow{
		{name: "01 root defaults", who: "root", set: capsITFull, nnp: "0"},
		{name: "02 root drop NET_RAW", who: "root", flags: []string{"--drop-caps", "CAP_NET_RAW"}, set: capsITFullMinus("NET_RAW"), nnp: "0"},
		{name: "03 root drop all", who: "root", flags: []string{"--drop-caps", "all"}, set: capsITNone, nnp: "0"},
		{name: "04 root no-privs", who: "root", flags: []string{"--no-privs"}, set: capsITNone, nnp: "1"},
		{name: "05 root no-privs wins over keep-privs", who: "root", flags: []string{"--no-privs", "--keep-privs"}, set: capsITNone, nnp: "1"},
		{name: "06 root config no", who: "root", config: capsITNo, set: capsITNone, nnp: "1"},
		{name: "07 root config no add net_raw", who: "root", config: capsITNo, flags: []string{"--add-caps", "net_raw"}, set: capsITOnly("NET_RAW"), nnp: "1"},
		{name: "08 root config no keep-privs", who: "root", config: capsITNo, flags: []string{"--keep-privs"}, set: capsITFull, nnp: "0"},
		{name: "09 root config file", who: "root", config: capsITFile, grants: "[users]\nroot = [\"CAP_NET_RAW\"]\n", set: capsITOnly("NET_RAW"), nnp: "0"},
		{name: "10 root add withheld", who: "root", flags: []string{"--add-caps", "sys_resource"}, set: capsITFull, nnp: "0",
			stderr: []string{"{NA:SYS_RESOURCE}"}},
		{name: "11 user empty grants", who: U, set: capsITNone, nnp: "1"},
		{name: "12 user not authorized", who: U, flags: []string{"--add-caps", "net_raw"}, set: capsITNone, nnp: "1",
			stderr: []string{"WARNING: not authorized to add capability: CAP_NET_RAW"}},
		{name: "13 user strict", who: U, config: capsITStrict, flags: []string{"--add-caps", "net_raw"}, exit: 255,
			stderr: []string{"ERROR: not authorized to add capability: CAP_NET_RAW"}},
		{name: "14 user granted", who: U, grants: capsITRawU, flags: []string{"--add-caps", "NET_RAW"}, set: capsITOnly("NET_RAW"), nnp: "1"},
		{name: "15 user partly granted", who: U, grants: capsITRawU, flags: []string{"--add-caps", "net_raw,chown"}, set: capsITOnly("NET_RAW"), nnp: "1",
			stderr: []string{"WARNING: not authorized to add capability: CAP_CHOWN"}},
		{name: "16 user and group grants", who: U, grants: capsITRawU + "\n[groups]\nmrcapgrp = [\"CAP_NET_BIND_SERVICE\"]\n",
			flags: []string{"--add-caps", "cap_net_bind_service,NET_RAW"}, set: capsITOnly("NET_RAW", "NET_BIND_SERVICE"), nnp: "1"},
		{name: "17 user add then drop", who: U, grants: capsITRawU, flags: []string{"--add-caps", "net_raw", "--drop-caps", "net_raw"}, set: capsITNone, nnp: "1"},
		{name: "18 user unknown names", who: U, flags: []string{"--add-caps", "foo", "--drop-caps", "bar"}, set: capsITNone, nnp: "1",
			stderr: []string{"WARNING: won't add unknown capability: CAP_FOO", "WARNING: won't drop unknown capability: CAP_BAR"}},
		{name: "19 user keep-privs", who: U, grants: capsITRawU, flags: []string{"--keep-privs"}, exit: 255,
			stderr: []string{"ERROR: --keep-privs requires root privileges"}},
		{name: "20 user add all", who: U, grants: capsITRawU, flags: []string{"--add-caps", "all"}, set: capsITOnly("NET_RAW"), nnp: "1",
			stderr: []string{"WARNING: not authorized to add capability: {ALL-NET_RAW}"}},
		{name: "21 user no-privs still adds", who: U, grants: capsITRawU, flags: []string{"--no-privs", "--add-caps", "net_raw"}, set: capsITOnly("NET_RAW"), nnp: "1"},
		{name: "22 grant file owned by user", who: U, grants: capsITRawU, exit: 255,
			prepare: func(t *testing.T, e *capsITEnv) {
				if err := os.Chown(e.grant, int(e.users[capsITUser].uid), 0); err != nil {
					t.Fatal(err)
				}
			},
			stderr: []string{"FATAL: {G}: must be owned by root"}},
		{name: "23 grant file mode 0664", who: U, exit: 255,
			prepare: func(t *testing.T, e *capsITEnv) {
				if err := os.Chmod(e.grant, 0o664); err != nil {
					t.Fatal(err)
				}
			},
			stderr: []string{"FATAL: {G}: must not be writable by group or others"}},
		{name: "24 grant file unterminated array", who: U, grants: "[users]\n{U} = [\"CAP_NET_RAW\"\n", exit: 255,
			stderr: []string{"FATAL: {G}:2: ..."}},
		{name: "24b grant file unknown name", who: U, grants: "[users]\n{U} = [\"CAP_FOO\"]\n", exit: 255,
			stderr: []string{"FATAL: {G}:2: unknown capability: CAP_FOO"}},

		// §2 beyond the table.
		{name: "root keep-privs", who: "root", flags: []string{"--keep-privs"}, set: capsITFull, nnp: "0"},
		{name: "root file mode keep-privs", who: "root", config: capsITFile, flags: []string{"--keep-privs"}, set: capsITFull, nnp: "0"},
		{name: "root file mode empty grants", who: "root", config: capsITFile, set: capsITNone, nnp: "0"},
		{name: "root file mode user and group grants, withheld left out silently", who: "root", config: capsITFile,
			grants: "[users]\nroot = [\"CAP_NET_RAW\", \"CAP_SYS_RESOURCE\"]\n\n[groups]\nroot = [\"CAP_CHOWN\"]\n",
			set:    capsITOnly("NET_RAW", "SYS_RESOURCE", "CHOWN"), nnp: "0"},
		{name: "root file mode add and drop", who: "root", config: capsITFile, grants: "[users]\nroot = [\"CAP_NET_RAW\", \"CAP_KILL\"]\n",
			flags: []string{"--add-caps", "chown", "--drop-caps", "kill"}, set: capsITOnly("NET_RAW", "CHOWN"), nnp: "0"},
		{name: "root config no add all", who: "root", config: capsITNo, flags: []string{"--add-caps", "ALL"}, set: capsITFull, nnp: "1"},
		{name: "root drop withheld is silent", who: "root", flags: []string{"--drop-caps", "sys_resource"}, set: capsITFullMinus("SYS_RESOURCE"), nnp: "0"},
		{name: "root no-privs add", who: "root", flags: []string{"--no-privs", "--add-caps", "net_raw"}, set: capsITOnly("NET_RAW"), nnp: "1"},
		{name: "root drop beats add in any flag order", who: "root", config: capsITNo, flags: []string{"--drop-caps", "Cap_All", "--add-caps", "net_raw"}, set: capsITNone, nnp: "1"},
		{name: "root name variants", who: "root", config: capsITNo, flags: []string{"--add-caps", " Cap_Net_Raw,\tchown ,,CAP_kill,"}, set: capsITOnly("NET_RAW", "CHOWN", "KILL"), nnp: "1"},
		{name: "root repeated flags accumulate", who: "root", config: capsITNo,
			flags: []string{"--add-caps", "net_raw", "--add-caps", "chown", "--add-caps", "NET_RAW", "--drop-caps", "kill", "--drop-caps", "chown"},
			set:   capsITOnly("NET_RAW"), nnp: "1"},
		{name: "root unknown names around all", who: "root", config: capsITNo,
			flags: []string{"--add-caps", "foo,CAP_,all,Foo,cap_foo", "--drop-caps", "bar", "--drop-caps", "baz,foo"}, set: capsITFull, nnp: "1",
			stderr: []string{"WARNING: won't add unknown capability: CAP_FOO", "WARNING: won't add unknown capability: CAP_",
				"WARNING: won't drop unknown capability: CAP_BAR", "WARNING: won't drop unknown capability: CAP_BAZ",
				"WARNING: won't drop unknown capability: CAP_FOO"}},
		{name: "root unknown name is printed escaped", who: "root", config: capsITNo, flags: []string{"--add-caps", "ne\x1bt\n"}, set: capsITNone, nnp: "1",
			stderr: []string{`WARNING: won't add unknown capability: CAP_NE\x1bT\x0a`}},
		{name: "root ignores strict", who: "root", config: capsITNo + capsITStrict, flags: []string{"--add-caps", "net_raw"}, set: capsITOnly("NET_RAW"), nnp: "1"},
		{name: "root warning order", who: "root", config: capsITNo, flags: []string{"--drop-caps", "bar", "--add-caps", "sys_resource,foo"},
			set: capsITOnly("SYS_RESOURCE"), nnp: "1",
			stderr: []string{"WARNING: won't add unknown capability: CAP_FOO", "WARNING: won't drop unknown capability: CAP_BAR", "{NA:SYS_RESOURCE}"}},

		// §3 beyond the table.
		{name: "user root config does not apply", who: U, config: capsITNo, set: capsITNone, nnp: "1"},
		{name: "user drop all", who: U, flags: []string{"--drop-caps", "all"}, set: capsITNone, nnp: "1"},
		{name: "user no-privs keep-privs refused", who: U, flags: []string{"--no-privs", "--keep-privs"}, exit: 255,
			stderr: []string{"ERROR: --keep-privs requires root privileges"}},
		{name: "user keep-privs refused before warnings", who: U, flags: []string{"--add-caps", "foo,net_raw", "--keep-privs"}, exit: 255,
			stderr: []string{"ERROR: --keep-privs requires root privileges"}},
		{name: "user group grant only", who: U, grants: "[groups]\nmrcapgrp = [\"CAP_NET_RAW\", \"CAP_CHOWN\"]\n",
			flags: []string{"--add-caps", "net_raw"}, set: capsITOnly("NET_RAW"), nnp: "1"},
		{name: "user unauthorized lists only what no entry grants", who: U,
			grants: "[users]\n{U} = [\"CAP_NET_BIND_SERVICE\"]\n\n[groups]\nmrcapgrp = [\"CAP_NET_RAW\"]\n",
			flags:  []string{"--add-caps", "kill,net_raw,net_bind_service,chown"}, set: capsITOnly("NET_RAW", "NET_BIND_SERVICE"), nnp: "1",
			stderr: []string{"WARNING: not authorized to add capability: CAP_CHOWN,CAP_KILL"}},
		{name: "user primary group counts without getgroups", who: capsITNoPrime, grants: "[groups]\n{U} = [\"CAP_CHOWN\"]\n",
			flags: []string{"--add-caps", "chown"}, set: capsITOnly("CHOWN"), nnp: "1"},
		{name: "other user gets no mrcapgrp grants", who: capsITOther, grants: "[groups]\nmrcapgrp = [\"CAP_NET_RAW\"]\n",
			flags: []string{"--add-caps", "net_raw"}, set: capsITNone, nnp: "1",
			stderr: []string{"WARNING: not authorized to add capability: CAP_NET_RAW"}},
		{name: "user granted but withheld", who: U, grants: "[users]\n{U} = [\"CAP_SYS_RESOURCE\", \"CAP_NET_RAW\"]\n",
			flags: []string{"--add-caps", "sys_resource,net_raw"}, set: capsITOnly("SYS_RESOURCE", "NET_RAW"), nnp: "1",
			stderr: []string{"{NA:SYS_RESOURCE}"}},
		{name: "user withheld but not granted is only unauthorized", who: U, flags: []string{"--add-caps", "sys_resource"}, set: capsITNone, nnp: "1",
			stderr: []string{"WARNING: not authorized to add capability: CAP_SYS_RESOURCE"}},
		{name: "user warning order", who: U, grants: "[users]\n{U} = [\"CAP_SYS_RESOURCE\"]\n",
			flags: []string{"--drop-caps", "bar", "--add-caps", "foo,chown,sys_resource"}, set: capsITOnly("SYS_RESOURCE"), nnp: "1",
			stderr: []string{"WARNING: won't add unknown capability: CAP_FOO", "WARNING: won't drop unknown capability: CAP_BAR",
				"WARNING: not authorized to add capability: CAP_CHOWN", "{NA:SYS_RESOURCE}"}},
		{name: "user strict all granted", who: U, config: capsITStrict, grants: capsITRawU, flags: []string{"--add-caps", "net_raw"}, set: capsITOnly("NET_RAW"), nnp: "1"},
		{name: "user strict keeps unknown-name warnings", who: U, config: capsITStrict, grants: capsITRawU,
			flags: []string{"--add-caps", "foo,net_raw,chown"}, exit: 255,
			stderr: []string{"WARNING: won't add unknown capability: CAP_FOO", "ERROR: not authorized to add capability: CAP_CHOWN"}},
		{name: "user missing grant file means no grants", who: U, flags: []string{"--add-caps", "net_raw"}, set: capsITNone, nnp: "1",
			prepare: func(t *testing.T, e *capsITEnv) { os.Remove(e.grant) },
			stderr:  []string{"WARNING: not authorized to add capability: CAP_NET_RAW"}},
	}
	for _, r := range rows { // sequential: each row rewrites the config files
		t.Run(r.name, func(t *testing.T) { e.runRow(t, r) })
	}
}

// TestCapsIntegrationHostFacts checks the harness's view of the host and,
// on a host that withholds capabilities (this VM lacks CAP_SYS_RESOURCE),
// that a plain root exec works and gets exactly FULL, where Apptainer 1.5.3
// fails.
func TestCapsIntegrationHostFacts(t *testing.T) {
	e := capsITSetup(t)
	capsITNoLeaks(t, e)
	if e.last < 40 {
		t.Logf("cap_last_cap = %d: names above it are outside FULL", e.last)
	}
	// minirun needs these three to launch at all (spec §0).
	for _, c := range []string{"SETUID", "SETGID", "SETPCAP"} {
		if e.full&capsITSet(c) == 0 {
			t.Fatalf("this host withholds CAP_%s from root; minirun cannot launch here", c)
		}
	}
	withheld := capsITSet(capsITNames[:]...) & (1<<(e.last+1) - 1) &^ e.full
	t.Logf("FULL = %016x; withheld by this host: %q", e.full, capsITNameList(withheld))
	e.configure(t, "", "")
	res := e.run(t, "root", e.capsITExec()...)
	if res.code != 0 || res.stderr != "" {
		t.Fatalf("root exec with a host withholding %q: exit %d, stderr %q", capsITNameList(withheld), res.code, res.stderr)
	}
	e.checkSets(t, res.stdout, e.full, "0")
	if withheld == capsITSet("SYS_RESOURCE") && e.last == 40 && e.full != 0x000001fffeffffff {
		t.Errorf("FULL %016x, want the example host's 000001fffeffffff", e.full) // spec §1
	}
}

// TestCapsIntegrationRunShell checks that run and shell take the same flags
// and that the set survives the payload's own execve (the runscript and sh
// exec grep), which needs the ambient set for a non-root user.
func TestCapsIntegrationRunShell(t *testing.T) {
	e := capsITSetup(t)
	capsITNoLeaks(t, e)
	e.configure(t, "", strings.ReplaceAll(capsITRawU, "{U}", capsITUser))
	shellCmd := "grep -E '" + capsITPayload + "' /proc/self/status; exit 0"
	for _, tc := range []struct {
		name string
		who  string
		args []string
		want uint64
		nnp  string
	}{
		{"run user add-caps", capsITUser, []string{"run", "--add-caps", "net_raw", e.image}, capsITSet("NET_RAW"), "1"},
		{"shell user add-caps", capsITUser, []string{"shell", "--add-caps", "net_raw", e.image, "-c", shellCmd}, capsITSet("NET_RAW"), "1"},
		{"run root drop-caps", "root", []string{"run", "--drop-caps", "net_raw", e.image}, e.full &^ capsITSet("NET_RAW"), "0"},
		{"shell root no-privs", "root", []string{"shell", "--no-privs", e.image, "-c", shellCmd}, 0, "1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res := e.run(t, tc.who, tc.args...)
			if res.code != 0 || res.stderr != "" {
				t.Fatalf("exit %d, stderr %q", res.code, res.stderr)
			}
			e.checkSets(t, res.stdout, tc.want, tc.nnp)
		})
	}
}

// TestCapsIntegrationPing: a granted CAP_NET_RAW really works inside the
// container for a user; without the grant the user gets only the warning
// and the raw socket is refused.
func TestCapsIntegrationPing(t *testing.T) {
	e := capsITSetup(t)
	capsITNoLeaks(t, e)
	e.configure(t, "", "")
	if res := e.run(t, "root", "capability", "add", "--user", capsITOther, "net_raw"); res.code != 0 || res.stderr != "" {
		t.Fatalf("capability add: exit %d, stderr %q", res.code, res.stderr)
	}
	ping := func(who string, flags ...string) capsITResult {
		args := append(append(append([]string{"exec"}, flags...), e.image), "ping", "-c1", "-W2", "127.0.0.1")
		return e.run(t, who, args...)
	}
	if res := ping(capsITOther, "--add-caps", "net_raw"); res.code != 0 || res.stderr != "" {
		t.Errorf("granted user: ping exit %d, stderr %q, stdout %q", res.code, res.stderr, res.stdout)
	}

	// Unprivileged ICMP sockets would let ping work without the capability.
	pingRange, _ := os.ReadFile("/proc/sys/net/ipv4/ping_group_range")
	var lo, hi uint64
	fmt.Sscan(string(pingRange), &lo, &hi)
	gid := uint64(e.users[capsITUser].gid)
	dgramPing := lo <= gid && gid <= hi

	for _, tc := range []struct {
		who   string
		flags []string
		warn  string
	}{
		{capsITUser, []string{"--add-caps", "net_raw"}, "WARNING: not authorized to add capability: CAP_NET_RAW"},
		{capsITOther, nil, ""}, // granted but not asked for: nothing
	} {
		res := ping(tc.who, tc.flags...)
		lines := strings.Split(strings.TrimSuffix(res.stderr, "\n"), "\n")
		if tc.warn != "" && lines[0] != tc.warn {
			t.Errorf("%s %v: first stderr line %q, want %q", tc.who, tc.flags, lines[0], tc.warn)
		}
		for _, l := range lines[1:] {
			if strings.HasPrefix(l, "WARNING:") || strings.HasPrefix(l, "ERROR:") || strings.HasPrefix(l, "FATAL:") {
				t.Errorf("%s %v: unexpected minirun line %q", tc.who, tc.flags, l)
			}
		}
		switch {
		case dgramPing:
			t.Logf("ping_group_range %q covers gid %d: ping may work without CAP_NET_RAW", strings.TrimSpace(string(pingRange)), gid)
		case res.code == 0 || res.code == 255:
			t.Errorf("%s %v without CAP_NET_RAW: ping exit %d, want ping's own failure; stderr %q", tc.who, tc.flags, res.code, res.stderr)
		}
	}
}

// capsITFileState is a file's bytes and identity, to prove it unchanged.
type capsITFileState struct {
	data  string
	ino   uint64
	mtime time.Time
	mode  os.FileMode
	uid   uint32
	gid   uint32
}

func capsITState(t *testing.T, path string) capsITFileState {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Lstat(path)
	if err != nil {
		t.Fatal(err)
	}
	st := fi.Sys().(*syscall.Stat_t)
	return capsITFileState{string(data), st.Ino, fi.ModTime(), fi.Mode(), st.Uid, st.Gid}
}

// TestCapsIntegrationAdmin drives `minirun capability` through the
// installed binary: rows 25 and 26, add/drop/list/avail/import and their
// errors, checking the file's exact bytes, owner, mode and mtime.
func TestCapsIntegrationAdmin(t *testing.T) {
	e := capsITSetup(t)
	capsITNoLeaks(t, e)
	e.configure(t, "", "")
	U, O, G := capsITUser, capsITOther, capsITGroup

	// step runs one command and checks exit, stdout, stderr and, if
	// wantFile is not "-", the grant file's exact text.
	step := func(who string, args []string, exit int, stdout string, stderr []string, wantFile string) {
		t.Helper()
		before := capsITState(t, e.grant)
		res := e.run(t, who, append([]string{"capability"}, args...)...)
		if res.code != exit {
			t.Errorf("%s %v: exit %d, want %d; stderr %q", who, args, res.code, exit, res.stderr)
		}
		if res.stdout != stdout {
			t.Errorf("%s %v: stdout %q, want %q", who, args, res.stdout, stdout)
		}
		capsITCheckStderr(t, res.stderr, e.expand(t, stderr))
		after := capsITState(t, e.grant)
		if after.uid != 0 || after.gid != 0 || after.mode != 0o644 {
			t.Errorf("%s %v: grant file %d:%d %v, want 0:0 -rw-r--r--", who, args, after.uid, after.gid, after.mode)
		}
		switch {
		case wantFile == "-" || wantFile == before.data:
			// Unchanged, and not even rewritten: same inode and mtime.
			if after != before {
				t.Errorf("%s %v: grant file touched (%q -> %q, inode %d -> %d)", who, args, before.data, after.data, before.ino, after.ino)
			}
		case after.data != wantFile:
			t.Errorf("%s %v: grant file\n%q\nwant\n%q", who, args, after.data, wantFile)
		}
	}

	// Row 25: a non-root caller cannot change the file.
	step(U, []string{"add", "--user", U, "net_raw"}, 255, "", []string{"ERROR: capability add requires root privileges"}, "-")
	step(U, []string{"drop", "--user", U, "net_raw"}, 255, "", []string{"ERROR: capability drop requires root privileges"}, "-")
	step(U, []string{"import", "/dev/null"}, 255, "", []string{"ERROR: capability import requires root privileges"}, "-")

	// Row 26: add twice; the second is a no-op with a warning.
	f1 := "[users]\n" + U + " = [\"CAP_NET_RAW\"]\n"
	step("root", []string{"add", "--user", U, "net_raw"}, 0, "", nil, f1)
	step("root", []string{"add", "--user", U, "net_raw"}, 0, "", []string{"WARNING: CAP_NET_RAW already assigned to user " + U}, f1)

	f2 := f1 + "\n[groups]\n" + G + " = [\"CAP_CHOWN\", \"CAP_NET_BIND_SERVICE\"]\n"
	step("root", []string{"add", "-g", G, "NET_BIND_SERVICE,cap_chown"}, 0, "", nil, f2)
	f3 := "[users]\n" + U + " = [\"CAP_CHOWN\", \"CAP_NET_RAW\"]\n\n[groups]\n" + G + " = [\"CAP_CHOWN\", \"CAP_NET_BIND_SERVICE\"]\n"
	step("root", []string{"add", "-u", U, "net_raw,Chown"}, 0, "", []string{"WARNING: CAP_NET_RAW already assigned to user " + U}, f3)
	// U is also the name of U's primary group: both kinds, users first.
	f4 := "[users]\n" + U + " = [\"CAP_CHOWN\", \"CAP_NET_RAW\"]\n\n[groups]\n" + G + " = [\"CAP_CHOWN\", \"CAP_NET_BIND_SERVICE\"]\n" + U + " = [\"CAP_KILL\"]\n"
	step("root", []string{"add", "--group", U, "kill"}, 0, "", nil, f4)

	// list, as root and as a user; NAME matches either kind.
	all := "user " + U + ": CAP_CHOWN,CAP_NET_RAW\ngroup " + G + ": CAP_CHOWN,CAP_NET_BIND_SERVICE\ngroup " + U + ": CAP_KILL\n"
	step("root", []string{"list"}, 0, all, nil, "-")
	step(O, []string{"list"}, 0, all, nil, "-")
	step(O, []string{"list", U}, 0, "user "+U+": CAP_CHOWN,CAP_NET_RAW\ngroup "+U+": CAP_KILL\n", nil, "-")
	step(O, []string{"list", G}, 0, "group "+G+": CAP_CHOWN,CAP_NET_BIND_SERVICE\n", nil, "-")
	step(O, []string{"list", "nobody-capsit"}, 0, "", nil, "-")

	// drop: warnings for what is not there, empty entries deleted.
	step("root", []string{"drop", "--group", U, "kill"}, 0, "", nil, f3)
	step("root", []string{"drop", "-u", U, "kill,chown"}, 0, "", []string{"WARNING: CAP_KILL not assigned to user " + U}, f2)
	f5 := "[groups]\n" + G + " = [\"CAP_CHOWN\", \"CAP_NET_BIND_SERVICE\"]\n"
	step("root", []string{"drop", "--user", U, "ALL"}, 0, "", nil, f5)
	step("root", []string{"drop", "--user", U, "all"}, 0, "", []string{"WARNING: no capabilities assigned to user " + U}, f5)
	step("root", []string{"drop", "--user", U, "net_raw"}, 0, "", []string{"WARNING: CAP_NET_RAW not assigned to user " + U}, f5)
	step("root", []string{"drop", "-g", G, "chown,net_bind_service"}, 0, "", nil, "")

	// add all: the 41 named capabilities, whatever this host holds.
	var all41 []string
	for _, n := range capsITDecode(t, 1<<41-1) {
		all41 = append(all41, `"`+n+`"`)
	}
	if len(all41) != 41 {
		t.Fatalf("capsh decodes 41 bits as %d names", len(all41))
	}
	step("root", []string{"add", "--user", O, "all"}, 0, "", nil, "[users]\n"+O+" = ["+strings.Join(all41, ", ")+"]\n")
	step("root", []string{"drop", "--user", O, "all"}, 0, "", nil, "")

	// Errors: nothing changes.
	step("root", []string{"add", "--user", O, "foo,net_raw,bar"}, 255, "", []string{"ERROR: unknown capability: CAP_FOO,CAP_BAR"}, "-")
	step("root", []string{"add", "--user", "nosuch-capsit", "net_raw"}, 255, "", []string{"ERROR: user does not exist: nosuch-capsit"}, "-")
	step("root", []string{"add", "--group", "nosuch-capsit", "net_raw"}, 255, "", []string{"ERROR: group does not exist: nosuch-capsit"}, "-")
	step("root", []string{"drop", "--user", "nosuch-capsit", "net_raw"}, 255, "", []string{"ERROR: user does not exist: nosuch-capsit"}, "-")
	step("root", []string{"add", "--user", O, "--group", G, "net_raw"}, 255, "", []string{"ERROR: exactly one of --user or --group is required"}, "-")
	step("root", []string{"add", "net_raw"}, 255, "", []string{"ERROR: exactly one of --user or --group is required"}, "-")
	step("root", []string{"add", "--user", O}, 255, "", []string{"ERROR: no capability given"}, "-")

	// drop works for an entry whose account is gone.
	capsITWriteRootFile(t, e.grant, "[users]\nghost-capsit = [\"CAP_CHOWN\"]\n"+O+" = [\"CAP_KILL\"]\n")
	step("root", []string{"drop", "--user", "ghost-capsit", "all"}, 0, "", nil, "[users]\n"+O+" = [\"CAP_KILL\"]\n")

	// import: an Apptainer capability.json, merged by union; missing names skipped.
	importFile := filepath.Join(e.prefix, "capability.json")
	writeImport := func(text string) {
		t.Helper()
		capsITWriteRootFile(t, importFile, text)
	}
	writeImport(`{"users":{"` + O + `":["CAP_SYS_ADMIN","cap_net_raw"],"ghost-capsit":["CAP_CHOWN"]},` +
		`"groups":{"` + G + `":["CAP_KILL"],"nosuch-capsit":["CAP_KILL"]}}`)
	fi := "[users]\n" + O + " = [\"CAP_KILL\", \"CAP_NET_RAW\", \"CAP_SYS_ADMIN\"]\n\n[groups]\n" + G + " = [\"CAP_KILL\"]\n"
	step("root", []string{"import", importFile}, 0, "", []string{
		"WARNING: skipping user ghost-capsit: user does not exist",
		"WARNING: skipping group nosuch-capsit: group does not exist"}, fi)
	writeImport(`{"users":{"` + U + `":["CAP_NET_RAW"]},"groups":null}`) // Apptainer writes null for an empty map
	fj := "[users]\n" + O + " = [\"CAP_KILL\", \"CAP_NET_RAW\", \"CAP_SYS_ADMIN\"]\n" + U + " = [\"CAP_NET_RAW\"]\n\n[groups]\n" + G + " = [\"CAP_KILL\"]\n"
	step("root", []string{"import", importFile}, 0, "", nil, fj)
	writeImport(" \n")
	step("root", []string{"import", importFile}, 0, "", nil, fj)
	writeImport("{\n  \"users\": {\n    \"" + O + "\": [\"CAP_NET_RAW\", \"CAP_FOO\"]\n  }\n}\n")
	step("root", []string{"import", importFile}, 255, "", []string{"FATAL: " + importFile + ":3: unknown capability: CAP_FOO"}, "-")
	writeImport(`{"users":{},"extra":{}}`)
	step("root", []string{"import", importFile}, 255, "", []string{"FATAL: " + importFile + ":1: ..."}, "-")
	writeImport(`{"users":{"` + O + `":"CAP_NET_RAW"}}`)
	step("root", []string{"import", importFile}, 255, "", []string{"FATAL: " + importFile + ":1: ..."}, "-")
	link := filepath.Join(e.prefix, "capability-link.json")
	os.Remove(link)
	if err := os.Symlink(importFile, link); err != nil {
		t.Fatal(err)
	}
	step("root", []string{"import", link}, 255, "", []string{"ERROR: " + link + ": symbolic link not allowed"}, "-")
	os.Remove(link)
	step("root", []string{"import", filepath.Join(e.prefix, "missing.json")}, 255, "", []string{"ERROR: ..."}, "-")

	if stray, _ := filepath.Glob(e.grant + ".tmp.*"); len(stray) > 0 {
		t.Errorf("temporary files left behind: %q", stray)
	}
}

// TestCapsIntegrationAvail checks `capability avail` against libcap: one
// row per capability up to cap_last_cap, names as capsh decodes each bit,
// "yes" exactly for FULL.
func TestCapsIntegrationAvail(t *testing.T) {
	e := capsITSetup(t)
	capsITNoLeaks(t, e)
	e.configure(t, "", "")
	rowRE := regexp.MustCompile(`^([ \d]\d) (\S+) +(yes|no) +(.+)$`)
	rows := max(40, e.last) + 1
	root := e.run(t, "root", "capability", "avail")
	if root.code != 0 || root.stderr != "" {
		t.Fatalf("avail: exit %d, stderr %q", root.code, root.stderr)
	}
	lines := strings.Split(strings.TrimSuffix(root.stdout, "\n"), "\n")
	if len(lines) != rows {
		t.Fatalf("avail printed %d rows, want %d (0..max(40, cap_last_cap))", len(lines), rows)
	}
	for i, line := range lines {
		m := rowRE.FindStringSubmatch(line)
		if m == nil {
			t.Errorf("row %d: %q", i, line)
			continue
		}
		wantName := "CAP_" + strconv.Itoa(i)
		if i <= 40 {
			wantName = capsITDecode(t, 1<<i)[0]
		}
		yes := "no"
		if e.full&(1<<i) != 0 {
			yes = "yes"
		}
		if want := fmt.Sprintf("%2d %-22s %-3s %s", i, wantName, yes, m[4]); line != want {
			t.Errorf("row %d: %q, want %q", i, line, want)
		}
	}
	if lines[13] != "13 CAP_NET_RAW            yes Open raw and packet sockets; bind to any address for transparent proxying." {
		t.Errorf("row 13 is %q, not the spec's example", lines[13])
	}
	for _, tc := range []struct {
		who, caps, stdout string
		stderr            []string
	}{
		{capsITOther, "", root.stdout, nil},
		{capsITOther, "all", root.stdout, nil},
		{"root", "Cap_All", root.stdout, nil},
		{capsITOther, "net_raw,CHOWN,cap_net_raw", lines[0] + "\n" + lines[13] + "\n", nil},
		{"root", "sys_resource", lines[24] + "\n", nil},
		{capsITOther, "foo,net_raw", "", []string{"ERROR: unknown capability: CAP_FOO"}},
	} {
		args := []string{"capability", "avail"}
		if tc.caps != "" {
			args = append(args, tc.caps)
		}
		res := e.run(t, tc.who, args...)
		wantCode := 0
		if tc.stderr != nil {
			wantCode = 255
		}
		if res.code != wantCode {
			t.Errorf("%s avail %q: exit %d, want %d", tc.who, tc.caps, res.code, wantCode)
		}
		if got, want := strings.Split(res.stdout, "\n"), strings.Split(tc.stdout, "\n"); res.stdout != tc.stdout {
			for i := range min(len(got), len(want)) {
				if got[i] != want[i] {
					t.Errorf("%s avail %q: line %d is %q, want %q", tc.who, tc.caps, i, got[i], want[i])
					break
				}
			}
			if len(got) != len(want) {
				t.Errorf("%s avail %q: %d lines, want %d", tc.who, tc.caps, len(got), len(want))
			}
		}
		capsITCheckStderr(t, res.stderr, tc.stderr)
	}
}

// TestCapsIntegrationAdminRace runs two `capability add` at once, for
// different users and capabilities, ten times, with a reader alongside:
// both grants must land and the file must always parse.
func TestCapsIntegrationAdminRace(t *testing.T) {
	e := capsITSetup(t)
	capsITNoLeaks(t, e)
	for round := 0; round < 10; round++ {
		e.configure(t, "", "")
		a, b := capsITNames[round], capsITNames[40-round]
		type started struct {
			cmd       *exec.Cmd
			out, errb *bytes.Buffer
			cancel    context.CancelFunc
		}
		var procs []started
		for _, p := range []struct {
			who  string
			args []string
		}{
			{"root", []string{"capability", "add", "--user", capsITOther, a}},
			{"root", []string{"capability", "add", "--user", capsITUser, b}},
			{capsITUser, []string{"capability", "list"}}, // readers take no lock
			{capsITUser, e.capsITExec()},                 // a non-root run reads the file too
		} {
			cmd, out, errb, cancel := e.command(t, p.who, p.args...)
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			procs = append(procs, started{cmd, out, errb, cancel})
		}
		for i, p := range procs {
			res := capsITFinish(t, p.cmd, p.out, p.errb, p.cmd.Wait())
			p.cancel()
			if res.code != 0 || res.stderr != "" {
				t.Errorf("round %d process %d %v: exit %d, stderr %q", round, i, p.cmd.Args[1:], res.code, res.stderr)
			}
		}
		want := fmt.Sprintf("[users]\n%s = [\"CAP_%s\"]\n%s = [\"CAP_%s\"]\n", capsITOther, a, capsITUser, b)
		if got := capsITState(t, e.grant); got.data != want || got.mode != 0o644 || got.uid != 0 {
			t.Fatalf("round %d: grant file %q %v uid %d, want %q 0644 root", round, got.data, got.mode, got.uid, want)
		}
		res := e.run(t, capsITUser, "capability", "list")
		if wantList := fmt.Sprintf("user %s: CAP_%s\nuser %s: CAP_%s\n", capsITOther, a, capsITUser, b); res.code != 0 || res.stdout != wantList {
			t.Fatalf("round %d: list exit %d %q, want %q; stderr %q", round, res.code, res.stdout, wantList, res.stderr)
		}
	}
	if stray, _ := filepath.Glob(e.grant + ".tmp.*"); len(stray) > 0 {
		t.Errorf("temporary files left behind: %q", stray)
	}
}

// TestCapsIntegrationTrust damages the grant file (and its directory) in
// every way spec §5.3 names: each non-root run, and `capability list` and
// `add`, stop with one FATAL line naming the file; root in "full" and "no"
// mode is unaffected, root in "file" mode stops too.
func TestCapsIntegrationTrust(t *testing.T) {
	e := capsITSetup(t)
	capsITNoLeaks(t, e)
	valid := "[users]\n" + capsITUser + " = [\"CAP_NET_RAW\"]\n"
	chmod := func(mode os.FileMode) func(t *testing.T, e *capsITEnv) {
		return func(t *testing.T, e *capsITEnv) {
			if err := os.Chmod(e.grant, mode); err != nil {
				t.Fatal(err)
			}
		}
	}
	replace := func(t *testing.T, e *capsITEnv, make func(string) error) {
		if err := os.Remove(e.grant); err != nil {
			t.Fatal(err)
		}
		if err := make(e.grant); err != nil {
			t.Fatal(err)
		}
	}
	cases := []struct {
		name     string
		grants   string
		prepare  func(t *testing.T, e *capsITEnv)
		want     string // the one stderr line ({G}, {D}; "..." = prefix)
		dirLevel bool   // the directory is bad: minirun.toml is refused too, for root as well
	}{
		{name: "owned by user", grants: valid, want: "FATAL: {G}: must be owned by root",
			prepare: func(t *testing.T, e *capsITEnv) {
				if err := os.Chown(e.grant, int(e.users[capsITUser].uid), int(e.users[capsITUser].gid)); err != nil {
					t.Fatal(err)
				}
			}},
		{name: "group-writable", grants: valid, prepare: chmod(0o664), want: "FATAL: {G}: must not be writable by group or others"},
		{name: "world-writable", grants: valid, prepare: chmod(0o646), want: "FATAL: {G}: must not be writable by group or others"},
		{name: "symlink", grants: valid, want: "FATAL: {G}: symbolic link not allowed",
			prepare: func(t *testing.T, e *capsITEnv) {
				target := filepath.Join(e.prefix, "elsewhere.toml")
				capsITWriteRootFile(t, target, valid)
				replace(t, e, func(p string) error { return os.Symlink(target, p) })
			}},
		{name: "hard-linked", grants: valid, want: "FATAL: {G}: has 2 hard links",
			prepare: func(t *testing.T, e *capsITEnv) {
				if err := os.Link(e.grant, filepath.Join(e.prefix, "hardlink.toml")); err != nil {
					t.Fatal(err)
				}
			}},
		{name: "directory", want: "FATAL: {G}: not a regular file",
			prepare: func(t *testing.T, e *capsITEnv) {
				replace(t, e, func(p string) error { return os.Mkdir(p, 0o755) })
			}},
		{name: "fifo", want: "FATAL: {G}: not a regular file",
			prepare: func(t *testing.T, e *capsITEnv) {
				replace(t, e, func(p string) error { return syscall.Mkfifo(p, 0o644) })
			}},
		{name: "larger than 1 MiB", grants: "#" + strings.Repeat("x", 1<<20) + "\n", want: "FATAL: {G}: larger than 1 MiB"},
		{name: "malformed", grants: "[users]\n" + capsITUser + " = [\"CAP_NET_RAW\"\n", want: "FATAL: {G}:2: ..."},
		{name: "unknown capability", grants: "[users]\n" + capsITUser + " = [\"CAP_FOO\"]\n", want: "FATAL: {G}:2: unknown capability: CAP_FOO"},
		{name: "all in the file", grants: "[users]\n" + capsITUser + " = [\"all\"]\n", want: "FATAL: {G}:2: ..."},
		{name: "other table", grants: valid + "[admins]\nx = [\"CAP_KILL\"]\n", want: "FATAL: {G}:3: ..."},
		{name: "directory group-writable", grants: valid, want: "FATAL: {D}: must not be writable by group or others", dirLevel: true,
			prepare: func(t *testing.T, e *capsITEnv) {
				if err := os.Chmod(e.confDir, 0o775); err != nil {
					t.Fatal(err)
				}
			}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			for _, mode := range []string{"full", "no", "file"} {
				e.configure(t, "root_default_capabilities = \""+mode+"\"\n", tc.grants)
				if tc.prepare != nil {
					tc.prepare(t, e)
				}
				want := e.expand(t, []string{tc.want})
				fails := func(who string, args ...string) {
					t.Helper()
					res := e.run(t, who, args...)
					if res.code != 255 || res.stdout != "" {
						t.Errorf("%s %s (%s mode): exit %d, stdout %q; want 255 and nothing run", who, strings.Join(args, " "), mode, res.code, res.stdout)
					}
					capsITCheckStderr(t, res.stderr, want)
				}
				// Every non-root run stops, with or without --add-caps.
				if mode == "full" {
					fails(capsITUser, e.capsITExec()...)
					fails(capsITUser, e.capsITExec("--add-caps", "net_raw")...)
					fails(capsITOther, e.capsITExec("--no-privs")...)
					fails(capsITOther, "capability", "list")
					if !tc.dirLevel {
						before, _ := os.Lstat(e.grant)
						fails("root", "capability", "add", "--user", capsITOther, "kill")
						if after, _ := os.Lstat(e.grant); !os.SameFile(before, after) {
							t.Errorf("capability add replaced the damaged grant file")
						}
					}
				}
				if mode == "file" || tc.dirLevel {
					fails("root", e.capsITExec()...)
					continue
				}
				// Root in full or no mode never reads the grant file.
				res := e.run(t, "root", e.capsITExec()...)
				if res.code != 0 || res.stderr != "" {
					t.Errorf("root (%s mode): exit %d, stderr %q; a damaged grant file must not affect it", mode, res.code, res.stderr)
					continue
				}
				if mode == "full" {
					e.checkSets(t, res.stdout, e.full, "0")
				} else {
					e.checkSets(t, res.stdout, 0, "1")
				}
			}
		})
	}
	e.configure(t, "", "")
}
