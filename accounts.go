// accounts.go owns who the caller is by name: their passwd entry and the
// names of their groups (through grants.go's nameLookup: /etc/passwd and
// /etc/group trust-checked, then getent for directory-service users), and
// the lines added to the container's /etc/passwd and /etc/group.
package main

import (
	"bytes"
	"strconv"
	"strings"
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
func lookupAccount(names *nameLookup, uid, gid int) account {
	id := strconv.Itoa(uid)
	if data, err := names.file(passwdDB); err == nil {
		if a, ok := findPasswd(data, id); ok {
			return a
		}
	}
	if names.getent != nil {
		if out, status, err := names.getent("passwd", id); err == nil && status == 0 {
			if a, ok := findPasswd(out, id); ok {
				return a
			}
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
// gids that has a name; unnamed gids are left out. It runs before any
// namespace exists: a getent child started after unshare(CLONE_NEWPID)
// would become that namespace's PID 1.
func groupLines(names *nameLookup, who caller, user account) map[int]string {
	lines := map[int]string{}
	for _, gid := range append([]int{who.gid}, who.groups...) {
		if _, done := lines[gid]; done {
			continue
		}
		if name, ok, err := names.groupName(gid); err == nil && ok {
			lines[gid] = name + ":x:" + strconv.Itoa(gid) + ":" + user.name
		}
	}
	return lines
}

// findGroupName returns the name of the group whose gid field is id.
func findGroupName(data []byte, id string) (string, bool) {
	for _, line := range bytes.Split(data, []byte("\n")) {
		f := strings.Split(string(line), ":")
		if len(f) == 4 && f[2] == id && f[0] != "" {
			return f[0], true
		}
	}
	return "", false
}
