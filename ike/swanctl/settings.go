package swanctl

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/ipsecstack/ipsecstack/ike/config"
)

// This file is strongSwan's settings syntax (the format of strongswan.conf
// and swanctl.conf), as its flex lexer and bison grammar define it
// (src/libstrongswan/settings/settings_lexer.l and settings_parser.y,
// strongSwan 5.9.8):
//
//   - `name { ... }` opens a section; sections of the same name in the
//     same parent are merged; `name : a.b, c { ... }` also inherits the
//     settings and subsections of the sections a.b and c (paths from the
//     root) that it does not set itself.
//   - `key = value` ends at a newline, `#` or `}`. A value is one or more
//     words or "quoted strings" joined by one space; a quoted string may
//     span lines and knows \n, \r, \t, \<newline> (nothing) and \<any>.
//     `key =` with nothing unsets the key. A later key overrides an
//     earlier one of the same name.
//   - `#` starts a comment anywhere outside a quoted string.
//   - `include pattern` reads the files that the glob pattern matches
//     (relative patterns are relative to the including file) as if they
//     were written in place, in the current section.
//
// Deliberate differences, both in favour of saying so: strongSwan skips an
// include whose file cannot be opened, and ignores a reference to a
// missing section; here a pattern without glob characters that names no
// file, and a missing referenced section, are errors. A glob that matches
// nothing is fine (swanctl.conf's own `include conf.d/*.conf`).

// maxIncludeDepth bounds nested includes, so a file that includes itself
// ends with an error instead of exhausting the stack.
const maxIncludeDepth = 10

// section is a parsed settings section.
type section struct {
	name string
	pos  config.Pos
	// keys in first-set order; a later setting of the same key replaces
	// the value and position in place (strongSwan's settings_kv_t).
	keys     []*setting
	sections []*section
	refs     []ref
	resolved bool
}

// setting is one `key = value`.
type setting struct {
	key   string
	value string
	// unset is `key =` without a value: strongSwan keeps the key but its
	// enumerators skip it, so it reads as never set.
	unset bool
	pos   config.Pos
}

// ref is one `: path` reference of a section.
type ref struct {
	path string
	pos  config.Pos
}

func (s *section) key(name string) *setting {
	for _, k := range s.keys {
		if k.key == name {
			return k
		}
	}
	return nil
}

func (s *section) sub(name string) *section {
	for _, c := range s.sections {
		if c.name == name {
			return c
		}
	}
	return nil
}

func (s *section) set(k *setting) {
	if old := s.key(k.key); old != nil {
		*old = *k
		return
	}
	s.keys = append(s.keys, k)
}

// settingsKeys returns the keys that are set (not unset), in order.
func (s *section) settingsKeys() []*setting {
	var out []*setting
	for _, k := range s.keys {
		if !k.unset {
			out = append(out, k)
		}
	}
	return out
}

// Error is a configuration error: where and what. Its text is one line,
// "file:line: what", and never contains key material.
type Error struct {
	Pos config.Pos
	Msg string
}

// Error formats the error as "file:line: what".
func (e *Error) Error() string {
	if e.Pos.File == "" {
		return e.Msg
	}
	if e.Pos.Line == 0 {
		return e.Pos.File + ": " + e.Msg
	}
	return e.Pos.String() + ": " + e.Msg
}

func errAt(p config.Pos, format string, args ...any) *Error {
	return &Error{Pos: p, Msg: fmt.Sprintf(format, args...)}
}

// Limits on what is read: a configuration file, and a certificate or key.
const (
	maxConfigFile = 16 << 20
	maxCredFile   = 1 << 20
)

// readRegular reads a regular file of at most max bytes: like strongSwan
// (which skips anything but regular files), so that a path like
// /dev/zero or a FIFO cannot hang the loader.
func readRegular(name string, max int64) ([]byte, error) {
	f, err := os.Open(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !st.Mode().IsRegular() {
		return nil, &os.PathError{Op: "open", Path: name, Err: errors.New("not a regular file")}
	}
	if st.Size() > max {
		return nil, &os.PathError{Op: "open", Path: name, Err: fmt.Errorf("larger than %d bytes", max)}
	}
	return io.ReadAll(io.LimitReader(f, max+1))
}

// fileSystem is how files are read: the OS normally, a map in tests of
// syntax alone.
type fileSystem interface {
	ReadFile(name string) ([]byte, error)
	Glob(pattern string) ([]string, error)
}

type osFS struct{}

func (osFS) ReadFile(name string) ([]byte, error)  { return readRegular(name, maxConfigFile) }
func (osFS) Glob(pattern string) ([]string, error) { return filepath.Glob(pattern) }

// tokKind is a token of the settings grammar.
type tokKind uint8

const (
	tokEOF     tokKind = iota
	tokName            // a NAME (a key, a section name, a reference path)
	tokOpen            // {
	tokClose           // }
	tokColon           // :
	tokComma           // , (in references)
	tokEq              // = followed by a value (always emitted with tokValue)
	tokInclude         // include pattern
	tokOther           // anything the grammar has no place for (".", a stray quote)
)

type token struct {
	kind tokKind
	text string // the name, the value, the include pattern, the stray text
	line int
	// unset marks a `key =` without value.
	unset bool
}

// lexer turns one file's bytes into tokens, with the states of
// settings_lexer.l folded into the token functions.
type lexer struct {
	file string
	src  []byte
	off  int
	line int
}

// isNameByte is the NAME class of settings_lexer.l: [^#{}:.,="\r\n\t ].
func isNameByte(c byte) bool {
	switch c {
	case '#', '{', '}', ':', '.', ',', '=', '"', '\r', '\n', '\t', ' ':
		return false
	}
	return true
}

func (l *lexer) errf(line int, format string, args ...any) *Error {
	return errAt(config.Pos{File: l.file, Line: line}, format, args...)
}

// skipBlank skips blanks, newlines (counting lines) and comments, which
// separate the tokens of the INITIAL and ref states.
func (l *lexer) skipBlank() {
	for l.off < len(l.src) {
		switch l.src[l.off] {
		case ' ', '\t', '\r':
			l.off++
		case '\n':
			l.off++
			l.line++
		case '#':
			l.skipComment()
		default:
			return
		}
	}
}

func (l *lexer) skipComment() {
	for l.off < len(l.src) && l.src[l.off] != '\n' {
		l.off++
	}
}

// next returns the next token of the INITIAL state.
func (l *lexer) next() (token, error) {
	for l.skipBlank(); l.off < len(l.src); l.skipBlank() {
		c := l.src[l.off]
		switch {
		case c == '{':
			l.off++
			return token{kind: tokOpen, line: l.line}, nil
		case c == '}':
			l.off++
			return token{kind: tokClose, line: l.line}, nil
		case c == ',':
			l.off++
			return token{kind: tokComma, line: l.line}, nil
		case c == ':':
			l.off++
			return token{kind: tokColon, line: l.line}, nil
		case c == '=':
			l.off++
			line := l.line
			v, unset, err := l.value()
			if err != nil {
				return token{}, err
			}
			return token{kind: tokEq, text: v, unset: unset, line: line}, nil
		case c == '"':
			return token{kind: tokOther, text: `"`, line: l.line}, l.errf(l.line, "unexpected string (quoted strings are values only)")
		case c == '.':
			l.off++
			return token{kind: tokOther, text: ".", line: l.line}, nil
		default:
			start := l.off
			for l.off < len(l.src) && isNameByte(l.src[l.off]) {
				l.off++
			}
			name := string(l.src[start:l.off])
			if name == "include" && l.isInclude() {
				line := l.line
				p, err := l.includePattern()
				if err != nil {
					return token{}, err
				}
				return token{kind: tokInclude, text: p, line: line}, nil
			}
			return token{kind: tokName, text: name, line: l.line}, nil
		}
	}
	return token{kind: tokEOF, line: l.line}, nil
}

// isInclude is the lexer's `"include"[\t ]+/[^=]`: blanks follow and then
// something that is not "=" (so `include = x` stays a setting).
func (l *lexer) isInclude() bool {
	i := l.off
	for i < len(l.src) && (l.src[i] == ' ' || l.src[i] == '\t') {
		i++
	}
	return i > l.off && i < len(l.src) && l.src[i] != '='
}

// refName reads a reference path in the ref state: {NAME}+(\.{NAME}+)*.
func (l *lexer) refName() (token, error) {
	for l.skipBlank(); l.off < len(l.src); l.skipBlank() {
		c := l.src[l.off]
		switch {
		case c == ',':
			l.off++
			return token{kind: tokComma, line: l.line}, nil
		case isNameByte(c):
			start := l.off
			for l.off < len(l.src) && (isNameByte(l.src[l.off]) || l.src[l.off] == '.') {
				l.off++
			}
			return token{kind: tokName, text: string(l.src[start:l.off]), line: l.line}, nil
		default:
			return l.next()
		}
	}
	return token{kind: tokEOF, line: l.line}, nil
}

// value reads the val state after "=": words and quoted strings up to a
// newline, "#" or "}" (which are left for the INITIAL state), joined by
// one space.
func (l *lexer) value() (string, bool, error) {
	var parts []string
	for l.off < len(l.src) {
		c := l.src[l.off]
		switch c {
		case '\r', ' ', '\t':
			l.off++
			continue
		case '\n', '#', '}':
			return strings.Join(parts, " "), len(parts) == 0, nil
		case '"':
			l.off++
			s, err := l.str()
			if err != nil {
				return "", false, err
			}
			parts = append(parts, s)
			continue
		}
		start := l.off
		for l.off < len(l.src) {
			c := l.src[l.off]
			if c == '#' || c == '}' || c == '"' || c == '\r' || c == '\n' || c == '\t' || c == ' ' {
				break
			}
			l.off++
		}
		parts = append(parts, string(l.src[start:l.off]))
	}
	return strings.Join(parts, " "), len(parts) == 0, nil
}

// str reads a quoted string after its opening quote (the str state).
func (l *lexer) str() (string, error) {
	line := l.line
	var b strings.Builder
	for l.off < len(l.src) {
		c := l.src[l.off]
		l.off++
		switch c {
		case '"':
			return b.String(), nil
		case '\r':
		case '\n':
			l.line++
			b.WriteByte('\n')
		case '\\':
			if l.off >= len(l.src) {
				return "", l.errf(line, "unterminated string")
			}
			e := l.src[l.off]
			l.off++
			switch e {
			case 'n':
				b.WriteByte('\n')
			case 'r':
				b.WriteByte('\r')
			case 't':
				b.WriteByte('\t')
			case '\n':
				l.line++ // an escaped end of line joins the lines
			case '\r':
				if l.off < len(l.src) && l.src[l.off] == '\n' {
					l.off++
					l.line++
				} else {
					b.WriteByte('\r')
				}
			default:
				b.WriteByte(e)
			}
		default:
			b.WriteByte(c)
		}
	}
	return "", l.errf(line, "unterminated string")
}

// includePattern reads the inc state: a pattern up to a blank, newline,
// "#" or "}", with \", \#, \} and \<space> escapes, or a quoted string.
func (l *lexer) includePattern() (string, error) {
	for l.off < len(l.src) && (l.src[l.off] == ' ' || l.src[l.off] == '\t') {
		l.off++
	}
	var b strings.Builder
	for l.off < len(l.src) {
		c := l.src[l.off]
		switch c {
		case '\r':
			l.off++
		case '\n', '#', '}':
			return b.String(), nil
		case '\t', ' ':
			l.off++
			return b.String(), nil
		case '"':
			l.off++
			s, err := l.str()
			if err != nil {
				return "", err
			}
			b.WriteString(s)
			return b.String(), nil
		case '\\':
			l.off++
			if l.off < len(l.src) && strings.IndexByte("\"#} ", l.src[l.off]) >= 0 {
				b.WriteByte(l.src[l.off])
				l.off++
			} else {
				b.WriteByte('\\')
			}
		default:
			b.WriteByte(c)
			l.off++
		}
	}
	return b.String(), nil
}

// parser builds the section tree from one or more files.
type parser struct {
	fs    fileSystem
	depth int
}

// parseFile parses file into sec (the root or, for an include, the
// section the include statement is in).
func (p *parser) parseFile(file string, sec *section) error {
	data, err := p.fs.ReadFile(file)
	if err != nil {
		return &Error{Pos: config.Pos{File: file}, Msg: "cannot read: " + pathErr(err)}
	}
	return p.parseBytes(file, data, sec)
}

func pathErr(err error) string {
	if pe, ok := err.(*os.PathError); ok {
		return pe.Err.Error()
	}
	return err.Error()
}

func (p *parser) parseBytes(file string, data []byte, root *section) error {
	l := &lexer{file: file, src: data, line: 1}
	stack := []*section{root}
	for {
		t, err := l.next()
		if err != nil {
			return err
		}
		cur := stack[len(stack)-1]
		switch t.kind {
		case tokEOF:
			if len(stack) > 1 {
				s := stack[len(stack)-1]
				return l.errf(s.pos.Line, "section %q is not closed", s.name)
			}
			return nil
		case tokClose:
			if len(stack) == 1 {
				return l.errf(t.line, "unexpected }")
			}
			stack = stack[:len(stack)-1]
		case tokInclude:
			if err := p.include(l, t, cur); err != nil {
				return err
			}
		case tokName:
			name := t.text
			t2, err := l.next()
			if err != nil {
				return err
			}
			switch t2.kind {
			case tokEq:
				cur.set(&setting{key: name, value: t2.text, unset: t2.unset, pos: config.Pos{File: file, Line: t.line}})
			case tokOpen:
				stack = append(stack, p.open(cur, name, config.Pos{File: file, Line: t.line}))
			case tokColon:
				var refs []ref
				for {
					r, err := l.refName()
					if err != nil {
						return err
					}
					if r.kind != tokName {
						return l.errf(r.line, "section %q: reference expected after ':'", name)
					}
					refs = append(refs, ref{path: r.text, pos: config.Pos{File: file, Line: r.line}})
					sep, err := l.refName()
					if err != nil {
						return err
					}
					if sep.kind == tokComma {
						continue
					}
					if sep.kind != tokOpen {
						return l.errf(sep.line, "section %q: '{' expected after its references", name)
					}
					break
				}
				s := p.open(cur, name, config.Pos{File: file, Line: t.line})
				s.refs = append(s.refs, refs...)
				stack = append(stack, s)
			default:
				return l.errf(t2.line, "syntax error after %q: expected '=' or '{'", name)
			}
		default:
			what := map[tokKind]string{tokOpen: "{", tokColon: ":", tokComma: ",", tokEq: "="}[t.kind]
			if what == "" {
				what = t.text
			}
			return l.errf(t.line, "syntax error at %q", what)
		}
	}
}

// open returns the subsection name of cur, merging with an existing one.
func (p *parser) open(cur *section, name string, pos config.Pos) *section {
	if s := cur.sub(name); s != nil {
		return s
	}
	s := &section{name: name, pos: pos}
	cur.sections = append(cur.sections, s)
	return s
}

func hasGlobMeta(s string) bool { return strings.ContainsAny(s, "*?[") }

func (p *parser) include(l *lexer, t token, cur *section) error {
	pos := config.Pos{File: l.file, Line: t.line}
	if t.text == "" {
		return errAt(pos, "include without a pattern")
	}
	if p.depth >= maxIncludeDepth {
		return errAt(pos, "include %q: more than %d nested includes", t.text, maxIncludeDepth)
	}
	pat := t.text
	if !filepath.IsAbs(pat) {
		pat = filepath.Join(filepath.Dir(l.file), pat)
	}
	var files []string
	if hasGlobMeta(pat) {
		m, err := p.fs.Glob(pat)
		if err != nil {
			return errAt(pos, "include %q: %v", t.text, err)
		}
		sort.Strings(m) // glob(3) sorts too
		files = m
	} else {
		files = []string{pat}
	}
	p.depth++
	defer func() { p.depth-- }()
	for _, f := range files {
		data, err := p.fs.ReadFile(f)
		if err != nil {
			return errAt(pos, "include %q: %s", f, pathErr(err))
		}
		if err := p.parseBytes(f, data, cur); err != nil {
			return err
		}
	}
	return nil
}

// resolve applies the references of every section below root: a section
// gets the settings and subsections of the sections it references that it
// does not have itself (settings.c looks in the section first and then in
// its references, in order).
func resolve(root *section) error {
	var visit func(s *section, active map[*section]bool) error
	visit = func(s *section, active map[*section]bool) error {
		if s.resolved {
			return nil
		}
		if active[s] {
			return errAt(s.pos, "section %q references itself", s.name)
		}
		active[s] = true
		defer delete(active, s)
		// Subsections first: a subsection's own references come before
		// what it inherits through its parent's references.
		for _, c := range s.sections {
			if err := visit(c, active); err != nil {
				return err
			}
		}
		for _, r := range s.refs {
			t := lookupPath(root, r.path)
			if t == nil {
				return errAt(r.pos, "section %q references %q, which does not exist", s.name, r.path)
			}
			if err := visit(t, active); err != nil {
				return err
			}
			inherit(s, t)
		}
		s.resolved = true
		return nil
	}
	return visit(root, map[*section]bool{})
}

// inherit copies into s what t has and s does not, recursively; the
// copies keep their positions, so errors point at where they were written.
func inherit(s, t *section) {
	for _, k := range t.keys {
		if s.key(k.key) == nil {
			c := *k
			s.keys = append(s.keys, &c)
		}
	}
	for _, tc := range t.sections {
		sc := s.sub(tc.name)
		if sc == nil {
			sc = &section{name: tc.name, pos: tc.pos, resolved: true}
			s.sections = append(s.sections, sc)
		}
		inherit(sc, tc)
	}
}

func lookupPath(root *section, path string) *section {
	s := root
	for _, n := range strings.Split(path, ".") {
		if s = s.sub(n); s == nil {
			return nil
		}
	}
	return s
}
