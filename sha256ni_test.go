package main

import (
	"bytes"
	"crypto/pbkdf2"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/binary"
	"encoding/hex"
	"math/rand/v2"
	"testing"
)

func needSHANI(t *testing.T) {
	t.Helper()
	if !sha256NI() {
		t.Skip("this CPU has no SHA extensions: the crypto/sha256 paths run instead (covered by the LUKS tests)")
	}
}

// sha256Padded pads msg as SHA-256 does, for feeding whole blocks.
func sha256Padded(msg []byte) []byte {
	p := append(bytes.Clone(msg), 0x80)
	for len(p)%64 != 56 {
		p = append(p, 0)
	}
	return binary.BigEndian.AppendUint64(p, uint64(len(msg))*8)
}

func TestSHA256BlocksSHANI(t *testing.T) {
	needSHANI(t)
	r := rand.New(rand.NewPCG(1, 2))
	for _, n := range []int{0, 1, 36, 55, 56, 63, 64, 65, 119, 120, 128, 1000, 4096 + 17} {
		msg := make([]byte, n)
		for i := range msg {
			msg[i] = byte(r.Uint32())
		}
		h := sha256Init
		sha256BlocksSHANI(&h, sha256Padded(msg))
		var got [32]byte
		sha256PutState(got[:], &h)
		if want := sha256.Sum256(msg); got != want {
			t.Errorf("%d bytes: %x, want %x", n, got, want)
		}
	}
	// Bytes past the last whole block are not read.
	h := sha256Init
	sha256BlocksSHANI(&h, make([]byte, 63))
	if h != sha256Init {
		t.Error("a partial block changed the state")
	}
}

func TestPBKDF2SHA256(t *testing.T) {
	// RFC 7914 §11, PBKDF2-HMAC-SHA256 ("passwd", "salt", c = 1, 64 bytes).
	want, _ := hex.DecodeString("55ac046e56e3089fec1691c22544b605f94185216dde0465e68b9d57c20dacbc49ca9cccf179b645991664b39d77ef317c71b845b1e30bd509112041d3a19783")
	got := make([]byte, 64)
	pbkdf2SHA256([]byte("passwd"), []byte("salt"), 1, got)
	if !bytes.Equal(got, want) {
		t.Errorf("RFC 7914 vector: %x", got)
	}
	// Against crypto/pbkdf2 and the crypto/hmac loop, across key lengths
	// (HMAC hashes keys over one block first), iteration counts and outputs
	// that end inside a block.
	r := rand.New(rand.NewPCG(3, 4))
	for _, pl := range []int{0, 1, 32, 64, 65, 200} {
		for _, iter := range []int{1, 2, 1000} {
			for _, outLen := range []int{1, 32, 33, 64, 100} {
				pass, salt := make([]byte, pl), make([]byte, 32)
				for i := range pass {
					pass[i] = byte(r.Uint32())
				}
				for i := range salt {
					salt[i] = byte(r.Uint32())
				}
				fast, slow := make([]byte, outLen), make([]byte, outLen)
				pbkdf2SHA256(pass, salt, iter, fast)
				pbkdf2Key(sha256.New, pass, salt, iter, slow)
				std, err := pbkdf2.Key(sha256.New, string(pass), salt, iter, outLen)
				if err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(fast, slow) || !bytes.Equal(fast, std) {
					t.Errorf("password %d bytes, %d iterations, %d bytes: %x, crypto/hmac loop %x, crypto/pbkdf2 %x", pl, iter, outLen, fast, slow, std)
				}
			}
		}
	}
}

func TestAFHashSHA256NI(t *testing.T) {
	needSHANI(t)
	r := rand.New(rand.NewPCG(5, 6))
	for n := 1; n <= 200; n++ {
		buf := make([]byte, n)
		for i := range buf {
			buf[i] = byte(r.Uint32())
		}
		want := bytes.Clone(buf)
		for i := 0; i*32 < n; i++ {
			part := want[i*32 : min(n, i*32+32)]
			sum := sha256.Sum256(append(binary.BigEndian.AppendUint32(nil, uint32(i)), part...))
			copy(part, sum[:])
		}
		afDiffuseWith(afHashSHA256NI, buf)
		if !bytes.Equal(buf, want) {
			t.Fatalf("%d bytes: %x, want %x", n, buf, want)
		}
	}
}

func BenchmarkPBKDF2SHA256(b *testing.B) {
	pass, salt, out := make([]byte, 64), make([]byte, 32), make([]byte, 64)
	b.Run("crypto-hmac", func(b *testing.B) {
		for b.Loop() {
			pbkdf2Key(sha256.New, pass, salt, 1000, out)
		}
	})
	b.Run("sha-ni", func(b *testing.B) {
		if !sha256NI() {
			b.Skip("no SHA extensions")
		}
		for b.Loop() {
			pbkdf2SHA256(pass, salt, 1000, out)
		}
	})
}

func BenchmarkAFDiffuseSHA256(b *testing.B) {
	buf := make([]byte, 64)
	b.Run("crypto-sha256", func(b *testing.B) {
		for b.Loop() {
			for range 4000 {
				afDiffuseWith(afHashSHA256Generic, buf)
			}
		}
	})
	b.Run("sha-ni", func(b *testing.B) {
		if !sha256NI() {
			b.Skip("no SHA extensions")
		}
		for b.Loop() {
			for range 4000 {
				afDiffuseWith(afHashSHA256NI, buf)
			}
		}
	})
}

// TestAFMergeSHA256Columns: the column-parallel merge equals the textbook
// chain (d = diffuse(d ⊕ s_k), key = d ⊕ s_last) for every key size that
// has more than one column.
func TestAFMergeSHA256Columns(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 8))
	for _, keySize := range []int{33, 48, 63, 64, 96, 128} {
		for _, stripes := range []int{1, 2, 3, 4000} {
			m := make([]byte, keySize*stripes)
			for i := range m {
				m[i] = byte(r.Uint32())
			}
			want := make([]byte, keySize)
			for k := 0; k < stripes-1; k++ {
				for i := range want {
					want[i] ^= m[k*keySize+i]
				}
				afDiffuseWith(afHashSHA256Generic, want)
			}
			for i := range want {
				want[i] ^= m[(stripes-1)*keySize+i]
			}
			got := make([]byte, keySize)
			if err := afMerge(m, keySize, stripes, "sha256", got); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("key %d bytes, %d stripes: %x, want %x", keySize, stripes, got, want)
			}
		}
	}
}

// BenchmarkAFMerge: one AF merge of a 512-bit key (4000 stripes), its two
// columns on two goroutines against the textbook chain on one.
func BenchmarkAFMerge(b *testing.B) {
	m := make([]byte, 64*4000)
	out := make([]byte, 64)
	b.Run("columns", func(b *testing.B) {
		for b.Loop() {
			afMergeSHA256Columns(m, 64, 4000, out)
		}
	})
	b.Run("one-goroutine", func(b *testing.B) {
		for b.Loop() {
			clear(out)
			for k := 0; k < 3999; k++ {
				subtle.XORBytes(out, out, m[k*64:k*64+64])
				afDiffuseSHA256(out)
			}
		}
	})
}
