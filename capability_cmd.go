// capability_cmd.go owns `minirun capability add|drop|list|avail|import`,
// the admin commands that edit and show the grant file
// (spec/capabilities.md §6). Every change goes through updateGrants.
package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

const capabilityUsage = `Usage: minirun capability COMMAND [ARGS]

Manage which capabilities users and groups may request with --add-caps.
The grants live in %s.

Commands:
  add (--user U | --group G) CAPS    grant CAPS to a user or group (root only)
  drop (--user U | --group G) CAPS   revoke CAPS; "all" deletes the entry (root only)
  list [NAME]                        print the grant-file entries, or those for NAME
  avail [CAPS]                       describe capabilities and whether this host has them
  import FILE                        merge an Apptainer capability.json (root only)

CAPS is a comma-separated list of names in any case, with or without CAP_,
or "all". Run 'minirun capability COMMAND --help' for details.

A grant gives real capabilities on the host: there is no user namespace.
SYS_ADMIN, SYS_MODULE, SYS_RAWIO, SYS_PTRACE, DAC_OVERRIDE, DAC_READ_SEARCH,
SETUID, SETGID, CHOWN, FOWNER, SETFCAP and BPF each let a user become root.
`

var capabilitySubUsage = []textPair{
	{"add", `Usage: minirun capability add (--user U | --group G) CAPS

Grant the capabilities in CAPS to user U or group G (root only). CAPS is a
comma-separated list (any case, CAP_ optional); "all" means all 41 named
capabilities. Capabilities already granted give a warning; when nothing
changes the file is not rewritten.

Options:
  -u, --user U    the user name
  -g, --group G   the group name
`},
	{"drop", `Usage: minirun capability drop (--user U | --group G) CAPS

Revoke the capabilities in CAPS from user U or group G (root only). An entry
left empty is deleted; "all" deletes the entry. An entry of an account that
no longer exists can still be dropped.

Options:
  -u, --user U    the user name
  -g, --group G   the group name
`},
	{"list", `Usage: minirun capability list [NAME]

Print the grant-file entries, one line each ("user alice: CAP_NET_RAW"),
users first, then groups, sorted by name. With NAME, only the entries for
that user or group name. It does not combine a user's group grants.
`},
	{"avail", `Usage: minirun capability avail [CAPS]

Describe capabilities: number, name, whether this host lets minirun hold
it (yes/no), and what it allows. Without CAPS, or with "all", every
capability the kernel knows.
`},
	{"import", `Usage: minirun capability import FILE

Merge an Apptainer capability.json ({"users": {NAME: [CAPS]}, "groups":
{NAME: [CAPS]}}) into the grant file (root only). Names that do not exist on
this host are skipped with a warning; nothing is written if FILE has an
error.
`},
}

// capCmdEnv is everything the commands touch, so tests can run them on a
// temporary directory with their own account files.
type capCmdEnv struct {
	dir            string // <sysconfdir>/minirun
	stdout, stderr io.Writer
	realUID        int
	read           trustedReader
	names          *nameLookup
	host           func() (last int, h capSet, err error)
	dropPrivileges func() error // list, avail: become the caller; nil to skip
}

// capabilityCommand runs `minirun capability ARGS` with the grant file under
// sysconfdir. Errors are classed; the caller prints them and exits 255.
func capabilityCommand(args []string, sysconfdir string) error {
	env := &capCmdEnv{
		dir:     filepath.Join(sysconfdir, "minirun"),
		stdout:  os.Stdout,
		stderr:  stderrWriter{},
		realUID: os.Getuid(),
		read:    readTrustedFile,
		// add, drop and import run as real root, so getent runs as root
		// with no supplementary groups, as spec §5.4 asks.
		names: newNameLookup(newGetent(&syscall.Credential{Uid: 0, Gid: 0, Groups: []uint32{}})),
		host: func() (int, capSet, error) {
			last, err := lastCap()
			if err != nil {
				return 0, 0, err
			}
			h, err := hostAvailable(last)
			return last, h, err
		},
		dropPrivileges: dropToRealIDs,
	}
	return env.run(args)
}

// dropToRealIDs gives up the setuid identity for good (all threads).
func dropToRealIDs() error {
	if os.Getuid() == 0 {
		return nil // root gives up nothing by becoming itself
	}
	return becomeCaller(os.Getuid(), os.Getgid(), nil, false)
}

func (e *capCmdEnv) grantPath() string { return filepath.Join(e.dir, grantFileName) }

func (e *capCmdEnv) warn(format string, args ...any) {
	fmt.Fprintf(e.stderr, "WARNING: %s\n", escapeText(fmt.Sprintf(format, args...)))
}

func (e *capCmdEnv) run(args []string) error {
	if len(args) == 0 {
		return failf(eUsage, "missing capability command (add, drop, list, avail, import); see 'minirun capability --help'")
	}
	cmd, rest := args[0], args[1:]
	switch cmd {
	case "-h", "-help", "--help", "help":
		fmt.Fprintf(e.stdout, capabilityUsage, e.grantPath())
		return nil
	case "add", "drop":
		return e.addDrop(cmd, rest)
	case "list":
		return e.list(rest)
	case "avail":
		return e.avail(rest)
	case "import":
		return e.importJSON(rest)
	}
	return failf(eUsage, "unknown capability command %q; see 'minirun capability --help'", cmd)
}

// countedName is a --user/--group value that counts how often it was given
// and how often any of the name flags was (total).
type countedName struct {
	value string
	n     int
	total *int
}

func (c *countedName) String() string { return c.value }
func (c *countedName) Set(s string) error {
	c.value = s
	c.n++
	*c.total++
	return nil
}

// parseArgs parses flags and positional arguments in any order ("--" ends
// the flags). help is true when --help was given and printed.
func (e *capCmdEnv) parseArgs(fs *flag.FlagSet, cmd string, args []string) (pos []string, help bool, err error) {
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				usage, _ := lookupText(capabilitySubUsage, cmd)
				io.WriteString(e.stdout, usage)
				return nil, true, nil
			}
			return nil, false, failf(eUsage, "capability %s: %v", cmd, err)
		}
		rest := fs.Args()
		if used := len(args) - len(rest); used > 0 && args[used-1] == "--" {
			return append(pos, rest...), false, nil
		}
		if len(rest) == 0 {
			return pos, false, nil
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
}

func (e *capCmdEnv) requireRoot(cmd string) error {
	if e.realUID != 0 {
		return failf(ePerm, "capability %s requires root privileges", cmd)
	}
	return nil
}

// parseAdminCaps parses CAPS for add/drop; unknown names are errors.
func parseAdminCaps(caps string) (capList, error) {
	l := parseCapList(caps)
	if len(l.Unknown) > 0 {
		return l, failf(eUsage, "unknown capability: %s", strings.Join(l.Unknown, ","))
	}
	if !l.All && l.Named == 0 {
		return l, failf(eUsage, "no capability given")
	}
	return l, nil
}

// accountKind is "user" or "group" with its lookups and its table.
type accountKind struct {
	kind   string
	exists func(string) (bool, error)
	table  func(*grantFile) map[string]capSet
}

func (e *capCmdEnv) kind(isGroup bool) accountKind {
	if isGroup {
		return accountKind{"group", e.names.groupExists, func(g *grantFile) map[string]capSet { return g.Groups }}
	}
	return accountKind{"user", e.names.userExists, func(g *grantFile) map[string]capSet { return g.Users }}
}

// lookup asks whether name exists, wrapping a failed lookup (for example
// getent timing out) with the kind and name.
func (k accountKind) lookup(name string) (bool, error) {
	ok, err := k.exists(name)
	if err != nil && !isClassed(err) {
		err = failf(eSystem, "look up %s %s: %w", k.kind, name, err)
	}
	return ok, err
}

// checkExists turns a lookup into "user does not exist: U" or a lookup error.
func (k accountKind) checkExists(name string) error {
	ok, err := k.lookup(name)
	if err == nil && !ok {
		err = failf(eUsage, "%s does not exist: %s", k.kind, name)
	}
	return err
}

func (e *capCmdEnv) addDrop(cmd string, args []string) error {
	fs := flag.NewFlagSet("capability "+cmd, flag.ContinueOnError)
	count := 0
	user, group := &countedName{total: &count}, &countedName{total: &count}
	fs.Var(user, "user", "user name")
	fs.Var(user, "u", "user name")
	fs.Var(group, "group", "group name")
	fs.Var(group, "g", "group name")
	pos, help, err := e.parseArgs(fs, cmd, args)
	if help || err != nil {
		return err
	}
	if err := e.requireRoot(cmd); err != nil {
		return err
	}
	if count != 1 {
		return failf(eUsage, "exactly one of --user or --group is required")
	}
	switch {
	case len(pos) == 0:
		return failf(eUsage, "no capability given")
	case len(pos) > 1:
		return failf(eUsage, "no capability given: expected one comma-separated list, got %d arguments", len(pos))
	}
	list, err := parseAdminCaps(pos[0])
	if err != nil {
		return err
	}
	k, name := e.kind(group.n > 0), user.value
	if group.n > 0 {
		name = group.value
	}
	if cmd == "add" {
		if err := k.checkExists(name); err != nil {
			return err
		}
		set := list.set(namedCaps()) // host-independent: all 41 names
		return updateGrants(e.dir, e.read, func(g *grantFile) (bool, error) {
			m := k.table(g)
			cur := m[name]
			for _, c := range (set & cur).numbers() {
				e.warn("%s already assigned to %s %s", capName(c), k.kind, name)
			}
			if set&^cur == 0 {
				return false, nil
			}
			m[name] = cur | set
			return true, nil
		})
	}
	return updateGrants(e.dir, e.read, func(g *grantFile) (bool, error) {
		m := k.table(g)
		cur, has := m[name]
		if !has {
			// An entry of a deleted account can still be removed, so the
			// name only has to exist when there is no entry.
			if err := k.checkExists(name); err != nil {
				return false, err
			}
		}
		if list.All {
			if !has {
				e.warn("no capabilities assigned to %s %s", k.kind, name)
				return false, nil
			}
			delete(m, name)
			return true, nil
		}
		for _, c := range (list.Named &^ cur).numbers() {
			e.warn("%s not assigned to %s %s", capName(c), k.kind, name)
		}
		left := cur &^ list.Named
		if left == cur {
			return false, nil
		}
		if left == 0 {
			delete(m, name)
		} else {
			m[name] = left
		}
		return true, nil
	})
}

func (e *capCmdEnv) list(args []string) error {
	fs := flag.NewFlagSet("capability list", flag.ContinueOnError)
	pos, help, err := e.parseArgs(fs, "list", args)
	if help || err != nil {
		return err
	}
	if len(pos) > 1 {
		return failf(eUsage, "capability list takes at most one NAME, got %d", len(pos))
	}
	if e.dropPrivileges != nil {
		if err := e.dropPrivileges(); err != nil {
			return err
		}
	}
	g, err := loadGrants(e.grantPath(), e.read)
	if err != nil {
		return err
	}
	var b strings.Builder
	for _, t := range []struct {
		kind    string
		entries map[string]capSet
	}{{"user", g.Users}, {"group", g.Groups}} {
		for _, name := range sortedGrantKeys(t.entries) {
			if len(pos) == 1 && name != pos[0] {
				continue
			}
			b.WriteString(t.kind + " " + escapeText(name) + ": " + t.entries[name].String() + "\n")
		}
	}
	_, err = io.WriteString(e.stdout, b.String())
	return err
}

// unnamedCapDescription describes a capability newer than minirun.
const unnamedCapDescription = "Not known to minirun (newer kernel); included in FULL and \"all\"."

func (e *capCmdEnv) avail(args []string) error {
	fs := flag.NewFlagSet("capability avail", flag.ContinueOnError)
	pos, help, err := e.parseArgs(fs, "avail", args)
	if help || err != nil {
		return err
	}
	if len(pos) > 1 {
		return failf(eUsage, "capability avail takes one comma-separated CAPS list, got %d arguments", len(pos))
	}
	last, host, err := e.host()
	if err != nil {
		return err
	}
	if e.dropPrivileges != nil {
		if err := e.dropPrivileges(); err != nil {
			return err
		}
	}
	rows := capsUpTo(max(lastNamedCap, last)) // every capability the kernel or minirun knows
	if len(pos) == 1 {
		list := parseCapList(pos[0])
		if len(list.Unknown) > 0 {
			return failf(eUsage, "unknown capability: %s", strings.Join(list.Unknown, ","))
		}
		if !list.All {
			rows = list.Named
		}
	}
	var b strings.Builder
	for _, c := range rows.numbers() {
		yes, desc := "no", unnamedCapDescription
		if host.has(c) {
			yes = "yes"
		}
		if c <= lastNamedCap {
			desc = capDescriptions[c]
		}
		fmt.Fprintf(&b, "%2d %-22s %-3s %s\n", c, capName(c), yes, desc)
	}
	_, err = io.WriteString(e.stdout, b.String())
	return err
}

func (e *capCmdEnv) importJSON(args []string) error {
	fs := flag.NewFlagSet("capability import", flag.ContinueOnError)
	pos, help, err := e.parseArgs(fs, "import", args)
	if help || err != nil {
		return err
	}
	if err := e.requireRoot("import"); err != nil {
		return err
	}
	if len(pos) != 1 {
		return failf(eUsage, "capability import needs exactly one FILE")
	}
	data, err := readImportFile(pos[0])
	if err != nil {
		return err
	}
	users, groups, err := parseCapabilityJSON(pos[0], data)
	if err != nil {
		return err
	}
	// Keep only names that exist here, deciding before taking the lock.
	type pick struct {
		k       accountKind
		entries map[string]capSet
	}
	for _, p := range []pick{{e.kind(false), users}, {e.kind(true), groups}} {
		for _, name := range sortedGrantKeys(p.entries) {
			ok, err := p.k.lookup(name)
			if err != nil {
				return err
			}
			if !ok {
				e.warn("skipping %s %s: %s does not exist", p.k.kind, name, p.k.kind)
				delete(p.entries, name)
			}
		}
	}
	return updateGrants(e.dir, e.read, func(g *grantFile) (bool, error) {
		changed := false
		merge := func(dst, src map[string]capSet) {
			for name, set := range src {
				if set&^dst[name] != 0 {
					dst[name] |= set
					changed = true
				}
			}
		}
		merge(g.Users, users)
		merge(g.Groups, groups)
		return changed, nil
	})
}

// readImportFile reads FILE opened O_NOFOLLOW: a regular file of at most 1 MiB.
func readImportFile(path string) ([]byte, error) {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC|unix.O_NONBLOCK|unix.O_NOCTTY, 0)
	if errors.Is(err, unix.ELOOP) {
		return nil, failf(eUsage, "%s: symbolic link not allowed", path)
	}
	if err != nil {
		return nil, failf(eUsage, "open %s: %w", path, err)
	}
	f := os.NewFile(uintptr(fd), path)
	defer f.Close()
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return nil, failf(eSystem, "fstat %s: %w", path, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		return nil, failf(eUsage, "%s: not a regular file", path)
	}
	if st.Size > maxGrantFileSize {
		return nil, failf(eUsage, "%s: larger than 1 MiB", path)
	}
	data, err := io.ReadAll(io.LimitReader(f, maxGrantFileSize+1))
	if err != nil {
		return nil, failf(eSystem, "read %s: %w", path, err)
	}
	if len(data) > maxGrantFileSize {
		return nil, failf(eUsage, "%s: larger than 1 MiB", path)
	}
	return data, nil
}

// parseCapabilityJSON reads Apptainer's capability.json:
// {"users": {name: [caps]}, "groups": {name: [caps]}}, both optional, null
// accepted where Go's encoder writes it. Keys are exact-case; duplicates,
// other keys, wrong types and unknown capability names are errors with the
// line. It walks tokens, so nesting cannot go deep.
func parseCapabilityJSON(path string, data []byte) (users, groups map[string]capSet, err error) {
	defer func() {
		if r := recover(); r != nil {
			users, groups, err = nil, nil, failf(eConfig, "%s: cannot parse (internal error: %v)", path, r)
		}
	}()
	users, groups = map[string]capSet{}, map[string]capSet{}
	if len(bytes.TrimSpace(data)) == 0 {
		return users, groups, nil
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	lineOf := func(off int64) int {
		off = max(0, min(off, int64(len(data))))
		return 1 + bytes.Count(data[:off], []byte("\n"))
	}
	fail := func(format string, args ...any) error {
		return failf(eConfig, "%s:%d: %s", path, lineOf(dec.InputOffset()), fmt.Sprintf(format, args...))
	}
	next := func() (json.Token, error) {
		t, err := dec.Token()
		if err == nil {
			return t, nil
		}
		var se *json.SyntaxError
		if errors.As(err, &se) {
			return nil, failf(eConfig, "%s:%d: %v", path, lineOf(se.Offset), se)
		}
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return nil, failf(eConfig, "%s:%d: unexpected end of JSON", path, lineOf(int64(len(data))))
		}
		return nil, fail("%v", err)
	}
	// capsArray reads null or an array of capability-name strings.
	capsArray := func() (capSet, error) {
		t, err := next()
		if err != nil {
			return 0, err
		}
		if t == nil {
			return 0, nil
		}
		if t != json.Delim('[') {
			return 0, fail("capabilities must be an array of strings")
		}
		var set capSet
		for dec.More() {
			t, err := next()
			if err != nil {
				return 0, err
			}
			s, ok := t.(string)
			if !ok {
				return 0, fail("capabilities must be an array of strings")
			}
			name := normaliseCapName(s)
			c, ok := capByName(name)
			if !ok {
				return 0, fail("unknown capability: %s", name)
			}
			set |= capBit(c)
		}
		_, err = next() // ']'
		return set, err
	}
	// nameMap reads null or {name: caps, ...}.
	nameMap := func(dst map[string]capSet) error {
		t, err := next()
		if err != nil {
			return err
		}
		if t == nil {
			return nil
		}
		if t != json.Delim('{') {
			return fail("users and groups must be objects")
		}
		seen := map[string]bool{}
		for dec.More() {
			t, err := next()
			if err != nil {
				return err
			}
			name := t.(string) // object keys are always strings
			if seen[name] {
				return fail("duplicate name %q", name)
			}
			seen[name] = true
			set, err := capsArray()
			if err != nil {
				return err
			}
			if set != 0 {
				dst[name] = set
			}
		}
		_, err = next() // '}'
		return err
	}

	t, err := next()
	if err != nil {
		return nil, nil, err
	}
	if t != json.Delim('{') {
		return nil, nil, fail("top level must be an object with \"users\" and \"groups\"")
	}
	seen := map[string]bool{}
	for dec.More() {
		t, err := next()
		if err != nil {
			return nil, nil, err
		}
		key := t.(string)
		var dst map[string]capSet
		switch key {
		case "users":
			dst = users
		case "groups":
			dst = groups
		default:
			return nil, nil, fail("unknown key %q: only \"users\" and \"groups\" are allowed", key)
		}
		if seen[key] {
			return nil, nil, fail("duplicate key %q", key)
		}
		seen[key] = true
		if err := nameMap(dst); err != nil {
			return nil, nil, err
		}
	}
	if _, err := next(); err != nil { // '}'
		return nil, nil, err
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return nil, nil, fail("unexpected data after the JSON object")
	}
	return users, groups, nil
}
