// ns.go owns the container's filesystem: the private mount namespace, the
// image mount, binds, /proc /sys /dev, the tmpfs "underlay" that provides
// missing mount points, and pivot_root. Everything here runs on the one
// locked thread that later calls execve (security.md R2-R4).
package main

import (
	"bytes"
	"errors"
	"io"
	"os"
	"path"
	"slices"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

const stateDir = "/run/minirun"

// Where the root is staged and generated files live. In setuid mode these
// are root-only directories, one for all runs (each mounts over them in its
// own namespace); the unprivileged mode stages on a private tmpfs instead.
var (
	stageDir   = stateDir + "/root"
	sessionDir = stateDir + "/session"
	inUserNS   = false // running the unprivileged user-namespace mode
)

// bindSpec is one -B SRC[:DST[:ro|rw]].
type bindSpec struct {
	src, dst string
	writable bool
}

// parseBindSpec checks a bind: absolute clean paths, no NUL, DST not inside
// the kernel filesystems minirun mounts itself.
func parseBindSpec(s string) (bindSpec, error) {
	parts := strings.Split(s, ":")
	if len(parts) > 3 || parts[0] == "" {
		return bindSpec{}, failf(eUsage, "invalid bind %q: expected SRC[:DST[:ro|rw]]", s)
	}
	b := bindSpec{src: parts[0], dst: parts[0], writable: true}
	if len(parts) > 1 && parts[1] != "" {
		b.dst = parts[1]
	}
	if len(parts) == 3 {
		switch parts[2] {
		case "ro":
			b.writable = false
		case "rw":
		default:
			return bindSpec{}, failf(eUsage, "invalid bind %q: option must be ro or rw", s)
		}
	}
	if strings.IndexByte(s, 0) >= 0 || len(s) > 4096 {
		return bindSpec{}, failf(eUsage, "invalid bind %q", s)
	}
	if !path.IsAbs(b.dst) || path.Clean(b.dst) != b.dst {
		return bindSpec{}, failf(eUsage, "invalid bind %q: destination must be an absolute, clean path", s)
	}
	if reservedDest(b.dst) {
		return bindSpec{}, failf(eUsage, "invalid bind %q: cannot bind onto /, /proc, /sys or /dev", s)
	}
	return b, nil
}

func reservedDest(dst string) bool {
	if dst == "/" {
		return true
	}
	for _, r := range []string{"/proc", "/sys", "/dev"} {
		if dst == r || strings.HasPrefix(dst, r+"/") {
			return true
		}
	}
	return false
}

// cloneTrees makes a detached recursive copy of every bind source, still in
// the host namespace, with nosuid/nodev (and ro unless rw) applied before it
// is ever attached; over-mounts that hide host content stay in place.
func (p *launchPlan) cloneTrees(rootfs imageRootfs) error {
	for i := range p.binds {
		b := &p.binds[i]
		tree, err := cloneDetached(b.fd, !b.writable)
		if err != nil {
			return failf(eSystem, "prepare bind of %s: %w", escapeText(b.src), err)
		}
		b.tree = tree
	}
	if rootfs.format == "dir" {
		tree, err := cloneDetached(int(p.image.Fd()), true)
		if err != nil {
			return failf(eSystem, "prepare directory image %s: %w", p.image.Name(), err)
		}
		p.rootTree = tree
	}
	return nil
}

func cloneDetached(fd int, readOnly bool) (int, error) {
	tree, err := unix.OpenTree(fd, "", unix.OPEN_TREE_CLONE|unix.OPEN_TREE_CLOEXEC|unix.AT_EMPTY_PATH|unix.AT_RECURSIVE)
	if err != nil {
		return -1, err
	}
	attr := unix.MountAttr{Attr_set: unix.MOUNT_ATTR_NOSUID | unix.MOUNT_ATTR_NODEV}
	if readOnly {
		attr.Attr_set |= unix.MOUNT_ATTR_RDONLY
	}
	if err := unix.MountSetattr(tree, "", unix.AT_EMPTY_PATH|unix.AT_RECURSIVE, &attr); err != nil {
		unix.Close(tree)
		return -1, err
	}
	return tree, nil
}

// container is the state of the filesystem being built on this thread.
type container struct {
	underlays map[uint64]int // st_dev of tmpfs we made -> its mount fd
	session   bool           // the session tmpfs is mounted
}

// buildContainer makes the container's mount namespace and root, and
// pivots into it. It must run on the locked thread that will execve.
func buildContainer(o *options, who caller, user account, cfg config, plan *launchPlan, rootfs imageRootfs) error {
	if err := prepareContainer(o, who, user, cfg, plan, rootfs); err != nil {
		return err
	}
	if plan.loop != nil {
		plan.loop.Close() // the mount holds the device now
	}
	return pivotInto(stageDir)
}

// prepareContainer does everything but the pivot (and, with --pid, /proc,
// which the init mounts from inside its namespace).
func prepareContainer(o *options, who caller, user account, cfg config, plan *launchPlan, rootfs imageRootfs) error {
	if err := enterNamespaces(o); err != nil {
		return err
	}
	// Opened in the new namespace: a bind from another namespace is refused.
	dev, err := openHostDevices(cfg)
	if err != nil {
		return err
	}
	// Mount points and placeholders minirun creates in its own tmpfs layers
	// must be reachable by the caller (the launch otherwise runs with 077).
	unix.Umask(022)
	c := &container{underlays: map[uint64]int{}}
	if err := c.mountRoot(plan, rootfs); err != nil {
		return err
	}
	holdStagedRoot()
	defer dropStagedRoot()
	if !who.root() && rootfs.format != "dir" { // a directory's files are in the page cache
		prefetchAccountFiles()
	}
	if err := c.mountKernelFilesystems(o, cfg, dev); err != nil {
		return err
	}
	if o.contain {
		for _, dir := range []string{"/tmp", "/var/tmp"} {
			if err := c.mountEmptyTmp(dir); err != nil {
				return err
			}
		}
	}
	for _, b := range plan.binds {
		if err := c.attachBind(b); err != nil {
			// A default bind may be skipped when it cannot be made; an image
			// whose mount point is not what it must be is refused (E8).
			if b.optional && classOf(err) != eImage {
				if o.verbose || o.debug {
					warnf("skipping bind of %s: %v", b.src, err)
				}
				continue
			}
			return err
		}
	}
	// Root runs with the image's own files, as in Apptainer: reading them
	// from a fresh superblock costs a launch more than anything root gains.
	if !who.root() {
		if err := c.writeAccountFiles(user, plan.groupLines); err != nil {
			return err
		}
	}
	for _, f := range []string{"/etc/resolv.conf", "/etc/hosts"} {
		c.bindHostFile(f) // best effort: images without these files run as they are
	}
	if err := c.sealUnderlays(); err != nil {
		return err
	}
	// Binds are clones (open_tree) of host mounts, and a clone of a shared
	// mount joins its peer group: on a host whose / is shared, a mount or
	// unmount made inside would reach the host (catalogue E7). The finished
	// tree is made slave as a whole; pivotInto checks the result (R3).
	if err := unix.Mount("", stageDir, "", unix.MS_REC|unix.MS_SLAVE, ""); err != nil {
		return failf(eSystem, "make the container's mounts slaves of the host's: %w", err)
	}
	if o.hostname != "" {
		if err := unix.Sethostname([]byte(o.hostname)); err != nil {
			return failf(eSystem, "set host name: %w", err)
		}
	}
	if o.net {
		return loopbackUp()
	}
	return nil
}

// enterNamespaces unshares on this thread only and makes every mount a
// slave before anything is mounted, so nothing can propagate to the host (R3).
func enterNamespaces(o *options) error {
	flags := unix.CLONE_NEWNS | unix.CLONE_NEWCGROUP
	if o.uts {
		flags |= unix.CLONE_NEWUTS
	}
	if o.ipc {
		flags |= unix.CLONE_NEWIPC
	}
	if o.net {
		flags |= unix.CLONE_NEWNET
	}
	if o.pid && !inUserNS { // the user-namespace child was cloned into one
		flags |= unix.CLONE_NEWPID
	}
	if err := unix.Unshare(flags); err != nil {
		return failf(eSystem, "create namespaces: %w", err)
	}
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_SLAVE, ""); err != nil {
		return failf(eSystem, "make mounts private: %w", err)
	}
	info, err := readProcFile("/proc/thread-self/mountinfo", 4<<20)
	if err != nil {
		return failf(eSystem, "read mountinfo: %w", err)
	}
	if bytes.Contains(info, []byte(" shared:")) {
		return failf(eInternal, "a mount is still shared with the host after making mounts private")
	}
	mountinfoAtEntry = info
	return nil
}

// mountinfoAtEntry is the new namespace's mount table as enterNamespaces read
// it, a copy of the host's: hostProcOptions looks up /proc in it instead of
// reading the table a second time.
var mountinfoAtEntry []byte

// ensureStateDirs makes /run/minirun, its two mount points and the loop
// index, root-owned 0700, refusing anything already there that is not
// exactly that.
func ensureStateDirs() error {
	return ensureRootDirs(stateDir, stageDir, sessionDir, loopIndexDir)
}

// ensureRootDirs makes each directory in turn (parents first), root-owned
// 0700, and refuses any that exists as anything else.
func ensureRootDirs(dirs ...string) error {
	for _, d := range dirs {
		// They exist after the first run: look before making.
		var st unix.Stat_t
		err := unix.Lstat(d, &st)
		if errors.Is(err, unix.ENOENT) {
			if err := unix.Mkdir(d, 0700); err != nil && !errors.Is(err, unix.EEXIST) {
				return failf(eSystem, "create %s: %w", d, err)
			}
			err = unix.Lstat(d, &st)
		}
		if err != nil {
			return failf(eSystem, "stat %s: %w", d, err)
		}
		if st.Mode&unix.S_IFMT != unix.S_IFDIR || st.Uid != 0 || st.Mode&0077 != 0 {
			return failf(eSystem, "state directory %s is not a root-owned 0700 directory", d)
		}
	}
	return nil
}

// mountRoot puts the image at the staging point: squashfs from the loop
// device, read-only, nosuid, nodev, type given explicitly (R4, R11); or the
// detached copy of a directory image.
func (c *container) mountRoot(plan *launchPlan, rootfs imageRootfs) error {
	if rootfs.format == "dir" {
		if err := unix.MoveMount(plan.rootTree, "", unix.AT_FDCWD, stageDir, unix.MOVE_MOUNT_F_EMPTY_PATH); err != nil {
			return failf(eSystem, "mount directory image %s: %w", plan.image.Name(), err)
		}
		return nil
	}
	err := unix.Mount(plan.loop.Name(), stageDir, "squashfs", unix.MS_RDONLY|unix.MS_NOSUID|unix.MS_NODEV, "")
	if err != nil {
		return failf(eImage, "mount squashfs of %s: %w (not a valid squashfs?)", plan.image.Name(), err)
	}
	return nil
}

// stagedRoot holds the staged root open while the container is built, so
// that resolveInRoot need not walk to it for every mount point. It shows
// the mount that was on top when it was opened: a tmpfs laid over the root
// directory itself (an underlay) makes it stale, so writableDir opens it
// again after each underlay.
var stagedRoot = -1

func holdStagedRoot() {
	dropStagedRoot()
	if fd, err := unix.Open(stageDir, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0); err == nil {
		stagedRoot = fd
	}
}

func dropStagedRoot() {
	if stagedRoot >= 0 {
		unix.Close(stagedRoot)
		stagedRoot = -1
	}
}

// resolveInRoot opens dst inside the staged root without leaving it: no
// symlinks at all, or on ELOOP symlinks confined to the image mount (R2).
func resolveInRoot(dst string, flags uint64) (int, error) {
	root := stagedRoot
	if root < 0 {
		fd, err := unix.Open(stageDir, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		if err != nil {
			return -1, err
		}
		defer unix.Close(fd)
		root = fd
	}
	return openInRoot(root, dst, flags)
}

// openInRoot is resolveInRoot from the root open at root.
func openInRoot(root int, dst string, flags uint64) (int, error) {
	how := unix.OpenHow{Flags: flags | unix.O_CLOEXEC, Resolve: unix.RESOLVE_IN_ROOT | unix.RESOLVE_NO_MAGICLINKS | unix.RESOLVE_NO_SYMLINKS}
	fd, err := unix.Openat2(root, dst, &how)
	if errors.Is(err, unix.ELOOP) {
		how.Resolve = unix.RESOLVE_IN_ROOT | unix.RESOLVE_NO_MAGICLINKS | unix.RESOLVE_NO_XDEV
		fd, err = unix.Openat2(root, dst, &how)
	}
	return fd, err
}

// mountpoint returns an O_PATH fd on dst inside the root, of the wanted
// type. A missing dst is made in a tmpfs laid over its parent directory
// (the parent's entries are bound back into it), never in the image or on
// the host: no file is created as root on a real filesystem.
func (c *container) mountpoint(dst string, dir bool) (int, error) {
	fd, err := resolveInRoot(dst, unix.O_PATH|unix.O_NOFOLLOW)
	if err == nil {
		var st unix.Stat_t
		if err := unix.Fstat(fd, &st); err != nil {
			unix.Close(fd)
			return -1, err
		}
		if st.Mode&unix.S_IFMT == unix.S_IFLNK {
			unix.Close(fd)
			return -1, failf(eImage, "mount point %s in the image is a symbolic link, not a directory or regular file", escapeText(dst))
		}
		isDir := st.Mode&unix.S_IFMT == unix.S_IFDIR
		if isDir != dir || (!dir && st.Mode&unix.S_IFMT != unix.S_IFREG) {
			unix.Close(fd)
			kind := "a directory"
			if !dir {
				kind = "a regular file"
			}
			return -1, failf(eUsage, "mount point %s in the image is not %s", escapeText(dst), kind)
		}
		return fd, nil
	}
	if !errors.Is(err, unix.ENOENT) || dst == "/" {
		return -1, failf(eImage, "mount point %s in the image: %w", escapeText(dst), err)
	}
	parent, err := c.mountpoint(path.Dir(dst), true)
	if err != nil {
		return -1, err
	}
	defer unix.Close(parent)
	writable, err := c.writableDir(parent)
	if err != nil {
		return -1, err
	}
	defer unix.Close(writable)
	name := path.Base(dst)
	if dir {
		err = unix.Mkdirat(writable, name, 0755)
	} else {
		var f int
		f, err = unix.Openat(writable, name, unix.O_CREAT|unix.O_EXCL|unix.O_WRONLY|unix.O_CLOEXEC, 0644)
		if err == nil {
			unix.Close(f)
		}
	}
	if err != nil {
		return -1, failf(eSystem, "create mount point %s: %w", escapeText(dst), err)
	}
	return unix.Openat(writable, name, unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
}

const maxUnderlayEntries = 512

// writableDir returns a writable fd for the directory at fd: itself when it
// is already one of our tmpfs, else a fresh tmpfs laid over it holding
// binds of all its entries (Apptainer's "underlay").
func (c *container) writableDir(fd int) (int, error) {
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return -1, err
	}
	if _, ours := c.underlays[st.Dev]; ours {
		return unix.Openat(fd, ".", unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	}
	dir, err := unix.Openat(fd, ".", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, failf(eImage, "read image directory: %w", err)
	}
	entries, err := readDirNames(dir, maxUnderlayEntries)
	if err != nil {
		unix.Close(dir)
		return -1, err
	}
	// Hold every entry before the tmpfs covers them.
	held := make([]int, len(entries))
	for i, name := range entries {
		held[i], err = unix.Openat(dir, name, unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if err != nil {
			unix.Close(dir)
			return -1, failf(eImage, "open image entry %s: %w", escapeText(name), err)
		}
	}
	defer func() {
		for _, h := range held {
			unix.Close(h)
		}
	}()
	unix.Close(dir)

	tmp, err := newTmpfs(st.Mode&07777, "1m")
	if err != nil {
		return -1, err
	}
	if err := unix.MoveMount(tmp, "", fd, "", unix.MOVE_MOUNT_F_EMPTY_PATH|unix.MOVE_MOUNT_T_EMPTY_PATH); err != nil {
		unix.Close(tmp)
		return -1, failf(eSystem, "lay tmpfs over image directory: %w", err)
	}
	if stagedRoot >= 0 {
		holdStagedRoot() // the tmpfs may cover the root directory itself
	}
	for i, name := range entries {
		if err := rebindEntry(tmp, name, held[i]); err != nil {
			return -1, err
		}
	}
	var tst unix.Stat_t
	if err := unix.Fstat(tmp, &tst); err != nil {
		return -1, err
	}
	c.underlays[tst.Dev] = tmp
	return unix.Openat(tmp, ".", unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
}

// rebindEntry recreates one image entry inside the underlay tmpfs: symlinks
// are copied, everything else is bound from the image.
func rebindEntry(tmp int, name string, held int) error {
	var st unix.Stat_t
	if err := unix.Fstat(held, &st); err != nil {
		return err
	}
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFLNK:
		buf := make([]byte, 4096)
		n, err := unix.Readlinkat(held, "", buf)
		if err != nil {
			return failf(eImage, "read image symlink %s: %w", escapeText(name), err)
		}
		return unix.Symlinkat(string(buf[:n]), tmp, name)
	case unix.S_IFDIR:
		if err := unix.Mkdirat(tmp, name, 0755); err != nil {
			return err
		}
	default:
		f, err := unix.Openat(tmp, name, unix.O_CREAT|unix.O_EXCL|unix.O_WRONLY|unix.O_CLOEXEC, 0644)
		if err != nil {
			return err
		}
		unix.Close(f)
	}
	tree, err := unix.OpenTree(held, "", unix.OPEN_TREE_CLONE|unix.OPEN_TREE_CLOEXEC|unix.AT_EMPTY_PATH|unix.AT_RECURSIVE)
	if err != nil {
		return failf(eSystem, "clone image entry %s: %w", escapeText(name), err)
	}
	defer unix.Close(tree)
	if err := unix.MoveMount(tree, "", tmp, name, unix.MOVE_MOUNT_F_EMPTY_PATH); err != nil {
		return failf(eSystem, "bind image entry %s: %w", escapeText(name), err)
	}
	return nil
}

// sealUnderlays makes our tmpfs layers read-only once every mount point
// exists, so the root stays as read-only as the image.
func (c *container) sealUnderlays() error {
	for _, tmp := range c.underlays {
		attr := unix.MountAttr{Attr_set: unix.MOUNT_ATTR_RDONLY}
		if err := unix.MountSetattr(tmp, "", unix.AT_EMPTY_PATH, &attr); err != nil {
			return failf(eSystem, "make tmpfs read-only: %w", err)
		}
		unix.Close(tmp)
	}
	return nil
}

// rootOwned is the tmpfs option making it root's, outside a user namespace.
func rootOwned() string {
	if inUserNS {
		return ""
	}
	return ",uid=0,gid=0"
}

// newTmpfs makes a detached tmpfs (nosuid, nodev) and returns its mount fd.
func newTmpfs(mode uint32, size string) (int, error) {
	fsfd, err := unix.Fsopen("tmpfs", unix.FSOPEN_CLOEXEC)
	if err != nil {
		return -1, failf(eSystem, "create tmpfs: %w", err)
	}
	defer unix.Close(fsfd)
	if err := unix.FsconfigSetString(fsfd, "mode", strconv.FormatUint(uint64(mode), 8)); err != nil {
		return -1, failf(eSystem, "configure tmpfs: %w", err)
	}
	if err := unix.FsconfigSetString(fsfd, "size", size); err != nil {
		return -1, failf(eSystem, "configure tmpfs: %w", err)
	}
	// Owned by root, not by the caller's gid (a setuid process keeps it).
	// In a user namespace root is not mapped: the caller owns it there.
	for _, id := range []string{"uid", "gid"} {
		if inUserNS {
			break
		}
		if err := unix.FsconfigSetString(fsfd, id, "0"); err != nil {
			return -1, failf(eSystem, "configure tmpfs: %w", err)
		}
	}
	if err := unix.FsconfigCreate(fsfd); err != nil {
		return -1, failf(eSystem, "create tmpfs: %w", err)
	}
	mfd, err := unix.Fsmount(fsfd, unix.FSMOUNT_CLOEXEC, unix.MOUNT_ATTR_NOSUID|unix.MOUNT_ATTR_NODEV)
	if err != nil {
		return -1, failf(eSystem, "mount tmpfs: %w", err)
	}
	return mfd, nil
}

// mountEmptyTmp gives --contain a private, empty, size-capped /tmp.
func (c *container) mountEmptyTmp(dst string) error {
	fd, err := c.mountpoint(dst, true)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	tmp, err := newTmpfs(01777, "64m")
	if err != nil {
		return err
	}
	defer unix.Close(tmp)
	if err := unix.MoveMount(tmp, "", fd, "", unix.MOVE_MOUNT_F_EMPTY_PATH|unix.MOVE_MOUNT_T_EMPTY_PATH); err != nil {
		return failf(eSystem, "mount tmpfs on %s: %w", dst, err)
	}
	return nil
}

// attachBind puts a detached host tree at its destination inside the root.
func (c *container) attachBind(b hostBind) error {
	dst, err := c.mountpoint(b.dst, b.dir)
	if err != nil {
		return err
	}
	defer unix.Close(dst)
	err = unix.MoveMount(b.tree, "", dst, "", unix.MOVE_MOUNT_F_EMPTY_PATH|unix.MOVE_MOUNT_T_EMPTY_PATH)
	unix.Close(b.tree)
	if err != nil {
		return failf(eSystem, "bind %s to %s: %w", escapeText(b.src), escapeText(b.dst), err)
	}
	return nil
}

// hostDevices are the host nodes bound into a minimal /dev, opened before
// unshare and checked to be the expected character devices (R4).
type hostDevices struct {
	nodes  map[string]int // name -> O_PATH fd
	hostFS bool           // mount_dev = "host": the host /dev, bound whole
	devFD  int
}

var minimalDevices = []struct {
	name         string
	major, minor uint32
}{{"null", 1, 3}, {"zero", 1, 5}, {"full", 1, 7}, {"random", 1, 8}, {"urandom", 1, 9}, {"tty", 5, 0}}

func openHostDevices(cfg config) (*hostDevices, error) {
	d := &hostDevices{nodes: map[string]int{}}
	if cfg.mountDev == "host" {
		fd, err := unix.Open("/dev", unix.O_PATH|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if err != nil {
			return nil, failf(eSystem, "open host /dev: %w", err)
		}
		d.hostFS, d.devFD = true, fd
		return d, nil
	}
	for _, n := range minimalDevices {
		fd, err := unix.Open("/dev/"+n.name, unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if err != nil {
			return nil, failf(eSystem, "open host /dev/%s: %w", n.name, err)
		}
		var st unix.Stat_t
		if err := unix.Fstat(fd, &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFCHR ||
			unix.Major(st.Rdev) != n.major || unix.Minor(st.Rdev) != n.minor {
			return nil, failf(eSystem, "host /dev/%s is not the expected character device %d:%d", n.name, n.major, n.minor)
		}
		d.nodes[n.name] = fd
	}
	return d, nil
}

// mountKernelFilesystems mounts /proc, /sys and /dev. Their mount points
// must be real directories of the image, and each mount is checked to be
// the filesystem we asked for (R2, R4).
func (c *container) mountKernelFilesystems(o *options, cfg config, dev *hostDevices) error {
	switch {
	case inUserNS && !o.pid:
		// A user namespace may not mount a procfs of a PID namespace it does
		// not own: the host's /proc is bound instead, as bubblewrap does.
		if err := c.bindHostTree("/proc"); err != nil {
			return err
		}
	case !o.pid || inUserNS: // with setuid --pid the init mounts /proc from inside
		if err := c.mountKernelFS("/proc", "proc", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, hostProcOptions(), unix.PROC_SUPER_MAGIC); err != nil {
			return err
		}
	}
	if inUserNS && !o.net {
		if err := c.bindHostTree("/sys"); err != nil {
			return err
		}
	} else if err := c.mountKernelFS("/sys", "sysfs", unix.MS_RDONLY|unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, "", unix.SYSFS_MAGIC); err != nil {
		return err
	}
	return c.mountDev(dev)
}

// bindHostTree binds a host kernel filesystem tree read-only, recursively
// (its submounts are locked in a user namespace and must come along).
func (c *container) bindHostTree(dir string) error {
	dst, err := c.existingDir(dir)
	if err != nil {
		return err
	}
	defer unix.Close(dst)
	src, err := unix.Open(dir, unix.O_PATH|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return failf(eSystem, "open host %s: %w", dir, err)
	}
	defer unix.Close(src)
	tree, err := cloneDetached(src, dir == "/sys")
	if err != nil {
		return failf(eSystem, "clone host %s: %w", dir, err)
	}
	defer unix.Close(tree)
	if err := unix.MoveMount(tree, "", dst, "", unix.MOVE_MOUNT_F_EMPTY_PATH|unix.MOVE_MOUNT_T_EMPTY_PATH); err != nil {
		return failf(eSystem, "bind host %s: %w", dir, err)
	}
	return nil
}

func (c *container) mountKernelFS(dst, fstype string, flags uintptr, data string, magic int64) error {
	fd, err := c.existingDir(dst)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	target := "/proc/self/fd/" + strconv.Itoa(fd)
	if err := unix.Mount(fstype, target, fstype, flags, data); err != nil {
		return failf(eSystem, "mount %s on %s: %w", fstype, dst, err)
	}
	return checkFSType(dst, magic)
}

// existingDir opens one of minirun's own mount points, which must be a
// real directory in the image (never created, never a symlink).
func (c *container) existingDir(dst string) (int, error) {
	fd, err := resolveInRoot(dst, unix.O_PATH|unix.O_NOFOLLOW)
	if err == nil {
		var st unix.Stat_t
		if unix.Fstat(fd, &st) == nil && st.Mode&unix.S_IFMT == unix.S_IFDIR {
			return fd, nil
		}
		unix.Close(fd)
	}
	return -1, failf(eImage, "mount point %s is not a directory in the image", dst)
}

// checkFSType verifies a mount landed where and as intended.
func checkFSType(dst string, magic int64) error {
	fd, err := resolveInRoot(dst, unix.O_PATH|unix.O_NOFOLLOW)
	if err != nil {
		return failf(eInternal, "reopen %s after mounting: %w", dst, err)
	}
	defer unix.Close(fd)
	var sfs unix.Statfs_t
	if err := unix.Fstatfs(fd, &sfs); err != nil || uint32(sfs.Type) != uint32(magic) { // magics are 32 bits; Type is int32 on 386
		return failf(eInternal, "%s is not the filesystem minirun mounted", dst)
	}
	return nil
}

// hostProcOptions carries hidepid= and subset= of the host /proc: a new
// procfs instance does not inherit them.
func hostProcOptions() string {
	info := mountinfoAtEntry
	if info == nil {
		var err error
		if info, err = readProcFile("/proc/self/mountinfo", 4<<20); err != nil {
			return ""
		}
	}
	return procOptionsIn(info)
}

// procOptionsIn finds the procfs mounted at /proc in a mountinfo table and
// returns the options of it a new instance must repeat. Mount points are
// octal-escaped by the kernel, so no name can pose as "/proc" or as a field.
func procOptionsIn(info []byte) string {
	for _, line := range strings.Split(string(info), "\n") {
		f := strings.Fields(line)
		if len(f) < 10 || f[4] != "/proc" {
			continue
		}
		sep := -1
		for i, x := range f {
			if x == "-" {
				sep = i
				break
			}
		}
		if sep < 0 || sep+3 >= len(f) || f[sep+1] != "proc" {
			continue
		}
		var keep []string
		for _, opt := range strings.Split(f[sep+3], ",") {
			if strings.HasPrefix(opt, "hidepid=") || strings.HasPrefix(opt, "subset=") || strings.HasPrefix(opt, "gid=") {
				keep = append(keep, opt)
			}
		}
		return strings.Join(keep, ",")
	}
	return ""
}

// mountDev makes /dev: a tmpfs with the host's null, zero, full, random,
// urandom and tty bound in, a private devpts and /dev/shm; or the host's
// /dev when the admin chose mount_dev = "host".
func (c *container) mountDev(dev *hostDevices) error {
	fd, err := c.existingDir("/dev")
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	if dev.hostFS {
		tree, err := cloneDetached(dev.devFD, false)
		if err != nil {
			return failf(eSystem, "clone host /dev: %w", err)
		}
		defer unix.Close(tree)
		attr := unix.MountAttr{Attr_set: unix.MOUNT_ATTR_NOSUID | unix.MOUNT_ATTR_NOEXEC, Attr_clr: unix.MOUNT_ATTR_NODEV}
		unix.MountSetattr(tree, "", unix.AT_EMPTY_PATH, &attr)
		if err := unix.MoveMount(tree, "", fd, "", unix.MOVE_MOUNT_F_EMPTY_PATH|unix.MOVE_MOUNT_T_EMPTY_PATH); err != nil {
			return failf(eSystem, "bind host /dev: %w", err)
		}
		return nil
	}
	tmp, err := newTmpfs(0755, "64k")
	if err != nil {
		return err
	}
	defer unix.Close(tmp)
	attr := unix.MountAttr{Attr_set: unix.MOUNT_ATTR_NOEXEC}
	unix.MountSetattr(tmp, "", unix.AT_EMPTY_PATH, &attr)
	for _, n := range minimalDevices {
		if err := unix.Mknodat(tmp, n.name, unix.S_IFREG|0644, 0); err != nil { // an empty file, no descriptor
			return failf(eSystem, "create /dev/%s: %w", n.name, err)
		}
	}
	for _, d := range []string{"pts", "shm"} {
		if err := unix.Mkdirat(tmp, d, 0755); err != nil {
			return failf(eSystem, "create /dev/%s: %w", d, err)
		}
	}
	for link, target := range map[string]string{"fd": "/proc/self/fd", "stdin": "/proc/self/fd/0",
		"stdout": "/proc/self/fd/1", "stderr": "/proc/self/fd/2", "ptmx": "pts/ptmx"} {
		if err := unix.Symlinkat(target, tmp, link); err != nil {
			return failf(eSystem, "create /dev/%s: %w", link, err)
		}
	}
	if err := unix.MoveMount(tmp, "", fd, "", unix.MOVE_MOUNT_F_EMPTY_PATH|unix.MOVE_MOUNT_T_EMPTY_PATH); err != nil {
		return failf(eSystem, "mount /dev: %w", err)
	}
	if err := checkFSType("/dev", unix.TMPFS_MAGIC); err != nil {
		return err
	}
	// Host nodes were opened and checked in this namespace; each is cloned
	// from its descriptor and attached over its placeholder in the tmpfs,
	// named from the tmpfs's own mount (nothing else can be there).
	for _, n := range minimalDevices {
		node := dev.nodes[n.name]
		err := bindFDAt(node, tmp, n.name, unix.MOUNT_ATTR_NOSUID|unix.MOUNT_ATTR_NOEXEC)
		unix.Close(node)
		if err != nil {
			return failf(eSystem, "bind /dev/%s: %w", n.name, err)
		}
	}
	if err := unix.Mount("devpts", stageDir+"/dev/pts", "devpts", unix.MS_NOSUID|unix.MS_NOEXEC,
		"newinstance,ptmxmode=0666,mode=0620"); err != nil {
		return failf(eSystem, "mount /dev/pts: %w", err)
	}
	if err := checkFSType("/dev/pts", unix.DEVPTS_SUPER_MAGIC); err != nil {
		return err
	}
	if err := unix.Mount("tmpfs", stageDir+"/dev/shm", "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, "mode=1777,size=64m"+rootOwned()); err != nil {
		return failf(eSystem, "mount /dev/shm: %w", err)
	}
	return nil
}

// writeAccountFiles gives the container an /etc/passwd and /etc/group that
// know the caller: the image's own files plus the caller's entries, in a
// small tmpfs bound read-only over the image's files. Images without these
// files keep running without them. Not for root (see prepareContainer).
func (c *container) writeAccountFiles(user account, groups map[int]string) error {
	if passwd, ok := readImageFile("/etc/passwd"); ok {
		if _, found := findPasswd(passwd, strconv.Itoa(user.uid)); !found {
			passwd = appendLine(passwd, user.passwdLine())
			if err := c.bindGenerated("passwd", "/etc/passwd", passwd); err != nil {
				return err
			}
		}
	}
	if group, ok := readImageFile("/etc/group"); ok {
		gids := make([]int, 0, len(groups))
		for gid := range groups {
			gids = append(gids, gid)
		}
		slices.Sort(gids)
		changed := false
		for _, gid := range gids {
			if _, found := findGroupName(group, strconv.Itoa(gid)); !found {
				group, changed = appendLine(group, groups[gid]), true
			}
		}
		if changed {
			return c.bindGenerated("group", "/etc/group", group)
		}
	}
	return nil
}

func appendLine(data []byte, line string) []byte {
	if len(data) > 0 && data[len(data)-1] != '\n' {
		data = append(data, '\n')
	}
	return append(data, line+"\n"...)
}

// prefetchAccountFiles reads the start of the image's /etc/passwd and
// /etc/group on another thread and throws the bytes away. On a squashfs
// just mounted each first read is a round trip through the loop device,
// three or four of them (0.24 ms of a user's launch on the bench host);
// done here, they overlap with the /proc, /sys, /dev and bind mounts this
// thread makes next, and writeAccountFiles, which reads the files again
// after the binds, finds them cached. Nothing read here is used, so a bind
// over /etc changes nothing. The descriptor resolves inside the image's
// mount from any thread: the other threads are in the host's namespace.
// The files are opened as readImageFile opens them, and only regular files
// are read; execve ends the thread if it is still reading.
func prefetchAccountFiles() {
	root, err := unix.FcntlInt(uintptr(stagedRoot), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return
	}
	go func() {
		defer unix.Close(root)
		var buf [512]byte // any read fills the page cache with the file's whole first block
		for _, name := range []string{"/etc/passwd", "/etc/group"} {
			fd, err := openInRoot(root, name, imageFileFlags)
			if err != nil {
				continue
			}
			var st unix.Stat_t
			if unix.Fstat(fd, &st) == nil && st.Mode&unix.S_IFMT == unix.S_IFREG {
				unix.Read(fd, buf[:])
			}
			unix.Close(fd)
		}
	}()
}

// imageFileFlags open an image's file for reading: never blocking (a FIFO),
// never a terminal.
const imageFileFlags = unix.O_RDONLY | unix.O_NOFOLLOW | unix.O_NONBLOCK | unix.O_NOCTTY

// readImageFile reads a regular file of the image, bounded; false when it
// is missing or not a regular file.
func readImageFile(name string) ([]byte, bool) {
	fd, err := resolveInRoot(name, imageFileFlags)
	if err != nil {
		return nil, false
	}
	f := fileFromFD(fd, name)
	defer f.Close()
	data, err := readAllBounded(f, maxAccountFileSize)
	return data, err == nil
}

// writeReadable writes a world-readable file despite minirun's umask 077.
func writeReadable(name string, data []byte) error {
	f, err := openFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0644)
	if err != nil {
		return err
	}
	_, err = f.Write(data)
	if err == nil {
		err = f.Chmod(0644)
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// bindGenerated writes data to the session tmpfs (mounted on first use)
// and binds it read-only over dst, which must already be a regular file in
// the image.
func (c *container) bindGenerated(name, dst string, data []byte) error {
	fd, err := resolveInRoot(dst, unix.O_PATH|unix.O_NOFOLLOW)
	if err != nil {
		return nil
	}
	defer unix.Close(fd)
	if !c.session {
		if err := unix.Mount("tmpfs", sessionDir, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, "mode=0755,size=4m"+rootOwned()); err != nil {
			return failf(eSystem, "mount session tmpfs: %w", err)
		}
		c.session = true
	}
	src := sessionDir + "/" + name
	if err := writeReadable(src, data); err != nil {
		class := eSystem
		if errors.Is(err, unix.EFBIG) || errors.Is(err, unix.ENOSPC) {
			class = eResource
		}
		return failf(class, "write %w", err) // the error names the file
	}
	if err := bindPath(src, fd, unix.MOUNT_ATTR_RDONLY|unix.MOUNT_ATTR_NOSUID|unix.MOUNT_ATTR_NODEV); err != nil {
		return failf(eSystem, "bind %s: %w", dst, err)
	}
	return nil
}

// bindHostFile binds a host configuration file (resolv.conf, hosts) over the
// image's copy when both exist.
func (c *container) bindHostFile(name string) {
	dst, err := resolveInRoot(name, unix.O_PATH|unix.O_NOFOLLOW)
	if err != nil {
		return
	}
	defer unix.Close(dst)
	var st unix.Stat_t
	if unix.Fstat(dst, &st) != nil || st.Mode&unix.S_IFMT != unix.S_IFREG {
		return
	}
	bindPath(name, dst, unix.MOUNT_ATTR_RDONLY|unix.MOUNT_ATTR_NOSUID|unix.MOUNT_ATTR_NODEV)
}

// bindFD binds the object open at src onto the open mount point dst.
func bindFD(src, dst int, attr uint64) error {
	return bindFDAt(src, dst, "", attr)
}

// bindFDAt binds the object open at src onto name in the directory open at
// dir, not following a symbolic link there; "" is dir itself.
func bindFDAt(src, dir int, name string, attr uint64) error {
	tree, err := unix.OpenTree(src, "", unix.OPEN_TREE_CLONE|unix.OPEN_TREE_CLOEXEC|unix.AT_EMPTY_PATH)
	if err != nil {
		return err
	}
	defer unix.Close(tree)
	if err := unix.MountSetattr(tree, "", unix.AT_EMPTY_PATH, &unix.MountAttr{Attr_set: attr}); err != nil {
		return err
	}
	flags := unix.MOVE_MOUNT_F_EMPTY_PATH
	if name == "" {
		flags |= unix.MOVE_MOUNT_T_EMPTY_PATH
	}
	return unix.MoveMount(tree, "", dir, name, flags)
}

// bindPath binds the file at src, a root-controlled path in this
// namespace (session files, host resolv.conf), onto the open mount point dst.
func bindPath(src string, dst int, attr uint64) error {
	fd, err := unix.Open(src, unix.O_PATH|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	return bindFD(fd, dst, attr)
}

// pivotInto makes dir the root of this thread's mount namespace and
// detaches the host's tree, so nothing of it stays reachable.
func pivotInto(dir string) error {
	if err := unix.Chdir(dir); err != nil {
		return failf(eSystem, "enter %s: %w", dir, err)
	}
	if err := unix.PivotRoot(".", "."); err != nil {
		return failf(eSystem, "pivot_root: %w", err)
	}
	if err := unix.Unmount(".", unix.MNT_DETACH); err != nil {
		return failf(eSystem, "detach the host root: %w", err)
	}
	if err := unix.Chdir("/"); err != nil {
		return failf(eSystem, "chdir /: %w", err)
	}
	// Only now is the table the container's alone: before the pivot it
	// still holds the host clones an underlay covers.
	info, err := readProcFile("/proc/thread-self/mountinfo", 4<<20)
	if err != nil {
		return failf(eSystem, "read the container's mountinfo: %w", err)
	}
	if bytes.Contains(info, []byte(" shared:")) {
		return failf(eInternal, "a container mount is still shared with the host after making it a slave")
	}
	return nil
}

// loopbackUp brings up lo in a new network namespace.
func loopbackUp() error {
	s, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return failf(eSystem, "socket for loopback: %w", err)
	}
	defer unix.Close(s)
	req, err := unix.NewIfreq("lo")
	if err != nil {
		return failf(eSystem, "loopback: %w", err)
	}
	if err := unix.IoctlIfreq(s, unix.SIOCGIFFLAGS, req); err != nil {
		return failf(eSystem, "read loopback flags: %w", err)
	}
	req.SetUint16(req.Uint16() | unix.IFF_UP)
	if err := unix.IoctlIfreq(s, unix.SIOCSIFFLAGS, req); err != nil {
		return failf(eSystem, "bring loopback up: %w", err)
	}
	return nil
}

// readDirNames lists the directory open at fd (which stays open), refusing
// more than limit entries.
func readDirNames(fd int, limit int) ([]string, error) {
	own, err := unix.Openat(fd, ".", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, failf(eImage, "list image directory: %w", err)
	}
	f := os.NewFile(uintptr(own), "dir")
	names, err := f.Readdirnames(limit + 1)
	f.Close()
	if err != nil && err != io.EOF {
		return nil, failf(eImage, "list image directory: %w", err)
	}
	if len(names) > limit {
		return nil, failf(eImage, "image directory has more than %d entries to lay a mount point beside", limit)
	}
	return names, nil
}

// openFile is os.OpenFile without the Go netpoller. os.OpenFile registers
// every file with epoll: the first call creates the poller (epoll_create1,
// eventfd2), each later one costs a failing epoll_ctl, and once the poller
// exists the scheduler polls it whenever a thread idles. Setup only ever
// does blocking I/O, and os.NewFile leaves a blocking descriptor alone.
func openFile(name string, flags int, perm uint32) (*os.File, error) {
	for {
		fd, err := unix.Open(name, flags|unix.O_CLOEXEC, perm)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return nil, &os.PathError{Op: "open", Path: name, Err: err}
		}
		return os.NewFile(uintptr(fd), name), nil
	}
}

// fileFromFD wraps a descriptor opened O_NONBLOCK (so that a FIFO cannot
// hang the open) in an os.File. A regular file, directory or block device is
// made blocking first: that changes nothing for it, but os.NewFile would
// hand a non-blocking descriptor to the netpoller (see openFile). Anything
// else stays non-blocking, for its caller to refuse.
func fileFromFD(fd int, name string) *os.File {
	var st unix.Stat_t
	if unix.Fstat(fd, &st) == nil {
		switch st.Mode & unix.S_IFMT {
		case unix.S_IFREG, unix.S_IFDIR, unix.S_IFBLK:
			unix.SetNonblock(fd, false)
		}
	}
	return os.NewFile(uintptr(fd), name)
}

// readProcFile reads a /proc file whole with plain syscalls: os.Open would
// try to register it with the poller, and io.ReadAll's 512-byte start makes
// seq_file render the table again for every small read.
func readProcFile(name string, limit int64) ([]byte, error) {
	fd, err := unix.Open(name, unix.O_RDONLY|unix.O_CLOEXEC|unix.O_NOCTTY, 0)
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: name, Err: err}
	}
	defer unix.Close(fd)
	buf := make([]byte, 0, min(4<<10, limit+1)) // status and most mountinfo tables fit; it grows
	for {
		if len(buf) == cap(buf) {
			if int64(len(buf)) > limit {
				return nil, failf(eResource, "%s is larger than %d bytes", name, limit)
			}
			buf = slices.Grow(buf, int(min(int64(len(buf)), limit+1-int64(len(buf)))))
		}
		n, err := unix.Read(fd, buf[len(buf):cap(buf)])
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return nil, &os.PathError{Op: "read", Path: name, Err: err}
		}
		if n == 0 {
			if int64(len(buf)) > limit {
				return nil, failf(eResource, "%s is larger than %d bytes", name, limit)
			}
			return buf, nil
		}
		buf = buf[:len(buf)+n]
	}
}

func readAllBounded(f *os.File, limit int64) ([]byte, error) {
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		return nil, err
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG && !strings.HasPrefix(f.Name(), "/proc/") {
		return nil, failf(eImage, "%s is not a regular file", f.Name())
	}
	data, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(data)) > limit {
		return nil, failf(eResource, "%s is larger than %d bytes", f.Name(), limit)
	}
	return data, nil
}
