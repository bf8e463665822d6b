package main

import "sync"

// x86Features are the instruction-set extensions the assembly here uses.
// They are asked of the CPU on first use, not at start: CPUID exits to the
// hypervisor on a VM (about 10 µs each on the machines minirun is measured
// on), and a launch of an unencrypted image never needs them.
type x86Features struct{ aes, sse41, ssse3, avx, sha bool }

var cpuFeatures = sync.OnceValue(func() (f x86Features) {
	maxLeaf, _, _, _ := cpuid(0, 0)
	if maxLeaf < 1 {
		return f
	}
	_, _, ecx, _ := cpuid(1, 0)
	f.ssse3 = ecx&(1<<9) != 0
	f.sse41 = ecx&(1<<19) != 0
	f.aes = ecx&(1<<25) != 0
	// AVX needs the kernel to save the YMM state too (OSXSAVE, then XCR0).
	if ecx&(1<<27) != 0 && ecx&(1<<28) != 0 {
		f.avx = xgetbv0()&6 == 6
	}
	if maxLeaf >= 7 {
		_, ebx, _, _ := cpuid(7, 0)
		f.sha = ebx&(1<<29) != 0
	}
	return f
})

func cpuid(leaf, sub uint32) (a, b, c, d uint32)

// xgetbv0 returns the low half of XCR0; only call it when OSXSAVE is set.
func xgetbv0() uint32
