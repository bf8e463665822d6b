// main.go owns the command line: subcommands, flags (stdlib flag), usage
// text and exit codes. The launch itself starts in exec.go.

// Runtime defaults: no naming of anonymous mappings (one failing prctl per
// mapping on kernels without it), and no periodic re-reading of cgroup files
// to resize GOMAXPROCS (the --pid init lives as long as the container).
//
//go:debug updatemaxprocs=0
//go:debug decoratemappings=0
package main

import (
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
)

// Set at build time (Makefile): the configuration directory is compiled in
// and never taken from the environment or a flag (security.md R5).
var (
	sysconfdir = "/usr/local/etc"
	version    = "devel"
)

// options is everything the command line asks for; nothing else is global
// except the loaded configuration.
type options struct {
	command string // exec, run or shell
	image   string
	args    []string // the payload's argv (for exec: COMMAND and its arguments)

	binds    []bindSpec
	noHome   bool
	contain  bool
	cleanEnv bool
	env      []string
	pwd      string

	pid, ipc, uts, net bool
	hostname           string

	addCaps, dropCaps  []string
	keepPrivs, noPrivs bool

	passphrase bool   // prompt for the key of an encrypted image
	pemPath    string // RSA private key for an encrypted image

	quiet, verbose, debug bool
}

const (
	maxArgs      = 1 << 16
	maxBinds     = 64
	maxEnvFlags  = 256
	maxEnvLength = 32 << 10
)

// debugAsked says whether the arguments ask for --debug, for errors found
// while they are parsed: the class still goes on the error line. A payload
// word "-d" may count too; that only adds the class.
func debugAsked(args []string) bool {
	for _, a := range args {
		switch a {
		case "--":
			return false
		case "-d", "--d", "-debug", "--debug", "-debug=true", "--debug=true", "-d=true", "--d=true":
			return true
		}
	}
	return false
}

func main() {
	presizeStack()
	// Nothing of the privileged process may be ptraced or dumped (R6),
	// descriptors 0-2 must exist before anything is opened (R8), and the Go
	// runtime's own variables must not steer it (R7).
	setuidHygiene()
	if isInitRole() {
		runInit() // PID 1 of a --pid container, started by minirun itself
	}
	if isUsernsRole() {
		runUsernsChild() // the unprivileged mode, inside its user namespace
	}

	args := os.Args[1:]
	if len(args) == 0 {
		topUsage(stderrWriter{})
		os.Exit(255)
	}
	cmd, rest := args[0], args[1:]
	switch cmd {
	case "exec", "run", "shell":
		o, err := parseLaunch(cmd, rest)
		if err != nil {
			fatal(err, debugAsked(rest))
		}
		if err := launch(o); err != nil {
			fatal(err, o.debug)
		}
	case "build":
		// It gives up every privilege first thing (R7).
		if err := buildCommand(rest); err != nil {
			fatal(err, false)
		}
	case "capability":
		// It drops privilege itself, once it has read the host's capability
		// set (list and avail need nothing more; add/drop/import need root).
		if err := capabilityCommand(rest, sysconfdir); err != nil {
			fatal(err, false)
		}
	case "version", "--version":
		dropPrivileges()
		fmt.Println("minirun version " + version)
	case "help", "-h", "--help":
		dropPrivileges()
		if len(rest) > 0 {
			if !commandUsage(rest[0], os.Stdout) {
				fatal(failf(eUsage, "unknown command %q; see 'minirun help'", rest[0]), false)
			}
			return
		}
		topUsage(os.Stdout)
	default:
		fatal(failf(eUsage, "unknown command %q; see 'minirun help'", cmd), false)
	}
}

// presizeStack grows the main goroutine's stack to 16 KiB in one step,
// while it holds two frames. A launch otherwise grows it 2 → 4 → 8 → 16
// KiB as it goes deeper, and each growth copies the stack and walks every
// frame on it through tables a fresh process has not touched yet: 0.04-0.11
// ms per launch on the benchmark machine (docs/launch-profile.md).
//
//go:noinline
func presizeStack() {
	var frame [12 << 10]byte
	keepFrame(frame[:])
}

//go:noinline
func keepFrame(b []byte) { _ = b[len(b)-1] }

func topUsage(w io.Writer) {
	fmt.Fprint(w, `minirun - run a command in a SIF, squashfs or directory image

Usage:
  minirun exec [options] IMAGE COMMAND [ARG...]   run COMMAND in the container
  minirun run [options] IMAGE [ARG...]            run the image's runscript (else /bin/sh)
  minirun shell [options] IMAGE [ARG...]          start /bin/sh in the container
  minirun build [options] OUT.sif SOURCE          make a SIF (optionally encrypted) from a squashfs or directory
  minirun capability add|drop|list|avail|import   manage capability grants (see 'minirun capability --help')
  minirun version                                 print the version
  minirun help [COMMAND]                          show help for a command

IMAGE is a SIF file, a bare squashfs file or a directory. Options end at IMAGE:
everything after it belongs to the command. Runtime errors print one line
starting with ERROR: and exit with status 255; otherwise the exit status is
the command's own.

Configuration: `+sysconfdir+`/minirun/minirun.toml
`)
}

var launchSynopsis = []textPair{
	{"exec", "minirun exec [options] IMAGE COMMAND [ARG...]\n\nRun COMMAND inside the container made from IMAGE."},
	{"run", "minirun run [options] IMAGE [ARG...]\n\nRun the image's /.singularity.d/runscript with ARGs, or /bin/sh when it has none."},
	{"shell", "minirun shell [options] IMAGE [ARG...]\n\nStart /bin/sh inside the container, passing ARGs to it."},
}

// textPair is one entry of a fixed lookup table. A slice of them is laid out
// by the linker; a map would be built by code at every start of the binary.
type textPair struct{ key, val string }

// lookupText finds key in table.
func lookupText(table []textPair, key string) (string, bool) {
	for _, p := range table {
		if p.key == key {
			return p.val, true
		}
	}
	return "", false
}

func commandUsage(cmd string, w io.Writer) bool {
	if _, ok := lookupText(launchSynopsis, cmd); ok {
		fs, _ := launchFlags(cmd, &options{})
		fs.SetOutput(w)
		fs.Usage()
		return true
	}
	switch cmd {
	case "build":
		fs := buildFlags(&buildOptions{})
		fs.SetOutput(w)
		fs.Usage()
		return true
	case "version":
		fmt.Fprintln(w, "minirun version\n\nPrint minirun's version.")
		return true
	case "help":
		fmt.Fprintln(w, "minirun help [COMMAND]\n\nShow the list of commands, or the options of COMMAND.")
		return true
	case "capability":
		capabilityCommand([]string{"--help"}, sysconfdir)
		return true
	}
	return false
}

// listFlag collects a repeatable option.
type listFlag struct{ values *[]string }

func (l listFlag) String() string { return "" }
func (l listFlag) Set(s string) error {
	*l.values = append(*l.values, s)
	return nil
}

// launchFlags declares the options of exec, run and shell. Every short
// option is an alias of its long one.
func launchFlags(cmd string, o *options) (*flag.FlagSet, *[]string) {
	fs := flag.NewFlagSet(cmd, flag.ContinueOnError)
	var bindArgs []string
	b := listFlag{&bindArgs}
	fs.Var(b, "B", "")
	fs.Var(b, "bind", "")
	fs.BoolVar(&o.noHome, "no-home", false, "")
	fs.BoolVar(&o.contain, "contain", false, "")
	fs.BoolVar(&o.contain, "c", false, "")
	fs.BoolVar(&o.cleanEnv, "cleanenv", false, "")
	fs.BoolVar(&o.cleanEnv, "e", false, "")
	fs.Var(listFlag{&o.env}, "env", "")
	fs.StringVar(&o.pwd, "pwd", "", "")
	fs.BoolVar(&o.pid, "pid", false, "")
	fs.BoolVar(&o.pid, "p", false, "")
	fs.BoolVar(&o.ipc, "ipc", false, "")
	fs.BoolVar(&o.ipc, "i", false, "")
	fs.BoolVar(&o.uts, "uts", false, "")
	fs.StringVar(&o.hostname, "hostname", "", "")
	fs.BoolVar(&o.net, "net", false, "")
	fs.BoolVar(&o.net, "n", false, "")
	fs.BoolVar(&o.quiet, "quiet", false, "")
	fs.BoolVar(&o.quiet, "q", false, "")
	fs.BoolVar(&o.verbose, "verbose", false, "")
	fs.BoolVar(&o.verbose, "v", false, "")
	fs.BoolVar(&o.debug, "debug", false, "")
	fs.BoolVar(&o.debug, "d", false, "")
	fs.Var(listFlag{&o.addCaps}, "add-caps", "")
	fs.Var(listFlag{&o.dropCaps}, "drop-caps", "")
	fs.BoolVar(&o.keepPrivs, "keep-privs", false, "")
	fs.BoolVar(&o.noPrivs, "no-privs", false, "")
	fs.BoolVar(&o.passphrase, "passphrase", false, "")
	fs.StringVar(&o.pemPath, "pem-path", "", "")
	fs.Usage = func() {
		w := fs.Output()
		synopsis, _ := lookupText(launchSynopsis, cmd)
		fmt.Fprintf(w, "Usage: %s\n", synopsis)
		fmt.Fprint(w, `
Options (they end at IMAGE; everything after IMAGE belongs to the command):
  -B, --bind SRC[:DST[:ro|rw]]  bind SRC from the host to DST (default SRC) in the
                                container; repeatable, or a comma-separated list.
                                SRC must be readable by you; DST must exist in the
                                image (missing directories are made in a tmpfs)
      --no-home                 do not bind your home directory
  -c, --contain                 no host /tmp, /var/tmp, home or working directory:
                                empty tmpfs /tmp and /var/tmp instead
  -e, --cleanenv                keep only HOME USER LOGNAME TERM LANG LANGUAGE LC_*
                                TZ COLORTERM NO_COLOR from your environment
      --env NAME=VALUE          set a variable in the container (repeatable)
      --pwd DIR                 working directory inside the container
                                (default: your current directory; given twice,
                                the last one counts)
  -p, --pid                     new PID namespace; a small init reaps children and
                                forwards signals
  -i, --ipc                     new IPC namespace
      --uts                     new UTS namespace (implied by --hostname)
      --hostname NAME           host name inside the container (the last one counts)
  -n, --net                     new network namespace with only loopback, up
      --add-caps CAPS           capabilities to add (comma list, any case, CAP_
                                optional, or "all"); repeatable, the lists add up.
                                A non-root caller gets only what capability.toml
                                grants them
      --drop-caps CAPS          capabilities to drop (applied last); repeatable,
                                the lists add up
      --keep-privs              (root only) keep every capability the host allows
      --no-privs                no capabilities and no_new_privs, even for root
      --passphrase              ask on the terminal for the passphrase of an
                                encrypted image
      --pem-path FILE           open an encrypted image with the RSA private key
                                in FILE (PEM; read with your own permissions; the
                                last one counts).
                                Without these two, the key of an encrypted image
                                comes from MINIRUN_ENCRYPTION_PEM_PATH or
                                MINIRUN_ENCRYPTION_PASSPHRASE (APPTAINER_* too)
  -q, --quiet                   print only errors
  -v, --verbose                 say what is being set up
  -d, --debug                   print each setup step and error classes
  -h, --help                    show this help

The environment passes to the command, except PATH (the container default),
LD_LIBRARY_PATH and GO* variables; MINIRUN_* variables are for minirun itself.
`)
	}
	return fs, &bindArgs
}

// parseLaunch reads exec/run/shell options up to IMAGE.
func parseLaunch(cmd string, args []string) (*options, error) {
	if len(args) > maxArgs {
		return nil, failf(eUsage, "too many arguments (%d, limit %d)", len(args), maxArgs)
	}
	o := &options{command: cmd}
	fs, bindArgs := launchFlags(cmd, o)
	fs.SetOutput(io.Discard)
	if err := fs.Parse(args); err != nil {
		if err == flag.ErrHelp {
			dropPrivileges()
			fs.SetOutput(os.Stdout)
			fs.Usage()
			os.Exit(0)
		}
		return nil, failf(eUsage, "%s: %v; see 'minirun help %s'", cmd, err, cmd)
	}
	rest := fs.Args()
	if len(rest) == 0 {
		return nil, failf(eUsage, "%s: no image given; see 'minirun help %s'", cmd, cmd)
	}
	o.image, o.args = rest[0], rest[1:]
	if cmd == "exec" && len(o.args) == 0 {
		return nil, failf(eUsage, "exec: no command given after the image")
	}
	for _, list := range *bindArgs {
		for _, one := range strings.Split(list, ",") {
			spec, err := parseBindSpec(one)
			if err != nil {
				return nil, err
			}
			o.binds = append(o.binds, spec)
		}
	}
	if len(o.binds) > maxBinds {
		return nil, failf(eUsage, "too many binds (%d, limit %d)", len(o.binds), maxBinds)
	}
	if len(o.env) > maxEnvFlags {
		return nil, failf(eUsage, "too many --env options (%d, limit %d)", len(o.env), maxEnvFlags)
	}
	for _, kv := range o.env {
		if err := checkEnvFlag(kv); err != nil {
			return nil, err
		}
	}
	if o.hostname != "" {
		o.uts = true
		if len(o.hostname) > 64 || strings.ContainsAny(o.hostname, "/\x00 ") {
			return nil, failf(eUsage, "invalid --hostname %q", o.hostname)
		}
	}
	if o.pwd != "" && !strings.HasPrefix(o.pwd, "/") {
		return nil, failf(eUsage, "--pwd must be an absolute path inside the container, not %q", o.pwd)
	}
	if o.contain {
		o.noHome = true
	}
	return o, nil
}
