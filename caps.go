// caps.go owns capability names and numbers, the capSet bitmask, parsing of
// capability lists (--add-caps, --drop-caps, admin commands), and reading what
// the host lets minirun hold (cap_last_cap, bounding ∩ permitted).
// Applying a set to the exec thread lives with the launch; the pure helpers
// for the capset structures are here.
package main

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"

	"golang.org/x/sys/unix"
)

// capNames are the capabilities minirun knows by name, indexed by number
// (linux/capability.h). Bits above the last one have no name: "CAP_<n>".
var capNames = [...]string{
	"CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH", "CAP_FOWNER",
	"CAP_FSETID", "CAP_KILL", "CAP_SETGID", "CAP_SETUID", "CAP_SETPCAP",
	"CAP_LINUX_IMMUTABLE", "CAP_NET_BIND_SERVICE", "CAP_NET_BROADCAST",
	"CAP_NET_ADMIN", "CAP_NET_RAW", "CAP_IPC_LOCK", "CAP_IPC_OWNER",
	"CAP_SYS_MODULE", "CAP_SYS_RAWIO", "CAP_SYS_CHROOT", "CAP_SYS_PTRACE",
	"CAP_SYS_PACCT", "CAP_SYS_ADMIN", "CAP_SYS_BOOT", "CAP_SYS_NICE",
	"CAP_SYS_RESOURCE", "CAP_SYS_TIME", "CAP_SYS_TTY_CONFIG", "CAP_MKNOD",
	"CAP_LEASE", "CAP_AUDIT_WRITE", "CAP_AUDIT_CONTROL", "CAP_SETFCAP",
	"CAP_MAC_OVERRIDE", "CAP_MAC_ADMIN", "CAP_SYSLOG", "CAP_WAKE_ALARM",
	"CAP_BLOCK_SUSPEND", "CAP_AUDIT_READ", "CAP_PERFMON", "CAP_BPF",
	"CAP_CHECKPOINT_RESTORE",
}

// capDescriptions are printed verbatim by `minirun capability avail`
// (spec/capabilities.md §4).
var capDescriptions = [len(capNames)]string{
	"Change the owner and group of any file.",
	"Ignore read, write and execute permission bits on files.",
	"Ignore read permission on files and read/search permission on directories.",
	"Act as the owner of any file for chmod, timestamps, attributes and ACLs.",
	"Keep setuid/setgid bits when a file changes; set setgid for foreign groups.",
	"Send signals to processes of other users.",
	"Switch to any group ID or supplementary group list; write gid maps.",
	"Switch to any user ID; write uid maps.",
	"Shrink the bounding set, change securebits, widen the inheritable set.",
	"Set or clear the immutable and append-only file flags.",
	"Bind sockets to ports below 1024.",
	"Broadcast and listen to multicast (unused by current kernels).",
	"Configure interfaces, addresses, routes, firewall and other network settings.",
	"Open raw and packet sockets; bind to any address for transparent proxying.",
	"Lock memory (mlock, mlockall, SHM_LOCK) beyond the usual limits.",
	"Bypass permission checks on System V IPC objects.",
	"Load and unload kernel modules.",
	"Raw I/O: I/O ports, /dev/mem and similar device access.",
	"Call chroot; enter mount namespaces with setns.",
	"Trace and inspect any process (ptrace, process_vm_readv).",
	"Turn process accounting on or off.",
	"Broad administration: mount, sethostname, namespaces, quotas and much more.",
	"Reboot and load a new kernel for later execution.",
	"Raise priorities, use real-time scheduling, set affinity of any process.",
	"Exceed resource limits, disk quotas and reserved filesystem space.",
	"Set the system clock and the hardware clock.",
	"Use vhangup and privileged terminal ioctls.",
	"Create device special files.",
	"Take leases on files the caller does not own.",
	"Write records to the kernel audit log.",
	"Enable or disable kernel auditing and change its rules.",
	"Set file capabilities; map uid 0 when creating a user namespace.",
	"Override mandatory access control (Smack).",
	"Change mandatory access control configuration and policy.",
	"Privileged syslog operations; view kernel addresses hidden from others.",
	"Set timers that wake the system from suspend.",
	"Prevent the system from suspending.",
	"Read the audit log through a multicast netlink socket.",
	"Use performance monitoring (perf_event_open and related).",
	"Privileged BPF operations: load programs, create maps.",
	"Checkpoint/restore helpers: choose PIDs for new processes, read map_files.",
}

// lastNamedCap is the highest capability number with a name (40).
const lastNamedCap = len(capNames) - 1

// maxCapBit is the highest bit a capSet (and a v3 capset call) can hold.
const maxCapBit = 63

// capSet is a set of capability numbers 0..63, bit n = capability n, the
// same layout /proc/self/status prints.
type capSet uint64

// capsUpTo is every capability 0..last.
func capsUpTo(last int) capSet {
	if last < 0 {
		return 0
	}
	if last >= maxCapBit {
		return ^capSet(0)
	}
	return capSet(1)<<(uint(last)+1) - 1
}

// namedCaps is every capability minirun knows by name (0..40); what `all`
// means in the host-independent grant file.
func namedCaps() capSet { return capsUpTo(lastNamedCap) }

func capBit(c int) capSet {
	if c < 0 || c > maxCapBit {
		return 0
	}
	return capSet(1) << uint(c)
}

func (s capSet) has(c int) bool { return c >= 0 && c <= maxCapBit && s&capBit(c) != 0 }

// capName is the canonical name of capability c, "CAP_<n>" if it has none.
func capName(c int) string {
	if c >= 0 && c <= lastNamedCap {
		return capNames[c]
	}
	return "CAP_" + strconv.Itoa(c)
}

// numbers lists the members in ascending order.
func (s capSet) numbers() []int {
	var out []int
	for c := 0; c <= maxCapBit; c++ {
		if s.has(c) {
			out = append(out, c)
		}
	}
	return out
}

// names lists the members' names, sorted by number.
func (s capSet) names() []string {
	var out []string
	for _, c := range s.numbers() {
		out = append(out, capName(c))
	}
	return out
}

// String is the comma list used in messages: "CAP_CHOWN,CAP_NET_RAW".
func (s capSet) String() string { return strings.Join(s.names(), ",") }

// hex is the 16-digit form /proc/self/status prints.
func (s capSet) hex() string { return fmt.Sprintf("%016x", uint64(s)) }

// capByName returns the number of a canonical (upper-case, CAP_-prefixed) name.
func capByName(name string) (int, bool) {
	for i, n := range capNames {
		if n == name {
			return i, true
		}
	}
	return 0, false
}

// capList is one parsed capability list.
type capList struct {
	Named   capSet   // capabilities named one by one (0..40 only)
	All     bool     // "all" appeared: FULL at run time, all 41 names in the grant file
	Unknown []string // normalised unknown names, deduplicated, in order of first appearance
}

// set resolves the list against what "all" means to the caller.
func (l capList) set(all capSet) capSet {
	if l.All {
		return l.Named | all
	}
	return l.Named
}

// normaliseCapName upper-cases ASCII letters and adds a missing CAP_ prefix.
// Only ASCII is folded: Unicode case mapping would turn "cap_ſys_admin"
// (long s) into CAP_SYS_ADMIN, a look-alike that must stay unknown.
func normaliseCapName(item string) string {
	b := []byte(item)
	for i, c := range b {
		if 'a' <= c && c <= 'z' {
			b[i] = c - 'a' + 'A'
		}
	}
	up := string(b)
	if !strings.HasPrefix(up, "CAP_") {
		up = "CAP_" + up
	}
	return up
}

// parseCapList parses one comma list (spec/capabilities.md §4): items are
// trimmed of spaces and tabs, empty items skipped, names are matched in any
// case with or without CAP_, "all" means every capability, duplicates
// merge. It never fails: unknown names are returned for the caller to warn
// about (exec) or refuse (admin commands). Work and memory are linear in
// len(s); every item is examined (a limit would silently skip drops).
func parseCapList(s string) capList {
	var l capList
	seen := map[string]bool{}
	for len(s) > 0 {
		var item string
		if i := strings.IndexByte(s, ','); i >= 0 {
			item, s = s[:i], s[i+1:]
		} else {
			item, s = s, ""
		}
		item = strings.Trim(item, " \t")
		if item == "" {
			continue
		}
		name := normaliseCapName(item)
		if name == "CAP_ALL" {
			l.All = true
			continue
		}
		if c, ok := capByName(name); ok {
			l.Named |= capBit(c)
			continue
		}
		if !seen[name] {
			seen[name] = true
			l.Unknown = append(l.Unknown, name)
		}
	}
	return l
}

// parseCapLists parses repeated flags as one list (they accumulate).
func parseCapLists(values []string) capList {
	return parseCapList(strings.Join(values, ","))
}

// lastCap returns L, the kernel's highest capability number: from
// /proc/sys/kernel/cap_last_cap, or else by probing PR_CAPBSET_READ upward
// until EINVAL. Read it before T unshares or pivots.
func lastCap() (int, error) { return hostLastCap() }

// hostLastCap reads cap_last_cap once: the policy and the drop both need it.
var hostLastCap = sync.OnceValues(func() (int, error) { return lastCapFrom("/proc/sys/kernel/cap_last_cap") })

// lastCapFrom is lastCap reading the given file (tests point it elsewhere).
func lastCapFrom(path string) (int, error) {
	if b, err := readSmallFile(path, 64); err == nil {
		if n, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil {
			if n < 0 || n > maxCapBit {
				return 0, failf(eSystem, "cap_last_cap is %d, outside 0..%d", n, maxCapBit)
			}
			return n, nil
		}
	}
	last := -1
	for c := 0; c <= maxCapBit+1; c++ {
		_, err := unix.PrctlRetInt(unix.PR_CAPBSET_READ, uintptr(c), 0, 0, 0)
		if errors.Is(err, unix.EINVAL) {
			break
		}
		if err != nil {
			return 0, failf(eSystem, "probe capability %d with PR_CAPBSET_READ: %w", c, err)
		}
		last = c
	}
	if last < 0 || last > maxCapBit {
		return 0, failf(eSystem, "cannot determine the last capability (PR_CAPBSET_READ gave %d)", last)
	}
	return last, nil
}

// readSmallFile reads at most max bytes of a kernel file; larger is an error.
func readSmallFile(path string, max int) ([]byte, error) {
	f, err := openFile(path, os.O_RDONLY, 0)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	buf := make([]byte, max+1)
	n := 0
	for n < len(buf) {
		m, err := f.Read(buf[n:])
		n += m
		if err != nil {
			break
		}
	}
	if n > max {
		return nil, fmt.Errorf("%s: larger than %d bytes", path, max)
	}
	return buf[:n], nil
}

// hostAvailable returns H: this thread's bounding set ∩ its permitted set,
// bits 0..last. Call it at start, while every thread still has the
// credentials the kernel gave the setuid exec.
func hostAvailable(last int) (capSet, error) {
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		return 0, failf(eSystem, "capget: %w", err)
	}
	_, permitted, _ := setsFromCapData(data)
	var bounding capSet
	for c := 0; c <= last && c <= maxCapBit; c++ {
		in, err := unix.PrctlRetInt(unix.PR_CAPBSET_READ, uintptr(c), 0, 0, 0)
		if err != nil {
			return 0, failf(eSystem, "read bounding set bit %d with PR_CAPBSET_READ: %w", c, err)
		}
		if in == 1 {
			bounding |= capBit(c)
		}
	}
	return bounding & permitted & capsUpTo(last), nil
}

// requireLaunchCaps checks that the host lets minirun hold what the launch
// itself needs (spec/capabilities.md §0).
func requireLaunchCaps(host capSet) error {
	for _, c := range []int{unix.CAP_SETUID, unix.CAP_SETGID, unix.CAP_SETPCAP} {
		if !host.has(c) {
			return failf(eSystem, "host does not let minirun hold %s", capName(c))
		}
	}
	return nil
}

// capsetData builds the v3 capset arguments that make permitted, effective
// and inheritable all equal to s (spec/capabilities.md §7 step 5).
func capsetData(s capSet) (unix.CapUserHeader, [2]unix.CapUserData) {
	lo, hi := uint32(s), uint32(s>>32)
	return unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3, Pid: 0},
		[2]unix.CapUserData{
			{Effective: lo, Permitted: lo, Inheritable: lo},
			{Effective: hi, Permitted: hi, Inheritable: hi},
		}
}

// setsFromCapData splits what a v3 capget returned into the three sets.
func setsFromCapData(d [2]unix.CapUserData) (effective, permitted, inheritable capSet) {
	join := func(lo, hi uint32) capSet { return capSet(lo) | capSet(hi)<<32 }
	return join(d[0].Effective, d[1].Effective),
		join(d[0].Permitted, d[1].Permitted),
		join(d[0].Inheritable, d[1].Inheritable)
}
