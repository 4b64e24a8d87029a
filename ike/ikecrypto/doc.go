// Package ikecrypto holds the cryptography of IKEv2 (RFC 7296) that sits
// beside the message codec: the pseudorandom functions and prf+ (§2.13),
// the IKE SA keys SKEYSEED and SK_d/ai/ar/ei/er/pi/pr (§2.14), the CHILD
// SA KEYMAT (§2.17), the key exchange methods (MODP group 14, ECP groups
// 19 and 20 in the RFC 5903 encoding, Curve25519 per RFC 8031, ML-KEM),
// the protection of the Encrypted payload (§3.14: AES-CBC with truncated
// HMAC-SHA2/SHA1, RFC 5282 AES-GCM, RFC 7634 ChaCha20-Poly1305), the
// shared-key AUTH value (§2.15), signature AUTH values (RSA method 1,
// RFC 4754 ECDSA methods 9-11, RFC 7427 method 14 with PKCS#1 v1.5,
// RSASSA-PSS, ECDSA and RFC 8420 Ed25519) and the NAT detection hash
// (§2.23).
//
// It is pure computation on byte slices: no I/O, no gVisor, no logging.
// Errors name the algorithm and what is wrong, never key material.
package ikecrypto
