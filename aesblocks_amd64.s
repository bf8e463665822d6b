// aesblocks_amd64.s: AES-NI over many independent blocks, eight in flight so
// the AESENC/AESDEC latency overlaps (aesblocks.go says why). Round keys are
// loaded once per round for all eight blocks; a tail loop takes the rest one
// by one. Only X0-X8 are used (ABI0: nothing to save).

#include "textflag.h"

// func aesEncryptBlocksAsm(nr int, xk *byte, buf *byte, n int)
TEXT ·aesEncryptBlocksAsm(SB), NOSPLIT, $0-32
	MOVQ nr+0(FP), CX
	MOVQ xk+8(FP), AX
	MOVQ buf+16(FP), DX
	MOVQ n+24(FP), BX
Encryptloop8:
	CMPQ BX, $8
	JB   Encrypttail
	MOVUPS 0(DX), X0
	MOVUPS 16(DX), X1
	MOVUPS 32(DX), X2
	MOVUPS 48(DX), X3
	MOVUPS 64(DX), X4
	MOVUPS 80(DX), X5
	MOVUPS 96(DX), X6
	MOVUPS 112(DX), X7
	MOVUPS (AX), X8
	PXOR   X8, X0
	PXOR   X8, X1
	PXOR   X8, X2
	PXOR   X8, X3
	PXOR   X8, X4
	PXOR   X8, X5
	PXOR   X8, X6
	PXOR   X8, X7
	MOVQ AX, SI
	MOVQ CX, DI
	DECQ DI
Encryptround8:
	ADDQ $16, SI
	MOVUPS (SI), X8
	AESENC X8, X0
	AESENC X8, X1
	AESENC X8, X2
	AESENC X8, X3
	AESENC X8, X4
	AESENC X8, X5
	AESENC X8, X6
	AESENC X8, X7
	DECQ DI
	JNZ  Encryptround8
	MOVUPS 16(SI), X8
	AESENCLAST X8, X0
	AESENCLAST X8, X1
	AESENCLAST X8, X2
	AESENCLAST X8, X3
	AESENCLAST X8, X4
	AESENCLAST X8, X5
	AESENCLAST X8, X6
	AESENCLAST X8, X7
	MOVUPS X0, 0(DX)
	MOVUPS X1, 16(DX)
	MOVUPS X2, 32(DX)
	MOVUPS X3, 48(DX)
	MOVUPS X4, 64(DX)
	MOVUPS X5, 80(DX)
	MOVUPS X6, 96(DX)
	MOVUPS X7, 112(DX)
	ADDQ $128, DX
	SUBQ $8, BX
	JMP  Encryptloop8
Encrypttail:
	TESTQ BX, BX
	JZ   Encryptdone
	MOVUPS (DX), X0
	MOVUPS (AX), X8
	PXOR   X8, X0
	MOVQ AX, SI
	MOVQ CX, DI
	DECQ DI
Encryptround1:
	ADDQ $16, SI
	MOVUPS (SI), X8
	AESENC X8, X0
	DECQ DI
	JNZ  Encryptround1
	MOVUPS 16(SI), X8
	AESENCLAST X8, X0
	MOVUPS X0, (DX)
	ADDQ $16, DX
	DECQ BX
	JMP  Encrypttail
Encryptdone:
	RET

// func aesDecryptBlocksAsm(nr int, xk *byte, buf *byte, n int)
TEXT ·aesDecryptBlocksAsm(SB), NOSPLIT, $0-32
	MOVQ nr+0(FP), CX
	MOVQ xk+8(FP), AX
	MOVQ buf+16(FP), DX
	MOVQ n+24(FP), BX
Decryptloop8:
	CMPQ BX, $8
	JB   Decrypttail
	MOVUPS 0(DX), X0
	MOVUPS 16(DX), X1
	MOVUPS 32(DX), X2
	MOVUPS 48(DX), X3
	MOVUPS 64(DX), X4
	MOVUPS 80(DX), X5
	MOVUPS 96(DX), X6
	MOVUPS 112(DX), X7
	MOVUPS (AX), X8
	PXOR   X8, X0
	PXOR   X8, X1
	PXOR   X8, X2
	PXOR   X8, X3
	PXOR   X8, X4
	PXOR   X8, X5
	PXOR   X8, X6
	PXOR   X8, X7
	MOVQ AX, SI
	MOVQ CX, DI
	DECQ DI
Decryptround8:
	ADDQ $16, SI
	MOVUPS (SI), X8
	AESDEC X8, X0
	AESDEC X8, X1
	AESDEC X8, X2
	AESDEC X8, X3
	AESDEC X8, X4
	AESDEC X8, X5
	AESDEC X8, X6
	AESDEC X8, X7
	DECQ DI
	JNZ  Decryptround8
	MOVUPS 16(SI), X8
	AESDECLAST X8, X0
	AESDECLAST X8, X1
	AESDECLAST X8, X2
	AESDECLAST X8, X3
	AESDECLAST X8, X4
	AESDECLAST X8, X5
	AESDECLAST X8, X6
	AESDECLAST X8, X7
	MOVUPS X0, 0(DX)
	MOVUPS X1, 16(DX)
	MOVUPS X2, 32(DX)
	MOVUPS X3, 48(DX)
	MOVUPS X4, 64(DX)
	MOVUPS X5, 80(DX)
	MOVUPS X6, 96(DX)
	MOVUPS X7, 112(DX)
	ADDQ $128, DX
	SUBQ $8, BX
	JMP  Decryptloop8
Decrypttail:
	TESTQ BX, BX
	JZ   Decryptdone
	MOVUPS (DX), X0
	MOVUPS (AX), X8
	PXOR   X8, X0
	MOVQ AX, SI
	MOVQ CX, DI
	DECQ DI
Decryptround1:
	ADDQ $16, SI
	MOVUPS (SI), X8
	AESDEC X8, X0
	DECQ DI
	JNZ  Decryptround1
	MOVUPS 16(SI), X8
	AESDECLAST X8, X0
	MOVUPS X0, (DX)
	ADDQ $16, DX
	DECQ BX
	JMP  Decrypttail
Decryptdone:
	RET
