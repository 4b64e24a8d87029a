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

// CTRSETUP broadcasts the round keys at R10 (R8 rounds) and loads the
// counter constants, and the first sixteen counters from the block at R11
// into Z0.
#define CTRSETUP \
	LOADKEYS; \
	VMOVDQU64       ctrShuf<>(SB), Z15; \
	VMOVDQU64       ctrInc4<>(SB), Z14; \
	VBROADCASTI32X4 (R11), Z0; \
	VPSHUFB         Z15, Z0, Z0; \
	VPADDD          ctrInit<>(SB), Z0, Z0

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

// MASK sets k to the byte mask of min(DX, 64) bytes (BX holds 64, R13
// all ones, R8 zero) and takes 64 off DX, not below zero.
#define MASK(k) \
	MOVQ    DX, R11; \
	CMPQ    R11, BX; \
	CMOVQGT BX, R11; \
	BZHIQ   R11, R13, DI; \
	KMOVQ   DI, k; \
	SUBQ    BX, DX; \
	CMOVQLT R8, DX

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

// SETUP is CTRSETUP plus GHASH's byte-swap mask and its accumulator (at
// BX) in X13, for gcmSeal256 and gcmOpen256.
#define SETUP \
	CTRSETUP; \
	VMOVDQU64 bswapMask<>(SB), Z31; \
	VMOVDQU64 (BX), X13

// func ctrXOR(rk *[240]byte, rounds int, ctr *[16]byte, dst, src []byte)
TEXT ·ctrXOR(SB), NOSPLIT, $0-72
	MOVQ rk+0(FP), R10
	MOVQ rounds+8(FP), R8
	MOVQ ctr+16(FP), R11
	MOVQ dst_base+24(FP), DI
	MOVQ src_base+48(FP), SI
	MOVQ src_len+56(FP), CX
	CTRSETUP

loop256:
	CMPQ CX, $256
	JB   loop64
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
	JEQ  last256
	AESROUND4(Z26)
	AESROUND4(Z27)
	CMPQ R8, $12
	JEQ  last256
	AESROUND4(Z28)
	AESROUND4(Z29)

last256:
	XORSTORE4
	ADDQ $256, SI
	ADDQ $256, DI
	SUBQ $256, CX
	JMP  loop256

// Up to 64 bytes a time; the last, shorter piece under a byte mask.
loop64:
	TESTQ   CX, CX
	JLE     ctrDone
	MOVQ    $-1, DX
	CMPQ    CX, $64
	JAE     fullMask
	BZHIQ   CX, DX, DX

fullMask:
	KMOVQ   DX, K1
	VPSHUFB Z15, Z0, Z1
	VPADDD  Z14, Z0, Z0
	VPXORQ  Z16, Z1, Z1
	VAESENC Z17, Z1, Z1
	VAESENC Z18, Z1, Z1
	VAESENC Z19, Z1, Z1
	VAESENC Z20, Z1, Z1
	VAESENC Z21, Z1, Z1
	VAESENC Z22, Z1, Z1
	VAESENC Z23, Z1, Z1
	VAESENC Z24, Z1, Z1
	VAESENC Z25, Z1, Z1
	CMPQ    R8, $10
	JEQ     last64
	VAESENC Z26, Z1, Z1
	VAESENC Z27, Z1, Z1
	CMPQ    R8, $12
	JEQ     last64
	VAESENC Z28, Z1, Z1
	VAESENC Z29, Z1, Z1

last64:
	VAESENCLAST Z30, Z1, Z1
	VMOVDQU8.Z  0(SI), K1, Z5
	VPXORQ      Z5, Z1, Z1
	VMOVDQU8    Z1, K1, 0(DI)
	ADDQ        $64, SI
	ADDQ        $64, DI
	SUBQ        $64, CX
	JMP         loop64

ctrDone:
	VZEROUPPER
	RET

// func ghash(htab *[32*16]byte, acc *[16]byte, data []byte, lenBlk *[16]byte, rk *[240]byte, rounds int, j0 *[16]byte)
//
// ghash absorbs data, its last block zero-padded, into acc. With lenBlk it
// then absorbs the length block and finishes: j0 is replaced by the tag,
// E_K(J0) XOR GHASH. Sixteen blocks are multiplied by H^16 … H^1 and
// reduced once; the last one to sixteen blocks (and the length block) by
// the matching powers, loaded under byte masks, in one more step.
TEXT ·ghash(SB), NOSPLIT, $0-72
	MOVQ htab+0(FP), AX
	MOVQ acc+8(FP), BX
	MOVQ data_base+16(FP), SI
	MOVQ data_len+24(FP), CX
	MOVQ lenBlk+40(FP), R10

	VMOVDQU64 bswapMask<>(SB), Z31
	VMOVDQU64 poly<>(SB), X30
	VMOVDQU64 (BX), X0

	// R12 is 16 when the length block follows the data, else 0.
	XORQ  R12, R12
	TESTQ R10, R10
	JZ    checkData
	MOVQ  $16, R12

checkData:
	TESTQ CX, CX
	JNZ   bulk
	TESTQ R10, R10
	JZ    ghashStore

	// No data: the length block is the data.
	MOVQ R10, SI
	MOVQ $16, CX
	XORQ R12, R12

bulk:
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
	// multiplied by H^(r-i), or H^(r+1-i) when the length block follows:
	// the powers start at entry 17-r (-1), htab[(17-r)*16 - R12].
	MOVQ CX, DX
	ADDQ $15, DX
	SHRQ $4, DX
	MOVQ $17, R9
	SUBQ DX, R9
	SHLQ $4, R9
	SUBQ R12, R9
	ADDQ AX, R9

	MOVQ $64, BX
	MOVQ $-1, R13
	XORQ R8, R8
	MOVQ CX, DX
	MASK(K1)
	MASK(K2)
	MASK(K3)
	MASK(K4)

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

	TESTQ R12, R12
	JZ    finish

	// The length block, times H.
	VMOVDQU64  (R10), X1
	VPSHUFB    X31, X1, X1
	VMOVDQU64  256(AX), X16
	VPCLMULQDQ $0x00, X16, X1, X11
	VPCLMULQDQ $0x11, X16, X1, X12
	VPCLMULQDQ $0x01, X16, X1, X13
	VPCLMULQDQ $0x10, X16, X1, X5
	VPXORQ     Z11, Z8, Z8
	VPXORQ     Z12, Z9, Z9
	VPTERNLOGD $0x96, Z13, Z5, Z10

finish:
	TESTQ R10, R10
	JZ    fold

	// E_K(J0), its latency hidden behind the reduction.
	MOVQ  rk+48(FP), DX
	MOVQ  rounds+56(FP), R11
	MOVQ  j0+64(FP), DI
	VMOVDQU64 (DI), X2
	VPXORQ    (DX), X2, X2
	DECQ  R11

j0Loop:
	ADDQ    $16, DX
	VAESENC (DX), X2, X2
	DECQ    R11
	JNZ     j0Loop
	VAESENCLAST 16(DX), X2, X2

fold:
	FOLD(Y11, Y12, Y13, X11, X12, X13)
	REDUCE(X11, X30, X0)
	TESTQ R10, R10
	JZ    ghashStore
	VPSHUFB   X31, X0, X3
	VPXORQ    X2, X3, X3
	VMOVDQU64 X3, (DI)

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

// func gcmSeal256(rk *[240]byte, rounds int, ctr *[16]byte, htab *[512]byte, acc *[16]byte, dst, src []byte)
//
// gcmSeal256 encrypts len(src) bytes, a multiple of 256, and absorbs all
// but the last 256 bytes of ciphertext into acc: each chunk's GHASH runs
// beside the next chunk's AES, from the registers that made it.
TEXT ·gcmSeal256(SB), NOSPLIT, $0-88
	MOVQ rk+0(FP), R10
	MOVQ rounds+8(FP), R8
	MOVQ ctr+16(FP), R11
	MOVQ htab+24(FP), AX
	MOVQ acc+32(FP), BX
	MOVQ dst_base+40(FP), DI
	MOVQ src_base+64(FP), SI
	MOVQ src_len+72(FP), CX
	SETUP
	XORQ R9, R9

seal256:
	CMPQ  CX, $256
	JB    sealDone
	TESTQ R9, R9
	JZ    sealFirst
	// Z1-Z4 hold the previous chunk's ciphertext: hash it, byte-swapped
	// into Z5, while the new counters go through the rounds.
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

sealDone:
	VMOVDQU64 X13, (BX)
	VZEROUPPER
	RET

// func gcmOpen256(rk *[240]byte, rounds int, ctr *[16]byte, htab *[512]byte, acc *[16]byte, dst, src []byte)
//
// gcmOpen256 absorbs len(src) bytes of ciphertext, a multiple of 256, into
// acc and decrypts them, GHASH and AES of each chunk side by side.
TEXT ·gcmOpen256(SB), NOSPLIT, $0-88
	MOVQ rk+0(FP), R10
	MOVQ rounds+8(FP), R8
	MOVQ ctr+16(FP), R11
	MOVQ htab+24(FP), AX
	MOVQ acc+32(FP), BX
	MOVQ dst_base+40(FP), DI
	MOVQ src_base+64(FP), SI
	MOVQ src_len+72(FP), CX
	SETUP

open256:
	CMPQ CX, $256
	JB   openDone
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

openDone:
	VMOVDQU64 X13, (BX)
	VZEROUPPER
	RET
