// argon2.go: Argon2i and Argon2id (RFC 9106, version 0x13) for LUKS2
// keyslots, with the BLAKE2b they are built on (RFC 7693). Written here
// rather than imported from golang.org/x/crypto/argon2 because that package
// brings golang.org/x/sys/cpu, whose initialisation asks the CPU for its
// features with CPUID at every start of the binary: on a VM each CPUID
// exits to the hypervisor, and together they cost every launch, encrypted
// or not, about 0.05 ms. The SSE permutation is x/crypto's own
// (argon2_amd64.s), chosen on first use (cpuFeatures); without it Argon2
// runs about 1.5 times as long. x/crypto stays the tests' oracle
// (argon2_test.go).
package main

import (
	"encoding/binary"
	"math/bits"
	"sync"
)

const (
	argon2Version    = 0x13
	argon2SyncPoints = 4   // slices per pass
	argon2BlockWords = 128 // 1 KiB blocks of 64-bit words
	argon2i          = 1   // the type numbers H0 hashes in
	argon2id         = 2
)

type argon2Block [argon2BlockWords]uint64

// argon2Key fills out with the tag of passphrase and salt; time ≥ 1 and
// threads ≥ 1 are the caller's to check (luksDeriveKey does).
func argon2Key(mode int, passphrase, salt []byte, time, memoryKiB uint32, threads uint8, out []byte) {
	lanes := uint32(threads)
	h0 := argon2H0(mode, passphrase, salt, time, memoryKiB, lanes, uint32(len(out)))
	// The memory rounds down to whole segments, at least two blocks each.
	blocks := memoryKiB / (argon2SyncPoints * lanes) * (argon2SyncPoints * lanes)
	blocks = max(blocks, 2*argon2SyncPoints*lanes)
	laneLen := blocks / lanes
	mem := make([]argon2Block, blocks)

	// The first two blocks of each lane come from H0, the lane and the index.
	var seed [72]byte
	copy(seed[:], h0[:])
	var raw [1024]byte
	for lane := uint32(0); lane < lanes; lane++ {
		binary.LittleEndian.PutUint32(seed[68:], lane)
		for i := uint32(0); i < 2; i++ {
			binary.LittleEndian.PutUint32(seed[64:], i)
			blake2bLong(raw[:], seed[:])
			for w := range mem[lane*laneLen+i] {
				mem[lane*laneLen+i][w] = binary.LittleEndian.Uint64(raw[8*w:])
			}
		}
	}

	// Lanes run in parallel within a slice; slices are the synchronisation points.
	for pass := uint32(0); pass < time; pass++ {
		for slice := uint32(0); slice < argon2SyncPoints; slice++ {
			var wg sync.WaitGroup
			for lane := uint32(0); lane < lanes; lane++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					argon2Segment(mem, mode, pass, slice, lane, lanes, laneLen, time)
				}()
			}
			wg.Wait()
		}
	}

	// The tag: the last blocks of all lanes XORed, then hashed to length.
	final := mem[laneLen-1]
	for lane := uint32(1); lane < lanes; lane++ {
		for w, v := range mem[lane*laneLen+laneLen-1] {
			final[w] ^= v
		}
	}
	for w, v := range final {
		binary.LittleEndian.PutUint64(raw[8*w:], v)
	}
	blake2bLong(out, raw[:])
	// H0 is as good as the passphrase for this salt: nothing derived stays.
	clear(raw[:])
	clear(final[:])
	clear(mem)
	clear(h0[:])
	clear(seed[:])
}

// argon2H0 hashes every parameter and input (RFC 9106 §3.2, step 1); the
// secret and associated data LUKS2 never uses are empty.
func argon2H0(mode int, passphrase, salt []byte, time, memoryKiB, lanes, tagLen uint32) [64]byte {
	in := make([]byte, 0, 40+len(passphrase)+len(salt))
	for _, v := range []uint32{lanes, tagLen, memoryKiB, time, argon2Version, uint32(mode), uint32(len(passphrase))} {
		in = binary.LittleEndian.AppendUint32(in, v)
	}
	in = append(in, passphrase...)
	in = binary.LittleEndian.AppendUint32(in, uint32(len(salt)))
	in = append(in, salt...)
	in = binary.LittleEndian.AppendUint32(in, 0) // secret
	in = binary.LittleEndian.AppendUint32(in, 0) // associated data
	var h0 [64]byte
	blake2b(h0[:], in)
	clear(in)
	return h0
}

// argon2Segment fills one lane's part of one slice. The first half of the
// first pass of Argon2id, and all of Argon2i, take reference indexes from
// address blocks made of counters (no data dependence); the rest from the
// previous block.
func argon2Segment(mem []argon2Block, mode int, pass, slice, lane, lanes, laneLen, time uint32) {
	segLen := laneLen / argon2SyncPoints
	independent := mode == argon2i || (mode == argon2id && pass == 0 && slice < argon2SyncPoints/2)
	var addresses, input, zero argon2Block
	if independent {
		input[0], input[1], input[2] = uint64(pass), uint64(lane), uint64(slice)
		input[3], input[4], input[5] = uint64(len(mem)), uint64(time), uint64(mode)
	}
	nextAddresses := func() { // the next 128 indexes: G(0, G(0, input)), counter bumped
		input[6]++
		argon2Compress(&addresses, &input, &zero, false)
		argon2Compress(&addresses, &addresses, &zero, false)
	}
	index := uint32(0)
	if pass == 0 && slice == 0 {
		index = 2 // the two seeded blocks
		if independent {
			nextAddresses()
		}
	}
	offset := lane*laneLen + slice*segLen + index
	for ; index < segLen; index, offset = index+1, offset+1 {
		prev := offset - 1
		if index == 0 && slice == 0 {
			prev += laneLen // the lane's last block
		}
		var random uint64
		if independent {
			if index%argon2BlockWords == 0 {
				nextAddresses()
			}
			random = addresses[index%argon2BlockWords]
		} else {
			random = mem[prev][0]
		}
		ref := argon2RefIndex(random, pass, slice, lane, index, lanes, laneLen, segLen)
		// From the second pass on, the new block is XORed into the old one
		// (version 0x13); the first pass writes into zeroed memory, the same.
		argon2Compress(&mem[offset], &mem[prev], &mem[ref], true)
	}
}

// argon2RefIndex maps 64 pseudo-random bits to the block the next one
// depends on (RFC 9106 §3.4.1.2): a lane, then a position in the blocks
// already finished there, biased toward the recent ones.
func argon2RefIndex(random uint64, pass, slice, lane, index, lanes, laneLen, segLen uint32) uint32 {
	refLane := uint32(random>>32) % lanes
	if pass == 0 && slice == 0 {
		refLane = lane
	}
	// The reference area: its size and where it starts.
	area, start := 3*segLen, ((slice+1)%argon2SyncPoints)*segLen
	if pass == 0 {
		area, start = slice*segLen, 0
		if slice == 0 || lane == refLane {
			area += index
		}
	} else if lane == refLane {
		area += index
	}
	if index == 0 || lane == refLane {
		area--
	}
	x := random & 0xffffffff
	x = x * x >> 32
	x = x * uint64(area) >> 32
	return refLane*laneLen + uint32((uint64(start)+uint64(area)-(x+1))%uint64(laneLen))
}

// argon2Compress is G (RFC 9106 §3.5): out = P(x ⊕ y) ⊕ x ⊕ y, or that
// XORed into out, with P the BlaMka permutation over the block's eight rows
// and then its eight columns of 16-byte registers.
func argon2Compress(out, x, y *argon2Block, xor bool) {
	if !argon2SIMD() {
		argon2CompressGeneric(out, x, y, xor)
		return
	}
	var q argon2Block
	mixBlocksSSE2(&q, x, y, &q) // q is zero: q = x ⊕ y
	blamkaSSE4(&q)
	if xor {
		xorBlocksSSE2(out, x, y, &q)
	} else {
		mixBlocksSSE2(out, x, y, &q)
	}
}

// argon2CompressGeneric is argon2Compress in Go, for CPUs without the
// assembly.
func argon2CompressGeneric(out, x, y *argon2Block, xor bool) {
	var q argon2Block
	for i := range q {
		q[i] = x[i] ^ y[i]
	}
	argon2Permute(&q)
	// x ⊕ y again rather than a saved copy: both are still in the cache.
	if xor {
		for i := range q {
			out[i] ^= q[i] ^ x[i] ^ y[i]
		}
		return
	}
	for i := range q {
		out[i] = q[i] ^ x[i] ^ y[i]
	}
}

// argon2Permute is P over the rows, then the columns (what argon2_amd64.s
// does with SSE registers).
func argon2Permute(q *argon2Block) {
	for i := 0; i < argon2BlockWords; i += 16 {
		blamka(&q[i], &q[i+1], &q[i+2], &q[i+3], &q[i+4], &q[i+5], &q[i+6], &q[i+7],
			&q[i+8], &q[i+9], &q[i+10], &q[i+11], &q[i+12], &q[i+13], &q[i+14], &q[i+15])
	}
	for i := 0; i < 16; i += 2 {
		blamka(&q[i], &q[i+1], &q[i+16], &q[i+17], &q[i+32], &q[i+33], &q[i+48], &q[i+49],
			&q[i+64], &q[i+65], &q[i+80], &q[i+81], &q[i+96], &q[i+97], &q[i+112], &q[i+113])
	}
}

// blamka is BLAKE2b's round on 16 words (G on the four columns, then the
// four diagonals) with Argon2's multiplications, written out: a G that is
// a function call costs half the speed.
func blamka(v0, v1, v2, v3, v4, v5, v6, v7, v8, v9, v10, v11, v12, v13, v14, v15 *uint64) {
	a0, a1, a2, a3, a4, a5, a6, a7 := *v0, *v1, *v2, *v3, *v4, *v5, *v6, *v7
	a8, a9, a10, a11, a12, a13, a14, a15 := *v8, *v9, *v10, *v11, *v12, *v13, *v14, *v15
	a0 = fBlaMka(a0, a4)
	a12 = bits.RotateLeft64(a12^a0, -32)
	a8 = fBlaMka(a8, a12)
	a4 = bits.RotateLeft64(a4^a8, -24)
	a0 = fBlaMka(a0, a4)
	a12 = bits.RotateLeft64(a12^a0, -16)
	a8 = fBlaMka(a8, a12)
	a4 = bits.RotateLeft64(a4^a8, -63)
	a1 = fBlaMka(a1, a5)
	a13 = bits.RotateLeft64(a13^a1, -32)
	a9 = fBlaMka(a9, a13)
	a5 = bits.RotateLeft64(a5^a9, -24)
	a1 = fBlaMka(a1, a5)
	a13 = bits.RotateLeft64(a13^a1, -16)
	a9 = fBlaMka(a9, a13)
	a5 = bits.RotateLeft64(a5^a9, -63)
	a2 = fBlaMka(a2, a6)
	a14 = bits.RotateLeft64(a14^a2, -32)
	a10 = fBlaMka(a10, a14)
	a6 = bits.RotateLeft64(a6^a10, -24)
	a2 = fBlaMka(a2, a6)
	a14 = bits.RotateLeft64(a14^a2, -16)
	a10 = fBlaMka(a10, a14)
	a6 = bits.RotateLeft64(a6^a10, -63)
	a3 = fBlaMka(a3, a7)
	a15 = bits.RotateLeft64(a15^a3, -32)
	a11 = fBlaMka(a11, a15)
	a7 = bits.RotateLeft64(a7^a11, -24)
	a3 = fBlaMka(a3, a7)
	a15 = bits.RotateLeft64(a15^a3, -16)
	a11 = fBlaMka(a11, a15)
	a7 = bits.RotateLeft64(a7^a11, -63)
	a0 = fBlaMka(a0, a5)
	a15 = bits.RotateLeft64(a15^a0, -32)
	a10 = fBlaMka(a10, a15)
	a5 = bits.RotateLeft64(a5^a10, -24)
	a0 = fBlaMka(a0, a5)
	a15 = bits.RotateLeft64(a15^a0, -16)
	a10 = fBlaMka(a10, a15)
	a5 = bits.RotateLeft64(a5^a10, -63)
	a1 = fBlaMka(a1, a6)
	a12 = bits.RotateLeft64(a12^a1, -32)
	a11 = fBlaMka(a11, a12)
	a6 = bits.RotateLeft64(a6^a11, -24)
	a1 = fBlaMka(a1, a6)
	a12 = bits.RotateLeft64(a12^a1, -16)
	a11 = fBlaMka(a11, a12)
	a6 = bits.RotateLeft64(a6^a11, -63)
	a2 = fBlaMka(a2, a7)
	a13 = bits.RotateLeft64(a13^a2, -32)
	a8 = fBlaMka(a8, a13)
	a7 = bits.RotateLeft64(a7^a8, -24)
	a2 = fBlaMka(a2, a7)
	a13 = bits.RotateLeft64(a13^a2, -16)
	a8 = fBlaMka(a8, a13)
	a7 = bits.RotateLeft64(a7^a8, -63)
	a3 = fBlaMka(a3, a4)
	a14 = bits.RotateLeft64(a14^a3, -32)
	a9 = fBlaMka(a9, a14)
	a4 = bits.RotateLeft64(a4^a9, -24)
	a3 = fBlaMka(a3, a4)
	a14 = bits.RotateLeft64(a14^a3, -16)
	a9 = fBlaMka(a9, a14)
	a4 = bits.RotateLeft64(a4^a9, -63)
	*v0, *v1, *v2, *v3, *v4, *v5, *v6, *v7 = a0, a1, a2, a3, a4, a5, a6, a7
	*v8, *v9, *v10, *v11, *v12, *v13, *v14, *v15 = a8, a9, a10, a11, a12, a13, a14, a15
}

// fBlaMka is BLAKE2b's addition with Argon2's product: a + b + 2·lo32(a)·lo32(b).
func fBlaMka(a, b uint64) uint64 {
	return a + b + 2*uint64(uint32(a))*uint64(uint32(b))
}

// blake2bLong is Argon2's variable-length hash H' (RFC 9106 §3.3): BLAKE2b
// of LE32(len(out)) ‖ in when that fits in 64 bytes, else a chain of
// 64-byte hashes of which each but the last gives its first 32 bytes.
func blake2bLong(out, in []byte) {
	prefixed := binary.LittleEndian.AppendUint32(make([]byte, 0, 4+len(in)), uint32(len(out)))
	prefixed = append(prefixed, in...)
	defer clear(prefixed)
	if len(out) <= 64 {
		blake2b(out, prefixed)
		return
	}
	var v [64]byte
	blake2b(v[:], prefixed)
	r := (len(out)+31)/32 - 2
	for i := 0; ; i++ {
		copy(out[32*i:], v[:32])
		if i+1 == r {
			break
		}
		blake2b(v[:], v[:])
	}
	blake2b(out[32*r:], v[:])
	clear(v[:])
}

var blake2bIV = [8]uint64{
	0x6a09e667f3bcc908, 0xbb67ae8584caa73b, 0x3c6ef372fe94f82b, 0xa54ff53a5f1d36f1,
	0x510e527fade682d1, 0x9b05688c2b3e6c1f, 0x1f83d9abfb41bd6b, 0x5be0cd19137e2179,
}

var blake2bSigma = [10][16]uint8{
	{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15},
	{14, 10, 4, 8, 9, 15, 13, 6, 1, 12, 0, 2, 11, 7, 5, 3},
	{11, 8, 12, 0, 5, 2, 15, 13, 10, 14, 3, 6, 7, 1, 9, 4},
	{7, 9, 3, 1, 13, 12, 11, 14, 2, 6, 5, 10, 4, 0, 15, 8},
	{9, 0, 5, 7, 2, 4, 10, 15, 14, 1, 11, 12, 6, 8, 3, 13},
	{2, 12, 6, 10, 0, 11, 8, 3, 4, 13, 7, 5, 15, 14, 1, 9},
	{12, 5, 1, 15, 14, 13, 4, 10, 0, 7, 6, 3, 9, 2, 8, 11},
	{13, 11, 7, 14, 12, 1, 3, 9, 5, 0, 15, 4, 8, 6, 2, 10},
	{6, 15, 14, 9, 11, 3, 0, 8, 12, 2, 13, 7, 1, 4, 10, 5},
	{10, 2, 8, 4, 7, 6, 1, 5, 15, 11, 9, 14, 3, 12, 13, 0},
}

// blake2b writes the unkeyed BLAKE2b hash of in, len(out) bytes long
// (1 to 64), into out.
func blake2b(out, in []byte) {
	h := blake2bIV
	h[0] ^= 0x01010000 ^ uint64(len(out))
	var m [16]uint64
	var last [128]byte
	for n := uint64(0); ; {
		block := in
		final := len(in) <= 128
		if final {
			// The last block, padded with zeros; the counter counts only input.
			copy(last[:], in)
			clear(last[len(in):])
			block = last[:]
			n += uint64(len(in))
		} else {
			n += 128
		}
		for i := range m {
			m[i] = binary.LittleEndian.Uint64(block[8*i:])
		}
		blake2bCompress(&h, &m, n, final)
		if final {
			break
		}
		in = in[128:]
	}
	var sum [64]byte
	for i, v := range h {
		binary.LittleEndian.PutUint64(sum[8*i:], v)
	}
	copy(out, sum[:len(out)])
	clear(sum[:])
	clear(last[:])
	clear(h[:])
	clear(m[:])
}

func blake2bCompress(h *[8]uint64, m *[16]uint64, counter uint64, final bool) {
	var v [16]uint64
	copy(v[:8], h[:])
	copy(v[8:], blake2bIV[:])
	v[12] ^= counter // the counter's high word stays 0: no input here is 2^64 bytes
	if final {
		v[14] = ^v[14]
	}
	g := func(a, b, c, d int, x, y uint64) {
		v[a] += v[b] + x
		v[d] = bits.RotateLeft64(v[d]^v[a], -32)
		v[c] += v[d]
		v[b] = bits.RotateLeft64(v[b]^v[c], -24)
		v[a] += v[b] + y
		v[d] = bits.RotateLeft64(v[d]^v[a], -16)
		v[c] += v[d]
		v[b] = bits.RotateLeft64(v[b]^v[c], -63)
	}
	for r := 0; r < 12; r++ {
		s := &blake2bSigma[r%10]
		g(0, 4, 8, 12, m[s[0]], m[s[1]])
		g(1, 5, 9, 13, m[s[2]], m[s[3]])
		g(2, 6, 10, 14, m[s[4]], m[s[5]])
		g(3, 7, 11, 15, m[s[6]], m[s[7]])
		g(0, 5, 10, 15, m[s[8]], m[s[9]])
		g(1, 6, 11, 12, m[s[10]], m[s[11]])
		g(2, 7, 8, 13, m[s[12]], m[s[13]])
		g(3, 4, 9, 14, m[s[14]], m[s[15]])
	}
	for i := range h {
		h[i] ^= v[i] ^ v[i+8]
	}
}
