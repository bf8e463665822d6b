// The reaper program (reaper.go): what the --pid init and its waiting
// parent become once the payload runs. It is never called from Go; its
// bytes are copied into a small ELF executable and run by execveat, so it
// uses only relative jumps, raw system calls and its own stack, and ends
// in reaperEndMarker.
//
// At entry the kernel's stack holds argc, argv[0], argv[1], ...; argv[1] is
// the pid of the one child to wait for and forward signals to.

#include "textflag.h"

#define SYS_rt_sigprocmask	14
#define SYS_wait4		61
#define SYS_kill		62
#define SYS_rt_sigtimedwait	128
#define SYS_prctl		157
#define SYS_exit_group		231
#define PR_SET_DUMPABLE		4
#define PR_SET_NAME		15
#define WNOHANG			1
#define SIGCHLD			17
#define ECHILD			10

// REAPER_SIGNALS is SIGHUP, SIGINT, SIGQUIT, SIGUSR1, SIGUSR2, SIGTERM,
// SIGCHLD and SIGWINCH as a kernel sigset (bit N-1 for signal N); reaper.go's
// reaperSignalSet must equal it (TestReaperSignalSet).
#define REAPER_SIGNALS		$0x8014a07

TEXT reaperProgram<>(SB), NOSPLIT|NOFRAME, $0
	// R12 = the target pid, from argv[1] in decimal.
	MOVQ	16(SP), SI
	XORQ	R12, R12
parse:
	MOVBQZX	(SI), AX
	SUBQ	$48, AX		// '0'
	CMPQ	AX, $9
	JA	parsed		// NUL or any non-digit ends the number
	IMULQ	$10, R12
	ADDQ	AX, R12
	INCQ	SI
	JMP	parse
parsed:
	TESTQ	R12, R12
	JLE	fail

	// Scratch on the stack: 0(SP) the signal set, 8(SP) the wait status,
	// 16(SP) the name.
	SUBQ	$32, SP

	// prctl(PR_SET_DUMPABLE, 0), as becomeCaller left the Go process:
	// the execute-only memfd already made the kernel apply fs.suid_dumpable.
	MOVQ	$PR_SET_DUMPABLE, DI
	XORQ	SI, SI
	MOVQ	$SYS_prctl, AX
	SYSCALL

	// prctl(PR_SET_NAME, "minirun-init"): ps and /proc/1/comm show it.
	MOVQ	$0x2d6e7572696e696d, AX	// "minirun-"
	MOVQ	AX, 16(SP)
	MOVQ	$0x74696e69, AX		// "init\0\0\0\0"
	MOVQ	AX, 24(SP)
	MOVQ	$PR_SET_NAME, DI
	LEAQ	16(SP), SI
	XORQ	DX, DX
	XORQ	R10, R10
	XORQ	R8, R8
	MOVQ	$SYS_prctl, AX
	SYSCALL

	// Block the signals we forward and SIGCHLD: they stay pending until
	// rt_sigtimedwait takes them. minirun blocked them already before the
	// execveat, so none sent in between is lost.
	MOVQ	REAPER_SIGNALS, AX
	MOVQ	AX, 0(SP)
	XORQ	DI, DI		// SIG_BLOCK
	LEAQ	0(SP), SI
	XORQ	DX, DX
	MOVQ	$8, R10
	MOVQ	$SYS_rt_sigprocmask, AX
	SYSCALL

reap:
	// Reap every child that has exited (as PID 1, orphans are ours too).
	// The target may have exited before we blocked SIGCHLD, so this runs
	// before the first wait as well.
	MOVQ	$-1, DI
	LEAQ	8(SP), SI
	MOVQ	$WNOHANG, DX
	XORQ	R10, R10
	MOVQ	$SYS_wait4, AX
	SYSCALL
	CMPQ	AX, R12
	JEQ	done
	TESTQ	AX, AX
	JG	reap		// someone else: look for more
	CMPQ	AX, $-ECHILD
	JEQ	fail		// no children, and the target was not among them

wait:
	// rt_sigtimedwait(&set, NULL, NULL, 8) returns the signal number.
	LEAQ	0(SP), DI
	XORQ	SI, SI
	XORQ	DX, DX
	MOVQ	$8, R10
	MOVQ	$SYS_rt_sigtimedwait, AX
	SYSCALL
	CMPQ	AX, $SIGCHLD
	JEQ	reap
	TESTQ	AX, AX
	JLE	wait		// EINTR (a stop and continue)
	// Forward it: kill(target, signal).
	MOVQ	R12, DI
	MOVQ	AX, SI
	MOVQ	$SYS_kill, AX
	SYSCALL
	JMP	wait

done:
	// Exit as a shell reports the target: its code, or 128+signal.
	MOVL	8(SP), AX
	MOVL	AX, DI
	ANDL	$0x7f, DI
	JNE	signaled
	SHRL	$8, AX
	ANDL	$0xff, AX
	MOVL	AX, DI
	JMP	exit
signaled:
	ADDL	$128, DI
	JMP	exit
fail:
	MOVL	$255, DI
exit:
	MOVQ	$SYS_exit_group, AX
	SYSCALL
	// Not reached. reaperEndMarker: "minirun reaper\x00\x00", where the
	// program's bytes end.
	BYTE	$0x6d; BYTE $0x69; BYTE $0x6e; BYTE $0x69; BYTE $0x72; BYTE $0x75; BYTE $0x6e; BYTE $0x20
	BYTE	$0x72; BYTE $0x65; BYTE $0x61; BYTE $0x70; BYTE $0x65; BYTE $0x72; BYTE $0x00; BYTE $0x00

// reaperProgramStart returns the address of reaperProgram.
TEXT ·reaperProgramStart(SB), NOSPLIT, $0-8
	LEAQ	reaperProgram<>(SB), AX
	MOVQ	AX, ret+0(FP)
	RET

// reaperCatch is the signal handler that stands in for Go's while the
// process hands over to the reaper. Signals are blocked on the thread that
// will run execveat; whichever other thread a signal lands on, this sends
// it on to that thread, where it stays pending across the execveat for the
// reaper to forward: tgkill(reaperTgid, reaperTid, sig). It runs on the
// thread's signal stack and touches nothing else.
TEXT reaperCatch<>(SB), NOSPLIT|NOFRAME, $0
	MOVL	DI, DX
	MOVQ	·reaperTgid(SB), DI
	MOVQ	·reaperTid(SB), SI
	MOVQ	$234, AX	// SYS_tgkill
	SYSCALL
	RET

// reaperRestorer returns from reaperCatch: rt_sigreturn.
TEXT reaperRestorer<>(SB), NOSPLIT|NOFRAME, $0
	MOVQ	$15, AX
	SYSCALL
	INT	$3

// reaperCatcher returns the addresses of reaperCatch and reaperRestorer.
TEXT ·reaperCatcher(SB), NOSPLIT, $0-16
	LEAQ	reaperCatch<>(SB), AX
	MOVQ	AX, handler+0(FP)
	LEAQ	reaperRestorer<>(SB), AX
	MOVQ	AX, restorer+8(FP)
	RET
