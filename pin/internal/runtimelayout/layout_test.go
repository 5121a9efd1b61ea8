package runtimelayout

import (
	"errors"
	"os"
	"os/exec"
	"testing"
)

// TestReadOwnBinary reads the layout from this test binary. The exact values
// belong to the toolchain; what must hold on every one is that the fields are
// found with the expected types and lie in plausible, distinct places.
func TestReadOwnBinary(t *testing.T) {
	exe, err := os.Executable()
	if err != nil {
		t.Skipf("cannot locate the test binary: %v", err)
	}
	o, err := ReadFile(exe)
	if errors.Is(err, ErrNoDWARF) {
		t.Skip("test binary built without DWARF (-ldflags=-w or stripped); nothing to read")
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%+v", o)
	for name, off := range map[string]int64{"g.m": o.GM, "m.locks": o.MLocks, "m.p": o.MP, "p.id": o.PID} {
		if off < 0 || off > 1<<16 {
			t.Errorf("%s offset %d is implausible", name, off)
		}
	}
	if o.MLocks == o.MP {
		t.Errorf("m.locks and m.p share offset %d", o.MP)
	}
	if o.MP%8 != 0 || o.GM%8 != 0 {
		t.Errorf("pointer fields misaligned: %+v", o)
	}
}

func TestReadNotAnExecutable(t *testing.T) {
	if _, err := ReadFile("layout.go"); err == nil {
		t.Fatal("reading a Go source file as an executable succeeded")
	}
}

// TestProbeTargets builds probes for the targets the root package has
// assembly for and checks that the layout is found in each.
func TestProbeTargets(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: not building probe binaries")
	}
	goCmd, err := exec.LookPath("go")
	if err != nil {
		t.Skipf("no go command on PATH: %v", err)
	}
	for _, arch := range []string{"amd64", "arm64"} {
		o, version, err := Probe(t.Context(), goCmd, "linux", arch)
		if err != nil {
			t.Fatalf("linux/%s: %v", arch, err)
		}
		t.Logf("linux/%s %s: %+v", arch, version, o)
		if o.MLocks == o.MP || o.GM%8 != 0 || o.MP%8 != 0 || o.MLocks%4 != 0 || o.PID%4 != 0 {
			t.Errorf("linux/%s: implausible layout %+v", arch, o)
		}
	}
}
