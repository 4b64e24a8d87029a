package ikecrypto

// keyPad is the fixed string of the shared-key AUTH computation (RFC 7296
// §2.15), 17 ASCII octets without terminator.
var keyPad = []byte("Key Pad for IKEv2")

// SignedOctets returns the octets an AUTH payload covers (RFC 7296 §2.15):
// RealMessage | NonceData | prf(SK_p, RestOfIDPayload). For the
// initiator's AUTH, realMessage is its first IKE_SA_INIT request exactly
// as sent, nonce is Nr, skp is SK_pi and idBody the body of IDi
// (message.ID.Body); for the responder's, its IKE_SA_INIT response, Ni,
// SK_pr and IDr.
func SignedOctets(prf *PRF, realMessage, nonce, skp, idBody []byte) []byte {
	mac := prf.Sum(skp, idBody)
	out := make([]byte, 0, len(realMessage)+len(nonce)+len(mac))
	return append(append(append(out, realMessage...), nonce...), mac...)
}

// PSKAuth returns the AUTH data for a shared key (auth method 2, RFC 7296
// §2.15): prf(prf(Shared Secret, "Key Pad for IKEv2"), octets). The
// receiver compares it with hmac.Equal or subtle.ConstantTimeCompare.
func PSKAuth(prf *PRF, psk, octets []byte) []byte {
	k := prf.Sum(psk, keyPad)
	a := prf.Sum(k, octets)
	clear(k)
	return a
}
