package swanctl

import (
	"errors"
	"io/fs"
	"path"
	"sort"
	"strings"
	"testing"
)

// mapFS is an in-memory fileSystem for syntax tests.
type mapFS map[string]string

func (m mapFS) ReadFile(name string) ([]byte, error) {
	if s, ok := m[name]; ok {
		return []byte(s), nil
	}
	return nil, &fs.PathError{Op: "open", Path: name, Err: fs.ErrNotExist}
}

func (m mapFS) Glob(pattern string) ([]string, error) {
	var out []string
	for n := range m {
		if ok, _ := path.Match(pattern, n); ok {
			out = append(out, n)
		}
	}
	sort.Strings(out)
	return out, nil
}

// dump renders a section tree as "path=value" lines, for comparison.
func dump(s *section, prefix string, out *[]string) {
	for _, k := range s.keys {
		v := k.value
		if k.unset {
			v = "<unset>"
		}
		*out = append(*out, prefix+k.key+"="+v)
	}
	for _, c := range s.sections {
		dump(c, prefix+c.name+".", out)
	}
}

func parseTree(files mapFS, main string) (*section, error) {
	root := &section{}
	p := &parser{fs: files}
	if err := p.parseFile(main, root); err != nil {
		return nil, err
	}
	if err := resolve(root); err != nil {
		return nil, err
	}
	return root, nil
}

// TestSettingsSyntax checks the settings grammar of strongSwan's
// settings_lexer.l/settings_parser.y (5.9.8); the expectations follow those
// rules and, where it was unclear, what `swanctl --load-conns` did with the
// same text.
func TestSettingsSyntax(t *testing.T) {
	tests := []struct {
		name  string
		files mapFS
		want  string // "\n"-joined dump
	}{
		{"key value", mapFS{"/e/s.conf": "a = b\n"}, "a=b"},
		{"no final newline", mapFS{"/e/s.conf": "a = b"}, "a=b"},
		{"words joined by one blank", mapFS{"/e/s.conf": "a =  x   y\t z  \n"}, "a=x y z"},
		{"comment ends value", mapFS{"/e/s.conf": "a = x#y\nb = 1 # c\n# whole line\n"}, "a=x\nb=1"},
		{"brace ends value", mapFS{"/e/s.conf": "s { a = b }"}, "s.a=b"},
		{"one line sections", mapFS{"/e/s.conf": "c { l { auth = psk } r { id = x } }"}, "c.l.auth=psk\nc.r.id=x"},
		{"quoted", mapFS{"/e/s.conf": `a = "x # } y"` + "\n"}, "a=x # } y"},
		{"quoted escapes", mapFS{"/e/s.conf": `a = "q\"\\\t\n\r\z"` + "\n"}, "a=q\"\\\t\n\rz"},
		{"quoted multi-line", mapFS{"/e/s.conf": "a = \"x\ny\"\nb = 2\n"}, "a=x\ny\nb=2"},
		{"escaped newline joins", mapFS{"/e/s.conf": "a = \"x\\\ny\"\n"}, "a=xy"},
		{"quoted and bare joined", mapFS{"/e/s.conf": `a = x "y  z" w` + "\n"}, "a=x y  z w"},
		{"empty value unsets", mapFS{"/e/s.conf": "a = 1\na =\n"}, "a=<unset>"},
		{"later key wins, first position", mapFS{"/e/s.conf": "a = 1\nb = 2\na = 3\n"}, "a=3\nb=2"},
		{"sections merge", mapFS{"/e/s.conf": "s { a = 1 }\ns { b = 2 }\n"}, "s.a=1\ns.b=2"},
		{"CRLF", mapFS{"/e/s.conf": "s {\r\n a = 1\r\n}\r\n"}, "s.a=1"},
		{"key on next line", mapFS{"/e/s.conf": "s\n{\na\n= 1\n}\n"}, "s.a=1"},
		{"include key is a key", mapFS{"/e/s.conf": "include = x\n"}, "include=x"},
		{"include relative", mapFS{"/e/s.conf": "s {\n include sub/x.conf\n}\n", "/e/sub/x.conf": "a = 1\n"}, "s.a=1"},
		{"include glob sorted", mapFS{"/e/s.conf": "include conf.d/*.conf\n", "/e/conf.d/b.conf": "b = 2\n", "/e/conf.d/a.conf": "a = 1\n"}, "a=1\nb=2"},
		{"include glob no match", mapFS{"/e/s.conf": "include conf.d/*.conf\na = 1\n"}, "a=1"},
		{"include quoted", mapFS{"/e/s.conf": `include "my dir/x.conf"` + "\n", "/e/my dir/x.conf": "a = 1\n"}, "a=1"},
		{"include escaped blank", mapFS{"/e/s.conf": `include my\ dir/x.conf` + "\n", "/e/my dir/x.conf": "a = 1\n"}, "a=1"},
		{"include absolute", mapFS{"/e/s.conf": "include /o/x.conf\n", "/o/x.conf": "a = 1\n"}, "a=1"},
		{"include then comment", mapFS{"/e/s.conf": "include x.conf# c\n", "/e/x.conf": "a = 1\n"}, "a=1"},
		{"references", mapFS{"/e/s.conf": "base { a = 1\n b = 1\n sub { x = 1 } }\nc : base { b = 2\n sub { y = 2 } }\n"},
			"base.a=1\nbase.b=1\nbase.sub.x=1\nc.b=2\nc.a=1\nc.sub.y=2\nc.sub.x=1"},
		{"dotted references", mapFS{"/e/s.conf": "t { base { a = 1 } }\nc : t.base, t { }\n"},
			"t.base.a=1\nc.a=1\nc.base.a=1"},
		{"reference after use", mapFS{"/e/s.conf": "c : base { }\nbase { a = 1 }\n"}, "c.a=1\nbase.a=1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			root, err := parseTree(tt.files, "/e/s.conf")
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			dump(root, "", &got)
			if g := strings.Join(got, "\n"); g != tt.want {
				t.Errorf("got\n%s\nwant\n%s", g, tt.want)
			}
		})
	}
}

// TestSettingsSyntaxErrors checks that malformed files fail with the
// file and line of the problem.
func TestSettingsSyntaxErrors(t *testing.T) {
	tests := []struct {
		name  string
		files mapFS
		want  string // the error's text
	}{
		{"unclosed section", mapFS{"/e/s.conf": "a {\n b = 1\n"}, `/e/s.conf:1: section "a" is not closed`},
		{"stray close", mapFS{"/e/s.conf": "a = 1\n}\n"}, "/e/s.conf:2: unexpected }"},
		{"name alone", mapFS{"/e/s.conf": "a\nb = 1\n"}, `/e/s.conf:2: syntax error after "a": expected '=' or '{'`},
		{"dot in key", mapFS{"/e/s.conf": "a.b = 1\n"}, `/e/s.conf:1: syntax error after "a": expected '=' or '{'`},
		{"string as key", mapFS{"/e/s.conf": "\n\"a\" = 1\n"}, "/e/s.conf:2: unexpected string (quoted strings are values only)"},
		{"unterminated string", mapFS{"/e/s.conf": "a = \"x\ny\n"}, "/e/s.conf:1: unterminated string"},
		{"backslash at end", mapFS{"/e/s.conf": "a = \"x\\"}, "/e/s.conf:1: unterminated string"},
		{"comment eats brace", mapFS{"/e/s.conf": "c { id = @#01 }\n"}, `/e/s.conf:1: section "c" is not closed`},
		{"brace in value ends it", mapFS{"/e/s.conf": "c { id = {11}:#0a }\n"}, `/e/s.conf:1: syntax error at ":"`},
		{"missing include", mapFS{"/e/s.conf": "\ninclude nothere.conf\n"}, `/e/s.conf:2: include "/e/nothere.conf": file does not exist`},
		{"error in include", mapFS{"/e/s.conf": "include x.conf\n", "/e/x.conf": "\n\n}\n"}, "/e/x.conf:3: unexpected }"},
		{"include loop", mapFS{"/e/s.conf": "include s.conf\n"}, `include "s.conf": more than 10 nested includes`},
		{"missing reference", mapFS{"/e/s.conf": "\nc : nope { }\n"}, `/e/s.conf:2: section "c" references "nope", which does not exist`},
		{"reference cycle", mapFS{"/e/s.conf": "a : b { }\nb : a { }\n"}, `references itself`},
		{"reference without name", mapFS{"/e/s.conf": "a : { }\n"}, `/e/s.conf:1: section "a": reference expected after ':'`},
		{"unreadable main", mapFS{}, "/e/s.conf: cannot read: file does not exist"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := parseTree(tt.files, "/e/s.conf")
			if err == nil {
				t.Fatalf("no error, want %q", tt.want)
			}
			var e *Error
			if !errors.As(err, &e) {
				t.Fatalf("error %T %v is not an *Error", err, err)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q, want %q", err, tt.want)
			}
			if strings.Contains(err.Error(), "\n") {
				t.Errorf("error %q is more than one line", err)
			}
		})
	}
}
