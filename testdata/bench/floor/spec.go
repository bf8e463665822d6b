package main

// The spec floor (floor -spec): the floor plus the container the security
// spec requires of every default launch (security.md §3.3 steps 6-8, R2-R4,
// R13), done with raw calls and nothing else: no configuration, no policy,
// no grants, no loop registry or limits, no opening as the caller, no
// messages. It answers how much of minirun's time over the plain floor is
// the container itself and how much is minirun's own. Only the kernel work
// minirun's default launch does is here, in the same order; it is a
// measuring stick, not a runtime (no error path tidies up).

import (
	"bytes"
	"fmt"
	"os/user"
	"path"
	"strconv"
	"strings"
	"unsafe"

	"golang.org/x/sys/unix"
)

var specDevices = []struct {
	name         string
	major, minor uint32
}{{"null", 1, 3}, {"zero", 1, 5}, {"full", 1, 7}, {"random", 1, 8}, {"urandom", 1, 9}, {"tty", 5, 0}}

// specHome is the caller's home from the passwd database, as minirun
// takes it: never $HOME, which the caller of a setuid copy controls.
func specHome(uid int) string {
	if u, err := user.LookupId(strconv.Itoa(uid)); err == nil && u.HomeDir != "" {
		return u.HomeDir
	}
	return "/"
}

// specBinds are minirun's default binds for a caller whose cwd is home.
func specBinds(home string) []string {
	binds := []string{"/tmp", "/var/tmp"}
	if home != "/" {
		binds = append(binds, home)
	}
	return binds
}

// specBefore is what happens in the host namespace: detached clones of the
// bind sources with their attributes set (R2).
func specBefore(home string) ([]string, []int, error) {
	binds := specBinds(home)
	trees := make([]int, len(binds))
	for i, b := range binds {
		t, err := unix.OpenTree(unix.AT_FDCWD, b, unix.OPEN_TREE_CLONE|unix.OPEN_TREE_CLOEXEC|unix.AT_RECURSIVE)
		if err != nil {
			return nil, nil, fmt.Errorf("clone %s: %w", b, err)
		}
		attr := unix.MountAttr{Attr_set: unix.MOUNT_ATTR_NOSUID | unix.MOUNT_ATTR_NODEV}
		if err := unix.MountSetattr(t, "", unix.AT_EMPTY_PATH|unix.AT_RECURSIVE, &attr); err != nil {
			return nil, nil, fmt.Errorf("set attributes of %s: %w", b, err)
		}
		trees[i] = t
	}
	return binds, trees, nil
}

// specNamespace replaces the floor's unshare: the namespaces of a default
// launch, every mount a slave, and the R3 check of the table.
func specNamespace() ([]byte, error) {
	if err := unix.Unshare(unix.CLONE_NEWNS | unix.CLONE_NEWCGROUP); err != nil {
		return nil, fmt.Errorf("unshare: %w", err)
	}
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_SLAVE, ""); err != nil {
		return nil, fmt.Errorf("make / slave: %w", err)
	}
	info, err := readFile("/proc/thread-self/mountinfo")
	if err != nil || bytes.Contains(info, []byte(" shared:")) {
		return nil, fmt.Errorf("mountinfo: shared mount or %v", err)
	}
	return info, nil
}

// specDevicesOpen opens and checks the host nodes in the new namespace (R4).
func specDevicesOpen() ([]int, error) {
	fds := make([]int, len(specDevices))
	for i, d := range specDevices {
		fd, err := unix.Open("/dev/"+d.name, unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if err != nil {
			return nil, err
		}
		var st unix.Stat_t
		if unix.Fstat(fd, &st) != nil || st.Mode&unix.S_IFMT != unix.S_IFCHR || unix.Major(st.Rdev) != d.major || unix.Minor(st.Rdev) != d.minor {
			return nil, fmt.Errorf("/dev/%s is not %d:%d", d.name, d.major, d.minor)
		}
		fds[i] = fd
	}
	return fds, nil
}

// specContainer builds the container on the mounted image at root and
// pivots into it: /proc, /sys, /dev, the binds, the caller's passwd and
// group entries (not root's), resolv.conf and hosts, slave, pivot, R3.
func specContainer(root string, info []byte, devs []int, binds []string, trees []int, uid, gid int, home string, onDevice bool) error {
	rootFD, err := unix.Open(root, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	if uid != 0 && onDevice { // a directory's files are in the page cache
		prefetch(rootFD)
	}
	if err := specKernelFS(root, "/proc", "proc", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, procOptions(info), unix.PROC_SUPER_MAGIC); err != nil {
		return err
	}
	if err := specKernelFS(root, "/sys", "sysfs", unix.MS_RDONLY|unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, "", unix.SYSFS_MAGIC); err != nil {
		return err
	}
	if err := specDev(root, devs); err != nil {
		return err
	}
	for i, b := range binds {
		dst, err := specMountpoint(rootFD, b)
		if err != nil {
			return err
		}
		if err := unix.MoveMount(trees[i], "", dst, "", unix.MOVE_MOUNT_F_EMPTY_PATH|unix.MOVE_MOUNT_T_EMPTY_PATH); err != nil {
			return fmt.Errorf("bind %s: %w", b, err)
		}
		unix.Close(dst)
		unix.Close(trees[i])
	}
	if uid != 0 {
		if err := specAccounts(rootFD, uid, gid, home); err != nil {
			return err
		}
	}
	for _, f := range []string{"/etc/resolv.conf", "/etc/hosts"} {
		if dst, err := specResolve(rootFD, f); err == nil {
			specBind(f, dst, unix.MOUNT_ATTR_RDONLY|unix.MOUNT_ATTR_NOSUID|unix.MOUNT_ATTR_NODEV)
			unix.Close(dst)
		}
	}
	if err := unix.Mount("", root, "", unix.MS_REC|unix.MS_SLAVE, ""); err != nil {
		return err
	}
	if err := unix.Chdir(root); err != nil {
		return err
	}
	if err := unix.PivotRoot(".", "."); err != nil {
		return fmt.Errorf("pivot_root: %w", err)
	}
	if err := unix.Unmount(".", unix.MNT_DETACH); err != nil {
		return err
	}
	if err := unix.Chdir("/"); err != nil {
		return err
	}
	info, err = readFile("/proc/thread-self/mountinfo")
	if err != nil || bytes.Contains(info, []byte(" shared:")) {
		return fmt.Errorf("container mountinfo: shared mount or %v", err)
	}
	return nil
}

// prefetch reads the image's account files ahead on another thread, as
// minirun does for a caller who is not root.
func prefetch(rootFD int) {
	fd, err := unix.Dup(rootFD)
	if err != nil {
		return
	}
	go func() {
		defer unix.Close(fd)
		var buf [512]byte
		for _, name := range []string{"/etc/passwd", "/etc/group"} {
			if f, err := specOpen(fd, name, unix.O_RDONLY|unix.O_NONBLOCK); err == nil {
				unix.Read(f, buf[:])
				unix.Close(f)
			}
		}
	}()
}

func specOpen(rootFD int, name string, flags int) (int, error) {
	return unix.Openat2(rootFD, name, &unix.OpenHow{Flags: uint64(flags | unix.O_CLOEXEC), Resolve: unix.RESOLVE_IN_ROOT | unix.RESOLVE_NO_MAGICLINKS})
}

func specResolve(rootFD int, name string) (int, error) {
	return specOpen(rootFD, name, unix.O_PATH|unix.O_NOFOLLOW)
}

func specKernelFS(root, dst, fstype string, flags uintptr, data string, magic int64) error {
	if err := unix.Mount(fstype, root+dst, fstype, flags, data); err != nil {
		return fmt.Errorf("mount %s: %w", dst, err)
	}
	var sfs unix.Statfs_t
	if err := unix.Statfs(root+dst, &sfs); err != nil || uint32(sfs.Type) != uint32(magic) {
		return fmt.Errorf("%s is not %s", dst, fstype)
	}
	return nil
}

// procOptions repeats the host /proc's hidepid= and subset= (R4).
func procOptions(info []byte) string {
	for line := range bytes.SplitSeq(info, []byte("\n")) {
		f := strings.Fields(string(line))
		if len(f) < 10 || f[4] != "/proc" {
			continue
		}
		var keep []string
		for _, opt := range strings.Split(f[len(f)-1], ",") {
			if strings.HasPrefix(opt, "hidepid=") || strings.HasPrefix(opt, "subset=") {
				keep = append(keep, opt)
			}
		}
		return strings.Join(keep, ",")
	}
	return ""
}

// specDev is R4's /dev: a tmpfs, the six checked host nodes bound over
// placeholders, the usual symlinks, devpts and /dev/shm.
func specDev(root string, devs []int) error {
	fsfd, err := unix.Fsopen("tmpfs", unix.FSOPEN_CLOEXEC)
	if err != nil {
		return err
	}
	for _, kv := range [][2]string{{"mode", "755"}, {"size", "64k"}, {"uid", "0"}, {"gid", "0"}} {
		if err := unix.FsconfigSetString(fsfd, kv[0], kv[1]); err != nil {
			return err
		}
	}
	if err := unix.FsconfigCreate(fsfd); err != nil {
		return err
	}
	tmp, err := unix.Fsmount(fsfd, unix.FSMOUNT_CLOEXEC, unix.MOUNT_ATTR_NOSUID|unix.MOUNT_ATTR_NODEV|unix.MOUNT_ATTR_NOEXEC)
	unix.Close(fsfd)
	if err != nil {
		return err
	}
	for _, d := range specDevices {
		if err := unix.Mknodat(tmp, d.name, unix.S_IFREG|0644, 0); err != nil {
			return err
		}
	}
	for _, d := range []string{"pts", "shm"} {
		if err := unix.Mkdirat(tmp, d, 0755); err != nil {
			return err
		}
	}
	for _, l := range [][2]string{{"fd", "/proc/self/fd"}, {"stdin", "/proc/self/fd/0"}, {"stdout", "/proc/self/fd/1"}, {"stderr", "/proc/self/fd/2"}, {"ptmx", "pts/ptmx"}} {
		if err := unix.Symlinkat(l[1], tmp, l[0]); err != nil {
			return err
		}
	}
	if err := unix.MoveMount(tmp, "", unix.AT_FDCWD, root+"/dev", unix.MOVE_MOUNT_F_EMPTY_PATH); err != nil {
		return fmt.Errorf("mount /dev: %w", err)
	}
	var sfs unix.Statfs_t
	if err := unix.Statfs(root+"/dev", &sfs); err != nil || sfs.Type != unix.TMPFS_MAGIC {
		return fmt.Errorf("/dev is not tmpfs")
	}
	for i, d := range specDevices {
		t, err := unix.OpenTree(devs[i], "", unix.OPEN_TREE_CLONE|unix.OPEN_TREE_CLOEXEC|unix.AT_EMPTY_PATH)
		if err != nil {
			return err
		}
		attr := unix.MountAttr{Attr_set: unix.MOUNT_ATTR_NOSUID | unix.MOUNT_ATTR_NOEXEC}
		if err := unix.MountSetattr(t, "", unix.AT_EMPTY_PATH, &attr); err != nil {
			return err
		}
		if err := unix.MoveMount(t, "", tmp, d.name, unix.MOVE_MOUNT_F_EMPTY_PATH); err != nil {
			return fmt.Errorf("bind /dev/%s: %w", d.name, err)
		}
		unix.Close(t)
		unix.Close(devs[i])
	}
	unix.Close(tmp)
	if err := unix.Mount("devpts", root+"/dev/pts", "devpts", unix.MS_NOSUID|unix.MS_NOEXEC, "newinstance,ptmxmode=0666,mode=0620"); err != nil {
		return err
	}
	var pfs unix.Statfs_t
	if err := unix.Statfs(root+"/dev/pts", &pfs); err != nil || pfs.Type != unix.DEVPTS_SUPER_MAGIC {
		return fmt.Errorf("/dev/pts is not devpts")
	}
	return unix.Mount("tmpfs", root+"/dev/shm", "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, "mode=1777,size=64m,uid=0,gid=0")
}

// specMountpoint opens dst in the image, or makes it in a tmpfs laid over
// its parent (assumed empty, as /home is in the benchmark's image): a
// bind's mount point is never created in the image or on the host.
func specMountpoint(rootFD int, dst string) (int, error) {
	if fd, err := specResolve(rootFD, dst); err == nil {
		return fd, nil
	}
	parent, err := specResolve(rootFD, path.Dir(dst))
	if err != nil {
		return -1, err
	}
	fsfd, err := unix.Fsopen("tmpfs", unix.FSOPEN_CLOEXEC)
	if err != nil {
		return -1, err
	}
	for _, kv := range [][2]string{{"mode", "755"}, {"size", "1m"}, {"uid", "0"}, {"gid", "0"}} {
		unix.FsconfigSetString(fsfd, kv[0], kv[1])
	}
	if err := unix.FsconfigCreate(fsfd); err != nil {
		return -1, err
	}
	tmp, err := unix.Fsmount(fsfd, unix.FSMOUNT_CLOEXEC, unix.MOUNT_ATTR_NOSUID|unix.MOUNT_ATTR_NODEV)
	unix.Close(fsfd)
	if err != nil {
		return -1, err
	}
	if err := unix.MoveMount(tmp, "", parent, "", unix.MOVE_MOUNT_F_EMPTY_PATH|unix.MOVE_MOUNT_T_EMPTY_PATH); err != nil {
		return -1, err
	}
	unix.Close(parent)
	if err := unix.Mkdirat(tmp, path.Base(dst), 0755); err != nil {
		return -1, err
	}
	attr := unix.MountAttr{Attr_set: unix.MOUNT_ATTR_RDONLY} // sealed, as minirun seals its underlays
	defer func() { unix.MountSetattr(tmp, "", unix.AT_EMPTY_PATH, &attr); unix.Close(tmp) }()
	return unix.Openat(tmp, path.Base(dst), unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
}

func specBind(src string, dst int, attrs uint64) error {
	t, err := unix.OpenTree(unix.AT_FDCWD, src, unix.OPEN_TREE_CLONE|unix.OPEN_TREE_CLOEXEC)
	if err != nil {
		return err
	}
	defer unix.Close(t)
	attr := unix.MountAttr{Attr_set: attrs}
	if err := unix.MountSetattr(t, "", unix.AT_EMPTY_PATH, &attr); err != nil {
		return err
	}
	return unix.MoveMount(t, "", dst, "", unix.MOVE_MOUNT_F_EMPTY_PATH|unix.MOVE_MOUNT_T_EMPTY_PATH)
}

// specAccounts gives a caller who is not root an entry in the image's
// passwd and group: each file read from the image, a line added, written to
// a session tmpfs and bound read-only over the image's file.
func specAccounts(rootFD, uid, gid int, home string) error {
	const session = stage + "-session"
	unix.Mkdir(session, 0700)
	if err := unix.Mount("tmpfs", session, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, "mode=0755,size=4m,uid=0,gid=0"); err != nil {
		return err
	}
	name := "u" + strconv.Itoa(uid)
	lines := map[string]string{
		"/etc/passwd": name + ":x:" + strconv.Itoa(uid) + ":" + strconv.Itoa(gid) + "::" + home + ":/bin/sh\n",
		"/etc/group":  name + ":x:" + strconv.Itoa(gid) + ":\n",
	}
	for _, f := range []string{"/etc/passwd", "/etc/group"} {
		fd, err := specOpen(rootFD, f, unix.O_RDONLY|unix.O_NONBLOCK)
		if err != nil {
			continue
		}
		var buf [64 << 10]byte
		n, _ := unix.Read(fd, buf[:])
		unix.Close(fd)
		data := append(buf[:max(n, 0):max(n, 0)], lines[f]...)
		src := session + "/" + path.Base(f)
		if err := writeFile(src, data); err != nil {
			return err
		}
		dst, err := specResolve(rootFD, f)
		if err != nil {
			return err
		}
		if err := specBind(src, dst, unix.MOUNT_ATTR_RDONLY|unix.MOUNT_ATTR_NOSUID|unix.MOUNT_ATTR_NODEV); err != nil {
			return err
		}
		unix.Close(dst)
	}
	return nil
}

// specDrop is R13 on the exec thread: bounding set, TIOCSTI filter, ids
// with keepcaps, capset, ambient, no_new_privs for a user, not dumpable,
// everything read back. Root keeps every capability it has (minirun's
// default), a user none.
func specDrop(uid, gid int) error {
	sys := func(n, a, b, c uintptr) unix.Errno {
		_, _, e := unix.RawSyscall6(n, a, b, c, 0, 0, 0)
		return e
	}
	last := 40
	if data, err := readFile("/proc/sys/kernel/cap_last_cap"); err == nil {
		last, _ = strconv.Atoi(strings.TrimSpace(string(data)))
	}
	var set uint64 // root keeps what it holds (this host's root lacks one)
	if uid == 0 {
		hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
		var now [2]unix.CapUserData
		if err := unix.Capget(&hdr, &now[0]); err != nil {
			return err
		}
		set = (uint64(now[1].Permitted)<<32 | uint64(now[0].Permitted)) & (1<<(last+1) - 1)
	}
	for c := 0; c <= last; c++ {
		if set&(1<<c) == 0 {
			if e := sys(unix.SYS_PRCTL, unix.PR_CAPBSET_DROP, uintptr(c), 0); e != 0 {
				return e
			}
		}
	}
	prog := tiocstiProgram()
	fprog := unix.SockFprog{Len: uint16(len(prog)), Filter: &prog[0]}
	if e := sys(unix.SYS_PRCTL, unix.PR_SET_SECCOMP, unix.SECCOMP_MODE_FILTER, uintptr(unsafe.Pointer(&fprog))); e != 0 {
		return fmt.Errorf("seccomp: %w", e)
	}
	sys(unix.SYS_PRCTL, unix.PR_SET_KEEPCAPS, 1, 0)
	groups, _ := unix.Getgroups()
	list := make([]uint32, len(groups)+1)
	for i, g := range groups {
		list[i] = uint32(g)
	}
	if e := sys(unix.SYS_SETGROUPS, uintptr(len(groups)), uintptr(unsafe.Pointer(&list[0])), 0); e != 0 {
		return e
	}
	if e := sys(unix.SYS_SETRESGID, uintptr(gid), uintptr(gid), uintptr(gid)); e != 0 {
		return e
	}
	if e := sys(unix.SYS_SETRESUID, uintptr(uid), uintptr(uid), uintptr(uid)); e != 0 {
		return e
	}
	sys(unix.SYS_PRCTL, unix.PR_SET_DUMPABLE, 0, 0)
	sys(unix.SYS_PRCTL, unix.PR_SET_KEEPCAPS, 0, 0)
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	data := [2]unix.CapUserData{{Effective: uint32(set), Permitted: uint32(set), Inheritable: uint32(set)},
		{Effective: uint32(set >> 32), Permitted: uint32(set >> 32), Inheritable: uint32(set >> 32)}}
	if e := sys(unix.SYS_CAPSET, uintptr(unsafe.Pointer(&hdr)), uintptr(unsafe.Pointer(&data[0])), 0); e != 0 {
		return fmt.Errorf("capset: %w", e)
	}
	sys(unix.SYS_PRCTL, unix.PR_CAP_AMBIENT, unix.PR_CAP_AMBIENT_CLEAR_ALL, 0)
	for c := 0; c <= last; c++ {
		if set&(1<<c) != 0 {
			if e := sys(unix.SYS_PRCTL, unix.PR_CAP_AMBIENT, unix.PR_CAP_AMBIENT_RAISE, uintptr(c)); e != 0 {
				return e
			}
		}
	}
	if uid != 0 {
		if e := sys(unix.SYS_PRCTL, unix.PR_SET_NO_NEW_PRIVS, 1, 0); e != 0 {
			return e
		}
	}
	sys(unix.SYS_PRCTL, unix.PR_SET_DUMPABLE, 0, 0)
	status, err := readFile("/proc/thread-self/status")
	if err != nil {
		return err
	}
	want := fmt.Sprintf("%016x", set)
	id := strconv.Itoa(uid)
	for line := range bytes.SplitSeq(status, []byte("\n")) {
		k, v, _ := strings.Cut(string(line), ":")
		v = strings.TrimSpace(v)
		switch k {
		case "CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb":
			if v != want {
				return fmt.Errorf("%s is %s", k, v)
			}
		case "Uid":
			if strings.Join(strings.Fields(v), " ") != strings.Repeat(id+" ", 3)+id {
				return fmt.Errorf("Uid is %s", v)
			}
		}
	}
	return nil
}

// tiocstiProgram fails ioctl(fd, TIOCSTI) with EPERM, native and i386 (amd64).
func tiocstiProgram() []unix.SockFilter {
	const (
		ldW  = unix.BPF_LD | unix.BPF_W | unix.BPF_ABS
		jeqK = unix.BPF_JMP | unix.BPF_JEQ | unix.BPF_K
		retK = unix.BPF_RET | unix.BPF_K
	)
	deny := uint32(unix.SECCOMP_RET_ERRNO | uint32(unix.EPERM))
	return []unix.SockFilter{
		{Code: ldW, K: 4},
		{Code: jeqK, K: 0xc000003e, Jf: 5}, {Code: ldW, K: 0}, {Code: jeqK, K: 16, Jf: 2}, {Code: ldW, K: 24}, {Code: jeqK, K: unix.TIOCSTI, Jt: 8}, {Code: retK, K: unix.SECCOMP_RET_ALLOW},
		{Code: jeqK, K: 0x40000003, Jf: 5}, {Code: ldW, K: 0}, {Code: jeqK, K: 54, Jf: 2}, {Code: ldW, K: 24}, {Code: jeqK, K: unix.TIOCSTI, Jt: 2}, {Code: retK, K: unix.SECCOMP_RET_ALLOW},
		{Code: retK, K: unix.SECCOMP_RET_ALLOW}, {Code: retK, K: deny},
	}
}

// readFile and writeFile are os.ReadFile and os.WriteFile without the Go
// netpoller, which os.Open starts (epoll_create1, eventfd2, an epoll_ctl
// per file): minirun does not start it either (openFile in ns.go).
func readFile(name string) ([]byte, error) {
	fd, err := unix.Open(name, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	defer unix.Close(fd)
	buf := make([]byte, 0, 4096)
	for {
		if len(buf) == cap(buf) {
			buf = append(buf, 0)[:len(buf)]
		}
		n, err := unix.Read(fd, buf[len(buf):cap(buf)])
		if err != nil {
			return nil, err
		}
		if n == 0 {
			return buf, nil
		}
		buf = buf[:len(buf)+n]
	}
}

func writeFile(name string, data []byte) error {
	fd, err := unix.Open(name, unix.O_WRONLY|unix.O_CREAT|unix.O_TRUNC|unix.O_CLOEXEC, 0644)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	_, err = unix.Write(fd, data)
	return err
}
