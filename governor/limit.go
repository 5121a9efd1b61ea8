package governor

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math"
	"os"
	"path"
	"runtime/debug"
	"strconv"
	"strings"
)

// Source names where a memory limit came from.
type Source string

const (
	SourceConfig              Source = "config"               // Options.Limit
	SourceCgroup2             Source = "cgroup2"              // memory.max on the walk from the process's cgroup to the mount root
	SourceCgroup1             Source = "cgroup1"              // memory.limit_in_bytes of the process's memory cgroup
	SourceCgroup1Hierarchical Source = "cgroup1-hierarchical" // memory.stat hierarchical_memory_limit (ancestors included)
	SourceGOMEMLIMIT          Source = "GOMEMLIMIT"           // runtime/debug.SetMemoryLimit (the env var, or set by the program)
	SourcePhysical            Source = "physical"             // /proc/meminfo MemTotal
	SourceSysinfo             Source = "sysinfo"              // sysinfo(2) total RAM, when /proc/meminfo is unusable
	SourceMountinfo           Source = "mountinfo"            // never a limit: a note about /proc/self/mountinfo itself
	SourceProcCgroup          Source = "proc-cgroup"          // never a limit: a note about /proc/self/cgroup itself
)

// ErrNoLimit is returned by DetectLimit when no source yields a limit: no
// cgroup limit, no GOMEMLIMIT and physical memory unreadable.
var ErrNoLimit = errors.New("governor: no memory limit found")

// unlimitedAbove: a limit at or above 4 EiB means "none". cgroup v1 reports
// "no limit" as PAGE_COUNTER_MAX pages, i.e. math.MaxInt64 rounded down to the
// page size (9223372036854771712 with 4 KiB pages, 9223372036854710272 with
// 64 KiB pages on arm64); some kernels print 2^64-1. A threshold instead of a
// list of magic numbers covers every page size.
const unlimitedAbove = 1 << 62

// Size caps for files read: procfs and cgroupfs files are small, but a
// fabricated or corrupted tree must not make us read gigabytes.
const (
	maxValueFile     = 64 << 10
	maxMountinfoFile = 8 << 20
)

// Limit is the outcome of limit detection: the tightest limit found, where it
// came from, and every candidate examined (for logs and tests).
type Limit struct {
	Bytes  int64  // the effective limit, > 0
	Source Source // which source won (ties go to the first examined)
	Path   string // file the winning value came from ("/..." under the root); "" when not a file
	// Findings lists every candidate in the order examined: cgroup files,
	// GOMEMLIMIT, physical memory. A finding with Bytes == 0 imposes no limit
	// and its Note says why ("max", "missing", "garbage: ...").
	Findings []Finding
}

// Finding is one candidate limit.
type Finding struct {
	Source Source
	Path   string
	Bytes  int64  // the limit this candidate imposes; 0 = none
	Note   string // why it imposes none, or extra context; "" for a plain value
}

// String describes the limit and where it came from.
func (l Limit) String() string {
	if l.Path != "" {
		return fmt.Sprintf("%d bytes from %s (%s)", l.Bytes, l.Source, l.Path)
	}
	return fmt.Sprintf("%d bytes from %s", l.Bytes, l.Source)
}

// String describes the finding.
func (f Finding) String() string {
	where := string(f.Source)
	if f.Path != "" {
		where += " " + f.Path
	}
	if f.Bytes > 0 {
		if f.Note != "" {
			return fmt.Sprintf("%s: %d (%s)", where, f.Bytes, f.Note)
		}
		return fmt.Sprintf("%s: %d", where, f.Bytes)
	}
	return fmt.Sprintf("%s: none (%s)", where, f.Note)
}

// DetectLimit returns the tightest of: cgroup v2 memory.max from the process's
// cgroup up to the mount root, cgroup v1 memory.limit_in_bytes and
// hierarchical_memory_limit (hybrid hosts: both hierarchies are read, each
// resolved through /proc/self/mountinfo and /proc/self/cgroup), GOMEMLIMIT,
// and physical memory.
//
// root is prefixed to every file path (/proc/self/..., the mount points found
// in mountinfo, /proc/meminfo); "" means "/". GOMEMLIMIT and sysinfo(2) are
// properties of the running process and ignore root. Unreadable or garbage
// files never fail detection: they become Findings with a Note. The error is
// ErrNoLimit only when nothing at all yields a limit.
func DetectLimit(root string) (Limit, error) {
	return newDetector(root).detect()
}

// detector holds the inputs of detection, so tests can fake the process-wide
// ones (GOMEMLIMIT, sysinfo) while the files come from a fabricated tree.
type detector struct {
	fsys       fs.FS
	goMemLimit func() int64          // math.MaxInt64 = none
	sysinfo    func() (int64, error) // total RAM
}

func newDetector(root string) detector {
	if root == "" {
		root = "/"
	}
	return detector{
		fsys:       os.DirFS(root),
		goMemLimit: func() int64 { return debug.SetMemoryLimit(-1) },
		sysinfo:    sysinfoTotalRAM,
	}
}

func (d detector) detect() (Limit, error) {
	var lim Limit
	consider := func(f Finding) {
		lim.Findings = append(lim.Findings, f)
		if f.Bytes > 0 && (lim.Bytes == 0 || f.Bytes < lim.Bytes) {
			lim.Bytes, lim.Source, lim.Path = f.Bytes, f.Source, f.Path
		}
	}
	d.cgroupLimits(consider)

	if gml := d.goMemLimit(); gml > 0 && gml < unlimitedAbove {
		consider(Finding{Source: SourceGOMEMLIMIT, Bytes: gml})
	} else {
		consider(Finding{Source: SourceGOMEMLIMIT, Note: "not set"})
	}

	f := d.meminfo()
	consider(f)
	if f.Bytes == 0 {
		n, err := d.sysinfo()
		switch {
		case err != nil:
			consider(Finding{Source: SourceSysinfo, Note: err.Error()})
		case n <= 0:
			consider(Finding{Source: SourceSysinfo, Note: "reported no RAM"})
		default:
			consider(Finding{Source: SourceSysinfo, Bytes: n})
		}
	}

	if lim.Bytes == 0 {
		return lim, ErrNoLimit
	}
	return lim, nil
}

// meminfo reads MemTotal from /proc/meminfo.
func (d detector) meminfo() Finding {
	const p = "/proc/meminfo"
	data, err := readCapped(d.fsys, p, maxMountinfoFile)
	if err != nil {
		return Finding{Source: SourcePhysical, Path: p, Note: fileNote(err)}
	}
	n, err := parseMeminfoTotal(data)
	if err != nil {
		return Finding{Source: SourcePhysical, Path: p, Note: "garbage: " + err.Error()}
	}
	return Finding{Source: SourcePhysical, Path: p, Bytes: n}
}

// parseMeminfoTotal finds "MemTotal: <n> kB". The kernel always prints kB;
// a line without a unit is taken as bytes.
func parseMeminfoTotal(data []byte) (int64, error) {
	for line := range strings.Lines(string(data)) {
		rest, ok := strings.CutPrefix(line, "MemTotal:")
		if !ok {
			continue
		}
		fields := strings.Fields(rest)
		if len(fields) == 0 || len(fields) > 2 {
			return 0, fmt.Errorf("MemTotal line %q", truncate(line))
		}
		n, err := strconv.ParseInt(fields[0], 10, 64)
		if err != nil || n <= 0 {
			return 0, fmt.Errorf("MemTotal value %q", truncate(fields[0]))
		}
		if len(fields) == 2 {
			if !strings.EqualFold(fields[1], "kB") {
				return 0, fmt.Errorf("MemTotal unit %q", truncate(fields[1]))
			}
			if n > math.MaxInt64/1024 {
				return 0, fmt.Errorf("MemTotal %d kB overflows", n)
			}
			n *= 1024
		}
		return n, nil
	}
	return 0, errors.New("no MemTotal line")
}

// parseLimitValue parses a memory.max or memory.limit_in_bytes value.
// It returns (0, note) for "no limit" and for garbage, the note saying which.
func parseLimitValue(data []byte) (int64, string) {
	s := strings.TrimSpace(string(data))
	switch s {
	case "max":
		return 0, "max"
	case "-1":
		return 0, "-1 (unlimited)"
	case "":
		return 0, "garbage: empty"
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		// 2^64-1 and friends: too big for int64 means unlimited too.
		if u, uerr := strconv.ParseUint(s, 10, 64); uerr == nil && u >= unlimitedAbove {
			return 0, s + " (unlimited)"
		}
		return 0, fmt.Sprintf("garbage: %q", truncate(s))
	}
	switch {
	case n >= unlimitedAbove:
		return 0, s + " (unlimited)"
	case n <= 0:
		return 0, fmt.Sprintf("garbage: %q is not a positive limit", truncate(s))
	}
	return n, ""
}

// readCapped reads the file at the absolute path p (relative to fsys's root),
// refusing files larger than limit.
func readCapped(fsys fs.FS, p string, limit int64) ([]byte, error) {
	name := fsPath(p)
	if !fs.ValidPath(name) {
		return nil, fmt.Errorf("invalid path %q", truncate(p))
	}
	f, err := fsys.Open(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(data)) > limit {
		return nil, fmt.Errorf("larger than %d bytes", limit)
	}
	return data, nil
}

// fsPath turns an absolute slash path into an fs.FS name.
func fsPath(p string) string {
	p = strings.TrimPrefix(path.Clean("/"+p), "/")
	if p == "" {
		return "."
	}
	return p
}

func fileNote(err error) string {
	if errors.Is(err, fs.ErrNotExist) {
		return "missing"
	}
	return "unreadable: " + err.Error()
}

func truncate(s string) string {
	const max = 48
	if len(s) > max {
		return s[:max] + "..."
	}
	return s
}
