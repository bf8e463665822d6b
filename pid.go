// pid.go owns --pid: a new PID namespace whose PID 1 is a small minirun
// init. A new procfs must be mounted from inside the namespace, so the
// init starts privileged, mounts /proc, pivots, drops on all of its
// threads, then runs the payload, reaps every child and forwards signals
// (security.md §3.4). Once the payload runs, the init and P0 waiting for
// it become the reaper program (reaper.go) instead of two Go runtimes.
package main

import (
	"encoding/json"
	"io"
	"os"
	"os/signal"
	"runtime"
	"strconv"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// initPlan is what P0 tells the init, over a pipe only the two share.
type initPlan struct {
	UID, GID int
	Groups   []int
	Caps     uint64
	NNP      bool
	Argv     []string
	Env      []string
	Pwd      string
	Cwd      string
	Home     string
	Umask    int
	Limits   []savedLimit
	Proc     string // host /proc options to carry (hidepid=, subset=)
}

const (
	initTokenFD = 4 // O_RDONLY directory fd of /run/minirun: only root can open one
	initPlanFD  = 5
	maxPlanSize = 8 << 20
)

var forwardedSignals = []os.Signal{syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP, syscall.SIGQUIT,
	syscall.SIGUSR1, syscall.SIGUSR2, syscall.SIGWINCH}

// launchWithInit builds the container except /proc and the pivot, starts
// the init inside the new PID namespace and becomes a plain waiting parent.
func launchWithInit(o *options, who caller, user account, cfg config, plan *launchPlan, rootfs imageRootfs, set capSet, nnp bool) error {
	// After the drop both P0 and the init are the caller's processes; the
	// Go runtime dies if it cannot start a thread, so refuse up front.
	var nproc unix.Rlimit
	if !who.root() && unix.Getrlimit(unix.RLIMIT_NPROC, &nproc) == nil && nproc.Cur < 64 {
		return failf(eResource, "--pid: RLIMIT_NPROC %d is too small for the init (64 at least)", nproc.Cur)
	}
	self, err := openFile("/proc/self/exe", unix.O_PATH, 0)
	if err != nil {
		return failf(eSystem, "open /proc/self/exe: %w", err)
	}
	if err := prepareContainer(o, who, user, cfg, plan, rootfs); err != nil {
		return err
	}
	token, err := openFile(stateDir, os.O_RDONLY|unix.O_DIRECTORY, 0)
	if err != nil {
		return failf(eSystem, "open %s: %w", stateDir, err)
	}
	// A plain blocking pipe: os.Pipe would start the netpoller here and,
	// through the inherited O_NONBLOCK, in the init too (see openFile).
	var planFDs [2]int
	if err := unix.Pipe2(planFDs[:], unix.O_CLOEXEC); err != nil {
		return failf(eSystem, "pipe: %w", err)
	}
	planRead, planWrite := os.NewFile(uintptr(planFDs[0]), "|0"), os.NewFile(uintptr(planFDs[1]), "|1")
	p := initPlan{UID: who.uid, GID: who.gid, Groups: who.groups, Caps: uint64(set), NNP: nnp,
		Argv: payloadArgv(o), Env: payloadEnv(plan.callerEnv, user, o.cleanEnv, o.env),
		Pwd: o.pwd, Cwd: plan.cwd, Home: user.home, Umask: callerUmask, Limits: callerLimits,
		Proc: hostProcOptions()}

	// Started from this locked thread, so the child is in its namespaces.
	// syscall.ForkExec, not os/exec: os/exec first forks a throwaway child
	// to probe pidfd support, and that child would become PID 1 of the new
	// namespace and, by exiting, end it.
	pid, err := syscall.ForkExec("/proc/self/fd/3", []string{"minirun-init"}, &syscall.ProcAttr{
		Dir:   stageDir,
		Env:   []string{},
		Files: []uintptr{0, 1, 2, self.Fd(), token.Fd(), planRead.Fd()},
		Sys:   &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL},
	})
	if err != nil {
		return failf(eSystem, "start the PID namespace init: %w", err)
	}
	initProc, _ := os.FindProcess(pid)
	planRead.Close()
	token.Close()
	self.Close()
	if plan.loop != nil {
		plan.loop.Close() // the mount holds the device now
	}
	if err := json.NewEncoder(planWrite).Encode(&p); err != nil {
		initProc.Kill()
		return failf(eSystem, "send the plan to the init: %w", err)
	}
	// planWrite stays open for as long as we live: the init takes its
	// hang-up as proof that we died (see parentAlive).
	defer runtime.KeepAlive(planWrite)

	// Nothing privileged is left to do here: become the caller on every
	// thread (this thread changed only namespaces, so all threads agree).
	if err := becomeCaller(who.uid, who.gid, who.groups, true); err != nil {
		return err
	}

	// Still on this locked thread, the one that started the init: the
	// init's parent-death signal belongs to it, and it survives execveat.
	signal.Reset()
	status := startForwarding().waitFor(pid, waitStatus, planFDs[1])
	runtime.KeepAlive(planWrite)
	os.Exit(status)
	return nil
}

// waitStatus waits for pid and returns the status a shell would show: the
// exit code, or 128+N for signal N.
func waitStatus(pid int) int {
	for {
		var ws unix.WaitStatus
		_, err := unix.Wait4(pid, &ws, 0, nil)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return 255
		}
		if ws.Signaled() {
			return 128 + int(ws.Signal())
		}
		return ws.ExitStatus()
	}
}

// exitStatus is the status a shell would show: the code, or 128+signal.
func exitStatus(ps *os.ProcessState, err error) int {
	if ps == nil {
		return 255
	}
	if ws, ok := ps.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return 128 + int(ws.Signal())
	}
	return ps.ExitCode()
}

// isInitRole decides the init role from proof no user can forge: PID 1 of
// a namespace, holding an O_RDONLY descriptor of the root-only state
// directory. Never from an argument.
func isInitRole() bool {
	if os.Getpid() != 1 || unix.Geteuid() != 0 {
		return false
	}
	flags, err := unix.FcntlInt(initTokenFD, unix.F_GETFL, 0)
	if err != nil || flags&unix.O_ACCMODE != unix.O_RDONLY || flags&unix.O_PATH != 0 {
		return false
	}
	var got, want unix.Stat_t
	if unix.Fstat(initTokenFD, &got) != nil || unix.Stat(stateDir, &want) != nil {
		return false
	}
	return got.Dev == want.Dev && got.Ino == want.Ino && got.Uid == 0 && got.Mode&07777 == 0700 &&
		got.Mode&unix.S_IFMT == unix.S_IFDIR
}

// runInit is PID 1 of the container. It never returns.
func runInit() {
	// The parent-death signal belongs to a thread, and only the thread that
	// execs keeps it through the handover to the reaper: arm it, re-arm it
	// and execveat (startForwarding, waitFor) all on this one thread.
	// Unlocked, the goroutine could re-arm on one thread and exec from
	// another, and the reaper would outlive P0 with the container.
	runtime.LockOSThread()
	// The setuid execve cleared the parent-death signal P0 asked for, and
	// getppid() is 0 for a PID 1: arm it again, then make sure P0 did not
	// die before it was armed.
	unix.Prctl(unix.PR_SET_PDEATHSIG, uintptr(unix.SIGKILL), 0, 0, 0)
	// Started through /proc/self/fd/3, the kernel named us "3" in ps and
	// /proc/1/comm; say what we are.
	name := []byte("minirun-init\x00")
	unix.Prctl(unix.PR_SET_NAME, uintptr(unsafe.Pointer(&name[0])), 0, 0, 0)
	unix.Close(initTokenFD)
	unix.Close(3)
	var p initPlan
	planFile := os.NewFile(initPlanFD, "plan")
	if err := json.NewDecoder(io.LimitReader(planFile, maxPlanSize)).Decode(&p); err != nil {
		os.Exit(255) // P0 died before sending the plan: nothing to report to
	}
	who := caller{uid: p.UID, gid: p.GID, groups: p.Groups}

	// Our cwd is the staged root; /proc is mounted from inside the namespace.
	if err := mountInitProc(p.Proc); err != nil {
		fatal(err, false)
	}
	if err := pivotInto("."); err != nil {
		fatal(err, false)
	}
	// A fresh process: every thread has identical credentials, so the
	// all-threads mechanism can drop them everywhere at once.
	if err := applyCredentials(syscall.AllThreadsSyscall6, who, capSet(p.Caps), p.NNP); err != nil {
		fatal(err, false)
	}
	if err := verifyAllThreads(who, capSet(p.Caps), p.NNP); err != nil {
		fatal(err, false)
	}
	// The drop cleared the parent-death signal: P0's death must still end us.
	unix.Prctl(unix.PR_SET_PDEATHSIG, uintptr(unix.SIGKILL), 0, 0, 0)
	if !parentAlive(initPlanFD) {
		os.Exit(255)
	}
	planFile.Close()

	o := &options{pwd: p.Pwd}
	if err := enterWorkdir(o, account{home: p.Home}, p.Cwd); err != nil {
		fatal(err, false)
	}
	path, err := lookPathInside(p.Argv[0], p.Env)
	if err != nil {
		fatal(err, false)
	}
	restoreCallerLimits(p.Limits, p.Umask)
	unix.CloseRange(3, ^uint(0), unix.CLOSE_RANGE_CLOEXEC)

	fwd := startForwarding()
	payload, err := fwd.startChild(func() (int, error) {
		p, err := os.StartProcess(path, p.Argv, &os.ProcAttr{Env: p.Env, Files: []*os.File{os.Stdin, os.Stdout, os.Stderr}})
		if err != nil {
			return 0, err
		}
		return p.Pid, nil
	})
	if err != nil {
		fatal(failf(eUsage, "execute %s in the container: %w", escapeText(p.Argv[0]), err), false)
	}
	os.Exit(fwd.waitFor(payload, reapUntil))
}

// parentAlive reports whether P0 still holds the write end of the plan
// pipe: the kernel signals a hang-up on the read end once it is gone.
func parentAlive(fd int) bool {
	fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
	n, err := unix.Poll(fds, 0)
	return err == nil && (n == 0 || fds[0].Revents&(unix.POLLHUP|unix.POLLERR) == 0)
}

// reapUntil reaps every child (orphans are re-parented to us) and returns
// the payload's status once it is gone.
func reapUntil(pid int) int {
	for {
		var ws unix.WaitStatus
		got, err := unix.Wait4(-1, &ws, 0, nil)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return 255
		}
		if got == pid {
			if ws.Signaled() {
				return 128 + int(ws.Signal())
			}
			return ws.ExitStatus()
		}
	}
}

// mountInitProc mounts the namespace's own procfs on the staged /proc.
func mountInitProc(opts string) error {
	fd, err := unix.Openat2(unix.AT_FDCWD, "proc", &unix.OpenHow{
		Flags:   unix.O_PATH | unix.O_DIRECTORY | unix.O_NOFOLLOW | unix.O_CLOEXEC,
		Resolve: unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS,
	})
	if err != nil {
		return failf(eImage, "mount point /proc is not a directory in the image")
	}
	defer unix.Close(fd)
	if err := unix.Mount("proc", "/proc/self/fd/"+strconv.Itoa(fd), "proc", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, opts); err != nil {
		return failf(eSystem, "mount proc in the PID namespace: %w", err)
	}
	return nil
}

// verifyAllThreads reads back the credentials of every thread of the init.
func verifyAllThreads(who caller, set capSet, nnp bool) error {
	tasks, err := os.ReadDir("/proc/self/task")
	if err != nil {
		return failf(eInternal, "list init threads: %w", err)
	}
	for _, t := range tasks {
		if err := verifyCredentials("/proc/self/task/"+t.Name()+"/status", who, set, nnp); err != nil {
			return err
		}
	}
	return nil
}
