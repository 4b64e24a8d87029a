//go:build !amd64 || purego

package aesgcm

const supported = false

func ghash(htab *[htabLen]byte, acc *[blockSize]byte, data []byte) { panic("aesgcm: unsupported") }

func ghashInit(h *[blockSize]byte, htab *[htabLen]byte) { panic("aesgcm: unsupported") }

func gcmSeal(rk *[15 * blockSize]byte, rounds int, htab *[htabLen]byte, acc *[blockSize]byte, j0Lo, j0Hi, ctrHi, aadLo, aadHi uint64, aadMul int, aadBits uint64, tag *[blockSize]byte, dst, src []byte) {
	panic("aesgcm: unsupported")
}

func gcmOpen(rk *[15 * blockSize]byte, rounds int, htab *[htabLen]byte, acc *[blockSize]byte, j0Lo, j0Hi, ctrHi, aadLo, aadHi uint64, aadMul int, aadBits uint64, tag *[blockSize]byte, dst, src []byte) {
	panic("aesgcm: unsupported")
}

func encryptBlock(rk *[15 * blockSize]byte, rounds int, dst, src *[blockSize]byte) {
	panic("aesgcm: unsupported")
}
