// harness is `make bench`: it installs minirun and the floor into a scratch
// prefix, builds the test images, times every launcher alternately in one run
// (medians, ratios to the floor) and writes docs/benchmarks.md.
// It runs as root; the unprivileged rows run as the test user through the setuid path.
package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"math/rand"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"regexp"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/apptainer/sif/v2/pkg/sif"
	"golang.org/x/sys/unix"
)

var (
	prefix        = flag.String("prefix", "/run/minirun-bench", "scratch install prefix (root-owned 0755, not under /tmp)")
	binDir        = flag.String("bin", ".build/bench", "directory holding the freshly built minirun and floor")
	out           = flag.String("out", "docs/benchmarks.md", "Markdown report to (re)write")
	rounds        = flag.Int("rounds", 100, "measured rounds; each runs every command once, in shuffled order")
	warmup        = flag.Int("warmup", 5, "unmeasured rounds first")
	userName      = flag.String("user", "mrbench", "unprivileged test user (created with useradd -m -U if missing)")
	version       = flag.String("version", "", "minirun version string, for the report")
	concReps      = flag.Int("conc-reps", 3, "repetitions of each concurrent-launch case")
	encPassRounds = flag.Int("pass-rounds", 5, "rounds of the passphrase-image startup (each launch pays argon2)")
	goBin         = flag.String("go", "go", "Go toolchain for luks_test.go's benchmarks (run in the working directory)")
	benchtime     = flag.String("benchtime", "1s", "-benchtime of luks_test.go's benchmarks")
)

// account is one identity the commands run as.
type account struct {
	name string
	cred *syscall.Credential // nil: root
	home string
	env  []string
}

// command is one launcher measured in the rounds.
type command struct {
	group   string // table the row belongs to: "gzip", "lz4", "zstd", "none", "dir"
	tool    string // minirun, floor, bwrap, runc
	who     *account
	argv    func(seq int) []string
	shown   string // the command line as printed in the report
	skipped string // why it was not measured (failed its probe)
	times   []time.Duration
	cpu     []time.Duration // user+system CPU of the launch (wait4 rusage)
	sysCPU  []time.Duration
	peakKiB int64 // median peak RSS under GNU time (0: not measured)
	fails   int
}

func main() {
	flag.Parse()
	log := func(format string, a ...any) { fmt.Printf("bench: "+format+"\n", a...) }
	if os.Geteuid() != 0 {
		fatal("make bench needs root: it installs minirun setuid-root into %s and creates the user %s", *prefix, *userName)
	}
	start := time.Now()
	r := &report{start: start}
	r.machine()

	// Setup: prefix, binaries, user, images, bundles.
	checkPrefix(*prefix)
	for _, d := range []string{"bin", "etc", "etc/minirun", "img"} {
		must(os.MkdirAll(filepath.Join(*prefix, d), 0755))
		must(os.Chmod(filepath.Join(*prefix, d), 0755))
	}
	conf := filepath.Join(*prefix, "etc/minirun/minirun.toml")
	os.Remove(conf) // compiled-in defaults unless a case writes one
	minirun := filepath.Join(*prefix, "bin/minirun")
	floor := filepath.Join(*prefix, "bin/floor")
	floorSetuid := filepath.Join(*prefix, "bin/floor-setuid")
	usr := ensureUser(*userName)
	installFile(filepath.Join(*binDir, "minirun"), minirun, 0, 0, 0755|os.ModeSetuid)
	installFile(filepath.Join(*binDir, "floor"), floor, 0, 0, 0755)
	// The setuid floor only for the test user's group, and removed at the end.
	installFile(filepath.Join(*binDir, "floor"), floorSetuid, 0, int(usr.cred.Gid), 0750|os.ModeSetuid)
	defer os.Remove(floorSetuid)
	root := &account{name: "root", home: "/root", env: []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "HOME=/root", "USER=root", "LANG=C"}}
	users := []*account{root, usr}

	img := filepath.Join(*prefix, "img")
	rootfs := filepath.Join(img, "rootfs")
	log("building images in %s", img)
	r.imageCmds = append(r.imageCmds, "sh testdata/mkrootfs.sh "+rootfs)
	run("sh", "testdata/mkrootfs.sh", rootfs)
	formats := []string{"gzip", "lz4", "zstd", "none"}
	images := map[string]string{}
	sifs := map[string]sifImage{}
	for _, f := range formats {
		path := filepath.Join(img, f+".sqfs")
		args := []string{rootfs, path, "-all-root", "-noappend", "-quiet", "-no-progress"}
		if f == "none" {
			args = append(args, "-noI", "-noD", "-noF", "-noX")
		} else {
			args = append(args, "-comp", f)
		}
		r.imageCmds = append(r.imageCmds, "mksquashfs "+strings.Join(args, " "))
		run("mksquashfs", args...)
		images[f] = path
		st, err := os.Stat(path)
		must(err)
		r.imageSizes = append(r.imageSizes, [2]string{f, kib(st.Size())})
		sifs[f] = wrapSIF(path, filepath.Join(img, f+".sif"))
	}
	r.imageCmds = append(r.imageCmds, "# each FORMAT.sqfs is then wrapped in FORMAT.sif by the sif library (github.com/apptainer/sif/v2: a definition file, then the squashfs as the primary system partition)")
	runcBundles := setupRunc(rootfs, usr)
	log("building encrypted images with %s build", minirun)
	r.enc = buildEncrypted(minirun, rootfs, img, usr)

	// The commands. Runc needs a fresh container id per launch.
	var cmds []*command
	for _, who := range users {
		floorBin := floor
		if who.cred != nil {
			floorBin = floorSetuid
		}
		for _, f := range formats {
			cmds = append(cmds,
				fixed(f, "minirun", who, minirun, "exec", images[f], "/bin/true"),
				fixed(f, "floor", who, floorBin, images[f], "/bin/true"))
		}
		for _, f := range formats {
			part := sifs[f]
			cmds = append(cmds,
				fixed("sif-"+f, "minirun", who, minirun, "exec", part.path, "/bin/true"),
				fixed("sif-"+f, "floor", who, floorBin, "-part", strconv.FormatInt(part.offset, 10), strconv.FormatInt(part.size, 10), part.path, "/bin/true"),
				fixed("sif-"+f, "spec-floor", who, floorBin, "-spec", "-part", strconv.FormatInt(part.offset, 10), strconv.FormatInt(part.size, 10), part.path, "/bin/true"))
		}
		cmds = append(cmds,
			fixed("sif", "minirun", who, minirun, "exec", r.enc.plain, "/bin/true"),
			fixed("sif-pem", "minirun", who, minirun, "exec", "--pem-path", r.enc.key, r.enc.pem, "/bin/true"))
		cmds = append(cmds,
			fixed("dir", "minirun", who, minirun, "exec", rootfs, "/bin/true"),
			fixed("dir", "floor", who, floorBin, "-dir", rootfs, "/bin/true"),
			fixed("dir", "spec-floor", who, floorBin, "-spec", "-dir", rootfs, "/bin/true"))
		if bw, err := exec.LookPath("bwrap"); err == nil {
			cmds = append(cmds, fixed("dir", "bwrap", who, bw, "--ro-bind", rootfs, "/", "--proc", "/proc", "--dev", "/dev", "/bin/true"))
		} else {
			r.notes = append(r.notes, "bwrap not installed: not measured (apt-get install bubblewrap)")
		}
		if rc, err := exec.LookPath("runc"); err == nil {
			cmds = append(cmds, runcCommand(rc, who, runcBundles[who.name]))
		} else {
			r.notes = append(r.notes, "runc not installed: not measured (apt-get install runc)")
		}
	}

	// Starting each binary alone: the Go runtime and page faults of a
	// static binary, before any container work.
	cmds = append(cmds,
		fixed("start", "minirun", root, minirun, "version"),
		fixed("start", "floor", root, floor, "-noop"))

	// Probe each once; a command that fails is reported, not timed.
	for _, c := range cmds {
		if code, stderr := probe(c); code != 0 {
			c.skipped = fmt.Sprintf("exit %d: %s", code, firstLine(stderr))
			log("%s %s as %s does not run: %s", c.tool, c.group, c.who.name, c.skipped)
		}
	}
	var live []*command
	for _, c := range cmds {
		if c.skipped == "" {
			live = append(live, c)
		}
	}

	// The rounds: every command once per round, in a fresh random order so
	// no command always follows the same neighbour.
	log("%d warm-up + %d measured rounds of %d commands", *warmup, *rounds, len(live))
	rng := rand.New(rand.NewSource(1))
	seq := 0
	for round := 0; round < *warmup+*rounds; round++ {
		order := rng.Perm(len(live))
		for _, i := range order {
			c := live[i]
			seq++
			d, ru, code := timeOne(c, seq)
			if round < *warmup {
				continue
			}
			if code != 0 {
				c.fails++
				continue
			}
			c.times = append(c.times, d)
			c.cpu = append(c.cpu, time.Duration(ru.Utime.Nano()+ru.Stime.Nano()))
			c.sysCPU = append(c.sysCPU, time.Duration(ru.Stime.Nano()))
		}
		if (round+1)%25 == 0 {
			log("round %d/%d", round+1, *warmup+*rounds)
		}
	}
	r.cmds = cmds

	// Encrypted images: the passphrase startup (few rounds), the backend,
	// and luks_test.go's benchmarks.
	log("%d rounds of the passphrase image", *encPassRounds)
	r.cmds = append(r.cmds, passRounds(minirun, r.enc, users, *encPassRounds)...)
	r.enc.backend = encBackend(minirun, r.enc)
	log("go test -bench in the repository (benchtime %s)", *benchtime)
	r.goBench = runGoBench(*goBin, *benchtime)
	if r.goBench.err != "" {
		log("go benchmarks failed: %s", r.goBench.err)
	}

	// Sizes and peak memory.
	log("peak RSS")
	r.sizes(minirun, floor)
	for _, c := range live {
		if kib, err := peakRSS(c.who, c.argv(1<<30), 5); err == nil {
			c.peakKiB = kib
		} else {
			r.notes = append(r.notes, "peak RSS not measured: "+err.Error())
			break
		}
	}
	r.rssBaseline, _ = peakRSS(root, []string{filepath.Join(rootfs, "bin/true")}, 5)
	r.pidInit = pidInitRSS(minirun, images["gzip"], root, "--pid")
	r.noPid = pidInitRSS(minirun, images["gzip"], usr, "")

	// Concurrent launches of one image: loop devices and wall time.
	log("concurrent launches")
	r.conc = concurrent(minirun, conf, images["gzip"], usr)

	// Where one launch spends its time.
	log("strace of one launch")
	r.strace = medianTrace(minirun, images["gzip"], root, 5)
	r.straceFloor = medianTrace(floor, images["gzip"], root, 5)

	r.elapsed = time.Since(start)
	r.users = users
	r.formats = formats
	r.minirunPath, r.floorPath, r.floorSetuidPath = minirun, floor, floorSetuid
	must(os.WriteFile(*out, []byte(r.markdown()), 0644))
	log("wrote %s in %s", *out, r.elapsed.Round(time.Second))
	fmt.Print(r.summary())
}

// fixed is a command whose argv never changes.
func fixed(group, tool string, who *account, argv ...string) *command {
	return &command{group: group, tool: tool, who: who, argv: func(int) []string { return argv }, shown: strings.Join(argv, " ")}
}

func runcCommand(runc string, who *account, bundle string) *command {
	c := &command{group: "dir", tool: "runc", who: who}
	base := []string{runc}
	if who.cred != nil {
		base = append(base, "--root", filepath.Join(bundle, "state"))
	}
	c.argv = func(seq int) []string {
		return append(append([]string{}, base...), "run", "--bundle", bundle, "mrbench-"+strconv.Itoa(os.Getpid())+"-"+strconv.Itoa(seq))
	}
	c.shown = strings.Join(append(append([]string{}, base...), "run", "--bundle", bundle, "ID"), " ")
	return c
}

// setupRunc writes one bundle per account over the same directory: as root
// `runc spec`, as the user `runc spec --rootless`; rootfs read-only, args
// /bin/true, no terminal.
func setupRunc(rootfs string, usr *account) map[string]string {
	bundles := map[string]string{}
	rc, err := exec.LookPath("runc")
	if err != nil {
		return bundles
	}
	for _, who := range []*account{{name: "root"}, usr} {
		dir := filepath.Join(*prefix, "runc-"+who.name)
		os.RemoveAll(dir)
		must(os.MkdirAll(dir, 0755))
		args := []string{"spec"}
		if who.cred != nil {
			must(os.MkdirAll(filepath.Join(dir, "state"), 0700))
			must(os.Chown(dir, int(who.cred.Uid), int(who.cred.Gid)))
			must(os.Chown(filepath.Join(dir, "state"), int(who.cred.Uid), int(who.cred.Gid)))
			args = append(args, "--rootless")
		}
		cmd := exec.Command(rc, args...)
		cmd.Dir = dir
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: who.cred}
		if outp, err := cmd.CombinedOutput(); err != nil {
			fatal("runc spec in %s: %v: %s", dir, err, outp)
		}
		path := filepath.Join(dir, "config.json")
		data, err := os.ReadFile(path)
		must(err)
		var spec map[string]any
		must(json.Unmarshal(data, &spec))
		spec["root"] = map[string]any{"path": rootfs, "readonly": true}
		proc := spec["process"].(map[string]any)
		proc["terminal"] = false
		proc["args"] = []string{"/bin/true"}
		data, err = json.MarshalIndent(spec, "", "\t")
		must(err)
		must(os.WriteFile(path, data, 0644))
		bundles[who.name] = dir
	}
	return bundles
}

// spawn starts argv as who with stdin/stdout on /dev/null and stderr to errw.
func spawn(who *account, argv []string, errw *os.File) (int, error) {
	null, err := os.OpenFile(os.DevNull, os.O_RDWR, 0)
	if err != nil {
		return 0, err
	}
	defer null.Close()
	if errw == nil {
		errw = null
	}
	dir := who.home
	if dir == "" {
		dir = "/"
	}
	return syscall.ForkExec(argv[0], argv, &syscall.ProcAttr{
		Dir:   dir,
		Env:   who.env,
		Files: []uintptr{null.Fd(), null.Fd(), errw.Fd()},
		Sys:   &syscall.SysProcAttr{Credential: who.cred},
	})
}

// timeOne is fork to reaped exit of one launch, and its CPU use. (wait4's
// ru_maxrss is of no use here: Go starts children with CLONE_VFORK|CLONE_VM,
// so it reports the harness's own RSS; peakRSS uses GNU time instead.)
func timeOne(c *command, seq int) (time.Duration, syscall.Rusage, int) {
	argv := c.argv(seq)
	t0 := time.Now()
	var ru syscall.Rusage
	pid, err := spawn(c.who, argv, nil)
	if err != nil {
		return 0, ru, -1
	}
	var ws syscall.WaitStatus
	for {
		_, err = syscall.Wait4(pid, &ws, 0, &ru)
		if err != syscall.EINTR {
			break
		}
	}
	d := time.Since(t0)
	if err != nil || !ws.Exited() {
		return d, ru, -1
	}
	return d, ru, ws.ExitStatus()
}

// peakRSS runs argv under `/usr/bin/time -f %M` reps times as who and
// returns the median peak RSS in KiB. GNU time forks (a real fork, a
// small process), so this includes a little of time itself: see the
// baseline row.
func peakRSS(who *account, argv []string, reps int) (int64, error) {
	gnuTime := "/usr/bin/time"
	if _, err := os.Stat(gnuTime); err != nil {
		return 0, fmt.Errorf("GNU time not installed (apt-get install time)")
	}
	var kibs []int64
	for i := 0; i < reps; i++ {
		f, err := os.CreateTemp("", "bench-rss")
		if err != nil {
			return 0, err
		}
		pid, err := spawn(who, append([]string{gnuTime, "-f", "%M"}, argv...), f)
		if err == nil {
			var ws syscall.WaitStatus
			syscall.Wait4(pid, &ws, 0, nil)
		}
		data, _ := os.ReadFile(f.Name())
		f.Close()
		os.Remove(f.Name())
		lines := strings.Fields(string(data))
		if err != nil || len(lines) == 0 {
			return 0, fmt.Errorf("no output from GNU time: %v", err)
		}
		v, perr := strconv.ParseInt(lines[len(lines)-1], 10, 64)
		if perr != nil {
			return 0, fmt.Errorf("GNU time printed %q", shorten(string(data), 80))
		}
		kibs = append(kibs, v)
	}
	return medianInt(kibs), nil
}

func probe(c *command) (int, string) {
	f, err := os.CreateTemp("", "bench-stderr")
	must(err)
	defer os.Remove(f.Name())
	defer f.Close()
	pid, err := spawn(c.who, c.argv(0), f)
	if err != nil {
		return -1, err.Error()
	}
	var ws syscall.WaitStatus
	syscall.Wait4(pid, &ws, 0, nil)
	msg, _ := os.ReadFile(f.Name())
	code := ws.ExitStatus()
	if !ws.Exited() {
		code = -1
	}
	return code, string(msg)
}

// pidInitResult is the RSS of what remains of minirun with --pid: the
// process the caller started (the waiting parent, outside the container)
// and its child, PID 1 of the container.
type pidInitResult struct {
	cmd, comm, exe, err      string
	rssKiB, anonKiB, fileKiB int64
	children                 int
	child                    procRSS // the first child, when there is one
}

// procRSS is what /proc/PID/status says about one process's memory.
type procRSS struct {
	comm                     string
	exe                      string // what it runs: minirun, or the --pid reaper's memfd
	rssKiB, anonKiB, fileKiB int64
}

func readProcRSS(pid int) procRSS {
	var r procRSS
	status, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	for _, line := range strings.Split(string(status), "\n") {
		for key, dst := range map[string]*int64{"VmRSS:": &r.rssKiB, "RssAnon:": &r.anonKiB, "RssFile:": &r.fileKiB} {
			if v, ok := strings.CutPrefix(line, key); ok {
				if f := strings.Fields(v); len(f) > 0 {
					*dst, _ = strconv.ParseInt(f[0], 10, 64)
				}
			}
		}
		if v, ok := strings.CutPrefix(line, "Name:"); ok {
			r.comm = strings.TrimSpace(v)
		}
	}
	r.exe, _ = os.Readlink(fmt.Sprintf("/proc/%d/exe", pid))
	return r
}

// pidInitRSS starts `minirun exec [flag] IMAGE /bin/sleep 1` and looks at
// the process it started 0.4 s later: with --pid the init minirun leaves,
// without it (default mode) it should be the payload itself.
func pidInitRSS(minirun, image string, who *account, flag string) pidInitResult {
	argv := []string{minirun, "exec", image, "/bin/sleep", "1"}
	if flag != "" {
		argv = []string{minirun, "exec", flag, image, "/bin/sleep", "1"}
	}
	res := pidInitResult{cmd: strings.Join(argv, " ")}
	errf, _ := os.CreateTemp("", "bench-stderr")
	defer os.Remove(errf.Name())
	defer errf.Close()
	pid, err := spawn(who, argv, errf)
	if err != nil {
		res.err = err.Error()
		return res
	}
	time.Sleep(400 * time.Millisecond)
	own := readProcRSS(pid)
	res.comm, res.exe, res.rssKiB, res.anonKiB, res.fileKiB = own.comm, own.exe, own.rssKiB, own.anonKiB, own.fileKiB
	if kids, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", pid, pid)); err == nil {
		f := strings.Fields(string(kids))
		res.children = len(f)
		if len(f) > 0 {
			if child, err := strconv.Atoi(f[0]); err == nil {
				res.child = readProcRSS(child)
			}
		}
	}
	var ws syscall.WaitStatus
	syscall.Wait4(pid, &ws, 0, nil)
	if !ws.Exited() || ws.ExitStatus() != 0 {
		msg, _ := os.ReadFile(errf.Name())
		res.err = fmt.Sprintf("exit %d: %s", ws.ExitStatus(), firstLine(string(msg)))
	}
	return res
}

// concResult is one case of N launches started together.
type concResult struct {
	n          int
	sharing    string // the config line, or "" for compiled-in defaults
	wall       []time.Duration
	maxLoops   int // most loop devices backed by the image at one instant
	distinct   int // distinct loop devices seen over the repetitions (max)
	leftover   int // loop devices still backed by the image 2 s after the last exit
	fails      int
	firstError string
}

func concurrent(minirun, conf, image string, who *account) []concResult {
	var results []concResult
	for _, sharing := range []string{"shared_loop_devices = true", "shared_loop_devices = false"} {
		must(os.WriteFile(conf, []byte(sharing+"\n"), 0644))
		must(os.Chown(conf, 0, 0))
		for _, n := range []int{1, 8, 32} {
			res := concResult{n: n, sharing: sharing}
			for rep := 0; rep < *concReps; rep++ {
				waitNoLoops(image, 5*time.Second)
				wall, maxLoops, distinct, fails, firstErr := launchTogether(minirun, image, who, n)
				res.wall = append(res.wall, wall)
				res.maxLoops = max(res.maxLoops, maxLoops)
				res.distinct = max(res.distinct, distinct)
				res.fails += fails
				if res.firstError == "" {
					res.firstError = firstErr
				}
			}
			time.Sleep(2 * time.Second)
			res.leftover = len(loopsBacking(image))
			results = append(results, res)
		}
	}
	os.Remove(conf)
	return results
}

func launchTogether(minirun, image string, who *account, n int) (time.Duration, int, int, int, string) {
	argv := []string{minirun, "exec", image, "/bin/sleep", "1"}
	errf, _ := os.CreateTemp("", "bench-stderr")
	defer os.Remove(errf.Name())
	defer errf.Close()
	var done atomic.Bool
	seen := map[string]bool{}
	maxLoops := 0
	polled := make(chan struct{})
	go func() {
		defer close(polled)
		for !done.Load() {
			l := loopsBacking(image)
			maxLoops = max(maxLoops, len(l))
			for _, name := range l {
				seen[name] = true
			}
			time.Sleep(10 * time.Millisecond)
		}
	}()
	t0 := time.Now()
	pids := make([]int, 0, n)
	for i := 0; i < n; i++ {
		pid, err := spawn(who, argv, errf)
		if err == nil {
			pids = append(pids, pid)
		}
	}
	fails := n - len(pids)
	for _, pid := range pids {
		var ws syscall.WaitStatus
		syscall.Wait4(pid, &ws, 0, nil)
		if !ws.Exited() || ws.ExitStatus() != 0 {
			fails++
		}
	}
	wall := time.Since(t0)
	done.Store(true)
	<-polled
	msg, _ := os.ReadFile(errf.Name())
	return wall, maxLoops, len(seen), fails, firstLine(string(msg))
}

// loopsBacking lists the loop devices whose backing file is image.
func loopsBacking(image string) []string {
	files, _ := filepath.Glob("/sys/block/loop*/loop/backing_file")
	var names []string
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err == nil && strings.TrimSpace(string(data)) == image {
			names = append(names, filepath.Base(filepath.Dir(filepath.Dir(f))))
		}
	}
	return names
}

func waitNoLoops(image string, limit time.Duration) {
	deadline := time.Now().Add(limit)
	for len(loopsBacking(image)) > 0 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
}

// traceResult summarises `strace -f -T -ttt` of one launch.
type traceResult struct {
	cmd, err   string
	of         int // traced launches this one is the median of
	calls      int
	threads    int // processes/threads seen
	wall       time.Duration
	toPayload  time.Duration // first syscall to the payload's execve
	bySyscall  []syscallTotal
	milestones []milestone
	inSyscalls time.Duration
	waitCalls  int
	waitTime   time.Duration
}

type syscallTotal struct {
	name  string
	calls int
	total time.Duration
}

type milestone struct {
	at   time.Duration // since the first traced syscall
	dur  time.Duration
	what string
}

var (
	straceLine = regexp.MustCompile(`^(\d+)\s+(\d+\.\d+)\s+(.*)$`)
	straceDur  = regexp.MustCompile(`<(\d+\.\d+)>$`)
	resumed    = regexp.MustCompile(`^<\.\.\. (\w+) resumed>`)
	callName   = regexp.MustCompile(`^(\w+)\(`)
	// Steps worth placing on the timeline, by the text of the call.
	milestoneRE = []*regexp.Regexp{
		regexp.MustCompile(`^execve\(`),
		regexp.MustCompile(`^openat2?\([^)]*/img/[a-z]+\.sqfs"`),
		regexp.MustCompile(`^openat\([^)]*minirun\.toml`),
		regexp.MustCompile(`LOOP_CTL_GET_FREE`),
		regexp.MustCompile(`LOOP_CONFIGURE`),
		regexp.MustCompile(`^unshare\(`),
		regexp.MustCompile(`^mount\("/dev/loop`),
		regexp.MustCompile(`^mount\("proc"`),
		regexp.MustCompile(`^(pivot_root|chroot)\(`),
		regexp.MustCompile(`^prctl\(PR_SET_SECCOMP`),
		regexp.MustCompile(`^setresuid\(`),
		regexp.MustCompile(`^close_range\(`),
	}
)

// medianTrace traces n launches and keeps the one whose time to the
// payload's execve is the median: one strace run alone is noisy.
func medianTrace(bin, image string, who *account, n int) traceResult {
	var runs []traceResult
	for i := 0; i < n; i++ {
		t := traceLaunch(bin, image, who)
		if t.err != "" {
			return t
		}
		runs = append(runs, t)
	}
	sort.Slice(runs, func(i, j int) bool { return runs[i].toPayload < runs[j].toPayload })
	t := runs[len(runs)/2]
	t.of = n
	return t
}

func traceLaunch(bin, image string, who *account) traceResult {
	st, err := exec.LookPath("strace")
	if err != nil {
		return traceResult{err: "strace not installed (apt-get install strace)"}
	}
	argv := []string{bin, "exec", image, "/bin/true"}
	if filepath.Base(bin) == "floor" {
		argv = []string{bin, image, "/bin/true"}
	}
	logf, err := os.CreateTemp("", "bench-strace")
	must(err)
	logf.Close()
	defer os.Remove(logf.Name())
	res := traceResult{cmd: "strace -f -T -ttt -o LOG " + strings.Join(argv, " ")}
	cmd := exec.Command(st, append([]string{"-f", "-T", "-ttt", "-o", logf.Name()}, argv...)...)
	cmd.Env = who.env
	cmd.Dir = who.home
	if outp, err := cmd.CombinedOutput(); err != nil {
		res.err = fmt.Sprintf("%v: %s", err, firstLine(string(outp)))
		return res
	}
	f, err := os.Open(logf.Name())
	must(err)
	defer f.Close()
	parseTrace(f, &res)
	return res
}

// waitCalls are where idle runtime threads block; their time is not work.
var waitCalls = map[string]bool{"futex": true, "nanosleep": true, "epoll_pwait": true, "epoll_wait": true, "wait4": true, "waitid": true}

func parseTrace(r io.Reader, res *traceResult) {
	type pendingCall struct {
		ts   float64
		text string
	}
	totals := map[string]*syscallTotal{}
	pending := map[string]pendingCall{} // per thread: a call strace split in two
	pids := map[string]bool{}
	var first, last, payload float64
	execs := 0
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		m := straceLine.FindStringSubmatch(sc.Text())
		if m == nil {
			continue
		}
		pid, text := m[1], m[3]
		pids[pid] = true
		ts, _ := strconv.ParseFloat(m[2], 64)
		if first == 0 {
			first = ts
		}
		last = ts
		if head, ok := strings.CutSuffix(text, " <unfinished ...>"); ok {
			pending[pid] = pendingCall{ts, head}
			continue
		}
		var name string
		if rm := resumed.FindStringSubmatch(text); rm != nil {
			name = rm[1]
			from := pid
			if p, ok := pending[pid]; !ok || !strings.HasPrefix(p.text, name+"(") {
				// An execve from a non-leader thread resumes under the
				// leader's pid ("superseded by execve").
				for other, p := range pending {
					if strings.HasPrefix(p.text, name+"(") {
						from = other
						break
					}
				}
			}
			if p, ok := pending[from]; ok && strings.HasPrefix(p.text, name+"(") {
				ts, text = p.ts, p.text+strings.TrimPrefix(text, rm[0])
				delete(pending, from)
			}
		} else if cm := callName.FindStringSubmatch(text); cm != nil {
			name = cm[1]
		} else {
			continue // signals, exits
		}
		res.calls++
		if name == "execve" {
			execs++
			if execs == 2 {
				payload = ts
			}
		}
		var d time.Duration
		if dm := straceDur.FindStringSubmatch(text); dm != nil {
			secs, _ := strconv.ParseFloat(dm[1], 64)
			d = time.Duration(secs * float64(time.Second))
		}
		t := totals[name]
		if t == nil {
			t = &syscallTotal{name: name}
			totals[name] = t
		}
		t.calls++
		t.total += d
		if waitCalls[name] {
			res.waitCalls++
			res.waitTime += d
		} else {
			res.inSyscalls += d
		}
		for _, re := range milestoneRE {
			if re.MatchString(text) {
				res.milestones = append(res.milestones, milestone{
					at: time.Duration((ts - first) * float64(time.Second)), dur: d, what: shorten(text, 100)})
				break
			}
		}
	}
	res.threads = len(pids)
	res.wall = time.Duration((last - first) * float64(time.Second))
	if payload > 0 {
		res.toPayload = time.Duration((payload - first) * float64(time.Second))
	}
	for _, t := range totals {
		if !waitCalls[t.name] {
			res.bySyscall = append(res.bySyscall, *t)
		}
	}
	sort.Slice(res.bySyscall, func(i, j int) bool { return res.bySyscall[i].total > res.bySyscall[j].total })
	sort.SliceStable(res.milestones, func(i, j int) bool { return res.milestones[i].at < res.milestones[j].at })
}

// --- setup helpers ---

func checkPrefix(p string) {
	if !filepath.IsAbs(p) || filepath.Clean(p) != p || p == "/tmp" || strings.HasPrefix(p, "/tmp/") {
		fatal("prefix %s must be a clean absolute path outside /tmp", p)
	}
	// Every existing directory on the way must be root-owned and not
	// writable by others, or minirun rightly distrusts its configuration.
	for d := filepath.Dir(p); ; d = filepath.Dir(d) {
		var st unix.Stat_t
		must(unix.Stat(d, &st))
		if st.Uid != 0 || st.Mode&0022 != 0 {
			fatal("%s (above the prefix) must be root-owned and not group/other-writable", d)
		}
		if d == "/" {
			break
		}
	}
	if err := os.MkdirAll(p, 0755); err != nil {
		fatal("create %s: %v", p, err)
	}
	must(os.Chown(p, 0, 0))
	must(os.Chmod(p, 0755))
}

func ensureUser(name string) *account {
	u, err := user.Lookup(name)
	if err != nil {
		fmt.Printf("bench: creating user %s (useradd -m -U %s)\n", name, name)
		run("useradd", "-m", "-U", name)
		u, err = user.Lookup(name)
		must(err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	home := u.HomeDir
	if st, err := os.Stat(home); err != nil || !st.IsDir() {
		home = "/"
	}
	return &account{
		name: name,
		cred: &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), Groups: []uint32{uint32(gid)}},
		home: home,
		env:  []string{"PATH=/usr/local/bin:/usr/bin:/bin", "HOME=" + home, "USER=" + name, "LANG=C"},
	}
}

// installFile copies src to dst with owner and mode, via a rename so a
// running copy is never rewritten; chmod after chown keeps the setuid bit.
func installFile(src, dst string, uid, gid int, mode os.FileMode) {
	data, err := os.ReadFile(src)
	if err != nil {
		fatal("read %s (build it first: make bench): %v", src, err)
	}
	tmp := dst + ".new"
	os.Remove(tmp)
	must(os.WriteFile(tmp, data, 0700))
	must(os.Chown(tmp, uid, gid))
	must(os.Chmod(tmp, mode))
	must(os.Rename(tmp, dst))
}

func run(name string, args ...string) {
	cmd := exec.Command(name, args...)
	if outp, err := cmd.CombinedOutput(); err != nil {
		fatal("%s %s: %v\n%s", name, strings.Join(args, " "), err, outp)
	}
}

func firstLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = s[:i]
	}
	return shorten(s, 160)
}

func shorten(s string, n int) string {
	if len(s) > n {
		return s[:n] + "…"
	}
	return s
}

func must(err error) {
	if err != nil {
		_, file, line, _ := runtime.Caller(1)
		fatal("%s:%d: %v", filepath.Base(file), line, err)
	}
}

func fatal(format string, a ...any) {
	fmt.Fprintf(os.Stderr, "bench: "+format+"\n", a...)
	os.Exit(1)
}

func kib(n int64) string { return fmt.Sprintf("%d KiB", (n+1023)/1024) }

func cmdOutput(name string, args ...string) string {
	outp, err := exec.Command(name, args...).CombinedOutput()
	if err != nil && len(outp) == 0 {
		return "not installed"
	}
	return firstLine(string(bytes.TrimSpace(outp)))
}

// sifImage is a SIF and where its squashfs partition lies in it.
type sifImage struct {
	path         string
	offset, size int64
}

// wrapSIF packs the squashfs at sqfs into a SIF at dst with the reference
// library (a definition file first, so the partition does not start the
// data area), and reads the partition's place back from its descriptor for
// the floor, which does no SIF parsing of its own.
func wrapSIF(sqfs, dst string) sifImage {
	f, err := os.Open(sqfs)
	must(err)
	defer f.Close()
	def, err := sif.NewDescriptorInput(sif.DataDeffile, strings.NewReader("Bootstrap: scratch\n"))
	must(err)
	part, err := sif.NewDescriptorInput(sif.DataPartition, f,
		sif.OptPartitionMetadata(sif.FsSquash, sif.PartPrimSys, runtime.GOARCH))
	must(err)
	img, err := sif.CreateContainerAtPath(dst, sif.OptCreateWithDescriptors(def, part))
	must(err)
	d, err := img.GetDescriptor(sif.WithPartitionType(sif.PartPrimSys))
	must(err)
	out := sifImage{path: dst, offset: d.Offset(), size: d.Size()}
	must(img.UnloadContainer())
	must(os.Chmod(dst, 0644))
	return out
}
