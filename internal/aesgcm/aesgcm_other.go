//go:build !amd64 || purego

package aesgcm

const supported = false

func ctrXOR(rk *[15 * blockSize]byte, rounds int, ctr *[blockSize]byte, dst, src []byte) {
	panic("aesgcm: unsupported")
}

func ghash(htab *[htabLen]byte, acc *[blockSize]byte, data []byte, lenBlk *[blockSize]byte, rk *[15 * blockSize]byte, rounds int, j0 *[blockSize]byte) {
	panic("aesgcm: unsupported")
}

func ghashInit(h *[blockSize]byte, htab *[htabLen]byte) { panic("aesgcm: unsupported") }

func gcmSeal256(rk *[15 * blockSize]byte, rounds int, ctr *[blockSize]byte, htab *[htabLen]byte, acc *[blockSize]byte, dst, src []byte) {
	panic("aesgcm: unsupported")
}

func gcmOpen256(rk *[15 * blockSize]byte, rounds int, ctr *[blockSize]byte, htab *[htabLen]byte, acc *[blockSize]byte, dst, src []byte) {
	panic("aesgcm: unsupported")
}

func encryptBlock(rk *[15 * blockSize]byte, rounds int, dst, src *[blockSize]byte) {
	panic("aesgcm: unsupported")
}
