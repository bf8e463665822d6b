package main

import (
	"testing"

	"golang.org/x/sys/cpu"
)

// cpuFeatures asks the CPU itself; x/sys/cpu (linked only into the tests)
// must agree on every feature both know. SHA, which x/sys/cpu does not
// report, is checked against the SHA-NI assembly's own test vectors
// (sha256ni_test.go) wherever it is found.
func TestCPUFeaturesMatchXSysCPU(t *testing.T) {
	f := cpuFeatures()
	for _, c := range []struct {
		name      string
		got, want bool
	}{
		{"AES", f.aes, cpu.X86.HasAES},
		{"SSE4.1", f.sse41, cpu.X86.HasSSE41},
		{"SSSE3", f.ssse3, cpu.X86.HasSSSE3},
		{"AVX", f.avx, cpu.X86.HasAVX},
	} {
		if c.got != c.want {
			t.Errorf("%s: cpuFeatures says %v, x/sys/cpu %v", c.name, c.got, c.want)
		}
	}
}
