// sif_test.go tests the SIF reader against images written by the reference library
// (github.com/apptainer/sif/v2) and hostile variants of them, the squashfs check, image detection,
// and the writer (byte-identical to the library's output); it also holds the SIF fuzz targets.
package main

import (
	"bytes"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"io"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/metrics"
	"strings"
	"testing"
	"time"

	"github.com/apptainer/sif/v2/pkg/sif"
)

// ---- helpers ----

// sifFakeSquashfs is a squashfs superblock (gzip, 128 KiB blocks, version 4.0) padded to size bytes.
func sifFakeSquashfs(size int) []byte {
	b := make([]byte, size)
	le := binary.LittleEndian
	le.PutUint32(b[0:], squashfsMagic)
	le.PutUint32(b[4:], 1)       // inodes
	le.PutUint32(b[12:], 131072) // block_size
	le.PutUint16(b[20:], 1)      // zlib
	le.PutUint16(b[22:], 17)     // block_log
	le.PutUint16(b[28:], 4)
	le.PutUint16(b[30:], 0)
	le.PutUint64(b[40:], uint64(min(size, 4000))) // bytes_used
	for i := 96; i < size; i++ {
		b[i] = byte(i * 7)
	}
	return b
}

func sifFakeLUKS(size int) []byte {
	b := make([]byte, size)
	copy(b, luksMagic)
	binary.BigEndian.PutUint16(b[6:], 2)
	return b
}

// sifLibImage writes a deterministic SIF with the reference library.
func sifLibImage(t testing.TB, dis ...sif.DescriptorInput) []byte {
	t.Helper()
	buf := sif.NewBuffer(nil)
	if _, err := sif.CreateContainer(buf, sif.OptCreateDeterministic(), sif.OptCreateWithDescriptors(dis...)); err != nil {
		t.Fatalf("sif.CreateContainer: %v", err)
	}
	return sifCloneBytes(buf.Bytes())
}

func sifCloneBytes(b []byte) []byte { return append([]byte(nil), b...) }

func sifLibInput(t testing.TB, dt sif.DataType, data []byte, opts ...sif.DescriptorInputOpt) sif.DescriptorInput {
	t.Helper()
	di, err := sif.NewDescriptorInput(dt, bytes.NewReader(data), opts...)
	if err != nil {
		t.Fatalf("sif.NewDescriptorInput: %v", err)
	}
	return di
}

// sifBaseImage has a deffile (ID 1, slot 0), a host-arch squashfs PrimSys partition (ID 2, slot 1)
// and a labels object (ID 3, slot 2).
func sifBaseImage(t testing.TB) []byte {
	return sifLibImage(t,
		sifLibInput(t, sif.DataDeffile, []byte("Bootstrap: scratch\n")),
		sifLibInput(t, sif.DataPartition, sifFakeSquashfs(8192), sif.OptPartitionMetadata(sif.FsSquash, sif.PartPrimSys, runtime.GOARCH)),
		sifLibInput(t, sif.DataLabels, []byte(`{"a":"b"}`)),
	)
}

// sifCompact repacks a SIF the way no writer does: a table of exactly its objects at 128, the
// objects unaligned right after. Readers must accept it, and it keeps fuzz inputs small.
func sifCompact(t testing.TB, img []byte) []byte {
	t.Helper()
	f, err := parseSIF(bytes.NewReader(img), int64(len(img)), "compact")
	if err != nil {
		t.Fatal(err)
	}
	n := len(f.objects)
	tableEnd := sifHeaderSize + n*sifDescriptorSize
	out := make([]byte, tableEnd)
	copy(out, img[:sifHeaderSize])
	sifPut64(out, sifHFree, 0)
	sifPut64(out, sifHTotal, int64(n))
	sifPut64(out, sifHDescOff, sifHeaderSize)
	sifPut64(out, sifHDescSize, int64(n*sifDescriptorSize))
	sifPut64(out, sifHDataOff, int64(tableEnd))
	for i, o := range f.objects {
		d := sifHeaderSize + i*sifDescriptorSize
		copy(out[d:d+sifDescriptorSize], img[f.descriptorsOffset+int64(o.slot)*sifDescriptorSize:])
		sifPut64(out, d+sifDOffset, int64(len(out)))
		sifPut64(out, d+sifDSizePad, o.size)
		out = append(out, img[o.offset:o.offset+o.size]...)
	}
	sifPut64(out, sifHDataSize, int64(len(out)-tableEnd))
	return out
}

// Byte offsets of header and descriptor fields (spec §1.1).
const (
	sifHFree, sifHTotal, sifHDescOff, sifHDescSize, sifHDataOff, sifHDataSize                     = 80, 88, 96, 104, 112, 120
	sifDType, sifDUsed, sifDID, sifDGroup, sifDLink, sifDOffset, sifDSize, sifDSizePad, sifDExtra = 0, 4, 5, 9, 13, 17, 25, 33, 201
)

func sifPut64(b []byte, off int, v int64)  { binary.LittleEndian.PutUint64(b[off:], uint64(v)) }
func sifPut32(b []byte, off int, v uint32) { binary.LittleEndian.PutUint32(b[off:], v) }
func sifGet64(b []byte, off int) int64     { return int64(binary.LittleEndian.Uint64(b[off:])) }
func sifSlotOff(slot int) int              { return sifWriterTableOffset + slot*sifDescriptorSize }

// sifForeignArch is a SIF arch code that is not the host's.
func sifForeignArch() string {
	if runtime.GOARCH == "arm64" {
		return "02"
	}
	return "04"
}

// checkSIFErr asserts that err is a minirun error of class want whose text contains msg.
func checkSIFErr(t *testing.T, err error, want errClass, msg string) {
	t.Helper()
	if err == nil {
		t.Fatalf("accepted, want %s %q", want, msg)
	}
	if got := classOf(err); got != want {
		t.Errorf("class %s, want %s: %v", got, want, err)
	}
	if !strings.Contains(err.Error(), msg) {
		t.Errorf("error %q does not contain %q", err, msg)
	}
	if strings.Contains(err.Error(), sifPanicMark) {
		t.Errorf("parser panicked: %v", err)
	}
}

// sifCountingReader counts the bytes asked of it, to prove reads are bounded.
type sifCountingReader struct {
	r io.ReaderAt
	n int64
}

func (c *sifCountingReader) ReadAt(p []byte, off int64) (int, error) {
	c.n += int64(len(p))
	return c.r.ReadAt(p, off)
}

// sifMemWriter is an in-memory io.WriterAt that grows.
type sifMemWriter struct{ buf []byte }

func (m *sifMemWriter) WriteAt(p []byte, off int64) (int, error) {
	if end := off + int64(len(p)); end > int64(len(m.buf)) {
		m.buf = append(m.buf, make([]byte, end-int64(len(m.buf)))...)
	}
	return copy(m.buf[off:], p), nil
}

// sifAllocDuring returns the heap bytes allocated while fn runs (TotalAlloc, read through
// runtime/metrics because ReadMemStats stops the world, which stalls fuzzing on a busy machine).
func sifAllocDuring(fn func()) uint64 {
	s := []metrics.Sample{{Name: "/gc/heap/allocs:bytes"}}
	metrics.Read(s)
	before := s[0].Value.Uint64()
	fn()
	metrics.Read(s)
	return s[0].Value.Uint64() - before
}

// sifCheckAlloc fails t if fn allocates more than limit bytes. The counter is process-wide, and
// a fuzz worker's own goroutines allocate now and then, so an excess must repeat to count.
func sifCheckAlloc(t *testing.T, limit uint64, fn func()) {
	t.Helper()
	if n := sifAllocDuring(fn); n > limit {
		if n = sifAllocDuring(fn); n > limit {
			t.Fatalf("allocated %d bytes, limit %d", n, limit)
		}
	}
}

// ---- reading valid images ----

func TestLocateRootfsValidSIF(t *testing.T) {
	img := sifBaseImage(t)
	lib, err := sif.LoadContainer(sif.NewBuffer(sifCloneBytes(img)))
	if err != nil {
		t.Fatal(err)
	}
	d, err := lib.GetDescriptor(sif.WithPartitionType(sif.PartPrimSys))
	if err != nil {
		t.Fatal(err)
	}
	root, err := locateRootfs(bytes.NewReader(img), int64(len(img)), "base.sif")
	if err != nil {
		t.Fatalf("locateRootfs: %v", err)
	}
	want := imageRootfs{format: "sif", kind: rootfsSquashfs, offset: d.Offset(), size: d.Size(), partID: d.ID()}
	if root != want {
		t.Fatalf("got %+v, want %+v", root, want)
	}
	if root.offset%4096 != 0 || root.size != 8192 || root.partID != 2 {
		t.Fatalf("unexpected layout %+v", root)
	}

	f, err := parseSIF(bytes.NewReader(img), int64(len(img)), "base.sif")
	if err != nil {
		t.Fatal(err)
	}
	if len(f.objects) != 3 || f.descriptorsTotal != 48 || f.descriptorsFree != 45 || f.arch != sifArchCode(runtime.GOARCH) {
		t.Fatalf("parsed %+v", f)
	}
	for i, o := range f.objects {
		ld, err := lib.GetDescriptor(sif.WithID(o.id))
		if err != nil {
			t.Fatal(err)
		}
		if int32(ld.DataType()) != o.dataType || ld.Offset() != o.offset || ld.Size() != o.size ||
			ld.GroupID() != o.groupID&^sifGroupMask || o.slot != i {
			t.Errorf("object %d differs from the library's view: %+v", o.id, o)
		}
	}
}

// Readers locate objects only by descriptor offsets (spec §1.1): a compact layout is accepted.
func TestLocateRootfsCompactLayout(t *testing.T) {
	img := sifCompact(t, sifBaseImage(t))
	root, err := locateRootfs(bytes.NewReader(img), int64(len(img)), "compact.sif")
	if err != nil {
		t.Fatal(err)
	}
	if root.offset != sifHeaderSize+3*sifDescriptorSize+int64(len("Bootstrap: scratch\n")) || root.size != 8192 {
		t.Fatalf("rootfs %+v", root)
	}
	if _, err := sif.LoadContainer(sif.NewBuffer(img)); err != nil {
		t.Fatalf("reference loader: %v", err)
	}
}

func TestLocateRootfsArchUnknownAccepted(t *testing.T) {
	img := sifBaseImage(t)
	copy(img[sifSlotOff(1)+sifDExtra+8:], "00")
	if _, err := locateRootfs(bytes.NewReader(img), int64(len(img)), "x"); err != nil {
		t.Fatalf("arch 00 refused: %v", err)
	}
}

func TestLocateRootfsEncrypted(t *testing.T) {
	pem := []byte("-----BEGIN MESSAGE-----\nAAAA\n-----END MESSAGE-----\n")
	other := []byte("-----BEGIN MESSAGE-----\nBBBB\n-----END MESSAGE-----\n")
	part := func() sif.DescriptorInput {
		return sifLibInput(t, sif.DataPartition, sifFakeLUKS(16384), sif.OptPartitionMetadata(sif.FsEncryptedSquashfs, sif.PartPrimSys, runtime.GOARCH))
	}
	msg := func(data []byte, opts ...sif.DescriptorInputOpt) sif.DescriptorInput {
		return sifLibInput(t, sif.DataCryptoMessage, data, opts...)
	}
	pemOpt := sif.OptCryptoMessageMetadata(sif.FormatPEM, sif.MessageRSAOAEP)
	cases := []struct {
		name    string
		img     []byte
		wantMsg []byte // nil: no key message
	}{
		{"linked PEM", sifLibImage(t, part(), msg(pem, sif.OptLinkedID(1), pemOpt)), pem},
		{"first in table order wins", sifLibImage(t, part(), msg(pem, sif.OptLinkedID(1), pemOpt), msg(other, sif.OptLinkedID(1), pemOpt)), pem},
		{"passphrase mode", sifLibImage(t, part()), nil},
		{"not linked", sifLibImage(t, part(), msg(pem, pemOpt)), nil},
		{"group link", sifLibImage(t, part(), msg(pem, sif.OptLinkedGroupID(1), pemOpt)), nil},
		{"linked to another object", sifLibImage(t, sifLibInput(t, sif.DataDeffile, []byte("x")), part(), msg(pem, sif.OptLinkedID(1), pemOpt)), nil},
		{"OpenPGP", sifLibImage(t, part(), msg(pem, sif.OptLinkedID(1), sif.OptCryptoMessageMetadata(sif.FormatOpenPGP, sif.MessageRSAOAEP))), nil},
		{"clear signature", sifLibImage(t, part(), msg(pem, sif.OptLinkedID(1), sif.OptCryptoMessageMetadata(sif.FormatPEM, sif.MessageClearSignature))), nil},
		{"skips a wrong one", sifLibImage(t, part(), msg(other, sif.OptLinkedID(1)), msg(pem, sif.OptLinkedID(1), pemOpt)), pem},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := bytes.NewReader(c.img)
			root, err := locateRootfs(r, int64(len(c.img)), "enc.sif")
			if err != nil {
				t.Fatal(err)
			}
			if root.kind != rootfsEncrypted || root.format != "sif" || root.size != 16384 || root.offset%4096 != 0 {
				t.Fatalf("got %+v", root)
			}
			if !bytes.Equal(c.img[root.offset:root.offset+6], luksMagic) {
				t.Fatalf("offset %d does not point at the LUKS header", root.offset)
			}
			if c.wantMsg == nil {
				if root.keyMessage != nil {
					t.Fatalf("unexpected key message %+v", root.keyMessage)
				}
				return
			}
			if root.keyMessage == nil {
				t.Fatal("key message not found")
			}
			got, err := readSIFObject(r, root.keyMessage, 64<<10, "enc.sif")
			if err != nil || !bytes.Equal(got, c.wantMsg) {
				t.Fatalf("key message %q, %v", got, err)
			}
			_, err = readSIFObject(r, root.keyMessage, 10, "enc.sif")
			checkSIFErr(t, err, eImage, "more than the 10 allowed")
		})
	}
}

func TestLocateRootfsEncryptedNotLUKS(t *testing.T) {
	img := sifLibImage(t, sifLibInput(t, sif.DataPartition, sifFakeSquashfs(8192), sif.OptPartitionMetadata(sif.FsEncryptedSquashfs, sif.PartPrimSys, runtime.GOARCH)))
	_, err := locateRootfs(bytes.NewReader(img), int64(len(img)), "x")
	checkSIFErr(t, err, eImage, "does not start with a LUKS header")
}

// TestLocateRootfsMksquashfs uses a real squashfs, bare and in a SIF.
func TestLocateRootfsMksquashfs(t *testing.T) {
	const mksquashfs = "/usr/bin/mksquashfs"
	if _, err := os.Stat(mksquashfs); err != nil {
		t.Skip("squashfs-tools not installed (CI installs it)")
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "MARKER"), []byte("good\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	sq := filepath.Join(t.TempDir(), "r.sqfs")
	for _, comp := range []string{"gzip", "xz", "zstd", "lz4"} {
		out, err := exec.Command(mksquashfs, dir, sq, "-noappend", "-comp", comp, "-quiet").CombinedOutput()
		if err != nil && comp != "gzip" {
			t.Logf("mksquashfs -comp %s: %v %s", comp, err, out) // optional compressors may be missing
			continue
		}
		if err != nil {
			t.Fatalf("mksquashfs: %v %s", err, out)
		}
		data, err := os.ReadFile(sq)
		if err != nil {
			t.Fatal(err)
		}
		root, err := locateRootfs(bytes.NewReader(data), int64(len(data)), sq)
		if err != nil || root != (imageRootfs{format: "squashfs", kind: rootfsSquashfs, size: int64(len(data))}) {
			t.Fatalf("bare %s squashfs: %+v, %v", comp, root, err)
		}
		img := sifLibImage(t, sifLibInput(t, sif.DataPartition, data, sif.OptPartitionMetadata(sif.FsSquash, sif.PartPrimSys, runtime.GOARCH)))
		root, err = locateRootfs(bytes.NewReader(img), int64(len(img)), "r.sif")
		if err != nil || !bytes.Equal(img[root.offset:root.offset+root.size], data) {
			t.Fatalf("%s squashfs in SIF: %+v, %v", comp, root, err)
		}
	}
}

// ---- hostile SIFs ----

func TestLocateRootfsMalformedSIF(t *testing.T) {
	base := sifBaseImage(t)
	size := int64(len(base))
	part := sifSlotOff(1)
	tableEnd := int64(sifWriterTableOffset + 48*sifDescriptorSize)
	partOff := sifGet64(base, part+sifDOffset)
	labelsOff := sifGet64(base, sifSlotOff(2)+sifDOffset)

	cases := []struct {
		name   string
		mutate func(b []byte) []byte
		class  errClass
		msg    string
	}{
		{"empty", func(b []byte) []byte { return nil }, eImage, "is empty"},
		{"64 bytes", func(b []byte) []byte { return b[:64] }, eImage, "too short for a SIF header"},
		{"127 bytes", func(b []byte) []byte { return b[:127] }, eImage, "too short for a SIF header"},
		{"128 bytes", func(b []byte) []byte { return b[:128] }, eImage, "out of bounds"},
		{"table cut short", func(b []byte) []byte { return b[:20000] }, eImage, "descriptor table"},
		{"bad magic", func(b []byte) []byte { b[40] = 'X'; return b }, eImage, "unrecognised image format"},
		{"version 02", func(b []byte) []byte { b[43] = '2'; return b }, eImage, "unsupported version"},
		{"version without NUL", func(b []byte) []byte { b[44] = '1'; return b }, eImage, "unsupported version"},
		{"header arch 14", func(b []byte) []byte { copy(b[45:], "14"); return b }, eImage, "bad header arch"},
		{"header arch letters", func(b []byte) []byte { copy(b[45:], "ab"); return b }, eImage, "bad header arch"},
		{"total -1", func(b []byte) []byte { sifPut64(b, sifHTotal, -1); return b }, eImage, "descriptor count"},
		{"total 0", func(b []byte) []byte { sifPut64(b, sifHTotal, 0); return b }, eImage, "descriptor count"},
		{"total 257", func(b []byte) []byte { sifPut64(b, sifHTotal, 257); return b }, eImage, "descriptor count"},
		{"total 2^31", func(b []byte) []byte { sifPut64(b, sifHTotal, 1<<31); return b }, eImage, "descriptor count"},
		{"total 2^40", func(b []byte) []byte { sifPut64(b, sifHTotal, 1<<40); return b }, eImage, "descriptor count"},
		{"total 10 000 000", func(b []byte) []byte { sifPut64(b, sifHTotal, 10_000_000); return b }, eImage, "descriptor count"},
		{"total min int64", func(b []byte) []byte { sifPut64(b, sifHTotal, math.MinInt64); return b }, eImage, "descriptor count"},
		{"size 2^62", func(b []byte) []byte { sifPut64(b, sifHDescSize, 1<<62); return b }, eImage, "table size"},
		{"size not total×585", func(b []byte) []byte { sifPut64(b, sifHDescSize, 48*585+1); return b }, eImage, "table size"},
		{"size of a smaller table", func(b []byte) []byte { sifPut64(b, sifHDescSize, 47*585); return b }, eImage, "table size"},
		{"free > total", func(b []byte) []byte { sifPut64(b, sifHFree, 49); return b }, eImage, "free descriptor count"},
		{"free -1", func(b []byte) []byte { sifPut64(b, sifHFree, -1); return b }, eImage, "free descriptor count"},
		{"table inside header", func(b []byte) []byte { sifPut64(b, sifHDescOff, 64); return b }, eImage, "overlaps the header"},
		{"table offset negative", func(b []byte) []byte { sifPut64(b, sifHDescOff, -4096); return b }, eImage, "overlaps the header"},
		{"table past EOF", func(b []byte) []byte { sifPut64(b, sifHDescOff, size); return b }, eImage, "out of bounds"},
		{"table offset max int64", func(b []byte) []byte { sifPut64(b, sifHDescOff, math.MaxInt64); return b }, eImage, "out of bounds"},
		{"data offset negative", func(b []byte) []byte { sifPut64(b, sifHDataOff, -1); return b }, eImage, "negative data offset"},
		{"data size negative", func(b []byte) []byte { sifPut64(b, sifHDataSize, -1); return b }, eImage, "negative data offset"},
		{"Used = 2", func(b []byte) []byte { b[sifSlotOff(3)+sifDUsed] = 2; return b }, eImage, "Used = 2"},
		{"Used = 255", func(b []byte) []byte { b[part+sifDUsed] = 255; return b }, eImage, "Used = 255"},
		{"ID 0", func(b []byte) []byte { sifPut32(b, sifSlotOff(2)+sifDID, 0); return b }, eImage, "ID 0"},
		{"duplicate IDs", func(b []byte) []byte { sifPut32(b, sifSlotOff(2)+sifDID, 2); return b }, eImage, "share ID 2"},
		{"offset past the end", func(b []byte) []byte { sifPut64(b, part+sifDOffset, size+4096); return b }, eImage, "out of bounds"},
		{"offset negative", func(b []byte) []byte { sifPut64(b, part+sifDOffset, -4096); return b }, eImage, "out of bounds"},
		{"offset+size overflows", func(b []byte) []byte {
			sifPut64(b, part+sifDOffset, math.MaxInt64-100)
			sifPut64(b, part+sifDSize, 200)
			return b
		}, eImage, "out of bounds"},
		{"size runs past the end", func(b []byte) []byte { sifPut64(b, part+sifDSize, size-partOff+1); return b }, eImage, "out of bounds"},
		{"size negative", func(b []byte) []byte { sifPut64(b, part+sifDSize, -1); return b }, eImage, "out of bounds"},
		{"size max int64", func(b []byte) []byte { sifPut64(b, part+sifDSize, math.MaxInt64); return b }, eImage, "out of bounds"},
		{"partition inside header", func(b []byte) []byte { sifPut64(b, part+sifDOffset, 0); return b }, eImage, "out of bounds"},
		{"partition inside table", func(b []byte) []byte { sifPut64(b, part+sifDOffset, 5000); return b }, eImage, "out of bounds"},
		{"partition over the last table byte", func(b []byte) []byte { sifPut64(b, part+sifDOffset, tableEnd-1); return b }, eImage, "out of bounds"},
		{"partition covering the whole file", func(b []byte) []byte {
			sifPut64(b, part+sifDOffset, 0)
			sifPut64(b, part+sifDSize, size)
			return b
		}, eImage, "out of bounds"},
		{"padding smaller than size", func(b []byte) []byte { sifPut64(b, part+sifDSizePad, 8191); return b }, eImage, "SizeWithPadding"},
		{"overlap by one byte", func(b []byte) []byte { sifPut64(b, sifSlotOff(2)+sifDOffset, partOff+8192-1); return b }, eImage, "overlap"},
		{"identical ranges", func(b []byte) []byte {
			sifPut64(b, sifSlotOff(2)+sifDOffset, partOff)
			sifPut64(b, sifSlotOff(2)+sifDSize, 8192)
			sifPut64(b, sifSlotOff(2)+sifDSizePad, 8192)
			return b
		}, eImage, "overlap"},
		{"object spanning the partition", func(b []byte) []byte {
			sifPut64(b, sifSlotOff(0)+sifDSize, labelsOff-tableEnd)
			sifPut64(b, sifSlotOff(0)+sifDSizePad, labelsOff-tableEnd)
			return b
		}, eImage, "overlap"},
		{"fstype 0", func(b []byte) []byte { sifPut32(b, part+sifDExtra, 0); return b }, eImage, "unknown filesystem type 0"},
		{"fstype 7", func(b []byte) []byte { sifPut32(b, part+sifDExtra, 7); return b }, eImage, "unknown filesystem type 7"},
		{"fstype -1", func(b []byte) []byte { sifPut32(b, part+sifDExtra, math.MaxUint32); return b }, eImage, "unknown filesystem type -1"},
		{"parttype 0", func(b []byte) []byte { sifPut32(b, part+sifDExtra+4, 0); return b }, eImage, "unknown partition type 0"},
		{"parttype 5", func(b []byte) []byte { sifPut32(b, part+sifDExtra+4, 5); return b }, eImage, "unknown partition type 5"},
		{"no PrimSys (System)", func(b []byte) []byte { sifPut32(b, part+sifDExtra+4, 1); return b }, eImage, "no root filesystem found (0"},
		{"no PrimSys (Overlay)", func(b []byte) []byte { sifPut32(b, part+sifDExtra+4, 4); return b }, eImage, "no root filesystem found (0"},
		{"no partition at all", func(b []byte) []byte { b[part+sifDUsed] = 0; return b }, eImage, "no root filesystem found (0"},
		{"two PrimSys", func(b []byte) []byte {
			d := sifSlotOff(2)
			sifPut32(b, d+sifDType, uint32(sifDataPartition))
			sifPut32(b, d+sifDExtra, 1)
			sifPut32(b, d+sifDExtra+4, 2)
			copy(b[d+sifDExtra+8:], sifArchCode(runtime.GOARCH))
			return b
		}, eImage, "no root filesystem found (2"},
		{"ext3", func(b []byte) []byte { sifPut32(b, part+sifDExtra, 2); return b }, ePolicy, "ext3 images are not supported"},
		{"immutable object", func(b []byte) []byte { sifPut32(b, part+sifDExtra, 3); return b }, ePolicy, "unsupported partition type"},
		{"raw", func(b []byte) []byte { sifPut32(b, part+sifDExtra, 4); return b }, ePolicy, "unsupported partition type"},
		{"gocryptfs", func(b []byte) []byte { sifPut32(b, part+sifDExtra, 6); return b }, ePolicy, "gocryptfs-encrypted SIF (Apptainer unprivileged encryption) is not supported"},
		{"foreign arch", func(b []byte) []byte { copy(b[part+sifDExtra+8:], sifForeignArch()); return b }, eImage, "image is for " + sifArchName(sifForeignArch()) + ", host is " + runtime.GOARCH},
		{"arch garbage", func(b []byte) []byte { copy(b[part+sifDExtra+8:], "\x1bz"); return b }, eImage, `is for arch code \x1bz`},
		{"size 0", func(b []byte) []byte { sifPut64(b, part+sifDSize, 0); return b }, eImage, "cannot hold a squashfs"},
		{"size 95", func(b []byte) []byte { sifPut64(b, part+sifDSize, 95); return b }, eImage, "cannot hold a squashfs"},
		{"squashfs lie: zeros", func(b []byte) []byte { clear(b[partOff : partOff+96]); return b }, eImage, "not a squashfs"},
		{"squashfs lie: LUKS2", func(b []byte) []byte { copy(b[partOff:], sifFakeLUKS(96)); return b }, eImage, "not a squashfs"},
		{"squashfs lie: ext4", func(b []byte) []byte {
			clear(b[partOff : partOff+8192])
			b[partOff+1080], b[partOff+1081] = 0x53, 0xef
			return b
		}, eImage, "not a squashfs"},
		{"squashfs version 3.0", func(b []byte) []byte { b[partOff+28] = 3; return b }, eImage, "squashfs version 3.0"},
		{"squashfs minor 1", func(b []byte) []byte { b[partOff+30] = 1; return b }, eImage, "squashfs version 4.1"},
		{"compression 0", func(b []byte) []byte { b[partOff+20] = 0; return b }, eImage, "compression 0"},
		{"compression 7", func(b []byte) []byte { b[partOff+20] = 7; return b }, eImage, "compression 7"},
		{"compression 99", func(b []byte) []byte { b[partOff+20] = 99; return b }, eImage, "compression 99"},
		{"block_log 0", func(b []byte) []byte { b[partOff+22] = 0; return b }, eImage, "block size"},
		{"block_log 11", func(b []byte) []byte { b[partOff+22] = 11; return b }, eImage, "block size"},
		{"block_log 21", func(b []byte) []byte { b[partOff+22] = 21; return b }, eImage, "block size"},
		{"block_log 30", func(b []byte) []byte { b[partOff+22] = 30; return b }, eImage, "block size"},
		{"block_size disagrees", func(b []byte) []byte { sifPut32(b, int(partOff)+12, 4096); return b }, eImage, "block size"},
		{"bytes_used > partition", func(b []byte) []byte { sifPut64(b, int(partOff)+40, 8193); return b }, eImage, "squashfs claims 8193 bytes"},
		{"bytes_used 2^64-1", func(b []byte) []byte { sifPut64(b, int(partOff)+40, -1); return b }, eImage, "squashfs claims"},
		{"bytes_used 0", func(b []byte) []byte { sifPut64(b, int(partOff)+40, 0); return b }, eImage, "squashfs claims 0"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			img := c.mutate(sifCloneBytes(base))
			cr := &sifCountingReader{r: bytes.NewReader(img)}
			_, err := locateRootfs(cr, int64(len(img)), "bad.sif")
			checkSIFErr(t, err, c.class, c.msg)
			if !strings.Contains(err.Error(), "bad.sif") {
				t.Errorf("error does not name the image: %v", err)
			}
			if cr.n > 2048+sifHeaderSize+sifMaxDescriptors*sifDescriptorSize+squashfsSuperSize {
				t.Errorf("read %d bytes", cr.n)
			}
		})
	}
}

// The reference loader accepts several of the layouts above; check it is not our tests that are wrong.
func TestReferenceLoaderAcceptsWhatWeRefuse(t *testing.T) {
	img := sifBaseImage(t)
	sifPut64(img, sifSlotOff(2)+sifDOffset, sifGet64(img, sifSlotOff(1)+sifDOffset)) // identical ranges
	if _, err := sif.LoadContainer(sif.NewBuffer(img)); err != nil {
		t.Fatalf("reference loader refused: %v", err)
	}
	_, err := parseSIF(bytes.NewReader(img), int64(len(img)), "x")
	checkSIFErr(t, err, eImage, "overlap")
}

func TestParseSIFDirect(t *testing.T) {
	img := sifBaseImage(t)
	img[32] = 's'
	_, err := parseSIF(bytes.NewReader(img), int64(len(img)), "x")
	checkSIFErr(t, err, eImage, "bad magic")
	_, err = parseSIF(bytes.NewReader(img), -1, "x")
	checkSIFErr(t, err, eImage, "too short")
}

// A file shorter than its fstat size (rewritten during the run) gives E_IMAGE, not garbage.
func TestLocateRootfsShorterThanClaimed(t *testing.T) {
	img := sifBaseImage(t)
	_, err := locateRootfs(bytes.NewReader(img[:30000]), int64(len(img)), "x")
	checkSIFErr(t, err, eImage, "truncated")
}

type sifFailingReader struct{}

func (sifFailingReader) ReadAt([]byte, int64) (int, error) {
	return 0, errors.New("input/output error")
}

type sifPanickingReader struct{}

func (sifPanickingReader) ReadAt([]byte, int64) (int, error) { panic("boom") }

func TestReadFailuresAndPanics(t *testing.T) {
	_, err := locateRootfs(sifFailingReader{}, 4096, "x")
	checkSIFErr(t, err, eSystem, "input/output error")
	for name, fn := range map[string]func() error{
		"locateRootfs":       func() error { _, err := locateRootfs(sifPanickingReader{}, 4096, "x"); return err },
		"parseSIF":           func() error { _, err := parseSIF(sifPanickingReader{}, 4096, "x"); return err },
		"checkSquashfsSuper": func() error { return checkSquashfsSuper(sifPanickingReader{}, 0, 4096, "x") },
	} {
		err := fn()
		if classOf(err) != eImage || !strings.Contains(err.Error(), sifPanicMark) || !strings.Contains(err.Error(), "boom") {
			t.Errorf("%s: panic not recovered as E_IMAGE: %v", name, err)
		}
	}
}

// ---- image detection ----

func TestLocateRootfsDetection(t *testing.T) {
	ext := make([]byte, 4096)
	ext[1080], ext[1081] = 0x53, 0xef
	random := make([]byte, 4096)
	rand.Read(random)
	random[0], random[32], random[1080] = 0, 0, 0
	sq := sifFakeSquashfs(8192)
	badSq := sifFakeSquashfs(8192)
	badSq[22] = 30
	cases := []struct {
		name  string
		data  []byte
		class errClass
		msg   string
	}{
		{"ext4", ext, ePolicy, "CVE-2023-30549"},
		{"bare LUKS2", sifFakeLUKS(4096), eImage, "bare LUKS image: wrap it in a SIF"},
		{"bare LUKS1", append([]byte("LUKS\xba\xbe\x00\x01"), make([]byte, 600)...), eImage, "bare LUKS image"},
		{"random", random, eImage, "unrecognised image format"},
		{"one byte", []byte{'h'}, eImage, "unrecognised image format"},
		{"hsq", []byte("hsq"), eImage, "unrecognised image format"},
		{"hsqs only", []byte("hsqs"), eImage, "cannot hold a squashfs"},
		{"squashfs with bad block_log", badSq, eImage, "block size"},
		{"SIF magic cut", append(make([]byte, 32), "SIF_MAGI"...), eImage, "unrecognised image format"},
		{"ansi name", []byte("text"), eImage, `\x1b[31m`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := locateRootfs(bytes.NewReader(c.data), int64(len(c.data)), "img\x1b[31m")
			checkSIFErr(t, err, c.class, c.msg)
			if strings.Contains(err.Error(), "\x1b") {
				t.Errorf("escape byte reached the message: %q", err)
			}
		})
	}
	root, err := locateRootfs(bytes.NewReader(sq), int64(len(sq)), "r.sqfs")
	if err != nil || root != (imageRootfs{format: "squashfs", kind: rootfsSquashfs, offset: 0, size: 8192}) {
		t.Fatalf("bare squashfs: %+v, %v", root, err)
	}
}

// C1: 10 MB of random bytes, with and without valid magic and version, are refused fast and
// with bounded reads and allocation.
func TestLocateRootfsRandomFilesQuickly(t *testing.T) {
	big := make([]byte, 10<<20)
	withMagic := make([]byte, 10<<20)
	for range 5 {
		rand.Read(big)
		rand.Read(withMagic)
		copy(withMagic[32:], "SIF_MAGIC\x0001\x00")
		for _, data := range [][]byte{big, withMagic} {
			cr := &sifCountingReader{r: bytes.NewReader(data)}
			start := time.Now()
			var err error
			alloc := sifAllocDuring(func() { _, err = locateRootfs(cr, int64(len(data)), "rnd") })
			if err == nil || (classOf(err) != eImage && classOf(err) != ePolicy) || strings.Contains(err.Error(), sifPanicMark) {
				t.Fatalf("random file: %v", err)
			}
			if d := time.Since(start); d > time.Second {
				t.Errorf("took %v", d)
			}
			if cr.n > 2048+sifHeaderSize+sifMaxDescriptors*sifDescriptorSize+squashfsSuperSize || alloc > 1<<20 {
				t.Errorf("read %d bytes, allocated %d", cr.n, alloc)
			}
		}
	}
}

// ---- squashfs check ----

func TestCheckSquashfsSuperBounds(t *testing.T) {
	sb := sifFakeSquashfs(4096)
	r := bytes.NewReader(sb)
	cases := []struct {
		name         string
		offset, size int64
		msg          string
	}{
		{"ok", 0, 4096, ""},
		{"bytes_used equal to size", 0, 4000, ""},
		{"bytes_used one more than size", 0, 3999, "claims 4000 bytes"},
		{"negative offset", -1, 4096, "cannot hold"},
		{"negative size", 0, -1, "cannot hold"},
		{"offset+size overflow", math.MaxInt64 - 10, 4096, "cannot hold"},
		{"offset past data", 8192, 4096, "truncated"},
	}
	for _, c := range cases {
		err := checkSquashfsSuper(r, c.offset, c.size, "p")
		if c.msg == "" {
			if err != nil {
				t.Errorf("%s: %v", c.name, err)
			}
			continue
		}
		checkSIFErr(t, err, eImage, c.msg)
	}
}

// ---- writer ----

const sifWriterTime = 1700000000

// sifWriterInputs returns the same three objects as minirun objects and as library inputs.
func sifWriterInputs(t testing.TB, fstype int32, part []byte, pem []byte) ([]sifNewObject, []sif.DescriptorInput) {
	def := []byte("Bootstrap: docker\nFrom: alpine\n")
	rootObj, err := sifRootfsObject(bytes.NewReader(part), int64(len(part)), fstype, runtime.GOARCH)
	if err != nil {
		t.Fatal(err)
	}
	ours := []sifNewObject{
		sifMetadataObject(sifDataDeffile, def),
		rootObj,
	}
	lib := []sif.DescriptorInput{
		sifLibInput(t, sif.DataDeffile, def),
		sifLibInput(t, sif.DataPartition, part, sif.OptPartitionMetadata(sif.FSType(fstype), sif.PartPrimSys, runtime.GOARCH)),
	}
	if pem != nil {
		ours = append(ours, sifKeyMessageObject(pem, 2))
		lib = append(lib, sifLibInput(t, sif.DataCryptoMessage, pem, sif.OptLinkedID(2), sif.OptCryptoMessageMetadata(sif.FormatPEM, sif.MessageRSAOAEP)))
	}
	return ours, lib
}

func TestWriteSIFMatchesReferenceWriter(t *testing.T) {
	pem := []byte("-----BEGIN MESSAGE-----\nBAgBAA==\n-----END MESSAGE-----\n")
	for _, c := range []struct {
		name   string
		fstype int32
		part   []byte
		pem    []byte
	}{
		{"squashfs", sifFsSquashfs, sifFakeSquashfs(12345), nil},
		{"encrypted PEM", sifFsEncryptedSquashfs, sifFakeLUKS(3 * 4096), pem},
		{"encrypted passphrase", sifFsEncryptedSquashfs, sifFakeLUKS(4096), nil},
	} {
		t.Run(c.name, func(t *testing.T) {
			ours, libIn := sifWriterInputs(t, c.fstype, c.part, c.pem)
			var w sifMemWriter
			n, err := writeSIF(&w, ours, sifWriteOptions{unixTime: sifWriterTime})
			if err != nil {
				t.Fatal(err)
			}
			if n != int64(len(w.buf)) {
				t.Fatalf("returned size %d, wrote %d", n, len(w.buf))
			}
			buf := sif.NewBuffer(nil)
			if _, err := sif.CreateContainer(buf, sif.OptCreateWithTime(time.Unix(sifWriterTime, 0)),
				sif.OptCreateWithID("00000000-0000-0000-0000-000000000000"), sif.OptCreateWithDescriptors(libIn...)); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(w.buf, buf.Bytes()) {
				t.Fatalf("writeSIF output (%d bytes) differs from sif v2 (%d bytes) at byte %d",
					len(w.buf), buf.Len(), sifFirstDiff(w.buf, buf.Bytes()))
			}

			// The library reads it back with the objects we meant.
			lib, err := sif.LoadContainer(sif.NewBuffer(sifCloneBytes(w.buf)))
			if err != nil {
				t.Fatal(err)
			}
			if lib.PrimaryArch() != runtime.GOARCH || lib.DescriptorsTotal() != 48 || lib.DescriptorsFree() != int64(48-len(ours)) {
				t.Fatalf("library header view: arch %s total %d free %d", lib.PrimaryArch(), lib.DescriptorsTotal(), lib.DescriptorsFree())
			}
			d, err := lib.GetDescriptor(sif.WithPartitionType(sif.PartPrimSys))
			if err != nil {
				t.Fatal(err)
			}
			fs, pt, arch, err := d.PartitionMetadata()
			if err != nil || int32(fs) != c.fstype || pt != sif.PartPrimSys || arch != runtime.GOARCH || d.ID() != 2 || d.GroupID() != 1 {
				t.Fatalf("partition metadata %v %v %v %v id %d", fs, pt, arch, err, d.ID())
			}
			if data, _ := d.GetData(); !bytes.Equal(data, c.part) || d.Offset()%4096 != 0 {
				t.Fatal("partition data differs or is unaligned")
			}
			if c.pem != nil {
				m, err := lib.GetDescriptor(sif.WithDataType(sif.DataCryptoMessage))
				if err != nil {
					t.Fatal(err)
				}
				ft, mt, err := m.CryptoMessageMetadata()
				linked, isGroup := m.LinkedID()
				data, _ := m.GetData()
				if err != nil || ft != sif.FormatPEM || mt != sif.MessageRSAOAEP || linked != 2 || isGroup || !bytes.Equal(data, c.pem) {
					t.Fatalf("crypto message %v %v %v linked %d/%v", ft, mt, err, linked, isGroup)
				}
			}

			// Our parser round-trips it.
			f, err := parseSIF(bytes.NewReader(w.buf), n, "w.sif")
			if err != nil || len(f.objects) != len(ours) {
				t.Fatalf("parseSIF: %v", err)
			}
			root, err := locateRootfs(bytes.NewReader(w.buf), n, "w.sif")
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(w.buf[root.offset:root.offset+root.size], c.part) || root.partID != 2 {
				t.Fatalf("rootfs %+v", root)
			}
			wantKind := rootfsSquashfs
			if c.fstype == sifFsEncryptedSquashfs {
				wantKind = rootfsEncrypted
			}
			if root.kind != wantKind || (c.pem != nil) != (root.keyMessage != nil) {
				t.Fatalf("rootfs %+v", root)
			}
		})
	}
}

func sifFirstDiff(a, b []byte) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}

// Writing to a used file overwrites every byte up to the returned size, padding included.
func TestWriteSIFToFileOverGarbage(t *testing.T) {
	path := filepath.Join(t.TempDir(), "out.sif")
	garbage := bytes.Repeat([]byte{0xff}, 64<<10)
	if err := os.WriteFile(path, garbage, 0o644); err != nil {
		t.Fatal(err)
	}
	fh, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer fh.Close()
	ours, _ := sifWriterInputs(t, sifFsSquashfs, sifFakeSquashfs(5000), nil)
	n, err := writeSIF(fh, ours, sifWriteOptions{launchScript: "#!/usr/bin/env run-singularity\n", id: [16]byte{1, 2, 3}})
	if err != nil {
		t.Fatal(err)
	}
	if err := fh.Truncate(n); err != nil {
		t.Fatal(err)
	}
	ours, _ = sifWriterInputs(t, sifFsSquashfs, sifFakeSquashfs(5000), nil)
	var clean sifMemWriter
	if _, err := writeSIF(&clean, ours, sifWriteOptions{launchScript: "#!/usr/bin/env run-singularity\n", id: [16]byte{1, 2, 3}}); err != nil {
		t.Fatal(err)
	}
	got, _ := os.ReadFile(path)
	if !bytes.Equal(got, clean.buf) {
		t.Fatalf("file differs from a clean write at byte %d", sifFirstDiff(got, clean.buf))
	}
	f, err := parseSIF(bytes.NewReader(got), n, path)
	if err != nil || f.launchScript != "#!/usr/bin/env run-singularity\n" || f.id != [16]byte{1, 2, 3} {
		t.Fatalf("header: %+v %v", f, err)
	}
	lib, err := sif.LoadContainer(sif.NewBuffer(got))
	if err != nil || lib.LaunchScript() != "#!/usr/bin/env run-singularity\n" {
		t.Fatalf("library: %v", err)
	}
}

func TestWriteSIFErrors(t *testing.T) {
	part := sifFakeSquashfs(8192)
	rootObj := func(r io.Reader, size int64) sifNewObject {
		o, err := sifRootfsObject(r, size, sifFsSquashfs, runtime.GOARCH)
		if err != nil {
			t.Fatal(err)
		}
		return o
	}
	cases := []struct {
		name  string
		objs  []sifNewObject
		opt   sifWriteOptions
		class errClass
		msg   string
	}{
		{"source shorter", []sifNewObject{rootObj(bytes.NewReader(part), 9000)}, sifWriteOptions{}, eSystem, "source ended after 8192 of 9000 bytes"},
		{"source longer", []sifNewObject{rootObj(bytes.NewReader(part), 8000)}, sifWriteOptions{}, eSystem, "longer than 8000 bytes"},
		{"no data", []sifNewObject{{dataType: sifDataPartition, size: 5}}, sifWriteOptions{}, eInternal, "no data"},
		{"two PrimSys", []sifNewObject{rootObj(bytes.NewReader(part), 8192), rootObj(bytes.NewReader(part), 8192)}, sifWriteOptions{}, eInternal, "two primary partitions"},
		{"49 objects", make([]sifNewObject, 49), sifWriteOptions{}, eInternal, "49 objects"},
		{"long name", []sifNewObject{{name: strings.Repeat("n", 129)}}, sifWriteOptions{}, eInternal, "bad size, name"},
		{"long extra", []sifNewObject{{extra: make([]byte, 385)}}, sifWriteOptions{}, eInternal, "bad size, name"},
		{"negative size", []sifNewObject{{size: -1}}, sifWriteOptions{}, eInternal, "bad size, name"},
		{"launch script 32 bytes", nil, sifWriteOptions{launchScript: strings.Repeat("#", 32)}, eUsage, "launch script"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := writeSIF(&sifMemWriter{}, c.objs, c.opt)
			checkSIFErr(t, err, c.class, c.msg)
		})
	}
	if _, err := sifRootfsObject(nil, 0, sifFsSquashfs, "wasm"); classOf(err) != eUsage {
		t.Errorf("unknown arch: %v", err)
	}
	if _, err := sifRootfsObject(nil, 0, sifFsExt3, runtime.GOARCH); classOf(err) != eInternal {
		t.Errorf("ext3 rootfs: %v", err)
	}
}

func TestSIFArchCodes(t *testing.T) {
	for _, p := range sifArchCodes {
		goarch, code := p.key, p.val
		if sifArchName(code) != goarch || !isSIFArchCode([]byte(code)) {
			t.Errorf("%s ↔ %s", goarch, code)
		}
	}
	for _, bad := range []string{"14", "99", "1", "1a", " 1", "-1"} {
		if isSIFArchCode([]byte(bad)) {
			t.Errorf("%q accepted", bad)
		}
	}
	if sifArchName("00") != "unknown" || sifArchCode("wasm") != "" {
		t.Error("unknown arch mapping")
	}
}

// ---- fuzzing ----

// sifZeroTailReader is a synthetic file of size bytes: head, then zeros.
type sifZeroTailReader struct {
	head []byte
	size int64
}

func (z sifZeroTailReader) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, errors.New("negative offset")
	}
	if off >= z.size {
		return 0, io.EOF
	}
	n := int(min(int64(len(p)), z.size-off))
	clear(p[:n])
	if off < int64(len(z.head)) {
		copy(p[:n], z.head[off:])
	}
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

// checkSIFFuzzErr fails on anything but a clean refusal.
func checkSIFFuzzErr(t *testing.T, err error) {
	t.Helper()
	if err == nil {
		return
	}
	if c := classOf(err); c != eImage && c != ePolicy {
		t.Fatalf("class %s: %v", c, err)
	}
	if strings.Contains(err.Error(), sifPanicMark) {
		t.Fatalf("parser panicked: %v", err)
	}
}

func FuzzSIFHeader(f *testing.F) {
	base := sifBaseImage(f)
	f.Add(base[:128], int64(len(base)))
	for _, v := range []int64{-1, 0, 1 << 31, 1 << 40, 10_000_000, 256} {
		h := sifCloneBytes(base[:128])
		sifPut64(h, sifHTotal, v)
		f.Add(h, int64(len(base)))
	}
	h := sifCloneBytes(base[:128])
	sifPut64(h, sifHDescSize, 1<<62)
	f.Add(h, int64(1<<62))
	h = sifCloneBytes(base[:128])
	sifPut64(h, sifHDescOff, math.MaxInt64-100)
	f.Add(h, int64(math.MaxInt64))
	f.Add(base[:128], int64(128))
	f.Fuzz(func(t *testing.T, hdr []byte, fileSize int64) {
		if len(hdr) > sifHeaderSize {
			hdr = hdr[:sifHeaderSize]
		}
		r := sifZeroTailReader{head: hdr, size: fileSize}
		var sf *sifFile
		var err error
		sifCheckAlloc(t, 4<<20, func() { sf, err = parseSIF(r, fileSize, "fuzz") })
		checkSIFFuzzErr(t, err)
		if err != nil {
			return
		}
		if sf.descriptorsTotal < 1 || sf.descriptorsTotal > sifMaxDescriptors ||
			sf.descriptorsSize != sf.descriptorsTotal*sifDescriptorSize ||
			sf.descriptorsOffset < sifHeaderSize || sf.descriptorsOffset+sf.descriptorsSize > fileSize ||
			sf.descriptorsFree < 0 || sf.descriptorsFree > sf.descriptorsTotal {
			t.Fatalf("accepted a bad header: %+v (file size %d)", sf, fileSize)
		}
		_, err = locateRootfs(r, fileSize, "fuzz")
		checkSIFFuzzErr(t, err)
	})
}

// sifSmallImage is sifBaseImage repacked small (512-byte squashfs, compact table): about 2.4 KiB,
// so the fuzzer mutates table and data rather than padding.
func sifSmallImage(t testing.TB) []byte {
	return sifCompact(t, sifLibImage(t,
		sifLibInput(t, sif.DataDeffile, []byte("Bootstrap: scratch\n")),
		sifLibInput(t, sif.DataPartition, sifFakeSquashfs(512), sif.OptPartitionMetadata(sif.FsSquash, sif.PartPrimSys, runtime.GOARCH)),
		sifLibInput(t, sif.DataLabels, []byte(`{"a":"b"}`)),
	))
}

// addSIFLayoutSeeds gives the fuzzer valid images and the crafted cases of spec §4 C1–C3.
func addSIFLayoutSeeds(f *testing.F) {
	f.Add(sifBaseImage(f)) // the real sif v2 layout, once
	ours, _ := sifWriterInputs(f, sifFsEncryptedSquashfs, sifFakeLUKS(512), []byte("-----BEGIN MESSAGE-----\n-----END MESSAGE-----\n"))
	var w sifMemWriter
	if _, err := writeSIF(&w, ours, sifWriteOptions{}); err != nil {
		f.Fatal(err)
	}
	f.Add(sifCompact(f, w.buf))
	small := sifSmallImage(f)
	f.Add(small)
	slot := func(i int) int { return sifHeaderSize + i*sifDescriptorSize }
	partOff := sifGet64(small, slot(1)+sifDOffset)
	for _, m := range []func(b []byte){
		func(b []byte) { sifPut64(b, sifHTotal, -1) },
		func(b []byte) { sifPut64(b, sifHTotal, 1<<40) },
		func(b []byte) { sifPut64(b, sifHTotal, 10_000_000) },
		func(b []byte) { sifPut64(b, sifHDescOff, int64(len(b))) },
		func(b []byte) { sifPut64(b, slot(1)+sifDOffset, math.MaxInt64-100); sifPut64(b, slot(1)+sifDSize, 200) },
		func(b []byte) {
			sifPut64(b, slot(2)+sifDOffset, partOff)
			sifPut64(b, slot(2)+sifDSize, 512)
			sifPut64(b, slot(2)+sifDSizePad, 512)
		},
		func(b []byte) { sifPut64(b, slot(1)+sifDOffset, 200) },
		func(b []byte) { b[slot(2)+sifDUsed] = 2 },
		func(b []byte) { sifPut32(b, slot(2)+sifDID, 2) },
		func(b []byte) { sifPut32(b, slot(1)+sifDExtra, 6) },
		func(b []byte) { copy(b[slot(1)+sifDExtra+8:], sifForeignArch()) },
		func(b []byte) { b[partOff+22] = 30 },
	} {
		b := sifCloneBytes(small)
		m(b)
		f.Add(b)
	}
}

func FuzzSIFLayout(f *testing.F) {
	addSIFLayoutSeeds(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) > 1<<20 {
			return
		}
		r := bytes.NewReader(data)
		size := int64(len(data))
		var sf *sifFile
		var root imageRootfs
		var err, rootErr error
		sifCheckAlloc(t, 16<<20, func() {
			sf, err = parseSIF(r, size, "fuzz")
			root, rootErr = locateRootfs(r, size, "fuzz")
		})
		checkSIFFuzzErr(t, err)
		checkSIFFuzzErr(t, rootErr)
		if err != nil {
			return
		}
		tableEnd := sf.descriptorsOffset + sf.descriptorsSize
		ids := map[uint32]bool{}
		for i, a := range sf.objects {
			if a.offset < tableEnd || a.size < 0 || a.offset+a.size > size || ids[a.id] || a.id == 0 {
				t.Fatalf("accepted object %+v (table end %d, size %d)", a, tableEnd, size)
			}
			ids[a.id] = true
			for _, b := range sf.objects[i+1:] {
				if a.size > 0 && b.size > 0 && a.offset < b.offset+b.size && b.offset < a.offset+a.size {
					t.Fatalf("accepted overlapping objects %d and %d", a.id, b.id)
				}
			}
		}
		if rootErr != nil {
			return
		}
		var prim []sifObject
		for _, o := range sf.objects {
			if o.dataType == sifDataPartition && o.parttype == sifPartPrimSys {
				prim = append(prim, o)
			}
		}
		if len(prim) != 1 || prim[0].id != root.partID || prim[0].offset != root.offset || prim[0].size != root.size ||
			(prim[0].fstype != sifFsSquashfs && prim[0].fstype != sifFsEncryptedSquashfs) {
			t.Fatalf("accepted rootfs %+v from %+v", root, prim)
		}
		if len(sf.objects) <= sifWriterSlots {
			checkSIFRewrite(t, data, sf, root)
		}
	})
}

// checkSIFRewrite writes the parsed objects again with writeSIF and checks the result parses to
// the same objects and the same rootfs.
func checkSIFRewrite(t *testing.T, data []byte, sf *sifFile, root imageRootfs) {
	t.Helper()
	index := map[uint32]int{} // old ID → position
	for i, o := range sf.objects {
		index[o.id] = i
	}
	target := func(objs []sifObject, ids map[uint32]int, link uint32) int {
		if link&sifGroupMask == sifGroupMask {
			return -2 // group link
		}
		if i, ok := ids[link]; ok {
			return i
		}
		return -1
	}
	objs := make([]sifNewObject, len(sf.objects))
	for i, o := range sf.objects {
		link := o.linkedID
		if tgt := target(sf.objects, index, link); tgt >= 0 {
			link = uint32(tgt + 1)
		} else if tgt == -1 {
			link = 0
		}
		var align int64
		if o.dataType == sifDataPartition {
			align = sifPartitionAlign
		}
		objs[i] = sifNewObject{dataType: o.dataType, data: bytes.NewReader(data[o.offset : o.offset+o.size]), size: o.size,
			align: align, group: o.groupID &^ sifGroupMask, linkedID: link, name: o.name, extra: o.extra[:]}
	}
	var w sifMemWriter
	n, err := writeSIF(&w, objs, sifWriteOptions{})
	if err != nil {
		t.Fatalf("writeSIF: %v", err)
	}
	sf2, err := parseSIF(bytes.NewReader(w.buf), n, "rewritten")
	if err != nil {
		t.Fatalf("rewritten image refused: %v", err)
	}
	if len(sf2.objects) != len(sf.objects) {
		t.Fatalf("%d objects became %d", len(sf.objects), len(sf2.objects))
	}
	index2 := map[uint32]int{}
	for i, o := range sf2.objects {
		index2[o.id] = i
	}
	for i, a := range sf.objects {
		b := sf2.objects[i]
		if a.dataType != b.dataType || a.groupID&^sifGroupMask != b.groupID&^sifGroupMask || a.name != b.name ||
			a.extra != b.extra || a.size != b.size || a.fstype != b.fstype || a.parttype != b.parttype || a.arch != b.arch ||
			a.formatType != b.formatType || a.messageType != b.messageType ||
			target(sf.objects, index, a.linkedID) != target(sf2.objects, index2, b.linkedID) ||
			!bytes.Equal(data[a.offset:a.offset+a.size], w.buf[b.offset:b.offset+b.size]) {
			t.Fatalf("object %d differs after rewrite:\n%+v\n%+v", i, a, b)
		}
	}
	root2, err := locateRootfs(bytes.NewReader(w.buf), n, "rewritten")
	if err != nil {
		t.Fatalf("rewritten rootfs refused: %v", err)
	}
	if root2.kind != root.kind || root2.size != root.size || (root.keyMessage == nil) != (root2.keyMessage == nil) ||
		(root.keyMessage != nil && index[root.keyMessage.id] != index2[root2.keyMessage.id]) {
		t.Fatalf("rootfs %+v became %+v", root, root2)
	}
}

func FuzzSquashfsSuper(f *testing.F) {
	sb := sifFakeSquashfs(96)
	f.Add(sb, int64(4096), int64(0))
	f.Add(sb, int64(95), int64(0))
	f.Add(sb, int64(math.MaxInt64), int64(math.MaxInt64-50))
	for _, off := range []int{20, 22, 28, 40} {
		b := sifCloneBytes(sb)
		b[off] = 0xff
		f.Add(b, int64(1<<20), int64(4096))
	}
	f.Fuzz(func(t *testing.T, sb []byte, size, offset int64) {
		// The superblock bytes sit at offset in a synthetic file.
		r := sifOffsetReader{data: sb, at: offset}
		var err error
		sifCheckAlloc(t, 1<<20, func() { err = checkSquashfsSuper(r, offset, size, "fuzz") })
		checkSIFFuzzErr(t, err)
		if err != nil {
			return
		}
		le := binary.LittleEndian
		if len(sb) < 96 || le.Uint32(sb) != squashfsMagic || le.Uint64(sb[40:]) > uint64(size) ||
			le.Uint16(sb[20:]) < 1 || le.Uint16(sb[20:]) > 6 || le.Uint16(sb[22:]) < 12 || le.Uint16(sb[22:]) > 20 ||
			le.Uint16(sb[28:]) != 4 || le.Uint16(sb[30:]) != 0 {
			t.Fatalf("accepted superblock %x with size %d", sb, size)
		}
	})
}

// sifOffsetReader is a file holding data at offset at and nothing else.
type sifOffsetReader struct {
	data []byte
	at   int64
}

func (o sifOffsetReader) ReadAt(p []byte, off int64) (int, error) {
	if off != o.at {
		return 0, io.EOF
	}
	n := copy(p, o.data)
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

// byteReads is an io.ReaderAt over b that counts how often each byte is read.
type byteReads struct {
	b     []byte
	times []int
}

func (r *byteReads) ReadAt(p []byte, off int64) (int, error) {
	n, err := bytes.NewReader(r.b).ReadAt(p, off)
	for i := off; i < off+int64(n); i++ {
		r.times[i]++
	}
	return n, err
}

// TestLocateRootfsReadsOnce: recognising an image reads no byte of it twice
// (the header read to tell the format is reused by the parser that follows).
func TestLocateRootfsReadsOnce(t *testing.T) {
	for _, c := range []struct {
		name string
		img  []byte
	}{
		{"squashfs", sifFakeSquashfs(8192)},
		{"sif", sifBaseImage(t)},
		{"sif-compact", sifCompact(t, sifBaseImage(t))}, // the partition within the first 2048 bytes
	} {
		r := &byteReads{b: c.img, times: make([]int, len(c.img))}
		if _, err := locateRootfs(r, int64(len(c.img)), c.name); err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		for off, n := range r.times {
			if n > 1 {
				t.Errorf("%s: byte %d read %d times", c.name, off, n)
				break
			}
		}
	}
}
