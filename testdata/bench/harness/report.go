// report.go turns the measurements into docs/benchmarks.md: machine, exact
// commands, Markdown tables of medians and ratios, and the targets
// next to what was measured (reported, never asserted).
package main

import (
	"fmt"
	"os"
	"runtime"
	"sort"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

type report struct {
	start                                   time.Time
	elapsed                                 time.Duration
	host                                    [][2]string
	imageCmds                               []string
	imageSizes                              [][2]string
	cmds                                    []*command
	users                                   []*account
	formats                                 []string
	notes                                   []string
	binSizes                                [][2]string
	minirunSize                             int64
	pidInit, noPid                          pidInitResult
	rssBaseline                             int64
	conc                                    []concResult
	strace, straceFloor                     traceResult
	minirunPath, floorPath, floorSetuidPath string
	enc                                     encImages
	goBench                                 goBenchResult
}

func (r *report) machine() {
	var u unix.Utsname
	unix.Uname(&u)
	cpu := "unknown"
	if data, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(data), "\n") {
			if v, ok := strings.CutPrefix(line, "model name"); ok {
				cpu = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(v), ":"))
				break
			}
		}
	}
	osName := "unknown"
	if data, err := os.ReadFile("/etc/os-release"); err == nil {
		for _, line := range strings.Split(string(data), "\n") {
			if v, ok := strings.CutPrefix(line, "PRETTY_NAME="); ok {
				osName = strings.Trim(v, `"`)
			}
		}
	}
	mem := "unknown"
	var si unix.Sysinfo_t
	if unix.Sysinfo(&si) == nil {
		mem = fmt.Sprintf("%.1f GiB", float64(si.Totalram)*float64(si.Unit)/(1<<30))
	}
	ver := *version
	if ver == "" {
		ver = "unknown"
	}
	r.host = [][2]string{
		{"date", r.start.UTC().Format("2006-01-02 15:04 UTC")},
		{"CPU", cpu},
		{"nproc", fmt.Sprint(runtime.NumCPU())},
		{"memory", mem},
		{"kernel", unix.ByteSliceToString(u.Release[:])},
		{"OS", osName},
		{"minirun", ver},
		{"Go", runtime.Version()},
		{"bwrap", cmdOutput("bwrap", "--version")},
		{"runc", cmdOutput("runc", "--version")},
		{"mksquashfs", cmdOutput("mksquashfs", "-version")},
	}
}

func (r *report) sizes(minirun, floor string) {
	for _, p := range []string{minirun, floor} {
		if st, err := os.Stat(p); err == nil {
			r.binSizes = append(r.binSizes, [2]string{p, fmt.Sprintf("%d bytes (%.2f MiB)", st.Size(), float64(st.Size())/(1<<20))})
			if p == minirun {
				r.minirunSize = st.Size()
			}
		}
	}
}

// --- statistics ---

func quantile(ds []time.Duration, q float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := append([]time.Duration{}, ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	// Median of an even count is the mean of the middle two.
	pos := q * float64(len(s)-1)
	lo := int(pos)
	hi := lo
	if lo+1 < len(s) {
		hi = lo + 1
	}
	frac := pos - float64(lo)
	return s[lo] + time.Duration(frac*float64(s[hi]-s[lo]))
}

func mean(ds []time.Duration) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	var sum time.Duration
	for _, d := range ds {
		sum += d
	}
	return sum / time.Duration(len(ds))
}

func medianInt(v []int64) int64 {
	if len(v) == 0 {
		return 0
	}
	s := append([]int64{}, v...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func kibOrDash(k int64) string {
	if k == 0 {
		return "–"
	}
	return fmt.Sprintf("%d KiB", k)
}

func ms(d time.Duration) string { return fmt.Sprintf("%.2f ms", float64(d)/1e6) }

func (r *report) find(group, tool, who string) *command {
	for _, c := range r.cmds {
		if c.group == group && c.tool == tool && c.who.name == who {
			return c
		}
	}
	return nil
}

func median(c *command) (time.Duration, bool) {
	if c == nil || c.skipped != "" || len(c.times) == 0 {
		return 0, false
	}
	return quantile(c.times, 0.5), true
}

// cell is a command's median, or why there is none.
func cell(c *command) string {
	if c == nil {
		return "not installed"
	}
	if c.skipped != "" {
		return "did not run"
	}
	m, ok := median(c)
	if !ok {
		return "every launch failed"
	}
	return ms(m)
}

func ratio(a, b *command) string {
	ma, ok1 := median(a)
	mb, ok2 := median(b)
	if !ok1 || !ok2 || mb == 0 {
		return "–"
	}
	return fmt.Sprintf("%.2fx", float64(ma)/float64(mb))
}

func diff(a, b *command) string {
	ma, ok1 := median(a)
	mb, ok2 := median(b)
	if !ok1 || !ok2 {
		return "–"
	}
	return fmt.Sprintf("%+.2f ms", float64(ma-mb)/1e6)
}

func ratioVal(a, b *command) (float64, bool) {
	ma, ok1 := median(a)
	mb, ok2 := median(b)
	if !ok1 || !ok2 || mb == 0 {
		return 0, false
	}
	return float64(ma) / float64(mb), true
}

func userLabel(a *account) string {
	if a.cred == nil {
		return "root"
	}
	return a.name + " (setuid)"
}

// --- the document ---

func (r *report) markdown() string {
	var b strings.Builder
	p := func(format string, a ...any) { fmt.Fprintf(&b, format, a...) }
	user := r.users[1]

	p("# minirun benchmarks\n\n")
	p("Generated by `make bench` (testdata/bench/harness) on %s; the whole run took %s. ", r.host[0][1], r.elapsed.Round(time.Second))
	p("Do not edit by hand: rerun `make bench` (as root) to regenerate. ")
	p("Every timing is the **median** of %d launches, measured fork to reaped exit by the harness. ", *rounds)
	p("All commands are alternated in one run: each round runs every command once, in a freshly shuffled order, after %d unmeasured warm-up rounds. ", *warmup)
	p("Page cache is warm. Ratios divide medians. Timings vary from run to run and machine to machine; they are reported, not asserted.\n\n")

	p("## Machine\n\n| | |\n| --- | --- |\n")
	for _, h := range r.host {
		p("| %s | %s |\n", h[0], escape(h[1]))
	}
	p("\n")

	p("## What runs\n\n")
	p("- **minirun**: built with `CGO_ENABLED=0 go build -trimpath -ldflags \"-s -w -X main.sysconfdir=%s/etc\"`, installed root:root 04755 at `%s`; no configuration file (compiled-in defaults) except in the concurrency section.\n", *prefix, r.minirunPath)
	p("- **floor** (`testdata/bench/floor`): only the kernel work one launch cannot avoid: open image, `LOOP_CTL_GET_FREE` + `LOOP_CONFIGURE` (read-only, autoclear), `unshare(CLONE_NEWNS)` on a locked thread, `mount(\"/\", MS_REC|MS_SLAVE)`, squashfs mounted read-only at a fixed staging directory, `chroot`, `execve`. For a SIF it is given the partition's offset and size, which go into the same `LOOP_CONFIGURE`. Directory variant: one bind mount, `chroot`, `execve`. As the user it is a setuid-root copy (`%s`, root:%s 04750, deleted after the run) that also does `setresgid`/`setresuid` back to the caller before `execve`, as raw calls on the exec thread only (`execve` ends the other threads, as minirun's does).\n", r.floorSetuidPath, user.name)
	p("- **spec floor** (`floor -spec`, `testdata/bench/floor/spec.go`): the floor plus the container the security spec requires of a default launch, done with raw calls (see the spec floor table); the same binary, run the same way.\n")
	p("- **bwrap** and **runc** run the same content as a directory (`%s/img/rootfs`); they have no squashfs path. runc uses a `runc spec` bundle as root and a `runc spec --rootless` bundle as the user, with `root.path` = that directory, `readonly: true`, `terminal: false`, args `[\"/bin/true\"]`; `runc run` deletes each container when it exits.\n", *prefix)
	p("- Unprivileged rows run as `%s` (uid %d): the harness sets uid, gid and groups before `execve`, with HOME=%s as the working directory, as a shell would.\n\n", user.name, user.cred.Uid, user.home)
	p("Images (rootfs: busybox-static, %s):\n\n```sh\n", "testdata/mkrootfs.sh")
	for _, c := range r.imageCmds {
		p("%s\n", c)
	}
	p("```\n\n| image | size |\n| --- | --- |\n")
	for _, s := range r.imageSizes {
		p("| %s | %s |\n", s[0], s[1])
	}
	p("\nEach SIF holds the squashfs of the same name unchanged, at the offset its descriptor gives (the floor is handed that offset and size). Encrypted images are measured in their own section below, as SIFs built by minirun.\n\n")

	p("## Startup on squashfs: minirun against the floor\n\n")
	p("`minirun exec IMG /bin/true` against `floor IMG /bin/true`; the same image, the same user.\n\n")
	p("| image | user | minirun | floor | minirun / floor | minirun − floor |\n| --- | --- | ---: | ---: | ---: | ---: |\n")
	for _, f := range r.formats {
		for _, a := range r.users {
			m, fl := r.find(f, "minirun", a.name), r.find(f, "floor", a.name)
			p("| %s | %s | %s | %s | %s | %s |\n", f, userLabel(a), cell(m), cell(fl), ratio(m, fl), diff(m, fl))
		}
	}
	p("\n")

	p("## Startup on SIF: minirun against the floor\n\n")
	p("`minirun exec IMG.sif /bin/true` against `floor -part OFFSET SIZE IMG.sif /bin/true`: the same squashfs as above inside a SIF; minirun reads the SIF header and descriptors itself, the floor is given the partition's place.\n\n")
	p("| image | user | minirun | floor | minirun / floor | minirun − floor |\n| --- | --- | ---: | ---: | ---: | ---: |\n")
	for _, f := range r.formats {
		for _, a := range r.users {
			m, fl := r.find("sif-"+f, "minirun", a.name), r.find("sif-"+f, "floor", a.name)
			p("| %s SIF | %s | %s | %s | %s | %s |\n", f, userLabel(a), cell(m), cell(fl), ratio(m, fl), diff(m, fl))
		}
	}
	p("\n")

	p("## Startup on SIF: the container the spec requires\n\n")
	p("The floor does only what the issue names. The spec floor (`floor -spec -part OFFSET SIZE IMG.sif /bin/true`, `testdata/bench/floor/spec.go`) adds, with raw calls and nothing else, the container the security spec requires of every default launch and which minirun builds: the namespaces, the R3 mountinfo checks before and after, `/proc` (with the host's `hidepid=`), read-only `/sys`, the `/dev` tmpfs with its six checked device binds, devpts and `/dev/shm`, the `/tmp`, `/var/tmp` and home binds (a home missing from the image gets a tmpfs laid over its parent), for a user the passwd and group entries bound from a session tmpfs, `resolv.conf` and `hosts`, `pivot_root` and the detach, and R13: bounding set, TIOCSTI filter, ids, capabilities, ambient set, no_new_privs for a user, and the read-back. It has no configuration, policy, grants, loop sharing or limits, caller-side opening, SIF parsing or messages: what is left of minirun − spec floor is minirun's own.\n\n")
	p("| image | user | floor | spec floor | minirun | spec floor / floor | minirun / spec floor | minirun − spec floor |\n| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |\n")
	for _, f := range r.formats {
		for _, a := range r.users {
			fl, sp, m := r.find("sif-"+f, "floor", a.name), r.find("sif-"+f, "spec-floor", a.name), r.find("sif-"+f, "minirun", a.name)
			p("| %s SIF | %s | %s | %s | %s | %s | %s | %s |\n", f, userLabel(a), cell(fl), cell(sp), cell(m), ratio(sp, fl), ratio(m, sp), diff(m, sp))
		}
	}
	p("\n")

	if m, f := r.find("start", "minirun", "root"), r.find("start", "floor", "root"); m != nil && f != nil {
		p("Starting the binary alone, no container: `minirun version` %s, `floor -noop` %s (%s).\n\n", cell(m), cell(f), diff(m, f))
	}

	p("## Startup on a directory: minirun, bwrap, runc\n\n")
	p("Same busybox tree as a directory. Ratios are to the directory floor (bind mount, chroot, exec). The spec floor (`floor -spec -dir`) builds the container minirun builds, as in the SIF section; bwrap's (`--ro-bind DIR / --proc /proc --dev /dev`) is a smaller one: no `/sys`, no home or `/tmp` binds, no passwd entries, `/dev` from bwrap's own list, no capability read-back.\n\n")
	p("| launcher |")
	for _, a := range r.users {
		p(" %s | ratio to floor | − floor |", userLabel(a))
	}
	p("\n| --- |")
	for range r.users {
		p(" ---: | ---: | ---: |")
	}
	p("\n")
	for _, tool := range []string{"floor", "spec-floor", "minirun", "bwrap", "runc"} {
		p("| %s |", tool)
		for _, a := range r.users {
			c, fl := r.find("dir", tool, a.name), r.find("dir", "floor", a.name)
			p(" %s | %s | %s |", cell(c), ratio(c, fl), diff(c, fl))
		}
		p("\n")
	}
	p("| minirun / bwrap |")
	for _, a := range r.users {
		p(" %s | | |", ratio(r.find("dir", "minirun", a.name), r.find("dir", "bwrap", a.name)))
	}
	p("\n\n")

	p("## Every command\n\n")
	p("p10/p90 show the spread. CPU is the launch's user+system CPU time from `wait4`'s rusage, payload included, system part in brackets; a **mean**, not a median, because the kernel may account CPU time in whole ticks and only the mean of such samples is fair. The `start` rows run each binary without launching anything (`minirun version`, `floor -noop`): the cost of starting a static Go binary of that size. Peak RSS is `/usr/bin/time -f %%M` over 5 more launches (median): the largest resident set of the launcher and, after `execve`, the payload, in the process GNU time waits for (for runc, also its waited-for children). GNU time's own forked copy counts too: `/usr/bin/time -f %%M %s/img/rootfs/bin/true` (static busybox, no container) gives %d KiB.\n\n", *prefix, r.rssBaseline)
	p("| image | user | command | median | p10 | p90 | CPU (sys) | peak RSS | launches | failed |\n| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n")
	for _, c := range r.cmds {
		if c.skipped != "" {
			p("| %s | %s | `%s` | did not run: %s | | | | | 0 | |\n", c.group, userLabel(c.who), c.shown, escape(c.skipped))
			continue
		}
		p("| %s | %s | `%s` | %s | %s | %s | %s (%s) | %s | %d | %d |\n", c.group, userLabel(c.who), c.shown,
			ms(quantile(c.times, 0.5)), ms(quantile(c.times, 0.1)), ms(quantile(c.times, 0.9)),
			ms(mean(c.cpu)), ms(mean(c.sysCPU)), kibOrDash(c.peakKiB), len(c.times), c.fails)
	}
	p("\n")

	p("## Size and memory\n\n| what | value |\n| --- | --- |\n")
	for _, s := range r.binSizes {
		p("| size of `%s` | %s |\n", s[0], s[1])
	}
	for _, row := range []struct{ group, tool, who, label string }{
		{"gzip", "minirun", "root", "`minirun exec gzip.sqfs /bin/true` as root"},
		{"gzip", "minirun", user.name, "`minirun exec gzip.sqfs /bin/true` as " + user.name + " (setuid)"},
		{"dir", "minirun", "root", "`minirun exec rootfs /bin/true` as root"},
		{"gzip", "floor", "root", "the floor, gzip, root"},
		{"dir", "bwrap", "root", "bwrap, root"},
		{"dir", "runc", "root", "runc, root"},
	} {
		if c := r.find(row.group, row.tool, row.who); c != nil && c.peakKiB > 0 {
			p("| peak RSS of %s (GNU time %%M, median of 5) | %d KiB |\n", row.label, c.peakKiB)
		}
	}
	if r.rssBaseline > 0 {
		p("| the same measure for static busybox `true` with no container (GNU time's share) | %d KiB |\n", r.rssBaseline)
	}
	if r.pidInit.err != "" {
		p("| RSS of what remains with `--pid` (`%s`) | not measured: %s |\n", r.pidInit.cmd, escape(r.pidInit.err))
	} else {
		p("| VmRSS of the process left running with `--pid` (`%s`, 0.4 s in; its name: %s; it runs %s; it waits outside the container) | %d KiB (RssAnon %d KiB, RssFile %d KiB) |\n", r.pidInit.cmd, r.pidInit.comm, r.pidInit.exe, r.pidInit.rssKiB, r.pidInit.anonKiB, r.pidInit.fileKiB)
		if c := r.pidInit.child; c.comm != "" {
			p("| VmRSS of its child, PID 1 of the container (name: %s; it runs %s) | %d KiB (RssAnon %d KiB, RssFile %d KiB) |\n", c.comm, c.exe, c.rssKiB, c.anonKiB, c.fileKiB)
		}
	}
	if r.noPid.err != "" {
		p("| default mode: what runs under the PID the caller started | not measured: %s |\n", escape(r.noPid.err))
	} else {
		p("| default mode: the process under the PID the caller started (`%s` as %s, 0.4 s in) | name %s, %d children, VmRSS %d KiB |\n", r.noPid.cmd, user.name, r.noPid.comm, r.noPid.children, r.noPid.rssKiB)
	}
	p("\n")

	p("## Concurrent launches of one image: loop devices\n\n")
	p("N copies of `%s exec %s/img/gzip.sqfs /bin/sleep 1` started together as %s, %d repetitions each, with `%s/etc/minirun/minirun.toml` holding the line shown. ", r.minirunPath, *prefix, user.name, *concReps, *prefix)
	p("Loop devices are counted every 10 ms as `/sys/block/loop*/loop/backing_file` naming the image. Wall time is from the first fork to the last exit (median over the repetitions).\n\n")
	p("| config | N | wall (median) | loop devices at once (max) | distinct loop devices in one run (max) | failed launches | left attached 2 s later |\n| --- | ---: | ---: | ---: | ---: | ---: | ---: |\n")
	for _, c := range r.conc {
		fail := fmt.Sprint(c.fails)
		if c.fails > 0 && c.firstError != "" {
			fail += ": " + escape(c.firstError)
		}
		p("| `%s` | %d | %s | %d | %d | %s | %d |\n", c.sharing, c.n, ms(quantile(c.wall, 0.5)), c.maxLoops, c.distinct, fail, c.leftover)
	}
	p("\n")

	p("## Where one launch spends its time\n\n")
	p("Phase by phase against the floor, as root and as a user, and the PEM-encrypted launch against its twin: [launch-profile.md](launch-profile.md) (`testdata/bench/phases/phases.py`, by hand, not regenerated here). What remains beyond the floor is spread thinly, with no single large step. Most of it is the container the spec requires, which the spec floor table above measures on its own; minirun − spec floor is minirun's own work (configuration, policy, grants, opening as the caller, SIF parsing, loop sharing and limits) and a cold process: a larger Go binary to initialise and more code and heap to fault in. That file measures both. The traces below show the syscalls.\n\n")
	p("Why gzip is slow for everyone: each launch mounts a new squashfs superblock on a fresh loop device, so the image's decompressed page cache starts empty even though the image file itself is cached; the payload's `execve` then decompresses the parts of the 1.9 MB static busybox it touches. ")
	if d, ok := r.straceFloor.payloadExec(); ok {
		p("In the floor's trace below, that one `execve` takes %s of its %s. ", ms(d), ms(r.straceFloor.wall))
	}
	p("So the compressed rows measure the decompressor as much as the launcher; the uncompressed (`none`) and directory rows show the launcher's own cost best. Launches that overlap in time share the superblock when they share the loop device, which is what `shared_loop_devices` buys.\n\n")
	r.traceSection(&b, "minirun", r.strace)
	r.traceSection(&b, "floor", r.straceFloor)

	r.encryptedSection(&b)

	p("## Against the targets of issue 6\n\n")
	p("| target | measured |\n| --- | --- |\n")
	for _, f := range r.formats {
		for _, a := range r.users {
			if v, ok := ratioVal(r.find("sif-"+f, "minirun", a.name), r.find("sif-"+f, "floor", a.name)); ok {
				p("| SIF (%s) startup within 1.25x of the floor, %s | %.2fx (%s) |\n", f, userLabel(a), v, verdict(v <= 1.25))
			}
		}
	}
	for _, f := range r.formats {
		for _, a := range r.users {
			if v, ok := ratioVal(r.find(f, "minirun", a.name), r.find(f, "floor", a.name)); ok {
				p("| bare squashfs (%s) startup within 1.25x of the floor, %s | %.2fx (%s) |\n", f, userLabel(a), v, verdict(v <= 1.25))
			}
		}
	}
	for _, a := range r.users {
		if v, ok := ratioVal(r.find("dir", "minirun", a.name), r.find("dir", "bwrap", a.name)); ok {
			p("| directory startup at most bubblewrap's, %s | %.2fx bwrap (%s) |\n", userLabel(a), v, verdict(v <= 1.0))
		}
	}
	for _, c := range r.conc {
		if c.n == 32 && c.sharing == "shared_loop_devices = true" {
			p("| 32 concurrent launches of one image use one loop device | %d at once, %d distinct (%s) |\n", c.maxLoops, c.distinct, verdict(c.distinct == 1 && c.fails == 0))
		}
	}
	if r.minirunSize > 0 {
		p("| installed binary at most 5 MiB | %.2f MiB (%s) |\n", float64(r.minirunSize)/(1<<20), verdict(r.minirunSize <= 5<<20))
	}
	if r.noPid.err == "" {
		p("| default mode: no minirun process remains after `execve` | the started PID runs %s with %d children (%s) |\n", r.noPid.comm, r.noPid.children, verdict(r.noPid.comm == "sleep" && r.noPid.children == 0))
	}
	if r.pidInit.err == "" {
		c := r.pidInit.child
		what := "both are the reaper program (reaper.go), a few hundred bytes of code from a sealed memfd"
		if !strings.HasPrefix(r.pidInit.exe, "/memfd:minirun-init") || !strings.HasPrefix(c.exe, "/memfd:minirun-init") {
			what = "minirun's Go runtime; the file-backed rest are the binary's page-cache pages, shared by every minirun process"
		}
		p("| with `--pid`, the remaining init a few hundred KiB of RSS | the waiting parent VmRSS %d KiB (anonymous %d KiB), the container's init %d KiB (anonymous %d KiB): %s (%s) |\n",
			r.pidInit.rssKiB, r.pidInit.anonKiB, c.rssKiB, c.anonKiB, what, verdict(r.pidInit.rssKiB <= 512 && c.rssKiB <= 512))
	}
	p("\n")
	p("## Against the targets of issue 4\n\n| target | measured |\n| --- | --- |\n")
	for _, a := range r.users {
		pl, en := r.find("sif", "minirun", a.name), r.find("sif-pem", "minirun", a.name)
		if ma, ok1 := median(en); ok1 {
			if mb, ok2 := median(pl); ok2 {
				p("| a PEM-encrypted image starts within a few milliseconds of its unencrypted twin, %s | %s (%.2fx) |\n", userLabel(a), diff(en, pl), float64(ma)/float64(mb))
			}
		}
	}
	p("\n")
	for _, n := range r.notes {
		p("- %s\n", n)
	}
	return b.String()
}

func (r *report) traceSection(b *strings.Builder, name string, t traceResult) {
	p := func(format string, a ...any) { fmt.Fprintf(b, format, a...) }
	p("### %s\n\n", name)
	if t.err != "" {
		p("Not traced: %s\n\n", escape(t.err))
		return
	}
	p("`%s` as root (gzip image), the launch with the median time to the payload's `execve` of %d traced. strace slows every syscall, so these times are inflated; the shape is what matters. ", t.cmd, t.of)
	p("%d syscalls in %d threads/processes; %s from the first syscall to the payload's `execve`, %s to exit; %s inside syscalls that do work, and %d waits (`futex`, `nanosleep`, `epoll_pwait`: idle runtime threads) taking %s, left out below.\n\n",
		t.calls, t.threads, ms(t.toPayload), ms(t.wall), ms(t.inSyscalls), t.waitCalls, ms(t.waitTime))
	if len(t.milestones) > 0 {
		p("Timeline:\n\n| at | took | call |\n| ---: | ---: | --- |\n")
		for _, m := range t.milestones {
			p("| %s | %s | `%s` |\n", ms(m.at), ms(m.dur), escape(m.what))
		}
		p("\n")
	}
	p("Syscalls by total time (all threads, waits left out):\n\n| syscall | calls | total |\n| --- | ---: | ---: |\n")
	for i, s := range t.bySyscall {
		if i == 12 {
			break
		}
		p("| %s | %d | %s |\n", s.name, s.calls, ms(s.total))
	}
	p("\n")
}

// payloadExec is how long the payload's execve took in the trace.
func (t traceResult) payloadExec() (time.Duration, bool) {
	n := 0
	for _, m := range t.milestones {
		if strings.HasPrefix(m.what, "execve(") {
			n++
			if n == 2 {
				return m.dur, true
			}
		}
	}
	return 0, false
}

func verdict(ok bool) string {
	if ok {
		return "met"
	}
	return "not met"
}

func escape(s string) string {
	return strings.NewReplacer("|", `\|`, "\n", " ", "`", "'").Replace(s)
}

// summary is what the terminal shows at the end.
func (r *report) summary() string {
	var b strings.Builder
	for _, f := range r.formats {
		for _, a := range r.users {
			m, fl := r.find(f, "minirun", a.name), r.find(f, "floor", a.name)
			fmt.Fprintf(&b, "%-5s %-18s minirun %-12s floor %-12s %s\n", f, userLabel(a), cell(m), cell(fl), ratio(m, fl))
		}
	}
	for _, f := range r.formats {
		for _, a := range r.users {
			m, fl := r.find("sif-"+f, "minirun", a.name), r.find("sif-"+f, "floor", a.name)
			sp := r.find("sif-"+f, "spec-floor", a.name)
			fmt.Fprintf(&b, "%-9s %-18s minirun %-12s floor %-12s %s  spec floor %-12s %s of floor, minirun %s of it\n", "sif-"+f, userLabel(a), cell(m), cell(fl), ratio(m, fl), cell(sp), ratio(sp, fl), ratio(m, sp))
		}
	}
	for _, a := range r.users {
		fmt.Fprintf(&b, "dir   %-18s minirun %-12s floor %-12s spec floor %-12s bwrap %-12s runc %s\n", userLabel(a),
			cell(r.find("dir", "minirun", a.name)), cell(r.find("dir", "floor", a.name)), cell(r.find("dir", "spec-floor", a.name)),
			cell(r.find("dir", "bwrap", a.name)), cell(r.find("dir", "runc", a.name)))
	}
	for _, a := range r.users {
		pl, en, pw := r.find("sif", "minirun", a.name), r.find("sif-pem", "minirun", a.name), r.find("sif-pass", "minirun", a.name)
		fmt.Fprintf(&b, "sif   %-18s plain %-12s pem %-12s %s %s; passphrase %s\n", userLabel(a), cell(pl), cell(en), ratio(en, pl), diff(en, pl), cell(pw))
	}
	for _, g := range r.goBench.benches {
		fmt.Fprintf(&b, "go bench %-30s %s %.1f MB/s\n", g.name, nsOp(g.nsOp), g.mbS)
	}
	return b.String()
}
