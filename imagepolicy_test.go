// imagepolicy_test.go tests the image allow-lists of imagepolicy.go: the
// component-wise path comparison, the re-open check on a real tree, and the
// owner and group lists.
package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

func TestPathBeneath(t *testing.T) {
	for _, c := range []struct {
		dir, p, rel string
		ok          bool
	}{
		{"/srv/images", "/srv/images/x.sif", "x.sif", true},
		{"/srv/images", "/srv/images/a/b/x.sif", "a/b/x.sif", true},
		{"/srv/images", "/srv/images2/x.sif", "", false}, // string prefix, not a component
		{"/srv/images", "/srv/image", "", false},
		{"/srv/images", "/srv/images", "", false}, // the directory itself is not an image below it
		{"/srv/images", "/srv/images/../images2/x.sif", "", false},
		{"/srv/images", "/srv/images/./x.sif", "", false},
		{"/srv/images", "/srv/images/x.sif/", "", false},
		{"/srv/images", "/srv/images//x.sif", "", false},
		{"/srv/images/", "/srv/images/x.sif", "x.sif", true}, // trailing slash on the listed dir
		{"/srv/images//", "/srv/images2/x.sif", "", false},
		{"/srv/images", "srv/images/x.sif", "", false},
		{"/srv/images", "pipe:[1234]", "", false},
		{"/srv/images", "/srv/images/x.sif (deleted)", "x.sif (deleted)", true}, // the re-open then fails
		{"/", "/x.sif", "x.sif", true},
		{"/", "/", "", false},
		{"srv/images", "/srv/images/x.sif", "", false},
	} {
		rel, ok := pathBeneath(c.dir, c.p)
		if rel != c.rel || ok != c.ok {
			t.Errorf("pathBeneath(%q, %q) = %q, %v; want %q, %v", c.dir, c.p, rel, ok, c.rel, c.ok)
		}
	}
}

// policyTree builds, under /run (root-owned 0755 on every distribution),
//
//	base/images/x.sif, base/images/sub/y.sif, base/images/escape -> ../images2/x.sif,
//	base/images2/x.sif, base/open/z.sif (open is 0777)
//
// and returns base.
func policyTree(t *testing.T) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: the listed directories must be root-owned (CI runs as root)")
	}
	base, err := os.MkdirTemp("/run", "minirun-imagepolicy-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(base) })
	for _, d := range []string{"images", "images/sub", "images2", "open"} {
		if err := os.Mkdir(filepath.Join(base, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for _, f := range []string{"images/x.sif", "images/sub/y.sif", "images2/x.sif", "open/z.sif"} {
		if err := os.WriteFile(filepath.Join(base, f), []byte("image\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Chmod(base, 0o755); err != nil { // MkdirTemp makes 0700
		t.Fatal(err)
	}
	if err := os.Chmod(filepath.Join(base, "open"), 0o777); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("../images2/x.sif", filepath.Join(base, "images/escape")); err != nil {
		t.Fatal(err)
	}
	return base
}

func openForPolicy(t *testing.T, path string) (*os.File, *unix.Stat_t) {
	t.Helper()
	f, err := os.Open(path) // follows links, as the caller's open would
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		t.Fatal(err)
	}
	return f, &st
}

func TestCheckImagePolicyPaths(t *testing.T) {
	base := policyTree(t)
	user := caller{uid: 1000, gid: 1000}
	cfgFor := func(dirs ...string) config {
		c := defaultConfig()
		c.limitContainerPaths = dirs
		return c
	}
	images := filepath.Join(base, "images")
	for _, c := range []struct {
		name  string
		image string
		dirs  []string
		ok    bool
		frag  string
	}{
		{"inside", "images/x.sif", []string{images}, true, ""},
		{"nested", "images/sub/y.sif", []string{images}, true, ""},
		{"directory image", "images/sub", []string{images}, true, ""},
		{"second listed dir", "images2/x.sif", []string{"/nonexistent", filepath.Join(base, "images2")}, true, ""},
		{"sibling with longer name", "images2/x.sif", []string{images}, false, "limit_container_paths"},
		{"dotdot", "images/../images2/x.sif", []string{images}, false, "images2/x.sif"},
		{"symlink out", "images/escape", []string{images}, false, "images2/x.sif"},
		{"listed dir itself", "images", []string{images}, false, ""},
		{"group-writable listed dir", "open/z.sif", []string{filepath.Join(base, "open")}, false, "must not be writable"},
	} {
		t.Run(c.name, func(t *testing.T) {
			f, st := openForPolicy(t, filepath.Join(base, c.image))
			err := checkImagePolicy(f, st, c.image, user, cfgFor(c.dirs...), nil)
			if c.ok {
				if err != nil {
					t.Fatalf("want allowed, got %v", err)
				}
				return
			}
			if classOf(err) != ePolicy {
				t.Fatalf("want E_POLICY, got %v (%s)", err, classOf(err))
			}
			if !strings.Contains(err.Error(), c.frag) || !strings.Contains(err.Error(), c.image) {
				t.Errorf("message %q should name the image and %q", err, c.frag)
			}
		})
	}
	t.Run("root is exempt", func(t *testing.T) {
		f, st := openForPolicy(t, filepath.Join(base, "images2/x.sif"))
		if err := checkImagePolicy(f, st, "x", caller{}, cfgFor(images), nil); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("no list", func(t *testing.T) {
		f, st := openForPolicy(t, filepath.Join(base, "images2/x.sif"))
		if err := checkImagePolicy(f, st, "x", user, defaultConfig(), nil); err != nil {
			t.Fatal(err)
		}
	})
	// The kernel's path still says images/x.sif, but that name now holds
	// another file: only the re-open's inode check catches it.
	t.Run("replaced after open", func(t *testing.T) {
		p := filepath.Join(images, "r.sif")
		if err := os.WriteFile(p, []byte("a"), 0o644); err != nil {
			t.Fatal(err)
		}
		f, st := openForPolicy(t, p)
		if err := os.Rename(p, filepath.Join(base, "images2", "r.sif")); err != nil {
			t.Fatal(err)
		}
		// readlink now reports images2/r.sif: outside.
		if err := checkImagePolicy(f, st, "r.sif", user, cfgFor(images), nil); classOf(err) != ePolicy {
			t.Fatalf("moved out: want E_POLICY, got %v", err)
		}
		// Unlinked: readlink says ".../d.sif (deleted)"; plant that very name.
		d := filepath.Join(images, "d.sif")
		if err := os.WriteFile(d, []byte("a"), 0o644); err != nil {
			t.Fatal(err)
		}
		f, st = openForPolicy(t, d)
		os.Remove(d)
		if err := os.WriteFile(d+" (deleted)", []byte("b"), 0o644); err != nil {
			t.Fatal(err)
		}
		err := checkImagePolicy(f, st, "d.sif", user, cfgFor(images), nil)
		if classOf(err) != ePolicy || !strings.Contains(err.Error(), "no longer this image") {
			t.Fatalf("deleted and replaced: want E_POLICY naming the inode mismatch, got %v", err)
		}
	})
	t.Run("listed dir below a sticky 1777 directory", func(t *testing.T) {
		dir, err := os.MkdirTemp("/tmp", "minirun-imagepolicy-")
		if err != nil {
			t.Fatal(err)
		}
		defer os.RemoveAll(dir)
		os.Chmod(dir, 0o755)
		if err := os.WriteFile(filepath.Join(dir, "t.sif"), []byte("x"), 0o644); err != nil {
			t.Fatal(err)
		}
		f, st := openForPolicy(t, filepath.Join(dir, "t.sif"))
		err = checkImagePolicy(f, st, "t.sif", user, cfgFor(dir), nil)
		if classOf(err) != ePolicy || !strings.Contains(err.Error(), "/tmp") {
			t.Fatalf("want E_POLICY naming /tmp, got %v", err)
		}
	})
	t.Run("listed dir reached through a symlink", func(t *testing.T) {
		link := filepath.Join(base, "via")
		if err := os.Symlink("images", link); err != nil {
			t.Fatal(err)
		}
		f, st := openForPolicy(t, filepath.Join(images, "x.sif"))
		err := checkImagePolicy(f, st, "x.sif", user, cfgFor(link), nil)
		if classOf(err) != ePolicy {
			t.Fatalf("want E_POLICY, got %v", err)
		}
	})
}

func TestCheckImagePolicyOwners(t *testing.T) {
	dir := t.TempDir()
	img := filepath.Join(dir, "img.sif")
	if err := os.WriteFile(img, []byte("image\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	f, st := openForPolicy(t, img)
	st.Uid, st.Gid = 1000, 100 // what fstat would say of alice's image
	files := map[string][]byte{
		"passwd": []byte("root:x:0:0:root:/root:/bin/sh\nalice:x:1000:1000::/home/alice:/bin/sh\nalias:x:1000:1000::/home/alice:/bin/sh\nbob:x:1001:1001::/home/bob:/bin/sh\n"),
		"group":  []byte("root:x:0:\nusers:x:100:\nstaff:x:50:\n"),
	}
	names := &nameLookup{passwdPath: "passwd", groupPath: "group", read: func(p string, _ int64) ([]byte, error) { return files[p], nil }}
	user := caller{uid: 1001, gid: 1001}
	for _, c := range []struct {
		name           string
		owners, groups []string
		ok             bool
		frag           string
	}{
		{"owner listed", []string{"bob", "alice"}, nil, true, ""},
		{"second name of the uid", []string{"alias"}, nil, true, ""},
		{"owner not listed", []string{"root"}, nil, false, "limit_container_owners"},
		{"unknown name", []string{"nosuch"}, nil, false, "limit_container_owners"},
		{"group listed", nil, []string{"users"}, true, ""},
		{"group not listed", nil, []string{"root", "staff"}, false, "limit_container_groups"},
		{"both, group fails", []string{"alice"}, []string{"root"}, false, "limit_container_groups"},
	} {
		t.Run(c.name, func(t *testing.T) {
			cfg := defaultConfig()
			cfg.limitContainerOwners, cfg.limitContainerGroups = c.owners, c.groups
			err := checkImagePolicy(f, st, "img.sif", user, cfg, names)
			if c.ok {
				if err != nil {
					t.Fatalf("want allowed, got %v", err)
				}
				return
			}
			if classOf(err) != ePolicy || !strings.Contains(err.Error(), c.frag) || !strings.Contains(err.Error(), "img.sif") {
				t.Fatalf("want E_POLICY naming img.sif and %s, got %v", c.frag, err)
			}
		})
	}
	t.Run("untrusted passwd stays E_CONFIG", func(t *testing.T) {
		bad := &nameLookup{passwdPath: "passwd", groupPath: "group", read: func(p string, _ int64) ([]byte, error) {
			return nil, untrusted(p, "must be owned by root")
		}}
		cfg := defaultConfig()
		cfg.limitContainerOwners = []string{"alice"}
		if err := checkImagePolicy(f, st, "img.sif", user, cfg, bad); classOf(err) != eConfig {
			t.Fatalf("want E_CONFIG, got %v", err)
		}
	})
	t.Run("getent answers for names not in the files", func(t *testing.T) {
		withGetent := &nameLookup{passwdPath: "passwd", groupPath: "group",
			read: func(p string, _ int64) ([]byte, error) { return files[p], nil },
			getent: func(db, key string) ([]byte, int, error) {
				if db == "passwd" && key == "ldapalice" {
					return []byte("ldapalice:*:1000:1000::/home/a:/bin/sh\n"), 0, nil
				}
				return nil, 2, nil
			}}
		cfg := defaultConfig()
		cfg.limitContainerOwners = []string{"ldapalice"}
		if err := checkImagePolicy(f, st, "img.sif", user, cfg, withGetent); err != nil {
			t.Fatal(err)
		}
		cfg.limitContainerOwners = []string{"ldapbob"}
		if err := checkImagePolicy(f, st, "img.sif", user, cfg, withGetent); classOf(err) != ePolicy {
			t.Fatalf("want E_POLICY, got %v", err)
		}
	})
}
