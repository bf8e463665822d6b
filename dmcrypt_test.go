// dmcrypt_test.go checks the pure parts of dmcrypt.go: the hand-laid ioctl structs against
// x/sys's definitions, the crypt table line, names and uuids, the reply parsers, /proc stat
// parsing and the sweep of stale nodes. The device-mapper path itself runs in the VM (vm_test.go).
package main

import (
	"bytes"
	"encoding/binary"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"
)

func TestDMIoctlNumbers(t *testing.T) {
	tests := []struct {
		name string
		got  uintptr
		want uint64
		unix uint64
	}{
		{"DM_VERSION", dmCmdVersion, 0xc138fd00, unix.DM_VERSION},
		{"DM_LIST_DEVICES", dmCmdListDevices, 0xc138fd02, unix.DM_LIST_DEVICES},
		{"DM_DEV_CREATE", dmCmdDevCreate, 0xc138fd03, unix.DM_DEV_CREATE},
		{"DM_DEV_REMOVE", dmCmdDevRemove, 0xc138fd04, unix.DM_DEV_REMOVE},
		{"DM_DEV_SUSPEND", dmCmdDevSuspend, 0xc138fd06, unix.DM_DEV_SUSPEND},
		{"DM_DEV_STATUS", dmCmdDevStatus, 0xc138fd07, unix.DM_DEV_STATUS},
		{"DM_TABLE_LOAD", dmCmdTableLoad, 0xc138fd09, unix.DM_TABLE_LOAD},
		{"DM_TABLE_STATUS", dmCmdTableStatus, 0xc138fd0c, unix.DM_TABLE_STATUS},
		{"DM_LIST_VERSIONS", dmCmdListVersions, 0xc138fd0d, unix.DM_LIST_VERSIONS},
	}
	for _, tc := range tests {
		if uint64(tc.got) != tc.want || tc.want != tc.unix {
			t.Errorf("%s = %#x, want %#x (x/sys %#x)", tc.name, tc.got, tc.want, tc.unix)
		}
	}
	flags := []struct {
		name      string
		got, want uint32
	}{
		{"READONLY", dmReadonlyFlag, unix.DM_READONLY_FLAG},
		{"SUSPEND", dmSuspendFlag, unix.DM_SUSPEND_FLAG},
		{"STATUS_TABLE", dmStatusTableFlag, unix.DM_STATUS_TABLE_FLAG},
		{"ACTIVE_PRESENT", dmActivePresentFlag, unix.DM_ACTIVE_PRESENT_FLAG},
		{"BUFFER_FULL", dmBufferFullFlag, unix.DM_BUFFER_FULL_FLAG},
		{"SECURE_DATA", dmSecureDataFlag, unix.DM_SECURE_DATA_FLAG},
		{"DEFERRED_REMOVE", dmDeferredRemove, unix.DM_DEFERRED_REMOVE},
	}
	for _, f := range flags {
		if f.got != f.want {
			t.Errorf("DM_%s = %#x, want %#x", f.name, f.got, f.want)
		}
	}
	if dmIoctlSize != unix.SizeofDmIoctl || dmTargetSpecSize != unix.SizeofDmTargetSpec ||
		dmNameLen != unix.DM_NAME_LEN || dmUUIDLen != unix.DM_UUID_LEN || dmTypeNameLen != unix.DM_MAX_TYPE_NAME {
		t.Errorf("struct sizes differ from x/sys")
	}
}

// The encoder must put every field where the C struct (as x/sys declares it) has it.
func TestDMHeaderLayout(t *testing.T) {
	h := dmHeader{
		version: [3]uint32{4, 27, 1}, dataSize: 4096, dataStart: 312, targetCount: 1, openCount: -2,
		flags: dmReadonlyFlag | dmSecureDataFlag, eventNr: 0x01020304, dev: 0x0000_0fed_cba9_8765,
		name: "minirun-0123456789abcdef", uuid: "MINIRUN-42-1234-0123456789abcdef",
	}
	buf := dmAlignedBuffer(dmIoctlSize)
	for i := range buf {
		buf[i] = 0xAA // encode must clear what it does not set
	}
	if err := h.encode(buf); err != nil {
		t.Fatal(err)
	}
	c := (*unix.DmIoctl)(unsafe.Pointer(&buf[0]))
	if c.Version != h.version || c.Data_size != 4096 || c.Data_start != 312 || c.Target_count != 1 ||
		c.Open_count != -2 || c.Flags != h.flags || c.Event_nr != h.eventNr || c.Dev != h.dev {
		t.Fatalf("fields misplaced: %+v", *c)
	}
	if unix.ByteSliceToString(c.Name[:]) != h.name || unix.ByteSliceToString(c.Uuid[:]) != h.uuid {
		t.Fatalf("name/uuid misplaced: %q %q", c.Name[:30], c.Uuid[:40])
	}
	if c.Data != [7]byte{} || binary.NativeEndian.Uint32(buf[36:]) != 0 {
		t.Fatalf("padding not cleared")
	}
	if got := decodeDMHeader(buf); got != h {
		t.Fatalf("round trip: %+v, want %+v", got, h)
	}
	// Zero version means {4,0,0}: the interface major the kernel checks.
	h2 := dmHeader{name: "x"}
	h2.encode(buf)
	if c.Version != [3]uint32{4, 0, 0} {
		t.Fatalf("default version %v", c.Version)
	}

	refused := []dmHeader{
		{name: strings.Repeat("n", 128)},
		{name: "a/b"},
		{name: "a\x00b"},
		{uuid: strings.Repeat("u", 129)},
	}
	for _, r := range refused {
		if err := r.encode(buf); err == nil {
			t.Errorf("encode accepted name %q uuid %q", r.name, r.uuid)
		}
	}
	ok := []dmHeader{{name: strings.Repeat("n", 127), uuid: strings.Repeat("u", 128)}}
	for _, r := range ok {
		if err := r.encode(buf); err != nil {
			t.Errorf("encode refused the longest name and uuid: %v", err)
		}
		if got := decodeDMHeader(buf); got.name != r.name || got.uuid != r.uuid {
			t.Errorf("longest name/uuid did not round trip")
		}
	}
	if err := h.encode(make([]byte, 311)); err == nil {
		t.Error("encode into a short buffer")
	}
}

func TestDMTargetSpecLayout(t *testing.T) {
	params := "aes-xts-plain64 :64:logon:minirun:00 0 7:3 2048 1 sector_size:4096"
	buf := dmAlignedBuffer(256)
	for i := range buf {
		buf[i] = 0xAA
	}
	copy(buf[dmTargetSpecSize:], params)
	used, err := encodeDMTargetSpec(buf, 0, 12345, "crypt", len(params))
	if err != nil {
		t.Fatal(err)
	}
	if used%8 != 0 || used < dmTargetSpecSize+len(params)+1 || used >= dmTargetSpecSize+len(params)+9 {
		t.Fatalf("used %d bytes for %d bytes of parameters", used, len(params))
	}
	s := (*unix.DmTargetSpec)(unsafe.Pointer(&buf[0]))
	if s.Sector_start != 0 || s.Length != 12345 || s.Status != 0 || s.Next != uint32(used) ||
		unix.ByteSliceToString(s.Target_type[:]) != "crypt" {
		t.Fatalf("spec fields misplaced: %+v", *s)
	}
	if got := string(buf[dmTargetSpecSize : dmTargetSpecSize+len(params)]); got != params {
		t.Fatalf("parameters overwritten: %q", got)
	}
	for _, b := range buf[dmTargetSpecSize+len(params) : used] {
		if b != 0 {
			t.Fatal("parameters not NUL-terminated and zero-padded")
		}
	}
	if _, err := encodeDMTargetSpec(buf, 0, 1, strings.Repeat("t", 16), 0); err == nil {
		t.Error("accepted a 16-byte target type")
	}
	if _, err := encodeDMTargetSpec(buf, 0, 1, "crypt", 256); err == nil {
		t.Error("accepted parameters past the buffer")
	}
}

func TestCryptTableParams(t *testing.T) {
	loop := unix.Mkdev(7, 3)
	const ref = ":64:logon:minirun:0123456789abcdef0123456789abcdef"
	tests := []struct {
		name    string
		vol     luksVolume
		size    int64
		line    string
		sectors uint64
		err     string
	}{
		{"minirun layout", luksVolume{cipher: "aes-xts-plain64", keySize: 64, dataOffset: 1 << 20, dataLength: 8 << 20, sectorSize: 4096}, 9 << 20,
			"aes-xts-plain64 " + ref + " 0 7:3 2048 1 sector_size:4096", 16384, ""},
		{"cryptsetup default", luksVolume{cipher: "aes-xts-plain64", keySize: 64, dataOffset: 16 << 20, dataLength: 3 << 20, sectorSize: 512}, 19 << 20,
			"aes-xts-plain64 " + ref + " 0 7:3 32768", 6144, ""},
		{"luks1 cbc-essiv", luksVolume{cipher: "aes-cbc-essiv:sha256", keySize: 32, dataOffset: 4096 * 512, dataLength: 512 * 10, sectorSize: 512}, 4096*512 + 5120,
			"aes-cbc-essiv:sha256 " + ref + " 0 7:3 4096", 10, ""},
		{"offset not sector aligned", luksVolume{cipher: "aes-xts-plain64", dataOffset: 1<<20 + 512, dataLength: 4096, sectorSize: 4096}, 2 << 20, "", 0, "not a multiple"},
		{"length not sector aligned", luksVolume{cipher: "aes-xts-plain64", dataOffset: 1 << 20, dataLength: 4096 + 512, sectorSize: 4096}, 2 << 20, "", 0, "not a positive multiple"},
		{"empty", luksVolume{cipher: "aes-xts-plain64", dataOffset: 1 << 20, sectorSize: 512}, 2 << 20, "", 0, "not a positive multiple"},
		{"past the partition", luksVolume{cipher: "aes-xts-plain64", dataOffset: 1 << 20, dataLength: 1<<20 + 512, sectorSize: 512}, 2 << 20, "", 0, "exceeds"},
		{"odd sector size", luksVolume{cipher: "aes-xts-plain64", dataOffset: 1 << 20, dataLength: 4096, sectorSize: 8192}, 2 << 20, "", 0, "sector size"},
		{"cipher with a space", luksVolume{cipher: "aes-xts-plain64 1", dataOffset: 1 << 20, dataLength: 4096, sectorSize: 512}, 2 << 20, "", 0, "cipher"},
		{"empty cipher", luksVolume{dataOffset: 1 << 20, dataLength: 4096, sectorSize: 512}, 2 << 20, "", 0, "cipher"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			before, after, sectors, err := cryptTableParams(&tc.vol, loop, tc.size)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) || classOf(err) != eImage {
					t.Fatalf("err = %v, want E_IMAGE containing %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := before + ref + after; got != tc.line || sectors != tc.sectors {
				t.Fatalf("line %q (%d sectors), want %q (%d)", got, sectors, tc.line, tc.sectors)
			}
			if sectors%uint64(tc.vol.sectorSize/512) != 0 {
				t.Fatal("length not a whole number of crypt sectors")
			}
		})
	}
	if got := cryptKeyringRef(64, "minirun:ab"); got != ":64:logon:minirun:ab" {
		t.Fatalf("keyring reference %q", got)
	}
}

func TestDMVersionAtLeast(t *testing.T) {
	tests := []struct {
		v    [3]uint32
		want bool
	}{
		{[3]uint32{1, 18, 1}, true}, {[3]uint32{1, 18, 0}, false}, {[3]uint32{1, 17, 9}, false},
		{[3]uint32{1, 24, 0}, true}, {[3]uint32{2, 0, 0}, true}, {[3]uint32{0, 99, 99}, false},
	}
	for _, tc := range tests {
		if got := dmVersionAtLeast(tc.v, cryptKeyringMinimum); got != tc.want {
			t.Errorf("%v ≥ 1.18.1 = %v", tc.v, got)
		}
	}
}

func TestDMIdentity(t *testing.T) {
	name, uuid, err := dmNewIdentity(4242, 987654321)
	if err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`^minirun-[0-9a-f]{16}$`).MatchString(name) {
		t.Fatalf("name %q", name)
	}
	if !regexp.MustCompile(`^MINIRUN-4242-987654321-[0-9a-f]{16}$`).MatchString(uuid) || !strings.HasSuffix(uuid, name[len(dmNamePrefix):]) {
		t.Fatalf("uuid %q for name %q", uuid, name)
	}
	if pid, start, ok := dmCreatorOf(uuid); !ok || pid != 4242 || start != 987654321 {
		t.Fatalf("dmCreatorOf(%q) = %d %d %v", uuid, pid, start, ok)
	}
	name2, _, _ := dmNewIdentity(4242, 987654321)
	if name2 == name {
		t.Fatal("two identities with the same name")
	}
	for _, bad := range []string{
		"", "MINIRUN-", "MINIRUN-1-2", "MINIRUN-1-2-", "MINIRUN-0-2-ab", "MINIRUN-x-2-ab", "MINIRUN-1-y-ab",
		"MINIRUN-1-2-ab-cd", "MINIRUN-1-2-AB", "MINIRUN-1-2-a b", "minirun-1-2-ab", "CRYPT-LUKS2-1-2-ab",
		"MINIRUN-99999999999-2-ab", "MINIRUN--1-2-ab", "MINIRUN-1-2-" + strings.Repeat("a", 65),
	} {
		if _, _, ok := dmCreatorOf(bad); ok {
			t.Errorf("dmCreatorOf accepted %q", bad)
		}
	}
}

// dmRecord builds one aligned dm_name_list record.
func dmNameRecord(dev uint64, name string, last bool, tail []byte) []byte {
	b := make([]byte, 12)
	binary.NativeEndian.PutUint64(b, dev)
	b = append(b, name...)
	b = append(b, 0)
	for len(b)%8 != 0 {
		b = append(b, 0)
	}
	b = append(b, tail...) // event_nr, flags, uuid of newer kernels
	for len(b)%8 != 0 {
		b = append(b, 0)
	}
	if !last {
		binary.NativeEndian.PutUint32(b[8:], uint32(len(b)))
	}
	return b
}

func TestParseDMNameList(t *testing.T) {
	tail := append([]byte{1, 0, 0, 0, 1, 0, 0, 0}, "MINIRUN-1-2-ab\x00"...)
	two := append(dmNameRecord(unix.Mkdev(253, 0), "minirun-aa", false, tail), dmNameRecord(unix.Mkdev(253, 1), "other", true, nil)...)
	empty := make([]byte, 16) // dev 0: no devices
	tests := []struct {
		name string
		data []byte
		want []dmListed
		bad  bool
	}{
		{"no data", nil, nil, false},
		{"empty list", empty, nil, false},
		{"two devices", two, []dmListed{{unix.Mkdev(253, 0), "minirun-aa"}, {unix.Mkdev(253, 1), "other"}}, false},
		{"truncated second", two[:len(two)-10], nil, true},
		{"next past end", func() []byte { b := bytes.Clone(two); binary.NativeEndian.PutUint32(b[8:], 1<<20); return b }(), nil, true},
		{"next too small", func() []byte { b := bytes.Clone(two); binary.NativeEndian.PutUint32(b[8:], 4); return b }(), nil, true},
		{"unterminated", func() []byte {
			b := bytes.Clone(dmNameRecord(5, "abc", true, nil))
			return bytes.ReplaceAll(b, []byte{0}, []byte{'x'})
		}(), nil, true},
		{"short record", []byte{1, 0, 0, 0, 0, 0, 0, 0, 0}, nil, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseDMNameList(tc.data)
			if tc.bad {
				if err == nil {
					t.Fatalf("accepted: %v", got)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != len(tc.want) {
				t.Fatalf("got %v, want %v", got, tc.want)
			}
			for i := range got {
				if got[i] != tc.want[i] {
					t.Fatalf("got %v, want %v", got, tc.want)
				}
			}
		})
	}
}

func dmVersionRecord(name string, v [3]uint32, last bool) []byte {
	b := make([]byte, 16)
	for i, x := range v {
		binary.NativeEndian.PutUint32(b[4+4*i:], x)
	}
	b = append(b, name...)
	b = append(b, 0)
	for len(b)%8 != 0 {
		b = append(b, 0)
	}
	if !last {
		binary.NativeEndian.PutUint32(b, uint32(len(b)))
	}
	return b
}

func TestParseDMTargetVersions(t *testing.T) {
	data := append(dmVersionRecord("linear", [3]uint32{1, 4, 0}, false), dmVersionRecord("crypt", [3]uint32{1, 24, 0}, true)...)
	m, err := parseDMTargetVersions(data)
	if err != nil {
		t.Fatal(err)
	}
	if len(m) != 2 || m["crypt"] != [3]uint32{1, 24, 0} || m["linear"] != [3]uint32{1, 4, 0} {
		t.Fatalf("got %v", m)
	}
	bad := [][]byte{
		data[:20],
		func() []byte { b := bytes.Clone(data); binary.NativeEndian.PutUint32(b, 8); return b }(),
		func() []byte { b := bytes.Clone(data); binary.NativeEndian.PutUint32(b, 1<<30); return b }(),
		append(make([]byte, 16), bytes.Repeat([]byte{'c'}, 20)...),
	}
	for i, b := range bad {
		if m, err := parseDMTargetVersions(b); err == nil {
			t.Errorf("bad list %d accepted: %v", i, m)
		}
	}
}

func TestParseDMTableStatus(t *testing.T) {
	params := "aes-xts-plain64 :64:logon:minirun:ab 0 7:3 2048 1 sector_size:4096"
	buf := make([]byte, 256)
	copy(buf[dmTargetSpecSize:], params)
	used, _ := encodeDMTargetSpec(buf, 0, 16384, "crypt", len(params))
	buf = buf[:used]
	ts, err := parseDMTableStatus(buf, 1)
	if err != nil {
		t.Fatal(err)
	}
	if len(ts) != 1 || ts[0] != (dmTarget{0, 16384, "crypt", params}) {
		t.Fatalf("got %+v", ts)
	}
	if ts, err := parseDMTableStatus(buf, 0); err != nil || len(ts) != 0 {
		t.Fatalf("no targets: %v %v", ts, err)
	}
	if _, err := parseDMTableStatus(buf, 2); err == nil {
		t.Error("accepted a second target past the end")
	}
	if _, err := parseDMTableStatus(buf, 1<<30); err == nil {
		t.Error("accepted a huge target count")
	}
	if _, err := parseDMTableStatus(bytes.ReplaceAll(buf, []byte{0}, []byte{1}), 1); err == nil {
		t.Error("accepted unterminated parameters")
	}
}

func TestParseProcStatStartTime(t *testing.T) {
	line := "1234 (a) b (c) S 1 1234 1234 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 98765 1000000 100 18446744073709551615"
	if got, err := parseProcStatStartTime([]byte(line)); err != nil || got != 98765 {
		t.Fatalf("got %d, %v", got, err)
	}
	for _, bad := range []string{"", "1234 (a) S 1 2", "1234 a S " + strings.Repeat("1 ", 30), "1 (x) S 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 x 20"} {
		if _, err := parseProcStatStartTime([]byte(bad)); err == nil {
			t.Errorf("accepted %q", bad)
		}
	}
	// A live process whose name holds ") (" and spaces, against ps's own reading.
	dir := t.TempDir()
	odd := filepath.Join(dir, "a) b (c")
	sleep, err := exec.LookPath("sleep")
	if err != nil {
		t.Fatal(err)
	}
	data, _ := os.ReadFile(sleep)
	os.WriteFile(odd, data, 0o755)
	cmd := exec.Command(odd, "30")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	got, err := dmProcStartTime(cmd.Process.Pid)
	if err != nil {
		t.Fatal(err)
	}
	self, _ := dmProcStartTime(os.Getpid())
	if got < self || got == 0 {
		t.Fatalf("child start %d before our own %d", got, self)
	}
	out, err := exec.Command("ps", "-o", "pid=,comm=", "-p", strconv.Itoa(cmd.Process.Pid)).Output()
	if err == nil && !strings.Contains(string(out), "a) b (c") {
		t.Fatalf("test process has comm %q", out)
	}
}

func TestDMCreatorGone(t *testing.T) {
	self, err := dmProcStartTime(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if dmCreatorGone(os.Getpid(), self) {
		t.Fatal("we are gone")
	}
	if !dmCreatorGone(os.Getpid(), self+1) {
		t.Fatal("a pid reused by another process counts as the creator")
	}
	cmd := exec.Command("true")
	if err := cmd.Run(); err != nil {
		t.Fatal(err)
	}
	if !dmCreatorGone(cmd.Process.Pid, 0) {
		t.Fatal("a reaped child is not gone")
	}
}

// On this kind of machine (no device-mapper in the kernel), every entry point must say so
// cleanly: auto picks the memory backend, attach fails E_SYSTEM, the sweep has nothing to do.
func TestDMCryptUnavailableWithoutDeviceMapper(t *testing.T) {
	if _, listed := dmMiscMinor(); listed {
		t.Logf("this kernel has device-mapper: dmcryptAvailable() = %v (the VM test covers the real path)", dmcryptAvailable())
		return
	}
	if dmcryptAvailable() {
		t.Fatal("dmcryptAvailable() without device-mapper in /proc/misc")
	}
	if err := sweepStaleDMDevices(); err != nil {
		t.Fatalf("sweep without device-mapper: %v", err)
	}
	if os.Geteuid() != 0 {
		return
	}
	loopFile, vol, key := dmTestVolume(t)
	if loopFile == nil {
		return
	}
	_, err := attachDMCrypt(loopFile, vol, key, 0)
	if err == nil || classOf(err) != eSystem || !strings.Contains(err.Error(), "device-mapper not available") {
		t.Fatalf("attach without device-mapper: %v", err)
	}
}

// dmTestVolume attaches a minirun-formatted volume to a loop device (as root).
func dmTestVolume(t *testing.T) (*os.File, *luksVolume, *volumeKey) {
	t.Helper()
	dir := t.TempDir()
	img := filepath.Join(dir, "vol.img")
	payload := bytes.Repeat([]byte("squashfs? no "), 4096)
	luksFormatFile(t, img, payload, []byte("pw"), luksFormatOptions{kdf: "pbkdf2", pbkdf2Iterations: 1000})
	vol, f := luksOpenFile(t, img)
	key, err := vol.unlock([]byte("pw"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(key.wipe)
	st, _ := f.Stat()
	loop, err := attachLoop(f, 0, st.Size(), 0)
	if err != nil {
		t.Fatalf("attach loop: %v", err)
	}
	t.Cleanup(func() { loop.Close() })
	return loop, vol, key
}

func TestAttachDMCryptRefusesBadArguments(t *testing.T) {
	vol := &luksVolume{cipher: "aes-xts-plain64", keySize: 64, dataOffset: 1 << 20, dataLength: 4096, sectorSize: 4096}
	key := &volumeKey{buf: func() *secretBuf { b, _ := newSecretBuf(32); return b }()}
	defer key.wipe()
	reg, err := os.Open(os.Args[0])
	if err != nil {
		t.Fatal(err)
	}
	defer reg.Close()
	if _, err := attachDMCrypt(nil, vol, key, 0); err == nil || classOf(err) != eInternal {
		t.Errorf("nil device: %v", err)
	}
	if _, err := attachDMCrypt(reg, vol, key, 0); err == nil || !strings.Contains(err.Error(), "32-byte key for a 64-byte") {
		t.Errorf("key size mismatch: %v", err)
	}
	vol.keySize = 32
	if _, err := attachDMCrypt(reg, vol, key, 0); err == nil || !strings.Contains(err.Error(), "not a block device") {
		t.Errorf("regular file as the loop: %v", err)
	}
}

func TestSweepStaleDMNodes(t *testing.T) {
	old := dmNodeDir
	dmNodeDir = t.TempDir()
	defer func() { dmNodeDir = old }()
	self, _ := dmProcStartTime(os.Getpid())
	dead := exec.Command("true")
	dead.Run()
	names := map[string]bool{ // name → kept
		"MINIRUN-" + strconv.Itoa(os.Getpid()) + "-" + strconv.FormatUint(self, 10) + "-00aa":      true,
		"MINIRUN-" + strconv.Itoa(dead.Process.Pid) + "-" + strconv.FormatUint(self, 10) + "-00bb": false,
		"MINIRUN-" + strconv.Itoa(os.Getpid()) + "-" + strconv.FormatUint(self+7, 10) + "-00cc":    false,
		"unrelated":        true,
		"MINIRUN-1-x-00dd": true,
	}
	for n := range names {
		os.WriteFile(filepath.Join(dmNodeDir, n), nil, 0o600)
	}
	sweepStaleDMNodes()
	for n, kept := range names {
		_, err := os.Stat(filepath.Join(dmNodeDir, n))
		if (err == nil) != kept {
			t.Errorf("%s: exists=%v, want %v", n, err == nil, kept)
		}
	}
}

func TestEnsureDMNodeDir(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("the node directory must be root-owned; CI runs as root")
	}
	old := dmNodeDir
	defer func() { dmNodeDir = old }()
	base := t.TempDir()
	dmNodeDir = filepath.Join(base, "nodes")
	if err := ensureDMNodeDir(); err != nil {
		t.Fatalf("fresh directory: %v", err)
	}
	if st, err := os.Stat(dmNodeDir); err != nil || st.Mode().Perm() != 0o700 {
		t.Fatalf("mode %v %v", st.Mode(), err)
	}
	os.Chmod(dmNodeDir, 0o755)
	if err := ensureDMNodeDir(); err == nil {
		t.Fatal("accepted a 0755 directory")
	}
	dmNodeDir = filepath.Join(base, "link")
	os.Symlink(filepath.Join(base, "nodes"), dmNodeDir)
	if err := ensureDMNodeDir(); err == nil {
		t.Fatal("accepted a symlink")
	}
	// A nodev mount: device nodes there could be made but never opened.
	nodev := filepath.Join(base, "nodev")
	os.Mkdir(nodev, 0o700)
	if err := unix.Mount("tmpfs", nodev, "tmpfs", unix.MS_NODEV, "mode=0700"); err != nil {
		t.Fatalf("mount tmpfs: %v", err)
	}
	defer unix.Unmount(nodev, unix.MNT_DETACH)
	dmNodeDir = filepath.Join(nodev, "d")
	if err := ensureDMNodeDir(); err == nil || !strings.Contains(err.Error(), "nodev") {
		t.Fatalf("nodev mount: %v", err)
	}
}
