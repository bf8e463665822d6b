// env.go owns the payload's environment: the caller's, minus what must not
// cross into the container, plus --env (security.md R7). Nothing here ever
// steers the privileged part.
package main

import (
	"strings"
)

const containerPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// cleanEnvKeep is what --cleanenv keeps (besides LC_*).
func cleanEnvKeep(name string) bool {
	switch name {
	case "HOME", "USER", "LOGNAME", "TERM", "LANG", "LANGUAGE", "TZ", "COLORTERM", "NO_COLOR":
		return true
	}
	return false
}

// checkEnvFlag validates one --env NAME=VALUE.
func checkEnvFlag(kv string) error {
	name, _, ok := strings.Cut(kv, "=")
	if !ok {
		return failf(eUsage, "--env %q: expected NAME=VALUE", kv)
	}
	if !validEnvName(name) {
		return failf(eUsage, "--env %q: invalid variable name", name)
	}
	if strings.HasPrefix(name, "MINIRUN_") {
		return failf(eUsage, "--env %s: MINIRUN_* names are reserved for minirun", name)
	}
	if len(kv) > maxEnvLength || strings.IndexByte(kv, 0) >= 0 {
		return failf(eUsage, "--env %s: value too long or contains NUL", name)
	}
	return nil
}

func validEnvName(name string) bool {
	if name == "" {
		return false
	}
	for i, c := range name {
		switch {
		case c == '_', c >= 'A' && c <= 'Z', c >= 'a' && c <= 'z':
		case c >= '0' && c <= '9' && i > 0:
		default:
			return false
		}
	}
	return true
}

// payloadEnv builds the command's environment from the caller's (already
// scrubbed of GO* names and malformed entries by setuidHygiene).
func payloadEnv(caller []string, user account, cleanEnv bool, extra []string) []string {
	out := make([]string, 0, len(caller)+len(extra)+4)
	for _, kv := range caller {
		name, _, _ := strings.Cut(kv, "=")
		switch {
		case name == "PATH", name == "HOME", name == "USER", name == "LOGNAME",
			name == "LD_LIBRARY_PATH", strings.HasPrefix(name, "GO"), strings.HasPrefix(name, "MINIRUN_"),
			strings.HasPrefix(name, "APPTAINER_ENCRYPTION_"):
			continue
		case cleanEnv && !cleanEnvKeep(name) && !strings.HasPrefix(name, "LC_"):
			continue
		}
		out = append(out, kv)
	}
	out = append(out, "PATH="+containerPath, "HOME="+user.home, "USER="+user.name, "LOGNAME="+user.name)
	for _, kv := range extra {
		out = setEnv(out, kv)
	}
	return out
}

// setEnv replaces or appends NAME=VALUE.
func setEnv(env []string, kv string) []string {
	name, _, _ := strings.Cut(kv, "=")
	for i, old := range env {
		if strings.HasPrefix(old, name+"=") {
			env[i] = kv
			return env
		}
	}
	return append(env, kv)
}

// lookEnv returns the value of name in env.
func lookEnv(env []string, name string) (string, bool) {
	for _, kv := range env {
		if v, ok := strings.CutPrefix(kv, name+"="); ok {
			return v, true
		}
	}
	return "", false
}
