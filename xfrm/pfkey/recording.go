package pfkey

import (
	"bufio"
	"encoding/hex"
	"fmt"
	"os"
	"strings"
)

// Recorded is one message of a recorded PF_KEY exchange (testdata/linux-*):
// Sent is true for a message ipsecstack's encoder sent to the kernel,
// false for one the kernel sent; Note is the comment line before it.
type Recorded struct {
	Sent  bool
	Bytes []byte
	Note  string
}

// ReadRecording reads a recorded exchange: lines "> HEX" (sent) and
// "< HEX" (received), comment lines starting with '#', blank lines.
func ReadRecording(path string) ([]Recorded, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []Recorded
	note := ""
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<16), MaxMsgLen*2+16)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		switch {
		case line == "":
		case strings.HasPrefix(line, "#"):
			note = strings.TrimSpace(line[1:])
		case strings.HasPrefix(line, ">") || strings.HasPrefix(line, "<"):
			b, err := hex.DecodeString(strings.TrimSpace(line[1:]))
			if err != nil {
				return nil, fmt.Errorf("%s:%d: %v", path, n, err)
			}
			out = append(out, Recorded{Sent: line[0] == '>', Bytes: b, Note: note})
			note = ""
		default:
			return nil, fmt.Errorf("%s:%d: want '>', '<' or '#'", path, n)
		}
	}
	return out, sc.Err()
}
