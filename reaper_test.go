package main

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

const reaperTestEnv = "MINIRUN_TEST_REAPER_CHILD"

// TestReaperSignalSet holds reaper_amd64.s's REAPER_SIGNALS to the signals
// minirun forwards.
func TestReaperSignalSet(t *testing.T) {
	if got, want := reaperSignalSet(), uint64(0x8014a07); got != want {
		t.Fatalf("reaperSignalSet() = %#x; REAPER_SIGNALS in reaper_amd64.s is %#x", got, want)
	}
}

// TestReaperExecutable checks the ELF wrapper around the code.
func TestReaperExecutable(t *testing.T) {
	elf := reaperExecutable()
	if reaperCode() == nil {
		if elf != nil {
			t.Fatal("no reaper code but an executable")
		}
		t.Skip("no reaper program for this architecture: the init waits in Go")
	}
	if len(elf) > 1024 || !strings.HasPrefix(string(elf), "\x7fELF\x02\x01\x01") {
		t.Fatalf("reaper executable: %d bytes, header %q", len(elf), elf[:min(len(elf), 8)])
	}
	t.Logf("reaper: %d bytes of code, %d bytes of executable", len(reaperCode()), len(elf))
	if strings.Contains(string(elf), string(reaperEndMarker)) {
		t.Fatal("the end marker was copied into the executable")
	}
}

// reaperTestChild is the test binary in the role of a process about to
// become the reaper: it starts `sh -c SCRIPT` and hands over as the init
// and P0 do. In mode "reaper", exit 99 means the reaper did not run; in
// "no-memfd" and "bad-exec" the handover fails (no executable, or one the
// kernel refuses) and the child's status comes from the Go fallback.
func reaperTestChild(script, mode string) {
	var fwd *forwarder
	wait := func(int) int { return 99 }
	switch mode {
	case "reaper":
		fwd = startForwarding()
	case "no-memfd":
		fwd, wait = startForwardingTo(-1, unix.ENOSYS), waitStatus
	case "bad-exec":
		fd, err := unix.MemfdCreate("not-elf", unix.MFD_CLOEXEC)
		if err == nil {
			unix.Write(fd, []byte("not an executable\n"))
			unix.Fchmod(fd, 0111)
		}
		fwd, wait = startForwardingTo(fd, err), waitStatus
	}
	pid, err := fwd.startChild(func() (int, error) {
		return syscall.ForkExec("/bin/sh", []string{"sh", "-c", script}, &syscall.ProcAttr{
			Env: os.Environ(), Files: []uintptr{0, 1, 2}})
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(98)
	}
	os.Exit(fwd.waitFor(pid, wait))
}

// startReaperChild runs reaperTestChild(script, mode) in a new test process.
func startReaperChild(t *testing.T, script, mode string) (*exec.Cmd, *bufio.Reader) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestReaper$")
	cmd.Env = append(os.Environ(), reaperTestEnv+"="+script, reaperTestEnv+"_MODE="+mode)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	return cmd, bufio.NewReader(out)
}

// reaperChildExit waits for the child and returns its exit code.
func reaperChildExit(t *testing.T, cmd *exec.Cmd) int {
	t.Helper()
	err := cmd.Wait()
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		t.Fatal(err)
	}
	if ws := cmd.ProcessState.Sys().(syscall.WaitStatus); ws.Signaled() {
		t.Fatalf("the forwarding process itself died of %v", ws.Signal())
	}
	return cmd.ProcessState.ExitCode()
}

// reaperChildReady waits for the child's "ready" line.
func reaperChildReady(t *testing.T, out *bufio.Reader) {
	t.Helper()
	if line, err := out.ReadString('\n'); line != "ready\n" {
		t.Fatalf("child said %q, %v", line, err)
	}
}

// testForwarding checks, in mode, that exit codes and deaths by signal come
// back as a shell shows them and that each forwarded signal reaches the
// child, sent as soon as the child can take it, while the handover may
// still be under way: none may be lost.
func testForwarding(t *testing.T, mode string) {
	for _, tc := range []struct {
		script string
		want   int
	}{
		{"exit 0", 0},
		{"exit 7", 7},
		{"exit 255", 255},
		{"kill -KILL $$", 128 + 9},
		{"sleep 0.2; exit 3", 3},
	} {
		t.Run(strings.ReplaceAll(tc.script, " ", "_"), func(t *testing.T) {
			cmd, _ := startReaperChild(t, tc.script, mode)
			if got := reaperChildExit(t, cmd); got != tc.want {
				t.Fatalf("exit %d, want %d", got, tc.want)
			}
		})
	}
	for _, s := range forwardedSignals {
		sig := s.(syscall.Signal)
		name := strings.TrimPrefix(unix.SignalName(sig), "SIG")
		t.Run("forward-"+name, func(t *testing.T) {
			for round := 0; round < 5; round++ {
				cmd, out := startReaperChild(t, "trap 'exit 42' "+name+"; echo ready; while :; do sleep 0.02; done", mode)
				reaperChildReady(t, out)
				if err := cmd.Process.Signal(sig); err != nil {
					t.Fatal(err)
				}
				if got := reaperChildExit(t, cmd); got != 42 {
					t.Fatalf("round %d: after %v the child exited %d, want 42 (its trap)", round, sig, got)
				}
			}
		})
	}
}

// TestReaper runs the reaper program for real: testForwarding, and what
// runs is small and named (integration_test.go checks it is undumpable for
// the caller).
func TestReaper(t *testing.T) {
	if script := os.Getenv(reaperTestEnv); script != "" {
		reaperTestChild(script, os.Getenv(reaperTestEnv+"_MODE"))
	}
	if reaperCode() == nil {
		t.Skip("no reaper program for this architecture: the init waits in Go")
	}
	testForwarding(t, "reaper")
	t.Run("process", func(t *testing.T) {
		cmd, out := startReaperChild(t, "echo ready; exec sleep 10", "reaper")
		reaperChildReady(t, out)
		pid := cmd.Process.Pid
		for i := 0; ; i++ {
			if exe, _ := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid)); strings.HasPrefix(exe, "/memfd:minirun-init") {
				break
			}
			if i == 200 {
				t.Fatal("the test binary never became the reaper")
			}
			time.Sleep(5 * time.Millisecond)
		}
		comm, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
		if string(comm) != "minirun-init\n" {
			t.Errorf("comm %q, want minirun-init", comm)
		}
		status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
		if err != nil {
			t.Fatal(err)
		}
		if kib := procStatusKiB(string(status), "VmRSS"); kib <= 0 || kib > 256 {
			t.Errorf("VmRSS %d KiB, want a few dozen at most", kib)
		}
		if threads := procStatusKiB(string(status), "Threads"); threads != 1 {
			t.Errorf("%d threads, want 1", threads)
		}
		cmd.Process.Signal(syscall.SIGTERM)
		if got := reaperChildExit(t, cmd); got != 128+15 {
			t.Errorf("sleep killed by a forwarded SIGTERM: exit %d, want 143", got)
		}
	})
}

// TestReaperFallback: where the reaper cannot run (no executable memfd, an
// architecture without it) or the kernel refuses it at execveat, the
// process forwards and waits in Go, and no signal is lost in the switch
// back.
func TestReaperFallback(t *testing.T) {
	for _, mode := range []string{"no-memfd", "bad-exec"} {
		t.Run(mode, func(t *testing.T) {
			testForwarding(t, mode)
			cmd, out := startReaperChild(t, "echo ready; sleep 0.3; exit 5", mode)
			reaperChildReady(t, out)
			if exe, _ := os.Readlink(fmt.Sprintf("/proc/%d/exe", cmd.Process.Pid)); strings.Contains(exe, "memfd") {
				t.Errorf("%s: the process runs %s", mode, exe)
			}
			if got := reaperChildExit(t, cmd); got != 5 {
				t.Errorf("%s: exit %d, want 5", mode, got)
			}
		})
	}
}

// procStatusKiB returns the number after key: in /proc/PID/status.
func procStatusKiB(status, key string) int {
	for _, line := range strings.Split(status, "\n") {
		if v, ok := strings.CutPrefix(line, key+":"); ok {
			n, _ := strconv.Atoi(strings.Fields(v)[0])
			return n
		}
	}
	return -1
}
