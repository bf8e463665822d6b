// grants.go owns the admin grant file <sysconfdir>/minirun/capability.toml:
// its strict parser and canonical form, the writers' lock and atomic
// replace, name↔id lookups without cgo, and grantsFor (a caller's grants).
package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"
	"unicode"
	"unicode/utf8"

	"golang.org/x/sys/unix"
)

// Grant-file limits (spec/capabilities.md §5.2, spec/security.md R5 adapted
// to the [users]/[groups] schema). With them a parse is linear in the input
// and the result is small whatever the bytes.
const (
	grantFileName       = "capability.toml"
	maxGrantFileSize    = 1 << 20 // "larger than 1 MiB"
	maxGrantEntries     = 1024    // users + groups together
	maxGrantArrayItems  = 64      // items in one array, before duplicates merge
	maxGrantStringBytes = 256     // a key or a capability name, after unescaping
	maxAccountFileSize  = 16 << 20
	maxGetentOutput     = 64 << 10
)

// getentTimeout bounds one getent run (a variable only so tests can
// shorten it).
var getentTimeout = 5 * time.Second

// getentProgram is fixed at build time (-ldflags "-X main.getentProgram=...") and
// never looked up through PATH.
var getentProgram = "/usr/bin/getent"

// trustedReader reads an admin file after the R5 trust checks; a missing
// file is an error satisfying errors.Is(err, fs.ErrNotExist).
// readTrustedFile (config.go) is the real one; tests inject others.
type trustedReader func(path string, maxSize int64) ([]byte, error)

// grantFile is the parsed grant file: user and group names to capabilities.
// Entries with no capabilities are not kept.
type grantFile struct {
	Users  map[string]capSet
	Groups map[string]capSet
}

func newGrantFile() *grantFile {
	return &grantFile{Users: map[string]capSet{}, Groups: map[string]capSet{}}
}

func (g *grantFile) entries() int { return len(g.Users) + len(g.Groups) }

// isClassed reports whether err already carries a minirun error class.
func isClassed(err error) bool {
	var re *runError
	return errors.As(err, &re)
}

// grantFilePath is where the grant file lives under a sysconfdir.
func grantFilePath(sysconfdir string) string {
	return filepath.Join(sysconfdir, "minirun", grantFileName)
}

// loadGrants reads and parses the grant file through read (readTrustedFile
// in production). A missing file means no grants.
func loadGrants(path string, read trustedReader) (*grantFile, error) {
	data, err := read(path, maxGrantFileSize)
	if errors.Is(err, fs.ErrNotExist) {
		return newGrantFile(), nil
	}
	if err != nil {
		if isClassed(err) {
			return nil, err
		}
		return nil, failf(eConfig, "read grant file %s: %w", path, err)
	}
	return parseGrants(path, data)
}

// grantParser is a small TOML 1.0 reader for exactly the grant-file shape:
// [users] and [groups] tables whose keys are names and whose values are
// arrays of strings. Everything else is rejected with a line number. It
// never recurses and every step advances, so it is linear in the input.
type grantParser struct {
	path string
	b    []byte
	pos  int
	line int
}

func (p *grantParser) fail(line int, format string, args ...any) error {
	return failf(eConfig, "%s:%d: %s", p.path, line, fmt.Sprintf(format, args...))
}

// parseGrants parses grant-file bytes; path is used only in messages.
func parseGrants(path string, data []byte) (g *grantFile, err error) {
	defer func() {
		if r := recover(); r != nil {
			g, err = nil, failf(eConfig, "%s: cannot parse grant file (internal error: %v)", path, r)
		}
	}()
	if len(data) > maxGrantFileSize {
		return nil, failf(eConfig, "%s: larger than 1 MiB", path)
	}
	p := &grantParser{path: path, b: data, line: 1}
	if !utf8.Valid(data) {
		bad := 0
		for bad < len(data) {
			r, size := utf8.DecodeRune(data[bad:])
			if r == utf8.RuneError && size == 1 {
				break
			}
			bad += size
		}
		return nil, p.fail(1+bytes.Count(data[:bad], []byte("\n")), "invalid UTF-8")
	}
	if bytes.HasPrefix(data, []byte("\xef\xbb\xbf")) {
		return nil, p.fail(1, "byte order mark not allowed")
	}
	return p.parse()
}

func (p *grantParser) eof() bool { return p.pos >= len(p.b) }

func (p *grantParser) skipSpace() {
	for !p.eof() && (p.b[p.pos] == ' ' || p.b[p.pos] == '\t') {
		p.pos++
	}
}

// newline consumes "\n" or "\r\n" and reports whether it did.
func (p *grantParser) newline() bool {
	if p.eof() {
		return false
	}
	if p.b[p.pos] == '\n' {
		p.pos++
		p.line++
		return true
	}
	if p.b[p.pos] == '\r' && p.pos+1 < len(p.b) && p.b[p.pos+1] == '\n' {
		p.pos += 2
		p.line++
		return true
	}
	return false
}

func isControl(c byte) bool { return (c < 0x20 && c != '\t') || c == 0x7f }

// comment consumes a # comment up to (not including) the line end.
func (p *grantParser) comment() error {
	for p.pos++; !p.eof(); p.pos++ {
		c := p.b[p.pos]
		if c == '\n' || (c == '\r' && p.pos+1 < len(p.b) && p.b[p.pos+1] == '\n') {
			return nil
		}
		if isControl(c) {
			return p.fail(p.line, "control character in comment")
		}
	}
	return nil
}

// endOfLine accepts optional spaces and a comment, then a line end or EOF.
func (p *grantParser) endOfLine() error {
	p.skipSpace()
	if !p.eof() && p.b[p.pos] == '#' {
		if err := p.comment(); err != nil {
			return err
		}
	}
	if p.eof() || p.newline() {
		return nil
	}
	return p.fail(p.line, "unexpected text after the value")
}

// skipArraySpace skips spaces, line ends and comments inside an array.
func (p *grantParser) skipArraySpace() error {
	for !p.eof() {
		switch c := p.b[p.pos]; {
		case c == ' ' || c == '\t':
			p.pos++
		case c == '#':
			if err := p.comment(); err != nil {
				return err
			}
		case p.newline():
		default:
			return nil
		}
	}
	return nil
}

func isBareKeyChar(c byte) bool {
	return c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '_' || c == '-'
}

// key reads a bare or quoted key; dotted keys are refused by the callers.
func (p *grantParser) key() (string, error) {
	if p.eof() {
		return "", p.fail(p.line, "expected a key")
	}
	switch c := p.b[p.pos]; {
	case c == '"':
		return p.basicString()
	case c == '\'':
		return p.literalString()
	case isBareKeyChar(c):
		start := p.pos
		for !p.eof() && isBareKeyChar(p.b[p.pos]) {
			p.pos++
		}
		if p.pos-start > maxGrantStringBytes {
			return "", p.fail(p.line, "key longer than %d bytes", maxGrantStringBytes)
		}
		return string(p.b[start:p.pos]), nil
	default:
		return "", p.fail(p.line, "expected a key")
	}
}

// basicString reads a one-line "..." string with TOML escapes.
func (p *grantParser) basicString() (string, error) {
	if bytes.HasPrefix(p.b[p.pos:], []byte(`"""`)) {
		return "", p.fail(p.line, "multi-line strings are not supported")
	}
	p.pos++
	var out []byte
	for {
		if p.eof() || p.b[p.pos] == '\n' || p.b[p.pos] == '\r' {
			return "", p.fail(p.line, "unterminated string")
		}
		c := p.b[p.pos]
		switch {
		case c == '"':
			p.pos++
			return string(out), nil
		case c == '\\':
			r, err := p.escape()
			if err != nil {
				return "", err
			}
			out = utf8.AppendRune(out, r)
		case isControl(c):
			return "", p.fail(p.line, "control character in string")
		default:
			out = append(out, c)
			p.pos++
		}
		if len(out) > maxGrantStringBytes {
			return "", p.fail(p.line, "string longer than %d bytes", maxGrantStringBytes)
		}
	}
}

// escape decodes one backslash escape at p.pos (TOML 1.0 set).
func (p *grantParser) escape() (rune, error) {
	if p.pos+1 >= len(p.b) {
		return 0, p.fail(p.line, "unterminated string")
	}
	c := p.b[p.pos+1]
	p.pos += 2
	switch c {
	case 'b':
		return '\b', nil
	case 't':
		return '\t', nil
	case 'n':
		return '\n', nil
	case 'f':
		return '\f', nil
	case 'r':
		return '\r', nil
	case '"':
		return '"', nil
	case '\\':
		return '\\', nil
	case 'u', 'U':
		n := 4
		if c == 'U' {
			n = 8
		}
		if p.pos+n > len(p.b) {
			return 0, p.fail(p.line, "invalid escape")
		}
		v, err := strconv.ParseUint(string(p.b[p.pos:p.pos+n]), 16, 32)
		if err != nil || strings.ContainsAny(string(p.b[p.pos:p.pos+n]), "+-") {
			return 0, p.fail(p.line, "invalid escape")
		}
		p.pos += n
		r := rune(v)
		if v > utf8.MaxRune || (r >= 0xd800 && r <= 0xdfff) {
			return 0, p.fail(p.line, "escape is not a Unicode scalar value")
		}
		return r, nil
	default:
		return 0, p.fail(p.line, "invalid escape")
	}
}

// literalString reads a one-line '...' string (no escapes).
func (p *grantParser) literalString() (string, error) {
	if bytes.HasPrefix(p.b[p.pos:], []byte(`'''`)) {
		return "", p.fail(p.line, "multi-line strings are not supported")
	}
	p.pos++
	start := p.pos
	for {
		if p.eof() || p.b[p.pos] == '\n' || p.b[p.pos] == '\r' {
			return "", p.fail(p.line, "unterminated string")
		}
		c := p.b[p.pos]
		if c == '\'' {
			s := string(p.b[start:p.pos])
			p.pos++
			return s, nil
		}
		if isControl(c) {
			return "", p.fail(p.line, "control character in string")
		}
		p.pos++
		if p.pos-start > maxGrantStringBytes {
			return "", p.fail(p.line, "string longer than %d bytes", maxGrantStringBytes)
		}
	}
}

// capArray reads ["CAP_A", 'cap_b', ...] spread over any number of lines.
func (p *grantParser) capArray(key string) (capSet, error) {
	if p.eof() || p.b[p.pos] != '[' {
		return 0, p.fail(p.line, "value of %s must be an array of capability names", key)
	}
	open := p.line
	p.pos++
	var set capSet
	items := 0
	for {
		if err := p.skipArraySpace(); err != nil {
			return 0, err
		}
		if p.eof() {
			return 0, p.fail(open, "unterminated array")
		}
		if p.b[p.pos] == ']' {
			p.pos++
			return set, nil
		}
		var s string
		var err error
		switch p.b[p.pos] {
		case '"':
			s, err = p.basicString()
		case '\'':
			s, err = p.literalString()
		default:
			return 0, p.fail(p.line, "array elements must be capability names in quotes")
		}
		if err != nil {
			return 0, err
		}
		if items++; items > maxGrantArrayItems {
			return 0, p.fail(p.line, "more than %d items in one array", maxGrantArrayItems)
		}
		name := normaliseCapName(s)
		if name == "CAP_ALL" {
			return 0, p.fail(p.line, "\"all\" is not allowed in the grant file; list the capabilities")
		}
		c, ok := capByName(name)
		if !ok {
			return 0, p.fail(p.line, "unknown capability: %s", name)
		}
		set |= capBit(c)
		if err := p.skipArraySpace(); err != nil {
			return 0, err
		}
		if p.eof() {
			return 0, p.fail(open, "unterminated array")
		}
		switch p.b[p.pos] {
		case ',':
			p.pos++
		case ']':
			p.pos++
			return set, nil
		default:
			return 0, p.fail(p.line, "expected ',' or ']' in the array opened on line %d", open)
		}
	}
}

func (p *grantParser) parse() (*grantFile, error) {
	g := newGrantFile()
	var table map[string]capSet // nil until [users] or [groups]
	var tableName string
	seenTable := map[string]bool{}
	seenKey := map[string]bool{} // keys of the current table, including empty arrays
	entries := 0
	for {
		p.skipSpace()
		if p.eof() {
			return g, nil
		}
		switch c := p.b[p.pos]; {
		case p.newline():
		case c == '#':
			if err := p.comment(); err != nil {
				return nil, err
			}
		case c == '\r':
			return nil, p.fail(p.line, "carriage return without line feed")
		case c == '[':
			if p.pos+1 < len(p.b) && p.b[p.pos+1] == '[' {
				return nil, p.fail(p.line, "arrays of tables are not allowed")
			}
			p.pos++
			p.skipSpace()
			name, err := p.key()
			if err != nil {
				return nil, err
			}
			p.skipSpace()
			if !p.eof() && p.b[p.pos] == '.' {
				return nil, p.fail(p.line, "dotted keys are not allowed")
			}
			if p.eof() || p.b[p.pos] != ']' {
				return nil, p.fail(p.line, "expected ']' after the table name")
			}
			p.pos++
			switch name {
			case "users":
				table = g.Users
			case "groups":
				table = g.Groups
			default:
				return nil, p.fail(p.line, "unknown table [%s]: only [users] and [groups] are allowed", name)
			}
			if seenTable[name] {
				return nil, p.fail(p.line, "duplicate table [%s]", name)
			}
			seenTable[name], tableName = true, name
			seenKey = map[string]bool{}
			if err := p.endOfLine(); err != nil {
				return nil, err
			}
		default:
			name, err := p.key()
			if err != nil {
				return nil, err
			}
			p.skipSpace()
			if !p.eof() && p.b[p.pos] == '.' {
				return nil, p.fail(p.line, "dotted keys are not allowed")
			}
			if p.eof() || p.b[p.pos] != '=' {
				return nil, p.fail(p.line, "expected '=' after the key")
			}
			p.pos++
			p.skipSpace()
			if table == nil {
				return nil, p.fail(p.line, "key %s outside [users] or [groups]", quoteGrantKey(name))
			}
			if seenKey[name] {
				return nil, p.fail(p.line, "duplicate key %s in [%s]", quoteGrantKey(name), tableName)
			}
			seenKey[name] = true
			if entries++; entries > maxGrantEntries {
				return nil, p.fail(p.line, "more than %d entries", maxGrantEntries)
			}
			set, err := p.capArray(quoteGrantKey(name))
			if err != nil {
				return nil, err
			}
			if err := p.endOfLine(); err != nil {
				return nil, err
			}
			if set != 0 {
				table[name] = set
			}
		}
	}
}

// quoteGrantKey writes a key bare if it is [A-Za-z0-9_-]+, else as a TOML
// basic string.
func quoteGrantKey(k string) string {
	bare := k != ""
	for i := 0; i < len(k); i++ {
		if !isBareKeyChar(k[i]) {
			bare = false
			break
		}
	}
	if bare {
		return k
	}
	var b strings.Builder
	b.WriteByte('"')
	for _, r := range k {
		switch {
		case r == '"':
			b.WriteString(`\"`)
		case r == '\\':
			b.WriteString(`\\`)
		case r == '\b':
			b.WriteString(`\b`)
		case r == '\t':
			b.WriteString(`\t`)
		case r == '\n':
			b.WriteString(`\n`)
		case r == '\f':
			b.WriteString(`\f`)
		case r == '\r':
			b.WriteString(`\r`)
		case r < 0x20 || r == 0x7f:
			fmt.Fprintf(&b, `\u%04X`, r)
		default:
			b.WriteRune(r)
		}
	}
	b.WriteByte('"')
	return b.String()
}

// canonical is the text minirun writes: [users] then [groups], keys in byte
// order, capabilities by number, empty tables left out, "" for no entries.
func (g *grantFile) canonical() []byte {
	var b bytes.Buffer
	for _, t := range []struct {
		name    string
		entries map[string]capSet
	}{{"users", g.Users}, {"groups", g.Groups}} {
		keys := sortedGrantKeys(t.entries)
		if len(keys) == 0 {
			continue
		}
		if b.Len() > 0 {
			b.WriteByte('\n')
		}
		b.WriteString("[" + t.name + "]\n")
		for _, k := range keys {
			b.WriteString(quoteGrantKey(k) + " = [")
			for i, n := range t.entries[k].names() {
				if i > 0 {
					b.WriteString(", ")
				}
				b.WriteString(`"` + n + `"`)
			}
			b.WriteString("]\n")
		}
	}
	return b.Bytes()
}

// sortedGrantKeys lists the names with a non-empty grant in byte order.
func sortedGrantKeys(m map[string]capSet) []string {
	keys := make([]string, 0, len(m))
	for k, v := range m {
		if v != 0 {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	return keys
}

// validAccountName is false for names that can never be looked up safely
// (spec/capabilities.md §5.4 rule 3); such names are treated as not existing.
func validAccountName(name string) bool {
	if name == "" || name[0] == '-' || len(name) > maxGrantStringBytes || !utf8.ValidString(name) {
		return false
	}
	for _, r := range name {
		if r == ':' || unicode.IsSpace(r) || unicode.IsControl(r) {
			return false
		}
	}
	return true
}

// getentFunc runs `getent DATABASE KEY` and returns its stdout and exit
// status; err means it could not be run or did not finish properly.
type getentFunc func(database, key string) (stdout []byte, status int, err error)

// newGetent returns a getentFunc that runs getentProgram (never via PATH) with
// only PATH and LC_ALL in the environment, stdin /dev/null, stderr
// discarded, stdout capped at 64 KiB, a 5 s timeout, and cred as its
// credentials (nil: inherit this process's).
//
// Who getent runs as is the launch's decision. The spec
// (capabilities.md §5.4) says uid 0/gid 0 with no supplementary groups
// (&syscall.Credential{Uid: 0, Gid: 0, Groups: []uint32{}}): then the
// caller cannot ptrace it and forge its answer. Running it with the
// caller's credentials instead lets the caller trace the child and rewrite
// the names it reports, i.e. claim another user's or group's grants; if
// that is chosen, the answer must not be trusted for grants.
func newGetent(cred *syscall.Credential) getentFunc {
	return func(database, key string) ([]byte, int, error) {
		ctx, cancel := context.WithTimeout(context.Background(), getentTimeout)
		defer cancel()
		cmd := exec.CommandContext(ctx, getentProgram, database, key)
		cmd.Path = getentProgram // absolute, so no PATH lookup happened
		cmd.Args = []string{getentProgram, database, key}
		cmd.Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL=C"}
		cmd.Dir = "/"
		out := &cappedBuffer{max: maxGetentOutput}
		cmd.Stdout = out
		cmd.WaitDelay = time.Second
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
		err := cmd.Run()
		switch {
		case out.over:
			return nil, 0, fmt.Errorf("%s: output larger than %d bytes", getentProgram, maxGetentOutput)
		case ctx.Err() != nil:
			return nil, 0, fmt.Errorf("%s: timed out after %s", getentProgram, getentTimeout)
		}
		var exitErr *exec.ExitError
		if errors.As(err, &exitErr) && exitErr.ExitCode() >= 0 {
			return out.b.Bytes(), exitErr.ExitCode(), nil
		}
		if err != nil {
			return nil, 0, fmt.Errorf("run %s: %w", getentProgram, err)
		}
		return out.b.Bytes(), 0, nil
	}
}

// cappedBuffer keeps at most max bytes and fails the write beyond that.
type cappedBuffer struct {
	b    bytes.Buffer
	max  int
	over bool
}

func (c *cappedBuffer) Write(p []byte) (int, error) {
	if c.b.Len()+len(p) > c.max {
		c.over = true
		return 0, errors.New("output too large")
	}
	return c.b.Write(p)
}

// errNameUnresolved marks a lookup that neither found nor ruled out a name
// (getent failed); grants then fail closed.
var errNameUnresolved = errors.New("name service lookup failed")

// nameLookup resolves user and group names without cgo: /etc/passwd and
// /etc/group read through the trust checks, then getent for NSS sources.
// It caches the files for its lifetime, so use one per command.
type nameLookup struct {
	passwdPath, groupPath string
	read                  trustedReader
	getent                getentFunc // nil: no NSS fallback
	files                 map[string][]byte
}

// newNameLookup reads the real account files with readTrustedFile; getent
// may be nil to use the files only.
func newNameLookup(getent getentFunc) *nameLookup {
	return &nameLookup{passwdPath: "/etc/passwd", groupPath: "/etc/group", read: readTrustedFile, getent: getent}
}

// accountDB describes /etc/passwd or /etc/group.
type accountDB struct {
	database string // getent's name
	fields   int    // fields per line
}

var (
	passwdDB = accountDB{"passwd", 7}
	groupDB  = accountDB{"group", 4}
)

func (n *nameLookup) file(db accountDB) ([]byte, error) {
	path := n.passwdPath
	if db.database == "group" {
		path = n.groupPath
	}
	if b, ok := n.files[path]; ok {
		return b, nil
	}
	b, err := n.read(path, maxAccountFileSize)
	if errors.Is(err, fs.ErrNotExist) {
		b, err = nil, nil
	}
	if err != nil {
		if isClassed(err) {
			return nil, err
		}
		return nil, failf(eConfig, "read %s: %w", path, err)
	}
	if n.files == nil {
		n.files = map[string][]byte{}
	}
	n.files[path] = b
	return b, nil
}

// accountEntry splits one well-formed line into name and id.
func accountEntry(line string, db accountDB) (name string, id uint32, ok bool) {
	line = strings.TrimSuffix(line, "\r")
	if line == "" || line[0] == '#' || line[0] == '+' || line[0] == '-' {
		return "", 0, false
	}
	f := strings.Split(line, ":")
	if len(f) != db.fields || !validAccountName(f[0]) {
		return "", 0, false
	}
	v, err := strconv.ParseUint(f[2], 10, 32)
	if err != nil || v == 1<<32-1 {
		return "", 0, false
	}
	return f[0], uint32(v), true
}

// lookup finds the first entry whose name (byName) or id equals key.
func (n *nameLookup) lookup(db accountDB, key string, byName bool) (name string, found bool, err error) {
	data, err := n.file(db)
	if err != nil {
		return "", false, err
	}
	matches := func(name string, id uint32) bool {
		if byName {
			return name == key
		}
		return strconv.FormatUint(uint64(id), 10) == key
	}
	for _, line := range strings.Split(string(data), "\n") {
		if name, id, ok := accountEntry(line, db); ok && matches(name, id) {
			return name, true, nil
		}
	}
	if n.getent == nil {
		return "", false, nil
	}
	out, status, err := n.getent(db.database, key)
	switch {
	case err != nil:
		return "", false, fmt.Errorf("getent %s %s: %w: %w", db.database, key, errNameUnresolved, err)
	case status == 2:
		return "", false, nil
	case status != 0:
		return "", false, fmt.Errorf("getent %s %s: exit status %d: %w", db.database, key, status, errNameUnresolved)
	}
	text := strings.TrimSuffix(string(out), "\n")
	if !strings.Contains(text, "\n") {
		if name, id, ok := accountEntry(text, db); ok && matches(name, id) {
			return name, true, nil
		}
	}
	return "", false, fmt.Errorf("getent %s %s: unexpected output: %w", db.database, key, errNameUnresolved)
}

func idKey(id int) (string, bool) {
	if id < 0 || int64(id) >= 1<<32-1 {
		return "", false
	}
	return strconv.Itoa(id), true
}

// userName names a uid; found is false when no source knows it.
func (n *nameLookup) userName(uid int) (string, bool, error) {
	key, ok := idKey(uid)
	if !ok {
		return "", false, nil
	}
	return n.lookup(passwdDB, key, false)
}

// groupName names a gid; found is false when no source knows it.
func (n *nameLookup) groupName(gid int) (string, bool, error) {
	key, ok := idKey(gid)
	if !ok {
		return "", false, nil
	}
	return n.lookup(groupDB, key, false)
}

// userExists reports whether a user name exists (admin commands).
func (n *nameLookup) userExists(name string) (bool, error) {
	if !validAccountName(name) {
		return false, nil
	}
	_, found, err := n.lookup(passwdDB, name, true)
	return found, err
}

// groupExists reports whether a group name exists (admin commands).
func (n *nameLookup) groupExists(name string) (bool, error) {
	if !validAccountName(name) {
		return false, nil
	}
	_, found, err := n.lookup(groupDB, name, true)
	return found, err
}

// grantsFor is G: the union of the grants to uid's user name and to the
// names of every gid in gids. Pass the real gid and getgroups() (the
// kernel's list, never /etc/group membership). Ids that cannot be named are
// skipped (fail closed: fewer grants); an untrustworthy account file is an
// error.
func grantsFor(uid int, gids []int, grants *grantFile, names *nameLookup) (capSet, error) {
	if grants == nil {
		return 0, nil
	}
	var g capSet
	if len(grants.Users) > 0 {
		name, found, err := names.userName(uid)
		if err != nil && !errors.Is(err, errNameUnresolved) {
			return 0, err
		}
		if found {
			g |= grants.Users[name]
		}
	}
	if len(grants.Groups) > 0 {
		done := map[int]bool{}
		for _, gid := range gids {
			if done[gid] {
				continue
			}
			done[gid] = true
			name, found, err := names.groupName(gid)
			if err != nil && !errors.Is(err, errNameUnresolved) {
				return 0, err
			}
			if found {
				g |= grants.Groups[name]
			}
		}
	}
	return g, nil
}

// updateGrants is the only way the grant file changes (spec §6 "Atomic
// write"): under an exclusive flock on capability.toml.lock in dir it reads
// and checks the current file, lets change edit it, and, if change reports
// a change, replaces the file atomically. Racing writers serialise on the
// lock, so no update is lost; readers never need the lock.
func updateGrants(dir string, read trustedReader, change func(g *grantFile) (changed bool, err error)) error {
	dirfd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return failf(eConfig, "open %s: %w", dir, err)
	}
	defer unix.Close(dirfd)
	unlock, err := lockGrants(dir, dirfd)
	if err != nil {
		return err
	}
	defer unlock()
	removeStrayTemps(dir, dirfd)

	g, err := loadGrants(filepath.Join(dir, grantFileName), read)
	if err != nil {
		return err
	}
	changed, err := change(g)
	if err != nil || !changed {
		return err
	}
	if g.entries() > maxGrantEntries {
		return failf(eResource, "%s: would hold more than %d entries", filepath.Join(dir, grantFileName), maxGrantEntries)
	}
	return replaceGrantFile(dir, dirfd, g.canonical())
}

// lockGrants takes the writers' lock; the returned func releases it.
func lockGrants(dir string, dirfd int) (func(), error) {
	lockName := grantFileName + ".lock"
	lockPath := filepath.Join(dir, lockName)
	fd, err := unix.Openat(dirfd, lockName, unix.O_CREAT|unix.O_RDWR|unix.O_NOFOLLOW|unix.O_CLOEXEC|unix.O_NONBLOCK, 0o600)
	if err != nil {
		if errors.Is(err, unix.ELOOP) {
			return nil, failf(eConfig, "%s: symbolic link not allowed", lockPath)
		}
		return nil, failf(eConfig, "open lock file %s: %w", lockPath, err)
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		unix.Close(fd)
		return nil, failf(eSystem, "fstat %s: %w", lockPath, err)
	}
	switch {
	case st.Mode&unix.S_IFMT != unix.S_IFREG:
		unix.Close(fd)
		return nil, failf(eConfig, "%s: not a regular file", lockPath)
	case st.Uid != 0:
		unix.Close(fd)
		return nil, failf(eConfig, "%s: must be owned by root", lockPath)
	}
	for {
		err = unix.Flock(fd, unix.LOCK_EX)
		if err != unix.EINTR {
			break
		}
	}
	if err != nil {
		unix.Close(fd)
		return nil, failf(eSystem, "lock %s: %w", lockPath, err)
	}
	return func() { unix.Close(fd) }, nil // closing the last descriptor releases the flock
}

// removeStrayTemps deletes temp files a crashed writer left. Only writers
// holding the lock create them, so any that exist now are abandoned.
func removeStrayTemps(dir string, dirfd int) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return
	}
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), grantFileName+".tmp.") {
			unix.Unlinkat(dirfd, e.Name(), 0)
		}
	}
}

// replaceGrantFile writes text to a new temp file in the same directory,
// makes it root:root 0644 and durable, renames it over the grant file and
// syncs the directory. On any error the temp file is removed and the old
// file is untouched.
func replaceGrantFile(dir string, dirfd int, text []byte) (err error) {
	var rnd [8]byte
	if _, err := rand.Read(rnd[:]); err != nil {
		return failf(eSystem, "random temp name: %w", err)
	}
	tmp := grantFileName + ".tmp." + hex.EncodeToString(rnd[:])
	tmpPath := filepath.Join(dir, tmp)
	fd, err := unix.Openat(dirfd, tmp, unix.O_CREAT|unix.O_EXCL|unix.O_WRONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o644)
	if err != nil {
		return failf(eSystem, "create %s: %w", tmpPath, err)
	}
	closed := false
	defer func() {
		if !closed {
			unix.Close(fd)
		}
		if err != nil {
			unix.Unlinkat(dirfd, tmp, 0)
		}
	}()
	for rest := text; len(rest) > 0; {
		n, werr := unix.Write(fd, rest)
		if werr == unix.EINTR {
			continue
		}
		if werr != nil {
			return failf(eSystem, "write %s: %w", tmpPath, werr)
		}
		rest = rest[n:]
	}
	if err := unix.Fchown(fd, 0, 0); err != nil {
		return failf(eSystem, "chown %s: %w", tmpPath, err)
	}
	if err := unix.Fchmod(fd, 0o644); err != nil {
		return failf(eSystem, "chmod %s: %w", tmpPath, err)
	}
	if err := unix.Fsync(fd); err != nil {
		return failf(eSystem, "fsync %s: %w", tmpPath, err)
	}
	closed = true
	if err := unix.Close(fd); err != nil {
		return failf(eSystem, "close %s: %w", tmpPath, err)
	}
	if err := unix.Renameat(dirfd, tmp, dirfd, grantFileName); err != nil {
		return failf(eSystem, "rename %s over %s: %w", tmpPath, grantFileName, err)
	}
	if err := unix.Fsync(dirfd); err != nil {
		// The new file is in place; only its durability is in doubt.
		return failf(eSystem, "fsync %s: %w", dir, err)
	}
	return nil
}
