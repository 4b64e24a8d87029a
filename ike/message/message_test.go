package message

import (
	"bytes"
	"errors"
	"net/netip"
	"reflect"
	"testing"
)

// TestStrongSwanMessages decodes the IKE_SA_INIT and IKE_AUTH messages a
// strongSwan 5.9.8 pair exchanged (ike/testdata/strongswan) and checks
// that re-encoding gives back the very bytes charon sent.
func TestStrongSwanMessages(t *testing.T) {
	for _, v := range loadSwanVectors(t) {
		for _, m := range []struct {
			name string
			hex  string
			ex   ExchangeType
			resp bool
		}{
			{"IKE_SA_INIT request", v.IKESAInitRequest, IKE_SA_INIT, false},
			{"IKE_SA_INIT response", v.IKESAInitResponse, IKE_SA_INIT, true},
			{"IKE_AUTH request", v.IKEAuthRequest, IKE_AUTH, false},
			{"IKE_AUTH response", v.IKEAuthResponse, IKE_AUTH, true},
		} {
			t.Run(v.Name+"/"+m.name, func(t *testing.T) {
				raw := unhex(t, m.hex)
				msg, err := Decode(raw)
				if err != nil {
					t.Fatal(err)
				}
				if msg.Exchange != m.ex || msg.IsResponse() != m.resp || msg.IsInitiator() == m.resp {
					t.Errorf("header: exchange %v response %v initiator %v", msg.Exchange, msg.IsResponse(), msg.IsInitiator())
				}
				if m.ex == IKE_AUTH {
					if len(msg.Payloads) != 1 || msg.Payloads[0].Type() != PayloadSK {
						t.Errorf("IKE_AUTH payloads %v, want one SK", types(msg.Payloads))
					}
				}
				out, err := msg.Encode()
				if err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(out, raw) {
					t.Errorf("re-encoding differs from charon's bytes\n got %x\nwant %x", out, raw)
				}
			})
		}
	}
}

// TestStrongSwanInitContents checks the payloads of charon's IKE_SA_INIT
// request for proposal aes128-sha256-modp2048, as its log names them:
// "IKE_SA_INIT request 0 [ SA KE No N(NATD_S_IP) N(NATD_D_IP) N(FRAG_SUP)
// N(HASH_ALG) N(REDIR_SUP) ]".
func TestStrongSwanInitContents(t *testing.T) {
	var raw []byte
	for _, v := range loadSwanVectors(t) {
		if v.Name == "cbc" {
			raw = unhex(t, v.IKESAInitRequest)
		}
	}
	msg, err := Decode(raw)
	if err != nil {
		t.Fatal(err)
	}
	want := []PayloadType{PayloadSA, PayloadKE, PayloadNonce, PayloadNotify, PayloadNotify, PayloadNotify, PayloadNotify, PayloadNotify}
	if got := types(msg.Payloads); !reflect.DeepEqual(got, want) {
		t.Fatalf("payloads %v, want %v", got, want)
	}
	sa := msg.Payloads[0].(*SA)
	wantSA := []Proposal{{Num: 1, Protocol: ProtoIKE, Transforms: []Transform{
		{Type: TransformENCR, ID: ENCR_AES_CBC, Attributes: []Attribute{KeyLengthAttr(128)}},
		{Type: TransformINTEG, ID: AUTH_HMAC_SHA2_256_128},
		{Type: TransformPRF, ID: PRF_HMAC_SHA2_256},
		{Type: TransformKE, ID: KE_MODP2048},
	}}}
	if !reflect.DeepEqual(sa.Proposals, wantSA) {
		t.Errorf("SA %+v, want %+v", sa.Proposals, wantSA)
	}
	if kl, ok := sa.Proposals[0].Transforms[0].KeyLength(); !ok || kl != 128 {
		t.Errorf("KeyLength %d %v", kl, ok)
	}
	ke := msg.Payloads[1].(*KE)
	if ke.Group != KE_MODP2048 || len(ke.Data) != 256 {
		t.Errorf("KE group %d, %d bytes", ke.Group, len(ke.Data))
	}
	if n := msg.Payloads[2].(*Nonce); len(n.Data) != 32 {
		t.Errorf("nonce of %d bytes", len(n.Data))
	}
	var nts []NotifyType
	for _, p := range msg.Payloads[3:] {
		nts = append(nts, p.(*Notify).NotifyType)
	}
	wantN := []NotifyType{NAT_DETECTION_SOURCE_IP, NAT_DETECTION_DESTINATION_IP, IKEV2_FRAGMENTATION_SUPPORTED, SIGNATURE_HASH_ALGORITHMS, REDIRECT_SUPPORTED}
	if !reflect.DeepEqual(nts, wantN) {
		t.Errorf("notifies %v, want %v", nts, wantN)
	}
	// RFC 7427 hash algorithm IDs: SHA2-256 (2), SHA2-384 (3), SHA2-512 (4), Identity (5).
	if d := msg.Payloads[6].(*Notify).Data; !bytes.Equal(d, []byte{0, 2, 0, 3, 0, 4, 0, 5}) {
		t.Errorf("SIGNATURE_HASH_ALGORITHMS data %x", d)
	}
}

func types(ps []Payload) []PayloadType {
	var ts []PayloadType
	for _, p := range ps {
		ts = append(ts, p.Type())
	}
	return ts
}

// everyPayload is a message that carries one of each payload type this
// package models, in plausible field values.
func everyPayload() *Message {
	return &Message{
		Header: Header{SPIi: 0x0102030405060708, SPIr: 0x1112131415161718, Exchange: IKE_AUTH, Flags: FlagInitiator, MessageID: 1},
		Payloads: []Payload{
			&SA{Proposals: []Proposal{
				{Num: 1, Protocol: ProtoESP, SPI: []byte{1, 2, 3, 4}, Transforms: []Transform{
					{Type: TransformENCR, ID: ENCR_AES_GCM_16, Attributes: []Attribute{KeyLengthAttr(256)}},
					{Type: TransformESN, ID: ESN_NO},
				}},
				{Num: 2, Protocol: ProtoESP, SPI: []byte{1, 2, 3, 4}, Transforms: []Transform{
					{Type: TransformENCR, ID: ENCR_CHACHA20_POLY1305, Attributes: []Attribute{{Type: 17, Data: []byte{9, 9, 9}}}},
				}},
			}},
			&KE{Group: KE_CURVE25519, Data: bytes.Repeat([]byte{7}, 32)},
			&Nonce{Data: bytes.Repeat([]byte{1}, 32)},
			&ID{IDType: ID_FQDN, Data: []byte("host-A@swan.test")},
			&ID{Responder: true, IDType: ID_IPV6_ADDR, Data: netip.MustParseAddr("fd00::1").AsSlice()},
			&Cert{Encoding: CertX509Signature, Data: []byte{0x30, 0x82}},
			&CertReq{Encoding: CertX509Signature, Authority: bytes.Repeat([]byte{3}, 20)},
			&Auth{Method: AuthSharedKeyMIC, Data: bytes.Repeat([]byte{4}, 32)},
			&Notify{NotifyType: INITIAL_CONTACT},
			&Notify{Protocol: ProtoESP, SPI: []byte{0xca, 0xfe, 0xba, 0xbe}, NotifyType: REKEY_SA},
			&Notify{NotifyType: INVALID_KE_PAYLOAD, Data: []byte{0, 19}},
			&Delete{Protocol: ProtoESP, SPISize: 4, SPIs: [][]byte{{1, 2, 3, 4}, {5, 6, 7, 8}}},
			&Delete{Protocol: ProtoIKE},
			&VendorID{Data: []byte("ipsecstack")},
			&TS{Selectors: []TrafficSelector{
				{TSType: TS_IPV4_ADDR_RANGE, StartPort: 0, EndPort: 65535, Start: netip.MustParseAddr("10.0.0.0"), End: netip.MustParseAddr("10.0.0.255")},
				{TSType: TS_IPV6_ADDR_RANGE, IPProto: 6, StartPort: 443, EndPort: 443, Start: netip.MustParseAddr("fd00::"), End: netip.MustParseAddr("fd00::ffff")},
			}},
			&TS{Responder: true, Selectors: []TrafficSelector{{TSType: 9, IPProto: 0, Data: []byte{1, 2, 3, 4}}}},
			&Raw{PType: PayloadCP, Data: []byte{1, 0, 0, 0}},
			&SKF{Next: PayloadIDi, Number: 1, Total: 2, Data: []byte{0xee, 0xee}},
		},
	}
}

// TestRoundTrip encodes one of every payload, decodes it, and compares.
func TestRoundTrip(t *testing.T) {
	m := everyPayload()
	b, err := m.Encode()
	if err != nil {
		t.Fatal(err)
	}
	got, err := Decode(b)
	if err != nil {
		t.Fatal(err)
	}
	m.Header.NextPayload, m.Header.MajorVersion, m.Header.Length = PayloadSA, 2, uint32(len(b))
	if !reflect.DeepEqual(got, m) {
		t.Errorf("round trip\n got %+v\nwant %+v", got, m)
	}
	// The SK payload's Next names the first inner payload, and the
	// plaintext decodes with DecodePayloads.
	inner, err := AppendPayloads(nil, m.Payloads[3:5])
	if err != nil {
		t.Fatal(err)
	}
	sk := &Message{Header: m.Header, Payloads: []Payload{&Notify{NotifyType: COOKIE, Data: []byte{1}}, &SK{Next: PayloadIDi, Data: []byte{9}}}}
	b, err = sk.Encode()
	if err != nil {
		t.Fatal(err)
	}
	got, err = Decode(b)
	if err != nil {
		t.Fatal(err)
	}
	if s := got.Payloads[1].(*SK); s.Next != PayloadIDi {
		t.Errorf("SK.Next %v", s.Next)
	}
	ps, err := DecodePayloads(PayloadIDi, inner, 0)
	if err != nil || !reflect.DeepEqual(ps, m.Payloads[3:5]) {
		t.Errorf("inner payloads %+v, %v", ps, err)
	}
}

// hdr returns an IKE header for a message of n bytes whose first
// payload is next.
func hdr(next PayloadType, n int) []byte {
	h := &Header{SPIi: 1, Exchange: IKE_SA_INIT, Flags: FlagInitiator}
	return appendHeader(nil, h, next, n)
}

// msg returns a message holding the given payload bytes.
func msg(next PayloadType, payloads ...[]byte) []byte {
	body := bytes.Join(payloads, nil)
	return append(hdr(next, HeaderLen+len(body)), body...)
}

// pl returns a payload with a generic header.
func pl(next PayloadType, critical bool, body ...byte) []byte {
	c := byte(0)
	if critical {
		c = criticalBit
	}
	n := 4 + len(body)
	return append([]byte{byte(next), c, byte(n >> 8), byte(n)}, body...)
}

// TestMalformed feeds malformed messages and checks that each yields the
// error class, payload and offset that says what is wrong and where.
func TestMalformed(t *testing.T) {
	nonce := bytes.Repeat([]byte{1}, 16)
	tests := []struct {
		name    string
		in      []byte
		payload PayloadType
		offset  int
	}{
		{"short header", make([]byte, 27), NoNextPayload, 0},
		{"length field too large", append(hdr(NoNextPayload, 29), 0)[:28], NoNextPayload, 24},
		{"length field too small", append(hdr(NoNextPayload, 28), 0), NoNextPayload, 24},
		{"payload header truncated", append(hdr(PayloadNonce, 30), 0, 0), PayloadNonce, 28},
		{"payload length 3", msg(PayloadNonce, []byte{0, 0, 0, 3}), PayloadNonce, 30},
		{"payload length past end", msg(PayloadNonce, []byte{0, 0, 0, 40}), PayloadNonce, 30},
		{"bytes after last payload", msg(PayloadVendorID, pl(0, false), []byte{0}), NoNextPayload, 32},
		{"data after SK", msg(PayloadSK, pl(PayloadIDi, false, 1, 2), pl(0, false)), NoNextPayload, 34},
		{"nonce too short", msg(PayloadNonce, pl(0, false, nonce[:15]...)), PayloadNonce, 32},
		{"nonce too long", msg(PayloadNonce, pl(0, false, make([]byte, 257)...)), PayloadNonce, 32},
		{"KE too short", msg(PayloadKE, pl(0, false, 0, 14, 0)), PayloadKE, 32},
		{"IDi IPv4 of 5 bytes", msg(PayloadIDi, pl(0, false, 1, 0, 0, 0, 1, 2, 3, 4, 5)), PayloadIDi, 36},
		{"IDr IPv6 of 4 bytes", msg(PayloadIDr, pl(0, false, 5, 0, 0, 0, 1, 2, 3, 4)), PayloadIDr, 36},
		{"notify SPI size past end", msg(PayloadNotify, pl(0, false, 3, 4, 0x40, 0, 1, 2)), PayloadNotify, 33},
		{"delete count mismatch", msg(PayloadDelete, pl(0, false, 3, 4, 0, 2, 1, 2, 3, 4)), PayloadDelete, 34},
		{"delete SPIs of size 0", msg(PayloadDelete, pl(0, false, 1, 0, 0, 1)), PayloadDelete, 34},
		{"SKF fragment 0", msg(PayloadSKF, pl(0, false, 0, 0, 0, 1)), PayloadSKF, 32},
		{"SKF fragment 3 of 2", msg(PayloadSKF, pl(0, false, 0, 3, 0, 2)), PayloadSKF, 32},
		{"TS count beyond data", msg(PayloadTSi, pl(0, false, 2, 0, 0, 0, 7, 0, 0, 16, 0, 0, 255, 255, 10, 0, 0, 0, 10, 0, 0, 255)), PayloadTSi, 52},
		{"TS IPv4 length 20", msg(PayloadTSi, pl(0, false, 1, 0, 0, 0, 7, 0, 0, 20, 0, 0, 255, 255, 10, 0, 0, 0, 10, 0, 0, 255, 0, 0, 0, 0)), PayloadTSi, 38},
		{"TS trailing bytes", msg(PayloadTSr, pl(0, false, 0, 0, 0, 0, 9)), PayloadTSr, 36},
		{"SA empty", msg(PayloadSA, pl(0, false)), PayloadSA, 32},
		{"proposal Last Substruc 3", msg(PayloadSA, pl(0, false, 3, 0, 0, 8, 1, 1, 0, 0)), PayloadSA, 32},
		{"proposal length past end", msg(PayloadSA, pl(0, false, 0, 0, 0, 9, 1, 1, 0, 0)), PayloadSA, 34},
		{"proposal SPI past length", msg(PayloadSA, pl(0, false, 0, 0, 0, 8, 1, 1, 4, 0)), PayloadSA, 34},
		{"more proposals announced, none follows", msg(PayloadSA, pl(0, false, 2, 0, 0, 8, 1, 1, 0, 0)), PayloadSA, 40},
		{"transform count too high", msg(PayloadSA, pl(0, false, 0, 0, 0, 16, 1, 1, 0, 2, 3, 0, 0, 8, 1, 0, 0, 12)), PayloadSA, 48},
		{"transform says last, count says more", msg(PayloadSA, pl(0, false, 0, 0, 0, 16, 1, 1, 0, 2, 0, 0, 0, 8, 1, 0, 0, 12)), PayloadSA, 40},
		{"transform count too low", msg(PayloadSA, pl(0, false, 0, 0, 0, 16, 1, 1, 0, 0, 0, 0, 0, 8, 1, 0, 0, 12)), PayloadSA, 40},
		{"last transform says more", msg(PayloadSA, pl(0, false, 0, 0, 0, 16, 1, 1, 0, 1, 3, 0, 0, 8, 1, 0, 0, 12)), PayloadSA, 40},
		{"transform length 7", msg(PayloadSA, pl(0, false, 0, 0, 0, 16, 1, 1, 0, 1, 0, 0, 0, 7, 1, 0, 0, 12)), PayloadSA, 42},
		{"attribute truncated", msg(PayloadSA, pl(0, false, 0, 0, 0, 18, 1, 1, 0, 1, 0, 0, 0, 10, 1, 0, 0, 12, 0x80, 14)), PayloadSA, 48},
		{"TLV attribute past end", msg(PayloadSA, pl(0, false, 0, 0, 0, 20, 1, 1, 0, 1, 0, 0, 0, 12, 1, 0, 0, 12, 0, 17, 0, 1)), PayloadSA, 50},
		{"Key Length in TLV format", msg(PayloadSA, pl(0, false, 0, 0, 0, 22, 1, 1, 0, 1, 0, 0, 0, 14, 1, 0, 0, 12, 0, 14, 0, 2, 0, 128)), PayloadSA, 54},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Decode(tt.in)
			var e *Error
			if !errors.As(err, &e) {
				t.Fatalf("err = %v, want *Error", err)
			}
			if !errors.Is(err, ErrInvalidSyntax) || e.Payload != tt.payload || e.Offset != tt.offset {
				t.Errorf("err = %v (payload %v, offset %d), want payload %v offset %d", err, e.Payload, e.Offset, tt.payload, tt.offset)
			}
		})
	}
}

// TestMajorVersion: RFC 7296 §2.5, a major version other than 2 is
// answered with INVALID_MAJOR_VERSION; the minor version is ignored.
func TestMajorVersion(t *testing.T) {
	b := hdr(NoNextPayload, HeaderLen)
	b[17] = 0x30
	if _, err := Decode(b); !errors.Is(err, ErrInvalidMajorVersion) {
		t.Errorf("major 3: %v", err)
	}
	b[17] = 0x2f
	m, err := Decode(b)
	if err != nil || m.MinorVersion != 15 {
		t.Errorf("minor 15: %v", err)
	}
}

// TestUnknownPayloads: RFC 7296 §2.5, an unknown payload is skipped unless
// its critical bit is set, which rejects the message naming the type.
func TestUnknownPayloads(t *testing.T) {
	b := msg(PayloadVendorID, pl(200, false, 'x'), pl(PayloadVendorID, false, 1, 2, 3), pl(0, false, 'y'))
	m, err := Decode(b)
	if err != nil {
		t.Fatal(err)
	}
	if len(m.Payloads) != 2 || string(m.Payloads[1].(*VendorID).Data) != "y" {
		t.Errorf("payloads %+v", m.Payloads)
	}
	b = msg(PayloadVendorID, pl(200, false, 'x'), pl(PayloadVendorID, true, 1, 2, 3), pl(0, false, 'y'))
	_, err = Decode(b)
	var uc *UnsupportedCriticalPayloadError
	if !errors.As(err, &uc) || uc.Type != 200 || uc.Offset != 33 {
		t.Errorf("err = %v, want unsupported critical payload 200 at 33", err)
	}
	// The critical bit on a known payload is ignored (§3.2).
	b = msg(PayloadVendorID, pl(0, true, 'x'))
	if _, err := Decode(b); err != nil {
		t.Errorf("critical known payload: %v", err)
	}
}

// TestEncodeErrors: values the wire cannot carry are refused, not
// truncated.
func TestEncodeErrors(t *testing.T) {
	tests := []struct {
		name string
		p    Payload
	}{
		{"short nonce", &Nonce{Data: make([]byte, 15)}},
		{"empty SA", &SA{}},
		{"Key Length as TLV", &SA{Proposals: []Proposal{{Transforms: []Transform{{Attributes: []Attribute{{Type: AttrKeyLength, Data: []byte{1}}}}}}}}},
		{"IPv4 ID of 16 bytes", &ID{IDType: ID_IPV4_ADDR, Data: make([]byte, 16)}},
		{"TS IPv4 type with IPv6 address", &TS{Selectors: []TrafficSelector{{TSType: TS_IPV4_ADDR_RANGE, Start: netip.IPv6Loopback(), End: netip.IPv6Loopback()}}}},
		{"TS IPv6 type with zero address", &TS{Selectors: []TrafficSelector{{TSType: TS_IPV6_ADDR_RANGE}}}},
		{"delete SPI size mismatch", &Delete{Protocol: ProtoESP, SPISize: 4, SPIs: [][]byte{{1}}}},
		{"SKF 0 of 0", &SKF{}},
		{"Raw of a modelled type", &Raw{PType: PayloadNonce}},
		{"oversized payload", &VendorID{Data: make([]byte, 70000)}},
	}
	for _, tt := range tests {
		m := &Message{Payloads: []Payload{tt.p}}
		if _, err := m.Encode(); err == nil {
			t.Errorf("%s: encoded", tt.name)
		}
	}
	m := &Message{Payloads: []Payload{&SK{}, &Nonce{Data: make([]byte, 16)}}}
	if _, err := m.Encode(); err == nil {
		t.Error("SK not last: encoded")
	}
}
