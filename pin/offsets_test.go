package pin

import (
	"errors"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"testing"

	"github.com/vineroute/vinequeue/pin/internal/runtimelayout"
)

// TestGeneratedOffsetsMatchDWARF compares the offsets generated for this Go
// version and target (../zpinoffsets_go1_N_GOOS_GOARCH.go, read by the root
// package's assembly) with the DWARF of this test binary, built by the same
// toolchain for the same target, so a runtime whose layout moved fails here
// instead of having the assembly increment the wrong word.
//
// `go test` links test binaries without DWARF unless -c, -o or a profile flag
// is given. Then the offsets are checked against a probe program built with
// the go command on PATH, if it is this binary's toolchain (also under
// -short: a warm build cache makes it ~0.3 s, a cold one ~4 s); otherwise the
// test skips and says why. `go test -o <file> ./pin/` checks the binary itself.
func TestGeneratedOffsetsMatchDWARF(t *testing.T) {
	minor := regexp.MustCompile(`^go1\.\d+`).FindString(runtime.Version())
	if minor == "" {
		t.Skipf("toolchain %q has no go1.N version: the root package uses the runtime.procPin fallback", runtime.Version())
	}
	file := filepath.Join("..", fmt.Sprintf("zpinoffsets_%s_%s_%s.go", strings.ReplaceAll(minor, ".", "_"), runtime.GOOS, runtime.GOARCH))
	want, err := parseOffsets(file)
	if errors.Is(err, os.ErrNotExist) {
		t.Skipf("no %s: the root package uses the runtime.procPin fallback for %s %s/%s", file, minor, runtime.GOOS, runtime.GOARCH)
	}
	if err != nil {
		t.Fatal(err)
	}

	exe, err := os.Executable()
	if err != nil {
		exe = os.Args[0]
	}
	got, err := runtimelayout.ReadFile(exe)
	switch {
	case err == nil:
		t.Logf("layout read from the test binary's own DWARF (%s)", exe)
	case errors.Is(err, runtimelayout.ErrNoDWARF):
		got = probeLayout(t)
	default:
		t.Fatal(err)
	}
	if got != want {
		t.Fatalf("runtime layout of %s %s/%s is %+v, but %s says %+v: run `go generate ./pin/`",
			runtime.Version(), runtime.GOOS, runtime.GOARCH, got, file, want)
	}
}

func probeLayout(t *testing.T) runtimelayout.Offsets {
	const why = "test binary has no DWARF (go test links with -w unless -c or -o is given)"
	goCmd, err := exec.LookPath("go")
	if err != nil {
		t.Skipf("%s, and no go command on PATH to build a probe: %v", why, err)
	}
	got, version, err := runtimelayout.Probe(t.Context(), goCmd, runtime.GOOS, runtime.GOARCH)
	if err != nil {
		t.Skipf("%s, and building a probe failed: %v", why, err)
	}
	if version != runtime.Version() {
		t.Skipf("%s, and %s is %s, not this binary's %s", why, goCmd, version, runtime.Version())
	}
	t.Logf("%s: layout read from a probe binary built by %s (%s)", why, goCmd, version)
	return got
}

// parseOffsets reads the pinOff* constants of a generated offsets file.
func parseOffsets(path string) (runtimelayout.Offsets, error) {
	f, err := parser.ParseFile(token.NewFileSet(), path, nil, 0)
	if err != nil {
		return runtimelayout.Offsets{}, err
	}
	var o runtimelayout.Offsets
	dst := map[string]*int64{"pinOffGM": &o.GM, "pinOffMLocks": &o.MLocks, "pinOffMP": &o.MP, "pinOffPID": &o.PID}
	found := 0
	for _, decl := range f.Decls {
		gd, ok := decl.(*ast.GenDecl)
		if !ok || gd.Tok != token.CONST {
			continue
		}
		for _, spec := range gd.Specs {
			vs := spec.(*ast.ValueSpec)
			for i, name := range vs.Names {
				p := dst[name.Name]
				if p == nil || i >= len(vs.Values) {
					continue
				}
				lit, ok := vs.Values[i].(*ast.BasicLit)
				if !ok || lit.Kind != token.INT {
					return o, fmt.Errorf("%s: %s is not an integer literal", path, name.Name)
				}
				if *p, err = strconv.ParseInt(lit.Value, 0, 64); err != nil {
					return o, fmt.Errorf("%s: %s: %w", path, name.Name, err)
				}
				found++
			}
		}
	}
	if found != len(dst) {
		return o, fmt.Errorf("%s: found %d of the %d pinOff* constants", path, found, len(dst))
	}
	return o, nil
}
