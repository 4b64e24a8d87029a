// Package setkey parses and applies the KAME / ipsec-tools setkey
// language (add, get, delete, deleteall, flush, dump, spdadd, spdupdate,
// spddelete, spdflush, spddump), turns statements into PF_KEY messages,
// and prints SAs and policies in setkey's own -D / -DP format.
//
// Algorithm names are looked up in the esp algorithm table, so the parser
// accepts whatever the table holds and names anything else in its error.
//
// NAT traversal (ESP in UDP, RFC 3948) takes ipsec-tools' form:
//
//	add 10.0.0.1[4500] 192.0.2.1[4500] esp-udp [NAT-OA] SPI -m tunnel|transport -E … ;
//
// The protocol esp-udp is ESP with UDP_ENCAP_ESPINUDP encapsulation; the
// "[port]" after each address (IPv6 too: "2001:db8::1[4500]") is the
// SA's UDP source and destination port, both required, 1-65535; a port on
// any other protocol is an error. The optional address after esp-udp is
// the peer's original address before NAT (NAT-OA, RFC 3947), used for the
// transport-mode checksum fix-up of RFC 3948 §3.1.2; 0.0.0.0 or :: means
// none. `setkey -D` prints such an SA as ipsec-tools does: the ports after
// the addresses, "esp-udp", and "NAT OA=" on its own line.
//
// NAT keepalives (RFC 3948 §2.3) have no setkey syntax, in ipsec-tools or
// here: whether to send them depends on which side is behind the NAT,
// which a key manager learns in IKE, not something a static SA states.
// They are set per SA through the Go API (xfrm.Encap.Keepalive); an SA
// added with setkey sends none.
package setkey

import (
	"fmt"
	"strings"
)

// Pos is a place in the input.
type Pos struct {
	Line, Col int
}

// Error is a parse or apply error, printed as FILE:LINE:COL: message.
type Error struct {
	File string
	Pos  Pos
	Msg  string
}

// Error implements error.
func (e *Error) Error() string {
	f := e.File
	if f == "" {
		f = "<input>"
	}
	return fmt.Sprintf("%s:%d:%d: %s", f, e.Pos.Line, e.Pos.Col, e.Msg)
}

type tokKind uint8

const (
	tokEOF tokKind = iota
	tokWord
	tokString
	tokSemi
)

type token struct {
	kind tokKind
	text string
	pos  Pos
}

// String describes the token for an error message. Errors land in logs
// and journals, so a token that may be key material is described, never
// quoted: every quoted string (setkey's only use of them is keys), and any
// word that looks like a key (see keyLike), wherever it appears, since a
// misplaced key (a missing algorithm name, a key too many) reaches the
// parser as some other field.
func (t token) String() string {
	switch t.kind {
	case tokEOF:
		return "end of input"
	case tokSemi:
		return `";"`
	case tokString:
		return fmt.Sprintf("a quoted string of %d bytes", len(t.text))
	}
	if keyLike(t.text) {
		return fmt.Sprintf("a %d-character hexadecimal value", len(t.text))
	}
	return fmt.Sprintf("%q", t.text)
}

// keyLike reports whether a word may be key material: 0x and more digits
// than the longest number setkey takes in hex (an SPI, 8), or 16 or more
// hex digits without the prefix. It errs on the side of hiding.
func keyLike(s string) bool {
	if strings.HasPrefix(s, "0x") || strings.HasPrefix(s, "0X") {
		return len(s) > 2+8
	}
	if len(s) < 16 {
		return false
	}
	for _, c := range []byte(s) {
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F') {
			return false
		}
	}
	return true
}

// lex splits src into tokens: words, "quoted strings" and ';'. '#' starts
// a comment to the end of the line; a backslash before a newline joins
// lines.
func lex(file, src string) ([]token, error) {
	var toks []token
	line, col := 1, 1
	i := 0
	adv := func() {
		if src[i] == '\n' {
			line++
			col = 1
		} else {
			col++
		}
		i++
	}
	for i < len(src) {
		c := src[i]
		switch {
		case c == '\\' && i+1 < len(src) && src[i+1] == '\n':
			adv()
			adv()
		case c == '\\' && i+2 < len(src) && src[i+1] == '\r' && src[i+2] == '\n':
			adv()
			adv()
			adv()
		case c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v':
			adv()
		case c == '#':
			for i < len(src) && src[i] != '\n' {
				adv()
			}
		case c == ';':
			toks = append(toks, token{tokSemi, ";", Pos{line, col}})
			adv()
		case c == '"':
			p := Pos{line, col}
			adv()
			var sb strings.Builder
			for {
				if i >= len(src) || src[i] == '\n' {
					return nil, &Error{file, p, "unterminated string"}
				}
				if src[i] == '"' {
					adv()
					break
				}
				if src[i] == '\\' && i+1 < len(src) && (src[i+1] == '"' || src[i+1] == '\\') {
					adv()
				}
				sb.WriteByte(src[i])
				adv()
			}
			toks = append(toks, token{tokString, sb.String(), p})
		default:
			if c < 0x20 || c >= 0x7f {
				// Not echoed: it may sit in the middle of a key.
				return nil, &Error{file, Pos{line, col}, "unexpected control or non-ASCII character"}
			}
			p := Pos{line, col}
			start := i
			for i < len(src) {
				d := src[i]
				if d == ' ' || d == '\t' || d == '\n' || d == '\r' || d == ';' || d == '"' || d == '#' || d == '\f' || d == '\v' {
					break
				}
				if d == '\\' && i+1 < len(src) && (src[i+1] == '\n' || src[i+1] == '\r') {
					break
				}
				if d < 0x20 || d >= 0x7f {
					return nil, &Error{file, Pos{line, col}, "unexpected control or non-ASCII character"}
				}
				adv()
			}
			toks = append(toks, token{tokWord, src[start:i], p})
		}
	}
	toks = append(toks, token{tokEOF, "", Pos{line, col}})
	return toks, nil
}
