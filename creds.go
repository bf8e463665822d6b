// creds.go owns the last privileged step: the exec thread becomes the
// caller with exactly the computed capability set, and proves it before
// anything runs (security.md §3.3 step 7, R13). Only raw per-thread
// syscalls here: the other threads die at execve.
package main

import (
	"bytes"
	"fmt"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// syscaller is how credentials are changed: unix.RawSyscall6 on the exec
// thread (only that thread, which then execs), or syscall.AllThreadsSyscall6
// in the --pid init, a fresh process whose threads are all identical.
type syscaller func(trap, a1, a2, a3, a4, a5, a6 uintptr) (r1, r2 uintptr, err syscall.Errno)

// dropToCaller sets this thread's final credentials: the caller's uid, gid
// and groups; set in all five capability sets; no_new_privs when nnp; a
// TIOCSTI filter; non-dumpable. Then it reads everything back.
func dropToCaller(who caller, set capSet, nnp bool) error {
	if err := applyCredentials(unix.RawSyscall6, who, set, nnp); err != nil {
		return err
	}
	return verifyCredentials("/proc/thread-self/status", who, set, nnp)
}

// dropUserNS ends the unprivileged mode: the ids already are the caller's
// (mapped to themselves) and groups cannot be set in a user namespace, so
// only the namespace's capabilities go.
func dropUserNS(who caller) error {
	sys := syscaller(unix.RawSyscall6)
	if err := dropBoundingSet(sys, 0); err != nil {
		return err
	}
	if err := blockTIOCSTI(sys); err != nil {
		return err
	}
	if err := dropCapabilities(sys, 0, true); err != nil {
		return err
	}
	return verifyCredentials("/proc/thread-self/status", who, 0, true)
}

func applyCredentials(sys syscaller, who caller, set capSet, nnp bool) error {
	if err := dropBoundingSet(sys, set); err != nil {
		return err
	}
	// The filter goes in while we still may install one without
	// no_new_privs (root keeps CAP_SYS_ADMIN until capset below).
	if err := blockTIOCSTI(sys); err != nil {
		return err
	}
	if err := changeIDs(sys, who.uid, who.gid, who.groups, true); err != nil {
		return err
	}
	return dropCapabilities(sys, set, nnp)
}

// changeIDs gives the thread(s) the caller's ids, keeping the permitted
// capabilities, and leaves the process non-dumpable. The order closes a
// window that fs.suid_dumpable = 1 opens: there every id change makes the
// process dumpable again, and between setresuid and PR_SET_DUMPABLE a thread
// with the caller's ids and no capability could be ptraced by the caller,
// who would then own the memory the other, still-privileged threads run. A
// thread that keeps capabilities its tracer lacks cannot be traced
// (cap_ptrace_access_check), so the capabilities go only after the flag is
// down again: dropping capabilities alone does not reset it.
func changeIDs(sys syscaller, uid, gid int, groups []int, setGroups bool) error {
	if _, _, e := sys(unix.SYS_PRCTL, unix.PR_SET_KEEPCAPS, 1, 0, 0, 0, 0); e != 0 {
		return failf(eSystem, "set keepcaps: %w", e)
	}
	if setGroups {
		list := make([]uint32, len(groups))
		for i, g := range groups {
			list[i] = uint32(g)
		}
		var gp unsafe.Pointer
		if len(list) > 0 {
			gp = unsafe.Pointer(&list[0])
		}
		if _, _, e := sys(unix.SYS_SETGROUPS, uintptr(len(list)), uintptr(gp), 0, 0, 0, 0); e != 0 {
			return failf(eSystem, "set groups: %w", e)
		}
	}
	if _, _, e := sys(unix.SYS_SETRESGID, uintptr(gid), uintptr(gid), uintptr(gid), 0, 0, 0); e != 0 {
		return failf(eSystem, "set gid: %w", e)
	}
	if _, _, e := sys(unix.SYS_SETRESUID, uintptr(uid), uintptr(uid), uintptr(uid), 0, 0, 0); e != 0 {
		return failf(eSystem, "set uid: %w", e)
	}
	unix.RawSyscall6(unix.SYS_PRCTL, unix.PR_SET_DUMPABLE, 0, 0, 0, 0, 0) // one flag for the whole process
	if _, _, e := sys(unix.SYS_PRCTL, unix.PR_SET_KEEPCAPS, 0, 0, 0, 0, 0); e != 0 {
		return failf(eSystem, "clear keepcaps: %w", e)
	}
	return nil
}

// becomeCaller is changeIDs on every thread followed by the loss of every
// capability: for processes that keep running after their privileged work
// (P0 of --pid, and subcommands that need no privilege).
func becomeCaller(uid, gid int, groups []int, setGroups bool) error {
	sys := syscaller(syscall.AllThreadsSyscall6)
	if err := changeIDs(sys, uid, gid, groups, setGroups); err != nil {
		return err
	}
	hdr, data := capsetData(0)
	if _, _, e := sys(unix.SYS_CAPSET, uintptr(unsafe.Pointer(&hdr)), uintptr(unsafe.Pointer(&data[0])), 0, 0, 0, 0); e != 0 {
		return failf(eSystem, "drop capabilities: %w", e)
	}
	unix.RawSyscall6(unix.SYS_PRCTL, unix.PR_SET_DUMPABLE, 0, 0, 0, 0, 0)
	return nil
}

// dropBoundingSet removes every capability outside set from the bounding
// set, first, while CAP_SETPCAP is still held.
func dropBoundingSet(sys syscaller, set capSet) error {
	last, err := lastCap()
	if err != nil {
		return err
	}
	// The bounding set first, while CAP_SETPCAP is still ours.
	for c := 0; c <= last; c++ {
		if !set.has(c) {
			if _, _, e := sys(unix.SYS_PRCTL, unix.PR_CAPBSET_DROP, uintptr(c), 0, 0, 0, 0); e != 0 {
				return failf(eSystem, "drop capability %d from the bounding set: %w", c, e)
			}
		}
	}
	return nil
}

// dropCapabilities makes permitted, effective, inheritable and ambient
// exactly set, then no_new_privs and non-dumpable.
func dropCapabilities(sys syscaller, set capSet, nnp bool) error {
	hdr, data := capsetData(set)
	if _, _, e := sys(unix.SYS_CAPSET, uintptr(unsafe.Pointer(&hdr)), uintptr(unsafe.Pointer(&data[0])), 0, 0, 0, 0); e != 0 {
		return failf(eSystem, "set capabilities: %w", e)
	}
	sys(unix.SYS_PRCTL, unix.PR_CAP_AMBIENT, unix.PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0, 0)
	for _, c := range set.numbers() {
		if _, _, e := sys(unix.SYS_PRCTL, unix.PR_CAP_AMBIENT, unix.PR_CAP_AMBIENT_RAISE, uintptr(c), 0, 0, 0); e != 0 {
			return failf(eSystem, "raise ambient capability %s: %w", capName(c), e)
		}
	}
	if nnp {
		if _, _, e := sys(unix.SYS_PRCTL, unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0, 0); e != 0 {
			return failf(eSystem, "set no_new_privs: %w", e)
		}
	}
	// Credential changes reset the dumpable flag (R6); only the payload's
	// own execve may make it dumpable again.
	sys(unix.SYS_PRCTL, unix.PR_SET_DUMPABLE, 0, 0, 0, 0, 0)
	return nil
}

// verifyCredentials reads every value back from the kernel; any difference
// means nothing is executed (R13).
// statusFile is /proc/thread-self/status, or a thread of the init.
func verifyCredentials(statusFile string, who caller, set capSet, nnp bool) error {
	status, err := readProcFile(statusFile, 64<<10)
	if err != nil {
		return failf(eInternal, "read back credentials: %w", err)
	}
	want := fmt.Sprintf("%016x", uint64(set))
	fields := parseStatus(status)
	u, g := strconv.Itoa(who.uid), strconv.Itoa(who.gid)
	if strings.Join(strings.Fields(fields["Uid"]), " ") != strings.Repeat(u+" ", 3)+u ||
		strings.Join(strings.Fields(fields["Gid"]), " ") != strings.Repeat(g+" ", 3)+g {
		return failf(eInternal, "credentials did not take: Uid %s, Gid %s", fields["Uid"], fields["Gid"])
	}
	for _, k := range []string{"CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"} {
		if fields[k] != want {
			return failf(eInternal, "capability set %s is %s, expected %s", k, fields[k], want)
		}
	}
	if nnp && fields["NoNewPrivs"] != "1" {
		return failf(eInternal, "no_new_privs did not take")
	}
	if inUserNS {
		return nil // unmapped supplementary groups show as the overflow gid
	}
	groups := strings.Fields(fields["Groups"])
	if len(groups) != len(who.groups) {
		return failf(eInternal, "supplementary groups did not take")
	}
	for i, g := range groups {
		if g != strconv.Itoa(who.groups[i]) {
			return failf(eInternal, "supplementary groups did not take")
		}
	}
	return nil
}

// parseStatus picks the lines R13 checks out of a status file; the rest
// (some fifty lines) is not looked at.
func parseStatus(status []byte) map[string]string {
	fields := make(map[string]string, len(statusFieldsChecked))
	for line := range bytes.SplitSeq(status, []byte("\n")) {
		k, v, ok := bytes.Cut(line, []byte(":"))
		if ok && slices.Contains(statusFieldsChecked, string(k)) {
			fields[string(k)] = strings.TrimSpace(string(v))
		}
	}
	return fields
}

var statusFieldsChecked = []string{"Uid", "Gid", "Groups", "CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb", "NoNewPrivs"}

// blockTIOCSTI installs a per-thread seccomp filter failing
// ioctl(fd, TIOCSTI) with EPERM, so the payload cannot push keystrokes into
// the caller's terminal.
func blockTIOCSTI(sys syscaller) error {
	prog, err := tiocstiFilter(runtime.GOARCH)
	if err != nil {
		return err
	}
	fprog := unix.SockFprog{Len: uint16(len(prog)), Filter: &prog[0]}
	if _, _, e := sys(unix.SYS_PRCTL, unix.PR_SET_SECCOMP, unix.SECCOMP_MODE_FILTER,
		uintptr(unsafe.Pointer(&fprog)), 0, 0, 0); e != 0 {
		return failf(eSystem, "install the TIOCSTI filter: %w", e)
	}
	return nil
}

// tiocstiArches are, per GOARCH, the audit architectures a process may make
// system calls as and their ioctl numbers: the native one and, where the
// kernel runs 32-bit code too, the compat one.
var tiocstiArches = []struct {
	goarch string
	arches []struct{ audit, ioctl uint32 }
}{
	{"amd64", []struct{ audit, ioctl uint32 }{{0xc000003e, 16}, {0x40000003, 54}}}, // x86_64, i386
	{"386", []struct{ audit, ioctl uint32 }{{0x40000003, 54}}},
	{"arm64", []struct{ audit, ioctl uint32 }{{0xc00000b7, 29}, {0x40000028, 54}}}, // aarch64, arm
	{"arm", []struct{ audit, ioctl uint32 }{{0x40000028, 54}}},
	{"ppc64le", []struct{ audit, ioctl uint32 }{{0xc0000015, 54}}},
	{"riscv64", []struct{ audit, ioctl uint32 }{{0xc00000f3, 29}}},
	{"s390x", []struct{ audit, ioctl uint32 }{{0x80000016, 54}}},
	{"loong64", []struct{ audit, ioctl uint32 }{{0xc0000102, 29}}},
}

// tiocstiFilter is the filter for goarch. The kernel truncates the request
// to 32 bits, so only the low half is compared (0x100005412 is TIOCSTI
// too). An architecture without an entry is refused: the launch must not
// go on without the filter.
func tiocstiFilter(goarch string) ([]unix.SockFilter, error) {
	var arches []struct{ audit, ioctl uint32 }
	for _, a := range tiocstiArches {
		if a.goarch == goarch {
			arches = a.arches
		}
	}
	if arches == nil {
		return nil, failf(eSystem, "no TIOCSTI filter for %s: refusing to start a container without it", goarch)
	}
	const (
		ldW   = unix.BPF_LD | unix.BPF_W | unix.BPF_ABS
		jeqK  = unix.BPF_JMP | unix.BPF_JEQ | unix.BPF_K
		retK  = unix.BPF_RET | unix.BPF_K
		allow = unix.SECCOMP_RET_ALLOW
		deny  = unix.SECCOMP_RET_ERRNO | uint32(unix.EPERM)
	)
	prog := []unix.SockFilter{{Code: ldW, K: 4}} // seccomp_data.arch
	for _, a := range arches {
		prog = append(prog,
			unix.SockFilter{Code: jeqK, K: a.audit, Jt: 0, Jf: 5},
			unix.SockFilter{Code: ldW, K: 0}, // nr
			unix.SockFilter{Code: jeqK, K: a.ioctl, Jt: 0, Jf: 2},
			unix.SockFilter{Code: ldW, K: 24 + argLowHalf(a.audit)}, // args[1], its low 32 bits
			unix.SockFilter{Code: jeqK, K: unix.TIOCSTI, Jt: 1, Jf: 0},
			unix.SockFilter{Code: retK, K: allow},
		)
	}
	prog = append(prog, unix.SockFilter{Code: retK, K: allow}, unix.SockFilter{Code: retK, K: deny})
	// Patch the jumps: after "args[1] == TIOCSTI" jump to the deny at the end.
	denyAt := len(prog) - 1
	for i := range prog {
		if prog[i].Code == jeqK && prog[i].K == unix.TIOCSTI {
			prog[i].Jt = uint8(denyAt - i - 1)
		}
	}
	return prog, nil
}

// argLowHalf is where the low 32 bits of a 64-bit seccomp_data argument
// lie: first on little-endian architectures, second on big-endian ones.
func argLowHalf(audit uint32) uint32 {
	if audit&0x40000000 != 0 { // __AUDIT_ARCH_LE
		return 0
	}
	return 4
}
