//go:build amd64 && !purego

package aesgcm

import "golang.org/x/sys/cpu"

// supported needs VAES and VPCLMULQDQ on 512-bit registers and AVX-512BW
// for byte shuffles of them; x/sys/cpu also checks that the OS saves the
// AVX-512 state.
var supported = cpu.X86.HasAVX512F && cpu.X86.HasAVX512BW && cpu.X86.HasAVX512VL &&
	cpu.X86.HasAVX512VAES && cpu.X86.HasAVX512VPCLMULQDQ && cpu.X86.HasAES && cpu.X86.HasPCLMULQDQ && cpu.X86.HasBMI2

// ghash absorbs data, its last block zero-padded, into acc (in the working,
// byte-reversed representation).
//
//go:noescape
func ghash(htab *[htabLen]byte, acc *[blockSize]byte, data []byte)

// ghashInit fills htab with H^17 … H^1 from h, H in working form.
//
//go:noescape
func ghashInit(h *[blockSize]byte, htab *[htabLen]byte)

// gcmSeal encrypts src into dst and writes the full tag to tag. J0 is
// j0Lo:j0Hi, the first data counter block j0Lo:ctrHi (memory order);
// GHASH starts from acc, with aadMul first absorbing the block aadHi:aadLo
// (working form); aadBits is the AAD's length in bits.
//
//go:noescape
func gcmSeal(rk *[15 * blockSize]byte, rounds int, htab *[htabLen]byte, acc *[blockSize]byte, j0Lo, j0Hi, ctrHi, aadLo, aadHi uint64, aadMul int, aadBits uint64, tag *[blockSize]byte, dst, src []byte)

// gcmOpen decrypts src into dst and writes the tag it computes to tag;
// the arguments are gcmSeal's.
//
//go:noescape
func gcmOpen(rk *[15 * blockSize]byte, rounds int, htab *[htabLen]byte, acc *[blockSize]byte, j0Lo, j0Hi, ctrHi, aadLo, aadHi uint64, aadMul int, aadBits uint64, tag *[blockSize]byte, dst, src []byte)

// encryptBlock encrypts one block with AES-NI.
//
//go:noescape
func encryptBlock(rk *[15 * blockSize]byte, rounds int, dst, src *[blockSize]byte)
