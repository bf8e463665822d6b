// luks.go owns reading LUKS2 and LUKS1 volumes: both binary header copies,
// strict JSON metadata, KDF caps checked before any derivation, keyslot unlock
// and data-sector decryption (spec/images-and-encryption.md §2, security.md R9/R10).
package main

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/subtle"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"

	"golang.org/x/sys/unix"
)

// Fixed format numbers and the hostile-header limits of spec §2.5.
const (
	luks2BinHeaderSize  = 4096
	luks1HeaderSize     = 592
	luksSectorSize      = 512
	luksStripes         = 4000
	luksMaxPassphrase   = 512
	luksMaxTried        = 8        // keyslots tried per unlock
	luks2MaxJSONText    = 64 << 10 // bytes before the NUL
	luks2MaxDepth       = 8
	luks2MaxMembers     = 64 // per JSON object (keyslots, tokens, segments: 32)
	luks2MaxElements    = 64 // per JSON array
	luks2MaxJSONTokens  = 16384
	luks2MaxKeyslots    = 32
	luks2MaxSegments    = 32
	luks2MaxTokenObjs   = 32
	luks2MaxDigests     = 8
	luks2MaxKeyslotsSz  = 128 << 20
	luks2MaxKeyBytes    = 512     // unbound keyslots may hold any key up to this
	argon2MaxCost       = 8 << 20 // KiB·passes: 1 GiB × 8, fixed (R10)
	argon2MaxCPUs       = 4
	kdfHardMaxMemoryMiB = 4096 // cryptsetup's own ceiling
)

var (
	luksPrimaryMagic    = []byte("LUKS\xba\xbe")
	luks2SecondaryMagic = []byte("SKUL\xba\xbe")
	// luks2HeaderSizes are the nine allowed hdr_size values (header + JSON area).
	luks2HeaderSizes = [...]int64{16 << 10, 32 << 10, 64 << 10, 128 << 10, 256 << 10, 512 << 10, 1 << 20, 2 << 20, 4 << 20}
)

// kdfLimits are the admin caps of security.md R10, checked before any KDF runs.
type kdfLimits struct {
	maxMemoryKiB        uint64 // kdf_max_memory_mib × 1024
	maxPBKDF2Iterations uint64 // kdf_max_pbkdf2_iterations
	memAvailableKiB     uint64 // 0: read MemAvailable from /proc/meminfo when needed
}

// newKDFLimits makes limits from the minirun.toml values; memory is clamped to
// cryptsetup's own 4 GiB ceiling.
func newKDFLimits(maxMemoryMiB, maxPBKDF2Iterations int64) kdfLimits {
	if maxMemoryMiB < 0 {
		maxMemoryMiB = 0
	}
	if maxMemoryMiB > kdfHardMaxMemoryMiB {
		maxMemoryMiB = kdfHardMaxMemoryMiB
	}
	if maxPBKDF2Iterations < 0 {
		maxPBKDF2Iterations = 0
	}
	return kdfLimits{maxMemoryKiB: uint64(maxMemoryMiB) * 1024, maxPBKDF2Iterations: uint64(maxPBKDF2Iterations)}
}

// defaultKDFLimits are the minirun.toml defaults: enough for cryptsetup's
// default 1 GiB argon2id volumes.
func defaultKDFLimits() kdfLimits { return newKDFLimits(1024, 10_000_000) }

// kdfParams describes one password-based derivation (keyslot or digest).
type kdfParams struct {
	kind       string // "pbkdf2", "argon2i" or "argon2id"
	hash       string // pbkdf2 only
	iterations uint64 // pbkdf2 only
	time       uint64 // argon2 passes
	memoryKiB  uint64 // argon2 memory
	cpus       uint64 // argon2 lanes
	salt       []byte
}

// luksDigest checks a candidate volume key (LUKS2 digest or LUKS1 mkDigest).
type luksDigest struct {
	id         int
	hash       string
	iterations uint64
	salt       []byte
	digest     []byte
	keyslots   []int
	segments   []int
}

// luksSlot is one keyslot as parsed (LUKS2) or converted (LUKS1).
type luksSlot struct {
	id         int
	priority   int // LUKS2: 0 only when named, 1 normal, 2 first
	keySize    int // volume key bytes
	afHash     string
	stripes    int
	areaOffset int64
	areaSize   int64
	areaCipher string // cipher of the key material
	areaKey    int    // KDF output bytes (area key size)
	kdf        kdfParams
	digest     *luksDigest
}

// luks2Config is the LUKS2 "config" object.
type luks2Config struct {
	jsonSize     int64
	keyslotsSize int64
	flags        []string
}

// luks2Segment is the single crypt segment minirun accepts.
type luks2Segment struct {
	offset     int64
	size       int64 // -1 for "dynamic"
	ivTweak    int64
	encryption string
	sectorSize int
}

// luks2Meta is everything the JSON area said, kept for tests and round trips.
type luks2Meta struct {
	hdrSize  int64
	keyslots []*luksSlot // by id
	segment  luks2Segment
	digests  []*luksDigest // by id
	tokens   []int
	config   luks2Config
}

// luksVolume is an opened, validated LUKS volume; no KDF has run yet.
type luksVolume struct {
	r          io.ReaderAt
	size       int64 // device (partition) size
	version    int   // 1 or 2
	uuid       string
	cipher     string // dm-crypt cipher: "aes-xts-plain64" or "aes-cbc-essiv:sha256"
	keySize    int    // volume key bytes
	dataOffset int64  // bytes from the device start
	dataLength int64  // plaintext bytes, a multiple of sectorSize
	sectorSize int
	seqid      uint64      // LUKS2 header copy in use
	slots      []*luksSlot // candidates, in the order they are tried
	meta       *luks2Meta  // LUKS2 only
	limits     kdfLimits
}

// volumeKey is an unlocked volume key in locked memory outside the Go heap.
type volumeKey struct {
	buf  *secretBuf
	slot int // keyslot that opened it, -1 when made by formatLUKS2
}

func (k *volumeKey) bytes() []byte { return k.buf.bytes() }

// wipe zeroes and releases the key; safe to call twice.
func (k *volumeKey) wipe() {
	if k != nil {
		k.buf.wipe()
	}
}

// secretBuf holds key material in an anonymous mapping that is mlock'ed (never
// swapped), MADV_DONTDUMP (never in a core) and zeroed on wipe (R10).
type secretBuf struct {
	mem []byte
	n   int
}

func newSecretBuf(n int) (*secretBuf, error) {
	if n < 0 || n > 64<<20 {
		return nil, failf(eInternal, "secret buffer of %d bytes", n)
	}
	page := os.Getpagesize()
	size := (n + page - 1) / page * page
	if size == 0 {
		size = page
	}
	mem, err := unix.Mmap(-1, 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		return nil, failf(eResource, "map memory for key material: %w", err)
	}
	if err := unix.Madvise(mem, unix.MADV_DONTDUMP); err != nil {
		unix.Munmap(mem)
		return nil, failf(eSystem, "exclude key material from core dumps: %w", err)
	}
	_ = unix.Madvise(mem, unix.MADV_WIPEONFORK) // best effort (Linux ≥ 4.14)
	if err := unix.Mlock(mem); err != nil {
		unix.Munmap(mem)
		return nil, failf(eResource, "lock key material in memory (RLIMIT_MEMLOCK?): %w", err)
	}
	return &secretBuf{mem: mem, n: n}, nil
}

func (s *secretBuf) bytes() []byte {
	if s == nil || s.mem == nil {
		return nil
	}
	return s.mem[:s.n]
}

func (s *secretBuf) wipe() {
	if s == nil || s.mem == nil {
		return
	}
	clear(s.mem)
	unix.Munlock(s.mem)
	unix.Munmap(s.mem)
	s.mem = nil
}

// luksHash returns a constructor and size for the hashes LUKS may name.
func luksHash(name string) (func() hash.Hash, int, bool) {
	switch name {
	case "sha1":
		return sha1.New, sha1.Size, true
	case "sha256":
		return sha256.New, sha256.Size, true
	case "sha512":
		return sha512.New, sha512.Size, true
	}
	return nil, 0, false
}

// luksReadAt reads exactly len(buf) bytes at off; a short read is E_IMAGE.
func luksReadAt(r io.ReaderAt, buf []byte, off int64, what string) error {
	n, err := r.ReadAt(buf, off)
	if n == len(buf) {
		return nil
	}
	if err == nil || err == io.EOF {
		return failf(eImage, "%s: truncated at byte %d", what, off+int64(n))
	}
	return failf(eSystem, "read %s: %w", what, err)
}

// openLUKS validates a LUKS2 or LUKS1 volume of size bytes read through r.
// Every structural rule and every KDF cap is checked here, before anything is
// derived, so unlock only ever runs KDFs that fit the limits.
func openLUKS(r io.ReaderAt, size int64, limits kdfLimits) (v *luksVolume, err error) {
	defer func() {
		if p := recover(); p != nil {
			v, err = nil, failf(eImage, "LUKS header: malformed (parser fault: %v)", p)
		}
	}()
	if size < luks1HeaderSize {
		return nil, failf(eImage, "LUKS header: device of %d bytes is too small", size)
	}
	var head [luks1HeaderSize]byte
	if err := luksReadAt(r, head[:], 0, "LUKS header"); err != nil {
		return nil, err
	}
	if bytes.Equal(head[:6], luksPrimaryMagic) {
		switch ver := binary.BigEndian.Uint16(head[6:8]); ver {
		case 1:
			v, err = parseLUKS1(head[:], size)
		case 2:
			v, err = openLUKS2(r, size, true)
		default:
			return nil, failf(eImage, "LUKS header: unsupported version %d", ver)
		}
	} else {
		// A damaged primary LUKS2 header: the secondary copy may still be good.
		v, err = openLUKS2(r, size, false)
	}
	if err != nil {
		return nil, err
	}
	v.r, v.size, v.limits = r, size, limits
	if err := limits.check(v.slots); err != nil {
		return nil, err
	}
	return v, nil
}

// --- LUKS2 binary headers -------------------------------------------------

// luks2Copy is one validated binary header copy and its JSON text.
type luks2Copy struct {
	offset  int64
	hdrSize int64
	seqid   uint64
	uuid    string
	json    []byte // text before the NUL
}

// luksCString returns the NUL-terminated string in field; ok is false without a NUL.
func luksCString(field []byte) (string, bool) {
	i := bytes.IndexByte(field, 0)
	if i < 0 {
		return "", false
	}
	return string(field[:i]), true
}

func luksAllZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

func validLUKS2HeaderSize(n int64) bool {
	for _, s := range luks2HeaderSizes {
		if n == s {
			return true
		}
	}
	return false
}

// readLUKS2Copy validates the header copy at off: fields, then the checksum over
// the header and the whole JSON area, streamed so nothing is sized by the header
// beyond the fixed 64 KiB text limit.
func readLUKS2Copy(r io.ReaderAt, devSize, off int64, magic []byte) (*luks2Copy, error) {
	name := "primary"
	if off != 0 {
		name = fmt.Sprintf("secondary (at %d)", off)
	}
	if off > devSize-luks2BinHeaderSize {
		return nil, failf(eImage, "LUKS2 %s header: beyond the end of the device", name)
	}
	var h [luks2BinHeaderSize]byte
	if err := luksReadAt(r, h[:], off, "LUKS2 "+name+" header"); err != nil {
		return nil, err
	}
	if !bytes.Equal(h[:6], magic) {
		return nil, failf(eImage, "LUKS2 %s header: bad magic", name)
	}
	if v := binary.BigEndian.Uint16(h[6:8]); v != 2 {
		return nil, failf(eImage, "LUKS2 %s header: version %d, want 2", name, v)
	}
	hdrSize := binary.BigEndian.Uint64(h[8:16])
	if hdrSize > 4<<20 || !validLUKS2HeaderSize(int64(hdrSize)) {
		return nil, failf(eImage, "LUKS2 %s header: hdr_size %d is not an allowed size", name, hdrSize)
	}
	c := &luks2Copy{offset: off, hdrSize: int64(hdrSize), seqid: binary.BigEndian.Uint64(h[16:24])}
	if off != 0 && c.hdrSize != off {
		return nil, failf(eImage, "LUKS2 %s header: hdr_size %d does not match its offset", name, hdrSize)
	}
	if hdrOff := binary.BigEndian.Uint64(h[256:264]); hdrOff != uint64(off) {
		return nil, failf(eImage, "LUKS2 %s header: hdr_offset %d, read at %d", name, hdrOff, off)
	}
	if c.hdrSize > devSize-off {
		return nil, failf(eImage, "LUKS2 %s header: hdr_size %d beyond the end of the device", name, hdrSize)
	}
	_, okLabel := luksCString(h[24:72])
	alg, okAlg := luksCString(h[72:104])
	uuid, okUUID := luksCString(h[168:208])
	_, okSub := luksCString(h[208:256])
	if !okLabel || !okAlg || !okUUID || !okSub {
		return nil, failf(eImage, "LUKS2 %s header: unterminated text field", name)
	}
	c.uuid = uuid
	newHash, hashLen, ok := luksHash(alg)
	if !ok {
		return nil, failf(eImage, "LUKS2 %s header: unsupported checksum algorithm %q", name, alg)
	}
	if !luksAllZero(h[264:448]) || !luksAllZero(h[512:]) {
		return nil, failf(eImage, "LUKS2 %s header: non-zero padding", name)
	}
	var want [64]byte
	copy(want[:], h[448:512])
	clear(h[448:512])
	sum := newHash()
	sum.Write(h[:])

	// Stream the JSON area: text up to the first NUL, zeros after it.
	areaLen := c.hdrSize - luks2BinHeaderSize
	chunk := make([]byte, min(areaLen, 64<<10))
	var text []byte
	inText := true
	for done := int64(0); done < areaLen; {
		n := min(int64(len(chunk)), areaLen-done)
		b := chunk[:n]
		if err := luksReadAt(r, b, off+luks2BinHeaderSize+done, "LUKS2 "+name+" JSON area"); err != nil {
			return nil, err
		}
		sum.Write(b)
		if done == 0 && b[0] != '{' {
			return nil, failf(eImage, "LUKS2 %s header: JSON area does not start with '{'", name)
		}
		if inText {
			end := bytes.IndexByte(b, 0)
			if end < 0 {
				end = len(b)
			}
			if len(text)+end > luks2MaxJSONText {
				return nil, failf(eImage, "LUKS2 %s header: JSON text longer than %d bytes", name, luks2MaxJSONText)
			}
			text = append(text, b[:end]...)
			if end < len(b) {
				inText = false
				b = b[end:]
			} else {
				b = nil
			}
		}
		if !inText && !luksAllZero(b) {
			return nil, failf(eImage, "LUKS2 %s header: bytes after the JSON text are not zero", name)
		}
		done += n
	}
	if inText {
		return nil, failf(eImage, "LUKS2 %s header: JSON text has no NUL terminator", name)
	}
	if subtle.ConstantTimeCompare(sum.Sum(nil)[:hashLen], want[:hashLen]) != 1 {
		return nil, failf(eImage, "LUKS2 %s header: checksum mismatch", name)
	}
	c.json = text
	return c, nil
}

// readLUKS2Headers reads both copies and picks the one to use: higher seqid
// wins, the primary wins ties; a bad primary makes us probe every allowed
// offset for the secondary. minirun never repairs or writes back.
func readLUKS2Headers(r io.ReaderAt, devSize int64, primaryMagic bool) (*luks2Copy, error) {
	primary, perr := readLUKS2Copy(r, devSize, 0, luksPrimaryMagic)
	var secondary *luks2Copy
	var serr error
	if perr == nil {
		secondary, serr = readLUKS2Copy(r, devSize, primary.hdrSize, luks2SecondaryMagic)
	} else {
		for _, off := range luks2HeaderSizes {
			secondary, serr = readLUKS2Copy(r, devSize, off, luks2SecondaryMagic)
			if serr == nil || classOf(serr) == eSystem {
				break
			}
		}
		if serr != nil && classOf(serr) != eSystem {
			if !primaryMagic {
				return nil, failf(eImage, "not a LUKS volume (no LUKS magic)")
			}
			serr = failf(eImage, "no valid secondary copy found")
		}
	}
	switch {
	case perr != nil && serr != nil:
		if classOf(perr) == eSystem {
			return nil, perr
		}
		if classOf(serr) == eSystem {
			return nil, serr
		}
		return nil, failf(eImage, "both LUKS2 header copies are invalid: %v; %v", perr, serr)
	case perr != nil:
		return secondary, nil
	case serr != nil:
		return primary, nil
	}
	if primary.uuid != secondary.uuid {
		return nil, failf(eImage, "LUKS2 header copies disagree (uuid %q vs %q)", primary.uuid, secondary.uuid)
	}
	if secondary.seqid > primary.seqid {
		return secondary, nil
	}
	if secondary.seqid == primary.seqid && !bytes.Equal(primary.json, secondary.json) {
		return nil, failf(eImage, "LUKS2 header copies disagree (same seqid %d, different metadata)", primary.seqid)
	}
	return primary, nil
}

func openLUKS2(r io.ReaderAt, devSize int64, primaryMagic bool) (*luksVolume, error) {
	c, err := readLUKS2Headers(r, devSize, primaryMagic)
	if err != nil {
		return nil, err
	}
	meta, err := parseLUKS2Metadata(c.json, c.hdrSize, devSize)
	if err != nil {
		return nil, err
	}
	v := &luksVolume{
		version:    2,
		uuid:       c.uuid,
		seqid:      c.seqid,
		cipher:     meta.segment.encryption,
		dataOffset: meta.segment.offset,
		sectorSize: meta.segment.sectorSize,
		meta:       meta,
	}
	length := meta.segment.size
	if length < 0 { // dynamic: up to the end of the device, whole sectors
		length = (devSize - meta.segment.offset) / int64(v.sectorSize) * int64(v.sectorSize)
	}
	v.dataLength = length
	if v.slots, err = luks2Candidates(meta); err != nil {
		return nil, err
	}
	v.keySize = v.slots[0].keySize
	return v, nil
}

// luks2Candidates lists the keyslots to try (spec §2.4 step 1): luks2 slots of
// the digest bound to segment 0, priority 2 before 1, then by id, priority 0
// skipped, at most eight.
func luks2Candidates(m *luks2Meta) ([]*luksSlot, error) {
	var d *luksDigest
	for _, dg := range m.digests {
		for _, s := range dg.segments {
			if s == 0 {
				if d != nil {
					return nil, failf(eImage, "LUKS2 metadata: two digests bind segment 0")
				}
				d = dg
			}
		}
	}
	if d == nil {
		return nil, failf(eImage, "LUKS2 metadata: no digest is bound to the data segment")
	}
	var c []*luksSlot
	for _, s := range m.keyslots {
		if s.digest == d && s.priority != 0 {
			c = append(c, s)
		}
	}
	if len(c) == 0 {
		return nil, failf(eImage, "LUKS2 metadata: no keyslot can open the data segment")
	}
	sort.SliceStable(c, func(i, j int) bool {
		if c[i].priority != c[j].priority {
			return c[i].priority > c[j].priority
		}
		return c[i].id < c[j].id
	})
	for _, s := range c {
		if s.keySize != 32 && s.keySize != 48 && s.keySize != 64 {
			return nil, failf(eImage, "LUKS2 metadata: keyslot %d: key_size %d does not fit aes-xts-plain64", s.id, s.keySize)
		}
		if s.keySize != c[0].keySize {
			return nil, failf(eImage, "LUKS2 metadata: keyslots %d and %d disagree on the volume key size", c[0].id, s.id)
		}
	}
	if len(c) > luksMaxTried {
		c = c[:luksMaxTried]
	}
	return c, nil
}

// --- strict JSON ------------------------------------------------------------

type luksJSONKind uint8

const (
	luksJObject luksJSONKind = iota + 1
	luksJArray
	luksJString
	luksJNumber
	luksJBool
	luksJNull
)

// luksJSON is a parsed JSON value; objects keep member order and have unique names.
type luksJSON struct {
	kind  luksJSONKind
	text  string      // string value or number literal
	names []string    // object member names
	elems []*luksJSON // object member values or array elements
}

func (v *luksJSON) member(name string) *luksJSON {
	for i, n := range v.names {
		if n == name {
			return v.elems[i]
		}
	}
	return nil
}

// parseLUKSJSON walks text with json.Decoder.Token: exact-case names,
// duplicates refused, nesting, member, element and token counts bounded.
func parseLUKSJSON(text []byte) (*luksJSON, error) {
	if len(text) > luks2MaxJSONText {
		return nil, fmt.Errorf("JSON text longer than %d bytes", luks2MaxJSONText)
	}
	if len(text) == 0 || text[0] != '{' {
		return nil, errors.New("JSON text is not an object")
	}
	dec := json.NewDecoder(bytes.NewReader(text))
	dec.UseNumber()
	type frame struct {
		v       *luksJSON
		key     string
		haveKey bool
	}
	var stack []*frame
	var root *luksJSON
	for count := 0; ; count++ {
		tok, err := dec.Token()
		if err == io.EOF && root != nil && len(stack) == 0 {
			return root, nil
		}
		if err != nil {
			return nil, fmt.Errorf("malformed JSON: %v", err)
		}
		if root != nil && len(stack) == 0 {
			return nil, errors.New("data after the JSON object")
		}
		if count >= luks2MaxJSONTokens {
			return nil, fmt.Errorf("more than %d JSON tokens", luks2MaxJSONTokens)
		}
		var val *luksJSON
		if n := len(stack); n > 0 && stack[n-1].v.kind == luksJObject && !stack[n-1].haveKey {
			top := stack[n-1]
			if d, ok := tok.(json.Delim); ok && d == '}' {
				stack = stack[:n-1]
				val = top.v
			} else {
				key, ok := tok.(string)
				if !ok {
					return nil, errors.New("malformed JSON: object member without a name")
				}
				if top.v.member(key) != nil {
					return nil, fmt.Errorf("duplicate JSON member %q", key)
				}
				if len(top.v.names) >= luks2MaxMembers {
					return nil, fmt.Errorf("JSON object with more than %d members", luks2MaxMembers)
				}
				top.key, top.haveKey = key, true
				continue
			}
		} else {
			switch t := tok.(type) {
			case json.Delim:
				switch t {
				case '{', '[':
					if len(stack) >= luks2MaxDepth {
						return nil, fmt.Errorf("JSON nested deeper than %d", luks2MaxDepth)
					}
					kind := luksJObject
					if t == '[' {
						kind = luksJArray
					}
					if len(stack) == 0 && kind != luksJObject {
						return nil, errors.New("JSON text is not an object")
					}
					stack = append(stack, &frame{v: &luksJSON{kind: kind}})
					continue
				case ']':
					val = stack[len(stack)-1].v
					stack = stack[:len(stack)-1]
				default:
					return nil, errors.New("malformed JSON: unexpected '}'")
				}
			case string:
				val = &luksJSON{kind: luksJString, text: t}
			case json.Number:
				val = &luksJSON{kind: luksJNumber, text: string(t)}
			case bool:
				val = &luksJSON{kind: luksJBool, text: strconv.FormatBool(t)}
			case nil:
				val = &luksJSON{kind: luksJNull}
			default:
				return nil, errors.New("malformed JSON: unexpected token")
			}
		}
		if len(stack) == 0 {
			if val.kind != luksJObject {
				return nil, errors.New("JSON text is not an object")
			}
			root = val
			continue
		}
		parent := stack[len(stack)-1]
		if parent.v.kind == luksJObject {
			parent.v.names = append(parent.v.names, parent.key)
			parent.haveKey = false
		} else if len(parent.v.elems) >= luks2MaxElements {
			return nil, fmt.Errorf("JSON array with more than %d elements", luks2MaxElements)
		}
		parent.v.elems = append(parent.v.elems, val)
	}
}

// luksJSONPath names a place in the metadata for error messages.
func luksJSONPath(parent, name string) string {
	if parent == "" {
		return name
	}
	return parent + "." + name
}

func luks2MetaErr(path, format string, args ...any) error {
	return failf(eImage, "LUKS2 metadata: %s: %s", path, fmt.Sprintf(format, args...))
}

// luksJSONFields checks that v is an object with every required member and no
// member outside required and optional.
func luksJSONFields(v *luksJSON, path string, required, optional []string) error {
	if v == nil || v.kind != luksJObject {
		return luks2MetaErr(path, "not an object")
	}
	for _, n := range v.names {
		known := false
		for _, k := range required {
			known = known || n == k
		}
		for _, k := range optional {
			known = known || n == k
		}
		if !known {
			return luks2MetaErr(path, "unknown member %q", n)
		}
	}
	for _, k := range required {
		if v.member(k) == nil {
			return luks2MetaErr(path, "missing member %q", k)
		}
	}
	return nil
}

func luksJSONString(v *luksJSON, path, name string) (string, error) {
	m := v.member(name)
	if m == nil || m.kind != luksJString {
		return "", luks2MetaErr(luksJSONPath(path, name), "not a string")
	}
	return m.text, nil
}

// luksJSONInt reads a small JSON integer member (no sign, fraction or exponent) up to max.
func luksJSONInt(v *luksJSON, path, name string, max uint64) (uint64, error) {
	m := v.member(name)
	if m == nil || m.kind != luksJNumber {
		return 0, luks2MetaErr(luksJSONPath(path, name), "not an integer")
	}
	n, ok := luksDecimal(m.text, max)
	if !ok {
		return 0, luks2MetaErr(luksJSONPath(path, name), "%q is not an integer in 0..%d", m.text, max)
	}
	return n, nil
}

// luksJSONUint64 reads a 64-bit value, which LUKS2 stores as a decimal string.
func luksJSONUint64(v *luksJSON, path, name string) (int64, error) {
	m := v.member(name)
	if m == nil || m.kind != luksJString {
		return 0, luks2MetaErr(luksJSONPath(path, name), "not a decimal string")
	}
	n, ok := luksDecimal(m.text, 1<<63-1)
	if !ok {
		return 0, luks2MetaErr(luksJSONPath(path, name), "%q is not a decimal number in int64 range", m.text)
	}
	return int64(n), nil
}

// luksDecimal accepts "0" or [1-9][0-9]{0,18} no larger than max.
func luksDecimal(s string, max uint64) (uint64, bool) {
	if s == "" || len(s) > 19 || (s[0] == '0' && len(s) > 1) {
		return 0, false
	}
	var n uint64
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, false
		}
		n = n*10 + uint64(s[i]-'0') // 19 digits cannot overflow uint64
	}
	return n, n <= max
}

// luksJSONID parses an object id or an id reference: canonical decimal < 1000.
func luksJSONID(s string) (int, bool) {
	n, ok := luksDecimal(s, 999)
	return int(n), ok
}

// luksJSONBase64 decodes a padded Base64 member of exactly one of the given lengths.
func luksJSONBase64(v *luksJSON, path, name string, lengths ...int) ([]byte, error) {
	s, err := luksJSONString(v, path, name)
	if err != nil {
		return nil, err
	}
	if len(s) > 128 {
		return nil, luks2MetaErr(luksJSONPath(path, name), "too long")
	}
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		return nil, luks2MetaErr(luksJSONPath(path, name), "bad Base64")
	}
	for _, n := range lengths {
		if len(b) == n {
			return b, nil
		}
	}
	return nil, luks2MetaErr(luksJSONPath(path, name), "%d bytes, want %v", len(b), lengths)
}

// luksJSONIDList reads an array of id strings without repeats.
func luksJSONIDList(v *luksJSON, path, name string) ([]int, error) {
	m := v.member(name)
	p := luksJSONPath(path, name)
	if m == nil || m.kind != luksJArray {
		return nil, luks2MetaErr(p, "not an array")
	}
	ids := make([]int, 0, len(m.elems))
	for _, e := range m.elems {
		id, ok := luksJSONID(e.text)
		if e.kind != luksJString || !ok {
			return nil, luks2MetaErr(p, "bad id %q", e.text)
		}
		for _, x := range ids {
			if x == id {
				return nil, luks2MetaErr(p, "id %d listed twice", id)
			}
		}
		ids = append(ids, id)
	}
	return ids, nil
}

// luksJSONIDs returns the ids of an object of numbered members, in order, at most max.
func luksJSONIDs(v *luksJSON, path string, max int) ([]int, error) {
	if v == nil || v.kind != luksJObject {
		return nil, luks2MetaErr(path, "not an object")
	}
	if len(v.names) > max {
		return nil, luks2MetaErr(path, "%d entries, at most %d allowed", len(v.names), max)
	}
	ids := make([]int, len(v.names))
	for i, n := range v.names {
		id, ok := luksJSONID(n)
		if !ok {
			return nil, luks2MetaErr(path, "bad id %q", n)
		}
		ids[i] = id
	}
	return ids, nil
}

// --- LUKS2 metadata -----------------------------------------------------------

// parseLUKS2Metadata decodes and validates the JSON area (spec §2.2, §2.5).
func parseLUKS2Metadata(text []byte, hdrSize, devSize int64) (*luks2Meta, error) {
	root, err := parseLUKSJSON(text)
	if err != nil {
		return nil, failf(eImage, "LUKS2 metadata: %v", err)
	}
	if err := luksJSONFields(root, "top level", []string{"keyslots", "tokens", "segments", "digests", "config"}, nil); err != nil {
		return nil, err
	}
	m := &luks2Meta{hdrSize: hdrSize}
	if err := m.parseConfig(root.member("config"), devSize); err != nil {
		return nil, err
	}
	if err := m.parseSegments(root.member("segments"), devSize); err != nil {
		return nil, err
	}
	if err := m.parseKeyslots(root.member("keyslots")); err != nil {
		return nil, err
	}
	if err := m.parseDigests(root.member("digests")); err != nil {
		return nil, err
	}
	if m.tokens, err = luksJSONIDs(root.member("tokens"), "tokens", luks2MaxTokenObjs); err != nil {
		return nil, err
	}
	for i, t := range root.member("tokens").elems {
		if t.kind != luksJObject {
			return nil, luks2MetaErr("tokens."+strconv.Itoa(m.tokens[i]), "not an object")
		}
	}
	return m, nil
}

var luks2ConfigFlags = []string{"allow-discards", "same-cpu-crypt", "submit-from-crypt-cpus",
	"no-read-workqueue", "no-write-workqueue", "no-journal"}

func (m *luks2Meta) parseConfig(v *luksJSON, devSize int64) error {
	const p = "config"
	if err := luksJSONFields(v, p, []string{"json_size", "keyslots_size"}, []string{"flags", "requirements"}); err != nil {
		return err
	}
	var err error
	if m.config.jsonSize, err = luksJSONUint64(v, p, "json_size"); err != nil {
		return err
	}
	if m.config.jsonSize != m.hdrSize-luks2BinHeaderSize {
		return luks2MetaErr(p+".json_size", "%d, header says %d", m.config.jsonSize, m.hdrSize-luks2BinHeaderSize)
	}
	if m.config.keyslotsSize, err = luksJSONUint64(v, p, "keyslots_size"); err != nil {
		return err
	}
	ks := m.config.keyslotsSize
	if ks%4096 != 0 || ks > luks2MaxKeyslotsSz {
		return luks2MetaErr(p+".keyslots_size", "%d is not a multiple of 4096 up to %d", ks, luks2MaxKeyslotsSz)
	}
	if 2*m.hdrSize+ks > devSize {
		return luks2MetaErr(p+".keyslots_size", "keyslots area ends beyond the device")
	}
	if f := v.member("flags"); f != nil {
		if f.kind != luksJArray {
			return luks2MetaErr(p+".flags", "not an array")
		}
		for _, e := range f.elems {
			known := false
			for _, k := range luks2ConfigFlags {
				known = known || e.text == k
			}
			if e.kind != luksJString || !known {
				return luks2MetaErr(p+".flags", "unknown flag %q", e.text)
			}
			m.config.flags = append(m.config.flags, e.text)
		}
	}
	if rq := v.member("requirements"); rq != nil {
		if err := luksJSONFields(rq, p+".requirements", nil, []string{"mandatory"}); err != nil {
			return err
		}
		if mand := rq.member("mandatory"); mand != nil {
			if mand.kind != luksJArray {
				return luks2MetaErr(p+".requirements.mandatory", "not an array")
			}
			if len(mand.elems) > 0 {
				return luks2MetaErr(p+".requirements.mandatory", "unsupported requirement %q (reencryption, OPAL and hardware-tag volumes are refused)", mand.elems[0].text)
			}
		}
	}
	return nil
}

func (m *luks2Meta) parseSegments(v *luksJSON, devSize int64) error {
	ids, err := luksJSONIDs(v, "segments", luks2MaxSegments)
	if err != nil {
		return err
	}
	if len(ids) != 1 || ids[0] != 0 {
		return luks2MetaErr("segments", "exactly one segment with id 0 is supported, found %d", len(ids))
	}
	const p = "segments.0"
	s := v.elems[0]
	if err := luksJSONFields(s, p, []string{"type", "offset", "size", "iv_tweak", "encryption", "sector_size"}, []string{"integrity", "flags"}); err != nil {
		return err
	}
	if t, err := luksJSONString(s, p, "type"); err != nil {
		return err
	} else if t != "crypt" {
		return luks2MetaErr(p+".type", "unsupported segment type %q", t)
	}
	if s.member("integrity") != nil {
		return luks2MetaErr(p+".integrity", "integrity-protected segments are not supported")
	}
	if f := s.member("flags"); f != nil && (f.kind != luksJArray || len(f.elems) != 0) {
		return luks2MetaErr(p+".flags", "segment flags are not supported")
	}
	seg := &m.segment
	if seg.encryption, err = luksJSONString(s, p, "encryption"); err != nil {
		return err
	}
	if seg.encryption != "aes-xts-plain64" {
		return luks2MetaErr(p+".encryption", "unsupported cipher %q", seg.encryption)
	}
	ss, err := luksJSONInt(s, p, "sector_size", 1<<32-1)
	if err != nil {
		return err
	}
	if ss != 512 && ss != 1024 && ss != 2048 && ss != 4096 {
		return luks2MetaErr(p+".sector_size", "%d is not 512, 1024, 2048 or 4096", ss)
	}
	seg.sectorSize = int(ss)
	if seg.ivTweak, err = luksJSONUint64(s, p, "iv_tweak"); err != nil {
		return err
	}
	if seg.ivTweak != 0 {
		return luks2MetaErr(p+".iv_tweak", "%d, only 0 is supported", seg.ivTweak)
	}
	if seg.offset, err = luksJSONUint64(s, p, "offset"); err != nil {
		return err
	}
	if seg.offset == 0 {
		return luks2MetaErr(p+".offset", "0 means a detached header, which is not supported")
	}
	if seg.offset%512 != 0 {
		return luks2MetaErr(p+".offset", "%d is not a multiple of 512", seg.offset)
	}
	if seg.offset < 2*m.hdrSize+m.config.keyslotsSize {
		return luks2MetaErr(p+".offset", "%d overlaps the metadata and keyslots areas", seg.offset)
	}
	if seg.offset > devSize {
		return luks2MetaErr(p+".offset", "%d is beyond the end of the device (%d bytes)", seg.offset, devSize)
	}
	seg.size = -1
	if sz := s.member("size"); sz != nil && sz.kind == luksJString && sz.text == "dynamic" {
		return nil
	}
	if seg.size, err = luksJSONUint64(s, p, "size"); err != nil {
		return err
	}
	if seg.size%int64(seg.sectorSize) != 0 {
		return luks2MetaErr(p+".size", "%d is not a multiple of the sector size", seg.size)
	}
	if seg.size > devSize-seg.offset {
		return luks2MetaErr(p+".size", "segment ends beyond the device")
	}
	return nil
}

func (m *luks2Meta) parseKeyslots(v *luksJSON) error {
	ids, err := luksJSONIDs(v, "keyslots", luks2MaxKeyslots)
	if err != nil {
		return err
	}
	areaStart := 2 * m.hdrSize
	areaEnd := areaStart + m.config.keyslotsSize
	for i, k := range v.elems {
		p := "keyslots." + strconv.Itoa(ids[i])
		s, err := parseLUKS2Keyslot(k, p)
		if err != nil {
			return err
		}
		s.id = ids[i]
		if s.areaOffset < areaStart || s.areaSize > areaEnd-s.areaOffset {
			return luks2MetaErr(p+".area", "[%d, +%d) is outside the keyslots area", s.areaOffset, s.areaSize)
		}
		for _, o := range m.keyslots {
			if s.areaOffset < o.areaOffset+o.areaSize && o.areaOffset < s.areaOffset+s.areaSize {
				return luks2MetaErr(p+".area", "overlaps keyslot %d", o.id)
			}
		}
		m.keyslots = append(m.keyslots, s)
	}
	sort.Slice(m.keyslots, func(i, j int) bool { return m.keyslots[i].id < m.keyslots[j].id })
	return nil
}

func parseLUKS2Keyslot(k *luksJSON, p string) (*luksSlot, error) {
	if k == nil || k.kind != luksJObject {
		return nil, luks2MetaErr(p, "not an object")
	}
	if t, err := luksJSONString(k, p, "type"); err != nil {
		return nil, err
	} else if t != "luks2" {
		return nil, luks2MetaErr(p+".type", "unsupported keyslot type %q", t)
	}
	if err := luksJSONFields(k, p, []string{"type", "key_size", "af", "area", "kdf"}, []string{"priority"}); err != nil {
		return nil, err
	}
	s := &luksSlot{priority: 1}
	ks, err := luksJSONInt(k, p, "key_size", luks2MaxKeyBytes)
	if err != nil {
		return nil, err
	}
	if ks == 0 {
		return nil, luks2MetaErr(p+".key_size", "key_size 0")
	}
	s.keySize = int(ks)
	if k.member("priority") != nil {
		pr, err := luksJSONInt(k, p, "priority", 2)
		if err != nil {
			return nil, err
		}
		s.priority = int(pr)
	}
	// af
	af, ap := k.member("af"), p+".af"
	if err := luksJSONFields(af, ap, []string{"type", "stripes", "hash"}, nil); err != nil {
		return nil, err
	}
	if t, err := luksJSONString(af, ap, "type"); err != nil {
		return nil, err
	} else if t != "luks1" {
		return nil, luks2MetaErr(ap+".type", "unsupported anti-forensic type %q", t)
	}
	st, err := luksJSONInt(af, ap, "stripes", 1<<32-1)
	if err != nil {
		return nil, err
	}
	if st != luksStripes {
		return nil, luks2MetaErr(ap+".stripes", "%d, must be %d", st, luksStripes)
	}
	s.stripes = luksStripes
	if s.afHash, err = luksJSONString(af, ap, "hash"); err != nil {
		return nil, err
	}
	if _, _, ok := luksHash(s.afHash); !ok {
		return nil, luks2MetaErr(ap+".hash", "unsupported hash %q", s.afHash)
	}
	// area
	ar, arp := k.member("area"), p+".area"
	if err := luksJSONFields(ar, arp, []string{"type", "offset", "size", "encryption", "key_size"}, nil); err != nil {
		return nil, err
	}
	if t, err := luksJSONString(ar, arp, "type"); err != nil {
		return nil, err
	} else if t != "raw" {
		return nil, luks2MetaErr(arp+".type", "unsupported area type %q", t)
	}
	if s.areaOffset, err = luksJSONUint64(ar, arp, "offset"); err != nil {
		return nil, err
	}
	if s.areaSize, err = luksJSONUint64(ar, arp, "size"); err != nil {
		return nil, err
	}
	if s.areaCipher, err = luksJSONString(ar, arp, "encryption"); err != nil {
		return nil, err
	}
	if s.areaCipher != "aes-xts-plain64" {
		return nil, luks2MetaErr(arp+".encryption", "unsupported cipher %q", s.areaCipher)
	}
	aks, err := luksJSONInt(ar, arp, "key_size", 1<<32-1)
	if err != nil {
		return nil, err
	}
	if aks != 32 && aks != 48 && aks != 64 {
		return nil, luks2MetaErr(arp+".key_size", "%d does not fit aes-xts-plain64", aks)
	}
	s.areaKey = int(aks)
	if need := afAreaSize(s.keySize, s.stripes); need > s.areaSize {
		return nil, luks2MetaErr(arp+".size", "%d, the key material needs %d", s.areaSize, need)
	}
	// kdf
	kd, kp := k.member("kdf"), p+".kdf"
	if kd == nil || kd.kind != luksJObject {
		return nil, luks2MetaErr(kp, "not an object")
	}
	if s.kdf.kind, err = luksJSONString(kd, kp, "type"); err != nil {
		return nil, err
	}
	switch s.kdf.kind {
	case "pbkdf2":
		if err := luksJSONFields(kd, kp, []string{"type", "hash", "iterations", "salt"}, nil); err != nil {
			return nil, err
		}
		if s.kdf.hash, err = luksJSONString(kd, kp, "hash"); err != nil {
			return nil, err
		}
		if _, _, ok := luksHash(s.kdf.hash); !ok {
			return nil, luks2MetaErr(kp+".hash", "unsupported hash %q", s.kdf.hash)
		}
		if s.kdf.iterations, err = luksJSONInt(kd, kp, "iterations", 1<<32-1); err != nil {
			return nil, err
		}
	case "argon2i", "argon2id":
		if err := luksJSONFields(kd, kp, []string{"type", "time", "memory", "cpus", "salt"}, nil); err != nil {
			return nil, err
		}
		if s.kdf.time, err = luksJSONInt(kd, kp, "time", 1<<32-1); err != nil {
			return nil, err
		}
		if s.kdf.memoryKiB, err = luksJSONInt(kd, kp, "memory", 1<<32-1); err != nil {
			return nil, err
		}
		if s.kdf.cpus, err = luksJSONInt(kd, kp, "cpus", 1<<32-1); err != nil {
			return nil, err
		}
	default:
		return nil, luks2MetaErr(kp+".type", "unsupported KDF %q", s.kdf.kind)
	}
	if s.kdf.salt, err = luksJSONBase64(kd, kp, "salt", 32); err != nil {
		return nil, err
	}
	return s, nil
}

func (m *luks2Meta) parseDigests(v *luksJSON) error {
	ids, err := luksJSONIDs(v, "digests", luks2MaxDigests)
	if err != nil {
		return err
	}
	for i, dv := range v.elems {
		p := "digests." + strconv.Itoa(ids[i])
		if err := luksJSONFields(dv, p, []string{"type", "keyslots", "segments", "hash", "iterations", "salt", "digest"}, nil); err != nil {
			return err
		}
		d := &luksDigest{id: ids[i]}
		if t, err := luksJSONString(dv, p, "type"); err != nil {
			return err
		} else if t != "pbkdf2" {
			return luks2MetaErr(p+".type", "unsupported digest type %q", t)
		}
		if d.hash, err = luksJSONString(dv, p, "hash"); err != nil {
			return err
		}
		_, hlen, ok := luksHash(d.hash)
		if !ok {
			return luks2MetaErr(p+".hash", "unsupported hash %q", d.hash)
		}
		if d.iterations, err = luksJSONInt(dv, p, "iterations", 1<<32-1); err != nil {
			return err
		}
		if d.salt, err = luksJSONBase64(dv, p, "salt", 32); err != nil {
			return err
		}
		if d.digest, err = luksJSONBase64(dv, p, "digest", 20, hlen); err != nil {
			return err
		}
		if d.keyslots, err = luksJSONIDList(dv, p, "keyslots"); err != nil {
			return err
		}
		if d.segments, err = luksJSONIDList(dv, p, "segments"); err != nil {
			return err
		}
		for _, sid := range d.segments {
			if sid != 0 {
				return luks2MetaErr(p+".segments", "segment %d does not exist", sid)
			}
		}
		for _, kid := range d.keyslots {
			s := m.keyslot(kid)
			if s == nil {
				return luks2MetaErr(p+".keyslots", "keyslot %d does not exist", kid)
			}
			if s.digest != nil {
				return luks2MetaErr(p+".keyslots", "keyslot %d is also in digest %d", kid, s.digest.id)
			}
			s.digest = d
		}
		m.digests = append(m.digests, d)
	}
	for _, s := range m.keyslots {
		if s.digest == nil {
			return luks2MetaErr("keyslots."+strconv.Itoa(s.id), "not in any digest")
		}
	}
	return nil
}

func (m *luks2Meta) keyslot(id int) *luksSlot {
	for _, s := range m.keyslots {
		if s.id == id {
			return s
		}
	}
	return nil
}

// afAreaSize is the key material size on disk: key_size·stripes rounded up to 512.
func afAreaSize(keySize, stripes int) int64 {
	n := int64(keySize) * int64(stripes)
	return (n + luksSectorSize - 1) / luksSectorSize * luksSectorSize
}

// --- LUKS1 --------------------------------------------------------------------

// parseLUKS1 validates the 592-byte LUKS1 header (spec §2.3).
func parseLUKS1(h []byte, devSize int64) (*luksVolume, error) {
	if len(h) < luks1HeaderSize || !bytes.Equal(h[:6], luksPrimaryMagic) || binary.BigEndian.Uint16(h[6:8]) != 1 {
		return nil, failf(eImage, "LUKS1 header: bad magic or version")
	}
	be := binary.BigEndian
	cipherName, ok1 := luksCString(h[8:40])
	cipherMode, ok2 := luksCString(h[40:72])
	hashSpec, ok3 := luksCString(h[72:104])
	uuid, ok4 := luksCString(h[168:208])
	if !ok1 || !ok2 || !ok3 || !ok4 {
		return nil, failf(eImage, "LUKS1 header: unterminated text field")
	}
	if _, _, ok := luksHash(hashSpec); !ok {
		return nil, failf(eImage, "LUKS1 header: unsupported hash %q", hashSpec)
	}
	keyBytes := be.Uint32(h[108:112])
	cipherSpec := cipherName + "-" + cipherMode
	switch {
	case cipherSpec == "aes-xts-plain64" && (keyBytes == 32 || keyBytes == 64):
	case cipherSpec == "aes-cbc-essiv:sha256" && (keyBytes == 16 || keyBytes == 24 || keyBytes == 32):
	default:
		return nil, failf(eImage, "LUKS1 header: unsupported cipher %q with a %d-byte key", cipherSpec, keyBytes)
	}
	payload := int64(be.Uint32(h[104:108])) * luksSectorSize
	if payload == 0 {
		return nil, failf(eImage, "LUKS1 header: payload offset 0 means a detached header, which is not supported")
	}
	if payload > devSize {
		return nil, failf(eImage, "LUKS1 header: payload offset %d is beyond the end of the device (%d bytes)", payload, devSize)
	}
	d := &luksDigest{
		hash:       hashSpec,
		iterations: uint64(be.Uint32(h[164:168])),
		salt:       append([]byte(nil), h[132:164]...),
		digest:     append([]byte(nil), h[112:132]...),
		segments:   []int{0},
	}
	v := &luksVolume{
		version:    1,
		uuid:       uuid,
		cipher:     cipherSpec,
		keySize:    int(keyBytes),
		dataOffset: payload,
		dataLength: (devSize - payload) / luksSectorSize * luksSectorSize,
		sectorSize: luksSectorSize,
	}
	for i := 0; i < 8; i++ {
		ks := h[208+48*i : 208+48*(i+1)]
		switch active := be.Uint32(ks[0:4]); active {
		case 0x0000DEAD:
			continue
		case 0x00AC71F3:
		default:
			return nil, failf(eImage, "LUKS1 header: key slot %d has bad state 0x%08x", i, active)
		}
		s := &luksSlot{
			id:         i,
			priority:   1,
			keySize:    int(keyBytes),
			afHash:     hashSpec,
			stripes:    int(be.Uint32(ks[44:48])),
			areaOffset: int64(be.Uint32(ks[40:44])) * luksSectorSize,
			areaCipher: cipherSpec,
			areaKey:    int(keyBytes),
			kdf:        kdfParams{kind: "pbkdf2", hash: hashSpec, iterations: uint64(be.Uint32(ks[4:8])), salt: append([]byte(nil), ks[8:40]...)},
			digest:     d,
		}
		if s.stripes != luksStripes {
			return nil, failf(eImage, "LUKS1 header: key slot %d has %d stripes, must be %d", i, s.stripes, luksStripes)
		}
		s.areaSize = afAreaSize(s.keySize, s.stripes)
		if s.areaOffset < luks1HeaderSize {
			return nil, failf(eImage, "LUKS1 header: key slot %d material overlaps the header", i)
		}
		if s.areaOffset+s.areaSize > payload {
			return nil, failf(eImage, "LUKS1 header: key slot %d material overlaps the payload", i)
		}
		for _, o := range v.slots {
			if s.areaOffset < o.areaOffset+o.areaSize && o.areaOffset < s.areaOffset+s.areaSize {
				return nil, failf(eImage, "LUKS1 header: key slots %d and %d overlap", o.id, i)
			}
		}
		d.keyslots = append(d.keyslots, i)
		v.slots = append(v.slots, s)
	}
	if len(v.slots) == 0 {
		return nil, failf(eImage, "LUKS1 header: no active key slot")
	}
	return v, nil
}

// --- KDF limits ---------------------------------------------------------------

// check applies the caps of spec §2.5 and R10 to the slots that unlock would
// try. It runs before any KDF and allocates nothing sized by the header.
func (l kdfLimits) check(slots []*luksSlot) error {
	if len(slots) > luksMaxTried {
		return failf(ePolicy, "KDF parameters exceed limits: %d keyslots to try, at most %d", len(slots), luksMaxTried)
	}
	// Summed over the slots tried, each KDF kind may cost at most twice its
	// single-slot cap (argon2 memory·time, PBKDF2 iterations incl. digests).
	maxIter := l.maxPBKDF2Iterations
	var argonSum, pbkdf2Sum uint64
	for _, s := range slots {
		if s.digest == nil {
			return failf(eInternal, "keyslot %d without a digest", s.id)
		}
		if err := l.checkKDF(s.kdf, fmt.Sprintf("keyslot %d", s.id)); err != nil {
			return err
		}
		if it := s.digest.iterations; it < 1 || it > maxIter {
			return failf(ePolicy, "KDF parameters exceed limits: digest of keyslot %d asks for %d PBKDF2 iterations, allowed 1..%d (kdf_max_pbkdf2_iterations)", s.id, it, maxIter)
		}
		pbkdf2Sum += s.digest.iterations
		if s.kdf.kind == "pbkdf2" {
			pbkdf2Sum += s.kdf.iterations
		} else {
			argonSum += s.kdf.memoryKiB * s.kdf.time // each ≤ 2^23 after checkKDF
		}
	}
	if argonSum > 2*argon2MaxCost {
		return failf(ePolicy, "KDF parameters exceed limits: the %d keyslots to try need %.1f times a single keyslot's argon2 cap, at most 2", len(slots), float64(argonSum)/argon2MaxCost)
	}
	if pbkdf2Sum > 2*maxIter {
		return failf(ePolicy, "KDF parameters exceed limits: the %d keyslots to try need %d PBKDF2 iterations in all, at most twice kdf_max_pbkdf2_iterations (%d)", len(slots), pbkdf2Sum, maxIter)
	}
	return nil
}

// checkKDF applies the single-derivation caps to p.
func (l kdfLimits) checkKDF(p kdfParams, what string) error {
	switch p.kind {
	case "pbkdf2":
		if _, _, ok := luksHash(p.hash); !ok {
			return failf(eImage, "%s: unsupported PBKDF2 hash %q", what, p.hash)
		}
		if p.iterations < 1 || p.iterations > l.maxPBKDF2Iterations {
			return failf(ePolicy, "KDF parameters exceed limits: %s asks for %d PBKDF2 iterations, allowed 1..%d (kdf_max_pbkdf2_iterations)", what, p.iterations, l.maxPBKDF2Iterations)
		}
	case "argon2i", "argon2id":
		if p.time < 1 {
			return failf(ePolicy, "KDF parameters exceed limits: %s asks for argon2 time 0", what)
		}
		if p.cpus < 1 || p.cpus > argon2MaxCPUs {
			return failf(ePolicy, "KDF parameters exceed limits: %s asks for %d argon2 threads, allowed 1..%d", what, p.cpus, argon2MaxCPUs)
		}
		if p.memoryKiB < max(32, 8*p.cpus) {
			return failf(ePolicy, "KDF parameters exceed limits: %s asks for argon2 memory %d KiB, below the minimum %d", what, p.memoryKiB, max(32, 8*p.cpus))
		}
		if p.memoryKiB > l.maxMemoryKiB {
			need := (p.memoryKiB + 1023) / 1024
			return failf(ePolicy, "KDF parameters exceed limits: %s asks for argon2 memory %d MiB, above kdf_max_memory_mib = %d (it would need %d; at most %d is allowed)", what, need, l.maxMemoryKiB/1024, need, kdfHardMaxMemoryMiB)
		}
		if p.time > argon2MaxCost/p.memoryKiB {
			return failf(ePolicy, "KDF parameters exceed limits: %s asks for argon2 memory × time = %d KiB × %d, above the fixed bound of 1 GiB × 8 passes", what, p.memoryKiB, p.time)
		}
		avail := l.memAvailableKiB
		if avail == 0 {
			avail, _ = luksMeminfoKiB("MemAvailable")
		}
		if avail != 0 && p.memoryKiB > avail/2 {
			return failf(eResource, "%s needs %d MiB for argon2, more than half of the available memory (%d MiB)", what, p.memoryKiB/1024, avail/1024)
		}
	default:
		return failf(eImage, "%s: unsupported KDF %q", what, p.kind)
	}
	if len(p.salt) != 32 {
		return failf(eImage, "%s: KDF salt of %d bytes, want 32", what, len(p.salt))
	}
	return nil
}

// luksMeminfoKiB returns a /proc/meminfo field in KiB (0 and an error if absent).
func luksMeminfoKiB(field string) (uint64, error) {
	f, err := openFile("/proc/meminfo", os.O_RDONLY, 0)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	buf := make([]byte, 16<<10)
	n, _ := io.ReadFull(f, buf)
	for _, line := range strings.Split(string(buf[:n]), "\n") {
		rest, ok := strings.CutPrefix(line, field+":")
		if !ok {
			continue
		}
		fs := strings.Fields(rest)
		if len(fs) == 2 && fs[1] == "kB" {
			return strconv.ParseUint(fs[0], 10, 64)
		}
	}
	return 0, fmt.Errorf("/proc/meminfo has no %s", field)
}

// --- key derivation and anti-forensic merge -------------------------------------

// pbkdf2Key is PBKDF2 (RFC 8018) on crypto/hmac with the password kept in
// []byte (crypto/pbkdf2 wants a string, which cannot be zeroed).
func pbkdf2Key(newHash func() hash.Hash, password, salt []byte, iterations int, out []byte) {
	prf := hmac.New(newHash, password)
	hLen := prf.Size()
	var u, t [sha512.Size]byte
	var ctr [4]byte
	for block := uint32(1); len(out) > 0; block++ {
		prf.Reset()
		prf.Write(salt)
		binary.BigEndian.PutUint32(ctr[:], block)
		prf.Write(ctr[:])
		prf.Sum(u[:0])
		copy(t[:hLen], u[:hLen])
		for n := 1; n < iterations; n++ {
			prf.Reset()
			prf.Write(u[:hLen])
			prf.Sum(u[:0])
			subtle.XORBytes(t[:hLen], t[:hLen], u[:hLen])
		}
		out = out[copy(out, t[:hLen]):]
	}
	clear(u[:])
	clear(t[:])
}

// luksDeriveKey runs the keyslot KDF into out. Callers have checked the caps; the
// argon2 guards here only keep argon2Key from looping on nonsense.
func luksDeriveKey(p kdfParams, passphrase, out []byte) error {
	switch p.kind {
	case "pbkdf2":
		newHash, _, ok := luksHash(p.hash)
		if !ok || p.iterations < 1 || p.iterations > 1<<32-1 {
			return failf(eInternal, "pbkdf2 parameters not validated")
		}
		if p.hash == "sha256" {
			pbkdf2SHA256(passphrase, p.salt, int(p.iterations), out)
		} else {
			pbkdf2Key(newHash, passphrase, p.salt, int(p.iterations), out)
		}
		return nil
	case "argon2i", "argon2id":
		if p.time < 1 || p.cpus < 1 || p.cpus > argon2MaxCPUs || p.memoryKiB > kdfHardMaxMemoryMiB*1024 || p.time > argon2MaxCost {
			return failf(eInternal, "argon2 parameters not validated")
		}
		mode := argon2id
		if p.kind == "argon2i" {
			mode = argon2i
		}
		argon2Key(mode, passphrase, p.salt, uint32(p.time), uint32(p.memoryKiB), uint8(p.cpus), out)
		return nil
	}
	return failf(eInternal, "unknown KDF %q", p.kind)
}

// afDiffuse replaces each digest-sized block i of buf by H(BE32(i) ‖ block),
// truncated to the block's length (cryptsetup's diffuse).
func afDiffuse(h hash.Hash, buf []byte) {
	if h.Size() == sha256.Size && h.BlockSize() == sha256.BlockSize {
		afDiffuseSHA256(buf)
		return
	}
	ds := h.Size()
	var sum [sha512.Size]byte
	var iv [4]byte
	for i := 0; len(buf) > 0; i++ {
		n := min(ds, len(buf))
		h.Reset()
		binary.BigEndian.PutUint32(iv[:], uint32(i))
		h.Write(iv[:])
		h.Write(buf[:n])
		h.Sum(sum[:0])
		copy(buf[:n], sum[:n])
		buf = buf[n:]
	}
	clear(sum[:])
}

// afDiffuseSHA256 is afDiffuse for SHA-256, the hash of nearly every volume:
// one block hash at a time without the hash.Hash round trips, which cost
// more than the compressions themselves (4000 stripes per unlock).
func afDiffuseSHA256(buf []byte) { afDiffuseWith(afHashSHA256, buf) }

// afDiffuseWith applies hash to each 32-byte block of buf with its index.
func afDiffuseWith(hash func(i uint32, b []byte), buf []byte) {
	for i := uint32(0); len(buf) > 0; i++ {
		n := min(sha256.Size, len(buf))
		hash(i, buf[:n])
		buf = buf[n:]
	}
}

// afMerge recovers the key from anti-forensic material: d = 0; for each but
// the last stripe d = diffuse(d ^ s_k); key = d ^ s_last. out receives the key.
func afMerge(material []byte, keySize, stripes int, hashName string, out []byte) error {
	newHash, _, ok := luksHash(hashName)
	if !ok {
		return failf(eImage, "anti-forensic hash %q unsupported", hashName)
	}
	if keySize < 1 || keySize > luks2MaxKeyBytes || stripes < 1 || stripes > luksStripes || len(out) != keySize || len(material) < keySize*stripes {
		return failf(eImage, "anti-forensic material: bad sizes (key %d, stripes %d, material %d)", keySize, stripes, len(material))
	}
	if hashName == "sha256" && keySize > sha256.Size {
		afMergeSHA256Columns(material, keySize, stripes, out)
		return nil
	}
	h := newHash()
	clear(out)
	for k := 0; k < stripes-1; k++ {
		subtle.XORBytes(out, out, material[k*keySize:(k+1)*keySize])
		afDiffuse(h, out)
	}
	subtle.XORBytes(out, out, material[(stripes-1)*keySize:stripes*keySize])
	return nil
}

// afMergeSHA256Columns is afMerge for SHA-256 and keys longer than one
// digest. Diffusion hashes each 32-byte column of the key on its own (column
// c with index c), so the columns are independent chains of stripes−1
// hashes: each runs on its own goroutine, in a buffer of its own (two
// halves of one cache line written from two cores would bounce it between
// them at every hash).
func afMergeSHA256Columns(material []byte, keySize, stripes int, out []byte) {
	var wg sync.WaitGroup
	for lo := 0; lo < keySize; lo += sha256.Size {
		hi := min(lo+sha256.Size, keySize)
		col := func() {
			var d [sha256.Size]byte
			n := hi - lo
			for k := 0; k < stripes-1; k++ {
				subtle.XORBytes(d[:n], d[:n], material[k*keySize+lo:k*keySize+hi])
				afHashSHA256(uint32(lo/sha256.Size), d[:n])
			}
			subtle.XORBytes(out[lo:hi], d[:n], material[(stripes-1)*keySize+lo:(stripes-1)*keySize+hi])
			clear(d[:])
		}
		if hi == keySize {
			col() // the last column on this goroutine
			break
		}
		wg.Go(col)
	}
	wg.Wait()
}

// afHashSHA256 replaces b (at most 32 bytes) by H(BE32(i) ‖ b), truncated,
// on the SHA extensions where the CPU has them.
func afHashSHA256(i uint32, b []byte) {
	if sha256NI() {
		afHashSHA256NI(i, b)
		return
	}
	afHashSHA256Generic(i, b)
}

// afHashSHA256Generic is afHashSHA256 through crypto/sha256.
func afHashSHA256Generic(i uint32, b []byte) {
	var in [4 + sha256.Size]byte
	binary.BigEndian.PutUint32(in[:4], i)
	n := copy(in[4:], b)
	sum := sha256.Sum256(in[:4+n])
	copy(b, sum[:n])
	clear(sum[:])
	clear(in[:])
}

// afSplit is afMerge's inverse for formatting: random stripes, then the last
// stripe that makes the chain yield key. material must hold keySize·stripes bytes.
func afSplit(key []byte, stripes int, hashName string, rand io.Reader, material []byte) error {
	newHash, _, ok := luksHash(hashName)
	keySize := len(key)
	if !ok || keySize < 1 || keySize > luks2MaxKeyBytes || stripes < 1 || stripes > luksStripes || len(material) < keySize*stripes {
		return failf(eInternal, "anti-forensic split: bad parameters")
	}
	if _, err := io.ReadFull(rand, material[:(stripes-1)*keySize]); err != nil {
		return failf(eSystem, "random stripes: %w", err)
	}
	h := newHash()
	d := make([]byte, keySize)
	defer clear(d)
	for k := 0; k < stripes-1; k++ {
		subtle.XORBytes(d, d, material[k*keySize:(k+1)*keySize])
		afDiffuse(h, d)
	}
	subtle.XORBytes(material[(stripes-1)*keySize:stripes*keySize], d, key)
	return nil
}

// --- unlock -----------------------------------------------------------------

// unlock tries the candidate keyslots with passphrase and returns the volume
// key in locked memory. A wrong passphrase is E_AUTH.
func (v *luksVolume) unlock(passphrase []byte) (key *volumeKey, err error) {
	defer func() {
		if p := recover(); p != nil {
			key.wipe()
			key, err = nil, failf(eInternal, "unlock LUKS volume: internal fault: %v", p)
		}
	}()
	if len(passphrase) > luksMaxPassphrase {
		return nil, failf(eUsage, "passphrase longer than %d bytes", luksMaxPassphrase)
	}
	// Defence in depth: the caps were checked by openLUKS; check again right
	// before the first derivation.
	if err := v.limits.check(v.slots); err != nil {
		return nil, err
	}
	for _, s := range v.slots {
		key, err := v.trySlot(s, passphrase)
		if err != nil || key != nil {
			return key, err
		}
	}
	return nil, failf(eAuth, "wrong passphrase or key")
}

// trySlot derives the slot key, decrypts and merges the key material and checks
// the candidate against the digest in constant time; nil, nil means no match.
func (v *luksVolume) trySlot(s *luksSlot, passphrase []byte) (*volumeKey, error) {
	dk, err := newSecretBuf(s.areaKey)
	if err != nil {
		return nil, err
	}
	defer dk.wipe()
	if err := luksDeriveKey(s.kdf, passphrase, dk.bytes()); err != nil {
		return nil, err
	}
	n := afAreaSize(s.keySize, s.stripes)
	if s.keySize < 1 || s.keySize > luks2MaxKeyBytes || s.stripes != luksStripes || n > s.areaSize {
		return nil, failf(eInternal, "keyslot %d geometry not validated", s.id)
	}
	material, err := newSecretBuf(int(n))
	if err != nil {
		return nil, err
	}
	defer material.wipe()
	m := material.bytes()
	if err := luksReadAt(v.r, m, s.areaOffset, fmt.Sprintf("keyslot %d key material", s.id)); err != nil {
		return nil, err
	}
	c, err := newDataCipher(s.areaCipher, dk.bytes(), luksSectorSize)
	if err != nil {
		return nil, err
	}
	defer c.wipe()
	c.decrypt(m, 0)
	buf, err := newSecretBuf(s.keySize)
	if err != nil {
		return nil, err
	}
	if err := afMerge(m, s.keySize, s.stripes, s.afHash, buf.bytes()); err != nil {
		buf.wipe()
		return nil, err
	}
	if !luksDigestMatches(s.digest, buf.bytes()) {
		buf.wipe()
		return nil, nil
	}
	return &volumeKey{buf: buf, slot: s.id}, nil
}

// luksDigestMatches compares PBKDF2(vk) with the stored digest in constant time.
func luksDigestMatches(d *luksDigest, vk []byte) bool {
	newHash, _, ok := luksHash(d.hash)
	if !ok || d.iterations < 1 {
		return false
	}
	got := make([]byte, len(d.digest))
	if d.hash == "sha256" {
		pbkdf2SHA256(vk, d.salt, int(d.iterations), got)
	} else {
		pbkdf2Key(newHash, vk, d.salt, int(d.iterations), got)
	}
	return subtle.ConstantTimeCompare(got, d.digest) == 1
}

// --- data ciphers -------------------------------------------------------------

// dataCipher encrypts and decrypts units of one segment (or keyslot area). Unit
// k uses IV sector k·ivPerUnit: dm-crypt counts 512-byte sectors even for
// 4096-byte units, since LUKS never sets iv_large_sectors.
//
// XTS is done here on crypto/aes rather than x/crypto/xts: whole-unit tweak
// tables and vectorised XORs run about four times faster (see the benchmark),
// and x/crypto/xts stays the test oracle.
type dataCipher struct {
	unit      int
	ivPerUnit uint64
	k1, k2    cipher.Block // XTS data and tweak keys; CBC data key
	bulk      *aesBulk     // XTS data key for whole units
	essiv     cipher.Block // CBC-ESSIV: IV generator under SHA-256(key)
	cbc       bool
}

func newDataCipher(spec string, key []byte, unit int) (*dataCipher, error) {
	c := &dataCipher{unit: unit, ivPerUnit: uint64(unit / luksSectorSize)}
	if unit < luksSectorSize || unit > 4096 || unit&(unit-1) != 0 {
		return nil, failf(eInternal, "data unit of %d bytes", unit)
	}
	var err error
	switch spec {
	case "aes-xts-plain64":
		if len(key) != 32 && len(key) != 48 && len(key) != 64 {
			return nil, failf(eImage, "aes-xts-plain64 with a %d-byte key", len(key))
		}
		if c.bulk, err = newAESBulk(key[:len(key)/2]); err == nil {
			c.k1 = c.bulk.block
			c.k2, err = aes.NewCipher(key[len(key)/2:])
		}
	case "aes-cbc-essiv:sha256":
		c.cbc = true
		sum := sha256.Sum256(key)
		if c.k1, err = aes.NewCipher(key); err == nil {
			c.essiv, err = aes.NewCipher(sum[:])
		}
		clear(sum[:])
	default:
		return nil, failf(eImage, "unsupported cipher %q", spec)
	}
	if err != nil {
		return nil, failf(eImage, "%s key: %w", spec, err)
	}
	return c, nil
}

// wipe zeroes the round keys the bulk path keeps.
func (c *dataCipher) wipe() { c.bulk.wipe() }

// decrypt decrypts buf in place; buf holds whole units, the first being firstUnit.
func (c *dataCipher) decrypt(buf []byte, firstUnit uint64) { c.crypt(buf, firstUnit, false) }

// encrypt encrypts buf in place; buf holds whole units, the first being firstUnit.
func (c *dataCipher) encrypt(buf []byte, firstUnit uint64) { c.crypt(buf, firstUnit, true) }

func (c *dataCipher) crypt(buf []byte, unit uint64, enc bool) {
	if len(buf)%c.unit != 0 {
		panic("dataCipher: partial unit")
	}
	var tw [4096]byte
	for ; len(buf) > 0; unit++ {
		u := buf[:c.unit]
		iv := unit * c.ivPerUnit
		if c.cbc {
			c.cryptCBC(u, iv, enc)
		} else {
			c.cryptXTS(u, tw[:c.unit], iv, enc)
		}
		buf = buf[c.unit:]
	}
}

// cryptXTS is IEEE P1619 XTS without ciphertext stealing (units are whole
// blocks), tweak = AES_k2(LE64(sector) ‖ 0⁸).
func (c *dataCipher) cryptXTS(u, tw []byte, sector uint64, enc bool) {
	var t [16]byte
	binary.LittleEndian.PutUint64(t[:8], sector)
	c.k2.Encrypt(t[:], t[:])
	lo, hi := binary.LittleEndian.Uint64(t[:8]), binary.LittleEndian.Uint64(t[8:])
	for i := 0; i < len(u); i += 16 {
		binary.LittleEndian.PutUint64(tw[i:], lo)
		binary.LittleEndian.PutUint64(tw[i+8:], hi)
		carry := hi >> 63 // multiply by x in GF(2¹²⁸), x¹²⁸ = x⁷+x²+x+1
		hi = hi<<1 | lo>>63
		lo = lo<<1 ^ carry*0x87
	}
	subtle.XORBytes(u, u, tw)
	if enc {
		c.bulk.encryptBlocks(u)
	} else {
		c.bulk.decryptBlocks(u)
	}
	subtle.XORBytes(u, u, tw)
}

// cryptCBC is AES-CBC with the ESSIV IV AES_{SHA256(key)}(LE64(sector) ‖ 0⁸).
func (c *dataCipher) cryptCBC(u []byte, sector uint64, enc bool) {
	var iv [16]byte
	binary.LittleEndian.PutUint64(iv[:8], sector)
	c.essiv.Encrypt(iv[:], iv[:])
	if enc {
		cipher.NewCBCEncrypter(c.k1, iv[:]).CryptBlocks(u, u)
	} else {
		cipher.NewCBCDecrypter(c.k1, iv[:]).CryptBlocks(u, u)
	}
}

// dataCipherFor returns the cipher for v's data segment under key.
func (v *luksVolume) dataCipherFor(key *volumeKey) (*dataCipher, error) {
	if len(key.bytes()) != v.keySize {
		return nil, failf(eInternal, "volume key of %d bytes, volume wants %d", len(key.bytes()), v.keySize)
	}
	return newDataCipher(v.cipher, key.bytes(), v.sectorSize)
}

// readPlainAt fills dst with plaintext starting at plaintext byte off; off and
// len(dst) must be multiples of the sector size and inside the segment.
func (v *luksVolume) readPlainAt(c *dataCipher, dst []byte, off int64) error {
	ss := int64(v.sectorSize)
	if off < 0 || off%ss != 0 || int64(len(dst))%ss != 0 || int64(len(dst)) > v.dataLength-off {
		return failf(eInternal, "plaintext range [%d, +%d) not whole sectors inside the segment", off, len(dst))
	}
	if err := luksReadAt(v.r, dst, v.dataOffset+off, "encrypted data"); err != nil {
		return err
	}
	c.decrypt(dst, uint64(off/ss))
	return nil
}

// luksChunk is the unit of work for bulk encryption and decryption.
const luksChunk = 1 << 20

// luksWorkers is how many cores bulk crypto uses (the test machines have 2).
func luksWorkers() int { return max(1, min(runtime.GOMAXPROCS(0), 4)) }

// mappedPlain is a destination decryptTo fills in place: a shared mapping of
// the memory backend's memfd. The ciphertext is read straight into it and
// decrypted there, without a chunk buffer or a second copy.
type mappedPlain []byte

func (m mappedPlain) WriteAt(p []byte, off int64) (int, error) {
	if off < 0 || off > int64(len(m)) || int64(len(p)) > int64(len(m))-off {
		return 0, io.ErrShortWrite
	}
	return copy(m[off:], p), nil
}

// loadedCiphertext is a mappedPlain that already holds the encrypted data
// (readCiphertextAhead in crypt.go): decryptTo decrypts it where it is.
type loadedCiphertext []byte

func (m loadedCiphertext) WriteAt(p []byte, off int64) (int, error) {
	return mappedPlain(m).WriteAt(p, off)
}

// decryptTo writes the whole plaintext (dataLength bytes) to w at offset 0.
// Workers read, decrypt and write disjoint chunks in parallel (io.ReaderAt and
// io.WriterAt allow that); chunk buffers are zeroed before they are dropped.
// progress, if set, gets the bytes done so far.
func (v *luksVolume) decryptTo(w io.WriterAt, key *volumeKey, progress func(done, total int64)) error {
	c, err := v.dataCipherFor(key)
	if err != nil {
		return err
	}
	defer c.wipe()
	total := v.dataLength
	workers := luksWorkers()
	// Small volumes are split so that every worker gets a share: a 1 MiB
	// image would otherwise be one chunk on one core.
	chunk := int64(luksChunk)
	if share := (total/int64(workers) + 4095) &^ 4095; share < chunk {
		chunk = max(share, 64<<10)
	}
	chunks := (total + chunk - 1) / chunk
	var (
		mu       sync.Mutex
		firstErr error
		done     int64
		wg       sync.WaitGroup
	)
	fail := func(err error) {
		mu.Lock()
		if firstErr == nil {
			firstErr = err
		}
		mu.Unlock()
	}
	for wk := 0; wk < workers; wk++ {
		wg.Add(1)
		go func(wk int) {
			defer wg.Done()
			defer func() {
				if p := recover(); p != nil {
					fail(failf(eInternal, "decrypt: internal fault: %v", p))
				}
			}()
			mapped, inPlace := w.(mappedPlain)
			loaded, isLoaded := w.(loadedCiphertext)
			if isLoaded {
				mapped, inPlace = mappedPlain(loaded), true
			}
			if inPlace && int64(len(mapped)) < total {
				fail(failf(eInternal, "decrypt: mapping of %d bytes for %d bytes of plaintext", len(mapped), total))
				return
			}
			var buf []byte
			if !inPlace {
				buf = make([]byte, chunk)
				defer clear(buf)
			}
			for k := int64(wk); k < chunks; k += int64(workers) {
				mu.Lock()
				stop := firstErr != nil
				mu.Unlock()
				if stop {
					return
				}
				off := k * chunk
				n := min(chunk, total-off)
				b := buf[:min(n, int64(len(buf)))]
				if inPlace {
					b = mapped[off : off+n]
				}
				if isLoaded {
					c.decrypt(b, uint64(off/int64(v.sectorSize)))
				} else if err := v.readPlainAt(c, b, off); err != nil {
					fail(err)
					return
				}
				if !inPlace {
					if _, err := w.WriteAt(b, off); err != nil {
						fail(failf(eSystem, "write decrypted data: %w", err))
						return
					}
				}
				mu.Lock()
				done += int64(len(b))
				if progress != nil {
					progress(done, total)
				}
				mu.Unlock()
			}
		}(wk)
	}
	wg.Wait()
	return firstErr
}
