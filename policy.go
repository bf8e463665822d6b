// policy.go owns who is asking and what they may have: from the caller's
// ids, the grants, the config and the capability flags it computes the
// container set S, the no_new_privs flag and the warnings
// (spec/capabilities.md §2–§4). It is pure: the host facts (L, H) and the
// grants are injected, nothing here touches the kernel or the disk.
package main

// capCaller is the caller as the kernel reported it at entry: real ids and
// getgroups(). "Root" is real uid 0; the euid never counts.
type capCaller struct {
	UID, GID int
	Groups   []int
}

// gids is every group the caller is in: the real gid plus getgroups().
func (c capCaller) gids() []int { return append([]int{c.GID}, c.Groups...) }

// capFlags are the capability options of one run. AddCaps and DropCaps hold
// each --add-caps / --drop-caps value in order; repeated flags accumulate.
type capFlags struct {
	AddCaps, DropCaps  []string
	KeepPrivs, NoPrivs bool
}

// capPolicyInput is everything the decision depends on.
type capPolicyInput struct {
	Caller capCaller
	Config *config // rootDefaultCapabilities ("" means "full"), strictCapabilities
	Flags  capFlags
	Last   int    // L: cap_last_cap
	Host   capSet // H: bounding ∩ permitted at start
	// Grants returns G, the caller's grants (grantsFor over the grant file).
	// It is called only when the rules need the grant file: every non-root
	// run, and root in "file" mode, so in other modes a damaged grant file
	// cannot affect root. Its error (E_CONFIG for an insecure or malformed
	// file) stops the run.
	Grants func() (capSet, error)
}

// capDecision is the outcome: S for all five sets, NNP, and the warnings,
// each without the "WARNING: " prefix and unescaped (print them with warnf),
// in the spec's order: unknown-add, unknown-drop, not-authorized,
// not-available.
type capDecision struct {
	Set        capSet
	NoNewPrivs bool
	Warnings   []string
}

// decideCaps computes the capability decision for one run. On error nothing
// must run; the decision then holds the warnings gathered before the error,
// which the caller may print before the error line.
func decideCaps(in capPolicyInput) (capDecision, error) {
	var d capDecision
	if in.Last < 0 || in.Last > maxCapBit {
		return d, failf(eInternal, "cap_last_cap %d outside 0..%d", in.Last, maxCapBit)
	}
	full := in.Host & capsUpTo(in.Last) // FULL = H
	root := in.Caller.UID == 0
	mode := "full" // root_default_capabilities; config.go has validated it, check again to fail closed
	if in.Config != nil && in.Config.rootDefaultCapabilities != "" {
		mode = in.Config.rootDefaultCapabilities
	}
	if mode != "full" && mode != "file" && mode != "no" {
		return d, failf(eConfig, "root_default_capabilities must be \"full\", \"file\" or \"no\", not %q", mode)
	}

	// Refused before anything else is printed, even with --no-privs (that
	// wins over --keep-privs only for root).
	if !root && in.Flags.KeepPrivs {
		return d, failf(ePolicy, "--keep-privs requires root privileges")
	}

	add := parseCapLists(in.Flags.AddCaps)
	drop := parseCapLists(in.Flags.DropCaps)
	for _, n := range add.Unknown {
		d.Warnings = append(d.Warnings, "won't add unknown capability: "+n)
	}
	for _, n := range drop.Unknown {
		d.Warnings = append(d.Warnings, "won't drop unknown capability: "+n)
	}
	addSet := add.set(full)         // "all" from --add-caps means FULL
	dropSet := drop.set(^capSet(0)) // "all" from --drop-caps removes everything
	notAvailable := add.Named &^ full

	if root {
		var base capSet
		switch {
		case in.Flags.NoPrivs:
		case in.Flags.KeepPrivs:
			base = full
		default:
			switch mode {
			case "full":
				base = full
			case "file":
				g, err := callGrants(in.Grants)
				if err != nil {
					return d, err
				}
				base = g & full
			}
		}
		d.Set = (base | addSet&full) &^ dropSet
		d.NoNewPrivs = in.Flags.NoPrivs || (mode == "no" && !in.Flags.KeepPrivs)
		if notAvailable != 0 {
			d.Warnings = append(d.Warnings, "capability not available on this host: "+notAvailable.String())
		}
		return d, nil
	}

	// Non-root: base ∅, only granted requests, always no_new_privs. The grant
	// file is read on every run, even without --add-caps.
	g, err := callGrants(in.Grants)
	if err != nil {
		return d, err
	}
	d.NoNewPrivs = true
	if unauth := addSet &^ g; unauth != 0 {
		msg := "not authorized to add capability: " + unauth.String()
		if in.Config != nil && in.Config.strictCapabilities {
			return d, failf(ePolicy, "%s", msg)
		}
		d.Warnings = append(d.Warnings, msg)
	}
	granted := addSet & g
	if na := granted & notAvailable; na != 0 {
		d.Warnings = append(d.Warnings, "capability not available on this host: "+na.String())
	}
	d.Set = (granted & full) &^ dropSet
	return d, nil
}

func callGrants(f func() (capSet, error)) (capSet, error) {
	if f == nil {
		return 0, failf(eInternal, "capability policy needs the grant file but has no reader")
	}
	return f()
}

// callerGrantsFunc is the production Grants for capPolicyInput: load the
// grant file at path through read (readTrustedFile) and take the caller's
// union over the real gid and getgroups().
func callerGrantsFunc(c capCaller, path string, read trustedReader, names *nameLookup) func() (capSet, error) {
	return func() (capSet, error) {
		g, err := loadGrants(path, read)
		if err != nil {
			return 0, err
		}
		return grantsFor(c.UID, c.gids(), g, names)
	}
}
