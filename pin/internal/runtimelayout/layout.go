// Package runtimelayout reads, from the DWARF of a compiled Go binary, the
// offsets of the runtime's private struct fields that the root package's
// pinning assembly dereferences: g.m, m.locks, m.p and p.id.
//
// It is shared by the offset generator (pin/internal/genoffsets), which
// writes the offsets into build-tagged Go constants, and by the root
// package's tests, which compare those constants with the DWARF of the test
// binary itself, so that a toolchain whose layout moved is caught before the
// assembly touches the wrong word.
//
// Besides the offsets it checks each field's type, because the assembly also
// hard-codes the width of every load and store: a field that changed type is
// an error here, never a silently wrong offset.
package runtimelayout

import (
	"context"
	"debug/buildinfo"
	"debug/dwarf"
	"debug/elf"
	"debug/macho"
	"debug/pe"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
)

// Offsets are byte offsets of fields inside the runtime's g, m and p structs.
type Offsets struct {
	GM     int64 // runtime.g.m      (*runtime.m)
	MLocks int64 // runtime.m.locks  (int32)
	MP     int64 // runtime.m.p      (runtime.puintptr, pointer sized)
	PID    int64 // runtime.p.id     (int32)
}

// ErrNoDWARF reports a binary without debug information, as built with
// -ldflags=-w or stripped afterwards. Callers that only verify (tests) skip on
// it; the generator fails on it.
var ErrNoDWARF = errors.New("runtimelayout: binary has no DWARF debug information")

// field names a struct member the assembly reads, with the type it must have.
type field struct {
	strct, member string
	typeName      string // DWARF type name, e.g. "int32"
	size          int64  // byte size of the member's type
	dst           *int64
}

// ReadFile opens the executable at path (ELF, Mach-O or PE) and reads the
// offsets from its DWARF.
func ReadFile(path string) (Offsets, error) {
	d, ptrSize, err := openDWARF(path)
	if err != nil {
		return Offsets{}, err
	}
	return Read(d, ptrSize)
}

// Read extracts the offsets from d. ptrSize is the target's pointer size in
// bytes (8 on amd64 and arm64).
func Read(d *dwarf.Data, ptrSize int64) (Offsets, error) {
	var o Offsets
	fields := []field{
		{"runtime.g", "m", "*runtime.m", ptrSize, &o.GM},
		{"runtime.m", "locks", "int32", 4, &o.MLocks},
		{"runtime.m", "p", "runtime.puintptr", ptrSize, &o.MP},
		{"runtime.p", "id", "int32", 4, &o.PID},
	}
	wanted := map[string]bool{}
	for _, f := range fields {
		wanted[f.strct] = true
	}
	structs, err := findStructs(d, wanted)
	if err != nil {
		return Offsets{}, err
	}
	for _, f := range fields {
		st := structs[f.strct]
		if st == nil {
			return Offsets{}, fmt.Errorf("runtimelayout: struct %s not in DWARF", f.strct)
		}
		m := member(st, f.member)
		if m == nil {
			return Offsets{}, fmt.Errorf("runtimelayout: %s has no field %q", f.strct, f.member)
		}
		if name := m.Type.String(); name != f.typeName {
			return Offsets{}, fmt.Errorf("runtimelayout: %s.%s has type %s, want %s (the assembly's load width would be wrong)",
				f.strct, f.member, name, f.typeName)
		}
		if size := m.Type.Size(); size != f.size {
			return Offsets{}, fmt.Errorf("runtimelayout: %s.%s is %d bytes, want %d", f.strct, f.member, size, f.size)
		}
		if m.BitSize != 0 {
			return Offsets{}, fmt.Errorf("runtimelayout: %s.%s is a bit field", f.strct, f.member)
		}
		*f.dst = m.ByteOffset
	}
	return o, nil
}

func member(st *dwarf.StructType, name string) *dwarf.StructField {
	for _, m := range st.Field {
		if m.Name == name {
			return m
		}
	}
	return nil
}

// findStructs walks the DWARF entries once and decodes the named struct
// types. Each appears once per binary (the linker deduplicates types).
func findStructs(d *dwarf.Data, names map[string]bool) (map[string]*dwarf.StructType, error) {
	found := make(map[string]*dwarf.StructType, len(names))
	r := d.Reader()
	for len(found) < len(names) {
		e, err := r.Next()
		if err != nil {
			return nil, fmt.Errorf("runtimelayout: reading DWARF: %w", err)
		}
		if e == nil {
			break
		}
		if e.Tag != dwarf.TagStructType {
			if e.Tag != dwarf.TagCompileUnit {
				r.SkipChildren()
			}
			continue
		}
		name, _ := e.Val(dwarf.AttrName).(string)
		if !names[name] || found[name] != nil {
			r.SkipChildren()
			continue
		}
		t, err := d.Type(e.Offset)
		if err != nil {
			return nil, fmt.Errorf("runtimelayout: decoding %s: %w", name, err)
		}
		st, ok := t.(*dwarf.StructType)
		if !ok {
			return nil, fmt.Errorf("runtimelayout: %s decodes as %T, not a struct", name, t)
		}
		found[name] = st
		r.SkipChildren()
	}
	return found, nil
}

// openDWARF returns the DWARF of the executable at path and its pointer size.
func openDWARF(path string) (*dwarf.Data, int64, error) {
	if f, err := elf.Open(path); err == nil {
		defer f.Close()
		hasInfo := f.Section(".debug_info") != nil || f.Section(".zdebug_info") != nil
		return readDWARF(path, hasInfo, f.DWARF, f.Class == elf.ELFCLASS32)
	}
	if f, err := macho.Open(path); err == nil {
		defer f.Close()
		hasInfo := f.Section("__debug_info") != nil || f.Section("__zdebug_info") != nil
		return readDWARF(path, hasInfo, f.DWARF, f.Magic == macho.Magic32)
	}
	if f, err := pe.Open(path); err == nil {
		defer f.Close()
		hasInfo := f.Section(".debug_info") != nil || f.Section(".zdebug_info") != nil
		_, is32 := f.OptionalHeader.(*pe.OptionalHeader32)
		return readDWARF(path, hasInfo, f.DWARF, is32)
	}
	return nil, 0, fmt.Errorf("runtimelayout: %s is not an ELF, Mach-O or PE executable", path)
}

// readDWARF is openDWARF's common part once the file format is known.
func readDWARF(path string, hasInfo bool, load func() (*dwarf.Data, error), is32 bool) (*dwarf.Data, int64, error) {
	if !hasInfo {
		return nil, 0, ErrNoDWARF
	}
	d, err := load()
	if err != nil {
		return nil, 0, fmt.Errorf("runtimelayout: %s: %w", path, err)
	}
	if is32 {
		return d, 4, nil
	}
	return d, 8, nil
}

// Probe builds a minimal program with the go command goCmd for goarch (and
// goos) in a temporary directory and reads the offsets from its DWARF. It
// returns the toolchain version recorded in the binary (e.g. "go1.26.8"),
// which is the version the offsets belong to.
func Probe(ctx context.Context, goCmd, goos, goarch string) (Offsets, string, error) {
	dir, err := os.MkdirTemp("", "runtimelayout-probe-")
	if err != nil {
		return Offsets{}, "", fmt.Errorf("runtimelayout: %w", err)
	}
	defer os.RemoveAll(dir)

	const prog = "package main\n\nimport \"runtime\"\n\nfunc main() { println(runtime.NumGoroutine()) }\n"
	if err := os.WriteFile(filepath.Join(dir, "main.go"), []byte(prog), 0o600); err != nil {
		return Offsets{}, "", fmt.Errorf("runtimelayout: %w", err)
	}
	if err := os.WriteFile(filepath.Join(dir, "go.mod"), []byte("module probe\n"), 0o600); err != nil {
		return Offsets{}, "", fmt.Errorf("runtimelayout: %w", err)
	}
	bin := filepath.Join(dir, "probe")
	cmd := exec.CommandContext(ctx, goCmd, "build", "-trimpath", "-o", bin, ".")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(),
		"GOOS="+goos, "GOARCH="+goarch, "CGO_ENABLED=0",
		"GOWORK=off", "GOFLAGS=-buildvcs=false", "GOTOOLCHAIN=local",
	)
	if out, err := cmd.CombinedOutput(); err != nil {
		return Offsets{}, "", fmt.Errorf("runtimelayout: building probe for %s/%s: %w\n%s", goos, goarch, err, out)
	}
	info, err := buildinfo.ReadFile(bin)
	if err != nil {
		return Offsets{}, "", fmt.Errorf("runtimelayout: reading probe build info: %w", err)
	}
	o, err := ReadFile(bin)
	if err != nil {
		return Offsets{}, "", err
	}
	return o, info.GoVersion, nil
}
