// Package esp implements the Encapsulating Security Payload (RFC 4303) on
// plain byte slices: the keyed transform of one SA that seals a payload into
// an ESP packet and opens it again.
//
// It knows nothing about SAs, sequence-number allocation or replay windows
// (see xfrm/replay); the caller passes the full 64-bit sequence number and
// says whether extended sequence numbers (RFC 4304) are in use.
//
// Supported transforms (see Algorithms for the full table):
//
//   - AEAD: AES-GCM (RFC 4106) with 8, 12 or 16-byte ICVs, AES-CCM (RFC
//     4309, ccm.go: Go has no CCM) with 8, 12 or 16-byte ICVs,
//     ChaCha20-Poly1305 (RFC 7634), and AES-GMAC (RFC 4543: integrity
//     only, everything authenticated as AAD). The 8-byte IV carried in
//     every packet is the 64-bit sequence number, which RFC 4106 §3.1
//     allows (a counter) and which is unique per key because sequence
//     numbers never repeat on an SA.
//   - Encryption with separate integrity: AES-CBC 128/192/256 (RFC 3602),
//     AES-CTR (RFC 3686, IV = sequence number), 3DES-CBC (RFC 2451),
//     DES-CBC (RFC 2405) or NULL (RFC 2410), with HMAC-MD5-96 (RFC 2403),
//     HMAC-SHA1-96 (RFC 2404), HMAC-SHA2 (RFC 4868), AES-XCBC-MAC-96 (RFC
//     3566) or AES-CMAC-96 (RFC 4494), or no integrity at all for
//     encryption-only SAs. The MACs are exported as MAC, which AH
//     (xfrm/ah) shares.
//
// Seal and Open allocate nothing per packet in steady state and a Transform
// is safe for concurrent use by many goroutines.
package esp
