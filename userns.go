// userns.go owns the unprivileged mode: without the setuid install (or
// with allow_setuid = false) a caller runs directory images inside a user
// namespace of their own, where they hold capabilities over nothing but
// that namespace. SIF and squashfs need the kernel to mount an image,
// which only the setuid install may do (security.md §3.5).
package main

import (
	"os"
	"os/exec"
	"os/signal"
	"runtime"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// usernsRole is argv[0] of the child that runs inside the namespace. It
// grants nothing: the role is taken only when the process has no more
// privilege than its real uid and really is in a user namespace.
const usernsRole = "minirun-userns"

func launchUnprivileged(o *options, who caller) error {
	if unix.Geteuid() == 0 && who.uid != 0 {
		// allow_setuid = false: give up root on every thread before anything.
		if err := syscall.Setresgid(who.gid, who.gid, who.gid); err != nil {
			return failf(eSystem, "drop gid: %w", err)
		}
		if err := syscall.Setresuid(who.uid, who.uid, who.uid); err != nil {
			return failf(eSystem, "drop uid: %w", err)
		}
	}
	if len(o.addCaps) > 0 || o.keepPrivs {
		warnf("capabilities need the setuid install of minirun; running without any")
	}
	// Nothing privileged is left in this process, and the kernel lets us
	// write the child's uid_map only while we are dumpable.
	unix.Prctl(unix.PR_SET_DUMPABLE, 1, 0, 0, 0)
	f, err := openImage(o.image)
	if err != nil {
		return err
	}
	var st unix.Stat_t
	err = unix.Fstat(int(f.Fd()), &st)
	f.Close()
	if err != nil {
		return failf(eSystem, "stat image %s: %w", escapeText(o.image), err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFDIR {
		return failf(ePolicy, "image %s is a file: running SIF or squashfs images needs minirun installed setuid-root; without it only directory images run", escapeText(o.image))
	}

	// no_new_privs on the forking thread: the re-executed binary must not
	// regain root through its own setuid bit.
	runtime.LockOSThread()
	if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
		return failf(eSystem, "set no_new_privs: %w", err)
	}
	last, err := lastCap()
	if err != nil {
		return err
	}
	var ambient []uintptr
	for c := 0; c <= last; c++ {
		ambient = append(ambient, uintptr(c))
	}
	flags := uintptr(unix.CLONE_NEWUSER | unix.CLONE_NEWNS)
	if o.pid {
		flags |= unix.CLONE_NEWPID
	}
	cmd := &exec.Cmd{
		Path:   "/proc/self/exe",
		Args:   append([]string{usernsRole}, os.Args[1:]...),
		Env:    syscall.Environ(),
		Stdin:  os.Stdin,
		Stdout: os.Stdout,
		Stderr: os.Stderr,
		SysProcAttr: &syscall.SysProcAttr{
			Cloneflags:                 flags,
			UidMappings:                []syscall.SysProcIDMap{{ContainerID: who.uid, HostID: who.uid, Size: 1}},
			GidMappings:                []syscall.SysProcIDMap{{ContainerID: who.gid, HostID: who.gid, Size: 1}},
			GidMappingsEnableSetgroups: false,
			AmbientCaps:                ambient,
			Pdeathsig:                  syscall.SIGKILL,
		},
	}
	if err := cmd.Start(); err != nil {
		return failf(eSystem, "create a user namespace (are unprivileged user namespaces enabled?): %w", err)
	}
	sigs := make(chan os.Signal, 8)
	signal.Notify(sigs, forwardedSignals...)
	go func() {
		for s := range sigs {
			cmd.Process.Signal(s)
		}
	}()
	err = cmd.Wait()
	os.Exit(exitStatus(cmd.ProcessState, err))
	return nil
}

// isUsernsRole: argv[0] names the role, the process holds nothing beyond
// its real ids, and it is inside a user namespace that is not the host's.
func isUsernsRole() bool {
	if len(os.Args) < 1 || os.Args[0] != usernsRole || unix.Geteuid() != unix.Getuid() {
		return false
	}
	m, err := readProcFile("/proc/self/uid_map", 64<<10)
	return err == nil && strings.Join(strings.Fields(string(m)), " ") != "0 0 4294967295"
}

// runUsernsChild builds the container inside the user namespace, as the
// setuid path does but with the caller's own rights, then execs the payload.
func runUsernsChild() {
	o, err := parseLaunch(os.Args[1], os.Args[2:])
	if err != nil {
		fatal(err, false)
	}
	if err := launchInUserNS(o); err != nil {
		fatal(err, o.debug)
	}
}

func launchInUserNS(o *options) error {
	inUserNS = true
	runtime.LockOSThread()
	who, err := currentCaller()
	if err != nil {
		return err
	}
	who.groups = nil
	cfg := defaultConfig()
	names := newNameLookup(newGetent(nil)) // nothing here is privileged
	user := lookupAccount(names, who.uid, who.gid)
	plan, err := openAsCaller(o, who, user, cfg, names)
	if err != nil {
		return err
	}
	rootfs := imageRootfs{format: "dir"}
	if err := plan.cloneTrees(rootfs); err != nil {
		return err
	}
	// A private staging area: a tmpfs over /run, in this namespace only.
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_SLAVE, ""); err != nil {
		return failf(eSystem, "make mounts private: %w", err)
	}
	if err := unix.Mount("tmpfs", "/run", "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, "mode=0755,size=1m"); err != nil {
		return failf(eSystem, "mount staging tmpfs: %w", err)
	}
	stageDir, sessionDir = "/run/root", "/run/session"
	for _, d := range []string{stageDir, sessionDir} {
		if err := unix.Mkdir(d, 0700); err != nil {
			return failf(eSystem, "create %s: %w", d, err)
		}
	}
	if err := buildContainer(o, who, user, cfg, plan, rootfs); err != nil {
		return err
	}
	if err := dropUserNS(who); err != nil {
		return err
	}
	return execPayload(o, who, user, plan)
}
