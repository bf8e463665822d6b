// crypt.go is the "Encrypted images" part of `make bench`: SIFs of the bench
// rootfs built by the installed minirun (plain, PEM-encrypted, passphrase-
// encrypted), the backend a launch takes, and luks_test.go's Go benchmarks
// (unlock per KDF, memory-backend decryption against raw AES-XTS).
package main

import (
	"bufio"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// benchPassphrase is what the passphrase image is built and opened with.
const benchPassphrase = "minirun-bench-passphrase"

// encImages are the SIFs of one rootfs and how they were made.
type encImages struct {
	plain, pem, pass string // SIF paths
	key, pub         string // RSA private/public key (PEM)
	cmds             []string
	buildTimes       [][2]string // image, wall time of its build
	sizes            [][2]string
	backend          string // the backend a PEM launch takes, as seen by strace
}

// buildEncrypted makes the key pair (private key owned by the user, 0600:
// root reads it anyway) and the three images with `minirun build`.
func buildEncrypted(minirun, rootfs, img string, usr *account) encImages {
	keys := filepath.Join(img, "keys")
	must(os.MkdirAll(keys, 0700))
	must(os.Chown(keys, int(usr.cred.Uid), int(usr.cred.Gid)))
	e := encImages{
		plain: filepath.Join(img, "plain.sif"), pem: filepath.Join(img, "pem.sif"), pass: filepath.Join(img, "pass.sif"),
		key: filepath.Join(keys, "key.pem"), pub: filepath.Join(keys, "pub.pem"),
	}
	priv, err := rsa.GenerateKey(rand.Reader, 2048)
	must(err)
	der, err := x509.MarshalPKCS8PrivateKey(priv)
	must(err)
	must(os.WriteFile(e.key, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0600))
	pubDER, err := x509.MarshalPKIXPublicKey(&priv.PublicKey)
	must(err)
	must(os.WriteFile(e.pub, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pubDER}), 0644))
	for _, f := range []string{keys + "/key.pem", keys + "/pub.pem"} {
		must(os.Chown(f, int(usr.cred.Uid), int(usr.cred.Gid)))
	}
	e.cmds = append(e.cmds, "# RSA-2048 key pair, as `openssl genrsa -out key.pem 2048 && openssl rsa -in key.pem -pubout -out pub.pem` would make (crypto/rsa, PKCS#8)")
	for _, b := range []struct {
		name string
		env  []string
		args []string
	}{
		{"plain.sif", nil, []string{"build", "-q", e.plain, rootfs}},
		{"pem.sif", nil, []string{"build", "-q", "--pem-path", e.pub, e.pem, rootfs}},
		{"pass.sif", []string{"MINIRUN_ENCRYPTION_PASSPHRASE=" + benchPassphrase}, []string{"build", "-q", "--encrypt", e.pass, rootfs}},
	} {
		shown := minirun + " " + strings.Join(b.args, " ")
		if b.env != nil {
			shown = "MINIRUN_ENCRYPTION_PASSPHRASE=... " + shown
		}
		e.cmds = append(e.cmds, shown)
		cmd := exec.Command(minirun, b.args...)
		cmd.Env = append([]string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "HOME=/root", "LANG=C"}, b.env...)
		t0 := time.Now()
		if outp, err := cmd.CombinedOutput(); err != nil {
			fatal("%s: %v\n%s", shown, err, outp)
		}
		e.buildTimes = append(e.buildTimes, [2]string{b.name, ms(time.Since(t0))})
		st, err := os.Stat(filepath.Join(img, b.name))
		must(err)
		must(os.Chmod(filepath.Join(img, b.name), 0644))
		e.sizes = append(e.sizes, [2]string{b.name, kib(st.Size())})
	}
	return e
}

// withEnv is who with extra environment (same name, so rows group by user).
func withEnv(who *account, env ...string) *account {
	c := *who
	c.env = append(append([]string{}, who.env...), env...)
	return &c
}

// encBackend runs one PEM launch as root under strace and says which
// backend it took: the memory backend creates the memfd "minirun-plain".
func encBackend(minirun string, e encImages) string {
	st, err := exec.LookPath("strace")
	if err != nil {
		return "unknown (strace not installed)"
	}
	cmd := exec.Command(st, "-f", "-e", "trace=memfd_create,ioctl", minirun, "exec", "--pem-path", e.key, e.pem, "/bin/true")
	cmd.Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "HOME=/root", "LANG=C"}
	outp, err := cmd.CombinedOutput()
	if err != nil {
		return "unknown (" + firstLine(string(outp)) + ")"
	}
	switch {
	case strings.Contains(string(outp), `"minirun-plain"`):
		return "memory (sealed memfd + loop device)"
	case strings.Contains(string(outp), "DM_TABLE_LOAD") || strings.Contains(string(outp), "DM_DEV_CREATE"):
		return "dm-crypt"
	}
	return "unknown (neither a minirun-plain memfd nor a DM ioctl in the trace)"
}

// passRounds times the passphrase image alternately with the plain SIF,
// for each user; few rounds, since every launch pays argon2.
func passRounds(minirun string, e encImages, users []*account, n int) []*command {
	var cmds []*command
	for _, who := range users {
		pw := withEnv(who, "MINIRUN_ENCRYPTION_PASSPHRASE="+benchPassphrase)
		c := fixed("sif-pass", "minirun", pw, minirun, "exec", e.pass, "/bin/true")
		c.shown = "MINIRUN_ENCRYPTION_PASSPHRASE=... " + c.shown
		twin := fixed("sif-pass-twin", "minirun", who, minirun, "exec", e.plain, "/bin/true")
		cmds = append(cmds, c, twin)
	}
	for _, c := range cmds {
		if code, stderr := probe(c); code != 0 {
			c.skipped = fmt.Sprintf("exit %d: %s", code, firstLine(stderr))
		}
	}
	for round := 0; round < n; round++ {
		for i, c := range cmds {
			// Alternate which of a pair goes first.
			if round%2 == 1 {
				c = cmds[i^1]
			}
			if c.skipped != "" {
				continue
			}
			d, ru, code := timeOne(c, round)
			if code != 0 {
				c.fails++
				continue
			}
			c.times = append(c.times, d)
			c.cpu = append(c.cpu, time.Duration(ru.Utime.Nano()+ru.Stime.Nano()))
			c.sysCPU = append(c.sysCPU, time.Duration(ru.Stime.Nano()))
		}
	}
	return cmds
}

// goBench is one line of `go test -bench` output.
type goBench struct {
	name   string
	iters  int64
	nsOp   float64
	mbS    float64 // 0: no SetBytes
	rawOut string
}

type goBenchResult struct {
	cmd     string
	benches []goBench
	raw     string
	err     string
	took    time.Duration
}

var benchLine = regexp.MustCompile(`^(Benchmark\S+?)(?:-\d+)?\s+(\d+)\s+([\d.]+) ns/op(?:\s+([\d.]+) MB/s)?`)

// runGoBench runs luks_test.go's benchmarks in the repository (the
// harness's working directory) with the Go toolchain goBin.
func runGoBench(goBin, benchtime string) goBenchResult {
	args := []string{"test", "-run", "^$", "-bench", "Unlock|Decrypt|XTS|AES|PBKDF2|AFDiffuse|AFMerge", "-benchtime", benchtime, "."}
	res := goBenchResult{cmd: "CGO_ENABLED=0 go test -run '^$' -bench 'Unlock|Decrypt|XTS|AES|PBKDF2|AFDiffuse|AFMerge' -benchtime " + benchtime + " ."}
	cmd := exec.Command(goBin, args...)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	t0 := time.Now()
	outp, err := cmd.CombinedOutput()
	res.took = time.Since(t0)
	res.raw = string(outp)
	if err != nil {
		res.err = fmt.Sprintf("%v: %s", err, firstLine(string(outp)))
	}
	sc := bufio.NewScanner(strings.NewReader(res.raw))
	for sc.Scan() {
		m := benchLine.FindStringSubmatch(sc.Text())
		if m == nil {
			continue
		}
		b := goBench{name: strings.TrimPrefix(m[1], "Benchmark"), rawOut: sc.Text()}
		b.iters, _ = strconv.ParseInt(m[2], 10, 64)
		b.nsOp, _ = strconv.ParseFloat(m[3], 64)
		if m[4] != "" {
			b.mbS, _ = strconv.ParseFloat(m[4], 64)
		}
		res.benches = append(res.benches, b)
	}
	return res
}

func (g goBenchResult) find(name string) (goBench, bool) {
	for _, b := range g.benches {
		if b.name == name {
			return b, true
		}
	}
	return goBench{}, false
}

// encryptedSection writes the "Encrypted images" section.
func (r *report) encryptedSection(b *strings.Builder) {
	p := func(format string, a ...any) { fmt.Fprintf(b, format, a...) }
	e := r.enc
	p("## Encrypted images\n\n")
	p("The bench rootfs packed by the installed minirun itself (`minirun build` runs mksquashfs with its defaults, then formats LUKS2 in place for the encrypted ones); build commands, as root:\n\n```sh\n")
	for _, c := range e.cmds {
		p("%s\n", c)
	}
	p("```\n\n| image | size | build time (one build) |\n| --- | ---: | ---: |\n")
	for i, s := range e.sizes {
		p("| %s | %s | %s |\n", s[0], s[1], e.buildTimes[i][1])
	}
	p("\nThe encrypted images are about 1 MiB larger: the LUKS2 header and keyslot area come before the payload (segment offset 1 MiB).\n\nThe private key `%s` belongs to %s (0600, in a 0700 directory of theirs); root reads it too. Backend taken by a launch here (compiled-in `encrypted_backend = \"auto\"`, seen with strace in one launch): **%s**.\n\n", e.key, r.users[1].name, e.backend)

	p("### Startup: PEM-encrypted against the same image unencrypted\n\n")
	p("`minirun exec --pem-path %s %s /bin/true` against `minirun exec %s /bin/true`, both in the main alternating rounds above (median of %d launches each). The PEM launch pays the RSA-OAEP unwrap, a pbkdf2 keyslot with 1000 iterations, and decrypting the image (memory backend) or setting up dm-crypt.\n\n", e.key, e.pem, e.plain, *rounds)
	p("| user | unencrypted SIF | PEM-encrypted SIF | encrypted / unencrypted | encrypted − unencrypted |\n| --- | ---: | ---: | ---: | ---: |\n")
	for _, a := range r.users {
		pl, en := r.find("sif", "minirun", a.name), r.find("sif-pem", "minirun", a.name)
		p("| %s | %s | %s | %s | %s |\n", userLabel(a), cell(pl), cell(en), ratio(en, pl), diff(en, pl))
	}
	p("\n")

	p("### Startup: passphrase-encrypted (argon2id)\n\n")
	p("`MINIRUN_ENCRYPTION_PASSPHRASE=... minirun exec %s /bin/true`, alternated with the unencrypted twin for %d rounds only (each launch pays the build's default argon2id KDF), median of those rounds:\n\n", e.pass, *encPassRounds)
	p("| user | unencrypted SIF | passphrase SIF | ratio | difference | CPU of a passphrase launch (mean) |\n| --- | ---: | ---: | ---: | ---: | ---: |\n")
	for _, a := range r.users {
		pl, en := r.find("sif-pass-twin", "minirun", a.name), r.find("sif-pass", "minirun", a.name)
		cpu := "–"
		if en != nil && len(en.cpu) > 0 {
			cpu = ms(mean(en.cpu))
		}
		p("| %s | %s | %s | %s | %s | %s |\n", userLabel(a), cell(pl), cell(en), ratio(en, pl), diff(en, pl), cpu)
		if en != nil && en.skipped != "" {
			p("\n(passphrase launch as %s did not run: %s)\n\n", a.name, escape(en.skipped))
		}
	}
	p("\n")

	g := r.goBench
	p("### Unlock time per KDF and decryption throughput (Go benchmarks)\n\n")
	p("luks_test.go's benchmarks, run by the harness from the repository root (took %s):\n\n```sh\n%s\n```\n\n", g.took.Round(time.Second), g.cmd)
	if g.err != "" {
		p("It failed: %s\n\n", escape(g.err))
	}
	p("| benchmark | what | iterations | time/op | MB/s |\n| --- | --- | ---: | ---: | ---: |\n")
	what := map[string]string{
		"DataDecrypt":                   "memory backend's XTS decryption of one 1 MiB chunk, one core",
		"XTSReference":                  "x/crypto/xts on the same work: raw AES-XTS",
		"AESBlockDecrypt":               "single-block AES-256 decryption (crypto/aes), the bound",
		"DecryptTo":                     "whole memory-backend path, all workers, 64 MiB into a memfd",
		"AESBulkDecrypt":                "AES-256 over 64 KiB of independent blocks, eight in flight (aesblocks_amd64.s)",
		"PBKDF2SHA256/crypto-hmac":      "pbkdf2-sha256, 1000 iterations, 64 bytes, through crypto/hmac",
		"PBKDF2SHA256/sha-ni":           "the same on the bare SHA-NI compression (sha256ni.go), what unlock uses",
		"AFDiffuseSHA256/crypto-sha256": "4000 diffusions of a 64-byte key (one AF merge) through sha256.Sum256",
		"AFDiffuseSHA256/sha-ni":        "the same on the bare SHA-NI compression, what unlock uses",
		"AFMerge/columns":               "one AF merge of a 512-bit key, its two 32-byte columns on two goroutines (what unlock does)",
		"AFMerge/one-goroutine":         "the same merge as one chain on one goroutine",
		"Unlock/pbkdf2-1000":            "open a keyslot: PEM images (pbkdf2, 1000 iterations)",
		"Unlock/argon2id-32MiB-t4":      "open a keyslot: small argon2id",
		"Unlock/argon2id-256MiB-t4-p4":  "open a keyslot: build default for passphrases",
	}
	for _, bn := range g.benches {
		mb := "–"
		if bn.mbS > 0 {
			mb = fmt.Sprintf("%.1f", bn.mbS)
		}
		p("| %s | %s | %d | %s | %s |\n", bn.name, what[bn.name], bn.iters, nsOp(bn.nsOp), mb)
	}
	p("\n")
	if d, ok1 := g.find("DataDecrypt"); ok1 {
		if x, ok2 := g.find("XTSReference"); ok2 && x.mbS > 0 {
			p("Memory backend against raw AES-XTS on one core: %.1f / %.1f MB/s = %.2fx. ", d.mbS, x.mbS, d.mbS/x.mbS)
		}
	}
	if d, ok := g.find("DecryptTo"); ok {
		p("All workers into a memfd: %.1f MB/s.", d.mbS)
	}
	p("\n\nRaw output:\n\n```\n%s\n```\n\n", strings.TrimSpace(g.raw))
}

func nsOp(ns float64) string {
	switch {
	case ns >= 1e6:
		return fmt.Sprintf("%.2f ms", ns/1e6)
	case ns >= 1e3:
		return fmt.Sprintf("%.2f µs", ns/1e3)
	}
	return fmt.Sprintf("%.0f ns", ns)
}
