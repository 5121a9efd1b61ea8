package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestGoMinor(t *testing.T) {
	for in, want := range map[string]string{"go1.26.8": "go1.26", "go1.27rc1": "go1.27", "go1.26": "go1.26"} {
		if got, err := goMinor(in); err != nil || got != want {
			t.Errorf("goMinor(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, bad := range []string{"devel +abc", "", "go2.0"} {
		if _, err := goMinor(bad); err == nil {
			t.Errorf("goMinor(%q) succeeded", bad)
		}
	}
}

func TestVersionRange(t *testing.T) {
	for _, c := range []struct {
		in   []int
		want string
	}{
		{[]int{26}, "go1.26 && !go1.27"},
		{[]int{26, 27}, "go1.26 && !go1.28"},
		{[]int{26, 27, 29}, "(go1.26 && !go1.28) || (go1.29 && !go1.30)"},
	} {
		if got := versionRange(c.in); got != c.want {
			t.Errorf("versionRange(%v) = %q, want %q", c.in, got, c.want)
		}
	}
}

func TestVersionsWithOffsets(t *testing.T) {
	dir := t.TempDir()
	touch := func(name string) {
		if err := os.WriteFile(filepath.Join(dir, name), nil, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := versionsWithOffsets(dir); err == nil {
		t.Error("empty dir: no error")
	}
	for _, tg := range targets {
		touch(offsetsFileName("go1.26", tg))
		touch(offsetsFileName("go1.27", tg))
	}
	touch("zpinoffsets_go1_26_linux_amd64_test.go") // not an offsets file
	got, err := versionsWithOffsets(dir)
	if err != nil || len(got) != 2 || got[0] != 26 || got[1] != 27 {
		t.Fatalf("versionsWithOffsets = %v, %v; want [26 27]", got, err)
	}
	touch(offsetsFileName("go1.28", targets[0])) // only one target
	if _, err := versionsWithOffsets(dir); err == nil || !strings.Contains(err.Error(), "go1.28") {
		t.Errorf("partial go1.28: err = %v, want one naming go1.28", err)
	}
}

func TestSetBuildLine(t *testing.T) {
	dir := t.TempDir()
	goFile := filepath.Join(dir, "a.go")
	asmFile := filepath.Join(dir, "a_amd64.s")
	noLine := filepath.Join(dir, "b.go")
	for name, src := range map[string]string{
		goFile:  "//go:build old\n\npackage x\n\n//go:build notthisone\n",
		asmFile: "//go:build old\n\n#include \"textflag.h\"\n",
		noLine:  "package x\n\n//go:build late\n",
	} {
		if err := os.WriteFile(name, []byte(src), 0o600); err != nil {
			t.Fatal(err)
		}
	}

	if err := setBuildLine(dir, []string{"a.go", "a_amd64.s"}, "linux && (go1.26 && !go1.27)"); err != nil {
		t.Fatal(err)
	}
	want := "//go:build linux && go1.26 && !go1.27\n" // gofmt's canonical form
	for _, f := range []string{goFile, asmFile} {
		b, _ := os.ReadFile(f)
		if !strings.HasPrefix(string(b), want) {
			t.Errorf("%s starts %q, want %q", f, b, want)
		}
	}
	if b, _ := os.ReadFile(goFile); !strings.Contains(string(b), "//go:build notthisone") {
		t.Error("a //go:build after the package clause was rewritten")
	}
	if err := setBuildLine(dir, []string{"b.go"}, "linux"); err == nil {
		t.Error("file without a leading //go:build line: no error")
	}
}
