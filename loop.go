// loop.go owns loop devices: a read-only, autoclear device over a window of
// an image file, attached in one LOOP_CONFIGURE so a SIGKILL at any point
// leaves nothing behind (spec/images-and-encryption.md §5, security.md R12).
package main

import (
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

const (
	loopAttachTries = 64
	loopLockFile    = stateDir + "/loop.lock"
	loopIndexDir    = stateDir + "/loops" // bytes -> device, see attachSharedLoop
	// How long a launch waits for another launch's scan-and-attach before it
	// attaches a device of its own: a caller can SIGSTOP their own minirun
	// while it holds the lock, and that must not stall anyone else.
	loopLockPatience = 2 * time.Second
)

// attachSharedLoop reuses a device minirun already attached read-only to
// the same bytes (same file, offset and size), so concurrent launches of
// one image (the ranks of an MPI job) share one squashfs superblock and one
// page cache; otherwise it attaches a new one. Scan and attach happen under
// one lock so two launches do not both attach. A small index in the state
// directory names the device last attached for these bytes, so finding it
// costs one open, not a scan of every loop device; the kernel's answer on
// the open device is what counts, so a stale entry is harmless.
//
// A device found here costs nothing; a new one must fit lim, counted under
// the same lock.
func attachSharedLoop(image *os.File, offset, size int64, uid int, lim loopLimits) (*os.File, error) {
	var st unix.Stat_t
	if err := unix.Fstat(int(image.Fd()), &st); err != nil {
		return nil, failf(eSystem, "stat image %s: %w", image.Name(), err)
	}
	lock, err := openFile(loopLockFile, os.O_RDWR|os.O_CREATE|unix.O_NOFOLLOW, 0600)
	if err != nil {
		return nil, failf(eSystem, "open %s: %w", loopLockFile, err)
	}
	defer lock.Close() // closing releases the lock
	if !lockWithin(lock, loopLockPatience) {
		return attachLoopWithin(image, offset, size, uid, lim)
	}
	key := loopIndexKey(&st, offset, size)
	recorded, err := os.Readlink(key)
	if err == nil {
		if dev := openMatchingLoop(recorded, &st, offset, size); dev != nil {
			return dev, nil
		}
	}
	dev, err := attachLoopWithin(image, offset, size, uid, lim)
	// A record naming the device just attached (the kernel hands out the
	// lowest free index, often the one the last run of this image freed)
	// is already right.
	if err == nil && recorded != dev.Name() {
		trimLoopIndex(loopIndexDir, loopIndexMaxBytes)
		os.Remove(key)
		os.Symlink(dev.Name(), key) // best effort: without it the next launch attaches its own
	}
	return dev, err
}

// loopIndexKey is the index record for these bytes of the file st describes.
func loopIndexKey(st *unix.Stat_t, offset, size int64) string {
	return fmt.Sprintf("%s/%d-%d-%d-%d", loopIndexDir, st.Dev, st.Ino, offset, size)
}

// loopIndexMaxBytes is the index directory's size (st_size: 20 bytes a
// record on tmpfs, about 50 on ext4) past which it is started afresh.
var loopIndexMaxBytes int64 = 64 << 10

// trimLoopIndex empties the index once its directory has grown past
// maxBytes. Every distinct image ever run leaves a record, so without this
// the directory would grow for the host's uptime (for good where /run is
// not a tmpfs). The index is only a cache, and the caller holds the loop
// lock, so no launch reads it meanwhile. The directory is replaced, not
// emptied in place: ext4 never shrinks a directory, and its size would
// stay past the limit. Only the size is looked at, so a launch that
// writes a record pays one lstat.
func trimLoopIndex(dir string, maxBytes int64) bool {
	var st unix.Stat_t
	if unix.Lstat(dir, &st) != nil || st.Size <= maxBytes {
		return false
	}
	old := dir + ".old"
	os.RemoveAll(old) // from a launch killed while trimming
	if unix.Rename(dir, old) != nil {
		return false
	}
	if err := unix.Mkdir(dir, 0700); err != nil && !errors.Is(err, unix.EEXIST) {
		return false // the next launch's ensureStateDirs makes it
	}
	os.RemoveAll(old)
	return true
}

// openMatchingLoop opens the loop device name if it is bound, right now, to
// exactly these bytes by minirun, read-only and autoclear. The open fd pins
// the binding: an autoclear device cannot detach while it is held.
func openMatchingLoop(name string, st *unix.Stat_t, offset, size int64) *os.File {
	if !strings.HasPrefix(name, "/dev/loop") {
		return nil
	}
	dev, err := openFile(name, os.O_RDONLY, 0)
	if err != nil {
		return nil
	}
	info, err := unix.IoctlLoopGetStatus64(int(dev.Fd()))
	want := uint32(unix.LO_FLAGS_READ_ONLY | unix.LO_FLAGS_AUTOCLEAR)
	if err == nil && info.Device == st.Dev && info.Inode == st.Ino &&
		info.Offset == uint64(offset) && info.Sizelimit == uint64(size) &&
		info.Flags&want == want && info.Flags&unix.LO_FLAGS_PARTSCAN == 0 &&
		strings.HasPrefix(unix.ByteSliceToString(info.File_name[:]), "minirun:") {
		return dev
	}
	dev.Close()
	return nil
}

func lockWithin(f *os.File, patience time.Duration) bool {
	deadline := time.Now().Add(patience)
	for {
		err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		if err == nil {
			return true
		}
		if err != unix.EWOULDBLOCK && err != unix.EINTR || time.Now().After(deadline) {
			return false
		}
		time.Sleep(time.Millisecond)
	}
}

// loopLimits are the admin's caps on loop devices minirun attaches
// (max_loop_per_user, max_loop_devices; security.md R12). A negative value
// means no cap; root callers skip the per-user cap.
type loopLimits struct {
	perUser, total int64
	root           bool
}

// loopLimitsFor is the caps that apply to who.
func loopLimitsFor(who caller, cfg config) loopLimits {
	return loopLimits{perUser: cfg.maxLoopPerUser, total: cfg.maxLoopDevices, root: who.root()}
}

// noLoopLimits is for tests and root-only tools.
var noLoopLimits = loopLimits{perUser: -1, total: -1, root: true}

// maxLoopScan bounds the devices one count looks at.
const maxLoopScan = 1024

// attachLoopWithin attaches a new device as attachLoop does, but only if it
// fits lim. The count runs before the attach, so a full quota attaches
// nothing, and again after it with our device included: launches that
// counted at the same moment (one that gave up waiting for the lock, or
// callers that attach without it) cannot together exceed the cap; whoever
// finds the total too high afterwards gives its device back.
func attachLoopWithin(image *os.File, offset, size int64, uid int, lim loopLimits) (*os.File, error) {
	return attachLoopBlocksWithin(image, offset, size, uid, 0, lim)
}

// attachLoopBlocksWithin is attachLoopWithin with the device's logical
// block size (see attachLoopBlocks).
func attachLoopBlocksWithin(image *os.File, offset, size int64, uid int, blockSize uint32, lim loopLimits) (*os.File, error) {
	if err := lim.check(uid, 0); err != nil {
		return nil, err
	}
	dev, err := attachLoopBlocks(image, offset, size, uid, blockSize)
	if err != nil {
		return nil, err
	}
	if err := lim.check(uid, 1); err != nil {
		unix.IoctlSetInt(int(dev.Fd()), unix.LOOP_CLR_FD, 0)
		dev.Close()
		return nil, err
	}
	return dev, nil
}

// check fails with E_RESOURCE when the devices already attached (ours
// among them: the number of our own the count includes) leave no room.
func (lim loopLimits) check(uid int, ours int64) error {
	perUser := lim.perUser >= 0 && !lim.root
	total := lim.total >= 0
	if !perUser && !total {
		return nil
	}
	// Every attached loop device is listed in /proc/partitions: one read.
	// When even all of them together fit the limits, minirun's own surely
	// do, and the per-device scan below is skipped.
	if n := attachedLoopCount(); n >= 0 && (!perUser || n-ours < lim.perUser) && (!total || n-ours < lim.total) {
		return nil
	}
	mine, all := countMinirunLoops(uid)
	if perUser && mine-ours >= lim.perUser {
		return failf(eResource, "loop limit: uid %d already has %d minirun loop devices attached (max_loop_per_user = %d)", uid, mine-ours, lim.perUser)
	}
	if total && all-ours >= lim.total {
		return failf(eResource, "loop limit: %d minirun loop devices are attached (max_loop_devices = %d)", all-ours, lim.total)
	}
	return nil
}

// attachedLoopCount counts the loop devices with a backing file (a
// non-zero size in /proc/partitions), or returns -1 if it cannot tell.
func attachedLoopCount() int64 {
	data, err := readProcFile("/proc/partitions", 1<<20)
	if err != nil {
		return -1
	}
	var n int64
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Fields(line)
		if len(f) == 4 && strings.HasPrefix(f[3], "loop") && f[2] != "0" {
			n++
		}
	}
	return n
}

// countMinirunLoops counts the bound loop devices that minirun attached, for
// uid and in all, by the lo_file_name loopTag gave them. Only devices sysfs
// shows as bound are opened; holding the fd during the ioctl keeps the
// answer consistent, and closing it cannot detach a device someone uses.
func countMinirunLoops(uid int) (mine, all int64) {
	entries, err := os.ReadDir("/sys/block")
	if err != nil {
		return 0, 0
	}
	prefix := "minirun:" + strconv.Itoa(uid) + ":"
	scanned := 0
	for _, e := range entries {
		name := e.Name()
		if !strings.HasPrefix(name, "loop") || scanned >= maxLoopScan {
			continue
		}
		if _, err := os.Stat("/sys/block/" + name + "/loop/backing_file"); err != nil {
			continue
		}
		scanned++
		dev, err := openFile("/dev/"+name, os.O_RDONLY|unix.O_NOFOLLOW, 0)
		if err != nil {
			continue
		}
		info, err := unix.IoctlLoopGetStatus64(int(dev.Fd()))
		dev.Close()
		if err != nil {
			continue
		}
		tag := unix.ByteSliceToString(info.File_name[:])
		if strings.HasPrefix(tag, "minirun:") {
			all++
			if strings.HasPrefix(tag, prefix) {
				mine++
			}
		}
	}
	return mine, all
}

// attachLoop binds [offset, offset+size) of the open image to a free loop
// device and returns the open device. The device clears itself when its last
// user (the mount, or this fd) goes away. It applies no limits: launches
// use attachLoopWithin.
func attachLoop(image *os.File, offset, size int64, uid int) (*os.File, error) {
	return attachLoopBlocks(image, offset, size, uid, 0)
}

// attachLoopBlocks is attachLoop with the device's logical block size (0 for
// the kernel's 512), set in the same LOOP_CONFIGURE: the sealed-memfd backend
// of encrypted images uses 4096, their sector size (spec §4.4).
func attachLoopBlocks(image *os.File, offset, size int64, uid int, blockSize uint32) (*os.File, error) {
	var st unix.Stat_t
	if err := unix.Fstat(int(image.Fd()), &st); err != nil {
		return nil, failf(eSystem, "stat image %s: %w", image.Name(), err)
	}
	ctl, err := openFile("/dev/loop-control", os.O_RDWR, 0)
	if err != nil {
		return nil, failf(eSystem, "open /dev/loop-control: %w", err)
	}
	defer ctl.Close()

	cfg := unix.LoopConfig{Fd: uint32(image.Fd()), Size: blockSize}
	cfg.Info.Offset = uint64(offset)
	cfg.Info.Sizelimit = uint64(size)
	cfg.Info.Flags = unix.LO_FLAGS_READ_ONLY | unix.LO_FLAGS_AUTOCLEAR
	copy(cfg.Info.File_name[:], loopTag(uid))

	for try := 0; try < loopAttachTries; try++ {
		index, err := unix.IoctlRetInt(int(ctl.Fd()), unix.LOOP_CTL_GET_FREE)
		if err != nil {
			return nil, failf(eResource, "no free loop device: %w", err)
		}
		dev, err := openLoopDevice(index)
		if err != nil {
			return nil, err
		}
		err = unix.IoctlLoopConfigure(int(dev.Fd()), &cfg)
		if errors.Is(err, unix.EBUSY) || errors.Is(err, unix.EAGAIN) {
			// GET_FREE reserves nothing: a concurrent launch took this one.
			dev.Close()
			time.Sleep(time.Duration(1+try%8) * time.Millisecond)
			continue
		}
		if err != nil {
			dev.Close()
			return nil, failf(eSystem, "attach loop device %d to %s: %w", index, image.Name(), err)
		}
		if err := verifyLoop(dev, &st, offset, size); err != nil {
			unix.IoctlSetInt(int(dev.Fd()), unix.LOOP_CLR_FD, 0)
			dev.Close()
			return nil, err
		}
		return dev, nil
	}
	return nil, failf(eResource, "attach loop device to %s: every free device was taken by others (%d tries)", image.Name(), loopAttachTries)
}

// loopTag names the device after its owner so per-user limits can count it.
func loopTag(uid int) string {
	// getrandom itself: crypto/rand's first read arms a one-minute timer (a
	// warning should the kernel block), and that timer starts the runtime's
	// netpoller, ~0.05 ms of syscalls plus idle polling in every launch.
	var r [6]byte
	for {
		if _, err := unix.Getrandom(r[:], 0); err != unix.EINTR {
			break // up to 256 bytes come whole once the pool is ready
		}
	}
	return "minirun:" + strconv.Itoa(uid) + ":" + hex.EncodeToString(r[:])
}

// openLoopDevice opens /dev/loopN read-only. The number comes from sysfs,
// never assumed 7:N, because max_part shifts minors.
func openLoopDevice(index int) (*os.File, error) {
	name := "/dev/loop" + strconv.Itoa(index)
	dev, err := openFile(name, os.O_RDONLY, 0)
	if err == nil {
		return dev, nil
	}
	if !errors.Is(err, os.ErrNotExist) {
		return nil, failf(eSystem, "open %s: %w", name, err)
	}
	data, rerr := readProcFile("/sys/block/loop"+strconv.Itoa(index)+"/dev", 64)
	if rerr != nil {
		return nil, failf(eSystem, "open %s: %w", name, err)
	}
	var major, minor uint32
	if _, serr := fmt.Sscanf(strings.TrimSpace(string(data)), "%d:%d", &major, &minor); serr != nil {
		return nil, failf(eSystem, "parse /sys/block/loop%d/dev: %w", index, serr)
	}
	if merr := unix.Mknod(name, unix.S_IFBLK|0660, int(unix.Mkdev(major, minor))); merr != nil && !errors.Is(merr, unix.EEXIST) {
		return nil, failf(eSystem, "create %s: %w", name, merr)
	}
	dev, err = openFile(name, os.O_RDONLY, 0)
	if err != nil {
		return nil, failf(eSystem, "open %s: %w", name, err)
	}
	return dev, nil
}

// verifyLoop reads the binding back: both flags and the very file we opened.
func verifyLoop(dev *os.File, st *unix.Stat_t, offset, size int64) error {
	info, err := unix.IoctlLoopGetStatus64(int(dev.Fd()))
	if err != nil {
		return failf(eSystem, "read back %s: %w", dev.Name(), err)
	}
	want := uint32(unix.LO_FLAGS_READ_ONLY | unix.LO_FLAGS_AUTOCLEAR)
	if info.Flags&want != want || info.Device != st.Dev || info.Inode != st.Ino ||
		info.Offset != uint64(offset) || info.Sizelimit != uint64(size) {
		return failf(eInternal, "loop device %s does not hold the image as configured", dev.Name())
	}
	return nil
}
