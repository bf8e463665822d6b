// config.go owns the admin files: the trust checks every file under
// <sysconfdir>/minirun passes before a byte of it is believed (spec/security.md
// R5), and the strict parser of minirun.toml, one flat table of typed keys.
package main

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"
	"strings"
	"unicode/utf8"

	toml "github.com/pelletier/go-toml/v2"
	"github.com/pelletier/go-toml/v2/unstable"
	"golang.org/x/sys/unix"
)

const (
	configFileMaxSize = 64 << 10 // minirun.toml, R5
	maxConfigList     = 256      // entries in any list key
	maxConfigBinds    = 64       // bind_path entries
	maxConfigString   = 4096     // bytes in any string value (PATH_MAX)
	maxSizeMiB        = 1 << 20  // 1 TiB: far above any sane memory or copy cap
	maxKDFMemoryMiB   = 4096     // argon2 in LUKS2 cannot ask for more; cryptsetup refuses it too
	maxPBKDF2Iters    = 1<<32 - 1
	maxLoopDevices    = 1 << 20 // the kernel's loop minor limit
)

// readTrustedFile reads an admin file only after proving that nobody but root
// could have written it or anything on the way to it (R5): each directory from
// / down is opened O_NOFOLLOW relative to its parent and must be root-owned and
// not group/other-writable (a sticky 1777 directory fails too); the file is
// opened relative to the last directory and checked with fstat on the very
// descriptor that is then read, so nothing can be swapped between check and
// use. A missing file (or directory) returns an error that satisfies
// errors.Is(err, fs.ErrNotExist); every other failure is E_CONFIG and names the
// offending path and reason.
func readTrustedFile(path string, maxSize int64) ([]byte, error) {
	if !isCleanAbsPath(path) || path == "/" {
		return nil, untrusted(path, "path is not absolute and clean")
	}
	if maxSize < 0 {
		return nil, failf(eInternal, "%s: negative size limit %d", path, maxSize)
	}
	dirfd, err := openRetry(unix.AT_FDCWD, "/", unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC)
	if err != nil {
		return nil, failf(eConfig, "/: open: %v", err)
	}
	defer func() { unix.Close(dirfd) }()
	if err := checkTrustedDir(dirfd, "/"); err != nil {
		return nil, err
	}

	dirs, file := filepath.Split(path)
	walked := ""
	for _, name := range strings.Split(strings.Trim(dirs, "/"), "/") {
		if name == "" { // the file sits directly in /
			continue
		}
		walked += "/" + name
		fd, err := openRetry(dirfd, name, unix.O_PATH|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC)
		if err != nil {
			return nil, openFailure(dirfd, name, walked, path, err)
		}
		unix.Close(dirfd)
		dirfd = fd
		if err := checkTrustedDir(dirfd, walked); err != nil {
			return nil, err
		}
	}

	// O_NONBLOCK: a FIFO planted here must not hang the open; fstat rejects it.
	fd, err := openRetry(dirfd, file, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_NOCTTY|unix.O_NONBLOCK|unix.O_CLOEXEC)
	if err != nil {
		return nil, openFailure(dirfd, file, path, path, err)
	}
	defer unix.Close(fd)

	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return nil, failf(eConfig, "%s: fstat: %v", path, err)
	}
	switch {
	case st.Mode&unix.S_IFMT != unix.S_IFREG:
		return nil, untrusted(path, "not a regular file")
	case st.Uid != 0:
		return nil, untrusted(path, "must be owned by root")
	case st.Mode&0o022 != 0:
		return nil, untrusted(path, "must not be writable by group or others")
	case st.Nlink > 1:
		// A second name may live in a directory someone else controls.
		// Zero is fine: an admin command renamed a new file over this one
		// after we opened it, and we read the old, complete contents.
		return nil, untrusted(path, fmt.Sprintf("has %d hard links", st.Nlink))
	case st.Size > maxSize:
		return nil, untrusted(path, "larger than "+sizeText(maxSize))
	}
	return readBounded(fd, path, st.Size, maxSize)
}

// readBounded reads fd to EOF, failing if it yields more than maxSize bytes
// (the file grew after fstat).
func readBounded(fd int, path string, sizeHint, maxSize int64) ([]byte, error) {
	buf := make([]byte, 0, sizeHint+1) // +1: a read at EOF needs room
	for {
		if int64(len(buf)) > maxSize {
			return nil, untrusted(path, "larger than "+sizeText(maxSize))
		}
		if len(buf) == cap(buf) {
			grown := make([]byte, len(buf), maxSize+1)
			copy(grown, buf)
			buf = grown
		}
		n, err := unix.Read(fd, buf[len(buf):cap(buf)])
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return nil, failf(eConfig, "%s: read: %v", path, err)
		}
		if n == 0 {
			return buf, nil
		}
		buf = buf[:len(buf)+n]
	}
}

// checkTrustedDir applies R5's directory rule to an O_PATH descriptor.
func checkTrustedDir(fd int, path string) error {
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return failf(eConfig, "%s: fstat: %v", path, err)
	}
	switch {
	case st.Mode&unix.S_IFMT != unix.S_IFDIR:
		return untrusted(path, "not a directory")
	case st.Uid != 0:
		return untrusted(path, "must be owned by root")
	case st.Mode&0o022 != 0:
		return untrusted(path, "must not be writable by group or others")
	}
	return nil
}

// openFailure turns a failed openat of name (below dirfd) into the error for
// the caller: a missing entry is fs.ErrNotExist, the rest say what was found.
func openFailure(dirfd int, name, shown, file string, err error) error {
	switch err {
	case unix.ENOENT:
		// The common case (no minirun.toml): built without fmt, whose
		// first use costs page faults on every launch.
		return &runError{class: eConfig, msg: file + ": " + fs.ErrNotExist.Error(), err: fs.ErrNotExist}
	case unix.ELOOP, unix.ENOTDIR, unix.ENXIO:
		// The open refused the entry's type; look (without following) to say which.
		var st unix.Stat_t
		if unix.Fstatat(dirfd, name, &st, unix.AT_SYMLINK_NOFOLLOW) == nil {
			switch st.Mode & unix.S_IFMT {
			case unix.S_IFLNK:
				return untrusted(shown, "symbolic link not allowed")
			case unix.S_IFDIR:
			default:
				if shown != file {
					return untrusted(shown, "not a directory")
				}
				return untrusted(shown, "not a regular file")
			}
		}
	}
	return failf(eConfig, "%s: open: %v", shown, err)
}

// untrusted is the one message shape for a failed trust check, as
// spec/capabilities.md §5.3 prints it: "<path>: <reason>".
func untrusted(path, reason string) error {
	return failf(eConfig, "%s: %s", path, reason)
}

func openRetry(dirfd int, name string, flags int) (int, error) {
	for {
		fd, err := unix.Openat(dirfd, name, flags, 0)
		if err != unix.EINTR {
			return fd, err
		}
	}
}

func sizeText(n int64) string {
	switch {
	case n >= 1<<20 && n%(1<<20) == 0:
		return fmt.Sprintf("%d MiB", n>>20)
	case n >= 1<<10 && n%(1<<10) == 0:
		return fmt.Sprintf("%d KiB", n>>10)
	}
	return fmt.Sprintf("%d bytes", n)
}

func isCleanAbsPath(p string) bool {
	return strings.HasPrefix(p, "/") && filepath.Clean(p) == p && strings.IndexByte(p, 0) < 0
}

// config is minirun.toml after parsing: every key of DESIGN.md's table. Empty
// lists are nil; sizes are MiB.
type config struct {
	allowSetuid             bool
	rootDefaultCapabilities string // "full", "file" or "no"
	strictCapabilities      bool
	allowContainer          []string // subset of "sif", "squashfs", "dir", "encrypted"
	limitContainerOwners    []string
	limitContainerGroups    []string
	limitContainerPaths     []string // absolute, clean
	userWritableImages      string   // "allow", "sealed-copy" or "refuse"
	sealedCopyMaxMiB        int64
	encryptedBackend        string // "auto", "dm-crypt" or "memory"
	memoryBackendMaxMiB     int64
	kdfMaxMemoryMiB         int64
	kdfMaxPBKDF2Iterations  int64
	sharedLoopDevices       bool
	maxLoopDevices          int64
	maxLoopPerUser          int64
	allowNamespaces         []string // subset of "pid", "ipc", "uts", "net"
	mountDev                string   // "minimal" or "host"
	mountHome               bool
	mountTmp                bool
	mountCwd                bool
	bindPath                []string // "SRC[:DST[:ro|rw]]", SRC and DST absolute and clean
}

func defaultConfig() config {
	return config{
		allowSetuid:             true,
		rootDefaultCapabilities: "full",
		allowContainer:          []string{"sif", "squashfs", "dir", "encrypted"},
		userWritableImages:      "allow",
		sealedCopyMaxMiB:        2048,
		encryptedBackend:        "auto",
		memoryBackendMaxMiB:     4096,
		kdfMaxMemoryMiB:         1024,
		kdfMaxPBKDF2Iterations:  10000000,
		sharedLoopDevices:       true,
		maxLoopDevices:          256,
		maxLoopPerUser:          32,
		allowNamespaces:         []string{"pid", "ipc", "uts", "net"},
		mountDev:                "minimal",
		mountHome:               true,
		mountTmp:                true,
		mountCwd:                true,
	}
}

// loadConfig reads <dir>/minirun/minirun.toml; a missing file means defaults.
func loadConfig(dir string) (config, error) {
	path := filepath.Join(dir, "minirun", "minirun.toml")
	data, err := readTrustedFile(path, configFileMaxSize)
	if errors.Is(err, fs.ErrNotExist) {
		return defaultConfig(), nil
	}
	if err != nil {
		return config{}, err
	}
	return parseConfig(path, data)
}

// rawConfig is what go-toml decodes into: a nil pointer is an absent key.
type rawConfig struct {
	AllowSetuid             *bool     `toml:"allow_setuid"`
	RootDefaultCapabilities *string   `toml:"root_default_capabilities"`
	StrictCapabilities      *bool     `toml:"strict_capabilities"`
	AllowContainer          *[]string `toml:"allow_container"`
	LimitContainerOwners    *[]string `toml:"limit_container_owners"`
	LimitContainerGroups    *[]string `toml:"limit_container_groups"`
	LimitContainerPaths     *[]string `toml:"limit_container_paths"`
	UserWritableImages      *string   `toml:"user_writable_images"`
	SealedCopyMaxMiB        *int64    `toml:"sealed_copy_max_mib"`
	EncryptedBackend        *string   `toml:"encrypted_backend"`
	MemoryBackendMaxMiB     *int64    `toml:"memory_backend_max_mib"`
	KDFMaxMemoryMiB         *int64    `toml:"kdf_max_memory_mib"`
	KDFMaxPBKDF2Iterations  *int64    `toml:"kdf_max_pbkdf2_iterations"`
	SharedLoopDevices       *bool     `toml:"shared_loop_devices"`
	MaxLoopDevices          *int64    `toml:"max_loop_devices"`
	MaxLoopPerUser          *int64    `toml:"max_loop_per_user"`
	AllowNamespaces         *[]string `toml:"allow_namespaces"`
	MountDev                *string   `toml:"mount_dev"`
	MountHome               *bool     `toml:"mount_home"`
	MountTmp                *bool     `toml:"mount_tmp"`
	MountCwd                *bool     `toml:"mount_cwd"`
	BindPath                *[]string `toml:"bind_path"`
}

// configKeyTypes names each key's TOML type, for messages and for the
// exact-case key check (go-toml matches struct fields case-insensitively).
var configKeyTypes = []textPair{
	{"allow_setuid", "a boolean"},
	{"root_default_capabilities", "a string"},
	{"strict_capabilities", "a boolean"},
	{"allow_container", "an array of strings"},
	{"limit_container_owners", "an array of strings"},
	{"limit_container_groups", "an array of strings"},
	{"limit_container_paths", "an array of strings"},
	{"user_writable_images", "a string"},
	{"sealed_copy_max_mib", "an integer"},
	{"encrypted_backend", "a string"},
	{"memory_backend_max_mib", "an integer"},
	{"kdf_max_memory_mib", "an integer"},
	{"kdf_max_pbkdf2_iterations", "an integer"},
	{"shared_loop_devices", "a boolean"},
	{"max_loop_devices", "an integer"},
	{"max_loop_per_user", "an integer"},
	{"allow_namespaces", "an array of strings"},
	{"mount_dev", "a string"},
	{"mount_home", "a boolean"},
	{"mount_tmp", "a boolean"},
	{"mount_cwd", "a boolean"},
	{"bind_path", "an array of strings"},
}

// configKeyType is the TOML type of key, "" for an unknown key.
func configKeyType(key string) string {
	typ, _ := lookupText(configKeyTypes, key)
	return typ
}

// parseConfig parses minirun.toml. Every error is E_CONFIG and reads
// "<name>:<line>: <reason>". An empty file gives the defaults.
func parseConfig(name string, data []byte) (cfg config, err error) {
	defer func() {
		if r := recover(); r != nil {
			cfg, err = config{}, failf(eConfig, "%s: configuration parser failed: %v", name, r)
		}
	}()
	if len(data) > configFileMaxSize {
		return config{}, failf(eConfig, "%s: larger than %s", name, sizeText(configFileMaxSize))
	}
	if bytes.HasPrefix(data, []byte("\xef\xbb\xbf")) {
		return config{}, failf(eConfig, "%s:1: byte order mark not allowed", name)
	}
	if i := bytes.IndexByte(data, 0); i >= 0 {
		return config{}, failf(eConfig, "%s:%d: NUL byte not allowed", name, lineAt(data, i))
	}
	if !utf8.Valid(data) {
		return config{}, failf(eConfig, "%s:%d: invalid UTF-8", name, lineAt(data, firstInvalidUTF8(data)))
	}
	// go-toml accepts 10 000 levels and lists of any length; this file needs
	// one level and short lists, so refuse the rest before any parser spends
	// memory on them.
	if i, why := tomlShapeProblem(data); i >= 0 {
		return config{}, failf(eConfig, "%s:%d: %s", name, lineAt(data, i), why)
	}
	// The key walk stops at the first unknown key or table, cheaply; the
	// decoder then checks syntax (with positions), duplicates and types.
	lines, err := configKeyLines(name, data)
	if err != nil {
		return config{}, err
	}
	var raw rawConfig
	if err := toml.NewDecoder(bytes.NewReader(data)).DisallowUnknownFields().Decode(&raw); err != nil {
		return config{}, tomlError(name, err)
	}
	if lines == nil { // the walk found a syntax error that decoding did not
		return config{}, failf(eConfig, "%s: malformed TOML", name)
	}
	return raw.apply(name, lines)
}

// tomlError gives go-toml's error the "<name>:<line>: reason" shape.
func tomlError(name string, err error) error {
	var strict *toml.StrictMissingError
	if errors.As(err, &strict) && len(strict.Errors) > 0 {
		de := &strict.Errors[0]
		line, _ := de.Position()
		return failf(eConfig, "%s:%d: unknown key %q", name, line, strings.Join(de.Key(), "."))
	}
	var de *toml.DecodeError
	if errors.As(err, &de) {
		line, _ := de.Position()
		msg := strings.TrimPrefix(de.Error(), "toml: ")
		// Type errors name Go types; say it in the file's terms.
		if key := de.Key(); strings.HasPrefix(msg, "cannot decode") {
			switch {
			case len(key) == 1 && configKeyType(key[0]) != "":
				msg = key[0] + " must be " + configKeyType(key[0])
			case len(key) > 1:
				msg = "dotted keys are not allowed"
			default:
				msg = "wrong type"
			}
		}
		return failf(eConfig, "%s:%d: %s", name, line, msg)
	}
	return failf(eConfig, "%s: %v", name, err)
}

// configKeyLines walks the document and returns the line of each key. It
// refuses what decoding would let through or report late: keys that match a
// field only case-insensitively, dotted keys, table headers, unknown keys.
// On a syntax error it returns nil lines and leaves the report to the
// decoder, which gives the position.
func configKeyLines(name string, data []byte) (map[string]int, error) {
	lines := make(map[string]int, len(configKeyTypes))
	var p unstable.Parser
	p.Reset(data)
	for p.NextExpression() {
		expr := p.Expression()
		if expr.Kind != unstable.KeyValue && expr.Kind != unstable.Table && expr.Kind != unstable.ArrayTable {
			continue
		}
		it := expr.Key()
		if !it.Next() {
			continue
		}
		key := it.Node()
		line := p.Shape(key.Raw).Start.Line
		if expr.Kind != unstable.KeyValue {
			return nil, failf(eConfig, "%s:%d: tables are not allowed (minirun.toml is one flat table)", name, line)
		}
		if it.Next() {
			return nil, failf(eConfig, "%s:%d: dotted keys are not allowed", name, line)
		}
		k := string(key.Data)
		if configKeyType(k) == "" {
			return nil, failf(eConfig, "%s:%d: unknown key %q", name, line, k)
		}
		lines[k] = line
	}
	if p.Error() != nil {
		return nil, nil
	}
	return lines, nil
}

// apply validates the decoded keys and lays them over the defaults.
func (r *rawConfig) apply(name string, lines map[string]int) (config, error) {
	c := defaultConfig()
	var firstErr error
	bad := func(key, format string, args ...any) {
		if firstErr == nil {
			firstErr = failf(eConfig, "%s:%d: %s: %s", name, lines[key], key, fmt.Sprintf(format, args...))
		}
	}
	setBool := func(dst *bool, src *bool) {
		if src != nil {
			*dst = *src
		}
	}
	setEnum := func(key string, dst *string, src *string, allowed ...string) {
		if src == nil {
			return
		}
		if !containsString(allowed, *src) {
			bad(key, "%q is not one of %s", *src, quotedList(allowed))
			return
		}
		*dst = *src
	}
	setInt := func(key string, dst *int64, src *int64, max int64) {
		if src == nil {
			return
		}
		if *src < 0 || *src > max {
			bad(key, "%d is out of range 0 to %d", *src, max)
			return
		}
		*dst = *src
	}
	// setList checks count, length and control bytes, then each entry with valid.
	setList := func(key string, dst *[]string, src *[]string, maxEntries int, valid func(string) string) {
		if src == nil {
			return
		}
		if len(*src) > maxEntries {
			bad(key, "%d entries, at most %d allowed", len(*src), maxEntries)
			return
		}
		for i, s := range *src {
			if len(s) > maxConfigString {
				bad(key, "entry %d is longer than %d bytes", i+1, maxConfigString)
				return
			}
			if hasControl(s) {
				bad(key, "entry %q contains a control character", s)
				return
			}
			if why := valid(s); why != "" {
				bad(key, "%q %s", s, why)
				return
			}
			for _, prev := range (*src)[:i] {
				if prev == s {
					bad(key, "%q is listed twice", s)
					return
				}
			}
		}
		*dst = nil
		if len(*src) > 0 {
			*dst = append([]string(nil), *src...)
		}
	}
	oneOf := func(allowed ...string) func(string) string {
		return func(s string) string {
			if containsString(allowed, s) {
				return ""
			}
			return "is not one of " + quotedList(allowed)
		}
	}

	setBool(&c.allowSetuid, r.AllowSetuid)
	setEnum("root_default_capabilities", &c.rootDefaultCapabilities, r.RootDefaultCapabilities, "full", "file", "no")
	setBool(&c.strictCapabilities, r.StrictCapabilities)
	setList("allow_container", &c.allowContainer, r.AllowContainer, maxConfigList, oneOf("sif", "squashfs", "dir", "encrypted"))
	setList("limit_container_owners", &c.limitContainerOwners, r.LimitContainerOwners, maxConfigList, accountNameProblem)
	setList("limit_container_groups", &c.limitContainerGroups, r.LimitContainerGroups, maxConfigList, accountNameProblem)
	setList("limit_container_paths", &c.limitContainerPaths, r.LimitContainerPaths, maxConfigList, func(s string) string {
		if !isCleanAbsPath(s) {
			return "is not an absolute, clean path"
		}
		return ""
	})
	setEnum("user_writable_images", &c.userWritableImages, r.UserWritableImages, "allow", "sealed-copy", "refuse")
	setInt("sealed_copy_max_mib", &c.sealedCopyMaxMiB, r.SealedCopyMaxMiB, maxSizeMiB)
	setEnum("encrypted_backend", &c.encryptedBackend, r.EncryptedBackend, "auto", "dm-crypt", "memory")
	setInt("memory_backend_max_mib", &c.memoryBackendMaxMiB, r.MemoryBackendMaxMiB, maxSizeMiB)
	setInt("kdf_max_memory_mib", &c.kdfMaxMemoryMiB, r.KDFMaxMemoryMiB, maxKDFMemoryMiB)
	setInt("kdf_max_pbkdf2_iterations", &c.kdfMaxPBKDF2Iterations, r.KDFMaxPBKDF2Iterations, maxPBKDF2Iters)
	setBool(&c.sharedLoopDevices, r.SharedLoopDevices)
	setInt("max_loop_devices", &c.maxLoopDevices, r.MaxLoopDevices, maxLoopDevices)
	setInt("max_loop_per_user", &c.maxLoopPerUser, r.MaxLoopPerUser, maxLoopDevices)
	setList("allow_namespaces", &c.allowNamespaces, r.AllowNamespaces, maxConfigList, oneOf("pid", "ipc", "uts", "net"))
	setEnum("mount_dev", &c.mountDev, r.MountDev, "minimal", "host")
	setBool(&c.mountHome, r.MountHome)
	setBool(&c.mountTmp, r.MountTmp)
	setBool(&c.mountCwd, r.MountCwd)
	setList("bind_path", &c.bindPath, r.BindPath, maxConfigBinds, bindPathProblem)
	if firstErr != nil {
		return config{}, firstErr
	}
	return c, nil
}

// bindPathProblem checks one admin bind "SRC[:DST[:ro|rw]]": SRC and DST
// absolute and clean. What DST may be (not /proc, not reserved) is checked
// where binds are made (parseBindSpec), for admin and user binds alike.
func bindPathProblem(s string) string {
	parts := strings.Split(s, ":")
	switch {
	case len(parts) > 3:
		return "is not SRC[:DST[:ro|rw]]: too many ':'"
	case !isCleanAbsPath(parts[0]):
		return "is not SRC[:DST[:ro|rw]]: the source must be an absolute, clean path"
	case len(parts) > 1 && !isCleanAbsPath(parts[1]):
		return "is not SRC[:DST[:ro|rw]]: the destination must be an absolute, clean path"
	case len(parts) > 2 && parts[2] != "ro" && parts[2] != "rw":
		return "is not SRC[:DST[:ro|rw]]: the option must be ro or rw"
	}
	return ""
}

// accountNameProblem uses the rule of spec/capabilities.md §5.4: a name that
// is empty, starts with '-', or holds whitespace or ':' names no account.
func accountNameProblem(s string) string {
	if s == "" || s[0] == '-' || strings.ContainsAny(s, " \t\n\r\v\f:") {
		return "is not a valid user or group name"
	}
	return ""
}

func containsString(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

func quotedList(list []string) string {
	q := make([]string, len(list))
	for i, s := range list {
		q[i] = fmt.Sprintf("%q", s)
	}
	return strings.Join(q, ", ")
}

func hasControl(s string) bool {
	for _, r := range s {
		if r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0) {
			return true
		}
	}
	return false
}

// lineAt is the 1-based line of byte offset i.
func lineAt(data []byte, i int) int {
	if i > len(data) {
		i = len(data)
	}
	return bytes.Count(data[:i], []byte("\n")) + 1
}

func firstInvalidUTF8(data []byte) int {
	for i := 0; i < len(data); {
		r, size := utf8.DecodeRune(data[i:])
		if r == utf8.RuneError && size == 1 {
			return i
		}
		i += size
	}
	return len(data)
}

// tomlShapeProblem finds, before any real parsing, what a flat table of
// scalars and short lists can never contain: a '[' or '{' opening a second
// level, or a list of more than maxConfigList entries. It returns the offset
// and the reason, or -1. Comments and all four kinds of TOML string are
// skipped, so brackets and commas inside values do not count. A table header
// counts as one level, so "[[x]]" is two.
func tomlShapeProblem(data []byte) (int, string) {
	depth, commas := 0, 0
	for i := 0; i < len(data); {
		switch c := data[i]; c {
		case '#':
			for i < len(data) && data[i] != '\n' {
				i++
			}
			continue
		case '"', '\'':
			i = skipTOMLString(data, i)
			continue
		case '[', '{':
			depth++
			commas = 0
			if depth > 1 {
				return i, "nested arrays or tables are not allowed (minirun.toml is one flat table)"
			}
		case ']', '}':
			if depth > 0 {
				depth--
			}
		case ',':
			if depth == 0 {
				break // a syntax error the parser reports
			}
			if commas++; commas >= maxConfigList+1 {
				return i, fmt.Sprintf("more than %d entries in one list", maxConfigList)
			}
		}
		i++
	}
	return -1, ""
}

// skipTOMLString returns the offset just past the string that opens at i.
// An unterminated string ends at its line's end (or the input's); the real
// parser reports it.
func skipTOMLString(data []byte, i int) int {
	q := data[i]
	basic := q == '"'
	if i+2 < len(data) && data[i+1] == q && data[i+2] == q { // multi-line
		for j := i + 3; j < len(data); j++ {
			if basic && data[j] == '\\' {
				j++
				continue
			}
			if data[j] == q && j+2 < len(data) && data[j+1] == q && data[j+2] == q {
				end := j + 3
				// Up to two quotes right before the delimiter belong to the string.
				for k := 0; k < 2 && end < len(data) && data[end] == q; k++ {
					end++
				}
				return end
			}
		}
		return len(data)
	}
	for j := i + 1; j < len(data); j++ {
		switch data[j] {
		case '\\':
			if basic {
				j++
			}
		case q:
			return j + 1
		case '\n':
			return j
		}
	}
	return len(data)
}
