// setuid.go owns what a setuid-root program must do before it trusts
// anything: stay non-dumpable (R6), repair fds 0-2 (R8), keep the Go
// runtime's variables from steering it (R7), and drop all privilege for
// subcommands that need none.
package main

import (
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

const (
	maxEnvEntries = 4096
	maxEnvBytes   = 1 << 20
)

// setuidHygiene runs first in main, before any flag or file is read.
func setuidHygiene() {
	unix.Prctl(unix.PR_SET_DUMPABLE, 0, 0, 0, 0)

	// Since Linux 5.18 argc 0 arrives as one empty argv[0] (CVE-2021-4034).
	if len(os.Args) < 1 || os.Args[0] == "" {
		fatal(failf(eUsage, "invoked without argv[0]"), false)
	}

	// A closed 0, 1 or 2 would make our next open land there, and a later
	// write "to stderr" would go into that file.
	for fd := 0; fd <= 2; fd++ {
		if _, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0); err == unix.EBADF {
			null, err := unix.Open("/dev/null", unix.O_RDWR, 0)
			if err != nil {
				os.Exit(255)
			}
			if null != fd {
				unix.Dup3(null, fd, 0)
				unix.Close(null)
			}
		}
	}

	env := syscall.Environ()
	clean, changed, err := scrubEnviron(env)
	if err != nil {
		fatal(err, false)
	}
	if changed {
		reexecClean(clean)
	}

	if err := adjustLimits(); err != nil {
		fatal(err, false)
	}
	callerUmask = unix.Umask(077) // nothing minirun creates is readable by others
}

// The caller's resource limits and umask, as they were at entry; the
// payload gets them back exactly (restoreCallerLimits).
var (
	callerLimits []savedLimit
	callerUmask  int
)

// savedLimit is one of the caller's resource limits.
type savedLimit struct {
	Resource int
	Limit    unix.Rlimit
}

// adjustLimits makes the privileged process safe and able to work whatever
// limits the caller set: no core file (soft limit 0: lowering the hard
// limit could not be undone for the payload on a host that withholds
// CAP_SYS_RESOURCE), file size up to the hard limit, and enough
// descriptors. Limits too small to work with end here, before anything
// privileged happens.
func adjustLimits() error {
	for _, r := range []int{unix.RLIMIT_CORE, unix.RLIMIT_FSIZE} {
		var l unix.Rlimit
		if err := unix.Getrlimit(r, &l); err != nil {
			return failf(eSystem, "read resource limit %d: %w", r, err)
		}
		callerLimits = append(callerLimits, savedLimit{r, l})
	}
	unix.Setrlimit(unix.RLIMIT_CORE, &unix.Rlimit{Cur: 0, Max: callerLimits[0].Limit.Max})
	fsize := callerLimits[1].Limit
	if fsize.Max < 16<<20 {
		return failf(eResource, "RLIMIT_FSIZE hard limit %d is too small for minirun (16 MiB at least)", fsize.Max)
	}
	unix.Setrlimit(unix.RLIMIT_FSIZE, &unix.Rlimit{Cur: fsize.Max, Max: fsize.Max})
	// The Go runtime already raised the soft descriptor limit to the hard one.
	var nofile unix.Rlimit
	if unix.Getrlimit(unix.RLIMIT_NOFILE, &nofile) == nil && nofile.Cur < 64 {
		return failf(eResource, "RLIMIT_NOFILE %d is too small for minirun (64 at least)", nofile.Cur)
	}
	return nil
}

// quietSignalsDuringSetup keeps SIGQUIT from taking the Go runtime's
// crash path (a goroutine dump) while minirun sets up; execPayload gives it
// back. INT, TERM, HUP, USR1 and USR2 keep their default action: the process
// dies of the signal, as the caller asked, and the kernel releases what it
// held (autoclear loop devices, the mount namespace); only a passphrase
// prompt catches them, to give the terminal its echo back (crypt.go).
// os/signal.Notify would
// print a line instead, but starting its goroutine costs ~0.25 ms per launch.
func quietSignalsDuringSetup() {
	signal.Ignore(syscall.SIGQUIT)
}

// restoreSignals undoes quietSignalsDuringSetup right before execve: an
// ignored signal would stay ignored in the payload. os/signal cannot undo
// Ignore for a signal the runtime handles, so the default action is set
// with a raw rt_sigaction; nothing runs between it and execve.
func restoreSignals() {
	var dfl [4]uintptr // struct kernel_sigaction: handler 0 = SIG_DFL, flags, restorer, mask
	unix.RawSyscall6(unix.SYS_RT_SIGACTION, uintptr(syscall.SIGQUIT), uintptr(unsafe.Pointer(&dfl)), 0, 8, 0, 0)
}

// scrubEnviron drops GO* names (the runtime reads GODEBUG, GOGC, GOMAXPROCS…
// before main runs), entries without '=' and duplicate names (the first
// wins, as getenv sees it). GOTRACEBACK=none alone does not ask for a
// re-exec: the runtime itself forces exactly that into a setuid process's
// environment, so it would otherwise re-execute forever.
func scrubEnviron(env []string) (clean []string, changed bool, err error) {
	if len(env) > maxEnvEntries {
		return nil, false, failf(eUsage, "environment has %d entries (limit %d)", len(env), maxEnvEntries)
	}
	total := 0
	seen := make(map[string]bool, len(env))
	for _, kv := range env {
		total += len(kv) + 1
		name, _, ok := strings.Cut(kv, "=")
		if !ok || name == "" || strings.HasPrefix(name, "GO") || seen[name] {
			changed = changed || kv != "GOTRACEBACK=none" || seen[name]
			seen[name] = true
			continue
		}
		seen[name] = true
		clean = append(clean, kv)
	}
	if total > maxEnvBytes {
		return nil, false, failf(eUsage, "environment is %d bytes (limit %d)", total, maxEnvBytes)
	}
	return clean, changed, nil
}

// reexecClean starts this same binary again with the cleaned environment,
// through an O_PATH descriptor of /proc/self/exe so no path is looked up
// again. The second process passes the scan by construction; no marker
// variable. syscall.Exec (not a raw execveat) keeps the runtime from
// creating threads while the kernel replaces the process.
func reexecClean(env []string) {
	fd, err := unix.Open("/proc/self/exe", unix.O_PATH|unix.O_CLOEXEC, 0)
	if err != nil {
		fatal(failf(eSystem, "open /proc/self/exe: %w", err), false)
	}
	err = syscall.Exec("/proc/self/fd/"+strconv.Itoa(fd), os.Args, env)
	fatal(failf(eSystem, "re-execute minirun with a clean environment: %w", err), false)
}

// dropPrivileges is for subcommands that need no privilege: the caller's
// ids on every thread, so no capability is left anywhere (R7).
func dropPrivileges() {
	if os.Getuid() == 0 {
		return // root asked for help or a version: nothing to give away
	}
	if err := dropToRealIDs(); err != nil {
		fatal(err, false)
	}
}
