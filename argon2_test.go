package main

import (
	"bytes"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"

	"golang.org/x/crypto/argon2"
	xblake2b "golang.org/x/crypto/blake2b"
)

// x/crypto is the oracle: argon2.go was written to replace it in the binary.
func xcryptoArgon2(mode int, pw, salt []byte, time, mem uint32, threads uint8, n uint32) []byte {
	if mode == argon2i {
		return argon2.Key(pw, salt, time, mem, threads, n)
	}
	return argon2.IDKey(pw, salt, time, mem, threads, n)
}

func TestBlake2bMatchesXCrypto(t *testing.T) {
	in := make([]byte, 600)
	for i := range in {
		in[i] = byte(i*7 + 3)
	}
	for _, n := range []int{0, 1, 3, 64, 127, 128, 129, 255, 256, 257, 383, 600} {
		for _, size := range []int{1, 4, 20, 32, 33, 63, 64} {
			h, err := xblake2b.New(size, nil)
			if err != nil {
				t.Fatal(err)
			}
			h.Write(in[:n])
			want := h.Sum(nil)
			got := make([]byte, size)
			blake2b(got, in[:n])
			if !bytes.Equal(got, want) {
				t.Errorf("blake2b-%d of %d bytes = %x, want %x", size, n, got, want)
			}
		}
	}
}

func TestArgon2MatchesXCrypto(t *testing.T) {
	cases := []struct {
		mode               int
		time, mem          uint32
		threads            uint8
		keyLen, pwLen, slt int
	}{
		{argon2id, 1, 8, 1, 32, 8, 16},    // the least memory: two blocks per segment
		{argon2id, 1, 7, 1, 32, 8, 16},    // less than that is raised to it
		{argon2i, 1, 8, 1, 32, 8, 16},     //
		{argon2id, 3, 64, 1, 32, 0, 8},    // empty passphrase
		{argon2i, 2, 100, 2, 64, 20, 32},  // memory not a multiple of 4·lanes
		{argon2id, 2, 256, 4, 4, 64, 32},  // four lanes, short tag
		{argon2id, 4, 1024, 4, 65, 9, 32}, // tag just over one BLAKE2b output
		{argon2i, 1, 512, 3, 96, 9, 32},   // three lanes; a 96-byte tag
		{argon2id, 1, 512, 2, 128, 9, 32}, // tag a multiple of 64
		{argon2id, 2, 600, 4, 200, 9, 32}, // more than one address block per segment
		{argon2i, 1, 1 << 12, 1, 32, 9, 32},
		{argon2id, 2, 1 << 12, 4, 64, 300, 64},
	}
	for _, c := range cases {
		name := fmt.Sprintf("mode%d-t%d-m%d-p%d-k%d", c.mode, c.time, c.mem, c.threads, c.keyLen)
		pw := bytes.Repeat([]byte{0xa5}, c.pwLen)
		salt := bytes.Repeat([]byte{0x5a}, c.slt)
		got := make([]byte, c.keyLen)
		argon2Key(c.mode, pw, salt, c.time, c.mem, c.threads, got)
		if want := xcryptoArgon2(c.mode, pw, salt, c.time, c.mem, c.threads, uint32(c.keyLen)); !bytes.Equal(got, want) {
			t.Errorf("%s: %x, want %x", name, got, want)
		}
	}
}

// The reference implementation's own vectors (phc-winner-argon2, test.c,
// version 0x13: "password", "somesalt", t=2, m=2^16 KiB, one lane), which
// do not depend on x/crypto.
func TestArgon2ReferenceVectors(t *testing.T) {
	for _, c := range []struct {
		mode int
		want string
	}{
		{argon2i, "c1628832147d9720c5bd1cfd61367078729f6dfb6f8fea9ff98158e0d7816ed0"},
		{argon2id, "09316115d5cf24ed5a15a31a3ba326e5cf32edc24702987c02b6566f61913cf7"},
	} {
		got := make([]byte, 32)
		argon2Key(c.mode, []byte("password"), []byte("somesalt"), 2, 1<<16, 1, got)
		if hex.EncodeToString(got) != c.want {
			t.Errorf("mode %d: %x, want %s", c.mode, got, c.want)
		}
	}
}

func FuzzArgon2(f *testing.F) {
	f.Add(uint8(2), uint8(1), uint16(8), uint8(1), uint8(32), []byte("pw"), []byte("salt"))
	f.Add(uint8(1), uint8(2), uint16(100), uint8(3), uint8(100), []byte(""), []byte("0123456789abcdef"))
	f.Fuzz(func(t *testing.T, mode, time uint8, mem uint16, threads, keyLen uint8, pw, salt []byte) {
		m := argon2id
		if mode%2 == 1 {
			m = argon2i
		}
		tm, th, kl := uint32(time%3+1), threads%4+1, uint32(keyLen%200+4)
		memKiB := uint32(mem % 2048)
		got := make([]byte, kl)
		argon2Key(m, pw, salt, tm, memKiB, th, got)
		if want := xcryptoArgon2(m, pw, salt, tm, memKiB, th, kl); !bytes.Equal(got, want) {
			t.Fatalf("mode %d t=%d m=%d p=%d: %x, want %x", m, tm, memKiB, th, got, want)
		}
	})
}

func BenchmarkArgon2id(b *testing.B) {
	pw, salt := []byte("password"), make([]byte, 32)
	out := make([]byte, 64)
	for _, p := range []struct {
		name    string
		mem     uint32
		threads uint8
	}{{"32MiB-t4-p1", 32 << 10, 1}, {"64MiB-t4-p4", 64 << 10, 4}} {
		b.Run(p.name+"/argon2.go", func(b *testing.B) {
			for b.Loop() {
				argon2Key(argon2id, pw, salt, 4, p.mem, p.threads, out)
			}
		})
		b.Run(p.name+"/x-crypto", func(b *testing.B) {
			for b.Loop() {
				argon2.IDKey(pw, salt, 4, p.mem, p.threads, 64)
			}
		})
	}
}

// The binary must not link golang.org/x/sys/cpu (or anything else that
// probes the CPU in its package initialisation): its CPUID calls exit to
// the hypervisor at every start, encrypted image or not.
func TestNoCPUProbeAtStart(t *testing.T) {
	cmd := exec.Command(itGoTool(), "list", "-deps", "-f", "{{.ImportPath}}", ".")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	for _, pkg := range strings.Fields(string(out)) {
		if pkg == "golang.org/x/sys/cpu" || strings.HasPrefix(pkg, "golang.org/x/crypto/") {
			t.Errorf("the binary links %s", pkg)
		}
	}
}

// The Go compression must equal the assembly's (held to x/crypto above) on
// CPUs that have both; elsewhere the Go one is all there is.
func TestArgon2CompressGeneric(t *testing.T) {
	if !argon2SIMD() {
		t.Skip("this CPU runs the Go compression only; the x/crypto comparisons above cover it")
	}
	var x, y, seed argon2Block
	for i := range x {
		x[i], y[i], seed[i] = uint64(i)*0x9e3779b97f4a7c15, ^uint64(i)*0xc2b2ae3d27d4eb4f, uint64(i)<<33|7
	}
	for _, xor := range []bool{false, true} {
		asm, gen := seed, seed
		argon2Compress(&asm, &x, &y, xor)
		argon2CompressGeneric(&gen, &x, &y, xor)
		if asm != gen {
			t.Errorf("xor=%v: the Go compression differs from the assembly's", xor)
		}
	}
}
