package message

// VendorID is the Vendor ID payload (RFC 7296 §3.12).
type VendorID struct {
	Data []byte
}

// Type implements Payload.
func (*VendorID) Type() PayloadType { return PayloadVendorID }

func decodeVendorID(_ PayloadType, b []byte, _ int) (Payload, error) {
	return &VendorID{Data: clone(b)}, nil
}

func (p *VendorID) appendBody(b []byte) ([]byte, error) { return append(b, p.Data...), nil }

// Raw is a payload of a known type whose body this package does not
// model: Configuration (CP), EAP and GSPM. It keeps the body so that a
// receiver can see the payload was there.
type Raw struct {
	// PType is PayloadCP, PayloadEAP or PayloadGSPM.
	PType PayloadType
	// Data is the body after the generic header.
	Data []byte
}

// Type implements Payload.
func (p *Raw) Type() PayloadType { return p.PType }

func decodeRaw(t PayloadType, b []byte, _ int) (Payload, error) {
	return &Raw{PType: t, Data: clone(b)}, nil
}

func (p *Raw) appendBody(b []byte) ([]byte, error) {
	if p.PType != PayloadCP && p.PType != PayloadEAP && p.PType != PayloadGSPM {
		return nil, encodeErr(p.PType, "not a type Raw may carry")
	}
	return append(b, p.Data...), nil
}
