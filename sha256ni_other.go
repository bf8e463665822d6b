//go:build !amd64

package main

func sha256NI() bool { return false }

func sha256BlocksSHANI(h *[8]uint32, p []byte) { panic("sha256ni: no assembly") }
