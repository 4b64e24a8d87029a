package swanctl

import (
	"encoding/asn1"
	"encoding/hex"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/ipsecstack/ipsecstack/ike/config"
	m "github.com/ipsecstack/ipsecstack/ike/message"
)

// parseID turns an identity string into an IKEv2 identity the way
// strongSwan's identification_create_from_string (src/libstrongswan/utils/
// identification.c, 5.9.8) infers its type:
//
//   - a type prefix: ipv4:, ipv6:, rfc822:, email:, userfqdn:, fqdn:,
//     dns:, asn1dn:, asn1gn:, keyid: (a "#" after it means hex bytes), or
//     a numeric {type}:;
//   - with "=": a distinguished name "C=CH, O=strongSwan, CN=moon" (or
//     "/C=CH/O=strongSwan/CN=moon"), DER encoded as atodn does; a string
//     that is no valid DN becomes a KEY_ID of its bytes, as there;
//   - without "@": %any, *, 0.0.0.0, :: and "" are "any" (the zero
//     Identity); an IPv4 or IPv6 address; else an FQDN (no ":") or a
//     KEY_ID (with ":");
//   - with "@": @#hex is a KEY_ID, @@user@host an RFC822 address, @name an
//     FQDN (the "@" dropped), user@host an RFC822 address.
//
// IKEv1's subnet and range identities (10.0.0.0/24, ipv4net:, ipv4range:)
// have no IKEv2 encoding and are rejected, as is xmppaddr:.
func parseID(s string) (config.Identity, error) {
	if id, ok, err := prefixedID(s); ok {
		return id, err
	}
	if strings.HasPrefix(s, "{") {
		if id, ok, err := numericID(s); ok {
			return id, err
		}
	}
	if strings.Contains(s, "=") {
		if dn, err := encodeDN(s); err == nil {
			return config.Identity{Type: m.ID_DER_ASN1_DN, Data: dn}, nil
		}
		return config.Identity{Type: m.ID_KEY_ID, Data: []byte(s)}, nil
	}
	if !strings.Contains(s, "@") {
		switch s {
		case "", "%any", "%any6", "0.0.0.0", "*", "::", "0::0":
			return config.Identity{}, nil
		}
		v4 := !strings.Contains(s, ":")
		id, ok, err := ipID(s, v4)
		if ok {
			return id, err
		}
		if v4 {
			return config.Identity{Type: m.ID_FQDN, Data: []byte(s)}, nil
		}
		return config.Identity{Type: m.ID_KEY_ID, Data: []byte(s)}, nil
	}
	if rest, ok := strings.CutPrefix(s, "@"); ok {
		switch {
		case strings.HasPrefix(rest, "#"):
			b, err := hexBytes(rest[1:])
			return config.Identity{Type: m.ID_KEY_ID, Data: b}, err
		case strings.HasPrefix(rest, "@"):
			return config.Identity{Type: m.ID_RFC822_ADDR, Data: []byte(rest[1:])}, nil
		default:
			if rest == "" {
				// Usually `id = @#hex` unquoted, where "#" began a comment.
				return config.Identity{}, fmt.Errorf("empty FQDN identity %q (a key ID must be quoted: \"@#hex\", as # starts a comment)", s)
			}
			return config.Identity{Type: m.ID_FQDN, Data: []byte(rest)}, nil
		}
	}
	return config.Identity{Type: m.ID_RFC822_ADDR, Data: []byte(s)}, nil
}

// hexBytes decodes like chunk_from_hex: an optional 0x, and ":" or " "
// between bytes allowed.
func hexBytes(s string) ([]byte, error) {
	s = strings.TrimPrefix(strings.TrimPrefix(s, "0x"), "0X")
	s = strings.NewReplacer(":", "", " ", "").Replace(s)
	if len(s)%2 == 1 {
		s = "0" + s // chunk_from_hex pads an odd count with a leading zero
	}
	b, err := hex.DecodeString(s)
	if err != nil {
		return nil, fmt.Errorf("bad hex %q", s)
	}
	return b, nil
}

// prefixedID is create_from_string_with_prefix_type.
func prefixedID(s string) (config.Identity, bool, error) {
	prefixes := []struct {
		p   string
		typ m.IDType
	}{
		{"ipv4:", m.ID_IPV4_ADDR}, {"ipv6:", m.ID_IPV6_ADDR},
		{"ipv4net:", 0}, {"ipv6net:", 0}, {"ipv4range:", 0}, {"ipv6range:", 0},
		{"rfc822:", m.ID_RFC822_ADDR}, {"email:", m.ID_RFC822_ADDR}, {"userfqdn:", m.ID_RFC822_ADDR},
		{"fqdn:", m.ID_FQDN}, {"dns:", m.ID_FQDN},
		{"asn1dn:", m.ID_DER_ASN1_DN}, {"asn1gn:", m.ID_DER_ASN1_GN}, {"xmppaddr:", 0},
		{"keyid:", m.ID_KEY_ID},
	}
	for _, p := range prefixes {
		if len(s) < len(p.p) || !strings.EqualFold(s[:len(p.p)], p.p) {
			continue
		}
		rest := s[len(p.p):]
		if p.typ == 0 {
			return config.Identity{}, true, fmt.Errorf("identity type %s has no IKEv2 encoding", strings.TrimSuffix(p.p, ":"))
		}
		id, err := typedID(p.typ, rest)
		return id, true, err
	}
	return config.Identity{}, false, nil
}

// typedID is the data of an identity whose type is given: "#hex" is raw
// bytes; IP addresses are converted from text (strongSwan keeps the text,
// which no IKEv2 peer could use); a DN is parsed from text unless "#hex".
func typedID(typ m.IDType, rest string) (config.Identity, error) {
	if strings.HasPrefix(rest, "#") {
		b, err := hexBytes(rest[1:])
		if err != nil {
			return config.Identity{}, err
		}
		return checkedID(typ, b)
	}
	switch typ {
	case m.ID_IPV4_ADDR, m.ID_IPV6_ADDR:
		a, err := netip.ParseAddr(rest)
		if err != nil || a.Zone() != "" || a.Is4() != (typ == m.ID_IPV4_ADDR) {
			return config.Identity{}, fmt.Errorf("%q is not an IPv%s address", rest, map[bool]string{true: "4", false: "6"}[typ == m.ID_IPV4_ADDR])
		}
		return config.Identity{Type: typ, Data: a.AsSlice()}, nil
	case m.ID_DER_ASN1_DN:
		dn, err := encodeDN(rest)
		if err != nil {
			return config.Identity{}, err
		}
		return config.Identity{Type: typ, Data: dn}, nil
	case m.ID_DER_ASN1_GN:
		return config.Identity{}, fmt.Errorf("asn1gn: needs the DER bytes as #hex")
	}
	return checkedID(typ, []byte(rest))
}

func checkedID(typ m.IDType, b []byte) (config.Identity, error) {
	switch typ {
	case m.ID_IPV4_ADDR:
		if len(b) != 4 {
			return config.Identity{}, fmt.Errorf("an IPv4 identity is 4 bytes, not %d", len(b))
		}
	case m.ID_IPV6_ADDR:
		if len(b) != 16 {
			return config.Identity{}, fmt.Errorf("an IPv6 identity is 16 bytes, not %d", len(b))
		}
	case m.ID_DER_ASN1_DN, m.ID_DER_ASN1_GN:
		var rv asn1.RawValue
		if rest, err := asn1.Unmarshal(b, &rv); err != nil || len(rest) != 0 {
			return config.Identity{}, fmt.Errorf("identity of type %d is not one DER value", typ)
		}
	}
	if len(b) == 0 && typ != m.ID_NULL {
		return config.Identity{}, fmt.Errorf("empty identity of type %d", typ)
	}
	return config.Identity{Type: typ, Data: b}, nil
}

// numericID is create_from_string_with_num_type: "{9}:#30..." etc.
func numericID(s string) (config.Identity, bool, error) {
	end := strings.Index(s, "}:")
	if end < 0 {
		return config.Identity{}, false, nil
	}
	n, err := strconv.ParseUint(s[1:end], 0, 8)
	if err != nil {
		return config.Identity{}, false, nil
	}
	typ := m.IDType(n)
	switch typ {
	case m.ID_IPV4_ADDR, m.ID_FQDN, m.ID_RFC822_ADDR, m.ID_IPV6_ADDR, m.ID_DER_ASN1_DN,
		m.ID_DER_ASN1_GN, m.ID_KEY_ID, m.ID_FC_NAME, m.ID_NULL:
	default:
		return config.Identity{}, true, fmt.Errorf("identity type %d is not an IKEv2 identity type", n)
	}
	rest := s[end+2:]
	if strings.HasPrefix(rest, "#") {
		b, err := hexBytes(rest[1:])
		if err != nil {
			return config.Identity{}, true, err
		}
		id, err := checkedID(typ, b)
		return id, true, err
	}
	id, err := checkedID(typ, []byte(rest))
	return id, true, err
}

// ipID is create_ip_address_from_string: an address is an IP identity; a
// subnet or range parses but is IKEv1-only; anything else is not an IP
// (ok false) and the caller falls back to FQDN or KEY_ID.
func ipID(s string, v4 bool) (config.Identity, bool, error) {
	addr, rest, cut := s, "", false
	if i := strings.IndexByte(s, '/'); i >= 0 {
		addr, rest, cut = s[:i], s[i+1:], true
	} else if i := strings.IndexByte(s, '-'); i >= 0 {
		addr, rest, cut = s[:i], s[i+1:], true
	}
	a, err := netip.ParseAddr(addr)
	if err != nil || a.Zone() != "" || a.Is4() != v4 || (v4 && strings.Count(addr, ".") != 3) {
		return config.Identity{}, false, nil
	}
	if cut {
		if strings.Contains(s, "/") {
			if bits, _ := strconv.Atoi(rest); bits > a.BitLen() {
				return config.Identity{}, false, nil
			}
		} else if b, err := netip.ParseAddr(rest); err != nil || b.Is4() != v4 || b.Less(a) {
			return config.Identity{}, false, nil
		}
		return config.Identity{}, true, fmt.Errorf("%q is an IKEv1 subnet or range identity, which IKEv2 has no encoding for", s)
	}
	if v4 {
		return config.Identity{Type: m.ID_IPV4_ADDR, Data: a.AsSlice()}, true, nil
	}
	return config.Identity{Type: m.ID_IPV6_ADDR, Data: a.AsSlice()}, true, nil
}

// rdnTypes is atodn's x501rdns table (identification.c, 5.9.8) with the
// OIDs of strongSwan's oid.txt; ia5 marks the IA5String attributes.
// TCGID is left out (a vendor OID nobody uses in IKE identities).
var rdnTypes = func() map[string]struct {
	oid asn1.ObjectIdentifier
	ia5 bool
} {
	type t = struct {
		oid asn1.ObjectIdentifier
		ia5 bool
	}
	at := func(n int) t { return t{oid: asn1.ObjectIdentifier{2, 5, 4, n}} }
	email := t{oid: asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 9, 1}, ia5: true}
	un := t{oid: asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 9, 2}, ia5: true}
	ua := t{oid: asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 9, 8}}
	en := t{oid: asn1.ObjectIdentifier{2, 16, 840, 1, 113730, 3, 1, 3}}
	m := map[string]t{
		"ND":  {oid: asn1.ObjectIdentifier{0, 2, 262, 1, 10, 7, 20}},
		"UID": {oid: asn1.ObjectIdentifier{0, 9, 2342, 19200300, 100, 1, 1}},
		"DC":  {oid: asn1.ObjectIdentifier{0, 9, 2342, 19200300, 100, 1, 25}},
		"CN":  at(3), "SN": at(4), "serialNumber": at(5), "C": at(6), "L": at(7), "ST": at(8),
		"STREET": at(9), "O": at(10), "OU": at(11), "T": at(12), "D": at(13),
		"postalAddress": at(16), "postalCode": at(17), "N": at(41), "G": at(42), "I": at(43),
		"dnQualifier": at(46), "dmdName": at(54), "pseudonym": at(65), "ID": at(45),
		"EN": en, "employeeNumber": en,
		"E": email, "Email": email, "emailAddress": email,
		"UN": un, "unstructuredName": un, "UA": ua, "unstructuredAddress": ua,
	}
	// atodn compares case-insensitively.
	out := map[string]t{}
	for k, v := range m {
		out[strings.ToLower(k)] = v
	}
	return out
}()

// encodeDN is atodn: RDNs separated by "," (or by "/" when the string
// starts with one), each "type=value" with blanks around both trimmed;
// every RDN is a SET of one AttributeTypeAndValue, the value a
// PrintableString when it can be and a UTF8String otherwise (IA5String for
// the e-mail attributes).
func encodeDN(s string) ([]byte, error) {
	sep := ","
	if strings.HasPrefix(s, "/") {
		sep, s = "/", s[1:]
	}
	var rdns []byte
	n := 0
	parts := strings.Split(s, sep)
	for i, part := range parts {
		if strings.TrimLeft(part, " ") == "" {
			if i == len(parts)-1 {
				continue // atodn accepts a trailing separator
			}
			// atodn reads the separator as the start of an attribute
			// type and fails; the string becomes a KEY_ID.
			return nil, fmt.Errorf("empty RDN")
		}
		typ, val, ok := strings.Cut(part, "=")
		typ = strings.Trim(typ, " ")
		if !ok {
			return nil, fmt.Errorf("RDN %q has no '='", part)
		}
		// atodn skips blanks and further "=" before the value, and
		// trailing blanks after it.
		val = strings.TrimRight(strings.TrimLeft(val, " ="), " ")
		rt, known := rdnTypes[strings.ToLower(typ)]
		if !known {
			return nil, fmt.Errorf("unknown DN attribute type %q", typ)
		}
		if n++; n > 20 {
			return nil, fmt.Errorf("more than 20 RDNs")
		}
		tag := asn1.TagPrintableString
		switch {
		case rt.ia5:
			tag = asn1.TagIA5String
		case !isPrintable(val):
			tag = asn1.TagUTF8String
		}
		if tag == asn1.TagUTF8String && !utf8.ValidString(val) {
			return nil, fmt.Errorf("DN value %q is not UTF-8", val)
		}
		oid, err := asn1.Marshal(rt.oid)
		if err != nil {
			return nil, err
		}
		v, err := asn1.Marshal(asn1.RawValue{Tag: tag, Bytes: []byte(val)})
		if err != nil {
			return nil, err
		}
		seq, _ := asn1.Marshal(asn1.RawValue{Tag: asn1.TagSequence, IsCompound: true, Bytes: append(oid, v...)})
		set, _ := asn1.Marshal(asn1.RawValue{Tag: asn1.TagSet, IsCompound: true, Bytes: seq})
		rdns = append(rdns, set...)
	}
	if n == 0 {
		return nil, fmt.Errorf("empty DN")
	}
	return asn1.Marshal(asn1.RawValue{Tag: asn1.TagSequence, IsCompound: true, Bytes: rdns})
}

// isPrintable is asn1_is_printablestring: the PrintableString alphabet.
func isPrintable(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		case strings.IndexByte(" '()+,-./:=?", c) >= 0:
		default:
			return false
		}
	}
	return true
}

// IDString formats an identity for people, as strongSwan prints it where
// it can (%Y): addresses, names, DNs by crypto/x509's formatting (RFC
// 4514, which reverses the RDN order), key IDs in hex.
func IDString(id config.Identity) string {
	switch id.Type {
	case 0:
		return "%any"
	case m.ID_IPV4_ADDR, m.ID_IPV6_ADDR:
		if a, ok := netip.AddrFromSlice(id.Data); ok {
			return a.String()
		}
	case m.ID_FQDN, m.ID_RFC822_ADDR:
		return string(id.Data)
	case m.ID_DER_ASN1_DN:
		return dnString(id.Data)
	case m.ID_KEY_ID:
		return "@#" + hex.EncodeToString(id.Data)
	}
	return fmt.Sprintf("{%d}:#%x", id.Type, id.Data)
}
