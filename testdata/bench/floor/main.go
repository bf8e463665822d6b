// floor is the benchmark's lower bound: only the kernel work one container
// launch cannot avoid (loop attach, private mount namespace, squashfs mount,
// chroot, exec). No config, no policy, no checks. Not installed; `make bench` only.
//
//	floor IMAGE.sqfs CMD [ARG...]   squashfs through a read-only autoclear loop device
//	floor -part OFFSET SIZE IMAGE CMD [ARG...]
//	                                the squashfs partition at OFFSET of a SIF
//	                                (the harness reads both from the descriptor)
//	floor -dir DIR CMD [ARG...]     directory: one bind mount, chroot
//	floor -noop                     start and exit (the Go runtime's share)
//	floor -spec [-dir | -part OFFSET SIZE] IMAGE|DIR CMD [ARG...]
//	                                the spec floor: the same, plus the container the
//	                                security spec requires of a default launch (spec.go)
//
// When installed setuid-root it drops to the real uid and gid just before
// exec, on the exec thread only (execve ends the others, still root), which
// is the least a setuid launch must do.
package main

import (
	"fmt"
	"os"
	"runtime"
	"strconv"
	"syscall"

	"golang.org/x/sys/unix"
)

// stage is where the root is mounted inside the private namespace. It is
// created once (by the first run); nothing is ever mounted there on the host.
const stage = "/run/minirun-bench-floor"

func main() {
	args := os.Args[1:]
	if len(args) == 1 && args[0] == "-noop" {
		return // the cost of starting this binary alone
	}
	dir, spec := false, false
	if len(args) > 0 && args[0] == "-spec" {
		spec, args = true, args[1:]
	}
	var part [2]uint64 // offset, size; 0, 0: the whole file
	switch {
	case len(args) > 0 && args[0] == "-dir":
		dir, args = true, args[1:]
	case len(args) > 2 && args[0] == "-part":
		for i := range part {
			n, err := strconv.ParseUint(args[1+i], 10, 64)
			if err != nil {
				fmt.Fprintln(os.Stderr, "floor: -part:", err)
				os.Exit(2)
			}
			part[i] = n
		}
		args = args[3:]
	}
	if len(args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: floor [-spec] [-dir | -part OFFSET SIZE] IMAGE|DIR CMD [ARG...]")
		os.Exit(2)
	}
	if err := launch(args[0], dir, spec, part, args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "floor:", err)
		os.Exit(255)
	}
}

func launch(src string, dir, spec bool, part [2]uint64, argv []string) error {
	if spec {
		return launchSpec(src, dir, part, argv)
	}
	var loopDev string
	if !dir {
		name, err := attachLoop(src, part)
		if err != nil {
			return err
		}
		loopDev = name
	}
	// Namespaces and the chroot are per thread until execve.
	runtime.LockOSThread()
	if err := unix.Unshare(unix.CLONE_NEWNS); err != nil {
		return fmt.Errorf("unshare: %w", err)
	}
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_SLAVE, ""); err != nil {
		return fmt.Errorf("make / slave: %w", err)
	}
	if err := unix.Mkdir(stage, 0700); err != nil && err != unix.EEXIST {
		return fmt.Errorf("mkdir %s: %w", stage, err)
	}
	if dir {
		if err := unix.Mount(src, stage, "", unix.MS_BIND, ""); err != nil {
			return fmt.Errorf("bind %s: %w", src, err)
		}
	} else if err := unix.Mount(loopDev, stage, "squashfs", unix.MS_RDONLY|unix.MS_NOSUID|unix.MS_NODEV, ""); err != nil {
		return fmt.Errorf("mount %s: %w", loopDev, err)
	}
	if err := unix.Chroot(stage); err != nil {
		return fmt.Errorf("chroot: %w", err)
	}
	if err := unix.Chdir("/"); err != nil {
		return fmt.Errorf("chdir: %w", err)
	}
	// Raw calls: Go's setters change every thread of the process (one
	// signal round trip each), where execve keeps only this one.
	if uid, gid := unix.Getuid(), unix.Getgid(); uid != 0 {
		if _, _, e := unix.RawSyscall(unix.SYS_SETRESGID, uintptr(gid), uintptr(gid), uintptr(gid)); e != 0 {
			return fmt.Errorf("setresgid: %w", e)
		}
		if _, _, e := unix.RawSyscall(unix.SYS_SETRESUID, uintptr(uid), uintptr(uid), uintptr(uid)); e != 0 {
			return fmt.Errorf("setresuid: %w", e)
		}
	}
	return fmt.Errorf("exec %s: %w", argv[0], syscall.Exec(argv[0], argv, []string{"PATH=/bin:/usr/bin"}))
}

// attachLoop binds the image (or part of it) read-only with autoclear; the
// device stays alive through the mount after our descriptors close at exec.
func attachLoop(image string, part [2]uint64) (string, error) {
	img, err := unix.Open(image, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return "", fmt.Errorf("open %s: %w", image, err)
	}
	ctl, err := unix.Open("/dev/loop-control", unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return "", fmt.Errorf("open /dev/loop-control: %w", err)
	}
	cfg := unix.LoopConfig{Fd: uint32(img)}
	cfg.Info.Offset, cfg.Info.Sizelimit = part[0], part[1]
	cfg.Info.Flags = unix.LO_FLAGS_READ_ONLY | unix.LO_FLAGS_AUTOCLEAR
	for try := 0; try < 64; try++ {
		n, err := unix.IoctlRetInt(ctl, unix.LOOP_CTL_GET_FREE)
		if err != nil {
			return "", fmt.Errorf("LOOP_CTL_GET_FREE: %w", err)
		}
		name := "/dev/loop" + strconv.Itoa(n)
		dev, err := unix.Open(name, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			return "", fmt.Errorf("open %s: %w", name, err)
		}
		err = unix.IoctlLoopConfigure(dev, &cfg)
		if err == unix.EBUSY || err == unix.EAGAIN {
			unix.Close(dev) // a concurrent launch took it first
			continue
		}
		if err != nil {
			return "", fmt.Errorf("LOOP_CONFIGURE %s: %w", name, err)
		}
		// dev stays open until exec (CLOEXEC): autoclear must not fire
		// before the mount holds the device.
		return name, nil
	}
	return "", fmt.Errorf("no free loop device after 64 tries")
}

// launchSpec is launch with the container of spec.go around the same
// loop attach and squashfs mount, in minirun's order. A directory is
// cloned read-only in the host namespace and attached in the new one, as
// minirun does (a bind across namespaces is refused).
func launchSpec(src string, dir bool, part [2]uint64, argv []string) error {
	uid, gid := unix.Getuid(), unix.Getgid()
	home := specHome(uid)
	binds, trees, err := specBefore(home)
	if err != nil {
		return err
	}
	rootTree := -1
	if dir {
		if rootTree, err = unix.OpenTree(unix.AT_FDCWD, src, unix.OPEN_TREE_CLONE|unix.OPEN_TREE_CLOEXEC|unix.AT_RECURSIVE); err != nil {
			return fmt.Errorf("clone %s: %w", src, err)
		}
		attr := unix.MountAttr{Attr_set: unix.MOUNT_ATTR_RDONLY | unix.MOUNT_ATTR_NOSUID | unix.MOUNT_ATTR_NODEV}
		if err := unix.MountSetattr(rootTree, "", unix.AT_EMPTY_PATH|unix.AT_RECURSIVE, &attr); err != nil {
			return fmt.Errorf("set attributes of %s: %w", src, err)
		}
	}
	if err := unix.Mkdir(stage, 0700); err != nil && err != unix.EEXIST {
		return fmt.Errorf("mkdir %s: %w", stage, err)
	}
	var loopDev string
	if !dir {
		if loopDev, err = attachLoop(src, part); err != nil {
			return err
		}
	}
	runtime.LockOSThread() // as in launch: per thread until execve
	info, err := specNamespace()
	if err != nil {
		return err
	}
	devs, err := specDevicesOpen()
	if err != nil {
		return err
	}
	unix.Umask(022)
	if dir {
		if err := unix.MoveMount(rootTree, "", unix.AT_FDCWD, stage, unix.MOVE_MOUNT_F_EMPTY_PATH); err != nil {
			return fmt.Errorf("mount %s: %w", src, err)
		}
	} else if err := unix.Mount(loopDev, stage, "squashfs", unix.MS_RDONLY|unix.MS_NOSUID|unix.MS_NODEV, ""); err != nil {
		return fmt.Errorf("mount %s: %w", loopDev, err)
	}
	if err := specContainer(stage, info, devs, binds, trees, uid, gid, home, !dir); err != nil {
		return err
	}
	if err := specDrop(uid, gid); err != nil {
		return err
	}
	if fd, err := unix.Openat2(unix.AT_FDCWD, home, &unix.OpenHow{Flags: unix.O_PATH | unix.O_DIRECTORY | unix.O_CLOEXEC,
		Resolve: unix.RESOLVE_IN_ROOT | unix.RESOLVE_NO_MAGICLINKS}); err == nil {
		unix.Fchdir(fd)
		unix.Close(fd)
	}
	unix.Umask(022)
	unix.CloseRange(3, ^uint(0), unix.CLOSE_RANGE_CLOEXEC)
	err = syscall.Exec(argv[0], argv, []string{"PATH=/bin:/usr/bin"})
	return fmt.Errorf("exec %s: %w", argv[0], err)
}
