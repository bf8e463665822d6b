// aesblocks.go owns bulk AES for the XTS data cipher: encrypting or
// decrypting many independent blocks in one call (XTS is ECB between two
// tweak XORs). crypto/aes offers only one block per call, which costs about
// five times the cipher work; on amd64 with AES-NI an assembly loop keeps
// eight blocks in flight (aesblocks_amd64.s), elsewhere cipher.Block serves.
package main

import (
	"crypto/aes"
	"crypto/cipher"
	"sync"
)

// aesBulk is one AES key for whole buffers of blocks.
type aesBulk struct {
	block cipher.Block // always set: single blocks and the portable path
	nr    int          // rounds (10, 12, 14) when the assembly path is used
	enc   []byte       // (nr+1)·16 bytes: encryption round keys
	dec   []byte       // (nr+1)·16 bytes: equivalent inverse cipher round keys
}

func newAESBulk(key []byte) (*aesBulk, error) {
	b, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	a := &aesBulk{block: b}
	if aesBulkAsm() {
		a.nr = len(key)/4 + 6
		a.enc, a.dec = aesExpandKey(key)
	}
	return a, nil
}

// encryptBlocks and decryptBlocks work in place on whole 16-byte blocks.
func (a *aesBulk) encryptBlocks(buf []byte) {
	if a.enc != nil && len(buf) >= aes.BlockSize {
		aesEncryptBlocksAsm(a.nr, &a.enc[0], &buf[0], len(buf)/aes.BlockSize)
		return
	}
	for i := 0; i+aes.BlockSize <= len(buf); i += aes.BlockSize {
		a.block.Encrypt(buf[i:i+aes.BlockSize], buf[i:i+aes.BlockSize])
	}
}

func (a *aesBulk) decryptBlocks(buf []byte) {
	if a.dec != nil && len(buf) >= aes.BlockSize {
		aesDecryptBlocksAsm(a.nr, &a.dec[0], &buf[0], len(buf)/aes.BlockSize)
		return
	}
	for i := 0; i+aes.BlockSize <= len(buf); i += aes.BlockSize {
		a.block.Decrypt(buf[i:i+aes.BlockSize], buf[i:i+aes.BlockSize])
	}
}

// wipe zeroes the round keys this file owns (crypto/aes keeps its own copy,
// which it cannot be asked to clear).
func (a *aesBulk) wipe() {
	if a != nil {
		clear(a.enc)
		clear(a.dec)
	}
}

// aesSbox is FIPS-197's S-box, computed rather than transcribed, and only
// when a key is expanded (not at start-up: every launch would pay for it).
// p runs through every non-zero element as powers of the generator 3 while q
// runs through their inverses; the affine transform of q is the entry for p.
var aesSbox = sync.OnceValue(func() (s [256]byte) {
	s[0] = 0x63
	p, q := byte(1), byte(1)
	for {
		p ^= p<<1 ^ (p>>7)*0x1b // p·3
		q ^= q << 1             // q/3: q·0xf6
		q ^= q << 2
		q ^= q << 4
		q ^= (q >> 7) * 0x09
		s[p] = q ^ rotl8(q, 1) ^ rotl8(q, 2) ^ rotl8(q, 3) ^ rotl8(q, 4) ^ 0x63
		if p == 1 {
			return s
		}
	}
})

func rotl8(b byte, n int) byte { return b<<n | b>>(8-n) }

// gfMul multiplies in GF(2⁸) modulo x⁸+x⁴+x³+x+1.
func gfMul(a, b byte) byte {
	var p byte
	for ; b != 0; b >>= 1 {
		if b&1 != 0 {
			p ^= a
		}
		a = a<<1 ^ (a>>7)*0x1b
	}
	return p
}

// aesExpandKey is FIPS-197 KeyExpansion, laid out as the bytes AESENC loads,
// plus the decryption schedule AESDEC wants: the encryption keys in reverse
// order with InvMixColumns applied to all but the first and last.
func aesExpandKey(key []byte) (enc, dec []byte) {
	nk := len(key) / 4
	nr := nk + 6
	sbox := aesSbox()
	enc = make([]byte, 16*(nr+1))
	copy(enc, key)
	rcon := byte(1)
	for i := nk; i < 4*(nr+1); i++ {
		var t [4]byte
		copy(t[:], enc[4*(i-1):4*i])
		switch {
		case i%nk == 0:
			t = [4]byte{sbox[t[1]] ^ rcon, sbox[t[2]], sbox[t[3]], sbox[t[0]]}
			rcon = gfMul(rcon, 2)
		case nk > 6 && i%nk == 4:
			t = [4]byte{sbox[t[0]], sbox[t[1]], sbox[t[2]], sbox[t[3]]}
		}
		for j := range 4 {
			enc[4*i+j] = enc[4*(i-nk)+j] ^ t[j]
		}
	}
	dec = make([]byte, len(enc))
	for r := 0; r <= nr; r++ {
		rk := enc[16*(nr-r) : 16*(nr-r+1)]
		d := dec[16*r : 16*(r+1)]
		if r == 0 || r == nr {
			copy(d, rk)
			continue
		}
		for c := 0; c < 16; c += 4 {
			a0, a1, a2, a3 := rk[c], rk[c+1], rk[c+2], rk[c+3]
			d[c] = gfMul(a0, 14) ^ gfMul(a1, 11) ^ gfMul(a2, 13) ^ gfMul(a3, 9)
			d[c+1] = gfMul(a0, 9) ^ gfMul(a1, 14) ^ gfMul(a2, 11) ^ gfMul(a3, 13)
			d[c+2] = gfMul(a0, 13) ^ gfMul(a1, 9) ^ gfMul(a2, 14) ^ gfMul(a3, 11)
			d[c+3] = gfMul(a0, 11) ^ gfMul(a1, 13) ^ gfMul(a2, 9) ^ gfMul(a3, 14)
		}
	}
	return enc, dec
}
