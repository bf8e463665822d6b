// reaper.go: what the --pid init, and the parent waiting for it, become
// once the payload runs. Both only wait for one child, forward signals to
// it and exit with its status; a Go runtime kept for that costs about 5 MiB
// of RSS per process. The reaper is a few hundred bytes of machine code
// (reaper_amd64.s) in a minimal ELF executable, run from a sealed,
// execute-only memfd: the process keeps its pid, children, descriptors 0-2,
// credentials and parent-death signal, and drops the Go runtime.
package main

import (
	"encoding/binary"
	"os"
	"os/signal"
	"runtime"
	"strconv"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// forwardedSignalSet is forwardedSignals as a kernel sigset (bit N-1 for
// signal N).
func forwardedSignalSet() uint64 {
	var set uint64
	for _, s := range forwardedSignals {
		set |= 1 << (s.(syscall.Signal) - 1)
	}
	return set
}

// reaperSignalSet is what the reaper waits for: forwardedSignals and
// SIGCHLD (REAPER_SIGNALS in reaper_amd64.s).
func reaperSignalSet() uint64 {
	return forwardedSignalSet() | 1<<(syscall.SIGCHLD-1)
}

// reaperEndMarker follows the program's last instruction in reaper_amd64.s.
var reaperEndMarker = []byte("minirun reaper\x00\x00")

// reaperExecutable wraps the reaper's code in an ELF executable; nil where
// this architecture has no reaper.
func reaperExecutable() []byte {
	code := reaperCode()
	if code == nil {
		return nil
	}
	return elfExecutable(reaperMachine, code)
}

// elfExecutable is the smallest static ELF executable around code: one
// read-and-execute segment holding the headers and the code, entered at the
// code's first byte.
func elfExecutable(machine uint16, code []byte) []byte {
	const (
		base       = 0x400000
		headerSize = 64 + 56 // the ELF header and one program header
	)
	elf := make([]byte, headerSize+len(code))
	le := binary.LittleEndian
	copy(elf, "\x7fELF\x02\x01\x01") // 64-bit, little-endian, version 1, System V
	le.PutUint16(elf[16:], 2)        // ET_EXEC
	le.PutUint16(elf[18:], machine)
	le.PutUint32(elf[20:], 1)
	le.PutUint64(elf[24:], base+headerSize) // entry: the code, right after the headers
	le.PutUint64(elf[32:], 64)              // program headers follow the ELF header
	le.PutUint16(elf[52:], 64)
	le.PutUint16(elf[54:], 56)
	le.PutUint16(elf[56:], 1)
	ph := elf[64:]
	le.PutUint32(ph[0:], 1) // PT_LOAD
	le.PutUint32(ph[4:], 5) // PF_R|PF_X
	le.PutUint64(ph[16:], base)
	le.PutUint64(ph[24:], base)
	le.PutUint64(ph[32:], uint64(len(elf)))
	le.PutUint64(ph[40:], uint64(len(elf)))
	le.PutUint64(ph[48:], 0x1000)
	copy(elf[headerSize:], code)
	return elf
}

// reaperMemfd puts the reaper executable in a sealed memfd. Its mode is
// execute-only: the kernel then keeps the process that runs it as
// undumpable as a setuid program (fs.suid_dumpable), so the caller cannot
// ptrace what replaces minirun.
func reaperMemfd() (int, error) {
	elf := reaperExecutable()
	if elf == nil {
		return -1, unix.ENOEXEC
	}
	fd, err := unix.MemfdCreate("minirun-init", unix.MFD_CLOEXEC|unix.MFD_ALLOW_SEALING|unix.MFD_EXEC)
	if err == unix.EINVAL { // before Linux 6.3 there is no MFD_EXEC
		fd, err = unix.MemfdCreate("minirun-init", unix.MFD_CLOEXEC|unix.MFD_ALLOW_SEALING)
	}
	if err != nil {
		return -1, err
	}
	if n, err := unix.Write(fd, elf); err != nil || n != len(elf) {
		unix.Close(fd)
		return -1, unix.EIO
	}
	if err := unix.Fchmod(fd, 0111); err != nil {
		unix.Close(fd)
		return -1, err
	}
	seals := unix.F_SEAL_SEAL | unix.F_SEAL_SHRINK | unix.F_SEAL_GROW | unix.F_SEAL_WRITE
	if _, err := unix.FcntlInt(uintptr(fd), unix.F_ADD_SEALS, seals); err != nil {
		unix.Close(fd)
		return -1, err
	}
	return fd, nil
}

// forwarder passes forwardedSignals on to one child and waits for it: as
// the reaper program where this machine can run it, else in Go.
type forwarder struct {
	memfd int        // the reaper executable; -1: forward and wait in Go
	saved sigactions // Go's handlers, while reaperCatch stands in for them
	sigs  chan os.Signal
}

// startForwarding is called before the child exists, so that no signal is
// lost before the handover: os/signal would hold them inside the runtime,
// which the execveat discards. Instead, from here this thread (locked to
// the calling goroutine for good) blocks them, and reaperCatch sends those
// that reach other threads to it; they stay pending across the execveat.
// The child must be started on another thread (startChild): Go's fork
// unblocks signals on the thread it forks from.
func startForwarding() *forwarder {
	return startForwardingTo(reaperMemfd())
}

// startForwardingTo is startForwarding with the reaper executable in fd,
// unless err.
func startForwardingTo(fd int, err error) *forwarder {
	runtime.LockOSThread()
	f := &forwarder{memfd: -1}
	if err == nil {
		set := forwardedSignalSet()
		unix.RawSyscall6(unix.SYS_RT_SIGPROCMASK, unix.SIG_BLOCK, uintptr(unsafe.Pointer(&set)), 0, 8, 0, 0)
		if saved, err := catchSignals(set, unix.Gettid()); err == nil {
			f.memfd, f.saved = fd, saved
			return f
		}
		unix.RawSyscall6(unix.SYS_RT_SIGPROCMASK, unix.SIG_UNBLOCK, uintptr(unsafe.Pointer(&set)), 0, 8, 0, 0)
		unix.Close(fd)
	}
	f.notify()
	return f
}

func (f *forwarder) notify() {
	f.sigs = make(chan os.Signal, 8)
	signal.Notify(f.sigs, forwardedSignals...)
}

// startChild runs start, which forks, on a thread other than this one.
func (f *forwarder) startChild(start func() (int, error)) (int, error) {
	type started struct {
		pid int
		err error
	}
	done := make(chan started)
	go func() {
		pid, err := start()
		done <- started{pid, err}
	}()
	s := <-done
	return s.pid, s.err
}

// waitFor forwards signals to target until it exits. With the reaper it
// does not return: the process becomes the reaper, keeping the descriptors
// in keep open. In Go it returns what wait says about target.
func (f *forwarder) waitFor(target int, wait func(pid int) int, keep ...int) int {
	if f.memfd >= 0 {
		f.becomeReaper(target, keep)
	}
	go func() {
		for s := range f.sigs {
			unix.Kill(target, s.(syscall.Signal))
		}
	}()
	return wait(target)
}

// becomeReaper runs the reaper from this thread, whose pending signals it
// takes over. Should the execveat fail, Go's handlers come back, the
// signals pending here reach them, and the caller forwards in Go.
func (f *forwarder) becomeReaper(target int, keep []int) {
	argv, err := syscall.SlicePtrFromStrings([]string{"minirun-init", strconv.Itoa(target)})
	if err == nil {
		envv := []*byte{nil}
		empty := []byte{0}
		// Nothing but 0-2 and keep may reach the reaper.
		unix.CloseRange(3, ^uint(0), unix.CLOSE_RANGE_CLOEXEC)
		for _, k := range keep {
			unix.FcntlInt(uintptr(k), unix.F_SETFD, 0)
		}
		unix.Syscall6(unix.SYS_EXECVEAT, uintptr(f.memfd), uintptr(unsafe.Pointer(&empty[0])),
			uintptr(unsafe.Pointer(&argv[0])), uintptr(unsafe.Pointer(&envv[0])), unix.AT_EMPTY_PATH, 0)
		for _, k := range keep {
			unix.FcntlInt(uintptr(k), unix.F_SETFD, unix.FD_CLOEXEC)
		}
	}
	unix.Close(f.memfd)
	f.memfd = -1
	// os/signal first, so that Go's handlers deliver to it from the moment
	// they are back; then the signals held on this thread reach them too.
	f.notify()
	f.saved.restore()
	set := forwardedSignalSet()
	unix.RawSyscall6(unix.SYS_RT_SIGPROCMASK, unix.SIG_UNBLOCK, uintptr(unsafe.Pointer(&set)), 0, 8, 0, 0)
}
