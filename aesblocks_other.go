//go:build !amd64

package main

func aesBulkAsm() bool { return false }

func aesEncryptBlocksAsm(nr int, xk *byte, buf *byte, n int) { panic("aesblocks: no assembly") }
func aesDecryptBlocksAsm(nr int, xk *byte, buf *byte, n int) { panic("aesblocks: no assembly") }
