//go:build amd64 && !purego

package aesgcm

import "golang.org/x/sys/cpu"

// supported needs VAES and VPCLMULQDQ on 512-bit registers and AVX-512BW
// for byte shuffles of them; x/sys/cpu also checks that the OS saves the
// AVX-512 state.
var supported = cpu.X86.HasAVX512F && cpu.X86.HasAVX512BW && cpu.X86.HasAVX512VL &&
	cpu.X86.HasAVX512VAES && cpu.X86.HasAVX512VPCLMULQDQ && cpu.X86.HasAES && cpu.X86.HasPCLMULQDQ && cpu.X86.HasBMI2

// ctrXOR XORs src into dst with the keystream of counter blocks ctr,
// ctr+1, … (inc32); a last piece shorter than 64 bytes goes under a mask.
//
//go:noescape
func ctrXOR(rk *[15 * blockSize]byte, rounds int, ctr *[blockSize]byte, dst, src []byte)

// ghash absorbs data, its last block zero-padded, into acc (in the working,
// byte-reversed representation). With lenBlk it then absorbs the length
// block and overwrites j0, the counter block J0, with the tag:
// E_K(J0) XOR GHASH.
//
//go:noescape
func ghash(htab *[htabLen]byte, acc *[blockSize]byte, data []byte, lenBlk *[blockSize]byte, rk *[15 * blockSize]byte, rounds int, j0 *[blockSize]byte)

// ghashInit fills htab with H^17 … H^1 from h, H in working form.
//
//go:noescape
func ghashInit(h *[blockSize]byte, htab *[htabLen]byte)

// gcmSeal256 encrypts src (len a multiple of 256) into dst and absorbs all
// of the ciphertext but its last 256 bytes into acc.
//
//go:noescape
func gcmSeal256(rk *[15 * blockSize]byte, rounds int, ctr *[blockSize]byte, htab *[htabLen]byte, acc *[blockSize]byte, dst, src []byte)

// gcmOpen256 absorbs src (len a multiple of 256) into acc and decrypts it
// into dst.
//
//go:noescape
func gcmOpen256(rk *[15 * blockSize]byte, rounds int, ctr *[blockSize]byte, htab *[htabLen]byte, acc *[blockSize]byte, dst, src []byte)

// encryptBlock encrypts one block with AES-NI.
//
//go:noescape
func encryptBlock(rk *[15 * blockSize]byte, rounds int, dst, src *[blockSize]byte)
