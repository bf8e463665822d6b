// luks_format.go owns writing LUKS2 volumes for `minirun build --encrypt`: the
// 1 MiB layout of spec §3, one argon2id (passphrase) or pbkdf2 (PEM) keyslot,
// and the payload encrypted in 4096-byte sectors. A volume is re-read and
// unlocked by luks.go before formatting reports success.
package main

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/binary"
	"fmt"
	"io"
	"math"
	"os"
	"sync"
	"time"
)

// The fixed layout of a minirun-formatted volume (spec §3.1, §3.2).
const (
	luksFormatHdrSize      = 16384
	luksFormatAreaOffset   = 32768
	luksFormatAreaSize     = 258048 // 256000 AF bytes rounded up to 4096
	luksFormatKeyslotsSize = 1015808
	luksFormatDataOffset   = 1 << 20
	luksFormatKeySize      = 64
	luksFormatSectorSize   = 4096
	luksFormatDigestIter   = 1000
)

// luksFormatOptions chooses the keyslot KDF; zero values mean the spec defaults.
type luksFormatOptions struct {
	kdf              string    // "argon2id" (default, passphrase mode) or "pbkdf2" (PEM mode)
	argonTime        uint32    // 0: calibrated to about 1 s on this host, clamped to [4, 16]
	argonMemoryKiB   uint32    // 0: min(256 MiB, MemTotal/2)
	argonCPUs        uint8     // 0: 4 lanes
	pbkdf2Iterations uint32    // 0: 1000, cryptsetup's minimum (the PEM passphrase is 64 random bytes)
	rand             io.Reader // nil: crypto/rand
	progress         func(done, total int64)
}

// luksTarget is where a volume is written; it is read back to verify it.
type luksTarget interface {
	io.ReaderAt
	io.WriterAt
}

// luksFileSection is a luksTarget for a volume at offset off of f (a SIF partition).
type luksFileSection struct {
	f   *os.File
	off int64
}

func (s luksFileSection) ReadAt(p []byte, off int64) (int, error)  { return s.f.ReadAt(p, s.off+off) }
func (s luksFileSection) WriteAt(p []byte, off int64) (int, error) { return s.f.WriteAt(p, s.off+off) }
func (s luksFileSection) Sync() error                              { return s.f.Sync() }

// luks2FormattedSize is the volume (partition) size for a payload of n bytes.
func luks2FormattedSize(n int64) int64 {
	return luksFormatDataOffset + (n+luksFormatSectorSize-1)/luksFormatSectorSize*luksFormatSectorSize
}

// formatLUKS2 writes a LUKS2 volume holding the size bytes of plaintext,
// zero-padded to whole 4096-byte sectors, to w at offset 0, with one keyslot
// opened by passphrase. It fails if plaintext does not hold exactly size bytes.
func formatLUKS2(w luksTarget, plaintext io.Reader, size int64, passphrase []byte, opts luksFormatOptions) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = failf(eInternal, "format LUKS2 volume: internal fault: %v", p)
		}
	}()
	if size <= 0 || size > math.MaxInt64-luksFormatDataOffset-luksFormatSectorSize {
		return failf(eUsage, "format LUKS2 volume: payload of %d bytes", size)
	}
	if len(passphrase) == 0 || len(passphrase) > luksMaxPassphrase {
		return failf(eUsage, "format LUKS2 volume: the passphrase must be 1 to %d bytes", luksMaxPassphrase)
	}
	rnd := opts.rand
	if rnd == nil {
		rnd = rand.Reader
	}
	kdf, err := opts.keyslotKDF(rnd)
	if err != nil {
		return err
	}
	vk, err := newSecretBuf(luksFormatKeySize)
	if err != nil {
		return err
	}
	defer vk.wipe()
	if _, err := io.ReadFull(rnd, vk.bytes()); err != nil {
		return failf(eSystem, "random volume key: %w", err)
	}

	// 1. Zero the metadata areas, fill the keyslots area with random bytes.
	fill := make([]byte, luksFormatDataOffset)
	if _, err := io.ReadFull(rnd, fill[luksFormatAreaOffset:]); err != nil {
		return failf(eSystem, "random keyslots area: %w", err)
	}
	if _, err := w.WriteAt(fill, 0); err != nil {
		return failf(eSystem, "write LUKS2 keyslots area: %w", err)
	}

	// 2. The keyslot: dk = KDF(passphrase), AF-split vk, encrypt under dk.
	if err := writeFormatKeyslot(w, kdf, passphrase, vk.bytes(), rnd); err != nil {
		return err
	}

	// 3. The payload.
	c, err := newDataCipher("aes-xts-plain64", vk.bytes(), luksFormatSectorSize)
	if err != nil {
		return err
	}
	defer c.wipe()
	first := make([]byte, luksFormatSectorSize)
	if err := encryptPayload(w, luksFormatDataOffset, plaintext, size, c, opts.progress, first); err != nil {
		return err
	}

	// 4. Digest and both header copies, last.
	digestSalt := make([]byte, 32)
	if _, err := io.ReadFull(rnd, digestSalt); err != nil {
		return failf(eSystem, "random digest salt: %w", err)
	}
	digest := make([]byte, sha256.Size)
	pbkdf2SHA256(vk.bytes(), digestSalt, luksFormatDigestIter, digest)
	uuid, err := luksNewUUID(rnd)
	if err != nil {
		return err
	}
	text := luks2FormatJSON(kdf, digestSalt, digest)
	for i, secondary := range []bool{false, true} {
		salt := make([]byte, 64)
		if _, err := io.ReadFull(rnd, salt); err != nil {
			return failf(eSystem, "random header salt: %w", err)
		}
		hdr, err := luks2HeaderCopy(secondary, luksFormatHdrSize, 1, uuid, salt, text)
		if err != nil {
			return err
		}
		if _, err := w.WriteAt(hdr, int64(i)*luksFormatHdrSize); err != nil {
			return failf(eSystem, "write LUKS2 header: %w", err)
		}
	}
	if s, ok := w.(interface{ Sync() error }); ok {
		if err := s.Sync(); err != nil {
			return failf(eSystem, "sync LUKS2 volume: %w", err)
		}
	}

	// 5. Read it back with our own reader and unlock it once.
	return verifyFormatted(w, size, passphrase, kdf, vk.bytes(), first)
}

// keyslotKDF turns the options into validated keyslot KDF parameters with a fresh salt.
func (o luksFormatOptions) keyslotKDF(rnd io.Reader) (kdfParams, error) {
	p := kdfParams{salt: make([]byte, 32)}
	if _, err := io.ReadFull(rnd, p.salt); err != nil {
		return p, failf(eSystem, "random keyslot salt: %w", err)
	}
	switch o.kdf {
	case "", "argon2id":
		p.kind = "argon2id"
		p.cpus = uint64(o.argonCPUs)
		if p.cpus == 0 {
			p.cpus = 4
		}
		p.memoryKiB = uint64(o.argonMemoryKiB)
		if p.memoryKiB == 0 {
			p.memoryKiB = 256 << 10
			if total, err := luksMeminfoKiB("MemTotal"); err == nil && total/2 < p.memoryKiB {
				p.memoryKiB = max(total/2, 8*p.cpus)
			}
		}
		p.time = uint64(o.argonTime)
		if p.time == 0 && p.memoryKiB >= 8*p.cpus && p.cpus <= argon2MaxCPUs {
			p.time = uint64(calibrateArgon2(uint32(p.memoryKiB), uint8(p.cpus)))
		}
	case "pbkdf2":
		p.kind, p.hash, p.iterations = "pbkdf2", "sha256", uint64(o.pbkdf2Iterations)
		if p.iterations == 0 {
			p.iterations = luksFormatDigestIter
		}
	default:
		return p, failf(eUsage, "format LUKS2 volume: unknown KDF %q", o.kdf)
	}
	// What we write must open under minirun's default caps.
	def := defaultKDFLimits()
	def.memAvailableKiB = math.MaxUint64
	if err := def.checkKDF(p, "new keyslot"); err != nil {
		return p, failf(eUsage, "format LUKS2 volume: %v", err)
	}
	return p, nil
}

// calibrateArgon2 times one argon2id run at t=4 and scales t toward one
// second, clamped to [4, 16] (spec §3.1).
func calibrateArgon2(memKiB uint32, cpus uint8) uint32 {
	salt := make([]byte, 32)
	start := time.Now()
	var k [64]byte
	argon2Key(argon2id, []byte("minirun-calibration"), salt, 4, memKiB, cpus, k[:])
	elapsed := time.Since(start)
	t := int64(4)
	if elapsed > 0 {
		t = (4*int64(time.Second) + int64(elapsed)/2) / int64(elapsed)
	}
	return uint32(min(16, max(4, t)))
}

// writeFormatKeyslot writes keyslot 0's key material at 32768.
func writeFormatKeyslot(w io.WriterAt, kdf kdfParams, passphrase, vk []byte, rnd io.Reader) error {
	dk, err := newSecretBuf(luksFormatKeySize)
	if err != nil {
		return err
	}
	defer dk.wipe()
	if err := luksDeriveKey(kdf, passphrase, dk.bytes()); err != nil {
		return err
	}
	n := afAreaSize(luksFormatKeySize, luksStripes)
	material, err := newSecretBuf(int(n))
	if err != nil {
		return err
	}
	defer material.wipe()
	m := material.bytes()
	if err := afSplit(vk, luksStripes, "sha256", rnd, m); err != nil {
		return err
	}
	c, err := newDataCipher("aes-xts-plain64", dk.bytes(), luksSectorSize)
	if err != nil {
		return err
	}
	defer c.wipe()
	c.encrypt(m, 0)
	if _, err := w.WriteAt(m, luksFormatAreaOffset); err != nil {
		return failf(eSystem, "write LUKS2 keyslot: %w", err)
	}
	return nil
}

// encryptPayload streams size bytes from src, zero-padded to whole units,
// encrypts them with c and writes them to w at base. Chunks are encrypted and
// written by parallel workers (io.WriterAt allows disjoint parallel writes).
// first receives the first plaintext unit, for verification.
func encryptPayload(w io.WriterAt, base int64, src io.Reader, size int64, c *dataCipher, progress func(done, total int64), first []byte) error {
	unit := int64(c.unit)
	padded := (size + unit - 1) / unit * unit
	workers := luksWorkers()
	type job struct {
		buf []byte
		off int64
	}
	free := make(chan []byte, workers+1)
	for i := 0; i < workers+1; i++ {
		free <- make([]byte, luksChunk)
	}
	jobs := make(chan job)
	var (
		mu       sync.Mutex
		firstErr error
		wg       sync.WaitGroup
	)
	fail := func(err error) {
		mu.Lock()
		if firstErr == nil {
			firstErr = err
		}
		mu.Unlock()
	}
	failed := func() error {
		mu.Lock()
		defer mu.Unlock()
		return firstErr
	}
	for i := 0; i < workers; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range jobs { // keep draining after a failure so the reader never blocks
				func() {
					defer func() {
						if p := recover(); p != nil {
							fail(failf(eInternal, "encrypt payload: internal fault: %v", p))
						}
					}()
					if failed() != nil {
						return
					}
					c.encrypt(j.buf, uint64(j.off/unit))
					if _, err := w.WriteAt(j.buf, base+j.off); err != nil {
						fail(failf(eSystem, "write encrypted payload: %w", err))
					}
				}()
				free <- j.buf[:cap(j.buf)]
			}
		}()
	}
	for off := int64(0); off < padded && failed() == nil; {
		buf := <-free
		n := min(int64(luksChunk), padded-off)
		b := buf[:n]
		want := min(n, size-off)
		if _, err := io.ReadFull(src, b[:want]); err != nil {
			if err == io.ErrUnexpectedEOF || err == io.EOF {
				fail(failf(eUsage, "payload ends before its %d bytes", size))
			} else {
				fail(failf(eSystem, "read payload: %w", err))
			}
			free <- buf
			break
		}
		clear(b[want:])
		if off == 0 {
			copy(first, b)
		}
		jobs <- job{b, off}
		off += n
		if progress != nil {
			progress(off, padded)
		}
	}
	close(jobs)
	wg.Wait()
	for len(free) > 0 {
		clear(<-free)
	}
	if err := failed(); err != nil {
		return err
	}
	var one [1]byte
	if n, _ := io.ReadFull(src, one[:]); n != 0 {
		return failf(eUsage, "payload is longer than %d bytes", size)
	}
	return nil
}

// luks2FormatJSON is the metadata of spec §3.2, compact and in that order.
func luks2FormatJSON(kdf kdfParams, digestSalt, digest []byte) []byte {
	b64 := base64.StdEncoding.EncodeToString
	var k string
	if kdf.kind == "pbkdf2" {
		k = fmt.Sprintf(`{"type":"pbkdf2","hash":%q,"iterations":%d,"salt":%q}`, kdf.hash, kdf.iterations, b64(kdf.salt))
	} else {
		k = fmt.Sprintf(`{"type":%q,"time":%d,"memory":%d,"cpus":%d,"salt":%q}`, kdf.kind, kdf.time, kdf.memoryKiB, kdf.cpus, b64(kdf.salt))
	}
	return fmt.Appendf(nil, `{"keyslots":{"0":{"type":"luks2","key_size":%d,"af":{"type":"luks1","stripes":%d,"hash":"sha256"},`+
		`"area":{"type":"raw","offset":"%d","size":"%d","encryption":"aes-xts-plain64","key_size":%d},"kdf":%s}},`+
		`"tokens":{},"segments":{"0":{"type":"crypt","offset":"%d","size":"dynamic","iv_tweak":"0","encryption":"aes-xts-plain64","sector_size":%d}},`+
		`"digests":{"0":{"type":"pbkdf2","keyslots":["0"],"segments":["0"],"hash":"sha256","iterations":%d,"salt":%q,"digest":%q}},`+
		`"config":{"json_size":"%d","keyslots_size":"%d"}}`,
		luksFormatKeySize, luksStripes, luksFormatAreaOffset, luksFormatAreaSize, luksFormatKeySize, k,
		luksFormatDataOffset, luksFormatSectorSize, luksFormatDigestIter, b64(digestSalt), b64(digest),
		luksFormatHdrSize-luks2BinHeaderSize, luksFormatKeyslotsSize)
}

// luks2HeaderCopy builds one header copy of hdrSize bytes (binary header, JSON
// text, zero tail) with a sha256 checksum: the primary at 0 or the secondary
// at hdrSize.
func luks2HeaderCopy(secondary bool, hdrSize int64, seqid uint64, uuid string, salt, text []byte) ([]byte, error) {
	if !validLUKS2HeaderSize(hdrSize) || int64(len(text)) >= hdrSize-luks2BinHeaderSize || len(uuid) >= 40 || len(salt) != 64 {
		return nil, failf(eInternal, "LUKS2 header copy: bad parameters")
	}
	b := make([]byte, hdrSize)
	magic, off := luksPrimaryMagic, uint64(0)
	if secondary {
		magic, off = luks2SecondaryMagic, uint64(hdrSize)
	}
	copy(b, magic)
	binary.BigEndian.PutUint16(b[6:], 2)
	binary.BigEndian.PutUint64(b[8:], uint64(hdrSize))
	binary.BigEndian.PutUint64(b[16:], seqid)
	copy(b[72:104], "sha256")
	copy(b[104:168], salt)
	copy(b[168:208], uuid)
	binary.BigEndian.PutUint64(b[256:], off)
	copy(b[luks2BinHeaderSize:], text)
	sum := sha256.Sum256(b)
	copy(b[448:512], sum[:])
	return b, nil
}

// luksNewUUID returns a random lowercase RFC 4122 version-4 UUID.
func luksNewUUID(rnd io.Reader) (string, error) {
	var u [16]byte
	if _, err := io.ReadFull(rnd, u[:]); err != nil {
		return "", failf(eSystem, "random UUID: %w", err)
	}
	u[6] = u[6]&0x0f | 0x40
	u[8] = u[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", u[0:4], u[4:6], u[6:8], u[8:10], u[10:16]), nil
}

// verifyFormatted re-opens the written volume with the normal reader, unlocks
// it and checks the key and the first payload sector.
func verifyFormatted(w luksTarget, size int64, passphrase []byte, kdf kdfParams, vk, first []byte) error {
	limits := newKDFLimits(max(1024, int64(kdf.memoryKiB/1024)+1), max(10_000_000, int64(kdf.iterations)))
	limits.memAvailableKiB = math.MaxUint64 // the KDF has already run once here
	v, err := openLUKS(w, luks2FormattedSize(size), limits)
	if err != nil {
		return failf(eInternal, "re-read the new LUKS2 volume: %w", err)
	}
	key, err := v.unlock(passphrase)
	if err != nil {
		return failf(eInternal, "unlock the new LUKS2 volume: %w", err)
	}
	defer key.wipe()
	if subtle.ConstantTimeCompare(key.bytes(), vk) != 1 {
		return failf(eInternal, "the new LUKS2 volume yields a different key")
	}
	c, err := v.dataCipherFor(key)
	if err != nil {
		return err
	}
	defer c.wipe()
	got := make([]byte, luksFormatSectorSize)
	if err := v.readPlainAt(c, got, 0); err != nil {
		return err
	}
	if !bytes.Equal(got, first) {
		return failf(eInternal, "the new LUKS2 volume does not decrypt to its payload")
	}
	return nil
}
