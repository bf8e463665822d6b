// sha256ni.go: the SHA-256 work of a LUKS unlock on the bare compression
// function. Opening a PEM image (pbkdf2 with 1000 iterations for the keyslot
// and for the digest, 4000 anti-forensic stripes) costs 3000 HMAC iterations
// and 8000 hashes of 36 bytes, every one a single block. Through
// crypto/sha256 each pays about as much Digest bookkeeping (state copies,
// buffering, padding) as compression; here the padding of those fixed-size
// messages is written once and only the compression runs, with the CPU's
// SHA extensions (sha256ni_amd64.s). Without them, or for any other hash,
// the crypto/sha256 paths in luks.go run; the tests hold both to the same
// answers.
package main

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"sync"
)

var sha256Init = [8]uint32{0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19}

// sha256PutState writes h as the 32-byte digest.
func sha256PutState(out []byte, h *[8]uint32) {
	_ = out[31]
	for i, v := range h {
		binary.BigEndian.PutUint32(out[4*i:], v)
	}
}

// pbkdf2SHA256 is pbkdf2Key with HMAC-SHA256.
func pbkdf2SHA256(password, salt []byte, iterations int, out []byte) {
	if !sha256NI() {
		pbkdf2Key(sha256.New, password, salt, iterations, out)
		return
	}
	// HMAC's two keyed states (RFC 2104): the key, padded to a block and
	// xored with ipad or opad, compressed once.
	var key, pad [sha256.BlockSize]byte
	if len(password) > sha256.BlockSize {
		sum := sha256.Sum256(password)
		copy(key[:], sum[:])
		clear(sum[:])
	} else {
		copy(key[:], password)
	}
	inner, outer := sha256Init, sha256Init
	for i := range pad {
		pad[i] = key[i] ^ 0x36
	}
	sha256BlocksSHANI(&inner, pad[:])
	for i := range pad {
		pad[i] = key[i] ^ 0x5c
	}
	sha256BlocksSHANI(&outer, pad[:])
	clear(key[:])
	clear(pad[:])

	// The blocks of the output are independent: a 64-byte keyslot key
	// derives its two halves on two goroutines.
	var wg sync.WaitGroup
	for block := uint32(1); len(out) > 0; block++ {
		dst := out[:min(sha256.Size, len(out))]
		out = out[len(dst):]
		run := func() { pbkdf2SHA256Block(&inner, &outer, password, salt, iterations, block, dst) }
		if len(out) == 0 {
			run()
			break
		}
		wg.Go(run)
	}
	wg.Wait()
	clear(inner[:])
	clear(outer[:])
}

// pbkdf2SHA256Block computes block i of the output into dst (≤ 32 bytes).
func pbkdf2SHA256Block(inner, outer *[8]uint32, password, salt []byte, iterations int, i uint32, dst []byte) {
	// Every iteration after the first hashes a 32-byte message behind one
	// keyed block, inside and outside alike: the same padded block, whose
	// first half is the message (64+32 bytes in all, in bits at the end).
	var blk [sha256.BlockSize]byte
	blk[32] = 0x80
	binary.BigEndian.PutUint64(blk[56:], (sha256.BlockSize+sha256.Size)*8)
	var u, t [sha256.Size]byte
	var ctr [4]byte
	prf := hmac.New(sha256.New, password) // U1 = PRF(salt ‖ INT(i)): any length
	prf.Write(salt)
	binary.BigEndian.PutUint32(ctr[:], i)
	prf.Write(ctr[:])
	prf.Sum(u[:0])
	prf.Reset()
	t = u
	for n := 1; n < iterations; n++ {
		copy(blk[:32], u[:])
		h := *inner
		sha256BlocksSHANI(&h, blk[:])
		sha256PutState(blk[:32], &h)
		h = *outer
		sha256BlocksSHANI(&h, blk[:])
		sha256PutState(u[:], &h)
		for i := range t {
			t[i] ^= u[i]
		}
	}
	copy(dst, t[:])
	clear(blk[:])
	clear(u[:])
	clear(t[:])
}

// afHashSHA256NI replaces b (at most 32 bytes) by H(BE32(i) ‖ b), truncated
// to len(b): the message and its padding fit one block.
func afHashSHA256NI(i uint32, b []byte) {
	var blk [sha256.BlockSize]byte
	binary.BigEndian.PutUint32(blk[:4], i)
	n := copy(blk[4:4+sha256.Size], b)
	blk[4+n] = 0x80
	binary.BigEndian.PutUint64(blk[56:], uint64(4+n)*8)
	h := sha256Init
	sha256BlocksSHANI(&h, blk[:])
	var sum [sha256.Size]byte
	sha256PutState(sum[:], &h)
	copy(b, sum[:n])
	clear(blk[:])
	clear(sum[:])
}
