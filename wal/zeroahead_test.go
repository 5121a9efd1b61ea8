package wal

import (
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// unwrittenShowsAsHole reports whether dir's file system tells an
// fallocated range never written from data (SEEK_DATA skips it, as ext4
// and xfs do); where it does not (tmpfs), zero-ahead cannot be seen.
func unwrittenShowsAsHole(t *testing.T, dir string) bool {
	t.Helper()
	f, err := os.Create(filepath.Join(dir, "probe"))
	require.NoError(t, err)
	defer os.Remove(f.Name())
	defer f.Close()
	if err := unix.Fallocate(int(f.Fd()), 0, 0, 1<<20); err != nil {
		return false
	}
	_, err = unix.Seek(int(f.Fd()), 0, unix.SEEK_DATA)
	return errors.Is(err, unix.ENXIO)
}

// dataAt reports whether SEEK_DATA from off finds data at off itself.
func dataAt(t *testing.T, f *os.File, off int64) bool {
	t.Helper()
	got, err := unix.Seek(int(f.Fd()), off, unix.SEEK_DATA)
	if errors.Is(err, unix.ENXIO) {
		return false
	}
	require.NoError(t, err)
	return got == off
}

// TestZeroAheadWritesPastTheRecords: a log that syncs its appends writes
// zeros past its records up to the step after the next one, so that the
// rounds after the first sync into blocks already written; nothing past
// that, and nothing at all in a NoSync log. The zeros change nothing a
// recovery finds: the records come back, the segment is not damaged.
func TestZeroAheadWritesPastTheRecords(t *testing.T) {
	for _, noSync := range []bool{false, true} {
		t.Run("NoSync="+onOff(noSync), func(t *testing.T) {
			dir := t.TempDir()
			if !unwrittenShowsAsHole(t, dir) {
				t.Skip("the file system does not tell fallocated ranges from written ones")
			}
			const size = 4 * zeroAheadStep
			l, err := Open(dir, Options{SegmentSize: size, NoSync: noSync})
			require.NoError(t, err)
			_, err = l.AppendItem([]byte("first"))
			require.NoError(t, err)
			require.NoError(t, l.Sync())
			segs, err := listSegments(dir)
			require.NoError(t, err)
			require.Len(t, segs, 1)
			f, err := os.Open(filepath.Join(dir, segs[0].name))
			require.NoError(t, err)
			defer f.Close()
			require.Equal(t, !noSync, dataAt(t, f, zeroAheadStep/2), "zeros half a step past the records")
			require.Equal(t, !noSync, dataAt(t, f, 2*zeroAheadStep-4096), "zeros up to the step after the next")
			require.False(t, dataAt(t, f, 2*zeroAheadStep), "nothing past it")

			// Records across the next step boundary push the zeros a step on.
			item := make([]byte, 64<<10)
			r := rand.New(rand.NewPCG(1, 2))
			for i := range item {
				item[i] = byte(r.Uint32()) // incompressible: the records fill the segment
			}
			n := 1
			for ; n <= 40; n++ { // 2.5 MiB: past the second step

				_, err = l.AppendItem(item)
				require.NoError(t, err)
			}
			require.NoError(t, l.Sync())
			require.Equal(t, !noSync, dataAt(t, f, 3*zeroAheadStep+zeroAheadStep/2), "zeros a step on")
			require.NoError(t, l.Close())

			rep, err := Inspect(dir)
			require.NoError(t, err)
			require.Len(t, rep.Segments, 1)
			require.Nil(t, rep.Segments[0].Damage)
			require.EqualValues(t, n, rep.Segments[0].Records)
			l, err = Open(dir, Options{SegmentSize: size, NoSync: noSync})
			require.NoError(t, err)
			require.EqualValues(t, n, l.Stats().ItemsPending)
			require.NoError(t, l.Close())
		})
	}
}
