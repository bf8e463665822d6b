// errors.go owns minirun's error classes and how a failure reaches the user:
// one line, "ERROR: ..." (or "FATAL: ..." for admin-file problems), exit 255.
package main

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"unicode/utf8"

	"golang.org/x/sys/unix"
)

// errClass groups refusals for tests and --debug output (spec/security.md).
type errClass string

const (
	eUsage    errClass = "E_USAGE"    // bad arguments
	ePerm     errClass = "E_PERM"     // the caller lacks access
	ePolicy   errClass = "E_POLICY"   // admin policy forbids it
	eConfig   errClass = "E_CONFIG"   // insecure or malformed admin file
	eImage    errClass = "E_IMAGE"    // malformed or unsupported image or header
	eAuth     errClass = "E_AUTH"     // wrong key
	eResource errClass = "E_RESOURCE" // limits, exhaustion
	eSystem   errClass = "E_SYSTEM"   // missing kernel feature, unexpected errno
	eInternal errClass = "E_INTERNAL" // recovered panic, failed post-condition
)

// runError is every error minirun reports: a class and a message that
// already names the object and the cause.
type runError struct {
	class errClass
	msg   string
	err   error
}

func (e *runError) Error() string { return e.msg }

func (e *runError) Unwrap() error { return e.err }

// failf makes a classed error; a trailing %w argument is kept for errors.Is.
func failf(class errClass, format string, args ...any) error {
	err := fmt.Errorf(format, args...)
	return &runError{class: class, msg: err.Error(), err: errors.Unwrap(err)}
}

// classOf returns the class of err, E_INTERNAL for an unclassed error.
func classOf(err error) errClass {
	var re *runError
	if errors.As(err, &re) {
		return re.class
	}
	return eInternal
}

// errorLine is the one line printed for err.
func errorLine(err error) string {
	prefix := "ERROR: "
	if classOf(err) == eConfig {
		prefix = "FATAL: "
	}
	return prefix + escapeText(err.Error())
}

// fatal prints err as one line and exits 255; debug adds the class.
func fatal(err error, debug bool) {
	line := errorLine(err)
	if debug {
		line += " [" + string(classOf(err)) + "]"
	}
	writeStderr(line + "\n")
	os.Exit(255)
}

// writeStderr writes minirun's own lines with write(2) itself. Through
// os.Stderr, EPIPE on fd 2 makes Go's runtime kill the process with
// SIGPIPE: a caller who closed the reading end of stderr would see a
// refused launch end by a signal instead of with status 255. The kernel's
// SIGPIPE for a raw write is one the runtime ignores.
func writeStderr(s string) {
	b := []byte(s)
	for len(b) > 0 {
		n, err := unix.Write(2, b)
		if err == unix.EINTR {
			continue
		}
		if err != nil || n <= 0 {
			return
		}
		b = b[n:]
	}
}

// stderrWriter is writeStderr as an io.Writer, for usage texts.
type stderrWriter struct{}

func (stderrWriter) Write(p []byte) (int, error) {
	writeStderr(string(p))
	return len(p), nil
}

// verbosef prints one "VERBOSE:" line when -v or -d was given.
func verbosef(on bool, format string, args ...any) {
	if on {
		writeStderr("VERBOSE: " + escapeText(fmt.Sprintf(format, args...)) + "\n")
	}
}

func warnf(format string, args ...any) {
	writeStderr("WARNING: " + escapeText(fmt.Sprintf(format, args...)) + "\n")
}

// escapeText makes user-supplied text safe for a terminal: control bytes and
// invalid UTF-8 become \xNN, so a hostile path cannot inject escapes or lines.
func escapeText(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size == 1, r < 0x20, r == 0x7f, r >= 0x80 && r < 0xa0:
			for j := 0; j < size; j++ {
				fmt.Fprintf(&b, "\\x%02x", s[i+j])
			}
		default:
			b.WriteString(s[i : i+size])
		}
		i += size
	}
	return b.String()
}
