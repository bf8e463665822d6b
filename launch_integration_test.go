package main

// Integration tests for launch behaviour added beside integration_test.go:
// signal dispositions, shared loop devices and user_writable_images. They
// reuse its installed setuid binary and test user.

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// itWithConfig writes minirun.toml into the install's configuration
// directory for the duration of the test.
func itWithConfig(t *testing.T, e *itEnv, toml string) {
	t.Helper()
	dir := filepath.Join(e.prefix, "etc", "minirun")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	os.Chmod(dir, 0o755)
	file := filepath.Join(dir, "minirun.toml")
	if err := os.WriteFile(file, []byte(toml), 0o644); err != nil {
		t.Fatal(err)
	}
	os.Chmod(file, 0o644)
	t.Cleanup(func() { os.Remove(file) })
}

// itLoopsBacking counts attached loop devices whose backing file is path.
func itLoopsBacking(path string) int {
	files, _ := filepath.Glob("/sys/block/loop*/loop/backing_file")
	n := 0
	for _, f := range files {
		if b, _ := os.ReadFile(f); strings.TrimSpace(string(b)) == path {
			n++
		}
	}
	return n
}

// The payload starts with no signal blocked and no signal ignored that its
// caller did not ignore (minirun ignores SIGQUIT while it sets up; make, for
// one, starts its children with signals 32 and 33 ignored).
func TestIntegrationSignalsRestored(t *testing.T) {
	e := itIntegration(t)
	status, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Fatal(err)
	}
	callerIgnored := itSigMask(t, string(status), "SigIgn")
	if callerIgnored&(1<<(3-1)) != 0 {
		t.Skip("the test process itself ignores SIGQUIT; run it from a normal shell")
	}
	for _, w := range itCallers {
		for _, mode := range [][]string{nil, {"--pid"}} {
			itSub(t, w.String()+strings.Join(mode, ""), func(t *testing.T) {
				args := append(append([]string{"exec"}, mode...), e.sqfs, "/bin/grep", "-E", "^Sig(Ign|Blk)", "/proc/self/status")
				out := e.ok(t, itRunOpts{as: w}, args...)
				if extra := itSigMask(t, out, "SigIgn") &^ callerIgnored; extra != 0 {
					t.Errorf("payload ignores signals %#x that its caller did not", extra)
				}
				if blocked := itSigMask(t, out, "SigBlk"); blocked != 0 {
					t.Errorf("payload starts with signals %#x blocked", blocked)
				}
			})
		}
	}
}

// itSigMask reads a hex signal mask line ("SigIgn:\t…") from status text.
func itSigMask(t *testing.T, status, field string) uint64 {
	t.Helper()
	for _, line := range strings.Split(status, "\n") {
		if v, ok := strings.CutPrefix(line, field+":"); ok {
			n, err := strconv.ParseUint(strings.TrimSpace(v), 16, 64)
			if err != nil {
				t.Fatalf("parse %q: %v", line, err)
			}
			return n
		}
	}
	t.Fatalf("no %s line in %q", field, status)
	return 0
}

// TestIntegrationNoNetpoller: a launch never starts the Go runtime's
// netpoller. os.Open, os.NewFile of a non-blocking descriptor and
// crypto/rand's first read (through its warning timer) each would: the
// first one costs epoll_create1 and eventfd2, every later file an epoll_ctl,
// and the scheduler then polls epoll whenever a thread idles (issue 6:
// nothing before execve that the launch does not need). strace -u runs the
// setuid binary as the user with its setuid bit in force.
// itStrace runs the setuid install with args as w under strace -f,
// tracing the system calls named in filter, and returns the trace.
func itStrace(t *testing.T, e *itEnv, w itWho, filter string, args ...string) string {
	t.Helper()
	strace, err := exec.LookPath("strace")
	if err != nil {
		t.Fatalf("strace not found (run 'make deps'): %v", err)
	}
	trace := filepath.Join(t.TempDir(), "trace")
	sargs := []string{"-f", "-qq", "-e", "trace=" + filter, "-o", trace}
	if w == itAsUser {
		sargs = append(sargs, "-u", e.user.name)
	}
	sargs = append(append(sargs, e.suid), args...)
	cmd := exec.Command(strace, sargs...)
	cmd.Dir = "/"
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("strace %q: %v\n%s", sargs, err, out)
	}
	text, err := os.ReadFile(trace)
	if err != nil {
		t.Fatal(err)
	}
	return string(text)
}

func TestIntegrationNoNetpoller(t *testing.T) {
	e := itIntegration(t)
	for _, w := range []itWho{itAsRoot, itAsUser} {
		for _, c := range []struct {
			name string
			args []string
		}{
			{"sif", []string{"exec", e.sifTool, "/bin/true"}},
			{"directory", []string{"exec", e.rootfs, "/bin/true"}},
			{"pid", []string{"exec", "--pid", e.sqfs, "/bin/true"}},
		} {
			itSub(t, w.String()+"/"+c.name, func(t *testing.T) {
				text := itStrace(t, e, w, "epoll_create,epoll_create1,eventfd2,execve", c.args...)
				if !strings.Contains(text, `execve("/bin/true"`) {
					t.Fatalf("the trace did not follow the launch to the payload:\n%s", text)
				}
				for _, line := range strings.Split(text, "\n") {
					if strings.Contains(line, "epoll_create") || strings.Contains(line, "eventfd2") {
						t.Errorf("the launch started the netpoller: %s", line)
					}
				}
			})
		}
	}
}

// A user's launch of a squashfs image reads the image's /etc/passwd and
// /etc/group ahead on another thread (prefetchAccountFiles), so the loop
// device's round trips overlap with the mounts the exec thread makes; a
// root launch, which leaves both files as they are, reads neither, and
// neither does a launch of a directory, whose files are in the page cache.
func TestIntegrationAccountFilesPrefetched(t *testing.T) {
	e := itIntegration(t)
	for _, c := range []struct {
		w     itWho
		image string
		ahead bool
	}{{itAsRoot, e.sqfs, false}, {itAsUser, e.sqfs, true}, {itAsUser, e.rootfs, false}} {
		w := c.w
		itSub(t, w.String()+"/"+filepath.Base(c.image), func(t *testing.T) {
			text := itStrace(t, e, w, "openat2,execve", "exec", c.image, "/bin/true")
			execTID := ""
			readers := map[string]map[string]bool{} // file -> threads that opened it in the image
			for _, line := range strings.Split(text, "\n") {
				tid, call, _ := strings.Cut(line, " ") // strace pads the id: "4913  openat2(…"
				call = strings.TrimSpace(call)
				if strings.HasPrefix(call, `execve("/bin/true"`) {
					execTID = tid
				}
				for _, f := range []string{"/etc/passwd", "/etc/group"} {
					if strings.HasPrefix(call, "openat2(") && strings.Contains(call, `"`+f+`"`) && strings.Contains(call, "RESOLVE_IN_ROOT") {
						if readers[f] == nil {
							readers[f] = map[string]bool{}
						}
						readers[f][tid] = true
					}
				}
			}
			if execTID == "" {
				t.Fatalf("the trace did not follow the launch to the payload:\n%s", text)
			}
			for _, f := range []string{"/etc/passwd", "/etc/group"} {
				other := false
				for tid := range readers[f] {
					other = other || tid != execTID
				}
				switch {
				case w == itAsRoot && len(readers[f]) > 0:
					t.Errorf("a root launch opened the image's %s (threads %v)", f, readers[f])
				case w == itAsUser && c.ahead && (!readers[f][execTID] || !other):
					t.Errorf("the image's %s was opened by threads %v; want the exec thread %s and one other", f, readers[f], execTID)
				case w == itAsUser && !c.ahead && (!readers[f][execTID] || other):
					t.Errorf("the image's %s was opened by threads %v; want the exec thread %s alone", f, readers[f], execTID)
				}
			}
		})
	}
}

// Root runs with the image's own account files, so its launch reads only
// the host's passwd (for its home) and never the host's group file; a
// user's launch reads both to add its entries.
func TestIntegrationRootSkipsHostGroupFile(t *testing.T) {
	e := itIntegration(t)
	for _, w := range []itWho{itAsRoot, itAsUser} {
		itSub(t, w.String(), func(t *testing.T) {
			text := itStrace(t, e, w, "openat", "exec", e.rootfs, "/bin/true")
			opened := map[string]bool{}
			for _, line := range strings.Split(text, "\n") {
				for _, f := range []string{"passwd", "group"} {
					// The trusted walk opens the file relative to /etc's descriptor.
					if strings.Contains(line, "openat(") && strings.Contains(line, `, "`+f+`", `) {
						opened[f] = true
					}
				}
			}
			if !opened["passwd"] {
				t.Fatalf("the host's passwd was not read; the trace may not show what it should:\n%s", text)
			}
			if opened["group"] != (w == itAsUser) {
				t.Errorf("the host's group file read: %v, want %v", opened["group"], w == itAsUser)
			}
		})
	}
}

// With --pid the init's parent-death signal, which the credential drop
// clears, must be re-armed on the thread that then execs the reaper: it
// belongs to a thread, and only the exec'ing one survives the handover.
// Armed on another, the reaper (and the container) outlived a killed P0
// (catalogue E1, TestAdversarialKill). Under strace the init's goroutine
// moved between threads in about one launch in ten before the fix.
func TestIntegrationPidInitArmsTheExecThread(t *testing.T) {
	e := itIntegration(t)
	for i := range 30 {
		text := itStrace(t, e, itAsUser, "prctl,execveat", "exec", "--pid", e.rootfs, "/bin/true")
		lines := strings.Split(text, "\n")
		armed := -1
		for j, line := range lines {
			if strings.Contains(line, "PR_SET_PDEATHSIG") {
				armed = j
			}
		}
		if armed < 0 {
			t.Fatalf("launch %d: no PR_SET_PDEATHSIG in the trace:\n%s", i, text)
		}
		tid, _, _ := strings.Cut(lines[armed], " ")
		execs := false
		for _, line := range lines[armed+1:] {
			if id, call, _ := strings.Cut(line, " "); id == tid && strings.HasPrefix(strings.TrimSpace(call), "execveat(") {
				execs = true
			}
		}
		if !execs {
			t.Fatalf("launch %d: the init re-armed its parent-death signal on thread %s, which did not exec the reaper:\n%s", i, tid, text)
		}
	}
}

// Concurrent launches of one image share one loop device (the default);
// with shared_loop_devices = false each launch attaches its own.
func TestIntegrationSharedLoopDevices(t *testing.T) {
	e := itIntegration(t)
	for _, tc := range []struct {
		config string
		want   int
	}{{"", 1}, {"shared_loop_devices = false\n", 6}} {
		itSub(t, "want-"+string(rune('0'+tc.want)), func(t *testing.T) {
			itWithConfig(t, e, tc.config)
			const n = 6
			var wg sync.WaitGroup
			errs := make(chan string, n)
			for i := 0; i < n; i++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
					defer cancel()
					cmd := e.command(ctx, itRunOpts{as: itAsUser}, "exec", e.sqfs, "/bin/sleep", "2")
					if out, err := cmd.CombinedOutput(); err != nil {
						errs <- string(out) + err.Error()
					}
				}()
			}
			// Every launch is past its attach well within the sleep.
			time.Sleep(1200 * time.Millisecond)
			got := itLoopsBacking(e.sqfs)
			wg.Wait()
			close(errs)
			for msg := range errs {
				t.Errorf("launch failed: %s", msg)
			}
			if got != tc.want {
				t.Errorf("%d concurrent launches used %d loop devices, want %d", n, got, tc.want)
			}
		})
	}
}

// An image the caller can modify is run, refused or copied into sealed
// memory, as user_writable_images says; images the caller cannot modify
// are unaffected.
func TestIntegrationUserWritableImages(t *testing.T) {
	e := itIntegration(t)
	mine := filepath.Join(e.user.home, "mine.sqfs")
	if err := itCopyFile(e.sqfs, mine, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(mine, int(e.user.uid), int(e.user.gid)); err != nil {
		t.Fatal(err)
	}
	defer os.Remove(mine)
	user := itRunOpts{as: itAsUser}

	itSub(t, "allow", func(t *testing.T) {
		if out := e.ok(t, user, "exec", mine, "cat", "/MARKER"); strings.TrimSpace(out) != "minirun-test" {
			t.Errorf("got %q", out)
		}
	})
	itSub(t, "refuse", func(t *testing.T) {
		itWithConfig(t, e, "user_writable_images = \"refuse\"\n")
		itWantError(t, e.run(t, user, "exec", mine, "true"), "can be modified by you", "user_writable_images")
		if out := e.ok(t, user, "exec", e.sqfs, "cat", "/MARKER"); strings.TrimSpace(out) != "minirun-test" {
			t.Errorf("a root-owned image was affected: %q", out)
		}
		if out := e.ok(t, itRunOpts{as: itAsRoot}, "exec", mine, "cat", "/MARKER"); strings.TrimSpace(out) != "minirun-test" {
			t.Errorf("root was affected: %q", out)
		}
	})
	itSub(t, "sealed-copy", func(t *testing.T) {
		itWithConfig(t, e, "user_writable_images = \"sealed-copy\"\n")
		// While it runs, the device is backed by a sealed memfd, not by the
		// file the user can change.
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		cmd := e.command(ctx, user, "exec", mine, "/bin/sh", "-c", "cat /MARKER; sleep 2")
		var out strings.Builder
		cmd.Stdout = &out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		time.Sleep(1200 * time.Millisecond)
		fromFile, fromMemfd := itLoopsBacking(mine), itLoopsBacking("/memfd:minirun-sealed (deleted)")
		if err := cmd.Wait(); err != nil {
			t.Fatalf("sealed-copy run: %v", err)
		}
		if strings.TrimSpace(out.String()) != "minirun-test" {
			t.Errorf("got %q", out.String())
		}
		if fromFile != 0 || fromMemfd < 1 {
			t.Errorf("loop devices: %d backed by the user's file (want 0), %d by a sealed memfd (want ≥ 1)", fromFile, fromMemfd)
		}
	})
	itSub(t, "sealed-copy-too-large", func(t *testing.T) {
		itWithConfig(t, e, "user_writable_images = \"sealed-copy\"\nsealed_copy_max_mib = 0\n")
		itWantError(t, e.run(t, user, "exec", mine, "true"), "sealed_copy_max_mib")
	})
}
