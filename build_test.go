// build_test.go tests `minirun build` (build.go): plain and encrypted SIFs
// read back by minirun's own reader, by the reference sif library and by
// cryptsetup (spec §6.3), the PEM key message, the command line, and that a
// failed build leaves nothing behind.
package main

import (
	"bytes"
	"crypto/rsa"
	"crypto/x509"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/apptainer/sif/v2/pkg/sif"
	"golang.org/x/sys/unix"
)

func TestParseBuild(t *testing.T) {
	tests := []struct {
		args  []string
		want  buildOptions
		class errClass
	}{
		{[]string{"o.sif", "src"}, buildOptions{out: "o.sif", source: "src"}, ""},
		{[]string{"--encrypt", "o.sif", "src"}, buildOptions{out: "o.sif", source: "src", encrypt: true}, ""},
		{[]string{"-e", "o.sif", "src"}, buildOptions{out: "o.sif", source: "src", encrypt: true}, ""},
		{[]string{"--passphrase", "o.sif", "src"}, buildOptions{out: "o.sif", source: "src", encrypt: true, passphrase: true}, ""},
		{[]string{"--pem-path", "k.pem", "o.sif", "src"}, buildOptions{out: "o.sif", source: "src", encrypt: true, pemPath: "k.pem"}, ""},
		{[]string{"-q", "o.sif", "src"}, buildOptions{out: "o.sif", source: "src", quiet: true}, ""},
		{[]string{"--passphrase", "--pem-path", "k.pem", "o.sif", "src"}, buildOptions{}, eUsage},
		{[]string{"o.sif"}, buildOptions{}, eUsage},
		{[]string{"o.sif", "src", "--encrypt"}, buildOptions{}, eUsage},
		{[]string{"--bogus", "o.sif", "src"}, buildOptions{}, eUsage},
		{[]string{"--pem-path"}, buildOptions{}, eUsage},
	}
	for _, tc := range tests {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			got, err := parseBuild(tc.args)
			if tc.class != "" {
				ctWantClass(t, err, tc.class)
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			tc.want.goarch = runtime.GOARCH
			if got.out != tc.want.out || got.source != tc.want.source || got.encrypt != tc.want.encrypt ||
				got.passphrase != tc.want.passphrase || got.pemPath != tc.want.pemPath || got.quiet != tc.want.quiet || got.goarch != tc.want.goarch {
				t.Errorf("parseBuild = %+v, want %+v", got, tc.want)
			}
		})
	}
}

// btPartition returns the primary partition's descriptor as the sif library reads it.
func btPartition(t *testing.T, path string) (*sif.FileImage, sif.Descriptor) {
	t.Helper()
	img, err := sif.LoadContainerFromPath(path, sif.OptLoadWithFlag(os.O_RDONLY))
	if err != nil {
		t.Fatalf("the sif library cannot load %s: %v", path, err)
	}
	t.Cleanup(func() { img.UnloadContainer() })
	d, err := img.GetDescriptor(sif.WithPartitionType(sif.PartPrimSys))
	if err != nil {
		t.Fatalf("sif library: no primary partition in %s: %v", path, err)
	}
	return img, d
}

func TestBuildPlain(t *testing.T) {
	dir := t.TempDir()
	sq, plain := ctSquashfs(t)
	for _, tc := range []struct{ name, src string }{{"from squashfs", sq}, {"from directory", ""}} {
		t.Run(tc.name, func(t *testing.T) {
			src := tc.src
			if src == "" {
				src = filepath.Join(dir, "tree")
				os.MkdirAll(filepath.Join(src, "etc"), 0o755)
				ctWrite(t, filepath.Join(src, "MARKER"), []byte("from-dir\n"), 0o644)
			}
			out := ctBuild(t, filepath.Join(dir, strings.ReplaceAll(tc.name, " ", "-")+".sif"), src, nil)
			f, root := ctRootfs(t, out)
			if root.kind != rootfsSquashfs || root.format != "sif" || root.offset != sifFirstPartitionOffset {
				t.Fatalf("rootfs %+v, want a squashfs partition at %d", root, sifFirstPartitionOffset)
			}
			_, d := btPartition(t, out)
			fs, pt, arch, err := d.PartitionMetadata()
			if err != nil || fs != sif.FsSquash || pt != sif.PartPrimSys || arch != runtime.GOARCH {
				t.Errorf("sif library sees fs %v type %v arch %q (%v)", fs, pt, arch, err)
			}
			got := make([]byte, root.size)
			f.ReadAt(got, root.offset)
			if tc.src != "" && !bytes.Equal(got, plain) {
				t.Error("the partition is not the squashfs byte for byte")
			}
			if tc.src == "" {
				ls, err := exec.Command("unsquashfs", "-lc", "-o", "32768", out).CombinedOutput()
				if err != nil || !strings.Contains(string(ls), "MARKER") {
					t.Errorf("unsquashfs of the partition: %v\n%s", err, ls)
				}
			}
		})
	}
}

// btDecrypt unlocks a built image with pass and returns its plaintext.
func btDecrypt(t *testing.T, path string, pass []byte) []byte {
	t.Helper()
	f, root := ctRootfs(t, path)
	v, err := openLUKS(io.NewSectionReader(f, root.offset, root.size), root.size, luksTestLimits())
	if err != nil {
		t.Fatal(err)
	}
	if v.dataOffset != luksFormatDataOffset || v.sectorSize != 4096 {
		t.Errorf("data offset %d, sector %d; want 1 MiB and 4096", v.dataOffset, v.sectorSize)
	}
	key, err := v.unlock(pass)
	if err != nil {
		t.Fatal(err)
	}
	defer key.wipe()
	out := &luksMemDevice{}
	if err := v.decryptTo(out, key, nil); err != nil {
		t.Fatal(err)
	}
	return out.data
}

// btPartitionFile copies the partition out, as `siftool dump` would (§6.3).
func btPartitionFile(t *testing.T, path string) string {
	t.Helper()
	f, root := ctRootfs(t, path)
	b := make([]byte, root.size)
	if _, err := f.ReadAt(b, root.offset); err != nil {
		t.Fatal(err)
	}
	return ctWrite(t, filepath.Join(t.TempDir(), "part.img"), b, 0o600)
}

func TestBuildEncryptedPassphrase(t *testing.T) {
	luksNeedCryptsetup(t)
	dir := t.TempDir()
	sq, plain := ctSquashfs(t)
	pass := []byte("correct horse")
	out := ctBuild(t, filepath.Join(dir, "enc.sif"), sq, func(o *buildOptions) {
		o.encrypt, o.env = true, append(o.env, "MINIRUN_ENCRYPTION_PASSPHRASE="+string(pass))
	})

	// minirun's reader: fstype 5 partition, no key message, plaintext = squashfs.
	_, root := ctRootfs(t, out)
	if root.kind != rootfsEncrypted || root.keyMessage != nil || root.size != luks2FormattedSize(int64(len(plain))) {
		t.Fatalf("rootfs %+v", root)
	}
	got := btDecrypt(t, out, pass)
	if len(got)%4096 != 0 || !bytes.Equal(got[:len(plain)], plain) || !bytes.Equal(got[len(plain):], make([]byte, len(got)-len(plain))) {
		t.Fatal("decrypted partition is not the zero-padded squashfs")
	}

	// The reference library: Apptainer's layout.
	img, d := btPartition(t, out)
	fs, pt, arch, _ := d.PartitionMetadata()
	if fs != sif.FsEncryptedSquashfs || pt != sif.PartPrimSys || arch != runtime.GOARCH || d.GroupID() != 1 {
		t.Errorf("sif library sees fs %v type %v arch %q group %d", fs, pt, arch, d.GroupID())
	}
	if _, err := img.GetDescriptor(sif.WithDataType(sif.DataCryptoMessage)); err == nil {
		t.Error("passphrase mode wrote a crypto message")
	}

	// cryptsetup on the partition bytes (spec §6.3).
	part := btPartitionFile(t, out)
	mustRunCryptsetup(t, nil, "isLuks", "-v", part)
	dump := mustRunCryptsetup(t, nil, "luksDump", "--debug", part)
	for _, want := range []string{"offset: 1048576 [bytes]", "sector: 4096 [bytes]", "Keyslots area: \t1015808 [bytes]", "argon2id"} {
		if !strings.Contains(dump, want) {
			t.Errorf("luksDump lacks %q", want)
		}
	}
	if strings.Contains(strings.ToLower(dump), "warning") {
		t.Errorf("luksDump warns:\n%s", dump)
	}
	mustRunCryptsetup(t, pass, "open", "--test-passphrase", "--key-file", "-", part)
	if out, rc := runCryptsetup(t, []byte("wrong"), "open", "--test-passphrase", "--key-file", "-", part); rc != 2 {
		t.Errorf("wrong passphrase: cryptsetup exit %d, want 2\n%s", rc, out)
	}
}

func TestBuildEncryptedPEM(t *testing.T) {
	luksNeedCryptsetup(t)
	dir := t.TempDir()
	sq, plain := ctSquashfs(t)
	k := ctRSAKey(t, 2048)
	pub := ctWrite(t, filepath.Join(dir, "pub.pem"), ctPEM("PUBLIC KEY", btPKIX(t, k), nil), 0o644)
	out := ctBuild(t, filepath.Join(dir, "pem.sif"), sq, func(o *buildOptions) { o.pemPath = pub })

	f, root := ctRootfs(t, out)
	if root.kind != rootfsEncrypted || root.keyMessage == nil {
		t.Fatalf("rootfs %+v: want encrypted with a key message", root)
	}
	// The reference library sees the message linked to the partition.
	img, part := btPartition(t, out)
	m, err := img.GetDescriptor(sif.WithDataType(sif.DataCryptoMessage))
	if err != nil {
		t.Fatal(err)
	}
	ft, mt, err := m.CryptoMessageMetadata()
	linked, isGroup := m.LinkedID()
	if err != nil || ft != sif.FormatPEM || mt != sif.MessageRSAOAEP || isGroup || linked != part.ID() || m.GroupID() != 1 || m.Size() != 400 {
		t.Errorf("message: format %v type %v linked %d (group %v) to partition %d, group %d, %d bytes (%v)",
			ft, mt, linked, isGroup, part.ID(), m.GroupID(), m.Size(), err)
	}
	msg, err := readSIFObject(f, root.keyMessage, maxKeyMessage, out)
	if err != nil {
		t.Fatal(err)
	}
	pass, err := decryptKeyMessage(msg, k)
	if err != nil {
		t.Fatal(err)
	}
	defer pass.wipe()
	if len(pass.bytes()) != pemPassphraseLen {
		t.Errorf("LUKS passphrase of %d bytes, want %d", len(pass.bytes()), pemPassphraseLen)
	}
	ctOpensslDecrypt(t, msg, k, pass.bytes())
	got := btDecrypt(t, out, pass.bytes())
	if !bytes.Equal(got[:len(plain)], plain) {
		t.Fatal("decrypted partition is not the squashfs")
	}
	partFile := btPartitionFile(t, out)
	dump := mustRunCryptsetup(t, nil, "luksDump", partFile)
	if !strings.Contains(dump, "PBKDF:      pbkdf2") || !strings.Contains(dump, "Iterations: 1000") {
		t.Errorf("PEM mode keyslot is not pbkdf2 with 1000 iterations:\n%s", dump)
	}
	mustRunCryptsetup(t, pass.bytes(), "open", "--test-passphrase", "--key-file", "-", partFile)
}

func btPKIX(t *testing.T, k *rsa.PrivateKey) []byte {
	der, err := x509.MarshalPKIXPublicKey(&k.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

func TestPartitionHole(t *testing.T) {
	dev := &luksMemDevice{}
	h := partitionHole{w: dev, off: 100, size: 50}
	for _, w := range []struct {
		at, n int64
		ok    bool
		seen  bool
	}{{0, 100, true, true}, {100, 50, true, false}, {120, 10, true, false}, {150, 10, true, true}, {90, 20, false, false}, {140, 20, false, false}} {
		data := bytes.Repeat([]byte{0xAA}, int(w.n))
		_, err := h.WriteAt(data, w.at)
		if (err == nil) != w.ok {
			t.Errorf("write [%d,+%d): err %v, want ok=%v", w.at, w.n, err, w.ok)
		}
		hit := int64(len(dev.data)) > w.at && dev.data[w.at] == 0xAA
		if w.ok && hit != w.seen {
			t.Errorf("write [%d,+%d): reached the device %v, want %v", w.at, w.n, hit, w.seen)
		}
	}
}

// TestBuildFailures: every refusal leaves the directory as it was, an
// existing OUT included.
func TestBuildFailures(t *testing.T) {
	sq, _ := ctSquashfs(t)
	k := ctRSAKey(t, 2048)
	tests := []struct {
		name  string
		edit  func(o *buildOptions, dir string)
		class errClass
		frag  string
	}{
		{"encrypt without a key", func(o *buildOptions, dir string) { o.encrypt = true }, eUsage, "needs a key"},
		{"passphrase without a terminal", func(o *buildOptions, dir string) { o.encrypt, o.passphrase = true, true }, eUsage, "terminal"},
		{"private key for build", func(o *buildOptions, dir string) {
			o.pemPath = ctWrite(t, filepath.Join(dir, "k.pem"), ctPEM("RSA PRIVATE KEY", x509.MarshalPKCS1PrivateKey(k), nil), 0o600)
			o.encrypt = true
		}, eUsage, "holds a private key"},
		{"missing key file", func(o *buildOptions, dir string) { o.pemPath, o.encrypt = filepath.Join(dir, "nope.pem"), true }, eUsage, "does not exist"},
		{"source not squashfs", func(o *buildOptions, dir string) {
			o.source = ctWrite(t, filepath.Join(dir, "junk"), bytes.Repeat([]byte("junk"), 1000), 0o644)
		}, eUsage, "squashfs file or a directory"},
		{"source a device", func(o *buildOptions, dir string) { o.source = "/dev/null" }, eUsage, "neither"},
		{"missing source", func(o *buildOptions, dir string) { o.source = filepath.Join(dir, "none") }, eUsage, "does not exist"},
		{"no mksquashfs", func(o *buildOptions, dir string) {
			o.source = dir
			o.env = []string{"PATH=" + dir}
		}, eUsage, "mksquashfs not found"},
		{"mksquashfs fails", func(o *buildOptions, dir string) {
			os.Mkdir(filepath.Join(dir, "fake"), 0o755)
			ctWrite(t, filepath.Join(dir, "fake", "mksquashfs"), []byte("#!/bin/sh\necho 'boom: disk on fire' >&2\nexit 1\n"), 0o755)
			o.source = dir
			o.env = []string{"PATH=" + filepath.Join(dir, "fake")}
		}, eUsage, "boom: disk on fire"},
		{"out is the source", func(o *buildOptions, dir string) {
			o.source = ctWrite(t, filepath.Join(dir, "self.sif"), mustRead(t, sq), 0o644)
			o.out = o.source
		}, eUsage, "is the SOURCE"},
		{"out is a directory", func(o *buildOptions, dir string) { o.out = dir }, eUsage, "is a directory"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if tc.name == "passphrase without a terminal" {
				if fd, err := openTerminal("test"); err == nil {
					unix.Close(fd)
					t.Skip("this process has a terminal, and the case is about having none (CI has none)")
				}
			}
			dir := t.TempDir()
			out := ctWrite(t, filepath.Join(dir, "out.sif"), []byte("old image"), 0o644)
			o := buildOptions{out: out, source: sq, quiet: true, goarch: runtime.GOARCH, format: ctFastFormat, env: []string{"PATH=" + os.Getenv("PATH")}}
			tc.edit(&o, dir)
			before := btListing(t, dir)
			err := buildImage(o)
			ctWantClass(t, err, tc.class, tc.frag)
			if after := btListing(t, dir); after != before {
				t.Errorf("the directory changed:\nbefore %s\nafter  %s", before, after)
			}
			if b, _ := os.ReadFile(out); string(b) != "old image" {
				t.Error("the existing OUT was changed")
			}
		})
	}
}

func mustRead(t *testing.T, p string) []byte {
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func btListing(t *testing.T, dir string) string {
	entries, _ := os.ReadDir(dir)
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return strings.Join(names, " ")
}

// TestBuildReplacesAtomically: a successful build replaces OUT by rename (a
// reader holding the old file keeps the old bytes), honours the umask, and
// leaves no temporary files.
func TestBuildReplacesAtomically(t *testing.T) {
	dir := t.TempDir()
	sq, _ := ctSquashfs(t)
	out := ctWrite(t, filepath.Join(dir, "out.sif"), []byte("old image"), 0o600)
	old, _ := os.Open(out)
	defer old.Close()
	saved := callerUmask
	callerUmask = 0o027
	defer func() { callerUmask = saved }()
	ctBuild(t, out, sq, nil)
	if b := make([]byte, 9); func() bool { n, _ := old.ReadAt(b, 0); return n != 9 || string(b) != "old image" }() {
		t.Error("the old file was overwritten in place")
	}
	if st, _ := os.Stat(out); st.Mode().Perm() != 0o640 {
		t.Errorf("mode %v, want 0640 from umask 027", st.Mode().Perm())
	}
	if l := btListing(t, dir); l != "out.sif" {
		t.Errorf("directory holds %q, want only out.sif", l)
	}
}
