// encrypted_integration_test.go owns the end-to-end tests of encrypted images
// (issue 4) through the setuid install of integration_test.go: passphrase and
// PEM images built by `minirun build`, cryptsetup-made images wrapped by the
// sif library and by siftool (spec §6.2), run as root and as an unprivileged
// user with every key source; wrong, missing and unreadable keys; and leak
// checks for loop devices, mounts and the plaintext memfd.
package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/apptainer/sif/v2/pkg/sif"
	"golang.org/x/sys/unix"
)

const encPass = "integration passphrase"

// encEnv is what the encrypted tests add to the shared integration setup.
type encEnv struct {
	*itEnv
	pass, pem      string // built by minirun from the directory / the squashfs
	csLib, csTool  string // cryptsetup-encrypted, wrapped by the sif library / siftool
	pubKey         string
	userKey        string // private key the test user owns (0600)
	rootKey        string // the same key, root-only 0600
	otherKey       string // a key that opens nothing
	buildPassTime  time.Duration
	buildPEMTime   time.Duration
	unlockPassTime time.Duration
}

var (
	encOnce sync.Once
	encErr  error
	enc     *encEnv
)

func encIntegration(t *testing.T) *encEnv {
	t.Helper()
	e := itIntegration(t)
	encOnce.Do(func() { enc, encErr = encSetup(e) })
	if encErr != nil {
		t.Fatalf("encrypted integration setup: %v", encErr)
	}
	encMemfdGuard(t)
	return enc
}

func encSetup(e *itEnv) (*encEnv, error) {
	x := &encEnv{itEnv: e}
	dir := e.imgDir

	// An RSA key pair: the public half for build, the private half for runs.
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return nil, err
	}
	other, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return nil, err
	}
	x.pubKey = filepath.Join(dir, "enc-pub.pem")
	x.userKey = filepath.Join(e.data, "enc-user.pem")
	x.rootKey = filepath.Join(e.data, "enc-root.pem")
	x.otherKey = filepath.Join(e.data, "enc-other.pem")
	priv := ctPEM("RSA PRIVATE KEY", x509.MarshalPKCS1PrivateKey(k), nil)
	for _, f := range []struct {
		path string
		data []byte
		mode os.FileMode
		uid  uint32
	}{
		{x.pubKey, ctPEM("RSA PUBLIC KEY", x509.MarshalPKCS1PublicKey(&k.PublicKey), nil), 0o644, 0},
		{x.userKey, priv, 0o600, e.user.uid},
		{x.rootKey, priv, 0o600, 0},
		{x.otherKey, ctPEM("PRIVATE KEY", encPKCS8(other), nil), 0o644, 0},
	} {
		if err := os.WriteFile(f.path, f.data, f.mode); err != nil {
			return nil, err
		}
		os.Chmod(f.path, f.mode)
		if err := os.Chown(f.path, int(f.uid), int(e.user.gid)); err != nil {
			return nil, err
		}
	}

	// Images built by the installed minirun: passphrase (default argon2id
	// keyslot) from the directory, PEM from the squashfs.
	x.pass = filepath.Join(dir, "enc-pass.sif")
	x.pem = filepath.Join(dir, "enc-pem.sif")
	for _, b := range []struct {
		args []string
		env  []string
		took *time.Duration
	}{
		{[]string{"build", "--encrypt", x.pass, e.rootfs}, []string{"MINIRUN_ENCRYPTION_PASSPHRASE=" + encPass}, &x.buildPassTime},
		{[]string{"build", "--pem-path", x.pubKey, x.pem, e.sqfs}, nil, &x.buildPEMTime},
	} {
		start := time.Now()
		cmd := e.command(context.Background(), itRunOpts{as: itAsRoot, env: b.env}, b.args...)
		if out, err := cmd.CombinedOutput(); err != nil {
			return nil, fmt.Errorf("minirun %v: %v\n%s", b.args, err, out)
		}
		*b.took = time.Since(start)
	}

	// cryptsetup-made images (spec §6.2): the squashfs encrypted in place by
	// offline reencryption with a quick KDF, data at 16 MiB.
	sqfs, err := os.ReadFile(e.sqfs)
	if err != nil {
		return nil, err
	}
	x.csLib = filepath.Join(dir, "enc-cryptsetup-lib.sif")
	x.csTool = filepath.Join(dir, "enc-cryptsetup-siftool.sif")
	for _, v := range []struct {
		out    string
		sector string
		tool   bool
	}{{x.csLib, "512", false}, {x.csTool, "4096", true}} {
		luks := v.out + ".luks"
		if err := os.WriteFile(luks, sqfs, 0o600); err != nil {
			return nil, err
		}
		os.Truncate(luks, int64(len(sqfs))+32<<20)
		cmd := exec.Command("cryptsetup", "reencrypt", "--encrypt", "--type", "luks2", "--reduce-device-size", "32M",
			"--force-offline-reencrypt", "--batch-mode", "--sector-size", v.sector,
			"--pbkdf", "pbkdf2", "--pbkdf-force-iterations", "1000", "--key-file", "-", luks)
		cmd.Stdin = strings.NewReader(encPass)
		if out, err := cmd.CombinedOutput(); err != nil {
			return nil, fmt.Errorf("cryptsetup reencrypt: %v\n%s", err, out)
		}
		os.Truncate(luks, int64(len(sqfs))+16<<20)
		if v.tool {
			siftool := filepath.Join(e.prefix, "siftool")
			for _, args := range [][]string{
				{"new", v.out},
				{"add", v.out, luks, "--datatype", "4", "--parttype", "2", "--partfs", "5", "--partarch", sifArchCode(runtime.GOARCH), "--groupid", "1"},
			} {
				if out, err := exec.Command(siftool, args...).CombinedOutput(); err != nil {
					return nil, fmt.Errorf("siftool %v: %v\n%s", args, err, out)
				}
			}
		} else if err := itWriteLibrarySIF(v.out, luks, sif.FsEncryptedSquashfs); err != nil {
			return nil, err
		}
		os.Remove(luks)
	}
	for _, f := range []string{x.pass, x.pem, x.csLib, x.csTool} {
		if err := os.Chmod(f, 0o644); err != nil {
			return nil, err
		}
	}
	fmt.Fprintf(os.Stderr, "encrypted setup: build passphrase image %v, PEM image %v\n",
		x.buildPassTime.Round(time.Millisecond), x.buildPEMTime.Round(time.Millisecond))
	return x, nil
}

func encPKCS8(k *rsa.PrivateKey) []byte {
	der, _ := x509.MarshalPKCS8PrivateKey(k)
	return der
}

// encMemfdLoops lists loop devices backed by minirun's plaintext memfd.
func encMemfdLoops() []string {
	var out []string
	files, _ := filepath.Glob("/sys/block/loop*/loop/backing_file")
	for _, f := range files {
		if b, err := os.ReadFile(f); err == nil && strings.HasPrefix(string(b), "/memfd:"+memfdPlainName) {
			out = append(out, filepath.Base(filepath.Dir(filepath.Dir(f))))
		}
	}
	slices.Sort(out)
	return out
}

// encMemfdGuard checks at the end of t that no plaintext loop device is left
// (the shared leak guard watches only loops backed by files under the prefix).
func encMemfdGuard(t *testing.T) {
	before := encMemfdLoops()
	t.Cleanup(func() {
		deadline := time.Now().Add(3 * time.Second)
		for {
			after := encMemfdLoops()
			if slices.Equal(before, after) {
				return
			}
			if time.Now().After(deadline) {
				t.Errorf("plaintext memfd loop devices leaked: before %v, after %v", before, after)
				return
			}
			time.Sleep(50 * time.Millisecond)
		}
	})
}

// encSub is itSub with the memfd check.
func encSub(t *testing.T, name string, fn func(t *testing.T)) {
	t.Helper()
	itSub(t, name, func(t *testing.T) {
		encMemfdGuard(t)
		fn(t)
	})
}

func (x *encEnv) keyFor(w itWho) string {
	if w == itAsUser {
		return x.userKey
	}
	return x.rootKey
}

func TestIntegrationEncryptedRun(t *testing.T) {
	x := encIntegration(t)
	for _, w := range itCallers {
		for _, tc := range []struct {
			name string
			img  string
			env  []string
			args []string
		}{
			{"minirun-passphrase/MINIRUN_ENCRYPTION_PASSPHRASE", x.pass, []string{"MINIRUN_ENCRYPTION_PASSPHRASE=" + encPass}, nil},
			{"minirun-passphrase/APPTAINER_ENCRYPTION_PASSPHRASE", x.pass, []string{"APPTAINER_ENCRYPTION_PASSPHRASE=" + encPass}, nil},
			{"minirun-pem/--pem-path", x.pem, nil, []string{"--pem-path", x.keyFor(w)}},
			{"minirun-pem/MINIRUN_ENCRYPTION_PEM_PATH", x.pem, []string{"MINIRUN_ENCRYPTION_PEM_PATH=" + x.keyFor(w)}, nil},
			{"minirun-pem/APPTAINER_ENCRYPTION_PEM_PATH", x.pem, []string{"APPTAINER_ENCRYPTION_PEM_PATH=" + x.keyFor(w)}, nil},
			{"cryptsetup-512-sif-library", x.csLib, []string{"MINIRUN_ENCRYPTION_PASSPHRASE=" + encPass}, nil},
			{"cryptsetup-4096-siftool", x.csTool, []string{"MINIRUN_ENCRYPTION_PASSPHRASE=" + encPass}, nil},
		} {
			encSub(t, tc.name+"/"+w.String(), func(t *testing.T) {
				args := append(append([]string{"exec"}, tc.args...), tc.img, "/bin/sh", "-c", "cat /MARKER; id -u; env")
				out := x.ok(t, itRunOpts{as: w, env: tc.env}, args...)
				lines := strings.SplitN(out, "\n", 3)
				wantUID := "0"
				if w == itAsUser {
					wantUID = strconv.Itoa(int(x.user.uid))
				}
				if len(lines) < 3 || lines[0] != "minirun-test" || lines[1] != wantUID {
					t.Fatalf("want /MARKER and uid %s, got %q", wantUID, out)
				}
				if strings.Contains(lines[2], "MINIRUN_") {
					t.Errorf("MINIRUN_* reached the payload:\n%s", lines[2])
				}
			})
		}
	}
}

// TestIntegrationEncryptedMemoryBackend: while the payload runs, its root is
// a read-only loop device over the sealed memfd, no process holds the memfd,
// and minirun is gone; afterwards the device is gone too.
func TestIntegrationEncryptedMemoryBackend(t *testing.T) {
	x := encIntegration(t)
	for _, w := range itCallers {
		encSub(t, w.String(), func(t *testing.T) {
			before := encMemfdLoops()
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			cmd := x.command(ctx, itRunOpts{as: w}, "exec", "--pem-path", x.keyFor(w), x.pem, "/bin/sh", "-c", "echo ready; exec sleep 5")
			stdout, err := cmd.StdoutPipe()
			if err != nil {
				t.Fatal(err)
			}
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			defer func() { cmd.Process.Kill(); cmd.Wait() }()
			buf := make([]byte, 6)
			if _, err := stdout.Read(buf); err != nil || string(buf) != "ready\n" {
				t.Fatalf("payload did not start: %q %v, stderr %q", buf, err, stderr.String())
			}
			now := encMemfdLoops()
			added := itSetMinus(now, before)
			if len(added) != 1 {
				t.Fatalf("want one new loop device over the plaintext memfd, got %v", added)
			}
			sys := "/sys/block/" + added[0]
			if ro, _ := os.ReadFile(sys + "/ro"); strings.TrimSpace(string(ro)) != "1" {
				t.Errorf("%s is not read-only", added[0])
			}
			if bs, _ := os.ReadFile(sys + "/queue/logical_block_size"); strings.TrimSpace(string(bs)) != "4096" {
				t.Errorf("%s has logical block size %q, want 4096", added[0], bs)
			}
			if ac, _ := os.ReadFile(sys + "/loop/autoclear"); strings.TrimSpace(string(ac)) != "1" {
				t.Errorf("%s is not autoclear", added[0])
			}
			// The payload's root is that device.
			mi, _ := os.ReadFile(fmt.Sprintf("/proc/%d/mountinfo", cmd.Process.Pid))
			if dev, _ := os.ReadFile(sys + "/dev"); !encRootFrom(string(mi), strings.TrimSpace(string(dev))) {
				t.Errorf("the payload's / is not mounted from %s\n%s", added[0], mi)
			}
			if holders := ctMemfdHolders(t); len(holders) > 0 {
				t.Errorf("a process holds the plaintext memfd: %v", holders)
			}
			if pids := itMinirunPids(x.itEnv); len(pids) > 0 {
				t.Errorf("minirun processes remain while the payload runs: %v", pids)
			}
			// No key material in anything the caller can read of the payload.
			env, _ := os.ReadFile(fmt.Sprintf("/proc/%d/environ", cmd.Process.Pid))
			if bytes.Contains(env, []byte("ENCRYPTION")) {
				t.Errorf("key variables in the payload environment: %q", env)
			}
			cmd.Process.Kill()
			cmd.Wait()
		})
	}
}

// encRootFrom reports whether mountinfo's "/" entry is a squashfs from major:minor dev.
func encRootFrom(mountinfo, dev string) bool {
	for _, line := range strings.Split(mountinfo, "\n") {
		f := strings.Fields(line)
		if len(f) > 9 && f[4] == "/" && f[2] == dev {
			i := slices.Index(f, "-")
			return i > 0 && i+1 < len(f) && f[i+1] == "squashfs"
		}
	}
	return false
}

func TestIntegrationEncryptedBadKeys(t *testing.T) {
	x := encIntegration(t)
	fifo := filepath.Join(x.data, "enc-fifo")
	if err := unix.Mkfifo(fifo, 0o666); err != nil && !os.IsExist(err) {
		t.Fatal(err)
	}
	os.Chmod(fifo, 0o666)
	t.Cleanup(func() { os.Remove(fifo) })
	for _, w := range itCallers {
		for _, tc := range []struct {
			name  string
			img   string
			env   []string
			args  []string
			frags []string
		}{
			{"wrong passphrase", x.pass, []string{"MINIRUN_ENCRYPTION_PASSPHRASE=not it"}, nil, []string{"wrong passphrase or key", filepath.Base(x.pass)}},
			{"wrong passphrase cryptsetup image", x.csTool, []string{"MINIRUN_ENCRYPTION_PASSPHRASE=not it"}, nil, []string{"wrong passphrase or key", filepath.Base(x.csTool)}},
			{"no key", x.pass, nil, nil, []string{"is encrypted", "--passphrase", "MINIRUN_ENCRYPTION_PASSPHRASE"}},
			{"no key PEM image", x.pem, nil, nil, []string{"is encrypted", "--pem-path"}},
			{"other private key", x.pem, nil, []string{"--pem-path", x.otherKey}, []string{"wrong passphrase or key", filepath.Base(x.pem)}},
			{"passphrase for PEM image", x.pem, []string{"MINIRUN_ENCRYPTION_PASSPHRASE=" + encPass}, nil, []string{"wrong passphrase or key"}},
			{"PEM key for passphrase image", x.pass, nil, []string{"--pem-path", x.keyFor(w)}, []string{"no RSA-OAEP key message"}},
			{"public key as private", x.pem, nil, []string{"--pem-path", x.pubKey}, []string{"no RSA private key"}},
			{"key is a FIFO", x.pem, nil, []string{"--pem-path", fifo}, []string{"not a regular file"}},
			{"key is a directory", x.pem, nil, []string{"--pem-path", x.data}, []string{"not a regular file"}},
			{"missing key file", x.pem, nil, []string{"--pem-path", filepath.Join(x.data, "nope.pem")}, []string{"does not exist"}},
			{"--passphrase without a terminal", x.pass, nil, []string{"--passphrase"}, []string{"terminal"}},
		} {
			encSub(t, tc.name+"/"+w.String(), func(t *testing.T) {
				o := itRunOpts{as: w, env: tc.env}
				args := append(append([]string{"exec"}, tc.args...), tc.img, "/bin/cat", "/MARKER")
				r := x.runNoTTY(t, o, args...)
				itWantError(t, r, tc.frags...)
			})
		}
	}
	// The key file is opened with the caller's credentials (R1): a root-only
	// key is refused for the user, never read for them.
	encSub(t, "unreadable key/user", func(t *testing.T) {
		r := x.run(t, itRunOpts{as: itAsUser}, "exec", "--pem-path", x.rootKey, x.pem, "/bin/cat", "/MARKER")
		itWantError(t, r, "permission denied", filepath.Base(x.rootKey))
	})
	encSub(t, "unreadable key/root", func(t *testing.T) {
		if out := x.ok(t, itRunOpts{as: itAsRoot}, "exec", "--pem-path", x.rootKey, x.pem, "/bin/cat", "/MARKER"); out != "minirun-test\n" {
			t.Errorf("root with its own key: %q", out)
		}
	})
	// A key for a plain image is ignored with a warning.
	encSub(t, "key for a plain image", func(t *testing.T) {
		r := x.run(t, itRunOpts{as: itAsUser}, "exec", "--pem-path", x.userKey, x.sifTool, "/bin/cat", "/MARKER")
		if r.code != 0 || r.stdout != "minirun-test\n" || !strings.HasPrefix(r.stderr, "WARNING: ") || !strings.Contains(r.stderr, "not encrypted") {
			t.Errorf("want a warning and a normal run\n%v", r)
		}
	})
}

// runNoTTY runs minirun in a new session, without a controlling terminal.
func (x *encEnv) runNoTTY(t *testing.T, o itRunOpts, args ...string) itResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cmd := x.command(ctx, o, args...)
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Setsid = true
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if ctx.Err() != nil {
		t.Fatalf("minirun %q as %v hung\nstderr: %q", args, o.as, stderr.String())
	}
	r := itResult{stdout: stdout.String(), stderr: stderr.String()}
	if ee, ok := err.(*exec.ExitError); ok {
		r.code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(r.stderr, "panic") || strings.Contains(r.stderr, "goroutine ") {
		t.Errorf("minirun crashed:\n%v", r)
	}
	return r
}

// TestIntegrationEncryptedPrompt types the passphrase at minirun's prompt on
// a pseudo-terminal that is the controlling terminal, without echo.
func TestIntegrationEncryptedPrompt(t *testing.T) {
	x := encIntegration(t)
	for _, w := range itCallers {
		for _, tc := range []struct {
			name, typed string
			ok          bool
		}{{"right", encPass, true}, {"wrong", "nope", false}} {
			encSub(t, tc.name+"/"+w.String(), func(t *testing.T) {
				master, slave := ctPty(t)
				dup, err := unix.Dup(slave)
				if err != nil {
					t.Fatal(err)
				}
				slaveFile := os.NewFile(uintptr(dup), "pts")
				defer slaveFile.Close()
				if w == itAsUser {
					unix.Fchown(slave, int(x.user.uid), -1)
				}
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				defer cancel()
				cmd := x.command(ctx, itRunOpts{as: w}, "exec", "--passphrase", x.pass, "/bin/cat", "/MARKER")
				if cmd.SysProcAttr == nil {
					cmd.SysProcAttr = &syscall.SysProcAttr{}
				}
				cmd.SysProcAttr.Setsid, cmd.SysProcAttr.Setctty, cmd.SysProcAttr.Ctty = true, true, 0
				var stdout, stderr bytes.Buffer
				cmd.Stdin, cmd.Stdout, cmd.Stderr = slaveFile, &stdout, &stderr
				if err := cmd.Start(); err != nil {
					t.Fatal(err)
				}
				// Wait for the prompt, then type.
				var shown string
				for deadline := time.Now().Add(10 * time.Second); !strings.Contains(shown, "Enter passphrase for"); {
					if time.Now().After(deadline) {
						cmd.Process.Kill()
						cmd.Wait()
						t.Fatalf("no prompt on the terminal; saw %q, stderr %q", shown, stderr.String())
					}
					shown += ctDrain(master)
				}
				// Echo goes off right after the prompt; give it that moment.
				time.Sleep(100 * time.Millisecond)
				unix.Write(master, []byte(tc.typed+"\n"))
				err = cmd.Wait()
				shown += ctDrain(master)
				if !strings.Contains(shown, filepath.Base(x.pass)) || strings.Contains(shown, tc.typed) {
					t.Errorf("terminal showed %q: want the prompt naming the image and no echo", shown)
				}
				if tc.ok {
					if err != nil || stdout.String() != "minirun-test\n" {
						t.Errorf("typed passphrase: %v, stdout %q, stderr %q", err, stdout.String(), stderr.String())
					}
					return
				}
				if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 255 || !strings.Contains(stderr.String(), "wrong passphrase or key") {
					t.Errorf("wrong typed passphrase: %v, stderr %q", err, stderr.String())
				}
			})
		}
	}
}

// TestIntegrationEncryptedBuildAsUser: build drops to the caller, so the
// output belongs to them and they run it.
func TestIntegrationEncryptedBuildAsUser(t *testing.T) {
	x := encIntegration(t)
	encSub(t, "user", func(t *testing.T) {
		out := filepath.Join(x.user.home, "mine-enc.sif")
		defer os.Remove(out)
		env := []string{"MINIRUN_ENCRYPTION_PASSPHRASE=user pass"}
		r := x.run(t, itRunOpts{as: itAsUser, env: env, timeout: 60 * time.Second}, "build", "--encrypt", out, x.sqfs)
		if r.code != 0 {
			t.Fatalf("build as the user:\n%v", r)
		}
		var st syscall.Stat_t
		if err := syscall.Stat(out, &st); err != nil || st.Uid != x.user.uid {
			t.Fatalf("output owned by uid %d (%v), want the user's %d", st.Uid, err, x.user.uid)
		}
		if got := x.ok(t, itRunOpts{as: itAsUser, env: env}, "exec", out, "/bin/cat", "/MARKER"); got != "minirun-test\n" {
			t.Errorf("running the user's own encrypted image: %q", got)
		}
		// The user cannot build into a root-owned directory: build holds no privilege.
		r = x.run(t, itRunOpts{as: itAsUser}, "build", filepath.Join(x.imgDir, "no.sif"), x.sqfs)
		itWantError(t, r, "permission denied")
	})
}

// TestIntegrationEncryptedBackendChosenOnce: a launch asks the kernel
// whether dm-crypt can run once, though both the unlock (whether to read
// ahead) and the attach need the answer.
func TestIntegrationEncryptedBackendChosenOnce(t *testing.T) {
	x := encIntegration(t)
	for _, w := range itCallers {
		encSub(t, w.String(), func(t *testing.T) {
			text := itStrace(t, x.itEnv, w, "open,openat,openat2", "exec", "--pem-path", x.keyFor(w), x.pem, "/bin/true")
			if n := strings.Count(text, `"/dev/mapper/control"`); n != 1 {
				t.Errorf("the launch opened /dev/mapper/control %d times, want once", n)
			}
		})
	}
}
