// exec.go owns the launch, start to execve, in order. Read it top to bottom:
// each step says what it guards against. Mount work is in ns.go, devices in
// loop.go, credentials in creds.go.
package main

import (
	"io"
	"os"
	"runtime"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// caller is who ran minirun, captured once at entry from the kernel.
type caller struct {
	uid, gid int
	groups   []int
	setuid   bool // euid 0 through the setuid bit, real uid not 0
}

func (c caller) root() bool { return c.uid == 0 }

// launch runs the container for o and, on success, never returns: this
// thread execs the payload and minirun is gone.
func launch(o *options) error {
	// 1. Who is asking, from the kernel, before anything else can change it.
	who, err := currentCaller()
	if err != nil {
		return err
	}
	if unix.Geteuid() != 0 {
		return launchUnprivileged(o, who)
	}

	// No signal during setup may take the runtime's crash path.
	quietSignalsDuringSetup()

	// 2. Admin policy. The paths are compiled in; the files are trusted only
	// after checks on their descriptors (R5).
	cfg, err := loadConfig(sysconfdir)
	if err != nil {
		return err
	}
	if who.setuid && !cfg.allowSetuid {
		return launchUnprivileged(o, who)
	}
	if err := checkNamespacePolicy(o, cfg, who); err != nil {
		return err
	}
	// Names come from the trust-checked files, then getent run as root
	// without supplementary groups (capabilities.md §5.4): run as the
	// caller, the caller could ptrace it and forge a group name.
	names := newNameLookup(newGetent(&syscall.Credential{Uid: 0, Gid: 0, Groups: []uint32{}}))
	// The capability set for this run: what root keeps or what the grant
	// file lets this caller add (spec/capabilities.md). An insecure or
	// malformed grant file stops every non-root run here.
	caps, err := decideCapabilities(o, who, cfg, names)
	if err != nil {
		return err
	}
	user := lookupAccount(names, who.uid, who.gid)

	// 3. Everything the caller names is opened with the caller's filesystem
	// credentials, then used only through descriptors (R1).
	plan, err := openAsCaller(o, who, user, cfg, names)
	if err != nil {
		return err
	}

	// Where the image lies and who owns it, as the admin limits (R14).
	if err := checkImagePolicy(plan.image, &plan.imageStat, o.image, who, cfg, names); err != nil {
		return err
	}

	// 4. The image: what it is, and whether policy lets this caller run it.
	rootfs, err := inspectImage(plan.image, o.image, who, cfg)
	if err != nil {
		return err
	}
	verbose := o.verbose || o.debug
	verbosef(verbose, "image %s: %s, root filesystem at offset %d, %d bytes", o.image, rootfs.format, rootfs.offset, rootfs.size)
	for _, b := range plan.binds {
		verbosef(verbose, "bind %s to %s (writable %v)", b.src, b.dst, b.writable)
	}
	// An encrypted image is unlocked now, before any device or lock exists:
	// the passphrase prompt waits here and every KDF runs here, within the
	// admin's caps (R10). Only the volume key is kept, in locked memory.
	plan.chooseBackend(rootfs, who, cfg)
	secret, err := unlockRootfs(plan.image, o.image, rootfs, keyRequest{pemPath: o.pemPath, prompt: o.passphrase,
		env: plan.callerEnv, memory: plan.memoryBackendLimits(rootfs, who, cfg)}, who, cfg, o.quiet)
	if err != nil {
		return err
	}

	// 5. Detached copies of every host directory that will be bound in,
	// made now in the host namespace (the kernel refuses to bind across
	// namespaces later) with nosuid/nodev/ro already set (R2).
	if err := plan.cloneTrees(rootfs); err != nil {
		return err
	}

	// 6. Devices: a read-only autoclear loop device; it disappears with the
	// last mount even if we are killed right after this (R12). The state
	// directory holds the loop lock and the mount points.
	if err := ensureStateDirs(); err != nil {
		return err
	}
	if rootfs.format != "dir" {
		if err := plan.attachImage(rootfs, secret, who, cfg); err != nil {
			return err
		}
		verbosef(verbose, "loop device %s attached read-only, autoclear", plan.loop.Name())
	}

	// 7. The container, on this one locked thread, which also calls execve:
	// namespaces and mounts are per thread until then (security.md §3).
	runtime.LockOSThread()
	if o.pid {
		return launchWithInit(o, who, user, cfg, plan, rootfs, caps.Set, caps.NoNewPrivs)
	}
	if err := buildContainer(o, who, user, cfg, plan, rootfs); err != nil {
		return err
	}

	// 8. Identity: the caller's ids and groups, exactly the computed
	// capabilities in all five sets, no_new_privs for non-root, TIOCSTI
	// blocked; everything read back before anything runs (R13).
	if err := dropToCaller(who, caps.Set, caps.NoNewPrivs); err != nil {
		return err
	}

	// 9. The payload, from this thread. Nothing of minirun remains.
	return execPayload(o, who, user, plan)
}

func currentCaller() (caller, error) {
	ruid, euid, _ := unix.Getresuid()
	rgid, _, _ := unix.Getresgid()
	groups, err := unix.Getgroups()
	if err != nil {
		return caller{}, failf(eSystem, "read supplementary groups: %w", err)
	}
	return caller{uid: ruid, gid: rgid, groups: groups, setuid: euid == 0 && ruid != 0}, nil
}

// execPayload enters the working directory and replaces this process with
// the command. It runs as the caller, after the drop.
func execPayload(o *options, who caller, user account, plan *launchPlan) error {
	env := payloadEnv(plan.callerEnv, user, o.cleanEnv, o.env)
	argv := payloadArgv(o)
	path, err := lookPathInside(argv[0], env)
	if err != nil {
		return err
	}
	if err := enterWorkdir(o, user, plan.cwd); err != nil {
		return err
	}

	// The caller's limits and umask come back; descriptors they passed in
	// beyond 0-2 do not cross into the container (R8).
	restoreCallerLimits(callerLimits, callerUmask)
	restoreSignals()
	unix.CloseRange(3, ^uint(0), unix.CLOSE_RANGE_CLOEXEC)
	err = syscall.Exec(path, argv, env)
	return failf(eUsage, "execute %s in the container: %w", escapeText(argv[0]), err)
}

// payloadArgv is the command line the container runs.
func payloadArgv(o *options) []string {
	switch o.command {
	case "run":
		if _, err := os.Stat(runscriptPath); err == nil {
			return append([]string{runscriptPath}, o.args...)
		}
		return append([]string{"/bin/sh"}, o.args...)
	case "shell":
		return append([]string{"/bin/sh"}, o.args...)
	}
	return o.args
}

const runscriptPath = "/.singularity.d/runscript"

// decideCapabilities computes the container's capability set and prints
// the policy's warnings.
func decideCapabilities(o *options, who caller, cfg config, names *nameLookup) (capDecision, error) {
	last, err := lastCap()
	if err != nil {
		return capDecision{}, err
	}
	host, err := hostAvailable(last)
	if err != nil {
		return capDecision{}, err
	}
	if err := requireLaunchCaps(host); err != nil {
		return capDecision{}, err
	}
	c := capCaller{UID: who.uid, GID: who.gid, Groups: who.groups}
	d, err := decideCaps(capPolicyInput{
		Caller: c,
		Config: &cfg,
		Flags:  capFlags{AddCaps: o.addCaps, DropCaps: o.dropCaps, KeepPrivs: o.keepPrivs, NoPrivs: o.noPrivs},
		Last:   last,
		Host:   host,
		Grants: callerGrantsFunc(c, grantFilePath(sysconfdir), readTrustedFile, names),
	})
	if !o.quiet || err != nil {
		for _, w := range d.Warnings {
			warnf("%s", w)
		}
	}
	if err == nil && (o.verbose || o.debug) { // naming every capability is not free
		verbosef(true, "capabilities %s (%s), no_new_privs %v", d.Set.hex(), d.Set.String(), d.NoNewPrivs)
	}
	return d, err
}

// checkNamespacePolicy refuses namespaces the admin does not allow.
func checkNamespacePolicy(o *options, cfg config, who caller) error {
	if who.root() {
		return nil
	}
	for _, ns := range []struct {
		name string
		on   bool
	}{{"pid", o.pid}, {"ipc", o.ipc}, {"uts", o.uts}, {"net", o.net}} {
		if ns.on && !containsString(cfg.allowNamespaces, ns.name) {
			return failf(ePolicy, "--%s: the administrator does not allow new %s namespaces", ns.name, ns.name)
		}
	}
	return nil
}

// inspectImage says what the opened image is and whether this caller may
// run that kind; parsing is bounded and happens before any device exists.
func inspectImage(f *os.File, name string, who caller, cfg config) (imageRootfs, error) {
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		return imageRootfs{}, failf(eSystem, "stat image %s: %w", escapeText(name), err)
	}
	var rootfs imageRootfs
	kind := "dir"
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFDIR:
		var host unix.Stat_t
		if unix.Stat("/", &host) == nil && host.Dev == st.Dev && host.Ino == st.Ino {
			return imageRootfs{}, failf(eImage, "image %s is the host's root directory", escapeText(name))
		}
		rootfs.format = "dir"
	case unix.S_IFREG:
		var err error
		if rootfs, err = locateRootfs(f, st.Size, name); err != nil {
			return imageRootfs{}, err
		}
		kind = rootfs.format
		if rootfs.kind == rootfsEncrypted {
			kind = "encrypted"
		}
	default:
		return imageRootfs{}, failf(eImage, "image %s is not a regular file or a directory", escapeText(name))
	}
	if !who.root() && !containsString(cfg.allowContainer, kind) {
		return imageRootfs{}, failf(ePolicy, "image %s: the administrator does not allow %s images (allow_container)", escapeText(name), kind)
	}
	return rootfs, nil
}

// callerWritable says whether the caller can change the image while it is
// mounted (root is trusted with its own files).
func (p *launchPlan) callerWritable(who caller) bool {
	return p.imageWritable && !who.root()
}

// usesSealedCopy says whether the image must be used through a sealed copy: the
// caller can change it, and the admin chose user_writable_images =
// "sealed-copy".
func (p *launchPlan) usesSealedCopy(who caller, cfg config) bool {
	return p.callerWritable(who) && cfg.userWritableImages == "sealed-copy"
}

// chooseBackend decides, once, which backend an encrypted image's
// plaintext gets (spec §4.2): the unlock reads ahead for the memory
// backend, and attachImage uses the same answer.
func (p *launchPlan) chooseBackend(rootfs imageRootfs, who caller, cfg config) {
	if rootfs.kind == rootfsEncrypted {
		p.backend, p.backendErr = chooseEncryptedBackend(cfg.encryptedBackend, p.usesSealedCopy(who, cfg), dmcryptAvailable)
	}
}

// memoryBackendLimits returns the memory backend's limits when an encrypted
// image's plaintext will go there, else nil.
func (p *launchPlan) memoryBackendLimits(rootfs imageRootfs, who caller, cfg config) *memoryLimits {
	if rootfs.kind != rootfsEncrypted || p.callerWritable(who) && cfg.userWritableImages == "refuse" ||
		p.backendErr != nil || p.backend != backendMemory {
		return nil
	}
	return &memoryLimits{uid: who.uid, maxMiB: cfg.memoryBackendMaxMiB, loops: loopLimitsFor(who, cfg)}
}

// attachImage gives the image's squashfs a loop device. An image the caller
// can change while it is mounted is handled as the admin chose in
// user_writable_images (security.md R11): run it, refuse it, or mount a
// sealed in-memory copy whose bytes cannot change underneath the kernel.
// An encrypted image's plaintext gets a device of its own through
// crypt.go's backends (dm-crypt, or a sealed memfd), never a shared one:
// every launch proves its own key (spec §5).
func (p *launchPlan) attachImage(rootfs imageRootfs, secret *unlockedImage, who caller, cfg config) (err error) {
	backing, offset := p.image, rootfs.offset
	if p.callerWritable(who) && cfg.userWritableImages == "refuse" {
		return failf(ePolicy, "image %s can be modified by you; the administrator does not allow such images (user_writable_images = \"refuse\")", p.image.Name())
	}
	if rootfs.kind == rootfsEncrypted {
		if p.backendErr != nil {
			secret.wipe()
			return p.backendErr
		}
		p.loop, err = attachEncrypted(p.image, rootfs, secret, who.uid, p.backend, cfg.memoryBackendMaxMiB, loopLimitsFor(who, cfg))
		return err
	}
	if p.usesSealedCopy(who, cfg) {
		if backing, err = sealedCopy(p.image, rootfs.offset, rootfs.size, cfg.sealedCopyMaxMiB); err != nil {
			return err
		}
		defer backing.Close() // the loop device holds its own reference
		offset = 0
	}
	if backing == p.image && cfg.sharedLoopDevices {
		p.loop, err = attachSharedLoop(backing, offset, rootfs.size, who.uid, loopLimitsFor(who, cfg))
		return err
	}
	p.loop, err = attachLoopWithin(backing, offset, rootfs.size, who.uid, loopLimitsFor(who, cfg))
	return err
}

// sealedCopy copies the partition into a memfd sealed against any change.
func sealedCopy(image *os.File, offset, size, maxMiB int64) (*os.File, error) {
	if size > maxMiB<<20 {
		return nil, failf(ePolicy, "image %s: partition of %d MiB is larger than sealed_copy_max_mib (%d)", image.Name(), size>>20, maxMiB)
	}
	fd, err := unix.MemfdCreate("minirun-sealed", unix.MFD_CLOEXEC|unix.MFD_ALLOW_SEALING)
	if err != nil {
		return nil, failf(eSystem, "create sealed copy: %w", err)
	}
	mem := os.NewFile(uintptr(fd), "sealed copy of "+image.Name())
	n, err := io.Copy(mem, io.NewSectionReader(image, offset, size))
	if err == nil && n != size {
		err = io.ErrUnexpectedEOF
	}
	if err == nil {
		_, err = unix.FcntlInt(mem.Fd(), unix.F_ADD_SEALS, unix.F_SEAL_SHRINK|unix.F_SEAL_GROW|unix.F_SEAL_WRITE|unix.F_SEAL_SEAL)
	}
	if err != nil {
		mem.Close()
		return nil, failf(eSystem, "copy %s into sealed memory: %w", image.Name(), err)
	}
	return mem, nil
}

// lookPathInside finds the command in the payload's PATH, inside the
// container, as the caller.
func lookPathInside(name string, env []string) (string, error) {
	if strings.Contains(name, "/") {
		return name, nil
	}
	pathList, _ := lookEnv(env, "PATH")
	for _, dir := range strings.Split(pathList, ":") {
		if dir == "" {
			dir = "."
		}
		candidate := dir + "/" + name
		var st unix.Stat_t
		if unix.Stat(candidate, &st) == nil && st.Mode&unix.S_IFMT == unix.S_IFREG && unix.Access(candidate, unix.X_OK) == nil {
			return candidate, nil
		}
	}
	return "", failf(eUsage, "%s: command not found in the container", escapeText(name))
}

// enterWorkdir changes to --pwd, else the caller's directory, else home,
// else /. Paths are resolved inside the container's root only, and magic
// links are refused, so no host directory can become the cwd (R8).
func enterWorkdir(o *options, user account, cwd string) error {
	try := func(p string) error {
		fd, err := unix.Openat2(unix.AT_FDCWD, p, &unix.OpenHow{
			Flags:   unix.O_PATH | unix.O_DIRECTORY | unix.O_CLOEXEC,
			Resolve: unix.RESOLVE_IN_ROOT | unix.RESOLVE_NO_MAGICLINKS,
		})
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		return unix.Fchdir(fd)
	}
	if o.pwd != "" {
		if err := try(o.pwd); err != nil {
			return failf(eUsage, "--pwd %s: cannot enter it in the container: %w", escapeText(o.pwd), err)
		}
		return nil
	}
	for _, p := range []string{cwd, user.home, "/"} {
		if p != "" && try(p) == nil {
			return nil
		}
	}
	return nil
}

// restoreCallerLimits gives the payload the caller's umask and the limits
// minirun changed; RLIMIT_NOFILE is restored by syscall.Exec itself.
func restoreCallerLimits(limits []savedLimit, umask int) {
	for _, l := range limits {
		unix.Setrlimit(l.Resource, &l.Limit)
	}
	unix.Umask(umask)
}
