package swanctl

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// swanctl's credential directories, relative to the directory of
// swanctl.conf (swanctl_dir: SWANCTL_X509DIR etc. in src/swanctl/swanctl.h).
const (
	dirX509   = "x509"
	dirX509CA = "x509ca"
)

// keyDirs are the private key directories swanctl --load-creds reads, with
// the key type each accepts ("" any).
var keyDirs = []struct{ dir, typ string }{
	{"private", ""}, {"rsa", "rsa"}, {"ecdsa", "ecdsa"}, {"pkcs8", ""},
}

// readBlob reads a file list entry of certs/cacerts as add_file_list_key
// does: 0x<hex> and 0s<base64> are inline, others file names relative to
// sub (below the swanctl directory) unless absolute.
func readBlob(dir, sub, token string) ([]byte, string, error) {
	switch {
	case len(token) > 2 && strings.EqualFold(token[:2], "0x"):
		b, err := hexBytes(token[2:])
		return b, "inline certificate", err
	case len(token) > 2 && strings.EqualFold(token[:2], "0s"):
		b, err := base64.StdEncoding.DecodeString(token[2:])
		if err != nil {
			return nil, "", fmt.Errorf("bad base64 certificate")
		}
		return b, "inline certificate", nil
	}
	p := token
	if !filepath.IsAbs(p) {
		p = filepath.Join(dir, sub, token)
	}
	b, err := readRegular(p, maxCredFile)
	if err != nil {
		return nil, p, fmt.Errorf("loading %s: %s", p, pathErr(err))
	}
	return b, p, nil
}

// parseCert reads one X.509 certificate, PEM or DER.
func parseCert(b []byte, name string) (*x509.Certificate, error) {
	if blk, _ := pem.Decode(b); blk != nil {
		if blk.Type != "CERTIFICATE" {
			return nil, fmt.Errorf("%s: PEM block %q is not a CERTIFICATE", name, blk.Type)
		}
		b = blk.Bytes
	}
	c, err := x509.ParseCertificate(b)
	if err != nil {
		return nil, fmt.Errorf("%s: not an X.509 certificate: %v", name, err)
	}
	return c, nil
}

// errEncrypted is returned for a private key file that needs a passphrase.
var errEncrypted = errors.New("encrypted private keys are not supported (store the key unencrypted, e.g. openssl pkey -in KEY -out KEY)")

// parseKey reads a private key: PEM or DER; PKCS#8, PKCS#1 RSA or SEC 1
// EC. typ "rsa" or "ecdsa" restricts the type as swanctl's rsa/ and
// ecdsa/ directories do.
func parseKey(b []byte, typ string) (crypto.Signer, error) {
	if blk, _ := pem.Decode(b); blk != nil {
		if blk.Type == "ENCRYPTED PRIVATE KEY" || blk.Headers["Proc-Type"] != "" {
			return nil, errEncrypted
		}
		b = blk.Bytes
	}
	var k any
	var err error
	if k, err = x509.ParsePKCS8PrivateKey(b); err != nil {
		if k, err = x509.ParsePKCS1PrivateKey(b); err != nil {
			if k, err = x509.ParseECPrivateKey(b); err != nil {
				if isEncryptedPKCS8(b) {
					return nil, errEncrypted
				}
				return nil, fmt.Errorf("not a PKCS#8, PKCS#1 or SEC 1 private key")
			}
		}
	}
	s, ok := k.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("key of type %T cannot sign", k)
	}
	switch s.(type) {
	case *rsa.PrivateKey:
		if typ == "ecdsa" {
			return nil, fmt.Errorf("an RSA key in the ecdsa directory")
		}
	case *ecdsa.PrivateKey:
		if typ == "rsa" {
			return nil, fmt.Errorf("an ECDSA key in the rsa directory")
		}
	case ed25519.PrivateKey:
		if typ != "" {
			return nil, fmt.Errorf("an Ed25519 key in the %s directory", typ)
		}
	default:
		return nil, fmt.Errorf("unsupported key type %T", s)
	}
	return s, nil
}

// isEncryptedPKCS8 recognises PKCS#8 EncryptedPrivateKeyInfo in DER.
func isEncryptedPKCS8(b []byte) bool {
	var v struct {
		Alg  pkix.AlgorithmIdentifier
		Data []byte
	}
	rest, err := asn1.Unmarshal(b, &v)
	return err == nil && len(rest) == 0
}

// loadedKey is a private key read from a key directory.
type loadedKey struct {
	key  crypto.Signer
	file string
}

// loadKeyDirs reads every file in the key directories below dir, as
// swanctl --load-creds does. encrypted lists, per directory type, the file
// names (case-insensitive) a secrets section gives a passphrase for; those
// are reported as unsupported rather than skipped.
func loadKeyDirs(dir string) ([]loadedKey, error) {
	var out []loadedKey
	for _, kd := range keyDirs {
		d := filepath.Join(dir, kd.dir)
		ents, err := os.ReadDir(d)
		if err != nil {
			if errors.Is(err, os.ErrNotExist) {
				continue
			}
			return nil, fmt.Errorf("%s: %s", d, pathErr(err))
		}
		names := make([]string, 0, len(ents))
		for _, e := range ents {
			if e.Type().IsRegular() {
				names = append(names, e.Name())
			}
		}
		sort.Strings(names)
		for _, n := range names {
			p := filepath.Join(d, n)
			b, err := readRegular(p, maxCredFile)
			if err != nil {
				return nil, fmt.Errorf("%s: %s", p, pathErr(err))
			}
			k, err := parseKey(b, kd.typ)
			if err != nil {
				return nil, fmt.Errorf("%s: %v", p, err)
			}
			out = append(out, loadedKey{key: k, file: p})
		}
	}
	return out, nil
}

// loadCADir reads the certificates in x509ca/ (swanctl --load-creds
// loads them as trusted CAs).
func loadCADir(dir string) ([]*x509.Certificate, error) {
	d := filepath.Join(dir, dirX509CA)
	ents, err := os.ReadDir(d)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, nil
		}
		return nil, fmt.Errorf("%s: %s", d, pathErr(err))
	}
	var out []*x509.Certificate
	for _, e := range ents {
		if !e.Type().IsRegular() {
			continue
		}
		p := filepath.Join(d, e.Name())
		b, err := readRegular(p, maxCredFile)
		if err != nil {
			return nil, fmt.Errorf("%s: %s", p, pathErr(err))
		}
		c, err := parseCert(b, p)
		if err != nil {
			return nil, err
		}
		out = append(out, c)
	}
	return out, nil
}

// samePublic reports whether k is the private key of c.
func samePublic(k crypto.Signer, c *x509.Certificate) bool {
	type equaler interface{ Equal(crypto.PublicKey) bool }
	if e, ok := k.Public().(equaler); ok {
		return e.Equal(c.PublicKey)
	}
	return false
}

// addCA appends c to cas unless an equal certificate is there.
func addCA(cas []*x509.Certificate, c *x509.Certificate) []*x509.Certificate {
	for _, o := range cas {
		if bytes.Equal(o.Raw, c.Raw) {
			return cas
		}
	}
	return append(cas, c)
}

// dnString formats a DER DN as strongSwan does: "C=CH, O=strongSwan,
// CN=moon", in encoding order.
func dnString(der []byte) string {
	var rdns pkix.RDNSequence
	if rest, err := asn1.Unmarshal(der, &rdns); err != nil || len(rest) != 0 {
		return fmt.Sprintf("{9}:#%x", der)
	}
	var parts []string
	for _, rdn := range rdns {
		for _, atv := range rdn {
			name := atv.Type.String()
			for n, t := range rdnPrintNames {
				if t.Equal(atv.Type) {
					name = n
				}
			}
			parts = append(parts, fmt.Sprintf("%s=%v", name, atv.Value))
		}
	}
	return strings.Join(parts, ", ")
}

// rdnPrintNames are the names strongSwan prints for DN attributes (the
// first name of each OID in oid.txt).
var rdnPrintNames = map[string]asn1.ObjectIdentifier{
	"C": {2, 5, 4, 6}, "O": {2, 5, 4, 10}, "OU": {2, 5, 4, 11}, "CN": {2, 5, 4, 3},
	"ST": {2, 5, 4, 8}, "L": {2, 5, 4, 7}, "SN": {2, 5, 4, 4}, "serialNumber": {2, 5, 4, 5},
	"E": {1, 2, 840, 113549, 1, 9, 1}, "DC": {0, 9, 2342, 19200300, 100, 1, 25},
	"UID": {0, 9, 2342, 19200300, 100, 1, 1}, "T": {2, 5, 4, 12}, "D": {2, 5, 4, 13},
	"N": {2, 5, 4, 41}, "G": {2, 5, 4, 42}, "I": {2, 5, 4, 43}, "ID": {2, 5, 4, 45},
	"STREET": {2, 5, 4, 9}, "postalAddress": {2, 5, 4, 16}, "postalCode": {2, 5, 4, 17},
	"dnQualifier": {2, 5, 4, 46}, "dmdName": {2, 5, 4, 54}, "pseudonym": {2, 5, 4, 65},
	"unstructuredName": {1, 2, 840, 113549, 1, 9, 2}, "unstructuredAddress": {1, 2, 840, 113549, 1, 9, 8},
	"employeeNumber": {2, 16, 840, 1, 113730, 3, 1, 3}, "ND": {0, 2, 262, 1, 10, 7, 20},
}
