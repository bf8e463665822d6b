// luks_fuzz_test.go holds the LUKS fuzz targets of security.md §5: binary
// headers, JSON metadata, LUKS1 headers, AF merge and KDF caps. No KDF runs in
// a target; accepted parameters are checked against the caps independently.
package main

import (
	"bytes"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/binary"
	"hash"
	"runtime"
	"strings"
	"testing"
)

const luksFuzzDevSize = 32 << 20

// luksFuzzAllocLimit bounds what one input may allocate (security.md §5).
const luksFuzzAllocLimit = 16 << 20

// luksCheckAlloc runs f and fails if it allocated more than the fuzz limit.
func luksCheckAlloc(t *testing.T, f func()) {
	t.Helper()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	f()
	runtime.ReadMemStats(&after)
	if d := after.TotalAlloc - before.TotalAlloc; d > luksFuzzAllocLimit {
		t.Fatalf("allocated %d bytes for one input", d)
	}
}

// luksCheckTyped fails unless err is a classed minirun error of an expected class.
func luksCheckTyped(t *testing.T, err error) {
	t.Helper()
	if err == nil {
		return
	}
	switch classOf(err) {
	case eImage, ePolicy, eResource:
	default:
		t.Fatalf("error of class %s: %v", classOf(err), err)
	}
}

// luksStubKDFCaps is the fuzz targets' stand-in for running a KDF: it re-checks,
// independently of kdfLimits.check, that every slot unlock would try is
// inside the caps of spec §2.5.
func luksStubKDFCaps(t *testing.T, l kdfLimits, slots []*luksSlot) {
	t.Helper()
	if len(slots) == 0 || len(slots) > 8 {
		t.Fatalf("%d slots to try", len(slots))
	}
	var argon, pb uint64
	for _, s := range slots {
		k := s.kdf
		if len(k.salt) != 32 || s.digest == nil || len(s.digest.salt) != 32 {
			t.Fatalf("slot %d: salts %d/%v", s.id, len(k.salt), s.digest == nil)
		}
		if d := s.digest.iterations; d < 1 || d > l.maxPBKDF2Iterations {
			t.Fatalf("slot %d: digest iterations %d", s.id, d)
		}
		pb += s.digest.iterations
		switch k.kind {
		case "pbkdf2":
			if k.iterations < 1 || k.iterations > l.maxPBKDF2Iterations {
				t.Fatalf("slot %d: %d iterations", s.id, k.iterations)
			}
			pb += k.iterations
		case "argon2i", "argon2id":
			if k.time < 1 || k.cpus < 1 || k.cpus > 4 || k.memoryKiB < 32 || k.memoryKiB < 8*k.cpus ||
				k.memoryKiB > l.maxMemoryKiB || k.memoryKiB > 4<<20 || k.memoryKiB*k.time > 8<<20 {
				t.Fatalf("slot %d: argon2 t=%d m=%d p=%d", s.id, k.time, k.memoryKiB, k.cpus)
			}
			argon += k.memoryKiB * k.time
		default:
			t.Fatalf("slot %d: KDF %q", s.id, k.kind)
		}
	}
	if argon > 16<<20 || pb > 2*l.maxPBKDF2Iterations {
		t.Fatalf("summed cost argon2 %d, pbkdf2 %d", argon, pb)
	}
}

// luksCheckVolume asserts the geometry of an accepted volume.
func luksCheckVolume(t *testing.T, v *luksVolume, size int64) {
	t.Helper()
	if v.dataOffset <= 0 || v.dataOffset > size || v.dataLength < 0 || v.dataLength > size-v.dataOffset || v.dataLength%int64(v.sectorSize) != 0 {
		t.Fatalf("segment [%d, +%d) on a %d-byte device", v.dataOffset, v.dataLength, size)
	}
	for _, s := range v.slots {
		if s.stripes != luksStripes || s.keySize != v.keySize || s.areaOffset < luks1HeaderSize ||
			s.areaOffset+afAreaSize(s.keySize, s.stripes) > v.dataOffset || afAreaSize(s.keySize, s.stripes) > s.areaSize {
			t.Fatalf("slot %d: stripes %d key %d area [%d, +%d), data at %d", s.id, s.stripes, s.keySize, s.areaOffset, s.areaSize, v.dataOffset)
		}
		for _, o := range v.slots {
			if o != s && s.areaOffset < o.areaOffset+o.areaSize && o.areaOffset < s.areaOffset+s.areaSize {
				t.Fatalf("slots %d and %d overlap", s.id, o.id)
			}
		}
	}
	if _, err := newDataCipher(v.cipher, make([]byte, v.keySize), v.sectorSize); err != nil {
		t.Fatalf("accepted cipher %q with %d-byte key: %v", v.cipher, v.keySize, err)
	}
}

// luksFuzzFormatted is a valid minirun-formatted volume (seed material).
func luksFuzzFormatted(f *testing.F, opts luksFormatOptions) []byte {
	dev := &luksMemDevice{}
	if err := formatLUKS2(dev, bytes.NewReader([]byte("seed")), 4, []byte("seed"), opts); err != nil {
		f.Fatal(err)
	}
	return dev.data[:2*luksFormatHdrSize]
}

// luks2IndependentChecksum recomputes a header copy's checksum without luks.go.
func luks2IndependentChecksum(dev *luksMemDevice, off int64) bool {
	var head [4096]byte
	if n, _ := dev.ReadAt(head[:], off); n != len(head) {
		return false
	}
	hs := int64(binary.BigEndian.Uint64(head[8:]))
	if hs < 4096 || hs > 4<<20 || off+hs > dev.size {
		return false
	}
	alg, _, _ := bytes.Cut(head[72:104], []byte{0})
	var h hash.Hash
	switch string(alg) {
	case "sha1":
		h = sha1.New()
	case "sha256":
		h = sha256.New()
	case "sha512":
		h = sha512.New()
	default:
		return false
	}
	c := make([]byte, hs)
	dev.ReadAt(c, off)
	want := append([]byte(nil), c[448:448+h.Size()]...)
	clear(c[448:512])
	h.Write(c)
	return bytes.Equal(h.Sum(nil), want)
}

func FuzzLUKS2Binary(f *testing.F) {
	good := luksFuzzFormatted(f, luksFormatOptions{kdf: "pbkdf2"})
	f.Add(good)
	f.Add(luksFuzzFormatted(f, luksFormatOptions{argonMemoryKiB: 32768, argonTime: 4}))
	bad := append([]byte(nil), good...)
	clear(bad[:luksFormatHdrSize]) // primary gone, secondary intact
	f.Add(bad)
	bad = append([]byte(nil), good...)
	binary.BigEndian.PutUint64(bad[8:], 8<<20)
	f.Add(bad)
	f.Add(good[:5000])
	f.Add(luks1Header("aes", "xts-plain64", "sha256", 64, 4096))
	limits := luksTestLimits()
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) > 1<<20 {
			return
		}
		dev := &luksMemDevice{data: data, size: luksFuzzDevSize}
		var v *luksVolume
		var err error
		luksCheckAlloc(t, func() { v, err = openLUKS(dev, luksFuzzDevSize, limits) })
		luksCheckTyped(t, err)
		if err != nil {
			return
		}
		luksCheckVolume(t, v, luksFuzzDevSize)
		luksStubKDFCaps(t, limits, v.slots)
		if v.version == 2 {
			if !validLUKS2HeaderSize(v.meta.hdrSize) {
				t.Fatalf("accepted hdr_size %d", v.meta.hdrSize)
			}
			if !luks2IndependentChecksum(dev, 0) && !luks2IndependentChecksum(dev, v.meta.hdrSize) {
				t.Fatal("accepted a volume without a header copy whose checksum verifies")
			}
		}
	})
}

func FuzzLUKS2JSON(f *testing.F) {
	base := testLUKS2JSON(luks2BaseMeta(f))
	f.Add(base)
	f.Add(bytes.Replace(base, []byte(`"argon2id","time":4`), []byte(`"argon2i","time":1`), 1))
	f.Add(bytes.Replace(base, []byte(`{"type":"argon2id","time":4,"memory":32768,"cpus":4`), []byte(`{"type":"pbkdf2","hash":"sha512","iterations":1000`), 1))
	f.Add(bytes.Replace(base, []byte(`"tokens":{}`), []byte(`"tokens":{},"tokens":{}`), 1))
	f.Add(bytes.Replace(base, []byte(`{"keyslots"`), []byte(`{"Keyslots"`), 1))
	f.Add(bytes.Replace(base, []byte(`"stripes":4000`), []byte(`"stripes":3999`), 1))
	f.Add(bytes.Replace(base, []byte(`"memory":32768`), []byte(`"memory":4294967295`), 1))
	f.Add(bytes.Replace(base, []byte(`"size":"dynamic"`), []byte(`"size":"4096"`), 1))
	f.Add(bytes.Replace(base, []byte(`"keyslots_size":"1015808"`), []byte(`"keyslots_size":"1015808","flags":["allow-discards"],"requirements":{"mandatory":[]}`), 1))
	f.Add([]byte(`{"keyslots":{},"tokens":{},"segments":{},"digests":{},"config":{}}`))
	f.Add([]byte(`{"a":` + strings.Repeat("[", 100)))
	limits := luksTestLimits()
	f.Fuzz(func(t *testing.T, text []byte) {
		if len(text) > 70<<10 || bytes.IndexByte(text, 0) >= 0 {
			return
		}
		hs := int64(luksFormatHdrSize)
		for int64(len(text)) >= hs-luks2BinHeaderSize {
			hs *= 2
		}
		dev := testLUKS2Device(t, text, hs, luksFuzzDevSize)
		var v *luksVolume
		var err error
		luksCheckAlloc(t, func() { v, err = openLUKS(dev, luksFuzzDevSize, limits) })
		luksCheckTyped(t, err)
		if err != nil {
			return
		}
		luksCheckVolume(t, v, luksFuzzDevSize)
		luksStubKDFCaps(t, limits, v.slots)
		// Round trip through the test-only writer.
		again, err := parseLUKS2Metadata(testLUKS2JSON(v.meta), hs, luksFuzzDevSize)
		if err != nil {
			t.Fatalf("re-serialised metadata refused: %v\n%s", err, testLUKS2JSON(v.meta))
		}
		if !luks2MetaEqual(v.meta, again) {
			t.Fatalf("round trip changed the metadata:\n%s", testLUKS2JSON(v.meta))
		}
		// Duplicate and case-variant names of accepted text are refused.
		root, _ := parseLUKSJSON(text)
		name := root.names[0]
		i := bytes.IndexByte(text, '"')
		if !bytes.HasPrefix(text[i:], []byte(`"`+name+`"`)) {
			return // the name was written with escapes
		}
		dup := append(append(append([]byte(nil), text[:i]...), []byte(`"`+name+`":0,`)...), text[i:]...)
		if _, err := parseLUKS2Metadata(dup, hs, luksFuzzDevSize); err == nil {
			t.Fatalf("duplicate member %q accepted", name)
		}
		upper := append([]byte(nil), text...)
		copy(upper[i+1:], strings.ToUpper(name))
		if _, err := parseLUKS2Metadata(upper, hs, luksFuzzDevSize); err == nil {
			t.Fatalf("case variant of %q accepted", name)
		}
	})
}

// luks2MetaEqual compares metadata by its canonical serialisation.
func luks2MetaEqual(a, b *luks2Meta) bool {
	return bytes.Equal(testLUKS2JSON(a), testLUKS2JSON(b)) && a.segment == b.segment && a.hdrSize == b.hdrSize
}

func FuzzLUKS1Header(f *testing.F) {
	f.Add(luks1Header("aes", "xts-plain64", "sha256", 64, 4096), int64(8<<20))
	f.Add(luks1Header("aes", "xts-plain64", "sha1", 32, 2056), int64(2<<20))
	f.Add(luks1Header("aes", "cbc-essiv:sha256", "sha256", 32, 4096), int64(4<<20))
	f.Add(luks1Header("aes", "xts-plain64", "sha256", 1000, 4096), int64(8<<20))
	f.Add(luks1Header("cipher_null", "ecb", "sha256", 64, 4096), int64(8<<20))
	f.Add(luks1Header("aes", "xts-plain64", "sha256", 64, 0), int64(8<<20))
	limits := luksTestLimits()
	f.Fuzz(func(t *testing.T, hdr []byte, size int64) {
		if len(hdr) > 4096 || size < 0 || size > 1<<40 {
			return
		}
		dev := &luksMemDevice{data: hdr, size: size}
		var v *luksVolume
		var err error
		luksCheckAlloc(t, func() { v, err = openLUKS(dev, size, limits) })
		luksCheckTyped(t, err)
		if err != nil || v.version != 1 {
			return
		}
		luksCheckVolume(t, v, size)
		luksStubKDFCaps(t, limits, v.slots)
		switch {
		case v.cipher == "aes-xts-plain64" && (v.keySize == 32 || v.keySize == 64):
		case v.cipher == "aes-cbc-essiv:sha256" && (v.keySize == 16 || v.keySize == 24 || v.keySize == 32):
		default:
			t.Fatalf("accepted %s with a %d-byte key", v.cipher, v.keySize)
		}
	})
}

// luksFuzzRand is a deterministic byte stream for AF splits.
type luksFuzzRand struct{ x uint64 }

func (r *luksFuzzRand) Read(p []byte) (int, error) {
	for i := range p {
		r.x = r.x*6364136223846793005 + 1442695040888963407
		p[i] = byte(r.x >> 56)
	}
	return len(p), nil
}

func FuzzAFMerge(f *testing.F) {
	f.Add(64, 4000, uint8(1), make([]byte, 64*4000))
	f.Add(32, 2, uint8(0), []byte("0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"))
	f.Add(0, 1, uint8(2), []byte{})
	f.Add(-1, -1, uint8(9), []byte{1})
	f.Add(20, 4001, uint8(1), make([]byte, 10))
	hashes := []string{"sha1", "sha256", "sha512", "md5"}
	f.Fuzz(func(t *testing.T, keySize, stripes int, hashID uint8, material []byte) {
		if keySize > 1<<12 || keySize < -1<<12 {
			return
		}
		h := hashes[int(hashID)%len(hashes)]
		out := make([]byte, max(keySize, 0))
		err := afMerge(material, keySize, stripes, h, out)
		valid := h != "md5" && keySize >= 1 && keySize <= luks2MaxKeyBytes && stripes >= 1 && stripes <= luksStripes && len(material) >= keySize*stripes
		if valid != (err == nil) {
			t.Fatalf("afMerge(key %d, stripes %d, %s, %d bytes): %v", keySize, stripes, h, len(material), err)
		}
		if err != nil {
			luksCheckTyped(t, err)
			return
		}
		// merge(split(k)) == k, on a bounded number of stripes to stay fast.
		s := min(stripes, 64)
		key := make([]byte, keySize)
		copy(key, material)
		m := make([]byte, keySize*s)
		if err := afSplit(key, s, h, &luksFuzzRand{uint64(len(material))}, m); err != nil {
			t.Fatal(err)
		}
		if err := afMerge(m, keySize, s, h, out); err != nil || !bytes.Equal(out, key) {
			t.Fatalf("merge(split(k)) != k: %v", err)
		}
	})
}

func FuzzKDFParams(f *testing.F) {
	f.Add(uint8(2), uint8(1), uint64(0), uint64(4), uint64(32768), uint64(4), uint8(32), uint16(1024), uint32(10_000_000))
	f.Add(uint8(0), uint8(1), uint64(1<<31-1), uint64(0), uint64(0), uint64(0), uint8(32), uint16(1024), uint32(10_000_000))
	f.Add(uint8(1), uint8(0), uint64(0), uint64(1<<32-1), uint64(1<<32-1), uint64(1024), uint8(32), uint16(4096), uint32(10_000_000))
	f.Add(uint8(2), uint8(0), uint64(0), uint64(8), uint64(1<<20), uint64(4), uint8(16), uint16(1024), uint32(1))
	kinds := []string{"pbkdf2", "argon2i", "argon2id", "scrypt"}
	hashes := []string{"sha1", "sha256", "sha512", "whirlpool"}
	f.Fuzz(func(t *testing.T, kind, hashID uint8, iter, tm, mem, cpus uint64, saltLen uint8, maxMiB uint16, maxIter uint32) {
		l := newKDFLimits(int64(maxMiB), int64(maxIter))
		l.memAvailableKiB = 16 << 20
		p := kdfParams{kind: kinds[int(kind)%len(kinds)], hash: hashes[int(hashID)%len(hashes)], iterations: iter,
			time: tm, memoryKiB: mem, cpus: cpus, salt: make([]byte, saltLen)}
		d := &luksDigest{hash: "sha256", iterations: 1000, salt: make([]byte, 32)}
		err := l.check([]*luksSlot{{kdf: p, digest: d}})
		luksCheckTyped(t, err)
		if err == nil {
			if maxIter < 1000 {
				t.Fatalf("digest of 1000 iterations accepted under a cap of %d", maxIter)
			}
			luksStubKDFCaps(t, l, []*luksSlot{{kdf: p, digest: d}})
		}
	})
}
