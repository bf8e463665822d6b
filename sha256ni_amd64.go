package main

// sha256NI says whether sha256ni_amd64.s can run here: the SHA extensions,
// and the AVX state the copied code's VEX moves need (which HasAVX checks
// the kernel saves).
func sha256NI() bool {
	f := cpuFeatures()
	return f.avx && f.sse41 && f.ssse3 && f.sha
}

// sha256BlocksSHANI compresses every whole 64-byte block of p into h.
//
//go:noescape
func sha256BlocksSHANI(h *[8]uint32, p []byte)
