package wal

import (
	"os"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// TestSyncAfterFailedSync: once an fdatasync failed, a later Sync must not
// report as durable the records written before the failure (the kernel may
// have dropped their pages and marked them clean, so a retry "succeeds"
// without them): callers such as the periodic checkpoint take a nil Sync
// as "everything written so far is on disk".
func TestSyncAfterFailedSync(t *testing.T) {
	dir := t.TempDir()
	opts := smallOpts()
	var fail atomic.Bool
	opts.syncFile = func(f *os.File) error {
		if fail.Load() {
			return unix.EIO
		}
		return fdatasync(f)
	}
	l := openT(t, dir, opts)
	_, _, err := l.AppendItemsAt([][]byte{[]byte("before")})
	require.NoError(t, err)
	require.NoError(t, l.Sync())
	// Written, not synced: the periodic tier's write (no sync per append).
	_, err = l.WriteKeyed(AppendKeys(AppendFrame(nil, []byte("at risk")), []uint64{7}))
	require.NoError(t, err)
	fail.Store(true)
	require.ErrorIs(t, l.Sync(), unix.EIO)
	fail.Store(false)
	require.ErrorIs(t, l.Sync(), unix.EIO, "a Sync after a failed one claims records whose pages may be gone")
	require.NoError(t, l.Close())
}
