package governor

import (
	"errors"
	"math"
	"os"
	"path/filepath"
	"runtime/debug"
	"strings"
	"testing"
	"testing/fstest"
)

const (
	gib = int64(1) << 30
	mib = int64(1) << 20
)

// fixture returns a detector over testdata/<name> with GOMEMLIMIT unset and
// sysinfo faked, so results do not depend on the machine running the test.
func fixture(name string) detector {
	return detector{
		fsys:       os.DirFS(filepath.Join("testdata", name)),
		goMemLimit: func() int64 { return math.MaxInt64 },
		sysinfo:    func() (int64, error) { return 7 * gib, nil },
	}
}

func TestDetectFixtures(t *testing.T) {
	tests := []struct {
		name   string
		bytes  int64
		source Source
		path   string
		// notes that must appear among the findings, as "path-suffix: note-substring"
		notes []string
	}{
		{
			name: "v2-nested", bytes: 1 * gib, source: SourceCgroup2,
			path: "/sys/fs/cgroup/kubepods.slice/pod1/memory.max",
			notes: []string{
				"pod1/ctr/memory.max: max",
				"/sys/fs/cgroup/memory.max: missing", // the walk reached the mount root
			},
		},
		{
			name: "v2-max", bytes: 16 * gib, source: SourcePhysical, path: "/proc/meminfo",
			notes: []string{"session-1.scope/memory.max: max", "user.slice/memory.max: max"},
		},
		{
			name: "v2-container", bytes: 512 * mib, source: SourceCgroup2,
			path: "/sys/fs/cgroup/memory.max",
		},
		{
			name: "v1", bytes: 2 * gib, source: SourceCgroup1,
			path: "/sys/fs/cgroup/memory/app/memory.limit_in_bytes",
		},
		{
			name: "v1-hierarchical", bytes: 768 * mib, source: SourceCgroup1Hierarchical,
			path:  "/sys/fs/cgroup/memory/app/memory.stat",
			notes: []string{"app/memory.limit_in_bytes: 9223372036854771712 (unlimited)"},
		},
		{
			name: "v1-unlimited", bytes: 16 * gib, source: SourcePhysical, path: "/proc/meminfo",
			notes: []string{
				"memory.limit_in_bytes: 9223372036854771712 (unlimited)",
				"memory.stat: 9223372036854710272 (unlimited)",
			},
		},
		{
			name: "hybrid", bytes: 3 * gib, source: SourceCgroup1,
			path:  "/sys/fs/cgroup/memory/process_api/5f0c2a9d1e8b4c7aa3d6e2f1b0c9d8e7/memory.limit_in_bytes",
			notes: []string{"/sys/fs/cgroup/unified/memory.max: missing"},
		},
		{
			name: "hybrid-unlimited", bytes: 24684096 * 1024, source: SourcePhysical, path: "/proc/meminfo",
			notes: []string{"/sys/fs/cgroup/unified/memory.max: missing"},
		},
		{
			name: "missing", bytes: 7 * gib, source: SourceSysinfo,
			notes: []string{
				"/proc/self/cgroup: missing",
				"/proc/self/mountinfo: missing; trying conventional mount points",
				"/sys/fs/cgroup/memory.max: missing",
				"/sys/fs/cgroup/memory/memory.limit_in_bytes: missing",
				"/proc/meminfo: missing",
			},
		},
		{
			name: "missing-cgroup-files", bytes: 24684096 * 1024, source: SourcePhysical, path: "/proc/meminfo",
			notes: []string{
				"/proc/self/cgroup: missing",
				"/sys/fs/cgroup/memory/memory.limit_in_bytes: missing; no memory entry",
				"/sys/fs/cgroup/memory/memory.stat: missing",
			},
		},
		{
			name: "garbage", bytes: 7 * gib, source: SourceSysinfo,
			notes: []string{
				"/proc/self/cgroup: garbage: 4 lines ignored",
				"/proc/self/mountinfo: garbage: 4 lines ignored",
				"app/memory.limit_in_bytes: garbage",
				"app/memory.stat: garbage",
				"unified/app/memory.max: garbage",
				"unified/memory.max: garbage",
				"/proc/meminfo: garbage",
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			lim, err := fixture(tt.name).detect()
			if err != nil {
				t.Fatalf("detect: %v", err)
			}
			for _, f := range lim.Findings {
				t.Logf("finding: %v", f)
			}
			if lim.Bytes != tt.bytes || lim.Source != tt.source || lim.Path != tt.path {
				t.Fatalf("got %d %s %q, want %d %s %q", lim.Bytes, lim.Source, lim.Path, tt.bytes, tt.source, tt.path)
			}
			for _, want := range tt.notes {
				suffix, note, _ := strings.Cut(want, ": ")
				if !hasFinding(lim, suffix, note) {
					t.Errorf("no finding with path ending %q and note containing %q", suffix, note)
				}
			}
		})
	}
}

func hasFinding(lim Limit, pathSuffix, note string) bool {
	for _, f := range lim.Findings {
		if strings.HasSuffix(f.Path, pathSuffix) && strings.Contains(f.String(), note) {
			return true
		}
	}
	return false
}

func TestDetectGOMEMLIMITTighter(t *testing.T) {
	d := fixture("v2-nested") // cgroup says 1 GiB
	d.goMemLimit = func() int64 { return 900 * mib }
	lim, err := d.detect()
	if err != nil {
		t.Fatal(err)
	}
	if lim.Bytes != 900*mib || lim.Source != SourceGOMEMLIMIT || lim.Path != "" {
		t.Fatalf("got %v", lim)
	}

	d.goMemLimit = func() int64 { return 2 * gib } // looser: cgroup wins again
	if lim, _ = d.detect(); lim.Source != SourceCgroup2 || lim.Bytes != gib {
		t.Fatalf("got %v", lim)
	}
}

// TestDetectGOMEMLIMITFromRuntime checks the default wiring: what
// debug.SetMemoryLimit holds (the GOMEMLIMIT env var or a program's call).
// Not parallel: the memory limit is process-wide.
func TestDetectGOMEMLIMITFromRuntime(t *testing.T) {
	prev := debug.SetMemoryLimit(-1)
	t.Cleanup(func() { debug.SetMemoryLimit(prev) })
	d := newDetector(filepath.Join("testdata", "v2-max")) // 16 GiB physical, no cgroup limit
	const want = 3 * gib                                  // large enough not to disturb the GC of this test binary
	debug.SetMemoryLimit(want)
	lim, err := d.detect()
	if err != nil {
		t.Fatal(err)
	}
	if lim.Bytes != want || lim.Source != SourceGOMEMLIMIT {
		t.Fatalf("got %v", lim)
	}
}

func TestDetectNothing(t *testing.T) {
	d := detector{
		fsys:       fstest.MapFS{},
		goMemLimit: func() int64 { return math.MaxInt64 },
		sysinfo:    func() (int64, error) { return 0, errors.New("no sysinfo here") },
	}
	lim, err := d.detect()
	if !errors.Is(err, ErrNoLimit) {
		t.Fatalf("err = %v, want ErrNoLimit", err)
	}
	if lim.Bytes != 0 || len(lim.Findings) == 0 {
		t.Fatalf("got %v with %d findings", lim, len(lim.Findings))
	}
}

// TestDetectHost reads this machine without changing anything. Here (hybrid
// v1+v2, memory controller on v1, unlimited) the limit must come from
// GOMEMLIMIT or physical memory; elsewhere any plausible source will do.
func TestDetectHost(t *testing.T) {
	lim, err := DetectLimit("")
	if err != nil {
		t.Fatalf("DetectLimit: %v", err)
	}
	for _, f := range lim.Findings {
		t.Logf("finding: %v", f)
	}
	t.Logf("limit: %v", lim)
	if lim.Bytes <= 0 {
		t.Fatalf("limit %d", lim.Bytes)
	}
	switch lim.Source {
	case SourceCgroup2, SourceCgroup1, SourceCgroup1Hierarchical, SourceGOMEMLIMIT, SourcePhysical, SourceSysinfo:
	default:
		t.Fatalf("implausible source %q", lim.Source)
	}
	if ram, err := sysinfoTotalRAM(); err == nil && lim.Bytes > ram {
		t.Fatalf("limit %d exceeds physical memory %d", lim.Bytes, ram)
	}
	if cgroupUnlimitedHost() {
		if lim.Source != SourceGOMEMLIMIT && lim.Source != SourcePhysical {
			t.Fatalf("unlimited memory cgroup, yet source %q", lim.Source)
		}
		if gml := debug.SetMemoryLimit(-1); gml == math.MaxInt64 && lim.Source != SourcePhysical {
			t.Fatalf("no GOMEMLIMIT, yet source %q", lim.Source)
		}
	}
}

// cgroupUnlimitedHost reports whether every cgroup finding on this host says
// "no limit" — true on the development VM (hybrid, unlimited).
func cgroupUnlimitedHost() bool {
	lim, err := DetectLimit("/")
	if err != nil {
		return false
	}
	for _, f := range lim.Findings {
		switch f.Source {
		case SourceCgroup2, SourceCgroup1, SourceCgroup1Hierarchical:
			if f.Bytes > 0 {
				return false
			}
		}
	}
	return true
}

func TestParseLimitValue(t *testing.T) {
	tests := []struct {
		in   string
		want int64
		note string
	}{
		{"1073741824\n", 1073741824, ""},
		{"  4096  ", 4096, ""},
		{"max\n", 0, "max"},
		{"-1", 0, "unlimited"},
		{"9223372036854771712\n", 0, "unlimited"},
		{"9223372036854710272", 0, "unlimited"},
		{"18446744073709551615", 0, "unlimited"},
		{"4611686018427387904", 0, "unlimited"},
		{"4611686018427387903", 4611686018427387903, ""},
		{"", 0, "garbage"},
		{"0", 0, "garbage"},
		{"-5", 0, "garbage"},
		{"12e9", 0, "garbage"},
		{"99999999999999999999999", 0, "garbage"},
		{"max max", 0, "garbage"},
		{"\x00\xff", 0, "garbage"},
	}
	for _, tt := range tests {
		got, note := parseLimitValue([]byte(tt.in))
		if got != tt.want || !strings.Contains(note, tt.note) || (tt.note == "" && note != "") {
			t.Errorf("parseLimitValue(%q) = %d, %q; want %d, %q", tt.in, got, note, tt.want, tt.note)
		}
	}
}

func TestParseMeminfoTotal(t *testing.T) {
	tests := []struct {
		in      string
		want    int64
		wantErr bool
	}{
		{"MemTotal:       24684096 kB\nMemFree: 1 kB\n", 24684096 * 1024, false},
		{"MemFree: 1 kB\nMemTotal: 1024\n", 1024, false},
		{"MemTotal: 1 MB\n", 0, true},
		{"MemTotal: x kB\n", 0, true},
		{"MemTotal:\n", 0, true},
		{"MemTotal: 9223372036854775807 kB\n", 0, true},
		{"MemTotal: -1 kB\n", 0, true},
		{"", 0, true},
	}
	for _, tt := range tests {
		got, err := parseMeminfoTotal([]byte(tt.in))
		if got != tt.want || (err != nil) != tt.wantErr {
			t.Errorf("parseMeminfoTotal(%q) = %d, %v; want %d, err %v", tt.in, got, err, tt.want, tt.wantErr)
		}
	}
}

func TestParseMountinfo(t *testing.T) {
	in := `31 23 0:28 / /sys/fs/cgroup rw,relatime shared:9 master:2 - cgroup2 cgroup2 rw
35 31 0:32 /docker/x /sys/fs/cgroup/mem\040ory rw - cgroup cgroup rw,memory,hugetlb
36 31 0:33 / /sys/fs/cgroup/cpu rw - cgroup cgroup rw,cpu
27 1 254:0 / / rw,relatime - ext4 /dev/vda rw
broken line
37 31 0:34 / /bad\9 rw - cgroup2 cgroup2 rw
`
	mounts, bad := parseMountinfo([]byte(in))
	want := []mount{
		{root: "/", point: "/sys/fs/cgroup", fstype: "cgroup2"},
		{root: "/docker/x", point: "/sys/fs/cgroup/mem ory", fstype: "cgroup", memory: true},
		{root: "/", point: "/sys/fs/cgroup/cpu", fstype: "cgroup"},
	}
	if bad != 2 || len(mounts) != len(want) {
		t.Fatalf("got %+v, bad %d", mounts, bad)
	}
	for i := range want {
		if mounts[i] != want[i] {
			t.Errorf("mount %d = %+v, want %+v", i, mounts[i], want[i])
		}
	}
}

func TestParseProcCgroup(t *testing.T) {
	pc, bad := parseProcCgroup([]byte("12:cpu,cpuacct:/a\n4:memory,hugetlb:/b/c\n0::/d\nweird\n3:x:y\n"))
	if bad != 2 || !pc.hasV2 || pc.v2 != "/d" || !pc.hasV1mem || pc.v1mem != "/b/c" {
		t.Fatalf("got %+v, bad %d", pc, bad)
	}
}

func TestCgroupDir(t *testing.T) {
	tests := []struct {
		root, point, cg string
		want            string
		ok              bool
	}{
		{"/", "/sys/fs/cgroup", "/a/b", "/sys/fs/cgroup/a/b", true},
		{"/", "/sys/fs/cgroup", "/", "/sys/fs/cgroup", true},
		{"/docker/x", "/sys/fs/cgroup", "/docker/x", "/sys/fs/cgroup", true},
		{"/docker/x", "/sys/fs/cgroup", "/docker/x/sub", "/sys/fs/cgroup/sub", true},
		{"/docker/x", "/sys/fs/cgroup", "/docker/xy", "/sys/fs/cgroup", false},
		{"/docker/x", "/sys/fs/cgroup", "/other", "/sys/fs/cgroup", false},
		{"/", "/sys/fs/cgroup", "/../../etc", "/sys/fs/cgroup/etc", true}, // cannot escape the mount
	}
	for _, tt := range tests {
		got, ok := cgroupDir(mount{root: tt.root, point: tt.point}, tt.cg)
		if got != tt.want || ok != tt.ok {
			t.Errorf("cgroupDir(%q at %q, %q) = %q, %v; want %q, %v", tt.root, tt.point, tt.cg, got, ok, tt.want, tt.ok)
		}
	}
}

// TestDetectFileTooLarge: a huge fabricated file is refused, not read whole.
func TestDetectFileTooLarge(t *testing.T) {
	d := fixture("v2-max")
	d.fsys = fstest.MapFS{
		"proc/self/mountinfo":         {Data: []byte("31 23 0:28 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n")},
		"proc/self/cgroup":            {Data: []byte("0::/\n")},
		"sys/fs/cgroup/memory.max":    {Data: []byte(strings.Repeat("1", maxValueFile+1))},
		"proc/meminfo":                {Data: []byte("MemTotal: 1024 kB\n")},
		"sys/fs/cgroup/cgroup.procs":  {Data: []byte("1\n")},
		"sys/fs/cgroup/memory.stat":   {Data: []byte("anon 0\n")},
		"sys/fs/cgroup/memory.events": {Data: []byte("oom 0\n")},
	}
	lim, err := d.detect()
	if err != nil {
		t.Fatal(err)
	}
	if lim.Source != SourcePhysical || lim.Bytes != 1024*1024 {
		t.Fatalf("got %v", lim)
	}
	if !hasFinding(lim, "/sys/fs/cgroup/memory.max", "larger than") {
		t.Fatalf("no 'larger than' finding: %v", lim.Findings)
	}
}
