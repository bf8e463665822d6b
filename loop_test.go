// loop_test.go tests the loop-device caps of loop.go (max_loop_per_user,
// max_loop_devices): counted by the owner tag, checked before a new device
// exists, and free for a shared device that is reused.
package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// loopTestImage is a 1 MiB file to attach, for tests that need root and
// loop devices.
func loopTestImage(t *testing.T) *os.File {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root for loop devices (CI runs as root)")
	}
	if _, err := os.Stat("/dev/loop-control"); err != nil {
		t.Skip("no /dev/loop-control in this environment")
	}
	if err := ensureStateDirs(); err != nil {
		t.Fatal(err)
	}
	img := filepath.Join(t.TempDir(), "img")
	if err := os.WriteFile(img, make([]byte, 1<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(img)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

// loopTestKey is the shared-loop index record for the first 4096 bytes of f.
func loopTestKey(t *testing.T, f *os.File) string {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		t.Fatal(err)
	}
	return loopIndexKey(&st, 0, 4096)
}

func TestLoopLimits(t *testing.T) {
	f := loopTestImage(t)
	// A uid no other test uses, so concurrent runs do not disturb the counts.
	uid := 3_900_000 + os.Getpid()%100_000
	user := loopLimits{perUser: 1, total: -1}

	mine, _ := countMinirunLoops(uid)
	if mine != 0 {
		t.Fatalf("uid %d already has %d devices", uid, mine)
	}
	if _, err := attachLoopWithin(f, 0, 4096, uid, loopLimits{perUser: 0, total: -1}); classOf(err) != eResource || !strings.Contains(err.Error(), "loop limit") {
		t.Fatalf("max_loop_per_user = 0: want E_RESOURCE loop limit, got %v", err)
	}
	if _, err := attachSharedLoop(f, 0, 4096, uid, loopLimits{perUser: -1, total: 0, root: true}); classOf(err) != eResource {
		t.Fatalf("max_loop_devices = 0 applies to root too: want E_RESOURCE, got %v", err)
	}
	if mine, _ := countMinirunLoops(uid); mine != 0 {
		t.Fatalf("a refused attach left %d devices", mine)
	}

	first, err := attachSharedLoop(f, 0, 4096, uid, user)
	if err != nil {
		t.Fatal(err)
	}
	defer first.Close()
	if mine, all := countMinirunLoops(uid); mine != 1 || all < 1 {
		t.Fatalf("after one attach: mine %d all %d", mine, all)
	}
	// The same bytes again: the shared device is reused and costs nothing.
	again, err := attachSharedLoop(f, 0, 4096, uid, user)
	if err != nil {
		t.Fatalf("reuse at the limit: %v", err)
	}
	defer again.Close()
	if again.Name() != first.Name() {
		t.Errorf("reuse gave %s, want %s", again.Name(), first.Name())
	}
	// Different bytes need a new device: over the limit.
	if _, err := attachSharedLoop(f, 4096, 4096, uid, user); classOf(err) != eResource {
		t.Fatalf("second device at max_loop_per_user = 1: want E_RESOURCE, got %v", err)
	}
	if _, err := attachLoopWithin(f, 4096, 4096, uid, user); classOf(err) != eResource {
		t.Fatalf("direct attach at the limit: want E_RESOURCE, got %v", err)
	}
	// Root is not held to the per-user cap; another user is not charged for ours.
	for _, c := range []struct {
		uid int
		lim loopLimits
	}{{uid, loopLimits{perUser: 1, total: -1, root: true}}, {uid + 1, user}} {
		dev, err := attachLoopWithin(f, 8192, 4096, c.uid, c.lim)
		if err != nil {
			t.Fatalf("uid %d %+v: %v", c.uid, c.lim, err)
		}
		dev.Close()
	}
}

// TestSharedLoopRecord: the registry names the device of each attach; a
// record that already names it is left as it is, a wrong one is replaced.
func TestSharedLoopRecord(t *testing.T) {
	f := loopTestImage(t)
	key := loopTestKey(t, f)
	t.Cleanup(func() { os.Remove(key) })
	attach := func() string {
		t.Helper()
		dev, err := attachSharedLoop(f, 0, 4096, 0, noLoopLimits)
		if err != nil {
			t.Fatal(err)
		}
		name := dev.Name()
		dev.Close() // autoclear: unmounted and closed, the device goes
		return name
	}
	// The record's name, and what tells one symlink from its replacement.
	type identity struct {
		ino   uint64
		ctime unix.Timespec
	}
	recordOf := func() (string, identity) {
		t.Helper()
		name, err := os.Readlink(key)
		var lst unix.Stat_t
		if err != nil || unix.Lstat(key, &lst) != nil {
			t.Fatalf("no record for the attach: %v", err)
		}
		return name, identity{uint64(lst.Ino), lst.Ctim}
	}

	// A stale record naming no device of ours is replaced.
	os.Remove(key)
	if err := os.Symlink("/dev/loop-gone", key); err != nil {
		t.Fatal(err)
	}
	name := attach()
	if got, _ := recordOf(); got != name {
		t.Fatalf("record %q after attaching %s", got, name)
	}
	// Attach until the kernel hands out the recorded device again (the
	// lowest free index: usually at once): that record is not rewritten.
	for i := 0; i < 20; i++ {
		before, id := recordOf()
		time.Sleep(2 * time.Millisecond) // a new symlink would get a later ctime
		name := attach()
		after, id2 := recordOf()
		if after != name {
			t.Fatalf("record %q after attaching %s", after, name)
		}
		if name == before {
			if id2 != id {
				t.Errorf("the record already named %s and was written again", name)
			}
			return
		}
	}
	t.Errorf("in 20 attaches the kernel never handed out the recorded device again")
}

// TestTrimLoopIndex: past its size limit the index directory is replaced by
// an empty one, root-only like the original; under the limit it is left
// alone.
func TestTrimLoopIndex(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "loops")
	if err := os.Mkdir(dir, 0700); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 300; i++ {
		if err := os.Symlink("/dev/loop"+fmt.Sprint(i), filepath.Join(dir, fmt.Sprintf("2049-%d-0-4096", 1000+i))); err != nil {
			t.Fatal(err)
		}
	}
	var st unix.Stat_t
	if err := unix.Lstat(dir, &st); err != nil {
		t.Fatal(err)
	}
	if trimLoopIndex(dir, st.Size) {
		t.Fatal("trimmed at exactly its limit")
	}
	if names, _ := os.ReadDir(dir); len(names) != 300 {
		t.Fatalf("%d records left under the limit, want 300", len(names))
	}
	if !trimLoopIndex(dir, st.Size-1) {
		t.Fatal("not trimmed past its limit")
	}
	names, err := os.ReadDir(dir)
	if err != nil || len(names) != 0 {
		t.Fatalf("after the trim: %d records, %v", len(names), err)
	}
	if err := unix.Lstat(dir, &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFDIR || st.Mode&0777 != 0700 {
		t.Fatalf("new index directory mode %o, %v", st.Mode, err)
	}
	if _, err := os.Lstat(dir + ".old"); !os.IsNotExist(err) {
		t.Fatalf("the old directory is left: %v", err)
	}
}

// TestSharedLoopIndexTrimmed: a launch that writes a record first trims an
// index past its limit, so records of images run long ago do not pile up,
// and the launch's own record survives the trim.
func TestSharedLoopIndexTrimmed(t *testing.T) {
	f := loopTestImage(t)
	key := loopTestKey(t, f)
	stale := filepath.Join(loopIndexDir, fmt.Sprintf("trim-test-%d", os.Getpid()))
	if err := os.Symlink("/dev/loop-gone", stale); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.Remove(stale); os.Remove(key) })
	saved := loopIndexMaxBytes
	loopIndexMaxBytes = 0 // any directory holding a record is past it
	t.Cleanup(func() { loopIndexMaxBytes = saved })

	dev, err := attachSharedLoop(f, 0, 4096, 0, noLoopLimits)
	if err != nil {
		t.Fatal(err)
	}
	name := dev.Name()
	dev.Close()
	if _, err := os.Lstat(stale); !os.IsNotExist(err) {
		t.Fatalf("a record of another image survived the trim: %v", err)
	}
	if got, err := os.Readlink(key); err != nil || got != name {
		t.Fatalf("the launch's own record: %q, %v; want %s", got, err, name)
	}
}

// ensureRootDirs makes what is missing and accepts only root-owned 0700
// directories, whether it just made them or found them.
func TestEnsureRootDirs(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: the directories must be root-owned")
	}
	base := t.TempDir()
	a, b := filepath.Join(base, "a"), filepath.Join(base, "a", "b")
	if err := ensureRootDirs(a, b); err != nil {
		t.Fatalf("fresh: %v", err)
	}
	for _, d := range []string{a, b} {
		if st, err := os.Lstat(d); err != nil || !st.IsDir() || st.Mode().Perm() != 0700 {
			t.Fatalf("%s: %v, %v", d, st.Mode(), err)
		}
	}
	if err := ensureRootDirs(a, b); err != nil {
		t.Fatalf("existing: %v", err)
	}
	for name, spoil := range map[string]func(string) error{
		"group-readable": func(d string) error { return os.Chmod(d, 0750) },
		"not-root":       func(d string) error { return os.Chown(d, 65534, 0) },
		"a-file":         func(d string) error { os.Remove(d); return os.WriteFile(d, nil, 0600) },
		"a-symlink":      func(d string) error { os.Remove(d); return os.Symlink(base, d) },
	} {
		d := filepath.Join(base, name)
		if err := ensureRootDirs(d); err != nil {
			t.Fatal(err)
		}
		if err := spoil(d); err != nil {
			t.Fatal(err)
		}
		if err := ensureRootDirs(d); classOf(err) != eSystem {
			t.Errorf("%s: %v, want E_SYSTEM", name, err)
		}
	}
}
