//go:build !amd64

package main

import "golang.org/x/sys/unix"

// No reaper program for this architecture: the --pid init and its parent
// stay Go processes and forward signals through os/signal.
const reaperMachine = 0

func reaperCode() []byte { return nil }

type sigactions map[int]struct{}

func catchSignals(set uint64, tid int) (sigactions, error) { return nil, unix.ENOSYS }
func (s sigactions) restore()                              {}
