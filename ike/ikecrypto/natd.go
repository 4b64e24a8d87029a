package ikecrypto

import (
	"crypto/sha1"
	"encoding/binary"
	"net/netip"
)

// NATDetectionHash returns the data of a NAT_DETECTION_SOURCE_IP or
// NAT_DETECTION_DESTINATION_IP notification (RFC 7296 §2.23):
// SHA-1(SPIi | SPIr | IP | Port), with the address in 4 or 16 bytes and
// SPIr zero in the first IKE_SA_INIT request.
func NATDetectionHash(spii, spir uint64, addr netip.Addr, port uint16) [sha1.Size]byte {
	b := make([]byte, 0, 8+8+16+2)
	b = binary.BigEndian.AppendUint64(b, spii)
	b = binary.BigEndian.AppendUint64(b, spir)
	b = append(b, addr.Unmap().AsSlice()...)
	b = binary.BigEndian.AppendUint16(b, port)
	return sha1.Sum(b)
}
