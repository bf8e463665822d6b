// luks_test.go checks luks.go and luks_format.go against cryptsetup, which the
// tests run on plain files (no device-mapper needed, spec §6), and against
// hostile headers (security.md §4.5 D1–D3). It also holds the test-only LUKS2
// metadata writer shared with luks_fuzz_test.go, and the benchmarks.
package main

import (
	"bufio"
	"bytes"
	"crypto/aes"
	stdpbkdf2 "crypto/pbkdf2"
	"crypto/rand"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/crypto/xts"
	"golang.org/x/sys/unix"
)

// --- helpers ---------------------------------------------------------------------

// luksTestLimits are the default caps with a fixed MemAvailable, so results do
// not depend on the machine's load.
func luksTestLimits() kdfLimits {
	l := defaultKDFLimits()
	l.memAvailableKiB = 16 << 20
	return l
}

// luksNeedCryptsetup fails (not skips): cryptsetup-bin is part of the test
// environment on every developer machine and on CI.
func luksNeedCryptsetup(t testing.TB) {
	t.Helper()
	if _, err := exec.LookPath("cryptsetup"); err != nil {
		t.Fatal("cryptsetup not found: install cryptsetup-bin (the LUKS tests use it as the reference)")
	}
}

// runCryptsetup runs cryptsetup with stdin and returns its output and exit code.
func runCryptsetup(t testing.TB, stdin []byte, args ...string) (string, int) {
	t.Helper()
	cmd := exec.Command("cryptsetup", args...)
	cmd.Env = append(os.Environ(), "LC_ALL=C")
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	switch {
	case err == nil:
		return string(out), 0
	case errors.As(err, &ee):
		return string(out), ee.ExitCode()
	}
	t.Fatalf("cryptsetup %v: %v", args, err)
	return "", -1
}

func mustRunCryptsetup(t testing.TB, stdin []byte, args ...string) string {
	t.Helper()
	out, rc := runCryptsetup(t, stdin, args...)
	if rc != 0 {
		t.Fatalf("cryptsetup %s: exit %d\n%s", strings.Join(args, " "), rc, out)
	}
	return out
}

func luksWriteFile(t testing.TB, path string, data []byte) string {
	t.Helper()
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func luksRandomBytes(n int) []byte {
	b := make([]byte, n)
	rand.Read(b)
	return b
}

// luksOpenFile opens path as a LUKS volume with the test limits.
func luksOpenFile(t testing.TB, path string) (*luksVolume, *os.File) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	st, _ := f.Stat()
	v, err := openLUKS(f, st.Size(), luksTestLimits())
	if err != nil {
		t.Fatalf("openLUKS(%s): %v", filepath.Base(path), err)
	}
	return v, f
}

// luksDumpVolumeKey asks cryptsetup for the volume key (the oracle), as a file.
func luksDumpVolumeKey(t testing.TB, img, passFile string) []byte {
	t.Helper()
	out := filepath.Join(t.TempDir(), "vk.out")
	mustRunCryptsetup(t, nil, "luksDump", "--dump-volume-key", "--batch-mode", "--key-file", passFile, "--volume-key-file", out, img)
	vk, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	return vk
}

// luksFastKDF are cryptsetup options for a quick keyslot of the given kind.
func luksFastKDF(kind string) []string {
	switch kind {
	case "pbkdf2":
		return []string{"--pbkdf", "pbkdf2", "--pbkdf-force-iterations", "1000"}
	case "luks1":
		return []string{"--pbkdf-force-iterations", "1000"}
	}
	return []string{"--pbkdf", kind, "--pbkdf-memory", "32768", "--pbkdf-force-iterations", "4", "--pbkdf-parallel", "1"}
}

// luksMemDevice is an in-memory device whose bytes past data read as zero.
// It is safe for the parallel readers and writers of decryptTo and formatLUKS2.
type luksMemDevice struct {
	data []byte
	size int64
	mu   sync.Mutex
}

func (d *luksMemDevice) ReadAt(p []byte, off int64) (int, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if off < 0 {
		return 0, errors.New("negative offset")
	}
	if off >= d.size {
		return 0, io.EOF
	}
	n := len(p)
	if int64(n) > d.size-off {
		n = int(d.size - off)
	}
	clear(p[:n])
	if off < int64(len(d.data)) {
		copy(p[:n], d.data[off:])
	}
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

func (d *luksMemDevice) WriteAt(p []byte, off int64) (int, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if end := off + int64(len(p)); end > int64(len(d.data)) {
		d.data = append(d.data, make([]byte, end-int64(len(d.data)))...)
	}
	copy(d.data[off:], p)
	if end := off + int64(len(p)); end > d.size {
		d.size = end
	}
	return len(p), nil
}

// --- test-only LUKS2 writer (also used by the fuzz targets) ---------------------

// testLUKS2JSON writes parsed metadata back as canonical LUKS2 JSON.
func testLUKS2JSON(m *luks2Meta) []byte {
	b64 := base64.StdEncoding.EncodeToString
	var b bytes.Buffer
	b.WriteString(`{"keyslots":{`)
	for i, s := range m.keyslots {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, `"%d":{"type":"luks2","key_size":%d,`, s.id, s.keySize)
		if s.priority != 1 {
			fmt.Fprintf(&b, `"priority":%d,`, s.priority)
		}
		fmt.Fprintf(&b, `"af":{"type":"luks1","stripes":%d,"hash":%q},"area":{"type":"raw","offset":"%d","size":"%d","encryption":%q,"key_size":%d},"kdf":`,
			s.stripes, s.afHash, s.areaOffset, s.areaSize, s.areaCipher, s.areaKey)
		if s.kdf.kind == "pbkdf2" {
			fmt.Fprintf(&b, `{"type":"pbkdf2","hash":%q,"iterations":%d,"salt":%q}}`, s.kdf.hash, s.kdf.iterations, b64(s.kdf.salt))
		} else {
			fmt.Fprintf(&b, `{"type":%q,"time":%d,"memory":%d,"cpus":%d,"salt":%q}}`, s.kdf.kind, s.kdf.time, s.kdf.memoryKiB, s.kdf.cpus, b64(s.kdf.salt))
		}
	}
	b.WriteString(`},"tokens":{`)
	for i, id := range m.tokens {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, `"%d":{"type":"test","keyslots":[]}`, id)
	}
	seg := m.segment
	size := `"dynamic"`
	if seg.size >= 0 {
		size = strconv.Quote(strconv.FormatInt(seg.size, 10))
	}
	fmt.Fprintf(&b, `},"segments":{"0":{"type":"crypt","offset":"%d","size":%s,"iv_tweak":"%d","encryption":%q,"sector_size":%d}},"digests":{`,
		seg.offset, size, seg.ivTweak, seg.encryption, seg.sectorSize)
	ids := func(xs []int) string {
		q := make([]string, len(xs))
		for i, x := range xs {
			q[i] = strconv.Quote(strconv.Itoa(x))
		}
		return "[" + strings.Join(q, ",") + "]"
	}
	for i, d := range m.digests {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, `"%d":{"type":"pbkdf2","keyslots":%s,"segments":%s,"hash":%q,"iterations":%d,"salt":%q,"digest":%q}`,
			d.id, ids(d.keyslots), ids(d.segments), d.hash, d.iterations, b64(d.salt), b64(d.digest))
	}
	fmt.Fprintf(&b, `},"config":{"json_size":"%d","keyslots_size":"%d"`, m.config.jsonSize, m.config.keyslotsSize)
	if len(m.config.flags) > 0 {
		q := make([]string, len(m.config.flags))
		for i, f := range m.config.flags {
			q[i] = strconv.Quote(f)
		}
		fmt.Fprintf(&b, `,"flags":[%s]`, strings.Join(q, ","))
	}
	b.WriteString("}}")
	return b.Bytes()
}

// testLUKS2Device builds both header copies around text (same seqid, fixed
// salts and uuid) on a sparse device of devSize bytes.
func testLUKS2Device(t testing.TB, text []byte, hdrSize, devSize int64) *luksMemDevice {
	t.Helper()
	d := &luksMemDevice{size: devSize}
	for i, sec := range []bool{false, true} {
		c, err := luks2HeaderCopy(sec, hdrSize, 7, "3f2b8a52-7b5e-4b8c-9a1e-0c2d4e6f8a10", bytes.Repeat([]byte{byte(i + 1)}, 64), text)
		if err != nil {
			t.Fatal(err)
		}
		d.WriteAt(c, int64(i)*hdrSize)
	}
	d.size = devSize
	return d
}

// luks2Resum recomputes the sha256 checksum of the header copy at off.
func luks2Resum(img []byte, off int64) {
	hs := int64(binary.BigEndian.Uint64(img[off+8:]))
	if hs < luks2BinHeaderSize || off+hs > int64(len(img)) {
		hs = luks2BinHeaderSize
	}
	c := img[off : off+hs]
	clear(c[448:512])
	sum := sha256.Sum256(c)
	copy(c[448:], sum[:])
}

// luks2BaseMeta is valid metadata for a 16 KiB header, a 1 MiB data offset and one
// argon2id keyslot, parsed from the JSON formatLUKS2 writes.
func luks2BaseMeta(t testing.TB) *luks2Meta {
	t.Helper()
	kdf := kdfParams{kind: "argon2id", time: 4, memoryKiB: 32768, cpus: 4, salt: bytes.Repeat([]byte{1}, 32)}
	m, err := parseLUKS2Metadata(luks2FormatJSON(kdf, bytes.Repeat([]byte{2}, 32), bytes.Repeat([]byte{3}, 32)), luksFormatHdrSize, 8<<20)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// --- primitives -----------------------------------------------------------------

func TestPBKDF2Vectors(t *testing.T) {
	tests := []struct {
		hash       string
		pass, salt string
		iter, n    int
		want       string
	}{
		// RFC 6070 (HMAC-SHA1)
		{"sha1", "password", "salt", 1, 20, "0c60c80f961f0e71f3a9b524af6012062fe037a6"},
		{"sha1", "password", "salt", 2, 20, "ea6c014dc72d6f8ccd1ed92ace1d41f0d8de8957"},
		{"sha1", "password", "salt", 4096, 20, "4b007901b765489abead49d926f721d065a429c1"},
		{"sha1", "passwordPASSWORDpassword", "saltSALTsaltSALTsaltSALTsaltSALTsalt", 4096, 25, "3d2eec4fe41c849b80c8d83662c0e44a8b291a964cf2f07038"},
		{"sha1", "pass\x00word", "sa\x00lt", 4096, 16, "56fa6aa75548099dcc37d7f03425e0c3"},
		// RFC 7914 §11 (HMAC-SHA256)
		{"sha256", "passwd", "salt", 1, 64, "55ac046e56e3089fec1691c22544b605f94185216dde0465e68b9d57c20dacbc49ca9cccf179b645991664b39d77ef317c71b845b1e30bd509112041d3a19783"},
		{"sha256", "Password", "NaCl", 80000, 64, "4ddcd8f60b98be21830cee5ef22701f9641a4418d04c0414aeff08876b34ab56a1d425a1225833549adb841b51c9b3176a272bdebba1d078478f62b397f33c8d"},
	}
	for _, tc := range tests {
		newHash, _, _ := luksHash(tc.hash)
		got := make([]byte, tc.n)
		pbkdf2Key(newHash, []byte(tc.pass), []byte(tc.salt), tc.iter, got)
		if hex.EncodeToString(got) != tc.want {
			t.Errorf("PBKDF2-%s(%q, %q, %d) = %x, want %s", tc.hash, tc.pass, tc.salt, tc.iter, got, tc.want)
		}
	}
	// And against the standard library for SHA-512 and odd lengths.
	for _, n := range []int{1, 63, 64, 65, 200} {
		pass, salt := luksRandomBytes(n%37+1), luksRandomBytes(32)
		got := make([]byte, n)
		pbkdf2Key(sha512.New, pass, salt, 17, got)
		want, _ := stdpbkdf2.Key(sha512.New, string(pass), salt, 17, n)
		if !bytes.Equal(got, want) {
			t.Errorf("PBKDF2-SHA512 length %d differs from crypto/pbkdf2", n)
		}
	}
}

func TestAFSplitMerge(t *testing.T) {
	for _, h := range []string{"sha1", "sha256", "sha512"} {
		for _, ks := range []int{16, 20, 32, 33, 48, 64, 100} {
			key := luksRandomBytes(ks)
			material := make([]byte, ks*luksStripes)
			if err := afSplit(key, luksStripes, h, rand.Reader, material); err != nil {
				t.Fatal(err)
			}
			got := make([]byte, ks)
			if err := afMerge(material, ks, luksStripes, h, got); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, key) {
				t.Fatalf("%s key %d: merge(split(k)) != k", h, ks)
			}
			// Every stripe matters: flipping one bit of an early stripe changes the key.
			material[5] ^= 1
			afMerge(material, ks, luksStripes, h, got)
			if bytes.Equal(got, key) {
				t.Fatalf("%s key %d: stripe 0 has no effect", h, ks)
			}
		}
	}
	// A single stripe is the key itself; diffuse is not applied.
	got := make([]byte, 4)
	if err := afMerge([]byte{1, 2, 3, 4}, 4, 1, "sha256", got); err != nil || !bytes.Equal(got, []byte{1, 2, 3, 4}) {
		t.Fatalf("one stripe: %x %v", got, err)
	}
	// Two stripes of a 40-byte key with sha256: diffuse hashes a full and a partial block.
	s0, s1 := luksRandomBytes(40), luksRandomBytes(40)
	d := append([]byte(nil), s0...)
	h0 := sha256.Sum256(append([]byte{0, 0, 0, 0}, d[:32]...))
	h1 := sha256.Sum256(append([]byte{0, 0, 0, 1}, d[32:]...))
	want := append(h0[:], h1[:8]...)
	for i := range want {
		want[i] ^= s1[i]
	}
	got = make([]byte, 40)
	afMerge(append(s0, s1...), 40, 2, "sha256", got)
	if !bytes.Equal(got, want) {
		t.Fatalf("diffuse: got %x want %x", got, want)
	}
	// Wrong sizes are errors, never index panics.
	for _, tc := range []struct{ ks, stripes, mat, out int }{{0, 1, 0, 0}, {4, 2, 7, 4}, {4, 1, 4, 3}, {4, 0, 4, 4}, {4, luksStripes + 1, 4 * 4001, 4}, {513, 1, 513, 513}} {
		if err := afMerge(make([]byte, tc.mat), tc.ks, tc.stripes, "sha256", make([]byte, tc.out)); classOf(err) != eImage {
			t.Errorf("afMerge%v: %v, want E_IMAGE", tc, err)
		}
	}
	if err := afMerge(make([]byte, 8), 4, 2, "md5", make([]byte, 4)); classOf(err) != eImage {
		t.Errorf("afMerge md5: %v", err)
	}
}

// TestDataCipherMatchesXTS checks the in-house XTS against x/crypto/xts, with
// the IV counting 512-byte sectors for larger units.
func TestDataCipherMatchesXTS(t *testing.T) {
	for _, ks := range []int{32, 48, 64} {
		for _, unit := range []int{512, 1024, 4096} {
			key := luksRandomBytes(ks)
			ref, err := xts.NewCipher(aes.NewCipher, key)
			if err != nil {
				t.Fatal(err)
			}
			c, err := newDataCipher("aes-xts-plain64", key, unit)
			if err != nil {
				t.Fatal(err)
			}
			plain := luksRandomBytes(unit * 5)
			first := uint64(mrand.Uint32())
			want := make([]byte, len(plain))
			for i := 0; i < 5; i++ {
				ref.Encrypt(want[i*unit:(i+1)*unit], plain[i*unit:(i+1)*unit], (first+uint64(i))*uint64(unit/512))
			}
			got := append([]byte(nil), plain...)
			c.encrypt(got, first)
			if !bytes.Equal(got, want) {
				t.Fatalf("key %d unit %d: encryption differs from x/crypto/xts", ks, unit)
			}
			c.decrypt(got, first)
			if !bytes.Equal(got, plain) {
				t.Fatalf("key %d unit %d: decrypt(encrypt(p)) != p", ks, unit)
			}
		}
	}
	// The GF(2^128) doubling carry: a tweak with the top bit set must wrap.
	key := luksRandomBytes(64)
	ref, _ := xts.NewCipher(aes.NewCipher, key)
	c, _ := newDataCipher("aes-xts-plain64", key, 4096)
	buf := make([]byte, 4096)
	want := make([]byte, 4096)
	for s := uint64(0); s < 64; s++ {
		ref.Encrypt(want, buf, s*8)
		got := make([]byte, 4096)
		c.encrypt(got, s)
		if !bytes.Equal(got, want) {
			t.Fatalf("unit %d differs", s)
		}
	}
	if _, err := newDataCipher("cipher_null-ecb", key[:16], 512); classOf(err) != eImage {
		t.Errorf("cipher_null: %v", err)
	}
	if _, err := newDataCipher("aes-xts-plain64", key[:40], 512); classOf(err) != eImage {
		t.Errorf("40-byte XTS key: %v", err)
	}
}

// TestSecretBuf checks the mapping is locked and excluded from core dumps.
func TestSecretBuf(t *testing.T) {
	s, err := newSecretBuf(64)
	if err != nil {
		t.Fatal(err)
	}
	b := s.bytes()
	if len(b) != 64 {
		t.Fatalf("len %d", len(b))
	}
	copy(b, "secret")
	addr := fmt.Sprintf("%x-", uintptr(unsafe.Pointer(&s.mem[0])))
	smaps, err := os.ReadFile("/proc/self/smaps")
	if err != nil {
		t.Fatal(err)
	}
	var flags string
	sc := bufio.NewScanner(bytes.NewReader(smaps))
	for found := false; sc.Scan(); {
		line := sc.Text()
		found = found || strings.HasPrefix(line, addr)
		if found && strings.HasPrefix(line, "VmFlags:") {
			flags = line
			break
		}
	}
	if !strings.Contains(flags, " lo") || !strings.Contains(flags, " dd") {
		t.Fatalf("secret mapping flags %q: want lo (locked) and dd (dont-dump)", flags)
	}
	s.wipe()
	if s.bytes() != nil {
		t.Fatal("bytes after wipe")
	}
	s.wipe() // idempotent
	var nilBuf *secretBuf
	nilBuf.wipe()
}

// --- cryptsetup-made volumes: unlock and decrypt ---------------------------------

// luksCSVolume describes a cryptsetup-made fixture.
type luksCSVolume struct {
	name   string
	args   []string // luksFormat arguments besides the passphrase
	luks1  bool
	sector int
	kdf    string
}

func TestUnlockCryptsetupVolumes(t *testing.T) {
	luksNeedCryptsetup(t)
	vols := []luksCSVolume{
		{name: "luks2-argon2id-4096", args: []string{"--key-size", "512", "--sector-size", "4096"}, sector: 4096, kdf: "argon2id"},
		{name: "luks2-argon2i-512", args: []string{"--key-size", "512", "--sector-size", "512"}, sector: 512, kdf: "argon2i"},
		{name: "luks2-pbkdf2-sha256-512", args: []string{"--key-size", "512", "--sector-size", "512"}, sector: 512, kdf: "pbkdf2"},
		{name: "luks2-pbkdf2-sha512-aes128", args: []string{"--key-size", "256", "--hash", "sha512", "--sector-size", "4096"}, sector: 4096, kdf: "pbkdf2"},
		{name: "luks2-pbkdf2-sha1-2048", args: []string{"--key-size", "512", "--hash", "sha1", "--sector-size", "2048"}, sector: 2048, kdf: "pbkdf2"},
		{name: "luks1-xts-sha256", args: []string{"--type", "luks1", "--key-size", "512", "--hash", "sha256"}, luks1: true, sector: 512, kdf: "luks1"},
		{name: "luks1-xts-sha1-256", args: []string{"--type", "luks1", "--key-size", "256", "--hash", "sha1"}, luks1: true, sector: 512, kdf: "luks1"},
		{name: "luks1-cbc-essiv", args: []string{"--type", "luks1", "--cipher", "aes-cbc-essiv:sha256", "--key-size", "256", "--hash", "sha256"}, luks1: true, sector: 512, kdf: "luks1"},
	}
	for _, vol := range vols {
		t.Run(vol.name, func(t *testing.T) {
			dir := t.TempDir()
			pass := []byte("correct horse " + vol.name)
			passFile := luksWriteFile(t, filepath.Join(dir, "pass"), pass)
			img := filepath.Join(dir, "v.img")
			luksWriteFile(t, img, nil)
			os.Truncate(img, 8<<20)
			args := append([]string{"luksFormat", "--batch-mode", "--key-file", passFile}, vol.args...)
			if !vol.luks1 {
				args = append(args, "--type", "luks2")
			}
			args = append(args, luksFastKDF(vol.kdf)...)
			mustRunCryptsetup(t, nil, append(args, img)...)

			v, _ := luksOpenFile(t, img)
			want := luksDumpVolumeKey(t, img, passFile)
			if v.sectorSize != vol.sector || v.keySize != len(want) || (v.version == 1) != vol.luks1 {
				t.Fatalf("parsed version %d sector %d key %d, want luks1=%v sector %d key %d", v.version, v.sectorSize, v.keySize, vol.luks1, vol.sector, len(want))
			}
			key, err := v.unlock(pass)
			if err != nil {
				t.Fatalf("unlock: %v", err)
			}
			if !bytes.Equal(key.bytes(), want) {
				t.Fatalf("volume key differs from cryptsetup's")
			}
			key.wipe()
			if _, err := v.unlock([]byte("wrong")); classOf(err) != eAuth {
				t.Fatalf("wrong passphrase: %v, want E_AUTH", err)
			}
			// cryptsetup agrees on both answers.
			if _, rc := runCryptsetup(t, pass, "open", "--test-passphrase", "--key-file", "-", img); rc != 0 {
				t.Fatalf("cryptsetup rejects the passphrase: rc %d", rc)
			}
		})
	}
}

// TestUnlockMultipleKeyslots adds argon2i and pbkdf2 slots with luksAddKey and
// converts a LUKS1 volume to LUKS2 (20-byte digest).
func TestUnlockMultipleKeyslots(t *testing.T) {
	luksNeedCryptsetup(t)
	dir := t.TempDir()
	img := filepath.Join(dir, "v.img")
	luksWriteFile(t, img, nil)
	os.Truncate(img, 8<<20)
	p0 := luksWriteFile(t, filepath.Join(dir, "p0"), []byte("zero"))
	p1 := luksWriteFile(t, filepath.Join(dir, "p1"), []byte("one"))
	p2 := luksWriteFile(t, filepath.Join(dir, "p2"), []byte("two"))
	mustRunCryptsetup(t, nil, append([]string{"luksFormat", "--batch-mode", "--type", "luks2", "--sector-size", "4096", "--key-file", p0, img}, luksFastKDF("argon2id")...)...)
	mustRunCryptsetup(t, nil, append([]string{"luksAddKey", "--batch-mode", "--key-file", p0, img, p1}, luksFastKDF("argon2i")...)...)
	mustRunCryptsetup(t, nil, append([]string{"luksAddKey", "--batch-mode", "--key-file", p0, img, p2}, luksFastKDF("pbkdf2")...)...)
	want := luksDumpVolumeKey(t, img, p0)
	v, _ := luksOpenFile(t, img)
	if len(v.slots) != 3 {
		t.Fatalf("%d candidate slots, want 3", len(v.slots))
	}
	for i, p := range []string{"zero", "one", "two"} {
		key, err := v.unlock([]byte(p))
		if err != nil {
			t.Fatalf("unlock with %q: %v", p, err)
		}
		if key.slot != i || !bytes.Equal(key.bytes(), want) {
			t.Fatalf("passphrase %q: slot %d, key match %v", p, key.slot, bytes.Equal(key.bytes(), want))
		}
		key.wipe()
	}

	// LUKS1 converted to LUKS2 keeps the 20-byte digest.
	img1 := filepath.Join(dir, "v1.img")
	luksWriteFile(t, img1, nil)
	os.Truncate(img1, 8<<20)
	mustRunCryptsetup(t, nil, append([]string{"luksFormat", "--batch-mode", "--type", "luks1", "--hash", "sha256", "--key-file", p0, img1}, luksFastKDF("luks1")...)...)
	mustRunCryptsetup(t, nil, "convert", "--batch-mode", "--type", "luks2", img1)
	v1, _ := luksOpenFile(t, img1)
	if v1.version != 2 || len(v1.meta.digests[0].digest) != 20 {
		t.Fatalf("converted volume: version %d digest %d bytes", v1.version, len(v1.meta.digests[0].digest))
	}
	key, err := v1.unlock([]byte("zero"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(key.bytes(), luksDumpVolumeKey(t, img1, p0)) {
		t.Fatal("converted volume: key differs")
	}
	key.wipe()
}

// TestUnlockCryptsetupDefaults is the slow fixture of spec §6.1: cryptsetup's
// own PBKDF choice (argon2id, up to 1 GiB, 2 s) must open under minirun's
// default caps, with the machine's real MemAvailable.
func TestUnlockCryptsetupDefaults(t *testing.T) {
	luksNeedCryptsetup(t)
	dir := t.TempDir()
	img := filepath.Join(dir, "v.img")
	luksWriteFile(t, img, nil)
	os.Truncate(img, 20<<20)
	pass := []byte("cryptsetup defaults")
	passFile := luksWriteFile(t, filepath.Join(dir, "pass"), pass)
	mustRunCryptsetup(t, nil, "luksFormat", "--batch-mode", "--type", "luks2", "--key-file", passFile, img)
	f, err := os.Open(img)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	v, err := openLUKS(f, 20<<20, defaultKDFLimits())
	if err != nil {
		t.Fatalf("default caps refuse cryptsetup's default volume: %v", err)
	}
	k := v.slots[0].kdf
	t.Logf("cryptsetup chose %s t=%d m=%d KiB p=%d", k.kind, k.time, k.memoryKiB, k.cpus)
	if k.kind != "argon2id" {
		t.Fatalf("cryptsetup default KDF %q", k.kind)
	}
	start := time.Now()
	key, err := v.unlock(pass)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("unlocked in %v", time.Since(start))
	defer key.wipe()
	if !bytes.Equal(key.bytes(), luksDumpVolumeKey(t, img, passFile)) {
		t.Fatal("volume key differs from cryptsetup's")
	}
}

// luksReencrypt encrypts plaintext in place with cryptsetup's offline
// reencryption (spec §6.2); luks1 converts the result to LUKS1 afterwards,
// since LUKS1 reencryption needs device-mapper.
func luksReencrypt(t testing.TB, dir string, plain, pass []byte, luks1 bool, args ...string) string {
	t.Helper()
	img := luksWriteFile(t, filepath.Join(dir, "enc.img"), plain)
	os.Truncate(img, int64(len(plain))+4<<20)
	a := append([]string{"reencrypt", "--encrypt", "--type", "luks2", "--reduce-device-size", "4M", "--force-offline-reencrypt", "--batch-mode", "--key-file", "-"}, args...)
	mustRunCryptsetup(t, pass, append(a, img)...)
	if luks1 {
		mustRunCryptsetup(t, nil, "convert", "--batch-mode", "--type", "luks1", img)
	}
	return img
}

func TestDecryptCryptsetupData(t *testing.T) {
	luksNeedCryptsetup(t)
	tests := []struct {
		name   string
		luks1  bool
		args   []string
		sector int
	}{
		{"luks2-512-pbkdf2", false, append([]string{"--sector-size", "512"}, luksFastKDF("pbkdf2")...), 512},
		{"luks2-4096-argon2id", false, append([]string{"--sector-size", "4096"}, luksFastKDF("argon2id")...), 4096},
		{"luks2-4096-aes128", false, append([]string{"--sector-size", "4096", "--key-size", "256"}, luksFastKDF("pbkdf2")...), 4096},
		{"luks1-xts", true, append([]string{"--sector-size", "512"}, luksFastKDF("pbkdf2")...), 512},
		{"luks1-cbc-essiv", true, append([]string{"--sector-size", "512", "--cipher", "aes-cbc-essiv:sha256", "--key-size", "256"}, luksFastKDF("pbkdf2")...), 512},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			plain := luksRandomBytes(3<<20 + 8192)
			pass := []byte("data " + tc.name)
			img := luksReencrypt(t, dir, plain, pass, tc.luks1, tc.args...)
			v, _ := luksOpenFile(t, img)
			if v.dataOffset != 2<<20 || v.sectorSize != tc.sector {
				t.Fatalf("data offset %d sector %d", v.dataOffset, v.sectorSize)
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
			if int64(len(out.data)) != v.dataLength || !bytes.Equal(out.data[:len(plain)], plain) {
				t.Fatalf("decrypted data differs from the plaintext (%d bytes decrypted)", len(out.data))
			}
			if tc.sector == 4096 {
				// The IV counts 512-byte sectors (spec §2.4): IV = unit number
				// would decrypt only the first unit correctly.
				c, _ := v.dataCipherFor(key)
				c.ivPerUnit = 1
				b := make([]byte, 8192)
				v.readPlainAt(c, b, 0)
				if !bytes.Equal(b[:4096], plain[:4096]) || bytes.Equal(b[4096:], plain[4096:8192]) {
					t.Fatal("iv_large_sectors semantics would also match")
				}
			}
		})
	}
}

// --- formatLUKS2 against cryptsetup ----------------------------------------------

func luksFormatFile(t testing.TB, path string, payload, pass []byte, opts luksFormatOptions) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := formatLUKS2(luksFileSection{f, 0}, bytes.NewReader(payload), int64(len(payload)), pass, opts); err != nil {
		t.Fatalf("formatLUKS2: %v", err)
	}
}

func TestFormatAcceptedByCryptsetup(t *testing.T) {
	luksNeedCryptsetup(t)
	for _, mode := range []struct {
		name string
		opts luksFormatOptions
		want string // luksDump's PBKDF line
	}{
		{"argon2id", luksFormatOptions{argonMemoryKiB: 32768, argonTime: 4}, "argon2id"},
		{"pbkdf2-pem", luksFormatOptions{kdf: "pbkdf2"}, "pbkdf2"},
	} {
		t.Run(mode.name, func(t *testing.T) {
			dir := t.TempDir()
			payload := luksRandomBytes(300<<10 + 77) // not a whole number of sectors
			pass := luksRandomBytes(64)              // the PEM mode's kind of passphrase: any bytes
			passFile := luksWriteFile(t, filepath.Join(dir, "pass"), pass)
			img := filepath.Join(dir, "part.img")
			luksFormatFile(t, img, payload, pass, mode.opts)
			st, _ := os.Stat(img)
			if st.Size() != luks2FormattedSize(int64(len(payload))) || st.Size() != 1<<20+77824*4 {
				t.Fatalf("volume of %d bytes", st.Size())
			}

			mustRunCryptsetup(t, nil, "isLuks", "-v", img)
			dump := mustRunCryptsetup(t, nil, "luksDump", "--debug", img)
			for _, line := range strings.Split(dump, "\n") {
				l := strings.ToLower(line)
				if strings.Contains(l, "warning") || strings.Contains(l, "error") || strings.Contains(l, "fail") {
					t.Errorf("luksDump --debug: %s", line)
				}
			}
			for _, want := range []string{"offset: 1048576 [bytes]", "sector: 4096 [bytes]", "Keyslots area: \t1015808 [bytes]", "Metadata area: \t16384 [bytes]", "PBKDF:      " + mode.want, "Epoch:         \t1"} {
				if !strings.Contains(dump, want) {
					t.Errorf("luksDump lacks %q", want)
				}
			}
			if _, rc := runCryptsetup(t, nil, "open", "--test-passphrase", "--key-file", passFile, img); rc != 0 {
				t.Fatalf("open --test-passphrase: rc %d", rc)
			}
			if _, rc := runCryptsetup(t, []byte("nope"), "open", "--test-passphrase", "--key-file", "-", img); rc != 2 {
				t.Fatalf("wrong passphrase: rc %d, want 2", rc)
			}
			vk := luksDumpVolumeKey(t, img, passFile)
			v, _ := luksOpenFile(t, img)
			key, err := v.unlock(pass)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(key.bytes(), vk) {
				t.Fatal("cryptsetup's volume key differs from ours")
			}
			key.wipe()

			// Data: cryptsetup decrypts it through a detached header with the
			// same key and data offset 0 (spec §6.3 step 6).
			dh := filepath.Join(dir, "dh.img")
			luksWriteFile(t, dh, nil)
			os.Truncate(dh, 16<<20)
			vkFile := luksWriteFile(t, filepath.Join(dir, "vk"), vk)
			mustRunCryptsetup(t, nil, append([]string{"luksFormat", "--batch-mode", "--type", "luks2", "--header", dh, "--offset", "0", "--sector-size", "4096",
				"--volume-key-file", vkFile, "--key-size", "512", "--key-file", passFile}, append(luksFastKDF("pbkdf2"), dh)...)...)
			all, _ := os.ReadFile(img)
			data := luksWriteFile(t, filepath.Join(dir, "data.bin"), all[1<<20:])
			mustRunCryptsetup(t, nil, append([]string{"reencrypt", "--decrypt", "--header", dh, "--force-offline-reencrypt", "--batch-mode", "--key-file", passFile}, append(luksFastKDF("pbkdf2"), data)...)...)
			got, _ := os.ReadFile(data)
			padded := append(append([]byte(nil), payload...), make([]byte, len(got)-len(payload))...)
			if !bytes.Equal(got, padded) {
				t.Fatal("cryptsetup's decryption differs from the payload")
			}

			// cryptsetup rewrites the header when adding a key; we still read it.
			p2 := luksWriteFile(t, filepath.Join(dir, "p2"), []byte("second"))
			mustRunCryptsetup(t, nil, append([]string{"luksAddKey", "--batch-mode", "--key-file", passFile, img, p2}, luksFastKDF("pbkdf2")...)...)
			v2, _ := luksOpenFile(t, img)
			if v2.seqid <= 1 || len(v2.slots) != 2 {
				t.Fatalf("after luksAddKey: seqid %d, %d slots", v2.seqid, len(v2.slots))
			}
			key, err = v2.unlock([]byte("second"))
			if err != nil || !bytes.Equal(key.bytes(), vk) {
				t.Fatalf("slot added by cryptsetup: %v", err)
			}
			key.wipe()
		})
	}
}

// TestFormatDefaults checks the spec's default argon2id parameters.
func TestFormatDefaults(t *testing.T) {
	dev := &luksMemDevice{}
	pass := []byte("default parameters")
	if err := formatLUKS2(dev, bytes.NewReader([]byte("x")), 1, pass, luksFormatOptions{}); err != nil {
		t.Fatal(err)
	}
	v, err := openLUKS(dev, dev.size, luksTestLimits())
	if err != nil {
		t.Fatal(err)
	}
	k := v.slots[0].kdf
	memTotal, _ := luksMeminfoKiB("MemTotal")
	if k.kind != "argon2id" || k.cpus != 4 || k.memoryKiB != min(262144, memTotal/2) || k.time < 4 || k.time > 16 {
		t.Fatalf("default KDF %+v", k)
	}
	if dev.size != 1<<20+4096 {
		t.Fatalf("size %d", dev.size)
	}
}

func TestFormatRejects(t *testing.T) {
	opts := luksFormatOptions{kdf: "pbkdf2"}
	tests := []struct {
		name    string
		payload []byte
		size    int64
		pass    []byte
		opts    luksFormatOptions
		class   errClass
	}{
		{"short payload", make([]byte, 10), 11, []byte("p"), opts, eUsage},
		{"long payload", make([]byte, 12), 11, []byte("p"), opts, eUsage},
		{"empty payload", nil, 0, []byte("p"), opts, eUsage},
		{"empty passphrase", make([]byte, 10), 10, nil, opts, eUsage},
		{"long passphrase", make([]byte, 10), 10, make([]byte, 513), opts, eUsage},
		{"unknown kdf", make([]byte, 10), 10, []byte("p"), luksFormatOptions{kdf: "scrypt"}, eUsage},
		{"argon2 memory over the default cap", make([]byte, 10), 10, []byte("p"), luksFormatOptions{argonMemoryKiB: 2 << 20, argonTime: 4}, eUsage},
		{"argon2 one lane too many", make([]byte, 10), 10, []byte("p"), luksFormatOptions{argonMemoryKiB: 1024, argonTime: 4, argonCPUs: 5}, eUsage},
	}
	for _, tc := range tests {
		err := formatLUKS2(&luksMemDevice{}, bytes.NewReader(tc.payload), tc.size, tc.pass, tc.opts)
		if classOf(err) != tc.class {
			t.Errorf("%s: %v, want %s", tc.name, err, tc.class)
		}
	}
}

// TestDecryptToLarge round-trips a multi-chunk payload through the parallel
// paths, with progress reports.
func TestDecryptToLarge(t *testing.T) {
	payload := luksRandomBytes(5<<20 + 4095)
	dev := &luksMemDevice{}
	var last int64
	opts := luksFormatOptions{kdf: "pbkdf2", progress: func(done, total int64) {
		if done < last || done > total {
			t.Errorf("progress %d/%d after %d", done, total, last)
		}
		last = done
	}}
	pass := []byte("large")
	if err := formatLUKS2(dev, bytes.NewReader(payload), int64(len(payload)), pass, opts); err != nil {
		t.Fatal(err)
	}
	if last != int64(len(payload)+1) {
		t.Fatalf("progress ended at %d", last)
	}
	v, err := openLUKS(dev, dev.size, luksTestLimits())
	if err != nil {
		t.Fatal(err)
	}
	key, err := v.unlock(pass)
	if err != nil {
		t.Fatal(err)
	}
	defer key.wipe()
	out := &luksMemDevice{}
	var mu sync.Mutex
	var calls int
	if err := v.decryptTo(out, key, func(done, total int64) { mu.Lock(); calls++; mu.Unlock() }); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(out.data[:len(payload)], payload) || out.size != v.dataLength || calls != 6 {
		t.Fatalf("round trip: equal %v, %d bytes, %d progress calls", bytes.Equal(out.data[:len(payload)], payload), out.size, calls)
	}
	// In place, as the memory backend does into its memfd mapping; a
	// mapping too small for the plaintext is refused, not overrun.
	mapped := make(mappedPlain, v.dataLength)
	if err := v.decryptTo(mapped, key, nil); err != nil || !bytes.Equal(mapped[:len(payload)], payload) {
		t.Fatalf("in place: %v, equal %v", err, bytes.Equal(mapped[:len(payload)], payload))
	}
	if err := v.decryptTo(mapped[:v.dataLength-4096], key, nil); classOf(err) != eInternal {
		t.Fatalf("short mapping: %v, want E_INTERNAL", err)
	}
}

func TestPassphraseBounds(t *testing.T) {
	dev := &luksMemDevice{}
	if err := formatLUKS2(dev, bytes.NewReader([]byte("abc")), 3, []byte("right"), luksFormatOptions{kdf: "pbkdf2"}); err != nil {
		t.Fatal(err)
	}
	v, err := openLUKS(dev, dev.size, luksTestLimits())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := v.unlock(nil); classOf(err) != eAuth {
		t.Errorf("empty passphrase: %v, want E_AUTH", err)
	}
	if _, err := v.unlock(make([]byte, 513)); classOf(err) != eUsage {
		t.Errorf("513-byte passphrase: %v, want E_USAGE", err)
	}
	if _, err := v.unlock([]byte("wrong")); err == nil || err.Error() != "wrong passphrase or key" {
		t.Errorf("wrong passphrase: %v", err)
	}
}

// --- hostile headers (security.md §4.5 D1–D3) ---------------------------------------

// luksExpectRefusal opens dev and checks the class, the time and the allocation.
func luksExpectRefusal(t *testing.T, name string, dev io.ReaderAt, size int64, limits kdfLimits, class errClass, msg string) {
	t.Helper()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	start := time.Now()
	v, err := openLUKS(dev, size, limits)
	elapsed := time.Since(start)
	runtime.ReadMemStats(&after)
	if err == nil {
		t.Errorf("%s: accepted (%d slots)", name, len(v.slots))
		return
	}
	if classOf(err) != class || !strings.Contains(err.Error(), msg) {
		t.Errorf("%s: %v [%s], want %s containing %q", name, err, classOf(err), class, msg)
	}
	if elapsed > time.Second {
		t.Errorf("%s: refused after %v", name, elapsed)
	}
	if alloc := after.TotalAlloc - before.TotalAlloc; alloc > 64<<20 {
		t.Errorf("%s: allocated %d MiB", name, alloc>>20)
	}
}

func TestHostileLUKS2Metadata(t *testing.T) {
	const dev = 64 << 20
	limits := luksTestLimits()
	// JSON-level mutations of a valid header: both copies rewritten, checksums valid.
	text := string(testLUKS2JSON(luks2BaseMeta(t)))
	if _, err := openLUKS(testLUKS2Device(t, []byte(text), luksFormatHdrSize, dev), dev, limits); err != nil {
		t.Fatalf("base metadata refused: %v", err)
	}
	edit := func(old, new string) string {
		if !strings.Contains(text, old) {
			t.Fatalf("base JSON lacks %q", old)
		}
		return strings.Replace(text, old, new, 1)
	}
	argon := `"time":4,"memory":32768,"cpus":4`
	deep := strings.Repeat(`{"a":`, 9) + "1" + strings.Repeat("}", 9)
	tests := []struct {
		name  string
		text  string
		class errClass
		msg   string
	}{
		// D1: KDF caps
		{"argon2 memory 4 GiB", edit(argon, `"time":4,"memory":4194304,"cpus":4`), ePolicy, "KDF parameters exceed limits"},
		{"argon2 memory 2^32-1", edit(argon, `"time":4,"memory":4294967295,"cpus":4`), ePolicy, "KDF parameters exceed limits"},
		{"argon2 time 0", edit(argon, `"time":0,"memory":32768,"cpus":4`), ePolicy, "KDF parameters exceed limits"},
		{"argon2 time 2^32-1", edit(argon, `"time":4294967295,"memory":32768,"cpus":4`), ePolicy, "KDF parameters exceed limits"},
		{"argon2 time × memory", edit(argon, `"time":9,"memory":1048576,"cpus":4`), ePolicy, "1 GiB × 8 passes"},
		{"argon2 cpus 0", edit(argon, `"time":4,"memory":32768,"cpus":0`), ePolicy, "KDF parameters exceed limits"},
		{"argon2 cpus 1024", edit(argon, `"time":4,"memory":32768,"cpus":1024`), ePolicy, "KDF parameters exceed limits"},
		{"argon2 memory below 8·cpus", edit(argon, `"time":4,"memory":31,"cpus":4`), ePolicy, "below the minimum"},
		{"pbkdf2 keyslot 2^31-1", edit(`{"type":"argon2id",`+argon, `{"type":"pbkdf2","hash":"sha256","iterations":2147483647`), ePolicy, "kdf_max_pbkdf2_iterations"},
		{"digest 2^31-1 iterations", edit(`"iterations":1000`, `"iterations":2147483647`), ePolicy, "kdf_max_pbkdf2_iterations"},
		{"pbkdf2 0 iterations", edit(`{"type":"argon2id",`+argon, `{"type":"pbkdf2","hash":"sha256","iterations":0`), ePolicy, "KDF parameters exceed limits"},
		// D2: structure and strictness
		{"duplicate top-level key", edit(`"tokens":{}`, `"tokens":{},"tokens":{}`), eImage, "duplicate JSON member"},
		{"duplicate kdf key", edit(`"time":4`, `"time":4,"time":1`), eImage, "duplicate JSON member"},
		{"Keyslots case variant", edit(`{"keyslots"`, `{"Keyslots"`), eImage, "unknown member \"Keyslots\""},
		{"KEY_SIZE case variant", edit(`"key_size":64,"af"`, `"KEY_SIZE":64,"af"`), eImage, "unknown member"},
		{"unknown top-level member", edit(`"tokens":{}`, `"tokens":{},"extra":1`), eImage, "unknown member \"extra\""},
		{"unknown kdf member", edit(`"cpus":4`, `"cpus":4,"pepper":"x"`), eImage, "unknown member"},
		{"missing digests", strings.Replace(edit(`"digests":{`, `"digestz":{`), `"digestz"`, `"digestz"`, 1), eImage, "unknown member"},
		{"non-digit keyslot id", edit(`{"keyslots":{"0"`, `{"keyslots":{"a"`), eImage, "bad id"},
		{"leading-zero id", edit(`{"keyslots":{"0"`, `{"keyslots":{"00"`), eImage, "bad id"},
		{"stripes 3999", edit(`"stripes":4000`, `"stripes":3999`), eImage, "stripes"},
		{"stripes as float", edit(`"stripes":4000`, `"stripes":4000.0`), eImage, "not an integer"},
		{"key_size with exponent", edit(`"key_size":64,"af"`, `"key_size":6.4e1,"af"`), eImage, "not an integer"},
		{"negative key_size", edit(`"key_size":64,"af"`, `"key_size":-64,"af"`), eImage, "not an integer"},
		{"offset as number", edit(`"offset":"1048576"`, `"offset":1048576`), eImage, "not a decimal string"},
		{"offset with leading zero", edit(`"offset":"1048576"`, `"offset":"01048576"`), eImage, "not a decimal number"},
		{"offset beyond int64", edit(`"offset":"1048576"`, `"offset":"9223372036854775808"`), eImage, "not a decimal number"},
		{"segment beyond the device", edit(`"offset":"1048576"`, `"offset":"134217728"`), eImage, "beyond the end of the device"},
		{"segment size beyond the device", edit(`"size":"dynamic"`, `"size":"67108864"`), eImage, "beyond the device"},
		{"segment size not whole sectors", edit(`"size":"dynamic"`, `"size":"4095"`), eImage, "multiple of the sector size"},
		{"segment over the keyslots", edit(`"offset":"1048576"`, `"offset":"524288"`), eImage, "overlaps the metadata"},
		{"keyslot area past the keyslots area", edit(`"offset":"32768","size":"258048"`, `"offset":"1048576","size":"258048"`), eImage, "outside the keyslots area"},
		{"keyslot area too small", edit(`"size":"258048"`, `"size":"4096"`), eImage, "key material needs"},
		{"detached header", edit(`"offset":"1048576"`, `"offset":"0"`), eImage, "detached header"},
		{"iv_tweak", edit(`"iv_tweak":"0"`, `"iv_tweak":"8"`), eImage, "only 0"},
		{"unknown mandatory requirement", edit(`"keyslots_size":"1015808"`, `"keyslots_size":"1015808","requirements":{"mandatory":["future-thing"]}`), eImage, "unsupported requirement \"future-thing\""},
		{"reencryption requirement", edit(`"keyslots_size":"1015808"`, `"keyslots_size":"1015808","requirements":{"mandatory":["online-reencrypt-v2"]}`), eImage, "unsupported requirement"},
		{"requirements as array", edit(`"keyslots_size":"1015808"`, `"keyslots_size":"1015808","requirements":[]`), eImage, "not an object"},
		{"json_size mismatch", edit(`"json_size":"12288"`, `"json_size":"28672"`), eImage, "json_size"},
		{"keyslots_size unaligned", edit(`"keyslots_size":"1015808"`, `"keyslots_size":"1015807"`), eImage, "multiple of 4096"},
		{"nesting deeper than 8", edit(`"tokens":{}`, `"tokens":{"0":`+deep+`}`), eImage, "nested deeper"},
		{"salt of 16 bytes", edit(`"cpus":4,"salt":"AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE="`, `"cpus":4,"salt":"AQEBAQEBAQEBAQEBAQEBAQ=="`), eImage, "16 bytes"},
		{"keyslot not in a digest", edit(`"keyslots":["0"]`, `"keyslots":[]`), eImage, "not in any digest"},
		{"digest names a missing keyslot", edit(`"keyslots":["0"]`, `"keyslots":["0","5"]`), eImage, "does not exist"},
		{"unknown keyslot type", edit(`"type":"luks2"`, `"type":"reencrypt"`), eImage, "unsupported keyslot type"},
		{"unknown af type", edit(`"type":"luks1"`, `"type":"luks3"`), eImage, "anti-forensic"},
		{"af hash md5", edit(`"stripes":4000,"hash":"sha256"`, `"stripes":4000,"hash":"md5"`), eImage, "unsupported hash"},
		{"unknown kdf", edit(`"type":"argon2id"`, `"type":"scrypt"`), eImage, "unsupported KDF"},
		{"trailing data", text + " {}", eImage, "data after the JSON object"},
		{"truncated JSON", text[:len(text)-1], eImage, "malformed JSON"},
		// D3: ciphers and features
		{"cipher_null segment", edit(`"encryption":"aes-xts-plain64","sector_size"`, `"encryption":"cipher_null-ecb","sector_size"`), eImage, "unsupported cipher"},
		{"aes-ecb segment", edit(`"encryption":"aes-xts-plain64","sector_size"`, `"encryption":"aes-ecb","sector_size"`), eImage, "unsupported cipher"},
		{"cipher_null keyslot area", edit(`"encryption":"aes-xts-plain64","key_size":64`, `"encryption":"cipher_null","key_size":64`), eImage, "unsupported cipher"},
		{"integrity segment", edit(`"sector_size":4096`, `"sector_size":4096,"integrity":{"type":"hmac(sha256)","journal_encryption":"none","journal_integrity":"none"}`), eImage, "integrity"},
		{"segment flags", edit(`"sector_size":4096`, `"sector_size":4096,"flags":["backup-previous"]`), eImage, "segment flags"},
		{"two segments", edit(`"segments":{"0":{`, `"segments":{"1":{"type":"crypt"},"0":{`), eImage, "exactly one segment"},
		{"segment 1 only", edit(`"segments":{"0":{`, `"segments":{"1":{`), eImage, "exactly one segment"},
		{"sector_size 0", edit(`"sector_size":4096`, `"sector_size":0`), eImage, "sector_size"},
		{"sector_size 3", edit(`"sector_size":4096`, `"sector_size":3`), eImage, "sector_size"},
		{"sector_size 8192", edit(`"sector_size":4096`, `"sector_size":8192`), eImage, "sector_size"},
		{"key_size 40", edit(`"key_size":64,"af"`, `"key_size":40,"af"`), eImage, "does not fit aes-xts-plain64"},
	}
	for _, tc := range tests {
		hs := int64(luksFormatHdrSize)
		for len(tc.text) >= int(hs-luks2BinHeaderSize) {
			hs *= 2
		}
		if hs != luksFormatHdrSize {
			tc.text = strings.Replace(tc.text, `"json_size":"12288"`, fmt.Sprintf(`"json_size":"%d"`, hs-luks2BinHeaderSize), 1)
		}
		luksExpectRefusal(t, tc.name, testLUKS2Device(t, []byte(tc.text), hs, dev), dev, limits, tc.class, tc.msg)
	}
}

// TestHostileLUKS2Counts builds metadata with many keyslots, tokens and digests.
func TestHostileLUKS2Counts(t *testing.T) {
	const dev = 256 << 20
	limits := luksTestLimits()
	// n keyslots of 32-byte keys (131072-byte areas) in a big keyslots area.
	many := func(n int, kdf kdfParams) *luks2Meta {
		m := luks2BaseMeta(t)
		ksSize := int64(max(n, 1)) * 131072
		m.config.keyslotsSize = ksSize
		m.segment.offset = 2*luksFormatHdrSize + ksSize
		d := m.digests[0]
		d.keyslots = nil
		m.keyslots = nil
		for i := 0; i < n; i++ {
			m.keyslots = append(m.keyslots, &luksSlot{id: i, priority: 1, keySize: 32, afHash: "sha256", stripes: luksStripes,
				areaOffset: 2*luksFormatHdrSize + int64(i)*131072, areaSize: 131072, areaCipher: "aes-xts-plain64", areaKey: 32, kdf: kdf, digest: d})
			d.keyslots = append(d.keyslots, i)
		}
		return m
	}
	salt := bytes.Repeat([]byte{9}, 32)
	atCap := kdfParams{kind: "argon2id", time: 8, memoryKiB: 1 << 20, cpus: 4, salt: salt}
	pbCap := kdfParams{kind: "pbkdf2", hash: "sha256", iterations: 10_000_000, salt: salt}
	cheap := kdfParams{kind: "pbkdf2", hash: "sha256", iterations: 1000, salt: salt}
	device := func(m *luks2Meta) *luksMemDevice {
		text := testLUKS2JSON(m)
		hs := int64(luksFormatHdrSize)
		for len(text) >= int(hs-luks2BinHeaderSize) {
			hs *= 2
		}
		m.hdrSize = hs
		m.config.jsonSize = hs - luks2BinHeaderSize
		if m.segment.offset < 2*hs+m.config.keyslotsSize {
			for _, s := range m.keyslots {
				s.areaOffset += 2 * (hs - luksFormatHdrSize)
			}
			m.segment.offset = 2*hs + m.config.keyslotsSize
		}
		return testLUKS2Device(t, testLUKS2JSON(m), hs, dev)
	}
	// Two slots at the single-slot cap are allowed, three are not (summed cost ≤ 2×).
	if _, err := openLUKS(device(many(2, atCap)), dev, limits); err != nil {
		t.Fatalf("two slots at the cap: %v", err)
	}
	luksExpectRefusal(t, "three argon2 slots at the cap", device(many(3, atCap)), dev, limits, ePolicy, "times a single keyslot")
	luksExpectRefusal(t, "32 argon2 slots at the cap", device(many(32, atCap)), dev, limits, ePolicy, "KDF parameters exceed limits")
	luksExpectRefusal(t, "3 pbkdf2 slots at the cap", device(many(3, pbCap)), dev, limits, ePolicy, "PBKDF2 iterations in all")
	// 32 cheap slots: only eight are tried.
	v, err := openLUKS(device(many(32, cheap)), dev, limits)
	if err != nil || len(v.slots) != luksMaxTried {
		t.Fatalf("32 cheap slots: %v", err)
	}
	luksExpectRefusal(t, "33 keyslots", device(many(33, cheap)), dev, limits, eImage, "at most 32")
	// Priorities: 2 first, 0 never, then by id.
	m := many(4, cheap)
	m.keyslots[0].priority, m.keyslots[2].priority, m.keyslots[3].priority = 0, 2, 1
	if v, err = openLUKS(device(m), dev, limits); err != nil {
		t.Fatal(err)
	}
	var order []int
	for _, s := range v.slots {
		order = append(order, s.id)
	}
	if !reflect.DeepEqual(order, []int{2, 1, 3}) {
		t.Fatalf("try order %v, want [2 1 3]", order)
	}
	// Memory the machine does not have is E_RESOURCE.
	small := limits
	small.memAvailableKiB = 1 << 20
	luksExpectRefusal(t, "argon2 over half of MemAvailable", device(many(1, atCap)), dev, small, eResource, "available memory")
	// A lower admin cap is named in the message.
	low := newKDFLimits(64, 10_000_000)
	low.memAvailableKiB = 16 << 20
	luksExpectRefusal(t, "argon2 over kdf_max_memory_mib", device(many(1, atCap)), dev, low, ePolicy, "kdf_max_memory_mib = 64")

	// 10 000 keyslots do not fit the 64 KiB text limit; in a 4 MiB header
	// they are refused before anything is parsed.
	var b strings.Builder
	b.WriteString(`{"keyslots":{`)
	for i := 0; i < 10000; i++ {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, `"%d":{}`, i)
	}
	b.WriteString(`},"tokens":{},"segments":{},"digests":{},"config":{}}`)
	luksExpectRefusal(t, "10000 keyslots", testLUKS2Device(t, []byte(b.String()), 4<<20, dev), dev, limits, eImage, "longer than 65536")
	// 100 small keyslots fit the text limit and hit the member limit.
	b.Reset()
	b.WriteString(`{"keyslots":{`)
	for i := 0; i < 100; i++ {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, `"%d":{}`, i)
	}
	b.WriteString(`},"tokens":{},"segments":{},"digests":{},"config":{}}`)
	luksExpectRefusal(t, "100 keyslots", testLUKS2Device(t, []byte(b.String()), 64<<10, dev), dev, limits, eImage, "more than 64 members")
	// 4 MiB of nesting.
	nest := "{" + strings.Repeat("[", 4<<20-luks2BinHeaderSize-2)
	luksExpectRefusal(t, "4 MiB of nesting", testLUKS2Device(t, []byte(nest[:4<<20-luks2BinHeaderSize-1]), 4<<20, dev), dev, limits, eImage, "longer than 65536")
	nest = `{"keyslots":` + strings.Repeat("[", 60000)
	luksExpectRefusal(t, "60000 open brackets", testLUKS2Device(t, []byte(nest), 64<<10, dev), dev, limits, eImage, "nested deeper")
	// An array with more than 64 elements.
	arr := `{"tokens":{"0":{"keyslots":[` + strings.Repeat(`"0",`, 100) + `"0"]}}}`
	luksExpectRefusal(t, "long array", testLUKS2Device(t, []byte(arr), 64<<10, dev), dev, limits, eImage, "more than 64 elements")
	// Nine digests.
	b.Reset()
	b.WriteString(`{"keyslots":{},"tokens":{},"segments":{},"digests":{`)
	for i := 0; i < 9; i++ {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, `"%d":{}`, i)
	}
	b.WriteString(`},"config":{"json_size":"12288","keyslots_size":"1015808"}}`)
	luksExpectRefusal(t, "nine digests", testLUKS2Device(t, []byte(b.String()), luksFormatHdrSize, dev), dev, limits, eImage, "")
}

// TestHostileLUKS2Binary mutates the binary header copies of a formatted volume.
func TestHostileLUKS2Binary(t *testing.T) {
	dev := &luksMemDevice{}
	pass := []byte("binary")
	if err := formatLUKS2(dev, bytes.NewReader(make([]byte, 4096)), 4096, pass, luksFormatOptions{kdf: "pbkdf2"}); err != nil {
		t.Fatal(err)
	}
	good := dev.data
	limits := luksTestLimits()
	size := int64(len(good))
	both := func(f func(h []byte)) *luksMemDevice {
		img := append([]byte(nil), good...)
		for _, off := range []int64{0, luksFormatHdrSize} {
			f(img[off : off+luks2BinHeaderSize])
			luks2Resum(img, off)
		}
		return &luksMemDevice{data: img, size: size}
	}
	primaryOnly := func(f func(img []byte)) *luksMemDevice {
		img := append([]byte(nil), good...)
		f(img)
		return &luksMemDevice{data: img, size: size}
	}
	be := binary.BigEndian
	tests := []struct {
		name  string
		dev   *luksMemDevice
		class errClass
		msg   string
	}{
		{"bad magic", both(func(h []byte) { h[0] ^= 0xff }), eImage, "not a LUKS volume"},
		{"version 3", both(func(h []byte) { be.PutUint16(h[6:], 3) }), eImage, "unsupported version 3"},
		{"hdr_size 12 KiB", both(func(h []byte) { be.PutUint64(h[8:], 12<<10) }), eImage, "not an allowed size"},
		{"hdr_size 8 MiB", both(func(h []byte) { be.PutUint64(h[8:], 8<<20) }), eImage, "not an allowed size"},
		{"hdr_size 2^63", both(func(h []byte) { be.PutUint64(h[8:], 1<<63) }), eImage, "not an allowed size"},
		{"hdr_size 32 KiB (JSON area mismatch)", both(func(h []byte) { be.PutUint64(h[8:], 32<<10) }), eImage, ""},
		{"wrong hdr_offset", both(func(h []byte) { be.PutUint64(h[256:], 4096) }), eImage, "hdr_offset"},
		{"unknown checksum algorithm", both(func(h []byte) { copy(h[72:104], "md5\x00\x00\x00") }), eImage, "checksum algorithm"},
		{"unterminated label", both(func(h []byte) { copy(h[24:72], bytes.Repeat([]byte{'L'}, 48)) }), eImage, "unterminated"},
		{"non-zero padding", both(func(h []byte) { h[300] = 1 }), eImage, "padding"},
		{"checksum mismatch in both", primaryOnly(func(img []byte) { img[5000] ^= 1; img[luksFormatHdrSize+5000] ^= 1 }), eImage, "both LUKS2 header copies are invalid"},
		{"both copies zeroed", primaryOnly(func(img []byte) { clear(img[:2*luksFormatHdrSize]) }), eImage, "not a LUKS volume"},
		{"missing NUL", both(func(h []byte) {}), eImage, ""}, // replaced below
		{"garbage after NUL", primaryOnly(func(img []byte) {
			img[luksFormatHdrSize-1] = 'x'
			img[2*luksFormatHdrSize-1] = 'x'
			luks2Resum(img, 0)
			luks2Resum(img, luksFormatHdrSize)
		}), eImage, "not zero"},
		{"copies disagree", primaryOnly(func(img []byte) {
			i := bytes.Index(img[luksFormatHdrSize:], []byte(`"iterations":1000,"salt"`)) + luksFormatHdrSize
			copy(img[i:], `"iterations":1001,"salt"`)
			luks2Resum(img, luksFormatHdrSize)
		}), eImage, "copies disagree"},
		{"uuids disagree", primaryOnly(func(img []byte) {
			img[luksFormatHdrSize+168] ^= 1
			luks2Resum(img, luksFormatHdrSize)
		}), eImage, "uuid"},
		{"too small for LUKS1", &luksMemDevice{data: good[:100], size: 100}, eImage, "too small"},
		{"truncated device", &luksMemDevice{data: good[:20000], size: 20000}, eImage, ""},
	}
	// Missing NUL: fill the whole JSON area of both copies with text.
	noNUL := append([]byte(nil), good...)
	for _, off := range []int{0, luksFormatHdrSize} {
		a := noNUL[off+luks2BinHeaderSize : off+luksFormatHdrSize]
		for i := range a {
			if a[i] == 0 {
				a[i] = ' '
			}
		}
		luks2Resum(noNUL, int64(off))
	}
	tests[12].dev, tests[12].msg = &luksMemDevice{data: noNUL, size: size}, "no NUL terminator"
	for _, tc := range tests {
		luksExpectRefusal(t, tc.name, tc.dev, tc.dev.size, limits, tc.class, tc.msg)
	}

	// Recoverable damage: a bad primary falls back to the secondary.
	for _, tc := range []struct {
		name string
		dev  *luksMemDevice
	}{
		{"primary checksum", primaryOnly(func(img []byte) { img[5000] ^= 1 })},
		{"primary zeroed", primaryOnly(func(img []byte) { clear(img[:luksFormatHdrSize]) })},
		{"primary bad magic", primaryOnly(func(img []byte) { img[0] = 'X'; luks2Resum(img, 0) })},
		{"secondary corrupt", primaryOnly(func(img []byte) { img[luksFormatHdrSize+5000] ^= 1 })},
	} {
		v, err := openLUKS(tc.dev, size, limits)
		if err != nil {
			t.Errorf("%s: %v", tc.name, err)
			continue
		}
		key, err := v.unlock(pass)
		if err != nil {
			t.Errorf("%s: unlock: %v", tc.name, err)
			continue
		}
		key.wipe()
	}
	// A newer secondary (higher seqid) wins over the primary.
	img := append([]byte(nil), good...)
	i := bytes.Index(img[luksFormatHdrSize:], []byte(`"iterations":1000,"salt"`)) + luksFormatHdrSize
	copy(img[i:], `"iterations":1001,"salt"`)
	be.PutUint64(img[luksFormatHdrSize+16:], 2)
	luks2Resum(img, luksFormatHdrSize)
	v, err := openLUKS(&luksMemDevice{data: img, size: size}, size, limits)
	if err != nil || v.seqid != 2 || v.slots[0].kdf.iterations != 1001 {
		t.Fatalf("newer secondary: %v", err)
	}
}

// luks1Header builds a LUKS1 header with one active slot at sector 8.
func luks1Header(cipherName, mode, hash string, keyBytes, payload uint32) []byte {
	h := make([]byte, luks1HeaderSize)
	be := binary.BigEndian
	copy(h, luksPrimaryMagic)
	be.PutUint16(h[6:], 1)
	copy(h[8:40], cipherName)
	copy(h[40:72], mode)
	copy(h[72:104], hash)
	be.PutUint32(h[104:], payload)
	be.PutUint32(h[108:], keyBytes)
	be.PutUint32(h[164:], 1000)
	copy(h[168:], "0b3e1a44-8b8c-4f2a-9d0e-1c2b3a4d5e6f")
	for i := 0; i < 8; i++ {
		ks := h[208+48*i:]
		be.PutUint32(ks, 0x0000DEAD)
		be.PutUint32(ks[4:], 1000)
		be.PutUint32(ks[40:], uint32(8+i*512))
		be.PutUint32(ks[44:], luksStripes)
	}
	be.PutUint32(h[208:], 0x00AC71F3)
	return h
}

func TestHostileLUKS1(t *testing.T) {
	const dev = 8 << 20
	limits := luksTestLimits()
	mk := func(f func(h []byte)) *luksMemDevice {
		h := luks1Header("aes", "xts-plain64", "sha256", 64, 4096)
		f(h)
		return &luksMemDevice{data: h, size: dev}
	}
	if v, err := openLUKS(mk(func([]byte) {}), dev, limits); err != nil || v.version != 1 || v.dataOffset != 4096*512 {
		t.Fatalf("base LUKS1 header: %v", err)
	}
	be := binary.BigEndian
	slot := func(h []byte, i int) []byte { return h[208+48*i : 208+48*(i+1)] }
	tests := []struct {
		name  string
		dev   *luksMemDevice
		class errClass
		msg   string
	}{
		{"keyBytes 0", mk(func(h []byte) { be.PutUint32(h[108:], 0) }), eImage, "unsupported cipher"},
		{"keyBytes 1000", mk(func(h []byte) { be.PutUint32(h[108:], 1000) }), eImage, "unsupported cipher"},
		{"keyBytes 48 with xts", mk(func(h []byte) { be.PutUint32(h[108:], 48) }), eImage, "unsupported cipher"},
		{"cbc-essiv with 64 bytes", mk(func(h []byte) { copy(h[40:72], "cbc-essiv:sha256\x00") }), eImage, "unsupported cipher"},
		{"twofish", mk(func(h []byte) { copy(h[8:40], "twofish\x00") }), eImage, "unsupported cipher"},
		{"cipher_null", mk(func(h []byte) { copy(h[8:40], "cipher_null\x00"); copy(h[40:72], "ecb\x00") }), eImage, "unsupported cipher"},
		{"aes-ecb", mk(func(h []byte) { copy(h[40:72], "ecb\x00\x00\x00\x00\x00\x00\x00\x00\x00") }), eImage, "unsupported cipher"},
		{"ripemd160", mk(func(h []byte) { copy(h[72:104], "ripemd160\x00") }), eImage, "unsupported hash"},
		{"unterminated cipher", mk(func(h []byte) { copy(h[8:40], bytes.Repeat([]byte{'a'}, 32)) }), eImage, "unterminated"},
		{"key material in the header", mk(func(h []byte) { be.PutUint32(slot(h, 0)[40:], 1) }), eImage, "overlaps the header"},
		{"key material at 0", mk(func(h []byte) { be.PutUint32(slot(h, 0)[40:], 0) }), eImage, "overlaps the header"},
		{"key material in the payload", mk(func(h []byte) { be.PutUint32(slot(h, 0)[40:], 4000) }), eImage, "overlaps the payload"},
		{"stripes 3999", mk(func(h []byte) { be.PutUint32(slot(h, 0)[44:], 3999) }), eImage, "stripes"},
		{"stripes 2^32-1", mk(func(h []byte) { be.PutUint32(slot(h, 0)[44:], 1<<32-1) }), eImage, "stripes"},
		{"overlapping slots", mk(func(h []byte) { be.PutUint32(slot(h, 1), 0x00AC71F3); be.PutUint32(slot(h, 1)[40:], 100) }), eImage, "overlap"},
		{"bad slot state", mk(func(h []byte) { be.PutUint32(slot(h, 3), 0x12345678) }), eImage, "bad state"},
		{"no active slot", mk(func(h []byte) { be.PutUint32(slot(h, 0), 0x0000DEAD) }), eImage, "no active key slot"},
		{"payload 0", mk(func(h []byte) { be.PutUint32(h[104:], 0) }), eImage, "detached header"},
		{"payload beyond the device", mk(func(h []byte) { be.PutUint32(h[104:], 1<<31) }), eImage, "beyond the end"},
		{"version 0", mk(func(h []byte) { be.PutUint16(h[6:], 0) }), eImage, "unsupported version"},
		{"slot iterations 2^31-1", mk(func(h []byte) { be.PutUint32(slot(h, 0)[4:], 1<<31-1) }), ePolicy, "KDF parameters exceed limits"},
		{"slot iterations 0", mk(func(h []byte) { be.PutUint32(slot(h, 0)[4:], 0) }), ePolicy, "KDF parameters exceed limits"},
		{"digest iterations 2^32-1", mk(func(h []byte) { be.PutUint32(h[164:], 1<<32-1) }), ePolicy, "kdf_max_pbkdf2_iterations"},
		{"8 slots at the cap", mk(func(h []byte) {
			for i := 0; i < 8; i++ {
				be.PutUint32(slot(h, i), 0x00AC71F3)
				be.PutUint32(slot(h, i)[4:], 10_000_000)
			}
		}), ePolicy, "PBKDF2 iterations in all"},
	}
	for _, tc := range tests {
		luksExpectRefusal(t, tc.name, tc.dev, dev, limits, tc.class, tc.msg)
	}
}

// TestFormatRoundTripMetadata: what formatLUKS2 writes parses back to the
// spec's values and re-serialises identically through the test writer.
func TestFormatRoundTripMetadata(t *testing.T) {
	m := luks2BaseMeta(t)
	again, err := parseLUKS2Metadata(testLUKS2JSON(m), m.hdrSize, 8<<20)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(m, again) {
		t.Fatal("metadata changed through the test writer")
	}
	s := m.keyslots[0]
	if s.areaOffset != 32768 || s.areaSize != 258048 || s.keySize != 64 || m.segment.offset != 1<<20 || m.segment.sectorSize != 4096 ||
		m.segment.size != -1 || m.config.keyslotsSize != 1015808 || m.config.jsonSize != 12288 || m.digests[0].iterations != 1000 {
		t.Fatalf("formatted metadata %+v %+v", m, s)
	}
}

// --- benchmarks ---------------------------------------------------------------------

// BenchmarkDataDecrypt is the memory backend's inner loop on one core.
func BenchmarkDataDecrypt(b *testing.B) {
	c, _ := newDataCipher("aes-xts-plain64", luksRandomBytes(64), 4096)
	buf := luksRandomBytes(luksChunk)
	b.SetBytes(int64(len(buf)))
	for b.Loop() {
		c.decrypt(buf, 0)
	}
}

// BenchmarkXTSReference is x/crypto/xts on the same work: the "raw AES-XTS" baseline.
func BenchmarkXTSReference(b *testing.B) {
	c, _ := xts.NewCipher(aes.NewCipher, luksRandomBytes(64))
	buf := luksRandomBytes(luksChunk)
	b.SetBytes(int64(len(buf)))
	for b.Loop() {
		for i := 0; i < len(buf); i += 4096 {
			c.Decrypt(buf[i:i+4096], buf[i:i+4096], uint64(i/512))
		}
	}
}

// BenchmarkAESBlockDecrypt is the CPU's single-block AES-256 decryption, the
// upper bound for any XTS decryption built on crypto/aes.
func BenchmarkAESBlockDecrypt(b *testing.B) {
	c, _ := aes.NewCipher(luksRandomBytes(32))
	buf := luksRandomBytes(luksChunk)
	b.SetBytes(int64(len(buf)))
	for b.Loop() {
		for i := 0; i < len(buf); i += 16 {
			c.Decrypt(buf[i:i+16], buf[i:i+16])
		}
	}
}

// BenchmarkDecryptTo is the whole memory-backend path, all workers, 64 MiB:
// ciphertext from memory, plaintext written into a memfd as the backend does.
func BenchmarkDecryptTo(b *testing.B) {
	const n = 64 << 20
	dev := &luksMemDevice{}
	pass := []byte("bench")
	if err := formatLUKS2(dev, bytes.NewReader(make([]byte, n)), n, pass, luksFormatOptions{kdf: "pbkdf2"}); err != nil {
		b.Fatal(err)
	}
	v, err := openLUKS(bytes.NewReader(dev.data), dev.size, luksTestLimits())
	if err != nil {
		b.Fatal(err)
	}
	key, err := v.unlock(pass)
	if err != nil {
		b.Fatal(err)
	}
	defer key.wipe()
	fd, err := unix.MemfdCreate("minirun-bench", unix.MFD_CLOEXEC)
	if err != nil {
		b.Fatal(err)
	}
	out := os.NewFile(uintptr(fd), "memfd")
	defer out.Close()
	b.SetBytes(n)
	for b.Loop() {
		if err := v.decryptTo(out, key, nil); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkEncryptPayload is formatLUKS2's payload stream, all workers.
func BenchmarkEncryptPayload(b *testing.B) {
	const n = 64 << 20
	c, _ := newDataCipher("aes-xts-plain64", luksRandomBytes(64), 4096)
	out := &luksMemDevice{data: make([]byte, n), size: n}
	src := make([]byte, n)
	first := make([]byte, 4096)
	b.SetBytes(n)
	for b.Loop() {
		if err := encryptPayload(out, 0, bytes.NewReader(src), n, c, nil, first); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkUnlock is the time to open one keyslot per KDF setting: the PEM
// mode (pbkdf2 1000), a small argon2id, and the build default (256 MiB, 4 lanes).
func BenchmarkUnlock(b *testing.B) {
	for _, tc := range []struct {
		name string
		opts luksFormatOptions
	}{
		{"pbkdf2-1000", luksFormatOptions{kdf: "pbkdf2"}},
		{"argon2id-32MiB-t4", luksFormatOptions{argonMemoryKiB: 32768, argonTime: 4}},
		{"argon2id-256MiB-t4-p4", luksFormatOptions{argonMemoryKiB: 262144, argonTime: 4}},
	} {
		b.Run(tc.name, func(b *testing.B) {
			dev := &luksMemDevice{}
			pass := []byte("bench")
			if err := formatLUKS2(dev, bytes.NewReader(make([]byte, 4096)), 4096, pass, tc.opts); err != nil {
				b.Fatal(err)
			}
			v, err := openLUKS(dev, dev.size, luksTestLimits())
			if err != nil {
				b.Fatal(err)
			}
			for b.Loop() {
				key, err := v.unlock(pass)
				if err != nil {
					b.Fatal(err)
				}
				key.wipe()
			}
		})
	}
}
