//go:build !amd64

package main

func argon2SIMD() bool { return false }

func blamkaSSE4(b *argon2Block) { panic("argon2: no assembly") }

func mixBlocksSSE2(out, a, b, c *argon2Block) { panic("argon2: no assembly") }
func xorBlocksSSE2(out, a, b, c *argon2Block) { panic("argon2: no assembly") }
