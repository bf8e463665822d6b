#!/usr/bin/env python3
"""Where a launch spends its time, phase by phase (docs/launch-profile.md).

Copies the repository, puts a CLOCK_MONOTONIC timestamp at each phase
boundary of the launch (exec.go, ns.go, crypt.go, luks.go) and of the floor,
builds both, and runs them alternately N times, as root or as USER. Each
process writes its timestamps to stderr just before execve; the parent's own
timestamps around the spawn and after the exit close the timeline. Prints
the median of every phase as a Markdown table.

Needs root, Go, python3 and the images of `make bench` (BENCH_PREFIX).
The markers are found by exact text: when the code moves, this script
stops with the text it could not find, rather than measure the wrong thing.

usage: phases.py [-n N] [--user NAME] [--pem] [--twin IMAGE] IMAGE...   (IMAGE under BENCH_PREFIX/img)
"""
import argparse, os, pwd, random, shutil, statistics, subprocess, sys, tempfile, time

MARK_GO = '''package main

import (
	"strconv"

	"golang.org/x/sys/unix"
)

var phaseMarks []byte

func phase(name string) {
	var ts unix.Timespec
	unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
	phaseMarks = append(phaseMarks, name...)
	phaseMarks = append(phaseMarks, '=')
	phaseMarks = strconv.AppendInt(phaseMarks, ts.Nano(), 10)
	phaseMarks = append(phaseMarks, ' ')
}

func phaseFlush() { phaseMarks = append(phaseMarks, '\\n'); unix.Write(2, phaseMarks) }
'''

# (file, text the marker goes before, phase that starts there)
MARKS = [
    ("main.go", "\t// Nothing of the privileged process may be ptraced or dumped (R6),\n", "main"),
    ("exec.go", "\twho, err := currentCaller()\n", "caller"),
    ("exec.go", "\tcfg, err := loadConfig(sysconfdir)\n", "config"),
    ("exec.go", "\tif err := checkNamespacePolicy(o, cfg, who); err != nil {\n", "capabilities"),
    ("exec.go", "\tplan, err := openAsCaller(o, who, user, cfg, names)\n", "open-as-caller"),
    ("exec.go", "\tif err := checkImagePolicy(", "image-policy"),
    ("exec.go", "\trootfs, err := inspectImage(", "inspect"),
    ("exec.go", "\tsecret, err := unlockRootfs(", "unlock"),
    ("exec.go", "\tif err := plan.cloneTrees(rootfs); err != nil {\n", "clone-binds"),
    ("exec.go", "\tif err := ensureStateDirs(); err != nil {\n", "state-dirs"),
    ("exec.go", "\tif rootfs.format != \"dir\" {\n\t\tif err := plan.attachImage", "attach"),
    ("exec.go", "\truntime.LockOSThread()\n\tif o.pid", "namespaces"),
    ("ns.go", "\tdev, err := openHostDevices(cfg)\n", "host-devices"),
    ("ns.go", "\tunix.Umask(022)\n\tc := &container", "mount-root"),
    ("ns.go", "\tif err := c.mountKernelFilesystems(o, cfg, dev); err != nil {\n", "proc-sys-dev"),
    ("ns.go", "\tif o.contain {\n\t\tfor _, dir", "binds"),
    ("ns.go", "\tif !who.root() {\n\t\tif err := c.writeAccountFiles(", "passwd-group"),
    ("ns.go", "\tfor _, f := range []string{\"/etc/resolv.conf\", \"/etc/hosts\"} {\n", "resolv-hosts"),
    ("ns.go", "\tif err := c.sealUnderlays(); err != nil {\n", "seal-slave"),
    ("ns.go", "\treturn pivotInto(stageDir)\n", "pivot"),
    ("exec.go", "\tif err := dropToCaller(who, caps.Set", "credentials"),
    ("exec.go", "\treturn execPayload(o, who, user, plan)\n}", "payload-setup"),
    ("exec.go", "\trestoreCallerLimits(callerLimits, callerUmask)\n", "exec"),
    ("crypt.go", "\tif src.pemPath != \"\" && req.memory != nil {\n", "read-ahead"),
    ("crypt.go", "\tpass, err := luksPassphraseFrom(src, image, name, rootfs, who)\n", "key-file"),
    ("crypt.go", "\tpriv, err := parseRSAPrivateKeyPEM(data, src.pemPath)\n", "rsa-key-parse"),
    ("crypt.go", "\tpass, err := decryptKeyMessage(msg, priv)\n", "rsa-oaep"),
    ("crypt.go", "\tif u.key, err = vol.unlock(pass.bytes()); err != nil {\n", "keyslot-kdf"),
    ("luks.go", "\tn := afAreaSize(s.keySize, s.stripes)\n", "keyslot-material"),
    ("luks.go", "\tif err := afMerge(m, s.keySize, s.stripes, s.afHash, buf.bytes()); err != nil {\n", "af-merge"),
    ("luks.go", "\tif !luksDigestMatches(s.digest, buf.bytes()) {\n", "digest"),
    ("luks.go", "\treturn &volumeKey{buf: buf, slot: s.id}, nil\n}", "unlocked"),
    ("crypt.go", "\tif ahead := u.ahead; ahead != nil {\n", "memfd"),
    ("crypt.go", "\terr = u.vol.decryptTo(dst, u.key, nil)\n", "decrypt"),
    ("crypt.go", "\tif err := checkSquashfsSuper(mem, 0, size, u.name); err != nil {\n", "seal-loop"),
]
FLOOR_MARKS = [
    ("main.go", "\targs := os.Args[1:]\n", "main"),
    ("main.go", "\tvar loopDev string\n", "attach"),
    ("main.go", "\truntime.LockOSThread()\n", "namespaces"),
    ("main.go", "\tif uid, gid := unix.Getuid()", "credentials"),
    ("main.go", "\treturn fmt.Errorf(\"exec %s: %w\", argv[0], syscall.Exec(", "exec"),
]


def insert(path, marks, flush_before):
    s = open(path).read()
    for _, text, name in marks:
        if s.count(text) != 1:
            sys.exit(f"phases.py: {path}: marker text for {name!r} found {s.count(text)} times: {text!r}")
        s = s.replace(text, f'\tphase("{name}")\n' + (("\tphaseFlush()\n") if name == flush_before else "") + text)
    open(path, "w").write(s)


def build(src, out, ldflags):
    env = dict(os.environ, CGO_ENABLED="0")
    subprocess.run(["go", "build", "-trimpath", "-buildvcs=false", "-ldflags", ldflags, "-o", out, "."], cwd=src, env=env, check=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("-n", type=int, default=150)
    ap.add_argument("--user")
    ap.add_argument("--pem", action="store_true", help="pass --pem-path IMG/keys/key.pem")
    ap.add_argument("--twin", help="run minirun on this image (no key) instead of the floor, e.g. plain.sif against pem.sif")
    ap.add_argument("--prefix", default=os.environ.get("BENCH_PREFIX", "/run/minirun-bench"))
    ap.add_argument("images", nargs="+")
    a = ap.parse_args()
    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
    work = tempfile.mkdtemp(prefix="phases-")
    try:
        tree = os.path.join(work, "tree")
        shutil.copytree(repo, tree, ignore=shutil.ignore_patterns(".git", ".build", "minirun"))
        for f in {m[0] for m in MARKS}:
            insert(os.path.join(tree, f), [m for m in MARKS if m[0] == f], "exec")
        open(os.path.join(tree, "phases_mark.go"), "w").write(MARK_GO)
        floor = os.path.join(tree, "testdata/bench/floor")
        insert(os.path.join(floor, "main.go"), FLOOR_MARKS, "exec")
        open(os.path.join(floor, "phases_mark.go"), "w").write(MARK_GO)
        bindir = os.path.join(a.prefix, "bin")
        mr, fl = os.path.join(bindir, "minirun-phases"), os.path.join(bindir, "floor-phases")
        build(tree, mr, f"-s -w -X main.sysconfdir={a.prefix}/etc")
        build(floor, fl, "-s -w")
        os.chmod(mr, 0o4755)
        os.chmod(fl, 0o4755 if a.user else 0o755)
        pre = None
        if a.user:
            pw = pwd.getpwnam(a.user)
            def pre():
                os.setgroups([]); os.setgid(pw.pw_gid); os.setuid(pw.pw_uid)
        for img in a.images:
            path = os.path.join(a.prefix, "img", img)
            key = ["--pem-path", os.path.join(a.prefix, "img/keys/key.pem")] if a.pem else []
            cmds = {"minirun": [mr, "exec"] + key + [path, "/bin/true"],
                    "floor": [fl] + (["-dir"] if os.path.isdir(path) else []) + [path, "/bin/true"]}
            if a.twin:
                del cmds["floor"]
                cmds["minirun " + a.twin] = [mr, "exec", os.path.join(a.prefix, "img", a.twin), "/bin/true"]
            rows = {k: [] for k in cmds}
            for _ in range(a.n):
                for k in random.sample(list(cmds), len(cmds)):
                    t0 = time.monotonic_ns()
                    r = subprocess.run(cmds[k], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd="/", preexec_fn=pre)
                    t1 = time.monotonic_ns()
                    if r.returncode != 0:
                        sys.exit(f"{cmds[k]}: exit {r.returncode}: {r.stderr.decode()[:300]}")
                    marks = [kv.split("=") for kv in r.stderr.decode().split()]
                    rows[k].append([("spawn", t0)] + [(n, int(v)) for n, v in marks] + [("exit", t1)])
            print(f"\n{img} ({a.user or 'root'}, {a.n} alternating runs, medians):\n")
            for k in cmds:
                names = [n for n, _ in rows[k][0]]
                print(f"| {k} phase | ms |\n| --- | ---: |")
                for j in range(1, len(names)):
                    d = statistics.median((r[j][1] - r[j - 1][1]) / 1e6 for r in rows[k])
                    print(f"| {names[j - 1]} | {d:.3f} |")
                print(f"| **total** | **{statistics.median((r[-1][1] - r[0][1]) / 1e6 for r in rows[k]):.3f}** |\n")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
