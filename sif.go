// sif.go owns image files on disk: recognising SIF, bare squashfs and the formats minirun refuses,
// the bounded SIF parser and rootfs choice (spec/images-and-encryption.md §1), the squashfs
// superblock check, and the small SIF writer that `minirun build` uses (sif v2 layout).
package main

import (
	"bytes"
	"cmp"
	"encoding/binary"
	"fmt"
	"io"
	"math"
	"runtime"
	"slices"
)

// SIF layout constants (spec §1.1).
const (
	sifHeaderSize     = 128
	sifDescriptorSize = 585
	sifMaxDescriptors = 256 // so the whole table is at most 149 760 bytes
	sifNameSize       = 128
	sifExtraSize      = 384

	sifWriterTableOffset = 4096 // where the sif v2 writer puts the table
	sifWriterSlots       = 48   // and how many slots it makes
	sifPartitionAlign    = 4096

	sifDataDeffile       int32 = 0x4001
	sifDataLabels        int32 = 0x4003
	sifDataPartition     int32 = 0x4004
	sifDataCryptoMessage int32 = 0x4008

	sifFsSquashfs          int32 = 1
	sifFsExt3              int32 = 2
	sifFsImmuObj           int32 = 3
	sifFsRaw               int32 = 4
	sifFsEncryptedSquashfs int32 = 5
	sifFsGocryptfsSquashfs int32 = 6

	sifPartSystem  int32 = 1
	sifPartPrimSys int32 = 2
	sifPartData    int32 = 3
	sifPartOverlay int32 = 4

	sifFormatPEM      int32 = 2
	sifMessageRSAOAEP int32 = 0x200

	sifGroupMask uint32 = 0xF0000000 // group IDs and group links carry these bits
)

var (
	sifMagic   = []byte("SIF_MAGIC\x00")
	sifVersion = []byte("01\x00")
	luksMagic  = []byte("LUKS\xba\xbe")
)

// sifArchCodes maps GOARCH names to SIF arch codes; "00" means unknown.
var sifArchCodes = []textPair{
	{"386", "01"}, {"amd64", "02"}, {"arm", "03"}, {"arm64", "04"}, {"ppc64", "05"}, {"ppc64le", "06"},
	{"mips", "07"}, {"mipsle", "08"}, {"mips64", "09"}, {"mips64le", "10"}, {"s390x", "11"},
	{"riscv64", "12"}, {"loong64", "13"},
}

// sifArchCode returns the SIF code of a GOARCH name, "" if SIF has none.
func sifArchCode(goarch string) string {
	code, _ := lookupText(sifArchCodes, goarch)
	return code
}

// sifArchName names a SIF arch code for messages: the GOARCH name, or the escaped code.
func sifArchName(code string) string {
	for _, p := range sifArchCodes {
		if p.val == code {
			return p.key
		}
	}
	if code == "00" {
		return "unknown"
	}
	return "arch code " + escapeText(code)
}

// sifObject is one used descriptor of a parsed SIF.
type sifObject struct {
	slot            int // index in the descriptor table
	dataType        int32
	id              uint32
	groupID         uint32 // as stored, usually with sifGroupMask set
	linkedID        uint32 // as stored: an object ID or group|sifGroupMask
	offset, size    int64
	sizeWithPadding int64
	createdAt       int64
	modifiedAt      int64
	name            string // cut at the first NUL; may hold any bytes, escape before printing
	extra           [sifExtraSize]byte

	// Partition metadata (dataType == sifDataPartition).
	fstype, parttype int32
	arch             string // two-character code, e.g. "02"; escape before printing

	// CryptoMessage metadata (dataType == sifDataCryptoMessage).
	formatType, messageType int32
}

// sifFile is a parsed SIF: the header fields and the used descriptors in table order.
type sifFile struct {
	launchScript      string
	arch              string
	id                [16]byte
	createdAt         int64
	modifiedAt        int64
	descriptorsFree   int64
	descriptorsTotal  int64
	descriptorsOffset int64
	descriptorsSize   int64
	dataOffset        int64
	dataSize          int64
	objects           []sifObject
}

// rootfsKind says how the bytes at imageRootfs.offset are mounted.
type rootfsKind int

const (
	rootfsSquashfs  rootfsKind = iota + 1 // squashfs, loop-mounted directly
	rootfsEncrypted                       // LUKS container holding a squashfs
)

// imageRootfs is where the root filesystem of an image file lies.
type imageRootfs struct {
	format       string // "sif" or "squashfs"
	kind         rootfsKind
	offset, size int64  // of the squashfs (or LUKS) bytes inside the file
	partID       uint32 // SIF partition ID, 0 for bare squashfs
	keyMessage   *sifObject
}

// sifPanicMark appears in the error of a recovered parser panic, so tests and fuzzers can tell
// a bug from a refusal.
const sifPanicMark = "recovered panic"

// recoverImageParser turns a panic in a parser into an E_IMAGE error (security.md R9).
func recoverImageParser(err *error, what, name string) {
	if p := recover(); p != nil {
		*err = failf(eImage, "%s %s: %s: %v", what, escapeText(name), sifPanicMark, p)
	}
}

// sifReadAt fills buf from r at off; a short read means the file is shorter than it claimed.
func sifReadAt(r io.ReaderAt, buf []byte, off int64, name, what string) error {
	n, err := r.ReadAt(buf, off)
	if n == len(buf) {
		return nil
	}
	if err == nil || err == io.EOF || err == io.ErrUnexpectedEOF {
		return failf(eImage, "image %s: %s truncated: %d of %d bytes at offset %d", escapeText(name), what, n, len(buf), off)
	}
	return failf(eSystem, "read %s of %s at offset %d: %v", what, escapeText(name), off, err)
}

// locateRootfs recognises a regular image file (spec §1.4) and returns where its root filesystem
// is. Directories are handled by the caller. name is used only in messages.
func locateRootfs(r io.ReaderAt, fileSize int64, name string) (root imageRootfs, err error) {
	defer recoverImageParser(&err, "image", name)
	n := escapeText(name)
	if fileSize <= 0 {
		return imageRootfs{}, failf(eImage, "image %s is empty", n)
	}
	// 2048 bytes cover every magic we look at: SIF at 32, squashfs and LUKS at 0, ext at 1080.
	head := make([]byte, min(fileSize, 2048))
	if err := sifReadAt(r, head, 0, name, "image header"); err != nil {
		return imageRootfs{}, err
	}
	r = cachedHead{head, r} // the parsers below start at 0 too: no byte is read twice
	switch {
	case len(head) >= 42 && bytes.Equal(head[32:42], sifMagic):
		f, err := parseSIF(r, fileSize, name)
		if err != nil {
			return imageRootfs{}, err
		}
		return f.rootfs(r, name)
	case bytes.HasPrefix(head, []byte("hsqs")):
		if err := checkSquashfsSuper(r, 0, fileSize, name); err != nil {
			return imageRootfs{}, err
		}
		return imageRootfs{format: "squashfs", kind: rootfsSquashfs, offset: 0, size: fileSize}, nil
	case len(head) >= 1082 && head[1080] == 0x53 && head[1081] == 0xef:
		return imageRootfs{}, failf(ePolicy, "image %s: ext2/3/4 images are not supported: a setuid runtime must not kernel-mount user-supplied extfs (CVE-2023-30549)", n)
	case bytes.HasPrefix(head, luksMagic):
		return imageRootfs{}, failf(eImage, "image %s: bare LUKS image: wrap it in a SIF (minirun build --encrypt)", n)
	}
	return imageRootfs{}, failf(eImage, "image %s: unrecognised image format", n)
}

// cachedHead serves reads that lie within the bytes already read from the
// start of the file out of memory, and the rest from the file.
type cachedHead struct {
	head []byte
	r    io.ReaderAt
}

func (a cachedHead) ReadAt(p []byte, off int64) (int, error) {
	if off >= 0 && off <= int64(len(a.head))-int64(len(p)) {
		return copy(p, a.head[off:]), nil
	}
	return a.r.ReadAt(p, off)
}

// parseSIF reads and validates the header and descriptor table of a SIF (spec §1.2). It reads at
// most 128 + 149 760 bytes and allocates nothing sized by an unchecked field.
func parseSIF(r io.ReaderAt, fileSize int64, name string) (f *sifFile, err error) {
	defer recoverImageParser(&err, "SIF", name)
	n := escapeText(name)
	bad := func(format string, args ...any) error {
		return failf(eImage, "SIF %s: "+format, append([]any{n}, args...)...)
	}
	if fileSize < sifHeaderSize {
		return nil, bad("%d bytes is too short for a SIF header", fileSize)
	}
	var h [sifHeaderSize]byte
	if err := sifReadAt(r, h[:], 0, name, "SIF header"); err != nil {
		return nil, err
	}
	if !bytes.Equal(h[32:42], sifMagic) {
		return nil, bad("bad magic")
	}
	if !bytes.Equal(h[42:45], sifVersion) {
		return nil, bad("unsupported version %q", escapeText(string(h[42:45])))
	}
	arch := h[45:48]
	if !isSIFArchCode(arch[:2]) || arch[2] != 0 {
		return nil, bad("bad header arch %q", escapeText(string(arch)))
	}
	le := binary.LittleEndian
	f = &sifFile{
		launchScript:      cutNUL(h[0:32]),
		arch:              string(arch[:2]),
		createdAt:         int64(le.Uint64(h[64:])),
		modifiedAt:        int64(le.Uint64(h[72:])),
		descriptorsFree:   int64(le.Uint64(h[80:])),
		descriptorsTotal:  int64(le.Uint64(h[88:])),
		descriptorsOffset: int64(le.Uint64(h[96:])),
		descriptorsSize:   int64(le.Uint64(h[104:])),
		dataOffset:        int64(le.Uint64(h[112:])),
		dataSize:          int64(le.Uint64(h[120:])),
	}
	copy(f.id[:], h[48:64])

	total, tableOff, tableSize := f.descriptorsTotal, f.descriptorsOffset, f.descriptorsSize
	switch {
	case total < 1 || total > sifMaxDescriptors:
		return nil, bad("descriptor count %d outside 1..%d", total, sifMaxDescriptors)
	case tableSize != total*sifDescriptorSize: // total is bounded, no overflow
		return nil, bad("descriptor table size %d is not %d × %d", tableSize, total, sifDescriptorSize)
	case f.descriptorsFree < 0 || f.descriptorsFree > total:
		return nil, bad("free descriptor count %d outside 0..%d", f.descriptorsFree, total)
	case tableOff < sifHeaderSize:
		return nil, bad("descriptor table at %d overlaps the header", tableOff)
	case tableOff > fileSize-tableSize: // fileSize ≥ 128 and tableSize ≤ 149 760: no overflow
		return nil, bad("descriptor table [%d, +%d) out of bounds (file size %d)", tableOff, tableSize, fileSize)
	case f.dataOffset < 0 || f.dataSize < 0:
		return nil, bad("negative data offset %d or size %d", f.dataOffset, f.dataSize)
	}
	tableEnd := tableOff + tableSize

	table := make([]byte, tableSize)
	if err := sifReadAt(r, table, tableOff, name, "SIF descriptor table"); err != nil {
		return nil, err
	}
	f.objects = make([]sifObject, 0, total)
	ids := make(map[uint32]int, total)
	for slot := range int(total) {
		d := table[slot*sifDescriptorSize : (slot+1)*sifDescriptorSize]
		switch d[4] {
		case 0:
			continue // unused slots are never interpreted
		case 1:
		default:
			return nil, bad("descriptor %d: Used = %d", slot, d[4])
		}
		o := sifObject{
			slot:            slot,
			dataType:        int32(le.Uint32(d[0:])),
			id:              le.Uint32(d[5:]),
			groupID:         le.Uint32(d[9:]),
			linkedID:        le.Uint32(d[13:]),
			offset:          int64(le.Uint64(d[17:])),
			size:            int64(le.Uint64(d[25:])),
			sizeWithPadding: int64(le.Uint64(d[33:])),
			createdAt:       int64(le.Uint64(d[41:])),
			modifiedAt:      int64(le.Uint64(d[49:])),
			name:            cutNUL(d[73 : 73+sifNameSize]),
		}
		copy(o.extra[:], d[201:201+sifExtraSize])
		if o.id == 0 {
			return nil, bad("descriptor %d has ID 0", slot)
		}
		if prev, dup := ids[o.id]; dup {
			return nil, bad("descriptors %d and %d share ID %d", prev, slot, o.id)
		}
		ids[o.id] = slot
		// Objects lie after the table and inside the file; compare without adding.
		if o.offset < tableEnd || o.offset > fileSize || o.size < 0 || o.size > fileSize-o.offset {
			return nil, bad("object %d [%d, +%d) out of bounds (data after %d, file size %d)", o.id, o.offset, o.size, tableEnd, fileSize)
		}
		if o.sizeWithPadding < o.size {
			return nil, bad("object %d: SizeWithPadding %d < Size %d", o.id, o.sizeWithPadding, o.size)
		}
		switch o.dataType {
		case sifDataPartition:
			o.fstype = int32(le.Uint32(o.extra[0:]))
			o.parttype = int32(le.Uint32(o.extra[4:]))
			o.arch = cutNUL(o.extra[8:11])
			if o.fstype < sifFsSquashfs || o.fstype > sifFsGocryptfsSquashfs {
				return nil, bad("partition %d: unknown filesystem type %d", o.id, o.fstype)
			}
			if o.parttype < sifPartSystem || o.parttype > sifPartOverlay {
				return nil, bad("partition %d: unknown partition type %d", o.id, o.parttype)
			}
		case sifDataCryptoMessage:
			o.formatType = int32(le.Uint32(o.extra[0:]))
			o.messageType = int32(le.Uint32(o.extra[4:]))
		}
		f.objects = append(f.objects, o)
	}

	// No two non-empty objects share a byte: sort by offset, compare neighbours.
	spans := make([]*sifObject, 0, len(f.objects))
	for i := range f.objects {
		if f.objects[i].size > 0 {
			spans = append(spans, &f.objects[i])
		}
	}
	slices.SortFunc(spans, func(a, b *sifObject) int { return cmp.Compare(a.offset, b.offset) })
	for i := 1; i < len(spans); i++ {
		a, b := spans[i-1], spans[i]
		if a.offset+a.size > b.offset { // both in bounds: no overflow
			return nil, bad("objects %d [%d, +%d) and %d [%d, +%d) overlap", a.id, a.offset, a.size, b.id, b.offset, b.size)
		}
	}
	return f, nil
}

// rootfs applies Apptainer's rule (spec §1.3): the single PrimSys partition, of the host arch,
// squashfs or LUKS-encrypted squashfs.
func (f *sifFile) rootfs(r io.ReaderAt, name string) (imageRootfs, error) {
	n := escapeText(name)
	var part *sifObject
	count := 0
	for i := range f.objects {
		o := &f.objects[i]
		if o.dataType == sifDataPartition && o.parttype == sifPartPrimSys {
			count++
			part = o
		}
	}
	if count != 1 {
		return imageRootfs{}, failf(eImage, "SIF %s: no root filesystem found (%d primary partitions)", n, count)
	}
	host := sifArchCode(runtime.GOARCH)
	if part.arch != "00" && part.arch != host {
		return imageRootfs{}, failf(eImage, "SIF %s: image is for %s, host is %s", n, sifArchName(part.arch), runtime.GOARCH)
	}
	root := imageRootfs{format: "sif", offset: part.offset, size: part.size, partID: part.id}
	switch part.fstype {
	case sifFsSquashfs:
		if err := checkSquashfsSuper(r, part.offset, part.size, name); err != nil {
			return imageRootfs{}, err
		}
		root.kind = rootfsSquashfs
	case sifFsEncryptedSquashfs:
		var magic [6]byte
		if part.size < int64(len(magic)) {
			return imageRootfs{}, failf(eImage, "SIF %s: encrypted partition of %d bytes is too small for a LUKS header", n, part.size)
		}
		if err := sifReadAt(r, magic[:], part.offset, name, "encrypted partition"); err != nil {
			return imageRootfs{}, err
		}
		if !bytes.Equal(magic[:], luksMagic) {
			return imageRootfs{}, failf(eImage, "SIF %s: encrypted partition does not start with a LUKS header", n)
		}
		root.kind = rootfsEncrypted
		root.keyMessage = f.keyMessageFor(part.id)
	case sifFsGocryptfsSquashfs:
		return imageRootfs{}, failf(ePolicy, "SIF %s: gocryptfs-encrypted SIF (Apptainer unprivileged encryption) is not supported; rebuild with minirun build --encrypt", n)
	case sifFsExt3:
		return imageRootfs{}, failf(ePolicy, "SIF %s: ext3 images are not supported (CVE-2023-30549)", n)
	default: // ImmuObj, Raw; the parser refused everything outside 1..6
		return imageRootfs{}, failf(ePolicy, "SIF %s: unsupported partition type (filesystem type %d)", n, part.fstype)
	}
	return root, nil
}

// keyMessageFor returns the first PEM RSA-OAEP crypto message linked to object id (spec §1.3.4).
func (f *sifFile) keyMessageFor(id uint32) *sifObject {
	if id&sifGroupMask == sifGroupMask {
		return nil // such an ID cannot be told apart from a group link
	}
	for i := range f.objects {
		o := &f.objects[i]
		if o.dataType == sifDataCryptoMessage && o.linkedID == id &&
			o.formatType == sifFormatPEM && o.messageType == sifMessageRSAOAEP {
			c := *o
			return &c
		}
	}
	return nil
}

// readSIFObject reads a whole (small) object, refusing one larger than limit bytes.
func readSIFObject(r io.ReaderAt, o *sifObject, limit int64, name string) ([]byte, error) {
	if o.size < 0 || o.size > limit {
		return nil, failf(eImage, "SIF %s: object %d is %d bytes, more than the %d allowed", escapeText(name), o.id, o.size, limit)
	}
	buf := make([]byte, o.size)
	if err := sifReadAt(r, buf, o.offset, name, fmt.Sprintf("SIF object %d", o.id)); err != nil {
		return nil, err
	}
	return buf, nil
}

// squashfs superblock facts (spec §1.4).
const (
	squashfsSuperSize = 96
	squashfsMagic     = 0x73717368 // "hsqs" little-endian
)

// checkSquashfsSuper checks the squashfs superblock at offset within a size-byte partition. It
// catches mistakes and lies in descriptors, not crafted filesystems (security.md R11).
func checkSquashfsSuper(r io.ReaderAt, offset, size int64, name string) (err error) {
	defer recoverImageParser(&err, "squashfs", name)
	n := escapeText(name)
	if offset < 0 || size < squashfsSuperSize || offset > math.MaxInt64-size {
		return failf(eImage, "image %s: %d bytes at offset %d cannot hold a squashfs", n, size, offset)
	}
	var sb [squashfsSuperSize]byte
	if err := sifReadAt(r, sb[:], offset, name, "squashfs superblock"); err != nil {
		return err
	}
	le := binary.LittleEndian
	blockSize := le.Uint32(sb[12:])
	compression := le.Uint16(sb[20:])
	blockLog := le.Uint16(sb[22:])
	major, minor := le.Uint16(sb[28:]), le.Uint16(sb[30:])
	bytesUsed := le.Uint64(sb[40:])
	switch {
	case le.Uint32(sb[0:]) != squashfsMagic:
		return failf(eImage, "image %s: not a squashfs (bad magic)", n)
	case major != 4 || minor != 0:
		return failf(eImage, "image %s: squashfs version %d.%d, want 4.0", n, major, minor)
	case compression < 1 || compression > 6:
		return failf(eImage, "image %s: unknown squashfs compression %d", n, compression)
	case blockLog < 12 || blockLog > 20 || blockSize != 1<<blockLog:
		return failf(eImage, "image %s: bad squashfs block size %d (log %d)", n, blockSize, blockLog)
	case bytesUsed < squashfsSuperSize || bytesUsed > uint64(size):
		return failf(eImage, "image %s: squashfs claims %d bytes, partition has %d", n, bytesUsed, size)
	}
	return nil
}

// isSIFArchCode is true for "00" … "13".
func isSIFArchCode(b []byte) bool {
	if len(b) != 2 || b[0] < '0' || b[0] > '9' || b[1] < '0' || b[1] > '9' {
		return false
	}
	return (b[0]-'0')*10+b[1]-'0' <= 13
}

func cutNUL(b []byte) string {
	if i := bytes.IndexByte(b, 0); i >= 0 {
		b = b[:i]
	}
	return string(b)
}

// ---- writer (minirun build) ----

// sifNewObject is one object for writeSIF. Objects get IDs 1, 2, … in list order, so a message
// can link to a partition written before it.
type sifNewObject struct {
	dataType int32
	data     io.Reader // exactly size bytes are taken, and data must then be at EOF
	size     int64
	align    int64  // 4096 for partitions, 0 for none
	group    uint32 // group number (1 is the default group); stored as group|0xF0000000
	linkedID uint32 // as stored: an object ID, or group|0xF0000000
	name     string // ≤ 128 bytes
	extra    []byte // ≤ 384 bytes
}

// sifWriteOptions are the header fields a build chooses; the zero value is deterministic.
type sifWriteOptions struct {
	launchScript string   // < 32 bytes, e.g. "#!/usr/bin/env run-singularity\n"; empty as siftool new
	id           [16]byte // image UUID; zero for a deterministic image
	unixTime     int64    // CreatedAt/ModifiedAt of header and descriptors
}

// sifRootfsObject describes the primary-system partition: fstype 1 (squashfs) or 5 (LUKS).
func sifRootfsObject(data io.Reader, size int64, fstype int32, goarch string) (sifNewObject, error) {
	code := sifArchCode(goarch)
	if code == "" {
		return sifNewObject{}, failf(eUsage, "SIF has no code for architecture %s", escapeText(goarch))
	}
	if fstype != sifFsSquashfs && fstype != sifFsEncryptedSquashfs {
		return sifNewObject{}, failf(eInternal, "SIF rootfs with filesystem type %d", fstype)
	}
	extra := make([]byte, 11)
	binary.LittleEndian.PutUint32(extra[0:], uint32(fstype))
	binary.LittleEndian.PutUint32(extra[4:], uint32(sifPartPrimSys))
	copy(extra[8:], code)
	return sifNewObject{dataType: sifDataPartition, data: data, size: size, align: sifPartitionAlign, group: 1, extra: extra}, nil
}

// sifMetadataObject describes a small unaligned object in group 1, such as the deffile or the
// labels JSON (which stay unencrypted in encrypted images).
func sifMetadataObject(dataType int32, data []byte) sifNewObject {
	return sifNewObject{dataType: dataType, data: bytes.NewReader(data), size: int64(len(data)), group: 1}
}

// sifKeyMessageObject describes the PEM RSA-OAEP message holding the LUKS key (spec §3.3).
func sifKeyMessageObject(pem []byte, partID uint32) sifNewObject {
	extra := make([]byte, 8)
	binary.LittleEndian.PutUint32(extra[0:], uint32(sifFormatPEM))
	binary.LittleEndian.PutUint32(extra[4:], uint32(sifMessageRSAOAEP))
	return sifNewObject{dataType: sifDataCryptoMessage, data: bytes.NewReader(pem), size: int64(len(pem)),
		group: 1, linkedID: partID, extra: extra}
}

// writeSIF writes a SIF with the sif v2 layout (header, 48-slot table at 4096, objects in list
// order from 32176, partitions aligned to 4096), the bytes sif v2.25.0 writes for the same input.
// Every byte up to the returned size is written, padding included; the header goes last, so an
// interrupted write leaves no SIF magic. w should be empty, or be truncated to the size after.
func writeSIF(w io.WriterAt, objs []sifNewObject, opt sifWriteOptions) (int64, error) {
	if len(objs) > sifWriterSlots {
		return 0, failf(eInternal, "SIF with %d objects, at most %d", len(objs), sifWriterSlots)
	}
	if len(opt.launchScript) >= 32 {
		return 0, failf(eUsage, "SIF launch script longer than 31 bytes")
	}
	le := binary.LittleEndian
	const tableSize = sifWriterSlots * sifDescriptorSize
	const dataOffset = sifWriterTableOffset + tableSize
	head := make([]byte, dataOffset) // header, zero gap, table
	arch, primary := "00", false
	end := int64(dataOffset)
	var zeros [sifPartitionAlign]byte
	for i, o := range objs {
		if o.size < 0 || len(o.name) > sifNameSize || len(o.extra) > sifExtraSize || o.align < 0 || o.align > sifPartitionAlign {
			return 0, failf(eInternal, "SIF object %d: bad size, name, extra or alignment", i+1)
		}
		start := end
		if o.align > 0 && start%o.align != 0 {
			start += o.align - start%o.align
		}
		if _, err := w.WriteAt(zeros[:start-end], end); err != nil {
			return 0, failf(eSystem, "write SIF padding: %v", err)
		}
		if start > math.MaxInt64-o.size {
			return 0, failf(eInternal, "SIF object %d too large", i+1)
		}
		if err := sifCopyObject(io.NewOffsetWriter(w, start), o.data, o.size, i+1); err != nil {
			return 0, err
		}
		if o.dataType == sifDataPartition && len(o.extra) >= 11 && int32(le.Uint32(o.extra[4:])) == sifPartPrimSys {
			if primary {
				return 0, failf(eInternal, "SIF with two primary partitions")
			}
			primary = true
			if arch = cutNUL(o.extra[8:11]); !isSIFArchCode([]byte(arch)) {
				arch = "00"
			}
		}
		d := head[sifWriterTableOffset+i*sifDescriptorSize:][:sifDescriptorSize]
		le.PutUint32(d[0:], uint32(o.dataType))
		d[4] = 1
		le.PutUint32(d[5:], uint32(i+1))
		le.PutUint32(d[9:], o.group|sifGroupMask)
		le.PutUint32(d[13:], o.linkedID)
		le.PutUint64(d[17:], uint64(start))
		le.PutUint64(d[25:], uint64(o.size))
		le.PutUint64(d[33:], uint64(start-end+o.size))
		le.PutUint64(d[41:], uint64(opt.unixTime))
		le.PutUint64(d[49:], uint64(opt.unixTime))
		copy(d[73:73+sifNameSize], o.name)
		copy(d[201:201+sifExtraSize], o.extra)
		end = start + o.size
	}
	copy(head[0:32], opt.launchScript)
	copy(head[32:42], sifMagic)
	copy(head[42:45], sifVersion)
	copy(head[45:47], arch)
	copy(head[48:64], opt.id[:])
	le.PutUint64(head[64:], uint64(opt.unixTime))
	le.PutUint64(head[72:], uint64(opt.unixTime))
	le.PutUint64(head[80:], uint64(sifWriterSlots-len(objs)))
	le.PutUint64(head[88:], sifWriterSlots)
	le.PutUint64(head[96:], sifWriterTableOffset)
	le.PutUint64(head[104:], tableSize)
	le.PutUint64(head[112:], dataOffset)
	le.PutUint64(head[120:], uint64(end-dataOffset))
	if _, err := w.WriteAt(head[sifHeaderSize:], sifHeaderSize); err != nil {
		return 0, failf(eSystem, "write SIF descriptor table: %v", err)
	}
	if _, err := w.WriteAt(head[:sifHeaderSize], 0); err != nil {
		return 0, failf(eSystem, "write SIF header: %v", err)
	}
	return end, nil
}

// sifCopyObject copies exactly size bytes of src to dst and checks that src then ends, so a
// source that changed size during the build is noticed.
func sifCopyObject(dst io.Writer, src io.Reader, size int64, id int) error {
	if src == nil {
		if size == 0 {
			return nil
		}
		return failf(eInternal, "SIF object %d has no data", id)
	}
	buf := make([]byte, min(size+1, 1<<20))
	n, err := io.CopyBuffer(dst, io.LimitReader(src, size), buf)
	if err != nil {
		return failf(eSystem, "write SIF object %d: %v", id, err)
	}
	if n != size {
		return failf(eSystem, "write SIF object %d: source ended after %d of %d bytes", id, n, size)
	}
	if m, _ := io.ReadFull(src, buf[:1]); m != 0 {
		return failf(eSystem, "write SIF object %d: source is longer than %d bytes", id, size)
	}
	return nil
}
