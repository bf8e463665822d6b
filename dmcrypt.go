// dmcrypt.go owns the dm-crypt backend: raw device-mapper ioctls on hand-laid structs (no
// libdevmapper, no cgo), activation on a throwaway locked thread with the key handed to the kernel
// as a logon key, deferred removal, and the sweep of stale MINIRUN-* devices
// (spec/images-and-encryption.md §4.3, security.md R12).
package main

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"strconv"
	"strings"
	"unsafe"

	"golang.org/x/sys/unix"
)

// struct dm_ioctl and struct dm_target_spec (include/uapi/linux/dm-ioctl.h).
const (
	dmIoctlSize      = 312 // dm_ioctl, also the data_start of every request
	dmTargetSpecSize = 40
	dmNameLen        = 128
	dmUUIDLen        = 129
	dmTypeNameLen    = 16
	dmMaxReply       = 1 << 20 // bound on list and status replies
	dmCreateTries    = 3
	dmDeferredMinor  = 27 // dm-ioctl 4.27 added DM_DEFERRED_REMOVE
	dmNamePrefix     = "minirun-"
	dmUUIDPrefix     = "MINIRUN-"
	dmControlPath    = "/dev/mapper/control"
	dmMiscMajor      = 10
	dmControlMinor   = 236 // when /proc/misc does not say
)

// The ioctls are _IOWR(0xfd, nr, struct dm_ioctl); above MaxInt32, so uintptr.
func dmIOWR(nr uintptr) uintptr { return 3<<30 | dmIoctlSize<<16 | 0xfd<<8 | nr }

var (
	dmCmdVersion      = dmIOWR(0x00)
	dmCmdListDevices  = dmIOWR(0x02)
	dmCmdDevCreate    = dmIOWR(0x03)
	dmCmdDevRemove    = dmIOWR(0x04)
	dmCmdDevSuspend   = dmIOWR(0x06)
	dmCmdDevStatus    = dmIOWR(0x07)
	dmCmdTableLoad    = dmIOWR(0x09)
	dmCmdTableStatus  = dmIOWR(0x0c)
	dmCmdListVersions = dmIOWR(0x0d)
)

// dm_ioctl flags.
const (
	dmReadonlyFlag      = 1 << 0
	dmSuspendFlag       = 1 << 1
	dmStatusTableFlag   = 1 << 4
	dmActivePresentFlag = 1 << 5
	dmBufferFullFlag    = 1 << 8
	dmSecureDataFlag    = 1 << 15
	dmDeferredRemove    = 1 << 17
)

// dmNodeDir holds the device node for the moment between resume and open. It must not be on a
// nodev mount, which rules out /run on systemd hosts; /dev (devtmpfs) never is. A variable for tests.
var dmNodeDir = "/dev/.minirun"

// dmHeader is struct dm_ioctl, native endian:
//
//	0 version[3]  12 data_size  16 data_start  20 target_count  24 open_count  28 flags
//	32 event_nr   36 padding    40 dev (huge_encode_dev)        48 name[128]   176 uuid[129]  305 data[7]
type dmHeader struct {
	version     [3]uint32
	dataSize    uint32
	dataStart   uint32
	targetCount uint32
	openCount   int32
	flags       uint32
	eventNr     uint32
	dev         uint64
	name        string
	uuid        string
}

// encode writes h over b[:312]; version {4,0,0} is sent when h.version is zero.
func (h *dmHeader) encode(b []byte) error {
	if len(b) < dmIoctlSize {
		return failf(eInternal, "device-mapper request buffer of %d bytes", len(b))
	}
	if len(h.name) >= dmNameLen || strings.ContainsAny(h.name, "/\x00") || len(h.uuid) >= dmUUIDLen || strings.IndexByte(h.uuid, 0) >= 0 {
		return failf(eInternal, "device-mapper name %q or uuid %q does not fit", h.name, h.uuid)
	}
	v := h.version
	if v == [3]uint32{} {
		v = [3]uint32{4, 0, 0}
	}
	clear(b[:dmIoctlSize])
	ne := binary.NativeEndian
	ne.PutUint32(b[0:], v[0])
	ne.PutUint32(b[4:], v[1])
	ne.PutUint32(b[8:], v[2])
	ne.PutUint32(b[12:], h.dataSize)
	ne.PutUint32(b[16:], h.dataStart)
	ne.PutUint32(b[20:], h.targetCount)
	ne.PutUint32(b[24:], uint32(h.openCount))
	ne.PutUint32(b[28:], h.flags)
	ne.PutUint32(b[32:], h.eventNr)
	ne.PutUint64(b[40:], h.dev)
	copy(b[48:48+dmNameLen], h.name)
	copy(b[176:176+dmUUIDLen], h.uuid)
	return nil
}

// decodeDMHeader reads a reply header; b holds at least 312 bytes.
func decodeDMHeader(b []byte) dmHeader {
	ne := binary.NativeEndian
	return dmHeader{
		version:     [3]uint32{ne.Uint32(b[0:]), ne.Uint32(b[4:]), ne.Uint32(b[8:])},
		dataSize:    ne.Uint32(b[12:]),
		dataStart:   ne.Uint32(b[16:]),
		targetCount: ne.Uint32(b[20:]),
		openCount:   int32(ne.Uint32(b[24:])),
		flags:       ne.Uint32(b[28:]),
		eventNr:     ne.Uint32(b[32:]),
		dev:         ne.Uint64(b[40:]),
		name:        cutNUL(b[48 : 48+dmNameLen]),
		uuid:        cutNUL(b[176 : 176+dmUUIDLen]),
	}
}

// encodeDMTargetSpec writes one struct dm_target_spec and its NUL-terminated parameters at b,
// padded to 8 bytes, and returns the bytes used (also stored as next). params may be nil when
// the caller writes them itself at b[40:].
//
//	0 sector_start  8 length  16 status  20 next  24 target_type[16]  40 parameters
func encodeDMTargetSpec(b []byte, start, length uint64, targetType string, paramsLen int) (int, error) {
	used := dmTargetSpecSize + (paramsLen+1+7)/8*8
	if len(targetType) >= dmTypeNameLen || len(b) < used || paramsLen < 0 {
		return 0, failf(eInternal, "device-mapper target %q with %d bytes of parameters does not fit", targetType, paramsLen)
	}
	ne := binary.NativeEndian
	clear(b[:dmTargetSpecSize])
	ne.PutUint64(b[0:], start)
	ne.PutUint64(b[8:], length)
	ne.PutUint32(b[20:], uint32(used))
	copy(b[24:24+dmTypeNameLen], targetType)
	clear(b[dmTargetSpecSize+paramsLen : used])
	return used, nil
}

// dmAlignedBuffer returns n zero bytes (rounded up to 8) in 8-byte-aligned memory.
func dmAlignedBuffer(n int) []byte {
	words := make([]uint64, (n+7)/8)
	return unsafe.Slice((*byte)(unsafe.Pointer(&words[0])), len(words)*8)
}

// dmControl is an open /dev/mapper/control.
type dmControl struct{ f *os.File }

// openDMControl opens the control node, making it (misc 10:minor from /proc/misc) when it is
// missing while the kernel has device-mapper, and checks it is that character device.
func openDMControl() (*dmControl, error) {
	minor, listed := dmMiscMinor()
	f, err := openFile(dmControlPath, os.O_RDWR|unix.O_NOFOLLOW, 0)
	if errors.Is(err, os.ErrNotExist) && listed {
		if err := os.Mkdir("/dev/mapper", 0o755); err != nil && !errors.Is(err, os.ErrExist) {
			return nil, failf(eSystem, "create /dev/mapper: %w", err)
		}
		if err := unix.Mknod(dmControlPath, unix.S_IFCHR|0o600, int(unix.Mkdev(dmMiscMajor, minor))); err != nil && !errors.Is(err, unix.EEXIST) {
			return nil, failf(eSystem, "create %s: %w", dmControlPath, err)
		}
		f, err = openFile(dmControlPath, os.O_RDWR|unix.O_NOFOLLOW, 0)
	}
	if err != nil {
		return nil, failf(eSystem, "device-mapper not available: open %s: %w", dmControlPath, err)
	}
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFCHR ||
		unix.Major(st.Rdev) != dmMiscMajor || unix.Minor(st.Rdev) != minor {
		f.Close()
		return nil, failf(eSystem, "device-mapper not available: %s is not the character device %d:%d", dmControlPath, dmMiscMajor, minor)
	}
	return &dmControl{f: f}, nil
}

// dmMiscMinor reads device-mapper's misc minor from /proc/misc ("236 device-mapper").
func dmMiscMinor() (uint32, bool) {
	f, err := openFile("/proc/misc", os.O_RDONLY, 0)
	if err != nil {
		return dmControlMinor, false
	}
	defer f.Close()
	s := bufio.NewScanner(io.LimitReader(f, 64<<10))
	for s.Scan() {
		fields := strings.Fields(s.Text())
		if len(fields) == 2 && fields[1] == "device-mapper" {
			if n, err := strconv.ParseUint(fields[0], 10, 20); err == nil {
				return uint32(n), true
			}
		}
	}
	return dmControlMinor, false
}

func (c *dmControl) close() { c.f.Close() }

// ioctl sends one request in buf (a header plus payload) and returns the reply header.
func (c *dmControl) ioctl(cmd uintptr, buf []byte) (dmHeader, error) {
	_, _, errno := unix.Syscall(unix.SYS_IOCTL, c.f.Fd(), cmd, uintptr(unsafe.Pointer(&buf[0])))
	runtime.KeepAlive(buf)
	if errno != 0 {
		return dmHeader{}, errno
	}
	return decodeDMHeader(buf), nil
}

// call sends a request without payload and returns the reply header and data, retrying with a
// larger buffer (up to dmMaxReply) while the kernel reports DM_BUFFER_FULL_FLAG.
func (c *dmControl) call(cmd uintptr, h dmHeader) (dmHeader, []byte, error) {
	for room := 16 << 10; ; room *= 4 {
		buf := dmAlignedBuffer(dmIoctlSize + room)
		h.dataSize, h.dataStart = uint32(len(buf)), dmIoctlSize
		if err := h.encode(buf); err != nil {
			return dmHeader{}, nil, err
		}
		r, err := c.ioctl(cmd, buf)
		if err != nil {
			return dmHeader{}, nil, err
		}
		if r.flags&dmBufferFullFlag != 0 {
			if room >= dmMaxReply {
				return dmHeader{}, nil, failf(eResource, "device-mapper reply larger than %d bytes", dmMaxReply)
			}
			continue
		}
		if r.dataStart < dmIoctlSize || r.dataSize < r.dataStart || int64(r.dataSize) > int64(len(buf)) {
			return r, nil, nil // no data (DEV_STATUS and the like)
		}
		return r, buf[r.dataStart:r.dataSize], nil
	}
}

// version returns the kernel's dm-ioctl interface version.
func (c *dmControl) version() ([3]uint32, error) {
	r, _, err := c.call(dmCmdVersion, dmHeader{})
	if err != nil {
		return [3]uint32{}, failf(eSystem, "device-mapper DM_VERSION: %w", err)
	}
	return r.version, nil
}

// dmListed is one device from DM_LIST_DEVICES.
type dmListed struct {
	dev  uint64
	name string
}

func (c *dmControl) listDevices() ([]dmListed, error) {
	_, data, err := c.call(dmCmdListDevices, dmHeader{})
	if err != nil {
		return nil, failf(eSystem, "device-mapper DM_LIST_DEVICES: %w", err)
	}
	return parseDMNameList(data)
}

// parseDMNameList reads struct dm_name_list records: dev u64 @0, next u32 @8 (offset of the next
// record from this one, 0 for the last), name @12; dev 0 in the first record means none.
func parseDMNameList(data []byte) (list []dmListed, err error) {
	defer dmRecover(&err, "device list")
	for off := 0; ; {
		if off+12 > len(data) {
			if off == 0 {
				return nil, nil
			}
			return nil, failf(eSystem, "device-mapper device list: record at %d past the end", off)
		}
		dev := binary.NativeEndian.Uint64(data[off:])
		next := int(binary.NativeEndian.Uint32(data[off+8:]))
		if off == 0 && dev == 0 {
			return nil, nil
		}
		end := len(data)
		if next != 0 {
			end = off + next
		}
		if next != 0 && (next < 13 || end > len(data)) {
			return nil, failf(eSystem, "device-mapper device list: bad next offset %d at %d", next, off)
		}
		nul := bytes.IndexByte(data[off+12:end], 0)
		if nul < 0 || nul >= dmNameLen {
			return nil, failf(eSystem, "device-mapper device list: unterminated name at %d", off)
		}
		list = append(list, dmListed{dev: dev, name: string(data[off+12 : off+12+nul])})
		if next == 0 {
			return list, nil
		}
		off = end
	}
}

// targetVersions returns DM_LIST_VERSIONS: the loaded target types and their versions.
func (c *dmControl) targetVersions() (map[string][3]uint32, error) {
	_, data, err := c.call(dmCmdListVersions, dmHeader{})
	if err != nil {
		return nil, failf(eSystem, "device-mapper DM_LIST_VERSIONS: %w", err)
	}
	return parseDMTargetVersions(data)
}

// parseDMTargetVersions reads struct dm_target_versions records: next u32 @0 (from this record,
// 0 for the last), version u32[3] @4, name @16.
func parseDMTargetVersions(data []byte) (m map[string][3]uint32, err error) {
	defer dmRecover(&err, "target list")
	m = map[string][3]uint32{}
	for off := 0; off < len(data); {
		if off+16 > len(data) {
			return nil, failf(eSystem, "device-mapper target list: record at %d past the end", off)
		}
		ne := binary.NativeEndian
		next := int(ne.Uint32(data[off:]))
		v := [3]uint32{ne.Uint32(data[off+4:]), ne.Uint32(data[off+8:]), ne.Uint32(data[off+12:])}
		end := len(data)
		if next != 0 {
			end = off + next
		}
		if next != 0 && (next < 17 || end > len(data)) {
			return nil, failf(eSystem, "device-mapper target list: bad next offset %d at %d", next, off)
		}
		nul := bytes.IndexByte(data[off+16:end], 0)
		if nul < 0 || nul >= dmTypeNameLen {
			return nil, failf(eSystem, "device-mapper target list: unterminated name at %d", off)
		}
		m[string(data[off+16:off+16+nul])] = v
		if next == 0 {
			break
		}
		off = end
	}
	return m, nil
}

// status returns DM_DEV_STATUS for a device: flags, open count, dev, uuid.
func (c *dmControl) status(name string) (dmHeader, error) {
	r, _, err := c.call(dmCmdDevStatus, dmHeader{name: name})
	if err != nil {
		return dmHeader{}, err
	}
	return r, nil
}

// dmTarget is one line of a table as DM_TABLE_STATUS returns it.
type dmTarget struct {
	start, length uint64
	targetType    string
	params        string
}

// table returns the active table of a device (DM_TABLE_STATUS with DM_STATUS_TABLE_FLAG). For a
// crypt target the kernel shows the key reference or, for hex keys, the key itself.
func (c *dmControl) table(name string) ([]dmTarget, error) {
	r, data, err := c.call(dmCmdTableStatus, dmHeader{name: name, flags: dmStatusTableFlag})
	if err != nil {
		return nil, err
	}
	return parseDMTableStatus(data, r.targetCount)
}

// parseDMTableStatus reads count dm_target_spec records with their strings; in a status reply
// next is the offset of the next record from the start of the data.
func parseDMTableStatus(data []byte, count uint32) (ts []dmTarget, err error) {
	defer dmRecover(&err, "table")
	if int64(count) > int64(len(data)/dmTargetSpecSize) {
		return nil, failf(eSystem, "device-mapper table: %d targets in %d bytes", count, len(data))
	}
	off := 0
	for i := uint32(0); i < count; i++ {
		if off < 0 || off+dmTargetSpecSize > len(data) {
			return nil, failf(eSystem, "device-mapper table: target %d past the end", i)
		}
		ne := binary.NativeEndian
		rest := data[off+dmTargetSpecSize:]
		nul := bytes.IndexByte(rest, 0)
		if nul < 0 {
			return nil, failf(eSystem, "device-mapper table: unterminated parameters of target %d", i)
		}
		ts = append(ts, dmTarget{
			start:      ne.Uint64(data[off:]),
			length:     ne.Uint64(data[off+8:]),
			targetType: cutNUL(data[off+24 : off+24+dmTypeNameLen]),
			params:     string(rest[:nul]),
		})
		next := int(ne.Uint32(data[off+20:]))
		if next <= off {
			if i+1 < count {
				return nil, failf(eSystem, "device-mapper table: next offset %d of target %d goes back", next, i)
			}
			break
		}
		off = next
	}
	return ts, nil
}

// remove sends DM_DEV_REMOVE; with deferred set the kernel removes a busy device at its last
// close and reports that by keeping DM_DEFERRED_REMOVE in the reply.
func (c *dmControl) remove(name string, deferred bool) (dmHeader, error) {
	h := dmHeader{name: name}
	if deferred {
		h.flags = dmDeferredRemove
	}
	r, _, err := c.call(dmCmdDevRemove, h)
	return r, err
}

func dmRecover(err *error, what string) {
	if p := recover(); p != nil {
		*err = failf(eInternal, "device-mapper %s: internal fault: %v", what, p)
	}
}

// --- availability ------------------------------------------------------------------------------

// dmcryptAvailable reports whether the dm-crypt backend can run here (spec §4.2 "auto"): the
// control node opens (as root), DM_VERSION answers 4.x with deferred remove (≥ 4.27), and the
// crypt target is registered or its module is known to the running kernel.
func dmcryptAvailable() bool {
	c, err := openDMControl()
	if err != nil {
		return false
	}
	defer c.close()
	if v, err := c.version(); err != nil || v[0] != 4 || v[1] < dmDeferredMinor {
		return false
	}
	if vers, err := c.targetVersions(); err == nil {
		if _, ok := vers["crypt"]; ok {
			return true
		}
	}
	return dmCryptModuleKnown()
}

// dmCryptModuleKnown is true when the kernel can load the crypt target on first use: dm_crypt is
// loaded, or modules.builtin / modules.dep of the running kernel list dm-crypt.ko.
func dmCryptModuleKnown() bool {
	if _, err := os.Stat("/sys/module/dm_crypt"); err == nil {
		return true
	}
	var u unix.Utsname
	if unix.Uname(&u) != nil {
		return false
	}
	dir := "/lib/modules/" + unix.ByteSliceToString(u.Release[:])
	for _, name := range []string{"modules.builtin", "modules.dep"} {
		f, err := openFile(dir+"/"+name, os.O_RDONLY, 0)
		if err != nil {
			continue
		}
		s := bufio.NewScanner(io.LimitReader(f, 16<<20))
		s.Buffer(make([]byte, 64<<10), 1<<20)
		for s.Scan() {
			line := s.Text()
			if i := strings.IndexByte(line, ':'); i >= 0 {
				line = line[:i]
			}
			if strings.HasSuffix(line, "/dm-crypt.ko") || strings.Contains(line, "/dm-crypt.ko.") {
				f.Close()
				return true
			}
		}
		f.Close()
	}
	return false
}

// --- identity of minirun's devices -------------------------------------------------------------

// dmNewIdentity names a new device: minirun-<16 hex> and MINIRUN-<pid>-<starttime>-<same hex>,
// so a later run can tell whether the creator still exists.
func dmNewIdentity(pid int, start uint64) (name, uuid string, err error) {
	var r [8]byte
	if _, err := rand.Read(r[:]); err != nil {
		return "", "", failf(eSystem, "random device-mapper name: %w", err)
	}
	id := hex.EncodeToString(r[:])
	return dmNamePrefix + id, fmt.Sprintf("%s%d-%d-%s", dmUUIDPrefix, pid, start, id), nil
}

// dmCreatorOf parses MINIRUN-<pid>-<starttime>-<hex>.
func dmCreatorOf(uuid string) (pid int, start uint64, ok bool) {
	rest, found := strings.CutPrefix(uuid, dmUUIDPrefix)
	if !found {
		return 0, 0, false
	}
	parts := strings.Split(rest, "-")
	if len(parts) != 3 || parts[2] == "" || len(parts[2]) > 64 {
		return 0, 0, false
	}
	p, err1 := strconv.ParseUint(parts[0], 10, 31)
	s, err2 := strconv.ParseUint(parts[1], 10, 64)
	if err1 != nil || err2 != nil || p == 0 || strings.Trim(parts[2], "0123456789abcdef") != "" {
		return 0, 0, false
	}
	return int(p), s, true
}

// dmProcStartTime reads field 22 (starttime, in clock ticks since boot) of /proc/<pid>/stat.
// The command name (field 2) may hold spaces and parentheses, so fields are counted after the
// last ')'.
func dmProcStartTime(pid int) (uint64, error) {
	f, err := openFile("/proc/"+strconv.Itoa(pid)+"/stat", os.O_RDONLY, 0)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, 4096))
	if err != nil {
		return 0, err
	}
	return parseProcStatStartTime(b)
}

func parseProcStatStartTime(b []byte) (uint64, error) {
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, failf(eSystem, "malformed /proc stat line")
	}
	fields := strings.Fields(string(b[i+1:]))
	if len(fields) < 20 { // state is field 3; starttime is field 22
		return 0, failf(eSystem, "malformed /proc stat line")
	}
	start, err := strconv.ParseUint(fields[19], 10, 64)
	if err != nil {
		return 0, failf(eSystem, "malformed /proc stat starttime %q", fields[19])
	}
	return start, nil
}

// dmCreatorGone is true only when the creator certainly no longer exists: its /proc entry is
// missing or belongs to a process started at another time. Unreadable entries count as alive.
func dmCreatorGone(pid int, start uint64) bool {
	got, err := dmProcStartTime(pid)
	if err != nil {
		return errors.Is(err, os.ErrNotExist) || errors.Is(err, unix.ESRCH)
	}
	return got != start
}

// --- the crypt table ---------------------------------------------------------------------------

// cryptTableParams returns the crypt target line for vol over the block device loopDev as the
// text before and after the key field, and its length in 512-byte sectors:
// "<cipher> " + key + " 0 <major>:<minor> <offset> [1 sector_size:N]".
func cryptTableParams(vol *luksVolume, loopDev uint64, loopSize int64) (before, after string, sectors uint64, err error) {
	if vol == nil {
		return "", "", 0, failf(eInternal, "dm-crypt table without a volume")
	}
	if !validDMCipher(vol.cipher) {
		return "", "", 0, failf(eImage, "dm-crypt cannot use cipher %q", vol.cipher)
	}
	ss := int64(vol.sectorSize)
	switch {
	case ss != 512 && ss != 1024 && ss != 2048 && ss != 4096:
		return "", "", 0, failf(eImage, "dm-crypt cannot use a sector size of %d", ss)
	case vol.dataOffset < 0 || vol.dataOffset%ss != 0:
		return "", "", 0, failf(eImage, "LUKS data offset %d is not a multiple of the %d-byte sector", vol.dataOffset, ss)
	case vol.dataLength <= 0 || vol.dataLength%ss != 0:
		return "", "", 0, failf(eImage, "LUKS data length %d is not a positive multiple of the %d-byte sector", vol.dataLength, ss)
	case vol.dataOffset > loopSize || vol.dataLength > loopSize-vol.dataOffset:
		return "", "", 0, failf(eImage, "LUKS data [%d, +%d) exceeds the %d-byte partition", vol.dataOffset, vol.dataLength, loopSize)
	}
	before = vol.cipher + " "
	after = fmt.Sprintf(" 0 %d:%d %d", unix.Major(loopDev), unix.Minor(loopDev), vol.dataOffset/512)
	if ss != 512 {
		after += fmt.Sprintf(" 1 sector_size:%d", ss)
	}
	return before, after, uint64(vol.dataLength / 512), nil
}

// validDMCipher accepts a dm-crypt cipher spec such as aes-xts-plain64 or aes-cbc-essiv:sha256:
// no spaces (they would add table fields), nothing the kernel would not parse as one word.
func validDMCipher(s string) bool {
	if s == "" || len(s) > 64 {
		return false
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-' || r == ':' || r == '_' || r == '(' || r == ')') {
			return false
		}
	}
	return true
}

// cryptKeyringRef is the key field naming a logon key: ":<bytes>:logon:<description>".
func cryptKeyringRef(keySize int, desc string) string {
	return fmt.Sprintf(":%d:logon:%s", keySize, desc)
}

// cryptKeyringMinimum is the first crypt target version that takes keyring keys (cryptsetup's
// threshold, 1.18.1); older ones get the key in hex with DM_SECURE_DATA_FLAG.
var cryptKeyringMinimum = [3]uint32{1, 18, 1}

func dmVersionAtLeast(v, min [3]uint32) bool {
	for i := range v {
		if v[i] != min[i] {
			return v[i] > min[i]
		}
	}
	return true
}

// --- activation --------------------------------------------------------------------------------

// attachDMCrypt maps the LUKS volume on the read-only ciphertext loop device through dm-crypt and
// returns the mapped device open read-only. The device is already marked for deferred removal:
// it disappears when the last holder (this fd, then the mount made from it) goes, even if every
// minirun process is SIGKILLed. Mount it with f.Name(), a /proc/self/fd path valid while f is
// open (its node is already unlinked). The caller keeps ciphertextLoop open until the returned
// file is open (it is, on return) and then may close it: the table holds the loop. uid is the
// caller's, named in errors.
func attachDMCrypt(ciphertextLoop *os.File, vol *luksVolume, key *volumeKey, uid int) (*os.File, error) {
	if ciphertextLoop == nil || vol == nil || key == nil || len(key.bytes()) == 0 {
		return nil, failf(eInternal, "dm-crypt attach without a device, volume or key")
	}
	if len(key.bytes()) != vol.keySize {
		return nil, failf(eInternal, "dm-crypt attach: %d-byte key for a %d-byte volume key", len(key.bytes()), vol.keySize)
	}
	type result struct {
		f   *os.File
		err error
	}
	done := make(chan result, 1)
	go func() {
		// The thread keyring and the key's possession belong to this OS thread. It is never
		// unlocked, so the runtime ends the thread (and its keyring) with this goroutine.
		runtime.LockOSThread()
		var r result
		defer func() {
			if p := recover(); p != nil {
				r = result{nil, failf(eInternal, "dm-crypt attach: internal fault: %v", p)}
			}
			done <- r
		}()
		r.f, r.err = attachDMCryptLocked(ciphertextLoop, vol, key, uid)
	}()
	r := <-done
	return r.f, r.err
}

func attachDMCryptLocked(loop *os.File, vol *luksVolume, key *volumeKey, uid int) (*os.File, error) {
	var lst unix.Stat_t
	if err := unix.Fstat(int(loop.Fd()), &lst); err != nil || lst.Mode&unix.S_IFMT != unix.S_IFBLK {
		return nil, failf(eInternal, "dm-crypt attach: %s is not a block device", loop.Name())
	}
	loopSize, err := unix.IoctlGetUint64(int(loop.Fd()), unix.BLKGETSIZE64)
	if err != nil || loopSize > 1<<62 {
		return nil, failf(eSystem, "size of %s: %v", loop.Name(), err)
	}
	before, after, sectors, err := cryptTableParams(vol, lst.Rdev, int64(loopSize))
	if err != nil {
		return nil, err
	}

	// 1. Version, garbage collection, crypt target capabilities.
	c, err := openDMControl()
	if err != nil {
		return nil, err
	}
	defer c.close()
	v, err := c.version()
	if err != nil {
		return nil, err
	}
	if v[0] != 4 || v[1] < dmDeferredMinor {
		return nil, failf(eSystem, "device-mapper interface %d.%d.%d is too old (need 4.%d for deferred remove)", v[0], v[1], v[2], dmDeferredMinor)
	}
	c.sweep()
	useKeyring := true
	if vers, err := c.targetVersions(); err == nil {
		if cv, ok := vers["crypt"]; ok && !dmVersionAtLeast(cv, cryptKeyringMinimum) {
			useKeyring = false
		}
	}

	// 2. Create, retrying on a name or uuid collision.
	start, err := dmProcStartTime(os.Getpid())
	if err != nil {
		return nil, failf(eSystem, "read own start time: %w", err)
	}
	var name, uuid string
	for try := 0; ; try++ {
		if name, uuid, err = dmNewIdentity(os.Getpid(), start); err != nil {
			return nil, err
		}
		if _, _, err = c.call(dmCmdDevCreate, dmHeader{name: name, uuid: uuid}); err == nil {
			break
		}
		if !errors.Is(err, unix.EBUSY) || try+1 >= dmCreateTries {
			return nil, failf(eSystem, "device-mapper DM_DEV_CREATE %s (uid %d): %w", name, uid, err)
		}
	}
	var node *os.File
	ok := false
	defer func() {
		if ok {
			return
		}
		// Deferred, so a transient opener (udev's blkid) cannot make the removal fail; an
		// unopened device goes at once. If this fails too, the next run's sweep removes it.
		if node != nil {
			node.Close()
		}
		c.remove(name, true)
	}()

	// 3. Table load on this thread, the key in its keyring only for the duration of the call.
	if err := c.loadCryptTable(name, key.bytes(), before, after, sectors, useKeyring); err != nil {
		return nil, err
	}

	// 4. Resume, then the table must be active.
	if _, _, err := c.call(dmCmdDevSuspend, dmHeader{name: name}); err != nil {
		return nil, failf(eSystem, "device-mapper resume %s: %w", name, err)
	}
	st, err := c.status(name)
	if err != nil {
		return nil, failf(eSystem, "device-mapper DM_DEV_STATUS %s: %w", name, err)
	}
	if st.flags&dmActivePresentFlag == 0 || st.flags&dmSuspendFlag != 0 || st.uuid != uuid {
		return nil, failf(eSystem, "device-mapper device %s is not active after resume (flags %#x)", name, st.flags)
	}

	// 5-6. A private node for the device sysfs confirms is ours, opened read-only and checked.
	if node, err = openDMNode(st.dev, name, uuid); err != nil {
		return nil, err
	}
	if err := checkSquashfsSuper(node, 0, vol.dataLength, loop.Name()+" (decrypted)"); err != nil {
		return nil, err
	}

	// 7. Deferred removal while our fd holds the device: the kernel must keep the flag.
	r, err := c.remove(name, true)
	if err != nil {
		return nil, failf(eSystem, "device-mapper deferred remove of %s: %w", name, err)
	}
	if r.flags&dmDeferredRemove == 0 {
		return nil, failf(eInternal, "device-mapper removed %s at once instead of deferring", name)
	}
	ok = true
	return node, nil
}

// loadCryptTable sends DM_TABLE_LOAD (read-only, secure data) with one crypt target. The key is
// either added to this thread's keyring as a logon key for the duration of the call, or (old
// crypt targets) written in hex into a locked buffer that is wiped afterwards.
func (c *dmControl) loadCryptTable(name string, key []byte, before, after string, sectors uint64, useKeyring bool) error {
	var desc string
	keyField := 2 * len(key)
	if useKeyring {
		var r [16]byte
		if _, err := rand.Read(r[:]); err != nil {
			return failf(eSystem, "random key description: %w", err)
		}
		desc = "minirun:" + hex.EncodeToString(r[:])
		keyField = len(cryptKeyringRef(len(key), desc))
	}
	paramsLen := len(before) + keyField + len(after)
	sb, err := newSecretBuf(dmIoctlSize + dmTargetSpecSize + paramsLen + 8)
	if err != nil {
		return err
	}
	defer sb.wipe()
	buf := sb.bytes()
	h := dmHeader{dataSize: uint32(len(buf)), dataStart: dmIoctlSize, targetCount: 1, name: name,
		flags: dmReadonlyFlag | dmSecureDataFlag}
	if err := h.encode(buf); err != nil {
		return err
	}
	if _, err := encodeDMTargetSpec(buf[dmIoctlSize:], 0, sectors, "crypt", paramsLen); err != nil {
		return err
	}
	p := buf[dmIoctlSize+dmTargetSpecSize:]
	n := copy(p, before)
	if useKeyring {
		n += copy(p[n:], cryptKeyringRef(len(key), desc))
	} else {
		n += hex.Encode(p[n:], key)
	}
	copy(p[n:], after)

	if useKeyring {
		id, err := unix.AddKey("logon", desc, key, unix.KEY_SPEC_THREAD_KEYRING)
		if err != nil {
			return failf(eSystem, "add the volume key to the thread keyring: %w", err)
		}
		// Invalidate while this thread still possesses the key (no other permission would allow
		// it), then unlink; the kernel has its own copy once the load returns.
		defer func() {
			unix.KeyctlInt(unix.KEYCTL_INVALIDATE, id, 0, 0, 0)
			unix.KeyctlInt(unix.KEYCTL_UNLINK, id, unix.KEY_SPEC_THREAD_KEYRING, 0, 0)
		}()
	}
	if _, err := c.ioctl(dmCmdTableLoad, buf); err != nil {
		return failf(eSystem, "device-mapper DM_TABLE_LOAD (crypt) for %s: %w", name, err)
	}
	return nil
}

// openDMNode opens the device dev read-only through a node made for the purpose in the private
// directory and unlinked at once, after sysfs confirms dev is the mapping name/uuid. It relies
// neither on devtmpfs nor on udev (spec §4.3 step 5).
func openDMNode(dev uint64, name, uuid string) (*os.File, error) {
	sys := fmt.Sprintf("/sys/dev/block/%d:%d/dm/", unix.Major(dev), unix.Minor(dev))
	gotName, err1 := readProcFile(sys+"name", 4096)
	gotUUID, err2 := readProcFile(sys+"uuid", 4096)
	if err1 != nil || err2 != nil || strings.TrimSpace(string(gotName)) != name || strings.TrimSpace(string(gotUUID)) != uuid {
		return nil, failf(eSystem, "device %d:%d is not the mapping %s according to %s", unix.Major(dev), unix.Minor(dev), name, sys)
	}
	if err := ensureDMNodeDir(); err != nil {
		return nil, err
	}
	path := dmNodeDir + "/" + uuid
	if err := unix.Mknod(path, unix.S_IFBLK|0o600, int(dev)); err != nil {
		return nil, failf(eSystem, "create device node %s: %w", path, err)
	}
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC|unix.O_NOFOLLOW, 0)
	unix.Unlink(path)
	if err != nil {
		return nil, failf(eSystem, "open %s: %w", path, err)
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFBLK || st.Rdev != dev {
		unix.Close(fd)
		return nil, failf(eInternal, "device node %s does not open device %d:%d", path, unix.Major(dev), unix.Minor(dev))
	}
	return os.NewFile(uintptr(fd), "/proc/self/fd/"+strconv.Itoa(fd)), nil
}

// ensureDMNodeDir makes the node directory root-owned 0700 on a mount that allows devices.
func ensureDMNodeDir() error {
	if err := unix.Mkdir(dmNodeDir, 0o700); err != nil && !errors.Is(err, unix.EEXIST) {
		return failf(eSystem, "create %s: %w", dmNodeDir, err)
	}
	var st unix.Stat_t
	if err := unix.Lstat(dmNodeDir, &st); err != nil {
		return failf(eSystem, "stat %s: %w", dmNodeDir, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFDIR || st.Uid != 0 || st.Mode&0o077 != 0 {
		return failf(eSystem, "%s is not a root-owned 0700 directory", dmNodeDir)
	}
	var fs unix.Statfs_t
	if err := unix.Statfs(dmNodeDir, &fs); err != nil {
		return failf(eSystem, "statfs %s: %w", dmNodeDir, err)
	}
	if fs.Flags&unix.ST_NODEV != 0 {
		return failf(eSystem, "%s is on a nodev mount: device nodes there cannot be opened", dmNodeDir)
	}
	return nil
}

// --- garbage collection (R12) ------------------------------------------------------------------

// sweepStaleDMDevices removes minirun's dm devices that a SIGKILL between DM_DEV_CREATE and the
// deferred remove left behind (creator gone, open count 0), and nodes left in dmNodeDir the same
// way. Without device-mapper there is nothing to sweep. Devices in use are never touched.
func sweepStaleDMDevices() error {
	sweepStaleDMNodes()
	c, err := openDMControl()
	if err != nil {
		return nil
	}
	defer c.close()
	return c.sweep()
}

func (c *dmControl) sweep() error {
	list, err := c.listDevices()
	if err != nil {
		return err
	}
	for _, d := range list {
		if !strings.HasPrefix(d.name, dmNamePrefix) {
			continue
		}
		st, err := c.status(d.name)
		if err != nil {
			continue // removed meanwhile
		}
		pid, start, ok := dmCreatorOf(st.uuid)
		if !ok || st.openCount != 0 || !dmCreatorGone(pid, start) {
			continue
		}
		c.remove(d.name, false) // EBUSY: someone opened it after all
	}
	return nil
}

// sweepStaleDMNodes unlinks nodes in dmNodeDir whose creator is gone (normally a node lives for
// one open call).
func sweepStaleDMNodes() {
	entries, err := os.ReadDir(dmNodeDir)
	if err != nil {
		return
	}
	for i, e := range entries {
		if i >= 4096 {
			break
		}
		if pid, start, ok := dmCreatorOf(e.Name()); ok && dmCreatorGone(pid, start) {
			unix.Unlink(dmNodeDir + "/" + e.Name())
		}
	}
}
