// loop.go owns loop devices: a read-only, autoclear device over a window of
// an image file, attached in one LOOP_CONFIGURE so a SIGKILL at any point
// leaves nothing behind (spec/images-and-encryption.md §5, security.md R12).
package main

import (
	"crypto/rand"
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
func attachSharedLoop(image *os.File, offset, size int64, uid int) (*os.File, error) {
	var st unix.Stat_t
	if err := unix.Fstat(int(image.Fd()), &st); err != nil {
		return nil, failf(eSystem, "stat image %s: %w", image.Name(), err)
	}
	lock, err := os.OpenFile(loopLockFile, os.O_RDWR|os.O_CREATE|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0600)
	if err != nil {
		return nil, failf(eSystem, "open %s: %w", loopLockFile, err)
	}
	defer lock.Close() // closing releases the lock
	if !lockWithin(lock, loopLockPatience) {
		return attachLoop(image, offset, size, uid)
	}
	key := fmt.Sprintf("%s/%d-%d-%d-%d", loopIndexDir, st.Dev, st.Ino, offset, size)
	if name, err := os.Readlink(key); err == nil {
		if dev := openMatchingLoop(name, &st, offset, size); dev != nil {
			return dev, nil
		}
	}
	dev, err := attachLoop(image, offset, size, uid)
	if err == nil {
		os.Remove(key)
		os.Symlink(dev.Name(), key) // best effort: without it the next launch attaches its own
	}
	return dev, err
}

// openMatchingLoop opens the loop device name if it is bound, right now, to
// exactly these bytes by minirun, read-only and autoclear. The open fd pins
// the binding: an autoclear device cannot detach while it is held.
func openMatchingLoop(name string, st *unix.Stat_t, offset, size int64) *os.File {
	if !strings.HasPrefix(name, "/dev/loop") {
		return nil
	}
	dev, err := os.OpenFile(name, os.O_RDONLY|unix.O_CLOEXEC, 0)
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

// attachLoop binds [offset, offset+size) of the open image to a free loop
// device and returns the open device. The device clears itself when its last
// user (the mount, or this fd) goes away.
func attachLoop(image *os.File, offset, size int64, uid int) (*os.File, error) {
	var st unix.Stat_t
	if err := unix.Fstat(int(image.Fd()), &st); err != nil {
		return nil, failf(eSystem, "stat image %s: %w", image.Name(), err)
	}
	ctl, err := os.OpenFile("/dev/loop-control", os.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, failf(eSystem, "open /dev/loop-control: %w", err)
	}
	defer ctl.Close()

	cfg := unix.LoopConfig{Fd: uint32(image.Fd())}
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
	var r [6]byte
	rand.Read(r[:])
	return "minirun:" + strconv.Itoa(uid) + ":" + hex.EncodeToString(r[:])
}

// openLoopDevice opens /dev/loopN read-only. The number comes from sysfs,
// never assumed 7:N, because max_part shifts minors.
func openLoopDevice(index int) (*os.File, error) {
	name := "/dev/loop" + strconv.Itoa(index)
	dev, err := os.OpenFile(name, os.O_RDONLY|unix.O_CLOEXEC, 0)
	if err == nil {
		return dev, nil
	}
	if !errors.Is(err, os.ErrNotExist) {
		return nil, failf(eSystem, "open %s: %w", name, err)
	}
	data, rerr := os.ReadFile("/sys/block/loop" + strconv.Itoa(index) + "/dev")
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
	dev, err = os.OpenFile(name, os.O_RDONLY|unix.O_CLOEXEC, 0)
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
