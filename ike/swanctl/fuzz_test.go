package swanctl

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// FuzzParse: any input either parses or fails with a one-line *Error
// that names the file; it never panics. The corpus is the oracle files
// plus testdata/fuzz/FuzzParse.
func FuzzParse(f *testing.F) {
	files, _ := filepath.Glob("testdata/oracle/*.conf")
	for _, p := range files {
		if b, err := os.ReadFile(p); err == nil {
			f.Add(b)
		}
	}
	f.Add([]byte("a : b { }\nb : a { }\n"))
	f.Add([]byte("c { x = \"a\\\nb\" include \"q\" }"))
	dir := f.TempDir()
	name := filepath.Join(dir, "swanctl.conf")
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, err := load(name, data, mapFS{}, false)
		if err != nil {
			msg := err.Error()
			if _, ok := err.(*Error); !ok {
				t.Fatalf("error %T %q is not an *Error", err, msg)
			}
			if strings.Contains(msg, "\n") {
				t.Fatalf("error %q has more than one line", msg)
			}
			return
		}
		if cfg == nil {
			t.Fatal("nil config without error")
		}
		for _, c := range cfg.Connections {
			if len(c.Proposals) == 0 || len(c.Local) != 1 || len(c.Remote) != 1 {
				t.Fatalf("conn %s: %d proposals, %d/%d rounds", c.Name, len(c.Proposals), len(c.Local), len(c.Remote))
			}
			for _, ch := range c.Children {
				if len(ch.Proposals) == 0 || len(ch.LocalTS) == 0 || len(ch.RemoteTS) == 0 {
					t.Fatalf("child %s incomplete", ch.Name)
				}
			}
		}
	})
}
