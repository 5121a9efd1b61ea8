package governor

import (
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"testing/fstest"
)

// The parsers read kernel files that a fabricated root, a broken procfs or a
// future kernel can fill with anything: they must never panic, and what they
// accept must be sane. Seeds: f.Add below plus testdata/fuzz/<Name>/.

func seedFile(f *testing.F, fixtureName, rel string) {
	data, err := os.ReadFile(filepath.Join("testdata", fixtureName, filepath.FromSlash(rel)))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(data)
}

func FuzzParseMountinfo(f *testing.F) {
	for _, fx := range []string{"hybrid", "v1", "v2-nested", "v2-container", "garbage"} {
		seedFile(f, fx, "proc/self/mountinfo")
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		mounts, bad := parseMountinfo(data)
		if bad < 0 || len(mounts) > strings.Count(string(data), "\n")+1 {
			t.Fatalf("%d mounts, %d bad", len(mounts), bad)
		}
		for _, m := range mounts {
			if !strings.HasPrefix(m.root, "/") || !strings.HasPrefix(m.point, "/") {
				t.Fatalf("relative path in %+v", m)
			}
			if m.fstype != "cgroup" && m.fstype != "cgroup2" {
				t.Fatalf("fstype %q", m.fstype)
			}
		}
	})
}

func FuzzParseProcCgroup(f *testing.F) {
	for _, fx := range []string{"hybrid", "v1", "v2-nested", "garbage"} {
		seedFile(f, fx, "proc/self/cgroup")
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		pc, _ := parseProcCgroup(data)
		if (pc.hasV2 && !strings.HasPrefix(pc.v2, "/")) || (pc.hasV1mem && !strings.HasPrefix(pc.v1mem, "/")) {
			t.Fatalf("relative cgroup path in %+v", pc)
		}
	})
}

func FuzzParseLimitValue(f *testing.F) {
	for _, s := range []string{"max\n", "1073741824\n", "9223372036854771712\n", "-1", "0", "12e9", "", "18446744073709551615"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		n, note := parseLimitValue(data)
		if n < 0 || n >= unlimitedAbove || (n == 0) == (note == "") {
			t.Fatalf("parseLimitValue(%q) = %d, %q", data, n, note)
		}
	})
}

func FuzzParseMemoryStat(f *testing.F) {
	for _, fx := range []string{"hybrid", "v1", "v1-unlimited", "garbage"} {
		seedFile(f, fx, "sys/fs/cgroup/memory/"+map[string]string{
			"hybrid": "process_api/5f0c2a9d1e8b4c7aa3d6e2f1b0c9d8e7/", "v1": "app/", "v1-unlimited": "app/", "garbage": "app/",
		}[fx]+"memory.stat")
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		v, ok := memoryStatValue(data, "hierarchical_memory_limit")
		if !ok && v != "" {
			t.Fatalf("value %q without key", v)
		}
		n, _ := parseLimitValue([]byte(v))
		if n < 0 {
			t.Fatalf("negative %d", n)
		}
	})
}

func FuzzParseMeminfo(f *testing.F) {
	for _, fx := range []string{"hybrid", "v2-nested", "garbage"} {
		seedFile(f, fx, "proc/meminfo")
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		n, err := parseMeminfoTotal(data)
		if (err == nil) != (n > 0) {
			t.Fatalf("parseMeminfoTotal(%q) = %d, %v", data, n, err)
		}
	})
}

// FuzzDetect runs the whole detection over a fabricated tree whose key files
// are fuzzed: it must never panic, and must always fall back to physical
// memory when the cgroup files say nothing usable.
func FuzzDetect(f *testing.F) {
	read := func(fx, rel string) []byte {
		data, err := os.ReadFile(filepath.Join("testdata", fx, filepath.FromSlash(rel)))
		if err != nil {
			f.Fatal(err)
		}
		return data
	}
	f.Add(read("hybrid", "proc/self/mountinfo"), read("hybrid", "proc/self/cgroup"), []byte("3221225472\n"))
	f.Add(read("v2-nested", "proc/self/mountinfo"), read("v2-nested", "proc/self/cgroup"), []byte("max\n"))
	f.Add(read("garbage", "proc/self/mountinfo"), read("garbage", "proc/self/cgroup"), []byte("\x00"))
	f.Fuzz(func(t *testing.T, mountinfo, cgroup, value []byte) {
		fsys := fstest.MapFS{
			"proc/self/mountinfo": {Data: mountinfo},
			"proc/self/cgroup":    {Data: cgroup},
			"proc/meminfo":        {Data: []byte("MemTotal: 1048576 kB\n")},
		}
		// Put the fuzzed value wherever the fuzzed files point at.
		if pc, _ := parseProcCgroup(cgroup); true {
			mounts, _ := parseMountinfo(mountinfo)
			for _, m := range mounts {
				cg := pc.v2
				if m.fstype == "cgroup" {
					cg = pc.v1mem
				}
				dir, _ := cgroupDir(m, cg)
				for _, name := range []string{"memory.max", "memory.limit_in_bytes"} {
					if p := fsPath(dir + "/" + name); p != "." {
						fsys[p] = &fstest.MapFile{Data: value}
					}
				}
			}
		}
		d := detector{fsys: fsys, goMemLimit: func() int64 { return math.MaxInt64 }, sysinfo: func() (int64, error) { return 1, nil }}
		lim, err := d.detect()
		if err != nil || lim.Bytes <= 0 || lim.Bytes > 1<<30 {
			t.Fatalf("detect = %v, %v", lim, err)
		}
	})
}
