package wal

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime/debug"
	"sort"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// Segment files are named by their first record id, zero-padded so that a
// lexical sort is an id sort.
const (
	segmentSuffix    = ".wal"
	corruptSuffix    = ".corrupt"
	tmpSuffix        = ".tmp"
	lockFileName     = "LOCK"
	segmentNameWidth = 20
)

func segmentName(firstID uint64) string {
	return fmt.Sprintf("%0*d%s", segmentNameWidth, firstID, segmentSuffix)
}

// parseSegmentName returns the first id a segment file name claims.
func parseSegmentName(name string) (uint64, bool) {
	base, ok := strings.CutSuffix(name, segmentSuffix)
	if !ok || len(base) != segmentNameWidth {
		return 0, false
	}
	id, err := strconv.ParseUint(base, 10, 64)
	if err != nil || id == 0 {
		return 0, false
	}
	return id, true
}

type segmentFile struct {
	name    string
	firstID uint64
}

// listSegments returns dir's segment files in id order.
func listSegments(dir string) ([]segmentFile, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var segs []segmentFile
	for _, e := range ents {
		if id, ok := parseSegmentName(e.Name()); ok && e.Type().IsRegular() {
			segs = append(segs, segmentFile{e.Name(), id})
		}
	}
	sort.Slice(segs, func(i, j int) bool { return segs[i].firstID < segs[j].firstID })
	return segs, nil
}

// mapFile maps a whole file read-only. A zero-length file maps to nil.
func mapFile(path string) ([]byte, func(), error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, nil, err
	}
	size := st.Size()
	if size == 0 {
		return nil, func() {}, nil
	}
	if size != int64(int(size)) {
		return nil, nil, fmt.Errorf("%s: %d bytes do not fit the address space", path, size)
	}
	data, err := unix.Mmap(int(f.Fd()), 0, int(size), unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		return nil, nil, fmt.Errorf("mmap %s: %w", path, err)
	}
	_ = unix.Madvise(data, unix.MADV_SEQUENTIAL)
	return data, func() { _ = unix.Munmap(data) }, nil
}

// withFaultsAsErrors runs fn with memory faults turned into an error
// instead of a crash. A mapped file truncated under us (another process, a
// failing disk) raises SIGBUS on access; the runtime turns it into a panic
// only while SetPanicOnFault is on, and only for this goroutine.
func withFaultsAsErrors(fn func() error) (err error) {
	old := debug.SetPanicOnFault(true)
	defer func() {
		debug.SetPanicOnFault(old)
		if r := recover(); r != nil {
			if re, ok := r.(interface{ Addr() uintptr }); ok {
				err = fmt.Errorf("%w: memory fault at %#x reading or writing a mapped segment (file truncated or I/O error)", ErrCorrupt, re.Addr())
				return
			}
			panic(r)
		}
	}()
	return fn()
}

// allocateFile reserves size bytes for f. Fallocate reserves the blocks, so
// later writes through the mapping cannot fail for lack of space (which would
// be a SIGBUS). Filesystems without fallocate get a sparse Ftruncate.
func allocateFile(f *os.File, size int64) error {
	err := unix.Fallocate(int(f.Fd()), 0, 0, size)
	if errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.ENOSYS) {
		err = unix.Ftruncate(int(f.Fd()), size)
	}
	return err
}

// skipFsync turns fsync and fdatasync into no-ops. Only tests that open
// thousands of small logs set it, to measure decisions rather than the disk.
var skipFsync bool

// fdatasync flushes f's data (and the metadata needed to read it back).
func fdatasync(f *os.File) error {
	if skipFsync {
		return nil
	}
	return unix.Fdatasync(int(f.Fd()))
}

// syncDir makes a directory's entries (created, renamed, removed files)
// durable.
func syncDir(dir string) error {
	if skipFsync {
		return nil
	}
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("fsync %s: %w", dir, err)
	}
	return nil
}

// quarantineName returns a name for the damaged copy of a segment that does
// not overwrite an earlier one.
func quarantineName(dir, name string) string {
	p := filepath.Join(dir, name+corruptSuffix)
	for i := 1; ; i++ {
		if _, err := os.Lstat(p); errors.Is(err, os.ErrNotExist) {
			return p
		}
		p = filepath.Join(dir, fmt.Sprintf("%s.%d%s", name, i, corruptSuffix))
	}
}
