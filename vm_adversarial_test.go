// vm_adversarial_test.go runs the catalogue attacks that need a disposable machine (spec/security.md
// §4: C4, D5's dm path, E7, E9) inside TestVMDMCrypt's guest: hostile squashfs images, key material
// in /proc, mount propagation with a shared root, and CVE-2019-5736-style overwrites of the binary.
package main

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

const (
	vmAttackEnv  = "DMTEST_ATTACK" // helper mode of this binary; minirun passes it to payloads (not MINIRUN_*)
	vmTargetEnv  = "DMTEST_TARGET" // "dev:ino" of the guest's /bin/minirun
	vmPidsEnv    = "DMTEST_PIDS"   // host-side attack: the pids to go after
	vmHoldEnv    = "DMTEST_HOLD"   // keep reached fds, wait for a line on stdin, try again
	vmC4Exit     = 42              // exit status of /t in the C4 images: the payload really ran
	vmC4Flips    = 200
	vmGrantFile  = "/etc/minirun/capability.toml" // the guest minirun is built with sysconfdir=/etc
	vmMinirunExe = "/bin/minirun"
)

// The C4 images crafted from a valid tiny squashfs (offsets are within the squashfs; little-endian).
var vmC4Crafted = []struct {
	name  string
	patch func(sq []byte, sb vmSqfsSuper, partSize int64)
}{
	// The kernel's inode lookup table check ("there should always be at least one inode").
	{"inodes-0", func(sq []byte, _ vmSqfsSuper, _ int64) { binary.LittleEndian.PutUint32(sq[4:], 0) }},
	{"bytes-used-beyond-partition", func(sq []byte, _ vmSqfsSuper, size int64) {
		binary.LittleEndian.PutUint64(sq[40:], uint64(size)+4096)
	}},
	// 0xFFFFFF1F is -225 as the kernel's int: syzkaller's case behind the 2023 discussion of
	// squashfs_read_xattr_id_table's sanity checks.
	{"xattr-ids-0xFFFFFF1F", func(sq []byte, sb vmSqfsSuper, _ int64) {
		binary.LittleEndian.PutUint32(sq[sb.xattrTable+8:], 0xFFFFFF1F)
	}},
	// block_size is kept equal to 1<<block_log, so the log bound, not the mismatch, must fire.
	{"block-log-0", func(sq []byte, _ vmSqfsSuper, _ int64) {
		binary.LittleEndian.PutUint32(sq[12:], 1)
		binary.LittleEndian.PutUint16(sq[22:], 0)
	}},
	{"block-log-30", func(sq []byte, _ vmSqfsSuper, _ int64) {
		binary.LittleEndian.PutUint32(sq[12:], 1<<30)
		binary.LittleEndian.PutUint16(sq[22:], 30)
	}},
	{"compression-0", func(sq []byte, _ vmSqfsSuper, _ int64) { binary.LittleEndian.PutUint16(sq[20:], 0) }},
	{"compression-99", func(sq []byte, _ vmSqfsSuper, _ int64) { binary.LittleEndian.PutUint16(sq[20:], 99) }},
}

var vmE9Grants = []struct{ name, caps string }{{"none", ""}, {"CAP_DAC_OVERRIDE", "CAP_DAC_OVERRIDE"}, {"CAP_SYS_PTRACE", "CAP_SYS_PTRACE"}}

// vmAdversarialWant lists the cases the guest must report ok.
func vmAdversarialWant() []string {
	want := []string{"c4/base", "c4/bitflips", "d5/dm-crypt", "e9/host-side", "e9/binary-unchanged",
		"e7/inner-mounts/uid1000-CAP_SYS_ADMIN", "e7/inner-mounts/uid0", "e7/overmount-stays",
		"e7/inner-umount/uid1000-CAP_SYS_ADMIN", "e7/no-host-mount"}
	for _, c := range vmC4Crafted {
		want = append(want, "c4/"+c.name)
	}
	for _, g := range vmE9Grants {
		want = append(want, "e9/"+g.name+"/default", "e9/"+g.name+"/pid")
	}
	return want
}

// --- host: the C4 images ------------------------------------------------------------------------

// vmSqfsSuper holds the superblock fields the crafted images need.
type vmSqfsSuper struct {
	inodes      uint32
	bytesUsed   uint64
	xattrTable  uint64
	inodeTable  uint64
	lookupTable uint64
}

func vmParseSqfsSuper(sq []byte) vmSqfsSuper {
	le := binary.LittleEndian
	return vmSqfsSuper{inodes: le.Uint32(sq[4:]), bytesUsed: le.Uint64(sq[40:]), xattrTable: le.Uint64(sq[56:]),
		inodeTable: le.Uint64(sq[64:]), lookupTable: le.Uint64(sq[88:])}
}

// vmTinyELF is a 132-byte static x86-64 executable doing exit_group(42): a payload that fits a
// 4 KiB squashfs, so 200 variants stay cheap.
func vmTinyELF() []byte {
	code := []byte{0xbf, vmC4Exit, 0, 0, 0, 0xb8, 0xe7, 0, 0, 0, 0x0f, 0x05} // mov edi,42; mov eax,231; syscall
	return elfExecutable(62, code)                                           // EM_X86_64
}

// vmAdversarialImages makes the C4 images: a valid tiny squashfs SIF (uncompressed metadata, with
// an export table and one xattr, so every crafted field exists), the crafted variants, and the
// bit flips (SIF offset:bit, from a fixed seed) the guest applies to the valid one.
func vmAdversarialImages(t *testing.T, work string) map[string]string {
	t.Helper()
	dir := filepath.Join(work, "c4root")
	for _, d := range []string{"proc", "sys", "dev", "tmp", "var/tmp", "etc", "home"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	write := func(name string, data []byte, mode os.FileMode) {
		if err := os.WriteFile(filepath.Join(dir, name), data, mode); err != nil {
			t.Fatal(err)
		}
	}
	write("etc/passwd", []byte("root:x:0:0:root:/root:/t\n"), 0o644)
	write("etc/group", []byte("root:x:0:\n"), 0o644)
	write("MARKER", []byte("c4\n"), 0o644)
	write("t", vmTinyELF(), 0o755)
	if err := unix.Setxattr(filepath.Join(dir, "MARKER"), "user.c4", []byte("xattr"), 0); err != nil {
		t.Fatalf("set an xattr for the C4 image: %v", err)
	}
	// The payload must really exit 42, or "the variant still runs" would prove nothing.
	if err := exec.Command(filepath.Join(dir, "t")).Run(); err == nil || !strings.Contains(err.Error(), "exit status 42") {
		t.Fatalf("the tiny payload: %v (want exit status 42)", err)
	}
	sqfs := filepath.Join(work, "c4.sqfs")
	vmRun(t, work, nil, "mksquashfs", dir, sqfs, "-noappend", "-all-root", "-comp", "gzip", "-noI", "-noD", "-noF",
		"-noX", "-xattrs", "-exports", "-mkfs-time", "0", "-all-time", "0", "-quiet")
	base := filepath.Join(work, "c4-base.sif")
	if err := vmWrapSIF(base, sqfs, sifFsSquashfs); err != nil {
		t.Fatal(err)
	}
	img, err := os.ReadFile(base)
	if err != nil {
		t.Fatal(err)
	}
	root, err := locateRootfs(bytes.NewReader(img), int64(len(img)), base)
	if err != nil {
		t.Fatal(err)
	}
	sb := vmParseSqfsSuper(img[root.offset:])
	if sb.xattrTable == ^uint64(0) || sb.lookupTable == ^uint64(0) || sb.inodes == 0 || sb.bytesUsed > uint64(root.size) ||
		sb.inodeTable >= sb.bytesUsed || sb.xattrTable+12 > sb.bytesUsed {
		t.Fatalf("the C4 squashfs lacks a field to craft: %+v (partition %d bytes)", sb, root.size)
	}
	files := map[string]string{"images/c4-base.sif": base}
	for _, c := range vmC4Crafted {
		v := bytes.Clone(img)
		c.patch(v[root.offset:root.offset+root.size], sb, root.size)
		out := filepath.Join(work, "c4-"+c.name+".sif")
		if err := os.WriteFile(out, v, 0o644); err != nil {
			t.Fatal(err)
		}
		files["images/c4-"+c.name+".sif"] = out
	}
	// A third of the flips hit the superblock, the rest the first 4 KiB of metadata (inode table on).
	rng := rand.New(rand.NewPCG(0xC4, 2019))
	metaEnd := min(sb.bytesUsed, sb.inodeTable+4096)
	var spec strings.Builder
	fmt.Fprintf(&spec, "partition %d %d\n", root.offset, root.size)
	for range vmC4Flips {
		for j, n := 0, 1+rng.IntN(3); j < n; j++ {
			off := int64(sb.inodeTable) + rng.Int64N(int64(metaEnd-sb.inodeTable))
			if rng.IntN(3) == 0 {
				off = rng.Int64N(squashfsSuperSize)
			}
			fmt.Fprintf(&spec, "%d:%d ", root.offset+off, rng.IntN(8))
		}
		spec.WriteString("\n")
	}
	flips := filepath.Join(work, "c4-flips")
	if err := os.WriteFile(flips, []byte(spec.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	files["images/c4-flips"] = flips
	return files
}

// --- guest: shared pieces -----------------------------------------------------------------------

// vmAdv is the state of the adversarial cases: the kernel log reader (INV-8).
type vmAdv struct {
	g          *vmGuest
	kmsg       int
	squashErrs int // "SQUASHFS error" lines seen, for the report
	target     string
}

// Kernel log lines that must never appear (INV-8), plus a hung task.
var vmKernelBad = []string{"BUG:", "Oops", "KASAN", "WARNING:", "general protection", "INFO: task"}

func (g *vmGuest) adversarialCases() {
	fd, err := unix.Open("/dev/kmsg", unix.O_RDONLY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		g.failed++
		g.say("FAIL open /dev/kmsg: %v", err)
		return
	}
	defer unix.Close(fd)
	unix.Seek(fd, 0, io.SeekEnd) // only what the attacks cause
	var st unix.Stat_t
	if err := unix.Stat(vmMinirunExe, &st); err != nil {
		g.failed++
		g.say("FAIL stat %s: %v", vmMinirunExe, err)
		return
	}
	a := &vmAdv{g: g, kmsg: fd, target: fmt.Sprintf("%d:%d", st.Dev, st.Ino)}
	vmConfig("dm-crypt")
	os.Remove(vmGrantFile)
	a.c4Cases()
	a.check("d5/dm-crypt", a.d5Case)
	a.e9Cases()
	a.e7Cases()
	os.Remove(vmGrantFile)
}

// check is g.check plus INV-8: no new alarming kernel log line.
func (a *vmAdv) check(name string, fn func() error) {
	a.g.check(name, func() error {
		err := fn()
		if bad := a.kernelTrouble(); len(bad) > 0 {
			err = errors.Join(err, fmt.Errorf("kernel log: %q", bad))
		}
		return err
	})
}

// kernelTrouble reads the kernel log records written since the last call and returns the alarming ones.
func (a *vmAdv) kernelTrouble() []string {
	var bad []string
	buf := make([]byte, 8192)
	for {
		n, err := unix.Read(a.kmsg, buf)
		if err == unix.EPIPE {
			continue // records were overwritten; the next read resumes
		}
		if err != nil || n <= 0 {
			return bad
		}
		msg := string(buf[:n])
		if i := strings.IndexByte(msg, ';'); i >= 0 {
			msg = msg[i+1:]
		}
		msg, _, _ = strings.Cut(msg, "\n")
		if strings.Contains(msg, "SQUASHFS error") {
			a.squashErrs++
		}
		for _, p := range vmKernelBad {
			if strings.Contains(msg, p) {
				bad = append(bad, msg)
				break
			}
		}
	}
}

// vmRunOut is one finished minirun run.
type vmRunOut struct {
	stdout, stderr string
	code           int // exit status, -1 for a signal
	sig            syscall.Signal
	hung           bool
	took           time.Duration
}

func (r vmRunOut) String() string {
	how := fmt.Sprintf("exit %d", r.code)
	switch {
	case r.hung:
		how = "hung (killed after the timeout)"
	case r.code == -1:
		how = "killed by " + r.sig.String()
	}
	return fmt.Sprintf("%s after %v, stdout %q, stderr %q", how, r.took.Round(time.Millisecond), vmTail(r.stdout, 5), vmTail(r.stderr, 5))
}

// vmRunMinirun runs minirun as uid with extra environment and kills its process group after timeout.
func vmRunMinirun(uid int, timeout time.Duration, env []string, args ...string) vmRunOut {
	cmd := vmMinirunCmd(uid, args...)
	cmd.SysProcAttr.Setpgid = true
	cmd.Env = append(cmd.Env, env...)
	return vmFinish(cmd, timeout)
}

func vmFinish(cmd *exec.Cmd, timeout time.Duration) vmRunOut {
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	start := time.Now()
	if err := cmd.Start(); err != nil {
		return vmRunOut{code: -2, stderr: err.Error()}
	}
	var hung atomic.Bool
	timer := time.AfterFunc(timeout, func() {
		hung.Store(true)
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	})
	cmd.Wait()
	timer.Stop()
	r := vmRunOut{stdout: out.String(), stderr: errb.String(), hung: hung.Load(), took: time.Since(start)}
	ws := cmd.ProcessState.Sys().(syscall.WaitStatus)
	if ws.Signaled() {
		r.code, r.sig = -1, ws.Signal()
	} else {
		r.code = ws.ExitStatus()
	}
	return r
}

// vmCleanOutput is INV-7's text half: no Go crash output.
func vmCleanOutput(r vmRunOut) error {
	for _, s := range []string{"panic:", "fatal error:", "goroutine ", "SIGSEGV", "runtime:"} {
		if strings.Contains(r.stdout+r.stderr, s) {
			return fmt.Errorf("output contains %q: %s", s, r)
		}
	}
	return nil
}

// vmRefused: exit 255 with exactly one ERROR:/FATAL: line; under --debug it ends in "[class]".
func vmRefused(r vmRunOut, class errClass) error {
	if err := vmCleanOutput(r); err != nil {
		return err
	}
	var lines []string
	for _, l := range strings.Split(r.stderr, "\n") {
		if strings.HasPrefix(l, "ERROR:") || strings.HasPrefix(l, "FATAL:") {
			lines = append(lines, l)
		}
	}
	if r.hung || r.code != 255 || len(lines) != 1 {
		return fmt.Errorf("want exit 255 with one ERROR: line, got %s", r)
	}
	if class != "" && vmErrClass(lines[0]) != string(class) {
		return fmt.Errorf("want %s, got %q", class, lines[0])
	}
	return nil
}

// vmErrClass is the "[E_...]" --debug appends to an error line, or "?".
func vmErrClass(s string) string {
	for _, l := range strings.Split(s, "\n") {
		if i := strings.LastIndex(l, " [E_"); i >= 0 && (strings.HasPrefix(l, "ERROR:") || strings.HasPrefix(l, "FATAL:")) {
			return strings.TrimSuffix(l[i+2:], "]")
		}
	}
	return "?"
}

// vmErrLine is the ERROR:/FATAL: line of a run's stderr.
func vmErrLine(stderr string) string {
	for _, l := range strings.Split(stderr, "\n") {
		if strings.HasPrefix(l, "ERROR:") || strings.HasPrefix(l, "FATAL:") {
			return l
		}
	}
	return ""
}

// vmWaitNoLoops waits until no loop device is attached (the autoclear after the last user).
func vmWaitNoLoops(patience time.Duration) error {
	return vmWaitGone(patience, "/sys/block/loop*/loop/backing_file")
}

func vmGrant(caps string) error {
	if caps == "" {
		if err := os.Remove(vmGrantFile); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
		return nil
	}
	return os.WriteFile(vmGrantFile, []byte(fmt.Sprintf("[users]\nalice = [%q]\n", caps)), 0o644)
}

// vmHelperCmd runs this binary as uid in an attack helper mode on the guest's host side.
func vmHelperCmd(uid int, mode string, env ...string) *exec.Cmd {
	cmd := exec.Command("/dmtest")
	cmd.Dir = "/home/alice"
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true,
		Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(uid), Groups: []uint32{}}}
	cmd.Env = append([]string{"PATH=/bin:/sbin", "HOME=/home/alice", vmAttackEnv + "=" + mode}, env...)
	return cmd
}

// vmLines reads r line by line into a channel, closed at EOF.
func vmLines(r io.Reader) <-chan string {
	ch := make(chan string, 64)
	go func() {
		sc := bufio.NewScanner(r)
		for sc.Scan() {
			ch <- sc.Text()
		}
		close(ch)
	}()
	return ch
}

// vmWaitLine returns the lines read until one starts with prefix (that one included).
func vmWaitLine(ch <-chan string, prefix string, patience time.Duration) ([]string, error) {
	var got []string
	timeout := time.After(patience)
	for {
		select {
		case l, ok := <-ch:
			if !ok {
				return got, fmt.Errorf("output ended before %q: %q", prefix, got)
			}
			got = append(got, l)
			if strings.HasPrefix(l, prefix) {
				return got, nil
			}
		case <-timeout:
			return got, fmt.Errorf("no %q within %v: %q", prefix, patience, got)
		}
	}
}

// vmProcs lists pid → (ppid, exe target) for every process; root reads every exe link.
func vmProcs() map[int][2]string {
	procs := map[int][2]string{}
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		i := bytes.LastIndexByte(stat, ')')
		if err != nil || i < 0 {
			continue
		}
		f := strings.Fields(string(stat[i+1:]))
		exe, _ := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid))
		if len(f) > 1 {
			procs[pid] = [2]string{f[1], exe}
		}
	}
	return procs
}

// vmIsMinirun says whether exe is minirun's: the binary, or the reaper a
// --pid init and its parent become once the payload runs (reaper.go).
func vmIsMinirun(exe string) bool {
	return exe == vmMinirunExe || strings.HasPrefix(exe, "/memfd:minirun-init")
}

// vmMinirunProcs lists the processes running minirun (vmIsMinirun).
func vmMinirunProcs() []int {
	var pids []int
	for pid, p := range vmProcs() {
		if vmIsMinirun(p[1]) {
			pids = append(pids, pid)
		}
	}
	sort.Ints(pids)
	return pids
}

func vmFileDigest(p string) (string, error) {
	b, err := os.ReadFile(p)
	if err != nil {
		return "", err
	}
	var st unix.Stat_t
	if err := unix.Stat(p, &st); err != nil {
		return "", err
	}
	return fmt.Sprintf("sha256 %x uid %d gid %d mode %o", sha256.Sum256(b), st.Uid, st.Gid, st.Mode), nil
}

// --- guest: C4 ----------------------------------------------------------------------------------

func (a *vmAdv) c4Run(image string) vmRunOut {
	return vmRunMinirun(vmUserUID, 20*time.Second, nil, "exec", "-c", "-d", image, "/t")
}

func (a *vmAdv) c4Cases() {
	a.check("c4/base", func() error {
		if r := a.c4Run("/images/c4-base.sif"); r.code != vmC4Exit {
			return fmt.Errorf("the valid image: %s", r)
		}
		return vmWaitNoLoops(5 * time.Second)
	})
	for _, c := range vmC4Crafted {
		a.check("c4/"+c.name, func() error {
			r := a.c4Run("/images/c4-" + c.name + ".sif")
			if err := vmRefused(r, eImage); err != nil {
				return err
			}
			a.g.say("INFO c4/%s: %s", c.name, vmErrLine(r.stderr))
			return vmWaitNoLoops(5 * time.Second)
		})
	}
	a.check("c4/bitflips", a.c4Bitflips)
}

// c4Bitflips runs every flipped variant: it either still runs the payload (exit 42) or is refused
// with one error line that is not E_INTERNAL; never a hang, a kept loop device or a kernel alarm.
// Two variants run at a time (the guest has two CPUs); each waits for its own loop device to go.
func (a *vmAdv) c4Bitflips() error {
	spec, err := os.ReadFile("/images/c4-flips")
	if err != nil {
		return err
	}
	base, err := os.ReadFile("/images/c4-base.sif")
	if err != nil {
		return err
	}
	lines := strings.Split(strings.TrimSpace(string(spec)), "\n")
	var partOff, partSize int64
	if _, err := fmt.Sscanf(lines[0], "partition %d %d", &partOff, &partSize); err != nil || len(lines)-1 != vmC4Flips {
		return fmt.Errorf("flip list: %q, %d variants (%v)", lines[0], len(lines)-1, err)
	}
	if err := os.MkdirAll("/tmp/c4", 0o755); err != nil {
		return err
	}
	var mu sync.Mutex
	start, ran, classes, examples := time.Now(), 0, map[string]int{}, map[string]string{}
	var fails []string
	var slowest time.Duration
	variant := func(i int, v string) error {
		img := bytes.Clone(base)
		var desc []string
		for _, f := range strings.Fields(v) {
			var off int64
			var bit uint
			if _, err := fmt.Sscanf(f, "%d:%d", &off, &bit); err != nil || off < partOff || off >= partOff+partSize || bit > 7 {
				return fmt.Errorf("flip list line %d: %q", i+2, v)
			}
			img[off] ^= 1 << bit
			desc = append(desc, fmt.Sprintf("sqfs+%#x bit %d", off-partOff, bit))
		}
		// A new file per variant: no loop device or page cache of an earlier one can be reused.
		p := fmt.Sprintf("/tmp/c4/flip-%03d.sif", i)
		if err := os.WriteFile(p, img, 0o644); err != nil {
			return err
		}
		defer os.Remove(p)
		r := a.c4Run(p)
		var err error
		class := ""
		if r.code == vmC4Exit {
			err = vmCleanOutput(r)
		} else if err = vmRefused(r, ""); err == nil {
			if class = vmErrClass(r.stderr); class == string(eInternal) || class == "?" {
				err = fmt.Errorf("refused as %s: %s", class, r)
			}
		}
		if err == nil {
			err = vmWaitLoopsOf(p, 5*time.Second)
		}
		mu.Lock()
		defer mu.Unlock()
		slowest = max(slowest, r.took)
		if class == "" && err == nil {
			ran++
		} else if class != "" {
			classes[class]++
			if examples[class] == "" {
				examples[class] = fmt.Sprintf("%s: %s", class, vmErrLine(r.stderr))
			}
		}
		// The other worker's variant may share the blame for a kernel line; both are named then.
		if bad := a.kernelTrouble(); len(bad) > 0 {
			err = errors.Join(err, fmt.Errorf("kernel log (this or the concurrent variant): %q", bad))
		}
		if err != nil {
			fails = append(fails, fmt.Sprintf("variant %d (%s): %v", i, strings.Join(desc, ", "), err))
		}
		return nil
	}
	work := make(chan int)
	errs := make(chan error, 2)
	for range 2 {
		go func() {
			for i := range work {
				if err := variant(i, lines[1+i]); err != nil {
					errs <- err
					for range work {
					}
					return
				}
			}
			errs <- nil
		}()
	}
	for i := range vmC4Flips {
		work <- i
	}
	close(work)
	err = errors.Join(<-errs, <-errs)
	if err != nil {
		return err
	}
	if err := vmWaitNoLoops(5 * time.Second); err != nil {
		return err
	}
	a.g.say("INFO c4/bitflips: %d variants, two at a time, in %v (slowest run %v): %d still ran the payload, refused %v; %d SQUASHFS error lines in the kernel log",
		vmC4Flips, time.Since(start).Round(time.Millisecond), slowest.Round(time.Millisecond), ran, classes, a.squashErrs)
	for _, c := range slices.Sorted(maps.Keys(examples)) {
		a.g.say("INFO c4/bitflips: e.g. %s", examples[c])
	}
	if len(fails) > 0 {
		sort.Strings(fails)
		return fmt.Errorf("%d of %d variants failed: %s", len(fails), vmC4Flips, strings.Join(fails[:min(len(fails), 5)], "; "))
	}
	return nil
}

// vmWaitLoopsOf waits until no loop device is backed by file p.
func vmWaitLoopsOf(p string, patience time.Duration) error {
	deadline := time.Now().Add(patience)
	for {
		var held []string
		loops, _ := filepath.Glob("/sys/block/loop*/loop/backing_file")
		for _, l := range loops {
			if b, err := os.ReadFile(l); err == nil && strings.HasPrefix(string(b), p) {
				held = append(held, l)
			}
		}
		if len(held) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("loop devices still attached to %s after %v: %v", p, patience, held)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// --- guest: D5 (dm path) ------------------------------------------------------------------------

// vmVolumeKey unlocks an encrypted SIF and returns a copy of its volume key.
func vmVolumeKey(image string) ([]byte, error) {
	f, err := os.Open(image)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, _ := f.Stat()
	root, err := locateRootfs(f, st.Size(), image)
	if err != nil {
		return nil, err
	}
	vol, err := openLUKS(io.NewSectionReader(f, root.offset, root.size), root.size, defaultKDFLimits())
	if err != nil {
		return nil, err
	}
	key, err := vol.unlock([]byte(vmPassphrase))
	if err != nil {
		return nil, err
	}
	defer key.wipe()
	return bytes.Clone(key.bytes()), nil
}

// d5Case: while uid 1000 runs an encrypted image through dm-crypt, a scanner running as uid 1000
// from before the launch finds neither passphrase nor volume key (raw or hex) in any
// /proc/*/cmdline or environ, files under /dev/shm /home/alice /run /tmp, nor a minirun key in
// /proc/keys, and opens no dm or loop node; root sees the device nodes root-owned and 0660 or
// stricter; the container's /dev holds no block device, loop, dm or mapper entry.
func (a *vmAdv) d5Case() error {
	vmConfig("dm-crypt")
	key, err := vmVolumeKey("/images/minirun-4096.sif")
	if err != nil {
		return fmt.Errorf("volume key: %v", err)
	}
	needles := [][]byte{[]byte(vmPassphrase), key, []byte(hex.EncodeToString(key)), []byte(strings.ToUpper(hex.EncodeToString(key)))}
	scan := vmHelperCmd(vmUserUID, "d5scan")
	scanIn, _ := scan.StdinPipe()
	var scanOut, scanErr bytes.Buffer
	scan.Stdout, scan.Stderr = &scanOut, &scanErr
	if err := scan.Start(); err != nil {
		return err
	}
	defer func() { syscall.Kill(-scan.Process.Pid, syscall.SIGKILL); scan.Wait() }()
	var hexNeedles []string
	for _, n := range needles {
		hexNeedles = append(hexNeedles, hex.EncodeToString(n))
	}
	// The needles go over stdin: in the scanner's argv or environment it would find itself.
	fmt.Fprintln(scanIn, strings.Join(hexNeedles, " "))

	cmd := vmMinirunCmd(vmUserUID, "exec", "/images/minirun-4096.sif", "sh", "-c",
		"echo DEV; ls -A /dev; echo BLOCK; find /dev -type b; echo READY; exec sleep 30")
	cmd.SysProcAttr.Setpgid = true
	stdout, _ := cmd.StdoutPipe()
	var errb bytes.Buffer
	cmd.Stderr = &errb
	if err := cmd.Start(); err != nil {
		return err
	}
	killed := false
	defer func() {
		if !killed {
			syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			cmd.Wait()
		}
	}()
	out, err := vmWaitLine(vmLines(stdout), "READY", 30*time.Second)
	if err != nil {
		return fmt.Errorf("payload: %v; stderr %q", err, errb.String())
	}
	var problems []string
	// Inside: /dev has no block node and no loop, dm or mapper entry.
	section := ""
	for _, l := range out {
		switch l {
		case "DEV", "BLOCK", "READY":
			section = l
			continue
		}
		if section == "BLOCK" || strings.HasPrefix(l, "loop") || strings.HasPrefix(l, "dm-") || l == "mapper" || l == ".minirun" {
			problems = append(problems, "inside the container: /dev entry "+l)
		}
	}
	// Root's view: the run uses one minirun-* mapping; every block node is root-owned, 0660 or stricter.
	var names []string
	devs, _ := filepath.Glob("/sys/block/dm-*/dm/name")
	for _, d := range devs {
		if b, err := os.ReadFile(d); err == nil && strings.HasPrefix(string(b), dmNamePrefix) {
			names = append(names, strings.TrimSpace(string(b)))
		}
	}
	if len(names) != 1 {
		problems = append(problems, fmt.Sprintf("running container has mappings %v, want one %s*", names, dmNamePrefix))
	}
	blocks := 0
	filepath.WalkDir("/dev", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.Type()&fs.ModeDevice == 0 || d.Type()&fs.ModeCharDevice != 0 {
			return nil
		}
		var st unix.Stat_t
		if unix.Lstat(p, &st) == nil {
			blocks++
			if st.Uid != 0 || (st.Gid != 0 && st.Gid != 6) || st.Mode&0o117 != 0 {
				problems = append(problems, fmt.Sprintf("block node %s is %d:%d %o", p, st.Uid, st.Gid, st.Mode&0o7777))
			}
		}
		return nil
	})
	// Let the scanner finish a pass or two with the payload running, then stop it.
	time.Sleep(300 * time.Millisecond)
	scanIn.Close()
	done := make(chan error, 1)
	go func() { done <- scan.Wait() }()
	select {
	case err = <-done:
	case <-time.After(30 * time.Second):
		err = errors.New("scanner did not finish")
	}
	if err != nil || !strings.Contains(scanOut.String(), "SUMMARY") {
		problems = append(problems, fmt.Sprintf("scanner: %v: %q %q", err, vmTail(scanOut.String(), 10), scanErr.String()))
	}
	for _, l := range strings.Split(scanOut.String(), "\n") {
		if strings.HasPrefix(l, "HIT") {
			problems = append(problems, "as uid 1000: "+l)
		}
	}
	a.g.say("INFO d5/dm-crypt: %d block nodes checked on the host; scanner: %s", blocks,
		strings.TrimSpace(vmTail(scanOut.String(), 1)))
	syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	cmd.Wait()
	killed = true
	if len(problems) > 0 {
		return errors.New(strings.Join(problems, "; "))
	}
	return vmNoLeftovers(5 * time.Second)
}

// vmScanMain is the D5 scanner (uid 1000): needles in hex on the first stdin line, then scans
// until stdin closes, and once more after that.
func vmScanMain() int {
	in := bufio.NewReader(os.Stdin)
	line, err := in.ReadString('\n')
	if err != nil {
		fmt.Println("HIT no needles:", err)
		return 1
	}
	var needles [][]byte
	for _, f := range strings.Fields(line) {
		if b, err := hex.DecodeString(f); err == nil && len(b) > 0 {
			needles = append(needles, b)
		}
	}
	stop := make(chan struct{})
	go func() { io.Copy(io.Discard, in); close(stop) }()
	hits := map[string]bool{}
	hit := func(format string, args ...any) {
		if s := fmt.Sprintf(format, args...); !hits[s] {
			hits[s] = true
			fmt.Println("HIT " + s)
		}
	}
	look := func(what string, data []byte) {
		for i, n := range needles {
			if bytes.Contains(data, n) {
				hit("%s holds secret %d", what, i)
			}
		}
	}
	self := os.Getpid()
	scans, reads := 0, 0
	for last := false; ; {
		select {
		case <-stop:
			last = true
		default:
		}
		ents, _ := os.ReadDir("/proc")
		for _, e := range ents {
			pid, err := strconv.Atoi(e.Name())
			if err != nil || pid == self {
				continue
			}
			for _, f := range []string{"cmdline", "environ"} {
				if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/%s", pid, f)); err == nil {
					reads++
					look(fmt.Sprintf("/proc/%d/%s", pid, f), b)
				}
			}
		}
		if keys, err := os.ReadFile("/proc/keys"); err == nil {
			for _, l := range strings.Split(string(keys), "\n") {
				if strings.Contains(l, "minirun") {
					hit("/proc/keys shows %q", l)
				}
			}
		}
		nodes, _ := filepath.Glob("/dev/dm-*")
		more, _ := filepath.Glob("/dev/loop*")
		mapper, _ := filepath.Glob("/dev/mapper/*")
		hidden, _ := filepath.Glob("/dev/.minirun/*")
		for _, n := range append(append(append(nodes, more...), mapper...), hidden...) {
			if f, err := os.Open(n); err == nil {
				f.Close()
				hit("opened %s", n)
			}
		}
		for _, dir := range []string{"/dev/shm", "/home/alice", "/run", "/tmp"} {
			filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
				if err == nil && d.Type().IsRegular() {
					if info, err := d.Info(); err == nil && info.Size() <= 1<<20 {
						if b, err := os.ReadFile(p); err == nil {
							look(p, b)
						}
					}
				}
				return nil
			})
		}
		scans++
		if last {
			break
		}
	}
	fmt.Printf("SUMMARY %d scans, %d cmdline/environ files read, %d hits\n", scans, reads, len(hits))
	return 0
}

// --- guest: E9 ----------------------------------------------------------------------------------

// e9Cases: with a uid 1000 `--pid` run alive (P0 and its init, minirun or the reaper), attackers
// as uid 1000 try to open the binary for writing through /proc/<pid>/exe (directly and via an
// O_PATH fd reopened through /proc/self/fd), through /proc/<pid>/root, and with busybox through
// /proc/1/exe: from the host side, and from containers in default and --pid mode under grants of
// nothing, CAP_DAC_OVERRIDE and CAP_SYS_PTRACE. The last attacker keeps the fds it reached and
// tries again once the victim has exited (no ETXTBSY to hide behind). Every attempt must fail
// and the binary stay bit for bit, owner and mode as it was.
func (a *vmAdv) e9Cases() {
	before, err := vmFileDigest(vmMinirunExe)
	if err != nil {
		a.g.failed++
		a.g.say("FAIL e9 setup: %v", err)
		return
	}
	victim := vmMinirunCmd(vmUserUID, "exec", "--pid", "/images/plain.sif", "sleep", "120")
	victim.SysProcAttr.Setpgid = true
	var victimErr bytes.Buffer
	victim.Stderr = &victimErr
	victimGone := false
	stopVictim := func() {
		if !victimGone {
			syscall.Kill(-victim.Process.Pid, syscall.SIGKILL)
			victim.Wait()
			victimGone = true
		}
	}
	var initPid int
	a.check("e9/host-side", func() error {
		if err := victim.Start(); err != nil {
			victimGone = true
			return err
		}
		// Wait for the payload: a sleep whose parent is P0's child running minirun (the init,
		// or the reaper it becomes).
		deadline := time.Now().Add(30 * time.Second)
		for initPid == 0 {
			procs := vmProcs()
			for pid, p := range procs {
				if ppid, _ := strconv.Atoi(p[0]); ppid == victim.Process.Pid && vmIsMinirun(p[1]) {
					for _, c := range procs {
						if c[0] == strconv.Itoa(pid) && strings.HasSuffix(c[1], "busybox") {
							initPid = pid
						}
					}
				}
			}
			if initPid == 0 && time.Now().After(deadline) {
				return fmt.Errorf("the --pid victim did not start: %q", victimErr.String())
			}
			time.Sleep(20 * time.Millisecond)
		}
		cmd := vmHelperCmd(vmUserUID, "host", vmTargetEnv+"="+a.target, fmt.Sprintf("%s=%d %d", vmPidsEnv, victim.Process.Pid, initPid))
		r := vmFinish(cmd, 30*time.Second)
		if r.code != 0 || strings.Contains(r.stdout, "BREACH") || !strings.Contains(r.stdout, "SUMMARY") {
			return fmt.Errorf("host-side attacker: %s", r)
		}
		if !strings.Contains(r.stdout, "reached=[]") {
			return fmt.Errorf("uid 1000 reached the binary of a non-dumpable minirun: %s", r.stdout)
		}
		a.g.say("INFO e9/host-side: P0 %d, init %d: %s", victim.Process.Pid, initPid, vmLastLine(r.stdout, "SUMMARY"))
		return nil
	})
	defer stopVictim()
	for _, g := range vmE9Grants {
		for _, pidMode := range []bool{false, true} {
			mode := map[bool]string{false: "default", true: "pid"}[pidMode]
			// The default-mode CAP_SYS_PTRACE attacker reaches the victim's binary: it holds the
			// fds and stops the victim before trying again, so it comes after every other one
			// that needs the victim (the --pid attackers only see their own init).
			a.check("e9/"+g.name+"/"+mode, func() error {
				if err := vmGrant(g.caps); err != nil {
					return err
				}
				return a.e9Attack(g.caps, pidMode, before, stopVictim)
			})
		}
	}
	stopVictim()
	vmGrant("")
	a.check("e9/binary-unchanged", func() error {
		after, err := vmFileDigest(vmMinirunExe)
		if err != nil || after != before {
			return fmt.Errorf("%s changed: %s → %s (%v)", vmMinirunExe, before, after, err)
		}
		return vmNoLeftovers(5 * time.Second)
	})
}

func vmLastLine(out, prefix string) string {
	last := ""
	for _, l := range strings.Split(out, "\n") {
		if strings.HasPrefix(l, prefix) {
			last = l
		}
	}
	return last
}

// e9Attack runs the attacker in a container as uid 1000 with caps (granted) and checks its report.
func (a *vmAdv) e9Attack(caps string, pidMode bool, before string, stopVictim func()) error {
	args := []string{"exec"}
	if pidMode {
		args = append(args, "--pid")
	}
	if caps != "" {
		args = append(args, "--add-caps", caps)
	}
	args = append(args, "-B", "/dmtest:/attack", "/images/plain.sif", "/attack")
	hold := caps == "CAP_SYS_PTRACE" && !pidMode
	cmd := vmMinirunCmd(vmUserUID, args...)
	cmd.SysProcAttr.Setpgid = true
	cmd.Env = append(cmd.Env, vmAttackEnv+"=inside", vmTargetEnv+"="+a.target, fmt.Sprintf("%s=%v", vmHoldEnv, hold))
	stdin, _ := cmd.StdinPipe()
	stdout, _ := cmd.StdoutPipe()
	var errb bytes.Buffer
	cmd.Stderr = &errb
	if err := cmd.Start(); err != nil {
		return err
	}
	defer func() { syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL); cmd.Wait() }()
	lines := vmLines(stdout)
	var out []string
	if hold {
		got, err := vmWaitLine(lines, "HOLD", 60*time.Second)
		out = append(out, got...)
		if err != nil {
			return fmt.Errorf("attacker: %v; stderr %q", err, errb.String())
		}
		stopVictim()
		deadline := time.Now().Add(5 * time.Second)
		for len(vmMinirunProcs()) > 0 && time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond)
		}
		if left := vmMinirunProcs(); len(left) > 0 {
			return fmt.Errorf("minirun processes %v outlived the victim", left)
		}
		fmt.Fprintln(stdin, "go")
	}
	got, err := vmWaitLine(lines, "SUMMARY", 60*time.Second)
	out = append(out, got...)
	if err != nil {
		return fmt.Errorf("attacker: %v; stderr %q", err, errb.String())
	}
	stdin.Close()
	for range lines {
	}
	cmd.Wait()
	text := strings.Join(out, "\n")
	var problems []string
	if cmd.ProcessState.ExitCode() != 0 || strings.Contains(text, "BREACH") {
		problems = append(problems, fmt.Sprintf("attacker exit %d: %q; stderr %q", cmd.ProcessState.ExitCode(), text, errb.String()))
	}
	// The attacker ran with exactly the grant, or the case proves nothing.
	want := map[string]uint64{"": 0, "CAP_DAC_OVERRIDE": 1 << unix.CAP_DAC_OVERRIDE, "CAP_SYS_PTRACE": 1 << unix.CAP_SYS_PTRACE}[caps]
	if capEff := vmLastLine(text, "CAPEFF "); capEff != fmt.Sprintf("CAPEFF %016x", want) {
		problems = append(problems, fmt.Sprintf("attacker %q, want CapEff %016x", capEff, want))
	}
	// Without CAP_SYS_PTRACE no minirun process is reachable (non-dumpable); with it, one is.
	reachedNone := strings.Contains(text, "reached=[]")
	if (caps == "CAP_SYS_PTRACE") == reachedNone {
		problems = append(problems, "unexpected reach: "+vmLastLine(text, "SUMMARY"))
	}
	if after, err := vmFileDigest(vmMinirunExe); err != nil || after != before {
		problems = append(problems, fmt.Sprintf("%s changed: %s → %s (%v)", vmMinirunExe, before, after, err))
	}
	if len(problems) > 0 {
		return errors.New(strings.Join(problems, "; "))
	}
	a.g.say("INFO e9 grant %q, %s mode: %s", caps, map[bool]string{false: "default", true: "--pid"}[pidMode], vmLastLine(text, "SUMMARY"))
	return nil
}

// vmExeAttack is the E9 attacker (uid 1000): "host" goes after DMTEST_PIDS, "inside" after every
// process its /proc shows. Prints CAPEFF, BREACH lines for any success, HOLD when waiting, SUMMARY.
func vmExeAttack(mode string) int {
	var dev, ino uint64
	fmt.Sscanf(os.Getenv(vmTargetEnv), "%d:%d", &dev, &ino)
	if status, err := os.ReadFile("/proc/self/status"); err == nil {
		for _, l := range strings.Split(string(status), "\n") {
			if v, ok := strings.CutPrefix(l, "CapEff:"); ok {
				fmt.Println("CAPEFF " + strings.TrimSpace(v))
			}
		}
	}
	breaches, errnos := 0, map[string]int{}
	try := func(what string, err error) {
		if err == nil {
			breaches++
			fmt.Println("BREACH " + what)
			return
		}
		var en syscall.Errno
		if errors.As(err, &en) {
			errnos[unix.ErrnoName(en)]++
		} else {
			errnos["other"]++
		}
	}
	openW := func(p string, flags int) error {
		fd, err := unix.Open(p, flags|unix.O_CLOEXEC, 0)
		if err == nil {
			unix.Close(fd)
		}
		return err
	}
	var pids []int
	if mode == "host" {
		for _, f := range strings.Fields(os.Getenv(vmPidsEnv)) {
			if pid, err := strconv.Atoi(f); err == nil {
				pids = append(pids, pid)
			}
		}
	} else {
		ents, _ := os.ReadDir("/proc")
		for _, e := range ents {
			if pid, err := strconv.Atoi(e.Name()); err == nil && pid != os.Getpid() {
				pids = append(pids, pid)
			}
		}
	}
	var reached, heldExe, heldRoot []int
	for _, pid := range pids {
		exe := fmt.Sprintf("/proc/%d/exe", pid)
		try(exe+" O_WRONLY", openW(exe, unix.O_WRONLY))
		try(exe+" O_RDWR", openW(exe, unix.O_RDWR))
		if fd, err := unix.Open(exe, unix.O_PATH|unix.O_CLOEXEC, 0); err == nil {
			// minirun's binary, or the sealed memfd of the reaper a --pid run becomes.
			var st unix.Stat_t
			target, _ := os.Readlink(exe)
			if unix.Fstat(fd, &st) == nil && (st.Dev == dev && st.Ino == ino || vmIsMinirun(target)) {
				reached = append(reached, pid)
				re := fmt.Sprintf("/proc/self/fd/%d", fd)
				try(exe+" O_PATH reopened O_WRONLY", openW(re, unix.O_WRONLY))
				try(exe+" O_PATH reopened O_RDWR", openW(re, unix.O_RDWR))
				heldExe = append(heldExe, fd)
			} else {
				unix.Close(fd)
			}
		}
		root := fmt.Sprintf("/proc/%d/root", pid)
		try(root+vmMinirunExe+" O_WRONLY", openW(root+vmMinirunExe, unix.O_WRONLY))
		if fd, err := unix.Open(root, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0); err == nil {
			heldRoot = append(heldRoot, fd)
		}
	}
	if mode == "inside" {
		// What a shell can do: a write through the magic link of PID 1 (the init under --pid).
		err := exec.Command("/bin/sh", "-c", "echo x > /proc/1/exe").Run()
		try("sh: echo x > /proc/1/exe", err)
	}
	if os.Getenv(vmHoldEnv) == "true" && len(heldExe)+len(heldRoot) > 0 {
		fmt.Printf("HOLD %d exe, %d root\n", len(heldExe), len(heldRoot))
		bufio.NewReader(os.Stdin).ReadString('\n')
		for _, fd := range heldExe {
			try("held exe fd reopened O_WRONLY after its process exited", openW(fmt.Sprintf("/proc/self/fd/%d", fd), unix.O_WRONLY))
		}
		for _, fd := range heldRoot {
			if f, err := unix.Openat(fd, strings.TrimPrefix(vmMinirunExe, "/"), unix.O_WRONLY|unix.O_CLOEXEC, 0); err == nil {
				unix.Close(f)
				try("held root fd: bin/minirun O_WRONLY", nil)
			} else {
				try("held root fd", err)
			}
		}
	}
	fmt.Printf("SUMMARY pids=%d reached=%v roots=%d errnos=%v\n", len(pids), reached, len(heldRoot), errnos)
	if breaches > 0 {
		return 1
	}
	return 0
}

// --- guest: E7 ----------------------------------------------------------------------------------

// vmMountKeys is the set of mounts in a mountinfo: root, mount point, type and source.
func vmMountKeys(path string) map[string]bool {
	keys := map[string]bool{}
	b, _ := os.ReadFile(path)
	for _, l := range strings.Split(string(b), "\n") {
		f := strings.Fields(l)
		for i := 6; i+2 < len(f); i++ {
			if f[i] == "-" {
				keys[f[3]+" "+f[4]+" "+f[i+1]+" "+f[i+2]] = true
				break
			}
		}
	}
	return keys
}

// vmMountPoller records every change of the guest host's mount table while it runs.
type vmMountPoller struct {
	base  map[string]bool
	mu    sync.Mutex
	seen  map[string]bool // vmMountDiff lines
	polls int
	stop  chan struct{}
	done  chan struct{}
}

func vmStartMountPoller() *vmMountPoller {
	p := &vmMountPoller{base: vmMountKeys("/proc/self/mountinfo"), seen: map[string]bool{},
		stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(p.done)
		for {
			for _, f := range []string{"/proc/self/mountinfo", "/proc/1/mountinfo"} {
				diff := vmMountDiff(p.base, f)
				p.mu.Lock()
				for _, d := range diff {
					p.seen[d] = true
				}
				p.mu.Unlock()
			}
			p.polls++
			select {
			case <-p.stop:
				return
			case <-time.After(time.Millisecond):
			}
		}
	}()
	return p
}

func (p *vmMountPoller) changes() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	var keys []string
	for k := range p.seen {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// vmMountDiff compares a mountinfo with base: "+ key" for a new mount, "- key" for a gone one.
func vmMountDiff(base map[string]bool, mountinfo string) []string {
	now := vmMountKeys(mountinfo)
	var diff []string
	for k := range now {
		if !base[k] {
			diff = append(diff, "+ "+k)
		}
	}
	for k := range base {
		if !now[k] {
			diff = append(diff, "- "+k)
		}
	}
	sort.Strings(diff)
	return diff
}

// vmUndoNewMounts detaches the mounts that appeared since base, a few rounds: one stacked on
// another's parent path hides it until it goes itself.
func vmUndoNewMounts(base map[string]bool) {
	for range 5 {
		diff := vmMountDiff(base, "/proc/self/mountinfo")
		if !slices.ContainsFunc(diff, func(d string) bool { return strings.HasPrefix(d, "+ ") }) {
			return
		}
		for i := len(diff) - 1; i >= 0; i-- {
			if k, ok := strings.CutPrefix(diff[i], "+ "); ok {
				unix.Unmount(strings.Fields(k)[1], unix.MNT_DETACH)
			}
		}
	}
}

// e7Cases, with the guest's / recursively shared and a poller watching its mount table:
//   - payloads that mount tmpfs (uid 1000 with a CAP_SYS_ADMIN grant, and root) on binds of host
//     directories (/tmp, a new /tmp/e7sub, the home) and on an image directory (/etc) see no
//     shared mount inside and leave no mount on the host;
//   - a run binding /opt sees root's empty tmpfs over /opt/secret, not the files under it;
//   - a CAP_SYS_ADMIN payload unmounting /opt/secret inside does not unmount it on the host.
func (a *vmAdv) e7Cases() {
	setup := func() error {
		if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_SHARED, ""); err != nil {
			return fmt.Errorf("make / rshared: %v", err)
		}
		if err := os.MkdirAll("/opt/secret", 0o755); err != nil {
			return err
		}
		if err := os.WriteFile("/opt/secret/file", []byte("under the tmpfs\n"), 0o644); err != nil {
			return err
		}
		return unix.Mount("e7cover", "/opt/secret", "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, "mode=0755")
	}
	if err := setup(); err != nil {
		a.g.failed++
		a.g.say("FAIL e7 setup: %v", err)
		return
	}
	poller := vmStartMountPoller()
	hostChanged := func() error {
		diff := vmMountDiff(poller.base, "/proc/self/mountinfo")
		if len(diff) == 0 {
			return nil
		}
		vmUndoNewMounts(poller.base) // so that the next case starts clean
		if !slices.ContainsFunc(diff, func(d string) bool { return strings.HasPrefix(d, "- ") }) {
			return fmt.Errorf("the host's mount table changed: %q", diff)
		}
		// A gone cover is put back for the cases after this one.
		unix.Mount("e7cover", "/opt/secret", "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, "mode=0755")
		return fmt.Errorf("the host's mount table changed: %q", diff)
	}
	defer func() {
		vmUndoNewMounts(poller.base)
		unix.Unmount("/opt/secret", unix.MNT_DETACH)
		os.RemoveAll("/opt")
		os.Remove("/tmp/e7sub")
		unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, "")
		vmGrant("")
	}()
	// R3: nothing in the container is a peer of a host mount; then the mounts.
	inner := `grep " shared:" /proc/self/mountinfo | sed "s/^/SHARED /"; ` +
		`mkdir -p /tmp/e7sub && mount -t tmpfs e7inner /tmp/e7sub && mount -t tmpfs e7inner /tmp && ` +
		`mount -t tmpfs e7inner "$HOME" && mount -t tmpfs e7inner /etc && echo MOUNTED`
	for _, uid := range []int{vmUserUID, 0} {
		name := "e7/inner-mounts/uid0"
		var args []string
		if uid != 0 {
			name = "e7/inner-mounts/uid1000-CAP_SYS_ADMIN"
			args = []string{"--add-caps", "CAP_SYS_ADMIN"}
		}
		a.check(name, func() error {
			if err := vmGrant("CAP_SYS_ADMIN"); err != nil {
				return err
			}
			r := vmRunMinirun(uid, 30*time.Second, nil, append(append([]string{"exec"}, args...), "/images/plain.sif", "sh", "-c", inner)...)
			var problems []string
			if r.code != 0 || !strings.HasSuffix(r.stdout, "MOUNTED\n") {
				problems = append(problems, fmt.Sprintf("the payload did not mount its four tmpfs: %s", r))
			}
			for _, l := range strings.Split(r.stdout, "\n") {
				if strings.HasPrefix(l, "SHARED ") {
					problems = append(problems, "shared with the host inside: "+strings.TrimPrefix(l, "SHARED "))
				}
			}
			if err := hostChanged(); err != nil {
				problems = append(problems, err.Error())
			}
			if len(problems) > 0 {
				return errors.New(strings.Join(problems, "; "))
			}
			return nil
		})
	}
	a.check("e7/overmount-stays", func() error {
		vmGrant("")
		r := vmRunMinirun(vmUserUID, 30*time.Second, nil, "exec", "-B", "/opt", "/images/plain.sif", "sh", "-c",
			"ls -A /opt; echo :; ls -A /opt/secret; echo :; cat /opt/secret/file 2>/dev/null; echo :")
		if r.code != 0 || r.stdout != "secret\n:\n:\n:\n" {
			return fmt.Errorf("inside, /opt/secret is not root's empty tmpfs: %s", r)
		}
		return hostChanged()
	})
	a.check("e7/inner-umount/uid1000-CAP_SYS_ADMIN", func() error {
		if err := vmGrant("CAP_SYS_ADMIN"); err != nil {
			return err
		}
		r := vmRunMinirun(vmUserUID, 30*time.Second, nil, "exec", "--add-caps", "CAP_SYS_ADMIN", "-B", "/opt",
			"/images/plain.sif", "sh", "-c", "umount /opt/secret && echo UNMOUNTED")
		if r.code != 0 || r.stdout != "UNMOUNTED\n" {
			return fmt.Errorf("the payload could not unmount /opt/secret inside: %s", r)
		}
		return hostChanged()
	})
	a.check("e7/no-host-mount", func() error {
		close(poller.stop)
		<-poller.done
		a.g.say("INFO e7: %d polls of the host's mount table during the runs", poller.polls)
		if seen := poller.changes(); len(seen) > 0 {
			return fmt.Errorf("the poller saw the host's mount table change: %q", seen)
		}
		return vmNoLeftovers(5 * time.Second)
	})
}

// --- helper modes -------------------------------------------------------------------------------

func init() {
	// Only the guest driver sets this, for this binary run as an attacker (uid 1000).
	if mode := os.Getenv(vmAttackEnv); mode != "" && os.Getenv(vmGuestEnv) == "" {
		switch mode {
		case "host", "inside":
			os.Exit(vmExeAttack(mode))
		case "d5scan":
			os.Exit(vmScanMain())
		}
	}
}
