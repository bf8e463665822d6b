package main

// aesBulkAsm says whether aesblocks_amd64.s can run here.
func aesBulkAsm() bool {
	f := cpuFeatures()
	return f.aes && f.sse41
}

// aesEncryptBlocksAsm and aesDecryptBlocksAsm run AES over n blocks at buf in
// place, with nr rounds and the round keys at xk (aesExpandKey's layout).
//
//go:noescape
func aesEncryptBlocksAsm(nr int, xk *byte, buf *byte, n int)

//go:noescape
func aesDecryptBlocksAsm(nr int, xk *byte, buf *byte, n int)
