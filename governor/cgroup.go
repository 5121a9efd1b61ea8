package governor

import (
	"fmt"
	"path"
	"slices"
	"strconv"
	"strings"
)

// mount is one cgroup line of /proc/self/mountinfo.
type mount struct {
	root   string // the cgroup path of the mount's root within its hierarchy
	point  string // where it is mounted, absolute
	fstype string // "cgroup" (v1) or "cgroup2"
	memory bool   // v1: the memory controller is bound to this hierarchy
}

// conventionalMounts stand in for mountinfo when it cannot be read: the
// places systemd and container runtimes mount cgroups.
var conventionalMounts = []mount{
	{root: "/", point: "/sys/fs/cgroup", fstype: "cgroup2"},
	{root: "/", point: "/sys/fs/cgroup/unified", fstype: "cgroup2"},
	{root: "/", point: "/sys/fs/cgroup/memory", fstype: "cgroup", memory: true},
}

// parseMountinfo returns the cgroup and cgroup2 mounts of a mountinfo file
// (proc(5)): "id parent major:minor root point options [optional...] - fstype
// source superoptions". Lines that do not parse are counted, not fatal.
func parseMountinfo(data []byte) (mounts []mount, bad int) {
	for line := range strings.Lines(string(data)) {
		line = strings.TrimRight(line, "\r\n")
		if strings.TrimSpace(line) == "" {
			continue
		}
		fields := strings.Fields(line)
		sep := slices.Index(fields, "-")
		// Six mandatory fields before the separator, three after it.
		if sep < 6 || len(fields) < sep+4 {
			bad++
			continue
		}
		fstype := fields[sep+1]
		if fstype != "cgroup" && fstype != "cgroup2" {
			continue
		}
		root, rok := unescapeMountPath(fields[3])
		point, pok := unescapeMountPath(fields[4])
		if !rok || !pok || !strings.HasPrefix(root, "/") || !strings.HasPrefix(point, "/") {
			bad++
			continue
		}
		m := mount{root: path.Clean(root), point: path.Clean(point), fstype: fstype}
		if fstype == "cgroup" {
			m.memory = slices.Contains(strings.Split(fields[sep+3], ","), "memory")
		}
		mounts = append(mounts, m)
	}
	return mounts, bad
}

// unescapeMountPath undoes the kernel's octal escaping of space, tab, newline
// and backslash (\040, \011, \012, \134) in mountinfo paths.
func unescapeMountPath(s string) (string, bool) {
	if !strings.Contains(s, `\`) {
		return s, true
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '\\' {
			b.WriteByte(s[i])
			continue
		}
		if i+4 > len(s) {
			return "", false
		}
		v, err := strconv.ParseUint(s[i+1:i+4], 8, 8)
		if err != nil {
			return "", false
		}
		b.WriteByte(byte(v))
		i += 3
	}
	return b.String(), true
}

// procCgroups is what /proc/self/cgroup says about the process.
type procCgroups struct {
	v2, v1mem       string // cgroup paths; meaningful when the has* flag is set
	hasV2, hasV1mem bool
}

// parseProcCgroup parses /proc/self/cgroup (cgroups(7)): lines
// "hierarchy-ID:controller-list:cgroup-path"; hierarchy 0 with an empty
// controller list is the v2 unified hierarchy.
func parseProcCgroup(data []byte) (pc procCgroups, bad int) {
	for line := range strings.Lines(string(data)) {
		line = strings.TrimRight(line, "\r\n")
		if strings.TrimSpace(line) == "" {
			continue
		}
		parts := strings.SplitN(line, ":", 3)
		if len(parts) != 3 || !strings.HasPrefix(parts[2], "/") {
			bad++
			continue
		}
		if _, err := strconv.ParseUint(parts[0], 10, 32); err != nil {
			bad++
			continue
		}
		switch {
		case parts[0] == "0" && parts[1] == "":
			pc.v2, pc.hasV2 = parts[2], true
		case slices.Contains(strings.Split(parts[1], ","), "memory"):
			pc.v1mem, pc.hasV1mem = parts[2], true
		}
	}
	return pc, bad
}

// cgroupDir maps the process's cgroup path onto the mount: the mount shows
// the hierarchy from m.root down, at m.point. ok is false when the cgroup is
// not below the mount's root (another cgroup namespace, or the process moved);
// the mount point itself is then the best place left to look.
func cgroupDir(m mount, cgPath string) (dir string, ok bool) {
	cg := path.Clean("/" + cgPath) // also strips any leading ".."
	switch {
	case m.root == "/":
		return path.Join(m.point, cg), true
	case cg == m.root:
		return m.point, true
	case strings.HasPrefix(cg, m.root+"/"):
		return path.Join(m.point, cg[len(m.root):]), true
	}
	return m.point, false
}

// processDir is the process's cgroup directory under m, from its
// /proc/self/cgroup entry cgPath (has: there is one; entry names its kind).
// Without an entry, or with one outside the mount root, it is the mount
// point, and note says why.
func processDir(m mount, cgPath string, has bool, entry string) (dir, note string) {
	if !has {
		return m.point, "no " + entry + " entry in /proc/self/cgroup; reading the mount point"
	}
	dir, ok := cgroupDir(m, cgPath)
	if !ok {
		note = fmt.Sprintf("cgroup %q is outside the mount root %q; reading the mount point", truncate(cgPath), truncate(m.root))
	}
	return dir, note
}

// cgroupLimits reports a Finding for every cgroup file that bears on the
// process's memory limit.
func (d detector) cgroupLimits(consider func(Finding)) {
	var pc procCgroups
	if data, err := readCapped(d.fsys, "/proc/self/cgroup", maxValueFile); err != nil {
		consider(Finding{Source: SourceProcCgroup, Path: "/proc/self/cgroup", Note: fileNote(err) + "; using mount roots"})
	} else {
		var bad int
		pc, bad = parseProcCgroup(data)
		if bad > 0 {
			consider(Finding{Source: SourceProcCgroup, Path: "/proc/self/cgroup", Note: fmt.Sprintf("garbage: %d lines ignored", bad)})
		}
	}

	mounts := conventionalMounts
	if data, err := readCapped(d.fsys, "/proc/self/mountinfo", maxMountinfoFile); err != nil {
		consider(Finding{Source: SourceMountinfo, Path: "/proc/self/mountinfo", Note: fileNote(err) + "; trying conventional mount points"})
	} else {
		var bad int
		mounts, bad = parseMountinfo(data)
		if bad > 0 {
			consider(Finding{Source: SourceMountinfo, Path: "/proc/self/mountinfo", Note: fmt.Sprintf("garbage: %d lines ignored", bad)})
		}
		if len(mounts) == 0 {
			consider(Finding{Source: SourceMountinfo, Path: "/proc/self/mountinfo", Note: "no cgroup mounts"})
		}
	}

	for _, m := range mounts {
		switch {
		case m.fstype == "cgroup2":
			d.cgroup2(m, pc, consider)
		case m.memory:
			d.cgroup1(m, pc, consider)
		}
	}
}

// cgroup2 reads memory.max from the process's cgroup up to the mount point:
// in v2 every ancestor's memory.max bounds its descendants, so the tightest
// one on the walk is the limit. Above the mount point we cannot see (cgroup
// namespaces hide it); the kernel enforces those too, and GOMEMLIMIT or
// physical memory usually cover the gap.
func (d detector) cgroup2(m mount, pc procCgroups, consider func(Finding)) {
	leaf, note := processDir(m, pc.v2, pc.hasV2, "v2")
	for dir := leaf; ; dir = path.Dir(dir) {
		f := d.limitFile(SourceCgroup2, path.Join(dir, "memory.max"))
		if note != "" && dir == leaf {
			f.Note = joinNote(f.Note, note)
		}
		consider(f)
		if dir == m.point || dir == "/" || len(dir) <= len(m.point) {
			return
		}
	}
}

// cgroup1 reads the process's memory cgroup: memory.limit_in_bytes (its own
// limit) and memory.stat's hierarchical_memory_limit, which the kernel
// computes as the tightest limit over the cgroup and its ancestors when
// use_hierarchy is on. v1 ancestors are deliberately not walked: with
// use_hierarchy off their limits do not apply to children, and with it on
// hierarchical_memory_limit already includes them (also those above a
// container's mount root that we cannot see).
func (d detector) cgroup1(m mount, pc procCgroups, consider func(Finding)) {
	dir, note := processDir(m, pc.v1mem, pc.hasV1mem, "memory")
	f := d.limitFile(SourceCgroup1, path.Join(dir, "memory.limit_in_bytes"))
	f.Note = joinNote(f.Note, note)
	consider(f)

	p := path.Join(dir, "memory.stat")
	data, err := readCapped(d.fsys, p, maxValueFile)
	if err != nil {
		consider(Finding{Source: SourceCgroup1Hierarchical, Path: p, Note: fileNote(err)})
		return
	}
	v, found := memoryStatValue(data, "hierarchical_memory_limit")
	if !found {
		consider(Finding{Source: SourceCgroup1Hierarchical, Path: p, Note: "no hierarchical_memory_limit line"})
		return
	}
	n, vnote := parseLimitValue([]byte(v))
	consider(Finding{Source: SourceCgroup1Hierarchical, Path: p, Bytes: n, Note: vnote})
}

// limitFile reads one memory.max / memory.limit_in_bytes file.
func (d detector) limitFile(src Source, p string) Finding {
	data, err := readCapped(d.fsys, p, maxValueFile)
	if err != nil {
		return Finding{Source: src, Path: p, Note: fileNote(err)}
	}
	n, note := parseLimitValue(data)
	return Finding{Source: src, Path: p, Bytes: n, Note: note}
}

// memoryStatValue returns the value of key in a memory.stat file
// ("key value" lines).
func memoryStatValue(data []byte, key string) (string, bool) {
	for line := range strings.Lines(string(data)) {
		fields := strings.Fields(line)
		if len(fields) >= 1 && fields[0] == key {
			if len(fields) != 2 {
				return strings.Join(fields[1:], " "), true // garbage, reported by the caller
			}
			return fields[1], true
		}
	}
	return "", false
}

func joinNote(a, b string) string {
	switch {
	case a == "":
		return b
	case b == "":
		return a
	}
	return a + "; " + b
}
