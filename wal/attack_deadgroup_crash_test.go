package wal

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// copyTree copies dir to dst: the files as a process crash leaves them
// (what was written is in the page cache, synced or not).
func copyTree(t *testing.T, dir, dst string) {
	t.Helper()
	require.NoError(t, filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, path)
		to := filepath.Join(dst, rel)
		if d.IsDir() {
			return os.MkdirAll(to, 0o700)
		}
		if d.Name() == lockFileName {
			return nil
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		return os.WriteFile(to, b, 0o600)
	}))
}

// TestAttackDeadLetterGroupCrashDuringRenames: a crash part way through a
// group's renames (k of its 3 files renamed into place, the rest still
// .tmp, no directory sync, no written mark in the dead-letter ack log) is
// taken as a copy of the directory at that moment. Open on the copy keeps
// the k whole dead letters and no .tmp, counts nothing lost or damaged,
// never issues one of their ids again, and a second Open (after more dead
// letters and a purge) agrees.
func TestAttackDeadLetterGroupCrashDuringRenames(t *testing.T) {
	for k := 0; k <= 3; k++ {
		t.Run(fmt.Sprintf("renamed=%d", k), func(t *testing.T) {
			dir, snap := t.TempDir(), t.TempDir()
			crash := errors.New("crash")
			injecting := false
			opts := Options{SegmentSize: 64 << 10, Compression: NoCompression, noSpare: true}
			withFault := opts
			withFault.fault = func(step string) error {
				if !injecting || step != "dlq-group-written" {
					return nil
				}
				for i := range k {
					id := uint64(2 + i)
					from := filepath.Join(dir, deadDirName, deadFileName(id)+tmpSuffix)
					if err := os.Rename(from, filepath.Join(dir, deadDirName, deadFileName(id))); err != nil {
						return err
					}
				}
				copyTree(t, dir, snap)
				return crash
			}
			l := openT(t, dir, withFault)
			_, err := l.Append([]byte("record"))
			require.NoError(t, err)
			one := func(s string) DeadPart {
				return DeadPart{Payload: AppendFrame(nil, []byte(s)), Meta: DeadMeta{Reason: s}}
			}
			id, err := l.DeadLetter(one("first").Payload, DeadMeta{Reason: "first"})
			require.NoError(t, err)
			require.Equal(t, uint64(1), id)
			injecting = true
			_, err = l.DeadLetterGroup([]DeadPart{one("g0"), one("g1"), one("g2")})
			require.ErrorIs(t, err, crash)
			injecting = false
			require.NoError(t, l.Close())

			l2 := openT(t, snap, opts)
			want := []uint64{1}
			for i := range k {
				want = append(want, uint64(2+i))
			}
			dls, err := l2.DeadLetters()
			require.NoError(t, err)
			assert.Equal(t, want, deadIDs(dls), "dead letters after the crash")
			for _, d := range dls {
				assert.Nil(t, d.Damage, "dead letter %d damaged", d.ID)
				assert.Equal(t, 1, d.Items, "dead letter %d", d.ID)
			}
			st := l2.Stats()
			assert.Equal(t, 1+k, st.DeadLetters)
			assert.Zero(t, st.DeadCorrupt, "dead letters counted lost or damaged")
			assert.Zero(t, st.Corrupt)
			ents, err := os.ReadDir(filepath.Join(snap, deadDirName))
			require.NoError(t, err)
			for _, e := range ents {
				assert.False(t, strings.HasSuffix(e.Name(), tmpSuffix), "%s left after Open", e.Name())
			}
			// New ids never reuse one that is listed.
			ids, err := l2.DeadLetterGroup([]DeadPart{one("n0"), one("n1")})
			require.NoError(t, err)
			assert.Equal(t, []uint64{uint64(2 + k), uint64(3 + k)}, ids)
			n, err := l2.PurgeDeadLetters(1)
			require.NoError(t, err)
			assert.Equal(t, 1, n)
			require.NoError(t, l2.Close())

			l3 := openT(t, snap, opts)
			defer l3.Close()
			dls, err = l3.DeadLetters()
			require.NoError(t, err)
			want = append(want[1:], uint64(2+k), uint64(3+k))
			assert.Equal(t, want, deadIDs(dls), "dead letters at the second Open")
			st = l3.Stats()
			assert.Zero(t, st.DeadCorrupt, "dead letters counted lost or damaged at the second Open")
		})
	}
}
