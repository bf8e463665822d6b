package main

import (
	"bytes"
	"unsafe"

	"golang.org/x/sys/unix"
)

const reaperMachine = 62 // EM_X86_64

// reaperProgramStart returns where reaper_amd64.s's program begins.
func reaperProgramStart() *byte

// reaperCode returns the reaper program's machine code, up to its marker.
func reaperCode() []byte {
	const maxCode = 1024
	text := unsafe.Slice(reaperProgramStart(), maxCode+len(reaperEndMarker))
	for i := 0; i < maxCode; i++ { // reads no further than the marker
		if bytes.HasPrefix(text[i:], reaperEndMarker) {
			return bytes.Clone(text[:i])
		}
	}
	return nil
}

// reaperTgid and reaperTid name the thread reaperCatch sends signals to.
var reaperTgid, reaperTid int64

// reaperCatcher returns reaperCatch and its sigreturn trampoline.
func reaperCatcher() (handler, restorer uintptr)

// kernelSigaction is struct sigaction as rt_sigaction takes it on amd64.
type kernelSigaction struct {
	handler, flags, restorer uintptr
	mask                     uint64
}

// sigactions holds the handlers reaperCatch stood in for.
type sigactions map[int]kernelSigaction

// catchSignals installs reaperCatch for every signal in set, sending them
// to thread tid, and returns the handlers it replaced. The Go runtime does
// not notice: it installs handlers again only when os/signal asks it to.
func catchSignals(set uint64, tid int) (sigactions, error) {
	reaperTgid, reaperTid = int64(unix.Getpid()), int64(tid)
	handler, restorer := reaperCatcher()
	const saOnstack, saRestart, saRestorer = 0x08000000, 0x10000000, 0x04000000
	act := kernelSigaction{handler: handler, flags: saOnstack | saRestart | saRestorer, restorer: restorer, mask: set}
	saved := sigactions{}
	for sig := 1; sig <= 64; sig++ {
		if set&(1<<(sig-1)) == 0 {
			continue
		}
		var old kernelSigaction
		if _, _, e := unix.RawSyscall6(unix.SYS_RT_SIGACTION, uintptr(sig), uintptr(unsafe.Pointer(&act)), uintptr(unsafe.Pointer(&old)), 8, 0, 0); e != 0 {
			saved.restore()
			return nil, e
		}
		saved[sig] = old
	}
	return saved, nil
}

// restore puts back the handlers catchSignals replaced.
func (s sigactions) restore() {
	for sig, old := range s {
		unix.RawSyscall6(unix.SYS_RT_SIGACTION, uintptr(sig), uintptr(unsafe.Pointer(&old)), 0, 8, 0, 0)
	}
}
