package main

import "golang.org/x/sys/cpu"

// sha256NI says whether sha256ni_amd64.s can run here: the SHA extensions,
// and the AVX state the copied code's VEX moves need (which HasAVX checks
// the kernel saves).
var sha256NI = cpu.X86.HasAVX && cpu.X86.HasSSE41 && cpu.X86.HasSSSE3 && cpuHasSHA()

// sha256BlocksSHANI compresses every whole 64-byte block of p into h.
//
//go:noescape
func sha256BlocksSHANI(h *[8]uint32, p []byte)

func cpuHasSHA() bool
