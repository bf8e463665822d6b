// imagepolicy.go owns the admin's image allow-lists: limit_container_paths,
// limit_container_owners and limit_container_groups (spec/security.md R14),
// checked on the descriptor the caller opened, before any device exists.
package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// checkImagePolicy refuses (E_POLICY) an image that the administrator's
// allow-lists exclude. image is the caller-opened descriptor and st its
// fstat; name is what the caller typed, used only in messages. Root is
// exempt. An unreadable or untrusted account file stays E_CONFIG.
func checkImagePolicy(image *os.File, st *unix.Stat_t, name string, who caller, cfg config, names *nameLookup) error {
	if who.root() {
		return nil
	}
	shown := escapeText(name)
	if len(cfg.limitContainerOwners) > 0 {
		ok, err := idListed(names, passwdDB, cfg.limitContainerOwners, st.Uid)
		if err != nil {
			return err
		}
		if !ok {
			return failf(ePolicy, "image %s is owned by uid %d, which is not in limit_container_owners (%s)", shown, st.Uid, quotedList(cfg.limitContainerOwners))
		}
	}
	if len(cfg.limitContainerGroups) > 0 {
		ok, err := idListed(names, groupDB, cfg.limitContainerGroups, st.Gid)
		if err != nil {
			return err
		}
		if !ok {
			return failf(ePolicy, "image %s belongs to gid %d, which is not in limit_container_groups (%s)", shown, st.Gid, quotedList(cfg.limitContainerGroups))
		}
	}
	if len(cfg.limitContainerPaths) > 0 {
		return checkImagePath(image, st, shown, cfg.limitContainerPaths)
	}
	return nil
}

// checkImagePath is R14: the kernel's path of the open image must lie, by
// whole components, below one of dirs, and re-opening that remainder from
// the trusted directory without following any link must reach the very
// same inode. Reading the path back alone is not enough: the name may have
// been renamed or replaced since, or end in " (deleted)".
func checkImagePath(image *os.File, st *unix.Stat_t, shown string, dirs []string) error {
	resolved, err := os.Readlink("/proc/self/fd/" + strconv.Itoa(int(image.Fd())))
	if err != nil {
		return failf(eSystem, "read back the path of image %s: %w", shown, err)
	}
	var reasons []string
	for _, dir := range dirs {
		rel, ok := pathBeneath(dir, resolved)
		if !ok {
			continue
		}
		same, err := sameFileBeneath(dir, rel, st)
		if err != nil {
			reasons = append(reasons, err.Error())
			continue
		}
		if same {
			return nil
		}
		reasons = append(reasons, fmt.Sprintf("%s/%s is no longer this image", dir, rel))
	}
	msg := fmt.Sprintf("image %s (%s) is not inside any directory of limit_container_paths (%s)", shown, escapeText(resolved), quotedList(dirs))
	if len(reasons) > 0 {
		msg += ": " + strings.Join(reasons, "; ")
	}
	return failf(ePolicy, "%s", msg)
}

// pathBeneath reports whether p lies strictly below dir, comparing whole
// components, and returns the remainder. p is the kernel's answer and must
// already be absolute and clean (no "..", no trailing slash); anything
// else, such as "pipe:[123]", is outside every directory.
func pathBeneath(dir, p string) (rel string, ok bool) {
	if !isCleanAbsPath(p) || p == "/" || !strings.HasPrefix(dir, "/") {
		return "", false
	}
	dir = filepath.Clean(dir)
	if dir == "/" {
		return p[1:], true
	}
	// Component-wise: dir "/srv/images" must be followed by "/" in p, so
	// "/srv/images2/x" does not match.
	if !strings.HasPrefix(p, dir+"/") {
		return "", false
	}
	return p[len(dir)+1:], true
}

// sameFileBeneath opens dir by the R5 walk (every directory from / root-owned
// and not group/other-writable, no symlinks) and then rel below it without
// following any link or leaving it, and reports whether that is st's inode.
func sameFileBeneath(dir, rel string, st *unix.Stat_t) (bool, error) {
	dirfd, err := openTrustedDir(filepath.Clean(dir))
	if err != nil {
		return false, err
	}
	defer unix.Close(dirfd)
	var fd int
	for {
		fd, err = unix.Openat2(dirfd, rel, &unix.OpenHow{
			Flags:   unix.O_PATH | unix.O_CLOEXEC,
			Resolve: unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS,
		})
		if err != unix.EINTR && err != unix.EAGAIN {
			break
		}
	}
	if err != nil {
		return false, fmt.Errorf("%s/%s: cannot be reopened without links: %v", dir, rel, err)
	}
	defer unix.Close(fd)
	var got unix.Stat_t
	if err := unix.Fstat(fd, &got); err != nil {
		return false, fmt.Errorf("%s/%s: fstat: %v", dir, rel, err)
	}
	return got.Dev == st.Dev && got.Ino == st.Ino, nil
}

// openTrustedDir returns an O_PATH descriptor of the absolute clean path
// dir, walked from / with O_NOFOLLOW and checked at every step as
// readTrustedFile checks the directories above an admin file.
func openTrustedDir(dir string) (int, error) {
	if !isCleanAbsPath(dir) {
		return -1, untrusted(dir, "path is not absolute and clean")
	}
	dirfd, err := openRetry(unix.AT_FDCWD, "/", unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC)
	if err != nil {
		return -1, failf(eConfig, "/: open: %v", err)
	}
	if err := checkTrustedDir(dirfd, "/"); err != nil {
		unix.Close(dirfd)
		return -1, err
	}
	walked := ""
	for _, name := range strings.Split(strings.Trim(dir, "/"), "/") {
		if name == "" { // dir is "/"
			continue
		}
		walked += "/" + name
		fd, err := openRetry(dirfd, name, unix.O_PATH|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC)
		if err != nil {
			err = openFailure(dirfd, name, walked, dir, err)
			unix.Close(dirfd)
			return -1, err
		}
		unix.Close(dirfd)
		dirfd = fd
		if err := checkTrustedDir(dirfd, walked); err != nil {
			unix.Close(dirfd)
			return -1, err
		}
	}
	return dirfd, nil
}

// idListed reports whether id belongs to one of the listed account names.
// Each name is resolved to its id (a uid may carry several names, so the
// owner's first name would not do). A name no source knows matches nothing;
// an account file that fails its trust checks is an error.
func idListed(names *nameLookup, db accountDB, list []string, id uint32) (bool, error) {
	if names == nil {
		return false, failf(eInternal, "no account lookup for the image allow-lists")
	}
	for _, name := range list {
		got, found, err := names.accountID(db, name)
		if err != nil {
			if isClassed(err) {
				return false, err
			}
			continue // unresolved (getent failed): fail closed
		}
		if found && got == id {
			return true, nil
		}
	}
	return false, nil
}

// accountID resolves a user (passwdDB) or group (groupDB) name to its id:
// the trusted file first, then getent, as lookup does for names.
func (n *nameLookup) accountID(db accountDB, name string) (id uint32, found bool, err error) {
	if !validAccountName(name) {
		return 0, false, nil
	}
	data, err := n.file(db)
	if err != nil {
		return 0, false, err
	}
	for _, line := range strings.Split(string(data), "\n") {
		if got, id, ok := accountEntry(line, db); ok && got == name {
			return id, true, nil
		}
	}
	if n.getent == nil {
		return 0, false, nil
	}
	out, status, err := n.getent(db.database, name)
	switch {
	case err != nil:
		return 0, false, fmt.Errorf("getent %s %s: %w: %w", db.database, name, errNameUnresolved, err)
	case status == 2:
		return 0, false, nil
	case status != 0:
		return 0, false, fmt.Errorf("getent %s %s: exit status %d: %w", db.database, name, status, errNameUnresolved)
	}
	text := strings.TrimSuffix(string(out), "\n")
	if !strings.Contains(text, "\n") {
		if got, id, ok := accountEntry(text, db); ok && got == name {
			return id, true, nil
		}
	}
	return 0, false, fmt.Errorf("getent %s %s: unexpected output: %w", db.database, name, errNameUnresolved)
}
