// vm_test.go runs the dm-crypt backend for real (spec/images-and-encryption.md §7): this machine's
// kernel has no device-mapper, so TestVMDMCrypt boots Debian's cloud kernel under QEMU software
// emulation with an initramfs holding busybox, the dm/crypt/loop/squashfs modules, a static
// minirun, encrypted images and this very test binary, whose init() becomes the guest driver.
// The catalogue attacks that need such a disposable machine are in vm_adversarial_test.go.
package main

import (
	"archive/tar"
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/rand"
	"debug/elf"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

const (
	vmGuestEnv    = "MINIRUN_VM_GUEST" // set by the guest's /init for this binary only
	vmMark        = "MINIRUN-VM: "
	vmPassphrase  = "vm test passphrase"
	vmMarker      = "minirun-test\n" // /MARKER of testdata/mkrootfs.sh
	vmBootTimeout = 200 * time.Second
	vmGuestBudget = 170 * time.Second
	vmKernelMeta  = "linux-image-cloud-amd64"
	vmUserUID     = 1000
)

// vmImage is one encrypted test image: the SIF's name in the guest and how it was made.
type vmImage struct {
	name string // file in /images
	how  string
}

var vmImages = []vmImage{
	{"minirun-4096.sif", "formatLUKS2 (LUKS2, aes-xts-plain64, 4096-byte sectors, 1 MiB offset)"},
	{"cryptsetup-512.sif", "cryptsetup reencrypt (LUKS2, aes-xts-plain64, 512-byte sectors)"},
	{"luks1-cbc-essiv.sif", "cryptsetup reencrypt + convert (LUKS1, aes-cbc-essiv:sha256)"},
}

// The modules /init loads, with their dependencies first; cbc is built in, essiv is for LUKS1.
var vmModuleRoots = []string{"loop", "squashfs", "dm-mod", "dm-crypt", "ecb", "xts", "essiv"}

func TestVMDMCrypt(t *testing.T) {
	t0 := time.Now()
	qemu := vmNeedQEMU(t)
	work := t.TempDir()

	kern := vmKernel(t, work)
	busybox := vmBusybox(t, work)
	minirun := vmBuildMinirun(t, work)
	driver := vmDriverBinary(t, work)
	files := vmMakeImages(t, work, busybox)
	for name, file := range vmAdversarialImages(t, work) {
		files[name] = file
	}
	initrd := filepath.Join(work, "initrd.gz")
	if err := vmWriteInitramfs(initrd, kern, busybox, minirun, driver, files); err != nil {
		t.Fatal(err)
	}
	st, _ := os.Stat(initrd)
	t.Logf("prepared in %v: kernel %s, modules %s, initramfs %.1f MiB", time.Since(t0).Round(time.Millisecond),
		kern.pkg, strings.Join(kern.order, " "), float64(st.Size())/(1<<20))

	res := vmBoot(t, qemu, kern.vmlinuz, initrd)
	t.Logf("VM: booted (init running) %v after qemu start; guest driver ran %v; qemu ran %v; test total %v",
		res.boot.Round(time.Millisecond), res.driver.Round(time.Millisecond), res.total.Round(time.Millisecond),
		time.Since(t0).Round(time.Millisecond))

	var fails, oks, skips []string
	for _, l := range res.lines {
		switch {
		case strings.HasPrefix(l, "FAIL"):
			fails = append(fails, l)
		case strings.HasPrefix(l, "ok "):
			oks = append(oks, strings.Fields(l)[1])
		case strings.HasPrefix(l, "SKIP"):
			skips = append(skips, l)
		}
	}
	for _, l := range res.lines {
		t.Log(vmMark + l)
	}
	pass := len(res.lines) > 0 && res.lines[len(res.lines)-1] == "PASS"
	// Cases that must have run whatever minirun exec can do.
	want := []string{"dm-available", "wrong-key", "hex-key-fallback", "sweep", "no-leftovers",
		"exec/plain/uid0", "exec/plain/uid1000", "exec/plain/uid0/sigkill", "exec/plain/uid1000/sigkill"}
	for _, img := range vmImages {
		want = append(want, "attach/"+img.name)
	}
	want = append(want, vmAdversarialWant()...)
	for _, w := range want {
		if !containsString(oks, w) {
			fails = append(fails, "case "+w+" did not report ok")
		}
	}
	if !pass || len(fails) > 0 {
		t.Errorf("VM test failed: %s\n--- serial output (last 150 lines) ---\n%s", strings.Join(fails, "\n"), vmTail(res.output, 150))
	}
	if len(skips) > 0 {
		t.Logf("minirun exec on encrypted images did not run in the VM: %s", strings.Join(skips, "; "))
	}
}

// --- host: tools, kernel, busybox, binaries -----------------------------------------------------

// vmNeedQEMU finds qemu-system-x86_64, installing Debian's qemu-system-x86 as root when missing.
// It skips only when qemu cannot be installed.
func vmNeedQEMU(t *testing.T) string {
	t.Helper()
	if p, err := exec.LookPath("qemu-system-x86_64"); err == nil {
		return p
	}
	if os.Geteuid() != 0 {
		t.Skip("qemu-system-x86_64 is missing and only root can install it (apt-get install qemu-system-x86)")
	}
	install := func() error {
		cmd := exec.Command("apt-get", "install", "-y", "-qq", "--no-install-recommends", "qemu-system-x86")
		cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
		out, err := cmd.CombinedOutput()
		if err != nil {
			return fmt.Errorf("%v: %s", err, vmTail(string(out), 5))
		}
		return nil
	}
	err := install()
	if err != nil {
		exec.Command("apt-get", "update", "-qq").Run()
		err = install()
	}
	p, lerr := exec.LookPath("qemu-system-x86_64")
	if lerr != nil {
		t.Skipf("qemu-system-x86_64 cannot be installed here (apt-get install qemu-system-x86: %v)", err)
	}
	return p
}

// vmKernelFiles is what the guest needs from Debian's kernel package.
type vmKernelFiles struct {
	pkg     string
	vmlinuz string
	order   []string          // module names, dependencies first
	modules map[string][]byte // name → .ko bytes
}

// vmKernel downloads the versioned package linux-image-cloud-amd64 depends on and takes vmlinuz
// and the modules from it. MINIRUN_VM_KERNEL may name a .deb already downloaded.
func vmKernel(t *testing.T, work string) *vmKernelFiles {
	t.Helper()
	deb := os.Getenv("MINIRUN_VM_KERNEL")
	if deb == "" {
		pkg := vmKernelPackage(t)
		vmRun(t, work, nil, "apt-get", "download", "-qq", pkg)
		matches, _ := filepath.Glob(filepath.Join(work, pkg+"_*.deb"))
		if len(matches) != 1 {
			t.Fatalf("apt-get download %s left %v", pkg, matches)
		}
		deb = matches[0]
	}
	k := &vmKernelFiles{pkg: filepath.Base(deb), modules: map[string][]byte{}}
	kos := map[string][]byte{} // module name → bytes, for every .ko in the directories we need
	var builtin []byte
	err := vmDebFiles(deb, func(name string, r io.Reader) error {
		switch {
		case strings.HasPrefix(name, "boot/vmlinuz-"):
			k.vmlinuz = filepath.Join(work, "vmlinuz")
			return vmWriteReader(k.vmlinuz, r)
		case strings.HasSuffix(name, "/modules.builtin"):
			b, err := io.ReadAll(r)
			builtin = b
			return err
		}
		i := strings.Index(name, "/kernel/")
		if i < 0 {
			return nil
		}
		rel := name[i+len("/kernel/"):]
		if !(strings.HasPrefix(rel, "crypto/") || strings.HasPrefix(rel, "drivers/md/") ||
			strings.HasPrefix(rel, "drivers/block/") || strings.HasPrefix(rel, "fs/squashfs/") || strings.HasPrefix(rel, "lib/")) {
			return nil
		}
		b, err := io.ReadAll(r)
		if err != nil {
			return err
		}
		base := path.Base(rel)
		switch {
		case strings.HasSuffix(base, ".ko"):
		case strings.HasSuffix(base, ".ko.xz"), strings.HasSuffix(base, ".ko.zst"):
			tool := map[bool]string{true: "xz", false: "zstd"}[strings.HasSuffix(base, ".xz")]
			cmd := exec.Command(tool, "-dc")
			cmd.Stdin = bytes.NewReader(b)
			if b, err = cmd.Output(); err != nil {
				return fmt.Errorf("decompress %s with %s: %v", rel, tool, err)
			}
			base = base[:strings.LastIndex(base, ".ko")+3]
		default:
			return nil
		}
		kos[vmModName(strings.TrimSuffix(base, ".ko"))] = b
		return nil
	})
	if err != nil {
		t.Fatalf("unpack %s: %v", deb, err)
	}
	if k.vmlinuz == "" {
		t.Fatalf("%s has no boot/vmlinuz-*", deb)
	}
	seen := map[string]bool{}
	var visit func(name string, chain []string) error
	visit = func(name string, chain []string) error {
		name = vmModName(name)
		if seen[name] {
			return nil
		}
		seen[name] = true
		b, ok := kos[name]
		if !ok {
			if bytes.Contains(builtin, []byte("/"+strings.ReplaceAll(name, "_", "-")+".ko")) ||
				bytes.Contains(builtin, []byte("/"+name+".ko")) {
				return nil // built into this kernel
			}
			return fmt.Errorf("module %s (needed by %v) is neither in the package nor built in", name, chain)
		}
		deps, err := vmModuleDepends(b)
		if err != nil {
			return fmt.Errorf("module %s: %v", name, err)
		}
		for _, d := range deps {
			if err := visit(d, append(chain, name)); err != nil {
				return err
			}
		}
		k.order = append(k.order, name)
		k.modules[name] = b
		return nil
	}
	for _, m := range vmModuleRoots {
		if err := visit(m, nil); err != nil {
			t.Fatal(err)
		}
	}
	return k
}

func vmModName(s string) string { return strings.ReplaceAll(s, "-", "_") }

// vmKernelPackage asks apt which versioned kernel the cloud metapackage depends on.
func vmKernelPackage(t *testing.T) string {
	t.Helper()
	find := func() string {
		out, _ := exec.Command("apt-cache", "depends", vmKernelMeta).Output()
		for _, line := range strings.Split(string(out), "\n") {
			f := strings.Fields(line)
			if len(f) == 2 && f[0] == "Depends:" && strings.HasPrefix(f[1], "linux-image-") && f[1] != vmKernelMeta {
				return f[1]
			}
		}
		return ""
	}
	pkg := find()
	if pkg == "" && os.Geteuid() == 0 {
		exec.Command("apt-get", "update", "-qq").Run()
		pkg = find()
	}
	if pkg == "" {
		t.Fatalf("apt-cache depends %s names no linux-image package (apt lists missing? run apt-get update)", vmKernelMeta)
	}
	return pkg
}

// vmDebFiles streams the data archive of a .deb (dpkg-deb --fsys-tarfile) to fn, per regular file.
func vmDebFiles(deb string, fn func(name string, r io.Reader) error) error {
	cmd := exec.Command("dpkg-deb", "--fsys-tarfile", deb)
	out, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		return err
	}
	tr := tar.NewReader(out)
	var ferr error
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			ferr = err
			break
		}
		if h.Typeflag == tar.TypeReg {
			if err := fn(strings.TrimPrefix(h.Name, "./"), tr); err != nil {
				ferr = err
				break
			}
		}
	}
	io.Copy(io.Discard, out)
	if err := cmd.Wait(); err != nil && ferr == nil {
		ferr = fmt.Errorf("dpkg-deb: %v: %s", err, stderr.String())
	}
	return ferr
}

// vmModuleDepends reads depends= from a module's .modinfo section.
func vmModuleDepends(ko []byte) ([]string, error) {
	f, err := elf.NewFile(bytes.NewReader(ko))
	if err != nil {
		return nil, err
	}
	s := f.Section(".modinfo")
	if s == nil {
		return nil, errors.New("no .modinfo section")
	}
	data, err := s.Data()
	if err != nil {
		return nil, err
	}
	for _, kv := range bytes.Split(data, []byte{0}) {
		if v, ok := bytes.CutPrefix(kv, []byte("depends=")); ok {
			if len(v) == 0 {
				return nil, nil
			}
			return strings.Split(string(v), ","), nil
		}
	}
	return nil, nil
}

// vmIsStatic is true for an ELF executable without a program interpreter.
func vmIsStatic(p string) bool {
	f, err := elf.Open(p)
	if err != nil {
		return false
	}
	defer f.Close()
	for _, prog := range f.Progs {
		if prog.Type == elf.PT_INTERP {
			return false
		}
	}
	return f.Type == elf.ET_EXEC || f.Type == elf.ET_DYN
}

// vmBusybox returns a static busybox: the host's (busybox-static) or one from the package.
func vmBusybox(t *testing.T, work string) string {
	t.Helper()
	if p, err := exec.LookPath("busybox"); err == nil && vmIsStatic(p) {
		return p
	}
	vmRun(t, work, nil, "apt-get", "download", "-qq", "busybox-static")
	debs, _ := filepath.Glob(filepath.Join(work, "busybox-static_*.deb"))
	if len(debs) != 1 {
		t.Fatalf("apt-get download busybox-static left %v", debs)
	}
	out := filepath.Join(work, "busybox")
	err := vmDebFiles(debs[0], func(name string, r io.Reader) error {
		if name == "bin/busybox" || name == "usr/bin/busybox" {
			if err := vmWriteReader(out, r); err != nil {
				return err
			}
			return os.Chmod(out, 0o755)
		}
		return nil
	})
	if err != nil || !vmIsStatic(out) {
		t.Fatalf("no static busybox from busybox-static: %v", err)
	}
	return out
}

func vmGo() string {
	if p, err := exec.LookPath("go"); err == nil {
		return p
	}
	return "/usr/local/go/bin/go"
}

// vmBuildMinirun builds the static minirun the guest installs setuid.
func vmBuildMinirun(t *testing.T, work string) string {
	t.Helper()
	out := filepath.Join(work, "minirun")
	vmRun(t, ".", []string{"CGO_ENABLED=0"}, vmGo(), "build", "-trimpath", "-buildvcs=false",
		"-ldflags", "-s -w -X main.sysconfdir=/etc", "-o", out, ".")
	return out
}

// vmDriverBinary is the guest driver: this test binary when it is static (CGO_ENABLED=0, as
// make test builds it), else a static rebuild with go test -c.
func vmDriverBinary(t *testing.T, work string) string {
	t.Helper()
	if self, err := os.Executable(); err == nil && vmIsStatic(self) {
		return self
	}
	out := filepath.Join(work, "dmtest")
	vmRun(t, ".", []string{"CGO_ENABLED=0"}, vmGo(), "test", "-c", "-o", out, ".")
	if !vmIsStatic(out) {
		t.Fatal("go test -c with CGO_ENABLED=0 made a dynamic binary")
	}
	return out
}

// vmMakeImages builds the busybox squashfs and its encrypted SIFs; returns guest path → host file.
func vmMakeImages(t *testing.T, work, busybox string) map[string]string {
	t.Helper()
	if _, err := exec.LookPath("mksquashfs"); err != nil {
		t.Fatal("mksquashfs not found: install squashfs-tools (make deps)")
	}
	luksNeedCryptsetup(t)
	rootfs := filepath.Join(work, "rootfs")
	vmRun(t, ".", []string{"BUSYBOX=" + busybox}, "sh", "testdata/mkrootfs.sh", rootfs)
	sqfs := filepath.Join(work, "root.sqfs")
	vmRun(t, work, nil, "mksquashfs", rootfs, sqfs, "-noappend", "-comp", "gzip", "-quiet", "-all-root")
	plain, err := os.ReadFile(sqfs)
	if err != nil {
		t.Fatal(err)
	}
	pass := []byte(vmPassphrase)
	luks := map[string]string{}
	luks["minirun-4096.sif"] = filepath.Join(work, "minirun.luks")
	luksFormatFile(t, luks["minirun-4096.sif"], plain, pass, luksFormatOptions{kdf: "pbkdf2", pbkdf2Iterations: 1000})
	for _, v := range []struct {
		name  string
		luks1 bool
		args  []string
	}{
		{"cryptsetup-512.sif", false, []string{"--sector-size", "512"}},
		{"luks1-cbc-essiv.sif", true, []string{"--sector-size", "512", "--cipher", "aes-cbc-essiv:sha256", "--key-size", "256"}},
	} {
		dir := filepath.Join(work, strings.TrimSuffix(v.name, ".sif"))
		os.Mkdir(dir, 0o700)
		luks[v.name] = luksReencrypt(t, dir, plain, pass, v.luks1, append(v.args, luksFastKDF("pbkdf2")...)...)
	}
	files := map[string]string{"images/root.sqfs": sqfs, "images/plain.sif": filepath.Join(work, "plain.sif")}
	if err := vmWrapSIF(files["images/plain.sif"], sqfs, sifFsSquashfs); err != nil {
		t.Fatal(err)
	}
	for _, img := range vmImages {
		out := filepath.Join(work, img.name)
		if err := vmWrapSIF(out, luks[img.name], sifFsEncryptedSquashfs); err != nil {
			t.Fatalf("SIF %s: %v", img.name, err)
		}
		files["images/"+img.name] = out
	}
	return files
}

// vmWrapSIF writes a SIF whose primary partition is file part: fstype 1 (squashfs) or 5 (LUKS).
func vmWrapSIF(out, part string, fstype int32) error {
	in, err := os.Open(part)
	if err != nil {
		return err
	}
	defer in.Close()
	st, _ := in.Stat()
	obj, err := sifRootfsObject(in, st.Size(), fstype, "amd64")
	if err != nil {
		return err
	}
	f, err := os.Create(out)
	if err != nil {
		return err
	}
	defer f.Close()
	_, err = writeSIF(f, []sifNewObject{obj}, sifWriteOptions{})
	return err
}

func vmRun(t *testing.T, dir string, env []string, name string, args ...string) {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, vmTail(string(out), 20))
	}
}

func vmWriteReader(p string, r io.Reader) error {
	f, err := os.Create(p)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, r); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func vmTail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// --- host: the initramfs ------------------------------------------------------------------------

// vmInit is the guest's /init: kernel filesystems, modules in dependency order, the driver.
const vmInit = `#!/bin/busybox sh
if [ "$1" != stage2 ]; then
	# pivot_root refuses the initial rootfs: move everything onto a tmpfs root first.
	/bin/busybox mkdir /newroot
	/bin/busybox mount -t tmpfs -o mode=0755 tmpfs /newroot
	for f in bin sbin etc home images lib root run tmp mnt proc sys dev init dmtest; do
		/bin/busybox cp -a /$f /newroot/
	done
	exec /bin/busybox switch_root /newroot /init stage2
fi
/bin/busybox mount -t proc proc /proc
/bin/busybox mount -t sysfs sysfs /sys
/bin/busybox mount -t devtmpfs devtmpfs /dev
/bin/busybox --install -s /bin
for m in $(cat /lib/modules/order); do
	insmod /lib/modules/$m.ko || echo "MINIRUN-VM: FAIL insmod $m"
done
[ -c /dev/mapper/control ] || echo "MINIRUN-VM: FAIL no /dev/mapper/control"
echo "MINIRUN-VM: BOOTED uptime $(cut -d' ' -f1 /proc/uptime)"
MINIRUN_VM_GUEST=1 /dmtest
echo "MINIRUN-VM: DRIVER EXITED $?"
poweroff -f
`

// cpioEntry is one member of a newc archive.
type cpioEntry struct {
	name     string
	mode     uint32 // with type bits
	uid, gid uint32
	data     []byte
	rdev     [2]uint32
}

// writeNewc writes a "070701" (newc) cpio archive, as cpio -o -H newc.
func writeNewc(w io.Writer, entries []cpioEntry) error {
	pad := func(n int) []byte { return make([]byte, (4-n%4)%4) }
	ino := uint32(100)
	for _, e := range append(entries, cpioEntry{name: "TRAILER!!!"}) {
		nlink := uint32(1)
		if e.mode&unix.S_IFMT == unix.S_IFDIR {
			nlink = 2
		}
		if e.name == "TRAILER!!!" {
			nlink = 0
		}
		h := fmt.Sprintf("070701%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X",
			ino, e.mode, e.uid, e.gid, nlink, 0, len(e.data), 0, 0, e.rdev[0], e.rdev[1], len(e.name)+1, 0)
		ino++
		for _, b := range [][]byte{[]byte(h), []byte(e.name), {0}, pad(len(h) + len(e.name) + 1), e.data, pad(len(e.data))} {
			if _, err := w.Write(b); err != nil {
				return err
			}
		}
	}
	return nil
}

func vmWriteInitramfs(out string, k *vmKernelFiles, busybox, minirun, driver string, images map[string]string) error {
	dir := func(name string, mode, uid uint32) cpioEntry {
		return cpioEntry{name: name, mode: unix.S_IFDIR | mode, uid: uid, gid: uid}
	}
	entries := []cpioEntry{
		dir("bin", 0o755, 0), dir("sbin", 0o755, 0), dir("dev", 0o755, 0), dir("proc", 0o555, 0), dir("sys", 0o555, 0),
		dir("tmp", 0o1777, 0), dir("run", 0o755, 0), dir("mnt", 0o755, 0), dir("root", 0o700, 0), dir("etc", 0o755, 0),
		dir("etc/minirun", 0o755, 0), dir("home", 0o755, 0), dir("home/alice", 0o755, vmUserUID),
		dir("lib", 0o755, 0), dir("lib/modules", 0o755, 0), dir("images", 0o755, 0),
		{name: "dev/console", mode: unix.S_IFCHR | 0o600, rdev: [2]uint32{5, 1}},
		{name: "init", mode: unix.S_IFREG | 0o755, data: []byte(vmInit)},
		{name: "etc/passwd", mode: unix.S_IFREG | 0o644, data: []byte("root:x:0:0:root:/root:/bin/sh\nalice:x:1000:1000:alice:/home/alice:/bin/sh\n")},
		{name: "etc/group", mode: unix.S_IFREG | 0o644, data: []byte("root:x:0:\nalice:x:1000:\n")},
		{name: "etc/minirun/minirun.toml", mode: unix.S_IFREG | 0o644, data: []byte("encrypted_backend = \"dm-crypt\"\n")},
		{name: "lib/modules/order", mode: unix.S_IFREG | 0o644, data: []byte(strings.Join(k.order, "\n") + "\n")},
	}
	for _, m := range k.order {
		entries = append(entries, cpioEntry{name: "lib/modules/" + m + ".ko", mode: unix.S_IFREG | 0o644, data: k.modules[m]})
	}
	add := func(name, src string, mode uint32) error {
		b, err := os.ReadFile(src)
		if err != nil {
			return err
		}
		entries = append(entries, cpioEntry{name: name, mode: unix.S_IFREG | mode, data: b})
		return nil
	}
	if err := add("bin/busybox", busybox, 0o755); err != nil {
		return err
	}
	if err := add("bin/minirun", minirun, 0o4755); err != nil {
		return err
	}
	if err := add("dmtest", driver, 0o755); err != nil {
		return err
	}
	names := make([]string, 0, len(images))
	for n := range images {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		if err := add(n, images[n], 0o644); err != nil {
			return err
		}
	}
	f, err := os.Create(out)
	if err != nil {
		return err
	}
	defer f.Close()
	zw, _ := gzip.NewWriterLevel(f, gzip.BestSpeed)
	if err := writeNewc(zw, entries); err != nil {
		return err
	}
	if err := zw.Close(); err != nil {
		return err
	}
	return f.Close()
}

// --- host: boot ---------------------------------------------------------------------------------

type vmResult struct {
	lines  []string // MINIRUN-VM: lines, without the prefix
	output string   // the whole serial console
	boot   time.Duration
	driver time.Duration
	total  time.Duration
}

// vmBoot runs the guest under TCG and collects its serial console; the guest powers off itself.
func vmBoot(t *testing.T, qemu, kernel, initrd string) vmResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), vmBootTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, qemu, "-accel", "tcg", "-cpu", "max", "-m", "1024", "-smp", "2",
		"-nographic", "-no-reboot", "-nic", "none", "-monitor", "none",
		"-kernel", kernel, "-initrd", initrd, "-append", "console=ttyS0 rdinit=/init panic=-1 quiet")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	start := time.Now()
	if err := cmd.Start(); err != nil {
		t.Fatalf("start qemu: %v", err)
	}
	var res vmResult
	var all strings.Builder
	var driverStart time.Time
	sc := bufio.NewScanner(out)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := strings.TrimRight(sc.Text(), "\r")
		all.WriteString(line + "\n")
		i := strings.Index(line, vmMark)
		if i < 0 {
			continue
		}
		msg := line[i+len(vmMark):]
		switch {
		case strings.HasPrefix(msg, "BOOTED"):
			res.boot = time.Since(start)
			driverStart = time.Now()
		case strings.HasPrefix(msg, "DRIVER EXITED"):
			if !driverStart.IsZero() {
				res.driver = time.Since(driverStart)
			}
		default:
			res.lines = append(res.lines, msg)
		}
	}
	werr := cmd.Wait()
	res.total = time.Since(start)
	res.output = all.String()
	if ctx.Err() != nil {
		t.Fatalf("VM did not power off within %v\n--- serial output ---\n%s", vmBootTimeout, vmTail(res.output, 150))
	}
	if werr != nil {
		t.Fatalf("qemu: %v\n%s\n--- serial output ---\n%s", werr, stderr.String(), vmTail(res.output, 150))
	}
	return res
}

// --- guest: the driver --------------------------------------------------------------------------

func init() {
	// Only the guest's /init sets this, and only for this binary, never on the host.
	if os.Getenv(vmGuestEnv) == "1" && os.Getppid() == 1 {
		os.Exit(vmGuestMain())
	}
}

type vmGuest struct {
	failed     int
	execWorks  bool   // minirun exec runs encrypted images
	execReason string // why not
}

func (g *vmGuest) say(format string, args ...any) {
	fmt.Printf(vmMark+format+"\n", args...)
}

// check runs one case and prints "ok <name>" or "FAIL <name>: <reason>".
func (g *vmGuest) check(name string, fn func() error) {
	start := time.Now()
	err := func() (err error) {
		defer func() {
			if p := recover(); p != nil {
				err = fmt.Errorf("panic: %v", p)
			}
		}()
		return fn()
	}()
	if err != nil {
		g.failed++
		g.say("FAIL %s: %v", name, err)
		return
	}
	g.say("ok %s (%v)", name, time.Since(start).Round(time.Millisecond))
}

func vmGuestMain() int {
	time.AfterFunc(vmGuestBudget, func() {
		fmt.Printf(vmMark + "FAIL guest driver: timed out\n")
		os.Exit(3)
	})
	os.Unsetenv(vmGuestEnv)
	g := &vmGuest{}
	plain, err := os.ReadFile("/images/root.sqfs")
	if err != nil {
		g.say("FAIL setup: %v", err)
		return 1
	}
	g.check("dm-available", func() error {
		if !dmcryptAvailable() {
			return errors.New("dmcryptAvailable() is false with dm-mod and dm-crypt loaded")
		}
		return vmNoLeftovers(0)
	})
	for _, img := range vmImages {
		g.check("attach/"+img.name, func() error { return vmAttachCase("/images/"+img.name, plain) })
	}
	g.check("wrong-key", func() error { return vmWrongKeyCase("/images/minirun-4096.sif") })
	g.check("hex-key-fallback", func() error { return vmHexKeyCase("/images/minirun-4096.sif", plain) })
	g.check("sweep", vmSweepCase)
	g.minirunCases()
	g.adversarialCases()
	g.check("no-leftovers", func() error { return vmNoLeftovers(5 * time.Second) })
	if g.failed > 0 {
		g.say("FAIL %d case(s)", g.failed)
		return 1
	}
	g.say("PASS")
	return 0
}

// vmOpenVolume opens an encrypted SIF, unlocks it and attaches its partition to a loop device.
func vmOpenVolume(image string) (loop *os.File, vol *luksVolume, key *volumeKey, closeAll func(), err error) {
	f, err := os.Open(image)
	if err != nil {
		return nil, nil, nil, nil, err
	}
	st, _ := f.Stat()
	root, err := locateRootfs(f, st.Size(), image)
	if err != nil || root.kind != rootfsEncrypted {
		f.Close()
		return nil, nil, nil, nil, fmt.Errorf("locate rootfs: %v (kind %v)", err, root.kind)
	}
	vol, err = openLUKS(io.NewSectionReader(f, root.offset, root.size), root.size, defaultKDFLimits())
	if err != nil {
		f.Close()
		return nil, nil, nil, nil, err
	}
	if key, err = vol.unlock([]byte(vmPassphrase)); err != nil {
		f.Close()
		return nil, nil, nil, nil, err
	}
	if loop, err = attachLoop(f, root.offset, root.size, 0); err != nil {
		key.wipe()
		f.Close()
		return nil, nil, nil, nil, err
	}
	return loop, vol, key, func() { loop.Close(); key.wipe(); f.Close() }, nil
}

// vmAttachCase: attachDMCrypt on the loop, then everything §7 case 3 asks of a live mapping,
// the plaintext, a mount through f.Name(), and the removal once the mount goes.
func vmAttachCase(image string, plain []byte) error {
	loop, vol, key, closeAll, err := vmOpenVolume(image)
	if err != nil {
		return err
	}
	defer closeAll()
	loopName := filepath.Base(loop.Name())
	dm, err := attachDMCrypt(loop, vol, key, 0)
	if err != nil {
		return fmt.Errorf("attachDMCrypt: %w", err)
	}
	defer dm.Close()
	loop.Close() // the table holds the loop now

	var st unix.Stat_t
	if err := unix.Fstat(int(dm.Fd()), &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFBLK {
		return fmt.Errorf("returned file is not a block device: %v", err)
	}
	name, err := vmSysfsDMName(st.Rdev)
	if err != nil {
		return err
	}
	if err := vmCheckLiveMapping(name, vol.keySize, key.bytes()); err != nil {
		return err
	}
	if fs, err := os.ReadDir(dmNodeDir); err == nil && len(fs) != 0 {
		return fmt.Errorf("%s still holds %d node(s)", dmNodeDir, len(fs))
	}
	// The plaintext through the kernel's dm-crypt equals the squashfs.
	got := make([]byte, len(plain))
	if _, err := dm.ReadAt(got, 0); err != nil {
		return fmt.Errorf("read the mapping: %v", err)
	}
	if !bytes.Equal(got, plain) {
		return errors.New("dm-crypt plaintext differs from the squashfs")
	}
	// Mount by f.Name(), as the launch does; the mount then holds the device alone.
	mnt := "/mnt/" + name
	os.Mkdir(mnt, 0o755)
	if err := unix.Mount(dm.Name(), mnt, "squashfs", unix.MS_RDONLY|unix.MS_NODEV|unix.MS_NOSUID, ""); err != nil {
		return fmt.Errorf("mount %s: %v", dm.Name(), err)
	}
	marker, err := os.ReadFile(mnt + "/MARKER")
	dm.Close()
	if err != nil || string(marker) != vmMarker {
		unix.Unmount(mnt, unix.MNT_DETACH)
		return fmt.Errorf("MARKER through the mount: %q %v", marker, err)
	}
	if _, err := os.Stat("/sys/dev/block/" + vmMajMin(st.Rdev) + "/dm"); err != nil {
		unix.Unmount(mnt, unix.MNT_DETACH)
		return fmt.Errorf("mapping vanished while mounted: %v", err)
	}
	if err := unix.Unmount(mnt, 0); err != nil {
		return fmt.Errorf("unmount: %v", err)
	}
	if err := vmWaitGone(5*time.Second, "/sys/dev/block/"+vmMajMin(st.Rdev), "/sys/block/"+loopName+"/loop"); err != nil {
		return err
	}
	return nil
}

// vmCheckLiveMapping checks a running minirun mapping: deferred removal armed, creator uuid, the
// key only by logon reference in the table, and no minirun key left in any keyring.
func vmCheckLiveMapping(name string, keySize int, key []byte) error {
	c, err := openDMControl()
	if err != nil {
		return err
	}
	defer c.close()
	list, err := c.listDevices()
	if err != nil {
		return err
	}
	found := false
	for _, d := range list {
		found = found || d.name == name
	}
	if !found || !strings.HasPrefix(name, dmNamePrefix) {
		return fmt.Errorf("DM_LIST_DEVICES %v lacks %s", list, name)
	}
	st, err := c.status(name)
	if err != nil {
		return err
	}
	if st.flags&dmDeferredRemove == 0 || st.flags&dmReadonlyFlag == 0 || st.flags&dmActivePresentFlag == 0 || st.openCount < 1 {
		return fmt.Errorf("status of %s: flags %#x open %d (want deferred, read-only, active, open)", name, st.flags, st.openCount)
	}
	if pid, _, ok := dmCreatorOf(st.uuid); !ok || pid <= 1 {
		return fmt.Errorf("uuid %q", st.uuid)
	}
	table, err := c.table(name)
	if err != nil {
		return err
	}
	ref := fmt.Sprintf(":%d:logon:minirun:", keySize)
	if len(table) != 1 || table[0].targetType != "crypt" || !strings.Contains(table[0].params, ref) {
		return fmt.Errorf("table %+v lacks %s", table, ref)
	}
	if key != nil && strings.Contains(table[0].params, hex.EncodeToString(key)) {
		return errors.New("the table shows the key")
	}
	return vmNoKeys()
}

// vmNoKeys: no valid minirun: key in /proc/keys (an invalidated one awaiting the collector has 'i').
func vmNoKeys() error {
	deadline := time.Now().Add(2 * time.Second)
	for {
		keys, err := os.ReadFile("/proc/keys")
		if err != nil {
			return err
		}
		var live []string
		for _, l := range strings.Split(string(keys), "\n") {
			f := strings.Fields(l)
			if strings.Contains(l, "minirun:") && len(f) > 1 && !strings.Contains(f[1], "i") {
				live = append(live, l)
			}
		}
		if len(live) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("/proc/keys still lists %q", live)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// vmWrongKeyCase: a volume key of the right size that is not the volume's must fail (the
// plaintext is not a squashfs) and leave no mapping behind.
func vmWrongKeyCase(image string) error {
	loop, vol, _, closeAll, err := vmOpenVolume(image)
	if err != nil {
		return err
	}
	defer closeAll()
	wrong := &volumeKey{slot: -1}
	if wrong.buf, err = newSecretBuf(vol.keySize); err != nil {
		return err
	}
	defer wrong.wipe()
	rand.Read(wrong.bytes())
	dm, err := attachDMCrypt(loop, vol, wrong, 0)
	if err == nil {
		dm.Close()
		return errors.New("a wrong volume key was accepted")
	}
	if classOf(err) != eImage || !strings.Contains(err.Error(), "squashfs") {
		return fmt.Errorf("wrong key gave %v (%s)", err, classOf(err))
	}
	return vmWaitNoDM(5 * time.Second)
}

// vmHexKeyCase drives the fallback for crypt targets older than 1.18.1 by hand: the key in hex
// with DM_SECURE_DATA_FLAG must give the same plaintext.
func vmHexKeyCase(image string, plain []byte) error {
	loop, vol, key, closeAll, err := vmOpenVolume(image)
	if err != nil {
		return err
	}
	defer closeAll()
	var lst unix.Stat_t
	unix.Fstat(int(loop.Fd()), &lst)
	size, _ := unix.IoctlGetUint64(int(loop.Fd()), unix.BLKGETSIZE64)
	before, after, sectors, err := cryptTableParams(vol, lst.Rdev, int64(size))
	if err != nil {
		return err
	}
	c, err := openDMControl()
	if err != nil {
		return err
	}
	defer c.close()
	self, _ := dmProcStartTime(os.Getpid())
	name, uuid, _ := dmNewIdentity(os.Getpid(), self)
	if _, _, err := c.call(dmCmdDevCreate, dmHeader{name: name, uuid: uuid}); err != nil {
		return err
	}
	defer c.remove(name, true)
	if err := c.loadCryptTable(name, key.bytes(), before, after, sectors, false); err != nil {
		return err
	}
	if _, _, err := c.call(dmCmdDevSuspend, dmHeader{name: name}); err != nil {
		return err
	}
	st, err := c.status(name)
	if err != nil {
		return err
	}
	dm, err := openDMNode(st.dev, name, uuid)
	if err != nil {
		return err
	}
	got := make([]byte, len(plain))
	_, err = dm.ReadAt(got, 0)
	dm.Close()
	if err != nil || !bytes.Equal(got, plain) {
		return fmt.Errorf("hex-key mapping plaintext differs (%v)", err)
	}
	if r, err := c.remove(name, false); err != nil || r.flags&dmDeferredRemove != 0 {
		return fmt.Errorf("remove: %v", err)
	}
	return vmWaitNoDM(5 * time.Second)
}

// vmSweepCase: devices a killed minirun left (creator gone, unopened) are removed; those of a
// live creator, and other names, are not.
func vmSweepCase() error {
	c, err := openDMControl()
	if err != nil {
		return err
	}
	defer c.close()
	self, _ := dmProcStartTime(os.Getpid())
	dead := exec.Command("/bin/true")
	if err := dead.Run(); err != nil {
		return err
	}
	deadName, deadUUID, _ := dmNewIdentity(dead.Process.Pid, self)
	liveName, liveUUID, _ := dmNewIdentity(os.Getpid(), self)
	_, otherUUID, _ := dmNewIdentity(dead.Process.Pid, self)
	otherName := "other-" + deadName
	for _, d := range [][2]string{{deadName, deadUUID}, {liveName, liveUUID}, {otherName, otherUUID}} {
		if _, _, err := c.call(dmCmdDevCreate, dmHeader{name: d[0], uuid: d[1]}); err != nil {
			return fmt.Errorf("create %s: %v", d[0], err)
		}
	}
	defer c.remove(liveName, false)
	defer c.remove(otherName, false)
	// A stale node from a kill between mknod and unlink.
	ensureDMNodeDir()
	os.WriteFile(dmNodeDir+"/"+deadUUID, nil, 0o600)
	if err := sweepStaleDMDevices(); err != nil {
		return err
	}
	if _, err := c.status(deadName); !errors.Is(err, unix.ENXIO) {
		return fmt.Errorf("stale device survived the sweep (%v)", err)
	}
	if _, err := os.Stat(dmNodeDir + "/" + deadUUID); err == nil {
		return errors.New("stale node survived the sweep")
	}
	for _, n := range []string{liveName, otherName} {
		if _, err := c.status(n); err != nil {
			return fmt.Errorf("sweep removed %s: %v", n, err)
		}
	}
	return nil
}

// --- guest: minirun exec ------------------------------------------------------------------------

const vmNotYet = "cannot open encrypted images yet"

func (g *vmGuest) minirunCases() {
	// The install: root-owned, setuid (the chmod after the chown, which clears the bit).
	if err := os.Chown("/bin/minirun", 0, 0); err != nil {
		g.failed++
		g.say("FAIL install minirun: %v", err)
	}
	if err := unix.Chmod("/bin/minirun", 0o4755); err != nil {
		g.failed++
		g.say("FAIL install minirun: %v", err)
	}
	// The harness itself (setuid install, user, config, kill) on a plain SIF, which the core
	// minirun runs: these must pass whatever the state of encrypted images.
	for _, uid := range []int{0, vmUserUID} {
		g.check(fmt.Sprintf("exec/plain/uid%d", uid), func() error {
			vmConfig("dm-crypt")
			out, errOut, err := vmMinirun(uid, "exec", "/images/plain.sif", "cat", "/MARKER")
			if err != nil || out != vmMarker {
				return fmt.Errorf("out %q, %v: %s", out, err, strings.TrimSpace(errOut))
			}
			return vmNoLeftovers(5 * time.Second)
		})
		g.check(fmt.Sprintf("exec/plain/uid%d/sigkill", uid), func() error { return vmSigkillCase(uid, "/images/plain.sif", false) })
	}
	// Probe once: if this minirun cannot open encrypted images at all, say so and skip.
	vmConfig("dm-crypt")
	out, errOut, err := vmMinirun(0, "exec", "/images/minirun-4096.sif", "cat", "/MARKER")
	switch {
	case err != nil && strings.Contains(errOut, vmNotYet):
		g.say("SKIP minirun-exec: %s", strings.TrimSpace(errOut))
		return
	case err != nil || out != vmMarker:
		g.failed++
		g.say("FAIL exec-probe: out %q err %v: %s", out, err, strings.TrimSpace(errOut))
		return
	}
	for _, backend := range []string{"dm-crypt", "memory"} {
		for _, img := range vmImages {
			for _, uid := range []int{0, vmUserUID} {
				g.check(fmt.Sprintf("exec/%s/uid%d/%s", backend, uid, img.name), func() error {
					vmConfig(backend)
					out, errOut, err := vmMinirun(uid, "exec", "/images/"+img.name, "cat", "/MARKER")
					if err != nil || out != vmMarker {
						return fmt.Errorf("out %q, %v: %s", out, err, strings.TrimSpace(errOut))
					}
					return vmNoLeftovers(5 * time.Second)
				})
			}
		}
	}
	for _, uid := range []int{0, vmUserUID} {
		g.check(fmt.Sprintf("exec/auto/uid%d/sigkill", uid), func() error { return vmSigkillCase(uid, "/images/minirun-4096.sif", true) })
	}
	g.check("exec/wrong-passphrase", func() error {
		vmConfig("dm-crypt")
		cmd := vmMinirunCmd(vmUserUID, "exec", "/images/minirun-4096.sif", "cat", "/MARKER")
		cmd.Env = append(cmd.Env[:len(cmd.Env)-1], "MINIRUN_ENCRYPTION_PASSPHRASE=wrong")
		var errb bytes.Buffer
		cmd.Stderr = &errb
		err := cmd.Run()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 255 || !strings.Contains(errb.String(), "ERROR:") ||
			!strings.Contains(errb.String(), "minirun-4096.sif") {
			return fmt.Errorf("wrong passphrase: %v: %q", err, errb.String())
		}
		return vmNoLeftovers(5 * time.Second)
	})
}

// vmSigkillCase: SIGKILL of a running container's process group leaves no mapping, loop or key
// behind. For an encrypted image under encrypted_backend = auto, the running container must have
// a minirun-* mapping (auto chose dm-crypt) with deferred removal armed.
func vmSigkillCase(uid int, image string, encrypted bool) error {
	vmConfig("auto")
	cmd := vmMinirunCmd(uid, "exec", image, "sleep", "30")
	cmd.SysProcAttr.Setpgid = true
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
	// Running means: the payload replaced minirun (its command line is sleep's).
	deadline := time.Now().Add(30 * time.Second)
	for {
		if b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", cmd.Process.Pid)); bytes.HasPrefix(b, []byte("sleep\x00")) {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the payload did not start: %s", errb.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	if encrypted {
		var names []string
		devs, _ := filepath.Glob("/sys/block/dm-*/dm/name")
		for _, d := range devs {
			if b, err := os.ReadFile(d); err == nil && strings.HasPrefix(string(b), dmNamePrefix) {
				names = append(names, strings.TrimSpace(string(b)))
			}
		}
		if len(names) != 1 {
			return fmt.Errorf("running container has mappings %v, want one minirun-* (auto did not pick dm-crypt?)", names)
		}
		if err := vmCheckLiveMapping(names[0], 64, nil); err != nil {
			return err
		}
	} else if loops, _ := filepath.Glob("/sys/block/loop*/loop/backing_file"); len(loops) == 0 {
		return errors.New("running container has no loop device")
	}
	if err := syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL); err != nil {
		return err
	}
	killed = true
	cmd.Wait()
	return vmNoLeftovers(5 * time.Second)
}

func vmConfig(backend string) {
	os.WriteFile("/etc/minirun/minirun.toml", []byte(fmt.Sprintf("encrypted_backend = %q\n", backend)), 0o644)
}

func vmMinirunCmd(uid int, args ...string) *exec.Cmd {
	cmd := exec.Command("/bin/minirun", args...)
	cmd.Dir = "/"
	home := "/root"
	if uid != 0 {
		home = "/home/alice"
		cmd.Dir = home
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(uid), Groups: []uint32{}}}
	cmd.Env = []string{"PATH=/bin:/sbin", "HOME=" + home, "MINIRUN_ENCRYPTION_PASSPHRASE=" + vmPassphrase}
	return cmd
}

func vmMinirun(uid int, args ...string) (string, string, error) {
	cmd := vmMinirunCmd(uid, args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	return out.String(), errb.String(), err
}

// --- guest: state checks ------------------------------------------------------------------------

func vmMajMin(dev uint64) string { return fmt.Sprintf("%d:%d", unix.Major(dev), unix.Minor(dev)) }

func vmSysfsDMName(dev uint64) (string, error) {
	b, err := os.ReadFile("/sys/dev/block/" + vmMajMin(dev) + "/dm/name")
	if err != nil {
		return "", fmt.Errorf("device %s is not a dm device: %v", vmMajMin(dev), err)
	}
	return strings.TrimSpace(string(b)), nil
}

// vmWaitGone waits until nothing matches any of the patterns (plain paths
// or globs): devices and nodes the kernel removes after their last user.
func vmWaitGone(patience time.Duration, patterns ...string) error {
	deadline := time.Now().Add(patience)
	for {
		var left []string
		for _, p := range patterns {
			m, _ := filepath.Glob(p)
			left = append(left, m...)
		}
		if len(left) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("still present after %v: %v", patience, left)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func vmWaitNoDM(patience time.Duration) error {
	return vmWaitGone(patience, "/sys/block/dm-*")
}

// vmNoLeftovers: within patience, no dm device, no attached loop device, no minirun key.
func vmNoLeftovers(patience time.Duration) error {
	if err := vmWaitNoDM(patience); err != nil {
		return err
	}
	deadline := time.Now().Add(patience)
	for {
		loops, _ := filepath.Glob("/sys/block/loop*/loop/backing_file")
		if len(loops) == 0 {
			break
		}
		if time.Now().After(deadline) {
			var desc []string
			for _, l := range loops {
				b, _ := os.ReadFile(l)
				desc = append(desc, strconv.Quote(l+" → "+strings.TrimSpace(string(b))))
			}
			return fmt.Errorf("loop devices still attached: %s", strings.Join(desc, ", "))
		}
		time.Sleep(50 * time.Millisecond)
	}
	return vmNoKeys()
}
