package leakcheck

import (
	goparser "go/parser"
	"go/token"
	"path/filepath"
	"strings"
	"testing"
)

// TestIndependent: the oracle must share no code with what it checks, so
// the package imports nothing but the standard library (not xfrm, not
// gVisor's parsers the stack relies on).
func TestIndependent(t *testing.T) {
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range files {
		if strings.HasSuffix(name, "_test.go") {
			continue
		}
		f, err := goparser.ParseFile(token.NewFileSet(), name, nil, goparser.ImportsOnly)
		if err != nil {
			t.Fatal(err)
		}
		for _, imp := range f.Imports {
			if path := strings.Trim(imp.Path.Value, `"`); strings.Contains(path, ".") {
				t.Errorf("%s imports %s: leakcheck must use the standard library only", name, path)
			}
		}
	}
}
