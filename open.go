// open.go owns step 3 of the launch: every path the caller names (image,
// bind sources, home, working directory) is opened on a throwaway thread
// whose filesystem uid is the caller's, so minirun can never open for them
// what they could not open themselves (security.md R1).
package main

import (
	"errors"
	"os"
	"path"
	"runtime"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// launchPlan holds what the launch has opened and decided, as descriptors.
type launchPlan struct {
	image         *os.File
	imageStat     unix.Stat_t
	imageWritable bool // the caller owns or can write the image (R11)
	loop          *os.File
	rootTree      int // detached copy of a directory image

	// An encrypted image's backend, chosen once (chooseBackend).
	backend    string
	backendErr error

	binds      []hostBind     // in mount order: /tmp, /var/tmp, home, cwd, user binds
	groupLines map[int]string // /etc/group lines for the caller's gids
	cwd        string         // the caller's working directory (host path)

	callerEnv []string
}

// hostBind is a host path to appear at dst in the container.
type hostBind struct {
	src      string // for messages
	dst      string
	fd       int  // O_PATH descriptor opened as the caller
	dir      bool // source is a directory
	writable bool
	optional bool // a default bind: skipped with a note when it cannot be made
	tree     int  // detached clone, made by cloneTrees
}

// openAsCaller opens the image and every bind source with the caller's
// filesystem credentials and records the caller's limits and environment.
func openAsCaller(o *options, who caller, user account, cfg config, names *nameLookup) (*launchPlan, error) {
	plan := &launchPlan{callerEnv: syscall.Environ()}
	if !who.root() { // root runs with the image's own account files (prepareContainer)
		plan.groupLines = groupLines(names, who, user)
	}

	cwd, err := unix.Getwd() // the kernel's answer, not $PWD
	if err == nil {
		plan.cwd = cwd
	}

	var wants []hostBind
	if !o.contain && cfg.mountTmp {
		wants = append(wants,
			hostBind{src: "/tmp", dst: "/tmp", writable: true, optional: true},
			hostBind{src: "/var/tmp", dst: "/var/tmp", writable: true, optional: true})
	}
	if !o.noHome && cfg.mountHome && user.home != "/" && user.home != "" {
		wants = append(wants, hostBind{src: user.home, dst: user.home, writable: true, optional: true})
	}
	if !o.contain && cfg.mountCwd && plan.cwd != "" && !coveredBy(plan.cwd, wants) && !systemPath(plan.cwd) {
		wants = append(wants, hostBind{src: plan.cwd, dst: plan.cwd, writable: true, optional: true})
	}
	for _, b := range cfg.bindPath {
		spec, err := parseBindSpec(b)
		if err != nil {
			return nil, failf(eConfig, "bind_path in %s/minirun/minirun.toml: %v", sysconfdir, err)
		}
		wants = append(wants, hostBind{src: spec.src, dst: spec.dst, writable: spec.writable, optional: true})
	}
	for _, b := range o.binds {
		wants = append(wants, hostBind{src: b.src, dst: b.dst, writable: b.writable})
	}

	err = asCaller(who, func() error {
		f, err := openImage(o.image)
		if err != nil {
			return err
		}
		plan.image = f
		// Asked on this thread, so the answer is the caller's.
		plan.imageWritable = unix.Faccessat2(int(f.Fd()), "", unix.W_OK, unix.AT_EMPTY_PATH|unix.AT_EACCESS) == nil
		for _, w := range wants {
			fd, dir, err := openBindSource(w.src)
			if err != nil {
				if w.optional {
					if o.verbose || o.debug {
						warnf("skipping bind of %s: %v", w.src, err)
					}
					continue
				}
				return err
			}
			w.fd, w.dir = fd, dir
			plan.binds = append(plan.binds, w)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if err := unix.Fstat(int(plan.image.Fd()), &plan.imageStat); err != nil {
		return nil, failf(eSystem, "stat %s: %w", o.image, err)
	}
	plan.imageWritable = plan.imageWritable || int(plan.imageStat.Uid) == who.uid
	return plan, nil
}

// asCaller runs fn with the caller's fsuid. Groups and fsgid already are the
// caller's in a setuid process, and a root caller's fsuid already is its own.
// fsuid is per thread: the goroutine is locked to its thread from here on
// (the launch locks it for the container at step 7 anyway), and the runtime
// never clones a new thread from a locked one (its template thread does
// that), so no other thread can inherit the caller's fsuid.
func asCaller(who caller, fn func() error) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = failf(eInternal, "internal error while opening files as the caller: %v", r)
		}
	}()
	if who.uid == 0 {
		return fn()
	}
	runtime.LockOSThread()
	own := unix.Geteuid() // 0 in a setuid launch; the caller in the unprivileged mode
	defer func() {
		unix.SetfsuidRetUid(own)
		if got, _ := unix.SetfsuidRetUid(own); got != own {
			// Nothing privileged may run on this thread again.
			fatal(failf(eInternal, "could not take back the filesystem uid after opening files as the caller"), false)
		}
		// Changing fsuid resets the process-wide dumpable flag (R6).
		unix.Prctl(unix.PR_SET_DUMPABLE, 0, 0, 0, 0)
	}()
	unix.SetfsuidRetUid(who.uid)
	if got, _ := unix.SetfsuidRetUid(who.uid); got != who.uid {
		return failf(eInternal, "could not take the caller's filesystem uid")
	}
	return fn()
}

// openImage opens IMAGE for reading. Magic links (/proc/self/fd/N) are
// refused: they could name one of our own root-opened descriptors.
func openImage(name string) (*os.File, error) {
	fd, err := unix.Openat2(unix.AT_FDCWD, name, &unix.OpenHow{
		Flags:   unix.O_RDONLY | unix.O_CLOEXEC | unix.O_NOCTTY | unix.O_NONBLOCK,
		Resolve: unix.RESOLVE_NO_MAGICLINKS,
	})
	if err != nil {
		return nil, openError("image", name, err)
	}
	return fileFromFD(fd, name), nil
}

// openBindSource opens SRC as an O_PATH descriptor: a directory or a file.
func openBindSource(name string) (fd int, dir bool, err error) {
	fd, err = unix.Openat2(unix.AT_FDCWD, name, &unix.OpenHow{
		Flags:   unix.O_PATH | unix.O_CLOEXEC,
		Resolve: unix.RESOLVE_NO_MAGICLINKS,
	})
	if err != nil {
		return -1, false, openError("bind source", name, err)
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		unix.Close(fd)
		return -1, false, failf(eSystem, "stat bind source %s: %w", escapeText(name), err)
	}
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFDIR:
		dir = true
	case unix.S_IFREG:
	default:
		unix.Close(fd)
		return -1, false, failf(eUsage, "bind source %s is neither a directory nor a regular file", escapeText(name))
	}
	// O_PATH needs only search permission on the parents; a bind must also be
	// readable by the caller, as bubblewrap's "cannot read $UNREADABLE" test asks.
	if err := unix.Faccessat2(fd, "", unix.R_OK, unix.AT_EMPTY_PATH); err != nil {
		unix.Close(fd)
		return -1, false, openError("bind source", name, err)
	}
	return fd, dir, nil
}

func openError(what, name string, err error) error {
	switch {
	case errors.Is(err, unix.ENOENT), errors.Is(err, unix.ENOTDIR):
		return failf(eUsage, "%s %s does not exist", what, escapeText(name))
	case errors.Is(err, unix.EACCES), errors.Is(err, unix.EPERM):
		return failf(ePerm, "%s %s: permission denied", what, escapeText(name))
	case errors.Is(err, unix.ENXIO), errors.Is(err, unix.ENODEV):
		// a device without a driver behind it, a tty we have no claim to, a socket
		return failf(eImage, "%s %s is not a regular file or a directory", what, escapeText(name))
	case errors.Is(err, unix.ELOOP), errors.Is(err, unix.EXDEV):
		return failf(eUsage, "%s %s: /proc magic links are not accepted", what, escapeText(name))
	}
	return failf(eSystem, "open %s %s: %w", what, escapeText(name), err)
}

// coveredBy reports whether p lies inside a destination already bound.
func coveredBy(p string, binds []hostBind) bool {
	for _, b := range binds {
		if p == b.dst || strings.HasPrefix(p, strings.TrimSuffix(b.dst, "/")+"/") {
			return true
		}
	}
	return false
}

// systemPath is a working directory not worth binding: the root or
// something the container provides itself.
func systemPath(p string) bool {
	p = path.Clean(p)
	for _, sys := range []string{"/", "/proc", "/sys", "/dev", "/usr", "/bin", "/sbin", "/lib", "/lib64", "/etc", "/boot", "/run"} {
		if p == sys || (sys != "/" && strings.HasPrefix(p, sys+"/")) {
			return true
		}
	}
	return false
}
