//go:build !purego

#include "textflag.h"

// Per 128-bit lane: reverse the sixteen bytes (GHASH's working order).
DATA bswapMask<>+0x00(SB)/8, $0x08090a0b0c0d0e0f
DATA bswapMask<>+0x08(SB)/8, $0x0001020304050607
DATA bswapMask<>+0x10(SB)/8, $0x08090a0b0c0d0e0f
DATA bswapMask<>+0x18(SB)/8, $0x0001020304050607
DATA bswapMask<>+0x20(SB)/8, $0x08090a0b0c0d0e0f
DATA bswapMask<>+0x28(SB)/8, $0x0001020304050607
DATA bswapMask<>+0x30(SB)/8, $0x08090a0b0c0d0e0f
DATA bswapMask<>+0x38(SB)/8, $0x0001020304050607
GLOBL bswapMask<>(SB), RODATA|NOPTR, $64

// Per lane: reverse only the last four bytes, the big-endian block
// counter, so that VPADDD can count in dword 3.
DATA ctrShuf<>+0x00(SB)/8, $0x0706050403020100
DATA ctrShuf<>+0x08(SB)/8, $0x0c0d0e0f0b0a0908
DATA ctrShuf<>+0x10(SB)/8, $0x0706050403020100
DATA ctrShuf<>+0x18(SB)/8, $0x0c0d0e0f0b0a0908
DATA ctrShuf<>+0x20(SB)/8, $0x0706050403020100
DATA ctrShuf<>+0x28(SB)/8, $0x0c0d0e0f0b0a0908
DATA ctrShuf<>+0x30(SB)/8, $0x0706050403020100
DATA ctrShuf<>+0x38(SB)/8, $0x0c0d0e0f0b0a0908
GLOBL ctrShuf<>(SB), RODATA|NOPTR, $64

// Lane i's counter is the first one plus i.
DATA ctrInit<>+0x00(SB)/8, $0
DATA ctrInit<>+0x08(SB)/8, $0x0000000000000000
DATA ctrInit<>+0x10(SB)/8, $0
DATA ctrInit<>+0x18(SB)/8, $0x0000000100000000
DATA ctrInit<>+0x20(SB)/8, $0
DATA ctrInit<>+0x28(SB)/8, $0x0000000200000000
DATA ctrInit<>+0x30(SB)/8, $0
DATA ctrInit<>+0x38(SB)/8, $0x0000000300000000
GLOBL ctrInit<>(SB), RODATA|NOPTR, $64

// Four blocks further in every lane.
DATA ctrInc4<>+0x00(SB)/8, $0
DATA ctrInc4<>+0x08(SB)/8, $0x0000000400000000
DATA ctrInc4<>+0x10(SB)/8, $0
DATA ctrInc4<>+0x18(SB)/8, $0x0000000400000000
DATA ctrInc4<>+0x20(SB)/8, $0
DATA ctrInc4<>+0x28(SB)/8, $0x0000000400000000
DATA ctrInc4<>+0x30(SB)/8, $0
DATA ctrInc4<>+0x38(SB)/8, $0x0000000400000000
GLOBL ctrInc4<>(SB), RODATA|NOPTR, $64

// The reduction constant: x^128 + x^7 + x^2 + x + 1, reflected.
DATA poly<>+0x00(SB)/8, $0x0000000000000001
DATA poly<>+0x08(SB)/8, $0xc200000000000000
GLOBL poly<>(SB), RODATA|NOPTR, $16

// AESROUND4 runs one round on the four state registers Z1-Z4.
#define AESROUND4(k) \
	VAESENC k, Z1, Z1; \
	VAESENC k, Z2, Z2; \
	VAESENC k, Z3, Z3; \
	VAESENC k, Z4, Z4

// LOADKEYS broadcasts the round keys at R10 (R8 rounds) into Z16-Z30.
#define LOADKEYS \
	VBROADCASTI32X4 0(R10), Z16; \
	VBROADCASTI32X4 16(R10), Z17; \
	VBROADCASTI32X4 32(R10), Z18; \
	VBROADCASTI32X4 48(R10), Z19; \
	VBROADCASTI32X4 64(R10), Z20; \
	VBROADCASTI32X4 80(R10), Z21; \
	VBROADCASTI32X4 96(R10), Z22; \
	VBROADCASTI32X4 112(R10), Z23; \
	VBROADCASTI32X4 128(R10), Z24; \
	VBROADCASTI32X4 144(R10), Z25; \
	VBROADCASTI32X4 160(R10), Z26; \
	VBROADCASTI32X4 176(R10), Z27; \
	VBROADCASTI32X4 192(R10), Z28; \
	VBROADCASTI32X4 208(R10), Z29; \
	MOVQ            R8, DX; \
	SHLQ            $4, DX; \
	VBROADCASTI32X4 (R10)(DX*1), Z30

// COUNTERS4 makes the next sixteen counter blocks in Z1-Z4, whitened
// with round key 0.
#define COUNTERS4 \
	VPSHUFB Z15, Z0, Z1; \
	VPADDD  Z14, Z0, Z0; \
	VPSHUFB Z15, Z0, Z2; \
	VPADDD  Z14, Z0, Z0; \
	VPSHUFB Z15, Z0, Z3; \
	VPADDD  Z14, Z0, Z0; \
	VPSHUFB Z15, Z0, Z4; \
	VPADDD  Z14, Z0, Z0; \
	VPXORQ  Z16, Z1, Z1; \
	VPXORQ  Z16, Z2, Z2; \
	VPXORQ  Z16, Z3, Z3; \
	VPXORQ  Z16, Z4, Z4

// XORSTORE4 XORs the keystream in Z1-Z4 with 256 bytes at SI into DI.
#define XORSTORE4 \
	VAESENCLAST Z30, Z1, Z1; \
	VAESENCLAST Z30, Z2, Z2; \
	VAESENCLAST Z30, Z3, Z3; \
	VAESENCLAST Z30, Z4, Z4; \
	VPXORQ      0(SI), Z1, Z1; \
	VPXORQ      64(SI), Z2, Z2; \
	VPXORQ      128(SI), Z3, Z3; \
	VPXORQ      192(SI), Z4, Z4; \
	VMOVDQU64   Z1, 0(DI); \
	VMOVDQU64   Z2, 64(DI); \
	VMOVDQU64   Z3, 128(DI); \
	VMOVDQU64   Z4, 192(DI)

// CLMUL4 multiplies the four blocks of d by the four powers in k, lane by
// lane, without reduction: lo, hi and the two middle products (summed)
// land in l, h and m.
#define CLMUL4(k, d, l, h, m, t) \
	VPCLMULQDQ $0x00, k, d, l; \
	VPCLMULQDQ $0x11, k, d, h; \
	VPCLMULQDQ $0x01, k, d, m; \
	VPCLMULQDQ $0x10, k, d, t; \
	VPXORQ     t, m, m

// CLMUL4ACC is CLMUL4 adding into l, h and m.
#define CLMUL4ACC(k, d, l, h, m, t0, t1, t2, t3) \
	VPCLMULQDQ $0x00, k, d, t0; \
	VPCLMULQDQ $0x11, k, d, t1; \
	VPCLMULQDQ $0x01, k, d, t2; \
	VPCLMULQDQ $0x10, k, d, t3; \
	VPXORQ     t0, l, l; \
	VPXORQ     t1, h, h; \
	VPTERNLOGD $0x96, t2, t3, m

// FOLD sums the four lanes of Z8 (lo), Z9 (hi) and Z10 (middle) into
// their low 128 bits, with three scratch registers named as Y and X.
#define FOLD(y0, y1, y2, x0, x1, x2) \
	VEXTRACTI64X4 $1, Z8, y0; \
	VEXTRACTI64X4 $1, Z9, y1; \
	VEXTRACTI64X4 $1, Z10, y2; \
	VPXORQ        y0, Y8, Y8; \
	VPXORQ        y1, Y9, Y9; \
	VPXORQ        y2, Y10, Y10; \
	VEXTRACTI32X4 $1, Y8, x0; \
	VEXTRACTI32X4 $1, Y9, x1; \
	VEXTRACTI32X4 $1, Y10, x2; \
	VPXORQ        x0, X8, X8; \
	VPXORQ        x1, X9, X9; \
	VPXORQ        x2, X10, X10

// REDUCE turns the 256-bit product X9:X8 with middle X10 into out: the
// middle is split over both halves, then two folds by the polynomial
// (a register or memory) reduce the low half into the high one; t is
// scratch.
#define REDUCE(t, poly, out) \
	VPSLLDQ    $8, X10, t; \
	VPSRLDQ    $8, X10, X10; \
	VPXORQ     t, X8, X8; \
	VPXORQ     X10, X9, X9; \
	VPCLMULQDQ $0x10, poly, X8, t; \
	VPSHUFD    $0x4e, X8, X8; \
	VPXORQ     t, X8, X8; \
	VPCLMULQDQ $0x10, poly, X8, t; \
	VPSHUFD    $0x4e, X8, X8; \
	VPXORQ     t, X8, X8; \
	VPXORQ     X9, X8, out

// MASK sets k to the byte mask of min(DX, 64) bytes and takes 64 off DX,
// not below zero. BX holds 64, R13 all ones and zero a zero; out is
// scratch, R11 too.
#define MASK(k, out, zero) \
	MOVQ    DX, R11; \
	CMPQ    R11, BX; \
	CMOVQGT BX, R11; \
	BZHIQ   R11, R13, out; \
	KMOVQ   out, k; \
	SUBQ    BX, DX; \
	CMOVQLT zero, DX

// The stitched loops keep the round keys in Z16-Z30, the counters in Z0,
// GHASH's accumulator in X13 and its sums in Z8-Z10, and read the powers
// of H from memory: thirty-two registers hold no more.

// GHFIRSTREG starts a sixteen-block product: the four blocks in r, the
// accumulator X13 added to the first, times the four powers at tab.
#define GHFIRSTREG(r, tab) \
	VPSHUFB    Z31, r, Z5; \
	VPXORQ     Z13, Z5, Z5; \
	VPCLMULQDQ $0x00, tab, Z5, Z8; \
	VPCLMULQDQ $0x11, tab, Z5, Z9; \
	VPCLMULQDQ $0x01, tab, Z5, Z10; \
	VPCLMULQDQ $0x10, tab, Z5, Z6; \
	VPXORQ     Z6, Z10, Z10

// GHNEXTREG adds the next four blocks in r times the powers at tab.
#define GHNEXTREG(r, tab) \
	VPSHUFB    Z31, r, Z5; \
	VPCLMULQDQ $0x00, tab, Z5, Z6; \
	VPCLMULQDQ $0x11, tab, Z5, Z7; \
	VPCLMULQDQ $0x01, tab, Z5, Z11; \
	VPCLMULQDQ $0x10, tab, Z5, Z12; \
	VPXORQ     Z6, Z8, Z8; \
	VPXORQ     Z7, Z9, Z9; \
	VPTERNLOGD $0x96, Z11, Z12, Z10

// GHFIRST starts a sixteen-block product: the four blocks at mem, the
// accumulator added to the first, times the four powers at tab.
#define GHFIRST(mem, tab) \
	VMOVDQU64 mem, Z5; \
	GHFIRSTREG(Z5, tab)

// GHNEXT adds the next four blocks at mem times the powers at tab.
#define GHNEXT(mem, tab) \
	VMOVDQU64 mem, Z5; \
	GHNEXTREG(Z5, tab)

// GHREDUCE sums the lanes and reduces into X13, for the stitched loops
// (X30 holds a round key there, so the polynomial is read from memory).
#define GHREDUCE \
	FOLD(Y6, Y7, Y11, X6, X7, X11); \
	REDUCE(X11, poly<>(SB), X13)

// SETUP broadcasts the round keys at R10 (R8 rounds) and loads the
// counter constants, GHASH's byte-swap mask, the first sixteen counters
// from the block ctrLo:ctrHi (memory order, taken from the arguments: a
// block just stored by the caller piecewise could not be forwarded to a
// wide load, which would then wait for the store buffer to drain) and
// the accumulator at acc into X13.
#define SETUP \
	LOADKEYS; \
	VMOVDQU64  ctrShuf<>(SB), Z15; \
	VMOVDQU64  ctrInc4<>(SB), Z14; \
	VMOVDQU64  bswapMask<>(SB), Z31; \
	MOVQ       j0Lo+32(FP), R11; \
	VMOVQ      R11, X0; \
	MOVQ       ctrHi+48(FP), R11; \
	VPINSRQ    $1, R11, X0, X0; \
	VSHUFI64X2 $0, Z0, Z0, Z0; \
	VPSHUFB    Z15, Z0, Z0; \
	VPADDD     ctrInit<>(SB), Z0, Z0; \
	MOVQ       acc+24(FP), R11; \
	VMOVDQU64  (R11), X13

// AADBLOCK loads the AAD block aadHi:aadLo (working form) into X1.
#define AADBLOCK \
	MOVQ    aadLo+56(FP), R11; \
	VMOVQ   R11, X1; \
	MOVQ    aadHi+64(FP), R11; \
	VPINSRQ $1, R11, X1, X1

// MULH sets X13 to (X13 XOR X1) times H (htab at AX).
#define MULH \
	VPXORQ     X13, X1, X1; \
	VPCLMULQDQ $0x00, 256(AX), X1, X8; \
	VPCLMULQDQ $0x11, 256(AX), X1, X9; \
	VPCLMULQDQ $0x01, 256(AX), X1, X10; \
	VPCLMULQDQ $0x10, 256(AX), X1, X11; \
	VPXORQ     X11, X10, X10; \
	REDUCE(X11, poly<>(SB), X13)

// TAILMASKS sets K1-K4 to the byte masks of the last CX (< 256) bytes,
// 64 per mask, and R9 to the powers of H for them and the length block:
// with r = ceil(CX/16) blocks, block i is multiplied by H^(r+1-i), entry
// 16-r of htab (AX).
#define TAILMASKS \
	MOVQ $64, BX; \
	MOVQ $-1, R13; \
	XORQ R9, R9; \
	MOVQ CX, DX; \
	MASK(K1, R12, R9); \
	MASK(K2, R12, R9); \
	MASK(K3, R12, R9); \
	MASK(K4, R12, R9); \
	MOVQ CX, DX; \
	ADDQ $15, DX; \
	SHRQ $4, DX; \
	MOVQ $16, R9; \
	SUBQ DX, R9; \
	SHLQ $4, R9; \
	ADDQ AX, R9

// TAILHASH adds the tail blocks in Z1-Z4 (zero past the data; the
// accumulator X13 goes into the first) and the length block, len(src) and
// aadBits in bits, into Z8-Z10 and reduces into X13.
#define TAILHASH \
	GHFIRSTREG(Z1, 0(R9)); \
	GHNEXTREG(Z2, 64(R9)); \
	GHNEXTREG(Z3, 128(R9)); \
	GHNEXTREG(Z4, 192(R9)); \
	MOVQ       src_len+128(FP), R11; \
	SHLQ       $3, R11; \
	VMOVQ      R11, X5; \
	MOVQ       aadBits+80(FP), R11; \
	VPINSRQ    $1, R11, X5, X5; \
	VPCLMULQDQ $0x00, 256(AX), X5, X6; \
	VPCLMULQDQ $0x11, 256(AX), X5, X7; \
	VPCLMULQDQ $0x01, 256(AX), X5, X11; \
	VPCLMULQDQ $0x10, 256(AX), X5, X12; \
	VPXORQ     Z6, Z8, Z8; \
	VPXORQ     Z7, Z9, Z9; \
	VPTERNLOGD $0x96, Z11, Z12, Z10; \
	GHREDUCE

// J0BLOCK loads the counter block J0 (memory order) into x, whitened.
#define J0BLOCK(x) \
	MOVQ    j0Lo+32(FP), R11; \
	VMOVQ   R11, x; \
	MOVQ    j0Hi+40(FP), R11; \
	VPINSRQ $1, R11, x, x; \
	VPXORQ  X16, x, x

// STORETAG writes the tag, E_K(J0) in x XOR GHASH in X13, to tag; t is
// scratch.
#define STORETAG(x, t) \
	VPSHUFB   X31, X13, t; \
	VPXORQ    x, t, t; \
	MOVQ      tag+88(FP), R11; \
	VMOVDQU64 t, (R11)

// func ghash(htab *[512]byte, acc *[16]byte, data []byte)
//
// ghash absorbs data, its last block zero-padded, into acc: sixteen blocks
// at a time multiplied by H^16 … H^1 and reduced once, then the last one
// to sixteen blocks, loaded under byte masks, by the matching powers. It
// serves additional data longer than one block.
TEXT ·ghash(SB), NOSPLIT, $0-40
	MOVQ htab+0(FP), AX
	MOVQ acc+8(FP), BX
	MOVQ data_base+16(FP), SI
	MOVQ data_len+24(FP), CX

	VMOVDQU64 bswapMask<>(SB), Z31
	VMOVDQU64 poly<>(SB), X30
	VMOVDQU64 (BX), X0
	TESTQ     CX, CX
	JZ        ghashStore

	CMPQ      CX, $256
	JBE       remainder
	VMOVDQU64 16(AX), Z16
	VMOVDQU64 80(AX), Z17
	VMOVDQU64 144(AX), Z18
	VMOVDQU64 208(AX), Z19

ghash256:
	VMOVDQU64 0(SI), Z1
	VMOVDQU64 64(SI), Z2
	VMOVDQU64 128(SI), Z3
	VMOVDQU64 192(SI), Z4
	VPSHUFB   Z31, Z1, Z1
	VPSHUFB   Z31, Z2, Z2
	VPSHUFB   Z31, Z3, Z3
	VPSHUFB   Z31, Z4, Z4
	VPXORQ    Z0, Z1, Z1
	CLMUL4(Z16, Z1, Z8, Z9, Z10, Z11)
	CLMUL4ACC(Z17, Z2, Z8, Z9, Z10, Z11, Z12, Z13, Z5)
	CLMUL4ACC(Z18, Z3, Z8, Z9, Z10, Z11, Z12, Z13, Z5)
	CLMUL4ACC(Z19, Z4, Z8, Z9, Z10, Z11, Z12, Z13, Z5)
	FOLD(Y11, Y12, Y13, X11, X12, X13)
	REDUCE(X11, X30, X0)
	ADDQ      $256, SI
	SUBQ      $256, CX
	CMPQ      CX, $256
	JA        ghash256

remainder:
	// CX is 1 to 256 bytes, r = ceil(CX/16) blocks; block i is
	// multiplied by H^(r-i), entry 17-r+i of htab.
	MOVQ CX, DX
	ADDQ $15, DX
	SHRQ $4, DX
	MOVQ $17, R9
	SUBQ DX, R9
	SHLQ $4, R9
	ADDQ AX, R9

	MOVQ $64, BX
	MOVQ $-1, R13
	XORQ R8, R8
	MOVQ CX, DX
	MASK(K1, DI, R8)
	MASK(K2, DI, R8)
	MASK(K3, DI, R8)
	MASK(K4, DI, R8)

	VMOVDQU8.Z 0(SI), K1, Z1
	VMOVDQU8.Z 64(SI), K2, Z2
	VMOVDQU8.Z 128(SI), K3, Z3
	VMOVDQU8.Z 192(SI), K4, Z4
	VPSHUFB    Z31, Z1, Z1
	VPSHUFB    Z31, Z2, Z2
	VPSHUFB    Z31, Z3, Z3
	VPSHUFB    Z31, Z4, Z4
	VPXORQ     Z0, Z1, Z1
	VMOVDQU64  0(R9), Z16
	VMOVDQU64  64(R9), Z17
	VMOVDQU64  128(R9), Z18
	VMOVDQU64  192(R9), Z19
	CLMUL4(Z16, Z1, Z8, Z9, Z10, Z11)
	CLMUL4ACC(Z17, Z2, Z8, Z9, Z10, Z11, Z12, Z13, Z5)
	CLMUL4ACC(Z18, Z3, Z8, Z9, Z10, Z11, Z12, Z13, Z5)
	CLMUL4ACC(Z19, Z4, Z8, Z9, Z10, Z11, Z12, Z13, Z5)
	FOLD(Y11, Y12, Y13, X11, X12, X13)
	REDUCE(X11, X30, X0)

ghashStore:
	MOVQ      acc+8(FP), BX
	VMOVDQU64 X0, (BX)
	VZEROUPPER
	RET

// func ghashInit(h *[16]byte, htab *[32*16]byte)
//
// ghashInit stores H^k at entry 17-k, k = 1 … 17.
TEXT ·ghashInit(SB), NOSPLIT, $0-16
	MOVQ      h+0(FP), AX
	MOVQ      htab+8(FP), BX
	VMOVDQU64 poly<>(SB), X30
	VMOVDQU64 (AX), X19
	VMOVDQU64 X19, 256(BX)
	VMOVDQA64 X19, X1
	MOVQ      $240, DX

initLoop:
	VPCLMULQDQ $0x00, X19, X1, X8
	VPCLMULQDQ $0x11, X19, X1, X9
	VPCLMULQDQ $0x01, X19, X1, X10
	VPCLMULQDQ $0x10, X19, X1, X11
	VPXORQ     X11, X10, X10
	REDUCE(X11, X30, X0)
	VMOVDQA64  X0, X1
	VMOVDQU64  X1, (BX)(DX*1)
	SUBQ       $16, DX
	JGE        initLoop
	VZEROUPPER
	RET

// func encryptBlock(rk *[240]byte, rounds int, dst, src *[16]byte)
TEXT ·encryptBlock(SB), NOSPLIT, $0-32
	MOVQ rk+0(FP), AX
	MOVQ rounds+8(FP), CX
	MOVQ dst+16(FP), DI
	MOVQ src+24(FP), SI
	MOVOU (SI), X0
	MOVOU (AX), X1
	PXOR  X1, X0
	DECQ  CX

encLoop:
	ADDQ   $16, AX
	MOVOU  (AX), X1
	AESENC X1, X0
	DECQ   CX
	JNZ    encLoop
	MOVOU      16(AX), X1
	AESENCLAST X1, X0
	MOVOU      X0, (DI)
	RET

// func gcmSeal(rk *[240]byte, rounds int, htab *[512]byte, acc *[16]byte, j0Lo, j0Hi, ctrHi, aadLo, aadHi uint64, aadMul int, aadBits uint64, tag *[16]byte, dst, src []byte)
//
// gcmSeal encrypts src into dst and writes the full tag, in one call: with
// aadMul the AAD block aadHi:aadLo is absorbed first; whole 256-byte
// chunks then go through AES while the previous chunk's GHASH runs from
// the registers that made it; the last 0 to 255 bytes are encrypted under
// byte masks and hashed, with the length block, from registers too, beside
// E_K(J0).
TEXT ·gcmSeal(SB), NOSPLIT, $0-144
	MOVQ rk+0(FP), R10
	MOVQ rounds+8(FP), R8
	MOVQ htab+16(FP), AX
	MOVQ dst_base+96(FP), DI
	MOVQ src_base+120(FP), SI
	MOVQ src_len+128(FP), CX
	SETUP
	MOVQ  aadMul+72(FP), R11
	TESTQ R11, R11
	JZ    sealBulk
	AADBLOCK
	MULH

sealBulk:
	XORQ R9, R9

seal256:
	CMPQ  CX, $256
	JB    sealTail
	TESTQ R9, R9
	JZ    sealFirst
	// Z1-Z4 hold the previous chunk's ciphertext: hash it while the new
	// counters go through the rounds.
	GHFIRSTREG(Z1, 16(AX))
	GHNEXTREG(Z2, 80(AX))
	GHNEXTREG(Z3, 144(AX))
	GHNEXTREG(Z4, 208(AX))
	COUNTERS4
	AESROUND4(Z17)
	AESROUND4(Z18)
	AESROUND4(Z19)
	AESROUND4(Z20)
	GHREDUCE
	AESROUND4(Z21)
	AESROUND4(Z22)
	AESROUND4(Z23)
	AESROUND4(Z24)
	JMP   sealRounds

sealFirst:
	COUNTERS4
	AESROUND4(Z17)
	AESROUND4(Z18)
	AESROUND4(Z19)
	AESROUND4(Z20)
	AESROUND4(Z21)
	AESROUND4(Z22)
	AESROUND4(Z23)
	AESROUND4(Z24)

sealRounds:
	AESROUND4(Z25)
	CMPQ R8, $10
	JEQ  sealLast
	AESROUND4(Z26)
	AESROUND4(Z27)
	CMPQ R8, $12
	JEQ  sealLast
	AESROUND4(Z28)
	AESROUND4(Z29)

sealLast:
	XORSTORE4
	MOVQ $1, R9
	ADDQ $256, SI
	ADDQ $256, DI
	SUBQ $256, CX
	JMP  seal256

sealTail:
	TESTQ R9, R9
	JZ    sealMasks
	GHFIRSTREG(Z1, 16(AX))
	GHNEXTREG(Z2, 80(AX))
	GHNEXTREG(Z3, 144(AX))
	GHNEXTREG(Z4, 208(AX))
	GHREDUCE

sealMasks:
	TAILMASKS
	VPXORQ Z1, Z1, Z1
	VPXORQ Z2, Z2, Z2
	VPXORQ Z3, Z3, Z3
	VPXORQ Z4, Z4, Z4
	TESTQ  CX, CX
	JZ     sealHash
	COUNTERS4
	AESROUND4(Z17)
	AESROUND4(Z18)
	AESROUND4(Z19)
	AESROUND4(Z20)
	AESROUND4(Z21)
	AESROUND4(Z22)
	AESROUND4(Z23)
	AESROUND4(Z24)
	AESROUND4(Z25)
	CMPQ R8, $10
	JEQ  sealTailLast
	AESROUND4(Z26)
	AESROUND4(Z27)
	CMPQ R8, $12
	JEQ  sealTailLast
	AESROUND4(Z28)
	AESROUND4(Z29)

sealTailLast:
	// Ciphertext = plaintext XOR keystream under the masks, zero past
	// the data so that it hashes as padding.
	VAESENCLAST Z30, Z1, Z1
	VAESENCLAST Z30, Z2, Z2
	VAESENCLAST Z30, Z3, Z3
	VAESENCLAST Z30, Z4, Z4
	VMOVDQU8.Z  0(SI), K1, Z5
	VMOVDQU8.Z  64(SI), K2, Z6
	VMOVDQU8.Z  128(SI), K3, Z7
	VMOVDQU8.Z  192(SI), K4, Z8
	VPXORQ      Z5, Z1, Z1
	VPXORQ      Z6, Z2, Z2
	VPXORQ      Z7, Z3, Z3
	VPXORQ      Z8, Z4, Z4
	VMOVDQU8.Z  Z1, K1, Z1
	VMOVDQU8.Z  Z2, K2, Z2
	VMOVDQU8.Z  Z3, K3, Z3
	VMOVDQU8.Z  Z4, K4, Z4
	VMOVDQU8    Z1, K1, 0(DI)
	VMOVDQU8    Z2, K2, 64(DI)
	VMOVDQU8    Z3, K3, 128(DI)
	VMOVDQU8    Z4, K4, 192(DI)

sealHash:
	TAILHASH
	J0BLOCK(X2)
	VAESENC X17, X2, X2
	VAESENC X18, X2, X2
	VAESENC X19, X2, X2
	VAESENC X20, X2, X2
	VAESENC X21, X2, X2
	VAESENC X22, X2, X2
	VAESENC X23, X2, X2
	VAESENC X24, X2, X2
	VAESENC X25, X2, X2
	CMPQ    R8, $10
	JEQ     sealJ0Last
	VAESENC X26, X2, X2
	VAESENC X27, X2, X2
	CMPQ    R8, $12
	JEQ     sealJ0Last
	VAESENC X28, X2, X2
	VAESENC X29, X2, X2

sealJ0Last:
	VAESENCLAST X30, X2, X2
	STORETAG(X2, X3)
	VZEROUPPER
	RET

// func gcmOpen(rk *[240]byte, rounds int, htab *[512]byte, acc *[16]byte, j0Lo, j0Hi, ctrHi, aadLo, aadHi uint64, aadMul int, aadBits uint64, tag *[16]byte, dst, src []byte)
//
// gcmOpen decrypts src into dst and writes the tag it computes, in one
// call: each whole 256-byte chunk is hashed and decrypted side by side;
// the last 0 to 255 bytes are loaded under byte masks and hashed, with the
// length block, before they are decrypted (dst may be src). The caller
// compares the tag and wipes dst on a mismatch.
TEXT ·gcmOpen(SB), NOSPLIT, $0-144
	MOVQ rk+0(FP), R10
	MOVQ rounds+8(FP), R8
	MOVQ htab+16(FP), AX
	MOVQ dst_base+96(FP), DI
	MOVQ src_base+120(FP), SI
	MOVQ src_len+128(FP), CX
	SETUP
	MOVQ  aadMul+72(FP), R11
	TESTQ R11, R11
	JZ    open256
	AADBLOCK
	MULH

open256:
	CMPQ CX, $256
	JB   openTail
	COUNTERS4
	GHFIRST(0(SI), 16(AX))
	AESROUND4(Z17)
	AESROUND4(Z18)
	GHNEXT(64(SI), 80(AX))
	AESROUND4(Z19)
	AESROUND4(Z20)
	GHNEXT(128(SI), 144(AX))
	AESROUND4(Z21)
	AESROUND4(Z22)
	GHNEXT(192(SI), 208(AX))
	AESROUND4(Z23)
	AESROUND4(Z24)
	GHREDUCE
	AESROUND4(Z25)
	CMPQ R8, $10
	JEQ  openLast
	AESROUND4(Z26)
	AESROUND4(Z27)
	CMPQ R8, $12
	JEQ  openLast
	AESROUND4(Z28)
	AESROUND4(Z29)

openLast:
	XORSTORE4
	ADDQ $256, SI
	ADDQ $256, DI
	SUBQ $256, CX
	JMP  open256

openTail:
	TAILMASKS
	VMOVDQU8.Z 0(SI), K1, Z1
	VMOVDQU8.Z 64(SI), K2, Z2
	VMOVDQU8.Z 128(SI), K3, Z3
	VMOVDQU8.Z 192(SI), K4, Z4
	TAILHASH
	J0BLOCK(X5)
	VAESENC X17, X5, X5
	VAESENC X18, X5, X5
	VAESENC X19, X5, X5
	VAESENC X20, X5, X5
	VAESENC X21, X5, X5
	VAESENC X22, X5, X5
	VAESENC X23, X5, X5
	VAESENC X24, X5, X5
	VAESENC X25, X5, X5
	CMPQ    R8, $10
	JEQ     openJ0Last
	VAESENC X26, X5, X5
	VAESENC X27, X5, X5
	CMPQ    R8, $12
	JEQ     openJ0Last
	VAESENC X28, X5, X5
	VAESENC X29, X5, X5

openJ0Last:
	VAESENCLAST X30, X5, X5
	STORETAG(X5, X6)
	TESTQ       CX, CX
	JZ          openDone
	// The ciphertext moves to Z9-Z12 while Z1-Z4 make the keystream.
	VMOVDQA64 Z1, Z9
	VMOVDQA64 Z2, Z10
	VMOVDQA64 Z3, Z11
	VMOVDQA64 Z4, Z12
	COUNTERS4
	AESROUND4(Z17)
	AESROUND4(Z18)
	AESROUND4(Z19)
	AESROUND4(Z20)
	AESROUND4(Z21)
	AESROUND4(Z22)
	AESROUND4(Z23)
	AESROUND4(Z24)
	AESROUND4(Z25)
	CMPQ R8, $10
	JEQ  openTailLast
	AESROUND4(Z26)
	AESROUND4(Z27)
	CMPQ R8, $12
	JEQ  openTailLast
	AESROUND4(Z28)
	AESROUND4(Z29)

openTailLast:
	VAESENCLAST Z30, Z1, Z1
	VAESENCLAST Z30, Z2, Z2
	VAESENCLAST Z30, Z3, Z3
	VAESENCLAST Z30, Z4, Z4
	VPXORQ      Z9, Z1, Z1
	VPXORQ      Z10, Z2, Z2
	VPXORQ      Z11, Z3, Z3
	VPXORQ      Z12, Z4, Z4
	VMOVDQU8    Z1, K1, 0(DI)
	VMOVDQU8    Z2, K2, 64(DI)
	VMOVDQU8    Z3, K3, 128(DI)
	VMOVDQU8    Z4, K4, 192(DI)

openDone:
	VZEROUPPER
	RET
