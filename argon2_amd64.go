package main

// argon2SIMD says whether argon2_amd64.s can run here (x/crypto's test).
func argon2SIMD() bool {
	f := cpuFeatures()
	return f.ssse3 && f.sse41
}

// blamkaSSE4 applies P to the rows and then the columns of b in place.
//
//go:noescape
func blamkaSSE4(b *argon2Block)

// mixBlocksSSE2 sets out = a ⊕ b ⊕ c; xorBlocksSSE2 XORs a ⊕ b ⊕ c into out.
//
//go:noescape
func mixBlocksSSE2(out, a, b, c *argon2Block)

//go:noescape
func xorBlocksSSE2(out, a, b, c *argon2Block)
