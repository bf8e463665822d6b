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
	if strings.Contains(string(elf), string(reaperEndMarker)) {
		t.Fatal("the end marker was copied into the executable")
	}
}

// reaperTestChild is the test binary in the role of a process about to
// become the reaper: it starts `sh -c SCRIPT` and hands over to the reaper
// as the init and P0 do. Exit 99 means the reaper did not run.
func reaperTestChild(script string) {
	fwd := startForwarding()
	pid, err := fwd.startChild(func() (int, error) {
		return syscall.ForkExec("/bin/sh", []string{"sh", "-c", script}, &syscall.ProcAttr{
			Env: os.Environ(), Files: []uintptr{0, 1, 2}})
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(98)
	}
	os.Exit(fwd.waitFor(pid, func(int) int { return 99 }))
}

// TestReaper runs the reaper program for real: exit codes and deaths by
// signal come back as a shell shows them, each forwarded signal reaches
// the child, and what runs is small, and named (integration_test.go checks it is undumpable
// for the caller).
func TestReaper(t *testing.T) {
	if script := os.Getenv(reaperTestEnv); script != "" {
		reaperTestChild(script)
	}
	if reaperCode() == nil {
		t.Skip("no reaper program for this architecture: the init waits in Go")
	}
	start := func(t *testing.T, script string) (*exec.Cmd, *bufio.Reader) {
		t.Helper()
		cmd := exec.Command(os.Args[0], "-test.run=^TestReaper$")
		cmd.Env = append(os.Environ(), reaperTestEnv+"="+script)
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
	exitCode := func(t *testing.T, cmd *exec.Cmd) int {
		t.Helper()
		err := cmd.Wait()
		var ee *exec.ExitError
		if err != nil && !errors.As(err, &ee) {
			t.Fatal(err)
		}
		if ws := cmd.ProcessState.Sys().(syscall.WaitStatus); ws.Signaled() {
			t.Fatalf("the reaper itself died of %v", ws.Signal())
		}
		return cmd.ProcessState.ExitCode()
	}
	// ready waits for the child's line; becameReaper then waits for the
	// test binary to be the reaper.
	ready := func(t *testing.T, out *bufio.Reader) {
		t.Helper()
		if line, err := out.ReadString('\n'); line != "ready\n" {
			t.Fatalf("child said %q, %v", line, err)
		}
	}
	becameReaper := func(t *testing.T, cmd *exec.Cmd) {
		t.Helper()
		for i := 0; i < 200; i++ {
			if exe, _ := os.Readlink(fmt.Sprintf("/proc/%d/exe", cmd.Process.Pid)); strings.HasPrefix(exe, "/memfd:minirun-init") {
				return
			}
			time.Sleep(5 * time.Millisecond)
		}
		t.Fatal("the test binary never became the reaper")
	}

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
			cmd, _ := start(t, tc.script)
			if got := exitCode(t, cmd); got != tc.want {
				t.Fatalf("exit %d, want %d", got, tc.want)
			}
		})
	}

	// Each signal is sent as soon as the child can take it, while the
	// handover to the reaper may still be under way: none may be lost.
	for _, s := range forwardedSignals {
		sig := s.(syscall.Signal)
		name := strings.TrimPrefix(unix.SignalName(sig), "SIG")
		t.Run("forward-"+name, func(t *testing.T) {
			for round := 0; round < 5; round++ {
				cmd, out := start(t, "trap 'exit 42' "+name+"; echo ready; while :; do sleep 0.02; done")
				ready(t, out)
				if err := cmd.Process.Signal(sig); err != nil {
					t.Fatal(err)
				}
				if got := exitCode(t, cmd); got != 42 {
					t.Fatalf("round %d: after %v the child exited %d, want 42 (its trap)", round, sig, got)
				}
			}
		})
	}

	t.Run("process", func(t *testing.T) {
		cmd, out := start(t, "echo ready; exec sleep 10")
		ready(t, out)
		becameReaper(t, cmd)
		pid := cmd.Process.Pid
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
		if got := exitCode(t, cmd); got != 128+15 {
			t.Errorf("sleep killed by a forwarded SIGTERM: exit %d, want 143", got)
		}
	})
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
