//go:build cgo

// minirun must be built with CGO_ENABLED=0: with cgo linked, the Go runtime
// cannot change credentials on all threads (the --pid init needs it) and
// the static, C-free binary is the point. This file breaks such a build.
package main

var _ = minirunMustBeBuiltWithCGO_ENABLED0
