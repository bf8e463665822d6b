package main

import (
	"bytes"
	"crypto/aes"
	"crypto/rand"
	"fmt"
	"slices"
	"testing"
)

// The S-box and key schedule are computed, so they are checked against the
// standard's own numbers and against crypto/aes.
func TestAESSboxAndSchedule(t *testing.T) {
	sbox := aesSbox()
	for x, want := range map[int]byte{0x00: 0x63, 0x01: 0x7c, 0x02: 0x77, 0x53: 0xed, 0xff: 0x16, 0x10: 0xca, 0x80: 0xcd} {
		if sbox[x] != want {
			t.Errorf("S-box(%#02x) = %#02x, want %#02x", x, sbox[x], want)
		}
	}
	// A permutation: every value once.
	var seen [256]bool
	for _, v := range sbox {
		seen[v] = true
	}
	if slices.Contains(seen[:], false) {
		t.Error("S-box is not a permutation")
	}
	// FIPS-197 Appendix A.1: the last round key of 2b7e1516 28aed2a6 abf71588 09cf4f3c.
	key := []byte{0x2b, 0x7e, 0x15, 0x16, 0x28, 0xae, 0xd2, 0xa6, 0xab, 0xf7, 0x15, 0x88, 0x09, 0xcf, 0x4f, 0x3c}
	enc, _ := aesExpandKey(key)
	if got := fmt.Sprintf("%x", enc[160:]); got != "d014f9a8c9ee2589e13f0cc8b6630ca6" {
		t.Errorf("AES-128 round key 10 = %s", got)
	}
}

// aesBulk must agree with crypto/aes block by block for every key size and for
// lengths around the eight-block stride, on the assembly path and without it.
func TestAESBulkMatchesCryptoAES(t *testing.T) {
	for _, asm := range []bool{true, false} {
		if asm && !aesBulkAsm() {
			continue // the portable path is still tested below
		}
		for _, ks := range []int{16, 24, 32} {
			for _, blocks := range []int{1, 2, 7, 8, 9, 15, 16, 17, 31, 256} {
				key := make([]byte, ks)
				rand.Read(key)
				ref, _ := aes.NewCipher(key)
				a, err := newAESBulk(key)
				if err != nil {
					t.Fatal(err)
				}
				if !asm {
					a.enc, a.dec = nil, nil
				}
				plain := make([]byte, 16*blocks)
				rand.Read(plain)
				want := make([]byte, len(plain))
				for i := 0; i < len(plain); i += 16 {
					ref.Encrypt(want[i:], plain[i:i+16])
				}
				buf := bytes.Clone(plain)
				a.encryptBlocks(buf)
				if !bytes.Equal(buf, want) {
					t.Fatalf("asm=%v key %d bytes, %d blocks: encryption differs from crypto/aes", asm, ks, blocks)
				}
				a.decryptBlocks(buf)
				if !bytes.Equal(buf, plain) {
					t.Fatalf("asm=%v key %d bytes, %d blocks: decryption does not invert", asm, ks, blocks)
				}
				a.wipe()
				if asm && (!bytes.Equal(a.enc, make([]byte, len(a.enc))) || !bytes.Equal(a.dec, make([]byte, len(a.dec)))) {
					t.Fatal("wipe left round keys")
				}
			}
		}
	}
}

func BenchmarkAESBulkDecrypt(b *testing.B) {
	key := make([]byte, 32)
	a, _ := newAESBulk(key)
	buf := make([]byte, 64<<10)
	b.SetBytes(int64(len(buf)))
	for b.Loop() {
		a.decryptBlocks(buf)
	}
}
