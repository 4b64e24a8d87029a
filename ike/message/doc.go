// Package message encodes and decodes IKEv2 messages (RFC 7296 §3): the
// IKE header and the payload chain, with the SA, KE, Nonce, ID, CERT,
// CERTREQ, AUTH, Notify, Delete, Vendor ID, Traffic Selector, Encrypted
// (SK) and Encrypted Fragment (SKF, RFC 7383) payloads.
//
// The package is pure: no I/O, no cryptography. The bodies of SK and SKF
// payloads stay opaque here (package ike/crypto protects them); after
// decryption their inner payloads are decoded with DecodePayloads.
//
// Decoding is strict. Every length is checked against its container and
// every substructure must fill its parent exactly; malformed input yields
// an *Error naming the payload and the byte offset, never a panic.
// Payloads of unknown type are skipped unless their critical bit is set,
// which yields an *UnsupportedCriticalPayloadError (the caller answers
// with UNSUPPORTED_CRITICAL_PAYLOAD, RFC 7296 §2.5).
//
// Decoded values own their bytes: nothing aliases the input buffer.
//
// Protocol constants keep their RFC and IANA spelling (ENCR_AES_CBC,
// NAT_DETECTION_SOURCE_IP, ID_FQDN, ...) so that they can be searched for
// in the registries and in other implementations' logs.
package message
