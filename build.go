// build.go owns `minirun build`: a squashfs file or a directory (packed by
// mksquashfs) in, a SIF out, optionally LUKS2-encrypted with Apptainer's layout
// (spec images-and-encryption §3). It runs with the caller's ids only.
package main

import (
	"crypto/rand"
	"crypto/rsa"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// sifFirstPartitionOffset is where writeSIF puts a partition written first:
// the first 4096-aligned offset after the 48-slot table (32768).
const sifFirstPartitionOffset = (sifWriterTableOffset + sifWriterSlots*sifDescriptorSize + sifPartitionAlign - 1) / sifPartitionAlign * sifPartitionAlign

// progressThreshold: smaller images build too fast to need a progress line.
const progressThreshold = 256 << 20

// buildOptions is everything `minirun build` was asked for.
type buildOptions struct {
	out, source string
	encrypt     bool
	passphrase  bool   // prompt on the terminal
	pemPath     string // RSA public key
	quiet       bool

	env      []string          // for the key variables and PATH (mksquashfs)
	format   luksFormatOptions // keyslot KDF; zero: the spec's defaults
	goarch   string
	progress io.Writer // a terminal for progress lines, or nil
}

// buildKey is how the image is encrypted: a passphrase (typed or from the
// environment) or, in PEM mode, a random one sealed for an RSA public key.
type buildKey struct {
	pass   *secretBuf
	pub    *rsa.PublicKey // PEM mode
	origin string
}

func (k *buildKey) wipe() {
	if k != nil {
		k.pass.wipe()
	}
}

func buildFlags(o *buildOptions) *flag.FlagSet {
	fs := flag.NewFlagSet("build", flag.ContinueOnError)
	fs.BoolVar(&o.encrypt, "encrypt", false, "")
	fs.BoolVar(&o.encrypt, "e", false, "")
	fs.BoolVar(&o.passphrase, "passphrase", false, "")
	fs.StringVar(&o.pemPath, "pem-path", "", "")
	fs.BoolVar(&o.quiet, "quiet", false, "")
	fs.BoolVar(&o.quiet, "q", false, "")
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), `Usage: minirun build [options] OUT.sif SOURCE

Make a SIF image from SOURCE, a squashfs file or a directory (packed with
mksquashfs, which must be in PATH). Runs with your own ids only.

Options (before OUT.sif):
  -e, --encrypt          encrypt the root filesystem (LUKS2, aes-xts-plain64).
                         The key comes from MINIRUN_ENCRYPTION_PEM_PATH (an RSA
                         public key) or MINIRUN_ENCRYPTION_PASSPHRASE
                         (APPTAINER_ENCRYPTION_* also work)
      --passphrase       encrypt with a passphrase typed on the terminal
      --pem-path FILE    encrypt with a random key sealed for the RSA public key
                         in FILE (PEM: RSA PUBLIC KEY or PUBLIC KEY, >= 2048 bits);
                         run the image with --pem-path PRIVATE.pem
  -q, --quiet            print only errors
  -h, --help             show this help

OUT.sif is replaced atomically. Only the root filesystem is encrypted; the
SIF header and descriptors are not. The image opens with cryptsetup too.
`)
	}
	return fs
}

// parseBuild reads the build command line.
func parseBuild(args []string) (buildOptions, error) {
	o := buildOptions{goarch: runtime.GOARCH}
	fs := buildFlags(&o)
	fs.SetOutput(io.Discard)
	if err := fs.Parse(args); err != nil {
		if err == flag.ErrHelp {
			fs.SetOutput(os.Stdout)
			fs.Usage()
			os.Exit(0)
		}
		return o, failf(eUsage, "build: %v; see 'minirun help build'", err)
	}
	if fs.NArg() != 2 {
		return o, failf(eUsage, "build: want OUT.sif and SOURCE after the options, got %d arguments; see 'minirun help build'", fs.NArg())
	}
	o.out, o.source = fs.Arg(0), fs.Arg(1)
	if o.passphrase && o.pemPath != "" {
		return o, failf(eUsage, "build: --passphrase and --pem-path exclude each other")
	}
	o.encrypt = o.encrypt || o.passphrase || o.pemPath != ""
	return o, nil
}

// buildCommand is `minirun build`. Nothing here needs privilege, so it is all
// given up first (R7); only then may mksquashfs run.
func buildCommand(args []string) error {
	dropPrivileges()
	unix.Umask(callerUmask) // the output is the caller's file
	o, err := parseBuild(args)
	if err != nil {
		return err
	}
	o.env = syscall.Environ()
	if _, err := unix.IoctlGetTermios(2, unix.TCGETS); err == nil { // stderr is a terminal
		o.progress = os.Stderr
	}
	return buildImage(o)
}

// buildImage writes the SIF: key first (a prompt or a bad key fails before any
// work), then the squashfs, then the image into a temporary file in the target
// directory, checked and renamed over OUT.
func buildImage(o buildOptions) (err error) {
	var key *buildKey
	if o.encrypt {
		if key, err = buildKeyFor(o); err != nil {
			return err
		}
		defer key.wipe()
	}

	dir := filepath.Dir(o.out)
	if st, err := os.Stat(o.out); err == nil && st.IsDir() {
		return failf(eUsage, "build: %s is a directory", escapeText(o.out))
	}
	temps := newTempFiles()
	defer temps.removeAll()

	sq, size, err := openBuildSource(o, dir, temps)
	if err != nil {
		return err
	}
	defer sq.Close()
	if same, _ := sameFile(sq, o.out); same {
		return failf(eUsage, "build: OUT %s is the SOURCE itself", escapeText(o.out))
	}

	tmp, err := temps.create(dir, "."+filepath.Base(o.out)+".*.tmp")
	if err != nil {
		return err
	}
	defer tmp.Close()
	opts := sifWriteOptions{unixTime: time.Now().Unix()}
	if _, err := io.ReadFull(rand.Reader, opts.id[:]); err != nil {
		return failf(eSystem, "random image ID: %w", err)
	}
	opts.id[6] = opts.id[6]&0x0f | 0x40 // a version 4 UUID, as the sif library makes
	opts.id[8] = opts.id[8]&0x3f | 0x80

	var end int64
	if key == nil {
		end, err = writePlainSIF(tmp, sq, size, o, opts)
	} else {
		end, err = writeEncryptedSIF(tmp, sq, size, key, o, opts)
	}
	if err != nil {
		return err
	}
	if err := tmp.Truncate(end); err != nil {
		return failf(eSystem, "build: truncate %s: %w", tmp.Name(), err)
	}
	if err := checkBuiltSIF(tmp, end, key); err != nil {
		return err
	}
	if err := tmp.Chmod(0o666 &^ os.FileMode(callerUmask)); err != nil {
		return failf(eSystem, "build: chmod %s: %w", tmp.Name(), err)
	}
	if err := tmp.Sync(); err != nil {
		return failf(eSystem, "build: sync %s: %w", tmp.Name(), err)
	}
	if err := os.Rename(tmp.Name(), o.out); err != nil {
		return failf(eSystem, "build: rename to %s: %w", escapeText(o.out), err)
	}
	temps.forget(tmp.Name())
	if d, err := os.Open(dir); err == nil {
		d.Sync() // the rename itself is durable
		d.Close()
	}
	if !o.quiet {
		how := ""
		if key != nil {
			how = ", encrypted (" + key.origin + ")"
		}
		writeStderr(fmt.Sprintf("INFO: built %s: %.1f MiB%s\n", escapeText(o.out), float64(end)/(1<<20), how))
	}
	return nil
}

// buildKeyFor finds the key: --pem-path, --passphrase, else the variables of
// spec §4.1 (read only with --encrypt).
func buildKeyFor(o buildOptions) (*buildKey, error) {
	src, ok := pickKeySource(o.pemPath, o.passphrase, o.env)
	if !ok {
		return nil, failf(eUsage, "build --encrypt needs a key: --passphrase, --pem-path PUBLIC.pem, or MINIRUN_ENCRYPTION_PASSPHRASE / MINIRUN_ENCRYPTION_PEM_PATH")
	}
	switch {
	case src.prompt:
		pass, err := promptNewPassphrase()
		if err != nil {
			return nil, err
		}
		return &buildKey{pass: pass, origin: "passphrase"}, nil
	case src.pemPath == "":
		if len(src.passphrase) > luksMaxPassphrase {
			return nil, failf(eUsage, "%s is longer than %d bytes", src.origin, luksMaxPassphrase)
		}
		pass, err := secretFrom([]byte(src.passphrase))
		if err != nil {
			return nil, err
		}
		return &buildKey{pass: pass, origin: "passphrase from " + src.origin}, nil
	}
	data, err := readKeyFile(src.pemPath)
	if err != nil {
		return nil, err
	}
	pub, err := parseRSAPublicKeyPEM(data, src.pemPath)
	if err != nil {
		return nil, err
	}
	// PEM mode: the LUKS passphrase is 64 random bytes, so the entropy is in
	// the key and the keyslot can use the cheap KDF (spec §3.1).
	pass, err := newSecretBuf(pemPassphraseLen)
	if err != nil {
		return nil, err
	}
	if _, err := io.ReadFull(rand.Reader, pass.bytes()); err != nil {
		pass.wipe()
		return nil, failf(eSystem, "random LUKS passphrase: %w", err)
	}
	return &buildKey{pass: pass, pub: pub, origin: fmt.Sprintf("RSA-%d key %s", pub.N.BitLen(), escapeText(src.pemPath))}, nil
}

// openBuildSource returns the squashfs to put in the image and its size: the
// SOURCE file itself, or what mksquashfs makes of the SOURCE directory.
func openBuildSource(o buildOptions, dir string, temps *tempFiles) (*os.File, int64, error) {
	n := escapeText(o.source)
	f, err := os.Open(o.source)
	if err != nil {
		return nil, 0, openError("build source", o.source, err)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, 0, failf(eSystem, "stat %s: %w", n, err)
	}
	switch {
	case st.Mode().IsRegular():
		if err := checkSquashfsSuper(f, 0, st.Size(), o.source); err != nil {
			f.Close()
			return nil, 0, failf(eUsage, "build: SOURCE must be a squashfs file or a directory: %w", err)
		}
		return f, st.Size(), nil
	case !st.IsDir():
		f.Close()
		return nil, 0, failf(eUsage, "build: SOURCE %s is neither a squashfs file nor a directory", n)
	}
	f.Close()
	sq, err := temps.create(dir, "."+filepath.Base(o.out)+".*.sqfs")
	if err != nil {
		return nil, 0, err
	}
	if err := runMksquashfs(o, sq.Name()); err != nil {
		sq.Close()
		return nil, 0, err
	}
	// mksquashfs wrote through its own descriptor; look at the result anew.
	sq.Close()
	if sq, err = os.Open(sq.Name()); err != nil {
		return nil, 0, failf(eSystem, "open the squashfs mksquashfs made: %w", err)
	}
	st, err = sq.Stat()
	if err == nil {
		err = checkSquashfsSuper(sq, 0, st.Size(), sq.Name())
	}
	if err != nil {
		sq.Close()
		return nil, 0, failf(eSystem, "mksquashfs made no valid squashfs: %w", err)
	}
	return sq, st.Size(), nil
}

// runMksquashfs packs o.source into out with the mksquashfs found in the
// caller's PATH, run by absolute path with a clean environment. Files are made
// root-owned for non-root builders, as a fakeroot build would show them.
func runMksquashfs(o buildOptions, out string) error {
	pathList, _ := lookEnv(o.env, "PATH")
	prog := findInPath("mksquashfs", pathList)
	if prog == "" {
		return failf(eUsage, "build: mksquashfs not found in PATH; it is needed to build from a directory (install squashfs-tools), or give a squashfs file")
	}
	args := []string{o.source, out, "-noappend", "-quiet"}
	if os.Getuid() != 0 {
		args = append(args, "-all-root")
	}
	if o.progress == nil || o.quiet {
		args = append(args, "-no-progress")
	}
	cmd := exec.Command(prog, args...)
	cmd.Env = []string{"LC_ALL=C"}
	cmd.Stdin = nil
	var errOut strings.Builder
	cmd.Stdout = &errOut
	cmd.Stderr = &errOut
	if o.progress != nil && !o.quiet {
		cmd.Stdout = o.progress // its progress bar
	}
	if err := cmd.Run(); err != nil {
		msg := strings.TrimSpace(errOut.String())
		if i := strings.LastIndexByte(msg, '\n'); i >= 0 {
			msg = msg[i+1:]
		}
		return failf(eUsage, "build: mksquashfs %s failed (%v): %s", escapeText(o.source), err, escapeText(msg))
	}
	return nil
}

// findInPath returns the absolute path of an executable regular file name in
// the directories of pathList, or "".
func findInPath(name, pathList string) string {
	for _, d := range filepath.SplitList(pathList) {
		if !filepath.IsAbs(d) {
			continue // never run something relative to the working directory
		}
		p := filepath.Join(d, name)
		if st, err := os.Stat(p); err == nil && st.Mode().IsRegular() && unix.Access(p, unix.X_OK) == nil {
			return p
		}
	}
	return ""
}

// writePlainSIF writes a SIF whose primary partition is the squashfs (fstype 1).
func writePlainSIF(out *os.File, sq *os.File, size int64, o buildOptions, opts sifWriteOptions) (int64, error) {
	meter := newProgress(o.progress, "copying", size)
	root, err := sifRootfsObject(&countingReader{r: sq, meter: meter}, size, sifFsSquashfs, o.goarch)
	if err != nil {
		return 0, err
	}
	end, err := writeSIF(out, []sifNewObject{root}, opts)
	meter.finish()
	return end, err
}

// writeEncryptedSIF formats the LUKS2 volume in place, where writeSIF will put
// the first partition, then writes the SIF around it (fstype 5; in PEM mode
// followed by the key message linked to it), as Apptainer lays it out (§3.3).
func writeEncryptedSIF(out *os.File, sq *os.File, size int64, key *buildKey, o buildOptions, opts sifWriteOptions) (int64, error) {
	format := o.format
	if key.pub != nil {
		format.kdf = "pbkdf2"
	}
	meter := newProgress(o.progress, "encrypting", size)
	format.progress = meter.update
	partSize := luks2FormattedSize(size)
	err := formatLUKS2(luksFileSection{out, sifFirstPartitionOffset}, io.NewSectionReader(sq, 0, size), size, key.pass.bytes(), format)
	meter.finish()
	if err != nil {
		return 0, err
	}
	root, err := sifRootfsObject(io.LimitReader(zeroReader{}, partSize), partSize, sifFsEncryptedSquashfs, o.goarch)
	if err != nil {
		return 0, err
	}
	objs := []sifNewObject{root}
	if key.pub != nil {
		msg, err := encryptKeyMessage(key.pass.bytes(), key.pub)
		if err != nil {
			return 0, err
		}
		objs = append(objs, sifKeyMessageObject(msg, 1)) // the partition is object 1
	}
	return writeSIF(partitionHole{w: out, off: sifFirstPartitionOffset, size: partSize}, objs, opts)
}

// checkBuiltSIF reads the result back with the launch's own parser: one
// root partition where the volume was formatted, and the key message in PEM mode.
func checkBuiltSIF(f *os.File, size int64, key *buildKey) error {
	root, err := locateRootfs(f, size, f.Name())
	if err != nil {
		return failf(eInternal, "build: the image just written does not parse: %w", err)
	}
	if key == nil {
		if root.kind != rootfsSquashfs {
			return failf(eInternal, "build: the image just written has no squashfs root partition")
		}
		return nil
	}
	if root.kind != rootfsEncrypted || root.offset != sifFirstPartitionOffset {
		return failf(eInternal, "build: the encrypted partition is at %d, formatted at %d", root.offset, sifFirstPartitionOffset)
	}
	if (key.pub != nil) != (root.keyMessage != nil) {
		return failf(eInternal, "build: key message present %v, want %v", root.keyMessage != nil, key.pub != nil)
	}
	return nil
}

// partitionHole passes writes through to w except inside [off, off+size),
// where the bytes are already in place; writeSIF's zero-filled partition data
// lands there. A write across the edge is a bug.
type partitionHole struct {
	w         io.WriterAt
	off, size int64
}

func (h partitionHole) WriteAt(p []byte, at int64) (int, error) {
	end := at + int64(len(p))
	switch {
	case at >= h.off && end <= h.off+h.size:
		return len(p), nil
	case end <= h.off || at >= h.off+h.size:
		return h.w.WriteAt(p, at)
	}
	return 0, fmt.Errorf("write of [%d, %d) crosses the edge of the partition [%d, %d)", at, end, h.off, h.off+h.size)
}

type zeroReader struct{}

func (zeroReader) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}

// --- temporary files, removed on failure and on SIGINT/SIGTERM/SIGHUP ---

type tempFiles struct {
	mu    sync.Mutex
	names []string
	stop  chan struct{}
}

func newTempFiles() *tempFiles {
	t := &tempFiles{stop: make(chan struct{})}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	go func() {
		select {
		case s := <-sig:
			t.removeAll()
			fatal(failf(eSystem, "build interrupted by %v", s), false)
		case <-t.stop:
			signal.Stop(sig)
		}
	}()
	return t
}

func (t *tempFiles) create(dir, pattern string) (*os.File, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	f, err := os.CreateTemp(dir, pattern)
	if err != nil {
		return nil, failf(eUsage, "build: create a file in %s: %v", escapeText(dir), errors.Unwrap(err))
	}
	t.names = append(t.names, f.Name())
	return f, nil
}

func (t *tempFiles) forget(name string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for i, n := range t.names {
		if n == name {
			t.names = append(t.names[:i], t.names[i+1:]...)
			return
		}
	}
}

func (t *tempFiles) removeAll() {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, n := range t.names {
		os.Remove(n)
	}
	t.names = nil
	select {
	case <-t.stop:
	default:
		close(t.stop)
	}
}

// sameFile reports whether f and the file at path are one file.
func sameFile(f *os.File, path string) (bool, error) {
	a, err := f.Stat()
	if err != nil {
		return false, err
	}
	b, err := os.Stat(path)
	if err != nil {
		return false, err
	}
	return os.SameFile(a, b), nil
}

// --- progress on a terminal ---

type progress struct {
	w     io.Writer
	what  string
	total int64
	mu    sync.Mutex
	last  time.Time
	shown bool
}

// newProgress shows progress on w for jobs of at least progressThreshold bytes.
func newProgress(w io.Writer, what string, total int64) *progress {
	if total < progressThreshold {
		w = nil
	}
	return &progress{w: w, what: what, total: total}
}

func (p *progress) update(done, total int64) {
	if p == nil || p.w == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if now := time.Now(); now.Sub(p.last) >= 200*time.Millisecond || done == total {
		p.last, p.shown = now, true
		fmt.Fprintf(p.w, "\r%s %d/%d MiB (%d%%)", p.what, done>>20, total>>20, done*100/max(total, 1))
	}
}

func (p *progress) finish() {
	if p != nil && p.w != nil && p.shown {
		fmt.Fprintln(p.w)
	}
}

// countingReader reports bytes read to a progress meter.
type countingReader struct {
	r     io.Reader
	n     int64
	meter *progress
}

func (c *countingReader) Read(b []byte) (int, error) {
	n, err := c.r.Read(b)
	c.n += int64(n)
	c.meter.update(c.n, c.meter.total)
	return n, err
}
