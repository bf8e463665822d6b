// accounts.go owns who the caller is by name: their passwd entry and the
// names of their groups, from /etc/passwd and /etc/group (trust-checked) or,
// for directory-service users, from getent run with the caller's own
// credentials. It also writes the lines added to the container's files.
package main

import (
	"bytes"
	"context"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"
)

const (
	maxAccountFile = 16 << 20
	getentPath     = "/usr/bin/getent"
)

type account struct {
	uid, gid int
	name     string
	gecos    string
	home     string
	shell    string
}

func (a account) passwdLine() string {
	return a.name + ":x:" + strconv.Itoa(a.uid) + ":" + strconv.Itoa(a.gid) + ":" + a.gecos + ":" + a.home + ":" + a.shell
}

// lookupAccount finds uid's passwd entry. A uid with no entry anywhere still
// runs, as Apptainer does, with a numeric name and / as home.
func lookupAccount(uid, gid int) account {
	id := strconv.Itoa(uid)
	if data, err := readTrustedFile("/etc/passwd", maxAccountFile); err == nil {
		if a, ok := findPasswd(data, id); ok {
			return a
		}
	}
	if out := getent("passwd", id, uid, gid); out != nil {
		if a, ok := findPasswd(out, id); ok {
			return a
		}
	}
	return account{uid: uid, gid: gid, name: id, home: "/", shell: "/bin/sh"}
}

// findPasswd returns the entry whose uid field is id.
func findPasswd(data []byte, id string) (account, bool) {
	for _, line := range bytes.Split(data, []byte("\n")) {
		f := strings.Split(string(line), ":")
		if len(f) != 7 || f[2] != id || f[0] == "" {
			continue
		}
		uid, err1 := strconv.Atoi(f[2])
		gid, err2 := strconv.Atoi(f[3])
		if err1 != nil || err2 != nil {
			continue
		}
		return account{uid: uid, gid: gid, name: f[0], gecos: f[4], home: f[5], shell: f[6]}, true
	}
	return account{}, false
}

// groupLines returns a "name:x:gid:user" line for each of the caller's
// gids, by name from /etc/group or getent; unknown gids are left out. It
// runs before any namespace exists: a getent child started after
// unshare(CLONE_NEWPID) would become that namespace's PID 1.
func groupLines(who caller, user account) map[int]string {
	data, _ := readTrustedFile("/etc/group", maxAccountFile)
	lines := map[int]string{}
	for _, gid := range append([]int{who.gid}, who.groups...) {
		id := strconv.Itoa(gid)
		if _, done := lines[gid]; done {
			continue
		}
		name, ok := findGroupName(data, id)
		if !ok {
			name, ok = findGroupName(getent("group", id, user.uid, user.gid), id)
		}
		if ok {
			lines[gid] = name + ":x:" + id + ":" + user.name
		}
	}
	return lines
}

func findGroupName(data []byte, id string) (string, bool) {
	for _, line := range bytes.Split(data, []byte("\n")) {
		f := strings.Split(string(line), ":")
		if len(f) == 4 && f[2] == id && f[0] != "" {
			return f[0], true
		}
	}
	return "", false
}

// getent asks NSS (LDAP, SSSD…) through getent, run by absolute path with an
// empty environment and the caller's credentials, never as root. Bounded in
// time and output; any failure means "not found".
func getent(db, key string, uid, gid int) []byte {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, getentPath, db, key)
	cmd.Env = []string{}
	cmd.Dir = "/"
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), NoSetGroups: true},
		Pdeathsig:  syscall.SIGKILL,
	}
	var out limitedBuffer
	out.limit = 64 << 10
	cmd.Stdout = &out
	if err := cmd.Run(); err != nil {
		return nil
	}
	return out.Bytes()
}

type limitedBuffer struct {
	bytes.Buffer
	limit int
}

func (b *limitedBuffer) Write(p []byte) (int, error) {
	if room := b.limit - b.Len(); len(p) > room {
		b.Buffer.Write(p[:max(room, 0)])
		return len(p), nil
	}
	return b.Buffer.Write(p)
}
